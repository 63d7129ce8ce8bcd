//! Nodes in network namespaces of their own (`NetworkChoice::Nodes`):
//! kube-proxy's rules are in each node's namespace, not the cluster's, the
//! node's InternalIP is an address there only, and a Cluster-policy
//! connection sent to a node without the pod is DNATed there to the pod on
//! the other node and masqueraded as the node, so its reply comes back the
//! way it went. Without namespaces, `nft` or `ip` each test says why and
//! returns.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use zdt_emulator::{DataPathChoice, EmulatorConfig, NetworkChoice, RuntimeChoice};
use zdt_lb::Forwarding;

use super::emulator_packet_rules::{
    header, request, served_within, setup_in, unavailable, wait_healthy, Setup,
};

/// `workers` nodes in namespaces of their own, the nginx workload with
/// `replicas` pods behind a pass-through LB (`local`: policy Local).
async fn nodes_ready(workers: usize, replicas: u32, local: bool) -> Option<Setup> {
    if let Some(why) = unavailable(NetworkChoice::Nodes) {
        eprintln!("SKIPPED: {why}");
        return None;
    }
    let config = EmulatorConfig {
        workers,
        runtime: RuntimeChoice::Builtin,
        network: NetworkChoice::Nodes,
        data_path: DataPathChoice::Nftables,
        ..EmulatorConfig::default()
    };
    let s = setup_in(config, replicas, local, Forwarding::PassThrough, |_| {}).await;
    wait_healthy(s, workers).await
}

/// `nft ARGS` in `net`, its output.
fn nft_in(net: &zdt_emulator::Net, args: &[&str]) -> String {
    let nft = zdt_emulator::dataplane::nft_path().expect("nft");
    net.run_tool(&nft, args, "").expect("nft runs")
}

/// The cluster's namespace has the LB's rules and no kube-proxy chain;
/// each node's has its own Service chain and nodePort, and listens on its
/// InternalIP (kube-proxy's healthz), which the cluster's namespace cannot
/// take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_proxys_rules_and_sockets_are_in_each_nodes_namespace() {
    let Some(s) = nodes_ready(2, 1, false).await else {
        return;
    };
    served_within(&s, Duration::from_secs(10)).await;
    let emu = s.emu();
    let cluster = nft_in(emu.net(), &["list", "table", "ip", "zdt"]);
    assert!(
        !cluster.contains("kp/"),
        "kube-proxy's chains in the cluster's namespace:\n{cluster}"
    );
    assert!(cluster.contains("chain lb1"), "{cluster}");
    for node in emu.nodes() {
        let net = emu
            .node_network(&node.name)
            .unwrap_or_else(|| panic!("{} has a namespace", node.name));
        assert!(net.is_node(), "{net:?}");
        let table = nft_in(&net, &["list", "table", "ip", "zdt"]);
        let chain = format!("kp/{}/default/nginx", node.name);
        assert!(
            table.contains(&chain),
            "{}: no {chain}:\n{table}",
            node.name
        );
        assert!(
            table.contains(&format!("goto \"{chain}\""))
                || table.contains(&format!("goto {chain}")),
            "{}: the nodePort does not lead to {chain}:\n{table}",
            node.name
        );
        let IpAddr::V4(ip) = node.internal_ip else {
            panic!("an IPv4 InternalIP")
        };
        let healthz = SocketAddr::from((ip, 10256));
        let taken = net.listen_std(healthz, 1, false);
        assert!(
            taken.is_err(),
            "kube-proxy listens on {healthz} in the node: {taken:?}"
        );
        let elsewhere = emu
            .net()
            .listen_std(SocketAddr::from((ip, 40000)), 1, false);
        assert!(
            elsewhere.is_err(),
            "{ip} must not be an address of the cluster's namespace"
        );
    }
    s.shutdown().await;
}

/// Policy Cluster, the only pod on one node and the LB sending every flow
/// to the other: that node DNATs to the pod across the cluster's namespace
/// and masquerades, so the pod sees the node's InternalIP, the connection
/// is served, and the record names the node that decided and the pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_policy_connection_crosses_to_the_other_node_masqueraded() {
    let Some(s) = nodes_ready(2, 1, false).await else {
        return;
    };
    served_within(&s, Duration::from_secs(10)).await;
    let pod_node = s.pod_node();
    let other = s
        .emu()
        .nodes()
        .into_iter()
        .find(|n| !n.control_plane && n.name != pod_node)
        .expect("a second worker");
    s.exposure.lb.admin().remove(&pod_node).await.unwrap();
    let mut stream = s.connect().await.unwrap().unwrap();
    let client = stream.local_addr().unwrap();
    let head = request(&mut stream, Duration::from_secs(2)).await.unwrap();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(header(&head, "x-node"), Some(pod_node.as_str()), "{head}");
    let seen: SocketAddr = header(&head, "x-client")
        .expect("x-client")
        .parse()
        .unwrap();
    assert_eq!(
        seen.ip(),
        other.internal_ip,
        "the pod sees the node that forwarded it: {head}"
    );
    let r = s.record_soon(client).await.expect("the DNAT is recorded");
    assert_eq!(
        r.provenance.node.as_deref(),
        Some(other.name.as_str()),
        "{r:?}"
    );
    assert!(r.provenance.pod.is_some(), "{r:?}");
    s.shutdown().await;
}
