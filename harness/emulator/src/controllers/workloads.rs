//! Deployment → ReplicaSet → Pod, as kube-controller-manager does it:
//! ReplicaSets per pod template (named by `pod-template-hash`), rolling
//! updates bounded by maxSurge/maxUnavailable (percentages resolved like
//! upstream: surge rounds up, unavailable down), Recreate, minReadySeconds
//! for availability, the status fields `kubectl rollout status` reads,
//! `progressDeadlineSeconds` (Progressing=False, ProgressDeadlineExceeded)
//! and `revisionHistoryLimit` (old, scaled-down ReplicaSets deleted). A
//! template equal to an old ReplicaSet's (`kubectl rollout undo`) scales
//! that ReplicaSet back up instead of creating one.

use std::time::Duration;

use serde_json::{json, Value};

use super::{
    condition, controller_uid, int_or_percent, owner_ref, pod_active, pod_ready, seconds_since,
    uid, Ctx,
};
use crate::store::{meta_str, now_rfc3339, DeleteOptions, Resource, State};
use zdt_core::events::Source;

pub const HASH_LABEL: &str = "pod-template-hash";
const REVISION: &str = "deployment.kubernetes.io/revision";
const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// FNV-1a of the template's canonical JSON, rendered like
/// `rand.SafeEncodeString` (so hashes look like `7d9f8b6c5`).
pub fn template_hash(template: &Value, collision_count: i64) -> String {
    let mut t = template.clone();
    if let Some(l) = t["metadata"]["labels"].as_object_mut() {
        l.remove(HASH_LABEL);
    }
    let text = serde_json::to_string(&t).unwrap_or_default();
    let mut h: u32 = 0x811c_9dc5;
    for b in text.bytes().chain(collision_count.to_string().bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h.to_string()
        .bytes()
        .map(|b| SAFE[usize::from(b) % SAFE.len()] as char)
        .collect()
}

fn without_hash(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(l) = t["metadata"]["labels"].as_object_mut() {
        l.remove(HASH_LABEL);
        if l.is_empty() {
            t["metadata"].as_object_mut().map(|m| m.remove("labels"));
        }
    }
    if t["metadata"].as_object().is_some_and(|m| m.is_empty()) {
        t.as_object_mut().map(|m| m.remove("metadata"));
    }
    t
}

/// A template as upstream compares them (`EqualIgnoreHash` on typed
/// objects): without the hash label, and with null and empty fields, which
/// a typed object cannot tell from absent ones, dropped. `kubectl rollout
/// undo` sends the old template back with `creationTimestamp: null`.
fn comparable(template: &Value) -> Value {
    fn prune(v: &Value) -> Option<Value> {
        match v {
            Value::Null => None,
            Value::Object(m) => {
                let m: serde_json::Map<String, Value> = m
                    .iter()
                    .filter_map(|(k, v)| prune(v).map(|v| (k.clone(), v)))
                    .collect();
                (!m.is_empty()).then_some(Value::Object(m))
            }
            Value::Array(a) if a.is_empty() => None,
            Value::Array(a) => Some(Value::Array(
                a.iter().map(|v| prune(v).unwrap_or(json!({}))).collect(),
            )),
            other => Some(other.clone()),
        }
    }
    prune(&without_hash(template)).unwrap_or(json!({}))
}

fn replicas(o: &Value) -> i64 {
    o["spec"]["replicas"].as_i64().unwrap_or(1)
}

fn status_i(o: &Value, f: &str) -> i64 {
    o["status"][f].as_i64().unwrap_or(0)
}

fn revision(rs: &Value) -> i64 {
    rs["metadata"]["annotations"][REVISION]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn set_replicas(st: &mut State, rs: &mut Value, n: i64, events: &mut Vec<(String, String)>) {
    if replicas(rs) == n {
        return;
    }
    let name = meta_str(rs, "name").unwrap_or("").to_owned();
    let from = replicas(rs);
    rs["spec"]["replicas"] = json!(n);
    if let Ok(u) = st.update(Resource::ReplicaSets, rs.clone()) {
        *rs = u;
        let verb = if n > from { "up" } else { "down" };
        let message = format!("Scaled {verb} replica set {name} from {from} to {n}");
        if let Some(d) = super::Involved::owner_of(rs) {
            super::record_event(
                st,
                d,
                "ScalingReplicaSet",
                &message,
                "deployment-controller",
            );
        }
        events.push((format!("replicaset/{name}"), message));
    }
}

fn set_condition(conds: &mut Vec<Value>, ty: &str, status: &str, reason: &str, message: String) {
    let now = now_rfc3339();
    match conds.iter_mut().find(|c| c["type"] == ty) {
        Some(c) => {
            if c["status"] != status {
                c["lastTransitionTime"] = json!(now);
            }
            if c["status"] != status || c["reason"] != reason {
                c["lastUpdateTime"] = json!(now);
            }
            c["status"] = json!(status);
            c["reason"] = json!(reason);
            c["message"] = json!(message);
        }
        None => conds.push(
            json!({"type": ty, "status": status, "reason": reason, "message": message,
                                  "lastUpdateTime": now, "lastTransitionTime": now}),
        ),
    }
}

pub fn reconcile_deployments(ctx: &Ctx) -> Option<Duration> {
    let mut events = Vec::new();
    let mut next: Option<f64> = None;
    ctx.store.write(|st| {
        let deployments: Vec<Value> = st
            .list(Resource::Deployments, None)
            .into_iter()
            .cloned()
            .collect();
        for d in deployments {
            if d["metadata"].get("deletionTimestamp").is_some() {
                continue;
            }
            if let Some(left) = sync_deployment(st, &d, &mut events) {
                next = Some(next.map_or(left, |n: f64| n.min(left)));
            }
        }
    });
    for (object, message) in events {
        ctx.events
            .emit(Source::Pod, "ScalingReplicaSet", object, None, message);
    }
    // Wake when the next rollout's progress deadline passes.
    next.map(|s| Duration::from_secs_f64(s.max(0.0) + 0.05))
}

/// Upstream's `DeploymentProgressing`: more updated, ready or available
/// replicas, or fewer old ones, than the status last said.
fn progressed(old: &Value, new: &Value) -> bool {
    let f = |s: &Value, k: &str| s[k].as_i64().unwrap_or(0);
    let old_old = f(old, "replicas") - f(old, "updatedReplicas");
    let new_old = f(new, "replicas") - f(new, "updatedReplicas");
    f(new, "updatedReplicas") > f(old, "updatedReplicas")
        || new_old < old_old
        || f(new, "readyReplicas") > f(old, "readyReplicas")
        || f(new, "availableReplicas") > f(old, "availableReplicas")
}

/// Delete the oldest scaled-down ReplicaSets beyond `revisionHistoryLimit`.
fn clean_up_history(st: &mut State, d: &Value, old: &[Value]) {
    let limit = d["spec"]["revisionHistoryLimit"]
        .as_i64()
        .unwrap_or(10)
        .max(0) as usize;
    let mut idle: Vec<&Value> = old
        .iter()
        .filter(|rs| {
            replicas(rs) == 0
                && status_i(rs, "replicas") == 0
                && rs["metadata"].get("deletionTimestamp").is_none()
        })
        .collect();
    if idle.len() <= limit {
        return;
    }
    idle.sort_by_key(|rs| revision(rs));
    let doomed = idle.len() - limit;
    for rs in idle.into_iter().take(doomed) {
        let ns = meta_str(rs, "namespace").unwrap_or("default");
        let name = meta_str(rs, "name").unwrap_or("");
        let _ = st.delete(Resource::ReplicaSets, ns, name, &DeleteOptions::default());
    }
}

/// Sync one Deployment; returns the seconds until its rollout's progress
/// deadline, if one is running.
fn sync_deployment(st: &mut State, d: &Value, events: &mut Vec<(String, String)>) -> Option<f64> {
    let ns = meta_str(d, "namespace").unwrap_or("default").to_owned();
    let dname = meta_str(d, "name").unwrap_or("").to_owned();
    let duid = uid(d).to_owned();
    let want = replicas(d);
    let template = &d["spec"]["template"];
    let mut rss: Vec<Value> = st
        .list(Resource::ReplicaSets, Some(&ns))
        .into_iter()
        .filter(|rs| controller_uid(rs) == Some(duid.as_str()))
        .cloned()
        .collect();
    rss.sort_by_key(|rs| {
        (
            rs["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
            meta_str(rs, "name").unwrap_or("").to_owned(),
        )
    });
    let new_idx = rss
        .iter()
        .position(|rs| comparable(&rs["spec"]["template"]) == comparable(template));
    let strategy = d["spec"]["strategy"]["type"]
        .as_str()
        .unwrap_or("RollingUpdate");
    let ru = &d["spec"]["strategy"]["rollingUpdate"];
    let surge = int_or_percent(ru.get("maxSurge").unwrap_or(&json!("25%")), want, true);
    let mut unavailable = int_or_percent(
        ru.get("maxUnavailable").unwrap_or(&json!("25%")),
        want,
        false,
    );
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    if strategy == "Recreate" {
        unavailable = want;
    }
    let paused = d["spec"]["paused"] == true;
    let max_rev = rss.iter().map(revision).max().unwrap_or(0);
    // How this sync started a rollout, as Progressing's reason says it.
    let mut started: Option<(&str, &str)> = None;
    let new_idx = match new_idx {
        Some(i) => {
            if revision(&rss[i]) < max_rev && !paused {
                started = Some(("FoundNewReplicaSet", "Found new replica set"));
                // Rolling back to an older template makes it the newest revision.
                let mut rs = rss[i].clone();
                rs["metadata"]["annotations"][REVISION] = json!((max_rev + 1).to_string());
                if let Ok(u) = st.update(Resource::ReplicaSets, rs) {
                    rss[i] = u;
                }
            }
            i
        }
        None if paused => return None,
        None => {
            let collisions = d["status"]["collisionCount"].as_i64().unwrap_or(0);
            let hash = template_hash(template, collisions);
            let mut t = template.clone();
            t["metadata"]["labels"][HASH_LABEL] = json!(hash);
            let mut selector = d["spec"]["selector"].clone();
            selector["matchLabels"][HASH_LABEL] = json!(hash);
            let mut labels = t["metadata"]["labels"].clone();
            labels[HASH_LABEL] = json!(hash);
            let current: i64 = rss.iter().map(replicas).sum();
            let initial = if strategy == "Recreate" {
                0
            } else if rss.is_empty() {
                want
            } else {
                (want + surge - current).clamp(0, want)
            };
            let rs = json!({
                "metadata": {
                    "name": format!("{dname}-{hash}"),
                    "namespace": ns,
                    "labels": labels,
                    "annotations": {
                        REVISION: (max_rev + 1).to_string(),
                        "deployment.kubernetes.io/desired-replicas": want.to_string(),
                        "deployment.kubernetes.io/max-replicas": (want + surge).to_string(),
                    },
                    "ownerReferences": [owner_ref(d)],
                },
                "spec": {
                    "replicas": initial,
                    "minReadySeconds": d["spec"]["minReadySeconds"].as_i64().unwrap_or(0),
                    "selector": selector,
                    "template": t,
                },
            });
            match st.create(Resource::ReplicaSets, rs) {
                Ok(created) => {
                    let message = format!(
                        "Scaled up replica set {} from 0 to {initial}",
                        meta_str(&created, "name").unwrap_or("")
                    );
                    super::record_event(
                        st,
                        super::Involved::of(d),
                        "ScalingReplicaSet",
                        &message,
                        "deployment-controller",
                    );
                    events.push((
                        format!("replicaset/{}", meta_str(&created, "name").unwrap_or("")),
                        message,
                    ));
                    rss.push(created);
                    started = Some(("NewReplicaSetCreated", "Created new replica set"));
                    rss.len() - 1
                }
                Err(_) => return None,
            }
        }
    };
    // minReadySeconds follows the Deployment.
    let min_ready = d["spec"]["minReadySeconds"].as_i64().unwrap_or(0);
    for rs in rss.iter_mut() {
        if rs["spec"]["minReadySeconds"].as_i64().unwrap_or(0) != min_ready {
            rs["spec"]["minReadySeconds"] = json!(min_ready);
            if let Ok(u) = st.update(Resource::ReplicaSets, rs.clone()) {
                *rs = u;
            }
        }
    }
    let mut new_rs = rss[new_idx].clone();
    let mut old: Vec<Value> = rss
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != new_idx)
        .map(|(_, r)| r.clone())
        .collect();
    if !paused {
        if strategy == "Recreate" {
            let old_running = old.iter().any(|rs| replicas(rs) > 0)
                || st.list(Resource::Pods, Some(&ns)).iter().any(|p| {
                    p["status"]["phase"] != "Succeeded"
                        && p["status"]["phase"] != "Failed"
                        && controller_uid(p).is_some_and(|u| old.iter().any(|rs| uid(rs) == u))
                });
            for rs in old.iter_mut() {
                set_replicas(st, rs, 0, events);
            }
            if !old_running {
                set_replicas(st, &mut new_rs, want, events);
            }
        } else if old.iter().all(|rs| replicas(rs) == 0) {
            set_replicas(st, &mut new_rs, want, events);
        } else {
            rolling(st, want, surge, unavailable, &mut new_rs, &mut old, events);
        }
    }
    // Status.
    let all: Vec<&Value> = std::iter::once(&new_rs).chain(old.iter()).collect();
    let sum = |f: &str| all.iter().map(|rs| status_i(rs, f)).sum::<i64>();
    let available = sum("availableReplicas");
    let mut status = d["status"].clone();
    if !status.is_object() {
        status = json!({});
    }
    status["observedGeneration"] = d["metadata"]["generation"].clone();
    status["replicas"] = json!(sum("replicas"));
    status["updatedReplicas"] = json!(status_i(&new_rs, "replicas"));
    status["readyReplicas"] = json!(sum("readyReplicas"));
    status["availableReplicas"] = json!(available);
    status["unavailableReplicas"] = json!((want - available).max(0));
    let mut conds = status["conditions"].as_array().cloned().unwrap_or_default();
    if available >= want - unavailable {
        set_condition(
            &mut conds,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
        );
    } else {
        set_condition(
            &mut conds,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
        );
    }
    let rs_name = meta_str(&new_rs, "name").unwrap_or("").to_owned();
    let complete = status_i(&new_rs, "replicas") == want
        && status_i(&new_rs, "availableReplicas") == want
        && sum("replicas") == want;
    let deadline = d["spec"]["progressDeadlineSeconds"].as_i64();
    let since_progress = conds
        .iter()
        .find(|c| c["type"] == "Progressing")
        .and_then(|c| seconds_since(c["lastUpdateTime"].as_str()));
    let reason = conds
        .iter()
        .find(|c| c["type"] == "Progressing")
        .map(|c| c["reason"].as_str().unwrap_or("").to_owned());
    let timed_out = reason.as_deref() == Some("ProgressDeadlineExceeded");
    // A rollout (or scale) starting from a complete one starts the clock.
    let starting = reason.as_deref() == Some("NewReplicaSetAvailable");
    let mut until_deadline = None;
    if complete {
        set_condition(
            &mut conds,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
        );
    } else if started.is_some()
        || starting
        || progressed(&d["status"], &status)
        || since_progress.is_none()
    {
        let (reason, message) = match started {
            Some((reason, what)) => (reason, format!("{what} \"{rs_name}\"")),
            None => (
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{rs_name}\" is progressing."),
            ),
        };
        set_condition(&mut conds, "Progressing", "True", reason, message);
        // Progress moves the deadline on.
        if let Some(c) = conds.iter_mut().find(|c| c["type"] == "Progressing") {
            c["lastUpdateTime"] = json!(now_rfc3339());
        }
        until_deadline = deadline.map(|s| s as f64);
    } else if let (Some(limit), Some(since)) = (deadline, since_progress) {
        if timed_out || since >= limit as f64 {
            set_condition(
                &mut conds,
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
            );
        } else {
            until_deadline = Some(limit as f64 - since);
        }
    }
    if paused {
        until_deadline = None;
    }
    if complete {
        clean_up_history(st, d, &old);
    }
    // Available first, Progressing second, like kubectl shows them.
    conds.sort_by_key(|c| c["type"] != "Available");
    status["conditions"] = json!(conds);
    if let Some(cur) = st.get(Resource::Deployments, &ns, &dname).cloned() {
        let mut next = cur.clone();
        next["status"] = status;
        let rev = revision(&new_rs).to_string();
        if next["metadata"]["annotations"][REVISION] != rev.as_str() {
            if !next["metadata"]["annotations"].is_object() {
                next["metadata"]["annotations"] = json!({});
            }
            next["metadata"]["annotations"][REVISION] = json!(rev);
        }
        if next != cur {
            let _ = st.update(Resource::Deployments, next);
        }
    }
    until_deadline
}

/// One step of a rolling update: scale the new ReplicaSet up within
/// maxSurge; if it did not grow, scale old ones down within maxUnavailable
/// (first their unhealthy replicas, then available ones, oldest first).
fn rolling(
    st: &mut State,
    want: i64,
    surge: i64,
    unavailable: i64,
    new_rs: &mut Value,
    old: &mut [Value],
    events: &mut Vec<(String, String)>,
) {
    let total: i64 = replicas(new_rs) + old.iter().map(replicas).sum::<i64>();
    let max_total = want + surge;
    if replicas(new_rs) < want && total < max_total {
        let up = (max_total - total).min(want - replicas(new_rs));
        let n = replicas(new_rs) + up;
        set_replicas(st, new_rs, n, events);
        return;
    }
    if replicas(new_rs) > want {
        set_replicas(st, new_rs, want, events);
        return;
    }
    let min_available = want - unavailable;
    let new_unavailable = replicas(new_rs) - status_i(new_rs, "availableReplicas");
    let all_pods: i64 = replicas(new_rs) + old.iter().map(replicas).sum::<i64>();
    let max_scaled_down = all_pods - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return;
    }
    // Unhealthy old replicas first: removing them costs no availability.
    let mut cleaned = 0;
    for rs in old.iter_mut() {
        if cleaned >= max_scaled_down {
            break;
        }
        let unhealthy = replicas(rs) - status_i(rs, "availableReplicas");
        if unhealthy <= 0 {
            continue;
        }
        let down = unhealthy.min(max_scaled_down - cleaned);
        let n = replicas(rs) - down;
        set_replicas(st, rs, n, events);
        cleaned += down;
    }
    let available: i64 = status_i(new_rs, "availableReplicas")
        + old
            .iter()
            .map(|rs| status_i(rs, "availableReplicas").min(replicas(rs)))
            .sum::<i64>();
    if available <= min_available {
        return;
    }
    let mut budget = (available - min_available).min(max_scaled_down - cleaned);
    for rs in old.iter_mut() {
        if budget <= 0 {
            break;
        }
        if replicas(rs) == 0 {
            continue;
        }
        let down = replicas(rs).min(budget);
        let n = replicas(rs) - down;
        set_replicas(st, rs, n, events);
        budget -= down;
    }
}

