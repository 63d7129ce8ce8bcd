//! The validated internal form of one scenario variant: every default filled
//! in, every cross-reference resolved (step names to indexes, paths made
//! absolute). This is what the run, the cluster providers and the reports
//! consume; they never see the YAML types.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

pub use super::v1alpha1::{
    ErrorKindName, InitialHealth, IntOrPercent, LbMode, LbProfile, PreStopSleepMode, Selection,
    TaintEffect, TrafficPolicy, UnknownLbMode, WaitCondition,
};
use zdt_core::units::{Dur, Rate};
pub use zdt_traffic::Load;

/// One runnable variant of a scenario file.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Scenario {
    /// The scenario's `name`.
    pub name: String,
    /// The variant's name (`default` when the file has no `variants:`).
    pub variant: String,
    /// The variant's description, else the scenario's.
    pub description: Option<String>,
    /// The scenario file this came from.
    pub source: PathBuf,
    pub cluster: Cluster,
    pub load_balancer: LoadBalancer,
    pub workload: Workload,
    pub traffic: Traffic,
    pub chaos: Vec<ChaosStep>,
    pub expect: Expect,
    /// The sweep point this variant is, when the file sweeps a field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweep: Option<crate::SweepPoint>,
}

/// Where the workload runs. `provider` is never `auto` here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
    Emulator,
    Kind,
    Existing,
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Provider::Emulator => "emulator",
            Provider::Kind => "kind",
            Provider::Existing => "existing",
        })
    }
}

/// A provider name that is none of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown provider `{0}`: use emulator, kind or existing")]
pub struct UnknownProvider(pub String);

impl std::str::FromStr for Provider {
    type Err = UnknownProvider;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "emulator" => Ok(Provider::Emulator),
            "kind" => Ok(Provider::Kind),
            "existing" => Ok(Provider::Existing),
            other => Err(UnknownProvider(other.to_string())),
        }
    }
}

pub use zdt_core::emulated::{ContainerRun, RunEngine, RuntimeChoice, Timings};

/// What `workload.manifests` is, decided by what the directory holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ManifestSource {
    /// `*.yaml`, `*.yml`, `*.json` files, read as they are.
    Directory,
    /// A `kustomization.yaml`: rendered by `kustomize build`, or
    /// `kubectl kustomize` when kustomize is not on PATH.
    Kustomization,
    /// A `Chart.yaml`: rendered by `helm template RELEASE DIR -f VALUES…`.
    HelmChart {
        release: String,
        /// Absolute paths, in order.
        values: Vec<PathBuf>,
    },
}
pub use zdt_core::version::KubeVersion;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    pub provider: Provider,
    pub kubernetes: KubeVersion,
    /// Worker nodes (the control plane is extra and never runs the workload).
    pub workers: u32,
    /// Absolute path of the kind config (kind only).
    pub kind_config: Option<PathBuf>,
    /// Kube context (existing clusters; optional for kind).
    pub context: Option<String>,
    /// Contexts destructive actions may run against (existing clusters).
    pub allow_contexts: Vec<String>,
    /// The emulator's timings (emulator only).
    pub emulator: Timings,
    /// How the emulator runs pods (emulator only).
    pub runtime: RuntimeChoice,
}

impl LoadBalancer {
    /// The probe settings to run: the profile's for the Service's
    /// externalTrafficPolicy, with the scenario's overrides on top.
    pub fn probe(&self, policy_local: bool) -> zdt_lb::ProbeSettings {
        self.probe.apply(self.profile.probe(policy_local))
    }

    /// The backends' health when zdt's LB starts on `provider`: as the
    /// scenario says, else `ready` on the emulator (the wait for the first
    /// probes tests nothing) and `probed` elsewhere (zdt's LB container on
    /// kind always watches its first probes).
    pub fn initial_health_on(&self, provider: Provider) -> InitialHealth {
        self.initial_health.unwrap_or(match provider {
            Provider::Emulator => InitialHealth::Ready,
            _ => InitialHealth::Probed,
        })
    }
}

