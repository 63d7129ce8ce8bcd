//! Docker Engine access through bollard, for the kind provider and the LB
//! container: the `kind` network's subnet, node containers and their IPs,
//! node faults as container operations, and containers zdt runs itself
//! (labelled so `zdt clean` finds them and nothing else).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, EndpointIpamConfig, EndpointSettings,
    HostConfig, NetworkConnectRequest, NetworkDisconnectRequest, NetworkingConfig, PortBinding,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;

/// Label on every container, network and image zdt creates (the LB image
/// too).
pub const MANAGED_LABEL: &str = "zdt.managed";
/// Value of [`MANAGED_LABEL`].
pub const MANAGED_VALUE: &str = "true";
/// Label carrying the run id that created a container or network.
pub const RUN_LABEL: &str = zdt_core::owner::RUN_LABEL;
/// The docker network kind puts every node on.
pub const KIND_NETWORK: &str = "kind";
/// kind's container label naming the cluster a node container belongs to.
pub const KIND_CLUSTER_LABEL: &str = "io.x-k8s.kind.cluster";
/// kind's container label with the node role (`control-plane`, `worker`).
pub const KIND_ROLE_LABEL: &str = "io.x-k8s.kind.role";
/// Where Docker install instructions live.
pub(crate) const DOCKER_INSTALL_URL: &str = "https://docs.docker.com/engine/install/";

/// Errors talking to Docker. Each names the operation and the object.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[non_exhaustive]
pub enum DockerError {
    /// No Docker Engine answers on the local socket.
    #[error("no Docker Engine answers ({message})")]
    #[diagnostic(
        code(zdt::docker::unavailable),
        help("kind and the LB container need a running Docker Engine (`docker info` must answer): {DOCKER_INSTALL_URL}; DOCKER_HOST selects another engine")
    )]
    Unavailable { message: String },

    /// A Docker API call failed.
    #[error("docker: cannot {op}: {source}")]
    #[diagnostic(code(zdt::docker::api))]
    Api {
        op: String,
        #[source]
        source: bollard::errors::Error,
    },

    /// Docker answered, but without what zdt needs.
    #[error("docker: {0}")]
    #[diagnostic(code(zdt::docker::unexpected))]
    Unexpected(String),
}

pub(crate) type Result<T, E = DockerError> = std::result::Result<T, E>;

/// Every container, running or not, labelled `label` (`key=value`); `op`
/// names the listing in the error.
pub(crate) async fn containers_labelled(
    docker: &Docker,
    label: &str,
    op: impl Into<String>,
) -> Result<Vec<bollard::models::ContainerSummary>> {
    let filters = HashMap::from([("label".to_owned(), vec![label.to_owned()])]);
    docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(api(op))
}

fn api(op: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> DockerError {
    let op = op.into();
    move |source| DockerError::Api { op, source }
}

/// Connect to the local Docker Engine (`DOCKER_HOST` or the default socket)
/// and agree on an API version: bollard speaks a newer API than older
/// engines (20.10 answers 1.41) accept unless negotiated.
pub async fn connect() -> Result<Docker> {
    let unavailable = |e: bollard::errors::Error| DockerError::Unavailable {
        message: e.to_string(),
    };
    let docker = Docker::connect_with_local_defaults().map_err(unavailable)?;
    let docker = docker.negotiate_version().await.map_err(unavailable)?;
    docker.ping().await.map_err(unavailable)?;
    Ok(docker)
}

/// The labels every zdt-made container, network, image and marker
/// carries: managed, and the owner (run, host, pid and its start time), so
/// `zdt clean` can tell a live run's objects from a dead one's. Without a
/// run id the process's own is used.
pub fn managed_labels(run_id: Option<&str>) -> HashMap<String, String> {
    let run = run_id.unwrap_or(zdt_core::owner::process_run_id());
    let mut labels = zdt_core::owner::Owner::current(run).labels();
    labels.insert(MANAGED_LABEL.to_owned(), MANAGED_VALUE.to_owned());
    labels
}

/// The network's IPv4 subnet (kind's network is dual-stack; the IPv4 entry
/// is the one node InternalIPs come from).
pub async fn network_ipv4_subnet(docker: &Docker, network: &str) -> Result<(Ipv4Addr, u8)> {
    let inspect = docker
        .inspect_network(network, None)
        .await
        .map_err(api(format!("inspect network {network}")))?;
    inspect
        .ipam
        .and_then(|ipam| ipam.config)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| c.subnet)
        .find_map(|s| parse_ipv4_cidr(&s))
        .ok_or_else(|| DockerError::Unexpected(format!("network {network} has no IPv4 subnet")))
}

