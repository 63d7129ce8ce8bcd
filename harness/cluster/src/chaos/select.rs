//! Choosing the node a step acts on: by name, by worker index, or "a node
//! hosting a pod matching these labels", seeded so a run is reproducible.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::Client;

use super::ChaosError;

/// How a step names its node (resolved against the live cluster).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeChoice {
    Name(String),
    /// Index into the sorted list of worker names (0-based).
    WorkerIndex(usize),
    /// A node that hosts a pod matching this label selector
    /// (`app=nginx`); among several, the seed picks one.
    HostingPod(String),
}

/// Resolve a choice to a node name. `workers` are the worker node names in
/// the provider's order; the seed makes `HostingPod` reproducible.
pub async fn choose_node(
    client: &Client,
    namespace: &str,
    choice: &NodeChoice,
    workers: &[String],
    seed: u64,
) -> Result<String, ChaosError> {
    match choice {
        NodeChoice::Name(n) => Ok(n.clone()),
        NodeChoice::WorkerIndex(i) => workers.get(*i).cloned().ok_or_else(|| {
            ChaosError::NoNode(format!(
                "worker index {i} (the cluster has {} workers)",
                workers.len()
            ))
        }),
        NodeChoice::HostingPod(selector) => {
            let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
            let list = pods
                .list(&ListParams::default().labels(selector))
                .await
                .map_err(|e| ChaosError::api(format!("list pods {selector}"), e))?;
            let hosting: BTreeSet<String> = list
                .items
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter_map(|p| p.spec.and_then(|s| s.node_name))
                .filter(|n| workers.is_empty() || workers.contains(n))
                .collect();
            pick(&hosting.into_iter().collect::<Vec<_>>(), seed).ok_or_else(|| {
                ChaosError::NoNode(format!("a node hosting a pod matching `{selector}`"))
            })
        }
    }
}

/// A seeded pick from a sorted candidate list: the same seed and the same
/// candidates give the same node on every run.
pub fn pick(candidates: &[String], seed: u64) -> Option<String> {
    if candidates.is_empty() {
        return None;
    }
    // splitmix64: a fixed, documented mix so the choice does not depend on a
    // crate's RNG algorithm across versions.
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    Some(candidates[(z % candidates.len() as u64) as usize].clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pick_is_reproducible_and_covers_candidates() {
        let c: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(pick(&c, 7), pick(&c, 7));
        let seen: BTreeSet<String> = (0..64).filter_map(|s| pick(&c, s)).collect();
        assert_eq!(seen.len(), 3, "every candidate reachable by some seed");
        assert_eq!(pick(&[], 1), None);
    }
}
