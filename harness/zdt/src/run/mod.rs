//! The executor: cluster and workload up, traffic on, chaos timeline fired,
//! events collected on one clock, `expect:` evaluated into a verdict.

pub mod attribution;
pub mod executor;
pub mod host;
pub mod output;
pub mod summary;
pub mod timeline;
pub mod verdict;

pub use executor::{run_variant, RunError, RunObserver, RunOptions, VariantRun};
pub use summary::{RunSummary, VariantSummary, Verdict};
pub use zdt_core::clock::Clock;
