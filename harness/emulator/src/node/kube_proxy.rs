//! The kube-proxy model: one per node. It keeps the node's *applied* view of
//! Services and EndpointSlices — what iptables would hold — and decides for
//! every new connection the LB sends to this node where it goes:
//!
//! - changes are applied after the sync delay: the first change of a burst
//!   schedules one apply `sync_delay` later, which takes the newest state
//!   (the model of `--iptables-min-sync-period`);
//! - `externalTrafficPolicy: Local`: a local ready endpoint; else (≥ 1.28,
//!   ProxyTerminatingEndpoints) a local serving-terminating one; else, when
//!   the service has usable endpoints elsewhere, the connection is
//!   **dropped** (the client times out); with none anywhere it is rejected;
//! - `Cluster`: any ready endpoint; else (≥ 1.28) any serving-terminating
//!   one; else **rejected** (connection refused);
//! - the chosen pod is dialled on its real socket: a pod that stopped
//!   listening answers with a reset, as it would in reality. Established
//!   connections are spliced by the LB directly and never revisited.
//!
//! It also serves kube-proxy's real HTTP health endpoints on 127.0.0.1: the
//! `healthCheckNodePort` of each `Local` LoadBalancer Service (200 with
//! `localEndpoints` iff ≥ 1 local *ready* endpoint, else 503) and
//! `:10256/healthz` (503 for a node being deleted or tainted
//! `ToBeDeletedByClusterAutoscaler`, from 1.31 on). Logic follows
//! `pkg/proxy/topology.go` (CategorizeEndpoints) and
//! `pkg/proxy/healthcheck/{service,proxy}_health.go`.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use k8s_openapi::api::core::v1::{Service, Taint};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::kubelet::PodAddrs;
use crate::dataplane::{DataPlane, Verdict};
use crate::KubeVersion;
use zdt_core::events::{Event, EventSink, Source};
use zdt_core::net::{Dial, Dialer};
use zdt_core::netns::Net;
use zdt_core::provenance::{Fate, Provenance};

/// The taint the cluster autoscaler puts on nodes it is about to delete.
pub const TO_BE_DELETED_TAINT: &str = "ToBeDeletedByClusterAutoscaler";

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One endpoint as kube-proxy holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointView {
    pub ip: IpAddr,
    /// The port the slice names for it (the Service's target port).
    pub port: Option<u16>,
    pub node: Option<String>,
    pub pod: Option<String>,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

/// One service as kube-proxy holds it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceView {
    /// `externalTrafficPolicy: Local` on a NodePort/LoadBalancer service.
    pub local: bool,
    pub load_balancer: bool,
    pub health_check_node_port: Option<i32>,
    /// The first port's nodePort (NodePort and LoadBalancer Services).
    pub node_port: Option<u16>,
    pub endpoints: Vec<EndpointView>,
}

/// What a new connection to this node for a service gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Connect to one of these pod IPs (chosen at random).
    To {
        endpoints: Vec<IpAddr>,
        /// True when only serving-terminating endpoints are left (≥ 1.28).
        terminating_fallback: bool,
    },
    /// iptables DROP: the client sees a timeout.
    Drop,
    /// iptables REJECT: the client sees connection refused.
    Reject,
}

impl ServiceView {
    /// kube-proxy's choice for external traffic arriving at `node`
    /// (CategorizeEndpoints + the DROP/REJECT filter rules).
    pub fn route(&self, node: &str, version: KubeVersion) -> Route {
        let fallback = version.proxy_terminating_endpoints();
        let is_local = |e: &&EndpointView| e.node.as_deref() == Some(node);
        let serving_terminating = |e: &&EndpointView| e.serving && e.terminating;
        let pick = |eps: Vec<&EndpointView>, terminating_fallback| Route::To {
            endpoints: eps.iter().map(|e| e.ip).collect(),
            terminating_fallback,
        };
        let ready: Vec<&EndpointView> = self.endpoints.iter().filter(|e| e.ready).collect();
        let st: Vec<&EndpointView> = if fallback {
            self.endpoints
                .iter()
                .filter(|e| !e.ready)
                .filter(serving_terminating)
                .collect()
        } else {
            Vec::new()
        };
        if ready.is_empty() && st.is_empty() {
            return Route::Reject;
        }
        if !self.local {
            return if ready.is_empty() {
                pick(st, true)
            } else {
                pick(ready, false)
            };
        }
        let local_ready: Vec<&EndpointView> = ready.iter().copied().filter(is_local).collect();
        if !local_ready.is_empty() {
            return pick(local_ready, false);
        }
        let local_st: Vec<&EndpointView> = st.iter().copied().filter(is_local).collect();
        if !local_st.is_empty() {
            return pick(local_st, true);
        }
        Route::Drop
    }

