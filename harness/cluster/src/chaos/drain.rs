//! `kubectl drain` semantics: cordon, evict every pod on the node through
//! the Eviction API (so PodDisruptionBudgets are honoured), retry evictions
//! the API refuses with 429, then wait until the evicted pods are gone.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::Client;
use serde_json::json;
use tokio::time::Instant;

use super::{api_code, cordon, ChaosError};
use zdt_core::events::{EventSink, Source};

/// How to drain.
#[derive(Debug, Clone)]
pub struct DrainOptions {
    /// Give up (and fail the step) after this long; the node stays cordoned.
    pub timeout: Duration,
    /// Override each pod's terminationGracePeriodSeconds (kubectl's
    /// `--grace-period`); `None` keeps the pod's own.
    pub grace_period: Option<Duration>,
    /// Wait between retries of a refused eviction (kubectl waits 5 s).
    pub retry_interval: Duration,
    /// Skip pods owned by a DaemonSet (`--ignore-daemonsets`).
    pub ignore_daemonsets: bool,
}

impl Default for DrainOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(300),
            grace_period: None,
            retry_interval: Duration::from_secs(5),
            ignore_daemonsets: true,
        }
    }
}

/// What a successful drain did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainOutcome {
    /// `namespace/name` of every pod evicted.
    pub evicted: Vec<String>,
    /// How many evictions the API refused (429) before they went through.
    pub refusals: u32,
}

/// Drain `node`: cordon, evict, wait for the pods to be gone.
pub async fn drain(
    client: &Client,
    events: &EventSink,
    node: &str,
    opts: &DrainOptions,
) -> Result<DrainOutcome, ChaosError> {
    let deadline = Instant::now() + opts.timeout;
    cordon(client, events, node).await?;

    let pods: Api<Pod> = Api::all(client.clone());
    let on_node = pods
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await
        .map_err(|e| ChaosError::api(format!("list pods on node {node}"), e))?;
    let targets: Vec<Pod> = on_node
        .items
        .into_iter()
        .filter(|p| !skipped_by_drain(p, opts.ignore_daemonsets))
        .collect();

    let mut outcome = DrainOutcome::default();
    // pod key -> (uid, last refusal message)
    let mut pending: BTreeMap<String, (String, Option<String>)> = targets
        .iter()
        .map(|p| {
            (
                pod_key(p),
                (p.metadata.uid.clone().unwrap_or_default(), None),
            )
        })
        .collect();
    let mut to_evict: Vec<String> = pending.keys().cloned().collect();

    // Evict, retrying refusals until the deadline.
    while !to_evict.is_empty() {
        let mut refused = Vec::new();
        for key in to_evict.drain(..) {
            let (ns, name) = key.split_once('/').expect("pod keys are ns/name");
            match evict(client, ns, name, opts.grace_period).await {
                Ok(()) => {
                    events.emit(
                        Source::Chaos,
                        "Evicted",
                        format!("pod/{name}"),
                        Some(node),
                        format!("evicted pod {key} from {node}"),
                    );
                    outcome.evicted.push(key);
                }
                Err(e) if api_code(&e) == Some(404) => {
                    // Already gone: nothing to wait for.
                    pending.remove(&key);
                }
                Err(e) if api_code(&e) == Some(429) => {
                    let msg = refusal_message(&e);
                    events.emit(
                        Source::Chaos,
                        "EvictionRefused",
                        format!("pod/{name}"),
                        Some(node),
                        format!("eviction of {key} refused: {msg}"),
                    );
                    outcome.refusals += 1;
                    if let Some(entry) = pending.get_mut(&key) {
                        entry.1 = Some(msg);
                    }
                    refused.push(key);
                }
                Err(e) => return Err(ChaosError::api(format!("evict pod {key}"), e)),
            }
        }
        if refused.is_empty() {
            break;
        }
        if Instant::now() + opts.retry_interval > deadline {
            return Err(timeout_error(node, opts.timeout, &pending, &refused));
        }
        tokio::time::sleep(opts.retry_interval).await;
        to_evict = refused;
    }

    // Wait until every evicted pod (by uid) is gone.
    let poll = Duration::from_millis(200);
    loop {
        let mut still = Vec::new();
        for (key, (uid, _)) in &pending {
            let (ns, name) = key.split_once('/').expect("pod keys are ns/name");
            let api: Api<Pod> = Api::namespaced(client.clone(), ns);
            match api.get_opt(name).await {
                Ok(Some(p)) if p.metadata.uid.as_deref() == Some(uid.as_str()) => {
                    still.push(key.clone())
                }
                Ok(_) => {}
                Err(e) => return Err(ChaosError::api(format!("get pod {key}"), e)),
            }
        }
        if still.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            return Err(timeout_error(node, opts.timeout, &pending, &still));
        }
        tokio::time::sleep(poll).await;
    }
    events.emit(
        Source::Chaos,
        "Drained",
        format!("node/{node}"),
        Some(node),
        format!(
            "node {node} drained: {} pods evicted, {} refusals",
            outcome.evicted.len(),
            outcome.refusals
        ),
    );
    Ok(outcome)
}

/// POST a policy/v1 Eviction. Written by hand rather than with
/// `Api::evict` so `deleteOptions` is spelled as the API expects.
async fn evict(
    client: &Client,
    namespace: &str,
    name: &str,
    grace: Option<Duration>,
) -> Result<(), kube::Error> {
    let mut body = json!({
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": { "name": name, "namespace": namespace },
    });
    if let Some(g) = grace {
        body["deleteOptions"] = json!({ "gracePeriodSeconds": g.as_secs() });
    }
    let request = http::Request::post(format!(
        "/api/v1/namespaces/{namespace}/pods/{name}/eviction"
    ))
    .header(http::header::CONTENT_TYPE, "application/json")
    .body(serde_json::to_vec(&body).expect("json serialises"))
    .map_err(kube::Error::HttpError)?;
    client
        .request::<serde_json::Value>(request)
        .await
        .map(|_| ())
}

fn refusal_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if !s.message.is_empty() => s.message.clone(),
        other => other.to_string(),
    }
}

fn timeout_error(
    node: &str,
    timeout: Duration,
    pending: &BTreeMap<String, (String, Option<String>)>,
    left: &[String],
) -> ChaosError {
    let blocked = left
        .iter()
        .map(|k| match pending.get(k).and_then(|(_, m)| m.as_deref()) {
            Some(why) => format!("pod {k} ({why})"),
            None => format!("pod {k} (still terminating)"),
        })
        .collect::<Vec<_>>()
        .join("; ");
    ChaosError::DrainTimeout {
        node: node.to_owned(),
        timeout,
        blocked,
    }
}

fn pod_key(p: &Pod) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or("default"),
        p.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Pods `kubectl drain --ignore-daemonsets` leaves alone: mirror pods
/// (the kubelet owns them) and DaemonSet pods (they would be recreated on
/// the same node anyway).
fn skipped_by_drain(p: &Pod, ignore_daemonsets: bool) -> bool {
    is_mirror_pod(p) || (ignore_daemonsets && is_daemonset_pod(p))
}

fn is_daemonset_pod(p: &Pod) -> bool {
    p.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "DaemonSet")
}

fn is_mirror_pod(p: &Pod) -> bool {
    p.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"))
}
