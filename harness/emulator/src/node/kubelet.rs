//! The kubelet model: one per node. It runs the pods bound to its node as
//! real processes (see [`super::runtime`]) and reports their status the way
//! the kubelet does, with the timings that matter during a drain:
//!
//! - start: wait the pod start delay, allocate a pod IP (`10.244.<node>.<n>`)
//!   and a real 127.0.0.1 socket, start the container, report `Running`
//!   (the app itself may listen later: `zdt.io/start-delay`, see
//!   [`super::app`]);
//! - readiness: the readinessProbe runs for real against the pod's socket
//!   (`initialDelaySeconds`, `periodSeconds`, `timeoutSeconds`,
//!   `successThreshold`, `failureThreshold`); no probe = ready once started.
//!   Probing continues while the pod terminates, as the kubelet's does, so
//!   EndpointSlices can publish `serving` for terminating pods;
//! - deletion: preStop (exec `sleep N`, the `sleep` action on versions that
//!   have it, httpGet), then the stop signal (`lifecycle.stopSignal`, else
//!   SIGQUIT for nginx images — their `STOPSIGNAL` — else SIGTERM), SIGKILL
//!   when the grace period (counted from the deletion, preStop included; at
//!   least 2 s after the stop signal, as the kubelet's
//!   `minimumGracePeriodInSeconds`) runs out, then "gone";
//! - a container that exits by itself: phase `Succeeded`/`Failed` (the
//!   model does not restart containers);
//! - node faults: [`Kubelet::stop`] (everything killed, no more reports),
//!   [`Kubelet::pause`]/[`Kubelet::resume`] (containers SIGSTOPped, kubelet
//!   frozen: no probes, no reports).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Container as ContainerSpecK8s, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStatus, HostIP, LifecycleHandler, Pod, PodCondition, PodIP, PodStatus, Probe,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::app::Behaviour;
use super::runtime::{
    is_nginx_image, Container, ContainerExit, ContainerSpec, PodSandbox, Runtime,
};
use crate::{KubeVersion, Timings};
use zdt_core::events::{EventSink, Source};
use zdt_core::netns::Net;

/// The kubelet's `minimumGracePeriodInSeconds`: the stop signal always gets
/// at least this long before SIGKILL.
pub const MINIMUM_GRACE_PERIOD: Duration = Duration::from_secs(2);

/// `terminationGracePeriodSeconds` when the pod spec has none.
pub const DEFAULT_GRACE_PERIOD_SECONDS: i64 = 30;

/// How long a pod's sandbox (its network namespace and IP) outlives its
/// containers: the kubelet's PLEG relists every second, so it notices the
/// exit up to 1 s later and only then stops the sandbox. Until then a SYN to
/// the pod IP meets a closed port and is answered with RST (refused); after
/// it, the IP is gone and the SYN goes unanswered.
pub const SANDBOX_TEARDOWN: Duration = Duration::from_secs(1);

/// Logical pod IP → the real socket its container listens on, shared by
/// every kubelet (writers) and kube-proxy (readers) of one cluster. A
/// watcher ([`PodAddrs::watch`]) learns each change while the map is still
/// locked, so changes reach it in order (the nftables data path's set of
/// live pod IPs).
#[derive(Clone, Default)]
pub struct PodAddrs {
    inner: Arc<RwLock<HashMap<IpAddr, SocketAddr>>>,
    watcher: Arc<std::sync::OnceLock<AddrWatcher>>,
}

/// Told `(ip, true)` when a pod takes an address, `(ip, false)` when it is gone.
pub type AddrWatcher = Box<dyn Fn(IpAddr, bool) + Send + Sync>;

