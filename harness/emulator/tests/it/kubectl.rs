//! kubectl against the emulator for what a user reaches for after `get`:
//! `logs` (and `-f`), `port-forward` then curl through it, `exec`'s clear
//! refusal, `rollout undo` back to the previous pod-template hash, `-o wide`
//! columns, chunked lists. Each test skips (saying why) where kubectl or
//! what it needs is not installed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, PostParams};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use zdt_core::clock::Clock;
use zdt_core::events::EventSink;
use zdt_emulator::store::Resource;
use zdt_emulator::{Emulator, EmulatorConfig, NetworkChoice, RuntimeChoice};

use super::support::{deployment_value, emulator, no_retry_client, until};

const KUBECTL: &str = "/usr/bin/kubectl";

fn have_kubectl() -> bool {
    if Path::new(KUBECTL).exists() {
        return true;
    }
    eprintln!("SKIPPED: {KUBECTL} is not installed");
    false
}

struct Kube {
    _dir: tempfile::TempDir,
    config: PathBuf,
}

impl Kube {
    fn new(emu: &Emulator) -> Kube {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("kubeconfig");
        emu.write_kubeconfig(&config).unwrap();
        Kube { _dir: dir, config }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(KUBECTL);
        c.arg("--kubeconfig")
            .arg(&self.config)
            .args(args)
            .kill_on_drop(true);
        c
    }

    /// Run to the end (at most 60 s): success and stdout+stderr.
    async fn run(&self, args: &[&str]) -> (bool, String) {
        let mut cmd = self.command(args);
        let out = tokio::time::timeout(Duration::from_secs(60), cmd.output()).await;
        let out = out
            .expect("kubectl finishes within 60 s")
            .expect("kubectl runs");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }
}

fn pod_running(emu: &Emulator, name: &str) -> bool {
    emu.store()
        .get(Resource::Pods, "default", name)
        .is_some_and(|p| p["status"]["phase"] == "Running")
}

async fn real_emulator(
    run: std::collections::BTreeMap<String, zdt_core::emulated::ContainerRun>,
    network: NetworkChoice,
) -> Emulator {
    let config = EmulatorConfig {
        workers: 1,
        runtime: RuntimeChoice::Builtin,
        network,
        run,
        ..EmulatorConfig::default()
    };
    Emulator::start(config, EventSink::discard(Clock::start()))
        .await
        .expect("emulator starts")
}

