//! The Job controller (`pkg/controller/job`, as kubernetes.io's "Jobs"
//! page documents it), for what the emulator runs: NonIndexed and Indexed
//! completion modes, `parallelism`, `completions`, `backoffLimit` with the
//! controller's exponential back-off before a failed pod is replaced, and
//! the status and conditions clients wait on.
//!
//! Pods are counted exactly once through the `batch.kubernetes.io/job-tracking`
//! finalizer, as upstream does: a new pod carries it; when the pod has
//! finished (or is being deleted, which upstream counts as a failure unless
//! it succeeded) the controller adds it to `succeeded`/`failed` (and its
//! index to `completedIndexes`) and removes the finalizer in the same
//! store write, so no pod is counted twice or lost to a later deletion.
//!
//! From 1.31 on the terminal conditions wait for the pods: `SuccessCriteriaMet`
//! or `FailureTarget` first, `Complete`/`Failed` once no pod is left
//! running; before 1.31 `Complete`/`Failed` come at once. Pods of a Job
//! that failed (backoff limit, `activeDeadlineSeconds`) are deleted.
//! Not modelled: suspend, pod failure and success policies, per-index
//! backoff limits (the API refuses them, see `admission`), and
//! `ttlSecondsAfterFinished` (the TTL controller).

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use super::{owner_ref, uid, Ctx};
use crate::store::{meta_str, now_rfc3339, parse_time, DeleteOptions, Resource, State};
use zdt_core::events::Source;

/// The finalizer that makes a pod count once (upstream's constant).
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// The completion index of an Indexed Job's pod: annotation and label.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// The env variable every container of an Indexed Job's pod gets.
pub const COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";

/// Upstream's `DefaultJobPodFailureBackOff` and its cap.
const BACKOFF_BASE: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(360);

pub fn reconcile(ctx: &Ctx) -> Option<Duration> {
    let mut next: Option<Duration> = None;
    let mut events = Vec::new();
    ctx.store.write(|st| {
        let jobs: Vec<Value> = st.list(Resource::Jobs, None).into_iter().cloned().collect();
        for job in jobs {
            if job["metadata"].get("deletionTimestamp").is_some() {
                continue;
            }
            if let Some(d) = reconcile_job(ctx, st, &job, &mut events) {
                next = Some(next.map_or(d, |n| n.min(d)));
            }
        }
    });
    for (object, reason, message) in events {
        ctx.events.emit(Source::Pod, reason, object, None, message);
    }
    next
}

fn has_condition(job: &Value, ty: &str) -> bool {
    super::condition(job, ty).is_some_and(|c| c["status"] == "True")
}

fn finished(job: &Value) -> bool {
    has_condition(job, "Complete") || has_condition(job, "Failed")
}

/// A pod that ended: Succeeded, Failed, or deleted before it succeeded.
fn pod_outcome(pod: &Value) -> Option<bool> {
    match pod["status"]["phase"].as_str() {
        Some("Succeeded") => Some(true),
        Some("Failed") => Some(false),
        _ if pod["metadata"].get("deletionTimestamp").is_some() => Some(false),
        _ => None,
    }
}

fn pod_index(pod: &Value) -> Option<i64> {
    pod["metadata"]["annotations"][COMPLETION_INDEX]
        .as_str()
        .and_then(|i| i.parse().ok())
}

/// `completedIndexes` as upstream writes it: `1,3-5,7`.
pub fn format_indexes(indexes: &BTreeSet<i64>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut it = indexes.iter().copied().peekable();
    while let Some(start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&(end + 1)) {
            end = it.next().expect("peeked");
        }
        out.push(match end - start {
            0 => start.to_string(),
            1 => format!("{start},{end}"),
            _ => format!("{start}-{end}"),
        });
    }
    out.join(",")
}

/// The indexes `completedIndexes` names (bad parts are skipped).
pub fn parse_indexes(s: &str) -> BTreeSet<i64> {
    let mut out = BTreeSet::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i64>(), b.parse::<i64>()) {
                    out.extend(a..=b);
                }
            }
            None => {
                if let Ok(i) = part.parse() {
                    out.insert(i);
                }
            }
        }
    }
    out
}

fn condition(ty: &str, reason: &str, message: &str) -> Value {
    let now = now_rfc3339();
    json!({"type": ty, "status": "True", "reason": reason, "message": message,
           "lastProbeTime": now, "lastTransitionTime": now})
}

fn add_condition(status: &mut Value, c: Value) {
    if !status["conditions"].is_array() {
        status["conditions"] = json!([]);
    }
    let conds = status["conditions"].as_array_mut().expect("an array");
    if !conds.iter().any(|x| x["type"] == c["type"]) {
        conds.push(c);
    }
}

