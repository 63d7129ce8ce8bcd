//! Traffic from generator pods: `traffic.generators: N` runs N zdt
//! processes in the cluster as an indexed Job, each sending rate/N from one
//! shared start time, and merges their results exactly.
//!
//! - [`job`]: the objects (the Job, the barrier ConfigMap, and on a real
//!   cluster the ServiceAccount, Role and RoleBinding that let a generator
//!   read the barrier).
//! - [`pod`]: `zdt generator`, what runs in each pod.
//! - [`lines`]: what a generator writes on stdout (its pod's log), one JSON
//!   object per line.
//! - [`clock`]: a clock's offset from the API server's, from its `Date`.
//! - [`launch`]: zdt's side: create the Job, wait for every pod, publish the
//!   start time, follow the logs, merge.
//!
//! No coordinator of zdt's own runs outside the cluster: the API server is
//! the barrier and the pods' logs are the results.

pub mod clock;
pub mod job;
pub mod launch;
pub mod lines;
pub mod pod;

use std::time::Duration;

/// The hidden subcommand a generator pod runs (`zdt generator`).
pub const SUBCOMMAND: &str = "generator";
/// The environment variable holding a generator's [`lines::Config`].
pub const CONFIG_ENV: &str = "ZDT_GENERATOR";
/// A generator whose clock is further than this from the run's (measured
/// offset plus both measurements' uncertainty) refuses to start, and the run
/// with it: its per-second buckets would be added to the wrong seconds.
pub const CLOCK_BOUND: Duration = Duration::from_millis(50);
/// How far ahead of "now" the start time is published: every generator
/// polls the barrier at [`lines::BARRIER_POLL`] and must see it in time.
pub const START_LEAD: Duration = Duration::from_secs(2);
