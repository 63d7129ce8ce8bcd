//! Running a scenario file: every variant in file order, each on a fresh
//! cluster (a fresh emulator for the emulator provider) with a fresh
//! workload, so variants cannot contaminate each other.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use zdt_cluster::kind::{KindCli, KindSpec};
use zdt_cluster::{Cluster, ClusterError, Exposure};
use zdt_core::events::{Event, EventSink, Source};
use zdt_core::hostfault;
use zdt_core::units::Dur;
use zdt_emulator::EmulatorConfig;
use zdt_lb::LbConfig;
use zdt_scenario::{self as scenario, Provider, Scenario, TrafficPolicy};
use zdt_traffic::{self as traffic, Attack, Load, Settings, Target};

use super::attribution::{self, error_windows, Physics};
use super::phases::{Phase, Phases};
use super::summary::{LagMs, LatencyMs, RateSummary, StepResult, VariantSummary, Verdict};
use super::timeline::{self, Context, Undo};
use super::verdict;
use super::Clock;
use zdt_cluster::apply::{apply_objects_recorded, wait_deployments_ready};

/// Watches a run as it goes (the binary draws progress and prints verdicts
/// with it). Every method defaults to doing nothing. `variant` is the
/// variant's id (`scenario/variant`); with `--jobs` several variants report
/// at once.
pub trait RunObserver: Send + Sync {
    /// A variant entered a phase.
    fn phase(&self, variant: &str, phase: Phase) {
        let _ = (variant, phase);
    }

    /// A variant recorded an event (chaos steps, LB health, pods…), as it
    /// happened.
    fn event(&self, variant: &str, event: &Event) {
        let _ = (variant, event);
    }

    /// A variant's traffic started, with its live counters and its load
    /// (rate and duration: the schedule); the returned value is dropped
    /// when the traffic stops.
    fn traffic_started(
        &self,
        variant: &str,
        progress: zdt_traffic::Progress,
        load: &Load,
    ) -> Box<dyn Send> {
        let _ = (variant, progress, load);
        Box::new(())
    }

    /// A variant finished (whatever its verdict).
    fn variant_finished(&self, variant: &str, summary: &VariantSummary) {
        let _ = (variant, summary);
    }
}

/// How to run.
#[derive(Clone)]
pub struct RunOptions {
    /// Run only these variants (all when empty).
    pub variants: Vec<String>,
    pub overrides: scenario::Overrides,
    /// Seeds node choice and LB choices.
    pub seed: u64,
    /// Multiply the traffic rate (CI on small machines).
    pub scale: Option<f64>,
    /// Where a file run writes its data and reports (default
    /// `reports/<scenario>/<timestamp>/`).
    pub out: Option<PathBuf>,
    /// Told as each variant's traffic starts and as each variant ends.
    pub observer: Option<std::sync::Arc<dyn RunObserver>>,
    /// Leave a kind cluster running after the run (`--keep-cluster`), so the
    /// next run of the same shape reuses it.
    pub keep_cluster: bool,
    /// Run with this `loadBalancer.mode` instead of the scenario's (`--lb-mode`).
    pub lb_mode: Option<scenario::LbMode>,
    /// How many variants run at once, each on its own cluster (`--jobs`);
    /// 0 counts as 1.
    pub jobs: usize,
    /// Sweep this field over these values (`--sweep FIELD=V1,V2`), in
    /// place of the file's own `sweep:`.
    pub sweep: Option<(String, Vec<String>)>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("variants", &self.variants)
            .field("overrides", &self.overrides)
            .field("seed", &self.seed)
            .field("scale", &self.scale)
            .field("out", &self.out)
            .field("observer", &self.observer.is_some())
            .field("keep_cluster", &self.keep_cluster)
            .field("lb_mode", &self.lb_mode)
            .field("jobs", &self.jobs)
            .field("sweep", &self.sweep)
            .finish()
    }
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            variants: Vec::new(),
            overrides: scenario::Overrides::default(),
            seed: 1,
            scale: None,
            out: None,
            observer: None,
            keep_cluster: false,
            lb_mode: None,
            jobs: 1,
            sweep: None,
        }
    }
}

