//! The kube-proxy model with real sockets: sync delay, Local/Cluster
//! routing per version, health check node port and :10256/healthz.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Service, Taint};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use zdt_core::clock::Clock;
use zdt_core::events::{Event, EventSink};
use zdt_emulator::node::kube_proxy::{KubeProxy, Route, TO_BE_DELETED_TAINT};
use zdt_emulator::node::kubelet::PodAddrs;
use zdt_emulator::node::serve::{ServeConfig, Server, ServerHandle};
use zdt_emulator::KubeVersion;
use zdt_lb::Dial;

const LIMIT: Duration = Duration::from_secs(10);
const NODE: &str = "worker-a";
const OTHER: &str = "worker-b";

fn service(local: bool) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "type": "LoadBalancer",
            "externalTrafficPolicy": if local { "Local" } else { "Cluster" },
            "healthCheckNodePort": if local { json!(30500) } else { json!(null) },
            "ports": [{"port": 80, "targetPort": 80, "nodePort": 30080}]
        }
    }))
    .unwrap()
}

/// (ip, node, ready, serving, terminating)
type Ep<'a> = (&'a str, &'a str, bool, bool, bool);

fn slice(endpoints: &[Ep]) -> EndpointSlice {
    let eps: Vec<_> = endpoints
        .iter()
        .map(|(ip, node, ready, serving, terminating)| {
            json!({
                "addresses": [ip],
                "nodeName": node,
                "conditions": {"ready": ready, "serving": serving, "terminating": terminating}
            })
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": "web-abcde", "namespace": "default",
            "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": eps,
        "ports": [{"port": 80, "protocol": "TCP"}]
    }))
    .unwrap()
}

struct Cluster {
    proxy: KubeProxy,
    addrs: PodAddrs,
    events: tokio::sync::mpsc::UnboundedReceiver<Event>,
    pods: Vec<ServerHandle>,
}

impl Cluster {
    fn new(version: KubeVersion, sync: Duration) -> Cluster {
        let (sink, events) = EventSink::channel(Clock::start());
        let addrs = PodAddrs::new();
        let proxy = KubeProxy::new(
            NODE,
            version,
            sync,
            addrs.clone(),
            sink,
            zdt_emulator::Net::host(),
            std::net::Ipv4Addr::LOCALHOST,
        )
        .unwrap();
        Cluster {
            proxy,
            addrs,
            events,
            pods: Vec::new(),
        }
    }

    /// A real pod server behind `ip`.
    async fn pod(&mut self, ip: &str, name: &str, node: &str) -> SocketAddr {
        let h = Server::start(ServeConfig::new("127.0.0.1:0".parse().unwrap(), name, node))
            .await
            .unwrap();
        let addr = h.addr();
        self.addrs.insert(ip.parse::<IpAddr>().unwrap(), addr);
        self.pods.push(h);
        addr
    }

    /// Update and wait for the apply it schedules.
    async fn apply(&self, local: bool, endpoints: &[Ep<'_>]) {
        let mut applies = self.proxy.applies();
        applies.borrow_and_update();
        self.proxy.update(&[service(local)], &[slice(endpoints)]);
        timeout(LIMIT, applies.changed()).await.unwrap().unwrap();
    }

    async fn dial(&self) -> Dial {
        let d = self.proxy.dialer("default", "web", 80);
        timeout(LIMIT, d.dial("127.0.0.1:40000".parse().unwrap()))
            .await
            .unwrap()
    }

    fn reasons(&mut self) -> Vec<String> {
        let mut v = Vec::new();
        while let Ok(e) = self.events.try_recv() {
            assert_eq!(e.node.as_deref(), Some(NODE));
            v.push(e.reason);
        }
        v
    }
}

/// One request on an open stream; returns the lowercased response head.
async fn request(stream: &mut TcpStream, keep_alive: bool) -> String {
    let conn = if keep_alive { "keep-alive" } else { "close" };
    let req = format!("GET / HTTP/1.1\r\nHost: t\r\nConnection: {conn}\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = timeout(LIMIT, stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase()
}

async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text[9..12].parse().unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    Ok((code, body))
}

#[tokio::test]
async fn applies_after_the_sync_delay_not_before_newest_state_wins() {
    let mut c = Cluster::new(KubeVersion::V1_31, Duration::from_millis(500));
    c.pod("10.244.1.2", "web-1", NODE).await;
    c.pod("10.244.1.3", "web-2", NODE).await;
    let mut applies = c.proxy.applies();
    let t0 = Instant::now();
    c.proxy.update(
        &[service(true)],
        &[slice(&[("10.244.1.2", NODE, true, true, false)])],
    );
    assert_eq!(
        c.proxy.route("default", "web"),
        Route::Reject,
        "applied at once"
    );
    assert!(matches!(c.dial().await, Dial::Refused));
    tokio::time::sleep(Duration::from_millis(150)).await;
    // A second change in the same burst: no second apply, its state wins.
    c.proxy.update(
        &[service(true)],
        &[slice(&[
            ("10.244.1.2", NODE, true, true, false),
            ("10.244.1.3", NODE, true, true, false),
        ])],
    );
    timeout(LIMIT, applies.changed()).await.unwrap().unwrap();
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(480) && took < Duration::from_millis(3000),
        "applied after {took:?}, sync delay 500ms"
    );
    match c.proxy.route("default", "web") {
        Route::To { endpoints, .. } => assert_eq!(endpoints.len(), 2),
        other => panic!("{other:?}"),
    }
    assert!(matches!(c.dial().await, Dial::Connected(_)));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(*applies.borrow(), 1, "one apply per burst");
    assert!(c.reasons().contains(&"EndpointsApplied".to_owned()));
}

