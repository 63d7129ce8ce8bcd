//! A private network is a real, separate network stack: its addresses are
//! bindable there and not on the host, processes can join it, and a socket
//! zdt closes is closed (the helper keeps none of zdt's descriptors).

use std::net::{Ipv4Addr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zdt_core::netns::{private_unavailable, Block, Net};

fn private() -> Option<Net> {
    if let Some(why) = private_unavailable() {
        eprintln!("SKIPPED: no private network here: {why}");
        return None;
    }
    Some(
        Net::private(
            &[Block {
                addr: Ipv4Addr::new(10, 244, 0, 1),
                len: 16,
            }],
            &[
                Ipv4Addr::new(10, 244, 200, 1),
                Ipv4Addr::new(10, 244, 200, 2),
            ],
        )
        .expect("a private network"),
    )
}

#[tokio::test]
async fn a_pod_address_carries_traffic_inside_and_does_not_exist_outside() {
    let Some(net) = private() else { return };
    let addr: SocketAddr = "10.244.3.7:80".parse().unwrap();
    let listener = net.listen(addr, 128).unwrap();
    let client = tokio::spawn({
        let net = net.clone();
        async move {
            let mut s = net.connect(addr).await.unwrap();
            s.write_all(b"ping").await.unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.unwrap();
            buf
        }
    });
    let (mut s, peer) = listener.accept().await.unwrap();
    let std::net::IpAddr::V4(from) = peer.ip() else {
        panic!("IPv4 only: {peer}")
    };
    assert_eq!(
        from.octets()[..2],
        [10, 244],
        "the client is in the network: {peer}"
    );
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).await.unwrap();
    s.write_all(b"pong").await.unwrap();
    assert_eq!(&client.await.unwrap(), b"pong");
    assert_eq!(&buf, b"ping");

    // The host's stack has no such address.
    let err = std::net::TcpListener::bind(addr).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EADDRNOTAVAIL), "{err}");
}

#[tokio::test]
async fn a_closed_listener_refuses_connections() {
    let Some(net) = private() else { return };
    let addr: SocketAddr = "10.244.1.2:8080".parse().unwrap();
    let listener = net.listen(addr, 16).unwrap();
    drop(listener);
    // A process this one forks at the same moment (another test's network
    // helper before it closes what it inherited, a child before its exec)
    // holds the listener for that long; a copy that outlived that window
    // (a leak) would accept for good and fail this.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    // A connection queued on that copy when it closed is reset: the
    // listener was still closing, not refusing yet.
    let err = loop {
        let still_closing = std::time::Instant::now() < deadline;
        match net.connect(addr).await {
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset && still_closing => {
                tokio::task::yield_now().await
            }
            Err(err) => break err,
            Ok(_) if still_closing => tokio::task::yield_now().await,
            Ok(s) => panic!("a closed listener still accepts after 2 s: {s:?}"),
        }
    };
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
}

#[test]
fn a_child_process_joins_the_network() {
    let Some(net) = private() else { return };
    let mut cmd = std::process::Command::new("readlink");
    cmd.arg("/proc/self/ns/net");
    net.join_before_exec(&mut cmd, false);
    let out = cmd.output().expect("readlink runs");
    assert!(out.status.success(), "{out:?}");
    let theirs = String::from_utf8(out.stdout).unwrap();
    let helper = std::fs::read_link(format!("/proc/{}/ns/net", net.helper_pid().unwrap())).unwrap();
    let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_eq!(theirs.trim(), helper.to_str().unwrap());
    assert_ne!(theirs.trim(), ours.to_str().unwrap());
    assert!(net.enter_command().unwrap().starts_with("nsenter -t "));
}

