//! The nftables text of the data path: one table `ip zdt` in the cluster's
//! namespace. kube-proxy's per-node Service chains (as its nftables mode
//! writes them: DNAT to a random endpoint, drop, or reject), the cloud
//! LBs' pass-through chains (a node per flow, retransmitted SYNs staying
//! on theirs), pods' liveness and stopped nodes as filter rules, and the
//! connection-tracking timeouts that keep the namespace's table small.
//!
//! Every decision a connection can meet sets the packet's mark to the id of
//! that decision and is logged to NFLOG ([`super::nflog`]) exactly once per
//! SYN: drops and rejects where they happen, DNATs after NAT in the filter
//! chain, where a DNAT to a pod IP without a pod is dropped instead.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

pub(crate) const TABLE: &str = "ip zdt";
/// Decision ids start here: marks below are the LB's node indices.
pub(crate) const FIRST_ID: u32 = 1 << 16;
/// The pod network: a connection the rules DNAT to an address here that no
/// pod holds (a sandbox that is gone) is dropped.
const POD_NET: &str = "10.244.0.0/16";
/// How long a cloud LB keeps a flow whose handshake has not completed on
/// the node it chose: longer than any client's SYN retries here.
const FLOW_TIMEOUT: &str = "20s";
/// Flows remembered at once per LB (5000 new connections/s × 20 s fit).
const FLOW_TABLE_SIZE: u32 = 262_144;

/// The prefix of a DNAT to a pod whose IP is gone (the SYN is dropped).
pub(crate) const PREFIX_GONE: &str = "gone";

/// One endpoint a Service chain may DNAT to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub id: u32,
}

/// What a node does with a new connection for one Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// DNAT to one of these, chosen at random (`numgen`).
    To(Vec<Target>),
    /// Drop the SYN (logged with this id).
    Drop(u32),
    /// Answer with a reset (logged with this id).
    Reject(u32),
}

/// The conntrack timeouts of finished connections (see [`table`]).
const TIMEOUTS: &str = "close: 1, time_wait: 1, close_wait: 2, fin_wait: 2, last_ack: 2";

/// Where nodes have namespaces of their own, a connection whose SYN was
/// never answered leaves the table a second after its last SYN, not two
/// minutes after: the LB's DNAT of a SYN the node then dropped is
/// confirmed in the cluster's namespace (the packet left it), and a client
/// port reused after a connect timeout (nothing is sent when a SYN_SENT
/// socket closes) would otherwise meet that binding and go to the old
/// node, which is not the LB's decision for a new flow (new sequence
/// number). A flow's own retransmitted SYNs are kept on their node by the
/// LB's flow table, not by conntrack.
const NODES_TIMEOUTS: &str =
    "syn_sent: 1, close: 1, time_wait: 1, close_wait: 2, fin_wait: 2, last_ack: 2";

/// A connection a node masquerades to a pod on another node keeps its
/// binding through TIME_WAIT for the kernel's default two minutes, as on
/// kind's nodes: the pod holds the node's address and port in TIME_WAIT
/// for 60 s after the pod closed, and a port the node handed out again
/// sooner meets that socket, which rejects the new SYN by its timestamp
/// (PAWS: another client's clock) unless it happens to be newer, so the
/// client resends its SYN a second later. With `time_wait: 1` about 1.5 %
/// of the seed's `Cluster` connections took 1–3 s that way at 5000/s.
const MASQUERADED_TIMEOUTS: &str =
    "syn_sent: 1, close: 1, time_wait: 120, close_wait: 2, fin_wait: 2, last_ack: 2";

/// A new connection DNATed to a pod address no pod holds: logged, dropped.
fn gone_rule(group: u16) -> String {
    format!(
        "ct state new meta mark >= {FIRST_ID} ip daddr {POD_NET} ip daddr != @live log group {group} queue-threshold 1 snaplen 64 prefix \"{PREFIX_GONE}\" drop"
    )
}

/// A new connection DNATed to a pod: logged with its decision.
fn to_rule(group: u16) -> String {
    format!(
        "ct state new meta mark >= {FIRST_ID} log group {group} queue-threshold 1 snaplen 64 prefix \"to\""
    )
}

