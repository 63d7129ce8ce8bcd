//! What every request of one attack works with, shared by the attack loop
//! and the progress views (the aggregator behind its lock).

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::aggregate::{Aggregator, Snapshot};
use super::http::{Failure, Stage};
use super::lock::lock;

/// What every request of one attack works with: the request bytes and
/// where they go, the pool's cap, the cancel, and the aggregator the
/// result is folded into.
pub(crate) struct RequestContext {
    pub addr: SocketAddr,
    pub net: zdt_core::netns::Net,
    pub request: Vec<u8>,
    pub head_only: bool,
    /// When a request goes again after a reused connection turned out closed.
    pub replay: Replay,
    /// Redirects followed per request, and what to build their requests
    /// from; `None` follows none (`redirects: -1`).
    pub follow: Option<Follow>,
    pub timeout: Duration,
    /// With keep-alive: how many requests hold a pooled connection at
    /// once. `None`: a fresh connection per request.
    pub pool_cap: Option<usize>,
    pub t0: Instant,
    /// Aborts in-flight requests (a child of the attack's cancel token).
    pub stop: CancellationToken,
    pub agg: Mutex<Aggregator>,
}

/// When a request found its reused keep-alive connection closed before any
/// response may go again on a fresh one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replay {
    /// Never: the failure is recorded (`replay: false`).
    Off,
    /// Only when the write itself failed (nothing reached the server): a
    /// request with side effects.
    WriteFailed,
    /// Whenever nothing was answered: a request without side effects, as
    /// Go's net/http does.
    Idempotent,
}

impl Replay {
    pub fn of(load: &crate::Load) -> Self {
        match (load.replay, load.replayable()) {
            (false, _) => Replay::Off,
            (true, false) => Replay::WriteFailed,
            (true, true) => Replay::Idempotent,
        }
    }

    pub fn allows(self, f: &Failure) -> bool {
        f.is_stale_connection()
            && match self {
                Replay::Off => false,
                Replay::WriteFailed => f.stage == Stage::Write,
                Replay::Idempotent => true,
            }
    }
}

/// Where a redirect's request is built from.
pub(crate) struct Follow {
    pub max: u32,
    pub target: crate::Target,
    pub load: crate::Load,
}

impl RequestContext {
    pub fn snapshot(&self) -> Snapshot {
        lock(&self.agg).snapshot()
    }
}
