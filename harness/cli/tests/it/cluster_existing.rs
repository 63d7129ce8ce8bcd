//! The existing provider: the safety refusal, kubeconfig + context loading
//! (two contexts pointing at two local stub API servers: requests must reach
//! the named one), and waiting for the Service's `status.loadBalancer.ingress`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use miette::Diagnostic;
use zdt_cluster::existing::{
    check_disruption_allowed, load_balancer_target, wait_load_balancer_ingress, ExistingCluster,
    ExistingError, IngressAddr,
};

/// A stub API server answering GET of Service web/nginx: without an ingress
/// for the first `pending` reads, then with `203.0.113.10` (TEST-NET-3).
/// Returns its address and the number of requests it got.
async fn stub_api(pending: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: Request<hyper::body::Incoming>| {
                        let n = counter.fetch_add(1, Ordering::SeqCst);
                        async move {
                            let body = if req.uri().path()
                                == "/api/v1/namespaces/web/services/nginx"
                            {
                                let status = if n < pending {
                                    serde_json::json!({"loadBalancer": {}})
                                } else {
                                    serde_json::json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}})
                                };
                                serde_json::json!({
                                    "apiVersion": "v1", "kind": "Service",
                                    "metadata": {"name": "nginx", "namespace": "web"},
                                    "spec": {"type": "LoadBalancer", "ports": [
                                        {"name": "http", "port": 8080, "targetPort": 80}
                                    ]},
                                    "status": status
                                })
                            } else {
                                let r = Response::builder()
                                .status(404)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(
                                    r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#,
                                )))
                                .unwrap();
                                return Ok::<_, Infallible>(r);
                            };
                            Ok(Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(body.to_string())))
                                .unwrap())
                        }
                    },
                );
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    (addr, hits)
}

