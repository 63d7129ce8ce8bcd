//! What a kind run waits for before traffic, and what it does after a node
//! fault is undone, at the boundaries: a stub API server answering the
//! list calls with canned objects (the readiness waits), and zdt's real LB
//! with its HTTP admin API in this process (a resumed node's backend
//! following the node's new address). No kind cluster is involved.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use zdt_cluster::kind::{nodes_not_ready, wait_nodes_ready, KindError};
use zdt_cluster::lb_container::follow_backend;
use zdt_cluster::metallb::{self, MetallbError};
use zdt_core::clock::Clock;
use zdt_core::events::EventSink;
use zdt_core::units::Dur;
use zdt_lb::testing::TestBackend;
use zdt_lb::{AdminClient, BackendConfig, Health, Lb, LbConfig, ProbeSettings};

/// A stub API server: GET of a path in the table answers its JSON, any
/// other path a 404 Status. The table can be changed while it serves.
#[derive(Clone, Default)]
struct StubApi(Arc<Mutex<HashMap<String, Value>>>);

impl StubApi {
    fn set(&self, path: &str, body: Value) {
        self.0.lock().unwrap().insert(path.to_owned(), body);
    }

    async fn serve(&self) -> kube::Client {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let table = self.0.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let table = table.clone();
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let mut headers = [httparse::EMPTY_HEADER; 32];
                    let mut parsed = httparse::Request::new(&mut headers);
                    let _ = parsed.parse(&req);
                    let path = parsed.path.unwrap_or("").split('?').next().unwrap_or("");
                    let found = table.lock().unwrap().get(path).cloned();
                    let (status, body) = match found {
                        Some(b) => ("200 OK", b),
                        None => (
                            "404 Not Found",
                            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                   "reason": "NotFound", "code": 404, "message": path}),
                        ),
                    };
                    let body = body.to_string();
                    let _ = s
                        .write_all(
                            format!(
                                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\
                                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                                body.len()
                            )
                            .as_bytes(),
                        )
                        .await;
                });
            }
        });
        client(&format!("http://{addr}"))
    }
}

fn client(url: &str) -> kube::Client {
    let mut config = kube::Config::new(url.parse().unwrap());
    config.default_retry = false;
    kube::Client::try_from(config).unwrap()
}

fn node(name: &str, control_plane: bool, ready: &str, reason: &str) -> Value {
    let labels = if control_plane {
        json!({"node-role.kubernetes.io/control-plane": ""})
    } else {
        json!({})
    };
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "status": {"conditions": [{"type": "Ready", "status": ready, "reason": reason,
                                   "message": format!("{reason} on {name}")}]}
    })
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "1"}, "items": items})
}

const NODES: &str = "/api/v1/nodes";

/// A client of a stub API server whose node list is `nodes`.
async fn nodes_api(nodes: Vec<Value>) -> kube::Client {
    let api = StubApi::default();
    api.set(NODES, list("NodeList", nodes));
    api.serve().await
}

#[tokio::test]
async fn every_node_ready_and_every_worker_registered_is_ready() {
    let client = nodes_api(vec![
        node("zdt-x-control-plane", true, "True", "KubeletReady"),
        node("zdt-x-worker", false, "True", "KubeletReady"),
        node("zdt-x-worker2", false, "True", "KubeletReady"),
    ])
    .await;
    wait_nodes_ready(&client, "zdt-x", 2, Duration::from_secs(5))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_worker_not_ready_or_not_registered_is_named_in_the_reason() {
    let client = nodes_api(vec![
        node("zdt-x-control-plane", true, "True", "KubeletReady"),
        node("zdt-x-worker", false, "False", "KubeletNotReady"),
    ])
    .await;
    let err = wait_nodes_ready(&client, "zdt-x", 2, Duration::from_millis(10))
        .await
        .unwrap_err();
    let KindError::NodesNotReady { waiting, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        waiting,
        "zdt-x-worker Ready=False (KubeletNotReady: KubeletNotReady on zdt-x-worker); \
         1 of 2 worker node(s) registered"
    );
    let text = err.to_string();
    assert!(
        text.starts_with("kind cluster zdt-x: nodes not Ready after"),
        "{text}"
    );
}

#[test]
fn a_node_without_a_ready_condition_is_not_ready() {
    let mut n = node("zdt-x-worker", false, "True", "KubeletReady");
    n["status"] = json!({});
    let nodes = vec![serde_json::from_value(n).unwrap()];
    assert_eq!(
        nodes_not_ready(&nodes, 1).as_deref(),
        Some("zdt-x-worker has no Ready condition yet")
    );
}

#[tokio::test]
async fn an_api_that_does_not_answer_ends_the_node_wait_at_once() {
    // Nothing listens there: the error comes back, not after the timeout.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let client = client(&format!("http://127.0.0.1:{port}"));
    let started = std::time::Instant::now();
    let err = wait_nodes_ready(&client, "zdt-x", 1, Duration::from_secs(600))
        .await
        .unwrap_err();
    assert!(matches!(err, KindError::ListNodes { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}

const METALLB_DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/metallb-system/deployments";
const METALLB_DAEMONSETS: &str = "/apis/apps/v1/namespaces/metallb-system/daemonsets";

fn controller(available: i32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "controller", "namespace": "metallb-system", "generation": 1},
        "spec": {"replicas": 1, "selector": {}, "template": {}},
        "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
                   "readyReplicas": available, "availableReplicas": available}
    })
}

