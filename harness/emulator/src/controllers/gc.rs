//! The garbage collector: objects whose owners (by ownerReference uid) are
//! all gone are deleted — background cascading deletion, so deleting a
//! Deployment takes its ReplicaSets and then their pods along. An owner
//! deleted in the foreground (finalizer `foregroundDeletion`) has its
//! dependents deleted first and goes once none is left.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;

use super::Ctx;
use crate::ownership::{dependents, OWNED};
use crate::store::{meta_str, DeleteOptions, Resource, State, FOREGROUND_FINALIZER};

/// Kinds the emulator stores; owners of other kinds are never collected
/// against (their absence says nothing).
fn known_owner_kind(kind: &str) -> bool {
    matches!(
        kind,
        "Deployment" | "ReplicaSet" | "Job" | "Service" | "Pod" | "Node"
    )
}

pub fn reconcile(ctx: &Ctx) -> Option<Duration> {
    ctx.store.write(|st| {
        let mut uids: HashSet<String> = HashSet::new();
        for r in [
            Resource::Deployments,
            Resource::ReplicaSets,
            Resource::Jobs,
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
        foreground(st);
    });
    None
}

/// Owners deleted in the foreground: delete their dependents, and drop
/// the finalizer (so the owner goes) once none is left.
fn foreground(st: &mut State) {
    let mut waiting = Vec::new();
    for &r in OWNED.iter().chain(&[Resource::Deployments]) {
        for o in st.list(r, None) {
            let deleting = o["metadata"].get("deletionTimestamp").is_some();
            let foreground = o["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| x == FOREGROUND_FINALIZER));
            if deleting && foreground {
                waiting.push((r, o.clone()));
            }
        }
    }
    for (r, owner) in waiting {
        let ns = meta_str(&owner, "namespace").unwrap_or("").to_owned();
        let owner_uid = meta_str(&owner, "uid").unwrap_or("").to_owned();
        let deps = dependents(st, &ns, &owner_uid);
        if deps.is_empty() {
            let mut next = owner.clone();
            if let Some(f) = next["metadata"]["finalizers"].as_array_mut() {
                f.retain(|x| x != FOREGROUND_FINALIZER);
            }
            let _ = st.update(r, next);
            continue;
        }
        for (dr, name) in deps {
            let started = st
                .get(dr, &ns, &name)
                .is_some_and(|d| d["metadata"].get("deletionTimestamp").is_some());
            if !started {
                let opts = DeleteOptions {
                    propagation: Some(crate::store::Propagation::Foreground),
                    ..DeleteOptions::default()
                };
                let _ = crate::apiserver::delete_cascading(st, dr, &ns, &name, &opts);
            }
        }
    }
}
