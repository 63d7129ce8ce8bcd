//! The scheduler: binds pending pods to nodes. Filters: node schedulable
//! and Ready, taints tolerated (the control plane's NoSchedule taint keeps
//! workloads off it), nodeSelector, required pod anti-affinity, and
//! topologySpreadConstraints with `DoNotSchedule`. Score: fewest matching
//! pods for `ScheduleAnyway` spread and preferred anti-affinity, then the
//! fewest pods, then the node name (deterministic).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use super::nodes::toleration_for;
use super::{condition, Ctx};
use crate::apiserver::selectors::LabelSelector;
use crate::store::{meta_str, now_rfc3339, Resource};
use zdt_core::events::Source;

fn node_label<'a>(node: &'a Value, key: &str) -> Option<&'a str> {
    node["metadata"]["labels"][key].as_str()
}

fn selector(term: &Value) -> LabelSelector {
    LabelSelector::from_json(&term["labelSelector"]).unwrap_or_default()
}

/// Pods that count for affinity/spread: bound and not finished.
fn counts(p: &Value) -> bool {
    p["spec"]["nodeName"]
        .as_str()
        .is_some_and(|n| !n.is_empty())
        && !matches!(
            p["status"]["phase"].as_str(),
            Some("Succeeded") | Some("Failed")
        )
}

fn matching_in_domain(
    pods: &[Value],
    nodes: &[Value],
    ns: &str,
    sel: &LabelSelector,
    key: &str,
    value: &str,
    skip_terminating: bool,
) -> usize {
    pods.iter()
        .filter(|p| counts(p) && meta_str(p, "namespace") == Some(ns) && sel.matches(p))
        .filter(|p| !skip_terminating || p["metadata"].get("deletionTimestamp").is_none())
        .filter(|p| {
            let n = p["spec"]["nodeName"].as_str().unwrap_or("");
            nodes
                .iter()
                .find(|node| meta_str(node, "name") == Some(n))
                .and_then(|node| node_label(node, key))
                == Some(value)
        })
        .count()
}

fn node_selector_ok(pod: &Value, node: &Value) -> bool {
    pod["spec"]["nodeSelector"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| node["metadata"]["labels"][k] == *v)
}

/// Why a node does not fit, or None when it does.
fn unfit(pod: &Value, node: &Value, nodes: &[Value], pods: &[Value]) -> Option<&'static str> {
    if node["spec"]["unschedulable"] == true {
        return Some("node(s) were unschedulable");
    }
    if condition(node, "Ready").is_none_or(|c| c["status"] != "True") {
        return Some("node(s) were not ready");
    }
    for t in node["spec"]["taints"].as_array().into_iter().flatten() {
        if (t["effect"] == "NoSchedule" || t["effect"] == "NoExecute")
            && toleration_for(pod, t).is_none()
        {
            return Some("node(s) had untolerated taint(s)");
        }
    }
    if !node_selector_ok(pod, node) {
        return Some("node(s) didn't match Pod's node affinity/selector");
    }
    let ns = meta_str(pod, "namespace").unwrap_or("default");
    let anti = &pod["spec"]["affinity"]["podAntiAffinity"]
        ["requiredDuringSchedulingIgnoredDuringExecution"];
    for term in anti.as_array().into_iter().flatten() {
        let key = term["topologyKey"]
            .as_str()
            .unwrap_or("kubernetes.io/hostname");
        let Some(value) = node_label(node, key) else {
            continue;
        };
        if matching_in_domain(pods, nodes, ns, &selector(term), key, value, false) > 0 {
            return Some("node(s) didn't match pod anti-affinity rules");
        }
    }
    for c in pod["spec"]["topologySpreadConstraints"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if c["whenUnsatisfiable"] != "DoNotSchedule" {
            continue;
        }
        let key = c["topologyKey"]
            .as_str()
            .unwrap_or("kubernetes.io/hostname");
        let Some(value) = node_label(node, key) else {
            return Some(
                "node(s) didn't match pod topology spread constraints (missing required label)",
            );
        };
        let sel = selector(c);
        // Domains: nodes with the key that pass the pod's node selector;
        // taints are ignored (nodeTaintsPolicy defaults to Ignore), as in
        // Kubernetes — a tainted control plane counts as an empty domain.
        let mut domains: BTreeMap<&str, usize> = BTreeMap::new();
        for n in nodes.iter().filter(|n| node_selector_ok(pod, n)) {
            if let Some(v) = node_label(n, key) {
                domains.entry(v).or_insert(0);
            }
        }
        let taints_honored = c["nodeTaintsPolicy"] == "Honor";
        if taints_honored {
            domains.retain(|v, _| {
                nodes.iter().any(|n| {
                    node_label(n, key) == Some(v)
                        && n["spec"]["taints"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .all(|t| {
                                !(t["effect"] == "NoSchedule" || t["effect"] == "NoExecute")
                                    || toleration_for(pod, t).is_some()
                            })
                })
            });
        }
        let doms: Vec<String> = domains.keys().map(|s| (*s).to_owned()).collect();
        for d in &doms {
            let n = matching_in_domain(pods, nodes, ns, &sel, key, d, true);
            domains.insert(d.as_str(), n);
        }
        let min = domains.values().copied().min().unwrap_or(0) as i64;
        let here = domains.get(value).copied().unwrap_or(0) as i64;
        let max_skew = c["maxSkew"].as_i64().unwrap_or(1);
        if here + 1 - min > max_skew {
            return Some("node(s) didn't match pod topology spread constraints");
        }
    }
    None
}

