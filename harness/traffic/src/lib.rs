//! An open-model, constant-rate HTTP load generator: request i is due at
//! t0 + i/rate whatever happened before, latency is measured from that due
//! time (no coordinated omission) and from the actual send, and results
//! aggregate into HDR histograms and time buckets whose memory does not
//! grow with the request count.
//!
//! ```no_run
//! # async fn demo() -> Result<(), zdt_traffic::TrafficError> {
//! use std::time::Duration;
//! use zdt_core::clock::Clock;
//! use zdt_traffic as traffic;
//! let settings = traffic::Settings::new(
//!     "http://127.0.0.1:8080/",
//!     "5000/s".parse().unwrap(),
//!     Duration::from_secs(10),
//! )?;
//! let cancel = tokio_util::sync::CancellationToken::new();
//! let summary = traffic::attack(settings, Clock::start(), cancel).await?;
//! print!("{}", traffic::report::text(&summary));
//! # Ok(()) }
//! ```

mod aggregate;
mod attack;
pub mod child;
pub mod http;
pub mod pacer;
pub mod raw;
pub mod report;
mod summary;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use zdt_core::clock::Clock;
use zdt_core::units::Rate;

pub use aggregate::Snapshot;
pub use http::Target;
pub use pacer::{Pace, Pacer};
pub use raw::{RawFormat, RawOutput, RawRecord};
pub use summary::{Bucket, ErrorKind, Latencies, Summary};

/// The default bound on requests in flight: high enough that a 10 s timeout
/// storm at 5000/s never hits it, low enough to stay within the fd limit.
pub const DEFAULT_MAX_INFLIGHT: usize = 100_000;
/// The default cap on keep-alive connections.
pub const DEFAULT_POOL_CAP: usize = 10_000;
/// The smallest time bucket.
pub const MIN_BUCKET: Duration = Duration::from_millis(100);

/// Errors before or around an attack (results are never errors: they are
/// counted in the summary).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrafficError {
    /// A setting is out of range; the message names it and the fix.
    #[error("{0}")]
    Settings(String),
    /// The target's host did not resolve.
    #[error("cannot resolve `{authority}`: {source}; check the host in the URL")]
    Resolve {
        authority: String,
        #[source]
        source: std::io::Error,
    },
    /// The raw result file could not be created or written.
    #[error("raw results `{}`: {source}", path.display())]
    RawOutput {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A bug: a task of the generator itself failed.
    #[error("traffic generator: {0}")]
    Internal(String),
    /// The generator's child process could not start, crashed, or spoke
    /// something other than its protocol; the message has its exit status
    /// and the end of its stderr.
    #[error("traffic generator process: {0}")]
    Child(String),
}

/// Everything one attack needs. Build with [`Settings::new`] and adjust the
/// public fields; [`attack`] validates.
#[derive(Debug, Clone)]
pub struct Settings {
    pub target: Target,
    pub method: ::http::Method,
    /// Extra request headers (`Host`/`User-Agent` override the defaults;
    /// `Connection` and `Content-Length` are managed by the generator).
    pub headers: Vec<(String, String)>,
    pub body: bytes::Bytes,
    pub rate: Rate,
    pub duration: Duration,
    /// One timeout covering connect + response head + body, from the send.
    pub timeout: Duration,
    /// false: a fresh TCP connection per request with `Connection: close`.
    pub keep_alive: bool,
    /// Requests in flight at most; beyond it the generator waits and the
    /// lag is reported (requests still waiting at the end: not sent).
    pub max_inflight: usize,
    /// Keep-alive only: connections open at most.
    pub pool_cap: usize,
    /// Width of the time buckets (≥ 100 ms).
    pub bucket: Duration,
    /// Stream every result to this file too.
    pub raw: Option<RawOutput>,
}

impl Settings {
    /// GET `url` at `rate` for `duration`, with a 10 s timeout, no
    /// keep-alive (the scenario default) and 1 s buckets.
    pub fn new(url: &str, rate: Rate, duration: Duration) -> Result<Self, TrafficError> {
        Ok(Self {
            target: Target::parse(url).map_err(TrafficError::Settings)?,
            method: ::http::Method::GET,
            headers: Vec::new(),
            body: bytes::Bytes::new(),
            rate,
            duration,
            timeout: Duration::from_secs(10),
            keep_alive: false,
            max_inflight: DEFAULT_MAX_INFLIGHT,
            pool_cap: DEFAULT_POOL_CAP,
            bucket: Duration::from_secs(1),
            raw: None,
        })
    }

