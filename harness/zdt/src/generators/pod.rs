//! `zdt generator`: one generator pod. It reads its settings from
//! `ZDT_GENERATOR` and its index from `JOB_COMPLETION_INDEX`, measures its
//! clock against the API server's, waits for the start time zdt publishes
//! in the barrier ConfigMap, runs its share of the attack (the same
//! [`Attack`] as every other generator of zdt's), and writes its reports as
//! [`Line`]s on stdout: its pod's log, which zdt follows.
//!
//! The API server is reached as any in-cluster client reaches it:
//! `KUBERNETES_SERVICE_HOST`/`_PORT` and the service account's `token`
//! (and `ca.crt`, when there is one: HTTPS) in
//! /var/run/secrets/kubernetes.io/serviceaccount, or in the directory
//! `ZDT_SERVICEACCOUNT_DIR` names (the emulator's pods: plain HTTP).

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::clock::{self, ClockOffset};
use super::lines::{Config, Line, ResultLine, ABORT_KEY, BARRIER_POLL, PROGRESS_TICK};
use super::lines::{RUN_OFFSET_KEY, START_KEY};
use super::CONFIG_ENV;
use zdt_core::clock::Clock;
use zdt_traffic::Attack;

/// Why a generator could not run (written as its `error` line, then it
/// exits non-zero: its pod fails).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GeneratorError {
    #[error("`{CONFIG_ENV}` is not set; `zdt generator` runs in the generator pods zdt starts")]
    NoConfig,
    #[error("`{CONFIG_ENV}` is not a generator's settings: {0}")]
    BadConfig(#[source] serde_json::Error),
    #[error("`JOB_COMPLETION_INDEX` is {0:?}; a generator runs as a pod of an indexed Job")]
    NoIndex(Option<String>),
    #[error("no API server: {0}")]
    Api(String),
    #[error(transparent)]
    Clock(#[from] clock::ClockError),
    #[error("reading the barrier ConfigMap {namespace}/{name}: {source}")]
    Barrier {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("no start time in ConfigMap {namespace}/{name} within {timeout:?}")]
    NoStart {
        namespace: String,
        name: String,
        timeout: Duration,
    },
    #[error("the run was called off before it started: {0}")]
    Aborted(String),
    #[error("the barrier's `{key}` is `{value}`, not what zdt writes")]
    BadBarrier { key: &'static str, value: String },
    #[error("this generator's clock is {offset_ms:+.1} ms (± {uncertainty_ms:.1} ms) from the run's, more than the bound of {bound:?}; synchronise the nodes' clocks (NTP)")]
    ClockBound {
        offset_ms: f64,
        uncertainty_ms: f64,
        bound: Duration,
    },
    #[error("the start time {start} had passed ({late:?} ago) when this generator read it")]
    Late { start: Timestamp, late: Duration },
    #[error("stopped before it started")]
    Cancelled,
    #[error("traffic: {0}")]
    Traffic(#[from] zdt_traffic::TrafficError),
    #[error("encoding the histograms: {0}")]
    Encode(#[from] zdt_traffic::merge::MergeError),
    #[error("cannot install a signal handler: {0}")]
    Signal(#[source] std::io::Error),
    #[error("writing to stdout: {0}")]
    Write(#[source] std::io::Error),
}

/// How the generator's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeneratorEnd {
    /// It wrote its result (maybe partial, after a SIGTERM).
    Result,
    /// It wrote an `error` line.
    Error,
}

async fn write(out: &mut tokio::io::Stdout, line: &Line) -> Result<(), GeneratorError> {
    let mut text = line.encode();
    text.push('\n');
    out.write_all(text.as_bytes())
        .await
        .and(out.flush().await)
        .map_err(GeneratorError::Write)
}

/// A client of the API server from inside a pod.
fn in_cluster_client() -> Result<kube::Client, GeneratorError> {
    let api = |m: String| GeneratorError::Api(m);
    let host = std::env::var("KUBERNETES_SERVICE_HOST")
        .map_err(|_| api("KUBERNETES_SERVICE_HOST is not set (not in a pod?)".into()))?;
    let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
    let dir = zdt_core::in_cluster::serviceaccount_dir();
    let ca = dir.join("ca.crt");
    let https = ca.exists();
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let url = format!("{}://{host}:{port}", if https { "https" } else { "http" });
    let mut config = kube::Config::new(
        url.parse()
            .map_err(|e| api(format!("API server URL `{url}`: {e}")))?,
    );
    let token = dir.join("token");
    if token.exists() {
        config.auth_info.token_file = Some(token.display().to_string());
    }
    if https {
        config.root_cert_file = Some(ca);
    }
    if let Ok(ns) = std::fs::read_to_string(dir.join("namespace")) {
        config.default_namespace = ns.trim().to_string();
    }
    kube::Client::try_from(config).map_err(|e| api(e.to_string()))
}

/// Wait for the barrier's start time (on the API server's clock) and zdt's
/// own offset from that clock.
async fn await_start(
    cms: &Api<ConfigMap>,
    config: &Config,
    cancel: &CancellationToken,
) -> Result<(Timestamp, ClockOffset), GeneratorError> {
    let deadline = tokio::time::Instant::now() + config.start_timeout;
    loop {
        let cm = cms
            .get_opt(&config.barrier)
            .await
            .map_err(|source| GeneratorError::Barrier {
                namespace: config.namespace.clone(),
                name: config.barrier.clone(),
                source,
            })?;
        let data = cm.and_then(|c| c.data).unwrap_or_default();
        if let Some(why) = data.get(ABORT_KEY) {
            return Err(GeneratorError::Aborted(why.clone()));
        }
        if let Some(start) = data.get(START_KEY) {
            let bad = |key, value: &str| GeneratorError::BadBarrier {
                key,
                value: value.to_string(),
            };
            let start: Timestamp = start.parse().map_err(|_| bad(START_KEY, start))?;
            let run = data.get(RUN_OFFSET_KEY).map(String::as_str).unwrap_or("0");
            let ns: i64 = run.parse().map_err(|_| bad(RUN_OFFSET_KEY, run))?;
            let run = ClockOffset {
                offset: jiff::SignedDuration::from_nanos(ns),
                uncertainty: Duration::ZERO,
            };
            return Ok((start, run));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(GeneratorError::NoStart {
                namespace: config.namespace.clone(),
                name: config.barrier.clone(),
                timeout: config.start_timeout,
            });
        }
        tokio::select! {
            _ = cancel.cancelled() => return Err(GeneratorError::Cancelled),
            _ = tokio::time::sleep(BARRIER_POLL) => {}
        }
    }
}

/// Everything up to the attack's end; the caller writes the error line.
async fn generate(
    out: &mut tokio::io::Stdout,
    cancel: &CancellationToken,
) -> Result<(), GeneratorError> {
    let raw = std::env::var(CONFIG_ENV).map_err(|_| GeneratorError::NoConfig)?;
    let config: Config = serde_json::from_str(&raw).map_err(GeneratorError::BadConfig)?;
    let index = std::env::var("JOB_COMPLETION_INDEX").ok();
    let index: u32 = index
        .as_deref()
        .and_then(|i| i.parse().ok())
        .ok_or(GeneratorError::NoIndex(index))?;
    config.settings.validate()?;
    let client = in_cluster_client()?;
    let offset = clock::measure(&client).await?;
    write(
        out,
        &Line::Ready {
            index,
            clock_offset_ns: offset.offset_ns(),
            clock_uncertainty: offset.uncertainty,
        },
    )
    .await?;
    let cms: Api<ConfigMap> = Api::namespaced(client, &config.namespace);
    let (start, run) = await_start(&cms, &config, cancel).await?;
    let relative = offset.relative_to(&run);
    if relative.worst() > config.clock_bound {
        return Err(GeneratorError::ClockBound {
            offset_ms: relative.offset.as_secs_f64() * 1e3,
            uncertainty_ms: relative.uncertainty.as_secs_f64() * 1e3,
            bound: config.clock_bound,
        });
    }
    // The start on this clock, as an instant of the monotonic one.
    let local_start = start + offset.offset;
    let wait = local_start.duration_since(Timestamp::now());
    if wait.is_negative() {
        return Err(GeneratorError::Late {
            start,
            late: wait.unsigned_abs(),
        });
    }
    let origin = tokio::time::Instant::now() + wait.unsigned_abs();
    tokio::select! {
        _ = cancel.cancelled() => return Err(GeneratorError::Cancelled),
        _ = tokio::time::sleep_until(origin) => {}
    }
    // The shared start is this clock's origin: the summary's times are
    // from it.
    let clock = Clock::with_origin(origin.into_std());
    let attack = Attack::start(config.settings, clock, cancel.clone()).await?;
    let progress = attack.progress();
    write(
        out,
        &Line::Started {
            late: clock.now().saturating_sub(progress.elapsed()),
            total: progress.total(),
        },
    )
    .await?;
    let finish = attack.finish_with_histograms();
    tokio::pin!(finish);
    let mut tick = tokio::time::interval(PROGRESS_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let part = loop {
        tokio::select! {
            r = &mut finish => break r?,
            _ = tick.tick() => write(out, &Line::Progress(progress.snapshot())).await?,
        }
    };
    write(out, &Line::Result(Box::new(ResultLine::new(&part)?))).await
}

/// `zdt generator`. SIGTERM (the pod deleted) or SIGINT cancels: before the
/// start it ends with an error line, during the attack with the partial
/// result (its summary says `cancelled`).
pub async fn run() -> Result<GeneratorEnd, GeneratorError> {
    let cancel = CancellationToken::new();
    zdt_traffic::child::cancel_on_stop_signals(&cancel).map_err(GeneratorError::Signal)?;
    let mut out = tokio::io::stdout();
    match generate(&mut out, &cancel).await {
        Ok(()) => Ok(GeneratorEnd::Result),
        Err(e @ GeneratorError::Write(_)) => Err(e),
        Err(e) => {
            write(
                &mut out,
                &Line::Error {
                    message: e.to_string(),
                },
            )
            .await?;
            Ok(GeneratorEnd::Error)
        }
    }
}
