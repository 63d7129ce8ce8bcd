//! zdt — a chaos-test harness for zero-downtime updates on Kubernetes.
//!
//! A scenario file says: build this cluster, deploy this workload with these
//! mitigations, put it behind this load balancer, send this traffic, do these
//! disruptive things at these times, and expect at least this success ratio.
//! The modules follow that sentence; see `../shared/DESIGN.md` for the design.

pub mod chaos;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod emulator;
pub mod events;
pub mod lb;
pub mod net;
pub mod process;
pub mod report;
pub mod run;
pub mod scenario;
pub mod serve;
pub mod traffic;
pub mod units;
