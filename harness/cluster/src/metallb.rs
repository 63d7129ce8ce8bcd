//! MetalLB in L2 mode on a kind cluster (`loadBalancer.mode: metallb`):
//! its manifest applied from a file (zdt downloads nothing; the file must
//! have the pinned release's sha256, [`MANIFEST_SHA256`], which the nightly
//! checks its download against too), a wait for its controller and every
//! speaker, then an address pool at the top of the `kind` network's subnet
//! and an L2 advertisement for it. Applying is server-side apply, so a
//! reused cluster is left as it is.
//!
//! Written to MetalLB's documented configuration (metallb.io/v1beta1
//! `IPAddressPool`, `L2Advertisement`); not run against real MetalLB here.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use kube::{Api, Client};
use serde_json::{json, Value};

use crate::apply::ApplyError;

/// The MetalLB release docs/kind.md and the nightly pin.
pub const VERSION: &str = "v0.14.9";
/// Names the manifest file to apply (`metallb-native.yaml` of [`VERSION`]).
pub(crate) const MANIFEST_ENV: &str = "ZDT_METALLB_MANIFEST";
/// sha256 of `config/manifests/metallb-native.yaml` at [`VERSION`],
/// computed from the file as committed at that tag in MetalLB's repository
/// (raw.githubusercontent.com serves those bytes; no download was compared
/// here, so the nightly's first fetch is the cross-check). A file with any
/// other digest is refused: zdt's results name MetalLB {VERSION}, and the
/// speaker wait below is written for that manifest's objects.
pub const MANIFEST_SHA256: &str =
    "951065e85692aa106f1bb5d5a487d9306154923a794ab1d82122881cbaf588e4";
pub(crate) const NAMESPACE: &str = "metallb-system";
/// Name of the pool and advertisement zdt creates.
pub const POOL: &str = "zdt";

/// How long MetalLB's controller, speakers and webhook may take to come up.
pub const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// The pool and advertisement for `first`–`last`.
pub fn pool_objects(first: Ipv4Addr, last: Ipv4Addr) -> Vec<Value> {
    vec![
        json!({
            "apiVersion": "metallb.io/v1beta1",
            "kind": "IPAddressPool",
            "metadata": {"name": POOL, "namespace": NAMESPACE},
            "spec": {"addresses": [format!("{first}-{last}")]}
        }),
        json!({
            "apiVersion": "metallb.io/v1beta1",
            "kind": "L2Advertisement",
            "metadata": {"name": POOL, "namespace": NAMESPACE},
            "spec": {"ipAddressPools": [POOL]}
        }),
    ]
}

fn manifest_help() -> String {
    format!(
        "download metallb-native.yaml of MetalLB {VERSION} \
         (https://raw.githubusercontent.com/metallb/metallb/{VERSION}/config/manifests/metallb-native.yaml) \
         and set {MANIFEST_ENV}=/path/to/metallb-native.yaml (see docs/kind.md)"
    )
}

/// Why MetalLB could not be installed or given its address pool.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetallbError {
    /// [`MANIFEST_ENV`] is not set; the message says where to get the file.
    #[error(
        "loadBalancer mode `metallb` installs MetalLB from a manifest file: {}",
        manifest_help()
    )]
    NoManifest,
    #[error("{MANIFEST_ENV}={path}: {source}")]
    ReadManifest {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Boxed: the YAML error is large.
    #[error("{MANIFEST_ENV}={path}: not YAML: {source}")]
    NotYaml {
        path: PathBuf,
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    #[error("applying MetalLB from {path}: {source}")]
    Apply {
        path: PathBuf,
        #[source]
        source: ApplyError,
    },
    /// The file is not the pinned release's manifest.
    #[error(
        "{MANIFEST_ENV}={path} has sha256 {actual}, not {MANIFEST_SHA256} (metallb-native.yaml of MetalLB {VERSION}): {}",
        manifest_help()
    )]
    ManifestDigest { path: PathBuf, actual: String },
    #[error("listing MetalLB's {what} in {NAMESPACE}: {source}")]
    ListWorkloads {
        what: &'static str,
        #[source]
        source: Box<kube::Error>,
    },
    /// What of MetalLB was not ready: its controller Deployment, its
    /// speaker DaemonSet (one speaker per node answers ARP for the
    /// Service's address), each with how far it got.
    #[error("MetalLB not ready after {timeout:?}: {waiting}")]
    NotReady { timeout: Duration, waiting: String },
    #[error(
        "the kind network's subnet {network}/{prefix} is smaller than a /24: no room for a MetalLB pool"
    )]
    SubnetTooSmall { network: Ipv4Addr, prefix: u8 },
    #[error("MetalLB did not accept the address pool {first}-{last}: {source}")]
    PoolRefused {
        first: Ipv4Addr,
        last: Ipv4Addr,
        #[source]
        source: ApplyError,
    },
}

