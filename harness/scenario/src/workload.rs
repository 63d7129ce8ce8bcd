//! The workload's manifests, ready to apply: read the manifests directory
//! (plain files; a kustomization through `kustomize build` or `kubectl
//! kustomize`; a Helm chart through `helm template`), turn `mitigations:`
//! into changes on the Deployment, Service and PDB, then apply the raw
//! `patches:` (JSON merge patches) in order.
//!
//! Mitigations left unset leave the manifests alone, so a user's own
//! manifests run as written unless the scenario says otherwise.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::model::*;

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[non_exhaustive]
pub enum WorkloadError {
    #[error("cannot read manifests from {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not valid Kubernetes YAML: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{}: a manifest without `kind` or `metadata.name`", path.display())]
    #[diagnostic(help("every object needs apiVersion, kind and metadata.name"))]
    Incomplete { path: PathBuf },
    #[error("the manifests have no {kind} named `{name}`")]
    #[diagnostic(help("set `workload.{field}` to the name used in the manifests"))]
    Missing {
        dir: PathBuf,
        kind: &'static str,
        name: String,
        field: &'static str,
    },
    #[error("Deployment `{deployment}` has no container named `{container}`")]
    NoContainer {
        deployment: String,
        container: String,
    },
    #[error(
        "Deployment `{0}` has no `spec.selector.matchLabels`; zdt needs them to select its pods"
    )]
    NoSelector(String),
    #[error("{tool} is needed to render {} but is not installed ({why})", dir.display())]
    #[diagnostic(help("{install}"))]
    ToolMissing {
        tool: &'static str,
        dir: PathBuf,
        why: String,
        install: &'static str,
    },
    #[error("`{command}` failed ({status}):\n{stderr}")]
    #[diagnostic(help(
        "run the command yourself to see the problem; fix the chart, kustomization or values"
    ))]
    Render {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("workload patch {index} (kind {kind}{}) matches no manifest", name.as_deref().map(|n| format!(", name {n}")).unwrap_or_default())]
    #[diagnostic(help("check `kind` and `name` against the manifests"))]
    PatchMatchesNothing {
        index: usize,
        kind: String,
        name: Option<String>,
    },
}

/// The scenario's manifests with mitigations and patches applied, in file
/// order (files sorted by name, documents in file order).
pub fn render(scenario: &Scenario) -> Result<Vec<Value>, WorkloadError> {
    render_from(scenario, read_manifests(&scenario.workload)?)
}

/// How to install the renderers, for the error when one is missing.
const KUBECTL_INSTALL: &str = "install kubectl (https://kubernetes.io/docs/tasks/tools/) or kustomize (https://kubectl.docs.kubernetes.io/installation/kustomize/), or render the overlay yourself into a plain directory";
const HELM_INSTALL: &str = "install helm (https://helm.sh/docs/intro/install/), or run `helm template` yourself into a plain directory and point `workload.manifests` there";