/// A line number `line N` in kubectl's output, the largest.
fn last_line_number(text: &str) -> Option<u64> {
    text.lines()
        .filter_map(|l| l.strip_prefix("line ")?.trim().parse().ok())
        .max()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_follow_shows_what_the_process_writes() {
    if !have_kubectl() {
        return;
    }
    if let Some(why) = zdt_core::netns::private_unavailable() {
        eprintln!("SKIPPED: a pod running a host command needs a private network: {why}");
        return;
    }
    // The container's process writes a numbered line every 50 ms.
    let run = std::collections::BTreeMap::from([(
        "ticker".to_owned(),
        zdt_core::emulated::ContainerRun {
            runtime: zdt_core::emulated::RunEngine::Host,
            command: vec!["/bin/sh".into(), "-c".into()],
            args: vec!["seq 1 100000 | while read i; do echo line $i; sleep 0.05; done".into()],
            ..Default::default()
        },
    )]);
    let emu = real_emulator(run, NetworkChoice::Private).await;
    let pods: Api<Pod> = Api::default_namespaced(emu.client().unwrap());
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "ticker"},
        "spec": {"containers": [{"name": "ticker", "image": "busybox"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    until(&emu, 20, "the ticker pod running", |e| {
        pod_running(e, "ticker")
    })
    .await;
    let kube = Kube::new(&emu);

    // Plain logs: what was written so far, from the first line.
    let t0 = Instant::now();
    let (ok, out) = loop {
        let (ok, out) = kube.run(&["logs", "ticker"]).await;
        if !ok || out.contains("line 3") || t0.elapsed() > Duration::from_secs(10) {
            break (ok, out);
        }
    };
    assert!(ok, "{out}");
    assert!(out.starts_with("line 1\n"), "{out}");
    let (ok, out) = kube
        .run(&["logs", "ticker", "--tail=2", "--timestamps"])
        .await;
    assert!(ok, "{out}");
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.lines().all(|l| l.contains("Z line ")), "{out}");
    let (ok, out) = kube
        .run(&["logs", "ticker", "--since=1h", "--limit-bytes=7"])
        .await;
    assert!(ok, "{out}");
    assert_eq!(out, "line 1\n");
    let (ok, out) = kube
        .run(&["logs", "ticker", "--since-time=2999-01-01T00:00:00Z"])
        .await;
    assert!(
        ok && out.is_empty(),
        "nothing written after a future time: {out}"
    );

    // -f: lines keep coming after kubectl started.
    let mut child = kube
        .command(&["logs", "-f", "ticker"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (_, sofar) = kube.run(&["logs", "ticker"]).await;
    let then = last_line_number(&sofar).expect("numbered lines");
    let followed = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if last_line_number(&l).is_some_and(|n| n >= then + 5) {
                return l;
            }
        }
        panic!("kubectl logs -f ended early");
    })
    .await
    .expect("kubectl logs -f shows new lines within 20 s");
    eprintln!("kubectl logs -f: {followed} arrived after line {then} had been written");
    child.kill().await.unwrap();

    let (ok, out) = kube.run(&["logs", "ticker", "--previous"]).await;
    assert!(
        !ok && out.contains("previous terminated container \"ticker\""),
        "{out}"
    );
    let (ok, out) = kube.run(&["logs", "ticker", "-c", "nope"]).await;
    assert!(
        !ok && out.contains("container nope is not valid for pod ticker"),
        "{out}"
    );
    let (ok, out) = kube.run(&["exec", "ticker", "--", "ls"]).await;
    assert!(!ok && out.contains("does not support pods/exec"), "{out}");
    emu.shutdown().await;
}

/// `kubectl port-forward TARGET :80` (kubectl picks the local port),
/// waited for until it forwards; the child and the local port. kubectl
/// tunnels SPDY in a WebSocket unless `websockets` is false.
async fn port_forward(kube: &Kube, target: &str, websockets: bool) -> (tokio::process::Child, u16) {
    let mut child = kube
        .command(&["port-forward", target, ":80"])
        .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", websockets.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("port-forward says it forwards within 20 s")
        .unwrap()
        .unwrap_or_default();
    // "Forwarding from 127.0.0.1:PORT -> 80"
    let port = first
        .strip_prefix("Forwarding from 127.0.0.1:")
        .and_then(|rest| rest.strip_suffix(" -> 80"))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected port-forward output: {first:?}"));
    // Keep its output drained so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, port)
}

async fn curl(port: u16) -> (bool, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        Command::new("curl")
            .args([
                "-si",
                "--max-time",
                "10",
                &format!("http://127.0.0.1:{port}/"),
            ])
            .output(),
    )
    .await
    .expect("curl finishes")
    .expect("curl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_then_curl_through_it() {
    if !have_kubectl() {
        return;
    }
    if !Path::new("/usr/bin/curl").exists() {
        eprintln!("SKIPPED: curl is not installed");
        return;
    }
    // The host's stack maps the declared port; a private network has the
    // pod's own address.
    port_forward_on(NetworkChoice::Host).await;
    if let Some(why) = zdt_core::netns::private_unavailable() {
        eprintln!("SKIPPED (private network half): {why}");
        return;
    }
    port_forward_on(NetworkChoice::Private).await;
}

async fn port_forward_on(network: NetworkChoice) {
    let emu = real_emulator(Default::default(), network).await;
    let client = emu.client().unwrap();
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    let d: Deployment =
        serde_json::from_value(deployment_value("web", 1, json!({}), json!({}))).unwrap();
    deploys.create(&PostParams::default(), &d).await.unwrap();
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 80}]}
    }))
    .unwrap();
    Api::<Service>::default_namespaced(client)
        .create(&PostParams::default(), &svc)
        .await
        .unwrap();
    until(&emu, 20, "the web pod running", |e| {
        e.store()
            .list(Resource::Pods, Some("default"))
            .iter()
            .any(|p| p["status"]["phase"] == "Running")
    })
    .await;
    let pod = emu.store().list(Resource::Pods, Some("default"))[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let kube = Kube::new(&emu);
    for (target, websockets) in [
        (format!("pod/{pod}"), true),
        (format!("pod/{pod}"), false),
        ("svc/web".to_owned(), true),
    ] {
        let (mut child, port) = port_forward(&kube, &target, websockets).await;
        // Two requests: each is a forwarded connection of its own.
        for _ in 0..2 {
            let (ok, out) = curl(port).await;
            assert!(ok, "curl through {target}: {out}");
            assert!(out.starts_with("HTTP/1.1 200"), "{target}: {out}");
            assert!(
                out.to_ascii_lowercase().contains(&format!("x-pod: {pod}")),
                "{target}: {out}"
            );
        }
        child.kill().await.unwrap();
    }
    python_port_forward(&kube, &pod).await;
    let (ok, out) = kube.run(&["get", "svc", "web", "-o", "wide"]).await;
    assert!(
        ok && out.contains("SELECTOR") && out.contains("app=web"),
        "{out}"
    );
    emu.shutdown().await;
}

