//! The cluster's data path as real netfilter rules, as kube-proxy's
//! nftables mode and an L4 cloud LB make it: programmed with `nft` run in
//! the cluster's network namespace — and, for nodes with namespaces of
//! their own ([`DataPlane::add_node`]), kube-proxy's in each node's — and
//! every decision a new connection meets read back over NFLOG, in every
//! namespace that decides, with the moment it was taken. That record is
//! the run's provenance ([`ConnRecord`]) for connections no process of zdt
//! touches.
//!
//! Used when the cluster has a network namespace of its own and `nft` is
//! installed; otherwise (and for the proxying LB profile) the user-space
//! data path of [`crate::node::kube_proxy`] and the LB model serve.

mod nflog;
pub(crate) mod rules;

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use zdt_core::events::EventSink;
use zdt_core::net::PassThrough;
use zdt_core::netns::{Net, ToolError};
use zdt_core::provenance::{ConnRecord, Fate, Provenance};

pub(crate) use rules::{Pick, Target, Verdict};

/// The NFLOG group the rules log to (groups are per namespace).
const GROUP: u16 = 1;

/// Why the nftables data path could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataPlaneError {
    #[error("`nft` (nftables) is not installed: looked in PATH, /usr/sbin and /sbin")]
    NoNft,
    #[error("the emulated cluster has no network namespace of its own (the host's stack has no room for its rules)")]
    NotPrivate,
    #[error("pods in network namespaces of their own (ZDT_NETWORK=pods) need the nftables data path, not user space")]
    NeedsRules,
    #[error("nft failed: {0}")]
    Nft(String),
    #[error("cannot read the data path's log (NFLOG): {0}")]
    Log(io::Error),
    #[error("Service {namespace}/{name} has no nodePort for the LB to send flows to its nodes' namespaces (type LoadBalancer or NodePort)")]
    NoNodePort { namespace: String, name: String },
}

/// Who decided what, by decision id (the packet mark its rule sets).
#[derive(Default)]
struct Decisions {
    by_id: Vec<Provenance>,
    ids: HashMap<Provenance, u32>,
}

impl Decisions {
    fn id(&mut self, p: Provenance) -> u32 {
        if let Some(id) = self.ids.get(&p) {
            return *id;
        }
        self.push(p)
    }

    fn push(&mut self, p: Provenance) -> u32 {
        let id = rules::FIRST_ID + self.by_id.len() as u32;
        self.by_id.push(p.clone());
        self.ids.insert(p, id);
        id
    }

    fn get(&self, id: u32) -> Option<&Provenance> {
        self.by_id.get(id.checked_sub(rules::FIRST_ID)? as usize)
    }
}

struct Shared {
    /// The cluster's namespace: the LBs' rules (and, for nodes without a
    /// namespace of their own, kube-proxy's).
    net: Net,
    /// Nodes with namespaces of their own, by name: kube-proxy's rules.
    nodes: std::sync::RwLock<HashMap<String, NodeNs>>,
    clock: zdt_core::clock::Clock,
    nft: PathBuf,
    /// One `nft` at a time: changes apply in the order they were made.
    apply: Mutex<()>,
    decisions: Mutex<Decisions>,
    records: Mutex<Vec<ConnRecord>>,
    lbs: AtomicU64,
    stop: AtomicBool,
    lost: AtomicU64,
}

/// A node's namespace, where its kube-proxy's rules are.
#[derive(Clone)]
struct NodeNs {
    net: Net,
    ip: Ipv4Addr,
}

/// The nftables data path of one emulated cluster. Cheap to clone; the log
/// readers stop when the last clone goes.
#[derive(Clone)]
pub struct DataPlane {
    shared: Arc<Shared>,
    _reader: Arc<ReaderGuard>,
}

struct ReaderGuard {
    shared: Arc<Shared>,
    /// One reader per namespace whose rules log.
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        let threads = self
            .threads
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        for t in threads {
            let _ = t.join();
        }
    }
}

/// Where `nft` is, if installed.
pub fn nft_path() -> Option<PathBuf> {
    zdt_core::process::system_tool("nft")
}

