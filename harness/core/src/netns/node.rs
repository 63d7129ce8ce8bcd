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

use super::sandbox::{Joined, Pair};
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
        let failed = |message: String| NetError::Node { ip, message };
        let cidr = pods.network();
        let src = source.map(|s| format!(" src {s}")).unwrap_or_default();
        let veth = format!("zn{:08x}", u32::from(ip));
        let pair = Pair {
            node: true,
            ip,
            tags: (0x6a, 0x60),
            source,
            outside: format!("route replace {cidr} via {ip} dev {veth}{src}\n"),
            inside: format!("route add blackhole {cidr}\n"),
            veth,
        };
        self.join(private, pair, failed)
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
