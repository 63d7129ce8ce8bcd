//! The kubelet model with real containers (nginx when installed, and the
//! built-in server): start delay, readiness, preStop, stop signal, SIGKILL
//! at the grace period, node faults.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;
use zdt_core::clock::Clock;
use zdt_core::events::{Event, EventSink};
use zdt_core::units::Dur;
use zdt_emulator::node::kubelet::{
    Kubelet, KubeletConfig, PodAddrs, PodStatusUpdate, SANDBOX_TEARDOWN,
};
use zdt_emulator::node::runtime::{find_nginx, Runtime};
use zdt_emulator::{KubeVersion, RuntimeChoice, Timings};

const LIMIT: Duration = Duration::from_secs(15);
const NODE: &str = "worker-1";

struct Node {
    kubelet: Kubelet,
    addrs: PodAddrs,
    status: mpsc::UnboundedReceiver<PodStatusUpdate>,
    events: mpsc::UnboundedReceiver<Event>,
    seen: Vec<Event>,
    _runtime: Arc<Runtime>,
}

fn node(choice: RuntimeChoice, version: KubeVersion, start_delay: Duration) -> Node {
    let (sink, events) = EventSink::channel(Clock::start());
    let runtime = Runtime::new(choice, sink.clone(), zdt_emulator::Net::host()).unwrap();
    let (tx, status) = mpsc::unbounded_channel();
    let addrs = PodAddrs::new();
    let timings = Timings {
        pod_start_delay: Dur(start_delay),
        ..Timings::default()
    };
    let kubelet = Kubelet::new(
        KubeletConfig {
            node_name: NODE.into(),
            node_index: 1,
            node_ip: Some("172.18.0.3".into()),
            timings,
            version,
            api_server: "127.0.0.1:6443".parse().unwrap(),
        },
        runtime.clone(),
        addrs.clone(),
        sink,
        tx,
    );
    Node {
        kubelet,
        addrs,
        status,
        events,
        seen: Vec::new(),
        _runtime: runtime,
    }
}

impl Node {
    async fn wait_status(
        &mut self,
        what: &str,
        f: impl Fn(&PodStatusUpdate) -> bool,
    ) -> PodStatusUpdate {
        let deadline = Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.status.recv()).await {
                Ok(Some(u)) if f(&u) => return u,
                Ok(Some(_)) => {}
                Ok(None) => panic!("status channel closed waiting for {what}"),
                Err(_) => panic!("no status update {what} within {LIMIT:?}"),
            }
        }
    }

    async fn running(&mut self) -> (PodStatusUpdate, SocketAddr) {
        let u = self.wait_status("Running", |u| phase(u) == "Running").await;
        let ip: IpAddr = u.status.pod_ip.as_deref().unwrap().parse().unwrap();
        let addr = self.addrs.get(&ip).expect("pod IP mapped to a socket");
        (u, addr)
    }

    fn drain_events(&mut self) -> &[Event] {
        while let Ok(e) = self.events.try_recv() {
            self.seen.push(e);
        }
        &self.seen
    }

    fn event(&mut self, reason: &str) -> Option<Event> {
        self.drain_events()
            .iter()
            .find(|e| e.reason == reason)
            .cloned()
    }
}

fn phase(u: &PodStatusUpdate) -> &str {
    u.status.phase.as_deref().unwrap_or("")
}

fn ready(u: &PodStatusUpdate) -> bool {
    u.status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn pod(name: &str, image: &str, container: serde_json::Value, grace: i64) -> Pod {
    let mut c = json!({"name": "web", "image": image, "ports": [{"containerPort": 80}]});
    if let (Some(c), Some(extra)) = (c.as_object_mut(), container.as_object()) {
        for (k, v) in extra {
            c.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {"nodeName": NODE, "containers": [c], "terminationGracePeriodSeconds": grace}
    }))
    .unwrap()
}

fn deleted(mut p: Pod) -> Pod {
    p.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    p.metadata.deletion_grace_period_seconds = p
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds);
    p
}

