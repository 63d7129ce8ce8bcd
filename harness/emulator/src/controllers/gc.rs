//! The garbage collector: objects whose owners (by ownerReference uid) are
//! all gone are deleted — background cascading deletion, so deleting a
//! Deployment takes its ReplicaSets and then their pods along.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;

use super::Ctx;
use crate::store::{meta_str, DeleteOptions, Resource};

const OWNED: &[Resource] = &[
    Resource::ReplicaSets,
    Resource::Pods,
    Resource::EndpointSlices,
];

/// Kinds the emulator stores; owners of other kinds are never collected
/// against (their absence says nothing).
fn known_owner_kind(kind: &str) -> bool {
    matches!(
        kind,
        "Deployment" | "ReplicaSet" | "Service" | "Pod" | "Node"
    )
}

pub fn reconcile(ctx: &Ctx) -> Option<Duration> {
    ctx.store.write(|st| {
        let mut uids: HashSet<String> = HashSet::new();
        for r in [
            Resource::Deployments,
            Resource::ReplicaSets,
            Resource::Services,
            Resource::Pods,
            Resource::Nodes,
        ] {
            for o in st.list(r, None) {
                if let Some(u) = meta_str(o, "uid") {
                    uids.insert(u.to_owned());
                }
            }
        }
        let mut doomed = Vec::new();
        for &r in OWNED {
            for o in st.list(r, None) {
                let Some(refs) = o["metadata"]["ownerReferences"].as_array() else {
                    continue;
                };
                let known: Vec<&Value> = refs
                    .iter()
                    .filter(|r| r["kind"].as_str().is_some_and(known_owner_kind))
                    .collect();
                if known.is_empty() || known.len() != refs.len() {
                    continue;
                }
                let orphaned = known
                    .iter()
                    .all(|r| r["uid"].as_str().is_none_or(|u| !uids.contains(u)));
                if orphaned && o["metadata"].get("deletionTimestamp").is_none() {
                    doomed.push((
                        r,
                        meta_str(o, "namespace").unwrap_or("").to_owned(),
                        meta_str(o, "name").unwrap_or("").to_owned(),
                    ));
                }
            }
        }
        for (r, ns, name) in doomed {
            let _ = st.delete(r, &ns, &name, &DeleteOptions::default());
        }
    });
    None
}