impl DataPlane {
    /// Load the table into `net` (a private network) and start reading its
    /// log; records are stamped on `events`' clock. `nodes`: nodes will have
    /// namespaces of their own ([`DataPlane::add_node`]).
    pub fn start(net: &Net, events: &EventSink, nodes: bool) -> Result<DataPlane, DataPlaneError> {
        let socket = log_socket(net)?;
        let nft = nft_path().ok_or(DataPlaneError::NoNft)?;
        let shared = Arc::new(Shared {
            net: net.clone(),
            nodes: std::sync::RwLock::default(),
            clock: events.clock(),
            nft,
            apply: Mutex::new(()),
            decisions: Mutex::default(),
            records: Mutex::default(),
            lbs: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            lost: AtomicU64::new(0),
        });
        shared.run(&shared.net, &rules::table(GROUP, net.is_routed(), nodes))?;
        let reader = spawn_reader(&shared, socket)?;
        Ok(DataPlane {
            _reader: Arc::new(ReaderGuard {
                shared: shared.clone(),
                threads: Mutex::new(vec![reader]),
            }),
            shared,
        })
    }

    /// Node `name` (InternalIP `ip`) has a namespace of its own, `net`:
    /// its kube-proxy's rules go there from now on, and their log is read
    /// there. A pass-through LB made afterwards DNATs flows to it.
    pub fn add_node(&self, name: &str, net: &Net, ip: Ipv4Addr) -> Result<(), DataPlaneError> {
        let socket = log_socket(net)?;
        self.shared.run(net, &rules::node_table(GROUP, ip))?;
        let reader = spawn_reader(&self.shared, socket)?;
        self._reader
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(reader);
        self.shared
            .nodes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                name.to_owned(),
                NodeNs {
                    net: net.clone(),
                    ip,
                },
            );
        Ok(())
    }

    /// True when nodes have namespaces of their own ([`DataPlane::add_node`]).
    pub fn has_node_namespaces(&self) -> bool {
        !self.shared.nodes_read().is_empty()
    }

    /// The chain kube-proxy on `node` keeps for Service `ns/name`.
    pub fn service_chain(node: &str, namespace: &str, name: &str) -> String {
        format!("kp/{node}/{namespace}/{name}")
    }

    /// The id a decision is logged with.
    pub(crate) fn decision(&self, p: Provenance) -> u32 {
        self.shared.decisions.lock().expect("decisions lock").id(p)
    }

    /// Ids for DNATs to `pods` from `node`, contiguous (the rule picks one
    /// by a random offset).
    pub(crate) fn targets(
        &self,
        node: &str,
        pods: &[(Ipv4Addr, u16, Option<String>)],
    ) -> Vec<Target> {
        let mut d = self.shared.decisions.lock().expect("decisions lock");
        pods.iter()
            .map(|(ip, port, pod)| Target {
                ip: *ip,
                port: *port,
                id: d.push(Provenance {
                    node: Some(node.to_owned()),
                    pod: pod.clone(),
                    fate: Fate::Connected,
                }),
            })
            .collect()
    }

    /// Rewrite `node`'s Service chains, all in one transaction, and —
    /// in a node's namespace — send its nodePorts (port, chain) to them;
    /// returns once the kernel has them.
    pub(crate) fn program(
        &self,
        node: &str,
        chains: &[(String, Verdict)],
        node_ports: &[(u16, String)],
    ) -> Result<(), DataPlaneError> {
        if chains.is_empty() {
            return Ok(());
        }
        let mut out = String::new();
        for (chain, verdict) in chains {
            rules::service_chain(&mut out, chain, verdict, GROUP);
        }
        let own = self.shared.nodes_read().get(node).cloned();
        match own {
            Some(ns) => {
                for (port, chain) in node_ports {
                    rules::node_port(&mut out, *port, chain);
                }
                self.shared.run(&ns.net, &out)
            }
            None => self.shared.run(&self.shared.net, &out),
        }
    }

    /// A pod holds `ip` (or no longer does): new connections DNATed to an
    /// address no pod holds are dropped, wherever the DNAT happens (the
    /// nodes' namespaces, else the cluster's).
    pub fn set_live(&self, ip: Ipv4Addr, live: bool) -> Result<(), DataPlaneError> {
        let mut out = String::new();
        rules::live(&mut out, ip, live);
        let nodes: Vec<NodeNs> = self.shared.nodes_read().values().cloned().collect();
        if nodes.is_empty() {
            return self.shared.run(&self.shared.net, &out);
        }
        nodes
            .iter()
            .try_for_each(|ns| self.shared.run(&ns.net, &out))
    }

    /// A stopped node: every packet to or from its InternalIP and pod CIDR
    /// is dropped in the cluster's namespace (open connections go silent)
    /// until it is back. A new connection an LB sends to `node` with a
    /// namespace of its own is recorded as that node's drop there.
    pub fn set_down(
        &self,
        node: &str,
        node_ip: Ipv4Addr,
        pod_cidr: &str,
        down: bool,
    ) -> Result<(), DataPlaneError> {
        let own = self.shared.nodes_read().contains_key(node);
        let logged = own.then(|| {
            self.decision(Provenance {
                node: Some(node.to_owned()),
                pod: None,
                fate: Fate::Dropped,
            })
        });
        let mut out = String::new();
        rules::down(&mut out, node_ip, pod_cidr, down, logged);
        self.shared.run(&self.shared.net, &out)
    }

    /// A pass-through LB on `vip:port` in front of Service `ns/name` on
    /// `nodes` (the LB's backend names, nodes of this cluster); where nodes
    /// have namespaces of their own, it DNATs each new flow to the chosen
    /// node's `node_port`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn pass_through(
        &self,
        vip: Ipv4Addr,
        port: u16,
        namespace: &str,
        name: &str,
        nodes: Vec<String>,
        node_port: Option<u16>,
        pick: Pick,
    ) -> Result<Arc<dyn PassThrough>, DataPlaneError> {
        let instances = if self.has_node_namespaces() {
            let Some(node_port) = node_port else {
                return Err(DataPlaneError::NoNodePort {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                });
            };
            let own = self.shared.nodes_read();
            let ips: Option<Vec<(Ipv4Addr, u16)>> = nodes
                .iter()
                .map(|n| own.get(n).map(|ns| (ns.ip, node_port)))
                .collect();
            Some(ips.ok_or(DataPlaneError::NotPrivate)?)
        } else {
            None
        };
        let n = self.shared.lbs.fetch_add(1, Ordering::Relaxed) + 1;
        let lb = Lb {
            plane: self.clone(),
            name: format!("lb{n}"),
            vip,
            port,
            chains: nodes
                .iter()
                .map(|node| DataPlane::service_chain(node, namespace, name))
                .collect(),
            nodes,
            pick,
            reject_id: self.decision(Provenance {
                node: None,
                pod: None,
                fate: Fate::Rejected,
            }),
            routed: Mutex::new(None),
            instances,
        };
        let mut out = String::new();
        let rules = lb.rules();
        rules.create(&mut out);
        // Until the LB's probes say otherwise, nothing is routed.
        rules.route(&mut out, &[], lb.reject_id, GROUP);
        self.shared.run(&self.shared.net, &out)?;
        Ok(Arc::new(lb))
    }

    /// Every decision logged so far, taken.
    pub fn take_records(&self) -> Vec<ConnRecord> {
        std::mem::take(&mut *self.shared.records.lock().expect("records lock"))
    }

    /// Log messages the kernel could not deliver (the reader fell behind).
    pub fn lost(&self) -> u64 {
        self.shared.lost.load(Ordering::Relaxed)
    }

    /// The table as `nft list` prints it, for tests and debugging: the
    /// cluster's namespace's, then every node namespace's.
    pub fn list(&self) -> Result<String, DataPlaneError> {
        let args = ["list", "table", "ip", "zdt"];
        let mut out = self.shared.output(&self.shared.net, &args, "")?;
        let nodes: Vec<(String, NodeNs)> = self
            .shared
            .nodes_read()
            .iter()
            .map(|(n, ns)| (n.clone(), ns.clone()))
            .collect();
        for (name, ns) in nodes {
            out.push_str(&format!("# node {name}\n"));
            out.push_str(&self.shared.output(&ns.net, &args, "")?);
        }
        Ok(out)
    }

    /// Run `nft ARGS` in the cluster's namespace (tests read counters and
    /// maps with it).
    pub fn nft(&self, args: &[&str]) -> Result<String, DataPlaneError> {
        self.shared.output(&self.shared.net, args, "")
    }
}

