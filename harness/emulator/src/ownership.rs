//! Who owns what, by ownerReference uid: what the garbage collector
//! collects and what a delete's propagation policy cascades to. Shared by
//! the API server (orphaning and foreground deletes) and the garbage
//! collector controller, so neither reaches into the other.

use serde_json::Value;

use crate::store::{meta_str, Resource, State};

/// The kinds that can be dependents.
pub const OWNED: &[Resource] = &[
    Resource::ReplicaSets,
    Resource::Jobs,
    Resource::Pods,
    Resource::EndpointSlices,
];

fn refers_to(o: &Value, owner_uid: &str) -> bool {
    o["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|refs| refs.iter().any(|r| r["uid"] == owner_uid))
}

/// The objects in `namespace` that name `owner_uid` as an owner.
pub fn dependents(st: &State, namespace: &str, owner_uid: &str) -> Vec<(Resource, String)> {
    let mut out = Vec::new();
    for &r in OWNED {
        for o in st.list(r, Some(namespace)) {
            if refers_to(o, owner_uid) {
                out.push((r, meta_str(o, "name").unwrap_or("").to_owned()));
            }
        }
    }
    out
}

pub fn has_dependents(st: &State, namespace: &str, owner_uid: &str) -> bool {
    !dependents(st, namespace, owner_uid).is_empty()
}

/// An orphaning delete: the dependents lose their reference to the owner
/// (upstream's `orphan` finalizer does this before the owner goes).
pub fn orphan(st: &mut State, namespace: &str, owner_uid: &str) {
    for (r, name) in dependents(st, namespace, owner_uid) {
        let Some(mut o) = st.get(r, namespace, &name).cloned() else {
            continue;
        };
        if let Some(refs) = o["metadata"]["ownerReferences"].as_array_mut() {
            refs.retain(|x| x["uid"] != owner_uid);
        }
        let _ = st.update(r, o);
    }
}
