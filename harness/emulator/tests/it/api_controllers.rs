//! The emulator's controllers, observed through the store: scheduler
//! spread and anti-affinity, rolling updates within maxSurge /
//! maxUnavailable, EndpointSlice conditions per Kubernetes version, and
//! node lifecycle after a kubelet stops.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use zdt_core::clock::Clock;
use zdt_core::events::EventSink;
use zdt_core::units::Dur;
use zdt_emulator::controllers::{pod_active, pod_ready};
use zdt_emulator::store::{DeleteOptions, Resource};
use zdt_emulator::{apiserver as api, Emulator, EmulatorConfig, KubeVersion, NodeFault, Timings};

use super::support::{deployment_value, until};

async fn emulator(workers: usize, version: KubeVersion, timings: Timings) -> Emulator {
    Emulator::start_simulated(
        EmulatorConfig {
            workers,
            kubernetes: version,
            timings,
            ..EmulatorConfig::default()
        },
        EventSink::discard(Clock::start()),
    )
    .await
    .unwrap()
}

fn fast() -> Timings {
    Timings {
        pod_start_delay: Dur::from_millis(100),
        ..Timings::default()
    }
}

fn apply(emu: &Emulator, obj: Value) -> Value {
    api::apply_object(emu.store(), &emu.config().timings, obj).unwrap()
}

fn pods_of(emu: &Emulator, app: &str) -> Vec<Value> {
    emu.store()
        .list(Resource::Pods, Some("default"))
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["app"] == app)
        .collect()
}

fn per_node(pods: &[Value]) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for p in pods {
        if let Some(n) = p["spec"]["nodeName"].as_str() {
            *m.entry(n.to_owned()).or_insert(0) += 1;
        }
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_spreads_respects_taints_and_anti_affinity() {
    let emu = emulator(3, KubeVersion::V1_31, fast()).await;
    // Least-pods spreading, never on the tainted control plane.
    apply(&emu, deployment_value("plain", 6, json!({}), json!({})));
    // Topology spread that honours taints: 2 per worker.
    apply(
        &emu,
        deployment_value(
            "spread",
            6,
            json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "DoNotSchedule", "nodeTaintsPolicy": "Honor",
                "labelSelector": {"matchLabels": {"app": "spread"}}}]}),
            json!({}),
        ),
    );
    // Required anti-affinity: 4 replicas, 3 workers → one stays Pending.
    apply(
        &emu,
        deployment_value(
            "anti",
            4,
            json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "anti"}}, "topologyKey": "kubernetes.io/hostname"}]}}}),
            json!({}),
        ),
    );
    until(&emu, 10, "pods placed", |e| {
        pods_of(e, "plain")
            .iter()
            .filter(|p| p["spec"]["nodeName"].is_string())
            .count()
            == 6
            && pods_of(e, "spread")
                .iter()
                .filter(|p| p["spec"]["nodeName"].is_string())
                .count()
                == 6
            && pods_of(e, "anti")
                .iter()
                .filter(|p| p["spec"]["nodeName"].is_string())
                .count()
                == 3
            && pods_of(e, "anti").iter().any(|p| {
                p["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "PodScheduled" && c["reason"] == "Unschedulable")
                })
            })
    })
    .await;
    for app in ["plain", "spread"] {
        let m = per_node(&pods_of(&emu, app));
        assert!(!m.contains_key("zdt-control-plane"), "{app}: {m:?}");
        assert_eq!(
            m.values().copied().collect::<Vec<_>>(),
            [2, 2, 2],
            "{app}: {m:?}"
        );
    }
    let anti = pods_of(&emu, "anti");
    let m = per_node(&anti);
    assert_eq!(m.values().copied().collect::<Vec<_>>(), [1, 1, 1], "{m:?}");
    let pending = anti
        .iter()
        .find(|p| p["spec"]["nodeName"].is_null())
        .unwrap();
    let msg = pending["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "PodScheduled")
        .unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(msg.starts_with("0/4 nodes are available"), "{msg}");
    assert!(msg.contains("1 node(s) had untolerated taint(s)"), "{msg}");
    assert!(
        msg.contains("3 node(s) didn't match pod anti-affinity rules"),
        "{msg}"
    );

    // Cordoning a node sends new pods elsewhere.
    let mut node = emu.store().get(Resource::Nodes, "", "zdt-worker").unwrap();
    node["spec"]["unschedulable"] = json!(true);
    emu.store().update(Resource::Nodes, node).unwrap();
    apply(&emu, deployment_value("late", 4, json!({}), json!({})));
    until(&emu, 10, "late pods placed", |e| {
        pods_of(e, "late")
            .iter()
            .filter(|p| p["spec"]["nodeName"].is_string())
            .count()
            == 4
    })
    .await;
    let m = per_node(&pods_of(&emu, "late"));
    assert!(
        !m.contains_key("zdt-worker") && !m.contains_key("zdt-control-plane"),
        "{m:?}"
    );
    emu.shutdown().await;
}

