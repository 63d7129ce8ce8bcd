//! A node of a routed network in a namespace of its own, as a kind node is
//! a container on kind's Docker network. A pause process (forked by the
//! network's helper, as a pod's sandbox is) holds the namespace, which
//! forwards packets; a veth pair joins it to the cluster's namespace:
//!
//! - in the node, `eth0` carries the node's InternalIP as a /32, the
//!   default route goes through the link-local gateway
//!   ([`super::sandbox::GATEWAY`]) on `eth0`, and the node's pod CIDR is a
//!   blackhole (a pod address of this node without a pod drops what is sent
//!   to it, without an answer) except for the /32 routes of its pods'
//!   sandboxes, whose outer veth ends are here;
//! - in the cluster's namespace, the other end (`zn` and the IP in hex)
//!   carries a /32 route to the node and a route to its pod CIDR via it.
//!
//! Neighbour entries are static on both ends, as for sandboxes. Dropping
//! the node deletes the pair and kills the pause process; the pause process
//! is in the cluster's PID namespace, so it also ends with the network
//! however zdt ends.

use std::net::Ipv4Addr;

use super::sandbox::{ip_path, mac, run_ip, Joined, GATEWAY};
use super::{Block, Net, NetError};

/// A node's network namespace, joined to the cluster's by a veth pair. See
/// the module documentation.
pub type NodeNet = Joined;

impl Net {
    /// A new namespace for the node with InternalIP `ip` and pod CIDR
    /// `pods` in this routed network, joined to it by a veth pair; this
    /// namespace's own connections to the node leave from `source` (an
    /// address of this network; else the kernel's choice). Blocks for a few
    /// milliseconds (two `ip` runs).
    pub fn node(
        &self,
        ip: Ipv4Addr,
        pods: Block,
        source: Option<Ipv4Addr>,
    ) -> Result<NodeNet, NetError> {
        let private = match &self.private {
            Some(p) if self.is_routed() && self.pod.is_none() => p,
            _ => return Err(NetError::NotRouted(format!("{self:?}"))),
        };
        let ip_cmd = ip_path().ok_or(NetError::NoIp)?;
        let failed = |message: String| NetError::Node { ip, message };
        let net = self.paused(private, true, failed)?;
        let pid = net.pod.as_ref().map_or(0, |p| p.pid);
        let veth = format!("zn{:08x}", u32::from(ip));
        let src = source.map(|s| format!(" src {s}")).unwrap_or_default();
        let (cluster_mac, node_mac) = (mac(0x6a, ip), mac(0x60, ip));
        let cidr = pods.network();
        let node = Joined {
            net,
            cluster: self.clone(),
            ip,
            veth: veth.clone(),
            ip_cmd,
        };
        let outside = format!(
            "link add {veth} address {cluster_mac} type veth peer name eth0 address {node_mac} netns {pid}\n\
             link set {veth} up\n\
             neigh replace {ip} lladdr {node_mac} dev {veth} nud permanent\n\
             route replace {ip}/32 dev {veth}{src}\n\
             route replace {cidr} via {ip} dev {veth}{src}\n"
        );
        run_ip(&node.ip_cmd, self, &outside).map_err(failed)?;
        let inside = format!(
            "link set lo up\n\
             addr add {ip}/32 dev eth0\n\
             link set eth0 up\n\
             neigh replace {GATEWAY} lladdr {cluster_mac} dev eth0 nud permanent\n\
             route add {GATEWAY} dev eth0 scope link\n\
             route add default via {GATEWAY} dev eth0 src {ip}\n\
             route add blackhole {cidr}\n"
        );
        run_ip(&node.ip_cmd, &node.net, &inside).map_err(failed)?;
        Ok(node)
    }
}

impl Block {
    /// The block as a network, `a.b.c.0/len`.
    pub fn network(&self) -> String {
        let len = self.len.min(32);
        let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        format!("{}/{len}", Ipv4Addr::from(u32::from(self.addr) & mask))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_names_its_network() {
        let b = Block {
            addr: Ipv4Addr::new(10, 244, 2, 7),
            len: 24,
        };
        assert_eq!(b.network(), "10.244.2.0/24");
        let all = Block {
            addr: Ipv4Addr::new(10, 0, 0, 1),
            len: 0,
        };
        assert_eq!(all.network(), "0.0.0.0/0");
    }
}