/// Why a variant could not run at all (as opposed to running and failing).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    #[error(transparent)]
    Scenario(#[from] scenario::ScenarioError),
    /// `--variant NAME` names no variant of the file.
    #[error("{}: no variant `{want}`; the variants are {}", path.display(), variants.join(", "))]
    NoSuchVariant {
        path: PathBuf,
        want: String,
        variants: Vec<String>,
    },
    /// A variant cannot run with the command line's options.
    #[error("{}: {source}", path.display())]
    Options {
        path: PathBuf,
        #[source]
        source: OptionsError,
    },
    #[error(transparent)]
    Output(#[from] super::output::OutputError),
}

/// Why the command line's options do not fit a variant.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OptionsError {
    /// `--rate`, `--duration`, `--provider` or `--context` (zdt-scenario's
    /// message names the option and the fix).
    #[error(transparent)]
    Overrides(scenario::OverrideError),
    #[error(
        "loadBalancer mode `{}` needs the kind provider, not {provider}: add `--provider kind` or use `--lb-mode model`",
        mode.as_str()
    )]
    LbModeNeedsKind {
        mode: scenario::LbMode,
        provider: Provider,
    },
    /// A chaos step of the variant needs the admin API of zdt's LB, which
    /// the chosen `loadBalancer.mode` does not have.
    #[error(
        "variant `{variant}`: chaos step `{step}` ({action}) needs zdt's LB (`--lb-mode model`): {m} has no admin API; \
         run the other variants with `--variant NAME` (`zdt validate --list-variants --lb-mode {m} FILE` lists them)",
        m = mode.as_str()
    )]
    LbAdminStep {
        variant: String,
        step: String,
        action: &'static str,
        mode: scenario::LbMode,
    },
    /// `loadBalancer.initialHealth: ready` on a provider whose LB is not
    /// zdt's in-process model (the file said emulator; `--provider` did
    /// not).
    #[error(
        "variant `{variant}`: `loadBalancer.initialHealth: ready` applies to the emulator, not {provider}; \
         remove it or set `initialHealth: probed` to run on {provider}"
    )]
    InitialHealthNeedsEmulator { variant: String, provider: Provider },
    /// `traffic.image` where zdt provides the generator image itself.
    #[error(
        "variant `{variant}`: `traffic.image` is read only on an existing cluster; on {provider} {}; remove it",
        if *provider == Provider::Kind { "zdt builds the generator image and loads it with `kind load`" } else { "generator pods need no image" }
    )]
    ImageNotExisting { variant: String, provider: Provider },
    /// Generator pods on an existing cluster, with no image to run.
    #[error(
        "variant `{variant}`: {count} generator pods on an existing cluster need `traffic.image`, an image with the zdt binary as its entrypoint that the cluster can pull (zdt assumes no registry); set it, or run with `--generators 1`"
    )]
    NoGeneratorImage { variant: String, count: u32 },
    /// A chaos step names a node the cluster it runs on will not have
    /// (the provider chosen on the command line names nodes otherwise).
    #[error(transparent)]
    NoSuchNode(Box<NoSuchNode>),
}

/// See [`OptionsError::NoSuchNode`] (boxed: it is the largest variant).
#[derive(Debug, thiserror::Error)]
#[error("variant `{variant}`: chaos step `{step}` names node `{node}`, which a {provider} cluster of this shape does not have (its nodes: {})", nodes.join(", "))]
pub struct NoSuchNode {
    pub variant: String,
    pub step: String,
    pub node: String,
    pub provider: Provider,
    pub nodes: Vec<String>,
}

/// Everything one variant produced.
pub struct VariantRun {
    pub summary: VariantSummary,
    pub events: Vec<Event>,
    pub traffic: Option<traffic::Summary>,
}

/// Load the file and resolve the variants to run, with overrides applied.
pub fn plan(path: &Path, opts: &RunOptions) -> Result<(String, Vec<Scenario>), RunError> {
    let mut file = scenario::load(path)?;
    if let Some((field, values)) = &opts.sweep {
        file.set_sweep(field, values)?;
    }
    let mut variants = file.variants()?;
    // `--variant NAME` also picks every sweep point of variant NAME.
    let named = |v: &Scenario, want: &str| {
        v.variant == want || v.sweep.as_ref().is_some_and(|p| p.base == want)
    };
    if !opts.variants.is_empty() {
        for want in &opts.variants {
            if !variants.iter().any(|v| named(v, want)) {
                return Err(RunError::NoSuchVariant {
                    path: path.to_owned(),
                    want: want.clone(),
                    variants: variants.iter().map(|v| v.variant.clone()).collect(),
                });
            }
        }
        variants.retain(|v| opts.variants.iter().any(|want| named(v, want)));
    }
    let mut out = Vec::with_capacity(variants.len());
    for written in variants {
        let mut v = written
            .clone()
            .with_overrides(&opts.overrides)
            .map_err(OptionsError::Overrides)
            .and_then(|v| provider_options(v, opts))
            .map_err(|source| RunError::Options {
                path: path.to_owned(),
                source,
            })?;
        if let Some(f) = opts.scale {
            v = v.scaled(f);
        }
        for w in scenario::assumption_warnings(&written, &v) {
            eprintln!("zdt: warning: {}: {w}", v.id());
        }
        out.push(v);
    }
    let name = out.first().map(|v| v.name.clone()).unwrap_or_default();
    Ok((name, out))
}

