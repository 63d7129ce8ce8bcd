//! Pods in network namespaces of their own (`NetworkChoice::Pods`, the
//! default where `nft` and `ip` run): each pod's server listens on
//! `0.0.0.0:containerPort` in its sandbox, so two pods on one node use the
//! same port, a user's program needs no `$POD_IP`, and the nftables data
//! path DNATs to pod IPs routed over each pod's veth. Each test runs in
//! that mode and with nodes in namespaces of their own too
//! (`NetworkChoice::Nodes`: the pods' veths hang off their node's), asking
//! for the mode in code; without namespaces, `nft` or `ip` it says why and
//! returns.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use zdt_emulator::store::Resource;
use zdt_emulator::{DataPathChoice, EmulatorConfig, NetworkChoice, RuntimeChoice};
use zdt_lb::Forwarding;

use super::emulator_packet_rules::{
    header, in_modes, request, served_within, setup_in, stopped_node_goes_silent_and_serves_again,
    unavailable, wait_healthy, Setup, NS,
};

const PORT: u16 = 8080;

fn pods_config(network: NetworkChoice, workers: usize) -> EmulatorConfig {
    EmulatorConfig {
        workers,
        runtime: RuntimeChoice::Builtin,
        network,
        data_path: DataPathChoice::Nftables,
        ..EmulatorConfig::default()
    }
}