/// The cloud load balancer in front of the nodes. Probe settings left
/// `None` come from the profile (`lb::Profile::probe`, which depends on the
/// Service's externalTrafficPolicy); set ones override it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancer {
    pub profile: LbProfile,
    pub probe: zdt_lb::config::ProbeOverrides,
    pub fail_open: bool,
    pub selection: Selection,
    pub mode: LbMode,
    /// `None`: the provider's default ([`LoadBalancer::initial_health_on`]).
    pub initial_health: Option<InitialHealth>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    /// Absolute path of the manifests directory.
    pub manifests: PathBuf,
    /// What the directory holds, so how it renders to objects.
    pub source: ManifestSource,
    /// How the emulator runs containers it cannot run itself, by container
    /// name or image (programs with a `/` made absolute).
    pub run: BTreeMap<String, ContainerRun>,
    pub namespace: String,
    /// The LoadBalancer Service traffic goes to.
    pub service: String,
    /// The Deployment mitigations and chaos steps apply to by default.
    pub deployment: String,
    /// The container mitigations apply to (None = the first one).
    pub container: Option<String>,
    pub mitigations: Mitigations,
    pub patches: Vec<ManifestPatch>,
}

/// Each field: `None` leaves the manifests as they are.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Mitigations {
    /// `Some(0s)` removes any preStop hook.
    pub pre_stop_sleep: Option<Dur>,
    pub pre_stop_sleep_mode: PreStopSleepMode,
    pub readiness_probe: Option<Switch<ReadinessProbe>>,
    pub pdb: Option<Switch<Pdb>>,
    pub external_traffic_policy: Option<TrafficPolicy>,
    pub max_unavailable: Option<IntOrPercent>,
    pub max_surge: Option<IntOrPercent>,
    pub termination_grace_period: Option<Dur>,
    pub stop_signal: Option<String>,
    pub replicas: Option<u32>,
    pub spread: Option<Spread>,
    pub min_ready: Option<Dur>,
}

/// Remove the thing from the manifests, or make sure it is there like this.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Switch<T> {
    Off,
    On(T),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadinessProbe {
    pub path: String,
    /// None = the container's first port (80 when it declares none).
    pub port: Option<u16>,
    pub period: Dur,
    pub timeout: Dur,
    pub failure_threshold: u32,
    pub success_threshold: u32,
    pub initial_delay: Dur,
}

impl Default for ReadinessProbe {
    /// Kubernetes' own defaults for an httpGet probe on `/`.
    fn default() -> Self {
        ReadinessProbe {
            path: "/".into(),
            port: None,
            period: Dur::from_secs(10),
            timeout: Dur::from_secs(1),
            failure_threshold: 3,
            success_threshold: 1,
            initial_delay: Dur::ZERO,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Pdb {
    MinAvailable(IntOrPercent),
    MaxUnavailable(IntOrPercent),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Spread {
    /// Remove any spreading rules.
    None,
    /// Soft: preferred anti-affinity + topology spread with ScheduleAnyway.
    Preferred,
    /// Hard: required anti-affinity (one pod per node; surplus pods pend).
    Required,
}

/// A raw JSON merge patch on manifests of `kind` (and `name`, if given).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestPatch {
    pub kind: String,
    pub name: Option<String>,
    pub patch: serde_json::Value,
}

/// The traffic a variant sends: the generator's own [`Load`], and the
/// warmup the run sends before it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Traffic {
    /// What to send. Its in-flight cap defaults to rate × timeout (at
    /// least 1), see [`default_max_in_flight`].
    #[serde(flatten)]
    pub load: Load,
    /// Traffic sent before t0, not counted; chaos times start after it.
    pub warmup: Dur,
    /// Where the traffic is sent from.
    pub generators: Generators,
}

/// Generator pods: how many, from which image, on which nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Generators {
    /// 1: zdt's own process sends (no pods); N ≥ 2: N pods, each rate/N.
    pub count: u32,
    /// The image on an existing cluster; `None` on kind (zdt builds and
    /// loads its own) and on the emulator (none needed).
    pub image: Option<String>,
    /// Labels a generator's node must have; empty: any node the chaos
    /// timeline does not name.
    pub node_selector: BTreeMap<String, String>,
}

impl Generators {
    /// The most generator pods a run starts.
    pub const MAX: u32 = 256;

