//! A pod's sandbox in a routed network: what Kubernetes' pause container
//! and CNI plugin make. A pause process (forked by the network's helper)
//! holds a network namespace of its own; a veth pair joins it to the
//! cluster's namespace:
//!
//! - in the sandbox, `eth0` carries the pod's IP as a /32, and the default
//!   route goes through a link-local gateway ([`GATEWAY`]) on `eth0`;
//! - in the cluster's namespace, the other end (`zp` and the IP in hex)
//!   carries a /32 route to the pod, from the node's InternalIP.
//!
//! Both ends' neighbour entries are static (the MACs are made from the pod
//! IP), so no ARP and no sysctl is involved — the layout Calico uses. The
//! links are configured with `ip` joined to each namespace, as `nft` is.
//!
//! Dropping the sandbox deletes the veth pair and kills the pause process:
//! the namespace ends once no process of the pod is left in it. The pause
//! process is in the cluster's PID namespace, so it also ends with the
//! network however zdt ends.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use std::sync::Arc;

use super::{Net, NetError, Sources, ToolError};

/// What [`Net::join`] makes: a veth pair named `veth` outside, `eth0`
/// inside, with MACs tagged `tags` (outside, inside) and made from `ip`,
/// which is the inside's address and routed to it (from `source`); then
/// the `ip` commands `outside` and `inside` (each line ending in `\n`).
pub(super) struct Pair {
    /// A node's namespace (it forwards), not a pod's.
    pub node: bool,
    pub ip: Ipv4Addr,
    pub veth: String,
    pub tags: (u8, u8),
    pub source: Option<Ipv4Addr>,
    pub outside: String,
    pub inside: String,
}

/// The pods' gateway: link-local, answered by the cluster end's static
/// neighbour entry (nothing holds the address).
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// The pause process holding a sandbox's namespace.
pub(super) struct PodNs {
    pub pid: libc::pid_t,
    pub net_ns: OwnedFd,
    pidfd: Option<OwnedFd>,
    /// A node's namespace ([`super::NodeNet`]), not a pod's.
    pub node: bool,
}

impl PodNs {
    /// SIGKILL the pause process (again: harmless once it is gone).
    pub(super) fn kill(&self) {
        if let Some(pidfd) = &self.pidfd {
            kill(pidfd);
        }
    }
}

/// SIGKILL through a pidfd, which names its process even if the pid was
/// reused meanwhile.
fn kill(pidfd: &OwnedFd) {
    // SAFETY: signalling through our own pidfd.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        );
    }
}

impl Drop for PodNs {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A namespace held by a pause process, joined to another by a veth pair:
/// a pod's sandbox (see the module documentation) or a node
/// ([`super::NodeNet`]). Dropping it deletes the pair and kills the pause
/// process.
pub struct Joined {
    pub(super) net: Net,
    /// Where the outer veth end is.
    pub(super) cluster: Net,
    pub(super) ip: Ipv4Addr,
    pub(super) veth: String,
    pub(super) ip_cmd: PathBuf,
}

/// A pod's network namespace, joined to the cluster's (or its node's) by a
/// veth pair. See the module documentation.
pub type Sandbox = Joined;

impl std::fmt::Debug for Joined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Joined")
            .field("ip", &self.ip)
            .field("veth", &self.veth)
            .field("net", &self.net)
            .finish()
    }
}

impl Joined {
    /// The namespace's network: sockets made with it, and processes that
    /// join it ([`Net::join_before_exec`]), are the pod's (the node's).
    pub fn net(&self) -> &Net {
        &self.net
    }

    /// The pod's IP (the node's InternalIP), on the namespace's `eth0`.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The veth end outside: in the cluster's namespace (a pod's on a
    /// node with a namespace of its own: in the node's).
    pub fn veth(&self) -> &str {
        &self.veth
    }

    /// The pause process's pid.
    pub fn pid(&self) -> u32 {
        self.net.pod.as_ref().map_or(0, |p| p.pid as u32)
    }
}

impl Drop for Joined {
    fn drop(&mut self) {
        // Deleting one end deletes the pair and the route now. Should it
        // fail, the namespace's own teardown (once the pause process and
        // the processes in it are gone) deletes them a moment later.
        let script = format!("link del {}\n", self.veth);
        let _ = run_ip(&self.ip_cmd, &self.cluster, &script);
        if let Some(pod) = &self.net.pod {
            pod.kill();
        }
    }
}

