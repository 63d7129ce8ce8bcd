//! The emulator's API semantics, driven with kube-rs like the run drives a
//! real cluster: selectors, watch from a resourceVersion, 409s, eviction
//! under a PDB, strategic merge (rollout restart), graceful delete, and
//! Status objects for malformed requests.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{
    Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zdt_emulator::NodeFault;

use super::support::{deployment, emulator, emulator_with_start_delay, no_retry_client, pod};

/// Poll `f` until it returns Some, at most `secs` seconds.
async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn ready_pods(api: &Api<Pod>, selector: &str) -> usize {
    api.list(&ListParams::default().labels(selector))
        .await
        .unwrap()
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_look_like_kind() {
    let emu = emulator(2).await;
    let nodes: Api<Node> = Api::all(emu.client().unwrap());
    let list = nodes.list(&ListParams::default()).await.unwrap();
    let names: Vec<String> = list
        .items
        .iter()
        .map(|n| n.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["zdt-control-plane", "zdt-worker", "zdt-worker2"]);
    let cp = &list.items[0];
    let taints = cp.spec.as_ref().unwrap().taints.clone().unwrap();
    assert_eq!(taints[0].key, "node-role.kubernetes.io/control-plane");
    assert_eq!(taints[0].effect, "NoSchedule");
    let ip = &cp.status.as_ref().unwrap().addresses.as_ref().unwrap()[0];
    assert_eq!(
        (ip.type_.as_str(), ip.address.as_str()),
        ("InternalIP", "172.18.0.2")
    );
    // Field selector as kubectl uses for schedulable nodes.
    let schedulable = nodes
        .list(&ListParams::default().fields("spec.unschedulable=false"))
        .await
        .unwrap();
    assert_eq!(schedulable.items.len(), 3);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_selectors_watch_from_rv_and_conflicts() {
    let emu = emulator(2).await;
    let pods: Api<Pod> = Api::default_namespaced(emu.client().unwrap());
    let pp = PostParams::default();
    pods.create(&pp, &pod("a", json!({"app": "web", "tier": "front"})))
        .await
        .unwrap();
    pods.create(&pp, &pod("b", json!({"app": "web", "tier": "back"})))
        .await
        .unwrap();
    let c = pods
        .create(&pp, &pod("c", json!({"app": "db"})))
        .await
        .unwrap();

    let names = |l: kube::core::ObjectList<Pod>| {
        let mut v: Vec<String> = l
            .items
            .into_iter()
            .map(|p| p.metadata.name.unwrap())
            .collect();
        v.sort();
        v
    };
    for (sel, want) in [
        ("app=web", vec!["a", "b"]),
        ("app!=web", vec!["c"]),
        ("tier in (front,side)", vec!["a"]),
        ("tier notin (front)", vec!["b", "c"]),
        ("tier", vec!["a", "b"]),
        ("!tier", vec!["c"]),
    ] {
        let got = names(pods.list(&ListParams::default().labels(sel)).await.unwrap());
        assert_eq!(got, want, "selector {sel}");
    }
    let by_name = names(
        pods.list(&ListParams::default().fields("metadata.name=b"))
            .await
            .unwrap(),
    );
    assert_eq!(by_name, ["b"]);

    // Pods get scheduled onto workers (never the control plane).
    let bound = eventually(5, "pods bound", || async {
        let l = pods.list(&ListParams::default()).await.unwrap();
        l.items
            .iter()
            .all(|p| p.spec.as_ref().unwrap().node_name.is_some())
            .then_some(l)
    })
    .await;
    for p in &bound.items {
        assert_ne!(
            p.spec.as_ref().unwrap().node_name.as_deref(),
            Some("zdt-control-plane")
        );
    }
    let node = bound.items[0]
        .spec
        .as_ref()
        .unwrap()
        .node_name
        .clone()
        .unwrap();
    let on_node = pods
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await
        .unwrap();
    assert!(!on_node.items.is_empty());
    assert!(on_node
        .items
        .iter()
        .all(|p| p.spec.as_ref().unwrap().node_name.as_deref() == Some(node.as_str())));

    // Watch from a resourceVersion sees only what happened after it.
    let list = pods
        .list(&ListParams::default().labels("app=db"))
        .await
        .unwrap();
    let rv = list.metadata.resource_version.clone().unwrap();
    let patch = json!({"metadata": {"labels": {"touched": "yes"}}});
    pods.patch("c", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    pods.patch("a", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let mut stream = pods
        .watch(&WatchParams::default().labels("app=db").timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    let ev = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
        .await
        .expect("an event in time")
        .unwrap()
        .unwrap();
    match ev {
        WatchEvent::Modified(p) => {
            assert_eq!(p.metadata.name.as_deref(), Some("c"));
            assert_eq!(p.metadata.labels.unwrap()["touched"], "yes");
        }
        other => panic!("expected MODIFIED c, got {other:?}"),
    }

    // A replace with a stale resourceVersion is a 409 Conflict.
    let mut stale = c.clone();
    stale
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("x".into(), "y".into());
    let err = pods.replace("c", &pp, &stale).await.unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 409);
            assert_eq!(s.reason, "Conflict");
        }
        other => panic!("expected a 409, got {other:?}"),
    }
    // Creating an existing name is 409 AlreadyExists.
    let err = pods.create(&pp, &pod("a", json!({}))).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists"));
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_is_refused_with_429_when_the_pdb_forbids_it() {
    // Replacements take 1.5 s to start, so the budget stays spent meanwhile.
    let emu = emulator_with_start_delay(3, 1500).await;
    let client = emu.client().unwrap();
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    let pdbs: Api<PodDisruptionBudget> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let pp = PostParams::default();
    deploys
        .create(&pp, &deployment("web", 3, json!({})))
        .await
        .unwrap();
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "web-pdb"},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}}
    }))
    .unwrap();
    pdbs.create(&pp, &pdb).await.unwrap();
    eventually(5, "PDB allows one disruption", || async {
        let s = pdbs.get("web-pdb").await.unwrap().status?;
        (s.current_healthy == 3 && s.disruptions_allowed == 1).then_some(())
    })
    .await;
    let status = pdbs.get("web-pdb").await.unwrap().status.unwrap();
    assert_eq!((status.desired_healthy, status.expected_pods), (2, 3));

    let list = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    let first = list.items[0].metadata.name.clone().unwrap();
    let second = list.items[1].metadata.name.clone().unwrap();
    pods.evict(&first, &EvictParams::default())
        .await
        .expect("first eviction allowed");
    let gone = pods.get_opt(&first).await.unwrap();
    assert!(gone.is_none_or(|p| p.metadata.deletion_timestamp.is_some()));

    // kube-rs retries 429s by default; see the refusal itself.
    let no_retry: Api<Pod> = Api::default_namespaced(no_retry_client(&emu));
    let err = no_retry
        .evict(&second, &EvictParams::default())
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 429);
            assert_eq!(s.reason, "TooManyRequests");
            assert_eq!(
                s.message,
                "Cannot evict pod as it would violate the pod's disruption budget."
            );
        }
        other => panic!("expected 429, got {other:?}"),
    }
    // The raw Status names the budget in details.causes, like the real API.
    let raw = raw_request(
        emu.addr(),
        "POST",
        &format!("/api/v1/namespaces/default/pods/{second}/eviction"),
        "application/json",
        br#"{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"x"}}"#,
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 429"), "{raw}");
    assert!(
        raw.contains("The disruption budget web-pdb needs 2 healthy pods and has 2 currently"),
        "{raw}"
    );

    // Once the replacement is ready, the budget allows one again.
    eventually(5, "budget recovers", || async {
        let s = pdbs.get("web-pdb").await.unwrap().status?;
        (s.disruptions_allowed == 1).then_some(())
    })
    .await;
    pods.evict(&second, &EvictParams::default())
        .await
        .expect("allowed again");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_restart_via_strategic_merge_makes_a_new_replicaset() {
    let emu = emulator(3).await;
    let client = emu.client().unwrap();
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    let rss: Api<ReplicaSet> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    deploys
        .create(&PostParams::default(), &deployment("web", 3, json!({})))
        .await
        .unwrap();
    eventually(5, "3 ready", || async {
        (ready_pods(&pods, "app=web").await == 3).then_some(())
    })
    .await;
    let before = rss.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(before.len(), 1);
    let hash = before[0].metadata.labels.as_ref().unwrap()["pod-template-hash"].clone();
    assert_eq!(
        before[0].metadata.name.as_deref(),
        Some(format!("web-{hash}").as_str())
    );

    deploys.restart("web").await.unwrap();
    // A container image change through a strategic merge keeps other fields.
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.28"}]}}}});
    let d = deploys
        .patch("web", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap();
    let c = &d
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers;
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].image.as_deref(), Some("nginx:1.28"));
    assert_eq!(d.metadata.generation, Some(3));

    let done = eventually(10, "rollout complete", || async {
        let d = deploys.get("web").await.unwrap();
        let s = d.status.clone()?;
        (s.observed_generation == Some(3)
            && s.updated_replicas == Some(3)
            && s.available_replicas == Some(3)
            && s.replicas == Some(3))
        .then_some(d)
    })
    .await;
    let conds = done.status.unwrap().conditions.unwrap();
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "Progressing"
                && c.reason.as_deref() == Some("NewReplicaSetAvailable"))
    );
    let all = rss.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(all.len(), 3, "one RS per template");
    let live: Vec<_> = all
        .iter()
        .filter(|r| r.spec.as_ref().unwrap().replicas != Some(0))
        .collect();
    assert_eq!(live.len(), 1);
    assert_eq!(
        live[0].metadata.annotations.as_ref().unwrap()["deployment.kubernetes.io/revision"],
        "3"
    );
    // Deleting the Deployment cascades to ReplicaSets and pods.
    deploys
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    eventually(5, "cascade", || async {
        let r = rss.list(&ListParams::default()).await.unwrap().items.len();
        let p = pods.list(&ListParams::default()).await.unwrap().items.len();
        (r == 0 && p == 0).then_some(())
    })
    .await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_with_grace_period_marks_the_pod_until_its_kubelet_reports() {
    let emu = emulator(1).await;
    let pods: Api<Pod> = Api::default_namespaced(emu.client().unwrap());
    pods.create(&PostParams::default(), &pod("p", json!({})))
        .await
        .unwrap();
    eventually(5, "pod ready", || async {
        (ready_pods(&pods, "").await == 1).then_some(())
    })
    .await;
    // A stopped kubelet never confirms, so the pod stays terminating.
    emu.node_fault("zdt-worker", NodeFault::Stop).unwrap();
    let deleted = pods
        .delete(
            "p",
            &DeleteParams {
                grace_period_seconds: Some(17),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let obj = deleted
        .left()
        .expect("the object is returned while terminating");
    assert!(obj.metadata.deletion_timestamp.is_some());
    assert_eq!(obj.metadata.deletion_grace_period_seconds, Some(17));
    let still = pods.get("p").await.unwrap();
    assert_eq!(still.metadata.deletion_grace_period_seconds, Some(17));
    // A shorter grace period shortens it; a longer one does not lengthen it.
    pods.delete(
        "p",
        &DeleteParams {
            grace_period_seconds: Some(40),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        pods.get("p")
            .await
            .unwrap()
            .metadata
            .deletion_grace_period_seconds,
        Some(17)
    );
    // The kubelet comes back, sees the deletion and reports the pod gone.
    emu.node_fault("zdt-worker", NodeFault::Resume).unwrap();
    eventually(5, "pod gone after the kubelet reports", || async {
        pods.get_opt("p").await.unwrap().is_none().then_some(())
    })
    .await;
    emu.shutdown().await;
}

/// One HTTP/1.1 request on a fresh connection; the whole response as text.
async fn raw_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    ctype: &str,
    body: &[u8],
) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // The server may answer before reading an oversized body; ignore a reset.
    let _ = s.write_all(body).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A request refused before its body matters (no such path, a method the
/// resource does not allow) still has its body read, as Go's server
/// drains it: a client writing a large body gets the answer, not a broken
/// pipe from a connection closed under it (kubectl reported "Unable to
/// connect to the server" for a 405).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_with_a_large_body_gets_its_answer() {
    let emu = emulator(1).await;
    let body = vec![b' '; zdt_emulator::apiserver::MAX_BODY - 1];
    for (path, code) in [
        ("/api/v1/namespaces/default/configmaps/cm", "405"),
        ("/api/v1/widgets/w", "404"),
    ] {
        let mut s = tokio::net::TcpStream::connect(emu.addr()).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&body)
            .await
            .unwrap_or_else(|e| panic!("POST {path}: the body was refused mid-way: {e}"));
        let mut out = vec![0; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut out))
            .await
            .expect("an answer within 5 s")
            .unwrap_or_else(|e| panic!("POST {path}: no answer: {e}"));
        let answer = String::from_utf8_lossy(&out[..n]);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {code}")),
            "POST {path}: {answer}"
        );
    }
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_status_objects() {
    let emu = emulator(1).await;
    let addr = emu.addr();
    let cases: Vec<(&str, String, &str, Vec<u8>, &str)> = vec![
        (
            "POST",
            "/api/v1/namespaces/default/pods".into(),
            "application/json",
            b"{not json".to_vec(),
            "400",
        ),
        (
            "GET",
            "/api/v1/widgets".into(),
            "application/json",
            vec![],
            "404",
        ),
        (
            "GET",
            "/apis/batch/v1/namespaces/default/cronjobs".into(),
            "application/json",
            vec![],
            "404",
        ),
        (
            "GET",
            "/api/v1/pods?labelSelector=app%20in%20web".into(),
            "application/json",
            vec![],
            "400",
        ),
        (
            "GET",
            "/api/v1/namespaces/default/pods/nope".into(),
            "application/json",
            vec![],
            "404",
        ),
        (
            "PATCH",
            "/api/v1/nodes/zdt-worker".into(),
            "text/plain",
            b"{}".to_vec(),
            "415",
        ),
        (
            "POST",
            "/api/v1/namespaces/nowhere/pods".into(),
            "application/json",
            br#"{"metadata":{"name":"x"},"spec":{"containers":[{"name":"c","image":"i"}]}}"#
                .to_vec(),
            "404",
        ),
        (
            "POST",
            "/api/v1/namespaces/default/pods".into(),
            "application/json",
            vec![b' '; zdt_emulator::apiserver::MAX_BODY + 10],
            "413",
        ),
        (
            "POST",
            "/api/v1/namespaces/default/pods".into(),
            "application/json",
            br#"{"metadata":{"name":"Bad_Name"},"spec":{"containers":[{"name":"c","image":"i"}]}}"#
                .to_vec(),
            "422",
        ),
        (
            "DELETE",
            "/api/v1/namespaces/default/pods".into(),
            "application/json",
            vec![],
            "405",
        ),
    ];
    for (method, path, ctype, body, code) in cases {
        let resp = raw_request(addr, method, &path, ctype, &body).await;
        let status_line = resp.lines().next().unwrap_or("");
        assert!(status_line.contains(code), "{method} {path}: {status_line}");
        let json_start = resp.find("\r\n\r\n").map(|i| i + 4).unwrap_or(0);
        let v: serde_json::Value = serde_json::from_str(&resp[json_start..])
            .unwrap_or_else(|e| panic!("{method} {path}: body is not JSON ({e}): {resp}"));
        assert_eq!(v["kind"], "Status", "{method} {path}");
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["code"].to_string(), code);
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // The server is still fine afterwards.
    let nodes: Api<Node> = Api::all(emu.client().unwrap());
    assert_eq!(
        nodes
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_serves_what_kubectl_drain_needs() {
    let emu = emulator(1).await;
    let client = emu.client().unwrap();
    let v = client.apiserver_version().await.unwrap();
    assert_eq!((v.major.as_str(), v.minor.as_str()), ("1", "31"));
    let core = client.list_core_api_resources("v1").await.unwrap();
    let evict = core
        .resources
        .iter()
        .find(|r| r.name == "pods/eviction")
        .unwrap();
    assert_eq!(
        (evict.group.as_deref(), evict.kind.as_str()),
        (Some("policy"), "Eviction")
    );
    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    for (g, kind) in [
        ("apps", "Deployment"),
        ("policy", "PodDisruptionBudget"),
        ("discovery.k8s.io", "EndpointSlice"),
        ("", "Pod"),
    ] {
        let group = discovery.get(g).unwrap_or_else(|| panic!("group {g:?}"));
        assert!(
            group
                .recommended_resources()
                .iter()
                .any(|(r, _)| r.kind == kind),
            "{kind}"
        );
    }
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_creates_then_merges() {
    let emu = emulator(1).await;
    let deploys: Api<Deployment> = Api::default_namespaced(emu.client().unwrap());
    let pp = PatchParams::apply("zdt").force();
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "nginx:1"}]}}}});
    let created = deploys.patch("web", &pp, &Patch::Apply(&d)).await.unwrap();
    assert_eq!(created.spec.unwrap().replicas, Some(1));
    let scale = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 2}});
    let applied = deploys
        .patch("web", &pp, &Patch::Apply(&scale))
        .await
        .unwrap();
    let spec = applied.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    assert_eq!(
        spec.template.spec.unwrap().containers[0].image.as_deref(),
        Some("nginx:1")
    );
    // JSON patch too (kubectl uses it for some edits).
    let jp: json_patch::Patch =
        serde_json::from_value(json!([{"op": "replace", "path": "/spec/replicas", "value": 3}]))
            .unwrap();
    let patched = deploys
        .patch("web", &PatchParams::default(), &Patch::<()>::Json(jp))
        .await
        .unwrap();
    assert_eq!(patched.spec.unwrap().replicas, Some(3));
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_runtime_watcher_and_await_condition_work() {
    use kube::runtime::wait::{await_condition, conditions};
    use kube::runtime::{watcher, WatchStreamExt};
    let emu = emulator(1).await;
    let client = emu.client().unwrap();
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    // A watcher started before anything exists sees the pod appear.
    let mut stream = watcher(pods.clone(), watcher::Config::default().labels("app=web"))
        .applied_objects()
        .boxed();
    deploys
        .create(&PostParams::default(), &deployment("web", 1, json!({})))
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await
        .expect("the watcher delivers in time")
        .unwrap()
        .unwrap();
    let name = first.metadata.name.clone().unwrap();
    assert!(name.starts_with("web-"), "{name}");
    let ready = tokio::time::timeout(
        Duration::from_secs(10),
        await_condition(pods.clone(), &name, conditions::is_pod_running()),
    )
    .await
    .expect("running in time")
    .unwrap();
    assert!(ready.is_some());
    let done = tokio::time::timeout(
        Duration::from_secs(10),
        await_condition(
            deploys.clone(),
            "web",
            conditions::is_deployment_completed(),
        ),
    )
    .await
    .expect("rollout completes in time")
    .unwrap();
    assert!(done.is_some());
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_status_subresource_takes_the_lb_ingress() {
    use k8s_openapi::api::core::v1::Service;
    let emu = emulator(1).await;
    let svcs: Api<Service> = Api::default_namespaced(emu.client().unwrap());
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                 "selector": {"app": "web"}, "ports": [{"port": 80}]}
    }))
    .unwrap();
    let created = svcs.create(&PostParams::default(), &svc).await.unwrap();
    let spec = created.spec.unwrap();
    let hc = spec.health_check_node_port;
    let node_port = spec.ports.as_ref().unwrap()[0].node_port;
    assert!(hc.is_some() && node_port.is_some());
    let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": "172.18.0.100"}]}}});
    svcs.patch_status("web", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    // A spec patch through the main resource cannot touch status…
    let sneaky = json!({"spec": {"sessionAffinity": "ClientIP"}, "status": {"loadBalancer": {}}});
    let after = svcs
        .patch("web", &PatchParams::default(), &Patch::Merge(&sneaky))
        .await
        .unwrap();
    let ingress = after
        .status
        .unwrap()
        .load_balancer
        .unwrap()
        .ingress
        .unwrap();
    assert_eq!(ingress[0].ip.as_deref(), Some("172.18.0.100"));
    // …and allocated ports survive a replace that omits them (kubectl apply).
    let mut replaced = svcs.get("web").await.unwrap();
    let spec = replaced.spec.as_mut().unwrap();
    spec.health_check_node_port = None;
    spec.ports.as_mut().unwrap()[0].node_port = None;
    let kept = svcs
        .replace("web", &PostParams::default(), &replaced)
        .await
        .unwrap();
    let kept_spec = kept.spec.unwrap();
    assert_eq!(kept_spec.health_check_node_port, hc);
    assert_eq!(kept_spec.ports.unwrap()[0].node_port, node_port);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_subresource_as_kubectl_scale_uses_it() {
    let emu = emulator(2).await;
    let deploys: Api<Deployment> = Api::default_namespaced(emu.client().unwrap());
    let pods: Api<Pod> = Api::default_namespaced(emu.client().unwrap());
    deploys
        .create(&PostParams::default(), &deployment("web", 1, json!({})))
        .await
        .unwrap();
    let scale = deploys.get_scale("web").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(1));
    let patch = json!({"spec": {"replicas": 4}});
    let scaled = deploys
        .patch_scale("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(scaled.spec.unwrap().replicas, Some(4));
    assert_eq!(
        deploys.get("web").await.unwrap().spec.unwrap().replicas,
        Some(4)
    );
    eventually(5, "4 ready", || async {
        (ready_pods(&pods, "app=web").await == 4).then_some(())
    })
    .await;
    let s = deploys.get_scale("web").await.unwrap().status.unwrap();
    assert_eq!((s.replicas, s.selector.as_deref()), (4, Some("app=web")));
    let bad = json!({"spec": {"replicas": -1}});
    let err = deploys
        .patch_scale("web", &PatchParams::default(), &Patch::Merge(&bad))
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 422));
    emu.shutdown().await;
}