/// Install MetalLB from the manifest named by [`MANIFEST_ENV`] and give it
/// a pool inside `subnet` (the `kind` network's IPv4 subnet).
pub async fn install(client: &Client, subnet: (Ipv4Addr, u8)) -> Result<(), MetallbError> {
    let path = PathBuf::from(std::env::var_os(MANIFEST_ENV).ok_or(MetallbError::NoManifest)?);
    let text = check_manifest(&path)?;
    let objects: Vec<Value> = serde_saphyr::from_str_multiple::<Value, Vec<Value>>(&text)
        .map_err(|e| MetallbError::NotYaml {
            path: path.clone(),
            source: Box::new(e),
        })?
        .into_iter()
        .filter(|o| !o.is_null())
        .collect();
    crate::apply::apply_objects(client, &objects, NAMESPACE)
        .await
        .map_err(|source| MetallbError::Apply {
            path: path.clone(),
            source,
        })?;
    wait_ready(client, READY_TIMEOUT).await?;
    let (first, last) =
        super::kind::metallb_pool(subnet.0, subnet.1).ok_or(MetallbError::SubnetTooSmall {
            network: subnet.0,
            prefix: subnet.1,
        })?;
    // The validating webhook answers only some time after its Deployment is
    // ready: retry the pool until it is accepted.
    let pool = pool_objects(first, last);
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match crate::apply::apply_objects(client, &pool, NAMESPACE).await {
            Ok(_) => return Ok(()),
            Err(source) if Instant::now() >= deadline => {
                return Err(MetallbError::PoolRefused {
                    first,
                    last,
                    source,
                })
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    }
}

/// The manifest's text, if its sha256 is [`MANIFEST_SHA256`].
fn check_manifest(path: &std::path::Path) -> Result<String, MetallbError> {
    let text = std::fs::read_to_string(path).map_err(|source| MetallbError::ReadManifest {
        path: path.to_owned(),
        source,
    })?;
    let actual = sha256_hex(text.as_bytes());
    if actual != MANIFEST_SHA256 {
        return Err(MetallbError::ManifestDigest {
            path: path.to_owned(),
            actual,
        });
    }
    Ok(text)
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a DaemonSet's pods are not all running its current spec and ready
/// (`None`: they are), in the words `kubectl rollout status` uses.
pub fn daemonset_waiting(ds: &DaemonSet) -> Option<String> {
    let name = ds.metadata.name.as_deref().unwrap_or("?");
    let Some(status) = &ds.status else {
        return Some(format!("DaemonSet {name} has no status yet"));
    };
    let desired = status.desired_number_scheduled;
    if status.observed_generation.unwrap_or(0) < ds.metadata.generation.unwrap_or(0) {
        return Some(format!(
            "DaemonSet {name}: its controller has not seen the spec yet"
        ));
    }
    if desired == 0 {
        return Some(format!("DaemonSet {name}: no node scheduled yet"));
    }
    let updated = status.updated_number_scheduled.unwrap_or(0);
    let ready = status.number_ready;
    (updated < desired || ready < desired)
        .then(|| format!("DaemonSet {name}: {ready} of {desired} pod(s) ready, {updated} updated"))
}

/// Wait until MetalLB's controller Deployment(s) have rolled out and its
/// speaker DaemonSet has a ready, current pod on every node it schedules
/// to, at most `timeout`. The error names each part that was not ready.
pub async fn wait_ready(client: &Client, timeout: Duration) -> Result<(), MetallbError> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), NAMESPACE);
    let list_err = |what| {
        move |e| MetallbError::ListWorkloads {
            what,
            source: Box::new(e),
        }
    };
    let deadline = Instant::now() + timeout;
    loop {
        let deployments = deployments
            .list(&Default::default())
            .await
            .map_err(list_err("Deployments"))?
            .items;
        let daemonsets = daemonsets
            .list(&Default::default())
            .await
            .map_err(list_err("DaemonSets"))?
            .items;
        let mut waiting: Vec<String> = deployments
            .iter()
            .filter_map(|d| crate::apply::deployment_waiting(NAMESPACE, d))
            .collect();
        if deployments.is_empty() {
            waiting.push("no controller Deployment".into());
        }
        waiting.extend(daemonsets.iter().filter_map(daemonset_waiting));
        if daemonsets.is_empty() {
            waiting.push("no speaker DaemonSet".into());
        }
        if waiting.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(MetallbError::NotReady {
                timeout,
                waiting: waiting.join("; "),
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_is_the_standard_one() {
        // FIPS 180-2 test vector.
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[tokio::test]
    async fn a_manifest_with_another_digest_is_refused_before_any_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metallb-native.yaml");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: metallb-system}\n",
        )
        .unwrap();
        // No API server is needed: the check comes first.
        let err = check_manifest(&path).unwrap_err();
        let MetallbError::ManifestDigest { actual, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(actual.len(), 64);
        let text = err.to_string();
        assert!(
            text.contains(MANIFEST_SHA256) && text.contains(VERSION),
            "{text}"
        );
    }

    fn ds(generation: i64, observed: i64, desired: i32, ready: i32, updated: i32) -> DaemonSet {
        serde_json::from_value(json!({
            "metadata": {"name": "speaker", "generation": generation},
            "status": {"observedGeneration": observed, "desiredNumberScheduled": desired,
                       "numberReady": ready, "updatedNumberScheduled": updated,
                       "currentNumberScheduled": desired, "numberMisscheduled": 0}
        }))
        .unwrap()
    }

    #[test]
    fn a_speaker_daemonset_is_ready_when_every_scheduled_pod_is_current_and_ready() {
        assert_eq!(daemonset_waiting(&ds(1, 1, 4, 4, 4)), None);
        assert_eq!(
            daemonset_waiting(&ds(1, 1, 4, 3, 4)).unwrap(),
            "DaemonSet speaker: 3 of 4 pod(s) ready, 4 updated"
        );
        assert!(daemonset_waiting(&ds(1, 1, 4, 4, 2)).is_some(), "old pods");
        assert!(
            daemonset_waiting(&ds(2, 1, 4, 4, 4)).is_some(),
            "spec not seen"
        );
        assert!(
            daemonset_waiting(&ds(1, 1, 0, 0, 0)).is_some(),
            "nothing scheduled"
        );
        assert!(daemonset_waiting(&DaemonSet::default()).is_some());
    }

    #[test]
    fn pool_and_advertisement_name_each_other() {
        let objs = pool_objects(
            "172.18.255.200".parse().unwrap(),
            "172.18.255.250".parse().unwrap(),
        );
        assert_eq!(objs[0]["kind"], "IPAddressPool");
        assert_eq!(
            objs[0]["spec"]["addresses"][0],
            "172.18.255.200-172.18.255.250"
        );
        assert_eq!(objs[1]["kind"], "L2Advertisement");
        assert_eq!(
            objs[1]["spec"]["ipAddressPools"][0],
            objs[0]["metadata"]["name"]
        );
        for o in &objs {
            assert_eq!(o["metadata"]["namespace"], NAMESPACE);
        }
    }
}