/// The provider choices of the command line the scenario overrides do not
/// cover: a `--context` without `--provider` means the existing cluster of
/// that context (a scenario that runs on kind stays there), and `--lb-mode`
/// replaces `loadBalancer.mode`, checked as the scenario file is.
fn provider_options(mut v: Scenario, opts: &RunOptions) -> Result<Scenario, OptionsError> {
    let o = &opts.overrides;
    if o.context.is_some() && o.provider.is_none() && v.cluster.provider == Provider::Emulator {
        v.cluster.provider = Provider::Existing;
    }
    if let Some(mode) = opts.lb_mode {
        v.load_balancer.mode = mode;
    }
    check_node_names(&v)?;
    let g = &v.traffic.generators;
    match (v.cluster.provider, &g.image) {
        (Provider::Existing, None) if g.in_pods() => {
            return Err(OptionsError::NoGeneratorImage {
                variant: v.variant.clone(),
                count: g.count,
            })
        }
        (Provider::Emulator | Provider::Kind, Some(_)) => {
            return Err(OptionsError::ImageNotExisting {
                variant: v.variant.clone(),
                provider: v.cluster.provider,
            })
        }
        _ => {}
    }
    if v.load_balancer.initial_health == Some(zdt_lb::InitialHealth::Ready)
        && v.cluster.provider != Provider::Emulator
    {
        return Err(OptionsError::InitialHealthNeedsEmulator {
            variant: v.variant.clone(),
            provider: v.cluster.provider,
        });
    }
    let mode = v.load_balancer.mode;
    if mode != scenario::LbMode::Model {
        if v.cluster.provider != Provider::Kind {
            return Err(OptionsError::LbModeNeedsKind {
                mode,
                provider: v.cluster.provider,
            });
        }
        if let Some(step) = v.lb_admin_step() {
            return Err(OptionsError::LbAdminStep {
                variant: v.variant.clone(),
                step: step.name.clone(),
                action: step.action.kind(),
                mode,
            });
        }
    }
    Ok(v)
}

/// Node names against the shape of the cluster the variant will run on,
/// once the provider is final: the file's own provider was checked when it
/// was loaded, but `--provider` may change who names the nodes, and kind's
/// names carry the cluster name, known only here.
fn check_node_names(v: &Scenario) -> Result<(), OptionsError> {
    let nodes = match v.cluster.provider {
        Provider::Emulator => scenario::emulator_node_names(v.cluster.workers),
        Provider::Kind if v.cluster.kind_config.is_none() => {
            let Ok(name) = zdt_cluster::kind::cluster_name(&kind_spec(v)) else {
                return Ok(()); // the kind provider reports a bad spec itself
            };
            std::iter::once(format!("{name}-control-plane"))
                .chain((1..=v.cluster.workers).map(|i| match i {
                    1 => format!("{name}-worker"),
                    n => format!("{name}-worker{n}"),
                }))
                .collect()
        }
        // A custom kind config or an existing cluster: the names are the
        // cluster's to know.
        _ => return Ok(()),
    };
    for step in &v.chaos {
        if let Some(scenario::NodeSelector::Name(node)) = step.action.node() {
            if !nodes.contains(node) {
                return Err(OptionsError::NoSuchNode(Box::new(NoSuchNode {
                    variant: v.variant.clone(),
                    step: step.name.clone(),
                    node: node.clone(),
                    provider: v.cluster.provider,
                    nodes,
                })));
            }
        }
    }
    Ok(())
}

/// The kind cluster shape a scenario asks for.
pub(crate) fn kind_spec(s: &Scenario) -> KindSpec {
    KindSpec {
        workers: s.cluster.workers as usize,
        kubernetes: s.cluster.kubernetes.to_string(),
        config_file: s.cluster.kind_config.clone(),
    }
}

/// The emulator configuration a scenario asks for.
pub fn emulator_config(s: &Scenario) -> EmulatorConfig {
    EmulatorConfig {
        workers: s.cluster.workers as usize,
        kubernetes: s.cluster.kubernetes,
        timings: s.cluster.emulator,
        runtime: s.cluster.runtime,
        run: s.workload.run.clone(),
        ..EmulatorConfig::default()
    }
}

/// The LB settings: the profile's defaults for the Service's policy, with
/// the scenario's overrides.
pub(crate) fn lb_config(s: &Scenario, policy_local: bool, seed: u64) -> LbConfig {
    let lb = &s.load_balancer;
    LbConfig {
        probe: lb.probe(policy_local),
        initial_health: lb.initial_health_on(s.cluster.provider),
        fail_open: lb.fail_open,
        selection: lb.selection,
        seed,
        // Blackholed connections can outnumber the open-files limit; hold
        // them in a helper process when this process is zdt.
        hold_in: zdt_core::process::zdt_exe(),
        forwarding: lb.profile.forwarding(),
        ..LbConfig::default()
    }
}

