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
//! // What to send is `settings.load`; adjust it before the attack.
//! assert!(!settings.load.keep_alive);
//! let cancel = tokio_util::sync::CancellationToken::new();
//! let summary = traffic::attack(settings, Clock::start(), cancel).await?;
//! print!("{}", traffic::report::text(&summary));
//! # Ok(()) }
//! ```

mod aggregate;
mod attack;
pub mod child;
mod context;
mod exchange;
mod failed;
pub(crate) mod http;
mod load;
mod lock;
pub mod merge;
pub(crate) mod pacer;
mod polled;
pub mod raw;
pub mod report;
mod summary;
mod timer;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use zdt_core::clock::Clock;
use zdt_core::units::Rate;

pub use ::http::Method;
pub use aggregate::Snapshot;
pub use failed::{FailedRequest, MAX_LISTED};
pub use http::{Target, UrlError};
pub use load::{Load, DEFAULT_MAX_IN_FLIGHT, DEFAULT_REDIRECTS, MIN_BUCKET};
pub use merge::{GeneratorPart, Histograms, Part};
pub use pacer::{Pace, Pacer};
pub use raw::{RawFormat, RawOutput, RawRecord};
pub use summary::{Bucket, ErrorKind, Latencies, Summary};

/// The default cap on keep-alive connections.
pub const DEFAULT_POOL_CAP: usize = 10_000;

/// Errors before or around an attack (results are never errors: they are
/// counted in the summary).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrafficError {
    /// A setting is out of range; the message names it and the fix.
    #[error("{0}")]
    Settings(String),
    /// The target URL cannot be sent to.
    #[error(transparent)]
    Url(#[from] UrlError),
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

/// Everything one attack needs: what to send ([`Load`]) and what only
/// this run knows (where to, how many connections, where raw results go).
/// [`attack`] validates.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub target: Target,
    pub load: Load,
    /// Keep-alive only: connections open at most.
    pub pool_cap: usize,
    /// Stream every result to this file too.
    pub raw: Option<RawOutput>,
    /// The network to send from (an emulated cluster's own); a generator
    /// in a child process joins it before it starts.
    #[serde(skip)]
    pub net: zdt_core::netns::Net,
}

impl Settings {
    /// [`Load::new`] sent to `url`.
    pub fn new(url: &str, rate: Rate, duration: Duration) -> Result<Self, TrafficError> {
        let (target, path) = Target::parse(url)?;
        let load = Load {
            path,
            ..Load::new(rate, duration.into())
        };
        Ok(Self::at(target, load))
    }

    /// `load` sent to `target`, with the default pool cap and no raw output.
    pub fn at(target: Target, load: Load) -> Self {
        Self {
            target,
            load,
            pool_cap: DEFAULT_POOL_CAP,
            raw: None,
            net: zdt_core::netns::Net::host(),
        }
    }

    /// Checks ranges; each message names the setting and the fix.
    pub fn validate(&self) -> Result<(), TrafficError> {
        self.load.validate()?;
        if self.load.keep_alive && self.pool_cap == 0 {
            return Err(TrafficError::Settings(
                "pool cap must be ≥ 1 with keep-alive".into(),
            ));
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
    InProcess(Arc<context::RequestContext>),
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
            ProgressSource::InProcess(context) => context.snapshot(),
            ProgressSource::Child(latest) => *lock::lock(latest),
        }
    }

    /// A view of an attack run elsewhere: `latest` is kept up to date by
    /// whoever relays its reports; `t0` is when request 0 was due.
    pub fn relayed(latest: Arc<Mutex<Snapshot>>, count: u64, t0: Instant) -> Self {
        Self {
            source: ProgressSource::Child(latest),
            count,
            t0,
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
        let Settings {
            target,
            load,
            pool_cap,
            raw,
            net,
        } = settings;
        let addr = resolve(&target.authority).await?;
        let (raw_sink, raw_writer) = match &raw {
            Some(out) => {
                let (s, w) = raw::start(out)?;
                (Some(s), Some(w))
            }
            None => (None, None),
        };
        let duration = load.duration.get();
        let pacer = Pacer::new(load.rate, duration);
        let t0 = Instant::now();
        let meta = aggregate::Meta {
            target: target.url(&load.path),
            method: load.method.to_string(),
            rate: load.rate,
            duration,
            keep_alive: load.keep_alive,
            timeout: load.timeout.get(),
            started_at: clock.offset(t0),
            started_wall: jiff::Timestamp::now(),
            bucket: load.bucket.get(),
            bytes_out: load.body.len() as u64,
        };
        let context = Arc::new(context::RequestContext {
            addr,
            net,
            request: target.request_bytes(&load),
            head_only: load.method == ::http::Method::HEAD,
            replay: context::Replay::of(&load),
            follow: u32::try_from(load.redirects)
                .ok()
                .map(|max| context::Follow {
                    max,
                    target: target.clone(),
                    load: load.clone(),
                }),
            timeout: load.timeout.get(),
            pool_cap: load.keep_alive.then_some(pool_cap),
            t0,
            stop: cancel.child_token(),
            agg: Mutex::new(aggregate::Aggregator::new(meta, raw_sink)),
        });
        // The attack runs on its own thread: no cross-thread wake-ups per
        // request (futex, eventfd), and the rest of a run (emulator, LB,
        // chaos) cannot delay its wake-ups. Its loop sleeps in syscalls of
        // its own (see `timer`), so it blocks this thread's runtime, which
        // has nothing else to run.
        let abort = cancel.child_token();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let run = attack::run(
            context.clone(),
            pacer,
            duration,
            load.max_in_flight,
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
                source: ProgressSource::InProcess(context),
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

    /// Like [`Attack::finish`], with the histograms the summary was read
    /// from, so it can be merged exactly with other generators' (see
    /// [`merge`]). Only an attack in this process has them.
    pub async fn finish_with_histograms(self) -> Result<Part, TrafficError> {
        let context = match &self.progress.source {
            ProgressSource::InProcess(c) => c.clone(),
            ProgressSource::Child(_) => {
                return Err(TrafficError::Internal(
                    "a child process's attack has no histograms here".into(),
                ))
            }
        };
        let summary = self.finish().await?;
        let histograms = lock::lock(&context.agg).histograms();
        Ok(Part {
            summary,
            histograms,
        })
    }

    /// An attack run elsewhere (generator pods), seen through `progress`;
    /// `done` delivers its summary, dropping it cancels `abort`.
    pub fn relayed(
        progress: Progress,
        done: tokio::sync::oneshot::Receiver<Result<Summary, TrafficError>>,
        abort: CancellationToken,
    ) -> Self {
        Self::from_parts(progress, done, abort)
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
    http::resolve(authority)
        .await
        .map_err(|source| TrafficError::Resolve {
            authority: authority.to_string(),
            source,
        })
}