#[test]
fn the_helper_ends_with_the_network() {
    let Some(net) = private() else { return };
    let pid = net.helper_pid().unwrap();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(net);
    // Dropping reaps it: no process, no zombie.
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn the_children_of_a_joined_process_end_with_the_network() {
    use std::io::BufRead;
    let Some(net) = private() else { return };
    // sh joins; its child `sleep` starts in the network's PID namespace.
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", "sleep 300 & echo $!; wait"])
        .stdout(std::process::Stdio::piped());
    net.join_before_exec(&mut cmd, true);
    let mut sh = cmd.spawn().expect("sh runs");
    let mut line = String::new();
    std::io::BufReader::new(sh.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let sleep: u32 = line.trim().parse().expect("the sleep's pid");
    assert!(std::path::Path::new(&format!("/proc/{sleep}")).exists());
    drop(net);
    // The kernel ends the namespace's processes: sh's wait returns.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let status = loop {
        if let Some(s) = sh.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sleep {sleep} outlived the network"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    assert!(!std::path::Path::new(&format!("/proc/{sleep}")).exists());
}

/// A run reads the connection-tracking counters of the namespace its
/// traffic crosses: for a private network, the helper's, through /proc.
#[test]
fn a_private_networks_conntrack_counters_are_read_through_its_helper() {
    let Some(net) = private() else { return };
    let pid = net.helper_pid().expect("a private network has a helper");
    let loaded = std::path::Path::new("/proc/net/stat/nf_conntrack").exists();
    let counters = zdt_core::hostfault::conntrack_counters(Some(pid));
    assert_eq!(
        counters.is_some(),
        loaded,
        "the namespace's counters are readable exactly where conntrack is loaded: {counters:?}"
    );
    if let Some(c) = counters {
        // A namespace that carried nothing has failed nothing.
        assert!(c.values().all(|n| *n == 0), "{c:?}");
    }
}

/// A routed network whose pods' addresses are in 10.244.0.0/16, or `None`
/// (the test is skipped, saying why); its own address 172.18.0.1/`len`.
fn routed_with(len: u8) -> Option<Net> {
    if let Some(why) = private_unavailable() {
        eprintln!("SKIPPED: no private network here: {why}");
        return None;
    }
    match Net::routed(
        &[Block {
            addr: Ipv4Addr::new(172, 18, 0, 1),
            len,
        }],
        &[],
        Block {
            addr: Ipv4Addr::new(10, 244, 0, 1),
            len: 16,
        },
    ) {
        Ok(net) => Some(net),
        Err(e @ zdt_core::netns::NetError::NoIp) => {
            eprintln!("SKIPPED: {e}");
            None
        }
        Err(e) => panic!("a routed network: {e}"),
    }
}

/// A routed network holding all of kind's 172.18.0.0/16 (nodes without
/// namespaces of their own).
fn routed() -> Option<Net> {
    routed_with(16)
}

/// Serve `reply` to every connection `listener` accepts.
fn answer(listener: tokio::net::TcpListener, reply: &'static [u8]) {
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s.write_all(reply).await;
        }
    });
}

async fn read_from(net: &Net, addr: SocketAddr) -> std::io::Result<Vec<u8>> {
    let mut s = net.connect(addr).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    Ok(buf)
}

/// Two pods' sandboxes both listen on 0.0.0.0:8080; the cluster's
/// namespace reaches each by its IP (from the node's address), a pod
/// reaches the cluster's addresses and the other pod, and a removed
/// sandbox's address goes silent (no reset, no error: a connect timeout)
/// with its pause process gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_in_sandboxes_share_a_port_and_reach_each_other() {
    let Some(net) = routed() else { return };
    let node = Ipv4Addr::new(172, 18, 0, 3);
    let a = net
        .sandbox(Ipv4Addr::new(10, 244, 1, 2), Some(node))
        .unwrap();
    let b = net.sandbox(Ipv4Addr::new(10, 244, 1, 3), None).unwrap();
    let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
    let la = a.net().listen(any, 16).unwrap();
    let lb = b.net().listen(any, 16).unwrap();
    // Who connects to a, as a sees it.
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, peer)) = la.accept().await {
            let _ = seen_tx.send(peer);
            let _ = s.write_all(b"a").await;
        }
    });
    answer(lb, b"b");
    let (pa, pb): (SocketAddr, SocketAddr) = (
        "10.244.1.2:8080".parse().unwrap(),
        "10.244.1.3:8080".parse().unwrap(),
    );
    assert_eq!(read_from(&net, pa).await.unwrap(), b"a");
    assert_eq!(read_from(&net, pb).await.unwrap(), b"b");
    assert_eq!(
        seen.recv().await.unwrap().ip(),
        std::net::IpAddr::V4(node),
        "the cluster's connections to a pod leave from the node's address"
    );
    // Pod to the cluster's addresses (through its default route) and to
    // another pod (forwarded by the cluster's namespace).
    let cluster_side = net.listen("172.18.0.1:9000".parse().unwrap(), 16).unwrap();
    answer(cluster_side, b"cluster");
    assert_eq!(
        read_from(a.net(), "172.18.0.1:9000".parse().unwrap())
            .await
            .unwrap(),
        b"cluster"
    );
    assert_eq!(read_from(a.net(), pb).await.unwrap(), b"b");
    assert_eq!(read_from(b.net(), pa).await.unwrap(), b"a");

    let pid = a.pid();
    let veth = a.veth().to_owned();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(a);
    wait_gone(&[pid], "its sandbox");
    assert_no_link(&net, &veth);
    let gone = tokio::time::timeout(std::time::Duration::from_millis(1500), net.connect(pa)).await;
    assert!(
        gone.is_err(),
        "a connect to a removed pod's address must go unanswered: {gone:?}"
    );
    assert_eq!(read_from(&net, pb).await.unwrap(), b"b");
}

