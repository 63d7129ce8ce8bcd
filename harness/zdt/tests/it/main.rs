//! The zdt crate's integration tests, one binary: each module was a
//! test binary of its own.

mod api_latency;
mod attribution;
mod docker_runtime;
mod report_html;
mod report_junit;
mod report_sweep;
mod scenarios;
