//! zdt's side of a scaled-out run: create the generator Job, wait until
//! every pod runs and has measured its clock, publish the start time (the
//! barrier), follow each pod's log, and when they end merge their results
//! into one summary (see [`zdt_traffic::merge`]). The run sees an ordinary
//! [`Attack`]: progress while it runs, one summary at the end, whose
//! `generators` lists each generator, lost ones marked.
//!
//! The Job and its objects are deleted when the results are in, when the
//! run is cancelled (the pods get SIGTERM and still report their partial
//! results), and, on an existing cluster, by the run's teardown on every
//! exit path (they are recorded with the workload's objects).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{AsyncBufReadExt, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{DeleteParams, ListParams, LogParams, Patch, PatchParams};
use kube::Api;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::clock::{self, ClockOffset};
use super::job::{self, JobSpec};
use super::lines::{Line, ResultLine, ABORT_KEY, RUN_OFFSET_KEY, START_KEY};
use super::START_LEAD;
use zdt_cluster::existing::CreatedObjects;
use zdt_core::clock::Clock;
use zdt_core::events::{EventSink, Source};
use zdt_traffic::{Attack, GeneratorPart, Progress, Snapshot, Summary, TrafficError};

/// How long the pods may take to run (scheduled, image present, started).
pub const RUNNING_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a running generator may take to measure its clock and say so.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long after its schedule (and timeout) a generator may take to write
/// its result, and after a cancel its partial one.
const RESULT_GRACE: Duration = Duration::from_secs(20);

/// Why the generators could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    #[error("creating the generator Job: {0}")]
    Apply(#[from] zdt_cluster::apply::ApplyError),
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("generator pods not running within {timeout:?}: {waiting}")]
    NotRunning { timeout: Duration, waiting: String },
    #[error("generator {pod} (index {index}) failed before the start: {message}")]
    Failed {
        pod: String,
        index: u32,
        message: String,
    },
    #[error("generator {pod} (index {index}): its clock is {offset_ms:+.1} ms (± {uncertainty_ms:.1} ms) from the run's, more than the bound of {bound:?}; synchronise the nodes' clocks (NTP) or keep generators on nodes that are")]
    ClockBound {
        pod: String,
        index: u32,
        offset_ms: f64,
        uncertainty_ms: f64,
        bound: Duration,
    },
    #[error("measuring zdt's clock against the API server's: {0}")]
    Clock(#[from] clock::ClockError),
    #[error("generator pods did not report their clock within {READY_TIMEOUT:?}: {missing}")]
    NotReady { missing: String },
    #[error("interrupted while the generators started")]
    Cancelled,
}

fn api(what: impl Into<String>) -> impl FnOnce(kube::Error) -> LaunchError {
    let what = what.into();
    move |source| LaunchError::Api { what, source }
}

/// What [`start`] needs.
pub struct Launch<'a> {
    pub client: kube::Client,
    pub spec: JobSpec,
    /// Where the run's teardown looks for what to delete (an existing
    /// cluster's record).
    pub record: Option<&'a CreatedObjects>,
    pub clock: Clock,
    pub events: EventSink,
    /// Keep each generator's result line here (`generator-INDEX.json`).
    pub keep: Option<std::path::PathBuf>,
}

/// One generator as zdt follows it.
#[derive(Debug, Default)]
struct Follow {
    pod: String,
    offset: Option<ClockOffset>,
    latest: Snapshot,
    result: Option<ResultLine>,
    error: Option<String>,
    ended: bool,
}

/// What a pod's log follower reports.
enum Report {
    /// A line, decoded and as written.
    Line(u32, Line, String),
    Bad(u32, String),
    Ended(u32),
}

fn selector() -> String {
    format!("{}={}", job::ROLE_LABEL.0, job::ROLE_LABEL.1)
}

