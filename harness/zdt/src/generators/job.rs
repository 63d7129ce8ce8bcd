//! The objects a scaled-out run creates: an indexed Job of N generator
//! pods, the barrier ConfigMap they read the start time from, and (where
//! the API server checks who asks) a ServiceAccount allowed to read it.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::lines::Config;
use super::SUBCOMMAND;

/// The Job's name (one scaled-out traffic per namespace at a time).
pub const JOB: &str = "zdt-generators";
/// The barrier ConfigMap's name.
pub const BARRIER: &str = "zdt-generators-start";
/// The ServiceAccount, Role and RoleBinding's name.
pub const ACCOUNT: &str = "zdt-generator";
/// The label every generator pod carries (`zdt.dev/role=generator`).
pub const ROLE_LABEL: (&str, &str) = ("zdt.dev/role", "generator");
/// The Job's backoffLimit: more failures than a run can see.
pub const BACKOFF_LIMIT: i32 = 1000;
/// The generator container's name.
pub const CONTAINER: &str = "generator";

/// What the Job is made of.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub count: u32,
    /// The image: `zdt-local:<hash>` on kind (and on the emulator, which
    /// runs its own binary for that repository), `traffic.image` elsewhere.
    pub image: String,
    /// Each pod's settings.
    pub config: Config,
    /// `traffic.generatorNodeSelector`; when empty, `avoid` applies.
    pub node_selector: std::collections::BTreeMap<String, String>,
    /// Nodes the chaos timeline names: generators stay off them.
    pub avoid: BTreeSet<String>,
    /// Create the ServiceAccount, Role and RoleBinding (a real cluster).
    pub rbac: bool,
}

fn labels() -> Value {
    json!({
        ROLE_LABEL.0: ROLE_LABEL.1,
        "app.kubernetes.io/managed-by": "zdt",
    })
}

/// The objects, in the order they are applied (the Job last: its pods
/// need the rest).
pub fn objects(spec: &JobSpec) -> Vec<Value> {
    let ns = &spec.config.namespace;
    let mut out = Vec::new();
    if spec.rbac {
        out.push(json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": ACCOUNT, "namespace": ns, "labels": labels()},
        }));
        out.push(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": ACCOUNT, "namespace": ns, "labels": labels()},
            "rules": [{
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": [BARRIER],
                "verbs": ["get"],
            }],
        }));
        out.push(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": ACCOUNT, "namespace": ns, "labels": labels()},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ACCOUNT},
            "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": ns}],
        }));
    }
    out.push(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": BARRIER, "namespace": ns, "labels": labels()},
        "data": {},
    }));
    let mut pod = json!({
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 30,
        "containers": [{
            "name": CONTAINER,
            "image": spec.image,
            "imagePullPolicy": "IfNotPresent",
            "args": [SUBCOMMAND],
            "env": [{
                "name": super::CONFIG_ENV,
                "value": serde_json::to_string(&spec.config).expect("settings serialise"),
            }],
        }],
        // Spread over nodes: scaling out is for more source addresses and
        // more of each node's connection tracking.
        "affinity": {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [{
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {ROLE_LABEL.0: ROLE_LABEL.1}},
                    },
                }],
            },
        },
        // The control plane is never drained by a scenario: generators may
        // run there.
        "tolerations": [{
            "key": "node-role.kubernetes.io/control-plane",
            "operator": "Exists",
            "effect": "NoSchedule",
        }],
    });
    if spec.rbac {
        pod["serviceAccountName"] = json!(ACCOUNT);
    }
    if !spec.node_selector.is_empty() {
        pod["nodeSelector"] = json!(spec.node_selector);
    } else if !spec.avoid.is_empty() {
        pod["affinity"]["nodeAffinity"] = json!({
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{
                    "matchExpressions": [{
                        "key": "kubernetes.io/hostname",
                        "operator": "NotIn",
                        "values": spec.avoid,
                    }],
                }],
            },
        });
    }
    out.push(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": JOB, "namespace": ns, "labels": labels()},
        "spec": {
            "completionMode": "Indexed",
            "completions": spec.count,
            "parallelism": spec.count,
            // Not 0: a Job past its backoffLimit deletes its running pods,
            // so one lost generator would take the others with it. A
            // replacement pod the controller starts instead is harmless:
            // it finds the start time passed and exits (zdt follows only
            // the pods it started with, and reports the lost one).
            "backoffLimit": BACKOFF_LIMIT,
            "template": {
                "metadata": {"labels": labels()},
                "spec": pod,
            },
        },
    }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn spec(rbac: bool) -> JobSpec {
        JobSpec {
            count: 2,
            image: "zdt-local:abc".into(),
            config: Config {
                settings: zdt_traffic::Settings::new(
                    "http://172.18.0.200:80/",
                    "1000/s".parse().unwrap(),
                    Duration::from_secs(30),
                )
                .unwrap(),
                namespace: "web".into(),
                barrier: BARRIER.into(),
                start_timeout: Duration::from_secs(120),
                clock_bound: super::super::CLOCK_BOUND,
            },
            node_selector: Default::default(),
            avoid: ["zdt-worker2".to_string()].into(),
            rbac,
        }
    }

    #[test]
    fn an_indexed_job_off_the_disrupted_nodes_with_its_settings() {
        let objs = objects(&spec(true));
        let kinds: Vec<&str> = objs.iter().map(|o| o["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            ["ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Job"]
        );
        let job = objs.last().unwrap();
        assert_eq!(job["spec"]["completionMode"], "Indexed");
        assert_eq!(job["spec"]["completions"], 2);
        assert_eq!(job["spec"]["parallelism"], 2);
        assert_eq!(job["spec"]["backoffLimit"], BACKOFF_LIMIT);
        let pod = &job["spec"]["template"]["spec"];
        assert_eq!(pod["serviceAccountName"], ACCOUNT);
        assert_eq!(pod["containers"][0]["args"], json!(["generator"]));
        let env = pod["containers"][0]["env"][0]["value"].as_str().unwrap();
        let back: Config = serde_json::from_str(env).unwrap();
        assert_eq!(back.settings.load, spec(true).config.settings.load);
        let not_in = &pod["affinity"]["nodeAffinity"]
            ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
            ["matchExpressions"][0];
        assert_eq!(not_in["operator"], "NotIn");
        assert_eq!(not_in["values"], json!(["zdt-worker2"]));
        // The Role reads the barrier and nothing else.
        assert_eq!(objs[1]["rules"][0]["resourceNames"], json!([BARRIER]));
        assert_eq!(objs[1]["rules"][0]["verbs"], json!(["get"]));
    }

    #[test]
    fn a_node_selector_replaces_the_anti_affinity_and_no_rbac_on_the_emulator() {
        let mut s = spec(false);
        s.node_selector = [("zdt/generators".to_string(), "yes".to_string())].into();
        let objs = objects(&s);
        assert_eq!(objs.len(), 2);
        let pod = &objs[1]["spec"]["template"]["spec"];
        assert_eq!(pod["nodeSelector"]["zdt/generators"], "yes");
        assert!(pod["affinity"].get("nodeAffinity").is_none());
        assert!(pod.get("serviceAccountName").is_none());
    }
}
