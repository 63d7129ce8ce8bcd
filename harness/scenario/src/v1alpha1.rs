//! The public, versioned scenario format `zdt/v1alpha1`: exactly what users
//! write, decoded strictly (every struct denies unknown fields). Optional
//! fields stay `Option` here; defaults are filled in by validation, which
//! turns these types into [`super::model::Scenario`].
//!
//! Field names are camelCase like Kubernetes objects. See
//! docs/scenario-format.md for every field with its default.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use zdt_core::units::{Dur, Rate};
use zdt_traffic::ErrorKind;

pub const API_VERSION: &str = "zdt/v1alpha1";
pub const KIND: &str = "Scenario";

/// The scenario document without its `variants:` (those are patches on it).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScenarioSpec {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub cluster: Option<ClusterSpec>,
    #[serde(default)]
    pub load_balancer: Option<LoadBalancerSpec>,
    #[serde(default)]
    pub workload: Option<WorkloadSpec>,
    pub traffic: TrafficSpec,
    #[serde(default)]
    pub chaos: Option<Vec<ChaosStepSpec>>,
    #[serde(default)]
    pub expect: Option<ExpectSpec>,
}

/// One entry of `variants:`; `patch` is a JSON merge patch on the document.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VariantSpec {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub patch: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
    /// The emulator, unless a kube `context` is given (then `existing`).
    Auto,
    Emulator,
    Kind,
    Existing,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterSpec {
    #[serde(default)]
    pub provider: Option<Provider>,
    #[serde(default)]
    pub kubernetes: Option<VersionText>,
    #[serde(default)]
    pub workers: Option<u32>,
    #[serde(default)]
    pub kind_config: Option<String>,
    #[serde(default)]
    pub context: Option<String>,
    #[serde(default)]
    pub allow_contexts: Option<Vec<String>>,
    #[serde(default)]
    pub emulator: Option<EmulatorSpec>,
}

/// A Kubernetes minor version written as text (`"1.27"`). A bare YAML number
/// is refused because `1.30` would read as `1.3`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct VersionText(pub String);

impl<'de> Deserialize<'de> for VersionText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = VersionText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a quoted Kubernetes version like \"1.27\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<VersionText, E> {
                Ok(VersionText(s.to_string()))
            }
            fn visit_f64<E: de::Error>(self, f: f64) -> Result<VersionText, E> {
                Err(E::custom(format!(
                    "quote the Kubernetes version, e.g. `kubernetes: \"1.27\"`: unquoted, YAML reads it as the number {f}"
                )))
            }
            fn visit_i64<E: de::Error>(self, i: i64) -> Result<VersionText, E> {
                Err(E::custom(format!(
                    "write the Kubernetes version as a quoted string with its minor, e.g. `kubernetes: \"{i}.27\"`"
                )))
            }
            fn visit_u64<E: de::Error>(self, i: u64) -> Result<VersionText, E> {
                self.visit_i64(i as i64)
            }
        }
        d.deserialize_any(V)
    }
}

/// Emulator timings; every one defaults to upstream Kubernetes behaviour.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EmulatorSpec {
    #[serde(default)]
    pub kube_proxy_sync_delay: Option<Dur>,
    #[serde(default)]
    pub pod_start_delay: Option<Dur>,
    #[serde(default)]
    pub endpoints_delay: Option<Dur>,
    #[serde(default)]
    pub node_monitor_grace_period: Option<Dur>,
    #[serde(default)]
    pub node_status_update_frequency: Option<Dur>,
    #[serde(default)]
    pub api_latency: Option<Dur>,
    #[serde(default)]
    pub runtime: Option<RuntimeChoice>,
}

pub use zdt_core::emulated::RuntimeChoice;

// The LB's own vocabulary, spelled in files as the LB spells it.
pub use zdt_lb::config::TrafficPolicy;
pub use zdt_lb::{InitialHealth, Profile as LbProfile, Selection};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LbMode {
    /// zdt's own cloud-LB model (in-process, or as a container on kind's
    /// network with the workers' InternalIP:NodePort as backends).
    Model,
    /// Real MetalLB in L2 mode on kind, its pool from the kind subnet (no
    /// probe model, no admin API: ARP follows the elected speaker, not
    /// endpoint health).
    Metallb,
    /// Real cloud-provider-kind on kind.
    CloudProviderKind,
}