fn index_of(pod: &Pod) -> Option<u32> {
    let annotations = pod.metadata.annotations.as_ref();
    let labels = pod.metadata.labels.as_ref();
    let key = "batch.kubernetes.io/job-completion-index";
    annotations
        .and_then(|a| a.get(key))
        .or_else(|| labels.and_then(|l| l.get(key)))
        .and_then(|i| i.parse().ok())
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Wait until `count` generator pods run; each by its index.
async fn wait_running(
    pods: &Api<Pod>,
    count: u32,
    cancel: &CancellationToken,
) -> Result<BTreeMap<u32, String>, LaunchError> {
    let deadline = Instant::now() + RUNNING_TIMEOUT;
    loop {
        let list = pods
            .list(&ListParams::default().labels(&selector()))
            .await
            .map_err(api("listing the generator pods"))?;
        let mut running = BTreeMap::new();
        let mut waiting = Vec::new();
        for p in &list.items {
            let name = p.metadata.name.clone().unwrap_or_default();
            let index = index_of(p);
            match (phase(p), index) {
                ("Running", Some(i)) => {
                    running.insert(i, name);
                }
                ("Failed", Some(index)) => {
                    let message = p
                        .status
                        .as_ref()
                        .and_then(|s| s.message.clone())
                        .unwrap_or_else(|| "its pod failed".into());
                    return Err(LaunchError::Failed {
                        pod: name,
                        index,
                        message,
                    });
                }
                (phase, _) => waiting.push(format!("{name} {phase}")),
            }
        }
        if running.len() as u32 >= count {
            return Ok(running);
        }
        if Instant::now() >= deadline {
            let missing = count as usize - running.len() - waiting.len().min(count as usize);
            if missing > 0 {
                waiting.push(format!("{missing} not created"));
            }
            return Err(LaunchError::NotRunning {
                timeout: RUNNING_TIMEOUT,
                waiting: waiting.join(", "),
            });
        }
        tokio::select! {
            _ = cancel.cancelled() => return Err(LaunchError::Cancelled),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// Follow one pod's log, line by line, until it ends.
fn follow(pods: Api<Pod>, index: u32, pod: String, tx: mpsc::UnboundedSender<Report>) {
    tokio::spawn(async move {
        let params = LogParams {
            follow: true,
            container: Some(job::CONTAINER.into()),
            ..LogParams::default()
        };
        match pods.log_stream(&pod, &params).await {
            Ok(stream) => {
                let mut lines = stream.lines();
                while let Some(line) = lines.next().await {
                    let report = match line {
                        Ok(l) if l.trim().is_empty() => continue,
                        Ok(l) => match Line::decode(&l) {
                            Ok(line) => Report::Line(index, line, l),
                            Err(e) => Report::Bad(
                                index,
                                format!(
                                    "`{}…` is not a report ({e})",
                                    l.chars().take(120).collect::<String>()
                                ),
                            ),
                        },
                        Err(e) => Report::Bad(index, format!("reading its log: {e}")),
                    };
                    if tx.send(report).is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                let _ = tx.send(Report::Bad(index, format!("following its log: {e}")));
            }
        }
        let _ = tx.send(Report::Ended(index));
    });
}

/// Start the generators and return once the shared start time has come.
pub async fn start(launch: Launch<'_>, cancel: CancellationToken) -> Result<Attack, LaunchError> {
    let Launch {
        client,
        spec,
        record,
        clock,
        events,
        keep,
    } = launch;
    let ns = spec.config.namespace.clone();
    let count = spec.count;
    zdt_cluster::apply::apply_objects_recorded(&client, &job::objects(&spec), &ns, record).await?;
    events.emit(
        Source::Traffic,
        "GeneratorsCreated",
        format!("job/{}", job::JOB),
        None,
        format!("{count} generator pods from {}", spec.image),
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let result = barrier(&client, &pods, &cms, &spec, &events, &cancel).await;
    let (names, follows, rx, start) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = cms
                .patch(
                    job::BARRIER,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"data": {ABORT_KEY: e.to_string()}})),
                )
                .await;
            delete(&client, &ns).await;
            return Err(e);
        }
    };
    let start_run = clock.offset(start.into_std());
    let latest = Arc::new(Mutex::new(Snapshot::default()));
    let settings = &spec.config.settings;
    let total = (settings.load.rate.get() * settings.load.duration.get().as_secs_f64()).ceil()
        as u64
        * u64::from(count);
    tokio::time::sleep_until(start).await;
    events.emit(
        Source::Traffic,
        "GeneratorsStarted",
        format!("job/{}", job::JOB),
        None,
        format!("{count} generators started together"),
    );
    let abort = cancel.child_token();
    let (tx, done) = tokio::sync::oneshot::channel();
    let deadline =
        start + settings.load.duration.get() + settings.load.timeout.get() + RESULT_GRACE;
    let collect = Collect {
        client,
        ns,
        names,
        follows,
        rx,
        latest: latest.clone(),
        start_run,
        deadline,
        rate: settings.load.rate.get() * f64::from(count),
        events,
        keep,
    };
    tokio::spawn({
        let abort = abort.clone();
        async move {
            let _ = tx.send(collect.run(abort).await);
        }
    });
    Ok(Attack::relayed(
        Progress::relayed(latest, total, start.into_std()),
        done,
        abort,
    ))
}

type Barrier = (
    BTreeMap<u32, String>,
    BTreeMap<u32, Follow>,
    mpsc::UnboundedReceiver<Report>,
    Instant,
);

/// Up to the published start: every pod running, followed and ready, the
/// clocks within the bound.
async fn barrier(
    client: &kube::Client,
    pods: &Api<Pod>,
    cms: &Api<ConfigMap>,
    spec: &JobSpec,
    events: &EventSink,
    cancel: &CancellationToken,
) -> Result<Barrier, LaunchError> {
    let names = wait_running(pods, spec.count, cancel).await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut follows = BTreeMap::new();
    for (&i, name) in &names {
        follow(pods.clone(), i, name.clone(), tx.clone());
        follows.insert(
            i,
            Follow {
                pod: name.clone(),
                ..Follow::default()
            },
        );
    }
    drop(tx);
    let run = clock::measure(client).await?;
    let deadline = Instant::now() + READY_TIMEOUT;
    while follows.values().any(|f| f.offset.is_none()) {
        let report = tokio::select! {
            _ = cancel.cancelled() => return Err(LaunchError::Cancelled),
            _ = tokio::time::sleep_until(deadline) => {
                let missing = follows.values().filter(|f| f.offset.is_none()).map(|f| f.pod.clone()).collect::<Vec<_>>();
                return Err(LaunchError::NotReady { missing: missing.join(", ") });
            }
            r = rx.recv() => r,
        };
        let failed = |i: u32, message: String| LaunchError::Failed {
            pod: names.get(&i).cloned().unwrap_or_default(),
            index: i,
            message,
        };
        match report {
            Some(Report::Line(
                i,
                Line::Ready {
                    clock_offset_ns,
                    clock_uncertainty,
                    ..
                },
                _,
            )) => {
                let offset = ClockOffset {
                    offset: jiff::SignedDuration::from_nanos(clock_offset_ns),
                    uncertainty: clock_uncertainty,
                };
                let rel = offset.relative_to(&run);
                if rel.worst() > spec.config.clock_bound {
                    return Err(LaunchError::ClockBound {
                        pod: names.get(&i).cloned().unwrap_or_default(),
                        index: i,
                        offset_ms: rel.offset.as_secs_f64() * 1e3,
                        uncertainty_ms: rel.uncertainty.as_secs_f64() * 1e3,
                        bound: spec.config.clock_bound,
                    });
                }
                if let Some(f) = follows.get_mut(&i) {
                    f.offset = Some(rel);
                }
            }
            Some(Report::Line(i, Line::Error { message }, _)) => return Err(failed(i, message)),
            Some(Report::Line(i, other, _)) => {
                return Err(failed(i, format!("{other:?} before the start")))
            }
            Some(Report::Bad(i, message)) => return Err(failed(i, message)),
            Some(Report::Ended(i)) => {
                return Err(failed(i, "its log ended before it was ready".into()))
            }
            None => return Err(LaunchError::Cancelled),
        }
    }
    // The start on the API server's clock: this clock's now, minus its
    // offset, plus the lead every generator needs to read it.
    let now = (Timestamp::now(), Instant::now());
    let start_api = now.0 - run.offset + START_LEAD;
    cms.patch(
        job::BARRIER,
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {
            START_KEY: start_api.to_string(),
            RUN_OFFSET_KEY: run.offset_ns().to_string(),
        }})),
    )
    .await
    .map_err(api(format!(
        "publishing the start time in ConfigMap {}",
        job::BARRIER
    )))?;
    events.emit(
        Source::Traffic,
        "GeneratorsReady",
        format!("configmap/{}", job::BARRIER),
        None,
        format!(
            "start at {start_api} (API server's clock); generator clocks within {} of the run's",
            zdt_core::units::Dur(
                follows
                    .values()
                    .filter_map(|f| f.offset.map(|o| o.worst()))
                    .max()
                    .unwrap_or_default()
            )
        ),
    );
    Ok((names, follows, rx, now.1 + START_LEAD))
}