    /// Generator pods in the cluster (as opposed to zdt's own process).
    pub fn in_pods(&self) -> bool {
        self.count > 1
    }
}

impl Default for Generators {
    fn default() -> Self {
        Self {
            count: 1,
            image: None,
            node_selector: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChaosStep {
    /// The step's `name`, else `step-N` (1-based).
    pub name: String,
    pub start: Start,
    pub action: Action,
}

/// When a step starts.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Start {
    /// This long after traffic's t0.
    At(Dur),
    /// `delay` after the step with this index (in `Scenario::chaos`) finished.
    After { step: usize, delay: Dur },
}

/// How a step picks its node.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum NodeSelector {
    /// The node's exact name.
    Name(String),
    /// The n-th worker (0-based) in name order; validated < workers.
    Index(usize),
    /// A worker running a pod with all these labels, chosen with the run's seed.
    HostingPod(BTreeMap<String, String>),
    /// The node chosen by the step with this index.
    SameAs(usize),
}

/// Labels as a Kubernetes label selector string (`app=nginx,tier=web`).
pub fn label_selector(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum PodTarget {
    Name(String),
    Selector(BTreeMap<String, String>),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    Drain {
        node: NodeSelector,
        timeout: Dur,
        /// None = each pod's own terminationGracePeriodSeconds.
        grace_period: Option<Dur>,
    },
    Cordon {
        node: NodeSelector,
    },
    Uncordon {
        node: NodeSelector,
    },
    Taint {
        node: NodeSelector,
        key: String,
        value: Option<String>,
        effect: TaintEffect,
    },
    RolloutRestart {
        deployment: String,
    },
    SetImage {
        deployment: String,
        /// None = the workload's container (or the first one).
        container: Option<String>,
        image: String,
    },
    Scale {
        deployment: String,
        replicas: u32,
    },
    DeletePod {
        target: PodTarget,
        grace_period: Option<Dur>,
    },
    NodeStop {
        node: NodeSelector,
    },
    NodePause {
        node: NodeSelector,
    },
    NodeKill {
        node: NodeSelector,
    },
    NodeResume {
        node: NodeSelector,
    },
    LbRemoveBackend {
        node: NodeSelector,
    },
    LbDrainBackend {
        node: NodeSelector,
        timeout: Dur,
    },
    LbRestoreBackend {
        node: NodeSelector,
    },
    Wait(Wait),
}

impl Action {
    /// The YAML name of the action (`drain`, `lbRemoveBackend`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Drain { .. } => "drain",
            Action::Cordon { .. } => "cordon",
            Action::Uncordon { .. } => "uncordon",
            Action::Taint { .. } => "taint",
            Action::RolloutRestart { .. } => "rolloutRestart",
            Action::SetImage { .. } => "setImage",
            Action::Scale { .. } => "scale",
            Action::DeletePod { .. } => "deletePod",
            Action::NodeStop { .. } => "nodeStop",
            Action::NodePause { .. } => "nodePause",
            Action::NodeKill { .. } => "nodeKill",
            Action::NodeResume { .. } => "nodeResume",
            Action::LbRemoveBackend { .. } => "lbRemoveBackend",
            Action::LbDrainBackend { .. } => "lbDrainBackend",
            Action::LbRestoreBackend { .. } => "lbRestoreBackend",
            Action::Wait(_) => "wait",
        }
    }

