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
}

/// Probe `target` every `settings.interval`, the first time after `phase`,
/// handing each result to `record`, until `cancel`. `_done` is held so the
/// LB's owner can wait for every probe task to end.
pub(crate) async fn probe_loop(
    target: ProbeTarget,
    net: Net,
    settings: ProbeSettings,
    phase: Duration,
    cancel: CancellationToken,
    _done: mpsc::Sender<()>,
    mut record: impl FnMut(Result<(), ProbeFailure>),
) {
    let interval = settings.interval.get();
    let timeout = settings.timeout.get();
    let mut next = Instant::now() + phase;
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
        record(result);
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