impl LbMode {
    /// As written in scenario files and `--lb-mode`.
    pub fn as_str(self) -> &'static str {
        match self {
            LbMode::Model => "model",
            LbMode::Metallb => "metallb",
            LbMode::CloudProviderKind => "cloud-provider-kind",
        }
    }
}

/// An `--lb-mode` that is none of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--lb-mode `{0}`: use model, metallb or cloud-provider-kind")]
pub struct UnknownLbMode(pub String);

impl std::str::FromStr for LbMode {
    type Err = UnknownLbMode;

    /// `--lb-mode MODE` (`zdt run`, `zdt validate`).
    fn from_str(s: &str) -> Result<Self, UnknownLbMode> {
        [LbMode::Model, LbMode::Metallb, LbMode::CloudProviderKind]
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| UnknownLbMode(s.to_string()))
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LoadBalancerSpec {
    #[serde(default)]
    pub profile: Option<LbProfile>,
    #[serde(default)]
    pub interval: Option<Dur>,
    #[serde(default)]
    pub timeout: Option<Dur>,
    #[serde(default)]
    pub unhealthy_threshold: Option<u32>,
    #[serde(default)]
    pub healthy_threshold: Option<u32>,
    #[serde(default)]
    pub fail_open: Option<bool>,
    #[serde(default)]
    pub selection: Option<Selection>,
    #[serde(default)]
    pub mode: Option<LbMode>,
    #[serde(default)]
    pub initial_health: Option<InitialHealth>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadSpec {
    #[serde(default)]
    pub manifests: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub deployment: Option<String>,
    #[serde(default)]
    pub container: Option<String>,
    #[serde(default)]
    pub mitigations: Option<MitigationsSpec>,
    #[serde(default)]
    pub patches: Option<Vec<PatchSpec>>,
    /// How the emulator runs containers it cannot run itself, by container
    /// name or image.
    #[serde(default)]
    pub run: Option<BTreeMap<String, ContainerRun>>,
    /// `helm template` settings when `manifests` is a Helm chart.
    #[serde(default)]
    pub helm: Option<HelmSpec>,
}

pub use zdt_core::emulated::{ContainerRun, RunEngine};

/// How a Helm chart in `workload.manifests` is rendered.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HelmSpec {
    /// The release name (`helm template RELEASE CHART`); default `zdt`.
    #[serde(default)]
    pub release: Option<String>,
    /// Values files, relative to the scenario file, in order (`-f`).
    #[serde(default)]
    pub values: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum PreStopSleepMode {
    /// `exec: [sleep, N]` (needs a `sleep` binary in the image).
    #[default]
    Exec,
    /// The native `lifecycle.preStop.sleep` action (Kubernetes ≥ 1.30).
    Action,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MitigationsSpec {
    #[serde(default)]
    pub pre_stop_sleep: Option<Dur>,
    #[serde(default)]
    pub pre_stop_sleep_mode: Option<PreStopSleepMode>,
    #[serde(default)]
    pub readiness_probe: Option<Toggle<ProbeSpec>>,
    #[serde(default)]
    pub pdb: Option<Toggle<PdbSpec>>,
    #[serde(default)]
    pub external_traffic_policy: Option<TrafficPolicy>,
    #[serde(default)]
    pub max_unavailable: Option<IntOrPercent>,
    #[serde(default)]
    pub max_surge: Option<IntOrPercent>,
    #[serde(default)]
    pub termination_grace_period: Option<Dur>,
    #[serde(default)]
    pub stop_signal: Option<String>,
    #[serde(default)]
    pub replicas: Option<u32>,
    #[serde(default)]
    pub spread: Option<SpreadSpec>,
    #[serde(default)]
    pub min_ready: Option<Dur>,
}

/// `false` / `true` / a mapping with settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Toggle<T> {
    Enabled(bool),
    With(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Toggle<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Toggle<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`true`, `false` or a mapping of settings")
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Toggle<T>, E> {
                Ok(Toggle::Enabled(b))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Toggle<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Toggle::With)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProbeSpec {
    #[serde(default)]
    pub path: Option<String>,
    /// Wider than a port so 99999 reaches validation, which says what a
    /// port is, instead of the decoder's "expected u16".
    #[serde(default)]
    pub port: Option<u32>,
    #[serde(default)]
    pub period: Option<Dur>,
    #[serde(default)]
    pub timeout: Option<Dur>,
    #[serde(default)]
    pub failure_threshold: Option<u32>,
    #[serde(default)]
    pub success_threshold: Option<u32>,
    #[serde(default)]
    pub initial_delay: Option<Dur>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PdbSpec {
    #[serde(default)]
    pub min_available: Option<IntOrPercent>,
    #[serde(default)]
    pub max_unavailable: Option<IntOrPercent>,
}

/// `spread: true | false | preferred | required`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum SpreadSpec {
    None,
    Preferred,
    Required,
}

impl<'de> Deserialize<'de> for SpreadSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = SpreadSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`true`, `false`, `preferred` or `required`")
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<SpreadSpec, E> {
                Ok(if b {
                    SpreadSpec::Preferred
                } else {
                    SpreadSpec::None
                })
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<SpreadSpec, E> {
                match s {
                    "preferred" => Ok(SpreadSpec::Preferred),
                    "required" => Ok(SpreadSpec::Required),
                    "none" => Ok(SpreadSpec::None),
                    other => Err(E::unknown_variant(
                        other,
                        &["preferred", "required", "none"],
                    )),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A Kubernetes IntOrString count: `1` or `"25%"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum IntOrPercent {
    Int(u32),
    Percent(String),
}

impl IntOrPercent {
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            IntOrPercent::Int(i) => serde_json::Value::from(*i),
            IntOrPercent::Percent(p) => serde_json::Value::from(p.clone()),
        }
    }
}

impl<'de> Deserialize<'de> for IntOrPercent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IntOrPercent;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a count like `1` or a percentage like `\"25%\"`")
            }
            fn visit_u64<E: de::Error>(self, u: u64) -> Result<IntOrPercent, E> {
                u32::try_from(u)
                    .map(IntOrPercent::Int)
                    .map_err(|_| E::custom(format!("{u} is too large")))
            }
            fn visit_i64<E: de::Error>(self, i: i64) -> Result<IntOrPercent, E> {
                u64::try_from(i)
                    .map_err(|_| E::custom(format!("`{i}` must be ≥ 0")))
                    .and_then(|u| self.visit_u64(u))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<IntOrPercent, E> {
                let ok = s
                    .strip_suffix('%')
                    .and_then(|n| n.parse::<u32>().ok())
                    .is_some_and(|n| n <= 100);
                if ok {
                    Ok(IntOrPercent::Percent(s.to_string()))
                } else {
                    Err(E::custom(format!(
                        "`{s}` is neither a count nor a percentage: write e.g. `1` or `\"25%\"`"
                    )))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// One raw merge patch on one manifest (or every manifest of a kind).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PatchSpec {
    pub kind: String,
    #[serde(default)]
    pub name: Option<String>,
    pub patch: serde_json::Value,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrafficSpec {
    pub rate: Rate,
    pub duration: Dur,
    #[serde(default)]
    pub timeout: Option<Dur>,
    #[serde(default)]
    pub keep_alive: Option<bool>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub max_in_flight: Option<usize>,
    #[serde(default)]
    pub warmup: Option<Dur>,
    #[serde(default)]
    pub bucket: Option<Dur>,
    /// Re-send an idempotent request on a fresh connection when its reused
    /// keep-alive connection turns out closed before any response (as Go's
    /// client does); `false` reports those failures instead.
    #[serde(default)]
    pub replay_idempotent: Option<bool>,
    /// Generator pods in the cluster (an indexed Job), each sending
    /// rate/N; 1 sends from zdt's own process.
    #[serde(default)]
    pub generators: Option<u32>,
    /// The generator image on an existing cluster (zdt builds and loads
    /// its own on kind; the emulator needs none).
    #[serde(default)]
    pub image: Option<String>,
    /// Labels a node must have to run a generator pod.
    #[serde(default)]
    pub generator_node_selector: Option<BTreeMap<String, String>>,
}

/// One chaos step: when (`at` or `after`), and exactly one action.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ChaosStepSpec {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub at: Option<Dur>,
    #[serde(default)]
    pub after: Option<String>,
    #[serde(default)]
    pub delay: Option<Dur>,

    #[serde(default)]
    pub drain: Option<DrainSpec>,
    #[serde(default)]
    pub cordon: Option<NodeStepSpec>,
    #[serde(default)]
    pub uncordon: Option<NodeStepSpec>,
    #[serde(default)]
    pub taint: Option<TaintSpec>,
    #[serde(default)]
    pub rollout_restart: Option<DeploymentStepSpec>,
    #[serde(default)]
    pub set_image: Option<SetImageSpec>,
    #[serde(default)]
    pub scale: Option<ScaleSpec>,
    #[serde(default)]
    pub delete_pod: Option<DeletePodSpec>,
    #[serde(default)]
    pub node_stop: Option<NodeStepSpec>,
    #[serde(default)]
    pub node_pause: Option<NodeStepSpec>,
    #[serde(default)]
    pub node_kill: Option<NodeStepSpec>,
    #[serde(default)]
    pub node_resume: Option<NodeStepSpec>,
    #[serde(default)]
    pub lb_remove_backend: Option<NodeStepSpec>,
    #[serde(default)]
    pub lb_drain_backend: Option<LbDrainSpec>,
    #[serde(default)]
    pub lb_restore_backend: Option<NodeStepSpec>,
    #[serde(default)]
    pub wait: Option<WaitSpec>,
}

/// The YAML names of the actions, in the order of [`ChaosStepSpec`].
pub const ACTIONS: &[&str] = &[
    "drain",
    "cordon",
    "uncordon",
    "taint",
    "rolloutRestart",
    "setImage",
    "scale",
    "deletePod",
    "nodeStop",
    "nodePause",
    "nodeKill",
    "nodeResume",
    "lbRemoveBackend",
    "lbDrainBackend",
    "lbRestoreBackend",
    "wait",
];

/// How a step names its node.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum NodeSelectorSpec {
    /// `node: zdt-worker2` — the node's exact name.
    Name(String),
    /// `node: {index: 1}` — the n-th worker, 0-based, in name order.
    Index(usize),
    /// `node: {hostingPod: {app: nginx}}` — a worker running a pod with these
    /// labels, chosen with the run's seed.
    HostingPod(BTreeMap<String, String>),
    /// `node: {sameAs: stepName}` — the node an earlier step chose.
    SameAs(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NodeSelectorMap {
    #[serde(default)]
    index: Option<i64>,
    #[serde(default)]
    hosting_pod: Option<BTreeMap<String, String>>,
    #[serde(default)]
    same_as: Option<String>,
}

impl<'de> Deserialize<'de> for NodeSelectorSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NodeSelectorSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a node name, `{index: N}`, `{hostingPod: {label: value}}` or `{sameAs: step}`",
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<NodeSelectorSpec, E> {
                Ok(NodeSelectorSpec::Name(s.to_string()))
            }
            fn visit_i64<E: de::Error>(self, i: i64) -> Result<NodeSelectorSpec, E> {
                Err(E::custom(format!(
                    "a bare number is ambiguous here: write `node: {{index: {i}}}` for the worker at index {i} (0-based), or quote a node name"
                )))
            }
            fn visit_u64<E: de::Error>(self, u: u64) -> Result<NodeSelectorSpec, E> {
                self.visit_i64(u as i64)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<NodeSelectorSpec, A::Error> {
                let m = NodeSelectorMap::deserialize(de::value::MapAccessDeserializer::new(map))?;
                match (m.index, m.hosting_pod, m.same_as) {
                    (Some(i), None, None) => usize::try_from(i)
                        .map(NodeSelectorSpec::Index)
                        .map_err(|_| de::Error::custom(format!("node index {i} must be ≥ 0"))),
                    (None, Some(labels), None) if !labels.is_empty() => {
                        Ok(NodeSelectorSpec::HostingPod(labels))
                    }
                    (None, Some(_), None) => Err(de::Error::custom(
                        "`hostingPod` needs at least one label, e.g. `{hostingPod: {app: nginx}}`",
                    )),
                    (None, None, Some(step)) => Ok(NodeSelectorSpec::SameAs(step)),
                    _ => Err(de::Error::custom(
                        "choose the node one way: exactly one of `index`, `hostingPod` or `sameAs`",
                    )),
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeStepSpec {
    pub node: NodeSelectorSpec,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DrainSpec {
    pub node: NodeSelectorSpec,
    #[serde(default)]
    pub timeout: Option<Dur>,
    #[serde(default)]
    pub grace_period: Option<Dur>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TaintSpec {
    pub node: NodeSelectorSpec,
    pub key: String,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub effect: Option<TaintEffect>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeploymentStepSpec {
    #[serde(default)]
    pub deployment: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SetImageSpec {
    #[serde(default)]
    pub deployment: Option<String>,
    #[serde(default)]
    pub container: Option<String>,
    pub image: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScaleSpec {
    #[serde(default)]
    pub deployment: Option<String>,
    pub replicas: u32,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeletePodSpec {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub selector: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub grace_period: Option<Dur>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LbDrainSpec {
    pub node: NodeSelectorSpec,
    #[serde(default)]
    pub timeout: Option<Dur>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum WaitCondition {
    /// The deployment's rollout finished (all replicas updated and available).
    RolloutComplete,
    /// Every pod of the workload is Ready.
    PodsReady,
    /// Every LB backend is healthy again.
    LbHealthy,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WaitSpec {
    #[serde(default)]
    pub duration: Option<Dur>,
    #[serde(default)]
    pub until: Option<WaitCondition>,
    #[serde(default)]
    pub timeout: Option<Dur>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExpectSpec {
    #[serde(default)]
    pub success_ratio: Option<RatioBound>,
    #[serde(default)]
    pub latency: Option<LatencySpec>,
    #[serde(default)]
    pub status_codes: Option<Vec<u16>>,
    #[serde(default)]
    pub error_kinds: Option<Vec<ErrorKindName>>,
    #[serde(default)]
    pub max_error_window: Option<Dur>,
    #[serde(default)]
    pub min_achieved_rate: Option<f64>,
    #[serde(default)]
    pub max_send_lag: Option<Dur>,
    #[serde(default)]
    pub tolerance: Option<ToleranceSpec>,
}

/// An entry of `expect.errorKinds`: one error kind, named exactly as reports
/// and `summary.json` name it, or `timeout` for both timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorKindName {
    /// `connect-timeout` or `response-timeout`.
    Timeout,
    /// Exactly this kind.
    Kind(ErrorKind),
}

/// Names scenario files used before errorKinds took the report's names, with
/// the name that replaced each: a file using one gets the fix, not a guess.
const FORMER_ERROR_KIND_NAMES: [(&str, &str); 4] = [
    ("connectTimeout", "connect-timeout"),
    ("responseTimeout", "response-timeout"),
    ("status", "http-status"),
    ("other", "other-io` or `bad-response"),
];

impl ErrorKindName {
    /// Every name `errorKinds` accepts, in the order docs list them.
    pub const NAMES: [&'static str; 11] = [
        "timeout",
        "connect-timeout",
        "response-timeout",
        "refused",
        "reset",
        "closed",
        "bad-response",
        "other-io",
        "http-status",
        "not-sent",
        "cancelled",
    ];

    /// Whether a request that failed with `kind` is allowed by this entry.
    pub fn matches(self, kind: ErrorKind) -> bool {
        match self {
            ErrorKindName::Timeout => {
                matches!(kind, ErrorKind::ConnectTimeout | ErrorKind::ResponseTimeout)
            }
            ErrorKindName::Kind(k) => k == kind,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKindName::Timeout => "timeout",
            ErrorKindName::Kind(k) => k.as_str(),
        }
    }
}

impl fmt::Display for ErrorKindName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorKindName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorKindName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "timeout" {
            return Ok(ErrorKindName::Timeout);
        }
        if let Some(k) = ErrorKind::ALL.into_iter().find(|k| k.as_str() == s) {
            return Ok(ErrorKindName::Kind(k));
        }
        if let Some((_, now)) = FORMER_ERROR_KIND_NAMES.iter().find(|(old, _)| *old == s) {
            return Err(de::Error::custom(format!(
                "`{s}` is not an error kind any more: write `{now}`, the name reports and summary.json use"
            )));
        }
        Err(de::Error::unknown_variant(&s, &Self::NAMES))
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LatencySpec {
    #[serde(default)]
    pub p50: Option<DurBound>,
    #[serde(default)]
    pub p90: Option<DurBound>,
    #[serde(default)]
    pub p95: Option<DurBound>,
    #[serde(default)]
    pub p99: Option<DurBound>,
    #[serde(default, rename = "p99.9")]
    pub p999: Option<DurBound>,
    #[serde(default)]
    pub max: Option<DurBound>,
}

/// A bound on a ratio: a bare number is the minimum; `{min, max}` for both.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct RatioBound {
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// A bound on a latency: a bare duration is the maximum; `{min, max}` for both.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct DurBound {
    pub min: Option<Dur>,
    pub max: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RatioBoundMap {
    #[serde(default)]
    min: Option<f64>,
    #[serde(default)]
    max: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DurBoundMap {
    #[serde(default)]
    min: Option<Dur>,
    #[serde(default)]
    max: Option<Dur>,
}

fn ratio_from_str<E: de::Error>(s: &str) -> Result<f64, E> {
    match s.strip_suffix('%').map(|n| n.trim().parse::<f64>()) {
        Some(Ok(p)) => Ok(p / 100.0),
        _ => Err(E::custom(format!(
            "`{s}` is not a ratio: write e.g. `0.999` or `\"99.9%\"`"
        ))),
    }
}

impl<'de> Deserialize<'de> for RatioBound {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RatioBound;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a minimum like `0.999` or `{min: 0.9, max: 0.99}`")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RatioBound, E> {
                Ok(RatioBound {
                    min: Some(v),
                    max: None,
                })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RatioBound, E> {
                self.visit_f64(v as f64)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RatioBound, E> {
                self.visit_f64(v as f64)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RatioBound, E> {
                self.visit_f64(ratio_from_str(s)?)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RatioBound, A::Error> {
                let m = RatioBoundMap::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RatioBound {
                    min: m.min,
                    max: m.max,
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for DurBound {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = DurBound;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a maximum like `500ms` or `{min: 9s, max: 11s}`")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<DurBound, E> {
                let d: Dur = s.parse().map_err(E::custom)?;
                Ok(DurBound {
                    min: None,
                    max: Some(d),
                })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<DurBound, E> {
                if v == 0 {
                    return Ok(DurBound {
                        min: None,
                        max: Some(Dur::ZERO),
                    });
                }
                Err(E::custom(format!(
                    "latency `{v}` needs a unit: write e.g. `{v}ms` or `{v}s`"
                )))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<DurBound, E> {
                self.visit_i64(v as i64)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<DurBound, E> {
                Err(E::custom(format!(
                    "latency `{v}` needs a unit: write e.g. `{v}s`"
                )))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<DurBound, A::Error> {
                let m = DurBoundMap::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(DurBound {
                    min: m.min,
                    max: m.max,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// How much worse than a committed baseline a run may be before it fails.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ToleranceSpec {
    /// Absolute drop of the success ratio allowed (e.g. `0.001`).
    #[serde(default)]
    pub success_ratio: Option<f64>,
    /// Relative increase of each latency percentile allowed (`"20%"` or `0.2`).
    #[serde(default)]
    pub latency: Option<Fraction>,
}

/// A fraction written `0.2` or `"20%"`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Fraction(pub f64);

impl<'de> Deserialize<'de> for Fraction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Fraction;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a fraction like `0.2` or `\"20%\"`")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Fraction, E> {
                Ok(Fraction(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Fraction, E> {
                Ok(Fraction(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Fraction, E> {
                Ok(Fraction(v as f64))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Fraction, E> {
                ratio_from_str(s).map(Fraction)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kind_names_are_the_reports_names_plus_timeout() {
        let mut want = vec!["timeout"];
        want.extend(ErrorKind::ALL.iter().map(|k| k.as_str()));
        assert_eq!(ErrorKindName::NAMES.to_vec(), want);
        for name in ErrorKindName::NAMES {
            let parsed: ErrorKindName =
                serde_json::from_value(serde_json::Value::from(name)).unwrap();
            assert_eq!(parsed.as_str(), name);
        }
    }

    #[test]
    fn timeout_covers_both_timeouts_and_each_kind_only_itself() {
        let timeout = ErrorKindName::Timeout;
        assert!(timeout.matches(ErrorKind::ConnectTimeout));
        assert!(timeout.matches(ErrorKind::ResponseTimeout));
        assert!(!timeout.matches(ErrorKind::Refused));
        for k in ErrorKind::ALL {
            for other in ErrorKind::ALL {
                assert_eq!(ErrorKindName::Kind(k).matches(other), k == other);
            }
        }
    }

    #[test]
    fn a_former_name_is_refused_with_its_replacement() {
        let err = serde_json::from_value::<ErrorKindName>("status".into()).unwrap_err();
        assert!(err.to_string().contains("write `http-status`"), "{err}");
        let err = serde_json::from_value::<ErrorKindName>("timout".into()).unwrap_err();
        assert!(err.to_string().contains("unknown variant"), "{err}");
    }
}