/// The table: filter and NAT base chains, sets, the timeout policy. In a
/// `routed` network (pods in sandboxes of their own) a pod's packets enter
/// the cluster's namespace from its veth: replies to the clients arrive
/// through input, a pod's own connections through prerouting (and, to
/// another pod, forward), so the same drops, timeouts and NAT apply there.
pub(crate) fn table(group: u16, routed: bool, nodes: bool) -> String {
    let timeouts = if nodes { NODES_TIMEOUTS } else { TIMEOUTS };
    let (gone, to) = (gone_rule(group), to_rule(group));
    // A new connection sent to a stopped node that has a namespace of its
    // own ends here, before the node (whose rules would log it) sees it.
    let down_logged = format!(
        "ct state new meta mark set ip daddr map @down_nodes log group {group} queue-threshold 1 snaplen 64 prefix \"down\" drop"
    );
    let routed_chains = if routed {
        format!(
            "  chain pods_pre {{
    type filter hook prerouting priority filter; policy accept;
    ct state new ct timeout set \"short\"
  }}
  chain pods_in {{
    type filter hook input priority filter; policy accept;
    ip daddr @down drop
    ip saddr @down drop
  }}
  chain pods_through {{
    type filter hook forward priority filter; policy accept;
    {down_logged}
    ip daddr @down drop
    ip saddr @down drop
    {gone}
    {to}
  }}
  chain nat_pre {{
    type nat hook prerouting priority -100; policy accept;
  }}
"
        )
    } else {
        String::new()
    };
    format!(
        "table {TABLE} {{
  # Finished connections leave the namespace's conntrack table in a
  # second instead of TIME_WAIT's two minutes (the host's nf_conntrack_max
  # bounds every namespace's table). Applied where conntrack already has
  # the packet's entry: at filter priority, not raw.
  ct timeout short {{
    protocol tcp; l3proto ip;
    policy = {{ {timeouts} }}
  }}
  set live {{ type ipv4_addr; }}
  set down {{ type ipv4_addr; flags interval; }}
  map down_nodes {{ type ipv4_addr : mark; }}
  chain out {{
    type filter hook output priority filter; policy accept;
    ct state new ct timeout set \"short\"
    {down_logged}
    ip daddr @down drop
    ip saddr @down drop
    {gone}
    {to}
  }}
  chain nat_out {{
    type nat hook output priority -100; policy accept;
  }}
{routed_chains}}}
"
    )
}

/// The table of a node with a namespace of its own (InternalIP `node_ip`),
/// as kube-proxy's nftables mode keeps it there: traffic to a nodePort on
/// the node's address goes to its Service's chain (map `nodeports`, filled
/// by [`node_port`]); a connection DNATed to an endpoint on another node
/// leaves masqueraded as the node to a random port (`fully-random`, as
/// kube-proxy's nftables mode masquerades), so the reply comes back
/// through it, its binding kept through TIME_WAIT (see
/// [`MASQUERADED_TIMEOUTS`]); the
/// `gone`/`to` log rules where the DNATed SYN is forwarded to its pod, and
/// the conntrack timeout policy where the node tracks connections.
pub(crate) fn node_table(group: u16, node_ip: std::net::Ipv4Addr) -> String {
    format!(
        "table {TABLE} {{
  ct timeout short {{
    protocol tcp; l3proto ip;
    policy = {{ {NODES_TIMEOUTS} }}
  }}
  ct timeout masqueraded {{
    protocol tcp; l3proto ip;
    policy = {{ {MASQUERADED_TIMEOUTS} }}
  }}
  set live {{ type ipv4_addr; }}
  map nodeports {{ type inet_service : verdict; }}
  chain pre {{
    type filter hook prerouting priority filter; policy accept;
    ct state new ct timeout set \"short\"
  }}
  chain out {{
    type filter hook output priority filter; policy accept;
    ct state new ct timeout set \"short\"
  }}
  chain nat_pre {{
    type nat hook prerouting priority -100; policy accept;
    ip daddr {node_ip} tcp dport vmap @nodeports
  }}
  chain through {{
    type filter hook forward priority filter; policy accept;
    ct state new ct status dnat oifname \"eth0\" ip daddr {POD_NET} ct timeout set \"masqueraded\"
    {gone}
    {to}
  }}
  chain nat_post {{
    type nat hook postrouting priority 100; policy accept;
    oifname \"eth0\" ct status dnat ip daddr {POD_NET} masquerade fully-random
  }}
}}
",
        gone = gone_rule(group),
        to = to_rule(group),
    )
}

