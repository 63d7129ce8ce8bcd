//! An in-process Kubernetes: the API subset zdt and `kubectl` use, served
//! over HTTP on loopback, plus the controllers and data path (kubelet,
//! endpoints, kube-proxy) that decide whether a request during a drain
//! succeeds. See docs/emulator.md for what is and is not modelled.
//!
//! [`Emulator::start`] builds a kind-shaped cluster (`zdt-control-plane`
//! with its NoSchedule taint, workers `zdt-worker`, `zdt-worker2`, …,
//! InternalIPs 172.18.0.x), serves the API on 127.0.0.1, runs the
//! controllers on the store, and per node a kubelet and a kube-proxy.

pub mod apiserver;
pub mod controllers;
pub mod dataplane;
pub mod node;
pub mod ownership;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use dataplane::DataPlane;
pub use zdt_core::emulated::{
    DataPathChoice, EmulatorConfig, NetworkChoice, RuntimeChoice, Timings,
};
pub use zdt_core::netns::Net;
pub use zdt_core::version::{KubeVersion, KubeVersionError};

use apiserver::{ApiContext, ApiServer};
use controllers::NodeHeartbeats;
use node::simkubelet::{SimKubelet, SimStatus};
use node::NodeAgent;
use store::{meta_str, now_rfc3339, ChangeType, Resource, Store};
use zdt_core::events::{EventSink, Source};

/// Why the emulator could not do something.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmulatorError {
    #[error("the emulator's API server cannot listen on 127.0.0.1: {0}")]
    Listen(std::io::Error),
    #[error("the emulator's API server cannot listen on the `kubernetes` Service's address {KUBERNETES_SERVICE} in the cluster's network: {0}")]
    InClusterListen(std::io::Error),
    #[error("cannot build a client for the emulator at {url}: {message}")]
    Client { url: String, message: String },
    #[error(
        "cannot write the kubeconfig {path}: {source} (check the directory exists and is writable)"
    )]
    Kubeconfig {
        path: String,
        source: std::io::Error,
    },
    #[error("no node named `{0}` in the emulated cluster (nodes are zdt-control-plane, zdt-worker, zdt-worker2, …)")]
    NoSuchNode(String),
    #[error("service {namespace}/{name} not found in the emulated cluster")]
    NoSuchService { namespace: String, name: String },
    #[error("a simulated emulator has no kube-proxies: start it with Emulator::start to reach its services")]
    Simulated,
    #[error(transparent)]
    Runtime(#[from] node::runtime::RuntimeError),
    #[error("the emulated cluster cannot have a network of its own: {0}")]
    Network(#[from] zdt_core::netns::NetError),
    #[error("the emulated cluster's nftables data path cannot start: {0}")]
    DataPlane(#[from] dataplane::DataPlaneError),
    #[error("a kube-proxy for {node} cannot listen: {source}")]
    Proxy {
        node: String,
        source: std::io::Error,
    },
}

/// How one worker serves a LoadBalancer service to a cloud LB.
#[derive(Clone)]
pub struct NodeBackend {
    /// The node's name (`zdt-worker2`).
    pub node: String,
    /// Opens a client connection through the node's kube-proxy rules.
    pub dialer: Arc<dyn zdt_core::net::Dialer>,
    /// Where a cloud LB's HTTP probe goes (path `/healthz`).
    pub health_check: SocketAddr,
}

impl std::fmt::Debug for NodeBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeBackend")
            .field("node", &self.node)
            .field("health_check", &self.health_check)
            .finish_non_exhaustive()
    }
}

/// A node of the emulated cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub internal_ip: IpAddr,
    pub control_plane: bool,
}

/// A fault injected into a node's kubelet (and its pods' processes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeFault {
    /// The node stops: kubelet and pods stop serving (like `docker stop`).
    Stop,
    /// The node freezes (like `docker pause`): no heartbeats, nothing runs.
    Pause,
    /// The node dies at once (SIGKILL to everything).
    Kill,
    /// A stopped or paused node comes back.
    Resume,
}

/// One node as the cluster last saw it (for the run's log).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NodeState {
    pub name: String,
    pub unschedulable: bool,
    pub ready: bool,
    pub taints: Vec<Value>,
}

/// What the cluster looked like at shutdown.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FinalState {
    pub nodes: Vec<NodeState>,
}

/// A running emulated cluster. Drop without `shutdown` cancels every task
/// (pod processes are then killed by their owners' drop handlers).
pub struct Emulator {
    config: EmulatorConfig,
    store: Arc<Store>,
    addr: SocketAddr,
    in_cluster: SocketAddr,
    cancel: CancellationToken,
    nodes: Vec<NodeInfo>,
    heartbeats: NodeHeartbeats,
    agents: BTreeMap<String, Arc<NodeAgent>>,
    runtime: Option<Arc<node::runtime::Runtime>>,
    net: Net,
    /// The nodes' own namespaces (`NetworkChoice::Nodes`), in node order.
    node_nets: Vec<zdt_core::netns::NodeNet>,
    /// kube-proxy's rules and pass-through LBs as nftables rules.
    data_plane: Option<DataPlane>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    events: EventSink,
    started: Instant,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("addr", &self.addr)
            .field("nodes", &self.nodes)
            .finish_non_exhaustive()
    }
}

pub const CONTROL_PLANE: &str = "zdt-control-plane";

/// The address the emulated cloud LB listens on in a private network, as
/// `status.loadBalancer.ingress` shows it (kind's network is 172.18.0.0/16).
pub const LB_IP: Ipv4Addr = Ipv4Addr::new(172, 18, 255, 1);

/// The `kubernetes` Service's ClusterIP and port (kind's service subnet
/// 10.96.0.0/12): where pods reach the API server, as in a real cluster.
pub const KUBERNETES_SERVICE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 1), 443);

