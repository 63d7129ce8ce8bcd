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
    conntrack_listing, header, request, served_within, setup_in, unavailable, wait_healthy, Setup,
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

/// Two workers, policy Cluster, the only pod on one of them and the LB
/// sending every flow to the other, which is returned with the setup.
async fn crossing_nodes() -> Option<(Setup, zdt_emulator::NodeInfo)> {
    let s = nodes_ready(2, 1, false).await?;
    served_within(&s, Duration::from_secs(10)).await;
    let pod_node = s.pod_node();
    let other = s
        .emu()
        .nodes()
        .into_iter()
        .find(|n| !n.control_plane && n.name != pod_node)
        .expect("a second worker");
    s.exposure.lb.admin().remove(&pod_node).await.unwrap();
    Some((s, other))
}

/// Policy Cluster, the only pod on one node and the LB sending every flow
/// to the other: that node DNATs to the pod across the cluster's namespace
/// and masquerades, so the pod sees the node's InternalIP, the connection
/// is served, and the record names the node that decided and the pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_policy_connection_crosses_to_the_other_node_masqueraded() {
    let Some((s, other)) = crossing_nodes().await else {
        return;
    };
    let pod_node = s.pod_node();
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

/// A node masquerades a connection to a pod on another node as kube-proxy's
/// nftables mode does, to a random port (`fully-random`), and keeps the
/// binding through TIME_WAIT for the kernel's two minutes, as kind's nodes
/// do, so it never hands the pod an address and port the pod may still
/// hold in TIME_WAIT (60 s). (With the one-second timeout of the node's
/// other connections, about 1 % of the seed's `Cluster` connections met
/// such a socket at 5000/s and connected a second late.) The conntrack
/// part is skipped where the node's table cannot be listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_masquerades_to_a_random_port_and_keeps_it_through_time_wait() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some((s, other)) = crossing_nodes().await else {
        return;
    };
    const PORT: u16 = 40_123;
    let socket = s.emu().net().tcp_socket(&s.vip()).unwrap();
    socket
        .bind(&SocketAddr::from(([100, 64, 0, 1], PORT)).into())
        .unwrap();
    let socket = tokio::net::TcpSocket::from_std_stream(socket.into());
    let mut stream = tokio::time::timeout(Duration::from_secs(2), socket.connect(s.vip()))
        .await
        .expect("connected within 2 s")
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut response))
        .await
        .expect("the server closed within 2 s")
        .unwrap();
    drop(stream);
    let head = String::from_utf8_lossy(&response).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let seen: SocketAddr = header(&head, "x-client")
        .expect("x-client")
        .parse()
        .unwrap();
    assert_eq!(seen.ip(), other.internal_ip, "{head}");
    assert_ne!(
        seen.port(),
        PORT,
        "the node kept the client's port: masquerade is not fully-random"
    );

    let net = s
        .emu()
        .node_network(&other.name)
        .expect("the node's namespace");
    let listing = || conntrack_listing(&net);
    let ours = format!("sport={PORT} ");
    let entry = || -> Option<(String, u64)> {
        let table = listing().ok()?;
        let line = table.lines().find(|l| l.contains(&ours))?;
        let f: Vec<&str> = line.split_whitespace().collect();
        Some((f.get(5)?.to_string(), f.get(4)?.parse().ok()?))
    };
    match listing() {
        Err(why) => eprintln!("SKIPPED (TIME_WAIT part): the node's conntrack table cannot be listed here: {why}"),
        Ok(_) if entry().is_none() => eprintln!(
            "SKIPPED (TIME_WAIT part): this kernel does not list conntrack entries (CONFIG_NF_CONNTRACK_PROCFS)"
        ),
        Ok(_) => {
            // The client's FIN and the pod's last ACK cross the node just
            // after the close: wait (bounded) for the entry to say so.
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            let mut last = entry();
            while last.as_ref().is_none_or(|(state, _)| state != "TIME_WAIT")
                && std::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
                last = entry();
            }
            let (state, left) = last.expect("the node tracks the connection");
            assert_eq!(state, "TIME_WAIT", "{left} s left");
            assert!(
                left > 60,
                "the node keeps the masqueraded binding past the pod's 60 s TIME_WAIT: {left} s left"
            );
        }
    }
    s.shutdown().await;
}