    /// Checks ranges; each message names the setting and the fix.
    pub fn validate(&self) -> Result<(), TrafficError> {
        let bad = |m: String| Err(TrafficError::Settings(m));
        if self.duration.is_zero() {
            return bad("duration must be > 0: write e.g. `10s`".into());
        }
        if self.rate.count_in(self.duration) == 0 {
            return bad(format!(
                "rate {} for {:?} sends no request: raise the rate or the duration",
                self.rate, self.duration
            ));
        }
        if self.timeout.is_zero() {
            return bad("timeout must be > 0: write e.g. `10s`".into());
        }
        if self.max_inflight == 0 || self.max_inflight > 1_000_000 {
            return bad(format!(
                "max in-flight {} is out of range: use 1..=1000000",
                self.max_inflight
            ));
        }
        if self.keep_alive && self.pool_cap == 0 {
            return bad("pool cap must be ≥ 1 with keep-alive".into());
        }
        if self.bucket < MIN_BUCKET {
            return bad(format!(
                "bucket {:?} is too small: use ≥ 100ms",
                self.bucket
            ));
        }
        for (k, v) in &self.headers {
            let name_ok = ::http::HeaderName::from_bytes(k.as_bytes()).is_ok();
            if !name_ok || ::http::HeaderValue::from_str(v).is_err() {
                return bad(format!(
                    "header `{k}: {v}` is not a valid HTTP header: write `Name: value`"
                ));
            }
        }
        Ok(())
    }
}

/// A running attack, in this process or in a child process (see
/// [`child`]). Dropping it aborts the attack.
pub struct Attack {
    progress: Progress,
    done: tokio::sync::oneshot::Receiver<Result<Summary, TrafficError>>,
    /// Dropping the attack cancels it (its thread or child then winds down).
    _abort: tokio_util::sync::DropGuard,
}

/// A live view of a running attack, for progress displays.
#[derive(Clone)]
pub struct Progress {
    source: ProgressSource,
    count: u64,
    t0: Instant,
}

#[derive(Clone)]
enum ProgressSource {
    InProcess(Arc<attack::Shared>),
    /// The latest snapshot a child process reported.
    Child(Arc<Mutex<Snapshot>>),
}

impl Progress {
    /// How many requests the whole attack sends.
    pub fn total(&self) -> u64 {
        self.count
    }

    /// Time since t0.
    pub fn elapsed(&self) -> Duration {
        self.t0.elapsed()
    }

    /// Counts and p99 so far (takes the aggregator's lock briefly; from a
    /// child process, its latest report, at most a tick old).
    pub fn snapshot(&self) -> Snapshot {
        match &self.source {
            ProgressSource::InProcess(shared) => shared.snapshot(),
            ProgressSource::Child(latest) => *attack::lock(latest),
        }
    }

    /// t0 (request 0 due).
    pub(crate) fn t0(&self) -> Instant {
        self.t0
    }
}