/// The pod network (a /24 per node, as kind's podCIDRs).
const POD_BLOCK: zdt_core::netns::Block = zdt_core::netns::Block {
    addr: Ipv4Addr::new(10, 244, 0, 1),
    len: 16,
};

/// The address blocks of a private network: pods ([`POD_BLOCK`]), nodes
/// plus the LB (172.18.0.0/16), the clients outside the cluster
/// (100.64.0.0/16), and the `kubernetes` Service's ClusterIP, where the API
/// server listens in the namespace (in a real cluster kube-proxy forwards
/// it to the control plane's 6443).
const NETWORK_BLOCKS: [zdt_core::netns::Block; 4] = [
    POD_BLOCK,
    zdt_core::netns::Block {
        addr: Ipv4Addr::new(172, 18, 0, 1),
        len: 16,
    },
    zdt_core::netns::Block {
        addr: Ipv4Addr::new(100, 64, 0, 1),
        len: 16,
    },
    zdt_core::netns::Block {
        addr: *KUBERNETES_SERVICE.ip(),
        len: 32,
    },
];

/// The cluster namespace's own addresses when nodes have namespaces of
/// their own (`NetworkChoice::Nodes`): kind's network's gateway
/// ([`NODES_GATEWAY`]) and the LB's address, not the nodes' (each is on its
/// node's `eth0`); clients and the `kubernetes` Service as in
/// [`NETWORK_BLOCKS`].
const NODES_NETWORK_BLOCKS: [zdt_core::netns::Block; 4] = [
    zdt_core::netns::Block {
        addr: NODES_GATEWAY,
        len: 32,
    },
    zdt_core::netns::Block {
        addr: LB_IP,
        len: 32,
    },
    NETWORK_BLOCKS[2],
    NETWORK_BLOCKS[3],
];

/// kind's Docker network's gateway: where the cluster namespace's own
/// connections to nodes (the LB's probes) come from when nodes have
/// namespaces of their own.
const NODES_GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 1);

/// Client addresses connections leave from, in turn: the generator's
/// sockets held open through a blackhole (5000/s × a 10 s timeout) need
/// more ephemeral ports to one LB address than one source has.
fn client_sources() -> Vec<Ipv4Addr> {
    (1..=32).map(|i| Ipv4Addr::new(100, 64, 0, i)).collect()
}

/// The network `choice` asks for, made. `Auto` is resolved first
/// ([`resolve_network`]).
fn network(choice: NetworkChoice, data_path: DataPathChoice) -> Result<Net, EmulatorError> {
    match choice {
        NetworkChoice::Nodes => Ok(Net::routed(
            &NODES_NETWORK_BLOCKS,
            &client_sources(),
            POD_BLOCK,
        )?),
        NetworkChoice::Host => Ok(Net::host()),
        NetworkChoice::Private => Ok(Net::private(&NETWORK_BLOCKS, &client_sources())?),
        // Pod addresses are routed to the pods' sandboxes, not local.
        NetworkChoice::Pods => Ok(Net::routed(
            &NETWORK_BLOCKS[1..],
            &client_sources(),
            POD_BLOCK,
        )?),
        NetworkChoice::Auto => network(resolve_network(choice, data_path), data_path),
    }
}

/// What `choice` comes to on this machine. `Auto` is what `ZDT_NETWORK`
/// names (`nodes`, `pods`, `private`, `host`), else every node and every
/// pod in a namespace of its own with kube-proxy's rules as nftables rules
/// in each node's (namespaces, `nft` and `ip` needed); else one private
/// namespace shared by the pods with the user-space data path (also what
/// `ZDT_DATA_PATH=userspace` asks for); else the host's stack. Each step
/// down is said once per process.
fn resolve_network(choice: NetworkChoice, data_path: DataPathChoice) -> NetworkChoice {
    use zdt_core::emulated::DATA_PATH_ENV;
    use zdt_core::netns::NETWORK_ENV;
    if choice != NetworkChoice::Auto {
        return choice;
    }
    match std::env::var(NETWORK_ENV).unwrap_or_default().as_str() {
        "nodes" => return NetworkChoice::Nodes,
        "pods" => return NetworkChoice::Pods,
        "private" => return NetworkChoice::Private,
        _ => {}
    }
    if let Some(why) = zdt_core::netns::private_unavailable() {
        say_once(&HOST_SAID, || {
            format!(
                "emulator: {why}; the data path runs on the host's network stack \
                 (127.0.0.1), whose connection tracking and limits then take part \
                 in every run"
            )
        });
        return NetworkChoice::Host;
    }
    let user_space = data_path == DataPathChoice::UserSpace
        || (data_path == DataPathChoice::Auto
            && std::env::var(DATA_PATH_ENV).is_ok_and(|v| v == "userspace"));
    if user_space {
        return NetworkChoice::Private;
    }
    let missing: Vec<&str> = ["nft", "ip"]
        .into_iter()
        .filter(|tool| zdt_core::process::system_tool(tool).is_none())
        .collect();
    if !missing.is_empty() {
        say_once(&SHARED_SAID, || {
            format!(
                "emulator: {} not found (apt-get install nftables iproute2); the pods \
                 share the cluster's network namespace and kube-proxy's rules and the \
                 cloud LB run in user space (a dropped SYN is then an accepted \
                 connection held silent: the client sees a response timeout, not a \
                 connect timeout)",
                missing.join(" and ")
            )
        });
        return NetworkChoice::Private;
    }
    NetworkChoice::Nodes
}

