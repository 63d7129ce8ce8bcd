//! Docker operations against the real Docker Engine, with a container
//! standing in for a kind node: the zdt FROM scratch image
//! (`lb::image::build`) of this build's `zdt` binary, running `zdt lb` as a
//! long-lived process with an HTTP `/healthz`, labelled like a kind node.
//! The LB container (`run_lb_container`) runs on the same network with the
//! stand-in as its backend, so node faults are checked both by `docker
//! inspect` and by what the LB's health probes see.
//!
//! Skipped, with the reason printed, only when no Docker Engine answers.
//! A [`ZdtMade`] guard removes the image, the network and every container,
//! also when an assertion fails. Everything carries `zdt.managed=true`.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bollard::Docker;
use zdt_cluster::docker::{
    self, kind_nodes, network_ipv4_subnet, node_fault, run_lb_container, NodeFault,
    KIND_CLUSTER_LABEL, KIND_ROLE_LABEL, MANAGED_LABEL, RUN_LABEL,
};
use zdt_cluster::lb_container::follow_backend;
use zdt_lb::{AdminClient, Health};

use crate::lb_docker::{
    build_image, docker_or_skip, unique, zdt_container, TestContainer, ZdtMade, LB_READY,
    SERVE_READY,
};
use zdt_cluster::cloud_provider_kind as cpk;

async fn state(d: &Docker, id: &str) -> bollard::models::ContainerState {
    docker::inspect(d, id).await.unwrap().state.unwrap()
}

