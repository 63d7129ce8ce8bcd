//! `scenario::workload::render`: mitigations become real manifest changes.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use zdt_scenario::{self as scenario, workload};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn find<'a>(objs: &'a [Value], kind: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {objs:#?}"))
}

fn variant(file: &str, name: &str) -> scenario::Scenario {
    scenario::load(repo().join(file))
        .unwrap()
        .variant(name)
        .unwrap()
}

#[test]
fn published_setup_renders_every_mitigation() {
    let s = variant("scenarios/seed-drain.yaml", "published");
    let objs = workload::render(&s).unwrap();
    let dep = find(&objs, "Deployment");
    let pod = &dep["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(dep["spec"]["replicas"], 3);
    assert_eq!(dep["metadata"]["namespace"], "default");
    // Kubernetes 1.27 has no native sleep action: exec `sleep 5`.
    assert_eq!(
        c["lifecycle"]["preStop"],
        json!({"exec": {"command": ["sleep", "5"]}})
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({"path": "/", "port": 80})
    );
    assert_eq!(c["readinessProbe"]["periodSeconds"], 2);
    assert_eq!(pod["terminationGracePeriodSeconds"], 30);
    assert_eq!(
        pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
            ["topologyKey"],
        "kubernetes.io/hostname"
    );
    assert_eq!(
        find(&objs, "Service")["spec"]["externalTrafficPolicy"],
        "Local"
    );
    assert_eq!(
        workload::traffic_policy(&objs, "nginx"),
        scenario::TrafficPolicy::Local
    );
    // Azure: every 5 s, 2 failures.
    let probe = s.load_balancer.probe(true);
    assert_eq!(
        (probe.interval.get().as_secs(), probe.unhealthy_threshold),
        (5, 2)
    );
    let pdb = find(&objs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert!(pdb["spec"].get("minAvailable").is_none());
    // The ConfigMap with the X-Pod/X-Node template is passed through.
    assert!(find(&objs, "ConfigMap")["data"]["default.conf.template"]
        .as_str()
        .unwrap()
        .contains("X-Node"));
}

#[test]
fn newer_kubernetes_uses_the_native_sleep_action() {
    let s = variant("scenarios/seed-drain.yaml", "k8s-1.31");
    let objs = workload::render(&s).unwrap();
    let c = &find(&objs, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["lifecycle"]["preStop"], json!({"sleep": {"seconds": 15}}));
}

#[test]
fn no_mitigation_removes_what_the_base_added() {
    let s = variant("scenarios/seed-drain.yaml", "no-mitigation");
    let objs = workload::render(&s).unwrap();
    let c = &find(&objs, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert!(c.get("readinessProbe").is_none(), "{c:#}");
    assert!(c.get("lifecycle").is_none(), "{c:#}");
    assert_eq!(
        find(&objs, "Service")["spec"]["externalTrafficPolicy"],
        "Cluster"
    );
}

#[test]
fn rolling_update_strategy_and_stop_signal() {
    let s = variant("scenarios/rolling-update.yaml", "max-unavailable-1");
    let objs = workload::render(&s).unwrap();
    assert_eq!(
        find(&objs, "Deployment")["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
    );
    let s = variant("scenarios/keepalive-drain.yaml", "sigterm");
    let objs = workload::render(&s).unwrap();
    let c = &find(&objs, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["lifecycle"]["stopSignal"], "SIGTERM");
}
