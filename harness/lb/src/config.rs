//! The standalone LB's config file (`zdt lb --config FILE`, YAML or JSON)
//! and the backend form the HTTP admin API accepts.
//!
//! Fields are camelCase, as in scenario files; docs/lb.md documents each.
//! The snake_case names of earlier releases are still read, with a
//! deprecation warning naming the new one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::backend::{BackendSpec, ProbeTarget};
use super::profile::{ProbeSettings, ProbeSettingsError, Profile};
use super::{LbConfig, Selection};
use zdt_core::net::TcpDialer;
use zdt_core::units::Dur;

/// `externalTrafficPolicy` of the Service the LB fronts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum TrafficPolicy {
    #[default]
    Local,
    Cluster,
}

/// Per-field overrides of the profile's probe settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProbeOverrides {
    pub interval: Option<Dur>,
    pub timeout: Option<Dur>,
    #[serde(alias = "unhealthy_threshold")]
    pub unhealthy_threshold: Option<u32>,
    #[serde(alias = "healthy_threshold")]
    pub healthy_threshold: Option<u32>,
}

impl ProbeOverrides {
    pub fn apply(&self, mut base: ProbeSettings) -> ProbeSettings {
        if let Some(v) = self.interval {
            base.interval = v;
        }
        if let Some(v) = self.timeout {
            base.timeout = v;
        }
        if let Some(v) = self.unhealthy_threshold {
            base.unhealthy_threshold = v;
        }
        if let Some(v) = self.healthy_threshold {
            base.healthy_threshold = v;
        }
        base
    }
}

fn yes() -> bool {
    true
}

/// The config file of `zdt lb`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LbFile {
    /// `host:port` clients connect to.
    pub frontend: String,
    /// `host:port` of the HTTP admin API.
    #[serde(default)]
    pub admin: Option<String>,
    #[serde(default)]
    pub profile: Profile,
    #[serde(default, alias = "external_traffic_policy")]
    pub external_traffic_policy: TrafficPolicy,
    #[serde(default)]
    pub probe: ProbeOverrides,
    #[serde(default = "yes", alias = "fail_open")]
    pub fail_open: bool,
    #[serde(default)]
    pub selection: Selection,
    #[serde(default, alias = "max_connections")]
    pub max_connections: Option<usize>,
    #[serde(default, alias = "drain_timeout")]
    pub drain_timeout: Option<Dur>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default, alias = "hold_dropped")]
    pub hold_dropped: Option<Dur>,
    #[serde(default)]
    pub backends: Vec<BackendConfig>,
}

/// The snake_case keys earlier releases read, each with its camelCase name.
const FORMER_KEYS: [(&str, &str); 7] = [
    ("external_traffic_policy", "externalTrafficPolicy"),
    ("fail_open", "failOpen"),
    ("max_connections", "maxConnections"),
    ("drain_timeout", "drainTimeout"),
    ("hold_dropped", "holdDropped"),
    ("unhealthy_threshold", "unhealthyThreshold"),
    ("healthy_threshold", "healthyThreshold"),
];

/// A config file that used a snake_case key: still read, but say the new
/// name so the file can be updated before the old names go.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{old}` is deprecated: write `{new}` (the LB config is camelCase, as scenario files are)")]
pub struct DeprecatedKey {
    pub old: &'static str,
    pub new: &'static str,
}

/// The deprecated keys `text` uses as keys (YAML `key:` or JSON `"key":`).
pub fn deprecated_keys(text: &str) -> Vec<DeprecatedKey> {
    FORMER_KEYS
        .iter()
        .filter(|(old, _)| {
            text.match_indices(old).any(|(i, _)| {
                let before = text[..i].chars().next_back();
                let after = text[i + old.len()..].trim_start_matches('"').trim_start();
                // A whole key: not the tail of a longer name, followed by `:`.
                !before.is_some_and(|c| c.is_alphanumeric() || c == '_') && after.starts_with(':')
            })
        })
        .map(|&(old, new)| DeprecatedKey { old, new })
        .collect()
}

/// A backend by address: a node's `InternalIP:NodePort` dialled over TCP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub name: String,
    /// `host:port` to dial (a hostname is resolved once, when added).
    pub address: String,
    /// `http://host:port/path` or `tcp://host:port`; default `tcp://address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<String>,
}