impl std::fmt::Debug for PodAddrs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodAddrs")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl PodAddrs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Tell `watcher` about every later change (one watcher per map).
    pub fn watch(&self, watcher: AddrWatcher) {
        let _ = self.watcher.set(watcher);
    }

    fn told(&self, ip: IpAddr, live: bool) {
        if let Some(w) = self.watcher.get() {
            w(ip, live);
        }
    }

    pub fn get(&self, ip: &IpAddr) -> Option<SocketAddr> {
        self.inner.read().expect("pod addrs lock").get(ip).copied()
    }

    pub fn insert(&self, ip: IpAddr, addr: SocketAddr) {
        let mut map = self.inner.write().expect("pod addrs lock");
        map.insert(ip, addr);
        self.told(ip, true);
    }

    pub fn remove(&self, ip: &IpAddr) {
        let mut map = self.inner.write().expect("pod addrs lock");
        if map.remove(ip).is_some() {
            self.told(*ip, false);
        }
    }

    /// Remove `ip` only while it still maps to `addr`: a rebooted node's
    /// new pod may already have the address again.
    pub fn remove_if(&self, ip: &IpAddr, addr: SocketAddr) {
        let mut map = self.inner.write().expect("pod addrs lock");
        if map.get(ip) == Some(&addr) {
            map.remove(ip);
            self.told(*ip, false);
        }
    }

    pub fn len(&self) -> usize {
        self.inner.read().expect("pod addrs lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the kubelet reports for one pod (the emulator writes it to the
/// pod's status subresource).
#[derive(Debug, Clone, PartialEq)]
pub struct PodStatusUpdate {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
    pub status: PodStatus,
    /// The pod's containers are gone: a pod with a deletionTimestamp may now
    /// be removed from the store.
    pub gone: bool,
}

/// Which node a kubelet runs and the cluster-wide settings it follows.
#[derive(Debug, Clone)]
pub struct KubeletConfig {
    pub node_name: String,
    /// Pod IPs are `10.244.<node_index>.<n>` (kind gives each node a /24).
    pub node_index: u8,
    /// The node's InternalIP, reported as the pods' `hostIP`.
    pub node_ip: Option<String>,
    pub timings: Timings,
    pub version: KubeVersion,
    /// Where pods reach the API server (their `KUBERNETES_SERVICE_*`).
    pub api_server: SocketAddr,
}

/// One node's kubelet. Cheap to clone; all clones are the same kubelet.
/// Dropping the last clone stops it (every container SIGKILLed).
#[derive(Clone)]
pub struct Kubelet {
    shared: Arc<KubeletState>,
    _stop: Arc<tokio_util::sync::DropGuard>,
}

struct KubeletState {
    config: KubeletConfig,
    runtime: Arc<Runtime>,
    pod_addrs: PodAddrs,
    events: EventSink,
    status_tx: mpsc::UnboundedSender<PodStatusUpdate>,
    pods: Mutex<HashMap<String, watch::Sender<Pod>>>,
    /// Pods already reported gone: a late resync of their (still stored)
    /// object must not start them again.
    finished: Mutex<HashSet<String>>,
    ips: Mutex<IpAllocator>,
    /// Containers by pod key, for pause/resume of the whole node.
    containers: Mutex<HashMap<String, Arc<Container>>>,
    paused: watch::Sender<bool>,
    stopped: CancellationToken,
}

impl KubeletState {
    /// The node's InternalIP, if it is an IPv4 address.
    fn node_ip(&self) -> Option<std::net::Ipv4Addr> {
        self.config.node_ip.as_deref().and_then(|a| a.parse().ok())
    }
}

impl Kubelet {
    pub fn new(
        config: KubeletConfig,
        runtime: Arc<Runtime>,
        pod_addrs: PodAddrs,
        events: EventSink,
        status_tx: mpsc::UnboundedSender<PodStatusUpdate>,
    ) -> Kubelet {
        let ips = IpAllocator::new(config.node_index);
        let stopped = CancellationToken::new();
        Kubelet {
            _stop: Arc::new(stopped.clone().drop_guard()),
            shared: Arc::new(KubeletState {
                config,
                runtime,
                pod_addrs,
                events,
                status_tx,
                pods: Mutex::default(),
                finished: Mutex::default(),
                ips: Mutex::new(ips),
                containers: Mutex::default(),
                paused: watch::channel(false).0,
                stopped,
            }),
        }
    }

    pub fn node_name(&self) -> &str {
        &self.shared.config.node_name
    }

    /// Hand the kubelet the current state of a pod bound to its node; call
    /// it on every change (deletionTimestamp, a shorter grace period).
    /// Pods bound elsewhere are ignored.
    pub fn sync(&self, pod: Pod) {
        if self.shared.stopped.is_cancelled() {
            return;
        }
        let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
        if node != Some(self.shared.config.node_name.as_str()) {
            return;
        }
        let key = pod_key(&pod);
        if self
            .shared
            .finished
            .lock()
            .expect("finished lock")
            .contains(&key)
        {
            return;
        }
        let mut pods = self.shared.pods.lock().expect("pods lock");
        if let Some(tx) = pods.get(&key) {
            tx.send_replace(pod);
            return;
        }
        let (tx, rx) = watch::channel(pod);
        pods.insert(key.clone(), tx);
        let worker = PodWorker {
            shared: self.shared.clone(),
            key,
            pod: rx,
        };
        tokio::spawn(worker.run());
    }

    /// The pod object vanished from the API without this kubelet reporting
    /// it gone (a force delete, `--grace-period=0 --force`): like the
    /// kubelet, stop it with no preStop and the minimum grace period (the
    /// stop signal, SIGKILL 2 s later). `uid` None matches any uid.
    pub fn remove(&self, namespace: &str, name: &str, uid: Option<&str>) {
        let pods = self.shared.pods.lock().expect("pods lock");
        for tx in pods.values() {
            let matches = {
                let p = tx.borrow();
                p.metadata.namespace.as_deref().unwrap_or("default") == namespace
                    && p.metadata.name.as_deref() == Some(name)
                    && uid.is_none_or(|u| p.metadata.uid.as_deref() == Some(u))
            };
            if matches {
                tx.send_modify(|p| {
                    if p.metadata.deletion_timestamp.is_none() {
                        p.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
                    }
                    p.metadata.deletion_grace_period_seconds = Some(0);
                });
            }
        }
    }

    /// Pods this kubelet currently runs (by `namespace/name`).
    pub fn pod_count(&self) -> usize {
        self.shared.pods.lock().expect("pods lock").len()
    }

    /// The node went down: every container is SIGKILLed, nothing more is
    /// reported, later syncs are ignored. Irreversible for this kubelet.
    pub fn stop(&self) {
        self.shared.stopped.cancel();
        let containers: Vec<_> = self
            .shared
            .containers
            .lock()
            .expect("containers lock")
            .drain()
            .map(|(_, c)| c)
            .collect();
        for c in containers {
            c.signal(libc::SIGKILL);
        }
    }

    /// The running container of pod `namespace/name`, if any: for chaos
    /// (a container crashing: `signal_container`) and tests.
    pub fn container(&self, namespace: &str, name: &str) -> Option<Arc<Container>> {
        let prefix = format!("{namespace}/{name}");
        self.shared
            .containers
            .lock()
            .expect("containers lock")
            .iter()
            .find(|(k, _)| **k == prefix || k.starts_with(&format!("{prefix}/")))
            .map(|(_, c)| c.clone())
    }

    /// Send a signal straight to a pod's container, as `docker kill -s`
    /// would (the kubelet does not know; it sees the container exit).
    pub fn signal_container(&self, namespace: &str, name: &str, signo: i32) -> bool {
        match self.container(namespace, name) {
            Some(c) => {
                c.signal(signo);
                true
            }
            None => false,
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.shared.stopped.is_cancelled()
    }

    /// The node froze (docker pause): containers are SIGSTOPped, probes and
    /// status reports stop until [`Kubelet::resume`].
    pub fn pause(&self) {
        self.shared.paused.send_replace(true);
        for c in self
            .shared
            .containers
            .lock()
            .expect("containers lock")
            .values()
        {
            c.pause();
        }
    }

    pub fn resume(&self) {
        for c in self
            .shared
            .containers
            .lock()
            .expect("containers lock")
            .values()
        {
            c.resume();
        }
        self.shared.paused.send_replace(false);
    }
}

fn pod_key(pod: &Pod) -> String {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or("");
    match &pod.metadata.uid {
        Some(uid) => format!("{ns}/{name}/{uid}"),
        None => format!("{ns}/{name}"),
    }
}

/// `10.244.<node>.2 ..= .254`, handed out round-robin so a freed address is
/// not reused at once (as host-local IPAM does).
struct IpAllocator {
    node_index: u8,
    next: u8,
    used: HashSet<u8>,
}

impl IpAllocator {
    fn new(node_index: u8) -> Self {
        Self {
            node_index,
            next: 2,
            used: HashSet::new(),
        }
    }

    fn allocate(&mut self) -> Option<Ipv4Addr> {
        for _ in 0..253 {
            let n = self.next;
            self.next = if self.next >= 254 { 2 } else { self.next + 1 };
            if self.used.insert(n) {
                return Some(Ipv4Addr::new(10, 244, self.node_index, n));
            }
        }
        None
    }

    fn release(&mut self, ip: Ipv4Addr) {
        self.used.remove(&ip.octets()[3]);
    }
}

/// Readiness as the probe worker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Readiness {
    ready: bool,
}

struct PodWorker {
    shared: Arc<KubeletState>,
    key: String,
    pod: watch::Receiver<Pod>,
}

/// Everything the worker knows about its pod's current state, from which
/// the reported `PodStatus` is built.
struct State {
    phase: &'static str,
    pod_ip: Option<Ipv4Addr>,
    start_time: Timestamp,
    started_at: Option<Timestamp>,
    ready: bool,
    ready_since: Timestamp,
    exit: Option<(ContainerExit, Timestamp)>,
    message: Option<String>,
    container_id: Option<String>,
}

impl PodWorker {
    fn object(&self) -> String {
        format!(
            "pod/{}",
            self.pod.borrow().metadata.name.as_deref().unwrap_or("")
        )
    }

    fn node(&self) -> &str {
        &self.shared.config.node_name
    }

    fn emit(&self, reason: &str, message: impl Into<String>) {
        self.shared.events.emit(
            Source::Pod,
            reason,
            self.object(),
            Some(self.node()),
            message,
        );
    }

    fn deleting(pod: &Pod) -> bool {
        pod.metadata.deletion_timestamp.is_some()
    }

    /// The pod failed before it ran: say why (and, with `reason`, as an
    /// event), then keep the Failed status until the pod is deleted.
    async fn fail_until_deleted(
        &mut self,
        state: &mut State,
        reason: Option<&str>,
        message: String,
    ) {
        state.phase = "Failed";
        if let Some(reason) = reason {
            self.emit(reason, message.clone());
        }
        state.message = Some(message);
        self.report(state, false).await;
        self.pod.wait_for(Self::deleting).await.ok();
        self.report(state, true).await;
    }

    async fn run(mut self) {
        let stopped = self.shared.stopped.clone();
        tokio::select! {
            _ = stopped.cancelled() => {}
            _ = self.lifecycle() => {
                self.shared
                    .finished
                    .lock()
                    .expect("finished lock")
                    .insert(self.key.clone());
                // Gone from the node: its logs go with it.
                let pod = self.pod.borrow();
                self.shared.runtime.logs().forget(
                    pod.metadata.namespace.as_deref().unwrap_or("default"),
                    pod.metadata.name.as_deref().unwrap_or(""),
                );
            }
        }
        self.shared
            .pods
            .lock()
            .expect("pods lock")
            .remove(&self.key);
        if let Some(c) = self
            .shared
            .containers
            .lock()
            .expect("containers lock")
            .remove(&self.key)
        {
            c.signal(libc::SIGKILL);
        }
    }

    async fn lifecycle(&mut self) {
        let now = Timestamp::now();
        let mut state = State {
            phase: "Pending",
            pod_ip: None,
            start_time: now,
            started_at: None,
            ready: false,
            ready_since: now,
            exit: None,
            message: None,
            container_id: None,
        };
        let deleted_before_start = {
            let delay = self.shared.config.timings.pod_start_delay.get();
            let mut rx = self.pod.clone();
            tokio::select! {
                _ = tokio::time::sleep(delay) => false,
                _ = rx.wait_for(Self::deleting) => true,
            }
        };
        self.wait_unpaused().await;
        if deleted_before_start {
            self.emit("Gone", "deleted before its container started");
            self.report(&state, true).await;
            return;
        }

        let pod = self.pod.borrow().clone();
        let Some(spec_container) = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .cloned()
        else {
            let message = "pod has no containers".into();
            return self.fail_until_deleted(&mut state, None, message).await;
        };
        let app = match Behaviour::from_annotations(pod.metadata.annotations.as_ref()) {
            Ok(app) => app,
            Err(e) => {
                let reason = Some("Failed");
                return self
                    .fail_until_deleted(&mut state, reason, e.to_string())
                    .await;
            }
        };
        let ip = self.shared.ips.lock().expect("ips lock").allocate();
        let Some(ip) = ip else {
            let message = format!(
                "node {} has no free pod IP in 10.244.{}.0/24",
                self.node(),
                self.shared.config.node_index
            );
            let reason = Some("FailedCreatePodSandBox");
            return self.fail_until_deleted(&mut state, reason, message).await;
        };
        let _ip_guard = IpGuard {
            shared: self.shared.clone(),
            ip,
        };
        let node_ip = self.shared.node_ip();
        let sandbox = match self.shared.runtime.sandbox(ip, node_ip).await {
            Ok(s) => s,
            Err(e) => {
                let reason = Some("FailedCreatePodSandBox");
                return self
                    .fail_until_deleted(&mut state, reason, e.to_string())
                    .await;
            }
        };
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let account = match super::serviceaccount::ServiceAccountDir::create(
            self.shared.runtime.root(),
            namespace,
            pod.metadata.uid.as_deref().unwrap_or("no-uid"),
            &spec_container.name,
        ) {
            Ok(dir) => dir,
            Err(e) => {
                let message = format!("cannot write the service-account files: {e}");
                let reason = Some("FailedMount");
                return self.fail_until_deleted(&mut state, reason, message).await;
            }
        };
        let mut preset = super::env::api_service_env(self.shared.config.api_server);
        preset.push((
            zdt_core::in_cluster::SERVICEACCOUNT_DIR_ENV.to_owned(),
            account.path().display().to_string(),
        ));
        let (env, unresolved) = super::env::container_env(
            &pod,
            &spec_container,
            super::env::PodPlace {
                pod_ip: &ip.to_string(),
                node_name: self.node(),
                node_ip: self.shared.config.node_ip.as_deref(),
                preset: &preset,
            },
        );
        for why in unresolved {
            self.emit("EnvNotModelled", why);
        }
        let spec = ContainerSpec {
            env,
            command: spec_container.command.clone().unwrap_or_default(),
            args: spec_container.args.clone().unwrap_or_default(),
            namespace: pod
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            pod: pod.metadata.name.clone().unwrap_or_default(),
            node: self.node().to_owned(),
            container: spec_container.name.clone(),
            image: spec_container.image.clone().unwrap_or_default(),
            app,
            ip,
            port: container_port(&spec_container),
        };
        let container = match self.shared.runtime.start(&spec).await {
            Ok(c) => Arc::new(c),
            Err(e) => {
                let reason = Some("Failed");
                return self
                    .fail_until_deleted(&mut state, reason, e.to_string())
                    .await;
            }
        };
        self.shared
            .containers
            .lock()
            .expect("containers lock")
            .insert(self.key.clone(), container.clone());
        if *self.shared.paused.borrow() {
            container.pause();
        }
        self.shared
            .pod_addrs
            .insert(IpAddr::V4(ip), container.addr());
        let _addr_guard = AddrGuard {
            addrs: self.shared.pod_addrs.clone(),
            ip: IpAddr::V4(ip),
            addr: container.addr(),
        };
        let started = Timestamp::now();
        state.phase = "Running";
        state.pod_ip = Some(ip);
        state.started_at = Some(started);
        state.container_id = Some(match container.pid() {
            Some(pid) => format!("zdt://{}-{pid}", container.engine().name()),
            None => format!("zdt://builtin-{}", container.addr().port()),
        });
        self.emit(
            "Started",
            format!(
                "started container {} ({}) with pod IP {ip} on {}",
                spec.container,
                container.engine(),
                container.addr()
            ),
        );

        // Readiness: a probe worker, or ready at once without a probe.
        let (ready_tx, mut ready_rx) = watch::channel(Readiness { ready: false });
        let probe_cancel = CancellationToken::new();
        let _probe_guard = probe_cancel.clone().drop_guard();
        match spec_container.readiness_probe.clone() {
            Some(probe) => {
                let prober = Prober {
                    probe,
                    net: self.shared.runtime.node_net(self.shared.node_ip()),
                    addr: container.addr(),
                    ready: ready_tx,
                    paused: self.shared.paused.subscribe(),
                    events: self.shared.events.clone(),
                    object: self.object(),
                    node: self.node().to_owned(),
                    version: self.shared.config.version,
                };
                tokio::spawn(prober.run(probe_cancel.clone()));
            }
            None => {
                ready_tx.send_replace(Readiness { ready: true });
            }
        }
        state.ready = ready_rx.borrow_and_update().ready;
        state.ready_since = started;
        if state.ready {
            let warming = if app.start_delay.is_zero() {
                String::new()
            } else {
                format!(
                    " (the app listens only after its start delay of {}, {})",
                    zdt_core::units::Dur(app.start_delay),
                    super::app::START_DELAY
                )
            };
            self.emit(
                "Ready",
                format!("no readinessProbe: ready once started{warming}"),
            );
        }
        self.report(&state, false).await;

        let mut termination: Option<tokio::task::JoinHandle<()>> = None;
        let exited = container.exited();
        tokio::pin!(exited);
        let mut exit_seen = false;
        let mut prober_alive = true;
        loop {
            tokio::select! {
                changed = ready_rx.changed(), if !exit_seen && prober_alive => {
                    if changed.is_err() {
                        prober_alive = false; // readiness stays as it was
                        continue;
                    }
                    let r = ready_rx.borrow_and_update().ready;
                    if r != state.ready {
                        state.ready = r;
                        state.ready_since = Timestamp::now();
                        self.emit(if r { "Ready" } else { "NotReady" },
                            if r { "readiness probe succeeded" } else { "readiness probe failed" });
                        self.report(&state, false).await;
                    }
                }
                changed = self.pod.changed(), if termination.is_none() => {
                    if changed.is_err() {
                        return;
                    }
                    let pod = self.pod.borrow_and_update().clone();
                    if Self::deleting(&pod) {
                        let t = Terminator {
                            shared: self.shared.clone(),
                            pod: self.pod.clone(),
                            container: container.clone(),
                            spec: spec_container.clone(),
                            object: self.object(),
                            exited: exit_seen,
                        };
                        termination = Some(tokio::spawn(t.run()));
                    }
                }
                exit = &mut exited, if !exit_seen => {
                    exit_seen = true;
                    probe_cancel.cancel();
                    let at = Timestamp::now();
                    state.exit = Some((exit, at));
                    state.ready = false;
                    state.ready_since = at;
                    if termination.is_none() {
                        state.phase = if exit.success() { "Succeeded" } else { "Failed" };
                    }
                    let last = container.log_tail().pop().map(|l| format!("; its last line: {l}")).unwrap_or_default();
                    self.emit("Exited", format!(
                        "container {} exited with code {}{last}", spec_container.name, exit.exit_code()));
                    self.report(&state, false).await;
                }
                _ = async { termination.as_mut().expect("guarded").await }, if termination.is_some() && exit_seen => {
                    // Deleted pods end Failed unless every container exited 0
                    // (PodDisruptionConditions semantics).
                    state.phase = match state.exit {
                        Some((e, _)) if e.success() => "Succeeded",
                        _ => "Failed",
                    };
                    self.emit("Gone", "containers stopped; the pod object may be removed");
                    self.report(&state, true).await;
                    _addr_guard.linger(SANDBOX_TEARDOWN, sandbox);
                    return;
                }
            }
        }
    }

    async fn wait_unpaused(&self) {
        let mut paused = self.shared.paused.subscribe();
        let _ = paused.wait_for(|p| !*p).await;
    }

    /// Send the status; a frozen kubelet reports once it thaws.
    async fn report(&self, state: &State, gone: bool) {
        self.wait_unpaused().await;
        if self.shared.stopped.is_cancelled() {
            return;
        }
        let pod = self.pod.borrow().clone();
        let status = build_status(&pod, state, self.shared.config.node_ip.as_deref());
        let _ = self.shared.status_tx.send(PodStatusUpdate {
            namespace: pod
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone(),
            status,
            gone,
        });
    }
}

/// The container's first declared port (80, nginx's, when none is).
fn container_port(c: &ContainerSpecK8s) -> u16 {
    c.ports
        .as_ref()
        .and_then(|p| p.first())
        .and_then(|p| u16::try_from(p.container_port).ok())
        .filter(|&p| p != 0)
        .unwrap_or(80)
}

struct IpGuard {
    shared: Arc<KubeletState>,
    ip: Ipv4Addr,
}

impl Drop for IpGuard {
    fn drop(&mut self) {
        self.shared.ips.lock().expect("ips lock").release(self.ip);
    }
}

struct AddrGuard {
    addrs: PodAddrs,
    ip: IpAddr,
    addr: SocketAddr,
}

impl AddrGuard {
    /// Keep the address (a closed port now) for `teardown`, then remove it:
    /// a pod whose containers stopped, as opposed to one whose node died.
    /// The pod's sandbox (its own network, if it has one) goes with it.
    fn linger(mut self, teardown: Duration, sandbox: Option<PodSandbox>) {
        // The guard's own drop then clears an empty map.
        let addrs = std::mem::take(&mut self.addrs);
        let (ip, addr) = (self.ip, self.addr);
        tokio::spawn(async move {
            tokio::time::sleep(teardown).await;
            addrs.remove_if(&ip, addr);
            drop(sandbox);
        });
    }
}

impl Drop for AddrGuard {
    fn drop(&mut self) {
        self.addrs.remove_if(&self.ip, self.addr);
    }
}

fn build_status(pod: &Pod, s: &State, node_ip: Option<&str>) -> PodStatus {
    let time = |t: Timestamp| Some(Time(t));
    let cond = |type_: &str, ok: bool, since: Timestamp| PodCondition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        last_transition_time: time(since),
        ..Default::default()
    };
    let scheduled_at = s.start_time;
    let started = s.started_at.is_some();
    let mut conditions = vec![
        cond("PodScheduled", true, scheduled_at),
        cond("Initialized", true, scheduled_at),
        cond("ContainersReady", s.ready, s.ready_since),
        cond("Ready", s.ready, s.ready_since),
    ];
    if started {
        conditions.insert(
            1,
            cond(
                "PodReadyToStartContainers",
                true,
                s.started_at.unwrap_or(scheduled_at),
            ),
        );
    }
    let container: Option<&ContainerSpecK8s> = pod.spec.as_ref().and_then(|p| p.containers.first());
    let container_statuses = container.map(|c| {
        let state = match (s.exit, s.started_at) {
            (Some((exit, finished)), started) => ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: exit.exit_code(),
                    signal: exit.signal,
                    reason: Some(if exit.success() { "Completed" } else { "Error" }.into()),
                    started_at: started.map(Time),
                    finished_at: time(finished),
                    container_id: s.container_id.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            (None, Some(started)) => ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: time(started),
                }),
                ..Default::default()
            },
            (None, None) => ContainerState::default(),
        };
        vec![ContainerStatus {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            image_id: String::new(),
            container_id: s.container_id.clone(),
            ready: s.ready,
            started: Some(started && s.exit.is_none()),
            restart_count: 0,
            state: Some(state),
            ..Default::default()
        }]
    });
    PodStatus {
        phase: Some(s.phase.into()),
        conditions: Some(conditions),
        host_ip: node_ip.map(str::to_owned),
        host_ips: node_ip.map(|ip| vec![HostIP { ip: ip.to_owned() }]),
        pod_ip: s.pod_ip.map(|ip| ip.to_string()),
        pod_ips: s.pod_ip.map(|ip| vec![PodIP { ip: ip.to_string() }]),
        start_time: time(s.start_time),
        container_statuses,
        message: s.message.clone(),
        // qosClass is the API server's (computed at admission), not ours.
        ..Default::default()
    }
}

