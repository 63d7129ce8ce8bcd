//! Health-probe settings and the clouds' published defaults for a Service of
//! type LoadBalancer. The numbers matter: "how long does the LB keep sending
//! to a node that silently drops" is interval × unhealthy threshold.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use zdt_core::units::Dur;

/// How one backend is probed: every `interval` (start to start), each probe
/// given `timeout`; `unhealthy_threshold` consecutive failures take the
/// backend out of rotation, `healthy_threshold` consecutive successes put it
/// (back) in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSettings {
    pub interval: Dur,
    pub timeout: Dur,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
}

impl ProbeSettings {
    /// The longest a backend that starts failing can keep receiving new
    /// connections: the first failing probe may start just after the change,
    /// plus `unhealthy_threshold` probes, the last of which may time out.
    pub fn detection_budget(&self) -> Duration {
        self.interval.get() * self.unhealthy_threshold + self.timeout.get()
    }

    /// Thresholds of zero or a zero interval make no sense; say which field.
    pub fn validate(&self) -> Result<(), ProbeSettingsError> {
        if self.interval.get().is_zero() {
            return Err(ProbeSettingsError::ZeroInterval);
        }
        if self.timeout.get().is_zero() {
            return Err(ProbeSettingsError::ZeroTimeout);
        }
        if self.unhealthy_threshold == 0 {
            return Err(ProbeSettingsError::ZeroUnhealthyThreshold);
        }
        if self.healthy_threshold == 0 {
            return Err(ProbeSettingsError::ZeroHealthyThreshold);
        }
        Ok(())
    }
}

/// The backends' health when the LB starts.
///
/// A cloud LB created next to a running Service starts every backend
/// unknown and needs `healthy_threshold` passing probes on its schedule
/// before sending anything (≈ 10 s on Azure, up to 90 s on AWS NLB): that
/// wait is real, but no scenario tests it. `Ready` skips it for the
/// backends that are ready: each is checked at start (retried every 100 ms
/// for up to one interval, as kube-proxy may not have applied the
/// Service's endpoints yet) and is healthy as soon as a check passes; from
/// then on it is probed on the profile's schedule like any other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum InitialHealth {
    /// Start unknown; healthy after `healthy_threshold` probes (a cloud's
    /// newly created LB).
    #[default]
    Probed,
    /// Checked at start; a backend that passes is healthy at once.
    Ready,
}

impl InitialHealth {
    pub const ALL: [InitialHealth; 2] = [InitialHealth::Ready, InitialHealth::Probed];

    /// The name scenario files use.
    pub fn as_str(self) -> &'static str {
        match self {
            InitialHealth::Probed => "probed",
            InitialHealth::Ready => "ready",
        }
    }
}

impl fmt::Display for InitialHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A probe setting that makes no sense; each names its field and a fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeSettingsError {
    #[error("probe.interval must be greater than 0s, e.g. `5s`")]
    ZeroInterval,
    #[error("probe.timeout must be greater than 0s, e.g. `5s`")]
    ZeroTimeout,
    #[error("probe.unhealthy_threshold must be at least 1")]
    ZeroUnhealthyThreshold,
    #[error("probe.healthy_threshold must be at least 1")]
    ZeroHealthyThreshold,
}

/// What a `Cluster`-policy Service is probed on, per cloud: kube-proxy's
/// `:10256/healthz` (HTTP) or a TCP connect to the traffic NodePort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClusterProbe {
    /// HTTP GET `:10256/healthz` on the node (kube-proxy's own health).
    KubeProxyHealthz,
    /// TCP connect to the Service's NodePort.
    TcpNodePort,
}

/// How an LB carries a client's connection to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Forwarding {
    /// Terminates TCP and opens its own connection to the node (a proxy).
    #[default]
    Proxy,
    /// Forwards packets: the handshake is the client's with the node.
    PassThrough,
}

/// A cloud whose LB behaviour to model. `Local` Services are always probed
/// with HTTP GET on `healthCheckNodePort` path `/healthz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// Azure Load Balancer as configured by cloud-provider-azure: probe every
    /// 5 s, `probeThreshold` 2 (out after 2 failures, back after 2
    /// successes), timeout = interval.
    #[default]
    Azure,
    /// AWS NLB (aws-load-balancer-controller / in-tree): `Local` HTTP every
    /// 10 s, 2 unhealthy / 2 healthy, timeout 6 s; `Cluster` TCP on the
    /// NodePort every 30 s, 3 / 3, timeout 10 s.
    AwsNlb,
    /// GCP (ingress-gce/in-tree L4): every 8 s, timeout 1 s, 3 failures out,
    /// 1 success in; `Cluster` on kube-proxy's `:10256/healthz`.
    Gcp,
    /// cloud-provider-kind's envoy: every 3 s, timeout 5 s, 2 failures out,
    /// 1 success in; `Cluster` on `:10256/healthz`.
    CloudProviderKind,
    /// Nothing preset: the same as `azure` until overridden field by field.
    Custom,
}