/// The variant's traffic, sent to the LB's address for `duration` (the
/// run's, or the warmup's).
fn traffic_settings(
    s: &Scenario,
    cluster: &Cluster,
    target: std::net::SocketAddr,
    duration: Dur,
) -> Settings {
    let load = Load {
        duration,
        ..s.traffic.load.clone()
    };
    Settings {
        net: cluster.net(),
        ..Settings::at(Target::from_addr(target), load)
    }
}

/// A variant that ended before it could measure anything.
fn early_failure(
    s: &Scenario,
    verdict: Verdict,
    reason: String,
    events: Vec<Event>,
    chaos: Vec<StepResult>,
) -> VariantRun {
    VariantRun {
        summary: VariantSummary {
            name: s.variant.clone(),
            description: s.description.clone().unwrap_or_default(),
            verdict,
            reasons: vec![reason],
            requests: 0,
            success_ratio: 0.0,
            status_codes: Default::default(),
            errors: Default::default(),
            latency_ms: LatencyMs::default(),
            rate: RateSummary {
                requested: s.traffic.load.rate.get(),
                achieved: 0.0,
            },
            schedule_lag_ms: LagMs::default(),
            expectations: Vec::new(),
            events: events.len(),
            error_windows: Vec::new(),
            chaos,
            host_faults: Default::default(),
            pod_runtimes: super::summary::pod_runtimes(&events),
            generators: Vec::new(),
            traffic_started_s: 0.0,
            timing: Default::default(),
            scenario_as_run: serde_json::to_value(s).unwrap_or(Value::Null),
            sweep: s.sweep.clone(),
            sweep_predicted_pass: attribution::physics::sweep_predicted_pass(s),
        },
        events,
        traffic: None,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Run one variant end to end. Never panics on cluster trouble: every
/// failure becomes an INVALID (or INCOMPLETE, when `cancel` fired) variant
/// with the reason, and whatever was created is torn down.
pub async fn run_variant(s: &Scenario, opts: &RunOptions, cancel: CancellationToken) -> VariantRun {
    let clock = Clock::start();
    let phases = Arc::new(Phases::new(&s.variant, s.id(), opts.observer.clone()));
    let (sink, mut rx) = EventSink::channel(clock);
    let collected: Arc<Mutex<Vec<Event>>> = Arc::default();
    let stop_collecting = CancellationToken::new();
    let collector = {
        let collected = collected.clone();
        let (observer, id) = (opts.observer.clone(), s.id());
        let stop = stop_collecting.clone();
        tokio::spawn(async move {
            let keep = |ev: Event| {
                if let Some(o) = &observer {
                    o.event(&id, &ev);
                }
                collected.lock().expect("event log lock").push(ev);
            };
            loop {
                tokio::select! {
                    // Whatever is queued goes first.
                    biased;
                    ev = rx.recv() => match ev {
                        Some(ev) => keep(ev),
                        None => return,
                    },
                    _ = stop.cancelled() => {
                        while let Ok(ev) = rx.try_recv() {
                            keep(ev);
                        }
                        return;
                    }
                }
            }
        })
    };
    sink.emit(
        Source::Run,
        "VariantStarted",
        format!("variant/{}", s.variant),
        None,
        format!("variant `{}` of {}", s.variant, s.name),
    );

    // The variant runs in its own task so a panic anywhere in it becomes an
    // INVALID variant with the panic's message, and the run goes on to write
    // its reports; what the task created is torn down by its owners' Drop.
    let task = tokio::spawn({
        let (s, opts, sink, cancel) = (s.clone(), opts.clone(), sink.clone(), cancel.clone());
        let phases = phases.clone();
        async move { run_variant_inner(&s, &opts, &sink, cancel, &phases).await }
    });
    let result = match task.await {
        Ok(r) => r,
        Err(e) => Err((
            Verdict::Invalid,
            format!("zdt failed inside this variant: {}", panic_message(e)),
            Vec::new(),
        )),
    };
    drop(sink);
    // The variant is over once the inner future is done: what its
    // producers queued until then is kept. A task of the torn-down cluster
    // may still hold a sink for a moment; waiting for the channel to close
    // would cost every variant that moment (a second or more).
    stop_collecting.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), collector).await;
    let events = std::mem::take(&mut *collected.lock().expect("event log lock"));
    let mut run = match result {
        Ok((traffic, chaos)) => VariantRun {
            summary: summarise(s, &traffic, chaos, &events, cancel.is_cancelled()),
            events,
            traffic: Some(traffic),
        },
        Err((verdict, reason, chaos)) => early_failure(s, verdict, reason, events, chaos),
    };
    run.summary.timing = phases.timing();
    run
}