type Events = Vec<(String, String, String)>;

fn reconcile_job(ctx: &Ctx, st: &mut State, job: &Value, events: &mut Events) -> Option<Duration> {
    let ns = meta_str(job, "namespace").unwrap_or("default").to_owned();
    let name = meta_str(job, "name").unwrap_or("").to_owned();
    let job_uid = uid(job).to_owned();
    let spec = &job["spec"];
    let indexed = spec["completionMode"] == "Indexed";
    let completions = spec["completions"].as_i64();
    let parallelism = spec["parallelism"].as_i64().unwrap_or(1).max(0);
    let backoff_limit = spec["backoffLimit"].as_i64().unwrap_or(6);
    let mut status = job["status"].clone();
    if !status.is_object() {
        status = json!({});
    }
    let mut succeeded = status["succeeded"].as_i64().unwrap_or(0);
    let mut failed = status["failed"].as_i64().unwrap_or(0);
    let mut completed = parse_indexes(status["completedIndexes"].as_str().unwrap_or(""));
    let mut last_failure: Option<jiff::Timestamp> = None;

    let pods: Vec<Value> = st
        .list(Resource::Pods, Some(&ns))
        .into_iter()
        .filter(|p| super::controller_uid(p) == Some(job_uid.as_str()))
        .cloned()
        .collect();
    // Count what ended since the last pass, once.
    for pod in &pods {
        let tracked = pod["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == TRACKING_FINALIZER));
        let Some(ok) = pod_outcome(pod) else { continue };
        if !ok {
            let at = pod_finished_at(pod);
            last_failure = Some(last_failure.map_or(at, |l| l.max(at)));
        }
        if !tracked {
            continue;
        }
        if ok {
            match pod_index(pod) {
                Some(i) if indexed => {
                    if completions.is_some_and(|c| (0..c).contains(&i)) && completed.insert(i) {
                        succeeded += 1;
                    }
                }
                _ => succeeded += 1,
            }
        } else {
            failed += 1;
        }
        let mut untracked = pod.clone();
        if let Some(f) = untracked["metadata"]["finalizers"].as_array_mut() {
            f.retain(|x| x != TRACKING_FINALIZER);
        }
        let _ = st.update(Resource::Pods, untracked);
    }
    let active: Vec<&Value> = pods.iter().filter(|p| super::pod_active(p)).collect();
    let terminating = pods
        .iter()
        .filter(|p| p["metadata"].get("deletionTimestamp").is_some() && still_running(p))
        .count() as i64;
    let ready = active.iter().filter(|p| super::pod_ready(p)).count() as i64;

    if status["startTime"].is_null() {
        status["startTime"] = json!(now_rfc3339());
    }
    let wait_for_pods = ctx.version.at_least(1, 31);
    let mut next: Option<Duration> = None;
    let mut delete_active = false;
    if !finished(job) {
        let done = match (indexed, completions) {
            (true, Some(c)) => completed.len() as i64 >= c,
            (false, Some(c)) => succeeded >= c,
            // A work queue: done once one succeeded and the rest ended.
            (_, None) => succeeded > 0 && active.is_empty(),
        };
        let deadline_passed = spec["activeDeadlineSeconds"].as_i64().and_then(|limit| {
            let started = status["startTime"].as_str().and_then(parse_time)?;
            let left = limit as f64 - jiff::Timestamp::now().duration_since(started).as_secs_f64();
            if left <= 0.0 {
                Some(true)
            } else {
                let d = Duration::from_secs_f64(left);
                next = Some(next.map_or(d, |n: Duration| n.min(d)));
                None
            }
        });
        let failure = if failed > backoff_limit || has_condition(job, "FailureTarget") {
            Some(
                super::condition(job, "FailureTarget")
                    .map(|c| {
                        (
                            c["reason"].as_str().unwrap_or("").to_owned(),
                            c["message"].as_str().unwrap_or("").to_owned(),
                        )
                    })
                    .unwrap_or_else(|| {
                        (
                            "BackoffLimitExceeded".into(),
                            "Job has reached the specified backoff limit".into(),
                        )
                    }),
            )
        } else if deadline_passed.is_some() {
            Some((
                "DeadlineExceeded".into(),
                "Job was active longer than specified deadline".into(),
            ))
        } else {
            None
        };
        if let Some((reason, message)) = failure {
            delete_active = true;
            if wait_for_pods {
                add_condition(&mut status, condition("FailureTarget", &reason, &message));
            }
            if !wait_for_pods || (active.is_empty() && terminating == 0) {
                add_condition(&mut status, condition("Failed", &reason, &message));
                events.push((format!("job/{name}"), reason.clone(), message.clone()));
                super::record_event(
                    st,
                    super::Involved::of(job),
                    &reason,
                    &message,
                    "job-controller",
                );
            }
        } else if done {
            // Pods still running once the completions are reached are
            // no longer needed (a work queue's, or extra ones).
            delete_active = true;
            if wait_for_pods {
                add_condition(
                    &mut status,
                    condition(
                        "SuccessCriteriaMet",
                        "CompletionsReached",
                        "Reached expected number of succeeded pods",
                    ),
                );
            }
            if !wait_for_pods || (active.is_empty() && terminating == 0) {
                add_condition(
                    &mut status,
                    condition(
                        "Complete",
                        "CompletionsReached",
                        "Reached expected number of succeeded pods",
                    ),
                );
                status["completionTime"] = json!(now_rfc3339());
                let message = "Job completed".to_owned();
                events.push((format!("job/{name}"), "Completed".into(), message.clone()));
                super::record_event(
                    st,
                    super::Involved::of(job),
                    "Completed",
                    &message,
                    "job-controller",
                );
            }
        } else {
            // Replace failed pods only after the back-off upstream waits.
            let backoff = last_failure.and_then(|at| {
                let failures = failed.clamp(1, 32) as u32;
                let wait = BACKOFF_BASE
                    .saturating_mul(1 << (failures - 1).min(10))
                    .min(BACKOFF_MAX);
                let since = jiff::Timestamp::now().duration_since(at).as_secs_f64();
                (since < wait.as_secs_f64())
                    .then(|| Duration::from_secs_f64(wait.as_secs_f64() - since))
            });
            match backoff {
                Some(wait) => next = Some(next.map_or(wait, |n| n.min(wait))),
                None => {
                    let busy: BTreeSet<i64> = active.iter().filter_map(|p| pod_index(p)).collect();
                    let want: Vec<Option<i64>> = match (indexed, completions) {
                        (true, Some(c)) => (0..c)
                            .filter(|i| !completed.contains(i) && !busy.contains(i))
                            .take((parallelism - active.len() as i64).max(0) as usize)
                            .map(Some)
                            .collect(),
                        _ => {
                            let remaining = match completions {
                                Some(c) => (c - succeeded).max(0),
                                None if succeeded > 0 => 0,
                                None => parallelism,
                            };
                            let n = parallelism.min(remaining) - active.len() as i64;
                            vec![None; n.max(0) as usize]
                        }
                    };
                    for index in want {
                        let pod = pod_for(job, index);
                        match st.create(Resource::Pods, pod) {
                            Ok(p) => {
                                let pod_name = meta_str(&p, "name").unwrap_or("").to_owned();
                                let message = format!("Created pod: {pod_name}");
                                super::record_event(
                                    st,
                                    super::Involved::of(job),
                                    "SuccessfulCreate",
                                    &message,
                                    "job-controller",
                                );
                                events.push((
                                    format!("pod/{pod_name}"),
                                    "SuccessfulCreate".into(),
                                    message,
                                ));
                            }
                            Err(e) => events.push((
                                format!("job/{name}"),
                                "FailedCreate".into(),
                                e.to_string(),
                            )),
                        }
                    }
                }
            }
        }
    } else if has_condition(job, "Failed") {
        delete_active = true;
    }
    if delete_active {
        for p in &active {
            let pod_name = meta_str(p, "name").unwrap_or("").to_owned();
            if st
                .delete(Resource::Pods, &ns, &pod_name, &DeleteOptions::default())
                .is_ok()
            {
                let message = format!("Deleted pod: {pod_name}");
                super::record_event(
                    st,
                    super::Involved::of(job),
                    "SuccessfulDelete",
                    &message,
                    "job-controller",
                );
                events.push((
                    format!("pod/{pod_name}"),
                    "SuccessfulDelete".into(),
                    message,
                ));
            }
        }
    }

    // The counts as they are after this pass's creations and deletions.
    let now_active = st
        .list(Resource::Pods, Some(&ns))
        .into_iter()
        .filter(|p| super::controller_uid(p) == Some(job_uid.as_str()) && super::pod_active(p))
        .count() as i64;
    status["active"] = json!(now_active);
    status["ready"] = json!(ready);
    status["succeeded"] = json!(succeeded);
    status["failed"] = json!(failed);
    if ctx.version.at_least(1, 29) {
        status["terminating"] = json!(terminating);
    }
    status["uncountedTerminatedPods"] = json!({});
    if indexed {
        status["completedIndexes"] = json!(format_indexes(&completed));
    }
    for key in ["active", "succeeded", "failed"] {
        if status[key] == 0 {
            if let Some(m) = status.as_object_mut() {
                m.remove(key);
            }
        }
    }
    if let Some(cur) = st.get(Resource::Jobs, &ns, &name).cloned() {
        if cur["status"] != status {
            let mut next_job = cur;
            next_job["status"] = status;
            let _ = st.update(Resource::Jobs, next_job);
        }
    }
    next
}

/// Not in a terminal phase (a deleted one: its containers are stopping).
fn still_running(pod: &Value) -> bool {
    !matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded") | Some("Failed")
    )
}