/// Why a config file, or a backend of the admin API, is unusable. Each
/// names the field (`frontend`, `backends[w1].probe`, …) and the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read LB config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not JSON of this file's fields (the message names the field).
    #[error("{}{source}", in_file(path.as_deref()))]
    Json {
        path: Option<PathBuf>,
        #[source]
        source: serde_json::Error,
    },
    /// Not YAML of this file's fields (the message names the field).
    /// Boxed: the YAML error is large.
    #[error("{}{source}", in_file(path.as_deref()))]
    Yaml {
        path: Option<PathBuf>,
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    #[error("{field} `{value}` has no port: write `host:port`, e.g. `10.0.0.2:30080`")]
    NoPort { field: String, value: String },
    #[error("{field} `{value}` does not resolve: {source}")]
    Unresolved {
        field: String,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{field} `{value}` resolves to no address")]
    NoAddress { field: String, value: String },
    #[error("backend `name` must not be empty")]
    EmptyBackendName,
    #[error(
        "{field} `{value}` must start with `http://` (e.g. `http://10.0.0.2:10256/healthz`) or `tcp://`"
    )]
    ProbeScheme { field: String, value: String },
    #[error(transparent)]
    Probe(#[from] ProbeSettingsError),
    #[error("maxConnections must be at least 1")]
    NoConnections,
}

fn in_file(path: Option<&Path>) -> String {
    path.map(|p| format!("LB config {}: ", p.display()))
        .unwrap_or_default()
}

impl ConfigError {
    /// The same error, saying which file it is in.
    fn in_file(self, file: &Path) -> Self {
        match self {
            ConfigError::Json { source, .. } => ConfigError::Json {
                path: Some(file.to_owned()),
                source,
            },
            ConfigError::Yaml { source, .. } => ConfigError::Yaml {
                path: Some(file.to_owned()),
                source,
            },
            other => other,
        }
    }
}

/// `hostport` as one socket address, IPv4 preferred; `field` names it in
/// the error.
async fn resolve(field: &str, hostport: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(a) = hostport.parse() {
        return Ok(a);
    }
    if !hostport.contains(':') {
        return Err(ConfigError::NoPort {
            field: field.to_owned(),
            value: hostport.to_owned(),
        });
    }
    // Prefer IPv4: kind's and docker's networks are IPv4.
    let all: Vec<SocketAddr> = tokio::net::lookup_host(hostport)
        .await
        .map_err(|source| ConfigError::Unresolved {
            field: field.to_owned(),
            value: hostport.to_owned(),
            source,
        })?
        .collect();
    all.iter()
        .find(|a| a.is_ipv4())
        .or(all.first())
        .copied()
        .ok_or_else(|| ConfigError::NoAddress {
            field: field.to_owned(),
            value: hostport.to_owned(),
        })
}

impl BackendConfig {
    /// Resolve the addresses into a backend the LB can dial and probe.
    pub async fn resolve(&self) -> Result<BackendSpec, ConfigError> {
        if self.name.trim().is_empty() {
            return Err(ConfigError::EmptyBackendName);
        }
        let addr = resolve(&format!("backends[{}].address", self.name), &self.address).await?;
        let field = format!("backends[{}].probe", self.name);
        let probe = match self.probe.as_deref() {
            None => ProbeTarget::Tcp { addr },
            Some(p) => {
                if let Some(rest) = p.strip_prefix("http://") {
                    let (hostport, path) = match rest.find('/') {
                        Some(i) => (&rest[..i], &rest[i..]),
                        None => (rest, "/"),
                    };
                    ProbeTarget::Http {
                        addr: resolve(&field, hostport).await?,
                        path: path.to_owned(),
                    }
                } else if let Some(rest) = p.strip_prefix("tcp://") {
                    ProbeTarget::Tcp {
                        addr: resolve(&field, rest.trim_end_matches('/')).await?,
                    }
                } else {
                    return Err(ConfigError::ProbeScheme {
                        field,
                        value: p.to_owned(),
                    });
                }
            }
        };
        Ok(BackendSpec {
            name: self.name.clone(),
            dialer: Arc::new(TcpDialer { addr }),
            probe,
        })
    }
}

