//! What an emulated cluster is: its Kubernetes version (which switches the
//! version-dependent behaviours of DESIGN.md's model table), its timings
//! (every one an upstream default, overridable by the scenario), and how
//! pods run.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::units::Dur;

/// A Kubernetes minor version, e.g. `1.27` or `1.31`. Patch levels are
/// accepted (`1.31.2`, `v1.31`) and ignored: no modelled behaviour changes
/// within a minor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KubeVersion {
    pub major: u16,
    pub minor: u16,
}

impl KubeVersion {
    pub const V1_27: KubeVersion = KubeVersion::new(1, 27);
    pub const V1_31: KubeVersion = KubeVersion::new(1, 31);

    pub const fn new(major: u16, minor: u16) -> Self {
        Self { major, minor }
    }

    /// True when this version is `major.minor` or newer.
    pub fn at_least(self, major: u16, minor: u16) -> bool {
        self >= KubeVersion::new(major, minor)
    }

    /// EndpointSlices keep terminating pods with `serving`/`terminating`
    /// conditions (EndpointSliceTerminatingCondition, on by default since
    /// 1.22, GA 1.26). Older versions drop a pod from its slice as soon as
    /// it has a deletionTimestamp.
    pub fn endpoint_terminating_condition(self) -> bool {
        self.at_least(1, 22)
    }

    /// kube-proxy falls back to serving-terminating endpoints when a
    /// service has no ready ones (ProxyTerminatingEndpoints, GA 1.28).
    pub fn proxy_terminating_endpoints(self) -> bool {
        self.at_least(1, 28)
    }

    /// kube-proxy's `/healthz` fails for a node being deleted or tainted
    /// `ToBeDeletedByClusterAutoscaler` (KEP-3836, GA 1.31).
    pub fn proxy_healthz_reflects_node_deletion(self) -> bool {
        self.at_least(1, 31)
    }

    /// The `sleep` preStop action exists (PodLifecycleSleepAction, beta and
    /// on by default 1.30).
    pub fn prestop_sleep_action(self) -> bool {
        self.at_least(1, 30)
    }

    /// `gitVersion` as the API server's `/version` reports it.
    pub fn git_version(self) -> String {
        format!("v{}.{}.0", self.major, self.minor)
    }
}

impl Default for KubeVersion {
    fn default() -> Self {
        KubeVersion::V1_31
    }
}

impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A version string that is not `MAJOR.MINOR`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a Kubernetes version: write MAJOR.MINOR, e.g. `1.31` or `1.27`")]
pub struct KubeVersionError(pub String);

impl FromStr for KubeVersion {
    type Err = KubeVersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || KubeVersionError(s.to_owned());
        let t = s.trim();
        let t = t.strip_prefix('v').unwrap_or(t);
        let mut parts = t.split('.');
        let major: u16 = parts.next().ok_or_else(err)?.parse().map_err(|_| err())?;
        let minor: u16 = parts.next().ok_or_else(err)?.parse().map_err(|_| err())?;
        if let Some(patch) = parts.next() {
            patch.parse::<u16>().map_err(|_| err())?;
        }
        if parts.next().is_some() || major != 1 {
            return Err(err());
        }
        Ok(KubeVersion::new(major, minor))
    }
}

impl Serialize for KubeVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KubeVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Accept `1.31` written as a YAML/JSON number too: people do.
        let v = serde_json::Value::deserialize(d)?;
        let text = match &v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            other => other.to_string(),
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

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
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            kube_proxy_sync_delay: Dur::from_secs(1),
            pod_start_delay: Dur::from_millis(500),
            node_monitor_grace_period: Dur::from_secs(40),
            node_monitor_period: Dur::from_secs(5),
            node_status_update_frequency: Dur::from_secs(10),
            default_not_ready_toleration: Dur::from_secs(300),
            endpoint_slice_batch_period: Dur::ZERO,
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
    /// The built-in `serve::Server` with nginx's stop-signal semantics.
    Builtin,
}

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
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            workers: 3,
            kubernetes: KubeVersion::default(),
            timings: Timings::default(),
            runtime: RuntimeChoice::default(),
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