fn parse_ipv4_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, prefix) = s.split_once('/')?;
    let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
    Some((addr.parse().ok()?, prefix))
}

/// A node container of a kind cluster (or a stand-in labelled like one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeContainer {
    pub id: String,
    /// Container name without docker's leading `/` (= the Kubernetes node name).
    pub name: String,
    pub role: String,
    /// Address on the cluster network; `None` while stopped or disconnected.
    pub ipv4: Option<Ipv4Addr>,
}

/// The containers kind labelled as nodes of `cluster`, stopped ones included,
/// with their address on `network`.
pub async fn kind_nodes(
    docker: &Docker,
    cluster: &str,
    network: &str,
) -> Result<Vec<NodeContainer>> {
    let list = containers_labelled(
        docker,
        &format!("{KIND_CLUSTER_LABEL}={cluster}"),
        format!("list node containers of cluster {cluster}"),
    )
    .await?;
    let mut nodes = Vec::new();
    for c in list {
        let labels = c.labels.unwrap_or_default();
        let name = c
            .names
            .unwrap_or_default()
            .first()
            .map(|n| n.trim_start_matches('/').to_owned())
            .unwrap_or_default();
        let ipv4 = c
            .network_settings
            .and_then(|s| s.networks)
            .and_then(|mut n| n.remove(network))
            .and_then(|e| e.ip_address)
            .and_then(|ip| ip.parse().ok());
        nodes.push(NodeContainer {
            id: c.id.unwrap_or_default(),
            name,
            role: labels.get(KIND_ROLE_LABEL).cloned().unwrap_or_default(),
            ipv4,
        });
    }
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(nodes)
}

/// A container's IPv4 address on a network, if attached and running.
pub async fn container_ipv4(
    docker: &Docker,
    container: &str,
    network: &str,
) -> Result<Option<Ipv4Addr>> {
    let inspect = inspect(docker, container).await?;
    Ok(ipv4_on(&inspect, network))
}

fn ipv4_on(inspect: &ContainerInspectResponse, network: &str) -> Option<Ipv4Addr> {
    inspect
        .network_settings
        .as_ref()?
        .networks
        .as_ref()?
        .get(network)?
        .ip_address
        .as_deref()?
        .parse()
        .ok()
}

/// `docker inspect` of one container.
pub async fn inspect(docker: &Docker, container: &str) -> Result<ContainerInspectResponse> {
    docker
        .inspect_container(container, None)
        .await
        .map_err(api(format!("inspect container {container}")))
}

/// A node fault, as a docker operation on the node's container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeFault {
    /// `docker stop`: the node's init gets its stop signal, then SIGKILL after
    /// the container's stop timeout — a node shutdown.
    Stop,
    /// `docker pause`: every process frozen; sockets stay open but nothing
    /// answers — a hung node.
    Pause,
    /// `docker kill` (SIGKILL): the node vanishes without cleanup.
    Kill,
    /// `docker network disconnect`: the node is cut off the cluster network.
    Disconnect,
    /// Undo whichever of the above holds: unpause, start, reconnect (with the
    /// node's previous address, so its InternalIP does not change).
    Resume,
}

