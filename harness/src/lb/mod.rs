//! A cloud load-balancer model: an L4 TCP proxy whose backends are the
//! nodes, health-probed like a cloud LB, with an admin API and events.

pub mod backend;
pub mod cli;

pub use backend::{BackendSpec, Dial, Dialer, ProbeTarget, TcpDialer};