/// However zdt ends, its pods' sandboxes end with the network's helper:
/// the pause processes are in the network's PID namespace, which the
/// kernel empties when the helper's init goes (here the helper is killed,
/// as it would be with zdt).
#[test]
fn sandboxes_end_with_the_helper() {
    let Some(net) = routed() else { return };
    let sandbox = net.sandbox(Ipv4Addr::new(10, 244, 2, 2), None).unwrap();
    let pause = sandbox.pid();
    assert!(std::path::Path::new(&format!("/proc/{pause}")).exists());
    // SAFETY: signalling our own child, the helper.
    unsafe { libc::kill(net.helper_pid().unwrap() as i32, libc::SIGKILL) };
    wait_gone(&[pause], "the helper");
}

/// Wait (5 s at most) until none of `pids` exists; else fail, saying they
/// outlived `what`.
fn wait_gone(pids: &[u32], what: &str) {
    let exists = |pid: &u32| std::path::Path::new(&format!("/proc/{pid}")).exists();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while pids.iter().any(exists) {
        assert!(
            std::time::Instant::now() < deadline,
            "a pause process of {pids:?} outlived {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Fail if `veth` is a link in `net`.
fn assert_no_link(net: &Net, veth: &str) {
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["link", "show", veth]);
    net.join_before_exec(&mut cmd, false);
    let out = cmd.output().expect("ip runs");
    assert!(!out.status.success(), "{veth} is still there: {out:?}");
}

/// A routed network whose cluster namespace holds only 172.18.0.1 of
/// kind's network (nodes get namespaces of their own: [`Net::node`]).
fn routed_for_nodes() -> Option<Net> {
    routed_with(32)
}

fn pod_cidr(third: u8) -> Block {
    Block {
        addr: Ipv4Addr::new(10, 244, third, 0),
        len: 24,
    }
}

/// Accept on `listener`, answering each connection with `reply` and
/// sending its peer's address to the returned channel.
fn answer_seen(
    listener: tokio::net::TcpListener,
    reply: &'static [u8],
) -> tokio::sync::mpsc::UnboundedReceiver<SocketAddr> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, peer)) = listener.accept().await {
            let _ = tx.send(peer);
            let _ = s.write_all(reply).await;
        }
    });
    rx
}

