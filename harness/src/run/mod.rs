//! The executor: cluster and workload up, traffic on, chaos timeline fired,
//! events collected on one clock, `expect:` evaluated into a verdict.

pub mod apply;
pub mod attribution;
pub mod cli;
pub mod summary;

pub use crate::clock::Clock;
pub use summary::{RunSummary, VariantSummary, Verdict};