/// Run `variants`, `opts.jobs` at a time, each on a cluster of its own
/// (every emulated cluster has its own network namespaces, so parallel
/// ones share no address or port). `finished` gets each run with its index
/// in `variants` as it ends, which with several jobs is not file order.
/// Once `cancel` fires no further variant starts; those under way end
/// INCOMPLETE.
pub async fn run_variants(
    variants: &[Scenario],
    opts: &RunOptions,
    cancel: CancellationToken,
    mut finished: impl FnMut(usize, VariantRun),
) {
    let jobs = opts.jobs.max(1);
    let mut running = tokio::task::JoinSet::new();
    let mut index = std::collections::HashMap::new();
    let mut next = 0;
    loop {
        while running.len() < jobs && next < variants.len() && !cancel.is_cancelled() {
            let (v, o, c) = (variants[next].clone(), opts.clone(), cancel.clone());
            let id = running
                .spawn(async move { run_variant(&v, &o, c).await })
                .id();
            index.insert(id, next);
            next += 1;
        }
        let Some(joined) = running.join_next_with_id().await else {
            return;
        };
        match joined {
            Ok((id, run)) => finished(index[&id], run),
            // run_variant turns a panic inside the variant into an INVALID
            // run; one in its own bookkeeping still becomes one.
            Err(e) => {
                let i = index[&e.id()];
                let reason = format!("zdt failed inside this variant: {}", panic_message(e));
                finished(
                    i,
                    early_failure(
                        &variants[i],
                        Verdict::Invalid,
                        reason,
                        Vec::new(),
                        Vec::new(),
                    ),
                );
            }
        }
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return e.to_string();
    }
    let p = e.into_panic();
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Await `fut` unless the run is interrupted first.
async fn unless_cancelled<T>(
    cancel: &CancellationToken,
    phase: &str,
    fut: impl std::future::Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    let interrupted = || {
        Err((
            Verdict::Incomplete,
            format!("interrupted during {phase}"),
            Vec::new(),
        ))
    };
    tokio::select! {
        // What the run owns shuts down on the same token (the in-process LB
        // does), so a failure that races the cancellation is the
        // interruption's doing, not the cluster's.
        r = fut => match r {
            Err(_) if cancel.is_cancelled() => interrupted(),
            r => r,
        },
        _ = cancel.cancelled() => interrupted(),
    }
}

/// What a variant measured: the traffic summary and the chaos steps.
type Measured = (traffic::Summary, Vec<StepResult>);

type Failure = (Verdict, String, Vec<StepResult>);

async fn run_variant_inner(
    s: &Scenario,
    opts: &RunOptions,
    sink: &EventSink,
    cancel: CancellationToken,
    phases: &Phases,
) -> Result<Measured, Failure> {
    let invalid = |m: String| (Verdict::Invalid, m, Vec::new());
    phases.enter(Phase::Cluster, "cluster start");
    // Rendered once, before any cluster exists: kind's image check needs
    // the objects before create, and the apply uses the same ones.
    let objects = scenario::workload::render(s).map_err(|e| invalid(format!("workload: {e}")))?;
    let cluster = match s.cluster.provider {
        Provider::Emulator => {
            let cfg = emulator_config(s);
            unless_cancelled(&cancel, "cluster start", async {
                Cluster::emulator(cfg, sink.clone())
                    .await
                    .map_err(|e| invalid(format!("cluster: {e}")))
            })
            .await?
        }
        Provider::Kind => {
            // Every image the workload names must be local (or pullable)
            // before kind is touched; they are loaded before the apply.
            let images = zdt_cluster::kind_images::workload_images(&objects);
            let checked = zdt_cluster::kind_images::DockerCli::default()
                .ensure_local(&images)
                .await;
            if let Err(e) = checked {
                // Without Docker, a missing kind is the first thing to fix.
                if matches!(e, zdt_cluster::kind_images::ImageError::NoDocker(_)) {
                    if let Err(k) = KindCli::default().get_clusters().await {
                        return Err(invalid(format!(
                            "cluster: {}",
                            ClusterError::from(k).explain()
                        )));
                    }
                }
                return Err(invalid(format!("workload: {e}")));
            }
            let mode = s.load_balancer.mode;
            // Not `unless_cancelled`: on Ctrl-C the kind provider itself
            // stops kind and deletes a half-created cluster.
            Cluster::kind(
                KindCli::default(),
                kind_spec(s),
                opts.keep_cluster,
                mode,
                &s.workload.namespace,
                &cancel,
            )
            .await
            .map_err(|e| match e {
                ClusterError::Interrupted => (
                    Verdict::Incomplete,
                    "interrupted during cluster start".to_owned(),
                    Vec::new(),
                ),
                e => invalid(format!("cluster: {}", e.explain())),
            })?
        }
        Provider::Existing => {
            unless_cancelled(&cancel, "cluster start", async {
                Cluster::existing(
                    s.cluster.context.as_deref(),
                    opts.overrides.context.as_deref(),
                    &s.cluster.allow_contexts,
                    &s.chaos,
                )
                .await
                .map_err(|e| invalid(format!("cluster: {}", e.explain())))
            })
            .await?
        }
    };
    let cluster = Arc::new(cluster);
    let outcome = with_cluster(s, &objects, opts, sink, cancel, cluster.clone(), phases).await;
    // Tear down whatever happened above.
    phases.enter(Phase::Teardown, "teardown");
    match Arc::try_unwrap(cluster) {
        Ok(c) => {
            let state = c.teardown(Duration::from_secs(10)).await;
            sink.emit(
                Source::Run,
                "ClusterDeleted",
                "cluster",
                None,
                format!("final state: {state}"),
            );
        }
        Err(_) => tracing::warn!("cluster still referenced at teardown; it is dropped instead"),
    }
    outcome
}

async fn with_cluster(
    s: &Scenario,
    objects: &[serde_json::Value],
    opts: &RunOptions,
    sink: &EventSink,
    cancel: CancellationToken,
    cluster: Arc<Cluster>,
    phases: &Phases,
) -> Result<Measured, Failure> {
    let invalid = |m: String| (Verdict::Invalid, m, Vec::new());
    let client = cluster
        .client()
        .map_err(|e| invalid(format!("cluster client: {e}")))?;
    let ns = s.workload.namespace.clone();

    if let Some(out) = &opts.out {
        super::output::write_manifests(out, &s.variant, objects)
            .map_err(|e| invalid(format!("workload: {e}")))?;
    }
    phases.enter(Phase::Workload, "workload apply");
    let images = zdt_cluster::kind_images::workload_images(objects);
    let loaded = unless_cancelled(&cancel, "workload images", async {
        cluster
            .load_images(&images)
            .await
            .map_err(|e| invalid(format!("workload: {}", e.explain())))
    })
    .await?;
    if !loaded.is_empty() {
        sink.emit(
            Source::Run,
            "ImagesLoaded",
            "workload",
            None,
            format!("kind load docker-image: {}", loaded.join(", ")),
        );
    }
    unless_cancelled(&cancel, "workload apply", async {
        apply_objects_recorded(&client, objects, &ns, cluster.created_objects())
            .await
            .map_err(|e| invalid(format!("workload: {e}")))
    })
    .await?;
    sink.emit(
        Source::Run,
        "WorkloadApplied",
        "workload",
        None,
        format!("{} objects applied", objects.len()),
    );
    phases.enter(Phase::Workload, "waiting for the workload");
    unless_cancelled(&cancel, "waiting for the workload", async {
        wait_deployments_ready(&client, &ns, Duration::from_secs(120))
            .await
            .map_err(|e| invalid(e.to_string()))
    })
    .await?;
    sink.emit(
        Source::Run,
        "WorkloadReady",
        "workload",
        None,
        "every deployment rolled out",
    );

    let local =
        scenario::workload::traffic_policy(objects, &s.workload.service) == TrafficPolicy::Local;
    let lb_cfg = lb_config(s, local, opts.seed);
    let budget = lb_cfg.probe.interval.get() * (lb_cfg.probe.healthy_threshold + 2)
        + lb_cfg.probe.timeout.get();
    phases.enter(Phase::LbReady, "load balancer");
    let Exposure { target, lb } = cluster
        .expose(
            &ns,
            &s.workload.service,
            lb_cfg,
            sink.clone(),
            cancel.clone(),
        )
        .await
        .map_err(|e| match e {
            ClusterError::Interrupted => (
                Verdict::Incomplete,
                "interrupted during load balancer".to_owned(),
                Vec::new(),
            ),
            e => invalid(format!("load balancer: {e}")),
        })?;
    let admin = lb.admin();
    let workers = cluster.workers();
    let healthy = unless_cancelled(&cancel, "waiting for the LB", async {
        lb.wait_ready(workers.len(), budget)
            .await
            .map_err(|e| invalid(format!("the load balancer was not ready: {e}")))
    })
    .await;
    let outcome = match healthy {
        Err(e) => Err(e),
        Ok(checked) => {
            sink.emit(Source::Run, "LbReady", "lb", None, checked);
            measure(
                s,
                opts,
                sink,
                cancel,
                &cluster,
                &client,
                admin.clone(),
                target,
                workers,
                phases,
            )
            .await
        }
    };
    // Where each failed request went, from the LB's record of its
    // connection, before the LB (and its record) goes.
    let outcome = outcome.map(|(mut traffic, chaos)| {
        if let Some(records) = lb.connections() {
            let seen = records.len();
            let joined = attribution::trace(&mut traffic, records);
            sink.emit(
                Source::Run,
                "RequestsTraced",
                "lb",
                None,
                format!(
                    "{joined} of {} failed requests joined to the LB's record of their connection ({seen} connections recorded)",
                    traffic.failed.len()
                ),
            );
        }
        (traffic, chaos)
    });
    lb.shutdown().await;
    outcome
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    s: &Scenario,
    opts: &RunOptions,
    sink: &EventSink,
    cancel: CancellationToken,
    cluster: &Arc<Cluster>,
    client: &kube::Client,
    admin: zdt_cluster::LbAdmin,
    target: std::net::SocketAddr,
    workers: Vec<String>,
    phases: &Phases,
) -> Result<Measured, Failure> {
    let invalid = |m: String| (Verdict::Invalid, m, Vec::new());
    let clock = sink.clock();
    if !s.traffic.warmup.get().is_zero() {
        phases.enter(Phase::Traffic, "warmup");
        let warm = traffic_settings(s, cluster, target, s.traffic.warmup);
        Attack::start_isolated(warm, clock, cancel.child_token())
            .await
            .map_err(|e| invalid(format!("warmup traffic: {e}")))?
            .finish()
            .await
            .map_err(|e| invalid(format!("warmup traffic: {e}")))?;
        if cancel.is_cancelled() {
            return Err((
                Verdict::Incomplete,
                "interrupted during warmup".into(),
                Vec::new(),
            ));
        }
    }
    let settings = traffic_settings(s, cluster, target, s.traffic.load.duration);
    // The machine's own failures during the traffic: this process's (LB,
    // pods, kube-proxies) and the connection-tracking table's of the stack
    // the traffic crosses — the host's, or the emulated cluster's own
    // network's and, where nodes have namespaces of their own, each node's
    // (a failure there is the emulator's, not the cluster's).
    let faults_before = hostfault::tally();
    let conntrack_pids = cluster.tracking_pids();
    let conntrack_before = hostfault::conntrack_counters_in(&conntrack_pids);
    // Its own token: a failed chaos step stops the traffic within the
    // generator's cancel latency, and the partial counts are kept.
    let step_failed = cancel.child_token();
    // In a child process when zdt can re-exec itself: the generator's
    // sockets then do not count against this process's fd limit, which the
    // LB's held connections already press on, and the emulator cannot
    // delay its timers.
    let attack = if s.traffic.generators.in_pods() {
        phases.enter(Phase::Traffic, "generator pods");
        crate::generators::launch::for_scenario(
            s,
            cluster,
            client,
            settings,
            clock,
            sink.clone(),
            opts.out.as_ref().map(|o| {
                o.join("generators")
                    .join(super::output::sanitize(&s.variant))
            }),
            step_failed.clone(),
        )
        .await
        .map_err(|e| invalid(format!("traffic generators: {e}")))?
    } else {
        Attack::start_isolated(settings, clock, step_failed.clone())
            .await
            .map_err(|e| invalid(format!("traffic: {e}")))?
    };
    let progress = attack.progress();
    phases.enter(Phase::Traffic, "traffic");
    let t0 = Instant::now() - progress.elapsed();
    sink.emit(
        Source::Traffic,
        "TrafficStarted",
        "traffic",
        None,
        format!(
            "{} for {} to {target}",
            s.traffic.load.rate, s.traffic.load.duration
        ),
    );

    let undo: Arc<Mutex<Vec<Undo>>> = Arc::default();
    let ctx = Arc::new(Context {
        client: client.clone(),
        cluster: cluster.clone(),
        lb: Some(admin.clone()),
        events: sink.clone(),
        namespace: s.workload.namespace.clone(),
        workers,
        seed: opts.seed,
        t0,
        undo: undo.clone(),
        step_failed: step_failed.clone(),
    });
    let chaos_cancel = cancel.child_token();
    let steps = s.chaos.clone();
    let chaos = tokio::spawn({
        let (ctx, cancel) = (ctx.clone(), chaos_cancel.clone());
        async move { timeline::run(&steps, ctx, cancel).await }
    });

    let watcher = opts
        .observer
        .as_ref()
        .map(|o| o.traffic_started(&s.id(), progress.clone(), &s.traffic.load));
    let traffic = attack.finish().await;
    drop(watcher);
    phases.enter(Phase::Teardown, "traffic stopped");
    let stopped_early = step_failed.is_cancelled() && !cancel.is_cancelled();
    sink.emit(
        Source::Traffic,
        "TrafficStopped",
        "traffic",
        None,
        if stopped_early {
            "traffic stopped: a chaos step failed"
        } else {
            "traffic finished"
        },
    );
    // Steps still running when traffic ends get a bounded grace: their
    // effect can no longer be measured, and a run must end.
    let grace = Duration::from_secs(30);
    let timeline_failure = |message: String| {
        vec![StepResult {
            index: 0,
            name: "timeline".into(),
            action: "timeline".into(),
            node: None,
            started_s: 0.0,
            finished_s: 0.0,
            ok: false,
            message,
        }]
    };
    let chaos_results = match tokio::time::timeout(grace, chaos).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => timeline_failure(format!("chaos timeline task failed: {e}")),
        Err(_) => {
            chaos_cancel.cancel();
            timeline_failure(format!(
                "chaos steps still running {grace:?} after traffic ended"
            ))
        }
    };
    phases.enter(Phase::Teardown, "chaos undo");
    let undo_errors = timeline::undo_all(&undo, client, cluster, Some(&admin), sink).await;
    for e in &undo_errors {
        sink.emit(Source::Run, "UndoFailed", "run", None, e.to_string());
    }
    drop(ctx);

    let mut traffic = traffic.map_err(|e| {
        (
            Verdict::Invalid,
            format!("traffic: {e}"),
            chaos_results.clone(),
        )
    })?;
    hostfault::add(
        &mut traffic.host_faults,
        &hostfault::since(&faults_before, &hostfault::tally()),
    );
    if let (Some(before), Some(after)) = (
        conntrack_before,
        hostfault::conntrack_counters_in(&conntrack_pids),
    ) {
        hostfault::add(&mut traffic.host_faults, &hostfault::since(&before, &after));
    }
    Ok((traffic, chaos_results))
}

