//! The emulator with its real data plane: the repo's nginx manifests come
//! up (timed: the issue asks for < 3 s), each worker is an LB backend whose
//! dialer reaches a pod through that node's kube-proxy and whose probe is
//! the Service's healthCheckNodePort, and shutdown leaves no pod process.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zdt_core::clock::Clock;
use zdt_core::events::EventSink;
use zdt_emulator::store::Resource;
use zdt_emulator::{apiserver as api, Emulator, EmulatorConfig, NodeFault, RuntimeChoice};
use zdt_lb::{Dial, ProbeTarget};

fn nginx_ready(emu: &Emulator) -> bool {
    let ready = emu
        .store()
        .list(Resource::Pods, Some("default"))
        .iter()
        .filter(|p| p["metadata"]["labels"]["app"] == "nginx")
        .filter(|p| zdt_emulator::controllers::pod_ready(p))
        .count();
    let published = emu
        .store()
        .list(Resource::EndpointSlices, Some("default"))
        .iter()
        .filter(|s| s["metadata"]["labels"]["kubernetes.io/service-name"] == "nginx")
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["conditions"]["ready"] == true)
        .count();
    ready == 3 && published == 3
}

async fn http_get(stream: &mut tokio::net::TcpStream, path: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out))
        .await
        .expect("response within 5 s")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

async fn run(choice: RuntimeChoice) {
    let t0 = Instant::now();
    let emu = Emulator::start(
        EmulatorConfig {
            workers: 3,
            runtime: choice,
            ..EmulatorConfig::default()
        },
        EventSink::discard(Clock::start()),
    )
    .await
    .unwrap();
    let timings = emu.config().timings;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests/nginx");
    for mut obj in zdt_scenario::workload::read_dir(&dir).unwrap() {
        if obj["kind"] == "Service" {
            obj["spec"]["externalTrafficPolicy"] = "Local".into();
        }
        if obj["kind"] == "Deployment" {
            // One pod per worker, so each node has a local endpoint.
            obj["spec"]["template"]["spec"]["topologySpreadConstraints"] = serde_json::json!([{
                "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "DoNotSchedule", "nodeTaintsPolicy": "Honor",
                "labelSelector": {"matchLabels": {"app": "nginx"}}}]);
        }
        api::apply_object(emu.store(), &timings, obj).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !nginx_ready(&emu) {
        assert!(
            Instant::now() < deadline,
            "nginx not ready in 20 s ({choice:?})"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!(
        "{choice:?}: emulated 3-worker cluster with manifests/nginx Ready (pods ready, endpoints published) in {:?} (pod start delay {})",
        t0.elapsed(),
        timings.pod_start_delay
    );

    let backends = zdt_cluster::provider::emulator_lb_backends(&emu, "default", "nginx").unwrap();
    let names: Vec<&str> = backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["zdt-worker", "zdt-worker2", "zdt-worker3"]);
    // kube-proxy applies after its sync delay; wait for each node to route.
    for b in &backends {
        let ProbeTarget::Http { addr, path } = &b.probe else {
            panic!("Local services are probed over HTTP")
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut s = emu.net().connect(*addr).await.unwrap();
            let resp = http_get(&mut s, path).await;
            if resp.starts_with("HTTP/1.1 200") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: health check never 200: {resp}",
                b.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        match b.dialer.dial("127.0.0.1:1".parse().unwrap()).await {
            Dial::Connected(mut s) => {
                let resp = http_get(&mut s, "/").await;
                assert!(resp.starts_with("HTTP/1.1 200"), "{}: {resp}", b.name);
                let node_header = resp
                    .lines()
                    .find(|l| l.to_ascii_lowercase().starts_with("x-node:"))
                    .unwrap_or_default()
                    .to_owned();
                assert!(
                    node_header.ends_with(&b.name),
                    "Local: served on the node itself: {node_header}"
                );
            }
            other => panic!("{}: dial failed: {other:?}", b.name),
        }
    }
    // A stopped node's pods stop serving; the rest keep going.
    emu.node_fault("zdt-worker3", NodeFault::Stop).unwrap();
    let dial = backends[2]
        .dialer
        .dial("127.0.0.1:1".parse().unwrap())
        .await;
    assert!(
        matches!(dial, Dial::Dropped),
        "a stopped node drops: {dial:?}"
    );
    let state = emu.shutdown().await;
    assert_eq!(state.nodes.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_manifests_ready_and_served_through_each_node() {
    run(RuntimeChoice::Auto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_server_fallback_works_the_same() {
    run(RuntimeChoice::Builtin).await;
}