/// A namespace for each of `nodes` in `net`, joined to it (see
/// [`Net::node`]), registered where pods' sandboxes and kube-proxy's rules
/// go: the runtime and the data path.
async fn node_networks(
    net: &Net,
    nodes: &[NodeInfo],
    runtime: &node::runtime::Runtime,
    plane: &DataPlane,
) -> Result<Vec<zdt_core::netns::NodeNet>, EmulatorError> {
    let mut out = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let IpAddr::V4(ip) = n.internal_ip else {
            continue;
        };
        let pods = pod_block(i);
        let cluster = net.clone();
        let node = tokio::task::spawn_blocking(move || cluster.node(ip, pods, Some(NODES_GATEWAY)))
            .await
            .map_err(|e| zdt_core::netns::NetError::Node {
                ip,
                message: e.to_string(),
            })??;
        runtime.add_node(ip, node.net().clone());
        let (plane, name, node_net) = (plane.clone(), n.name.clone(), node.net().clone());
        tokio::task::spawn_blocking(move || plane.add_node(&name, &node_net, ip))
            .await
            .map_err(|e| dataplane::DataPlaneError::Nft(e.to_string()))??;
        out.push(node);
    }
    Ok(out)
}

/// The network, its data path, and whether its nodes get namespaces of
/// their own. Where `Auto` chose namespaces and they or the rules then
/// cannot be made (an `nft` without kernel support), the pods share one
/// namespace with the user-space data path instead, said once; a network
/// asked for by name is made or is an error.
fn network_with_rules(
    config: &EmulatorConfig,
    events: &EventSink,
) -> Result<(Net, Option<DataPlane>, bool), EmulatorError> {
    let chosen = resolve_network(config.network, config.data_path);
    let demanded = config.network != NetworkChoice::Auto
        || std::env::var(zdt_core::netns::NETWORK_ENV).is_ok_and(|v| !v.is_empty());
    let shared = |e: &dyn std::fmt::Display| {
        say_once(&SHARED_SAID, || {
            format!(
                "emulator: nodes and pods cannot have network namespaces of their own here \
                 ({e}); the pods share the cluster's, and the data path runs in user space"
            )
        });
        let net = network(NetworkChoice::Private, config.data_path)?;
        let plane = data_plane(config.data_path, &net, events, false)?;
        Ok((net, plane, false))
    };
    let net = match network(chosen, config.data_path) {
        Err(e) if !demanded && matches!(chosen, NetworkChoice::Pods | NetworkChoice::Nodes) => {
            return shared(&e)
        }
        net => net?,
    };
    let nodes = chosen == NetworkChoice::Nodes;
    match data_plane(config.data_path, &net, events, nodes) {
        Err(e) if net.is_routed() && !demanded => shared(&e),
        plane => Ok((net, plane?, nodes)),
    }
}

static HOST_SAID: std::sync::Once = std::sync::Once::new();
static SHARED_SAID: std::sync::Once = std::sync::Once::new();
static USER_SPACE_SAID: std::sync::Once = std::sync::Once::new();

/// Warn once per process: a fallback is a fact of the machine, not of a run.
fn say_once(once: &'static std::sync::Once, message: impl FnOnce() -> String) {
    once.call_once(|| tracing::warn!("{}", message()));
}

/// The data path `choice` asks for in `net` (whose nodes will have
/// namespaces of their own, with `nodes`). Pods in sandboxes need the
/// rules; in one shared private namespace `Auto` is user space unless
/// `ZDT_DATA_PATH=nftables`, falling back to user space (said once per
/// process) where the rules cannot run; the host's stack is user space.
fn data_plane(
    choice: DataPathChoice,
    net: &Net,
    events: &EventSink,
    nodes: bool,
) -> Result<Option<DataPlane>, EmulatorError> {
    use zdt_core::emulated::DATA_PATH_ENV;
    if !net.is_private() {
        return match choice {
            DataPathChoice::Nftables => Err(dataplane::DataPlaneError::NotPrivate.into()),
            _ => Ok(None),
        };
    }
    let asked = || std::env::var(DATA_PATH_ENV).is_ok_and(|v| v == "nftables");
    if net.is_routed() {
        // Pods in sandboxes are reached through the rules (DNAT, then
        // routed over their veth); kube-proxy's user-space path alone
        // would not model what the pods' own network namespaces are for.
        return match choice {
            DataPathChoice::UserSpace => Err(dataplane::DataPlaneError::NeedsRules.into()),
            _ => Ok(Some(DataPlane::start(net, events, nodes)?)),
        };
    }
    match choice {
        DataPathChoice::UserSpace => Ok(None),
        DataPathChoice::Nftables => Ok(Some(DataPlane::start(net, events, false)?)),
        DataPathChoice::Auto if !asked() => Ok(None),
        DataPathChoice::Auto => match DataPlane::start(net, events, false) {
            Ok(p) => Ok(Some(p)),
            Err(e) => {
                say_once(&USER_SPACE_SAID, || {
                    format!(
                        "emulator: {DATA_PATH_ENV}=nftables, but {e}; kube-proxy's rules and \
                         the cloud LB run in user space (a dropped SYN is then an accepted \
                         connection held silent: the client sees a response timeout, not a \
                         connect timeout)"
                    )
                });
                Ok(None)
            }
        },
    }
}

/// kind's worker names: `zdt-worker`, `zdt-worker2`, `zdt-worker3`, …
pub fn worker_name(i: usize) -> String {
    if i == 0 {
        "zdt-worker".into()
    } else {
        format!("zdt-worker{}", i + 1)
    }
}

/// The pod CIDR of the node at `index` (kind's podCIDR): what its Node
/// object shows, the data path drops when it stops, and its namespace
/// routes (`NetworkChoice::Nodes`).
fn pod_block(index: usize) -> zdt_core::netns::Block {
    zdt_core::netns::Block {
        addr: Ipv4Addr::new(10, 244, index as u8, 0),
        len: 24,
    }
}