async fn get(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await?;
    let mut buf = Vec::new();
    timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .map_err(|_| std::io::Error::other("timed out"))??;
    Ok(String::from_utf8_lossy(&buf).to_ascii_lowercase())
}

fn choices() -> Vec<RuntimeChoice> {
    let mut v = vec![RuntimeChoice::Builtin];
    if find_nginx().is_some() {
        v.push(RuntimeChoice::Nginx);
    } else {
        eprintln!("nginx is not installed: only the built-in runtime is tested");
    }
    v
}

fn gap(a: &Event, b: &Event) -> Duration {
    b.at.saturating_sub(a.at)
}

#[tokio::test]
async fn start_delay_then_running_with_pod_ip_and_ready_without_probe() {
    for choice in choices() {
        let mut n = node(choice, KubeVersion::V1_31, Duration::from_millis(400));
        let t0 = Instant::now();
        n.kubelet.sync(pod("web-a", "nginx:1.27", json!({}), 30));
        let (u, addr) = n.running().await;
        assert!(
            t0.elapsed() >= Duration::from_millis(400),
            "{choice:?}: running after {:?}, before the start delay",
            t0.elapsed()
        );
        assert!(ready(&u), "{choice:?}: no probe = ready once started");
        let ip = u.status.pod_ip.clone().unwrap();
        assert!(ip.starts_with("10.244.1."), "{ip}");
        assert_eq!(u.status.host_ip.as_deref(), Some("172.18.0.3"));
        let text = get(addr).await.unwrap();
        assert!(text.contains("x-pod: web-a"), "{text}");
        assert!(text.contains("x-node: worker-1"), "{text}");
        assert!(n.event("Started").is_some());
        assert!(n.event("Runtime").unwrap().message.contains(match choice {
            RuntimeChoice::Nginx => "as nginx",
            _ => "as built-in server",
        }));
    }
}

#[tokio::test]
async fn readiness_waits_for_initial_delay_and_probe_success() {
    let mut n = node(RuntimeChoice::Auto, KubeVersion::V1_31, Duration::ZERO);
    let probe = json!({"readinessProbe": {"httpGet": {"path": "/", "port": 80},
        "initialDelaySeconds": 1, "periodSeconds": 1}});
    n.kubelet.sync(pod("web-r", "nginx", probe, 30));
    let (u, _) = n.running().await;
    assert!(!ready(&u), "ready before the first probe");
    let t = Instant::now();
    n.wait_status("Ready", ready).await;
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(900), "ready after {took:?}");
    assert!(took < Duration::from_secs(4), "ready after {took:?}");
}