/// Apply a node fault to a node container on `network`.
pub async fn node_fault(
    docker: &Docker,
    node: &NodeContainer,
    network: &str,
    fault: NodeFault,
) -> Result<()> {
    let id = node.id.as_str();
    let name = &node.name;
    match fault {
        NodeFault::Stop => docker
            .stop_container(id, None::<bollard::query_parameters::StopContainerOptions>)
            .await
            .map_err(api(format!("stop node container {name}"))),
        NodeFault::Pause => docker
            .pause_container(id)
            .await
            .map_err(api(format!("pause node container {name}"))),
        NodeFault::Kill => docker
            .kill_container(
                id,
                Some(KillContainerOptionsBuilder::new().signal("SIGKILL").build()),
            )
            .await
            .map_err(api(format!("kill node container {name}"))),
        NodeFault::Disconnect => docker
            .disconnect_network(
                network,
                NetworkDisconnectRequest {
                    container: id.to_owned(),
                    force: Some(true),
                },
            )
            .await
            .map_err(api(format!(
                "disconnect node container {name} from network {network}"
            ))),
        NodeFault::Resume => resume(docker, node, network).await,
    }
}

async fn resume(docker: &Docker, node: &NodeContainer, network: &str) -> Result<()> {
    let id = node.id.as_str();
    let name = &node.name;
    let state = inspect(docker, id).await?;
    let st = state.state.clone().unwrap_or_default();
    if st.paused == Some(true) {
        docker
            .unpause_container(id)
            .await
            .map_err(api(format!("unpause node container {name}")))?;
    } else if st.running != Some(true) {
        docker
            .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
            .await
            .map_err(api(format!("start node container {name}")))?;
    }
    let attached = state
        .network_settings
        .and_then(|s| s.networks)
        .is_some_and(|n| n.contains_key(network));
    if !attached {
        let connect = |ip: Option<Ipv4Addr>| NetworkConnectRequest {
            container: id.to_owned(),
            endpoint_config: Some(EndpointSettings {
                ipam_config: ip.map(|ip| EndpointIpamConfig {
                    ipv4_address: Some(ip.to_string()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        };
        let op = format!("reconnect node container {name} to network {network}");
        match docker.connect_network(network, connect(node.ipv4)).await {
            Ok(()) => {}
            // Docker only honours a requested address on networks with a
            // user-configured subnet; elsewhere the node gets a new one.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 400,
                message,
            }) if node.ipv4.is_some() && message.contains("user configured subnets") => {
                tracing::warn!(node = %name, %network, "docker cannot pin the node's previous address ({message}); it gets a new InternalIP");
                docker
                    .connect_network(network, connect(None))
                    .await
                    .map_err(api(op))?;
            }
            Err(e) => return Err(api(op)(e)),
        }
    }
    Ok(())
}

/// A container zdt runs (the LB, a test stand-in for a node).
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    /// Replaces the image's entrypoint when set.
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Vec<String>,
    /// Network to attach at creation (none: docker's default bridge).
    pub network: Option<String>,
    /// Files copied into the container before it starts: (absolute path in
    /// the container, contents, mode).
    pub files: Vec<(String, Vec<u8>, u32)>,
    /// Container TCP port → host address (`127.0.0.1:0` = any free port).
    pub publish: Vec<(u16, SocketAddr)>,
    /// Extra labels besides the managed ones.
    pub labels: HashMap<String, String>,
    pub run_id: Option<String>,
    /// Run docker's init as PID 1 so SIGTERM reaches the process.
    pub init: bool,
}

/// A container zdt started; remove it with [`remove_container`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningContainer {
    pub id: String,
    pub name: String,
    /// Container TCP port → the host address docker bound it to.
    pub published: Vec<(u16, SocketAddr)>,
    /// Address on the spec's network, when it has one.
    pub ipv4: Option<Ipv4Addr>,
}

impl RunningContainer {
    /// Host address of a published container port.
    pub fn published(&self, container_port: u16) -> Option<SocketAddr> {
        self.published
            .iter()
            .find(|(p, _)| *p == container_port)
            .map(|(_, a)| *a)
    }
}

/// Create, fill, and start a labelled container; on any failure after
/// creation the container is removed again.
pub async fn run_container(docker: &Docker, spec: &ContainerSpec) -> Result<RunningContainer> {
    let mut labels = managed_labels(spec.run_id.as_deref());
    labels.extend(spec.labels.clone());
    let port_bindings: HashMap<String, Option<Vec<PortBinding>>> = spec
        .publish
        .iter()
        .map(|(port, host)| {
            (
                format!("{port}/tcp"),
                Some(vec![PortBinding {
                    host_ip: Some(host.ip().to_string()),
                    host_port: Some(if host.port() == 0 {
                        String::new()
                    } else {
                        host.port().to_string()
                    }),
                }]),
            )
        })
        .collect();
    let body = ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint: spec.entrypoint.clone(),
        cmd: Some(spec.cmd.clone()),
        labels: Some(labels),
        exposed_ports: Some(
            spec.publish
                .iter()
                .map(|(p, _)| format!("{p}/tcp"))
                .collect(),
        ),
        host_config: Some(HostConfig {
            port_bindings: Some(port_bindings),
            network_mode: spec.network.clone(),
            init: spec.init.then_some(true),
            ..Default::default()
        }),
        networking_config: spec.network.as_ref().map(|n| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(n.clone(), EndpointSettings::default())])),
        }),
        ..Default::default()
    };
    let created = docker
        .create_container(
            Some(
                CreateContainerOptionsBuilder::new()
                    .name(&spec.name)
                    .build(),
            ),
            body,
        )
        .await
        .map_err(api(format!(
            "create container {} from image {}",
            spec.name, spec.image
        )))?;
    let id = created.id;
    match fill_and_start(docker, &id, spec).await {
        Ok(running) => Ok(running),
        Err(e) => {
            let _ = remove_container(docker, &id).await;
            Err(e)
        }
    }
}