/// Build the variant's summary from its traffic summary, chaos results and
/// event log. Public so `zdt report` can re-evaluate saved runs.
pub(crate) fn summarise(
    s: &Scenario,
    t: &traffic::Summary,
    chaos: Vec<StepResult>,
    events: &[Event],
    interrupted: bool,
) -> VariantSummary {
    let windows = error_windows(t, events, &Physics::of(s));
    let results = verdict::evaluate(t, &s.expect, &windows);
    let mut invalid = verdict::invalid_reasons(t, &s.expect, s.traffic.load.max_in_flight, &chaos);
    // A generator pod stopped alone cancels only its own share.
    let generator_lost = t.generators.iter().any(|g| g.lost.is_some());
    if t.cancelled && !interrupted && !invalid.is_empty() && !generator_lost {
        invalid.push(format!(
            "traffic was stopped {:.1} s in, when the chaos step failed; the numbers cover what was measured until then",
            t.requests as f64 / t.rate.get().max(f64::MIN_POSITIVE)
        ));
    }
    let (mut v, mut reasons) = verdict::verdict(&invalid, &results);
    if interrupted {
        v = Verdict::Incomplete;
        reasons.insert(
            0,
            "the run was interrupted; numbers cover what was measured".into(),
        );
    }
    VariantSummary {
        name: s.variant.clone(),
        description: s.description.clone().unwrap_or_default(),
        verdict: v,
        reasons,
        requests: t.requests,
        success_ratio: verdict::success_ratio(t),
        status_codes: t
            .status_codes
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        errors: t.errors.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        latency_ms: LatencyMs {
            p50: ms(t.latency.p50),
            p90: ms(t.latency.p90),
            p95: ms(t.latency.p95),
            p99: ms(t.latency.p99),
            p999: ms(t.latency.p999),
            max: ms(t.latency.max),
            mean: ms(t.latency.mean),
        },
        rate: RateSummary {
            requested: t.rate.get(),
            achieved: t.achieved_rate,
        },
        schedule_lag_ms: LagMs::from(&t.schedule_lag),
        expectations: results,
        events: events.len(),
        error_windows: windows,
        chaos,
        host_faults: t
            .host_faults
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        pod_runtimes: super::summary::pod_runtimes(events),
        generators: t.generators.clone(),
        traffic_started_s: t.started_at.as_secs_f64(),
        timing: Default::default(),
        scenario_as_run: serde_json::to_value(s).unwrap_or(Value::Null),
        sweep: s.sweep.clone(),
        sweep_predicted_pass: attribution::physics::sweep_predicted_pass(s),
    }
}

/// Where a run's outputs go by default: `reports/<scenario>/<timestamp>/`.
pub fn default_out(scenario: &str) -> PathBuf {
    let stamp = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string();
    PathBuf::from("reports").join(scenario).join(stamp)
}
