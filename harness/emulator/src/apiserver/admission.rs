//! Defaulting and allocation on create/update, as the API server's
//! defaulters and admission plugins do: pod defaults (grace period, probe
//! timings, the DefaultTolerationSeconds tolerations), Service clusterIP,
//! nodePorts and healthCheckNodePort, Deployment strategy defaults, a Job's
//! defaults and generated selector.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::store::{Resource, State};
use crate::Timings;

/// Where ClusterIPs come from (kind's default service subnet).
const SERVICE_NET: [u8; 2] = [10, 96];
const NODE_PORTS: std::ops::RangeInclusive<i64> = 30000..=32767;

fn set_default(obj: &mut Value, key: &str, v: Value) {
    if obj.get(key).is_none_or(Value::is_null) {
        obj[key] = v;
    }
}

fn default_probe(probe: &mut Value) {
    if !probe.is_object() {
        return;
    }
    set_default(probe, "periodSeconds", json!(10));
    set_default(probe, "timeoutSeconds", json!(1));
    set_default(probe, "successThreshold", json!(1));
    set_default(probe, "failureThreshold", json!(3));
    if probe.get("httpGet").is_some() {
        set_default(&mut probe["httpGet"], "scheme", json!("HTTP"));
        set_default(&mut probe["httpGet"], "path", json!("/"));
    }
}

/// Pod spec defaults (also applied to pod templates).
pub fn default_pod_spec(spec: &mut Value, timings: &Timings) {
    if !spec.is_object() {
        return;
    }
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "serviceAccountName", json!("default"));
    set_default(spec, "securityContext", json!({}));
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs {
                set_default(c, "imagePullPolicy", json!("IfNotPresent"));
                set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
                set_default(c, "terminationMessagePolicy", json!("File"));
                set_default(c, "resources", json!({}));
                if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports {
                        set_default(p, "protocol", json!("TCP"));
                    }
                }
                for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
                    if let Some(p) = c.get_mut(probe) {
                        default_probe(p);
                    }
                }
            }
        }
    }
    // DefaultTolerationSeconds: pods tolerate a not-ready/unreachable node
    // for 300 s before the taint manager evicts them.
    let secs = timings.default_not_ready_toleration.get().as_secs() as i64;
    if !spec.get("tolerations").is_some_and(Value::is_array) {
        spec["tolerations"] = json!([]);
    }
    let tols = spec["tolerations"].as_array_mut().expect("array");
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let present = tols
            .iter()
            .any(|t| t["key"] == key && (t["effect"] == "NoExecute" || t.get("effect").is_none()));
        if !present {
            tols.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": secs}));
        }
    }
}