    /// The `localEndpoints` count the health check node port reports:
    /// local *ready* endpoints only (`LocalReadyEndpoints`).
    pub fn local_ready(&self, node: &str) -> usize {
        self.endpoints
            .iter()
            .filter(|e| e.ready && e.node.as_deref() == Some(node))
            .count()
    }

    fn counts(&self, node: &str) -> Counts {
        let mut c = Counts::default();
        for e in &self.endpoints {
            let local = e.node.as_deref() == Some(node);
            if e.ready {
                c.ready += 1;
                c.local_ready += usize::from(local);
            } else if e.serving && e.terminating {
                c.serving_terminating += 1;
                c.local_serving_terminating += usize::from(local);
            } else {
                c.not_ready += 1;
            }
        }
        c
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Counts {
    ready: usize,
    local_ready: usize,
    serving_terminating: usize,
    local_serving_terminating: usize,
    not_ready: usize,
}

/// A namespaced service name.
pub type ServiceKey = (String, String);

/// The applied state: what new connections are routed by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliedView {
    pub services: BTreeMap<ServiceKey, ServiceView>,
}

impl AppliedView {
    /// Build the view from API objects (slices are tied to services by the
    /// `kubernetes.io/service-name` label; endpoint conditions default as
    /// the API documents: ready nil = true, serving nil = ready,
    /// terminating nil = false).
    pub fn from_objects(services: &[Service], slices: &[EndpointSlice]) -> AppliedView {
        let mut out = BTreeMap::new();
        for svc in services {
            let ns = svc
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into());
            let Some(name) = svc.metadata.name.clone() else {
                continue;
            };
            let spec = svc.spec.clone().unwrap_or_default();
            let type_ = spec.type_.as_deref().unwrap_or("ClusterIP");
            let external = matches!(type_, "NodePort" | "LoadBalancer");
            out.insert(
                (ns, name),
                ServiceView {
                    local: external && spec.external_traffic_policy.as_deref() == Some("Local"),
                    load_balancer: type_ == "LoadBalancer",
                    health_check_node_port: spec.health_check_node_port,
                    node_port: spec
                        .ports
                        .as_ref()
                        .and_then(|p| p.first())
                        .and_then(|p| p.node_port)
                        .and_then(|p| u16::try_from(p).ok()),
                    endpoints: Vec::new(),
                },
            );
        }
        for slice in slices {
            if slice.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let ns = slice
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into());
            let Some(svc) = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .cloned()
            else {
                continue;
            };
            let Some(view) = out.get_mut(&(ns, svc)) else {
                continue;
            };
            for ep in &slice.endpoints {
                let cond = ep.conditions.clone().unwrap_or_default();
                let ready = cond.ready.unwrap_or(true);
                let serving = cond.serving.unwrap_or(ready);
                let terminating = cond.terminating.unwrap_or(false);
                let port = slice
                    .ports
                    .as_ref()
                    .and_then(|p| p.first())
                    .and_then(|p| p.port)
                    .and_then(|p| u16::try_from(p).ok());
                for addr in &ep.addresses {
                    let Ok(ip) = addr.parse::<IpAddr>() else {
                        continue;
                    };
                    if view.endpoints.iter().any(|e| e.ip == ip) {
                        continue; // the same pod in two slices during a handover
                    }
                    view.endpoints.push(EndpointView {
                        ip,
                        port,
                        node: ep.node_name.clone(),
                        pod: ep.target_ref.as_ref().and_then(|r| r.name.clone()),
                        ready,
                        serving,
                        terminating,
                    });
                }
            }
        }
        AppliedView { services: out }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct NodeState {
    deleting: bool,
    to_be_deleted: bool,
}

struct ProxyState {
    node: String,
    version: KubeVersion,
    sync_delay: Duration,
    pod_addrs: PodAddrs,
    events: EventSink,
    net: Net,
    node_ip: Ipv4Addr,
    pending: Mutex<Option<AppliedView>>,
    apply_scheduled: AtomicBool,
    applied: RwLock<Arc<AppliedView>>,
    applies: watch::Sender<u64>,
    node_state: RwLock<NodeState>,
    /// The node is down: dials drop, health servers hang.
    down: watch::Sender<bool>,
    /// The node is frozen: health servers hang, updates wait.
    paused: watch::Sender<bool>,
    health: Mutex<HashMap<ServiceKey, SocketAddr>>,
    healthz_addr: SocketAddr,
    rng: Mutex<StdRng>,
    cancel: CancellationToken,
    /// The node's rules as real nftables rules, when the cluster has them.
    rules: std::sync::OnceLock<NodeRules>,
}

/// Where this node's kube-proxy writes real rules: the cluster's data
/// plane, and the node's pod CIDR (dropped whole while the node is down).
struct NodeRules {
    plane: DataPlane,
    pod_cidr: String,
}

/// One node's kube-proxy. Cheap to clone; dropping the last clone stops its
/// health servers and pending applies.
#[derive(Clone)]
pub struct KubeProxy {
    shared: Arc<ProxyState>,
    _stop: Arc<tokio_util::sync::DropGuard>,
}

impl KubeProxy {
    /// Start the node's kube-proxy and its `:10256/healthz` server: on the
    /// node's InternalIP in a private network, on a free 127.0.0.1 port on
    /// the host's stack (see [`KubeProxy::healthz_addr`]). Must run inside
    /// a tokio runtime.
    pub fn new(
        node_name: impl Into<String>,
        version: KubeVersion,
        sync_delay: Duration,
        pod_addrs: PodAddrs,
        events: EventSink,
        net: Net,
        node_ip: Ipv4Addr,
    ) -> io::Result<KubeProxy> {
        let node = node_name.into();
        let seed = node.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let listener = bind_node(&net, node_ip, Some(HEALTHZ_PORT))?;
        let healthz_addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let shared = Arc::new(ProxyState {
            node,
            version,
            sync_delay,
            pod_addrs,
            events,
            net,
            node_ip,
            pending: Mutex::new(None),
            apply_scheduled: AtomicBool::new(false),
            applied: RwLock::new(Arc::default()),
            applies: watch::channel(0).0,
            node_state: RwLock::default(),
            down: watch::channel(false).0,
            paused: watch::channel(false).0,
            health: Mutex::default(),
            healthz_addr,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            cancel: cancel.clone(),
            rules: std::sync::OnceLock::new(),
        });
        let weak = Arc::downgrade(&shared);
        tokio::spawn(serve_health(
            listener,
            shared.clone(),
            cancel.clone(),
            move |path| {
                let shared = weak.upgrade()?;
                Some(shared.healthz(path))
            },
        ));
        Ok(KubeProxy {
            shared,
            _stop: Arc::new(cancel.drop_guard()),
        })
    }