/// [`pod_block`] as the API and `nft` write it.
fn pod_cidr(index: usize) -> String {
    pod_block(index).network()
}

/// The namespace of the node whose InternalIP is `ip`, among `node_nets`.
fn node_net_of(node_nets: &[zdt_core::netns::NodeNet], ip: IpAddr) -> Option<&Net> {
    node_nets
        .iter()
        .find(|nn| IpAddr::V4(nn.ip()) == ip)
        .map(|nn| nn.net())
}

fn node_object(info: &NodeInfo, index: usize, version: KubeVersion) -> Value {
    let now = now_rfc3339();
    let mut labels = json!({
        "kubernetes.io/hostname": info.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64",
    });
    if info.control_plane {
        labels["node-role.kubernetes.io/control-plane"] = json!("");
        labels["node.kubernetes.io/exclude-from-external-load-balancers"] = json!("");
    }
    let cond = |ty: &str, status: &str, reason: &str, message: &str| {
        json!({"type": ty, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    let capacity = json!({"cpu": "8", "memory": "16252084Ki", "pods": "110", "ephemeral-storage": "102626232Ki", "hugepages-2Mi": "0"});
    let mut node = json!({
        "metadata": {
            "name": info.name,
            "labels": labels,
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        "spec": {
            "podCIDR": pod_cidr(index),
            "podCIDRs": [pod_cidr(index)],
            "providerID": format!("kind://docker/zdt/{}", info.name),
        },
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": info.internal_ip.to_string()},
                {"type": "Hostname", "address": info.name},
            ],
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "capacity": capacity,
            "allocatable": capacity,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": format!("{:032x}", index + 1),
                "systemUUID": format!("{:032x}", index + 1),
                "bootID": format!("{:032x}", index + 101),
                "kernelVersion": "6.1.0-emulated",
                "osImage": "zdt emulator (model of a kind node)",
                "containerRuntimeVersion": "emulated://1.0",
                "kubeletVersion": version.git_version(),
                "kubeProxyVersion": version.git_version(),
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        },
    });
    if info.control_plane {
        node["spec"]["taints"] =
            json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]);
    }
    node
}

impl Emulator {
    /// Start an emulated cluster: nodes, API server, controllers, and per
    /// node a kubelet and a kube-proxy.
    pub async fn start(
        config: EmulatorConfig,
        events: EventSink,
    ) -> Result<Emulator, EmulatorError> {
        Self::start_inner(config, events, true).await
    }

    /// An emulated cluster for a test of a Kubernetes client or controller
    /// (kube-rs users' envtest): [`Emulator::start_simulated`] with
    /// `workers` workers, the default timings and no event log. Get a client
    /// with [`Emulator::client`], stop it with [`Emulator::shutdown`]; see
    /// `examples/controller.rs`.
    pub async fn simulated(workers: usize) -> Result<Emulator, EmulatorError> {
        let config = EmulatorConfig {
            workers,
            ..EmulatorConfig::default()
        };
        Self::start_simulated(config, EventSink::discard(zdt_core::clock::Clock::start())).await
    }

    /// Like [`Emulator::start`] but pods are not processes: they become
    /// Ready after the start delay and go as soon as they are deleted.
    /// For control-plane tests (API, scheduling, rollouts, PDBs, kubectl).
    pub async fn start_simulated(
        config: EmulatorConfig,
        events: EventSink,
    ) -> Result<Emulator, EmulatorError> {
        Self::start_inner(config, events, false).await
    }