impl Net {
    /// A new pause process's network namespace, as a pod (or, `node`, a
    /// node) network of this one; `failed` words the helper's failure.
    pub(super) fn paused(
        &self,
        private: &super::Private,
        node: bool,
        failed: impl Fn(String) -> NetError,
    ) -> Result<Net, NetError> {
        let pid = private
            .helper
            .pause(node)
            .map_err(|e| failed(format!("the pause process did not start: {e}")))?;
        // SAFETY: pidfd_open on a pid; the result is a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let pidfd = (fd >= 0).then(|| {
            // SAFETY: a fresh descriptor that nothing else owns.
            unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
        });
        let path = format!("/proc/{pid}/ns/net");
        let net_ns = match std::fs::File::open(&path) {
            Ok(f) => OwnedFd::from(f),
            Err(source) => {
                if let Some(pidfd) = &pidfd {
                    kill(pidfd);
                }
                return Err(NetError::OpenNs { path, source });
            }
        };
        Ok(Net {
            private: self.private.clone(),
            pod: Some(Arc::new(PodNs {
                pid,
                net_ns,
                pidfd,
                node,
            })),
            sources: Arc::new(Sources::default()),
        })
    }

    /// A new sandbox for the pod with address `ip` in this routed network
    /// (the cluster's, or a node's: [`Net::node`]), this namespace's own
    /// connections to it leaving from `source` (the node's InternalIP, an
    /// address of this network; else the kernel's choice). Blocks for a
    /// few milliseconds (two `ip` runs).
    pub fn sandbox(&self, ip: Ipv4Addr, source: Option<Ipv4Addr>) -> Result<Sandbox, NetError> {
        let private = match &self.private {
            Some(p) if self.is_routed() && (self.pod.is_none() || self.is_node()) => p,
            _ => return Err(NetError::NotRouted(format!("{self:?}"))),
        };
        let failed = |message: String| NetError::Sandbox { ip, message };
        let pair = Pair {
            node: false,
            ip,
            veth: veth_name(ip),
            tags: (0x7a, 0x70),
            source,
            outside: String::new(),
            inside: String::new(),
        };
        self.join(private, pair, failed)
    }

    /// A new pause process's namespace joined to this one by the veth
    /// pair `pair` describes (see [`Pair`]). Blocks for a few milliseconds
    /// (two `ip` runs).
    pub(super) fn join(
        &self,
        private: &super::Private,
        pair: Pair,
        failed: impl Fn(String) -> NetError + Copy,
    ) -> Result<Joined, NetError> {
        let ip_cmd = ip_path().ok_or(NetError::NoIp)?;
        let net = self.paused(private, pair.node, failed)?;
        let pid = net.pod.as_ref().map_or(0, |p| p.pid);
        let Pair { ip, veth, .. } = &pair;
        let src = pair.source.map(|s| format!(" src {s}")).unwrap_or_default();
        let (outer_mac, inner_mac) = (mac(pair.tags.0, *ip), mac(pair.tags.1, *ip));
        let joined = Joined {
            net,
            cluster: self.clone(),
            ip: *ip,
            veth: veth.clone(),
            ip_cmd,
        };
        // The pair, created here with its peer moved into the new namespace.
        let outside = format!(
            "link add {veth} address {outer_mac} type veth peer name eth0 address {inner_mac} netns {pid}\n\
             link set {veth} up\n\
             neigh replace {ip} lladdr {inner_mac} dev {veth} nud permanent\n\
             route replace {ip}/32 dev {veth}{src}\n{}",
            pair.outside
        );
        run_ip(&joined.ip_cmd, self, &outside).map_err(failed)?;
        let inside = format!(
            "link set lo up\n\
             addr add {ip}/32 dev eth0\n\
             link set eth0 up\n\
             neigh replace {GATEWAY} lladdr {outer_mac} dev eth0 nud permanent\n\
             route add {GATEWAY} dev eth0 scope link\n\
             route add default via {GATEWAY} dev eth0 src {ip}\n{}",
            pair.inside
        );
        run_ip(&joined.ip_cmd, &joined.net, &inside).map_err(failed)?;
        Ok(joined)
    }

    /// The sink for `pods`: a namespace behind a veth pair that takes
    /// every packet routed there and, forwarding nothing and holding no
    /// address, drops it without an answer.
    pub(super) fn sink(&self, pods: super::Block) -> Result<PodNs, NetError> {
        let Some(private) = &self.private else {
            return Err(NetError::NotRouted(format!("{self:?}")));
        };
        let ip_cmd = ip_path().ok_or(NetError::NoIp)?;
        let failed = |message: String| NetError::Sandbox {
            ip: pods.addr,
            message: format!("the sink for pod addresses without a pod: {message}"),
        };
        let sink = self.paused(private, false, failed)?;
        let pid = sink.pod.as_ref().map_or(0, |p| p.pid);
        let (outside_mac, inside_mac) = (mac(0x7a, GATEWAY), mac(0x70, GATEWAY));
        let net = pods.network();
        let outside = format!(
            "link add zpsink address {outside_mac} type veth peer name eth0 address {inside_mac} netns {pid}\n\
             link set zpsink up\n\
             neigh replace {GATEWAY} lladdr {inside_mac} dev zpsink nud permanent\n\
             route replace {net} via {GATEWAY} dev zpsink onlink\n"
        );
        run_ip(&ip_cmd, self, &outside).map_err(failed)?;
        run_ip(&ip_cmd, &sink, "link set eth0 up\n").map_err(failed)?;
        let pod = sink.pod.expect("made above");
        Arc::try_unwrap(pod).map_err(|_| failed("the sink's namespace is still shared".into()))
    }
}

/// The cluster end's name: `zp` and the pod IP in hex (15 bytes at most).
fn veth_name(ip: Ipv4Addr) -> String {
    format!("zp{:08x}", u32::from(ip))
}

/// A locally administered MAC: 02, `tag`, then the pod IP.
pub(super) fn mac(tag: u8, ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!(
        "02:{tag:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        o[0], o[1], o[2], o[3]
    )
}

/// Where `ip` is, if installed.
pub(super) fn ip_path() -> Option<PathBuf> {
    crate::process::system_tool("ip")
}

/// `ip -batch -` with `script`, joined to `net`; the first failing line
/// ends it with its error.
pub(super) fn run_ip(ip: &Path, net: &Net, script: &str) -> Result<(), String> {
    net.run_tool(ip, &["-batch", "-"], script)
        .map(drop)
        .map_err(|e| match e {
            ToolError::Run(message) => message,
            ToolError::Failed(stderr) => format!("ip failed: {stderr}\n{}", script.trim_end()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_macs_come_from_the_pod_ip() {
        let ip = Ipv4Addr::new(10, 244, 255, 254);
        let name = veth_name(ip);
        assert_eq!(name, "zp0af4fffe");
        assert!(name.len() < 16, "IFNAMSIZ");
        assert_eq!(mac(0x7a, ip), "02:7a:0a:f4:ff:fe");
        assert_ne!(mac(0x7a, ip), mac(0x70, ip));
    }
}
