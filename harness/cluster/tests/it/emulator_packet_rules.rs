//! The emulated cluster's data path as packets: kube-proxy's rules and the
//! pass-through cloud LB are nftables rules in the cluster's namespace, so
//! what a client sees is what the kernel does with its SYN — a connect
//! timeout where a node drops it, a refusal where it is rejected — and the
//! record of each decision comes from the rules' own log. Each test fails
//! when the model falls back to accepting and holding connections.
//!
//! Each test runs once per network mode ([`in_modes`]): the default, and
//! nodes in namespaces of their own (`NetworkChoice::Nodes`), where the
//! rules are split between the cluster's namespace (the LB) and each
//! node's (kube-proxy). Needs a network namespace and `nft` (and `ip` for
//! nodes); without them each test says why and returns.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use zdt_cluster::provider::{Cluster, Exposure};
use zdt_core::clock::Clock;
use zdt_core::events::EventSink;
use zdt_core::provenance::Fate;
use zdt_emulator::store::Resource;
use zdt_emulator::{
    apiserver as api, DataPathChoice, Emulator, EmulatorConfig, NetworkChoice, NodeFault,
    RuntimeChoice,
};
use zdt_lb::{Forwarding, InitialHealth, LbConfig, ProbeSettings};

/// How long a dropped SYN is given before the test calls it a timeout: a
/// connection the kernel completes here takes microseconds.
const CONNECT: Duration = Duration::from_millis(2500);
pub(crate) const NS: &str = "default";
const SVC: &str = "nginx";

/// One `#[tokio::test]` per network mode for the async fn `$test`, which
/// takes the mode: a module named after it with a test per mode.
macro_rules! in_modes {
    ($test:ident: $($mode:ident => $network:expr),+ $(,)?) => {
        mod $test {
            use zdt_emulator::NetworkChoice;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $mode() {
                    super::$test($network).await
                }
            )+
        }
    };
}
pub(crate) use in_modes;

/// Why these tests cannot run here in `network`, if they cannot.
pub(crate) fn unavailable(network: NetworkChoice) -> Option<String> {
    if let Some(why) = zdt_core::netns::private_unavailable() {
        return Some(format!("no network namespace: {why}"));
    }
    if zdt_emulator::dataplane::nft_path().is_none() {
        return Some("`nft` is not installed".into());
    }
    let ip = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"];
    // `Auto` gives pods sandboxes where it can, and needs `ip` for that.
    let needs_ip = !matches!(network, NetworkChoice::Private | NetworkChoice::Host);
    if needs_ip && !ip.iter().any(|p| Path::new(p).exists()) {
        return Some("`ip` (iproute2) is not installed".into());
    }
    None
}

pub(crate) struct Setup {
    pub(crate) cluster: Cluster,
    pub(crate) exposure: Exposure,
    /// The data path's records taken so far.
    records: std::sync::Mutex<Vec<zdt_core::provenance::ConnRecord>>,
}

impl Setup {
    pub(crate) fn emu(&self) -> &Emulator {
        match &self.cluster {
            Cluster::Emulator(e) => e,
            _ => unreachable!("the tests start emulators"),
        }
    }

    pub(crate) fn vip(&self) -> SocketAddr {
        self.exposure.target
    }

    /// The node the (first) nginx pod runs on.
    pub(crate) fn pod_node(&self) -> String {
        self.emu()
            .store()
            .list(Resource::Pods, Some(NS))
            .iter()
            .find(|p| p["metadata"]["labels"]["app"] == "nginx")
            .and_then(|p| p["spec"]["nodeName"].as_str().map(str::to_owned))
            .expect("an nginx pod")
    }

    /// A new connection to the LB from the clients' addresses.
    pub(crate) async fn connect(
        &self,
    ) -> Result<std::io::Result<TcpStream>, tokio::time::error::Elapsed> {
        tokio::time::timeout(CONNECT, self.emu().net().connect(self.vip())).await
    }