    /// Whether the action drives zdt's LB through its admin API
    /// (`lbRemoveBackend`, `lbDrainBackend`, `lbRestoreBackend`,
    /// `wait: lbHealthy`): an LB zdt does not run (MetalLB,
    /// cloud-provider-kind, a cloud's) cannot do it.
    pub fn needs_lb_admin(&self) -> bool {
        matches!(
            self,
            Action::LbRemoveBackend { .. }
                | Action::LbDrainBackend { .. }
                | Action::LbRestoreBackend { .. }
                | Action::Wait(Wait::Until {
                    condition: WaitCondition::LbHealthy,
                    ..
                })
        )
    }

    /// The node this action targets, if it targets one.
    pub fn node(&self) -> Option<&NodeSelector> {
        match self {
            Action::Drain { node, .. }
            | Action::Cordon { node }
            | Action::Uncordon { node }
            | Action::Taint { node, .. }
            | Action::NodeStop { node }
            | Action::NodePause { node }
            | Action::NodeKill { node }
            | Action::NodeResume { node }
            | Action::LbRemoveBackend { node }
            | Action::LbDrainBackend { node, .. }
            | Action::LbRestoreBackend { node } => Some(node),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Wait {
    For(Dur),
    Until {
        condition: WaitCondition,
        timeout: Dur,
    },
}

/// A lower and/or upper bound.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Bound<T> {
    pub min: Option<T>,
    pub max: Option<T>,
}

impl<T: PartialOrd + Copy> Bound<T> {
    pub fn contains(&self, v: T) -> bool {
        self.min.is_none_or(|m| v >= m) && self.max.is_none_or(|m| v <= m)
    }
}

/// What the run must show for the variant to pass. `None` = not checked.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Expect {
    pub success_ratio: Option<Bound<f64>>,
    pub latency: LatencyExpect,
    /// Allowed status codes (0 = no response); None = any.
    pub status_codes: Option<Vec<u16>>,
    /// Allowed error kinds; None = any.
    pub error_kinds: Option<Vec<ErrorKindName>>,
    /// Longest stretch of consecutive failing buckets allowed.
    pub max_error_window: Option<Dur>,
    /// Achieved rate / requested rate must be at least this (default 0.999);
    /// below it the run is invalid, not failed.
    pub min_achieved_rate: f64,
    /// The p99 of how late requests left against their due times, above
    /// which the run is invalid (default 500 ms): the load was not the
    /// scenario's.
    pub max_send_lag: Dur,
    pub tolerance: Tolerance,
}

impl Expect {
    /// Half a second late at p99: far beyond any scheduler jitter, so only a
    /// generator that could not keep up crosses it.
    pub const DEFAULT_MAX_SEND_LAG: Dur = Dur(std::time::Duration::from_millis(500));
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LatencyExpect {
    pub p50: Option<Bound<Dur>>,
    pub p90: Option<Bound<Dur>>,
    pub p95: Option<Bound<Dur>>,
    pub p99: Option<Bound<Dur>>,
    #[serde(rename = "p99.9")]
    pub p999: Option<Bound<Dur>>,
    pub max: Option<Bound<Dur>>,
}

impl LatencyExpect {
    /// `(name, quantile, bound)` for every bound that is set; `max` has
    /// quantile 1.0.
    pub fn bounds(&self) -> Vec<(&'static str, f64, Bound<Dur>)> {
        [
            ("p50", 0.50, self.p50),
            ("p90", 0.90, self.p90),
            ("p95", 0.95, self.p95),
            ("p99", 0.99, self.p99),
            ("p99.9", 0.999, self.p999),
            ("max", 1.0, self.max),
        ]
        .into_iter()
        .filter_map(|(n, q, b)| b.map(|b| (n, q, b)))
        .collect()
    }
}

/// Regression allowance against a committed baseline.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tolerance {
    /// Absolute drop allowed (default 0.001).
    pub success_ratio: f64,
    /// Relative increase allowed per latency percentile (default 0.2 = 20%).
    pub latency: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance {
            success_ratio: 0.001,
            latency: 0.2,
        }
    }
}

/// Command-line overrides for a run (`zdt run --rate/--duration/--provider`).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub rate: Option<Rate>,
    /// `--generators N`.
    pub generators: Option<u32>,
    pub duration: Option<Dur>,
    pub provider: Option<Provider>,
    pub context: Option<String>,
}