/// The readiness probe worker for one container.
struct Prober {
    probe: Probe,
    net: Net,
    addr: SocketAddr,
    ready: watch::Sender<Readiness>,
    paused: watch::Receiver<bool>,
    events: EventSink,
    object: String,
    node: String,
    version: KubeVersion,
}

impl Prober {
    async fn run(mut self, cancel: CancellationToken) {
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = self.probe_loop() => {}
        }
    }

    async fn probe_loop(&mut self) {
        let p = &self.probe;
        let secs =
            |v: Option<i32>, default: i32, min: i32| -> i32 { v.unwrap_or(default).max(min) };
        let initial = Duration::from_secs(secs(p.initial_delay_seconds, 0, 0) as u64);
        let period = Duration::from_secs(secs(p.period_seconds, 10, 1) as u64);
        let timeout = Duration::from_secs(secs(p.timeout_seconds, 1, 1) as u64);
        let success_threshold = secs(p.success_threshold, 1, 1) as u32;
        let failure_threshold = secs(p.failure_threshold, 3, 1) as u32;
        tokio::time::sleep(initial).await;
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut successes, mut failures) = (0u32, 0u32);
        loop {
            interval.tick().await;
            let _ = self.paused.wait_for(|p| !*p).await;
            let result = self.probe_once(timeout).await;
            let ready = self.ready.borrow().ready;
            match result {
                Ok(()) => {
                    failures = 0;
                    successes = successes.saturating_add(1);
                    if !ready && successes >= success_threshold {
                        self.ready.send_replace(Readiness { ready: true });
                    }
                }
                Err(why) => {
                    successes = 0;
                    failures = failures.saturating_add(1);
                    if failures == 1 {
                        self.events.emit(
                            Source::Pod,
                            "Unhealthy",
                            &self.object,
                            Some(&self.node),
                            format!("Readiness probe failed: {why}"),
                        );
                    }
                    if ready && failures >= failure_threshold {
                        self.ready.send_replace(Readiness { ready: false });
                    }
                }
            }
        }
    }

    async fn probe_once(&self, timeout: Duration) -> Result<(), String> {
        let p = &self.probe;
        if let Some(http) = &p.http_get {
            let path = http.path.clone().unwrap_or_else(|| "/".into());
            let ua = format!("kube-probe/{}", self.version);
            return match tokio::time::timeout(
                timeout,
                zdt_core::net::http_status(&self.net, self.addr, &path, &ua),
            )
            .await
            {
                Err(_) => Err(format!(
                    "Get \"http://{}{path}\": context deadline exceeded",
                    self.addr
                )),
                Ok(Err(e)) => Err(format!("Get \"http://{}{path}\": {e}", self.addr)),
                Ok(Ok(code)) if (200..400).contains(&code) => Ok(()),
                Ok(Ok(code)) => Err(format!("HTTP probe failed with statuscode: {code}")),
            };
        }
        if p.tcp_socket.is_some() || p.grpc.is_some() {
            return match tokio::time::timeout(timeout, self.net.connect(self.addr)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("dial tcp {}: {e}", self.addr)),
                Err(_) => Err(format!("dial tcp {}: i/o timeout", self.addr)),
            };
        }
        // exec probes cannot run in a process that is not a container;
        // the model treats them as passing.
        Ok(())
    }
}

