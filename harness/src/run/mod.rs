//! The executor: cluster and workload up, traffic on, chaos timeline fired,
//! events collected on one clock, `expect:` evaluated into a verdict.

pub mod apply;
pub mod attribution;
pub mod cli;
pub mod executor;
pub mod host;
pub mod output;
pub mod progress;
pub mod summary;
pub mod timeline;
pub mod verdict;

pub use crate::clock::Clock;
pub use executor::{run_variant, RunOptions, VariantRun};
pub use summary::{RunSummary, VariantSummary, Verdict};