/// A resource quantity (`500m`, `1Gi`, `2e3`) in base units; None when it
/// does not parse.
fn quantity(v: &Value) -> Option<f64> {
    let text = match v {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    Some(number * scale)
}

/// The pod's QoS class, as upstream's `GetPodQOS`: only cpu and memory
/// count, of every container and init container, zero quantities as unset.
/// BestEffort with no requests or limits at all; Guaranteed when every
/// container has cpu and memory limits and every request equals its limit
/// (an unset request defaults to the limit); else Burstable.
pub fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .flat_map(|k| spec[k].as_array().into_iter().flatten())
        .collect();
    let set =
        |c: &Value, kind: &str, r: &str| quantity(&c["resources"][kind][r]).filter(|q| *q != 0.0);
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        for r in ["cpu", "memory"] {
            let (request, limit) = (set(c, "requests", r), set(c, "limits", r));
            any |= request.is_some() || limit.is_some();
            match (request, limit) {
                (_, None) => guaranteed = false,
                (Some(q), Some(l)) if q != l => guaranteed = false,
                _ => {}
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Defaults and allocations for a new object (inside the store's lock, so
/// allocations cannot race).
pub fn on_create(
    st: &State,
    resource: Resource,
    obj: &mut Value,
    timings: &Timings,
) -> Result<(), String> {
    match resource {
        Resource::Pods => {
            default_pod_spec(&mut obj["spec"], timings);
            if !obj.get("status").is_some_and(Value::is_object) {
                obj["status"] = json!({});
            }
            set_default(&mut obj["status"], "phase", json!("Pending"));
            let qos = qos_class(&obj["spec"]);
            set_default(&mut obj["status"], "qosClass", json!(qos));
            if obj["spec"]["containers"]
                .as_array()
                .is_none_or(Vec::is_empty)
            {
                return Err(format!(
                    "Pod \"{}\" is invalid: spec.containers: Required value",
                    obj["metadata"]["name"].as_str().unwrap_or("")
                ));
            }
        }
        Resource::Deployments => {
            let spec = &mut obj["spec"];
            set_default(spec, "replicas", json!(1));
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(spec, "progressDeadlineSeconds", json!(600));
            set_default(
                spec,
                "strategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
            );
            if spec["strategy"]["type"] == "RollingUpdate" || spec["strategy"].get("type").is_none()
            {
                spec["strategy"]["type"] = json!("RollingUpdate");
                set_default(&mut spec["strategy"], "rollingUpdate", json!({}));
                set_default(
                    &mut spec["strategy"]["rollingUpdate"],
                    "maxUnavailable",
                    json!("25%"),
                );
                set_default(
                    &mut spec["strategy"]["rollingUpdate"],
                    "maxSurge",
                    json!("25%"),
                );
            }
            default_pod_spec(&mut spec["template"]["spec"], timings);
            if spec.get("selector").is_none_or(Value::is_null) {
                return Err("Deployment.apps is invalid: spec.selector: Required value".into());
            }
        }
        Resource::ReplicaSets => {
            set_default(&mut obj["spec"], "replicas", json!(1));
            default_pod_spec(&mut obj["spec"]["template"]["spec"], timings);
        }
        Resource::Jobs => default_job(st, obj, timings)?,
        Resource::Services => default_service(st, obj, None)?,
        Resource::Namespaces => {
            set_default(obj, "status", json!({}));
            set_default(&mut obj["status"], "phase", json!("Active"));
        }
        _ => {}
    }
    Ok(())
}

/// Defaults for a replacement: allocated Service fields a client omitted
/// (e.g. `kubectl apply` of the original manifest) are kept.
pub fn on_update(
    st: &State,
    resource: Resource,
    old: &Value,
    obj: &mut Value,
    timings: &Timings,
) -> Result<(), String> {
    match resource {
        Resource::Services => default_service(st, obj, Some(old)),
        Resource::Pods => {
            default_pod_spec(&mut obj["spec"], timings);
            Ok(())
        }
        Resource::Deployments | Resource::ReplicaSets => {
            default_pod_spec(&mut obj["spec"]["template"]["spec"], timings);
            Ok(())
        }
        Resource::Jobs => {
            default_pod_spec(&mut obj["spec"]["template"]["spec"], timings);
            // Upstream allows only the scheduling directives to change,
            // and only while suspended; the emulator has no suspend.
            for key in ["template", "completions", "completionMode", "selector"] {
                if obj["spec"][key] != old["spec"][key] {
                    return Err(format!(
                        "Job.batch \"{}\" is invalid: spec.{key}: Invalid value: field is immutable",
                        obj["metadata"]["name"].as_str().unwrap_or("")
                    ));
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Labels the API server puts on a Job's pod template (and its selector):
/// the 1.27+ names and the legacy ones, as `pkg/registry/batch/job` does.
pub const JOB_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
const LEGACY_JOB_UID_LABEL: &str = "controller-uid";
const LEGACY_JOB_NAME_LABEL: &str = "job-name";

/// A new Job's defaults, generated selector and validation (upstream's
/// defaulter and `pkg/registry/batch/job` strategy, for what the emulator
/// runs). Fields the Job controller here does not implement are refused
/// rather than ignored.
fn default_job(st: &State, obj: &mut Value, timings: &Timings) -> Result<(), String> {
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_owned();
    let invalid =
        |field: &str, why: String| format!("Job.batch \"{name}\" is invalid: {field}: {why}");
    let spec = &mut obj["spec"];
    if spec["template"]["spec"]["containers"]
        .as_array()
        .is_none_or(Vec::is_empty)
    {
        return Err(invalid(
            "spec.template.spec.containers",
            "Required value".into(),
        ));
    }
    for (key, why) in [
        ("backoffLimitPerIndex", "a per-index backoff limit"),
        ("maxFailedIndexes", "a per-index backoff limit"),
        ("podFailurePolicy", "pod failure policies"),
        ("successPolicy", "success policies"),
        ("managedBy", "Jobs managed by another controller"),
    ] {
        if spec.get(key).is_some_and(|v| !v.is_null()) {
            return Err(invalid(
                &format!("spec.{key}"),
                format!("Forbidden: the zdt emulator's Job controller does not implement {why}; remove spec.{key} (see docs/emulator.md)"),
            ));
        }
    }
    if spec["suspend"] == true {
        return Err(invalid(
            "spec.suspend",
            "Forbidden: the zdt emulator's Job controller does not implement suspended Jobs; remove spec.suspend".into(),
        ));
    }
    let mode = spec["completionMode"]
        .as_str()
        .unwrap_or("NonIndexed")
        .to_owned();
    if mode != "NonIndexed" && mode != "Indexed" {
        return Err(invalid(
            "spec.completionMode",
            format!("Unsupported value: \"{mode}\": supported values: \"NonIndexed\", \"Indexed\""),
        ));
    }
    if spec.get("completions").is_none_or(Value::is_null)
        && spec.get("parallelism").is_none_or(Value::is_null)
    {
        spec["completions"] = json!(1);
        spec["parallelism"] = json!(1);
    }
    set_default(spec, "parallelism", json!(1));
    set_default(spec, "backoffLimit", json!(6));
    set_default(spec, "completionMode", json!(mode));
    set_default(spec, "suspend", json!(false));
    set_default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    for key in ["parallelism", "completions", "backoffLimit"] {
        if spec[key].as_i64().is_some_and(|n| n < 0) {
            return Err(invalid(
                &format!("spec.{key}"),
                format!(
                    "Invalid value: {}: must be greater than or equal to 0",
                    spec[key]
                ),
            ));
        }
    }
    if mode == "Indexed" && spec["completions"].as_i64().is_none() {
        return Err(invalid(
            "spec.completions",
            "Required value: when completion mode is Indexed".into(),
        ));
    }
    default_pod_spec(&mut spec["template"]["spec"], timings);
    match spec["template"]["spec"]["restartPolicy"].as_str() {
        Some("Never") | Some("OnFailure") => {}
        other => {
            return Err(invalid(
                "spec.template.spec.restartPolicy",
                format!(
                    "Unsupported value: \"{}\": supported values: \"OnFailure\", \"Never\"",
                    other.unwrap_or("")
                ),
            ))
        }
    }
    let uid = st.next_uid();
    if spec["manualSelector"] != true {
        if !spec.get("selector").is_none_or(Value::is_null) {
            return Err(invalid(
                "spec.selector",
                "Invalid value: `selector` will be auto-generated; set spec.manualSelector: true to give your own".into(),
            ));
        }
        spec["selector"] = json!({"matchLabels": {JOB_UID_LABEL: uid}});
        let labels = &mut spec["template"]["metadata"]["labels"];
        if !labels.is_object() {
            *labels = json!({});
        }
        for (key, value) in [
            (JOB_UID_LABEL, &uid),
            (JOB_NAME_LABEL, &name),
            (LEGACY_JOB_UID_LABEL, &uid),
            (LEGACY_JOB_NAME_LABEL, &name),
        ] {
            labels[key] = json!(value);
        }
    } else if spec.get("selector").is_none_or(Value::is_null) {
        return Err(invalid("spec.selector", "Required value".into()));
    }
    Ok(())
}

fn used_ports_and_ips(st: &State, skip_uid: Option<&str>) -> (BTreeSet<i64>, BTreeSet<String>) {
    let mut ports = BTreeSet::new();
    let mut ips = BTreeSet::new();
    for svc in st.list(Resource::Services, None) {
        if skip_uid.is_some() && svc["metadata"]["uid"].as_str() == skip_uid {
            continue;
        }
        if let Some(ip) = svc["spec"]["clusterIP"].as_str() {
            ips.insert(ip.to_owned());
        }
        for p in svc["spec"]["ports"].as_array().into_iter().flatten() {
            if let Some(n) = p["nodePort"].as_i64() {
                ports.insert(n);
            }
        }
        if let Some(n) = svc["spec"]["healthCheckNodePort"].as_i64() {
            ports.insert(n);
        }
    }
    (ports, ips)
}

fn default_service(st: &State, obj: &mut Value, old: Option<&Value>) -> Result<(), String> {
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_owned();
    let invalid = |what: String| format!("Service \"{name}\" is invalid: {what}");
    let (mut used_ports, used_ips) =
        used_ports_and_ips(st, old.and_then(|o| o["metadata"]["uid"].as_str()));
    if !obj.get("spec").is_some_and(Value::is_object) {
        obj["spec"] = json!({});
    }
    let spec = &mut obj["spec"];
    set_default(spec, "type", json!("ClusterIP"));
    set_default(spec, "sessionAffinity", json!("None"));
    set_default(spec, "internalTrafficPolicy", json!("Cluster"));
    set_default(spec, "ipFamilies", json!(["IPv4"]));
    set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
    let ty = spec["type"].as_str().unwrap_or("ClusterIP").to_owned();
    if !matches!(
        ty.as_str(),
        "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
    ) {
        return Err(invalid(format!("spec.type: Unsupported value: \"{ty}\"")));
    }
    let external = ty == "NodePort" || ty == "LoadBalancer";
    if external {
        set_default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        set_default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    // clusterIP: keep the old one, else allocate sequentially.
    if let Some(old_ip) = old.and_then(|o| o["spec"]["clusterIP"].as_str()) {
        set_default(spec, "clusterIP", json!(old_ip));
    }
    if spec.get("clusterIP").is_none_or(|v| v.is_null() || v == "") && ty != "ExternalName" {
        let ip = (11u32..65_000)
            .map(|n| {
                format!(
                    "{}.{}.{}.{}",
                    SERVICE_NET[0],
                    SERVICE_NET[1],
                    n / 256,
                    n % 256
                )
            })
            .find(|ip| !used_ips.contains(ip) && !ip.ends_with(".0") && !ip.ends_with(".255"))
            .ok_or_else(|| invalid("no ClusterIP left".into()))?;
        spec["clusterIP"] = json!(ip);
    }
    if let Some(ip) = spec["clusterIP"].as_str() {
        let ip = ip.to_owned();
        spec["clusterIPs"] = json!([ip]);
    }
    let old_ports: Vec<Value> = old
        .and_then(|o| o["spec"]["ports"].as_array().cloned())
        .unwrap_or_default();
    let mut next_port = || -> Result<i64, String> {
        let p = NODE_PORTS
            .clone()
            .find(|p| !used_ports.contains(p))
            .ok_or_else(|| invalid("no NodePort left in 30000-32767".into()))?;
        used_ports.insert(p);
        Ok(p)
    };
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut() {
            set_default(p, "protocol", json!("TCP"));
            let port = p["port"].clone();
            if !port.is_i64() {
                return Err(invalid("spec.ports[].port: Required value".into()));
            }
            set_default(p, "targetPort", port.clone());
            if external {
                if let Some(n) = p["nodePort"].as_i64() {
                    if !NODE_PORTS.contains(&n) {
                        return Err(invalid(format!(
                            "spec.ports[].nodePort: Invalid value: {n}: provided port is not in the valid range. The range of valid ports is 30000-32767"
                        )));
                    }
                } else {
                    let kept = old_ports
                        .iter()
                        .find(|o| o["port"] == port && o["protocol"] == p["protocol"])
                        .and_then(|o| o["nodePort"].as_i64());
                    let n = match kept {
                        Some(n) => n,
                        None => next_port()?,
                    };
                    p["nodePort"] = json!(n);
                }
            } else if let Some(m) = p.as_object_mut() {
                m.remove("nodePort");
            }
        }
    }
    if ty == "LoadBalancer" && spec["externalTrafficPolicy"] == "Local" {
        if spec["healthCheckNodePort"].as_i64().is_none() {
            let kept = old.and_then(|o| o["spec"]["healthCheckNodePort"].as_i64());
            let n = match kept {
                Some(n) => n,
                None => next_port()?,
            };
            spec["healthCheckNodePort"] = json!(n);
        }
    } else if let Some(m) = spec.as_object_mut() {
        m.remove("healthCheckNodePort");
    }
    if !obj.get("status").is_some_and(Value::is_object) {
        obj["status"] = json!({"loadBalancer": {}});
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(resources: Value) -> Value {
        json!({"containers": [{"name": "app", "resources": resources}]})
    }

    #[test]
    fn qos_classes_follow_upstream() {
        assert_eq!(qos_class(&spec(json!({}))), "BestEffort");
        assert_eq!(
            qos_class(&spec(json!({"requests": {"ephemeral-storage": "1Gi"}}))),
            "BestEffort",
            "only cpu and memory count"
        );
        assert_eq!(
            qos_class(&spec(json!({"requests": {"cpu": "100m"}}))),
            "Burstable"
        );
        assert_eq!(
            qos_class(&spec(json!({"limits": {"cpu": "1", "memory": "1Gi"}}))),
            "Guaranteed",
            "requests default to limits"
        );
        assert_eq!(
            qos_class(&spec(
                json!({"requests": {"cpu": "1000m", "memory": "1024Mi"},
                                   "limits": {"cpu": "1", "memory": "1Gi"}})
            )),
            "Guaranteed",
            "equal quantities in other units"
        );
        assert_eq!(
            qos_class(&spec(json!({"requests": {"cpu": "500m", "memory": "1Gi"},
                                   "limits": {"cpu": "1", "memory": "1Gi"}}))),
            "Burstable"
        );
    }
}
