//! Kubelet and kube-proxy together on one node: pods started by the kubelet
//! are reached through the kube-proxy dialer by their logical pod IP, and a
//! deleted pod's preStop window decides what new connections see. The
//! endpoints controller is played by the test (it is the control plane's).

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::timeout;
use zdt_core::clock::Clock;
use zdt_core::events::EventSink;
use zdt_core::units::Dur;
use zdt_emulator::node::kube_proxy::KubeProxy;
use zdt_emulator::node::kubelet::{Kubelet, KubeletConfig, PodAddrs, PodStatusUpdate};
use zdt_emulator::node::runtime::Runtime;
use zdt_emulator::{KubeVersion, RuntimeChoice, Timings};
use zdt_lb::Dial;

const LIMIT: Duration = Duration::from_secs(15);
const NODE: &str = "zdt-worker";

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
            "labels": {"app": "web"}},
        "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 10, "containers": [{
            "name": "nginx", "image": "nginx:1.27",
            "lifecycle": {"preStop": {"exec": {"command": ["sleep", "1"]}}}
        }]}
    }))
    .unwrap()
}

fn service() -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
            "selector": {"app": "web"}, "ports": [{"port": 80}]}
    }))
    .unwrap()
}

/// The endpoints controller's view: our pod ready, or (deleted)
/// serving-terminating, plus a ready pod on another node.
fn slice(ip: &str, terminating: bool) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"name": "web-1", "namespace": "default",
            "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": [ip], "nodeName": NODE,
             "conditions": {"ready": !terminating, "serving": true, "terminating": terminating}},
            // A ready pod elsewhere: the service has endpoints, just none
            // usable on this node (DROP rather than REJECT).
            {"addresses": ["10.244.2.2"], "nodeName": "zdt-worker2",
             "conditions": {"ready": true, "serving": true, "terminating": false}}
        ]
    }))
    .unwrap()
}

async fn wait(
    rx: &mut mpsc::UnboundedReceiver<PodStatusUpdate>,
    f: impl Fn(&PodStatusUpdate) -> bool,
) -> PodStatusUpdate {
    loop {
        let u = timeout(LIMIT, rx.recv()).await.unwrap().unwrap();
        if f(&u) {
            return u;
        }
    }
}

async fn dial(proxy: &KubeProxy) -> Dial {
    let d = proxy.dialer("default", "web", 80);
    timeout(LIMIT, d.dial("127.0.0.1:50000".parse().unwrap()))
        .await
        .unwrap()
}

async fn answer(d: Dial) -> String {
    let Dial::Connected(mut s) = d else {
        panic!("expected a connection, got {d:?}");
    };
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    timeout(LIMIT, s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf).to_ascii_lowercase()
}

/// During the preStop sleep, 1.31's kube-proxy keeps sending new
/// connections to the terminating pod, which still answers; 1.27's drops
/// them. After the stop signal the pod refuses connections.
#[tokio::test]
async fn prestop_window_through_kube_proxy() {
    let cases = [
        (RuntimeChoice::Auto, KubeVersion::V1_31, true),
        (RuntimeChoice::Auto, KubeVersion::V1_27, false),
        (RuntimeChoice::Builtin, KubeVersion::V1_31, true),
    ];
    for (choice, version, serves) in cases {
        let sink = EventSink::discard(Clock::start());
        let runtime = Runtime::new(choice, sink.clone(), zdt_emulator::Net::host()).unwrap();
        let addrs = PodAddrs::new();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let kubelet = Kubelet::new(
            KubeletConfig {
                node_name: NODE.into(),
                node_index: 1,
                node_ip: None,
                timings: Timings {
                    pod_start_delay: Dur::ZERO,
                    ..Timings::default()
                },
                version,
                api_server: "127.0.0.1:6443".parse().unwrap(),
            },
            runtime,
            addrs.clone(),
            sink.clone(),
            tx,
        );
        let sync = Duration::from_millis(100);
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
        let mut applies = proxy.applies();

        let p = pod("web-1");
        kubelet.sync(p.clone());
        let running = wait(&mut rx, |u| u.status.phase.as_deref() == Some("Running")).await;
        let ip = running.status.pod_ip.unwrap();
        assert!(ip.starts_with("10.244.1."), "{ip}");
        proxy.update(&[service()], &[slice(&ip, false)]);
        timeout(LIMIT, applies.changed()).await.unwrap().unwrap();
        assert!(answer(dial(&proxy).await).await.contains("x-pod: web-1"));

        let mut deleted = p;
        deleted.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        deleted.metadata.deletion_grace_period_seconds = Some(10);
        kubelet.sync(deleted);
        proxy.update(&[service()], &[slice(&ip, true)]);
        timeout(LIMIT, applies.changed()).await.unwrap().unwrap();
        // Still inside the 1 s preStop sleep.
        let d = dial(&proxy).await;
        if serves {
            assert!(answer(d).await.contains("x-pod: web-1"), "{version}");
        } else {
            assert!(matches!(d, Dial::Dropped), "{version}: {d:?}");
        }

        // The stop signal closes the listener; the endpoint is still
        // serving-terminating in the proxy's view, so 1.31 dials a socket
        // that refuses (a reset for the client).
        let mut stopped = false;
        for _ in 0..200 {
            if kubelet
                .container("default", "web-1")
                .is_none_or(|c| c.exit_status().is_some())
            {
                stopped = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(stopped, "{version}: container did not stop");
        let d = dial(&proxy).await;
        if serves {
            assert!(
                matches!(d, Dial::Refused | Dial::Dropped),
                "{version}: {d:?}"
            );
        } else {
            assert!(matches!(d, Dial::Dropped), "{version}: {d:?}");
        }
        let gone = wait(&mut rx, |u| u.gone).await;
        assert_eq!(gone.status.phase.as_deref(), Some("Succeeded"));
    }
}
