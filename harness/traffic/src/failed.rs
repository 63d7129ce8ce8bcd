//! The failed requests themselves, one small record each, so a run can ask
//! the data path where each one went (the generator's local address is the
//! key the LB recorded) instead of guessing from time alone. Bounded: past
//! [`MAX_LISTED`] failures are only counted.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use zdt_core::events::duration_ns;
use zdt_core::provenance::Provenance;

use super::summary::ErrorKind;

/// Failures listed at most; the rest are counted in
/// [`crate::Summary::failed_unlisted`] (about 100 bytes each).
pub const MAX_LISTED: usize = 500_000;

/// One failed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedRequest {
    /// Offsets from t0 (request 0 due), as in the buckets.
    #[serde(with = "duration_ns")]
    pub due: Duration,
    /// `None`: never sent.
    #[serde(
        default,
        with = "zdt_core::units::opt_nanos",
        skip_serializing_if = "Option::is_none"
    )]
    pub sent: Option<Duration>,
    #[serde(with = "duration_ns")]
    pub end: Duration,
    pub kind: ErrorKind,
    /// The status code of a complete response with a failing status.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub status: u16,
    /// The connection's local address (the generator's side), when it had
    /// one: what the LB saw as the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<SocketAddr>,
    /// Where the data path sent the connection (filled in by the run, from
    /// the LB's record of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
    /// When the LB chose that route, on the run's clock (not from t0).
    #[serde(
        default,
        with = "zdt_core::units::opt_nanos",
        skip_serializing_if = "Option::is_none"
    )]
    pub routed_at: Option<Duration>,
}

fn is_zero(v: &u16) -> bool {
    *v == 0
}

/// The list the aggregator keeps.
#[derive(Debug, Default)]
pub(crate) struct FailedList {
    listed: Vec<FailedRequest>,
    unlisted: u64,
}

impl FailedList {
    pub fn push(&mut self, r: FailedRequest) {
        if self.listed.len() < MAX_LISTED {
            self.listed.push(r);
        } else {
            self.unlisted += 1;
        }
    }

    /// The list (by due time) and how many were not listed.
    pub fn snapshot(&self) -> (Vec<FailedRequest>, u64) {
        let mut listed = self.listed.clone();
        listed.sort_by_key(|r| r.due);
        (listed, self.unlisted)
    }
}