    /// The data path's record of the connection from `client`.
    pub(crate) fn record(&self, client: SocketAddr) -> Option<zdt_core::provenance::ConnRecord> {
        let mut records = self.records.lock().unwrap();
        records.extend(self.exposure.lb.connections().expect("zdt's LB records"));
        records.iter().rev().find(|r| r.client == client).cloned()
    }

    /// [`Setup::record`], waiting up to a second for the log's reader
    /// thread, which may not have read the SYN's message yet when the
    /// response is already back.
    pub(crate) async fn record_soon(
        &self,
        client: SocketAddr,
    ) -> Option<zdt_core::provenance::ConnRecord> {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let found = self.record(client);
            if found.is_some() || Instant::now() > deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub(crate) async fn shutdown(self) {
        self.exposure.lb.shutdown().await;
        self.cluster.teardown(Duration::ZERO).await;
    }
}

/// An emulated cluster in `network` on the nftables data path with the
/// repo's nginx workload (built-in server) behind a cloud LB forwarding as
/// `forwarding` says, probing every second.
async fn setup(
    network: NetworkChoice,
    workers: usize,
    replicas: u32,
    local: bool,
    forwarding: Forwarding,
) -> Setup {
    let config = EmulatorConfig {
        workers,
        runtime: RuntimeChoice::Builtin,
        network,
        data_path: DataPathChoice::Nftables,
        ..EmulatorConfig::default()
    };
    setup_in(config, replicas, local, forwarding, |_| {}).await
}

/// [`setup`] with the emulator `config`, and `edit` applied to every
/// object of the workload.
pub(crate) async fn setup_in(
    config: EmulatorConfig,
    replicas: u32,
    local: bool,
    forwarding: Forwarding,
    edit: impl Fn(&mut serde_json::Value),
) -> Setup {
    let emu = Emulator::start(config, EventSink::discard(Clock::start()))
        .await
        .expect("an emulator on the nftables data path");
    let timings = emu.config().timings;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests/nginx");
    for mut obj in zdt_scenario::workload::read_dir(&dir).unwrap() {
        if obj["kind"] == "Service" && local {
            obj["spec"]["externalTrafficPolicy"] = "Local".into();
        }
        if obj["kind"] == "Deployment" {
            obj["spec"]["replicas"] = replicas.into();
            // The kubelet's probes reach pods through the same rules.
            let port = obj["spec"]["template"]["spec"]["containers"][0]["ports"][0]
                ["containerPort"]
                .clone();
            obj["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] = serde_json::json!({
                "httpGet": {"path": "/healthz", "port": port}, "periodSeconds": 1
            });
        }
        edit(&mut obj);
        api::apply_object(emu.store(), &timings, obj).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while ready_pods(&emu) < replicas as usize {
        assert!(Instant::now() < deadline, "nginx not ready in 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cluster = Cluster::Emulator(Box::new(emu));
    let config = LbConfig {
        probe: ProbeSettings {
            interval: "1s".parse().unwrap(),
            timeout: "1s".parse().unwrap(),
            unhealthy_threshold: 2,
            healthy_threshold: 1,
        },
        initial_health: InitialHealth::Ready,
        fail_open: true,
        forwarding,
        ..LbConfig::default()
    };
    let exposure = cluster
        .expose(
            NS,
            SVC,
            config,
            EventSink::discard(Clock::start()),
            CancellationToken::new(),
        )
        .await
        .expect("the LB");
    Setup {
        cluster,
        exposure,
        records: Default::default(),
    }
}

/// [`setup`], then wait until the LB has `healthy` backends; `None` (the
/// test is skipped, saying why) where the data path cannot run.
async fn ready(
    network: NetworkChoice,
    workers: usize,
    replicas: u32,
    local: bool,
    forwarding: Forwarding,
    healthy: usize,
) -> Option<Setup> {
    if let Some(why) = unavailable(network) {
        eprintln!("skipped: {why}");
        return None;
    }
    let s = setup(network, workers, replicas, local, forwarding).await;
    wait_healthy(s, healthy).await
}

/// `net`'s conntrack table as its kernel lists it, or why it cannot be
/// read (the listing is root's of the namespace's user namespace, and a
/// normal user's zdt is mapped to itself).
pub(crate) fn conntrack_listing(net: &zdt_emulator::Net) -> Result<String, String> {
    let mut cmd = std::process::Command::new("cat");
    cmd.arg("/proc/net/nf_conntrack");
    net.join_before_exec(&mut cmd, false);
    let out = cmd.output().expect("cat in the namespace");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Wait until the LB of `s` has `healthy` backends.
pub(crate) async fn wait_healthy(s: Setup, healthy: usize) -> Option<Setup> {
    s.exposure
        .lb
        .wait_ready(healthy, Duration::from_secs(15))
        .await
        .unwrap();
    Some(s)
}

/// Connect to the LB from `100.64.0.<host>`: the client address, and
/// what became of the connect within [`CONNECT`].
pub(crate) async fn connect_from(
    s: &Setup,
    host: u8,
) -> (
    SocketAddr,
    Result<std::io::Result<TcpStream>, tokio::time::error::Elapsed>,
) {
    let socket = s.emu().net().tcp_socket(&s.vip()).unwrap();
    socket
        .bind(&SocketAddr::from(([100, 64, 0, host], 0)).into())
        .unwrap();
    let client = socket.local_addr().unwrap().as_socket().unwrap();
    let socket = tokio::net::TcpSocket::from_std_stream(socket.into());
    (
        client,
        tokio::time::timeout(CONNECT, socket.connect(s.vip())).await,
    )
}

pub(crate) fn ready_pods(emu: &Emulator) -> usize {
    emu.store()
        .list(Resource::Pods, Some(NS))
        .iter()
        .filter(|p| p["metadata"]["labels"]["app"] == "nginx")
        .filter(|p| zdt_emulator::controllers::pod_ready(p))
        .count()
}

/// One HTTP/1.1 request on `stream`, keep-alive; the head's lines,
/// lower-cased, or an error when nothing came back within `limit`.
pub(crate) async fn request(stream: &mut TcpStream, limit: Duration) -> std::io::Result<String> {
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
            if let Some(head_end) = text.find("\r\n\r\n") {
                let length = text
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if buf.len() >= head_end + 4 + length {
                    return Ok(text);
                }
            }
        }
    };
    match tokio::time::timeout(limit, read).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::from(std::io::ErrorKind::TimedOut)),
    }
}