/// The reference mitigation: nginx keeps serving through the preStop sleep
/// and only then gets SIGQUIT; it exits 0 and the pod is gone.
#[tokio::test]
async fn stop_signal_only_after_prestop_sleep() {
    for choice in choices() {
        let mut n = node(choice, KubeVersion::V1_31, Duration::ZERO);
        let lifecycle =
            json!({"lifecycle": {"preStop": {"exec": {"command": ["/bin/sh", "-c", "sleep 1"]}}}});
        let p = pod("web-s", "nginx:1.27", lifecycle, 10);
        n.kubelet.sync(p.clone());
        let (_, addr) = n.running().await;
        let container = n.kubelet.container("default", "web-s").unwrap();
        n.kubelet.sync(deleted(p));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            get(addr).await.unwrap().contains("200 ok"),
            "{choice:?}: not serving during preStop"
        );
        assert!(container.exit_status().is_none());
        let gone = n.wait_status("gone", |u| u.gone).await;
        assert_eq!(phase(&gone), "Succeeded", "{choice:?}: SIGQUIT exits 0");
        let killing = n.event("Killing").unwrap();
        let signal = n.event("StopSignal").unwrap();
        assert!(signal.message.contains("SIGQUIT"), "{}", signal.message);
        let after = gap(&killing, &signal);
        assert!(
            after >= Duration::from_millis(950) && after < Duration::from_millis(3000),
            "{choice:?}: SIGQUIT {after:?} after deletion, expected ≈1 s (preStop sleep)"
        );
        assert!(n.event("PreStopStarted").is_some());
        assert!(n.event("GracePeriodExpired").is_none());
        assert!(TcpStream::connect(addr).await.is_err(), "still listening");
        if choice == RuntimeChoice::Nginx {
            let log = container.log_tail().join("\n");
            assert!(log.contains("signal 3 (SIGQUIT)"), "{log}");
        }
        // The sandbox outlives the containers by the kubelet's relist: the
        // pod IP (a closed port now) stays mapped, then goes.
        assert!(
            !n.addrs.is_empty(),
            "pod IP unmapped before its sandbox teardown"
        );
        let deadline = Instant::now() + SANDBOX_TEARDOWN + Duration::from_secs(2);
        while !n.addrs.is_empty() {
            assert!(
                Instant::now() < deadline,
                "pod IP still mapped after its sandbox teardown"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The control plane may resync the object before removing it: a
        // finished pod is not started again.
        n.kubelet
            .sync(deleted(pod("web-s", "nginx:1.27", json!({}), 10)));
        assert!(
            timeout(Duration::from_millis(300), n.status.recv())
                .await
                .is_err(),
            "{choice:?}: a finished pod was reported again"
        );
    }
}

/// A container that ignores its stop signal is SIGKILLed when the grace
/// period (counted from the deletion) runs out.
#[tokio::test]
async fn sigkill_at_grace_period_when_stop_signal_is_ignored() {
    for choice in choices() {
        let mut n = node(choice, KubeVersion::V1_31, Duration::ZERO);
        let ignore = json!({"lifecycle": {"stopSignal": "SIGUSR1"}});
        let p = pod("web-k", "nginx", ignore, 3);
        n.kubelet.sync(p.clone());
        n.running().await;
        n.kubelet.sync(deleted(p));
        let gone = n.wait_status("gone", |u| u.gone).await;
        assert_eq!(phase(&gone), "Failed", "{choice:?}");
        let term = gone.status.container_statuses.as_ref().unwrap()[0]
            .state
            .as_ref()
            .unwrap()
            .terminated
            .clone()
            .unwrap();
        assert_eq!(term.exit_code, 137, "{choice:?}");
        let killing = n.event("Killing").unwrap();
        assert!(n.event("StopSignal").unwrap().message.contains("SIGUSR1"));
        let kill = n.event("GracePeriodExpired").unwrap();
        let after = gap(&killing, &kill);
        assert!(
            after >= Duration::from_millis(2900) && after < Duration::from_millis(5000),
            "{choice:?}: SIGKILL {after:?} after deletion, grace period 3 s"
        );
    }
}

#[tokio::test]
async fn sleep_action_only_on_versions_that_have_it() {
    for (version, honoured) in [(KubeVersion::V1_31, true), (KubeVersion::V1_27, false)] {
        let mut n = node(RuntimeChoice::Builtin, version, Duration::ZERO);
        let lifecycle = json!({"lifecycle": {"preStop": {"sleep": {"seconds": 1}}}});
        let p = pod("web-z", "nginx", lifecycle, 10);
        n.kubelet.sync(p.clone());
        n.running().await;
        n.kubelet.sync(deleted(p));
        n.wait_status("gone", |u| u.gone).await;
        let after = gap(
            &n.event("Killing").unwrap(),
            &n.event("StopSignal").unwrap(),
        );
        if honoured {
            assert!(after >= Duration::from_millis(950), "{version}: {after:?}");
        } else {
            assert!(after < Duration::from_millis(500), "{version}: {after:?}");
            let why = n.event("FailedPreStopHook").unwrap().message;
            assert!(why.contains("1.30"), "{why}");
        }
    }
}

#[tokio::test]
async fn prestop_http_get_reaches_the_pod() {
    let mut n = node(RuntimeChoice::Auto, KubeVersion::V1_31, Duration::ZERO);
    let lifecycle = json!({"lifecycle": {"preStop": {"httpGet": {"path": "/drain", "port": 80}}}});
    let p = pod("web-h", "nginx", lifecycle, 10);
    n.kubelet.sync(p.clone());
    n.running().await;
    n.kubelet.sync(deleted(p));
    n.wait_status("gone", |u| u.gone).await;
    let done = n.event("PreStopFinished").unwrap().message;
    assert!(done.contains("HTTP 200"), "{done}");
}

#[tokio::test]
async fn deleted_during_start_delay_never_starts() {
    let mut n = node(
        RuntimeChoice::Auto,
        KubeVersion::V1_31,
        Duration::from_millis(500),
    );
    let p = pod("web-e", "nginx", json!({}), 30);
    n.kubelet.sync(p.clone());
    n.kubelet.sync(deleted(p));
    let gone = n.wait_status("gone", |u| u.gone).await;
    assert_eq!(phase(&gone), "Pending");
    assert!(n.event("Started").is_none());
    assert!(n.addrs.is_empty());
}

#[tokio::test]
async fn container_exiting_by_itself_sets_the_phase() {
    for choice in choices() {
        for (signo, expected) in [(libc::SIGQUIT, "Succeeded"), (libc::SIGKILL, "Failed")] {
            let mut n = node(choice, KubeVersion::V1_31, Duration::ZERO);
            n.kubelet.sync(pod("web-x", "nginx", json!({}), 30));
            n.running().await;
            assert!(n.kubelet.signal_container("default", "web-x", signo));
            let u = n.wait_status("exit", |u| phase(u) != "Running").await;
            assert_eq!(phase(&u), expected, "{choice:?} signal {signo}");
            assert!(!ready(&u));
            assert!(!u.gone, "not deleted, so not gone");
        }
    }
}

#[tokio::test]
async fn stop_kills_containers_and_reports_nothing_more() {
    for choice in choices() {
        let mut n = node(choice, KubeVersion::V1_31, Duration::ZERO);
        let p = pod("web-n", "nginx", json!({}), 30);
        n.kubelet.sync(p.clone());
        let (_, addr) = n.running().await;
        let container = n.kubelet.container("default", "web-n").unwrap();
        n.kubelet.stop();
        let exit = timeout(LIMIT, container.exited()).await.unwrap();
        assert_eq!(exit.signal, Some(libc::SIGKILL), "{choice:?}");
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "{choice:?}: still listening"
        );
        n.kubelet.sync(deleted(p));
        assert!(
            timeout(Duration::from_millis(300), n.status.recv())
                .await
                .map_or(true, |u| u.is_none()),
            "{choice:?}: a stopped kubelet reported"
        );
    }
}