/// Roll a Deployment and check the surge/unavailability bounds on every
/// store change along the way.
async fn roll_and_check(
    max_surge: Value,
    max_unavailable: Value,
    replicas: i64,
    surge_bound: i64,
    unavailable_bound: i64,
) {
    let emu = emulator(
        4,
        KubeVersion::V1_31,
        Timings {
            pod_start_delay: Dur::from_millis(150),
            ..Timings::default()
        },
    )
    .await;
    apply(
        &emu,
        deployment_value(
            "web",
            replicas,
            json!({}),
            json!({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": max_surge, "maxUnavailable": max_unavailable}}}),
        ),
    );
    let ready_now = |e: &Emulator| {
        pods_of(e, "web")
            .iter()
            .filter(|p| pod_active(p) && pod_ready(p))
            .count() as i64
    };
    until(&emu, 10, "initial rollout", |e| ready_now(e) == replicas).await;
    let patch = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
        "spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}}}}});
    apply(&emu, patch);
    let mut changed = emu.store().subscribe();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut max_pods, mut min_ready) = (0i64, i64::MAX);
    loop {
        let pods = pods_of(&emu, "web");
        // Pods that exist and are not being deleted (what maxSurge bounds).
        let active = pods.iter().filter(|p| pod_active(p)).count() as i64;
        let ready = ready_now(&emu);
        max_pods = max_pods.max(active);
        min_ready = min_ready.min(ready);
        let d = emu
            .store()
            .get(Resource::Deployments, "default", "web")
            .unwrap();
        let s = &d["status"];
        if s["updatedReplicas"] == replicas
            && s["availableReplicas"] == replicas
            && s["replicas"] == replicas
            && s["observedGeneration"] == d["metadata"]["generation"]
        {
            break;
        }
        assert!(Instant::now() < deadline, "rollout did not finish: {s}");
        let _ = tokio::time::timeout(Duration::from_millis(200), changed.changed()).await;
    }
    assert!(
        max_pods <= replicas + surge_bound,
        "surge exceeded: {max_pods} pods for {replicas} replicas"
    );
    assert!(
        min_ready >= replicas - unavailable_bound,
        "too many unavailable: {min_ready} ready"
    );
    // Every pod now carries the new template.
    for p in pods_of(&emu, "web").iter().filter(|p| pod_active(p)) {
        assert_eq!(
            p["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"],
            "2026-01-01T00:00:00Z"
        );
    }
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_surge_one_unavailable_zero() {
    roll_and_check(json!(1), json!(0), 4, 1, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_percentages_round_like_upstream() {
    // 25% of 4: surge rounds up to 1, unavailable rounds down to 1.
    roll_and_check(json!("25%"), json!("25%"), 4, 1, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_surge_zero_unavailable_two() {
    roll_and_check(json!(0), json!(2), 4, 0, 2).await;
}

fn slice_endpoints(emu: &Emulator, svc: &str) -> Vec<Value> {
    emu.store()
        .list(Resource::EndpointSlices, Some("default"))
        .into_iter()
        .filter(|s| s["metadata"]["labels"]["kubernetes.io/service-name"] == svc)
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// One pod behind a Service on a stopped node (so it stays terminating
/// once deleted); returns the slice endpoints before and after deletion.
async fn terminating_endpoint(version: KubeVersion) -> (Vec<Value>, Vec<Value>, Value) {
    let emu = emulator(1, version, fast()).await;
    apply(
        &emu,
        deployment_value(
            "web",
            1,
            json!({"containers": [{"name": "web", "image": "nginx", "ports": [{"name": "http", "containerPort": 8080}]}]}),
            json!({}),
        ),
    );
    apply(
        &emu,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
               "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "selector": {"app": "web"},
                        "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}),
    );
    until(&emu, 10, "endpoint ready", |e| {
        slice_endpoints(e, "web")
            .iter()
            .any(|ep| ep["conditions"]["ready"] == true)
    })
    .await;
    let before = slice_endpoints(&emu, "web");
    let svc = emu
        .store()
        .get(Resource::Services, "default", "web")
        .unwrap();
    emu.node_fault("zdt-worker", NodeFault::Stop).unwrap();
    let pod = pods_of(&emu, "web").remove(0);
    let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
    emu.store()
        .write(|st| st.delete(Resource::Pods, "default", &name, &DeleteOptions::default()))
        .unwrap();
    until(&emu, 5, "slice updated", |e| {
        slice_endpoints(e, "web") != before
    })
    .await;
    let after = slice_endpoints(&emu, "web");
    emu.shutdown().await;
    (before, after, svc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_conditions_follow_the_version() {
    let (before, after, svc) = terminating_endpoint(KubeVersion::V1_27).await;
    assert_eq!(before.len(), 1);
    assert_eq!(
        before[0]["conditions"],
        json!({"ready": true, "serving": true, "terminating": false})
    );
    assert_eq!(before[0]["nodeName"], "zdt-worker");
    assert_eq!(before[0]["targetRef"]["kind"], "Pod");
    // Terminating pods stay, not ready, still serving (≥ 1.22 / GA 1.26).
    assert_eq!(after.len(), 1);
    assert_eq!(
        after[0]["conditions"],
        json!({"ready": false, "serving": true, "terminating": true})
    );
    // Service allocations: clusterIP, nodePort, healthCheckNodePort.
    assert!(svc["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .starts_with("10.96."));
    let np = svc["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    let hc = svc["spec"]["healthCheckNodePort"].as_i64().unwrap();
    assert!((30000..=32767).contains(&np) && (30000..=32767).contains(&hc) && np != hc);

    // Before the terminating condition existed, the pod simply left.
    let (before, after, _) = terminating_endpoint(KubeVersion::new(1, 21)).await;
    assert_eq!(before[0]["conditions"], json!({"ready": true}));
    assert!(after.is_empty(), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_node_goes_not_ready_after_the_grace_period() {
    let timings = Timings {
        pod_start_delay: Dur::from_millis(50),
        node_monitor_grace_period: Dur::from_millis(600),
        default_not_ready_toleration: Dur::from_secs(2),
        ..Timings::default()
    };
    let emu = emulator(2, KubeVersion::V1_31, timings).await;
    apply(&emu, deployment_value("web", 2, json!({}), json!({})));
    until(&emu, 5, "2 ready", |e| {
        pods_of(e, "web").iter().filter(|p| pod_ready(p)).count() == 2
    })
    .await;
    let victim = pods_of(&emu, "web")
        .into_iter()
        .find(|p| p["spec"]["nodeName"] == "zdt-worker")
        .expect("one pod per worker");
    let t0 = Instant::now();
    emu.node_fault("zdt-worker", NodeFault::Stop).unwrap();
    let ready = |e: &Emulator| {
        let n = e.store().get(Resource::Nodes, "", "zdt-worker").unwrap();
        n["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(ready(&emu), "True", "not before the grace period");
    until(&emu, 5, "node Unknown", |e| ready(e) == "Unknown").await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(550),
        "NotReady too early: {took:?}"
    );
    let node = emu.store().get(Resource::Nodes, "", "zdt-worker").unwrap();
    let taints: Vec<&str> = node["spec"]["taints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["effect"].as_str().unwrap())
        .collect();
    assert!(
        taints.contains(&"NoExecute") && taints.contains(&"NoSchedule"),
        "{node}"
    );
    let name = victim["metadata"]["name"].as_str().unwrap().to_owned();
    let p = emu.store().get(Resource::Pods, "default", &name).unwrap();
    assert!(!pod_ready(&p), "pods on the lost node are marked not ready");
    // After the toleration (2 s here, 300 s upstream) the taint manager
    // evicts; the pod stays Terminating because its kubelet is gone.
    until(&emu, 6, "taint eviction", |e| {
        e.store()
            .get(Resource::Pods, "default", &name)
            .is_some_and(|p| p["metadata"]["deletionTimestamp"].is_string())
    })
    .await;
    // A replacement runs on the healthy worker.
    until(&emu, 5, "replacement", |e| {
        pods_of(e, "web")
            .iter()
            .filter(|p| pod_active(p) && pod_ready(p) && p["spec"]["nodeName"] == "zdt-worker2")
            .count()
            == 2
    })
    .await;
    emu.node_fault("zdt-worker", NodeFault::Resume).unwrap();
    until(&emu, 5, "node Ready again", |e| ready(e) == "True").await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_ready_seconds_delays_availability() {
    let emu = emulator(3, KubeVersion::V1_31, fast()).await;
    apply(
        &emu,
        deployment_value("web", 3, json!({}), json!({"minReadySeconds": 2})),
    );
    until(&emu, 10, "3 ready", |e| {
        pods_of(e, "web").iter().filter(|p| pod_ready(p)).count() == 3
    })
    .await;
    let t_ready = Instant::now();
    let status = |e: &Emulator| {
        e.store()
            .get(Resource::Deployments, "default", "web")
            .unwrap()["status"]
            .clone()
    };
    until(&emu, 2, "readyReplicas 3", |e| {
        status(e)["readyReplicas"] == 3
    })
    .await;
    // Ready, but not yet ready for minReadySeconds: not available.
    assert_eq!(status(&emu)["availableReplicas"], 0, "{}", status(&emu));
    until(&emu, 6, "available after minReadySeconds", |e| {
        status(e)["availableReplicas"] == 3
    })
    .await;
    // Timestamps have one-second resolution, like the API's.
    assert!(
        t_ready.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t_ready.elapsed()
    );
    emu.shutdown().await;
}