/// Send TCP traffic to the node's `port` to Service chain `chain`.
pub(crate) fn node_port(out: &mut String, port: u16, chain: &str) {
    let _ = writeln!(
        out,
        "add element {TABLE} nodeports {{ {port} : goto {chain} }}"
    );
}

/// Replace chain `chain`'s rules with `verdict` (created if new).
pub(crate) fn service_chain(out: &mut String, chain: &str, verdict: &Verdict, group: u16) {
    let _ = writeln!(out, "add chain {TABLE} {chain}");
    let _ = writeln!(out, "flush chain {TABLE} {chain}");
    let log = format!("log group {group} queue-threshold 1 snaplen 64");
    match verdict {
        Verdict::To(targets) if !targets.is_empty() => {
            let first = targets[0].id;
            let contiguous = targets
                .iter()
                .enumerate()
                .all(|(i, t)| t.id == first + i as u32);
            debug_assert!(contiguous, "ids of one chain are allocated together");
            let map = targets
                .iter()
                .map(|t| format!("{} : {} . {}", t.id, t.ip, t.port))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(
                out,
                "add rule {TABLE} {chain} meta mark set numgen random mod {} offset {first}",
                targets.len()
            );
            let _ = writeln!(
                out,
                "add rule {TABLE} {chain} meta l4proto tcp dnat ip to meta mark map {{ {map} }}"
            );
        }
        Verdict::To(_) => {}
        Verdict::Drop(id) => {
            let _ = writeln!(
                out,
                "add rule {TABLE} {chain} meta mark set {id} {log} prefix \"drop\" drop"
            );
        }
        Verdict::Reject(id) => {
            let _ = writeln!(
                out,
                "add rule {TABLE} {chain} meta l4proto tcp meta mark set {id} {log} prefix \"reject\" reject with tcp reset"
            );
        }
    }
}

/// How a pass-through LB picks a node for a new flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pick {
    Random,
    /// A hash of the 5-tuple, seeded.
    Hash(u32),
}

/// A pass-through LB on `vip:port`: its flow table, its chain (routing new
/// flows to `routed`, node indices into `nodes`), one chain per node that
/// remembers the flow and goes on to that node's Service chain.
pub(crate) struct LbRules<'a> {
    pub name: &'a str,
    pub vip: Ipv4Addr,
    pub port: u16,
    /// Every backend node's Service chain, in backend order.
    pub nodes: &'a [String],
    pub pick: Pick,
    /// Pods have sandboxes of their own: their connections to the LB
    /// arrive through prerouting (see [`table`]).
    pub routed: bool,
    /// Nodes have namespaces of their own: each backend's InternalIP and
    /// the Service's nodePort, which a new flow is DNATed to (as an NLB
    /// with instance targets does), in backend order; `None`: the flow
    /// goes on to the node's Service chain in this table.
    pub instances: Option<&'a [(Ipv4Addr, u16)]>,
}