impl LbFile {
    /// Read a YAML or JSON config file; also the deprecated keys it uses.
    pub fn load(path: &Path) -> Result<(Self, Vec<DeprecatedKey>), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let file = Self::parse(&text).map_err(|e| e.in_file(path))?;
        Ok((file, deprecated_keys(&text)))
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|source| ConfigError::Json { path: None, source })
        } else {
            serde_saphyr::from_str(text).map_err(|e| ConfigError::Yaml {
                path: None,
                source: Box::new(e),
            })
        }
    }

    /// The probe settings: the profile's, then the overrides.
    pub fn probe_settings(&self) -> ProbeSettings {
        let local = self.external_traffic_policy == TrafficPolicy::Local;
        self.probe.apply(self.profile.probe(local))
    }

    /// The in-process config and the resolved backends.
    pub async fn resolve(&self) -> Result<(LbConfig, Vec<BackendSpec>), ConfigError> {
        let frontend = resolve("frontend", &self.frontend).await?;
        let defaults = LbConfig::default();
        let probe = self.probe_settings();
        probe.validate()?;
        let config = LbConfig {
            frontend,
            probe,
            initial_health: defaults.initial_health,
            fail_open: self.fail_open,
            selection: self.selection,
            max_connections: self.max_connections.unwrap_or(defaults.max_connections),
            drain_timeout: self.drain_timeout.map_or(defaults.drain_timeout, Dur::get),
            seed: self.seed.unwrap_or(defaults.seed),
            hold_dropped: self.hold_dropped.map_or(defaults.hold_dropped, Dur::get),
            hold_in: None,
            own_thread: false,
            record_connections: false,
            net: zdt_core::netns::Net::host(),
            forwarding: defaults.forwarding,
            pass_through: None,
        };
        let mut backends = Vec::with_capacity(self.backends.len());
        for b in &self.backends {
            backends.push(b.resolve().await?);
        }
        Ok((config, backends))
    }

    pub async fn admin_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        match &self.admin {
            None => Ok(None),
            Some(a) => resolve("admin", a).await.map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn yaml_with_profile_and_overrides() {
        let f = LbFile::parse(
            "frontend: 127.0.0.1:0\nprofile: gcp\nprobe:\n  interval: 300ms\nfailOpen: false\nselection: hash\nbackends:\n  - name: w1\n    address: 127.0.0.1:8080\n    probe: http://127.0.0.1:10256/healthz\n  - name: w2\n    address: 127.0.0.1:8081\n",
        )
        .unwrap();
        let (config, backends) = f.resolve().await.unwrap();
        assert_eq!(config.probe.interval, Dur::from_millis(300));
        assert_eq!(config.probe.unhealthy_threshold, 3);
        assert!(!config.fail_open);
        assert_eq!(config.selection, Selection::Hash);
        assert_eq!(
            backends[0].probe,
            ProbeTarget::Http {
                addr: "127.0.0.1:10256".parse().unwrap(),
                path: "/healthz".into()
            }
        );
        assert_eq!(
            backends[1].probe,
            ProbeTarget::Tcp {
                addr: "127.0.0.1:8081".parse().unwrap()
            }
        );
    }

    #[test]
    fn snake_case_keys_still_read_and_each_is_named_with_its_new_name() {
        let text = "frontend: 127.0.0.1:0\nfail_open: false\nprobe: {unhealthy_threshold: 3, healthyThreshold: 1}\n";
        let f = LbFile::parse(text).unwrap();
        assert!(!f.fail_open);
        assert_eq!(f.probe.unhealthy_threshold, Some(3));
        let found = deprecated_keys(text);
        assert_eq!(
            found,
            vec![
                DeprecatedKey {
                    old: "fail_open",
                    new: "failOpen"
                },
                DeprecatedKey {
                    old: "unhealthy_threshold",
                    new: "unhealthyThreshold"
                },
            ]
        );
        assert!(found[0].to_string().contains("write `failOpen`"));
        // JSON too; a key only mentioned in a value is not one.
        assert_eq!(deprecated_keys(r#"{"hold_dropped": "1s"}"#).len(), 1);
        assert!(deprecated_keys("frontend: x # no_fail_open: here\nfailOpen: true\n").is_empty());
        let camel = serde_json::to_string(&f).unwrap();
        assert!(
            camel.contains("\"failOpen\"") && !camel.contains("fail_open"),
            "{camel}"
        );
    }

    #[tokio::test]
    async fn mistakes_name_the_field() {
        let err = LbFile::parse("frontend: 1.2.3.4:1\nprobes: {}\n").unwrap_err();
        assert!(
            matches!(err, ConfigError::Yaml { path: None, .. }),
            "{err:?}"
        );
        let err = err.to_string();
        assert!(err.contains("probes"), "{err}");
        let bad = BackendConfig {
            name: "w1".into(),
            address: "127.0.0.1:1".into(),
            probe: Some("ftp://x".into()),
        };
        let err = bad.resolve().await.unwrap_err();
        assert!(matches!(err, ConfigError::ProbeScheme { .. }), "{err:?}");
        let err = err.to_string();
        assert!(err.contains("backends[w1].probe"), "{err}");
        let noport = BackendConfig {
            name: "w1".into(),
            address: "localhost".into(),
            probe: None,
        };
        let err = noport.resolve().await.unwrap_err();
        assert!(matches!(err, ConfigError::NoPort { .. }), "{err:?}");
        assert!(err.to_string().contains("no port"));
    }
}