fn score(pod: &Value, node: &Value, nodes: &[Value], pods: &[Value]) -> (usize, usize, usize) {
    let ns = meta_str(pod, "namespace").unwrap_or("default");
    let mut spread = 0;
    for c in pod["spec"]["topologySpreadConstraints"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let key = c["topologyKey"]
            .as_str()
            .unwrap_or("kubernetes.io/hostname");
        if let Some(v) = node_label(node, key) {
            spread += matching_in_domain(pods, nodes, ns, &selector(c), key, v, true);
        }
    }
    let mut anti = 0;
    let preferred = &pod["spec"]["affinity"]["podAntiAffinity"]
        ["preferredDuringSchedulingIgnoredDuringExecution"];
    for w in preferred.as_array().into_iter().flatten() {
        let term = &w["podAffinityTerm"];
        let key = term["topologyKey"]
            .as_str()
            .unwrap_or("kubernetes.io/hostname");
        if let Some(v) = node_label(node, key) {
            anti += matching_in_domain(pods, nodes, ns, &selector(term), key, v, false);
        }
    }
    let name = meta_str(node, "name").unwrap_or("");
    let load = pods
        .iter()
        .filter(|p| counts(p) && p["spec"]["nodeName"] == name)
        .count();
    (spread, anti, load)
}

/// Lower is better: spread matches, preferred anti-affinity matches, pods
/// on the node, node name.
type Score = (usize, usize, usize, String);

pub fn reconcile(ctx: &Ctx) -> Option<Duration> {
    let mut bound = Vec::new();
    let retry = ctx.store.write(|st| {
        let nodes: Vec<Value> = st.list(Resource::Nodes, None).into_iter().cloned().collect();
        let mut pods: Vec<Value> = st.list(Resource::Pods, None).into_iter().cloned().collect();
        let mut pending: Vec<usize> = (0..pods.len())
            .filter(|&i| {
                let p = &pods[i];
                p["spec"]["nodeName"].as_str().is_none_or(str::is_empty)
                    && p["metadata"].get("deletionTimestamp").is_none()
                    && p["spec"]["schedulerName"].as_str().is_none_or(|s| s == "default-scheduler")
            })
            .collect();
        pending.sort_by(|&a, &b| {
            let key = |p: &Value| {
                (
                    p["metadata"]["creationTimestamp"].as_str().unwrap_or("").to_owned(),
                    p["metadata"]["resourceVersion"]
                        .as_str()
                        .and_then(|r| r.parse::<u64>().ok())
                        .unwrap_or(0),
                )
            };
            key(&pods[a]).cmp(&key(&pods[b]))
        });
        let mut unschedulable = false;
        for i in pending {
            let pod = pods[i].clone();
            let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
            let mut best: Option<(&Value, Score)> = None;
            for node in &nodes {
                match unfit(&pod, node, &nodes, &pods) {
                    Some(r) => *reasons.entry(r).or_insert(0) += 1,
                    None => {
                        let (a, b, c) = score(&pod, node, &nodes, &pods);
                        let s = (a, b, c, meta_str(node, "name").unwrap_or("").to_owned());
                        if best.as_ref().is_none_or(|(_, bs)| s < *bs) {
                            best = Some((node, s));
                        }
                    }
                }
            }
            let mut p = pod.clone();
            let conds = p["status"]["conditions"].as_array().cloned().unwrap_or_default();
            let mut conds: Vec<Value> = conds.into_iter().filter(|c| c["type"] != "PodScheduled").collect();
            match best {
                Some((node, _)) => {
                    let node_name = meta_str(node, "name").unwrap_or("").to_owned();
                    p["spec"]["nodeName"] = json!(node_name);
                    conds.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now_rfc3339()}));
                    p["status"]["conditions"] = json!(conds);
                    if let Ok(updated) = st.update(Resource::Pods, p) {
                        let message = format!(
                            "Successfully assigned {}/{} to {node_name}",
                            meta_str(&updated, "namespace").unwrap_or(""),
                            meta_str(&updated, "name").unwrap_or("")
                        );
                        super::record_event(st, super::Involved::of(&updated), "Scheduled", &message, "default-scheduler");
                        bound.push((
                            meta_str(&updated, "namespace").unwrap_or("").to_owned(),
                            meta_str(&updated, "name").unwrap_or("").to_owned(),
                            node_name,
                        ));
                        pods[i] = updated;
                    }
                }
                None => {
                    unschedulable = true;
                    let detail: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
                    let message = format!(
                        "0/{} nodes are available: {}. preemption: 0/{} nodes are available: {} Preemption is not helpful for scheduling.",
                        nodes.len(),
                        detail.join(", "),
                        nodes.len(),
                        nodes.len()
                    );
                    let old = pod["status"]["conditions"]
                        .as_array()
                        .and_then(|cs| cs.iter().find(|c| c["type"] == "PodScheduled"))
                        .cloned();
                    if old.as_ref().is_some_and(|c| c["message"] == message.as_str()) {
                        continue;
                    }
                    conds.push(json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message, "lastProbeTime": null, "lastTransitionTime": now_rfc3339()}));
                    p["status"]["conditions"] = json!(conds);
                    let _ = st.update(Resource::Pods, p);
                }
            }
        }
        unschedulable
    });
    for (ns, name, node) in bound {
        ctx.events.emit(
            Source::Pod,
            "Scheduled",
            format!("pod/{name}"),
            Some(&node),
            format!("Successfully assigned {ns}/{name} to {node}"),
        );
    }
    // Unschedulable pods are retried on every change, and every second in
    // case time (a toleration, a heartbeat) is what changes.
    retry.then(|| Duration::from_secs(1))
}
