//! The one attack loop: a pacer task that spawns one task per due request,
//! bounded by an in-flight semaphore, every result folded into the shared
//! aggregator as it completes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant as TokioInstant;
use tokio_util::sync::CancellationToken;

use super::aggregate::{Aggregator, ErrorKey, Record, Snapshot};
use super::http::{self, Detail, Failure, Response, Stage};
use super::pacer::{Pace, Pacer};
use super::raw::RawWriter;
use super::summary::{ErrorKind, Summary};
use super::TrafficError;

/// Keep-alive connections: idle ones on a stack (the most recently used
/// is reused first, so few connections stay hot) and a cap on how many
/// requests hold a connection at once.
pub(crate) struct Pool {
    idle: Mutex<Vec<TcpStream>>,
    slots: Semaphore,
}

impl Pool {
    pub fn new(cap: usize) -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(cap),
        }
    }

    fn take(&self) -> Option<TcpStream> {
        lock(&self.idle).pop()
    }

    fn put(&self, stream: TcpStream) {
        lock(&self.idle).push(stream);
    }
}

/// What every request task of one attack works with: the request bytes and
/// where they go, the connection pool, the cancel, and the aggregator the
/// result is folded into.
pub(crate) struct RequestContext {
    pub addr: SocketAddr,
    pub net: zdt_core::netns::Net,
    pub request: Vec<u8>,
    pub head_only: bool,
    /// May be sent again when a reused connection turns out closed.
    pub replayable: bool,
    pub timeout: Duration,
    pub pool: Option<Pool>,
    pub t0: Instant,
    /// Aborts in-flight requests (a child of the attack's cancel token).
    pub stop: CancellationToken,
    pub agg: Mutex<Aggregator>,
}

/// A poisoned lock only means another request task panicked mid-update;
/// the counters are still the best information there is.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RequestContext {
    pub fn snapshot(&self) -> Snapshot {
        lock(&self.agg).snapshot()
    }

    async fn exchange(&self, stage: &mut Stage, buf: &mut Vec<u8>) -> Result<Response, Failure> {
        let Some(pool) = &self.pool else {
            // One fresh connection per request, closed when it is dropped.
            let mut stream = http::connect(&self.net, self.addr).await?;
            return http::exchange(&mut stream, &self.request, self.head_only, buf, stage).await;
        };
        let _slot = pool
            .slots
            .acquire()
            .await
            .expect("the pool is never closed");
        if let Some(mut stream) = pool.take() {
            match http::exchange(&mut stream, &self.request, self.head_only, buf, stage).await {
                Ok(r) => {
                    if r.reusable {
                        pool.put(stream);
                    }
                    return Ok(r);
                }
                // The server closed the idle connection before our request
                // reached it; nothing was answered, so go again on a new one.
                // (A write that failed sent nothing, so any request may go again.)
                Err(f)
                    if f.is_stale_connection() && (self.replayable || f.stage == Stage::Write) =>
                {
                    *stage = Stage::Connect
                }
                Err(f) => return Err(f),
            }
        }
        let mut stream = http::connect(&self.net, self.addr).await?;
        let r = http::exchange(&mut stream, &self.request, self.head_only, buf, stage).await?;
        if r.reusable {
            pool.put(stream);
        }
        Ok(r)
    }
}