fn kubeconfig(dir: &std::path::Path, a: SocketAddr, b: SocketAddr) -> std::path::PathBuf {
    let text = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: ctx-a\n\
         clusters:\n- name: a\n  cluster: {{server: \"http://{a}\"}}\n- name: b\n  cluster: {{server: \"http://{b}\"}}\n\
         users:\n- name: u\n  user: {{token: stub}}\n\
         contexts:\n- name: ctx-a\n  context: {{cluster: a, user: u}}\n- name: ctx-b\n  context: {{cluster: b, user: u, namespace: web}}\n"
    );
    let path = dir.join("kubeconfig");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn the_named_context_is_the_one_used_and_its_ingress_is_awaited() {
    let (a, hits_a) = stub_api(0).await;
    let (b, hits_b) = stub_api(2).await;
    let dir = tempfile::tempdir().unwrap();
    let path = kubeconfig(dir.path(), a, b);

    let cluster = ExistingCluster::connect(Some(&path), Some("ctx-b"))
        .await
        .unwrap();
    assert_eq!(cluster.context(), "ctx-b");
    assert_eq!(cluster.client().default_namespace(), "web");
    let (_, addrs) = wait_load_balancer_ingress(
        &cluster.client(),
        "web",
        "nginx",
        Duration::from_millis(20),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(
        addrs,
        vec![IngressAddr::Ip("203.0.113.10".parse().unwrap())]
    );
    assert_eq!(
        hits_b.load(Ordering::SeqCst),
        3,
        "two reads without ingress, one with"
    );
    assert_eq!(
        hits_a.load(Ordering::SeqCst),
        0,
        "ctx-a's server must not be asked"
    );

    let target = load_balancer_target(
        &cluster.client(),
        "web",
        "nginx",
        Some("http"),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(target, "203.0.113.10:8080");

    // Named and listed: allowed. Current context, not named: refused.
    cluster.check_disruption_allowed(&["ctx-b".into()]).unwrap();
    let current = ExistingCluster::connect(Some(&path), None).await.unwrap();
    assert_eq!(current.context(), "ctx-a");
    let err = current
        .check_disruption_allowed(&["ctx-a".into()])
        .unwrap_err();
    assert!(
        matches!(err, ExistingError::ContextNotNamed { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn no_ingress_in_time_is_an_error_naming_the_service() {
    let (a, _) = stub_api(usize::MAX).await;
    let dir = tempfile::tempdir().unwrap();
    let path = kubeconfig(dir.path(), a, a);
    let cluster = ExistingCluster::connect(Some(&path), Some("ctx-a"))
        .await
        .unwrap();
    let err = wait_load_balancer_ingress(
        &cluster.client(),
        "web",
        "nginx",
        Duration::from_millis(20),
        Duration::from_millis(200),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ExistingError::NoIngress { .. }), "{err:?}");
    assert!(err.to_string().contains("web/nginx"), "{err}");
    assert!(err
        .help()
        .unwrap()
        .to_string()
        .contains("kubectl -n web describe service nginx"));
}

#[tokio::test]
async fn an_unknown_context_lists_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let path = kubeconfig(dir.path(), addr, addr);
    let err = ExistingCluster::connect(Some(&path), Some("prod"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("\"prod\"") && text.contains("ctx-a") && text.contains("ctx-b"),
        "{text}"
    );
}

#[test]
fn refusals_say_exactly_how_to_allow_the_context() {
    let err = check_disruption_allowed(None, "aks-prod", &[]).unwrap_err();
    let help = err.help().unwrap().to_string();
    assert!(help.contains("--context aks-prod"), "{help}");
    assert!(help.contains("allowContexts: [\"aks-prod\"]"), "{help}");

    let err =
        check_disruption_allowed(Some("aks-prod"), "aks-prod", &["kind-zdt".into()]).unwrap_err();
    assert!(err.to_string().contains("[\"kind-zdt\"]"), "{err}");
    let help = err.help().unwrap().to_string();
    assert!(help.contains("allowContexts: [\"aks-prod\"]"), "{help}");

    check_disruption_allowed(Some("aks-prod"), "aks-prod", &["aks-prod".into()]).unwrap();
}

// ---------------------------------------------------------------------------
// `zdt run` on an existing cluster deletes what it created and nothing else.
// The embedded emulator, started here, is the "existing" cluster: it speaks
// the Kubernetes API, and the zdt binary reaches it through a kubeconfig
// (context `zdt-emulator`) like any cluster a user points it at.

mod cleanup {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use kube::api::{Api, Patch, PatchParams, PostParams};
    use tokio::io::{AsyncBufReadExt, BufReader};
    use zdt_emulator::{Emulator, EmulatorConfig, RuntimeChoice};

    /// An emulated cluster (two workers, built-in pods) with a kubeconfig.
    async fn cluster(dir: &Path) -> (Emulator, kube::Client, PathBuf) {
        let emu = Emulator::start(
            EmulatorConfig {
                workers: 2,
                runtime: RuntimeChoice::Builtin,
                ..EmulatorConfig::default()
            },
            zdt_core::events::EventSink::discard(zdt_core::clock::Clock::start()),
        )
        .await
        .unwrap();
        let kubeconfig = dir.join("kubeconfig");
        emu.write_kubeconfig(&kubeconfig).unwrap();
        let client = emu.client().unwrap();
        (emu, client, kubeconfig)
    }

    /// The user's own objects, there before the run: namespace `ns` with a
    /// ConfigMap `shared` (which the scenario's manifests also contain) and
    /// one `bystander` (which they do not).
    async fn users_objects(client: &kube::Client, ns: &str) {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let n: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": ns}
        }))
        .unwrap();
        namespaces.create(&PostParams::default(), &n).await.unwrap();
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        for name in ["shared", "bystander"] {
            let cm: ConfigMap = serde_json::from_value(serde_json::json!({
                "metadata": {"name": name},
                "data": {"owner": "the user"}
            }))
            .unwrap();
            maps.create(&PostParams::default(), &cm).await.unwrap();
        }
    }

    /// The repo's nginx workload with the Service on `port`, plus the
    /// ConfigMap `shared` and `extra` files.
    fn manifests(dir: &Path, port: u16, extra: &[(&str, &str)]) -> PathBuf {
        let out = dir.join("manifests");
        std::fs::create_dir_all(&out).unwrap();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests/nginx");
        for f in ["configmap.yaml", "deployment.yaml", "pdb.yaml"] {
            std::fs::copy(repo.join(f), out.join(f)).unwrap();
        }
        std::fs::write(
            out.join("service.yaml"),
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: nginx, labels: {{app: nginx}}}}\n\
                 spec:\n  type: LoadBalancer\n  selector: {{app: nginx}}\n  ports:\n  - {{name: http, port: {port}, targetPort: http, protocol: TCP}}\n"
            ),
        )
        .unwrap();
        std::fs::write(
            out.join("shared.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: shared}\ndata: {owner: zdt}\n",
        )
        .unwrap();
        for (name, text) in extra {
            std::fs::write(out.join(name), text).unwrap();
        }
        out
    }

    fn scenario(dir: &Path, manifests: &Path, ns: &str) -> PathBuf {
        let path = dir.join("scenario.yaml");
        std::fs::write(
            &path,
            format!(
                "apiVersion: zdt/v1alpha1\nkind: Scenario\nname: existing-cleanup\n\
                 cluster:\n  provider: existing\n  context: zdt-emulator\n  kubernetes: \"1.31\"\n\
                 workload:\n  manifests: {}\n  namespace: {ns}\n\
                 traffic:\n  rate: 20/s\n  duration: 2s\n",
                manifests.display()
            ),
        )
        .unwrap();
        path
    }

    fn command(dir: &Path, kubeconfig: &Path, file: &Path) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::from(crate::zdt_child());
        cmd.args(["-v", "run"])
            .arg(file)
            .args(["--context", "zdt-emulator", "--out"])
            .arg(dir.join("out"))
            .env("KUBECONFIG", kubeconfig)
            .env("HOME", dir)
            .env("TMPDIR", dir)
            .kill_on_drop(true);
        cmd
    }

    fn summary(dir: &Path) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join("out/summary.json")).unwrap())
            .unwrap()
    }

    /// The message of the run's first `reason` event.
    fn event_message(dir: &Path, reason: &str) -> String {
        std::fs::read_to_string(dir.join("out/events.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|e| e["reason"] == reason)
            .map(|e| e["message"].as_str().unwrap().to_owned())
            .unwrap_or_else(|| panic!("no {reason} event"))
    }

    /// The `ClusterDeleted` event's message: what teardown did.
    fn teardown_message(dir: &Path) -> String {
        event_message(dir, "ClusterDeleted")
    }

    /// The workload zdt applied is gone; the user's objects are there.
    async fn assert_only_zdts_objects_gone(client: &kube::Client, ns: &str) {
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
        let services: Api<Service> = Api::namespaced(client.clone(), ns);
        let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), ns);
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        assert!(deployments.get_opt("nginx").await.unwrap().is_none());
        assert!(services.get_opt("nginx").await.unwrap().is_none());
        assert!(pdbs.get_opt("nginx").await.unwrap().is_none());
        assert!(maps.get_opt("nginx-headers").await.unwrap().is_none());
        for name in ["shared", "bystander"] {
            assert!(
                maps.get_opt(name).await.unwrap().is_some(),
                "the user's ConfigMap {ns}/{name} was deleted"
            );
        }
        let namespaces: Api<Namespace> = Api::all(client.clone());
        assert!(namespaces.get_opt(ns).await.unwrap().is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_passing_run_deletes_the_workload_it_created_and_keeps_the_users_objects() {
        let dir = tempfile::tempdir().unwrap();
        let (emu, client, kubeconfig) = cluster(dir.path()).await;
        users_objects(&client, "shop").await;
        // The cloud, faked: zdt's in-process LB on 127.0.0.1 (its port is
        // the Service's port), given the emulator's nodes as backends once
        // the Service exists, and the Service's status.loadBalancer.ingress
        // saying so.
        let lb = zdt_lb::Lb::start(
            zdt_lb::LbConfig::default(),
            Vec::new(),
            zdt_core::events::EventSink::discard(zdt_core::clock::Clock::start()),
            tokio_util::sync::CancellationToken::new(),
        )
        .await
        .unwrap();
        let port = lb.frontend_addr().port();
        let file = scenario(dir.path(), &manifests(dir.path(), port, &[]), "shop");
        let run = command(dir.path(), &kubeconfig, &file).output();
        tokio::pin!(run);
        let services: Api<Service> = Api::namespaced(client.clone(), "shop");
        let mut exposed = false;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        let out = loop {
            tokio::select! {
                out = &mut run => break out.unwrap(),
                _ = tokio::time::sleep(Duration::from_millis(50)), if !exposed => {
                    assert!(tokio::time::Instant::now() < deadline, "no Service shop/nginx in 120 s");
                    if services.get_opt("nginx").await.unwrap().is_none() {
                        continue;
                    }
                    for backend in zdt_cluster::provider::emulator_lb_backends(&emu, "shop", "nginx").unwrap() {
                        lb.admin().add(backend).unwrap();
                    }
                    let ingress = serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}}});
                    services
                        .patch_status("nginx", &PatchParams::default(), &Patch::Merge(&ingress))
                        .await
                        .unwrap();
                    exposed = true;
                }
            }
        };
        let printed = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{printed}");
        let s = summary(dir.path());
        assert!(s["variants"][0]["requests"].as_u64().unwrap() >= 30, "{s}");
        // Ready meant the cloud LB's address accepted TCP, and says only that.
        assert_eq!(
            event_message(dir.path(), "LbReady"),
            format!(
                "the cloud's load balancer of context \"zdt-emulator\" at 127.0.0.1:{port} accepts \
                 TCP connections (only that was checked: zdt cannot see its backends or their health)"
            )
        );
        assert_only_zdts_objects_gone(&client, "shop").await;
        let said = teardown_message(dir.path());
        assert!(
            said.contains("deleted the 4 object(s) zdt created: [")
                && said.contains("Deployment shop/nginx")
                && said.contains(
                    "left the 2 that existed before the run: [Namespace shop, ConfigMap shop/shared]"
                ),
            "{said}"
        );
        lb.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_apply_failing_halfway_deletes_what_was_created_up_to_there_with_its_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let (_emu, client, kubeconfig) = cluster(dir.path()).await;
        // A kind no cluster serves, applied last (files go in name order).
        let widget = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n";
        let m = manifests(dir.path(), 8080, &[("zz-widget.yaml", widget)]);
        let file = scenario(dir.path(), &m, "fresh");
        let out = command(dir.path(), &kubeconfig, &file)
            .output()
            .await
            .unwrap();
        let printed = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(3), "{printed}");
        let reason = summary(dir.path())["variants"][0]["reasons"][0].to_string();
        assert!(reason.contains("Widget"), "{reason}");
        let said = teardown_message(dir.path());
        assert!(
            said.contains("deleted the 6 object(s) zdt created: [")
                && said.ends_with("Namespace fresh]"),
            "the namespace zdt created goes last: {said}"
        );
        assert!(!said.contains("left the"), "{said}");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns = namespaces.get_opt("fresh").await.unwrap();
        assert!(
            ns.as_ref()
                .is_none_or(|n| n.metadata.deletion_timestamp.is_some()),
            "namespace fresh, created by zdt, is still there: {ns:?}"
        );
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), "fresh");
        assert!(deployments.get_opt("nginx").await.unwrap().is_none());
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "fresh");
        assert!(maps.get_opt("shared").await.unwrap().is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_inside_the_variant_still_deletes_the_workload_it_created() {
        let dir = tempfile::tempdir().unwrap();
        let (_emu, client, kubeconfig) = cluster(dir.path()).await;
        users_objects(&client, "shop").await;
        let file = scenario(dir.path(), &manifests(dir.path(), 8080, &[]), "shop");
        // The variant panics as it enters the LB phase, the workload applied:
        // unwinding skips the run's teardown, so the provider's Drop deletes.
        let out = command(dir.path(), &kubeconfig, &file)
            .env("ZDT_FAILPOINT", "load balancer")
            .output()
            .await
            .unwrap();
        let printed = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(3), "{printed}");
        let reason = summary(dir.path())["variants"][0]["reasons"].to_string();
        assert!(reason.contains("failpoint"), "{reason}");
        assert_only_zdts_objects_gone(&client, "shop").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ctrl_c_while_waiting_for_the_clouds_lb_deletes_the_workload_it_created() {
        let dir = tempfile::tempdir().unwrap();
        let (_emu, client, kubeconfig) = cluster(dir.path()).await;
        users_objects(&client, "shop").await;
        let file = scenario(dir.path(), &manifests(dir.path(), 8080, &[]), "shop");
        // No cloud here: the Service never gets an ingress, zdt waits.
        let mut child = command(dir.path(), &kubeconfig, &file)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut printed = String::new();
        let waited = tokio::time::timeout(Duration::from_secs(120), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                printed.push_str(&line);
                printed.push('\n');
                if line.contains("run phase: load balancer") {
                    return;
                }
            }
            panic!("zdt ended before the load balancer phase:\n{printed}");
        })
        .await;
        assert!(
            waited.is_ok(),
            "no load balancer phase in 120 s:\n{printed}"
        );
        let pid = i32::try_from(child.id().unwrap()).unwrap();
        // SAFETY: signalling the child this test started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
        let drain = tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
            .await
            .expect("zdt did not stop within 60 s of SIGINT while waiting for the ingress")
            .unwrap();
        drain.await.unwrap();
        assert_eq!(status.code(), Some(3));
        let reason = summary(dir.path())["variants"][0]["reasons"].to_string();
        assert!(
            reason.contains("interrupted during load balancer"),
            "{reason}"
        );
        assert_only_zdts_objects_gone(&client, "shop").await;
    }
}