/// Runs a deleted pod's container down: preStop, stop signal, SIGKILL.
struct Terminator {
    shared: Arc<KubeletState>,
    pod: watch::Receiver<Pod>,
    container: Arc<Container>,
    spec: ContainerSpecK8s,
    object: String,
    exited: bool,
}

impl Terminator {
    fn emit(&self, reason: &str, message: impl Into<String>) {
        self.shared.events.emit(
            Source::Pod,
            reason,
            &self.object,
            Some(&self.shared.config.node_name),
            message,
        );
    }

    fn grace(pod: &Pod) -> Duration {
        let secs = pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| {
                pod.spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(DEFAULT_GRACE_PERIOD_SECONDS)
            .max(0);
        Duration::from_secs(secs as u64)
    }

    async fn run(mut self) {
        let start = Instant::now();
        let pod = self.pod.borrow_and_update().clone();
        let mut grace = Self::grace(&pod);
        if self.exited {
            return;
        }
        self.emit(
            "Killing",
            format!(
                "Stopping container {} (grace period {}s)",
                self.spec.name,
                grace.as_secs()
            ),
        );
        let pre_stop = self
            .spec
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.clone());
        if let (Some(hook), false) = (pre_stop, grace.is_zero()) {
            let hook_start = Instant::now();
            let outcome = tokio::time::timeout(grace, self.pre_stop(&hook)).await;
            let took = hook_start.elapsed();
            match outcome {
                Ok(Ok(Some(what))) => self.emit(
                    "PreStopFinished",
                    format!("preStop {what} finished after {:.1}s", took.as_secs_f64()),
                ),
                Ok(Ok(None)) => {}
                Ok(Err(why)) => self.emit("FailedPreStopHook", why),
                Err(_) => self.emit(
                    "FailedPreStopHook",
                    format!(
                        "preStop hook did not finish within the grace period ({}s)",
                        grace.as_secs()
                    ),
                ),
            }
        }
        // A second delete may have shortened the grace period meanwhile.
        grace = grace.min(Self::grace(&self.pod.borrow_and_update().clone()));
        let elapsed = start.elapsed();
        let remaining = grace.saturating_sub(elapsed).max(MINIMUM_GRACE_PERIOD);
        let mut deadline = Instant::now() + remaining;

        let (signo, why) = stop_signal(&self.spec, self.container.image_stop_signal());
        self.emit(
            "StopSignal",
            format!(
                "sent {} to container {} ({why}); SIGKILL in {:.1}s",
                signal_name(signo),
                self.spec.name,
                remaining.as_secs_f64()
            ),
        );
        self.container.signal(signo);
        let exited = self.container.exited();
        tokio::pin!(exited);
        let mut pod_open = true;
        loop {
            tokio::select! {
                _ = &mut exited => return,
                _ = tokio::time::sleep_until(deadline.into()) => break,
                changed = self.pod.changed(), if pod_open => {
                    if changed.is_err() {
                        // The pod object vanished: keep the deadline.
                        pod_open = false;
                        continue;
                    }
                    let g = Self::grace(&self.pod.borrow_and_update().clone());
                    let shorter = start + g.max(elapsed + MINIMUM_GRACE_PERIOD);
                    if shorter < deadline {
                        deadline = shorter;
                    }
                }
            }
        }
        self.emit(
            "GracePeriodExpired",
            format!(
                "sent SIGKILL to container {} after {:.1}s",
                self.spec.name,
                start.elapsed().as_secs_f64()
            ),
        );
        self.container.signal(libc::SIGKILL);
        exited.await;
    }

