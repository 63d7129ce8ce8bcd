//! `Accept: application/json;as=Table` answers: the columns `kubectl get`
//! prints for each kind (the server-side printers of the real API server).

use serde_json::{json, Value};

use crate::store::{parse_time, Resource};

/// kubectl's `HumanDuration` for the AGE column.
pub fn human_age(created: Option<&str>) -> String {
    let Some(t) = created.and_then(parse_time) else {
        return "<unknown>".into();
    };
    human_duration(jiff::Timestamp::now().as_second() - t.as_second())
}

/// kubectl's `HumanDuration` of `secs` seconds.
fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{m}m{}s", s % 60),
        s if s < 3 * 3600 => format!("{m}m"),
        s if s < 8 * 3600 => format!("{h}h{}m", m % 60),
        s if s < 48 * 3600 => format!("{h}h"),
        s if s < 8 * 86400 => format!("{d}d{}h", h % 24),
        _ => format!("{d}d"),
    }
}

fn col(name: &str, ty: &str, priority: i64) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": ty, "format": format, "description": name, "priority": priority})
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "<none>".into(),
        other => other.to_string(),
    }
}

fn conditions_true(obj: &Value, ty: &str) -> Option<bool> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
        .map(|c| c["status"] == "True")
}

fn pod_status(pod: &Value) -> String {
    if pod["metadata"].get("deletionTimestamp").is_some() {
        return "Terminating".into();
    }
    let statuses = pod["status"]["containerStatuses"].as_array();
    for cs in statuses.into_iter().flatten() {
        if let Some(r) = cs["state"]["waiting"]["reason"].as_str() {
            return r.into();
        }
        if let Some(r) = cs["state"]["terminated"]["reason"].as_str() {
            return r.into();
        }
    }
    pod["status"]["reason"]
        .as_str()
        .or(pod["status"]["phase"].as_str())
        .unwrap_or("Pending")
        .into()
}

fn node_roles(node: &Value) -> String {
    let roles: Vec<&str> = node["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/"))
        .collect();
    if roles.is_empty() {
        "<none>".into()
    } else {
        roles.join(",")
    }
}

