//! The one attack loop: a pacer task that spawns one task per due request,
//! bounded by an in-flight semaphore, every result folded into the shared
//! aggregator as it completes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant as TokioInstant;
use tokio_util::sync::CancellationToken;

use super::aggregate::{Aggregator, ErrorKey, Record, Snapshot};
use super::http::{self, Detail, Failure, Response, Stage};
use super::lock::lock;
use super::pacer::{Pace, Pacer};
use super::polled::{PolledConn, Ticker};
use super::raw::RawWriter;
use super::summary::{ErrorKind, Summary};
use super::timer::Wakeups;
use super::TrafficError;

/// Keep-alive connections: idle ones on a stack (the most recently used
/// is reused first, so few connections stay hot) and a cap on how many
/// requests hold a connection at once.
pub(crate) struct Pool {
    idle: Mutex<Vec<PolledConn>>,
    slots: Semaphore,
}

impl Pool {
    pub fn new(cap: usize) -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(cap),
        }
    }

    fn take(&self) -> Option<PolledConn> {
        lock(&self.idle).pop()
    }

    fn put(&self, conn: PolledConn) {
        lock(&self.idle).push(conn);
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
    /// When a request goes again after a reused connection turned out closed.
    pub replay: Replay,
    /// Redirects followed per request, and what to build their requests
    /// from; `None` follows none (`redirects: -1`).
    pub follow: Option<Follow>,
    pub timeout: Duration,
    pub pool: Option<Pool>,
    /// Lets the pooled connections (see [`crate::polled`]) read at the
    /// attack loop's wake-ups.
    pub ticker: Arc<Ticker>,
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

    fn allows(self, f: &Failure) -> bool {
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

/// What one request's exchange did besides its response.
#[derive(Debug, Default, Clone, Copy)]
struct Trip {
    /// Times it went again after a reused connection turned out closed.
    replays: u32,
    /// When the last response arrived, if its connection was a polled one
    /// (read some time after that).
    arrived: Option<Instant>,
    /// The local address of the connection it last used: what the LB saw
    /// as the client, so a failure can be joined to the LB's record.
    local: Option<SocketAddr>,
}

impl Trip {
    /// A reused connection's (a new one's is set by `PolledConn::dial`, as
    /// soon as it has one: a timeout drops the exchange before it could
    /// report anything, and a peer that resets at once fails the connect).
    fn on(&mut self, conn: &PolledConn) {
        self.local = conn.local_addr();
    }
}

impl RequestContext {
    pub fn snapshot(&self) -> Snapshot {
        lock(&self.agg).snapshot()
    }

    /// A fresh connection to `addr`, read at the ticks.
    async fn dial(
        &self,
        addr: SocketAddr,
        local: &mut Option<SocketAddr>,
    ) -> Result<PolledConn, Failure> {
        PolledConn::dial(&self.net, addr, local, self.ticker.clone())
            .await
            .map_err(|e| Failure::io(Stage::Connect, &e))
    }

    /// The request, and the redirects it is told to follow.
    async fn exchange(
        &self,
        stage: &mut Stage,
        buf: &mut Vec<u8>,
        trip: &mut Trip,
    ) -> Result<Response, Failure> {
        let first = self
            .hop(
                self.addr,
                &self.request,
                self.head_only,
                true,
                stage,
                buf,
                trip,
            )
            .await;
        let Some(follow) = &self.follow else {
            return first;
        };
        let mut response = first?;
        if response.redirect().is_none() {
            return Ok(response);
        }
        let mut hops = 0;
        let mut target = follow.target.clone();
        let mut addr = self.addr;
        let mut load = follow.load.clone();
        while let Some(location) = response.redirect() {
            if hops == follow.max {
                return Err(Failure::new(
                    ErrorKind::BadResponse,
                    Stage::Head,
                    Detail::TooManyRedirects(follow.max),
                ));
            }
            hops += 1;
            let bad = || Failure::new(ErrorKind::BadResponse, Stage::Head, Detail::BadLocation);
            let location = std::str::from_utf8(&buf[location]).map_err(|_| bad())?;
            let path = match redirect_target(&target, &load.path, location.trim()) {
                Some((next, path)) => {
                    if next.authority != target.authority {
                        addr = http::resolve(&next.authority).await.map_err(|_| bad())?;
                    }
                    target = next;
                    path
                }
                None => return Err(bad()),
            };
            // As Go's client: 301/302/303 go on as GET without a body
            // (HEAD stays HEAD); 307/308 repeat the method and body.
            if matches!(response.status, 301..=303) && load.method != ::http::Method::HEAD {
                load.method = ::http::Method::GET;
                load.body.clear();
            }
            load.path = path;
            // Only the attack's own target shares its keep-alive pool.
            let pooled = addr == self.addr;
            let request = target.request_bytes(&crate::Load {
                keep_alive: load.keep_alive && pooled,
                ..load.clone()
            });
            let head_only = load.method == ::http::Method::HEAD;
            response = self
                .hop(addr, &request, head_only, pooled, stage, buf, trip)
                .await?;
        }
        Ok(response)
    }

    /// One request and its response, on a pooled connection when there is
    /// one (`pooled`, with keep-alive) or a fresh one.
    #[allow(clippy::too_many_arguments)]
    async fn hop(
        &self,
        addr: SocketAddr,
        request: &[u8],
        head_only: bool,
        pooled: bool,
        stage: &mut Stage,
        buf: &mut Vec<u8>,
        trip: &mut Trip,
    ) -> Result<Response, Failure> {
        let pool = match &self.pool {
            Some(pool) if pooled => pool,
            _ => {
                // One fresh connection, closed when it is dropped, read as
                // the response arrives: polled at the wake-ups instead, it
                // halved the context switches but cost ~6 % more CPU per
                // request (docs/bench-attack.md, 05:27 UTC run).
                *stage = Stage::Connect;
                let mut stream = self
                    .net
                    .connect_traced(addr, &mut trip.local)
                    .await
                    .map_err(|e| Failure::io(Stage::Connect, &e))?;
                trip.arrived = None;
                return http::exchange(&mut stream, request, head_only, buf, stage).await;
            }
        };
        *stage = Stage::Connect;
        let _slot = pool
            .slots
            .acquire()
            .await
            .expect("the pool is never closed");
        if let Some(mut conn) = pool.take() {
            trip.on(&conn);
            match http::exchange(&mut conn, request, head_only, buf, stage).await {
                Ok(r) => {
                    trip.arrived = conn.arrived();
                    if r.reusable {
                        pool.put(conn);
                    }
                    return Ok(r);
                }
                // The server closed the idle connection before our request
                // reached it; nothing was answered, so go again on a new one.
                Err(f) if self.replay.allows(&f) => {
                    trip.replays += 1;
                    *stage = Stage::Connect
                }
                Err(f) => return Err(f),
            }
        }
        let mut conn = self.dial(addr, &mut trip.local).await?;
        let r = http::exchange(&mut conn, request, head_only, buf, stage).await?;
        trip.arrived = conn.arrived();
        if r.reusable {
            pool.put(conn);
        }
        Ok(r)
    }
}

/// Where a redirect's `Location` points, from the request that got it: an
/// absolute `http://` URL, or a path on the same target (absolute, or
/// relative to the current path's directory). `None` for what the
/// generator cannot follow (https, another scheme, garbage).
fn redirect_target(
    current: &crate::Target,
    current_path: &str,
    location: &str,
) -> Option<(crate::Target, String)> {
    if location.contains("://") {
        return crate::Target::parse(location).ok();
    }
    if location.starts_with("//") {
        return crate::Target::parse(&format!("http:{location}")).ok();
    }
    if location.starts_with('/') {
        return Some((current.clone(), location.to_string()));
    }
    if location.is_empty() || location.contains(char::is_whitespace) {
        return None;
    }
    let dir = current_path
        .split(['?', '#'])
        .next()
        .and_then(|p| p.rsplit_once('/'))
        .map_or("", |(dir, _)| dir);
    Some((current.clone(), format!("{dir}/{location}")))
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
    let mut trip = Trip::default();
    let deadline = TokioInstant::from_std(sent_at + context.timeout);
    let outcome = tokio::select! {
        biased;
        r = tokio::time::timeout_at(deadline, context.exchange(&mut stage, &mut buf, &mut trip)) => {
            r.unwrap_or_else(|_| Err(Failure::timeout(stage)))
        }
        _ = context.stop.cancelled() => {
            Err(Failure::new(ErrorKind::Cancelled, stage, Detail::Cancelled))
        }
    };
    let end = match (&outcome, trip.arrived) {
        // Read at a later wake-up: the response ended when it arrived.
        (Ok(_), Some(arrived)) => arrived.max(sent_at),
        _ => Instant::now(),
    };
    let t0 = context.t0;
    let mut record = Record {
        seq,
        due,
        sent: Some(sent_at.saturating_duration_since(t0)),
        end: end.saturating_duration_since(t0),
        status: 0,
        failure: None,
        bytes_in: 0,
        replays: trip.replays,
        node: None,
        pod: None,
        local: outcome.is_err().then_some(trip.local).flatten(),
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
    let timer_error = |e| TrafficError::Internal(format!("high-resolution timer: {e}"));
    let mut wakeups = Wakeups::new(t0, context.ticker.clone()).map_err(timer_error)?;
    let busy = |in_flight: &Semaphore| in_flight.available_permits() < max_in_flight;
    let mut sent = 0u64;
    let mut cancelled = false;
    'schedule: loop {
        match pacer.pace(t0.elapsed(), sent) {
            Pace::Stop => break,
            Pace::Wait(_) => {
                // Sleep to the due time itself (not a 1 ms tick after it),
                // or the least gap after the last wake-up if that is later;
                // every request due meanwhile then goes out at once and its
                // lag is recorded.
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => { cancelled = true; break; }
                    r = wakeups.sleep(Some(pacer.due(sent)), busy(&in_flight)) => r.map_err(timer_error)?,
                }
            }
            Pace::Send => {
                let permit = match in_flight.clone().try_acquire_owned() {
                    Ok(p) => p,
                    // At the bound: wait (the wait shows up as schedule lag
                    // and in the corrected latency), but not past the end
                    // of the schedule; what is left then is counted not sent.
                    Err(_) => loop {
                        if t0.elapsed() >= duration {
                            break 'schedule;
                        }
                        tokio::select! {
                            biased;
                            _ = cancel.cancelled() => { cancelled = true; break 'schedule; }
                            p = in_flight.clone().acquire_owned() => break p.expect("never closed"),
                            r = wakeups.sleep(Some(duration), true) => r.map_err(timer_error)?,
                        }
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
                replays: 0,
                node: None,
                pod: None,
                local: None,
            });
        }
    }

    // Every request task holds a permit until it has recorded its result;
    // the timeout bounds this wait, and a cancel aborts them sooner.
    let all = u32::try_from(max_in_flight).expect("validated to fit");
    loop {
        tokio::select! {
            biased;
            p = in_flight.acquire_many(all) => { drop(p.expect("never closed")); break; }
            r = wakeups.sleep(None, true) => r.map_err(timer_error)?,
        }
    }

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