/// The official Python client's port-forward (WebSocket channels).
async fn python_port_forward(kube: &Kube, pod: &str) {
    const SCRIPT: &str = r#"
import sys
from kubernetes import client, config
from kubernetes.stream import portforward
config.load_kube_config(sys.argv[1])
pf = portforward(client.CoreV1Api().connect_get_namespaced_pod_portforward,
                 sys.argv[2], "default", ports="80")
s = pf.socket(80)
s.settimeout(10)
s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
data = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
print(data.decode())
"#;
    let have = Command::new("python3")
        .args(["-c", "import kubernetes"])
        .output()
        .await
        .is_ok_and(|o| o.status.success());
    if !have {
        eprintln!("SKIPPED (Python half): python3 with the `kubernetes` package is not installed");
        return;
    }
    let run = Command::new("python3")
        .args(["-c", SCRIPT])
        .arg(&kube.config)
        .arg(pod)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the Python port-forward finishes within 30 s")
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.starts_with("HTTP/1.1 200"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.to_ascii_lowercase().contains(&format!("x-pod: {pod}")),
        "{text}"
    );
}

fn replicasets(emu: &Emulator) -> Vec<Value> {
    emu.store().list(Resource::ReplicaSets, Some("default"))
}

fn hash_of(rs: &Value) -> String {
    rs["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

/// The Deployment's rollout is complete on the ReplicaSet of `hash`.
fn rolled_out_to(emu: &Emulator, hash: Option<&str>) -> bool {
    let Some(d) = emu.store().get(Resource::Deployments, "default", "web") else {
        return false;
    };
    let done = d["status"]["updatedReplicas"] == 2
        && d["status"]["availableReplicas"] == 2
        && d["status"]["replicas"] == 2
        && d["status"]["observedGeneration"] == d["metadata"]["generation"];
    let on = replicasets(emu)
        .iter()
        .filter(|rs| rs["spec"]["replicas"].as_i64().unwrap_or(0) > 0)
        .map(hash_of)
        .collect::<Vec<_>>();
    done && hash.is_none_or(|h| on == [h])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_rollout_undo_goes_back_to_the_previous_pod_template_hash() {
    if !have_kubectl() {
        return;
    }
    let emu = emulator(2).await;
    let deploys: Api<Deployment> = Api::default_namespaced(emu.client().unwrap());
    let d: Deployment =
        serde_json::from_value(deployment_value("web", 2, json!({}), json!({}))).unwrap();
    deploys.create(&PostParams::default(), &d).await.unwrap();
    until(&emu, 20, "the first rollout", |e| rolled_out_to(e, None)).await;
    let first = hash_of(&replicasets(&emu)[0]);
    let kube = Kube::new(&emu);
    let (ok, out) = kube
        .run(&["set", "image", "deployment/web", "web=nginx:1.28"])
        .await;
    assert!(ok, "{out}");
    until(&emu, 20, "the second rollout", |e| {
        replicasets(e).len() == 2 && rolled_out_to(e, None) && !rolled_out_to(e, Some(&first))
    })
    .await;
    let second: String = replicasets(&emu)
        .iter()
        .map(hash_of)
        .find(|h| *h != first)
        .unwrap();

    let before_undo = emu.store().resource_version();
    let (ok, out) = kube.run(&["rollout", "undo", "deployment/web"]).await;
    assert!(ok, "{out}");
    until(&emu, 20, "the undo back to the first template", |e| {
        rolled_out_to(e, Some(&first))
    })
    .await;
    let hashes: Vec<String> = replicasets(&emu).iter().map(hash_of).collect();
    assert_eq!(
        hashes.len(),
        2,
        "undo reuses the old ReplicaSet: {hashes:?}"
    );
    let pods = emu.store().list(Resource::Pods, Some("default"));
    assert!(
        pods.iter()
            .filter(|p| p["metadata"].get("deletionTimestamp").is_none())
            .all(|p| p["metadata"]["labels"]["pod-template-hash"] == first.as_str()),
        "every pod of the first template"
    );
    let d = emu
        .store()
        .get(Resource::Deployments, "default", "web")
        .unwrap();
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    let found = emu
        .store()
        .changes_since(Resource::Deployments, before_undo)
        .unwrap()
        .iter()
        .flat_map(|c| {
            c.object["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .any(|c| c["reason"] == "FoundNewReplicaSet");
    assert!(
        found,
        "the undo's Progressing condition names the old ReplicaSet found"
    );

    let (ok, out) = kube
        .run(&["rollout", "undo", "deployment/web", "--to-revision=2"])
        .await;
    assert!(ok, "{out}");
    until(&emu, 20, "the undo to revision 2", |e| {
        rolled_out_to(e, Some(&second))
    })
    .await;
    assert_eq!(replicasets(&emu).len(), 2);

    // -o wide shows the pod template's containers, images and selector.
    let (ok, out) = kube.run(&["get", "deployment", "web", "-o", "wide"]).await;
    assert!(ok, "{out}");
    for want in ["CONTAINERS", "IMAGES", "SELECTOR", "nginx:1.28", "app=web"] {
        assert!(out.contains(want), "{want} missing:\n{out}");
    }
    let (ok, out) = kube.run(&["get", "rs", "-o", "wide"]).await;
    assert!(
        ok && out.contains("SELECTOR") && out.contains("pod-template-hash="),
        "{out}"
    );
    // Chunked lists page through everything (kubectl's --chunk-size is
    // `limit` plus `continue`).
    let (ok, out) = kube
        .run(&["get", "pods", "--chunk-size=1", "-o", "name"])
        .await;
    assert!(ok, "{out}");
    assert_eq!(out.lines().count(), 2, "{out}");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_limit_progress_deadline_and_qos_follow_upstream() {
    let emu = emulator(1).await;
    let deploys: Api<Deployment> = Api::default_namespaced(emu.client().unwrap());
    // revisionHistoryLimit 1: after three templates one old ReplicaSet stays.
    let mut d = deployment_value(
        "web",
        2,
        json!({"containers": [{"name": "web", "image": "nginx:1.27",
                               "resources": {"requests": {"cpu": "100m"}}}]}),
        json!({"revisionHistoryLimit": 1}),
    );
    for image in ["nginx:1.27", "nginx:1.28", "nginx:1.29"] {
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image);
        let typed: Deployment = serde_json::from_value(d.clone()).unwrap();
        deploys
            .patch(
                "web",
                &kube::api::PatchParams::apply("test").force(),
                &kube::api::Patch::Apply(&typed),
            )
            .await
            .unwrap();
        until(&emu, 20, &format!("the rollout to {image}"), |e| {
            rolled_out_to(e, None)
                && replicasets(e).iter().any(|rs| {
                    rs["spec"]["template"]["spec"]["containers"][0]["image"] == image
                        && rs["status"]["availableReplicas"] == 2
                })
        })
        .await;
    }
    until(&emu, 10, "old ReplicaSets cleaned up to the limit", |e| {
        replicasets(e).len() == 2
    })
    .await;
    let pods = emu.store().list(Resource::Pods, Some("default"));
    assert!(
        pods.iter().all(|p| p["status"]["qosClass"] == "Burstable"),
        "requests make Burstable"
    );

    // A rollout that cannot progress (no node matches) says it started
    // (its first Progressing reason, as the store's history shows), then
    // that it progresses as its pod is created, and times out after its
    // progress deadline.
    let before = emu.store().resource_version();
    let waiting = deployment_value(
        "waiting",
        1,
        json!({"nodeSelector": {"no-such": "node"}}),
        json!({}),
    );
    let typed: Deployment = serde_json::from_value(waiting).unwrap();
    deploys
        .create(&PostParams::default(), &typed)
        .await
        .unwrap();
    let progressing = |d: &Value| {
        d["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Progressing")
            .map(|c| c["reason"].as_str().unwrap_or("").to_owned())
    };
    until(&emu, 10, "Progressing=True ReplicaSetUpdated", |e| {
        e.store()
            .get(Resource::Deployments, "default", "waiting")
            .is_some_and(|d| progressing(&d).as_deref() == Some("ReplicaSetUpdated"))
    })
    .await;
    let mut reasons: Vec<String> = emu
        .store()
        .changes_since(Resource::Deployments, before)
        .unwrap()
        .iter()
        .filter(|c| c.object["metadata"]["name"] == "waiting")
        .filter_map(|c| progressing(&c.object))
        .collect();
    reasons.dedup();
    assert_eq!(reasons, ["NewReplicaSetCreated", "ReplicaSetUpdated"]);
    let stuck = deployment_value(
        "stuck",
        1,
        json!({"nodeSelector": {"no-such": "node"}}),
        json!({"progressDeadlineSeconds": 1}),
    );
    let typed: Deployment = serde_json::from_value(stuck).unwrap();
    deploys
        .create(&PostParams::default(), &typed)
        .await
        .unwrap();
    until(
        &emu,
        10,
        "Progressing=False ProgressDeadlineExceeded",
        |e| {
            e.store()
                .get(Resource::Deployments, "default", "stuck")
                .is_some_and(|d| {
                    d["status"]["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| {
                            c["type"] == "Progressing"
                                && c["status"] == "False"
                                && c["reason"] == "ProgressDeadlineExceeded"
                        })
                })
        },
    )
    .await;
    emu.shutdown().await;
}

/// GET `path` on the API; status code and JSON body.
async fn get_json(emu: &Emulator, path: &str) -> (u16, Value) {
    // kube-rs would retry the 504 for a while.
    let client = no_retry_client(emu);
    let req = http::Request::get(path).body(Vec::new()).unwrap();
    match client.request::<Value>(req).await {
        Ok(v) => (200, v),
        Err(kube::Error::Api(s)) => (s.code, json!({"reason": s.reason, "message": s.message})),
        Err(e) => panic!("{path}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_paginate_and_honour_resource_versions_and_events_show_in_both_apis() {
    let emu = emulator(1).await;
    let deploys: Api<Deployment> = Api::default_namespaced(emu.client().unwrap());
    let d: Deployment =
        serde_json::from_value(deployment_value("web", 3, json!({}), json!({}))).unwrap();
    deploys.create(&PostParams::default(), &d).await.unwrap();
    until(&emu, 20, "three pods", |e| {
        e.store().list(Resource::Pods, Some("default")).len() == 3
    })
    .await;
    let base = "/api/v1/namespaces/default/pods";
    let (code, page1) = get_json(&emu, &format!("{base}?limit=2")).await;
    assert_eq!(code, 200);
    assert_eq!(page1["items"].as_array().unwrap().len(), 2);
    assert_eq!(page1["metadata"]["remainingItemCount"], 1);
    let token = page1["metadata"]["continue"].as_str().unwrap().to_owned();
    let rv = page1["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let (code, page2) = get_json(&emu, &format!("{base}?limit=2&continue={token}")).await;
    assert_eq!(code, 200);
    assert_eq!(page2["items"].as_array().unwrap().len(), 1);
    assert!(page2["metadata"].get("continue").is_none_or(Value::is_null));
    assert_eq!(
        page2["metadata"]["resourceVersion"],
        rv.as_str(),
        "one snapshot"
    );

    // Exact: the list as it was; too large: 504; bad combinations: 400.
    let (code, exact) = get_json(
        &emu,
        &format!("{base}?resourceVersion={rv}&resourceVersionMatch=Exact"),
    )
    .await;
    assert_eq!(
        (code, exact["metadata"]["resourceVersion"].as_str()),
        (200, Some(rv.as_str()))
    );
    let (code, _) = get_json(&emu, &format!("{base}?resourceVersion=999999999")).await;
    assert_eq!(code, 504);
    let (code, _) = get_json(&emu, &format!("{base}?resourceVersionMatch=Exact")).await;
    assert_eq!(code, 400);

    // events.k8s.io/v1 shows the controllers' core/v1 Events.
    let (code, core) = get_json(&emu, "/api/v1/namespaces/default/events").await;
    assert_eq!(code, 200);
    let (code, v1) = get_json(&emu, "/apis/events.k8s.io/v1/namespaces/default/events").await;
    assert_eq!(code, 200);
    let n = core["items"].as_array().unwrap().len();
    assert!(n > 0);
    assert_eq!(v1["items"].as_array().unwrap().len(), n);
    let first = &v1["items"][0];
    assert!(first["note"].is_string() && first["regarding"].is_object());
    assert!(
        first["eventTime"].is_string(),
        "eventTime is required: {first}"
    );
    emu.shutdown().await;
}

/// A list older than the store's history is 410 Expired, as after an etcd
/// compaction.
#[tokio::test]
async fn a_list_older_than_the_history_is_expired() {
    use std::sync::Arc;
    use zdt_emulator::apiserver::{ApiContext, ApiServer};
    use zdt_emulator::store::Store;
    let store = Arc::new(Store::with_history(2));
    store
        .create(
            Resource::Namespaces,
            json!({"metadata": {"name": "default"}}),
        )
        .unwrap();
    let first = store.resource_version();
    for i in 0..5 {
        store
            .create(
                Resource::ConfigMaps,
                json!({"metadata": {"name": format!("c{i}"), "namespace": "default"}}),
            )
            .unwrap();
    }
    let cancel = tokio_util::sync::CancellationToken::new();
    let api = ApiServer::start(
        store,
        ApiContext {
            version: Default::default(),
            timings: Default::default(),
            pods: None,
        },
        0,
        cancel.clone(),
    )
    .await
    .unwrap();
    let uri: http::Uri = format!("http://{}", api.addr()).parse().unwrap();
    let client = kube::Client::try_from(kube::Config::new(uri)).unwrap();
    let path = format!(
        "/api/v1/namespaces/default/configmaps?resourceVersion={first}&resourceVersionMatch=Exact"
    );
    let req = http::Request::get(path).body(Vec::new()).unwrap();
    match client.request::<Value>(req).await {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410 Expired, got {other:?}"),
    }
    cancel.cancel();
}