    pub fn node_name(&self) -> &str {
        &self.shared.node
    }

    /// Program this node's Service rules into `plane` from now on (each
    /// apply rewrites them before it reports), `pod_cidr` being the node's.
    pub fn use_data_plane(&self, plane: DataPlane, pod_cidr: String) {
        let _ = self.shared.rules.set(NodeRules { plane, pod_cidr });
    }

    /// Reseed the random endpoint choice (runs are reproducible per seed).
    pub fn set_seed(&self, seed: u64) {
        *self.shared.rng.lock().expect("rng lock") = StdRng::seed_from_u64(seed);
    }

    /// The cluster's current Services and EndpointSlices (all of them, as a
    /// watch would deliver). Applied after the sync delay.
    pub fn update(&self, services: &[Service], slices: &[EndpointSlice]) {
        let view = AppliedView::from_objects(services, slices);
        *self.shared.pending.lock().expect("pending lock") = Some(view);
        ProxyState::schedule_apply(&self.shared);
    }

    /// The view new connections are routed by right now.
    pub fn applied(&self) -> Arc<AppliedView> {
        self.shared.applied.read().expect("applied lock").clone()
    }

    /// Counts applies so far; tests and the emulator wait on it.
    pub fn applies(&self) -> watch::Receiver<u64> {
        self.shared.applies.subscribe()
    }

