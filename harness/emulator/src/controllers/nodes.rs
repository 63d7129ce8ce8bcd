//! Node lifecycle: a node whose kubelet stopped heart-beating for the node
//! monitor grace period gets Ready=Unknown and the `unreachable` taints,
//! its pods get Ready=False; NoExecute taints evict pods that do not
//! tolerate them (after their tolerationSeconds), as the taint manager does.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{condition, seconds_since, Ctx};
use crate::store::{meta_str, now_rfc3339, DeleteOptions, Resource};
use zdt_core::events::Source;

pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

fn tolerates(tol: &Value, taint: &Value) -> bool {
    let effect_ok = tol
        .get("effect")
        .is_none_or(|e| e.is_null() || e == "" || *e == taint["effect"]);
    let key_ok = match tol["key"].as_str() {
        None | Some("") => tol["operator"] == "Exists",
        Some(k) => k == taint["key"].as_str().unwrap_or(""),
    };
    let value_ok = tol["operator"] == "Exists"
        || tol["value"].as_str().unwrap_or("") == taint["value"].as_str().unwrap_or("");
    effect_ok && key_ok && value_ok
}

/// The pod's toleration of `taint`, if any.
pub fn toleration_for<'a>(pod: &'a Value, taint: &Value) -> Option<&'a Value> {
    pod["spec"]["tolerations"]
        .as_array()?
        .iter()
        .find(|t| tolerates(t, taint))
}

pub fn reconcile(ctx: &Ctx) -> Option<Duration> {
    let grace = ctx.timings.node_monitor_grace_period.get();
    let beats = ctx.heartbeats.lock().map(|m| m.clone()).unwrap_or_default();
    let now = Instant::now();
    let mut next: Option<Duration> = None;
    let mut want = |d: Duration| next = Some(next.map_or(d, |n: Duration| n.min(d)));
    let mut transitions = Vec::new();
    ctx.store.write(|st| {
        let nodes: Vec<Value> = st
            .list(Resource::Nodes, None)
            .into_iter()
            .cloned()
            .collect();
        for node in nodes {
            let name = meta_str(&node, "name").unwrap_or("").to_owned();
            let stopped = beats.get(&name).copied().flatten();
            let lost = match stopped {
                Some(t) if now.duration_since(t) >= grace => true,
                Some(t) => {
                    want(grace - now.duration_since(t));
                    false
                }
                None => false,
            };
            let ready_now = condition(&node, "Ready").map(|c| c["status"].clone());
            let mut n = node.clone();
            if lost && ready_now != Some(json!("Unknown")) {
                let stamp = now_rfc3339();
                for c in n["status"]["conditions"]
                    .as_array_mut()
                    .into_iter()
                    .flatten()
                {
                    c["status"] = json!("Unknown");
                    c["reason"] = json!("NodeStatusUnknown");
                    c["message"] = json!("Kubelet stopped posting node status.");
                    c["lastTransitionTime"] = json!(stamp);
                }
                let taints = n["spec"]["taints"].as_array().cloned().unwrap_or_default();
                let mut taints: Vec<Value> = taints
                    .into_iter()
                    .filter(|t| t["key"] != UNREACHABLE)
                    .collect();
                taints
                    .push(json!({"key": UNREACHABLE, "effect": "NoSchedule", "timeAdded": stamp}));
                taints.push(json!({"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": stamp}));
                n["spec"]["taints"] = json!(taints);
                // MarkPodsNotReady
                let pods: Vec<Value> = st
                    .list(Resource::Pods, None)
                    .into_iter()
                    .filter(|p| p["spec"]["nodeName"] == name.as_str())
                    .cloned()
                    .collect();
                for mut p in pods {
                    let mut changed = false;
                    for c in p["status"]["conditions"]
                        .as_array_mut()
                        .into_iter()
                        .flatten()
                    {
                        if c["type"] == "Ready" && c["status"] != "False" {
                            c["status"] = json!("False");
                            c["lastTransitionTime"] = json!(stamp);
                            changed = true;
                        }
                    }
                    if changed {
                        let _ = st.update(Resource::Pods, p);
                    }
                }
            } else if !lost && stopped.is_none() && ready_now.as_ref().is_some_and(|s| s != "True")
            {
                let stamp = now_rfc3339();
                for c in n["status"]["conditions"]
                    .as_array_mut()
                    .into_iter()
                    .flatten()
                {
                    if c["type"] == "Ready" {
                        c["status"] = json!("True");
                        c["reason"] = json!("KubeletReady");
                        c["message"] = json!("kubelet is posting ready status");
                    } else {
                        c["status"] = json!("False");
                        c["reason"] = json!("KubeletHasSufficientResources");
                    }
                    c["lastTransitionTime"] = json!(stamp);
                }
                if let Some(ts) = n["spec"]["taints"].as_array_mut() {
                    ts.retain(|t| t["key"] != UNREACHABLE);
                }
            }
            if n != node {
                let _ = st.update(Resource::Nodes, n.clone());
            }
            // Taint manager: NoExecute taints evict intolerant pods.
            let no_exec: Vec<&Value> = n["spec"]["taints"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|t| t["effect"] == "NoExecute")
                .collect();
            if no_exec.is_empty() {
                continue;
            }
            let pods: Vec<Value> = st
                .list(Resource::Pods, None)
                .into_iter()
                .filter(|p| {
                    p["spec"]["nodeName"] == name.as_str()
                        && p["metadata"].get("deletionTimestamp").is_none()
                })
                .cloned()
                .collect();
            for p in pods {
                let mut evict_in: Option<f64> = None;
                for t in &no_exec {
                    let left = match toleration_for(&p, t) {
                        None => 0.0,
                        Some(tol) => match tol["tolerationSeconds"].as_i64() {
                            None => continue,
                            Some(secs) => {
                                let since = seconds_since(t["timeAdded"].as_str()).unwrap_or(0.0);
                                secs as f64 - since
                            }
                        },
                    };
                    evict_in = Some(evict_in.map_or(left, |e: f64| e.min(left)));
                }
                match evict_in {
                    Some(left) if left <= 0.0 => {
                        let ns = meta_str(&p, "namespace").unwrap_or("").to_owned();
                        let pn = meta_str(&p, "name").unwrap_or("").to_owned();
                        let _ = st.delete(Resource::Pods, &ns, &pn, &DeleteOptions::default());
                        super::record_event(
                            st,
                            super::Involved::of(&p),
                            "TaintManagerEviction",
                            "Marking for deletion Pod",
                            "taint-eviction-controller",
                        );
                        transitions.push((pn, "TaintManagerEviction"));
                    }
                    Some(left) => want(Duration::from_secs_f64(left.max(0.01))),
                    None => {}
                }
            }
        }
    });
    for (name, reason) in transitions {
        ctx.events.emit(
            Source::Pod,
            reason,
            format!("pod/{name}"),
            None,
            "Marking for deletion: the pod does not tolerate its node's NoExecute taint",
        );
    }
    next
}