    /// Run the preStop hook; `Ok(Some(description))` when it ran.
    async fn pre_stop(&self, hook: &LifecycleHandler) -> Result<Option<String>, String> {
        let version = self.shared.config.version;
        if let Some(exec) = &hook.exec {
            let cmd = exec.command.clone().unwrap_or_default();
            return match sleep_seconds(&cmd) {
                Some(secs) => {
                    self.emit(
                        "PreStopStarted",
                        format!("preStop exec {cmd:?}: sleeping {secs}s"),
                    );
                    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                    Ok(Some(format!("exec {cmd:?}")))
                }
                None => Err(format!(
                    "preStop exec {cmd:?} is not modelled (only `sleep N`, directly or via `sh -c`); treated as finishing at once"
                )),
            };
        }
        if let Some(sleep) = &hook.sleep {
            if !version.prestop_sleep_action() {
                return Err(format!(
                    "preStop `sleep` action needs Kubernetes >= 1.30 (PodLifecycleSleepAction); this cluster is {version}, so it is ignored"
                ));
            }
            let secs = sleep.seconds.max(0) as u64;
            self.emit(
                "PreStopStarted",
                format!("preStop sleep action: sleeping {secs}s"),
            );
            tokio::time::sleep(Duration::from_secs(secs)).await;
            return Ok(Some(format!("sleep {secs}s")));
        }
        if let Some(http) = &hook.http_get {
            let path = http.path.clone().unwrap_or_else(|| "/".into());
            self.emit("PreStopStarted", format!("preStop httpGet {path}"));
            let ua = format!("kube-lifecycle/{version}");
            let net = self.shared.runtime.node_net(self.shared.node_ip());
            return match zdt_core::net::http_status(&net, self.container.addr(), &path, &ua).await {
                Ok(code) => Ok(Some(format!("httpGet {path} (HTTP {code})"))),
                Err(e) => Err(format!("preStop httpGet {path} failed: {e}")),
            };
        }
        Ok(None)
    }
}