/// The workload's objects, whatever the directory holds (see
/// [`ManifestSource`]), before mitigations and patches.
pub fn read_manifests(w: &Workload) -> Result<Vec<Value>, WorkloadError> {
    let dir = &w.manifests;
    let (tool, args, install): (&str, Vec<std::ffi::OsString>, _) = match &w.source {
        ManifestSource::Directory => return read_dir(dir),
        ManifestSource::Kustomization => {
            // Permissive, so an overlay may name plain files beside it
            // (manifests/nginx-overlay names manifests/nginx's).
            let open: [std::ffi::OsString; 3] = [
                "--load-restrictor".into(),
                "LoadRestrictionsNone".into(),
                dir.into(),
            ];
            if on_path("kustomize") {
                let args = std::iter::once("build".into()).chain(open).collect();
                ("kustomize", args, KUBECTL_INSTALL)
            } else {
                let args = std::iter::once("kustomize".into()).chain(open).collect();
                ("kubectl", args, KUBECTL_INSTALL)
            }
        }
        ManifestSource::HelmChart { release, values } => {
            let mut args: Vec<std::ffi::OsString> = vec![
                "template".into(),
                release.into(),
                dir.into(),
                "--namespace".into(),
                (&w.namespace).into(),
            ];
            for v in values {
                args.push("-f".into());
                args.push(v.into());
            }
            ("helm", args, HELM_INSTALL)
        }
    };
    let command = std::iter::once(tool.to_owned())
        .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    let out = std::process::Command::new(tool)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| WorkloadError::ToolMissing {
            tool: match tool {
                "helm" => "helm",
                "kustomize" => "kustomize",
                _ => "kubectl",
            },
            dir: dir.clone(),
            why: e.to_string(),
            install,
        })?;
    if !out.status.success() {
        return Err(WorkloadError::Render {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut objects = Vec::new();
    parse_docs(&text, &PathBuf::from(format!("`{command}`")), &mut objects)?;
    objects.sort_by_key(|o| kind(o) != Some("Namespace"));
    Ok(objects)
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// [`render`] from manifests already read from `workload.manifests` (the
/// loader reads a directory once for all of a file's variants).
pub(crate) fn render_from(
    scenario: &Scenario,
    mut objects: Vec<Value>,
) -> Result<Vec<Value>, WorkloadError> {
    let w = &scenario.workload;
    for o in objects.iter_mut() {
        set_namespace(o, &w.namespace);
    }
    apply_mitigations(&mut objects, w)?;
    for (i, p) in w.patches.iter().enumerate() {
        let mut matched = false;
        for o in objects.iter_mut() {
            if kind(o) == Some(p.kind.as_str())
                && p.name.as_deref().is_none_or(|n| name(o) == Some(n))
            {
                json_patch::merge(o, &p.patch);
                matched = true;
            }
        }
        if !matched {
            return Err(WorkloadError::PatchMatchesNothing {
                index: i + 1,
                kind: p.kind.clone(),
                name: p.name.clone(),
            });
        }
    }
    Ok(objects)
}

/// The `externalTrafficPolicy` of `service` in rendered manifests
/// (Kubernetes' default `Cluster` when unset), which decides the LB's probe.
pub fn traffic_policy(objects: &[Value], service: &str) -> TrafficPolicy {
    let svc = objects
        .iter()
        .find(|o| kind(o) == Some("Service") && name(o) == Some(service));
    match svc
        .and_then(|s| s.pointer("/spec/externalTrafficPolicy"))
        .and_then(Value::as_str)
    {
        Some("Local") => TrafficPolicy::Local,
        _ => TrafficPolicy::Cluster,
    }
}

/// Every object in `*.yaml`, `*.yml` and `*.json` files of `dir`, in file
/// name order, the items of a `kind: List` in its place; Namespaces first,
/// so the rest can land in them.
pub fn read_dir(dir: &Path) -> Result<Vec<Value>, WorkloadError> {
    let read_err = |source| WorkloadError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read_err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml" | "json")
                )
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(|source| WorkloadError::Read {
            path: path.clone(),
            source,
        })?;
        parse_docs(&text, &path, &mut out)?;
    }
    out.sort_by_key(|o| kind(o) != Some("Namespace"));
    Ok(out)
}

/// The objects of a multi-document YAML text (`path` names it in errors),
/// a `kind: List`'s items in its place.
fn parse_docs(text: &str, path: &Path, out: &mut Vec<Value>) -> Result<(), WorkloadError> {
    let docs: Vec<Value> =
        serde_saphyr::from_str_multiple(text).map_err(|e| WorkloadError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    for doc in docs {
        if doc.is_null() {
            continue;
        }
        let items = match doc.get("items") {
            Some(Value::Array(items)) if kind(&doc) == Some("List") => items.clone(),
            _ => vec![doc],
        };
        for item in items {
            if kind(&item).is_none() || name(&item).is_none() {
                return Err(WorkloadError::Incomplete {
                    path: path.to_path_buf(),
                });
            }
            out.push(item);
        }
    }
    Ok(())
}

fn kind(o: &Value) -> Option<&str> {
    o.get("kind")?.as_str()
}

fn name(o: &Value) -> Option<&str> {
    o.get("metadata")?.get("name")?.as_str()
}

const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "Node",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PriorityClass",
    "StorageClass",
    "PersistentVolume",
    "IngressClass",
];

fn set_namespace(o: &mut Value, namespace: &str) {
    if kind(o).is_some_and(|k| CLUSTER_SCOPED.contains(&k)) {
        return;
    }
    if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.entry("namespace")
            .or_insert_with(|| Value::String(namespace.to_string()));
    }
}