impl Shared {
    fn nodes_read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, NodeNs>> {
        self.nodes.read().unwrap_or_else(|e| e.into_inner())
    }

    /// `nft -f -` with `script`, in `net`; returns once it applied.
    fn run(&self, net: &Net, script: &str) -> Result<(), DataPlaneError> {
        self.output(net, &["-f", "-"], script).map(drop)
    }

    fn output(&self, net: &Net, args: &[&str], stdin: &str) -> Result<String, DataPlaneError> {
        let _one = self.apply.lock().unwrap_or_else(|e| e.into_inner());
        net.run_tool(&self.nft, args, stdin).map_err(|e| match e {
            ToolError::Run(message) => DataPlaneError::Nft(message),
            ToolError::Failed(stderr) => DataPlaneError::Nft(format!(
                "{stderr}\n{}",
                stdin.lines().take(40).collect::<Vec<_>>().join("\n")
            )),
        })
    }
}

/// A netlink socket in `net` bound to the rules' log group.
fn log_socket(net: &Net) -> Result<std::os::fd::OwnedFd, DataPlaneError> {
    let socket = net
        .netfilter_socket()
        .ok_or(DataPlaneError::NotPrivate)?
        .map_err(DataPlaneError::Log)?;
    nflog::bind(&socket, GROUP).map_err(DataPlaneError::Log)?;
    Ok(socket)
}