/// Delete the Job (its pods with it), the barrier and the account.
async fn delete(client: &kube::Client, ns: &str) {
    let background = DeleteParams::background();
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let _ = jobs.delete(job::JOB, &background).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let _ = pods
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(&selector()),
        )
        .await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let _ = cms.delete(job::BARRIER, &DeleteParams::default()).await;
    // The account's objects exist only on a real cluster; a 404 is fine.
    let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), ns);
    let _ = sa.delete(job::ACCOUNT, &DeleteParams::default()).await;
}

struct Collect {
    client: kube::Client,
    ns: String,
    names: BTreeMap<u32, String>,
    follows: BTreeMap<u32, Follow>,
    rx: mpsc::UnboundedReceiver<Report>,
    latest: Arc<Mutex<Snapshot>>,
    start_run: Duration,
    deadline: Instant,
    rate: f64,
    events: EventSink,
    keep: Option<std::path::PathBuf>,
}

impl Collect {
    fn publish(&self) {
        let mut sum = Snapshot::default();
        for f in self.follows.values() {
            sum.done += f.latest.done;
            sum.successes += f.latest.successes;
            sum.p99 = sum.p99.max(f.latest.p99);
            sum.max_lag = sum.max_lag.max(f.latest.max_lag);
        }
        *self.latest.lock().unwrap_or_else(|p| p.into_inner()) = sum;
    }