#[tokio::test]
async fn pause_freezes_containers_until_resume() {
    for choice in choices() {
        let mut n = node(choice, KubeVersion::V1_31, Duration::ZERO);
        n.kubelet.sync(pod("web-p", "nginx", json!({}), 30));
        let (_, addr) = n.running().await;
        n.kubelet.pause();
        assert!(
            timeout(Duration::from_millis(500), get(addr))
                .await
                .is_err(),
            "{choice:?}: a paused pod answered"
        );
        n.kubelet.resume();
        assert!(timeout(LIMIT, get(addr))
            .await
            .unwrap()
            .unwrap()
            .contains("200 ok"));
    }
}

fn annotated(mut p: Pod, key: &str, value: &str) -> Pod {
    p.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(key.into(), value.into());
    p
}

/// `zdt.io/start-delay` without a readiness probe: the pod is Running and
/// Ready (it would get endpoints) while its app still refuses connections.
#[tokio::test]
async fn start_delay_annotation_ready_without_probe_while_refusing() {
    let delay = Duration::from_millis(2500);
    for choice in choices() {
        let mut n = node(choice, KubeVersion::V1_31, Duration::ZERO);
        let p = annotated(
            pod("web-w", "nginx:1.27", json!({}), 30),
            zdt_emulator::node::app::START_DELAY,
            "2500ms",
        );
        let t0 = Instant::now();
        n.kubelet.sync(p);
        let (u, addr) = n.running().await;
        assert!(ready(&u), "{choice:?}: no probe = ready once started");
        let refused = TcpStream::connect(addr).await;
        assert!(t0.elapsed() < delay, "{choice:?}: machine too slow to tell");
        assert_eq!(
            refused.map(|_| ()).unwrap_err().kind(),
            std::io::ErrorKind::ConnectionRefused,
            "{choice:?}: the app listened before its start delay"
        );
        let why = n.event("Ready").unwrap().message;
        assert!(why.contains("zdt.io/start-delay"), "{why}");
        let deadline = Instant::now() + LIMIT;
        while get(addr).await.is_err() {
            assert!(Instant::now() < deadline, "{choice:?}: never listened");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            t0.elapsed() >= delay,
            "{choice:?}: listened after {:?}",
            t0.elapsed()
        );
    }
}