fn speaker(desired: i32, ready: i32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "speaker", "namespace": "metallb-system", "generation": 1},
        "spec": {"selector": {}, "template": {}},
        "status": {"observedGeneration": 1, "desiredNumberScheduled": desired,
                   "currentNumberScheduled": desired, "updatedNumberScheduled": desired,
                   "numberReady": ready, "numberMisscheduled": 0}
    })
}

#[tokio::test]
async fn metallb_waits_for_its_speakers_not_only_its_controller() {
    let api = StubApi::default();
    api.set(
        METALLB_DEPLOYMENTS,
        list("DeploymentList", vec![controller(1)]),
    );
    api.set(
        METALLB_DAEMONSETS,
        list("DaemonSetList", vec![speaker(4, 3)]),
    );
    let client = api.serve().await;
    // The controller alone is ready: not enough.
    let err = metallb::wait_ready(&client, Duration::from_millis(10))
        .await
        .unwrap_err();
    let MetallbError::NotReady { waiting, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(waiting, "DaemonSet speaker: 3 of 4 pod(s) ready, 4 updated");
    // Every speaker ready: done.
    api.set(
        METALLB_DAEMONSETS,
        list("DaemonSetList", vec![speaker(4, 4)]),
    );
    metallb::wait_ready(&client, Duration::from_secs(5))
        .await
        .unwrap();
}

#[tokio::test]
async fn metallb_without_controller_or_speakers_says_which_is_missing() {
    let api = StubApi::default();
    api.set(
        METALLB_DEPLOYMENTS,
        list("DeploymentList", vec![controller(0)]),
    );
    api.set(METALLB_DAEMONSETS, list("DaemonSetList", vec![]));
    let client = api.serve().await;
    let err = metallb::wait_ready(&client, Duration::from_millis(10))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("deployment metallb-system/controller has 0/1 available")
            && err.contains("no speaker DaemonSet"),
        "{err}"
    );
}

fn probe() -> ProbeSettings {
    ProbeSettings {
        interval: Dur::from_millis(200),
        timeout: Dur::from_millis(150),
        unhealthy_threshold: 2,
        healthy_threshold: 1,
    }
}

fn backend_at(name: &str, b: &TestBackend) -> BackendConfig {
    BackendConfig {
        name: name.into(),
        address: b.app.to_string(),
        probe: Some(format!("http://{}/healthz", b.health)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_nodes_backend_follows_its_new_address() {
    let clock = Clock::start();
    let (events, _rx) = EventSink::channel(clock);
    // The node before the fault, and the same node back at another address
    // (what kind does to a restarted node container).
    let before = TestBackend::start("before", clock).await;
    let after = TestBackend::start("after", clock).await;
    let lb = Lb::start(
        LbConfig {
            probe: probe(),
            ..Default::default()
        },
        vec![],
        events,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let admin = AdminClient::new(
        lb.serve_admin("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap(),
    );
    admin
        .add(&backend_at("zdt-x-worker", &before))
        .await
        .unwrap();
    admin
        .wait_healthy(1, Duration::from_secs(10))
        .await
        .unwrap();
    // The old address is gone: the backend goes unhealthy and stays so.
    before.set_healthy(false);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while admin.list().await.unwrap()[0].health != Health::Unhealthy {
        assert!(std::time::Instant::now() < deadline, "never unhealthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let moved = follow_backend(&admin, &backend_at("zdt-x-worker", &after))
        .await
        .unwrap();
    assert_eq!(moved, Some(format!("http://{}/healthz", before.health)));
    let list = admin.list().await.unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].probe, format!("http://{}/healthz", after.health));
    admin
        .wait_healthy(1, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(!after.probes().is_empty(), "the new address is probed");
    // Traffic reaches the node at its new address.
    let answer = zdt_lb::testing::ask(lb.frontend_addr()).await.unwrap();
    assert_eq!(answer, "after");

    // Already right: nothing is removed or added.
    let again = follow_backend(&admin, &backend_at("zdt-x-worker", &after))
        .await
        .unwrap();
    assert_eq!(again, None);
    lb.shutdown().await;
}
