//! Docker operations against the real Docker Engine, with a container
//! standing in for a kind node: the zdt FROM scratch image
//! (`lb::image::build`) of this build's `zdt` binary, running `zdt lb` as a
//! long-lived process with an HTTP `/healthz`, labelled like a kind node.
//! The LB container (`run_lb_container`) runs on the same network with the
//! stand-in as its backend, so node faults are checked both by `docker
//! inspect` and by what the LB's health probes see.
//!
//! Skipped, with the reason printed, only when no Docker Engine answers.
//! The stand-in runs through testcontainers, which removes it on drop; the
//! image, the network and the LB container are zdt's own doing (their
//! making is under test here), so a [`ZdtMade`] guard removes those, also
//! when an assertion fails. Everything carries `zdt.managed=true`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bollard::Docker;
use testcontainers::runners::AsyncRunner;
use testcontainers::ImageExt;
use zdt_cluster::docker::{
    self, kind_nodes, network_ipv4_subnet, node_fault, run_lb_container, NodeFault,
    KIND_CLUSTER_LABEL, KIND_ROLE_LABEL, MANAGED_LABEL, RUN_LABEL,
};
use zdt_lb::{AdminClient, Health};

use crate::lb_docker::{build_image, docker_or_skip, unique, zdt_container, ZdtMade, LB_READY};

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

    // A network standing in for kind's.
    let network = format!("zdt-test-{id}");
    // kind's network has a user-configured subnet (that is what lets a
    // reconnected node keep its address): let docker pick a free one, then
    // recreate the network with it spelled out.
    docker::create_network(&d, &network, None, Some(&id))
        .await
        .unwrap();
    made.networks.push(network.clone());
    let (subnet, prefix) = network_ipv4_subnet(&d, &network).await.unwrap();
    docker::remove_network(&d, &network).await.unwrap();
    docker::create_network(&d, &network, Some(&format!("{subnet}/{prefix}")), Some(&id))
        .await
        .unwrap();
    assert_eq!(
        network_ipv4_subnet(&d, &network).await.unwrap(),
        (subnet, prefix)
    );

    // The node: labelled like a kind worker of cluster zdt-test-<id>, and
    // like a container zdt made (so `zdt clean` sees it). The network
    // exists already, so testcontainers leaves it alone.
    let cluster = format!("zdt-test-{id}");
    let node_name = format!("{cluster}-worker");
    let node_args = ["lb", "--config", "/etc/zdt/node.yaml"];
    let node = zdt_container(&built, &node_name, &network, &node_args, &[], LB_READY)
        .with_copy_to("/etc/zdt/node.yaml", STAND_IN_CONFIG.as_bytes().to_vec())
        .with_labels(docker::managed_labels(Some(&id)))
        .with_label(KIND_CLUSTER_LABEL, cluster.clone())
        .with_label(KIND_ROLE_LABEL, "worker")
        .start()
        .await
        .unwrap();

    // Discovery as the kind provider does it: by kind's labels, on the network.
    let nodes = kind_nodes(&d, &cluster, &network).await.unwrap();
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    let n = nodes[0].clone();
    assert_eq!(
        (n.name.as_str(), n.role.as_str()),
        (node_name.as_str(), "worker")
    );
    let ip = n.ipv4.expect("running node has an address");
    assert_eq!(IpAddr::V4(ip), node.get_bridge_ip_address().await.unwrap());
    let mask = u32::MAX << (32 - u32::from(prefix));
    assert_eq!(
        u32::from(ip) & mask,
        u32::from(subnet) & mask,
        "{ip} in {subnet}/{prefix}"
    );

    // The LB container on the same network, the node as its backend,
    // published on loopback only.
    let lb_config = format!(
        "frontend: 0.0.0.0:8080\nadmin: 0.0.0.0:9090\nprofile: custom\n\
         probe: {{ interval: 300ms, timeout: 300ms, unhealthy_threshold: 2, healthy_threshold: 1 }}\n\
         backends:\n  - name: {node_name}\n    address: {ip}:8080\n    probe: http://{ip}:9090/healthz\n"
    );
    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let lb = run_lb_container(
        &d,
        &tag,
        &network,
        lb_config.as_bytes(),
        &[(8080, loopback), (9090, loopback)],
        Some(&id),
    )
    .await
    .unwrap();
    made.containers.push(lb.id.clone());
    let frontend = lb.published(8080).unwrap();
    let admin_addr = lb.published(9090).unwrap();
    assert!(frontend.ip().is_loopback() && frontend.port() != 0);
    let admin = AdminClient::new(admin_addr);
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
    assert!(state(&d, node.id()).await.running == Some(true));
    assert!(state(&d, &lb.id).await.running == Some(true));
    assert_eq!(admin.list().await.unwrap()[0].name, node_name);
    let labels = docker::inspect(&d, node.id())
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