impl Attack {
    /// Validate, resolve the target, open the raw output, and start sending.
    /// Request 0 is due right away; `started_at` in the summary is that
    /// moment on `clock`.
    pub async fn start(
        settings: Settings,
        clock: Clock,
        cancel: CancellationToken,
    ) -> Result<Self, TrafficError> {
        settings.validate()?;
        let addr = resolve(&settings.target.authority).await?;
        let (raw_sink, raw_writer) = match &settings.raw {
            Some(out) => {
                let (s, w) = raw::start(out)?;
                (Some(s), Some(w))
            }
            None => (None, None),
        };
        let request = settings.target.request_bytes(
            &settings.method,
            &settings.headers,
            &settings.body,
            settings.keep_alive,
        );
        let pacer = Pacer::new(settings.rate, settings.duration);
        let t0 = Instant::now();
        let meta = aggregate::Meta {
            target: settings.target.url.clone(),
            method: settings.method.to_string(),
            rate: settings.rate,
            duration: settings.duration,
            keep_alive: settings.keep_alive,
            timeout: settings.timeout,
            started_at: clock.offset(t0),
            started_wall: jiff::Timestamp::now(),
            bucket: settings.bucket,
            bytes_out: settings.body.len() as u64,
        };
        let shared = Arc::new(attack::Shared {
            addr,
            request,
            head_only: settings.method == ::http::Method::HEAD,
            // As Go's net/http: only a request without side effects (an
            // idempotent method, no body) may go again on a fresh connection
            // after the reused one was found closed.
            replayable: settings.body.is_empty()
                && matches!(
                    settings.method,
                    ::http::Method::GET
                        | ::http::Method::HEAD
                        | ::http::Method::OPTIONS
                        | ::http::Method::TRACE
                ),
            timeout: settings.timeout,
            pool: settings
                .keep_alive
                .then(|| attack::Pool::new(settings.pool_cap)),
            t0,
            stop: cancel.child_token(),
            agg: Mutex::new(aggregate::Aggregator::new(meta, raw_sink)),
        });
        // The attack runs on its own thread and single-threaded runtime: no
        // cross-thread wake-ups per request (futex, eventfd), and the rest of
        // a run (emulator, LB, chaos) cannot delay its timers.
        let abort = cancel.child_token();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let run = attack::run(
            shared.clone(),
            pacer,
            settings.duration,
            settings.max_inflight,
            abort.clone(),
            raw_writer,
        );
        std::thread::Builder::new()
            .name("zdt-traffic".into())
            .spawn(move || {
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| TrafficError::Internal(format!("traffic runtime: {e}")))
                    .and_then(|rt| rt.block_on(run));
                let _ = tx.send(result);
            })
            .map_err(|e| TrafficError::Internal(format!("traffic thread: {e}")))?;
        Ok(Self {
            progress: Progress {
                source: ProgressSource::InProcess(shared),
                count: pacer.count(),
                t0,
            },
            done: rx,
            _abort: abort.drop_guard(),
        })
    }

    /// Like [`Attack::start`], but the generator runs in a child process
    /// (`exe`, a zdt binary, re-executed with a hidden subcommand): its
    /// sockets live in the child's fd table and it is scheduled apart from
    /// this process. Same summary, stamped on the same `clock`.
    pub async fn start_in_child(
        exe: &std::path::Path,
        settings: Settings,
        clock: Clock,
        cancel: CancellationToken,
    ) -> Result<Self, TrafficError> {
        child::start(exe, settings, clock, cancel).await
    }

    /// In a child process when this process can re-execute a zdt binary
    /// ([`child::exe`]), else in this process.
    pub async fn start_isolated(
        settings: Settings,
        clock: Clock,
        cancel: CancellationToken,
    ) -> Result<Self, TrafficError> {
        match zdt_core::process::zdt_exe() {
            Some(exe) => Self::start_in_child(&exe, settings, clock, cancel).await,
            None => Self::start(settings, clock, cancel).await,
        }
    }

    pub fn progress(&self) -> Progress {
        self.progress.clone()
    }

    /// Wait for the schedule to end and every request to finish (at most
    /// the timeout after the last send), then summarise.
    pub async fn finish(self) -> Result<Summary, TrafficError> {
        self.done
            .await
            .map_err(|_| TrafficError::Internal("the traffic thread died".into()))?
    }

    /// Built by the child-process path.
    pub(crate) fn from_parts(
        progress: Progress,
        done: tokio::sync::oneshot::Receiver<Result<Summary, TrafficError>>,
        abort: CancellationToken,
    ) -> Self {
        Self {
            progress,
            done,
            _abort: abort.drop_guard(),
        }
    }
}

/// Run an attack to the end (or until `cancel`; the summary then covers
/// what was due until then and marks in-flight requests `cancelled`).
pub async fn attack(
    settings: Settings,
    clock: Clock,
    cancel: CancellationToken,
) -> Result<Summary, TrafficError> {
    Attack::start(settings, clock, cancel).await?.finish().await
}

async fn resolve(authority: &str) -> Result<SocketAddr, TrafficError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(authority)
        .await
        .map_err(|e| TrafficError::Resolve {
            authority: authority.to_string(),
            source: e,
        })?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| TrafficError::Resolve {
            authority: authority.to_string(),
            source: std::io::Error::other("no address"),
        })
}
