//! The EndpointSlice controller: one slice per Service with a selector,
//! one endpoint per pod that has an IP. Conditions as upstream:
//! `serving` = pod Ready, `terminating` = pod has a deletionTimestamp,
//! `ready` = serving and not terminating. Before 1.22 (no
//! EndpointSliceTerminatingCondition) terminating pods are dropped.

use std::time::Duration;

use serde_json::{json, Value};

use super::{pod_ready, Ctx};
use crate::apiserver::selectors::LabelSelector;
use crate::store::{meta_str, Resource};

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

/// A service port's target resolved for one pod (named ports look up the
/// pod's container ports).
fn target_port(svc_port: &Value, pod: Option<&Value>) -> Option<i64> {
    match &svc_port["targetPort"] {
        Value::Number(n) => n.as_i64(),
        Value::String(name) => {
            if let Ok(n) = name.parse() {
                return Some(n);
            }
            pod?["spec"]["containers"]
                .as_array()?
                .iter()
                .flat_map(|c| c["ports"].as_array().into_iter().flatten())
                .find(|p| p["name"] == name.as_str())
                .and_then(|p| p["containerPort"].as_i64())
        }
        _ => svc_port["port"].as_i64(),
    }
}

pub fn reconcile(ctx: &Ctx) -> Option<Duration> {
    let keep_terminating = ctx.version.endpoint_terminating_condition();
    ctx.store.write(|st| {
        let services: Vec<Value> = st
            .list(Resource::Services, None)
            .into_iter()
            .cloned()
            .collect();
        for svc in services {
            let Some(sel_map) = svc["spec"]["selector"].as_object() else {
                continue;
            };
            if sel_map.is_empty() || svc["spec"]["type"] == "ExternalName" {
                continue;
            }
            let sel = LabelSelector::from_map(sel_map);
            let ns = meta_str(&svc, "namespace").unwrap_or("default").to_owned();
            let svc_name = meta_str(&svc, "name").unwrap_or("").to_owned();
            let publish_not_ready = svc["spec"]["publishNotReadyAddresses"] == true;
            let pods: Vec<&Value> = st
                .list(Resource::Pods, Some(&ns))
                .into_iter()
                .filter(|p| sel.matches(p))
                .filter(|p| {
                    p["status"]["podIP"]
                        .as_str()
                        .is_some_and(|ip| !ip.is_empty())
                })
                .filter(|p| {
                    !matches!(
                        p["status"]["phase"].as_str(),
                        Some("Succeeded") | Some("Failed")
                    )
                })
                .filter(|p| keep_terminating || p["metadata"].get("deletionTimestamp").is_none())
                .collect();
            let endpoints: Vec<Value> = pods
                .iter()
                .map(|p| {
                    let serving = pod_ready(p);
                    let terminating = p["metadata"].get("deletionTimestamp").is_some();
                    let mut conditions = json!({
                        "ready": publish_not_ready || (serving && !terminating),
                    });
                    if keep_terminating {
                        conditions["serving"] = json!(serving);
                        conditions["terminating"] = json!(terminating);
                    }
                    json!({
                        "addresses": [p["status"]["podIP"]],
                        "conditions": conditions,
                        "nodeName": p["spec"]["nodeName"],
                        "targetRef": {
                            "kind": "Pod",
                            "namespace": ns,
                            "name": p["metadata"]["name"],
                            "uid": p["metadata"]["uid"],
                        },
                    })
                })
                .collect();
            let ports: Vec<Value> = svc["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|sp| {
                    let mut p = json!({
                        "name": sp["name"].as_str().unwrap_or(""),
                        "protocol": sp["protocol"].as_str().unwrap_or("TCP"),
                        "port": target_port(sp, pods.first().copied()),
                    });
                    if let Some(a) = sp.get("appProtocol") {
                        p["appProtocol"] = a.clone();
                    }
                    p
                })
                .collect();
            let mine: Vec<Value> = st
                .list(Resource::EndpointSlices, Some(&ns))
                .into_iter()
                .filter(|s| {
                    s["metadata"]["labels"][SERVICE_NAME_LABEL] == svc_name.as_str()
                        && s["metadata"]["labels"][MANAGED_BY_LABEL] == MANAGED_BY
                })
                .cloned()
                .collect();
            let endpoints = json!(endpoints);
            let ports = json!(ports);
            match mine.split_first() {
                Some((slice, extra)) => {
                    if slice["endpoints"] != endpoints || slice["ports"] != ports {
                        let mut s = slice.clone();
                        s["endpoints"] = endpoints;
                        s["ports"] = ports;
                        let _ = st.update(Resource::EndpointSlices, s);
                    }
                    for e in extra {
                        let _ = st.remove(
                            Resource::EndpointSlices,
                            &ns,
                            meta_str(e, "name").unwrap_or(""),
                        );
                    }
                }
                None => {
                    let slice = json!({
                        "metadata": {
                            "generateName": format!("{svc_name}-"),
                            "namespace": ns,
                            "labels": {
                                SERVICE_NAME_LABEL: svc_name,
                                MANAGED_BY_LABEL: MANAGED_BY,
                            },
                            "ownerReferences": [super::owner_ref(&svc)],
                        },
                        "addressType": "IPv4",
                        "endpoints": endpoints,
                        "ports": ports,
                    });
                    let _ = st.create(Resource::EndpointSlices, slice);
                }
            }
        }
    });
    None
}
