//! What an emulated cluster is: its Kubernetes version (which switches the
//! version-dependent behaviours of the emulator's model, docs/emulator.md),
//! its timings (every one an upstream default, overridable by the
//! scenario), and how pods run. These are settings, not the emulator: they
//! live here so that a scenario can hold them without depending on the
//! emulator's code.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::units::Dur;
use crate::version::KubeVersion;

/// Every timing of the model, with the upstream default. A scenario
/// overrides single fields (`#[serde(default)]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Timings {
    /// kube-proxy applies endpoint changes at most this often
    /// (`--iptables-min-sync-period`, default 1 s).
    pub kube_proxy_sync_delay: Dur,
    /// From a pod bound to a node to its container running (image cached;
    /// kind takes ≈ 0.5–1 s). Not an upstream flag: a model parameter.
    pub pod_start_delay: Dur,
    /// How long a node may stop heart-beating before the node lifecycle
    /// controller marks it NotReady/Unknown (`--node-monitor-grace-period`,
    /// 40 s).
    pub node_monitor_grace_period: Dur,
    /// How often the node lifecycle controller checks heartbeats
    /// (`--node-monitor-period`, 5 s).
    pub node_monitor_period: Dur,
    /// How often a kubelet heart-beats (`nodeStatusUpdateFrequency` / lease
    /// renewal, 10 s).
    pub node_status_update_frequency: Dur,
    /// The `tolerationSeconds` the DefaultTolerationSeconds admission plugin
    /// gives every pod for `not-ready`/`unreachable` NoExecute taints (300 s):
    /// pods on a dead node are evicted after this.
    pub default_not_ready_toleration: Dur,
    /// Delay between a pod change and its EndpointSlice update
    /// (`--endpointslice-updates-batch-period`, 0).
    pub endpoint_slice_batch_period: Dur,
    /// Added to every API request and watch event (0): a slow or distant
    /// API server. Not an upstream flag: a model parameter.
    pub api_latency: Dur,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            kube_proxy_sync_delay: Dur::from_secs(1),
            pod_start_delay: Dur::from_secs(1),
            node_monitor_grace_period: Dur::from_secs(40),
            node_monitor_period: Dur::from_secs(5),
            node_status_update_frequency: Dur::from_secs(10),
            default_not_ready_toleration: Dur::from_secs(300),
            endpoint_slice_batch_period: Dur::ZERO,
            api_latency: Dur::ZERO,
        }
    }
}

/// How pod containers run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuntimeChoice {
    /// nginx when `/usr/sbin/nginx` (or `nginx` on PATH) exists, else the
    /// built-in server.
    #[default]
    Auto,
    /// Real nginx processes; fail if nginx is not installed.
    Nginx,
    /// The built-in server (`zdt_emulator::node::serve`) with nginx's stop-signal
    /// semantics.
    Builtin,
}

/// Which engine runs a container named in `workload.run`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunEngine {
    /// The image from the local Docker when Docker answers and has it,
    /// else the host command (the reason is printed); with neither, the
    /// pod fails to start.
    #[default]
    Auto,
    /// The host command, never the image.
    Host,
    /// The image from the local Docker, or the pod fails to start.
    Docker,
}

impl std::fmt::Display for RunEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RunEngine::Auto => "auto",
            RunEngine::Host => "host",
            RunEngine::Docker => "docker",
        })
    }
}

/// How the emulator runs a container whose image it cannot run itself
/// (`workload.run.<container name or image>`): a process on this machine,
/// started in the cluster's network namespace with the container's env,
/// signalled and killed as the kubelet would; or the image itself from the
/// local Docker (see docs/emulator.md, "Your own service").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerRun {
    pub runtime: RunEngine,
    /// The program and its first arguments. A bare name is looked up next
    /// to the running zdt binary (cargo puts a workspace's binaries side by
    /// side), then on `PATH`; a path with a `/` is relative to the scenario
    /// file (validation makes it absolute).
    pub command: Vec<String>,
    /// More arguments; `$(VAR)` expands to the container's env, as in a pod
    /// spec's `args`.
    pub args: Vec<String>,
    /// Env on top of the container's own (`$(VAR)` expands here too).
    pub env: BTreeMap<String, String>,
}