/// Put one file into a created (not yet started) container: how `zdt lb`
/// gets its config into a scratch image, which has no shell.
pub async fn upload_file(
    docker: &Docker,
    container: &str,
    path: &str,
    data: &[u8],
    mode: u32,
) -> std::result::Result<(), bollard::errors::Error> {
    let mut tar = crate::tar::Tar::new();
    tar.file(path.trim_start_matches('/'), data, mode);
    let options = bollard::query_parameters::UploadToContainerOptions {
        path: "/".into(),
        ..Default::default()
    };
    docker
        .upload_to_container(
            container,
            Some(options),
            bollard::body_full(tar.finish().into()),
        )
        .await?;
    Ok(())
}

async fn fill_and_start(
    docker: &Docker,
    id: &str,
    spec: &ContainerSpec,
) -> Result<RunningContainer> {
    for (path, data, mode) in &spec.files {
        upload_file(docker, id, path, data, *mode)
            .await
            .map_err(|e| {
                DockerError::Unexpected(format!(
                    "cannot copy {path} into container {}: {e}",
                    spec.name
                ))
            })?;
    }
    docker
        .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
        .await
        .map_err(api(format!("start container {}", spec.name)))?;
    let inspect = inspect(docker, id).await?;
    let ports = inspect
        .network_settings
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let mut published = Vec::new();
    for (port, _) in &spec.publish {
        let binding = ports
            .get(&format!("{port}/tcp"))
            .cloned()
            .flatten()
            .unwrap_or_default()
            .into_iter()
            .find_map(|b| {
                let ip: IpAddr = b.host_ip.as_deref()?.parse().ok()?;
                let p: u16 = b.host_port.as_deref()?.parse().ok()?;
                Some(SocketAddr::new(ip, p))
            })
            .ok_or_else(|| {
                DockerError::Unexpected(format!(
                    "container {} started but port {port}/tcp is not published",
                    spec.name
                ))
            })?;
        published.push((*port, binding));
    }
    Ok(RunningContainer {
        id: id.to_owned(),
        name: spec.name.clone(),
        published,
        ipv4: spec.network.as_deref().and_then(|n| ipv4_on(&inspect, n)),
    })
}