impl LbRules<'_> {
    fn flows(&self) -> String {
        format!("{}_flows", self.name)
    }

    fn node_chain(&self, i: usize) -> String {
        format!("{}/{}", self.name, i + 1)
    }

    /// The flow table, the per-node chains and the jump from NAT output;
    /// `chain` is then written by [`LbRules::route`].
    pub fn create(&self, out: &mut String) {
        let (name, flows) = (self.name, self.flows());
        let _ = writeln!(
            out,
            "add map {TABLE} {flows} {{ typeof ip saddr . tcp sport . tcp sequence : meta mark; flags timeout; size {FLOW_TABLE_SIZE}; }}"
        );
        let _ = writeln!(out, "add chain {TABLE} {name}");
        for (i, service) in self.nodes.iter().enumerate() {
            let chain = self.node_chain(i);
            let instance = self.instances.and_then(|n| n.get(i));
            if instance.is_none() {
                let _ = writeln!(out, "add chain {TABLE} {service}");
            }
            let _ = writeln!(out, "add chain {TABLE} {chain}");
            let _ = writeln!(out, "flush chain {TABLE} {chain}");
            let _ = writeln!(
                out,
                "add rule {TABLE} {chain} update @{flows} {{ ip saddr . tcp sport . tcp sequence timeout {FLOW_TIMEOUT} : {} }}",
                i + 1
            );
            match instance {
                Some((ip, port)) => {
                    let _ = writeln!(
                        out,
                        "add rule {TABLE} {chain} meta l4proto tcp dnat ip to {ip}:{port}"
                    );
                }
                None => {
                    let _ = writeln!(out, "add rule {TABLE} {chain} goto {service}");
                }
            }
        }
        // Only a SYN opens a flow; a segment of a flow the table lost (a
        // stopped node's connection, mid-stream) finds no LB state and no
        // listener: it is dropped, not answered.
        let hooks: &[&str] = if self.routed {
            &["nat_out", "nat_pre"]
        } else {
            &["nat_out"]
        };
        for hook in hooks {
            let _ = writeln!(
                out,
                "add rule {TABLE} {hook} ip daddr {} tcp dport {} tcp flags & (syn | ack) != syn drop",
                self.vip, self.port
            );
            let _ = writeln!(
                out,
                "add rule {TABLE} {hook} ip daddr {} tcp dport {} goto {name}",
                self.vip, self.port
            );
        }
    }

    /// Rewrite the LB's chain: a retransmitted SYN goes where its flow went;
    /// a new flow to one of `routed` (indices into `nodes`), or — none —
    /// is reset, logged with `reject_id`.
    pub fn route(&self, out: &mut String, routed: &[usize], reject_id: u32, group: u16) {
        let (name, flows) = (self.name, self.flows());
        let _ = writeln!(out, "flush chain {TABLE} {name}");
        let sticky = (0..self.nodes.len())
            .map(|i| format!("{} : goto {}", i + 1, self.node_chain(i)))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            out,
            "add rule {TABLE} {name} meta mark set ip saddr . tcp sport . tcp sequence map @{flows}"
        );
        let _ = writeln!(out, "add rule {TABLE} {name} meta mark vmap {{ {sticky} }}");
        if routed.is_empty() {
            let _ = writeln!(
                out,
                "add rule {TABLE} {name} meta l4proto tcp meta mark set {reject_id} log group {group} queue-threshold 1 snaplen 64 prefix \"lb\" reject with tcp reset"
            );
            return;
        }
        let choice = routed
            .iter()
            .enumerate()
            .map(|(k, &i)| format!("{k} : goto {}", self.node_chain(i)))
            .collect::<Vec<_>>()
            .join(", ");
        let n = routed.len();
        let expr = match self.pick {
            Pick::Random => format!("numgen random mod {n}"),
            Pick::Hash(seed) => {
                format!("jhash ip saddr . tcp sport . ip daddr . tcp dport mod {n} seed {seed:#x}")
            }
        };
        let _ = writeln!(out, "add rule {TABLE} {name} {expr} vmap {{ {choice} }}");
    }
}

/// Add or delete `ip` in the set of addresses pods hold.
pub(crate) fn live(out: &mut String, ip: Ipv4Addr, live: bool) {
    let verb = if live { "add" } else { "delete" };
    let _ = writeln!(out, "{verb} element {TABLE} live {{ {ip} }}");
}