    async fn start_inner(
        config: EmulatorConfig,
        events: EventSink,
        real: bool,
    ) -> Result<Emulator, EmulatorError> {
        let started = Instant::now();
        let store = Arc::new(Store::new());
        let cancel = CancellationToken::new();
        let version = config.kubernetes;
        let timings = config.timings;

        let mut nodes = vec![NodeInfo {
            name: CONTROL_PLANE.into(),
            internal_ip: IpAddr::V4(Ipv4Addr::new(172, 18, 0, 2)),
            control_plane: true,
        }];
        for i in 0..config.workers {
            nodes.push(NodeInfo {
                name: worker_name(i),
                internal_ip: IpAddr::V4(Ipv4Addr::new(172, 18, 0, 3 + i as u8)),
                control_plane: false,
            });
        }
        bootstrap(&store, &nodes, version);

        let (net, data_plane, node_namespaces) = if real {
            network_with_rules(&config, &events)?
        } else {
            (Net::host(), None, false)
        };
        let runtime = if real {
            // The kubelet's own connections to pods (probes, start
            // checks) leave from the pod network's address, never from a
            // client's: see `Net::without_sources`.
            Some(node::runtime::Runtime::with_run(
                config.runtime,
                config.run.clone(),
                events.clone(),
                net.without_sources(),
            )?)
        } else {
            None
        };
        let pod_addrs = node::kubelet::PodAddrs::new();
        let node_nets = match (&runtime, &data_plane) {
            (Some(rt), Some(plane)) if node_namespaces => {
                node_networks(&net, &nodes, rt, plane).await?
            }
            _ => Vec::new(),
        };
        if let Some(plane) = &data_plane {
            let plane = plane.clone();
            pod_addrs.watch(Box::new(move |ip, live| {
                if let IpAddr::V4(ip) = ip {
                    if let Err(e) = plane.set_live(ip, live) {
                        tracing::warn!("cannot program pod IP {ip} (live {live}): {e}");
                    }
                }
            }));
        }
        let pods = runtime.as_ref().map(|rt| apiserver::streaming::PodAccess {
            logs: rt.logs().clone(),
            addrs: pod_addrs.clone(),
            net: net.without_sources(),
        });
        let mut api = ApiServer::start(
            store.clone(),
            ApiContext {
                version,
                timings,
                pods,
            },
            0,
            cancel.child_token(),
        )
        .await
        .map_err(EmulatorError::Listen)?;
        let addr = api.addr();
        // Pods reach the API where a real cluster's pods do; on the host's
        // stack they share its loopback listener.
        let in_cluster = if net.is_private() {
            let listener = net
                .listen(SocketAddr::V4(KUBERNETES_SERVICE), 1024)
                .map_err(EmulatorError::InClusterListen)?;
            api.serve_also(listener);
            SocketAddr::V4(KUBERNETES_SERVICE)
        } else {
            addr
        };
        let mut tasks = vec![tokio::spawn(api.stopped())];

        let heartbeats: NodeHeartbeats = Arc::new(Mutex::new(
            nodes
                .iter()
                .map(|n| (n.name.clone(), None))
                .collect::<HashMap<_, _>>(),
        ));
        let ctx = controllers::Ctx {
            store: store.clone(),
            version,
            timings,
            heartbeats: heartbeats.clone(),
            events: events.clone(),
        };
        tasks.push(controllers::spawn(ctx, cancel.child_token()));

        let (status_tx, status_rx) = mpsc::unbounded_channel();
        let mut agents = BTreeMap::new();
        let (kubelet_tx, kubelet_rx) = mpsc::unbounded_channel();
        for (i, n) in nodes.iter().enumerate() {
            let agent = match &runtime {
                None => NodeAgent::simulated(
                    &n.name,
                    n.control_plane,
                    SimKubelet::new(
                        &n.name,
                        &n.internal_ip.to_string(),
                        i as u8,
                        timings,
                        status_tx.clone(),
                        cancel.child_token(),
                    ),
                ),
                Some(rt) => {
                    // In the node's own namespace, if it has one.
                    let node_net = node_net_of(&node_nets, n.internal_ip)
                        .unwrap_or(&net)
                        .clone();
                    let proxy = node::kube_proxy::KubeProxy::new(
                        n.name.clone(),
                        version,
                        timings.kube_proxy_sync_delay.get(),
                        pod_addrs.clone(),
                        events.clone(),
                        node_net,
                        match n.internal_ip {
                            IpAddr::V4(ip) => ip,
                            IpAddr::V6(_) => Ipv4Addr::LOCALHOST,
                        },
                    )
                    .map_err(|source| EmulatorError::Proxy {
                        node: n.name.clone(),
                        source,
                    })?;
                    if let Some(plane) = &data_plane {
                        proxy.use_data_plane(plane.clone(), pod_cidr(i));
                    }
                    NodeAgent::real(
                        n.control_plane,
                        node::kubelet::KubeletConfig {
                            node_name: n.name.clone(),
                            node_index: i as u8,
                            node_ip: Some(n.internal_ip.to_string()),
                            timings,
                            version,
                            api_server: in_cluster,
                        },
                        rt.clone(),
                        pod_addrs.clone(),
                        events.clone(),
                        kubelet_tx.clone(),
                        proxy,
                    )
                }
            };
            agents.insert(n.name.clone(), Arc::new(agent));
        }
        drop(kubelet_tx);
        tasks.push(tokio::spawn(node::forward_statuses(
            kubelet_rx,
            status_tx.clone(),
            cancel.child_token(),
        )));
        if real {
            tasks.push(tokio::spawn(feed_proxies(
                store.clone(),
                agents.clone(),
                cancel.child_token(),
            )));
        }
        tasks.push(tokio::spawn(apply_pod_statuses(
            store.clone(),
            status_rx,
            cancel.child_token(),
        )));
        tasks.push(tokio::spawn(feed_nodes(
            store.clone(),
            agents.clone(),
            events.clone(),
            cancel.child_token(),
        )));
        events.emit(
            Source::Run,
            "EmulatorStarted",
            "cluster/zdt",
            None,
            format!(
                "emulated Kubernetes {version} with {} workers at http://{addr} in {:?}{}",
                config.workers,
                started.elapsed(),
                if !node_nets.is_empty() {
                    "; every node and every pod in a network namespace of its own"
                } else if net.is_routed() {
                    "; every pod in a network namespace of its own"
                } else {
                    ""
                }
            ),
        );
        Ok(Emulator {
            config,
            store,
            addr,
            in_cluster,
            cancel,
            nodes,
            heartbeats,
            agents,
            runtime,
            net,
            node_nets,
            data_plane,
            tasks: Mutex::new(tasks),
            events,
            started,
        })
    }

    pub fn config(&self) -> &EmulatorConfig {
        &self.config
    }

