//! What a resource's URL serves: its stored objects, and for the two Event
//! APIs each other's too. Upstream core/v1 and events.k8s.io/v1 Events are
//! one stored object seen through two versions, so `kubectl events` (which
//! reads events.k8s.io/v1) shows what the controllers record as core/v1
//! Events, and the other way round. Reads (get, list, watch) see both; a
//! write goes to the version it names.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::store::{name_of, namespace_of, Change, Resource, State, StoreError};

fn mirror_of(resource: Resource) -> Option<Resource> {
    match resource {
        Resource::CoreEvents => Some(Resource::Events),
        Resource::Events => Some(Resource::CoreEvents),
        _ => None,
    }
}

/// An Event of one version as the other (upstream's conversion).
fn convert(to: Resource, e: &Value) -> Value {
    let mut out = json!({"metadata": e["metadata"].clone()});
    let copy = |out: &mut Value, from: &str, to: &str| {
        if let Some(v) = e.get(from).filter(|v| !v.is_null()) {
            out[to] = v.clone();
        }
    };
    for same in [
        "eventTime",
        "series",
        "action",
        "reason",
        "related",
        "type",
        "reportingInstance",
    ] {
        copy(&mut out, same, same);
    }
    let pairs = [
        ("involvedObject", "regarding"),
        ("message", "note"),
        ("reportingComponent", "reportingController"),
        ("source", "deprecatedSource"),
        ("firstTimestamp", "deprecatedFirstTimestamp"),
        ("lastTimestamp", "deprecatedLastTimestamp"),
        ("count", "deprecatedCount"),
    ];
    for (core, v1) in pairs {
        match to {
            Resource::Events => copy(&mut out, core, v1),
            _ => copy(&mut out, v1, core),
        }
    }
    // events.k8s.io/v1 requires eventTime (a MicroTime), which Events
    // from the legacy recorder lack: clients that check (the Python
    // client) take the time it was first seen.
    if to == Resource::Events && out["eventTime"].is_null() {
        let first = ["firstTimestamp", "lastTimestamp"]
            .iter()
            .find_map(|k| e[k].as_str())
            .or(e["metadata"]["creationTimestamp"].as_str());
        if let Some(t) = first.and_then(|t| t.parse::<jiff::Timestamp>().ok()) {
            out["eventTime"] = json!(t.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string());
        }
    }
    let info = to.info();
    out["apiVersion"] = json!(info.api_version());
    out["kind"] = json!(info.kind);
    out
}

/// The objects served at `resource` as of `rv` that `keep` accepts, sorted
/// by namespace and name (an object stored in both versions shows once, as
/// its own). The latest state clones only what is kept.
pub(super) fn list_at(
    st: &State,
    resource: Resource,
    namespace: Option<&str>,
    rv: u64,
    keep: &dyn Fn(&Value) -> bool,
) -> Result<Vec<Value>, StoreError> {
    let of = |r: Resource| -> Result<Vec<Value>, StoreError> {
        if rv >= st.resource_version() {
            let objects = st.list(r, namespace).into_iter();
            Ok(objects.filter(|o| keep(o)).cloned().collect())
        } else {
            let mut objects = st.list_at(r, namespace, rv)?;
            objects.retain(|o| keep(o));
            Ok(objects)
        }
    };
    let own = of(resource)?;
    let Some(mirror) = mirror_of(resource) else {
        return Ok(own);
    };
    let mut all: std::collections::BTreeMap<(String, String), Value> = st
        .list_at(mirror, namespace, rv)?
        .iter()
        .map(|o| convert(resource, o))
        .filter(|o| keep(o))
        .map(|o| ((namespace_of(&o).to_owned(), name_of(&o).to_owned()), o))
        .collect();
    for o in own {
        all.insert((namespace_of(&o).to_owned(), name_of(&o).to_owned()), o);
    }
    Ok(all.into_values().collect())
}

pub(super) fn get(st: &State, resource: Resource, namespace: &str, name: &str) -> Option<Value> {
    st.get(resource, namespace, name).cloned().or_else(|| {
        let mirror = mirror_of(resource)?;
        st.get(mirror, namespace, name)
            .map(|o| convert(resource, o))
    })
}

/// Changes to what `resource` serves after `rv`, in order.
pub(super) fn changes_since(
    st: &State,
    resource: Resource,
    rv: u64,
) -> Result<Vec<Change>, StoreError> {
    let mut changes = st.changes_since(resource, rv)?;
    if let Some(mirror) = mirror_of(resource) {
        changes.extend(st.changes_since(mirror, rv)?.into_iter().map(|c| Change {
            resource,
            object: Arc::new(convert(resource, &c.object)),
            prev: c.prev.map(|p| Arc::new(convert(resource, &p))),
            ..c
        }));
        changes.sort_by_key(|c| c.rv);
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_events_convert_to_events_v1_and_back() {
        let core = json!({
            "metadata": {"name": "p.1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "p"},
            "reason": "Scheduled", "message": "assigned", "type": "Normal",
            "source": {"component": "default-scheduler"}, "count": 1,
            "firstTimestamp": "2024-01-01T00:00:00Z", "reportingComponent": "default-scheduler",
        });
        let v1 = convert(Resource::Events, &core);
        assert_eq!(v1["apiVersion"], "events.k8s.io/v1");
        assert_eq!(v1["regarding"]["name"], "p");
        assert_eq!(v1["note"], "assigned");
        assert_eq!(v1["deprecatedCount"], 1);
        assert_eq!(v1["reportingController"], "default-scheduler");
        assert_eq!(v1["eventTime"], "2024-01-01T00:00:00.000000Z");
        let back = convert(Resource::CoreEvents, &v1);
        assert_eq!(back["apiVersion"], "v1");
        for k in [
            "involvedObject",
            "message",
            "source",
            "count",
            "firstTimestamp",
        ] {
            assert_eq!(back[k], core[k], "{k}");
        }
    }
}
