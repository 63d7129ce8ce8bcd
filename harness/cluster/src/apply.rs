//! Applying the workload (manifests with mitigations and variant patches)
//! and waiting until it serves.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{pinned_kind, Scope};
use kube::Client;
use serde_json::Value;
use tokio::time::Instant;

use crate::chaos::rollout_complete;
use crate::existing::{CreatedObject, CreatedObjects};

/// A workload that could not be applied or never became ready.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(
        "manifest {index} has no {field}: every object needs apiVersion, kind and metadata.name"
    )]
    Malformed { index: usize, field: &'static str },
    #[error(
        "{kind} `{name}` ({api_version}): the cluster does not serve this kind. Check the apiVersion and kind spelling; the emulator serves only the kinds listed in docs/emulator.md (Deployment, ReplicaSet, Pod, Service, EndpointSlice, PodDisruptionBudget, ConfigMap, Namespace, Node): remove the object from the manifests or run on kind or an existing cluster"
    )]
    UnknownKind {
        kind: String,
        api_version: String,
        name: String,
    },
    #[error("{what}: {}", api_message(source))]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("the workload was not ready after {timeout:?}: {detail}")]
    NotReady { timeout: Duration, detail: String },
}

/// The server's own words for an API refusal (kube's Display of an API
/// error repeats the whole Status); other errors as they are.
fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({} {})", s.message, s.code, s.reason),
        other => other.to_string(),
    }
}

/// One object as identified in messages: `Deployment default/nginx`.
fn describe(kind: &str, ns: Option<&str>, name: &str) -> String {
    match ns {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// Server-side apply every object (create or update), namespaced objects
/// into `default_ns` unless they name their own. Namespaces are created
/// first so the rest can land in them.
pub async fn apply_objects(
    client: &Client,
    objects: &[Value],
    default_ns: &str,
) -> Result<Vec<String>, ApplyError> {
    apply_objects_recorded(client, objects, default_ns, None).await
}

/// [`apply_objects`], recording in `record` (when given) which objects zdt
/// creates and which were there before — what the existing provider's
/// teardown deletes and leaves ([`CreatedObjects`]). The record is written
/// as it goes, so a failure or an interruption halfway still lists every
/// object created so far.
pub async fn apply_objects_recorded(
    client: &Client,
    objects: &[Value],
    default_ns: &str,
    record: Option<&CreatedObjects>,
) -> Result<Vec<String>, ApplyError> {
    ensure_namespace(client, default_ns, record).await?;
    let mut applied = Vec::new();
    let mut ordered: Vec<(usize, &Value)> = objects.iter().enumerate().collect();
    ordered.sort_by_key(|(_, o)| o.get("kind").and_then(Value::as_str) != Some("Namespace"));
    for (index, obj) in ordered {
        let api_version =
            obj.get("apiVersion")
                .and_then(Value::as_str)
                .ok_or(ApplyError::Malformed {
                    index,
                    field: "apiVersion",
                })?;
        let kind = obj
            .get("kind")
            .and_then(Value::as_str)
            .ok_or(ApplyError::Malformed {
                index,
                field: "kind",
            })?;
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .ok_or(ApplyError::Malformed {
                index,
                field: "metadata.name",
            })?;
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (ar, caps) = pinned_kind(client, &gvk).await.map_err(|e| match e {
            kube::Error::Discovery(_) => ApplyError::UnknownKind {
                kind: kind.to_owned(),
                api_version: api_version.to_owned(),
                name: name.to_owned(),
            },
            // A 404 for the whole group/version means the same thing.
            kube::Error::Api(s) if s.code == 404 => ApplyError::UnknownKind {
                kind: kind.to_owned(),
                api_version: api_version.to_owned(),
                name: name.to_owned(),
            },
            e => ApplyError::Api {
                what: format!("look up {kind} ({api_version}) in the API server's discovery"),
                source: e,
            },
        })?;
        let ns = match caps.scope {
            Scope::Namespaced => Some(
                obj.pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or(default_ns),
            ),
            Scope::Cluster => None,
        };
        let api: Api<DynamicObject> = match ns {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
            None => Api::all_with(client.clone(), &ar),
        };
        if let Some(record) = record.filter(|r| !r.knows(&describe(kind, ns, name))) {
            let described = describe(kind, ns, name);
            match api.get_opt(name).await {
                Ok(Some(_)) => record.pre_existing(described),
                Ok(None) => record.created(CreatedObject {
                    resource: ar.clone(),
                    namespace: ns.map(str::to_owned),
                    name: name.to_owned(),
                    described,
                }),
                Err(e) => {
                    return Err(ApplyError::Api {
                        what: format!(
                            "read {described} before applying it (to know whether zdt creates it)"
                        ),
                        source: e,
                    })
                }
            }
        }
        let mut body = obj.clone();
        if let Some(ns) = ns {
            body["metadata"]["namespace"] = Value::String(ns.to_owned());
        }
        api.patch(
            name,
            &PatchParams::apply("zdt").force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(|e| ApplyError::Api {
            what: format!("apply {}", describe(kind, ns, name)),
            source: e,
        })?;
        applied.push(describe(kind, ns, name));
    }
    Ok(applied)
}

async fn ensure_namespace(
    client: &Client,
    ns: &str,
    record: Option<&CreatedObjects>,
) -> Result<(), ApplyError> {
    let api: Api<Namespace> = Api::all(client.clone());
    let exists = api.get_opt(ns).await.map_err(|e| ApplyError::Api {
        what: format!("get namespace {ns}"),
        source: e,
    })?;
    if let (Some(record), Some(_)) = (record, &exists) {
        record.pre_existing(describe("Namespace", None, ns));
    }
    if exists.is_none() {
        if let Some(record) = record {
            record.created(CreatedObject {
                resource: kube::api::ApiResource::erase::<Namespace>(&()),
                namespace: None,
                name: ns.to_owned(),
                described: describe("Namespace", None, ns),
            });
        }
        let mut n = Namespace::default();
        n.metadata.name = Some(ns.to_owned());
        match api.create(&PostParams::default(), &n).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => {
                return Err(ApplyError::Api {
                    what: format!("create namespace {ns}"),
                    source: e,
                })
            }
        }
    }
    Ok(())
}

/// What a Deployment in `ns` still lacks to have rolled out, in the words
/// of a readiness reason; `None` once its rollout is complete.
pub(crate) fn deployment_waiting(ns: &str, d: &Deployment) -> Option<String> {
    if rollout_complete(d) {
        return None;
    }
    let s = d.status.clone().unwrap_or_default();
    Some(format!(
        "deployment {ns}/{} has {}/{} available",
        d.metadata.name.as_deref().unwrap_or("?"),
        s.available_replicas.unwrap_or(0),
        d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    ))
}

/// Wait until every Deployment in `ns` has completed its rollout.
pub async fn wait_deployments_ready(
    client: &Client,
    ns: &str,
    timeout: Duration,
) -> Result<(), ApplyError> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + timeout;
    loop {
        let list = api
            .list(&Default::default())
            .await
            .map_err(|e| ApplyError::Api {
                what: format!("list deployments in {ns}"),
                source: e,
            })?;
        let pending: Vec<String> = list
            .items
            .iter()
            .filter_map(|d| deployment_waiting(ns, d))
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ApplyError::NotReady {
                timeout,
                detail: pending.join("; "),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