/// Where the LB container finds its config.
pub const LB_CONFIG_PATH: &str = "/etc/zdt/lb.yaml";

/// Run `zdt lb --config FILE` in a container on `network` (kind's, so the
/// workers' InternalIP:NodePort are reachable), with `config` copied to
/// [`LB_CONFIG_PATH`] before start, and the given container ports (the
/// frontend; the admin port if the config enables one) published on the
/// host, e.g. `(8080, 127.0.0.1:0)` — loopback publishing works on Docker
/// Desktop (macOS) too, where container IPs are not routable from the host.
/// The image's entrypoint must be the zdt binary.
pub async fn run_lb_container(
    docker: &Docker,
    image: &str,
    network: &str,
    config: &[u8],
    publish: &[(u16, SocketAddr)],
    run_id: Option<&str>,
) -> Result<RunningContainer> {
    run_container(
        docker,
        &ContainerSpec {
            name: format!("zdt-lb-{}", run_id.unwrap_or("adhoc")),
            image: image.to_owned(),
            entrypoint: None,
            cmd: ["lb", "--config", LB_CONFIG_PATH]
                .map(str::to_owned)
                .to_vec(),
            network: Some(network.to_owned()),
            files: vec![(LB_CONFIG_PATH.to_owned(), config.to_vec(), 0o644)],
            publish: publish.to_vec(),
            labels: HashMap::from([("zdt.role".to_owned(), "lb".to_owned())]),
            run_id: run_id.map(str::to_owned),
            init: true,
        },
    )
    .await
}

/// Stop and remove a container (and its anonymous volumes); a container
/// that is already gone is not an error.
pub async fn remove_container(docker: &Docker, container: &str) -> Result<()> {
    match docker
        .remove_container(
            container,
            Some(
                RemoveContainerOptionsBuilder::new()
                    .force(true)
                    .v(true)
                    .build(),
            ),
        )
        .await
    {
        Ok(()) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(e) => Err(api(format!("remove container {container}"))(e)),
    }
}

/// A container to remove if a panic unwinds past the code that would
/// remove it (a run's teardown): the kind provider's LB container, which
/// `kind delete cluster` does not touch. Dropped without a panic it does
/// nothing; the normal path [`take`](RemoveOnPanic::take)s the id and
/// removes the container itself.
#[derive(Debug, Default)]
pub struct RemoveOnPanic(std::sync::Mutex<Option<String>>);

impl RemoveOnPanic {
    pub fn set(&self, container: String) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(container);
    }

    pub(crate) fn take(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl Drop for RemoveOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let Some(container) = self.take() else {
            return;
        };
        tracing::warn!(%container, "panic: removing the LB container");
        // Nothing async runs in a Drop, and this thread may be a runtime's
        // worker: remove it from a thread and runtime of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let d = connect().await.ok()?;
                remove_container(&d, &container).await.ok()
            })
        })
        .join();
    }
}

/// Stop a container with an explicit timeout (seconds before SIGKILL).
pub async fn stop_container(docker: &Docker, container: &str, timeout_s: i32) -> Result<()> {
    docker
        .stop_container(
            container,
            Some(StopContainerOptionsBuilder::new().t(timeout_s).build()),
        )
        .await
        .map_err(api(format!("stop container {container}")))
}

/// A zdt-labelled container or network found by [`list_managed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Managed {
    pub id: String,
    pub name: String,
    pub run: Option<String>,
    /// Who made it; `None` for objects of a zdt from before owners were
    /// recorded.
    pub owner: Option<zdt_core::owner::Owner>,
    /// A container's image id (`sha256:…`), so images a kept container
    /// runs are kept too.
    pub image: Option<String>,
}

