//! The cluster's data path as real netfilter rules, as kube-proxy's
//! nftables mode and an L4 cloud LB make it: programmed with `nft` run in
//! the cluster's network namespace, and every decision a new connection
//! meets read back over NFLOG with the moment it was taken. That record is
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
    net: Net,
    nft: PathBuf,
    /// One `nft` at a time: changes apply in the order they were made.
    apply: Mutex<()>,
    decisions: Mutex<Decisions>,
    records: Mutex<Vec<ConnRecord>>,
    lbs: AtomicU64,
    stop: AtomicBool,
    lost: AtomicU64,
}

/// The nftables data path of one emulated cluster. Cheap to clone; the log
/// reader stops when the last clone goes.
#[derive(Clone)]
pub struct DataPlane {
    shared: Arc<Shared>,
    _reader: Arc<ReaderGuard>,
}

struct ReaderGuard {
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.lock().ok().and_then(|mut t| t.take()) {
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
    /// log; records are stamped on `events`' clock.
    pub fn start(net: &Net, events: &EventSink) -> Result<DataPlane, DataPlaneError> {
        let Some(socket) = net.netfilter_socket() else {
            return Err(DataPlaneError::NotPrivate);
        };
        let nft = nft_path().ok_or(DataPlaneError::NoNft)?;
        let socket = socket.map_err(DataPlaneError::Log)?;
        nflog::bind(&socket, GROUP).map_err(DataPlaneError::Log)?;
        let shared = Arc::new(Shared {
            net: net.clone(),
            nft,
            apply: Mutex::new(()),
            decisions: Mutex::default(),
            records: Mutex::default(),
            lbs: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            lost: AtomicU64::new(0),
        });
        shared.run(&rules::table(GROUP, net.is_routed()))?;
        let clock = events.clock();
        let reader = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("zdt-nflog".into())
                .spawn(move || read_log(&shared, &socket, &clock))
                .map_err(DataPlaneError::Log)?
        };
        Ok(DataPlane {
            _reader: Arc::new(ReaderGuard {
                shared: shared.clone(),
                thread: Mutex::new(Some(reader)),
            }),
            shared,
        })
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

    /// Rewrite Service chains, all in one transaction; returns once the
    /// kernel has them.
    pub(crate) fn program(&self, chains: &[(String, Verdict)]) -> Result<(), DataPlaneError> {
        if chains.is_empty() {
            return Ok(());
        }
        let mut out = String::new();
        for (chain, verdict) in chains {
            rules::service_chain(&mut out, chain, verdict, GROUP);
        }
        self.shared.run(&out)
    }

    /// A pod holds `ip` (or no longer does): packets to and from an address
    /// no pod holds are dropped.
    pub fn set_live(&self, ip: Ipv4Addr, live: bool) -> Result<(), DataPlaneError> {
        let mut out = String::new();
        rules::live(&mut out, ip, live);
        self.shared.run(&out)
    }

    /// A stopped node: every packet to or from its InternalIP and pod CIDR
    /// is dropped (open connections go silent) until it is back.
    pub fn set_down(
        &self,
        node_ip: Ipv4Addr,
        pod_cidr: &str,
        down: bool,
    ) -> Result<(), DataPlaneError> {
        let mut out = String::new();
        rules::down(&mut out, node_ip, pod_cidr, down);
        self.shared.run(&out)
    }

    /// A pass-through LB on `vip:port` in front of Service `ns/name` on
    /// `nodes` (the LB's backend names, nodes of this cluster).
    pub(crate) fn pass_through(
        &self,
        vip: Ipv4Addr,
        port: u16,
        namespace: &str,
        name: &str,
        nodes: Vec<String>,
        pick: Pick,
    ) -> Result<Arc<dyn PassThrough>, DataPlaneError> {
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
        };
        let mut out = String::new();
        let rules = lb.rules();
        rules.create(&mut out);
        // Until the LB's probes say otherwise, nothing is routed.
        rules.route(&mut out, &[], lb.reject_id, GROUP);
        self.shared.run(&out)?;
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

    /// The table as `nft list` prints it, for tests and debugging.
    pub fn list(&self) -> Result<String, DataPlaneError> {
        self.shared.output(&["list", "table", "ip", "zdt"], "")
    }

    /// Run `nft ARGS` in the cluster's namespace (tests read counters and
    /// maps with it).
    pub fn nft(&self, args: &[&str]) -> Result<String, DataPlaneError> {
        self.shared.output(args, "")
    }
}

impl Shared {
    /// `nft -f -` with `script`, in the namespace; returns once it applied.
    fn run(&self, script: &str) -> Result<(), DataPlaneError> {
        self.output(&["-f", "-"], script).map(drop)
    }

    fn output(&self, args: &[&str], stdin: &str) -> Result<String, DataPlaneError> {
        let _one = self.apply.lock().unwrap_or_else(|e| e.into_inner());
        self.net
            .run_tool(&self.nft, args, stdin)
            .map_err(|e| match e {
                ToolError::Run(message) => DataPlaneError::Nft(message),
                ToolError::Failed(stderr) => DataPlaneError::Nft(format!(
                    "{stderr}\n{}",
                    stdin.lines().take(40).collect::<Vec<_>>().join("\n")
                )),
            })
    }
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
        self.plane.shared.run(&out).map_err(io::Error::other)?;
        *current = Some(routed);
        Ok(())
    }

    fn connections(&self) -> Vec<ConnRecord> {
        self.plane.take_records()
    }
}