    /// The API server's address (127.0.0.1:PORT).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where pods reach the API server: the `kubernetes` Service's
    /// ClusterIP in a private network ([`KUBERNETES_SERVICE`]), the host
    /// listener on the host's stack. Plain HTTP, like [`Emulator::url`].
    pub fn in_cluster_addr(&self) -> SocketAddr {
        self.in_cluster
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The network the data path runs in (pods, kube-proxies, and what the
    /// caller puts there: the LB, the traffic generator).
    pub fn net(&self) -> &Net {
        &self.net
    }

    /// The network of the pod whose IP is `ip`, when pods have sandboxes
    /// of their own (`NetworkChoice::Pods`) and that pod's is up: its
    /// [`Net::enter_command`] opens a shell where the pod's processes are.
    pub fn pod_network(&self, ip: Ipv4Addr) -> Option<Net> {
        self.runtime.as_ref()?.sandbox_net(ip)
    }

    /// The network namespace of node `name`, when nodes have their own
    /// (`NetworkChoice::Nodes`): its [`Net::enter_command`] opens a shell
    /// where its kube-proxy's rules and its pods' veths are.
    pub fn node_network(&self, name: &str) -> Option<Net> {
        let node = self.nodes.iter().find(|n| n.name == name)?;
        node_net_of(&self.node_nets, node.internal_ip).cloned()
    }

    /// The pids whose network namespaces track connections for the data
    /// path (the cluster's helper, and each node's pause process when
    /// nodes have namespaces of their own): where connection-tracking
    /// failures are counted.
    pub fn tracking_pids(&self) -> Vec<u32> {
        self.net
            .helper_pid()
            .into_iter()
            .chain(self.node_nets.iter().map(|nn| nn.pid()))
            .collect()
    }

    /// The nftables data path, when kube-proxy's rules are real rules.
    pub fn data_plane(&self) -> Option<&DataPlane> {
        self.data_plane.as_ref()
    }

    /// An L4 pass-through LB for `namespace/service` on [`LB_IP`] and the
    /// Service's port, forwarding each new flow to a worker's kube-proxy
    /// rules (`hash`: by a seeded hash of the 5-tuple, else at random);
    /// `None` without the nftables data path. The LB model drives it
    /// ([`zdt_core::net::PassThrough::route_to`]) from its probes.
    pub fn pass_through(
        &self,
        namespace: &str,
        service: &str,
        hash: Option<u32>,
    ) -> Result<Option<Arc<dyn zdt_core::net::PassThrough>>, EmulatorError> {
        let Some(plane) = &self.data_plane else {
            return Ok(None);
        };
        let frontend = self.lb_frontend(namespace, service)?;
        let IpAddr::V4(vip) = frontend.ip() else {
            return Ok(None);
        };
        let nodes = self
            .agents
            .values()
            .filter(|a| !a.control_plane)
            .map(|a| a.name.clone())
            .collect();
        let pick = match hash {
            Some(seed) => dataplane::Pick::Hash(seed),
            None => dataplane::Pick::Random,
        };
        let node_port = self
            .store
            .get(Resource::Services, namespace, service)
            .and_then(|svc| svc["spec"]["ports"][0]["nodePort"].as_u64())
            .and_then(|p| u16::try_from(p).ok());
        Ok(Some(plane.pass_through(
            vip,
            frontend.port(),
            namespace,
            service,
            nodes,
            node_port,
            pick,
        )?))
    }

    /// The object store (tests and in-process tools read it directly).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// When the emulator started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The kube-rs config for the API server (plain HTTP, no auth, default
    /// namespace `default`). kube's defaults apply, including
    /// `default_retry` (429/503/504 retried inside the client).
    pub fn client_config(&self) -> kube::Config {
        let uri: http::Uri = self.url().parse().expect("http://127.0.0.1:PORT is a URI");
        kube::Config::new(uri)
    }

    /// A kube-rs client for the API server, from [`Emulator::client_config`].
    pub fn client(&self) -> Result<kube::Client, EmulatorError> {
        kube::Client::try_from(self.client_config()).map_err(|e| EmulatorError::Client {
            url: self.url(),
            message: e.to_string(),
        })
    }

    /// A kubeconfig document for kubectl (context `zdt-emulator`).
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: zdt-emulator\n  cluster:\n    server: {}\ncontexts:\n- name: zdt-emulator\n  context:\n    cluster: zdt-emulator\n    user: zdt-emulator\n    namespace: default\ncurrent-context: zdt-emulator\nusers:\n- name: zdt-emulator\n  user: {{}}\n",
            self.url()
        )
    }

    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), EmulatorError> {
        std::fs::write(path, self.kubeconfig()).map_err(|source| EmulatorError::Kubeconfig {
            path: path.display().to_string(),
            source,
        })
    }

    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.nodes.clone()
    }

    /// How each worker serves a LoadBalancer service from outside: a dialer
    /// that applies that node's kube-proxy rules, and the address a cloud
    /// LB probes (`healthCheckNodePort` for `Local`, kube-proxy's
    /// `:10256/healthz` for `Cluster`; both answer on `/healthz`).
    pub fn service_backends(
        &self,
        namespace: &str,
        service: &str,
    ) -> Result<Vec<NodeBackend>, EmulatorError> {
        let svc = self
            .store
            .get(Resource::Services, namespace, service)
            .ok_or_else(|| EmulatorError::NoSuchService {
                namespace: namespace.into(),
                name: service.into(),
            })?;
        let port = svc["spec"]["ports"][0]["port"].as_i64().unwrap_or(80) as u16;
        let local = svc["spec"]["externalTrafficPolicy"] == "Local";
        let hc_port = svc["spec"]["healthCheckNodePort"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok());
        let mut backends = Vec::new();
        for agent in self.agents.values().filter(|a| !a.control_plane) {
            let Some(proxy) = &agent.proxy else {
                return Err(EmulatorError::Simulated);
            };
            let health_check = if local {
                proxy
                    .health_check_addr(namespace, service, hc_port)
                    .map_err(|source| EmulatorError::Proxy {
                        node: agent.name.clone(),
                        source,
                    })?
            } else {
                proxy.healthz_addr()
            };
            backends.push(NodeBackend {
                node: agent.name.clone(),
                dialer: proxy.dialer(namespace, service, port),
                health_check,
            });
        }
        Ok(backends)
    }

    /// Where the cloud LB of `namespace/service` listens: [`LB_IP`] and the
    /// Service's port in a private network; a free 127.0.0.1 port on the
    /// host's stack.
    pub fn lb_frontend(&self, namespace: &str, service: &str) -> Result<SocketAddr, EmulatorError> {
        if !self.net.is_private() {
            return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        }
        let svc = self
            .store
            .get(Resource::Services, namespace, service)
            .ok_or_else(|| EmulatorError::NoSuchService {
                namespace: namespace.into(),
                name: service.into(),
            })?;
        let port = svc["spec"]["ports"][0]["port"].as_u64().unwrap_or(80);
        Ok(SocketAddr::from((LB_IP, u16::try_from(port).unwrap_or(80))))
    }

    /// Inject a node fault: the kubelet stops heart-beating (the node goes
    /// NotReady after the node monitor grace period) and stops acting.
    pub fn node_fault(&self, node: &str, fault: NodeFault) -> Result<(), EmulatorError> {
        let agent = self
            .agents
            .get(node)
            .ok_or_else(|| EmulatorError::NoSuchNode(node.into()))?;
        let stopped = fault != NodeFault::Resume;
        if agent.fault(fault) {
            // A rebooted node's fresh kubelet learns its pods again.
            for p in self.store.list(Resource::Pods, None) {
                if p["spec"]["nodeName"] == node {
                    agent.sync(&p);
                }
            }
        }
        if let Ok(mut hb) = self.heartbeats.lock() {
            let entry = hb.entry(node.to_owned()).or_insert(None);
            *entry = if stopped {
                Some(entry.unwrap_or_else(Instant::now))
            } else {
                None
            };
        }
        // The heartbeats live outside the store: wake the node lifecycle
        // controller explicitly, or it sleeps until some other change.
        self.store.wake();
        self.events.emit(
            Source::Node,
            format!("{fault:?}"),
            format!("node/{node}"),
            Some(node),
            format!("node fault injected: {fault:?}"),
        );
        Ok(())
    }

    /// Stop everything (API, controllers, kubelets, kube-proxies; every
    /// pod process is killed) and report the nodes' final state.
    pub async fn shutdown(mut self) -> FinalState {
        let final_state = self.final_state();
        self.cancel.cancel();
        for agent in self.agents.values() {
            agent.shutdown();
        }
        if let Some(rt) = &self.runtime {
            rt.shutdown();
        }
        let tasks: Vec<JoinHandle<()>> = self
            .tasks
            .lock()
            .map(|mut t| t.drain(..).collect())
            .unwrap_or_default();
        for t in tasks {
            let _ = t.await;
        }
        // Deleting a node's veth pair waits for the kernel: off the async
        // threads.
        let node_nets = std::mem::take(&mut self.node_nets);
        if !node_nets.is_empty() {
            let _ = tokio::task::spawn_blocking(move || drop(node_nets)).await;
        }
        final_state
    }

    /// The nodes as the store has them now.
    pub fn final_state(&self) -> FinalState {
        let nodes = self
            .store
            .list(Resource::Nodes, None)
            .into_iter()
            .map(|n| NodeState {
                name: meta_str(&n, "name").unwrap_or("").to_owned(),
                unschedulable: n["spec"]["unschedulable"] == true,
                ready: controllers::condition(&n, "Ready").is_some_and(|c| c["status"] == "True"),
                taints: n["spec"]["taints"].as_array().cloned().unwrap_or_default(),
            })
            .collect();
        FinalState { nodes }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Namespaces, the `kubernetes` Service, and the nodes.
fn bootstrap(store: &Store, nodes: &[NodeInfo], version: KubeVersion) {
    store.write(|st| {
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let _ = st.create(
                Resource::Namespaces,
                json!({"metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
                       "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
            );
        }
        let _ = st.create(
            Resource::Services,
            json!({"metadata": {"name": "kubernetes", "namespace": "default",
                                "labels": {"component": "apiserver", "provider": "kubernetes"}},
                   "spec": {"type": "ClusterIP", "clusterIP": KUBERNETES_SERVICE.ip().to_string(),
                            "clusterIPs": [KUBERNETES_SERVICE.ip().to_string()],
                            "ports": [{"name": "https", "port": KUBERNETES_SERVICE.port(), "protocol": "TCP", "targetPort": 6443}],
                            "sessionAffinity": "None", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                            "internalTrafficPolicy": "Cluster"},
                   "status": {"loadBalancer": {}}}),
        );
        for (i, n) in nodes.iter().enumerate() {
            let _ = st.create(Resource::Nodes, node_object(n, i, version));
        }
    });
}

/// Apply the kubelets' reports to the store: status updates, and removal
/// of pods whose deletion finished.
async fn apply_pod_statuses(
    store: Arc<Store>,
    mut rx: mpsc::UnboundedReceiver<SimStatus>,
    cancel: CancellationToken,
) {
    loop {
        let update = tokio::select! {
            _ = cancel.cancelled() => return,
            u = rx.recv() => match u { Some(u) => u, None => return },
        };
        store.write(|st| {
            let Some(pod) = st.get(Resource::Pods, &update.namespace, &update.name) else {
                return;
            };
            if !update.uid.is_empty() && meta_str(pod, "uid") != Some(update.uid.as_str()) {
                return;
            }
            if update.gone {
                st.remove(Resource::Pods, &update.namespace, &update.name);
                return;
            }
            let mut next = pod.clone();
            let mut status = update.status.clone();
            // The scheduler's condition stays the scheduler's.
            if let Some(sched) = controllers::condition(pod, "PodScheduled").cloned() {
                if let Some(conds) = status["conditions"].as_array_mut() {
                    conds.retain(|c| c["type"] != "PodScheduled");
                    conds.push(sched);
                }
            }
            // qosClass is the API server's, not the kubelet's.
            if status.get("qosClass").is_none_or(Value::is_null) {
                status["qosClass"] = pod["status"]["qosClass"].clone();
            }
            next["status"] = status;
            let _ = st.update(Resource::Pods, next);
        });
    }
}

/// Feed each node agent the pods bound to it, and emit node events
/// (cordon, taints, readiness) as the store changes.
async fn feed_nodes(
    store: Arc<Store>,
    agents: BTreeMap<String, Arc<NodeAgent>>,
    events: EventSink,
    cancel: CancellationToken,
) {
    let mut changed = store.subscribe();
    // Level first: every pod already bound (also after falling behind the
    // history), then the changes.
    let mut last: Option<u64> = None;
    loop {
        let resync = |st: &store::State| -> (Vec<Value>, u64) {
            let pods = st
                .list(Resource::Pods, None)
                .into_iter()
                .filter(|p| p["spec"]["nodeName"].is_string())
                .cloned()
                .collect();
            (pods, st.resource_version())
        };
        let (pods, nodes, now) = store.read(|st| {
            let changes = last.map(|rv| {
                (
                    st.changes_since(Resource::Pods, rv),
                    st.changes_since(Resource::Nodes, rv),
                )
            });
            match changes {
                Some((Ok(p), Ok(n))) => (Ok(p), n, st.resource_version()),
                _ => {
                    let (pods, rv) = resync(st);
                    (Err(pods), Vec::new(), rv)
                }
            }
        });
        last = Some(now);
        let pods = match pods {
            Ok(changes) => changes,
            Err(all) => {
                for p in all {
                    if let Some(agent) = p["spec"]["nodeName"].as_str().and_then(|n| agents.get(n))
                    {
                        agent.sync(&p);
                    }
                }
                Vec::new()
            }
        };
        for c in pods {
            let Some(node) = c.object["spec"]["nodeName"].as_str() else {
                continue;
            };
            let Some(agent) = agents.get(node) else {
                continue;
            };
            if c.kind == ChangeType::Deleted {
                // Removed without the kubelet's say (grace 0, force): kill now.
                let mut pod = (*c.object).clone();
                if pod["metadata"].get("deletionTimestamp").is_none() {
                    pod["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
                }
                pod["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                agent.sync(&pod);
            } else {
                agent.sync(&c.object);
            }
        }
        for c in nodes {
            node_events(&events, &c);
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = changed.changed() => if r.is_err() { return },
        }
    }
}

fn node_events(events: &EventSink, c: &store::Change) {
    let name = meta_str(&c.object, "name").unwrap_or("");
    let Some(prev) = c.prev.as_deref() else {
        return;
    };
    let new = &c.object;
    let emit = |reason: &str, message: String| {
        events.emit(
            Source::Node,
            reason,
            format!("node/{name}"),
            Some(name),
            message,
        )
    };
    let was = prev["spec"]["unschedulable"] == true;
    let is = new["spec"]["unschedulable"] == true;
    if was != is {
        if is {
            emit(
                "NodeNotSchedulable",
                format!("Node {name} status is now: NodeNotSchedulable (cordoned)"),
            );
        } else {
            emit(
                "NodeSchedulable",
                format!("Node {name} status is now: NodeSchedulable (uncordoned)"),
            );
        }
    }
    if prev["spec"]["taints"] != new["spec"]["taints"] {
        let keys: Vec<String> = new["spec"]["taints"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                format!(
                    "{}:{}",
                    t["key"].as_str().unwrap_or(""),
                    t["effect"].as_str().unwrap_or("")
                )
            })
            .collect();
        emit(
            "TaintsChanged",
            format!("Node {name} taints: [{}]", keys.join(", ")),
        );
    }
    let ready = |n: &Value| controllers::condition(n, "Ready").map(|c| c["status"].clone());
    if ready(prev) != ready(new) {
        let status = ready(new)
            .and_then(|s| s.as_str().map(str::to_owned))
            .unwrap_or_default();
        let reason = if status == "True" {
            "NodeReady"
        } else {
            "NodeNotReady"
        };
        emit(
            reason,
            format!("Node {name} Ready condition is now {status}"),
        );
    }
    if c.kind == ChangeType::Deleted {
        emit("RemovingNode", format!("Node {name} was deleted"));
    }
}

/// Feed every kube-proxy the cluster's Services and EndpointSlices, and its
/// node's deletion/taints, whenever they change.
async fn feed_proxies(
    store: Arc<Store>,
    agents: BTreeMap<String, Arc<NodeAgent>>,
    cancel: CancellationToken,
) {
    use k8s_openapi::api::core::v1::{Service, Taint};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let mut changed = store.subscribe();
    let mut last: Option<u64> = None;
    loop {
        let (dirty, now) = store.read(|st| {
            let dirty = match last {
                None => true,
                Some(rv) => [
                    Resource::Services,
                    Resource::EndpointSlices,
                    Resource::Nodes,
                ]
                .iter()
                .any(|r| st.changes_since(*r, rv).map_or(true, |c| !c.is_empty())),
            };
            (dirty, st.resource_version())
        });
        last = Some(now);
        if dirty {
            let (services, slices, nodes) = store.read(|st| {
                let typed =
                    |r: Resource| -> Vec<Value> { st.list(r, None).into_iter().cloned().collect() };
                (
                    typed(Resource::Services),
                    typed(Resource::EndpointSlices),
                    typed(Resource::Nodes),
                )
            });
            let services: Vec<Service> = services
                .into_iter()
                .filter_map(|v| serde_json::from_value(v).ok())
                .collect();
            let slices: Vec<EndpointSlice> = slices
                .into_iter()
                .filter_map(|v| serde_json::from_value(v).ok())
                .collect();
            for agent in agents.values() {
                let Some(proxy) = &agent.proxy else { continue };
                proxy.update(&services, &slices);
                let node = nodes
                    .iter()
                    .find(|n| meta_str(n, "name") == Some(&agent.name));
                let deleting =
                    node.is_none_or(|n| n["metadata"].get("deletionTimestamp").is_some());
                let taints: Vec<Taint> = node
                    .and_then(|n| serde_json::from_value(n["spec"]["taints"].clone()).ok())
                    .unwrap_or_default();
                proxy.set_node_state(deleting, &taints);
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = changed.changed() => if r.is_err() { return },
        }
    }
}
