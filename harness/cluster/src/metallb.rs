//! MetalLB in L2 mode on a kind cluster (`loadBalancer.mode: metallb`):
//! its manifest applied from a file (zdt downloads nothing; the nightly
//! fetches the pinned release and checks its sha256), then an address pool
//! at the top of the `kind` network's subnet and an L2 advertisement for it.
//! Applying is server-side apply, so a reused cluster is left as it is.
//!
//! Written to MetalLB's documented configuration (metallb.io/v1beta1
//! `IPAddressPool`, `L2Advertisement`); not run against real MetalLB here.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use kube::Client;
use serde_json::{json, Value};

/// The MetalLB release docs/kind.md and the nightly pin.
pub const VERSION: &str = "v0.14.9";
/// Names the manifest file to apply (`metallb-native.yaml` of [`VERSION`]).
pub const MANIFEST_ENV: &str = "ZDT_METALLB_MANIFEST";
pub const NAMESPACE: &str = "metallb-system";
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

/// Install MetalLB from the manifest named by [`MANIFEST_ENV`] and give it
/// a pool inside `subnet` (the `kind` network's IPv4 subnet).
pub async fn install(client: &Client, subnet: (Ipv4Addr, u8)) -> Result<(), String> {
    let path = std::env::var_os(MANIFEST_ENV).ok_or_else(|| {
        format!(
            "loadBalancer mode `metallb` installs MetalLB from a manifest file: {}",
            manifest_help()
        )
    })?;
    let path = std::path::PathBuf::from(path);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("{MANIFEST_ENV}={}: {e}", path.display()))?;
    let objects: Vec<Value> = serde_saphyr::from_str_multiple::<Value, Vec<Value>>(&text)
        .map_err(|e| format!("{MANIFEST_ENV}={}: not YAML: {e}", path.display()))?
        .into_iter()
        .filter(|o| !o.is_null())
        .collect();
    crate::apply::apply_objects(client, &objects, NAMESPACE)
        .await
        .map_err(|e| format!("applying MetalLB from {}: {e}", path.display()))?;
    crate::apply::wait_deployments_ready(client, NAMESPACE, READY_TIMEOUT)
        .await
        .map_err(|e| format!("MetalLB in {NAMESPACE}: {e}"))?;
    let (first, last) = super::kind::metallb_pool(subnet.0, subnet.1).ok_or_else(|| {
        format!(
            "the kind network's subnet {}/{} is smaller than a /24: no room for a MetalLB pool",
            subnet.0, subnet.1
        )
    })?;
    // The validating webhook answers only some time after its Deployment is
    // ready: retry the pool until it is accepted.
    let pool = pool_objects(first, last);
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match crate::apply::apply_objects(client, &pool, NAMESPACE).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!(
                    "MetalLB did not accept the address pool {first}-{last}: {e}"
                ))
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
