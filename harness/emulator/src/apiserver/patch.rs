//! The patch flavours the API accepts: JSON merge patch (RFC 7386),
//! strategic merge patch (merge patch plus merge keys for the lists
//! kubectl and zdt patch), JSON patch (RFC 6902) and server-side apply
//! (modelled as create-or-strategic-merge).

use serde_json::{Map, Value};

/// The merge key of a list field, from the Kubernetes types' `patchMergeKey`
/// tags; lists without one are replaced whole.
pub(super) fn merge_key(field: &str, sample: &Value) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims" => "name",
        "ports" => {
            if sample.get("containerPort").is_some() {
                "containerPort"
            } else {
                "port"
            }
        }
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "taints" => "key",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "addresses" => "type",
        "topologySpreadConstraints" => "topologyKey",
        "hostAliases" => "ip",
        _ => return None,
    })
}

/// A strategic merge patch: like a merge patch, but lists with a merge key
/// merge element-wise (`{"$patch": "delete", key: …}` removes one), and the
/// `$patch`, `$retainKeys`, `$setElementOrder/…` and
/// `$deleteFromPrimitiveList/…` directives are honoured.
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut clean = p.clone();
            clean.remove("$patch");
            *target = Value::Object(clean);
            return;
        }
        Some("delete") => {
            *target = Value::Null;
            return;
        }
        _ => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("object");
    if let Some(keep) = p.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        t.retain(|k, _| keep.contains(&k.as_str()) || p.contains_key(k));
    }
    for (k, v) in p {
        if k == "$patch" || k == "$retainKeys" || k.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(list), Some(remove)) =
                (t.get_mut(field).and_then(Value::as_array_mut), v.as_array())
            {
                list.retain(|x| !remove.contains(x));
            }
            continue;
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        match v {
            Value::Array(items) => {
                let key = items
                    .iter()
                    .find(|i| i.is_object())
                    .and_then(|s| merge_key(k, s));
                match (key, t.get_mut(k)) {
                    (Some(key), Some(Value::Array(existing))) => merge_list(existing, items, key),
                    _ => {
                        let cleaned: Vec<Value> = items
                            .iter()
                            .filter(|i| i.get("$patch").is_none())
                            .cloned()
                            .collect();
                        t.insert(k.clone(), Value::Array(cleaned));
                    }
                }
            }
            Value::Object(_) => {
                let slot = t.entry(k.clone()).or_insert(Value::Null);
                strategic_merge(slot, v);
                if slot.is_null() {
                    t.remove(k);
                }
            }
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
}

fn merge_list(existing: &mut Vec<Value>, items: &[Value], key: &str) {
    if items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *existing = items
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .cloned()
            .collect();
        return;
    }
    for item in items {
        let id = item.get(key);
        let pos = id.and_then(|id| existing.iter().position(|e| e.get(key) == Some(id)));
        if item.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(id) = id {
                existing.retain(|e| e.get(key) != Some(id));
            }
            continue;
        }
        match pos {
            Some(i) => strategic_merge(&mut existing[i], item),
            None => existing.push(item.clone()),
        }
    }
}

/// RFC 6902 JSON patch.
/// Why a JSON patch (RFC 6902) was not applied.
#[derive(Debug, thiserror::Error)]
pub enum JsonPatchError {
    #[error("invalid JSON patch: {0}")]
    Decode(serde_json::Error),
    #[error("the JSON patch failed: {0}")]
    Apply(json_patch::PatchError),
}

pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), JsonPatchError> {
    let p: json_patch::Patch =
        serde_json::from_value(patch.clone()).map_err(JsonPatchError::Decode)?;
    json_patch::patch(target, &p).map_err(JsonPatchError::Apply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut t = json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
        json_patch::merge(&mut t, &json!({"a": {"b": null, "d": 3}, "l": [3]}));
        assert_eq!(t, json!({"a": {"c": 2, "d": 3}, "l": [3]}));
    }

    #[test]
    fn strategic_merge_merges_containers_by_name_and_taints_by_key() {
        let mut t = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "nginx:1", "ports": [{"containerPort": 80}]},
            {"name": "side", "image": "busybox"}
        ]}}}});
        strategic_merge(
            &mut t,
            &json!({"spec": {"template": {
                "metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "now"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:2"}]}}}}),
        );
        let cs = &t["spec"]["template"]["spec"]["containers"];
        assert_eq!(cs.as_array().unwrap().len(), 2);
        assert_eq!(cs[0]["image"], "nginx:2");
        assert_eq!(cs[0]["ports"][0]["containerPort"], 80);
        assert_eq!(cs[1]["image"], "busybox");
        assert_eq!(
            t["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"],
            "now"
        );

        let mut node = json!({"spec": {"taints": [
            {"key": "a", "effect": "NoSchedule"}, {"key": "b", "effect": "NoSchedule"}]}});
        strategic_merge(
            &mut node,
            &json!({"spec": {"unschedulable": true, "taints": [
                {"key": "c", "effect": "NoExecute"}, {"$patch": "delete", "key": "a"}],
                "$setElementOrder/taints": [{"key": "b"}, {"key": "c"}]}}),
        );
        let keys: Vec<&str> = node["spec"]["taints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["key"].as_str().unwrap())
            .collect();
        assert_eq!(keys, ["b", "c"]);
        assert_eq!(node["spec"]["unschedulable"], true);
    }

    #[test]
    fn json_patch_applies_and_reports_errors() {
        let mut t = json!({"spec": {"unschedulable": false}});
        json_patch(
            &mut t,
            &json!([{"op": "replace", "path": "/spec/unschedulable", "value": true}]),
        )
        .unwrap();
        assert_eq!(t["spec"]["unschedulable"], true);
        assert!(json_patch(&mut t, &json!([{"op": "remove", "path": "/nope"}])).is_err());
        assert!(json_patch(&mut t, &json!({"op": "x"})).is_err());
    }
}