    async fn run(mut self, abort: CancellationToken) -> Result<Summary, TrafficError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns);
        let mut deadline = self.deadline;
        let mut stopping = false;
        while self.follows.values().any(|f| !f.ended) {
            let report = tokio::select! {
                _ = abort.cancelled(), if !stopping => {
                    // SIGTERM to every generator: each reports what it has.
                    stopping = true;
                    deadline = Instant::now() + RESULT_GRACE;
                    let _ = pods
                        .delete_collection(&DeleteParams::default(), &ListParams::default().labels(&selector()))
                        .await;
                    continue;
                }
                _ = tokio::time::sleep_until(deadline) => break,
                r = self.rx.recv() => match r {
                    Some(r) => r,
                    None => break,
                },
            };
            match report {
                Report::Line(i, line, raw) => {
                    let Some(f) = self.follows.get_mut(&i) else {
                        continue;
                    };
                    if let (Line::Result(_), Some(dir)) = (&line, &self.keep) {
                        // Each generator's own result as it sent it: what
                        // the merge can be checked against.
                        let path = dir.join(format!("generator-{i}.json"));
                        if let Err(e) =
                            std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, raw))
                        {
                            tracing::warn!("keeping {}: {e}", path.display());
                        }
                    }
                    match line {
                        Line::Progress(s) => f.latest = s,
                        Line::Started { .. } | Line::Ready { .. } => {}
                        Line::Result(r) => {
                            f.latest = Snapshot {
                                done: r.summary.requests,
                                successes: r.summary.successes,
                                p99: r.summary.latency.p99,
                                max_lag: r.summary.schedule_lag.max,
                            };
                            f.result = Some(*r);
                        }
                        Line::Error { message } => f.error = Some(message),
                    }
                    self.publish();
                }
                Report::Bad(i, message) => {
                    if let Some(f) = self.follows.get_mut(&i) {
                        f.error.get_or_insert(message);
                    }
                }
                Report::Ended(i) => {
                    if let Some(f) = self.follows.get_mut(&i) {
                        f.ended = true;
                    }
                }
            }
        }
        // Why each generator without a result has none, from its pod.
        for f in self.follows.values_mut() {
            if f.result.is_some() || f.error.is_some() {
                continue;
            }
            let why = match pods.get_opt(&f.pod).await {
                Ok(None) => "its pod was deleted".to_string(),
                Ok(Some(p)) if phase(&p) == "Running" && !f.ended => {
                    "it sent no result in time (its node gone, or the pod stopped answering)"
                        .to_string()
                }
                Ok(Some(p)) => format!("its pod ended {} without a result", phase(&p)),
                Err(e) => format!("its pod cannot be read: {e}"),
            };
            f.error = Some(why);
        }
        delete(&self.client, &self.ns).await;
        self.events.emit(
            Source::Traffic,
            "GeneratorsDeleted",
            format!("job/{}", job::JOB),
            None,
            "the generator Job and its objects are deleted",
        );
        self.merge(stopping)
    }

    fn merge(self, stopping: bool) -> Result<Summary, TrafficError> {
        let mut parts = Vec::new();
        let mut rows = Vec::new();
        for (index, f) in self.follows {
            let result = f.result;
            let name = self.names.get(&index).cloned().unwrap_or_default();
            let mut row = GeneratorPart {
                name,
                index,
                requests: f.latest.done,
                successes: f.latest.successes,
                achieved_rate: 0.0,
                send_lag_p99: Duration::ZERO,
                send_lag_max: f.latest.max_lag,
                clock_offset_ns: f.offset.map(|o| o.offset_ns()),
                clock_uncertainty: f.offset.map(|o| o.uncertainty),
                lost: f.error.clone(),
                partial: true,
                merged: false,
            };
            if let Some(r) = result {
                match r.into_part(self.start_run) {
                    Ok(part) => {
                        let s = &part.summary;
                        row.requests = s.requests;
                        row.successes = s.successes;
                        row.achieved_rate = s.achieved_rate;
                        row.send_lag_p99 = s.schedule_lag.p99;
                        row.send_lag_max = s.schedule_lag.max;
                        row.partial = s.cancelled;
                        row.merged = true;
                        if s.cancelled && !stopping {
                            row.lost = Some(
                                "stopped before its schedule ended (its pod was deleted or told to stop); its partial result is merged"
                                    .into(),
                            );
                        }
                        parts.push(part);
                    }
                    Err(e) => row.lost = Some(format!("its result does not decode: {e}")),
                }
            }
            rows.push(row);
        }
        if parts.is_empty() {
            let why = rows
                .iter()
                .map(|r| {
                    format!(
                        "{} (index {}): {}",
                        r.name,
                        r.index,
                        r.lost.as_deref().unwrap_or("no result")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            return Err(TrafficError::Child(format!(
                "no generator pod reported a result: {why}"
            )));
        }
        let (mut summary, _) = zdt_traffic::merge::merge(&parts)
            .map_err(|e| TrafficError::Internal(format!("merging the generators' results: {e}")))?;
        // The rate the run asked for, whatever part of it was lost.
        if let Ok(rate) = zdt_core::units::Rate::per_second(self.rate) {
            summary.rate = rate;
        }
        summary.generators = rows;
        Ok(summary)
    }
}

/// Why a scenario's generator pods could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PodsError {
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error(transparent)]
    Image(#[from] zdt_cluster::ClusterError),
    #[error("each generator's share of the rate: {0}")]
    Share(#[source] zdt_core::units::UnitError),
    #[error("generator pods on an existing cluster need `traffic.image`: an image with the zdt binary as its entrypoint that the cluster can pull (zdt assumes no registry)")]
    NoImage,
}

/// Start scenario `s`'s generator pods on `cluster`, sending to `target`
/// (the LB as the cluster's pods reach it) for `duration`.
#[allow(clippy::too_many_arguments)]
pub async fn for_scenario(
    s: &zdt_scenario::Scenario,
    cluster: &zdt_cluster::Cluster,
    client: &kube::Client,
    mut settings: zdt_traffic::Settings,
    clock: Clock,
    events: EventSink,
    keep: Option<std::path::PathBuf>,
    cancel: CancellationToken,
) -> Result<Attack, PodsError> {
    let g = &s.traffic.generators;
    let image = match (&g.image, cluster.zdt_image().await?) {
        (Some(image), _) => image.clone(),
        (None, Some(built)) => built,
        (None, None) => return Err(PodsError::NoImage),
    };
    let share = settings.load.rate.get() / f64::from(g.count);
    settings.load.rate = zdt_core::units::Rate::per_second(share).map_err(PodsError::Share)?;
    settings.load.max_in_flight = settings
        .load
        .max_in_flight
        .div_ceil(g.count as usize)
        .max(1);
    let avoid = s
        .chaos
        .iter()
        .filter_map(|step| match step.action.node() {
            Some(zdt_scenario::NodeSelector::Name(n)) => Some(n.clone()),
            _ => None,
        })
        .collect();
    let spec = JobSpec {
        count: g.count,
        image,
        config: super::lines::Config {
            settings,
            namespace: s.workload.namespace.clone(),
            barrier: job::BARRIER.into(),
            start_timeout: RUNNING_TIMEOUT,
            clock_bound: super::CLOCK_BOUND,
        },
        node_selector: g.node_selector.clone(),
        avoid,
        rbac: cluster.provider() != "emulator",
    };
    let launch = Launch {
        client: client.clone(),
        spec,
        record: cluster.created_objects(),
        clock,
        events,
        keep,
    };
    Ok(start(launch, cancel).await?)
}