/// Seconds the pod has been Ready, if it is.
fn ready_for(pod: &Value) -> Option<f64> {
    if !pod_ready(pod) {
        return None;
    }
    Some(
        seconds_since(condition(pod, "Ready").and_then(|c| c["lastTransitionTime"].as_str()))
            .unwrap_or(0.0),
    )
}

/// Which pods to delete first when scaling down (upstream's ranking:
/// unscheduled, pending, not ready, ready for less time, newer).
fn deletion_rank(pod: &Value) -> (u8, u8, u8, i64, std::cmp::Reverse<String>) {
    let scheduled = pod["spec"]["nodeName"]
        .as_str()
        .is_some_and(|n| !n.is_empty());
    let phase = match pod["status"]["phase"].as_str() {
        Some("Pending") => 0,
        Some("Running") => 2,
        _ => 1,
    };
    let ready = pod_ready(pod);
    let ready_ms = ready_for(pod).map(|s| (s * 1000.0) as i64).unwrap_or(0);
    (
        u8::from(scheduled),
        phase,
        u8::from(ready),
        ready_ms,
        std::cmp::Reverse(
            pod["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap_or("")
                .to_owned()
                + meta_str(pod, "name").unwrap_or(""),
        ),
    )
}

pub fn reconcile_replicasets(ctx: &Ctx) -> Option<Duration> {
    let mut next: Option<f64> = None;
    let mut events = Vec::new();
    ctx.store.write(|st| {
        let rss: Vec<Value> = st.list(Resource::ReplicaSets, None).into_iter().cloned().collect();
        for rs in rss {
            if rs["metadata"].get("deletionTimestamp").is_some() {
                continue;
            }
            let ns = meta_str(&rs, "namespace").unwrap_or("default").to_owned();
            let rs_uid = uid(&rs).to_owned();
            let rs_name = meta_str(&rs, "name").unwrap_or("").to_owned();
            let pods: Vec<Value> = st
                .list(Resource::Pods, Some(&ns))
                .into_iter()
                .filter(|p| controller_uid(p) == Some(rs_uid.as_str()))
                .cloned()
                .collect();
            let mut active: Vec<Value> = pods.iter().filter(|p| pod_active(p)).cloned().collect();
            let want = replicas(&rs);
            let diff = want - active.len() as i64;
            if diff > 0 {
                let t = &rs["spec"]["template"];
                for _ in 0..diff {
                    let pod = json!({
                        "metadata": {
                            "generateName": format!("{rs_name}-"),
                            "namespace": ns,
                            "labels": t["metadata"]["labels"],
                            "annotations": t["metadata"].get("annotations").cloned().unwrap_or(json!({})),
                            "ownerReferences": [owner_ref(&rs)],
                        },
                        "spec": t["spec"],
                    });
                    let mut pod = pod;
                    if pod["metadata"]["annotations"].as_object().is_some_and(|a| a.is_empty()) {
                        pod["metadata"].as_object_mut().map(|m| m.remove("annotations"));
                    }
                    if !pod["status"].is_object() {
                        pod["status"] = json!({"phase": "Pending", "qosClass": crate::apiserver::admission::qos_class(&t["spec"])});
                    }
                    if let Ok(p) = st.create(Resource::Pods, pod) {
                        let message = format!("Created pod: {}", meta_str(&p, "name").unwrap_or(""));
                        super::record_event(st, super::Involved::of(&rs), "SuccessfulCreate", &message, "replicaset-controller");
                        events.push((
                            format!("pod/{}", meta_str(&p, "name").unwrap_or("")),
                            format!("Created pod: {}", meta_str(&p, "name").unwrap_or("")),
                        ));
                        active.push(p);
                    }
                }
            } else if diff < 0 {
                active.sort_by_key(deletion_rank);
                let doomed: Vec<Value> = active.drain(..(-diff) as usize).collect();
                for p in doomed {
                    let name = meta_str(&p, "name").unwrap_or("").to_owned();
                    if st.delete(Resource::Pods, &ns, &name, &DeleteOptions::default()).is_ok() {
                        let message = format!("Deleted pod: {name}");
                        super::record_event(st, super::Involved::of(&rs), "SuccessfulDelete", &message, "replicaset-controller");
                        events.push((format!("pod/{name}"), message));
                    }
                }
            }
            let min_ready = rs["spec"]["minReadySeconds"].as_i64().unwrap_or(0) as f64;
            let ready = active.iter().filter(|p| pod_ready(p)).count();
            let mut available = 0;
            for p in &active {
                if let Some(secs) = ready_for(p) {
                    if secs >= min_ready {
                        available += 1;
                    } else {
                        let left = min_ready - secs;
                        next = Some(next.map_or(left, |n: f64| n.min(left)));
                    }
                }
            }
            let sel = crate::apiserver::selectors::LabelSelector::from_json(&rs["spec"]["selector"]).unwrap_or_default();
            let labeled = active.iter().filter(|p| sel.matches(p)).count();
            if let Some(cur) = st.get(Resource::ReplicaSets, &ns, &rs_name).cloned() {
                let mut next_rs = cur.clone();
                next_rs["status"] = json!({
                    "replicas": active.len(),
                    "fullyLabeledReplicas": labeled,
                    "readyReplicas": ready,
                    "availableReplicas": available,
                    "observedGeneration": cur["metadata"]["generation"],
                });
                if next_rs != cur {
                    let _ = st.update(Resource::ReplicaSets, next_rs);
                }
            }
        }
    });
    for (object, message) in events {
        ctx.events.emit(
            Source::Pod,
            if message.starts_with("Created") {
                "SuccessfulCreate"
            } else {
                "SuccessfulDelete"
            },
            object,
            None,
            message,
        );
    }
    // Wake up a little after the next pod passes minReadySeconds (the
    // condition's timestamp has one-second resolution).
    next.map(|s| Duration::from_secs_f64(s.max(0.0) + 0.05))
}
