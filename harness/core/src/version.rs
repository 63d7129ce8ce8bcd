//! Kubernetes versions, and the version-dependent behaviours zdt models,
//! each named after the Kubernetes feature that changed it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

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