/// One request, from its due time to its recorded result.
async fn request(
    context: Arc<RequestContext>,
    seq: u64,
    due: Duration,
    permit: OwnedSemaphorePermit,
) {
    let sent_at = Instant::now();
    let mut stage = Stage::Connect;
    let mut buf = Vec::new();
    let deadline = TokioInstant::from_std(sent_at + context.timeout);
    let outcome = tokio::select! {
        biased;
        r = tokio::time::timeout_at(deadline, context.exchange(&mut stage, &mut buf)) => {
            r.unwrap_or_else(|_| Err(Failure::timeout(stage)))
        }
        _ = context.stop.cancelled() => {
            Err(Failure::new(ErrorKind::Cancelled, stage, Detail::Cancelled))
        }
    };
    let end = Instant::now();
    let t0 = context.t0;
    let mut record = Record {
        seq,
        due,
        sent: Some(sent_at.saturating_duration_since(t0)),
        end: end.saturating_duration_since(t0),
        status: 0,
        failure: None,
        bytes_in: 0,
        node: None,
        pod: None,
    };
    match &outcome {
        Ok(r) => {
            record.status = r.status;
            record.bytes_in = r.body;
            if !(200..400).contains(&r.status) {
                record.failure = Some(ErrorKey::Status(r.status));
            }
            record.node = r.node.clone().map(|range| &buf[range]);
            record.pod = r.pod.clone().map(|range| &buf[range]);
        }
        Err(f) => record.failure = Some(ErrorKey::Failure(*f)),
    }
    lock(&context.agg).record(&record);
    drop(permit);
}

/// The pacer task: runs the schedule, then waits for what is in flight.
pub(crate) async fn run(
    context: Arc<RequestContext>,
    pacer: Pacer,
    duration: Duration,
    max_in_flight: usize,
    cancel: CancellationToken,
    raw: Option<RawWriter>,
) -> Result<Summary, TrafficError> {
    let t0 = context.t0;
    let in_flight = Arc::new(Semaphore::new(max_in_flight));
    let end_of_schedule = TokioInstant::from_std(t0 + duration);
    let mut sent = 0u64;
    let mut cancelled = false;
    loop {
        let now = Instant::now();
        match pacer.pace(now.saturating_duration_since(t0), sent) {
            Pace::Stop => break,
            Pace::Wait(wait) => {
                // Timers have millisecond resolution: at high rates each
                // wake-up sends the batch that came due meanwhile.
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => { cancelled = true; break; }
                    _ = tokio::time::sleep_until(TokioInstant::from_std(now + wait)) => {}
                }
            }
            Pace::Send => {
                let permit = match in_flight.clone().try_acquire_owned() {
                    Ok(p) => p,
                    // At the bound: wait (the wait shows up as schedule lag
                    // and in the corrected latency), but not past the end
                    // of the schedule; what is left then is counted not sent.
                    Err(_) => tokio::select! {
                        biased;
                        _ = cancel.cancelled() => { cancelled = true; break; }
                        p = in_flight.clone().acquire_owned() => p.expect("never closed"),
                        _ = tokio::time::sleep_until(end_of_schedule) => break,
                    },
                };
                tokio::spawn(request(context.clone(), sent, pacer.due(sent), permit));
                sent += 1;
            }
        }
    }

    // Requests that were due but never went out are failures, not omissions.
    let stopped = Instant::now().saturating_duration_since(t0);
    let due = if cancelled {
        pacer.due_by(stopped)
    } else {
        pacer.count()
    };
    if due > sent {
        let not_sent = Failure::new(ErrorKind::NotSent, Stage::Connect, Detail::NotSent);
        let mut agg = lock(&context.agg);
        for seq in sent..due {
            agg.record(&Record {
                seq,
                due: pacer.due(seq),
                sent: None,
                end: stopped,
                status: 0,
                failure: Some(ErrorKey::Failure(not_sent)),
                bytes_in: 0,
                node: None,
                pod: None,
            });
        }
    }

    // Every request task holds a permit until it has recorded its result;
    // the timeout bounds this wait, and a cancel aborts them sooner.
    let all = u32::try_from(max_in_flight).expect("validated to fit");
    let _all = in_flight.acquire_many(all).await.expect("never closed");

    let raw_sink = lock(&context.agg).take_raw();
    drop(raw_sink);
    if let Some(writer) = raw {
        tokio::task::spawn_blocking(move || writer.finish())
            .await
            .map_err(|e| TrafficError::Internal(format!("raw writer task: {e}")))??;
    }
    let summary = lock(&context.agg).summary(cancelled);
    Ok(summary)
}