fn node_ip(node: &Value, ty: &str) -> String {
    node["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["type"] == ty)
        .and_then(|a| a["address"].as_str())
        .unwrap_or("<none>")
        .into()
}

fn int_or_none(v: &Value) -> String {
    if v.is_null() {
        "N/A".into()
    } else {
        s(v)
    }
}

/// A LabelSelector as upstream prints it (`LabelSelectorAsSelector`):
/// requirements sorted by key, `k=v`, `k in (a,b)`, `k notin (a,b)`, `k`,
/// `!k`; `<none>` for an empty one.
pub fn selector_string(sel: &Value) -> String {
    let mut reqs: Vec<(String, String)> = sel["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), format!("{k}={}", v.as_str().unwrap_or(""))))
        .collect();
    for e in sel["matchExpressions"].as_array().into_iter().flatten() {
        let key = e["key"].as_str().unwrap_or("").to_owned();
        let mut values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        values.sort_unstable();
        let text = match e["operator"].as_str().unwrap_or("") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.clone(),
            _ => format!("!{key}"),
        };
        reqs.push((key, text));
    }
    reqs.sort();
    if reqs.is_empty() {
        "<none>".into()
    } else {
        reqs.into_iter()
            .map(|(_, t)| t)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A Service's `spec.selector` map as `labels.FormatLabels` prints it.
fn map_selector(sel: &Value) -> String {
    let mut pairs: Vec<String> = sel
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    pairs.sort();
    if pairs.is_empty() {
        "<none>".into()
    } else {
        pairs.join(",")
    }
}

/// A workload's columns plus its `-o wide` ones: the pod template's
/// container names and images, and the selector.
fn with_template_columns(
    o: &Value,
    mut columns: Vec<Value>,
    mut cells: Vec<Value>,
) -> (Vec<Value>, Vec<Value>) {
    let containers = o["spec"]["template"]["spec"]["containers"].as_array();
    let field = |f: &str| {
        containers
            .into_iter()
            .flatten()
            .map(|c| c[f].as_str().unwrap_or(""))
            .collect::<Vec<_>>()
            .join(",")
    };
    columns.extend([
        col("Containers", "string", 1),
        col("Images", "string", 1),
        col("Selector", "string", 1),
    ]);
    cells.extend([
        json!(field("name")),
        json!(field("image")),
        json!(selector_string(&o["spec"]["selector"])),
    ]);
    (columns, cells)
}

/// The Status column of `kubectl get jobs` (upstream's printJob).
fn job_status(job: &Value) -> &'static str {
    let has = |ty| conditions_true(job, ty) == Some(true);
    if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if job["metadata"].get("deletionTimestamp").is_some() {
        "Terminating"
    } else if has("Suspended") {
        "Suspended"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else if has("SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    }
}

/// `succeeded/completions`, or for a work queue `succeeded/1 [of N]`.
fn job_completions(job: &Value) -> String {
    let succeeded = job["status"]["succeeded"].as_i64().unwrap_or(0);
    match job["spec"]["completions"].as_i64() {
        Some(c) => format!("{succeeded}/{c}"),
        None => match job["spec"]["parallelism"].as_i64().unwrap_or(0) {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    }
}

/// From the start to completion, or to now while running.
fn job_duration(job: &Value) -> String {
    let time = |k: &str| job["status"][k].as_str().and_then(parse_time);
    match (time("startTime"), time("completionTime")) {
        (None, _) => String::new(),
        (Some(start), None) => {
            human_duration(jiff::Timestamp::now().as_second() - start.as_second())
        }
        (Some(start), Some(end)) => human_duration(end.as_second() - start.as_second()),
    }
}

/// Columns Name, `column`, Age and their cells.
fn name_one_age(name: Value, column: Value, cell: Value, age: Value) -> (Vec<Value>, Vec<Value>) {
    (
        vec![col("Name", "string", 0), column, col("Age", "string", 0)],
        vec![name, cell, age],
    )
}

fn columns_and_cells(resource: Resource, o: &Value) -> (Vec<Value>, Vec<Value>) {
    let name = json!(o["metadata"]["name"]);
    let age = json!(human_age(o["metadata"]["creationTimestamp"].as_str()));
    match resource {
        Resource::Pods => {
            let cs = o["status"]["containerStatuses"].as_array();
            let total = o["spec"]["containers"].as_array().map_or(0, Vec::len);
            let ready = cs
                .into_iter()
                .flatten()
                .filter(|c| c["ready"] == true)
                .count();
            let restarts: i64 = cs
                .into_iter()
                .flatten()
                .filter_map(|c| c["restartCount"].as_i64())
                .sum();
            (
                vec![
                    col("Name", "string", 0),
                    col("Ready", "string", 0),
                    col("Status", "string", 0),
                    col("Restarts", "string", 0),
                    col("Age", "string", 0),
                    col("IP", "string", 1),
                    col("Node", "string", 1),
                    col("Nominated Node", "string", 1),
                    col("Readiness Gates", "string", 1),
                ],
                vec![
                    name,
                    json!(format!("{ready}/{total}")),
                    json!(pod_status(o)),
                    json!(restarts.to_string()),
                    age,
                    json!(o["status"]["podIP"].as_str().unwrap_or("<none>")),
                    json!(o["spec"]["nodeName"].as_str().unwrap_or("<none>")),
                    json!("<none>"),
                    json!("<none>"),
                ],
            )
        }
        Resource::Nodes => {
            let mut status = match conditions_true(o, "Ready") {
                Some(true) => "Ready".to_owned(),
                _ => "NotReady".to_owned(),
            };
            if o["spec"]["unschedulable"] == true {
                status.push_str(",SchedulingDisabled");
            }
            let info = &o["status"]["nodeInfo"];
            (
                vec![
                    col("Name", "string", 0),
                    col("Status", "string", 0),
                    col("Roles", "string", 0),
                    col("Age", "string", 0),
                    col("Version", "string", 0),
                    col("Internal-IP", "string", 1),
                    col("External-IP", "string", 1),
                    col("OS-Image", "string", 1),
                    col("Kernel-Version", "string", 1),
                    col("Container-Runtime", "string", 1),
                ],
                vec![
                    name,
                    json!(status),
                    json!(node_roles(o)),
                    age,
                    json!(s(&info["kubeletVersion"])),
                    json!(node_ip(o, "InternalIP")),
                    json!(node_ip(o, "ExternalIP")),
                    json!(s(&info["osImage"])),
                    json!(s(&info["kernelVersion"])),
                    json!(s(&info["containerRuntimeVersion"])),
                ],
            )
        }
        Resource::Deployments => with_template_columns(
            o,
            vec![
                col("Name", "string", 0),
                col("Ready", "string", 0),
                col("Up-to-date", "string", 0),
                col("Available", "string", 0),
                col("Age", "string", 0),
            ],
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    o["status"]["readyReplicas"].as_i64().unwrap_or(0),
                    o["spec"]["replicas"].as_i64().unwrap_or(0)
                )),
                json!(o["status"]["updatedReplicas"].as_i64().unwrap_or(0)),
                json!(o["status"]["availableReplicas"].as_i64().unwrap_or(0)),
                age,
            ],
        ),
        Resource::ReplicaSets => with_template_columns(
            o,
            vec![
                col("Name", "string", 0),
                col("Desired", "integer", 0),
                col("Current", "integer", 0),
                col("Ready", "integer", 0),
                col("Age", "string", 0),
            ],
            vec![
                name,
                json!(o["spec"]["replicas"].as_i64().unwrap_or(0)),
                json!(o["status"]["replicas"].as_i64().unwrap_or(0)),
                json!(o["status"]["readyReplicas"].as_i64().unwrap_or(0)),
                age,
            ],
        ),
        Resource::Jobs => with_template_columns(
            o,
            vec![
                col("Name", "string", 0),
                col("Status", "string", 0),
                col("Completions", "string", 0),
                col("Duration", "string", 0),
                col("Age", "string", 0),
            ],
            vec![
                name,
                json!(job_status(o)),
                json!(job_completions(o)),
                json!(job_duration(o)),
                age,
            ],
        ),
        Resource::Services => {
            let ports: Vec<String> = o["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| match p["nodePort"].as_i64() {
                    Some(np) => format!("{}:{np}/{}", s(&p["port"]), s(&p["protocol"])),
                    None => format!("{}/{}", s(&p["port"]), s(&p["protocol"])),
                })
                .collect();
            let ext: Vec<String> = o["status"]["loadBalancer"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| {
                    i["ip"]
                        .as_str()
                        .or(i["hostname"].as_str())
                        .map(str::to_owned)
                })
                .collect();
            let ext = if !ext.is_empty() {
                ext.join(",")
            } else if o["spec"]["type"] == "LoadBalancer" {
                "<pending>".into()
            } else {
                "<none>".into()
            };
            (
                vec![
                    col("Name", "string", 0),
                    col("Type", "string", 0),
                    col("Cluster-IP", "string", 0),
                    col("External-IP", "string", 0),
                    col("Port(s)", "string", 0),
                    col("Age", "string", 0),
                    col("Selector", "string", 1),
                ],
                vec![
                    name,
                    json!(s(&o["spec"]["type"])),
                    json!(s(&o["spec"]["clusterIP"])),
                    json!(ext),
                    json!(if ports.is_empty() {
                        "<none>".into()
                    } else {
                        ports.join(",")
                    }),
                    age,
                    json!(map_selector(&o["spec"]["selector"])),
                ],
            )
        }
        Resource::PodDisruptionBudgets => (
            vec![
                col("Name", "string", 0),
                col("Min Available", "string", 0),
                col("Max Unavailable", "string", 0),
                col("Allowed Disruptions", "integer", 0),
                col("Age", "string", 0),
            ],
            vec![
                name,
                json!(int_or_none(&o["spec"]["minAvailable"])),
                json!(int_or_none(&o["spec"]["maxUnavailable"])),
                json!(o["status"]["disruptionsAllowed"].as_i64().unwrap_or(0)),
                age,
            ],
        ),
        Resource::EndpointSlices => {
            let eps: Vec<String> = o["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["addresses"][0].as_str().map(str::to_owned))
                .collect();
            let ports: Vec<String> = o["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| s(&p["port"]))
                .collect();
            (
                vec![
                    col("Name", "string", 0),
                    col("AddressType", "string", 0),
                    col("Ports", "string", 0),
                    col("Endpoints", "string", 0),
                    col("Age", "string", 0),
                ],
                vec![
                    name,
                    json!(s(&o["addressType"])),
                    json!(if ports.is_empty() {
                        "<unset>".into()
                    } else {
                        ports.join(",")
                    }),
                    json!(if eps.is_empty() {
                        "<unset>".into()
                    } else {
                        eps.join(",")
                    }),
                    age,
                ],
            )
        }
        Resource::ServiceAccounts | Resource::Roles => (
            vec![col("Name", "string", 0), col("Age", "string", 0)],
            vec![name, age],
        ),
        Resource::RoleBindings => name_one_age(
            name,
            col("Role", "string", 0),
            json!(format!(
                "{}/{}",
                s(&o["roleRef"]["kind"]),
                s(&o["roleRef"]["name"])
            )),
            age,
        ),
        Resource::ConfigMaps => name_one_age(
            name,
            col("Data", "integer", 0),
            json!(o["data"].as_object().map_or(0, |d| d.len())),
            age,
        ),
        Resource::Namespaces => (
            vec![
                col("Name", "string", 0),
                col("Status", "string", 0),
                col("Age", "string", 0),
            ],
            vec![name, json!(s(&o["status"]["phase"])), age],
        ),
        Resource::CoreEvents | Resource::Events => {
            let regarding = if o["regarding"].is_object() {
                &o["regarding"]
            } else {
                &o["involvedObject"]
            };
            (
                vec![
                    col("Last Seen", "string", 0),
                    col("Type", "string", 0),
                    col("Reason", "string", 0),
                    col("Object", "string", 0),
                    col("Message", "string", 0),
                ],
                vec![
                    age,
                    json!(s(&o["type"])),
                    json!(s(&o["reason"])),
                    json!(format!(
                        "{}/{}",
                        regarding["kind"].as_str().unwrap_or("").to_lowercase(),
                        regarding["name"].as_str().unwrap_or("")
                    )),
                    json!(o["note"].as_str().or(o["message"].as_str()).unwrap_or("")),
                ],
            )
        }
    }
}

/// A `meta.k8s.io/v1` Table of `objects` (each row carries its full object,
/// which kubectl needs for `-o wide`, `--show-labels` and sorting).
pub fn table(resource: Resource, objects: &[&Value], rv: &Value) -> Value {
    let mut columns = None;
    let mut rows = Vec::new();
    for o in objects {
        let (cols, cells) = columns_and_cells(resource, o);
        columns.get_or_insert(cols);
        rows.push(json!({"cells": cells, "object": o}));
    }
    let columns = columns.unwrap_or_else(|| columns_and_cells(resource, &json!({})).0);
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv},
        "columnDefinitions": columns,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_print_as_upstream() {
        let sel = json!({"matchLabels": {"b": "2", "a": "1"},
                         "matchExpressions": [{"key": "c", "operator": "In", "values": ["y", "x"]},
                                              {"key": "d", "operator": "DoesNotExist"}]});
        assert_eq!(selector_string(&sel), "a=1,b=2,c in (x,y),!d");
        assert_eq!(selector_string(&json!({})), "<none>");
        assert_eq!(map_selector(&json!({"app": "web"})), "app=web");
    }

    #[test]
    fn wide_columns_of_deployments_list_containers_images_and_selector() {
        let d = json!({"metadata": {"name": "web"},
                       "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                                "template": {"spec": {"containers": [
                                    {"name": "app", "image": "nginx:1.27"},
                                    {"name": "side", "image": "busybox"}]}}}});
        let t = table(Resource::Deployments, &[&d], &json!("1"));
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(&names[5..], ["Containers", "Images", "Selector"]);
        assert_eq!(t["columnDefinitions"][5]["priority"], 1);
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[5], "app,side");
        assert_eq!(cells[6], "nginx:1.27,busybox");
        assert_eq!(cells[7], "app=web");
    }
}