/// Where an emulated cluster's data path runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkChoice {
    /// The most faithful network this machine allows, saying once what it
    /// lacks: [`Nodes`](Self::Nodes) (namespaces as root or through a user
    /// namespace, with `nft` and `ip`), else [`Private`](Self::Private)
    /// with the user-space data path, else the host's stack.
    /// `ZDT_NETWORK=nodes|pods|private|host` chooses instead.
    #[default]
    Auto,
    /// A private network namespace, or an error saying why not.
    Private,
    /// The host's network stack on 127.0.0.1: its connection tracking,
    /// ports and limits are part of every measurement.
    Host,
    /// A private network namespace for the cluster and one per pod (its
    /// sandbox, behind a veth pair), with the nftables data path; or an
    /// error saying why not.
    Pods,
    /// [`NetworkChoice::Pods`], and every node a network namespace of its
    /// own (its InternalIP on a veth to the cluster's namespace, its pods'
    /// sandboxes behind it, kube-proxy's rules in it); or an error saying
    /// why not. What `Auto` is where the machine allows it.
    Nodes,
}

/// Which data path an emulated cluster with a network of its own uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataPathChoice {
    /// Pods in sandboxes always have the rules. In one shared private
    /// namespace, what `ZDT_DATA_PATH` says: `nftables` asks for the rules
    /// (user space, said once, where `nft` is missing); anything else, or
    /// nothing, user space. `ZDT_DATA_PATH=userspace` also keeps an `Auto`
    /// network from giving pods sandboxes.
    #[default]
    Auto,
    /// kube-proxy's routing and every LB in zdt's own processes.
    UserSpace,
    /// nftables rules, or an error saying why not.
    Nftables,
}

/// Where the configuration says `Auto`: `userspace` keeps kube-proxy's
/// routing and every LB in zdt's own processes (and the pods in the
/// cluster's namespace); `nftables` asks for the rules in a shared private
/// namespace too. Pods in sandboxes (the default where `nft` runs) always
/// have the rules.
pub const DATA_PATH_ENV: &str = "ZDT_DATA_PATH";

/// What `Emulator::start` builds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EmulatorConfig {
    /// Worker nodes besides the control plane (kind's default layout has
    /// one control plane and N workers).
    pub workers: usize,
    pub kubernetes: KubeVersion,
    pub timings: Timings,
    pub runtime: RuntimeChoice,
    pub network: NetworkChoice,
    /// Where kube-proxy's rules and pass-through LBs run (a private
    /// network only; the host's stack is always user space).
    pub data_path: DataPathChoice,
    /// How to run containers the emulator cannot run itself, by container
    /// name or image (`workload.run`).
    pub run: BTreeMap<String, ContainerRun>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            workers: 3,
            kubernetes: KubeVersion::default(),
            timings: Timings::default(),
            runtime: RuntimeChoice::default(),
            network: NetworkChoice::default(),
            data_path: DataPathChoice::default(),
            run: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_compare() {
        let v: KubeVersion = "1.27".parse().unwrap();
        assert_eq!(v, KubeVersion::V1_27);
        assert_eq!(
            "v1.31.4".parse::<KubeVersion>().unwrap(),
            KubeVersion::V1_31
        );
        assert!(KubeVersion::V1_27 < KubeVersion::V1_31);
        assert!(!KubeVersion::V1_27.proxy_terminating_endpoints());
        assert!(KubeVersion::V1_31.proxy_terminating_endpoints());
        assert!(KubeVersion::V1_31.proxy_healthz_reflects_node_deletion());
        assert!(!"1.30"
            .parse::<KubeVersion>()
            .unwrap()
            .proxy_healthz_reflects_node_deletion());
        for bad in ["", "1", "one.two", "2.0", "1.2.3.4", "1.x"] {
            let e = bad.parse::<KubeVersion>().unwrap_err();
            assert!(e.to_string().contains("MAJOR.MINOR"), "{bad}: {e}");
        }
        let from_number: KubeVersion = serde_json::from_str("1.28").unwrap();
        assert_eq!(from_number, KubeVersion::new(1, 28));
        assert_eq!(serde_json::to_string(&from_number).unwrap(), "\"1.28\"");
    }

    #[test]
    fn timings_default_to_upstream_and_override_per_field() {
        let t: Timings = serde_json::from_str(r#"{"kubeProxySyncDelay":"250ms"}"#).unwrap();
        assert_eq!(t.kube_proxy_sync_delay, Dur::from_millis(250));
        assert_eq!(t.node_monitor_grace_period, Dur::from_secs(40));
        assert!(serde_json::from_str::<Timings>(r#"{"kubeProxySyncDelai":"1s"}"#).is_err());
    }
}