/// `o[path…]` as a mutable object, creating empty objects on the way.
fn obj<'a>(o: &'a mut Value, path: &[&str]) -> &'a mut Map<String, Value> {
    let mut cur = o;
    for seg in path {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        cur = cur
            .as_object_mut()
            .expect("made an object above")
            .entry(seg.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if !cur.is_object() {
        *cur = Value::Object(Map::new());
    }
    cur.as_object_mut().expect("made an object above")
}

fn apply_mitigations(objects: &mut Vec<Value>, w: &Workload) -> Result<(), WorkloadError> {
    let m = &w.mitigations;
    let dep_idx = objects
        .iter()
        .position(|o| kind(o) == Some("Deployment") && name(o) == Some(w.deployment.as_str()))
        .ok_or_else(|| WorkloadError::Missing {
            dir: w.manifests.clone(),
            kind: "Deployment",
            name: w.deployment.clone(),
            field: "deployment",
        })?;
    let svc_idx = objects
        .iter()
        .position(|o| kind(o) == Some("Service") && name(o) == Some(w.service.as_str()))
        .ok_or_else(|| WorkloadError::Missing {
            dir: w.manifests.clone(),
            kind: "Service",
            name: w.service.clone(),
            field: "service",
        })?;
    let match_labels = objects[dep_idx]
        .pointer("/spec/selector/matchLabels")
        .filter(|v| v.as_object().is_some_and(|m| !m.is_empty()))
        .cloned()
        .ok_or_else(|| WorkloadError::NoSelector(w.deployment.clone()))?;

    if let Some(p) = m.external_traffic_policy {
        obj(&mut objects[svc_idx], &["spec"]).insert(
            "externalTrafficPolicy".into(),
            json!(match p {
                TrafficPolicy::Local => "Local",
                TrafficPolicy::Cluster => "Cluster",
            }),
        );
    }

    let dep = &mut objects[dep_idx];
    if let Some(r) = m.replicas {
        obj(dep, &["spec"]).insert("replicas".into(), json!(r));
    }
    if let Some(d) = m.min_ready {
        obj(dep, &["spec"]).insert("minReadySeconds".into(), json!(d.get().as_secs()));
    }
    if m.max_unavailable.is_some() || m.max_surge.is_some() {
        let strategy = obj(dep, &["spec", "strategy"]);
        strategy.insert("type".into(), json!("RollingUpdate"));
        let ru = strategy
            .entry("rollingUpdate")
            .or_insert_with(|| json!({}))
            .as_object_mut();
        if let Some(ru) = ru {
            if let Some(u) = &m.max_unavailable {
                ru.insert("maxUnavailable".into(), u.to_json());
            }
            if let Some(s) = &m.max_surge {
                ru.insert("maxSurge".into(), s.to_json());
            }
        }
    }
    if let Some(d) = m.termination_grace_period {
        obj(dep, &["spec", "template", "spec"]).insert(
            "terminationGracePeriodSeconds".into(),
            json!(d.get().as_secs()),
        );
    }
    if let Some(s) = m.spread {
        let pod_spec = obj(dep, &["spec", "template", "spec"]);
        let selector = json!({"matchLabels": match_labels.clone()});
        if let Some(aff) = pod_spec.get_mut("affinity").and_then(Value::as_object_mut) {
            aff.remove("podAntiAffinity");
            if aff.is_empty() {
                pod_spec.remove("affinity");
            }
        }
        pod_spec.remove("topologySpreadConstraints");
        let host = "kubernetes.io/hostname";
        match s {
            Spread::None => {}
            Spread::Preferred => {
                let aff = pod_spec
                    .entry("affinity")
                    .or_insert_with(|| json!({}))
                    .as_object_mut()
                    .expect("object");
                aff.insert(
                    "podAntiAffinity".into(),
                    json!({"preferredDuringSchedulingIgnoredDuringExecution": [{
                        "weight": 100,
                        "podAffinityTerm": {"labelSelector": selector, "topologyKey": host}
                    }]}),
                );
                pod_spec.insert(
                    "topologySpreadConstraints".into(),
                    json!([{"maxSkew": 1, "topologyKey": host,
                            "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": selector}]),
                );
            }
            Spread::Required => {
                let aff = pod_spec
                    .entry("affinity")
                    .or_insert_with(|| json!({}))
                    .as_object_mut()
                    .expect("object");
                aff.insert(
                    "podAntiAffinity".into(),
                    json!({"requiredDuringSchedulingIgnoredDuringExecution": [{
                        "labelSelector": selector, "topologyKey": host
                    }]}),
                );
            }
        }
    }

    // Container-level mitigations.
    let containers = dep
        .pointer_mut("/spec/template/spec/containers")
        .and_then(Value::as_array_mut);
    let container = match containers {
        Some(cs) => match &w.container {
            Some(n) => cs
                .iter_mut()
                .find(|c| c.get("name").and_then(Value::as_str) == Some(n.as_str())),
            None => cs.first_mut(),
        },
        None => None,
    };
    let Some(c) = container else {
        return Err(WorkloadError::NoContainer {
            deployment: w.deployment.clone(),
            container: w.container.clone().unwrap_or_else(|| "(any)".into()),
        });
    };
    if let Some(d) = m.pre_stop_sleep {
        let secs = d.get().as_secs();
        let lifecycle = obj(c, &["lifecycle"]);
        if secs == 0 {
            lifecycle.remove("preStop");
        } else {
            lifecycle.insert(
                "preStop".into(),
                match m.pre_stop_sleep_mode {
                    PreStopSleepMode::Exec => {
                        json!({"exec": {"command": ["sleep", secs.to_string()]}})
                    }
                    PreStopSleepMode::Action => json!({"sleep": {"seconds": secs}}),
                },
            );
        }
        if lifecycle.is_empty() {
            c.as_object_mut().expect("object").remove("lifecycle");
        }
    }
    if let Some(sig) = &m.stop_signal {
        obj(c, &["lifecycle"]).insert("stopSignal".into(), json!(sig));
    }
    match &m.readiness_probe {
        None => {}
        Some(Switch::Off) => {
            c.as_object_mut().expect("object").remove("readinessProbe");
        }
        Some(Switch::On(p)) => {
            let port = p
                .port
                .map(|p| json!(p))
                .or_else(|| c.pointer("/ports/0/containerPort").cloned())
                .unwrap_or(json!(80));
            c.as_object_mut().expect("object").insert(
                "readinessProbe".into(),
                json!({
                    "httpGet": {"path": p.path, "port": port},
                    "periodSeconds": p.period.get().as_secs(),
                    "timeoutSeconds": p.timeout.get().as_secs(),
                    "failureThreshold": p.failure_threshold,
                    "successThreshold": p.success_threshold,
                    "initialDelaySeconds": p.initial_delay.get().as_secs(),
                }),
            );
        }
    }

    match &m.pdb {
        None => {}
        Some(Switch::Off) => objects.retain(|o| kind(o) != Some("PodDisruptionBudget")),
        Some(Switch::On(p)) => {
            let (set, clear, value) = match p {
                Pdb::MinAvailable(v) => ("minAvailable", "maxUnavailable", v.to_json()),
                Pdb::MaxUnavailable(v) => ("maxUnavailable", "minAvailable", v.to_json()),
            };
            let idx = objects
                .iter()
                .position(|o| kind(o) == Some("PodDisruptionBudget"));
            let pdb = match idx {
                Some(i) => &mut objects[i],
                None => {
                    objects.push(json!({
                        "apiVersion": "policy/v1",
                        "kind": "PodDisruptionBudget",
                        "metadata": {"name": w.deployment, "namespace": w.namespace},
                        "spec": {"selector": {"matchLabels": match_labels}},
                    }));
                    objects.last_mut().expect("just pushed")
                }
            };
            let spec = obj(pdb, &["spec"]);
            spec.remove(clear);
            spec.insert(set.into(), value);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_deletes_with_null() {
        let mut t = json!({"a": 1, "b": {"c": 2, "d": 3}});
        json_patch::merge(&mut t, &json!({"a": null, "b": {"c": null, "e": [1]}}));
        assert_eq!(t, json!({"b": {"d": 3, "e": [1]}}));
    }
}