impl Profile {
    pub(crate) const ALL: [Profile; 5] = [
        Profile::Azure,
        Profile::AwsNlb,
        Profile::Gcp,
        Profile::CloudProviderKind,
        Profile::Custom,
    ];

    /// How this cloud's LB carries a connection to the node: Azure's, AWS
    /// NLB's and GCP's forward packets (the client's own address reaches
    /// the node); cloud-provider-kind's envoy terminates TCP and opens its
    /// own connection.
    pub fn forwarding(self) -> Forwarding {
        match self {
            Profile::CloudProviderKind => Forwarding::Proxy,
            Profile::Azure | Profile::AwsNlb | Profile::Gcp | Profile::Custom => {
                Forwarding::PassThrough
            }
        }
    }

    /// The probe settings this cloud uses for a Service with
    /// `externalTrafficPolicy: Local` (`policy_local`) or `Cluster`.
    pub fn probe(self, policy_local: bool) -> ProbeSettings {
        let s = |interval: u64, timeout_ms: u64, unhealthy: u32, healthy: u32| ProbeSettings {
            interval: Dur::from_secs(interval),
            timeout: Dur::from_millis(timeout_ms),
            unhealthy_threshold: unhealthy,
            healthy_threshold: healthy,
        };
        match (self, policy_local) {
            (Profile::Azure | Profile::Custom, _) => s(5, 5000, 2, 2),
            (Profile::AwsNlb, true) => s(10, 6000, 2, 2),
            (Profile::AwsNlb, false) => s(30, 10_000, 3, 3),
            (Profile::Gcp, _) => s(8, 1000, 3, 1),
            (Profile::CloudProviderKind, _) => s(3, 5000, 2, 1),
        }
    }

    /// Where this cloud probes a `Cluster`-policy Service.
    pub fn cluster_probe(self) -> ClusterProbe {
        match self {
            Profile::AwsNlb | Profile::Azure | Profile::Custom => ClusterProbe::TcpNodePort,
            Profile::Gcp | Profile::CloudProviderKind => ClusterProbe::KubeProxyHealthz,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Profile::Azure => "azure",
            Profile::AwsNlb => "aws-nlb",
            Profile::Gcp => "gcp",
            Profile::CloudProviderKind => "cloud-provider-kind",
            Profile::Custom => "custom",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A profile name that is none of [`Profile::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown LB profile `{0}`: use one of azure, aws-nlb, gcp, cloud-provider-kind, custom")]
pub struct UnknownProfile(pub String);

impl FromStr for Profile {
    type Err = UnknownProfile;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Profile::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| UnknownProfile(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_defaults() {
        let az = Profile::Azure.probe(true);
        assert_eq!(az.interval, Dur::from_secs(5));
        assert_eq!(az.unhealthy_threshold, 2);
        let aws_local = Profile::AwsNlb.probe(true);
        assert_eq!(
            (
                aws_local.interval,
                aws_local.unhealthy_threshold,
                aws_local.healthy_threshold
            ),
            (Dur::from_secs(10), 2, 2)
        );
        let aws_cluster = Profile::AwsNlb.probe(false);
        assert_eq!(
            (
                aws_cluster.interval,
                aws_cluster.unhealthy_threshold,
                aws_cluster.healthy_threshold
            ),
            (Dur::from_secs(30), 3, 3)
        );
        let gcp = Profile::Gcp.probe(true);
        assert_eq!(
            (gcp.interval, gcp.unhealthy_threshold, gcp.healthy_threshold),
            (Dur::from_secs(8), 3, 1)
        );
        let kind = Profile::CloudProviderKind.probe(true);
        assert_eq!(
            (
                kind.interval,
                kind.timeout,
                kind.unhealthy_threshold,
                kind.healthy_threshold
            ),
            (Dur::from_secs(3), Dur::from_secs(5), 2, 1)
        );
        assert_eq!(kind.detection_budget(), Duration::from_secs(11));
    }

    #[test]
    fn names_round_trip_and_unknown_names_say_the_choices() {
        for p in Profile::ALL {
            assert_eq!(p.name().parse::<Profile>().unwrap(), p);
            assert_eq!(serde_json::to_value(p).unwrap(), p.name());
        }
        let err = "aws".parse::<Profile>().unwrap_err();
        assert_eq!(err, UnknownProfile("aws".into()));
        let err = err.to_string();
        assert!(err.contains("aws-nlb"), "{err}");
    }

    #[test]
    fn zero_thresholds_are_rejected() {
        let mut p = Profile::Gcp.probe(true);
        p.unhealthy_threshold = 0;
        let err = p.validate().unwrap_err();
        assert_eq!(err, ProbeSettingsError::ZeroUnhealthyThreshold);
        assert!(err.to_string().contains("unhealthy_threshold"));
    }
}
