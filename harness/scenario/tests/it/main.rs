//! The zdt-scenario crate's integration tests, one binary: each module was a
//! test binary of its own.

mod assumptions;
mod fuzz;
mod load;
mod workload;
