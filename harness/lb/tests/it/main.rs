//! The zdt-lb crate's integration tests, one binary: each module was a
//! test binary of its own.

mod admin;
mod initial_health;
