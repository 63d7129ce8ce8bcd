//! zdt — a chaos-test harness for zero-downtime updates on Kubernetes.
//!
//! A scenario file says: build this cluster, deploy this workload with these
//! mitigations, put it behind this load balancer, send this traffic, do these
//! disruptive things at these times, and expect at least this success ratio.
//! This crate runs such files ([`run`]) and renders their reports
//! ([`report`]); the layers below it are crates of their own: `zdt-core`,
//! `zdt-traffic`, `zdt-lb`, `zdt-scenario`, `zdt-emulator`, `zdt-cluster`.

mod file;
pub mod generators;
pub mod report;
pub mod run;

pub use file::{run_file, run_planned, RunOutcome};
