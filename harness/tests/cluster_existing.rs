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
use zdt::cluster::existing::{
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