/// Poll the LB's admin API until the backend has `want` health, at most 30 s
/// (probe every 300 ms, 2 failures out: a change shows within ~1 s; the
/// bound allows for a machine busy with other builds).
async fn wait_health(admin: &AdminClient, want: Health) -> Duration {
    let start = Instant::now();
    loop {
        let last = admin.list().await;
        if let Ok(list) = &last {
            if list.first().map(|b| b.health) == Some(want) {
                return start.elapsed();
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "backend never became {want:?}: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const STAND_IN_CONFIG: &str = "frontend: 0.0.0.0:8080\nadmin: 0.0.0.0:9090\nprofile: custom\n";

/// A network standing in for kind's, with its IPv4 subnet spelled out
/// (a user-configured subnet is what lets a container be given a fixed
/// address): docker picks a free one, then the network is recreated with
/// it. `made` removes it.
async fn kind_like_network(d: &Docker, made: &mut ZdtMade, id: &str) -> (String, Ipv4Addr, u8) {
    let network = format!("zdt-test-{id}");
    docker::create_network(d, &network, None, Some(id))
        .await
        .unwrap();
    made.networks.push(network.clone());
    let (subnet, prefix) = network_ipv4_subnet(d, &network).await.unwrap();
    docker::remove_network(d, &network).await.unwrap();
    docker::create_network(d, &network, Some(&format!("{subnet}/{prefix}")), Some(id))
        .await
        .unwrap();
    (network, subnet, prefix)
}

/// A node stand-in: `zdt lb` (frontend 8080, admin and `/healthz` 9090)
/// labelled like worker `node_name` of kind cluster `cluster`, and like a
/// container zdt made (so `zdt clean` sees it).
fn stand_in_node(
    built: &zdt_cluster::lb_image::BuiltImage,
    node_name: &str,
    network: &str,
    cluster: &str,
    id: &str,
) -> TestContainer {
    let node_args = ["lb", "--config", "/etc/zdt/node.yaml"];
    zdt_container(built, node_name, network, &node_args, &[], LB_READY)
        .with_file("/etc/zdt/node.yaml", STAND_IN_CONFIG.as_bytes().to_vec())
        .with_labels(
            id,
            &[(KIND_CLUSTER_LABEL, cluster), (KIND_ROLE_LABEL, "worker")],
        )
}

/// The LB container on `network` with the stand-in `node_name` at `ip` as
/// its one backend (probed every 300 ms), frontend and admin API published
/// on loopback only. `made` removes it.
async fn lb_in_front(
    d: &Docker,
    made: &mut ZdtMade,
    image: &str,
    network: &str,
    id: &str,
    node_name: &str,
    ip: Ipv4Addr,
) -> (docker::RunningContainer, AdminClient) {
    let lb_config = format!(
        "frontend: 0.0.0.0:8080\nadmin: 0.0.0.0:9090\nprofile: custom\n\
         probe: {{ interval: 300ms, timeout: 300ms, unhealthyThreshold: 2, healthyThreshold: 1 }}\n\
         backends:\n  - name: {node_name}\n    address: {ip}:8080\n    probe: http://{ip}:9090/healthz\n"
    );
    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let lb = run_lb_container(
        d,
        image,
        network,
        lb_config.as_bytes(),
        &[(8080, loopback), (9090, loopback)],
        Some(id),
    )
    .await
    .unwrap();
    made.containers.push(lb.id.clone());
    let admin = AdminClient::new(lb.published(9090).unwrap());
    (lb, admin)
}

#[tokio::test]
async fn node_faults_on_a_stand_in_node_seen_by_inspect_and_by_the_lb_container() {
    let Some(d) = docker_or_skip().await else {
        return;
    };
    let id = unique("node");
    let mut made = ZdtMade::default();

    // The image: this build's zdt binary FROM scratch, with its libraries.
    let tag = format!("zdt-test-node:{id}");
    let built = build_image(&d, &mut made, &tag, &id).await;

    // A network standing in for kind's, with a user-configured subnet
    // (that is what lets a reconnected node keep its address).
    let (network, subnet, prefix) = kind_like_network(&d, &mut made, &id).await;
    assert_eq!(
        network_ipv4_subnet(&d, &network).await.unwrap(),
        (subnet, prefix)
    );

    // The node: labelled like a kind worker of cluster zdt-test-<id>, and
    // like a container zdt made (so `zdt clean` sees it).
    let cluster = format!("zdt-test-{id}");
    let node_name = format!("{cluster}-worker");
    let node = stand_in_node(&built, &node_name, &network, &cluster, &id)
        .start(&d, &mut made)
        .await;

    // Discovery as the kind provider does it: by kind's labels, on the network.
    let nodes = kind_nodes(&d, &cluster, &network).await.unwrap();
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    let n = nodes[0].clone();
    assert_eq!(
        (n.name.as_str(), n.role.as_str()),
        (node_name.as_str(), "worker")
    );
    let ip = n.ipv4.expect("running node has an address");
    assert_eq!(Some(ip), node.ipv4);
    let mask = u32::MAX << (32 - u32::from(prefix));
    assert_eq!(
        u32::from(ip) & mask,
        u32::from(subnet) & mask,
        "{ip} in {subnet}/{prefix}"
    );

    // The LB container on the same network, the node as its backend,
    // published on loopback only.
    let (lb, admin) = lb_in_front(&d, &mut made, &tag, &network, &id, &node_name, ip).await;
    let frontend = lb.published(8080).unwrap();
    assert!(frontend.ip().is_loopback() && frontend.port() != 0);
    wait_health(&admin, Health::Healthy).await;
    assert_eq!(admin.list().await.unwrap()[0].name, node_name);

    // `zdt clean` — not a dry run — lists the labelled containers, network
    // and image as this (live) test process's and keeps them; only
    // `--force` would take them. Confined to its own TMPDIR and no kind:
    // other runs' temp dirs and clusters are not this test's.
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_zdt"))
        .arg("clean")
        .env("TMPDIR", tmp.path())
        .env("ZDT_KIND", "/nonexistent/kind")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let in_use = format!("(in use by pid {} on ", std::process::id());
    let line = |prefix: String| {
        stdout
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no line `{prefix}…` in:\n{stdout}"))
            .to_owned()
    };
    let container = line(format!("keeping container {node_name} ("));
    assert!(
        container.contains(&in_use) && container.ends_with(&format!("run {id})")),
        "{container}"
    );
    assert!(line(format!("keeping network {network} (")).contains(&in_use));
    assert!(line(format!("keeping image {tag} (")).contains(&in_use));
    let forced = std::process::Command::new(env!("CARGO_BIN_EXE_zdt"))
        .args(["clean", "--dry-run", "--force"])
        .output()
        .unwrap();
    let forced = String::from_utf8_lossy(&forced.stdout);
    assert!(
        forced.contains(&format!("would remove container {node_name} (")),
        "{forced}"
    );
    // Still there and serving after the real `zdt clean`.
    assert!(state(&d, &node.id).await.running == Some(true));
    assert!(state(&d, &lb.id).await.running == Some(true));
    assert_eq!(admin.list().await.unwrap()[0].name, node_name);
    let labels = docker::inspect(&d, &node.id)
        .await
        .unwrap()
        .config
        .unwrap()
        .labels
        .unwrap();
    assert_eq!(labels.get(MANAGED_LABEL).map(String::as_str), Some("true"));
    assert_eq!(labels.get(RUN_LABEL), Some(&id));

    // Pause: frozen; the LB's HTTP probe times out.
    node_fault(&d, &n, &network, NodeFault::Pause)
        .await
        .unwrap();
    assert_eq!(state(&d, &n.id).await.paused, Some(true));
    wait_health(&admin, Health::Unhealthy).await;
    node_fault(&d, &n, &network, NodeFault::Resume)
        .await
        .unwrap();
    assert_eq!(state(&d, &n.id).await.paused, Some(false));
    wait_health(&admin, Health::Healthy).await;

    // Stop: docker-init forwards SIGTERM, zdt lb exits cleanly.
    node_fault(&d, &n, &network, NodeFault::Stop).await.unwrap();
    let st = state(&d, &n.id).await;
    assert_eq!(st.running, Some(false));
    assert_eq!(
        st.status,
        Some(bollard::models::ContainerStateStatusEnum::EXITED)
    );
    wait_health(&admin, Health::Unhealthy).await;
    node_fault(&d, &n, &network, NodeFault::Resume)
        .await
        .unwrap();
    assert_eq!(state(&d, &n.id).await.running, Some(true));
    assert_eq!(
        docker::container_ipv4(&d, &n.id, &network).await.unwrap(),
        Some(ip)
    );
    wait_health(&admin, Health::Healthy).await;

    // Kill: SIGKILL, exit code 137.
    node_fault(&d, &n, &network, NodeFault::Kill).await.unwrap();
    let st = state(&d, &n.id).await;
    assert_eq!(st.running, Some(false));
    assert_eq!(st.exit_code, Some(137));
    node_fault(&d, &n, &network, NodeFault::Resume)
        .await
        .unwrap();
    assert_eq!(state(&d, &n.id).await.running, Some(true));
    wait_health(&admin, Health::Healthy).await;

    // Disconnect: off the network (still running); Resume brings it back
    // with the same InternalIP.
    node_fault(&d, &n, &network, NodeFault::Disconnect)
        .await
        .unwrap();
    let inspect = docker::inspect(&d, &n.id).await.unwrap();
    assert_eq!(inspect.state.unwrap().running, Some(true));
    let nets = inspect
        .network_settings
        .unwrap()
        .networks
        .unwrap_or_default();
    assert!(!nets.contains_key(&network), "{nets:?}");
    wait_health(&admin, Health::Unhealthy).await;
    let after = kind_nodes(&d, &cluster, &network).await.unwrap();
    assert_eq!(after[0].ipv4, None);
    node_fault(&d, &n, &network, NodeFault::Resume)
        .await
        .unwrap();
    assert_eq!(
        docker::container_ipv4(&d, &n.id, &network).await.unwrap(),
        Some(ip)
    );
    wait_health(&admin, Health::Healthy).await;

    // The kind provider's guard on its LB container: dropped normally it
    // leaves the container alone (the run's teardown removes it)...
    {
        let guard = docker::RemoveOnPanic::default();
        guard.set(lb.id.clone());
    }
    assert_eq!(state(&d, &lb.id).await.running, Some(true));
    // ...and a panic unwinding past the teardown removes it on the way out.
    let guard = docker::RemoveOnPanic::default();
    guard.set(lb.id.clone());
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _guard = guard;
        panic!("injected: a panic inside a kind variant");
    }));
    assert!(unwound.is_err());
    assert!(
        docker::inspect(&d, &lb.id).await.is_err(),
        "the LB container survived the panic"
    );

    drop(node);
    drop(made);
    let left = docker::list_managed(&d).await.unwrap();
    assert!(
        !left.0.iter().any(|c| c.run.as_deref() == Some(id.as_str())),
        "cleanup left containers: {:?}",
        left.0
    );
}

/// kind gives a restarted node container whatever address Docker hands it,
/// and zdt's LB keeps the one it started with: after the node is resumed,
/// the kind provider reads the node's address from Docker again and moves
/// its backend there (`follow_backend`, the admin API calls the provider
/// makes). Here the node's old address is taken by another container while
/// the node is stopped, so Docker must give it a new one.
#[tokio::test]
async fn a_node_back_at_another_address_is_followed_by_the_lb_container() {
    let Some(d) = docker_or_skip().await else {
        return;
    };
    let id = unique("moved");
    let mut made = ZdtMade::default();
    let tag = format!("zdt-test-node:{id}");
    let built = build_image(&d, &mut made, &tag, &id).await;
    let (network, _, _) = kind_like_network(&d, &mut made, &id).await;
    let cluster = format!("zdt-test-{id}");
    let node_name = format!("{cluster}-worker");
    stand_in_node(&built, &node_name, &network, &cluster, &id)
        .start(&d, &mut made)
        .await;
    let n = kind_nodes(&d, &cluster, &network).await.unwrap()[0].clone();
    let old = n.ipv4.unwrap();
    let (_lb, admin) = lb_in_front(&d, &mut made, &tag, &network, &id, &node_name, old).await;
    wait_health(&admin, Health::Healthy).await;

    node_fault(&d, &n, &network, NodeFault::Stop).await.unwrap();
    wait_health(&admin, Health::Unhealthy).await;
    // Another container takes the stopped node's address.
    let squatter = docker::run_container(
        &d,
        &docker::ContainerSpec {
            name: format!("zdt-test-squatter-{id}"),
            image: tag.clone(),
            cmd: [
                "serve",
                "--listen",
                "0.0.0.0:7070",
                "--pod",
                "squatter",
                "--node",
                "none",
            ]
            .map(str::to_owned)
            .to_vec(),
            run_id: Some(id.clone()),
            init: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    made.containers.push(squatter.id.clone());
    d.connect_network(
        &network,
        bollard::models::NetworkConnectRequest {
            container: squatter.id.clone(),
            endpoint_config: Some(bollard::models::EndpointSettings {
                ipam_config: Some(bollard::models::EndpointIpamConfig {
                    ipv4_address: Some(old.to_string()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        },
    )
    .await
    .unwrap();

    node_fault(&d, &n, &network, NodeFault::Resume)
        .await
        .unwrap();
    let now = kind_nodes(&d, &cluster, &network).await.unwrap()[0]
        .ipv4
        .expect("the resumed node has an address");
    assert_ne!(now, old, "docker gave the node its old address back");
    // The LB still probes the old address, which is not the node.
    assert_eq!(admin.list().await.unwrap()[0].health, Health::Unhealthy);

    let desired = zdt_lb::BackendConfig {
        name: node_name.clone(),
        address: format!("{now}:8080"),
        probe: Some(format!("http://{now}:9090/healthz")),
    };
    let moved = follow_backend(&admin, &desired).await.unwrap();
    assert_eq!(moved, Some(format!("http://{old}:9090/healthz")));
    wait_health(&admin, Health::Healthy).await;
    let backend = &admin.list().await.unwrap()[0];
    assert_eq!(
        (backend.name.as_str(), backend.probe.as_str()),
        (
            node_name.as_str(),
            format!("http://{now}:9090/healthz").as_str()
        )
    );
}

/// cloud-provider-kind's envoy for a Service is found by cloud-provider-
/// kind's label on the network, and asked for `/ready` on its admin port.
/// The stand-in (`zdt serve` on port 10000, labelled like an envoy
/// container) answers 200 with its pod's name, not envoy's `LIVE`, so the
/// wait ends with that answer as its reason; before it exists, the reason
/// is that no such container runs.
#[tokio::test]
async fn cloud_provider_kinds_envoy_is_found_by_its_label_and_asked_for_ready() {
    let Some(d) = docker_or_skip().await else {
        return;
    };
    let id = unique("envoy");
    let mut made = ZdtMade::default();
    let tag = format!("zdt-test-envoy:{id}");
    let built = build_image(&d, &mut made, &tag, &id).await;
    let (network, _, _) = kind_like_network(&d, &mut made, &id).await;
    let lb = cpk::lb_name(&format!("zdt-test-{id}"), "web", "nginx");
    let short = Duration::from_millis(10);

    let err = cpk::wait_envoy_ready(&d, &network, &lb, short)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!(
            "no container labelled {}={lb} (is cloud-provider-kind running?)",
            cpk::LB_NAME_LABEL
        )),
        "{err}"
    );

    let args = [
        "serve",
        "--listen",
        "0.0.0.0:10000",
        "--pod",
        "envoy-stand-in",
        "--node",
        "none",
    ];
    zdt_container(
        &built,
        &format!("kindccm-{id}"),
        &network,
        &args,
        &[],
        SERVE_READY,
    )
    .with_labels(&id, &[(cpk::LB_NAME_LABEL, &lb)])
    .start(&d, &mut made)
    .await;
    let err = cpk::wait_envoy_ready(&d, &network, &lb, short)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("envoy admin /ready answered \"200\" \"pod envoy-stand-in on node none\", not 200 \"LIVE\""),
        "{err}"
    );
}