/// Two nodes in namespaces of their own, a pod on each: the cluster's
/// namespace reaches a node's InternalIP and its pods over the node's veth,
/// a node reaches its pod from its own address (the kubelet's probes), a
/// pod reaches the pod on the other node through both nodes and the
/// cluster (no NAT: the other pod sees its IP), an address of a node's pod
/// CIDR without a pod goes silent, and a dropped node takes its veth and
/// pause process with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_carry_their_pods_traffic_to_and_from_the_cluster() {
    let Some(net) = routed_for_nodes() else {
        return;
    };
    let gateway = Ipv4Addr::new(172, 18, 0, 1);
    let (ip1, ip2) = (Ipv4Addr::new(172, 18, 0, 3), Ipv4Addr::new(172, 18, 0, 4));
    let n1 = net.node(ip1, pod_cidr(1), Some(gateway)).unwrap();
    let n2 = net.node(ip2, pod_cidr(2), Some(gateway)).unwrap();
    assert!(n1.net().is_node() && !n1.net().is_sandbox(), "{n1:?}");
    let (pa, pb) = (Ipv4Addr::new(10, 244, 1, 2), Ipv4Addr::new(10, 244, 2, 2));
    let a = n1.net().sandbox(pa, Some(ip1)).unwrap();
    let b = n2.net().sandbox(pb, Some(ip2)).unwrap();
    let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
    let mut seen_a = answer_seen(a.net().listen(any, 16).unwrap(), b"a");
    let mut seen_b = answer_seen(b.net().listen(any, 16).unwrap(), b"b");
    let health: SocketAddr = (ip1, 10256).into();
    let mut seen_node = answer_seen(n1.net().listen(health, 16).unwrap(), b"node");
    let (a_addr, b_addr): (SocketAddr, SocketAddr) = ((pa, 8080).into(), (pb, 8080).into());

    assert_eq!(read_from(&net, health).await.unwrap(), b"node");
    assert_eq!(seen_node.recv().await.unwrap().ip(), gateway);
    assert_eq!(read_from(&net, a_addr).await.unwrap(), b"a");
    assert_eq!(seen_a.recv().await.unwrap().ip(), gateway);
    assert_eq!(read_from(n1.net(), a_addr).await.unwrap(), b"a");
    assert_eq!(
        seen_a.recv().await.unwrap().ip(),
        std::net::IpAddr::V4(ip1),
        "a node's connections to its pods leave from its InternalIP"
    );
    assert_eq!(read_from(a.net(), b_addr).await.unwrap(), b"b");
    assert_eq!(seen_b.recv().await.unwrap().ip(), std::net::IpAddr::V4(pa));
    assert_eq!(read_from(b.net(), health).await.unwrap(), b"node");

    let nobody: SocketAddr = (Ipv4Addr::new(10, 244, 1, 9), 8080).into();
    let silent =
        tokio::time::timeout(std::time::Duration::from_millis(1500), net.connect(nobody)).await;
    assert!(
        silent.is_err(),
        "a pod address without a pod must answer nothing: {silent:?}"
    );

    let (pid, veth) = (n2.pid(), n2.veth().to_owned());
    drop(b);
    drop(n2);
    wait_gone(&[pid], "its node");
    assert_no_link(&net, &veth);
    assert_eq!(read_from(&net, a_addr).await.unwrap(), b"a");
}

/// A node's namespace has connection-tracking counters of its own, read
/// through its pause process and summed with the cluster's.
#[test]
fn a_nodes_conntrack_counters_are_read_with_the_clusters() {
    let Some(net) = routed_for_nodes() else {
        return;
    };
    let node = net
        .node(Ipv4Addr::new(172, 18, 0, 3), pod_cidr(1), None)
        .unwrap();
    let loaded = std::path::Path::new("/proc/net/stat/nf_conntrack").exists();
    let pids = [net.helper_pid(), Some(node.pid())];
    let own = zdt_core::hostfault::conntrack_counters(Some(node.pid()));
    assert_eq!(own.is_some(), loaded, "{own:?}");
    let summed = zdt_core::hostfault::conntrack_counters_in(&pids);
    assert_eq!(summed.is_some(), loaded, "{summed:?}");
    if let Some(c) = summed {
        assert!(c.values().all(|n| *n == 0), "{c:?}");
    }
}

/// However zdt ends, its nodes' namespaces end with the network's helper,
/// as its pods' sandboxes do.
#[test]
fn nodes_end_with_the_helper() {
    let Some(net) = routed_for_nodes() else {
        return;
    };
    let node = net
        .node(Ipv4Addr::new(172, 18, 0, 3), pod_cidr(1), None)
        .unwrap();
    let sandbox = node
        .net()
        .sandbox(Ipv4Addr::new(10, 244, 1, 2), None)
        .unwrap();
    let pauses = [node.pid(), sandbox.pid()];
    for pid in pauses {
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
    // SAFETY: signalling our own child, the helper.
    unsafe { libc::kill(net.helper_pid().unwrap() as i32, libc::SIGKILL) };
    wait_gone(&pauses, "the helper");
}