/// When a pod's container ended, else now (a deleted pod).
fn pod_finished_at(pod: &Value) -> jiff::Timestamp {
    pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            c["state"]["terminated"]["finishedAt"]
                .as_str()
                .and_then(parse_time)
        })
        .max()
        .unwrap_or_else(jiff::Timestamp::now)
}

/// A pod of `job` from its template; with `index`, an Indexed Job's pod
/// for that completion index (name `<job>-<index>-<random>`, hostname
/// `<job>-<index>`, the index as annotation, label and env).
fn pod_for(job: &Value, index: Option<i64>) -> Value {
    let name = meta_str(job, "name").unwrap_or("");
    let t = &job["spec"]["template"];
    let mut labels = t["metadata"]["labels"].clone();
    if !labels.is_object() {
        labels = json!({});
    }
    let mut annotations = t["metadata"]["annotations"].clone();
    if !annotations.is_object() {
        annotations = json!({});
    }
    let mut spec = t["spec"].clone();
    let generate = match index {
        Some(i) => {
            labels[COMPLETION_INDEX] = json!(i.to_string());
            annotations[COMPLETION_INDEX] = json!(i.to_string());
            if spec["hostname"].is_null() {
                spec["hostname"] = json!(format!("{name}-{i}"));
            }
            for list in ["containers", "initContainers"] {
                for c in spec[list].as_array_mut().into_iter().flatten() {
                    let env = json!({"name": COMPLETION_INDEX_ENV, "valueFrom": {"fieldRef": {
                        "apiVersion": "v1",
                        "fieldPath": format!("metadata.annotations['{COMPLETION_INDEX}']"),
                    }}});
                    match c["env"].as_array_mut() {
                        Some(e) => {
                            e.retain(|v| v["name"] != COMPLETION_INDEX_ENV);
                            e.insert(0, env);
                        }
                        None => c["env"] = json!([env]),
                    }
                }
            }
            format!("{name}-{i}-")
        }
        None => format!("{name}-"),
    };
    let qos = crate::apiserver::admission::qos_class(&spec);
    let mut meta = json!({
        "generateName": generate,
        "namespace": meta_str(job, "namespace").unwrap_or("default"),
        "labels": labels,
        "ownerReferences": [owner_ref(job)],
        "finalizers": [TRACKING_FINALIZER],
    });
    if annotations.as_object().is_some_and(|a| !a.is_empty()) {
        meta["annotations"] = annotations;
    }
    json!({
        "metadata": meta,
        "spec": spec,
        "status": {"phase": "Pending", "qosClass": qos},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_indexes_round_trip_in_upstreams_format() {
        let set: BTreeSet<i64> = [0, 1, 2, 4, 6, 7].into_iter().collect();
        assert_eq!(format_indexes(&set), "0-2,4,6,7");
        assert_eq!(parse_indexes("0-2,4,6,7"), set);
        assert_eq!(format_indexes(&BTreeSet::new()), "");
        assert!(parse_indexes("").is_empty());
    }

    #[test]
    fn indexed_pods_carry_their_index_as_annotation_label_and_env() {
        let job = json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "gen", "namespace": "default", "uid": "u1"},
            "spec": {"template": {"metadata": {"labels": {"job-name": "gen"}},
                     "spec": {"containers": [{"name": "c", "env": [{"name": "A", "value": "1"}]}]}}},
        });
        let pod = pod_for(&job, Some(2));
        assert_eq!(pod["metadata"]["generateName"], "gen-2-");
        assert_eq!(pod["metadata"]["annotations"][COMPLETION_INDEX], "2");
        assert_eq!(pod["metadata"]["labels"][COMPLETION_INDEX], "2");
        assert_eq!(pod["metadata"]["labels"]["job-name"], "gen");
        assert_eq!(pod["spec"]["hostname"], "gen-2");
        let env = &pod["spec"]["containers"][0]["env"];
        assert_eq!(env[0]["name"], COMPLETION_INDEX_ENV);
        assert_eq!(env[1]["name"], "A");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["uid"], "u1");
        assert_eq!(pod["metadata"]["finalizers"][0], TRACKING_FINALIZER);
        let plain = pod_for(&job, None);
        assert_eq!(plain["metadata"]["generateName"], "gen-");
        assert!(plain["metadata"]["annotations"].is_null());
    }
}