/// A reader of one namespace's log (see [`read_log`]).
fn spawn_reader(
    shared: &Arc<Shared>,
    socket: std::os::fd::OwnedFd,
) -> Result<std::thread::JoinHandle<()>, DataPlaneError> {
    let shared = shared.clone();
    std::thread::Builder::new()
        .name("zdt-nflog".into())
        .spawn(move || read_log(&shared, &socket, &shared.clock))
        .map_err(DataPlaneError::Log)
}

/// The reader: one record per decision a SYN met, stamped when read. A
/// retransmitted SYN that meets the same decision as its first is not
/// recorded again, so a connection's record has the moment of its first
/// SYN.
fn read_log(shared: &Shared, socket: &std::os::fd::OwnedFd, clock: &zdt_core::clock::Clock) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut last: HashMap<SocketAddr, (u32, Provenance)> = HashMap::new();
    let mut said = false;
    while !shared.stop.load(Ordering::Acquire) {
        let n = match nflog::recv(socket, &mut buf) {
            Ok(0) => continue,
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                shared.lost.fetch_add(1, Ordering::Relaxed);
                if !said {
                    said = true;
                    tracing::warn!(
                        "the data path's log overflowed: some connections have no record"
                    );
                }
                continue;
            }
            Err(e) => {
                tracing::warn!("the data path's log stopped: {e}");
                return;
            }
        };
        let at = clock.now();
        let logged = nflog::parse(&buf[..n]);
        if logged.is_empty() {
            continue;
        }
        let decisions = shared.decisions.lock().expect("decisions lock");
        let mut records = shared.records.lock().expect("records lock");
        for l in logged {
            let Some(p) = decisions.get(l.mark) else {
                continue;
            };
            let mut p = p.clone();
            if l.prefix == rules::PREFIX_GONE {
                // DNATed to a pod IP no pod holds: the SYN goes unanswered.
                p.fate = Fate::Dropped;
            }
            if last
                .get(&l.source)
                .is_some_and(|(seq, q)| *seq == l.seq && *q == p)
            {
                continue;
            }
            last.insert(l.source, (l.seq, p.clone()));
            records.push(ConnRecord {
                client: l.source,
                at,
                provenance: p,
            });
        }
    }
}

/// One pass-through LB's rules.
struct Lb {
    plane: DataPlane,
    name: String,
    vip: Ipv4Addr,
    port: u16,
    nodes: Vec<String>,
    chains: Vec<String>,
    pick: Pick,
    reject_id: u32,
    routed: Mutex<Option<Vec<usize>>>,
    /// The nodes' InternalIPs and nodePort, where nodes have namespaces.
    instances: Option<Vec<(Ipv4Addr, u16)>>,
}

impl Lb {
    fn rules(&self) -> rules::LbRules<'_> {
        rules::LbRules {
            name: &self.name,
            vip: self.vip,
            port: self.port,
            nodes: &self.chains,
            pick: self.pick,
            routed: self.plane.shared.net.is_routed(),
            instances: self.instances.as_deref(),
        }
    }
}

impl PassThrough for Lb {
    fn route_to(&self, backends: &[String]) -> io::Result<()> {
        let routed: Vec<usize> = backends
            .iter()
            .filter_map(|b| self.nodes.iter().position(|n| n == b))
            .collect();
        let mut current = self.routed.lock().unwrap_or_else(|e| e.into_inner());
        if current.as_ref() == Some(&routed) {
            return Ok(());
        }
        let mut out = String::new();
        self.rules().route(&mut out, &routed, self.reject_id, GROUP);
        let shared = &self.plane.shared;
        shared.run(&shared.net, &out).map_err(io::Error::other)?;
        *current = Some(routed);
        Ok(())
    }

    fn connections(&self) -> Vec<ConnRecord> {
        self.plane.take_records()
    }
}