/// The reference failure: with 1.27 semantics a Local node whose only pod
/// is terminating drops new connections; with 1.31 it still serves them
/// from the serving-terminating pod.
#[tokio::test]
async fn local_with_only_a_terminating_pod_drops_on_1_27_serves_on_1_31() {
    for (version, serves) in [(KubeVersion::V1_27, false), (KubeVersion::V1_31, true)] {
        let mut c = Cluster::new(version, Duration::from_millis(50));
        c.pod("10.244.1.2", "web-local", NODE).await;
        c.pod("10.244.2.2", "web-remote", OTHER).await;
        c.apply(
            true,
            &[
                ("10.244.1.2", NODE, true, true, false),
                ("10.244.2.2", OTHER, true, true, false),
            ],
        )
        .await;
        assert!(matches!(c.dial().await, Dial::Connected(_)));
        c.apply(
            true,
            &[
                ("10.244.1.2", NODE, false, true, true),
                ("10.244.2.2", OTHER, true, true, false),
            ],
        )
        .await;
        let reasons = c.reasons();
        match c.dial().await {
            Dial::Connected(mut s) if serves => {
                let head = request(&mut s, false).await;
                assert!(head.contains("x-pod: web-local"), "{head}");
                assert!(
                    reasons.contains(&"TerminatingFallback".to_owned()),
                    "{reasons:?}"
                );
            }
            Dial::Dropped if !serves => {
                assert!(
                    reasons.contains(&"NoLocalEndpoints".to_owned()),
                    "{reasons:?}"
                );
            }
            other => panic!("{version}: {other:?}"),
        }
        // A new ready local pod restores service on both versions.
        c.pod("10.244.1.9", "web-new", NODE).await;
        c.apply(
            true,
            &[
                ("10.244.1.9", NODE, true, true, false),
                ("10.244.2.2", OTHER, true, true, false),
            ],
        )
        .await;
        assert!(matches!(c.dial().await, Dial::Connected(_)));
        if !serves {
            assert!(c.reasons().contains(&"LocalEndpointsRestored".to_owned()));
        }
    }
}

#[tokio::test]
async fn cluster_uses_remote_pods_and_refuses_with_none() {
    for version in [KubeVersion::V1_27, KubeVersion::V1_31] {
        let mut c = Cluster::new(version, Duration::from_millis(50));
        c.pod("10.244.2.2", "web-remote", OTHER).await;
        c.apply(false, &[("10.244.2.2", OTHER, true, true, false)])
            .await;
        match c.dial().await {
            Dial::Connected(mut s) => {
                assert!(request(&mut s, false).await.contains("x-pod: web-remote"))
            }
            other => panic!("{version}: {other:?}"),
        }
        c.apply(false, &[]).await;
        assert!(matches!(c.dial().await, Dial::Refused), "{version}");
        assert!(c.reasons().contains(&"NoEndpoints".to_owned()));
        // An unknown service has no rules: refused too.
        let d = c.proxy.dialer("default", "nope", 80);
        assert!(matches!(
            d.dial("127.0.0.1:1".parse().unwrap()).await,
            Dial::Refused
        ));
    }
}

#[tokio::test]
async fn cluster_falls_back_to_terminating_only_on_1_28_plus() {
    for (version, serves) in [(KubeVersion::V1_27, false), (KubeVersion::new(1, 28), true)] {
        let mut c = Cluster::new(version, Duration::from_millis(50));
        c.pod("10.244.2.2", "web-t", OTHER).await;
        c.apply(false, &[("10.244.2.2", OTHER, false, true, true)])
            .await;
        let d = c.dial().await;
        assert_eq!(matches!(d, Dial::Connected(_)), serves, "{version}: {d:?}");
        assert_eq!(matches!(d, Dial::Refused), !serves, "{version}: {d:?}");
    }
}

