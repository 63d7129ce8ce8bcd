//! The zdt-emulator crate's integration tests, one binary: each module was a
//! test binary of its own.

mod api;
mod api_controllers;
mod conformance;
mod dry_run;
mod jobs;
mod kubectl;
mod library;
mod node_kubelet;
mod node_runtime;
mod support;