/// `lifecycle.stopSignal` on a cluster that does not have it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`stopSignal` needs Kubernetes ≥ 1.33 with the ContainerStopSignals feature gate on a real cluster (this one is {version} on {provider})")]
pub struct StopSignalUnsupported {
    pub version: KubeVersion,
    pub provider: Provider,
}

/// `lifecycle.stopSignal` exists from Kubernetes 1.33 (ContainerStopSignals,
/// alpha); the emulator honours it at every version.
pub(crate) fn stop_signal_supported(
    provider: Provider,
    version: KubeVersion,
) -> Result<(), StopSignalUnsupported> {
    if provider != Provider::Emulator && !version.at_least(1, 33) {
        return Err(StopSignalUnsupported { version, provider });
    }
    Ok(())
}

/// Command-line overrides that do not fit the scenario.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum OverrideError {
    #[error("--duration must be > 0")]
    ZeroDuration,
    /// A shorter duration would end traffic before a chaos step starts.
    #[error("--duration {duration} is too short: chaos step {step} (`{name}`) starts at {at}")]
    DurationTooShort {
        duration: Dur,
        /// 1-based, as messages count steps.
        step: usize,
        name: String,
        at: Dur,
    },
    /// A shorter duration would end traffic before a step that waits for
    /// earlier ones can start.
    #[error("--duration {duration} is too short: chaos step {step} (`{name}`) waits for earlier steps and cannot start before {earliest}")]
    TimelineTooLong {
        duration: Dur,
        step: usize,
        name: String,
        earliest: Dur,
    },
    /// The traffic would end before the LB could notice a node going down.
    #[error("--duration {duration} is shorter than the load balancer's detection time ({detection}: {failures} failed probes every {interval} mark a node down); the run would end before the LB reacts to the chaos")]
    ShorterThanLbDetection {
        duration: Dur,
        detection: Dur,
        failures: u32,
        interval: Dur,
    },
    #[error("--generators {0}: the number of generator pods must be between 1 and {max} (1 sends from zdt's own process)", max = Generators::MAX)]
    Generators(u32),
    #[error("--provider {provider}: {source}")]
    Provider {
        provider: Provider,
        #[source]
        source: StopSignalUnsupported,
    },
}

impl Scenario {
    /// The first chaos step that needs zdt's LB admin API
    /// ([`Action::needs_lb_admin`]): a variant with one cannot run behind
    /// MetalLB or cloud-provider-kind.
    pub fn lb_admin_step(&self) -> Option<&ChaosStep> {
        self.chaos.iter().find(|s| s.action.needs_lb_admin())
    }