#[tokio::test]
async fn pod_that_stopped_listening_is_refused_established_connections_survive() {
    let mut c = Cluster::new(KubeVersion::V1_31, Duration::from_millis(50));
    c.pod("10.244.1.2", "web-1", NODE).await;
    c.apply(false, &[("10.244.1.2", NODE, true, true, false)])
        .await;
    let Dial::Connected(mut established) = c.dial().await else {
        panic!("no connection");
    };
    assert!(request(&mut established, true).await.contains("200 ok"));
    // The view loses every endpoint; the established connection is spliced
    // to the pod directly and keeps working.
    c.apply(false, &[]).await;
    assert!(matches!(c.dial().await, Dial::Refused));
    assert!(request(&mut established, true).await.contains("200 ok"));

    // The pod is still in the view but no longer listens (a stopping
    // nginx): the dial is reset, not dropped.
    c.apply(false, &[("10.244.1.2", NODE, true, true, false)])
        .await;
    let pod = c.pods.pop().unwrap();
    pod.signal(zdt_emulator::node::serve::Signal::Kill);
    timeout(LIMIT, pod.exited()).await.unwrap();
    assert!(matches!(c.dial().await, Dial::Refused));
}

#[tokio::test]
async fn health_check_node_port_reports_local_ready_endpoints() {
    let mut c = Cluster::new(KubeVersion::V1_31, Duration::from_millis(50));
    c.pod("10.244.1.2", "a", NODE).await;
    c.pod("10.244.1.3", "b", NODE).await;
    let hc = c.proxy.health_check_addr("default", "web", None).unwrap();
    c.apply(
        true,
        &[
            ("10.244.1.2", NODE, true, true, false),
            ("10.244.1.3", NODE, true, true, false),
            ("10.244.2.2", OTHER, true, true, false),
        ],
    )
    .await;
    let (code, body) = http_get(hc, "/").await.unwrap();
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["service"]["namespace"], "default");
    assert_eq!(v["service"]["name"], "web");
    assert_eq!(v["localEndpoints"], 2);

    // Only a serving-terminating local pod: traffic still flows on 1.31,
    // but the health check fails (it counts ready endpoints only).
    c.apply(
        true,
        &[
            ("10.244.1.2", NODE, false, true, true),
            ("10.244.2.2", OTHER, true, true, false),
        ],
    )
    .await;
    let (code, body) = http_get(hc, "/").await.unwrap();
    assert_eq!(code, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["localEndpoints"], 0);
    assert!(matches!(c.dial().await, Dial::Connected(_)));
    assert_eq!(
        hc,
        c.proxy.health_check_addr("default", "web", None).unwrap()
    );
}

#[tokio::test]
async fn healthz_fails_for_to_be_deleted_nodes_from_1_31() {
    for (version, reflects) in [(KubeVersion::V1_31, true), (KubeVersion::V1_27, false)] {
        let c = Cluster::new(version, Duration::from_millis(50));
        let addr = c.proxy.healthz_addr();
        assert_eq!(http_get(addr, "/healthz").await.unwrap().0, 200);
        let taint: Taint = serde_json::from_value(
            json!({"key": TO_BE_DELETED_TAINT, "value": "1700000000", "effect": "NoSchedule"}),
        )
        .unwrap();
        c.proxy.set_node_state(false, &[taint]);
        let (code, body) = http_get(addr, "/healthz").await.unwrap();
        assert_eq!(code, if reflects { 503 } else { 200 }, "{version}: {body}");
        if reflects {
            assert!(body.contains("\"nodeEligible\": false"), "{body}");
        }
        c.proxy.set_node_state(true, &[]);
        let code = http_get(addr, "/healthz").await.unwrap().0;
        assert_eq!(
            code,
            if reflects { 503 } else { 200 },
            "{version}: deleting"
        );
        c.proxy.set_node_state(false, &[]);
        assert_eq!(http_get(addr, "/healthz").await.unwrap().0, 200);
    }
}

#[tokio::test]
async fn a_down_node_drops_connections_and_stops_answering_health_checks() {
    let mut c = Cluster::new(KubeVersion::V1_31, Duration::from_millis(50));
    c.pod("10.244.1.2", "a", NODE).await;
    let hc = c.proxy.health_check_addr("default", "web", None).unwrap();
    c.apply(true, &[("10.244.1.2", NODE, true, true, false)])
        .await;
    assert_eq!(http_get(hc, "/").await.unwrap().0, 200);
    c.proxy.set_down(true);
    assert!(matches!(c.dial().await, Dial::Dropped));
    for addr in [hc, c.proxy.healthz_addr()] {
        assert!(
            timeout(Duration::from_millis(400), http_get(addr, "/healthz"))
                .await
                .is_err(),
            "a down node answered its health check"
        );
    }
    c.proxy.set_down(false);
    assert_eq!(
        timeout(LIMIT, http_get(hc, "/")).await.unwrap().unwrap().0,
        200
    );
    assert!(matches!(c.dial().await, Dial::Connected(_)));
}