/// Every container (running or not) and network labelled `zdt.managed=true`.
pub async fn list_managed(docker: &Docker) -> Result<(Vec<Managed>, Vec<Managed>)> {
    let managed = format!("{MANAGED_LABEL}={MANAGED_VALUE}");
    let containers = containers_labelled(docker, &managed, "list zdt containers")
        .await?
        .into_iter()
        .map(|c| {
            let labels = c.labels.unwrap_or_default();
            Managed {
                id: c.id.unwrap_or_default(),
                name: c
                    .names
                    .unwrap_or_default()
                    .first()
                    .map(|n| n.trim_start_matches('/').to_owned())
                    .unwrap_or_default(),
                run: labels.get(RUN_LABEL).cloned(),
                owner: zdt_core::owner::Owner::from_labels(&labels),
                image: c.image_id,
            }
        })
        .collect();
    let filters = HashMap::from([("label".to_owned(), vec![managed])]);
    let networks = docker
        .list_networks(Some(
            bollard::query_parameters::ListNetworksOptionsBuilder::new()
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(api("list zdt networks"))?
        .into_iter()
        .map(|n| {
            let labels = n.labels.unwrap_or_default();
            Managed {
                id: n.id.unwrap_or_default(),
                name: n.name.unwrap_or_default(),
                run: labels.get(RUN_LABEL).cloned(),
                owner: zdt_core::owner::Owner::from_labels(&labels),
                image: None,
            }
        })
        .collect();
    Ok((containers, networks))
}

/// Every image labelled `zdt.managed=true` (the LB images zdt builds, named
/// by their first tag).
pub async fn list_managed_images(docker: &Docker) -> Result<Vec<Managed>> {
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![format!("{MANAGED_LABEL}={MANAGED_VALUE}")],
    )]);
    let images = docker
        .list_images(Some(
            bollard::query_parameters::ListImagesOptionsBuilder::new()
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(api("list zdt images"))?;
    Ok(images
        .into_iter()
        .map(|i| Managed {
            name: i
                .repo_tags
                .first()
                .cloned()
                .unwrap_or_else(|| "<untagged>".to_owned()),
            run: i.labels.get(RUN_LABEL).cloned(),
            owner: zdt_core::owner::Owner::from_labels(&i.labels),
            image: None,
            id: i.id,
        })
        .collect())
}

/// Remove an image (by id, with all its tags); one already gone is not an
/// error.
pub async fn remove_image(docker: &Docker, image: &str) -> Result<()> {
    match docker
        .remove_image(
            image,
            Some(
                bollard::query_parameters::RemoveImageOptionsBuilder::new()
                    .force(true)
                    .build(),
            ),
            None,
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(e) => Err(api(format!("remove image {image}"))(e)),
    }
}

/// Create a labelled bridge network (tests use it in place of `kind`);
/// `subnet` (e.g. `172.30.0.0/16`) makes it user-configured like kind's, so
/// containers can be given fixed addresses.
pub async fn create_network(
    docker: &Docker,
    name: &str,
    subnet: Option<&str>,
    run_id: Option<&str>,
) -> Result<String> {
    let created = docker
        .create_network(bollard::models::NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".to_owned()),
            labels: Some(managed_labels(run_id)),
            ipam: subnet.map(|s| bollard::models::Ipam {
                config: Some(vec![bollard::models::IpamConfig {
                    subnet: Some(s.to_owned()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .map_err(api(format!("create network {name}")))?;
    Ok(created.id)
}

/// Remove a network; one already gone is not an error.
pub async fn remove_network(docker: &Docker, network: &str) -> Result<()> {
    match docker.remove_network(network).await {
        Ok(()) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(e) => Err(api(format!("remove network {network}"))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parsing_keeps_ipv4_only() {
        assert_eq!(
            parse_ipv4_cidr("172.18.0.0/16"),
            Some(("172.18.0.0".parse().unwrap(), 16))
        );
        assert_eq!(parse_ipv4_cidr("fc00:f853:ccd:e793::/64"), None);
        assert_eq!(parse_ipv4_cidr("10.0.0.0/33"), None);
    }
}