pub(crate) fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(str::trim)
}

/// Wait (bounded) until a new connection through the LB is served (200).
pub(crate) async fn served_within(s: &Setup, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Ok(mut stream)) = s.connect().await {
            if let Ok(head) = request(&mut stream, Duration::from_secs(2)).await {
                // HTTP/1.0 too: a user's own server may answer with it.
                if head.starts_with("http/1.") && head.split(' ').nth(1) == Some("200") {
                    return head;
                }
            }
        }
        assert!(Instant::now() < deadline, "not served within {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

in_modes!(local_without_a_local_endpoint_drops_the_syn_and_the_pod_sees_the_client: default => NetworkChoice::Auto, nodes => NetworkChoice::Nodes);

/// The pass-through LB has no socket on the VIP (so the VIP's port is free
/// to bind there), the pod sees the client's own address, and with no
/// local endpoint on the node the LB sends it to, the SYN is dropped: a
/// connect timeout, recorded as dropped by that node.
async fn local_without_a_local_endpoint_drops_the_syn_and_the_pod_sees_the_client(
    network: NetworkChoice,
) {
    let Some(s) = ready(network, 2, 1, true, Forwarding::PassThrough, 1).await else {
        return;
    };
    let nothing_listens = s.emu().net().listen_std(s.vip(), 1, false);
    assert!(
        nothing_listens.is_ok(),
        "the VIP's port is taken: the LB listens ({nothing_listens:?})"
    );
    drop(nothing_listens);
    let head = served_within(&s, Duration::from_secs(10)).await;
    let pod_node = s.pod_node();
    assert_eq!(header(&head, "x-node"), Some(pod_node.as_str()), "{head}");
    let mut stream = s.connect().await.unwrap().unwrap();
    let client = stream.local_addr().unwrap();
    let head = request(&mut stream, Duration::from_secs(2)).await.unwrap();
    assert_eq!(
        header(&head, "x-client"),
        Some(client.to_string().as_str()),
        "the pod sees the client's own address: {head}"
    );
    let r = s.record(client).unwrap_or_else(|| {
        panic!(
            "the DNAT is not recorded; lost {}; table:\n{}",
            s.emu().data_plane().unwrap().lost(),
            s.emu().data_plane().unwrap().list().unwrap()
        )
    });
    assert_eq!(r.provenance.fate, Fate::Connected);
    assert_eq!(r.provenance.node.as_deref(), Some(pod_node.as_str()));
    assert!(r.provenance.pod.is_some(), "{r:?}");

    // Only the node without a pod is left (failing open to it).
    s.exposure.lb.admin().remove(&pod_node).await.unwrap();
    let other = if pod_node == "zdt-worker" {
        "zdt-worker2"
    } else {
        "zdt-worker"
    };
    let started = Instant::now();
    let (client, outcome) = connect_from(&s, 9).await;
    assert!(
        outcome.is_err(),
        "the SYN must go unanswered (a connect timeout), got {outcome:?} after {:?}",
        started.elapsed()
    );
    let r = s.record(client).expect("the drop is recorded");
    assert_eq!(r.provenance.fate, Fate::Dropped, "{r:?}");
    assert_eq!(r.provenance.node.as_deref(), Some(other), "{r:?}");
    assert_eq!(r.provenance.pod, None, "{r:?}");
    s.shutdown().await;
}

in_modes!(no_endpoints_anywhere_refuse_the_connection: default => NetworkChoice::Auto, nodes => NetworkChoice::Nodes);

/// With no endpoint anywhere, the node rejects: the client's connect is
/// refused (a reset to the SYN), recorded as refused.
async fn no_endpoints_anywhere_refuse_the_connection(network: NetworkChoice) {
    let Some(s) = ready(network, 2, 0, false, Forwarding::PassThrough, 2).await else {
        return;
    };
    // kube-proxy has applied the Service (its rules exist) within a sync.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (client, outcome) = loop {
        let (client, outcome) = connect_from(&s, 10).await;
        if s.record(client).is_some() || Instant::now() > deadline {
            break (client, outcome);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    match outcome {
        Ok(Err(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}"),
        other => panic!("expected a refused connect, got {other:?}"),
    }
    let r = s.record(client).unwrap_or_else(|| {
        panic!(
            "the reject is not recorded; table:\n{}",
            s.emu().data_plane().unwrap().list().unwrap()
        )
    });
    assert_eq!(r.provenance.fate, Fate::Refused, "{r:?}");
    assert!(r.provenance.node.is_some(), "{r:?}");
    s.shutdown().await;
}

in_modes!(a_stopped_node_goes_silent_and_serves_again_after_resume: default => NetworkChoice::Auto, nodes => NetworkChoice::Nodes);

/// A stopped node's packets are dropped: new connections time out, an open
/// one goes silent (no reset, no close), and after the node is resumed its
/// pod is served again.
async fn a_stopped_node_goes_silent_and_serves_again_after_resume(network: NetworkChoice) {
    let Some(s) = ready(network, 1, 1, true, Forwarding::PassThrough, 1).await else {
        return;
    };
    stopped_node_goes_silent_and_serves_again(s).await;
}

pub(crate) async fn stopped_node_goes_silent_and_serves_again(s: Setup) {
    served_within(&s, Duration::from_secs(10)).await;
    let mut open = s.connect().await.unwrap().unwrap();
    let head = request(&mut open, Duration::from_secs(2)).await.unwrap();
    assert!(head.starts_with("http/1.1 200"), "{head}");

    s.emu().node_fault("zdt-worker", NodeFault::Stop).unwrap();
    let silent = request(&mut open, Duration::from_secs(2)).await;
    assert_eq!(
        silent.as_ref().map_err(std::io::Error::kind).err(),
        Some(std::io::ErrorKind::TimedOut),
        "the open connection must go silent, got {silent:?}"
    );
    let (client, outcome) = connect_from(&s, 11).await;
    assert!(
        outcome.is_err(),
        "a new connection must time out: {outcome:?}"
    );
    let r = s.record(client).expect("the drop is recorded");
    assert_eq!(r.provenance.fate, Fate::Dropped, "{r:?}");
    assert_eq!(r.provenance.node.as_deref(), Some("zdt-worker"), "{r:?}");

    s.emu().node_fault("zdt-worker", NodeFault::Resume).unwrap();
    served_within(&s, Duration::from_secs(30)).await;
    s.shutdown().await;
}

in_modes!(the_proxying_profile_terminates_tcp: default => NetworkChoice::Auto, nodes => NetworkChoice::Nodes);

/// cloud-provider-kind's envoy terminates TCP: the LB listens on the VIP
/// and the pod sees the proxy's connection, not the client's address.
async fn the_proxying_profile_terminates_tcp(network: NetworkChoice) {
    let Some(s) = ready(network, 1, 1, true, Forwarding::Proxy, 1).await else {
        return;
    };
    let taken = s.emu().net().listen_std(s.vip(), 1, false);
    assert!(
        taken.is_err(),
        "the proxy must listen on the VIP: {taken:?}"
    );
    served_within(&s, Duration::from_secs(10)).await;
    let mut stream = s.connect().await.unwrap().unwrap();
    let client = stream.local_addr().unwrap();
    let head = request(&mut stream, Duration::from_secs(2)).await.unwrap();
    let seen = header(&head, "x-client").expect("x-client").to_owned();
    assert_ne!(seen, client.to_string(), "{head}");
    s.shutdown().await;
}

in_modes!(finished_flows_leave_the_conntrack_table: default => NetworkChoice::Auto, nodes => NetworkChoice::Nodes);

/// Finished connections leave the namespace's connection-tracking table
/// within seconds (the rules' timeout policy: TIME_WAIT 1 s), not after
/// TIME_WAIT's two minutes: the policy is applied, not only loaded.
async fn finished_flows_leave_the_conntrack_table(network: NetworkChoice) {
    let Some(s) = ready(network, 1, 1, true, Forwarding::PassThrough, 1).await else {
        return;
    };
    served_within(&s, Duration::from_secs(10)).await;
    // The table as the namespace's kernel lists it: (state, seconds left).
    // Not readable (the listing is root's of the namespace's user
    // namespace, and a normal user's zdt is mapped to itself): skipped.
    let listing = || conntrack_listing(s.emu().net());
    if let Err(why) = listing() {
        eprintln!("skipped: the namespace's conntrack table cannot be listed here: {why}");
        s.shutdown().await;
        return;
    }
    let entries = || -> Vec<(String, u64)> {
        listing()
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some((f.get(5)?.to_string(), f.get(4)?.parse().ok()?))
            })
            .collect()
    };
    if entries().is_empty() && !Path::new("/proc/net/nf_conntrack").exists() {
        eprintln!(
            "skipped: this kernel does not list conntrack entries (CONFIG_NF_CONNTRACK_PROCFS)"
        );
        s.shutdown().await;
        return;
    }
    const N: usize = 40;
    for _ in 0..N {
        let mut stream = s.connect().await.unwrap().unwrap();
        let head = request(&mut stream, Duration::from_secs(2)).await.unwrap();
        assert!(head.starts_with("http/1.1 200"), "{head}");
    }
    // Closed by the client: its side is in TIME_WAIT, and so is the entry.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let table = entries();
    let finished: Vec<&(String, u64)> = table
        .iter()
        .filter(|(state, _)| state != "ESTABLISHED" && state != "SYN_SENT")
        .collect();
    assert!(
        finished.len() >= N / 2,
        "the {N} finished connections are tracked: {table:?}"
    );
    let lingering: Vec<_> = finished.iter().filter(|(_, left)| *left > 2).collect();
    assert!(
        lingering.is_empty(),
        "finished connections stay in the conntrack table (the timeout policy is not applied): {lingering:?}"
    );
    s.shutdown().await;
}
