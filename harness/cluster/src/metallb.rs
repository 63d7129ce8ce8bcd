//! MetalLB in L2 mode on a kind cluster (`loadBalancer.mode: metallb`):
//! its manifest applied from a file (zdt downloads nothing; the nightly
//! fetches the pinned release and checks its sha256), then an address pool
//! at the top of the `kind` network's subnet and an L2 advertisement for it.
//! Applying is server-side apply, so a reused cluster is left as it is.
//!
//! Written to MetalLB's documented configuration (metallb.io/v1beta1
//! `IPAddressPool`, `L2Advertisement`); not run against real MetalLB here.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kube::Client;
use serde_json::{json, Value};

use crate::apply::ApplyError;

/// The MetalLB release docs/kind.md and the nightly pin.
pub(crate) const VERSION: &str = "v0.14.9";
/// Names the manifest file to apply (`metallb-native.yaml` of [`VERSION`]).
pub(crate) const MANIFEST_ENV: &str = "ZDT_METALLB_MANIFEST";
pub(crate) const NAMESPACE: &str = "metallb-system";
/// Name of the pool and advertisement zdt creates.
pub const POOL: &str = "zdt";

/// How long MetalLB's controller and webhook may take to come up.
const READY_TIMEOUT: Duration = Duration::from_secs(180);

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
    #[error("MetalLB in {NAMESPACE}: {0}")]
    NotReady(#[source] ApplyError),
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
    let text = std::fs::read_to_string(&path).map_err(|source| MetallbError::ReadManifest {
        path: path.clone(),
        source,
    })?;
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
    crate::apply::wait_deployments_ready(client, NAMESPACE, READY_TIMEOUT)
        .await
        .map_err(MetallbError::NotReady)?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
