//! The disruption controller: PodDisruptionBudget status — expectedPods,
//! currentHealthy, desiredHealthy, disruptionsAllowed — computed like
//! upstream (percentages and maxUnavailable against the controllers'
//! scale; an integer minAvailable against the pods that exist).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use super::{controller_uid, int_or_percent, pod_ready, uid, Ctx};
use crate::apiserver::selectors::LabelSelector;
use crate::store::{meta_str, now_rfc3339, Resource, State};

/// The desired scale of the workload controlling pods with controller uid
/// `owner` (a ReplicaSet owned by a Deployment counts as the Deployment).
fn controller_scale(st: &State, ns: &str, owner: &str) -> Option<(String, i64)> {
    let rs = st
        .list(Resource::ReplicaSets, Some(ns))
        .into_iter()
        .find(|rs| uid(rs) == owner)?;
    if let Some(d_uid) = controller_uid(rs) {
        if let Some(d) = st
            .list(Resource::Deployments, Some(ns))
            .into_iter()
            .find(|d| uid(d) == d_uid)
        {
            return Some((
                d_uid.to_owned(),
                d["spec"]["replicas"].as_i64().unwrap_or(1),
            ));
        }
    }
    Some((
        owner.to_owned(),
        rs["spec"]["replicas"].as_i64().unwrap_or(1),
    ))
}

pub fn reconcile(ctx: &Ctx) -> Option<Duration> {
    ctx.store.write(|st| {
        let pdbs: Vec<Value> = st
            .list(Resource::PodDisruptionBudgets, None)
            .into_iter()
            .cloned()
            .collect();
        for pdb in pdbs {
            let ns = meta_str(&pdb, "namespace").unwrap_or("default").to_owned();
            let sel = match pdb["spec"].get("selector") {
                Some(s) if !s.is_null() => LabelSelector::from_json(s).unwrap_or_default(),
                // policy/v1: a null selector matches no pods.
                _ => LabelSelector::parse("zdt.invalid/none-selected").unwrap_or_default(),
            };
            let pods: Vec<&Value> = st
                .list(Resource::Pods, Some(&ns))
                .into_iter()
                .filter(|p| sel.matches(p))
                .filter(|p| !matches!(p["status"]["phase"].as_str(), Some("Succeeded") | Some("Failed")))
                .collect();
            let healthy = pods
                .iter()
                .filter(|p| p["metadata"].get("deletionTimestamp").is_none() && pod_ready(p))
                .count() as i64;
            let scale = || {
                let mut scales: BTreeMap<String, i64> = BTreeMap::new();
                for p in &pods {
                    if let Some((k, n)) = controller_uid(p).and_then(|o| controller_scale(st, &ns, o)) {
                        scales.insert(k, n);
                    }
                }
                scales.values().sum::<i64>()
            };
            let spec = &pdb["spec"];
            let (expected, desired) = if let Some(mu) = spec.get("maxUnavailable").filter(|v| !v.is_null()) {
                let expected = scale();
                (expected, (expected - int_or_percent(mu, expected, true)).max(0))
            } else {
                match spec.get("minAvailable") {
                    Some(Value::Number(n)) => (pods.len() as i64, n.as_i64().unwrap_or(0)),
                    Some(v @ Value::String(_)) => {
                        let expected = scale();
                        (expected, int_or_percent(v, expected, true))
                    }
                    _ => (pods.len() as i64, 0),
                }
            };
            // Evicted pods not yet seen terminating still count against the budget.
            let mut disrupted = pdb["status"]["disruptedPods"].as_object().cloned().unwrap_or_default();
            disrupted.retain(|name, _| {
                pods.iter().any(|p| {
                    meta_str(p, "name") == Some(name) && p["metadata"].get("deletionTimestamp").is_none()
                })
            });
            let allowed = (healthy - desired - disrupted.len() as i64).max(0);
            let mut status = pdb["status"].clone();
            if !status.is_object() {
                status = json!({});
            }
            status["observedGeneration"] = pdb["metadata"]["generation"].clone();
            status["expectedPods"] = json!(expected);
            status["currentHealthy"] = json!(healthy);
            status["desiredHealthy"] = json!(desired);
            status["disruptionsAllowed"] = json!(allowed);
            if disrupted.is_empty() {
                status.as_object_mut().map(|m| m.remove("disruptedPods"));
            } else {
                status["disruptedPods"] = Value::Object(disrupted);
            }
            let (cstatus, reason, message) = if allowed > 0 {
                ("True", "SufficientPods", "")
            } else {
                ("False", "InsufficientPods", "")
            };
            let old = status["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "DisruptionAllowed"))
                .cloned();
            let ltt = match &old {
                Some(c) if c["status"] == cstatus => c["lastTransitionTime"].clone(),
                _ => json!(now_rfc3339()),
            };
            status["conditions"] = json!([{
                "type": "DisruptionAllowed", "status": cstatus, "reason": reason, "message": message,
                "observedGeneration": pdb["metadata"]["generation"], "lastTransitionTime": ltt,
            }]);
            if status != pdb["status"] {
                let mut next = pdb.clone();
                next["status"] = status;
                let _ = st.update(Resource::PodDisruptionBudgets, next);
            }
        }
    });
    None
}