    /// The node's deletion and taints, for `/healthz` (KEP-3836).
    pub fn set_node_state(&self, deleting: bool, taints: &[Taint]) {
        *self.shared.node_state.write().expect("node state lock") = NodeState {
            deleting,
            to_be_deleted: taints.iter().any(|t| t.key == TO_BE_DELETED_TAINT),
        };
    }

    /// A stopped node: new connections are dropped, health servers stop
    /// answering (probes time out), updates are not applied.
    pub fn set_down(&self, down: bool) {
        if let Some(r) = self.shared.rules.get() {
            // First the rules: a node's packets are gone before its
            // processes are (their resets must not reach anyone).
            if down {
                self.shared.program_down();
            }
            let shared = &self.shared;
            if let Err(e) = r
                .plane
                .set_down(&shared.node, shared.node_ip, &r.pod_cidr, down)
            {
                tracing::warn!(node = %self.shared.node, "cannot program the node's fault: {e}");
            }
        }
        self.shared.down.send_replace(down);
        if !down {
            // A node back from a stop writes its rules again even when
            // nothing changed meanwhile.
            let applied = self.applied();
            self.shared
                .pending
                .lock()
                .expect("pending lock")
                .get_or_insert_with(|| (*applied).clone());
            ProxyState::schedule_apply(&self.shared);
        }
    }

    /// A frozen node (docker pause): the kernel's rules keep routing, but
    /// kube-proxy neither applies updates nor answers health checks.
    pub fn set_paused(&self, paused: bool) {
        self.shared.paused.send_replace(paused);
    }

    /// The real address of `:10256`.
    pub fn healthz_addr(&self) -> SocketAddr {
        self.shared.healthz_addr
    }

    /// The real address of the service's `healthCheckNodePort` (`port`,
    /// as the API server allocated it) on this node. The server starts on
    /// first use and answers from the applied view (a service not applied
    /// as `Local` gets its connection closed, as no kube-proxy would listen
    /// for it).
    pub fn health_check_addr(
        &self,
        namespace: &str,
        service: &str,
        port: Option<u16>,
    ) -> io::Result<SocketAddr> {
        let key = (namespace.to_owned(), service.to_owned());
        let mut health = self.shared.health.lock().expect("health lock");
        if let Some(addr) = health.get(&key) {
            return Ok(*addr);
        }
        let listener = bind_node(&self.shared.net, self.shared.node_ip, port)?;
        let addr = listener.local_addr()?;
        let weak = Arc::downgrade(&self.shared);
        let k = key.clone();
        tokio::spawn(serve_health(
            listener,
            self.shared.clone(),
            self.shared.cancel.clone(),
            move |_path| {
                let shared = weak.upgrade()?;
                shared.service_health(&k)
            },
        ));
        health.insert(key, addr);
        Ok(addr)
    }

    /// A dialer for the LB: each new connection follows the applied view.
    /// `port` names the service port (pods have one socket in the model).
    pub fn dialer(&self, namespace: &str, service: &str, port: u16) -> Arc<dyn Dialer> {
        Arc::new(ServiceDialer {
            shared: self.shared.clone(),
            key: (namespace.to_owned(), service.to_owned()),
            port,
        })
    }

