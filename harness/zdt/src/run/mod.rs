//! The executor: cluster and workload up, traffic on, chaos timeline fired,
//! events collected on one clock, `expect:` evaluated into a verdict.

pub(crate) mod attribution;
pub mod executor;
pub mod host;
pub(crate) mod output;
pub mod phases;
pub mod summary;
pub(crate) mod timeline;
pub(crate) mod verdict;

pub use executor::{run_variant, run_variants, RunError, RunObserver, RunOptions, VariantRun};
pub use phases::{Phase, Timing};
pub use summary::{RunSummary, VariantSummary, Verdict};
pub use zdt_core::clock::Clock;