/// The seconds a `sleep N` preStop command waits: `["sleep", "5"]`,
/// `["/bin/sleep", "5"]`, `["/bin/sh", "-c", "sleep 5"]`, `sleep 5s`.
pub fn sleep_seconds(command: &[String]) -> Option<f64> {
    let parse = |s: &str| -> Option<f64> {
        let s = s.trim();
        let s = s.strip_suffix('s').unwrap_or(s);
        s.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0)
    };
    let is = |s: &str, name: &str| s == name || s.ends_with(&format!("/{name}"));
    match command {
        [bin, n] if is(bin, "sleep") => parse(n),
        [shell, flag, script] if (is(shell, "sh") || is(shell, "bash")) && flag == "-c" => {
            let words: Vec<&str> = script.split_whitespace().collect();
            match words.as_slice() {
                [bin, n] if is(bin, "sleep") => parse(n),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The stop signal for a container and why: `lifecycle.stopSignal`, else
/// the image's STOPSIGNAL (`image`, when the runtime read the image; else
/// SIGQUIT for nginx images), else SIGTERM.
pub fn stop_signal(container: &ContainerSpecK8s, image: Option<i32>) -> (i32, &'static str) {
    if let Some(name) = container
        .lifecycle
        .as_ref()
        .and_then(|l| l.stop_signal.as_deref())
    {
        if let Some(signo) = signal_number(name) {
            return (signo, "lifecycle.stopSignal");
        }
    }
    if let Some(signo) = image {
        return (signo, "the image's STOPSIGNAL");
    }
    if is_nginx_image(container.image.as_deref().unwrap_or("")) {
        (libc::SIGQUIT, "the nginx image's STOPSIGNAL")
    } else {
        (libc::SIGTERM, "the default stop signal")
    }
}

const SIGNALS: &[(&str, i32)] = &[
    ("SIGHUP", libc::SIGHUP),
    ("SIGINT", libc::SIGINT),
    ("SIGQUIT", libc::SIGQUIT),
    ("SIGKILL", libc::SIGKILL),
    ("SIGUSR1", libc::SIGUSR1),
    ("SIGUSR2", libc::SIGUSR2),
    ("SIGTERM", libc::SIGTERM),
    ("SIGWINCH", libc::SIGWINCH),
    ("SIGSTOP", libc::SIGSTOP),
    ("SIGCONT", libc::SIGCONT),
];

/// `SIGQUIT`/`QUIT` → its number.
pub fn signal_number(name: &str) -> Option<i32> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    SIGNALS.iter().find(|(n, _)| *n == full).map(|(_, s)| *s)
}

pub fn signal_name(signo: i32) -> String {
    SIGNALS
        .iter()
        .find(|(_, s)| *s == signo)
        .map(|(n, _)| (*n).to_owned())
        .unwrap_or_else(|| format!("signal {signo}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Lifecycle;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn prestop_sleep_commands_are_recognised() {
        assert_eq!(sleep_seconds(&strings(&["sleep", "5"])), Some(5.0));
        assert_eq!(sleep_seconds(&strings(&["/bin/sleep", "2.5"])), Some(2.5));
        assert_eq!(
            sleep_seconds(&strings(&["/bin/sh", "-c", "sleep 10"])),
            Some(10.0)
        );
        assert_eq!(
            sleep_seconds(&strings(&["sh", "-c", "sleep 3s"])),
            Some(3.0)
        );
        assert_eq!(sleep_seconds(&strings(&["nginx", "-s", "quit"])), None);
        assert_eq!(
            sleep_seconds(&strings(&["sh", "-c", "sleep 5 && nginx -s quit"])),
            None
        );
    }

    #[test]
    fn stop_signal_follows_lifecycle_then_image() {
        let mut c = ContainerSpecK8s {
            name: "web".into(),
            image: Some("nginx:1.27".into()),
            ..Default::default()
        };
        assert_eq!(stop_signal(&c, None).0, libc::SIGQUIT);
        c.image = Some("ghcr.io/acme/app:1".into());
        assert_eq!(stop_signal(&c, None).0, libc::SIGTERM);
        c.lifecycle = Some(Lifecycle {
            stop_signal: Some("SIGUSR1".into()),
            ..Default::default()
        });
        assert_eq!(stop_signal(&c, None).0, libc::SIGUSR1);
        assert_eq!(signal_name(libc::SIGQUIT), "SIGQUIT");
        assert_eq!(signal_number("term"), Some(libc::SIGTERM));
    }

    /// A probe target whose health a test flips.
    async fn flip_server(healthy: Arc<std::sync::atomic::AtomicBool>) -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let ok = healthy.load(std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    let line = if ok {
                        "200 OK"
                    } else {
                        "503 Service Unavailable"
                    };
                    let resp = format!(
                        "HTTP/1.1 {line}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        addr
    }

    /// initialDelaySeconds, periodSeconds, successThreshold and
    /// failureThreshold decide when readiness flips, not the first result.
    #[tokio::test]
    async fn readiness_probe_thresholds() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let healthy = Arc::new(AtomicBool::new(true));
        let addr = flip_server(healthy.clone()).await;
        let probe: Probe = serde_json::from_value(serde_json::json!({
            "httpGet": {"path": "/", "port": 80},
            "initialDelaySeconds": 1, "periodSeconds": 1,
            "successThreshold": 2, "failureThreshold": 2, "timeoutSeconds": 1
        }))
        .unwrap();
        let (ready_tx, mut ready) = watch::channel(Readiness { ready: false });
        let paused = watch::channel(false);
        let prober = Prober {
            probe,
            net: Net::host(),
            addr,
            ready: ready_tx,
            paused: paused.0.subscribe(),
            events: EventSink::discard(zdt_core::clock::Clock::start()),
            object: "pod/p".into(),
            node: "n".into(),
            version: KubeVersion::V1_31,
        };
        let cancel = CancellationToken::new();
        let _guard = cancel.clone().drop_guard();
        let t0 = Instant::now();
        tokio::spawn(prober.run(cancel.clone()));
        let limit = Duration::from_secs(10);
        tokio::time::timeout(limit, ready.wait_for(|r| r.ready))
            .await
            .unwrap()
            .unwrap();
        // First probe at 1 s (initial delay), second success at 2 s.
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(1900), "ready after {took:?}");
        assert!(took < Duration::from_millis(5000), "ready after {took:?}");

        healthy.store(false, Ordering::SeqCst);
        let t1 = Instant::now();
        tokio::time::timeout(limit, ready.wait_for(|r| !r.ready))
            .await
            .unwrap()
            .unwrap();
        // Two failures needed: the probes at +≈0–1 s and one period later.
        let took = t1.elapsed();
        assert!(took >= Duration::from_millis(900), "unready after {took:?}");
        assert!(took < Duration::from_millis(5000), "unready after {took:?}");
    }

    #[test]
    fn a_stale_pod_does_not_unmap_its_successors_address() {
        let addrs = PodAddrs::new();
        let ip: IpAddr = "10.244.1.2".parse().unwrap();
        addrs.insert(ip, "127.0.0.1:1000".parse().unwrap());
        addrs.insert(ip, "127.0.0.1:2000".parse().unwrap());
        addrs.remove_if(&ip, "127.0.0.1:1000".parse().unwrap());
        assert_eq!(addrs.get(&ip), Some("127.0.0.1:2000".parse().unwrap()));
        addrs.remove_if(&ip, "127.0.0.1:2000".parse().unwrap());
        assert!(addrs.is_empty());
    }

    #[test]
    fn pod_ips_are_per_node_and_not_reused_at_once() {
        let mut a = IpAllocator::new(3);
        let first = a.allocate().unwrap();
        assert_eq!(first, Ipv4Addr::new(10, 244, 3, 2));
        a.release(first);
        assert_eq!(a.allocate().unwrap(), Ipv4Addr::new(10, 244, 3, 3));
        for _ in 0..252 {
            a.allocate().unwrap();
        }
        assert!(a.allocate().is_none(), "a /24 has 253 pod addresses here");
    }
}