    /// Applies command-line overrides. A shorter duration must still cover
    /// every `at:` step, so that is re-checked.
    pub fn with_overrides(mut self, o: &Overrides) -> Result<Scenario, OverrideError> {
        if let Some(n) = o.generators {
            if n == 0 || n > Generators::MAX {
                return Err(OverrideError::Generators(n));
            }
            self.traffic.generators.count = n;
        }
        if let Some(rate) = o.rate {
            self.set_rate(rate);
        }
        if let Some(d) = o.duration {
            if d.get().is_zero() {
                return Err(OverrideError::ZeroDuration);
            }
            let late = self
                .chaos
                .iter()
                .enumerate()
                .find_map(|(i, s)| match s.start {
                    Start::At(at) if at >= d => Some((i, s, at)),
                    _ => None,
                });
            if let Some((i, step, at)) = late {
                return Err(OverrideError::DurationTooShort {
                    duration: d,
                    step: i + 1,
                    name: step.name.clone(),
                    at,
                });
            }
            let starts = self.earliest_starts();
            if let Some((i, earliest)) = starts.iter().enumerate().find(|(_, s)| **s >= d) {
                return Err(OverrideError::TimelineTooLong {
                    duration: d,
                    step: i + 1,
                    name: self.chaos[i].name.clone(),
                    earliest: *earliest,
                });
            }
            if !self.chaos.is_empty() {
                // The faster of the two policies' probes: only a duration
                // too short for both is certainly too short.
                let lb = &self.load_balancer;
                let probe = [true, false]
                    .map(|local| lb.probe.apply(lb.profile.probe(local)))
                    .into_iter()
                    .min_by_key(|p| p.detection_budget())
                    .expect("two policies");
                let detection = probe.detection_budget();
                if detection > d.get() {
                    return Err(OverrideError::ShorterThanLbDetection {
                        duration: d,
                        detection: Dur::from_millis(detection.as_millis() as u64),
                        failures: probe.unhealthy_threshold,
                        interval: probe.interval,
                    });
                }
            }
            self.traffic.load.duration = d;
        }
        if let Some(p) = o.provider {
            if self.workload.mitigations.stop_signal.is_some() {
                stop_signal_supported(p, self.cluster.kubernetes).map_err(|source| {
                    OverrideError::Provider {
                        provider: p,
                        source,
                    }
                })?;
            }
            self.cluster.provider = p;
        }
        if let Some(c) = &o.context {
            self.cluster.context = Some(c.clone());
        }
        Ok(self)
    }

    /// When each chaos step can start at the earliest, from traffic start:
    /// its `at`, or the step it waits for started at the earliest and took
    /// no time (only a `wait: {duration}` is known to take any), plus the
    /// `delay`.
    pub fn earliest_starts(&self) -> Vec<Dur> {
        let mut ends: Vec<std::time::Duration> = Vec::with_capacity(self.chaos.len());
        let mut starts = Vec::with_capacity(self.chaos.len());
        for step in &self.chaos {
            let start = match step.start {
                Start::At(at) => at.get(),
                Start::After { step, delay } => ends[step] + delay.get(),
            };
            let own = match &step.action {
                Action::Wait(Wait::For(d)) => d.get(),
                _ => std::time::Duration::ZERO,
            };
            starts.push(Dur::from_millis(start.as_millis() as u64));
            ends.push(start + own);
        }
        starts
    }

    /// Scales the traffic rate by `factor` (e.g. `ZDT_SCALE=0.1` in tests on
    /// small machines). Only the rate changes: duration and chaos times stay
    /// as written so the timeline keeps its meaning, and expectations should
    /// be ratios anyway. A factor that is not a positive number is ignored.
    pub fn scaled(mut self, factor: f64) -> Scenario {
        if factor.is_finite() && factor > 0.0 {
            if let Ok(rate) = Rate::per_second(self.traffic.load.rate.get() * factor) {
                self.set_rate(rate);
            }
        }
        self
    }

    /// A new rate; an in-flight cap that was the default follows it, one the
    /// scenario set stays.
    fn set_rate(&mut self, rate: Rate) {
        let t = &mut self.traffic.load;
        if t.max_in_flight == default_max_in_flight(t.rate, t.timeout) {
            t.max_in_flight = default_max_in_flight(rate, t.timeout);
        }
        t.rate = rate;
    }

    /// `name/variant`, for logs and report titles.
    pub fn id(&self) -> String {
        format!("{}/{}", self.name, self.variant)
    }
}

/// Enough in-flight requests for every request of one timeout window.
pub fn default_max_in_flight(rate: Rate, timeout: Dur) -> usize {
    ((rate.get() * timeout.get().as_secs_f64()).ceil() as usize).max(1)
}