    /// Where a new connection for the service would go now.
    pub fn route(&self, namespace: &str, service: &str) -> Route {
        self.shared
            .route(&(namespace.to_owned(), service.to_owned()))
    }
}

impl ProxyState {
    fn schedule_apply(this: &Arc<ProxyState>) {
        if this.apply_scheduled.swap(true, Ordering::SeqCst) {
            return; // this burst already has its apply
        }
        let shared = this.clone();
        let cancel = this.cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = async {
                    tokio::time::sleep(shared.sync_delay).await;
                    let mut paused = shared.paused.subscribe();
                    let _ = paused.wait_for(|p| !*p).await;
                    shared.apply_scheduled.store(false, Ordering::SeqCst);
                    if *shared.down.borrow() {
                        return; // applied when the node comes back
                    }
                    shared.apply();
                } => {}
            }
        });
    }

    fn apply(&self) {
        let Some(next) = self.pending.lock().expect("pending lock").take() else {
            return;
        };
        // The kernel has the rules before the view and the events say so;
        // they say too when the loading began (packets may meet the new
        // rules from then on: `nft` commits before it exits).
        let since = self.events.clock().now();
        self.program(&next);
        let prev = std::mem::replace(
            &mut *self.applied.write().expect("applied lock"),
            Arc::new(next.clone()),
        );
        for (key, view) in &next.services {
            for e in &view.endpoints {
                tracing::trace!(node = %self.node, service = ?key, ip = %e.ip, ready = e.ready, "applied endpoint");
            }
            let old = prev.services.get(key);
            self.emit_changes(since, key, old, Some(view));
        }
        for (key, old) in &prev.services {
            if !next.services.contains_key(key) {
                self.emit_changes(since, key, Some(old), None);
            }
        }
        self.applies.send_modify(|n| *n += 1);
    }

    /// Write every Service's chain for this node from `view` (services
    /// gone from it: reset, as nothing listens for them).
    fn program(&self, view: &AppliedView) {
        let Some(r) = self.rules.get() else { return };
        let prev = self.applied.read().expect("applied lock").clone();
        let mut chains = Vec::new();
        let mut node_ports = Vec::new();
        for (key, v) in &view.services {
            if let Some(port) = v.node_port {
                node_ports.push((port, DataPlane::service_chain(&self.node, &key.0, &key.1)));
            }
            let verdict = match v.route(&self.node, self.version) {
                Route::To { endpoints, .. } => {
                    let pods: Vec<(Ipv4Addr, u16, Option<String>)> = endpoints
                        .iter()
                        .filter_map(|ip| {
                            let IpAddr::V4(v4) = ip else { return None };
                            let e = v.endpoints.iter().find(|e| e.ip == *ip);
                            let port = self
                                .pod_addrs
                                .get(ip)
                                .map(|a| a.port())
                                .or(e.and_then(|e| e.port))
                                .unwrap_or(80);
                            Some((*v4, port, e.and_then(|e| e.pod.clone())))
                        })
                        .collect();
                    Verdict::To(r.plane.targets(&self.node, &pods))
                }
                Route::Drop => Verdict::Drop(self.decision(Fate::Dropped)),
                Route::Reject => Verdict::Reject(self.decision(Fate::Refused)),
            };
            chains.push((
                DataPlane::service_chain(&self.node, &key.0, &key.1),
                verdict,
            ));
        }
        for key in prev
            .services
            .keys()
            .filter(|k| !view.services.contains_key(*k))
        {
            let verdict = Verdict::Reject(self.decision(Fate::Refused));
            chains.push((
                DataPlane::service_chain(&self.node, &key.0, &key.1),
                verdict,
            ));
        }
        if let Err(e) = r.plane.program(&self.node, &chains, &node_ports) {
            tracing::warn!(node = %self.node, "cannot program kube-proxy's rules: {e}");
        }
    }

    /// A stopped node drops every new connection the LB still sends it.
    fn program_down(&self) {
        let Some(r) = self.rules.get() else { return };
        let applied = self.applied.read().expect("applied lock").clone();
        let pending = self.pending.lock().expect("pending lock").clone();
        let keys: std::collections::BTreeSet<&ServiceKey> = applied
            .services
            .keys()
            .chain(pending.iter().flat_map(|p| p.services.keys()))
            .collect();
        let drop = Verdict::Drop(self.decision(Fate::Dropped));
        let chains: Vec<(String, Verdict)> = keys
            .into_iter()
            .map(|k| {
                (
                    DataPlane::service_chain(&self.node, &k.0, &k.1),
                    drop.clone(),
                )
            })
            .collect();
        if let Err(e) = r.plane.program(&self.node, &chains, &[]) {
            tracing::warn!(node = %self.node, "cannot program the stopped node's rules: {e}");
        }
    }

    /// The id of a decision of this node that names no pod.
    fn decision(&self, fate: Fate) -> u32 {
        self.rules.get().map_or(0, |r| {
            r.plane.decision(Provenance {
                node: Some(self.node.clone()),
                pod: None,
                fate,
            })
        })
    }

    fn emit_changes(
        &self,
        since: std::time::Duration,
        key: &ServiceKey,
        old: Option<&ServiceView>,
        new: Option<&ServiceView>,
    ) {
        let object = format!("service/{}/{}", key.0, key.1);
        // Every event of a sync says when its rules began to load.
        let emit = |reason: &str, message: String| {
            self.events.send(Event {
                since: Some(since),
                ..self.events.stamped(
                    Source::Endpoint,
                    reason,
                    &object,
                    Some(self.node.as_str()),
                    message,
                )
            })
        };
        let empty = ServiceView::default();
        let (o, n) = (old.unwrap_or(&empty), new.unwrap_or(&empty));
        let (oc, nc) = (o.counts(&self.node), n.counts(&self.node));
        if oc != nc || old.is_none() != new.is_none() {
            emit(
                "EndpointsApplied",
                format!(
                    "kube-proxy on {} applied: {} ready ({} local), {} serving-terminating ({} local), {} not ready",
                    self.node,
                    nc.ready,
                    nc.local_ready,
                    nc.serving_terminating,
                    nc.local_serving_terminating,
                    nc.not_ready
                ),
            );
        }
        let (or, nr) = (
            old.map(|v| v.route(&self.node, self.version)),
            new.map(|v| v.route(&self.node, self.version)),
        );
        let local = new.or(old).is_some_and(|v| v.local);
        match (&or, &nr) {
            (_, Some(Route::Drop)) if or != nr => emit(
                "NoLocalEndpoints",
                format!(
                    "externalTrafficPolicy Local: no usable local endpoint on {}; new connections are dropped",
                    self.node
                ),
            ),
            (_, Some(Route::Reject)) if or != nr => emit(
                "NoEndpoints",
                format!("no usable endpoint; {} rejects new connections", self.node),
            ),
            (Some(Route::Drop | Route::Reject), Some(Route::To { .. })) if local => {
                emit(
                "LocalEndpointsRestored",
                format!("{} routes new connections to local endpoints again", self.node),
                )
            }
            (Some(Route::Reject), Some(Route::To { .. })) => emit(
                "EndpointsRestored",
                format!("{} routes new connections again", self.node),
            ),
            _ => {}
        }
        let fallback = |r: &Option<Route>| {
            matches!(
                r,
                Some(Route::To {
                    terminating_fallback: true,
                    ..
                })
            )
        };
        if fallback(&nr) && !fallback(&or) {
            emit(
                "TerminatingFallback",
                format!(
                    "no ready endpoint for {} on {}: using serving-terminating endpoints",
                    key.1, self.node
                ),
            );
        }
    }

    fn route(&self, key: &ServiceKey) -> Route {
        let applied = self.applied.read().expect("applied lock").clone();
        match applied.services.get(key) {
            Some(view) => view.route(&self.node, self.version),
            // No rules for the service: nothing listens on the node port.
            None => Route::Reject,
        }
    }

    /// `:10256/healthz` (and `/livez` from 1.31).
    fn healthz(&self, path: &str) -> (StatusCode, String) {
        let state = *self.node_state.read().expect("node state lock");
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let knows_eligibility = self.version.proxy_healthz_reflects_node_deletion();
        match path {
            "/healthz" if knows_eligibility => {
                let eligible = !state.deleting && !state.to_be_deleted;
                let code = if eligible {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                (
                    code,
                    format!(
                        r#"{{"lastUpdated": "{now}","currentTime": "{now}", "nodeEligible": {eligible}}}"#
                    ),
                )
            }
            "/healthz" => (
                StatusCode::OK,
                format!(r#"{{"lastUpdated": "{now}","currentTime": "{now}"}}"#),
            ),
            "/livez" if knows_eligibility => (
                StatusCode::OK,
                format!(r#"{{"lastUpdated": "{now}","currentTime": "{now}"}}"#),
            ),
            _ => (StatusCode::NOT_FOUND, "404 page not found\n".into()),
        }
    }

    /// The healthCheckNodePort answer; None when the service is not applied
    /// as a Local service (no server would listen).
    fn service_health(&self, key: &ServiceKey) -> Option<(StatusCode, String)> {
        let applied = self.applied.read().expect("applied lock").clone();
        let view = applied.services.get(key).filter(|v| v.local)?;
        let count = view.local_ready(&self.node);
        let code = if count > 0 {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let body = serde_json::json!({
            "service": { "namespace": key.0, "name": key.1 },
            "localEndpoints": count,
            "serviceProxyHealthy": true,
        });
        Some((
            code,
            serde_json::to_string_pretty(&body).unwrap_or_default(),
        ))
    }
}

struct ServiceDialer {
    shared: Arc<ProxyState>,
    key: ServiceKey,
    port: u16,
}

impl Dialer for ServiceDialer {
    fn dial(&self, client: SocketAddr) -> BoxFuture<'static, Dial> {
        let traced = self.dial_traced(client);
        Box::pin(async move { traced.await.0 })
    }

    fn dial_traced(&self, _client: SocketAddr) -> zdt_core::net::TracedDialFuture {
        let shared = &self.shared;
        let target = if *shared.down.borrow() {
            Err((Dial::Dropped, None))
        } else {
            // One read of the applied view: the route and the pod it names
            // come from the same rules.
            let applied = shared.applied.read().expect("applied lock").clone();
            match applied.services.get(&self.key) {
                // No rules for the service: nothing listens on the node port.
                None => Err((Dial::Refused, None)),
                Some(view) => match view.route(&shared.node, shared.version) {
                    Route::Drop => Err((Dial::Dropped, None)),
                    Route::Reject => Err((Dial::Refused, None)),
                    Route::To { endpoints, .. } => {
                        let i = shared
                            .rng
                            .lock()
                            .expect("rng lock")
                            .random_range(0..endpoints.len());
                        let ip = endpoints[i];
                        let pod = view
                            .endpoints
                            .iter()
                            .find(|e| e.ip == ip)
                            .and_then(|e| e.pod.clone());
                        // A pod IP with no container behind it (its sandbox
                        // is gone, or its node died) black-holes the SYN.
                        match shared.pod_addrs.get(&ip) {
                            Some(addr) => Ok((addr, pod)),
                            None => Err((Dial::Dropped, pod)),
                        }
                    }
                },
            }
        };
        let port = self.port;
        let net = self.shared.net.clone();
        Box::pin(async move {
            let (addr, pod) = match target {
                Ok(target) => target,
                Err(d) => return d,
            };
            // The LB sets TCP_NODELAY on every connection it splices.
            let dial = match net.connect(addr).await {
                Ok(s) => Dial::Connected(s),
                // A pod that stopped listening answers the SYN with RST.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Dial::Refused,
                Err(e) => {
                    zdt_core::hostfault::record(e.raw_os_error());
                    tracing::debug!(%addr, port, error = %e, "kube-proxy: dial failed");
                    Dial::Failed(e)
                }
            };
            (dial, pod)
        })
    }
}

/// kube-proxy's health server port (`--healthz-bind-address`).
const HEALTHZ_PORT: u16 = 10256;

/// A health server's listener: the node's `ip:port` in a private network;
/// on the host's stack, where every node shares 127.0.0.1, a free port.
fn bind_node(net: &Net, ip: Ipv4Addr, port: Option<u16>) -> io::Result<TcpListener> {
    let addr = if net.is_private() {
        SocketAddr::from((ip, port.unwrap_or(0)))
    } else {
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
    };
    net.listen(addr, 1024)
}

/// A small HTTP server answering every request with `answer(path)`; `None`
/// closes the connection unanswered. While the node is down or frozen,
/// requests are held unanswered (the prober times out).
async fn serve_health<F>(
    listener: TcpListener,
    shared: Arc<ProxyState>,
    cancel: CancellationToken,
    answer: F,
) where
    F: Fn(&str) -> Option<(StatusCode, String)> + Send + Sync + 'static,
{
    let answer = Arc::new(answer);
    let (down, paused) = (shared.down.subscribe(), shared.paused.subscribe());
    drop(shared); // the server must not keep the proxy alive
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let answer = answer.clone();
        let (down, paused, cancel) = (down.clone(), paused.clone(), cancel.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let answer = answer.clone();
                let (mut down, mut paused) = (down.clone(), paused.clone());
                async move {
                    let _ = down.wait_for(|d| !*d).await;
                    let _ = paused.wait_for(|p| !*p).await;
                    match answer(req.uri().path()) {
                        Some((code, body)) => {
                            let mut resp = Response::new(Full::new(Bytes::from(body)));
                            *resp.status_mut() = code;
                            let h = resp.headers_mut();
                            h.insert("content-type", "application/json".parse().expect("static"));
                            h.insert("x-content-type-options", "nosniff".parse().expect("static"));
                            Ok::<_, io::Error>(resp)
                        }
                        None => Err(io::Error::other("no health check for this service")),
                    }
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = conn => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(ip: &str, node: &str, ready: bool, serving: bool, terminating: bool) -> EndpointView {
        EndpointView {
            ip: ip.parse().unwrap(),
            port: None,
            node: Some(node.into()),
            pod: None,
            ready,
            serving,
            terminating,
        }
    }

    fn svc(local: bool, endpoints: Vec<EndpointView>) -> ServiceView {
        ServiceView {
            local,
            load_balancer: true,
            health_check_node_port: None,
            node_port: None,
            endpoints,
        }
    }

    const V27: KubeVersion = KubeVersion::V1_27;
    const V31: KubeVersion = KubeVersion::V1_31;

    #[test]
    fn local_prefers_local_ready_then_serving_terminating_on_1_28_plus() {
        let v = svc(
            true,
            vec![
                ep("10.244.1.2", "a", false, true, true),
                ep("10.244.2.2", "b", true, true, false),
            ],
        );
        assert_eq!(v.route("a", V27), Route::Drop);
        assert_eq!(
            v.route("a", V31),
            Route::To {
                endpoints: vec!["10.244.1.2".parse().unwrap()],
                terminating_fallback: true
            }
        );
        assert!(matches!(v.route("b", V27), Route::To { .. }));
        assert_eq!(v.local_ready("a"), 0);
        assert_eq!(v.local_ready("b"), 1);
    }

    #[test]
    fn no_usable_endpoint_anywhere_rejects_even_for_local() {
        let v = svc(true, vec![ep("10.244.1.2", "a", false, true, true)]);
        assert_eq!(v.route("b", V27), Route::Reject);
        assert_eq!(v.route("b", V31), Route::Drop);
        let none = svc(false, vec![ep("10.244.1.2", "a", false, false, true)]);
        assert_eq!(none.route("a", V31), Route::Reject);
    }

    #[test]
    fn cluster_uses_any_ready_then_terminating_fallback() {
        let v = svc(
            false,
            vec![
                ep("10.244.1.2", "a", false, true, true),
                ep("10.244.2.2", "b", true, true, false),
            ],
        );
        assert_eq!(
            v.route("a", V27),
            Route::To {
                endpoints: vec!["10.244.2.2".parse().unwrap()],
                terminating_fallback: false
            }
        );
        let only_terminating = svc(false, vec![ep("10.244.1.2", "a", false, true, true)]);
        assert_eq!(only_terminating.route("c", V27), Route::Reject);
        assert!(matches!(
            only_terminating.route("c", V31),
            Route::To {
                terminating_fallback: true,
                ..
            }
        ));
    }
}