/// With a readiness probe the same pod turns Ready only once its app
/// listens: the probe is what keeps it out of the endpoints meanwhile.
#[tokio::test]
async fn start_delay_annotation_with_probe_ready_once_listening() {
    let delay = Duration::from_millis(2500);
    for choice in choices() {
        let mut n = node(choice, KubeVersion::V1_31, Duration::ZERO);
        let probe = json!({"readinessProbe": {"httpGet": {"path": "/", "port": 80},
            "periodSeconds": 1}});
        let p = annotated(
            pod("web-r", "nginx:1.27", probe, 30),
            zdt_emulator::node::app::START_DELAY,
            "2500ms",
        );
        let t0 = Instant::now();
        n.kubelet.sync(p);
        let (u, addr) = n.running().await;
        assert!(!ready(&u), "{choice:?}");
        n.wait_status("Ready", ready).await;
        let took = t0.elapsed();
        assert!(
            took >= delay,
            "{choice:?}: Ready after {took:?}, app not listening yet"
        );
        assert!(
            took < delay + Duration::from_secs(3),
            "{choice:?}: Ready after {took:?}"
        );
        assert!(get(addr).await.unwrap().contains("200 ok"), "{choice:?}");
        let probe_failed = n.event("Unhealthy").unwrap().message;
        assert!(probe_failed.contains("refused"), "{probe_failed}");
    }
}

#[tokio::test]
async fn a_bad_app_annotation_fails_the_pod_with_the_fix() {
    let mut n = node(RuntimeChoice::Builtin, KubeVersion::V1_31, Duration::ZERO);
    let p = annotated(
        pod("web-b", "nginx", json!({}), 30),
        zdt_emulator::node::app::RESPONSE_DELAY,
        "fast",
    );
    n.kubelet.sync(p);
    let u = n.wait_status("Failed", |u| phase(u) == "Failed").await;
    let msg = u.status.message.unwrap_or_default();
    assert!(msg.contains("zdt.io/response-delay"), "{msg}");
    assert!(msg.contains("250ms"), "{msg}");
    assert!(n.addrs.is_empty(), "a failed pod got a socket");
}

/// A force-deleted pod (gone from the API at once): no preStop, the stop
/// signal, and SIGKILL after the kubelet's 2 s minimum if it is ignored.
#[tokio::test]
async fn removed_pod_gets_minimum_grace_without_prestop() {
    let mut n = node(RuntimeChoice::Builtin, KubeVersion::V1_31, Duration::ZERO);
    let c = json!({"lifecycle": {"stopSignal": "SIGUSR1",
        "preStop": {"exec": {"command": ["sleep", "5"]}}}});
    n.kubelet.sync(pod("web-f", "nginx", c, 30));
    n.running().await;
    n.kubelet.remove("default", "web-f", None);
    n.wait_status("gone", |u| u.gone).await;
    assert!(
        n.event("PreStopStarted").is_none(),
        "preStop ran on a force delete"
    );
    let after = gap(
        &n.event("Killing").unwrap(),
        &n.event("GracePeriodExpired").unwrap(),
    );
    assert!(
        after >= Duration::from_millis(1900) && after < Duration::from_millis(4000),
        "SIGKILL {after:?} after the force delete, expected the 2 s minimum"
    );
}