/// Add or delete a stopped node's addresses (its InternalIP and pod CIDR);
/// with `logged` (the id of the node's drop decision: a node with a
/// namespace of its own), a new connection to its InternalIP is logged
/// where it is dropped.
pub(crate) fn down(
    out: &mut String,
    node_ip: Ipv4Addr,
    pod_cidr: &str,
    down: bool,
    logged: Option<u32>,
) {
    let verb = if down { "add" } else { "delete" };
    let _ = writeln!(
        out,
        "{verb} element {TABLE} down {{ {node_ip}, {pod_cidr} }}"
    );
    match (logged, down) {
        (Some(id), true) => {
            let _ = writeln!(out, "add element {TABLE} down_nodes {{ {node_ip} : {id} }}");
        }
        (Some(_), false) => {
            let _ = writeln!(out, "delete element {TABLE} down_nodes {{ {node_ip} }}");
        }
        (None, _) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_routed_table_drops_and_logs_where_pods_packets_enter() {
        let shared = table(1, false, false);
        assert!(!shared.contains("hook input") && !shared.contains("hook prerouting"));
        let routed = table(1, true, false);
        for hook in [
            "hook input",
            "hook forward",
            "hook prerouting priority filter",
        ] {
            assert!(routed.contains(hook), "{hook}: {routed}");
        }
        let fwd = &routed[routed.find("chain pods_through").unwrap()..];
        assert!(
            fwd.contains("ip saddr @down drop") && fwd.contains("prefix \"gone\""),
            "{fwd}"
        );
    }

    #[test]
    fn a_nodes_table_sends_its_node_ports_to_service_chains_and_masquerades_to_other_nodes() {
        let t = node_table(1, Ipv4Addr::new(172, 18, 0, 3));
        assert!(
            t.contains("ip daddr 172.18.0.3 tcp dport vmap @nodeports"),
            "{t}"
        );
        assert!(
            t.contains(
                "oifname \"eth0\" ct status dnat ip daddr 10.244.0.0/16 masquerade fully-random"
            ),
            "{t}"
        );
        let fwd = &t[t.find("chain through").unwrap()..];
        assert!(
            fwd.contains("prefix \"gone\"") && fwd.contains("prefix \"to\""),
            "{fwd}"
        );
        let mut out = String::new();
        node_port(&mut out, 30080, "kp/w1/default/web");
        assert_eq!(
            out,
            "add element ip zdt nodeports { 30080 : goto kp/w1/default/web }\n"
        );
    }

    #[test]
    fn an_lb_in_front_of_node_namespaces_dnats_new_flows_to_the_nodes_node_port() {
        let nodes = vec!["kp/a/ns/s".to_owned(), "kp/b/ns/s".to_owned()];
        let instances = [
            (Ipv4Addr::new(172, 18, 0, 3), 30080),
            (Ipv4Addr::new(172, 18, 0, 4), 30080),
        ];
        let lb = LbRules {
            name: "lb1",
            vip: Ipv4Addr::new(172, 18, 255, 1),
            port: 80,
            nodes: &nodes,
            pick: Pick::Random,
            routed: true,
            instances: Some(&instances),
        };
        let mut out = String::new();
        lb.create(&mut out);
        assert!(
            out.contains("add rule ip zdt lb1/2 meta l4proto tcp dnat ip to 172.18.0.4:30080"),
            "{out}"
        );
        assert!(!out.contains("goto kp/"), "no Service chain here: {out}");
    }

    #[test]
    fn a_service_chain_dnats_to_a_random_endpoint_by_contiguous_ids() {
        let mut out = String::new();
        let t = |ip: [u8; 4], id| Target {
            ip: Ipv4Addr::from(ip),
            port: 80,
            id,
        };
        service_chain(
            &mut out,
            "kp/w1/default/web",
            &Verdict::To(vec![t([10, 244, 1, 2], 70_000), t([10, 244, 1, 3], 70_001)]),
            1,
        );
        assert!(out.contains("numgen random mod 2 offset 70000"), "{out}");
        assert!(
            out.contains("map { 70000 : 10.244.1.2 . 80, 70001 : 10.244.1.3 . 80 }"),
            "{out}"
        );
        let mut out = String::new();
        service_chain(&mut out, "kp/w1/default/web", &Verdict::Drop(9), 1);
        assert!(out.contains("meta mark set 9 log group 1") && out.trim_end().ends_with("drop"));
    }

    #[test]
    fn an_lb_without_routed_nodes_resets_and_keeps_retransmits_sticky() {
        let nodes = vec!["kp/a/ns/s".to_owned(), "kp/b/ns/s".to_owned()];
        let lb = LbRules {
            name: "lb1",
            vip: Ipv4Addr::new(172, 18, 255, 1),
            port: 80,
            nodes: &nodes,
            pick: Pick::Hash(7),
            routed: false,
            instances: None,
        };
        let mut out = String::new();
        lb.route(&mut out, &[1], 5, 1);
        assert!(
            out.contains("vmap { 1 : goto lb1/1, 2 : goto lb1/2 }"),
            "{out}"
        );
        assert!(
            out.contains("mod 1 seed 0x7 vmap { 0 : goto lb1/2 }"),
            "{out}"
        );
        let mut out = String::new();
        lb.route(&mut out, &[], 5, 1);
        assert!(out.contains("reject with tcp reset"), "{out}");
    }
}
