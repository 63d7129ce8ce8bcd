//! Health probes: one task per backend, probing on a fixed schedule (start
//! to start, like the clouds), each probe bounded by the timeout.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::backend::ProbeTarget;
use super::profile::ProbeSettings;
use zdt_core::net::ProbeError;
use zdt_core::netns::Net;

/// Why one probe found its backend unhealthy.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProbeFailure {
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
    /// No connection (TCP probe) or no status code (HTTP probe).
    #[error(transparent)]
    Probe(#[from] ProbeError),
    /// An HTTP probe answered, but not 200.
    #[error("HTTP {0}")]
    Status(u16),
    /// The check at start: the probe passed, but the node does not route a
    /// new connection to the Service yet (its kube-proxy has not applied
    /// the ready endpoints): it would drop or refuse traffic.
    #[error("the probe passes but the node {0} new connections")]
    NotRouting(&'static str),
}

/// What the check at start dials besides the probe: the backend's data
/// path, as a client connection would take it.
pub(crate) struct DataPath {
    pub dialer: std::sync::Arc<dyn zdt_core::net::Dialer>,
    /// The client address the dial is made for (the LB's frontend).
    pub client: std::net::SocketAddr,
}

impl DataPath {
    /// `Ok` iff a new connection would reach a server.
    async fn routes(&self) -> Result<(), ProbeFailure> {
        match self.dialer.dial(self.client).await {
            zdt_core::net::Dial::Connected(_) => Ok(()),
            zdt_core::net::Dial::Dropped => Err(ProbeFailure::NotRouting("drops")),
            zdt_core::net::Dial::Refused => Err(ProbeFailure::NotRouting("refuses")),
            zdt_core::net::Dial::Failed(e) => Err(ProbeFailure::Probe(ProbeError::Connect(e))),
        }
    }
}

/// How often the check at start ([`Probe::AtStart`]) retries a backend
/// that is not ready yet (kube-proxy applies a new Service's endpoints
/// about a second after the pods are ready).
const AT_START_RETRY: Duration = Duration::from_millis(100);

/// Which probe a result comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// The check at start of [`InitialHealth::Ready`](super::InitialHealth):
    /// the first pass, or the last failure when the backend did not pass
    /// within one interval.
    AtStart,
    /// One on the profile's schedule.
    Scheduled,
}

/// Probe `target` every `settings.interval`, the first time after `phase`,
/// handing each result to `record`, until `cancel`. With `at_start`, first
/// check it every [`AT_START_RETRY`] until both its probe passes and its
/// data path routes a new connection, for at most one interval, and record
/// only the pass (or the last failure). `_done` is held so the LB's owner
/// can wait for every probe task to end.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn probe_loop(
    target: ProbeTarget,
    net: Net,
    settings: ProbeSettings,
    phase: Duration,
    at_start: Option<DataPath>,
    cancel: CancellationToken,
    _done: mpsc::Sender<()>,
    mut record: impl FnMut(Result<(), ProbeFailure>, Probe),
) {
    let interval = settings.interval.get();
    let timeout = settings.timeout.get();
    // The schedule is fixed from the LB's start, wherever the probe at
    // start ends.
    let start = Instant::now();
    let mut next = start + phase;
    if let Some(data_path) = at_start {
        let check = || async {
            probe_once(&net, &target).await?;
            data_path.routes().await
        };
        loop {
            let result = tokio::select! {
                r = tokio::time::timeout(timeout, check()) => {
                    r.unwrap_or(Err(ProbeFailure::TimedOut(timeout)))
                }
                _ = cancel.cancelled() => return,
            };
            if result.is_ok() || start.elapsed() + AT_START_RETRY >= interval {
                record(result, Probe::AtStart);
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(AT_START_RETRY) => {}
                _ = cancel.cancelled() => return,
            }
        }
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = cancel.cancelled() => return,
        }
        let result = tokio::select! {
            r = tokio::time::timeout(timeout, probe_once(&net, &target)) => {
                r.unwrap_or(Err(ProbeFailure::TimedOut(timeout)))
            }
            _ = cancel.cancelled() => return,
        };
        record(result, Probe::Scheduled);
        next += interval;
        // A probe slower than the interval delays the next one rather than
        // firing a burst to catch up.
        let now = Instant::now();
        if next < now {
            next = now;
        }
    }
}

/// One probe: `Ok` iff healthy.
pub(crate) async fn probe_once(net: &Net, target: &ProbeTarget) -> Result<(), ProbeFailure> {
    match target {
        ProbeTarget::Tcp { addr } => net
            .connect(*addr)
            .await
            .map(drop)
            .map_err(|e| ProbeError::Connect(e).into()),
        ProbeTarget::Http { addr, path } => {
            match zdt_core::net::http_status(net, *addr, path, "zdt-lb-probe").await? {
                200 => Ok(()),
                code => Err(ProbeFailure::Status(code)),
            }
        }
    }
}