/// The nginx workload with `replicas` pods whose container port is
/// [`PORT`], in sandboxes on `workers` workers, behind a pass-through LB.
async fn pods_ready(
    workers: usize,
    replicas: u32,
    config: EmulatorConfig,
    edit: impl Fn(&mut serde_json::Value),
) -> Option<Setup> {
    if let Some(why) = unavailable(config.network) {
        eprintln!("SKIPPED: {why}");
        return None;
    }
    let config = EmulatorConfig { workers, ..config };
    let s = setup_in(config, replicas, false, Forwarding::PassThrough, |obj| {
        if obj["kind"] == "Deployment" {
            obj["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] =
                PORT.into();
            obj["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] =
                PORT.into();
        }
        edit(obj);
    })
    .await;
    wait_healthy(s, workers).await
}

/// Every pod of the workload: (name, IP).
fn pods(s: &Setup) -> Vec<(String, Ipv4Addr)> {
    s.emu()
        .store()
        .list(Resource::Pods, Some(NS))
        .iter()
        .filter(|p| p["metadata"]["labels"]["app"] == "nginx")
        .filter_map(|p| {
            Some((
                p["metadata"]["name"].as_str()?.to_owned(),
                p["status"]["podIP"].as_str()?.parse().ok()?,
            ))
        })
        .collect()
}

/// The pods that answer new connections through the LB, until two have
/// (bounded: kube-proxy's rules have both a sync after both are ready).
/// Each connection is served (200), and its record names the pod that
/// answered (the `X-Pod` header, where the server sends one) on its node.
async fn serving_pods(s: &Setup) -> std::collections::BTreeSet<String> {
    served_within(s, Duration::from_secs(10)).await;
    let mut served = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in 0.. {
        if served.len() == 2 || Instant::now() > deadline {
            break;
        }
        let mut stream = s.connect().await.unwrap().unwrap();
        let client = stream.local_addr().unwrap();
        let head = request(&mut stream, Duration::from_secs(2)).await.unwrap();
        assert!(
            head.starts_with("http/1.") && head.split(' ').nth(1) == Some("200"),
            "request {i}: {head}"
        );
        let r = s
            .record_soon(client)
            .await
            .expect("the connection is recorded");
        let pod = r.provenance.pod.clone().expect("a pod");
        if let Some(answered) = header(&head, "x-pod") {
            assert_eq!(answered, pod, "{r:?}");
        }
        assert_eq!(r.provenance.node.as_deref(), Some("zdt-worker"), "{r:?}");
        served.insert(pod);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    served
}

in_modes!(two_pods_listen_on_the_same_port_and_both_serve_with_provenance: pods => NetworkChoice::Pods, nodes => NetworkChoice::Nodes);

/// Two pods on one node, both listening on 0.0.0.0:8080 in their own
/// sandboxes, are reached through their Service's LB; each connection's
/// record names the pod that answered it.
async fn two_pods_listen_on_the_same_port_and_both_serve_with_provenance(network: NetworkChoice) {
    let Some(s) = pods_ready(1, 2, pods_config(network, 1), |_| {}).await else {
        return;
    };
    let pods = pods(&s);
    assert_eq!(pods.len(), 2, "{pods:?}");
    for (name, ip) in &pods {
        let net = s
            .emu()
            .pod_network(*ip)
            .unwrap_or_else(|| panic!("{name} ({ip}) has a sandbox"));
        assert!(net.is_sandbox(), "{net:?}");
        // The server took every address of its sandbox: its loopback too.
        let local = net.connect(([127, 0, 0, 1], PORT).into()).await;
        assert!(local.is_ok(), "{name} listens on 0.0.0.0:{PORT}: {local:?}");
    }
    let served = serving_pods(&s).await;
    assert_eq!(served.len(), 2, "both pods serve: {served:?}");
    s.shutdown().await;
}

/// Where this machine can give nodes and pods namespaces (namespaces,
/// `nft`, `ip`), that is what an emulator asked for nothing in particular
/// gets: every node and every pod in a namespace of its own, pods reached
/// through kube-proxy's rules in their node's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_network_gives_every_node_and_pod_a_namespace_where_it_can() {
    for var in [
        zdt_core::netns::NETWORK_ENV,
        zdt_core::emulated::DATA_PATH_ENV,
    ] {
        if let Ok(v) = std::env::var(var) {
            eprintln!("SKIPPED: {var}={v} chooses the network instead of the default");
            return;
        }
    }
    let config = EmulatorConfig {
        runtime: RuntimeChoice::Builtin,
        ..EmulatorConfig::default()
    };
    assert_eq!(config.network, NetworkChoice::Auto);
    assert_eq!(config.data_path, DataPathChoice::Auto);
    let Some(s) = pods_ready(1, 2, config, |_| {}).await else {
        return;
    };
    assert!(s.emu().data_plane().is_some(), "the nftables data path");
    for node in ["zdt-control-plane", "zdt-worker"] {
        let net = s.emu().node_network(node);
        assert!(net.is_some(), "{node} has a namespace of its own");
    }
    for (name, ip) in pods(&s) {
        let net = s.emu().pod_network(ip);
        assert!(
            net.as_ref().is_some_and(|n| n.is_sandbox()),
            "{name} ({ip}) has a sandbox: {net:?}"
        );
    }
    assert_eq!(serving_pods(&s).await.len(), 2);
    s.shutdown().await;
}

in_modes!(a_user_program_bound_to_every_address_is_served: pods => NetworkChoice::Pods, nodes => NetworkChoice::Nodes);

/// A user's program (`workload.run`, here Python's http.server) bound to
/// 0.0.0.0 — not `$POD_IP` — is served through the LB, two replicas on one
/// node on the same port.
async fn a_user_program_bound_to_every_address_is_served(network: NetworkChoice) {
    let Some(python) = ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        eprintln!("SKIPPED: python3 is not installed");
        return;
    };
    let run = std::collections::BTreeMap::from([(
        "nginx".to_owned(),
        zdt_core::emulated::ContainerRun {
            runtime: zdt_core::emulated::RunEngine::Host,
            command: vec![python.into(), "-m".into(), "http.server".into()],
            args: vec!["--bind".into(), "0.0.0.0".into(), PORT.to_string()],
            ..Default::default()
        },
    )]);
    let config = EmulatorConfig {
        run,
        ..pods_config(network, 1)
    };
    let Some(s) = pods_ready(1, 2, config, |obj| {
        if obj["kind"] == "Deployment" {
            // http.server has no /healthz: it answers 200 on /.
            obj["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"] =
                "/".into();
        }
    })
    .await
    else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while pods(&s).len() < 2 || super::emulator_packet_rules::ready_pods(s.emu()) < 2 {
        assert!(Instant::now() < deadline, "two ready pods in 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answered = serving_pods(&s).await;
    assert_eq!(answered.len(), 2, "both programs serve: {answered:?}");
    s.shutdown().await;
}

in_modes!(a_deleted_pods_sandbox_is_gone: pods => NetworkChoice::Pods, nodes => NetworkChoice::Nodes);

/// A deleted pod's sandbox goes: its pause process, its veth in the
/// cluster's namespace (its node's, where nodes have their own), and its
/// address, which then answers nothing.
async fn a_deleted_pods_sandbox_is_gone(network: NetworkChoice) {
    let Some(s) = pods_ready(1, 1, pods_config(network, 1), |_| {}).await else {
        return;
    };
    let (name, ip) = pods(&s).pop().expect("a pod");
    let net = s.emu().pod_network(ip).expect("a sandbox");
    let pause = net.helper_pid().expect("a pause process");
    drop(net);
    let veth = format!("zp{:08x}", u32::from(ip));
    // The veth's outer end is in the node's namespace, if it has one.
    let outside = s
        .emu()
        .node_network("zdt-worker")
        .unwrap_or_else(|| s.emu().net().clone());
    let link_exists = |veth: &str| {
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["link", "show", veth]);
        outside.join_before_exec(&mut cmd, false);
        cmd.output().expect("ip runs").status.success()
    };
    assert!(link_exists(&veth), "{veth} exists while {name} runs");
    // Scale to zero: the pod is deleted the way a rollout deletes one.
    let scale = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "nginx", "namespace": NS},
        "spec": {"replicas": 0},
    });
    zdt_emulator::apiserver::apply_object(s.emu().store(), &s.emu().config().timings, scale)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::path::Path::new(&format!("/proc/{pause}")).exists() || link_exists(&veth) {
        assert!(
            Instant::now() < deadline,
            "{name}'s sandbox (pause {pause}, {veth}) outlived it by 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(s.emu().pod_network(ip).is_none());
    let addr = std::net::SocketAddr::new(IpAddr::V4(ip), PORT);
    let gone = tokio::time::timeout(Duration::from_millis(1500), s.emu().net().connect(addr)).await;
    assert!(gone.is_err(), "{addr} must answer nothing: {gone:?}");
    s.shutdown().await;
}

in_modes!(a_stopped_nodes_pods_in_sandboxes_go_silent_and_come_back: pods => NetworkChoice::Pods, nodes => NetworkChoice::Nodes);

/// A stopped node's pods go silent and come back after it resumes, with
/// pods in sandboxes: the replies that now arrive through the cluster
/// namespace's input hook are dropped too.
async fn a_stopped_nodes_pods_in_sandboxes_go_silent_and_come_back(network: NetworkChoice) {
    let Some(s) = pods_ready(1, 1, pods_config(network, 1), |obj| {
        if obj["kind"] == "Service" {
            obj["spec"]["externalTrafficPolicy"] = "Local".into();
        }
    })
    .await
    else {
        return;
    };
    stopped_node_goes_silent_and_serves_again(s).await;
}
