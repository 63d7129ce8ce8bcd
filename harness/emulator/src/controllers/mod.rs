//! The control plane's controllers, run in-process on the store (not
//! through HTTP): scheduler, Deployment and ReplicaSet, Job, EndpointSlice,
//! node lifecycle (with taint-based eviction), disruption (PDB status) and
//! the garbage collector.
//!
//! They are level-triggered: after every store change (and when a timer one
//! of them asked for is due) each reconciles everything it owns. The cluster
//! is small, so a full pass costs microseconds; every write is skipped when
//! it would not change the object, so the loop settles.

pub(crate) mod disruption;
pub(crate) mod endpoints;
pub(crate) mod gc;
pub(crate) mod jobs;
pub(crate) mod nodes;
pub(crate) mod scheduler;
pub(crate) mod workloads;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::store::{meta_str, Store};
use crate::{KubeVersion, Timings};
use zdt_core::events::EventSink;

/// Heartbeat state the emulator keeps per node: `None` while the node's
/// kubelet heart-beats, `Some(t)` once it stopped at `t`.
pub type NodeHeartbeats = Arc<Mutex<HashMap<String, Option<Instant>>>>;

/// What every controller sees.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub store: Arc<Store>,
    pub version: KubeVersion,
    pub timings: Timings,
    pub heartbeats: NodeHeartbeats,
    pub events: EventSink,
}

/// Run every controller until `cancel`.
pub fn spawn(ctx: Ctx, cancel: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut changed = ctx.store.subscribe();
        loop {
            let next = reconcile_all(&ctx);
            let wait = next.unwrap_or(Duration::from_secs(5));
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = changed.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(wait) => {}
            }
        }
    })
}

/// One pass of every controller; returns when the next timed pass is due.
pub fn reconcile_all(ctx: &Ctx) -> Option<Duration> {
    let mut next: Option<Duration> = None;
    let mut want = |d: Option<Duration>| {
        if let Some(d) = d {
            next = Some(next.map_or(d, |n| n.min(d)));
        }
    };
    want(gc::reconcile(ctx));
    want(workloads::reconcile_deployments(ctx));
    want(workloads::reconcile_replicasets(ctx));
    want(jobs::reconcile(ctx));
    want(scheduler::reconcile(ctx));
    want(nodes::reconcile(ctx));
    want(endpoints::reconcile(ctx));
    want(disruption::reconcile(ctx));
    next.map(|d| d.max(Duration::from_millis(5)))
}

/// The object a core/v1 Event is about.
#[derive(Debug, Clone, Copy)]
pub struct Involved<'a> {
    pub kind: &'a str,
    pub api_version: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
}

impl<'a> Involved<'a> {
    pub fn of(obj: &'a Value) -> Self {
        Self {
            kind: obj["kind"].as_str().unwrap_or(""),
            api_version: obj["apiVersion"].as_str().unwrap_or(""),
            namespace: meta_str(obj, "namespace").unwrap_or(""),
            name: meta_str(obj, "name").unwrap_or(""),
            uid: uid(obj),
        }
    }

    /// The controller owner of `obj` (a ReplicaSet's Deployment).
    pub fn owner_of(obj: &'a Value) -> Option<Self> {
        let r = obj["metadata"]["ownerReferences"]
            .as_array()?
            .iter()
            .find(|r| r["controller"] == true)?;
        Some(Self {
            kind: r["kind"].as_str()?,
            api_version: r["apiVersion"].as_str().unwrap_or(""),
            namespace: meta_str(obj, "namespace").unwrap_or(""),
            name: r["name"].as_str()?,
            uid: r["uid"].as_str().unwrap_or(""),
        })
    }
}

/// Record a core/v1 Event (what `kubectl describe` and `kubectl get
/// events` show), as the real controllers do.
pub fn record_event(
    st: &mut crate::store::State,
    about: Involved<'_>,
    reason: &str,
    message: &str,
    component: &str,
) {
    let now = crate::store::now_rfc3339();
    let namespace = if about.namespace.is_empty() {
        "default"
    } else {
        about.namespace
    };
    let event = serde_json::json!({
        "metadata": {"generateName": format!("{}.", about.name), "namespace": namespace},
        "involvedObject": {
            "kind": about.kind, "apiVersion": about.api_version, "namespace": about.namespace,
            "name": about.name, "uid": about.uid,
        },
        "reason": reason,
        "message": message,
        "type": "Normal",
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": "",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    });
    let _ = st.create(crate::store::Resource::CoreEvents, event);
}

/// Is the pod's Ready condition True?
pub fn pod_ready(pod: &Value) -> bool {
    condition(pod, "Ready").is_some_and(|c| c["status"] == "True")
}

pub fn condition<'a>(obj: &'a Value, ty: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
}

/// Not finished and not being deleted (the controllers' "active").
pub fn pod_active(pod: &Value) -> bool {
    pod["metadata"].get("deletionTimestamp").is_none()
        && !matches!(
            pod["status"]["phase"].as_str(),
            Some("Succeeded") | Some("Failed")
        )
}

/// The uid of the object's controller owner, if any.
pub fn controller_uid(obj: &Value) -> Option<&str> {
    obj["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)
        .and_then(|r| r["uid"].as_str())
}

pub fn uid(obj: &Value) -> &str {
    meta_str(obj, "uid").unwrap_or("")
}

/// An ownerReference making `owner` the controller of a new object.
pub fn owner_ref(owner: &Value) -> Value {
    serde_json::json!({
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// An IntOrString (`2`, `"25%"`) resolved against `total`.
pub fn int_or_percent(v: &Value, total: i64, round_up: bool) -> i64 {
    match v {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(s) => match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
            Some(p) => {
                let x = p * total;
                if round_up {
                    (x + 99) / 100
                } else {
                    x / 100
                }
            }
            None => s.parse().unwrap_or(0),
        },
        _ => 0,
    }
}

/// Seconds since an RFC 3339 timestamp (negative if in the future).
pub fn seconds_since(ts: Option<&str>) -> Option<f64> {
    let t = crate::store::parse_time(ts?)?;
    let now = jiff::Timestamp::now();
    Some(now.duration_since(t).as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn int_or_percent_rounds_like_kubernetes() {
        assert_eq!(int_or_percent(&json!("25%"), 3, true), 1);
        assert_eq!(int_or_percent(&json!("25%"), 3, false), 0);
        assert_eq!(int_or_percent(&json!("50%"), 5, true), 3);
        assert_eq!(int_or_percent(&json!(2), 5, true), 2);
        assert_eq!(int_or_percent(&json!("3"), 5, true), 3);
    }
}
