//! The vocabulary every zdt crate shares: units of time and rate, the run's
//! one clock, the event stream, the one TCP dialer, child processes that die
//! with zdt, and Kubernetes versions.

pub mod clock;
pub mod emulated;
pub mod events;
pub mod hostfault;
pub mod in_cluster;
pub mod net;
pub mod netns;
pub mod owner;
pub mod process;
pub mod provenance;
pub mod tcp;
pub mod units;
pub mod version;
