//! kubectl against the emulator: `get nodes`, `get pods -o wide` and
//! `drain NODE --ignore-daemonsets` must work as against a kind cluster.
//! Also measures how long the repo's nginx manifests take to be Ready.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::process::Command;
use zdt_core::clock::Clock;
use zdt_core::events::EventSink;
use zdt_emulator::store::Resource;
use zdt_emulator::{apiserver as api, Emulator, EmulatorConfig};

const KUBECTL: &str = "/usr/bin/kubectl";

async fn kubectl(kubeconfig: &Path, args: &[&str]) -> (bool, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("kubectl finishes within 60 s")
    .expect("kubectl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests/nginx")
}

/// All pods of app=nginx Ready and the slice lists them all as ready.
fn nginx_ready(emu: &Emulator, replicas: usize) -> bool {
    let pods = emu.store().list(Resource::Pods, Some("default"));
    let ready = pods
        .iter()
        .filter(|p| p["metadata"]["labels"]["app"] == "nginx")
        .filter(|p| zdt_emulator::controllers::pod_ready(p))
        .count();
    let slices = emu.store().list(Resource::EndpointSlices, Some("default"));
    let published = slices
        .iter()
        .filter(|s| s["metadata"]["labels"]["kubernetes.io/service-name"] == "nginx")
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["conditions"]["ready"] == true)
        .count();
    ready == replicas && published == replicas
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_and_drain_work() {
    if !Path::new(KUBECTL).exists() {
        eprintln!("SKIPPED: {KUBECTL} is not installed");
        return;
    }
    let t0 = Instant::now();
    let emu = Emulator::start_simulated(
        EmulatorConfig {
            workers: 3,
            ..EmulatorConfig::default()
        },
        EventSink::discard(Clock::start()),
    )
    .await
    .unwrap();
    let timings = emu.config().timings;
    for obj in zdt_scenario::workload::read_dir(&manifests_dir()).unwrap() {
        api::apply_object(emu.store(), &timings, obj).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !nginx_ready(&emu, 3) {
        assert!(Instant::now() < deadline, "nginx not ready in 10 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!(
        "emulated 3-worker cluster with manifests/nginx Ready (pods ready, endpoints published) in {:?} (simulated pods, start delay {})",
        t0.elapsed(),
        timings.pod_start_delay
    );

    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    emu.write_kubeconfig(&kc).unwrap();

    let (ok, out) = kubectl(&kc, &["get", "nodes"]).await;
    assert!(ok, "{out}");
    for n in [
        "zdt-control-plane",
        "zdt-worker ",
        "zdt-worker2",
        "zdt-worker3",
    ] {
        assert!(out.contains(n), "{n} missing:\n{out}");
    }
    assert!(
        out.contains("control-plane") && out.contains("Ready"),
        "{out}"
    );

    let (ok, out) = kubectl(&kc, &["get", "pods", "-o", "wide"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("IP") && out.contains("NODE"), "{out}");
    assert_eq!(out.matches("Running").count(), 3, "{out}");
    assert!(out.contains("10.244."), "pod IPs shown:\n{out}");

    let (ok, out) = kubectl(&kc, &["describe", "pod", "-l", "app=nginx"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("Controlled By:  ReplicaSet/nginx-"), "{out}");
    // Controllers record core/v1 Events, as describe shows them.
    assert!(
        out.contains("Successfully assigned default/nginx-"),
        "{out}"
    );

    let (ok, out) = kubectl(
        &kc,
        &[
            "drain",
            "zdt-worker2",
            "--ignore-daemonsets",
            "--timeout=60s",
        ],
    )
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("node/zdt-worker2 cordoned"), "{out}");
    assert!(out.contains("drained"), "{out}");
    let node = emu.store().get(Resource::Nodes, "", "zdt-worker2").unwrap();
    assert_eq!(node["spec"]["unschedulable"], true);
    let left = emu
        .store()
        .list(Resource::Pods, None)
        .into_iter()
        .filter(|p| p["spec"]["nodeName"] == "zdt-worker2")
        .count();
    assert_eq!(left, 0, "drain leaves no pods on the node");

    let (ok, out) = kubectl(&kc, &["get", "nodes"]).await;
    assert!(ok && out.contains("Ready,SchedulingDisabled"), "{out}");
    // The replacement lands on another worker, never the control plane.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !nginx_ready(&emu, 3) {
        assert!(Instant::now() < deadline, "replacement not ready in 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cp_pods = emu
        .store()
        .list(Resource::Pods, None)
        .into_iter()
        .filter(|p| p["spec"]["nodeName"] == "zdt-control-plane")
        .count();
    assert_eq!(cp_pods, 0);
    let (ok, out) = kubectl(&kc, &["uncordon", "zdt-worker2"]).await;
    assert!(ok && out.contains("uncordoned"), "{out}");
    emu.shutdown().await;
}
