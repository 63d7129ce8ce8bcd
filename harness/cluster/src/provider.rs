//! The one shape every provider hands the run: a kube client, the workers,
//! a way to put the workload's Service behind a load balancer, node faults,
//! and teardown. Chaos code never asks which provider it runs on.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kube::Client;
use tokio_util::sync::CancellationToken;

use super::cloud_provider_kind as cpk;
use super::docker;
use super::existing::{self, ExistingCluster, ExistingError};
use super::kind::{self, KindCluster, KindError, KindSpec};
use super::lb_container;
use super::metallb;
use zdt_core::events::EventSink;
use zdt_emulator::{Emulator, EmulatorConfig, NodeFault};
use zdt_lb::{Admin, AdminClient, AdminError, Forwarding, Lb, LbConfig, LbHandle};
use zdt_scenario::ChaosStep;
use zdt_scenario::LbMode;

/// A provider could not do what the run asked.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[non_exhaustive]
pub enum ClusterError {
    #[error(transparent)]
    Emulator(#[from] zdt_emulator::EmulatorError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Kind(#[from] KindError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Docker(#[from] docker::DockerError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Existing(#[from] ExistingError),
    /// The run was interrupted while the cluster (or the load balancer in
    /// front of the workload) was being set up; what was created is deleted
    /// again.
    #[error("interrupted during cluster start")]
    Interrupted,
    /// Boxed: it may hold a whole kind command failure.
    #[error(transparent)]
    Images(Box<crate::kind_images::ImageError>),
    /// Boxed: its sources (kube and Docker errors) are large.
    #[error("load balancer: {0}")]
    Lb(#[source] Box<LbSetupError>),
    /// zdt's own image (for generator pods) could not be built or loaded.
    #[error("the zdt image for generator pods: {0}")]
    ZdtImage(#[source] Box<LbSetupError>),
    #[error("listing the nodes of context {context:?}: {source}")]
    ListNodes {
        context: String,
        source: kube::Error,
    },
    #[error("kube client for {url}: {source}")]
    Client { url: String, source: kube::Error },
    /// A chaos step names a node the existing cluster does not have;
    /// found when zdt connects, before anything is applied.
    #[error("chaos step `{step}` names node `{node}`, which context {context:?} does not have (its nodes: {})", nodes.join(", "))]
    NoSuchNode {
        step: String,
        node: String,
        context: String,
        nodes: Vec<String>,
    },
    #[error(
        "node faults are docker operations on kind's node containers; zdt cannot stop, \
         pause or kill node {node} of context {context:?} (use `--provider kind`, or drain it)"
    )]
    NodeFaultUnsupported { node: String, context: String },
    /// A resumed node's backend in zdt's LB could not be pointed at the
    /// node's current address.
    #[error("moving node {node}'s LB backend to its current address: {source}")]
    LbBackendNotMoved {
        node: String,
        #[source]
        source: Box<AdminError>,
    },
    #[error("emptying namespace {namespace} of the reused kind cluster ({what}): {source}")]
    ResetNamespace {
        namespace: String,
        what: String,
        source: kube::Error,
    },
    #[error(
        "{left} pod(s) of an earlier run still in namespace {namespace} after {after:?}; `zdt clean` deletes the cluster"
    )]
    ResetTimeout {
        left: usize,
        namespace: String,
        after: Duration,
    },
}

impl From<LbSetupError> for ClusterError {
    fn from(e: LbSetupError) -> Self {
        ClusterError::Lb(Box::new(e))
    }
}

/// Why the load balancer in front of the workload could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LbSetupError {
    /// zdt's LB model in this process.
    #[error(transparent)]
    Model(#[from] zdt_lb::LbError),
    /// zdt's LB model in a container.
    #[error(transparent)]
    Container(#[from] lb_container::LbContainerError),
    /// The Service lacks what the LB's backends are made of.
    #[error(transparent)]
    Backends(#[from] kind::LbBackendsError),
    #[error(transparent)]
    Metallb(#[from] metallb::MetallbError),
    #[error(transparent)]
    Envoy(#[from] cpk::EnvoyError),
    #[error("cannot read Service {namespace}/{service}: {source}")]
    ReadService {
        namespace: String,
        service: String,
        #[source]
        source: kube::Error,
    },
    /// The LB's ingress hostname.
    #[error("{address} does not resolve: {source}")]
    Unresolved {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{address} resolves to no address")]
    NoAddress { address: String },
    /// An LB zdt does not run (MetalLB, cloud-provider-kind) gave the
    /// Service no address it could use.
    #[error(
        "{lb} gave Service {namespace}/{service} no address: {} \
         (it must be installed and running for this cluster; see docs/kind.md)",
        source.explain()
    )]
    NoIngress {
        lb: &'static str,
        namespace: String,
        service: String,
        #[source]
        source: Box<ClusterError>,
    },
}

impl ClusterError {
    /// The message with its fix (the diagnostic's help), for a variant's
    /// reasons, which are plain text.
    pub fn explain(&self) -> String {
        use miette::Diagnostic;
        match self.help() {
            Some(help) => format!("{self}\n  help: {help}"),
            None => self.to_string(),
        }
    }
}

/// A cluster the run can drive.
pub enum Cluster {
    Emulator(Box<Emulator>),
    Kind(Box<KindRun>),
    Existing(Box<ExistingRun>),
}

/// The workload's Service exposed through a load balancer.
pub struct Exposure {
    /// Where traffic goes.
    pub target: SocketAddr,
    pub lb: LbControl,
}

/// How the run talks to the LB in front of the Service.
pub enum LbControl {
    /// zdt's LB model running in this process.
    InProcess(LbHandle),
    /// zdt's LB model in a container, driven through its HTTP admin API.
    /// `watch` stops the task forwarding its event lines into the run's
    /// events ([`lb_container::follow_events`]) when the LB goes.
    Remote {
        /// The frontend as published on the host.
        frontend: SocketAddr,
        admin: AdminClient,
        container: String,
        watch: Option<tokio_util::sync::DropGuard>,
    },
    /// An LB zdt does not control (the cloud's, MetalLB, cloud-provider-kind):
    /// traffic goes through it, admin operations are refused. `checked`
    /// says what zdt saw ready before handing it over (MetalLB's speakers,
    /// envoy's `/ready`), for the run's `LbReady` event.
    External {
        target: SocketAddr,
        what: String,
        checked: Option<String>,
    },
}

impl LbControl {
    /// Where the run's traffic goes.
    pub fn target(&self) -> SocketAddr {
        match self {
            LbControl::InProcess(h) => h.frontend_addr(),
            LbControl::Remote { frontend, .. } => *frontend,
            LbControl::External { target, .. } => *target,
        }
    }

    /// The admin operations (remove / drain / restore / wait healthy).
    pub fn admin(&self) -> LbAdmin {
        match self {
            LbControl::InProcess(h) => LbAdmin::InProcess(h.admin()),
            LbControl::Remote { admin, .. } => LbAdmin::Remote(admin.clone()),
            LbControl::External { what, .. } => LbAdmin::Unavailable(what.clone()),
        }
    }

    /// Wait until the LB can take the run's traffic: `count` healthy backends
    /// for zdt's LB; for an external one, its address accepting TCP
    /// connections (what it does with them is what the run measures).
    /// Returns what was checked, in words, for the run's `LbReady` event:
    /// only zdt's LB can say anything about backends.
    pub async fn wait_ready(
        &self,
        count: usize,
        timeout: Duration,
    ) -> Result<String, LbAdminError> {
        match self {
            LbControl::External {
                target,
                what,
                checked,
            } => {
                wait_accepting(*target, what, timeout).await?;
                Ok(match checked {
                    None => format!(
                        "{what} at {target} accepts TCP connections (only that was checked: \
                         zdt cannot see its backends or their health)"
                    ),
                    Some(before) => format!(
                        "{what} at {target} accepts TCP connections; before that, {before} \
                         (nothing more was checked: zdt cannot see its backends or their health)"
                    ),
                })
            }
            other => {
                other.admin().wait_healthy(count, timeout).await?;
                Ok(format!(
                    "{count} backends healthy (probed by zdt's LB) at {}",
                    other.target()
                ))
            }
        }
    }

    /// Every connection the LB took so far and where it went; `None` where
    /// zdt cannot see the data path (an LB in a container or the cloud's):
    /// errors are then attributed by time and node only.
    pub fn connections(&self) -> Option<Vec<zdt_lb::ConnRecord>> {
        match self {
            LbControl::InProcess(h) => Some(h.connections()),
            LbControl::Remote { .. } | LbControl::External { .. } => None,
        }
    }

    /// Stop the LB and wait for its tasks (or remove its container).
    pub async fn shutdown(self) {
        match self {
            LbControl::InProcess(h) => h.shutdown().await,
            LbControl::Remote {
                container, watch, ..
            } => {
                drop(watch);
                remove_lb_container(&container).await
            }
            LbControl::External { .. } => {}
        }
    }
}

async fn wait_accepting(
    target: SocketAddr,
    what: &str,
    timeout: Duration,
) -> Result<(), LbAdminError> {
    let deadline = Instant::now() + timeout;
    loop {
        let attempt = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(target),
        )
        .await;
        let error = match attempt {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "connect timed out".to_owned(),
        };
        if Instant::now() >= deadline {
            return Err(LbAdminError::NotAccepting {
                what: what.to_owned(),
                target,
                timeout,
                error,
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn remove_lb_container(container: &str) {
    let removed = match docker::connect().await {
        Ok(d) => docker::remove_container(&d, container).await,
        Err(e) => Err(e),
    };
    if let Err(e) = removed {
        tracing::warn!("LB container {container} not removed ({e}); `zdt clean` removes it");
    }
}

/// Why an LB admin operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LbAdminError {
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The LB in front of this run (named) has no admin API zdt can use.
    #[error(
        "the load balancer in front of this run is {0}; zdt has no admin API for it \
         (lbRemoveBackend, lbDrainBackend, lbRestoreBackend and `wait: lbHealthy` need \
         zdt's LB: `loadBalancer.mode: model` on the emulator or kind)"
    )]
    Unavailable(String),
    #[error("{what} at {target} accepted no connection within {timeout:?}: {error}")]
    NotAccepting {
        what: String,
        target: SocketAddr,
        timeout: Duration,
        error: String,
    },
}

/// The LB's admin operations wherever the LB runs: one type for the chaos
/// steps (`lbRemoveBackend`, `lbDrainBackend`, `wait: lbHealthy`, …).
#[derive(Clone)]
pub enum LbAdmin {
    InProcess(Admin),
    Remote(AdminClient),
    /// No admin API; the text says which LB this is.
    Unavailable(String),
}

impl LbAdmin {
    fn unavailable(what: &str) -> LbAdminError {
        LbAdminError::Unavailable(what.to_owned())
    }

    pub async fn remove(&self, name: &str) -> Result<(), LbAdminError> {
        match self {
            LbAdmin::InProcess(a) => Ok(a.remove(name)?),
            LbAdmin::Remote(c) => Ok(c.remove(name).await?),
            LbAdmin::Unavailable(what) => Err(Self::unavailable(what)),
        }
    }

    pub async fn drain(&self, name: &str, timeout: Option<Duration>) -> Result<(), LbAdminError> {
        match self {
            LbAdmin::InProcess(a) => Ok(a.drain(name, timeout)?),
            LbAdmin::Remote(c) => Ok(c.drain(name, timeout).await?),
            LbAdmin::Unavailable(what) => Err(Self::unavailable(what)),
        }
    }

    pub async fn restore(&self, name: &str) -> Result<(), LbAdminError> {
        match self {
            LbAdmin::InProcess(a) => Ok(a.restore(name)?),
            LbAdmin::Remote(c) => Ok(c.restore(name).await?),
            LbAdmin::Unavailable(what) => Err(Self::unavailable(what)),
        }
    }

    /// How many backends the LB has (healthy or not).
    pub async fn backend_count(&self) -> Result<usize, LbAdminError> {
        match self {
            LbAdmin::InProcess(a) => Ok(a.list().len()),
            LbAdmin::Remote(c) => Ok(c.list().await?.len()),
            LbAdmin::Unavailable(what) => Err(Self::unavailable(what)),
        }
    }

    /// Wait until at least `count` backends are healthy, at most `timeout`.
    pub async fn wait_healthy(&self, count: usize, timeout: Duration) -> Result<(), LbAdminError> {
        match self {
            LbAdmin::InProcess(a) => Ok(a.wait_healthy(count, timeout).await?),
            LbAdmin::Remote(c) => Ok(c.wait_healthy(count, timeout).await?),
            LbAdmin::Unavailable(what) => Err(Self::unavailable(what)),
        }
    }
}

/// A kind cluster in use by a run, and the LB container zdt put in front.
pub struct KindRun {
    // Before `cluster`: fields drop in order, and on a panic the LB
    // container goes first, then the cluster (KindCluster's own Drop).
    lb_container: docker::RemoveOnPanic,
    cluster: KindCluster,
    client: Client,
    mode: LbMode,
    run_id: String,
    /// This run's owner marker on the cluster (see [`crate::kind_owner`]).
    marker: Option<String>,
    /// Set when zdt's LB container fronts the Service: what a resumed
    /// node's backend is rebuilt from.
    lb_follow: std::sync::Mutex<Option<LbFollow>>,
}

/// zdt's LB container's admin API, the Service it fronts (node ports) and
/// the run's events, for [`KindRun::follow_node`].
#[derive(Clone)]
struct LbFollow {
    admin: AdminClient,
    service: k8s_openapi::api::core::v1::Service,
    events: EventSink,
}

impl std::fmt::Debug for KindRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KindRun")
            .field("cluster", &self.cluster.name())
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// An existing cluster in use by a run.
pub struct ExistingRun {
    cluster: ExistingCluster,
    workers: Vec<String>,
    /// What the run applied there: teardown deletes what zdt created.
    created: existing::CreatedObjects,
}

impl Drop for ExistingRun {
    fn drop(&mut self) {
        // A panic inside a variant unwinds past the executor's teardown:
        // delete what zdt created here rather than leave it in the user's
        // cluster.
        if std::thread::panicking() && !self.created.created_names().is_empty() {
            self.cluster.delete_blocking(&self.created);
        }
    }
}

/// A run id for the docker objects of one variant: unique per process and
/// moment, so `zdt clean` can tell runs apart.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{nanos:08x}", std::process::id())
}

impl Cluster {
    /// A fresh emulated cluster.
    pub async fn emulator(config: EmulatorConfig, events: EventSink) -> Result<Self, ClusterError> {
        Ok(Cluster::Emulator(Box::new(
            Emulator::start(config, events).await?,
        )))
    }

    /// A kind cluster of `spec`'s shape, created through the `kind` CLI or
    /// reused when one of the same shape exists; deleted at teardown unless
    /// `keep`. `mode` decides what gives the Service its load balancer.
    ///
    /// A reused cluster may hold an earlier run's workload (a kept cluster,
    /// or a run that crashed): `namespace` is emptied of Deployments,
    /// Services and PodDisruptionBudgets first, so no variant inherits
    /// another's objects — as every variant gets a fresh emulator.
    ///
    /// When `cancel` fires during `kind create cluster`, kind is killed and
    /// the half-made cluster deleted (a reused one is left alone).
    pub async fn kind(
        cli: kind::KindCli,
        spec: KindSpec,
        keep: bool,
        mode: LbMode,
        namespace: &str,
        cancel: &CancellationToken,
    ) -> Result<Self, ClusterError> {
        let run_id = run_id();
        // Claimed before kind runs: a run that dies while `kind create
        // cluster` works leaves a marker saying the cluster is zdt's, so
        // `zdt clean` can delete the half-made cluster.
        let marker = match kind::cluster_name(&spec) {
            Ok(name) => claim_cluster(&name, &run_id).await,
            Err(_) => None, // up_until reports the bad spec
        };
        let cluster = match KindCluster::up_until(cli, spec, keep, cancel).await {
            Ok(c) => c,
            Err(e) => {
                if let Some(m) = &marker {
                    release_marker(m).await;
                }
                return Err(match e {
                    KindError::Interrupted { .. } => ClusterError::Interrupted,
                    e => e.into(),
                });
            }
        };
        let ready = async {
            let client = cluster.client().await?;
            // Its own wait and reason: `kind create --wait` covered the
            // control plane only, and a reused cluster's node may be down.
            kind::wait_nodes_ready(
                &client,
                cluster.name(),
                cluster.spec().workers,
                kind::NODES_READY_TIMEOUT,
            )
            .await?;
            if !cluster.created() {
                reset_namespace(&client, namespace).await?;
            }
            Ok::<_, ClusterError>(client)
        };
        let ready = tokio::select! {
            r = ready => r,
            _ = cancel.cancelled() => Err(ClusterError::Interrupted),
        };
        let client = match ready {
            Ok(c) => c,
            Err(e) => {
                // Nobody else holds the cluster yet: delete what was created.
                let (name, kept, created) =
                    (cluster.name().to_owned(), cluster.keep(), cluster.created());
                let result = cluster.teardown().await;
                if let Err(d) = &result {
                    tracing::warn!("{d}");
                }
                release_cluster(&name, marker.as_deref(), kept, created, &result).await;
                return Err(e);
            }
        };
        Ok(Cluster::Kind(Box::new(KindRun {
            cluster,
            client,
            mode,
            run_id,
            lb_container: docker::RemoveOnPanic::default(),
            lb_follow: Default::default(),
            marker,
        })))
    }

    /// The cluster of kube `context` (else the kubeconfig's current one).
    /// Refused before anything is read from the cluster when `steps` would
    /// disrupt it and the context was not named on the command line
    /// (`named_on_cli`) or is missing from `allow_list`.
    pub async fn existing(
        context: Option<&str>,
        named_on_cli: Option<&str>,
        allow_list: &[String],
        steps: &[ChaosStep],
    ) -> Result<Self, ClusterError> {
        let cluster = ExistingCluster::connect_for_run(None, context, named_on_cli).await?;
        if !existing::disruptive_steps(steps).is_empty() {
            cluster.check_disruption_allowed(allow_list)?;
        }
        let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(cluster.client());
        let list =
            nodes
                .list(&Default::default())
                .await
                .map_err(|source| ClusterError::ListNodes {
                    context: cluster.context().to_owned(),
                    source,
                })?;
        let mut all: Vec<String> = list
            .items
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        all.sort();
        // Node names are the cluster's to know: check them now, before
        // anything is applied or any traffic is sent.
        for step in steps {
            if let Some(zdt_scenario::NodeSelector::Name(node)) = step.action.node() {
                if !all.contains(node) {
                    return Err(ClusterError::NoSuchNode {
                        step: step.name.clone(),
                        node: node.clone(),
                        context: cluster.context().to_owned(),
                        nodes: all,
                    });
                }
            }
        }
        let mut workers: Vec<String> = list
            .items
            .into_iter()
            .filter(|n| {
                let labels = n.metadata.labels.as_ref();
                !labels.is_some_and(|l| {
                    l.contains_key("node-role.kubernetes.io/control-plane")
                        || l.contains_key("node-role.kubernetes.io/master")
                })
            })
            .filter_map(|n| n.metadata.name)
            .collect();
        workers.sort();
        Ok(Cluster::Existing(Box::new(ExistingRun {
            cluster,
            workers,
            created: existing::CreatedObjects::default(),
        })))
    }

    /// Load the workload's `images` into the cluster before it is applied:
    /// on kind, each image some node lacks (`kind load docker-image`, once
    /// per image); the emulator runs no images and an existing cluster
    /// pulls its own. Returns the images loaded.
    pub async fn load_images(&self, images: &[String]) -> Result<Vec<String>, ClusterError> {
        match self {
            Cluster::Kind(k) => Ok(crate::kind_images::DockerCli::default()
                .load_missing(k.cluster.cli(), k.cluster.name(), images)
                .await
                .map_err(|e| ClusterError::Images(Box::new(e)))?),
            Cluster::Emulator(_) | Cluster::Existing(_) => Ok(Vec::new()),
        }
    }

    /// The image of zdt's own pods (traffic generators): on kind
    /// `zdt-local:<hash>`, built `FROM scratch` from the running binary (as
    /// the LB container's) and loaded into the nodes with `kind load`; on
    /// the emulator a `zdt-local` name, which its kubelet runs as the
    /// running binary; `None` on an existing cluster, whose registry zdt
    /// does not know (the scenario names the image there).
    pub async fn zdt_image(&self) -> Result<Option<String>, ClusterError> {
        match self {
            Cluster::Emulator(_) => Ok(Some(format!(
                "{}:emulator",
                zdt_core::in_cluster::IMAGE_REPOSITORY
            ))),
            Cluster::Existing(_) => Ok(None),
            Cluster::Kind(k) => {
                let image_error = |e: LbSetupError| ClusterError::ZdtImage(Box::new(e));
                let d = docker::connect().await?;
                let tag = lb_container::ensure_image(&d, &k.run_id)
                    .await
                    .map_err(|e| image_error(e.into()))?;
                crate::kind_images::DockerCli::default()
                    .load_missing(
                        k.cluster.cli(),
                        k.cluster.name(),
                        std::slice::from_ref(&tag),
                    )
                    .await
                    .map_err(|e| ClusterError::Images(Box::new(e)))?;
                Ok(Some(tag))
            }
        }
    }

    /// `emulator`, `kind` or `existing`.
    pub fn provider(&self) -> &'static str {
        match self {
            Cluster::Emulator(_) => "emulator",
            Cluster::Kind(_) => "kind",
            Cluster::Existing(_) => "existing",
        }
    }

    /// A kube client with kube-rs's automatic 429 retry off, so PDB
    /// refusals of evictions reach the drain code (and its events).
    pub fn client(&self) -> Result<Client, ClusterError> {
        match self {
            Cluster::Emulator(e) => {
                let mut config = e.client_config();
                config.default_retry = false;
                Client::try_from(config).map_err(|source| ClusterError::Client {
                    url: e.url(),
                    source,
                })
            }
            Cluster::Kind(k) => Ok(k.client.clone()),
            Cluster::Existing(x) => Ok(x.cluster.client()),
        }
    }

    /// Where the workload's apply records what it creates, on providers
    /// whose teardown must delete exactly that (an existing cluster; the
    /// emulator and kind clusters zdt made go away whole).
    pub fn created_objects(&self) -> Option<&existing::CreatedObjects> {
        match self {
            Cluster::Existing(x) => Some(&x.created),
            Cluster::Emulator(_) | Cluster::Kind(_) => None,
        }
    }

    /// Worker node names in order (`zdt-worker`, `zdt-worker2`, …).
    pub fn workers(&self) -> Vec<String> {
        match self {
            Cluster::Emulator(e) => e
                .nodes()
                .into_iter()
                .filter(|n| !n.control_plane)
                .map(|n| n.name)
                .collect(),
            Cluster::Kind(k) => k.cluster.worker_names(),
            Cluster::Existing(x) => x.workers.clone(),
        }
    }

    /// Put `namespace/service` behind a load balancer configured by
    /// `config`, its backends being the workers.
    pub async fn expose(
        &self,
        namespace: &str,
        service: &str,
        config: LbConfig,
        events: EventSink,
        cancel: CancellationToken,
    ) -> Result<Exposure, ClusterError> {
        match self {
            Cluster::Emulator(e) => {
                let backends = emulator_lb_backends(e, namespace, service)?;
                // A pass-through cloud LB is a set of packet rules where
                // the emulator has them; elsewhere zdt's LB proxies.
                let pass_through = match config.forwarding {
                    Forwarding::PassThrough => {
                        let hash = (config.selection == zdt_lb::Selection::Hash)
                            .then_some(config.seed as u32);
                        e.pass_through(namespace, service, hash)?
                            .map(zdt_lb::PassThroughPath)
                    }
                    Forwarding::Proxy => None,
                };
                let config = LbConfig {
                    own_thread: true,
                    record_connections: true,
                    frontend: e.lb_frontend(namespace, service)?,
                    net: e.net().clone(),
                    pass_through,
                    ..config
                };
                let handle = Lb::start(config, backends, events, cancel)
                    .await
                    .map_err(LbSetupError::from)?;
                if let (true, Ok(client)) = (e.net().is_private(), e.client()) {
                    show_ingress(&client, namespace, service, zdt_emulator::LB_IP).await;
                }
                Ok(Exposure {
                    target: handle.frontend_addr(),
                    lb: LbControl::InProcess(handle),
                })
            }
            Cluster::Kind(k) => k.expose(namespace, service, &config, events, cancel).await,
            Cluster::Existing(x) => {
                // Clouds take up to minutes; Ctrl-C must not wait for them.
                let client = x.cluster.client();
                let target = tokio::select! {
                    t = ingress_target(&client, namespace, service) => t?,
                    _ = cancel.cancelled() => return Err(ClusterError::Interrupted),
                };
                Ok(Exposure {
                    target,
                    lb: LbControl::External {
                        target,
                        what: format!(
                            "the cloud's load balancer of context {:?}",
                            x.cluster.context()
                        ),
                        checked: None,
                    },
                })
            }
        }
    }

    /// The network the cluster's data path and its traffic run in: an
    /// emulated cluster's own, else the host's.
    pub fn net(&self) -> zdt_core::netns::Net {
        match self {
            Cluster::Emulator(e) => e.net().clone(),
            Cluster::Kind(_) | Cluster::Existing(_) => zdt_core::netns::Net::host(),
        }
    }

    /// Where the data path's connections are tracked: the pids whose
    /// network namespaces track them (an emulated cluster's own network
    /// and, where nodes have namespaces of their own, each node's), `None`
    /// for this process's (the host's stack).
    pub fn tracking_pids(&self) -> Vec<Option<u32>> {
        match self {
            Cluster::Emulator(e) if e.net().is_private() => {
                e.tracking_pids().into_iter().map(Some).collect()
            }
            _ => vec![None],
        }
    }

    /// Stop, pause, kill or resume a node.
    pub async fn node_fault(&self, node: &str, fault: NodeFault) -> Result<(), ClusterError> {
        match self {
            Cluster::Emulator(e) => Ok(e.node_fault(node, fault)?),
            Cluster::Kind(k) => {
                let fault = match fault {
                    NodeFault::Stop => docker::NodeFault::Stop,
                    NodeFault::Pause => docker::NodeFault::Pause,
                    NodeFault::Kill => docker::NodeFault::Kill,
                    NodeFault::Resume => docker::NodeFault::Resume,
                };
                k.cluster.node_fault(node, fault).await?;
                if fault == docker::NodeFault::Resume {
                    k.follow_node(node).await?;
                }
                Ok(())
            }
            Cluster::Existing(x) => Err(ClusterError::NodeFaultUnsupported {
                node: node.to_owned(),
                context: x.cluster.context().to_owned(),
            }),
        }
    }

    /// Tear down what the provider created; returns a one-line description
    /// of the cluster's final state for the run's log.
    pub async fn teardown(self, _grace: Duration) -> String {
        match self {
            Cluster::Emulator(e) => {
                let state = e.shutdown().await;
                serde_json::to_string(&state).unwrap_or_default()
            }
            Cluster::Kind(k) => k.teardown().await,
            Cluster::Existing(x) => format!(
                "context {:?}: {}",
                x.cluster.context(),
                x.created.delete_all(&x.cluster.client()).await
            ),
        }
    }
}

/// The Service's LB ingress as a socket address (a hostname, as AWS gives,
/// is resolved), waiting up to 5 minutes for the LB to be provisioned.
async fn ingress_target(
    client: &Client,
    namespace: &str,
    service: &str,
) -> Result<SocketAddr, ClusterError> {
    let hostport =
        existing::load_balancer_target(client, namespace, service, None, Duration::from_secs(300))
            .await?;
    let resolved = tokio::net::lookup_host(&hostport)
        .await
        .map_err(|source| LbSetupError::Unresolved {
            address: hostport.clone(),
            source,
        })?
        .collect::<Vec<_>>();
    resolved
        .iter()
        .find(|a| a.is_ipv4())
        .or(resolved.first())
        .copied()
        .ok_or_else(|| LbSetupError::NoAddress { address: hostport }.into())
}

/// How long an earlier workload's pods may take to go away on a reused
/// cluster (their termination grace periods run).
const RESET_TIMEOUT: Duration = Duration::from_secs(180);

/// Delete the Deployments, Services (but the API's own `kubernetes`) and
/// PodDisruptionBudgets in `namespace` of a zdt-created cluster, and wait
/// until its pods are gone.
async fn reset_namespace(client: &Client, namespace: &str) -> Result<(), ClusterError> {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{Pod, Service};
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use kube::api::{DeleteParams, ListParams};
    let fail = |what: &str, source: kube::Error| ClusterError::ResetNamespace {
        namespace: namespace.to_owned(),
        what: what.to_owned(),
        source,
    };
    let deployments: kube::Api<Deployment> = kube::Api::namespaced(client.clone(), namespace);
    deployments
        .delete_collection(&DeleteParams::foreground(), &ListParams::default())
        .await
        .map_err(|e| fail("deployments", e))?;
    let pdbs: kube::Api<PodDisruptionBudget> = kube::Api::namespaced(client.clone(), namespace);
    pdbs.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .map_err(|e| fail("poddisruptionbudgets", e))?;
    let services: kube::Api<Service> = kube::Api::namespaced(client.clone(), namespace);
    let list = services
        .list(&ListParams::default())
        .await
        .map_err(|e| fail("services", e))?;
    for svc in list.items {
        let name = svc.metadata.name.unwrap_or_default();
        if namespace == "default" && name == "kubernetes" {
            continue;
        }
        match services.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => return Err(fail("services", e)),
        }
    }
    let pods: kube::Api<Pod> = kube::Api::namespaced(client.clone(), namespace);
    let deadline = Instant::now() + RESET_TIMEOUT;
    loop {
        let left = pods
            .list(&ListParams::default())
            .await
            .map_err(|e| fail("pods", e))?
            .items
            .len();
        if left == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ClusterError::ResetTimeout {
                left,
                namespace: namespace.to_owned(),
                after: RESET_TIMEOUT,
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// How long the API server may take to allocate a LoadBalancer Service's
/// nodePort and healthCheckNodePort (normally at creation).
const NODE_PORT_WAIT: Duration = Duration::from_secs(30);

impl KindRun {
    async fn expose(
        &self,
        namespace: &str,
        service: &str,
        config: &LbConfig,
        events: EventSink,
        cancel: CancellationToken,
    ) -> Result<Exposure, ClusterError> {
        match self.mode {
            LbMode::Model => {
                self.expose_zdt(namespace, service, config, events, cancel)
                    .await
            }
            LbMode::Metallb | LbMode::CloudProviderKind => {
                let network = self.cluster.network();
                if self.mode == LbMode::Metallb {
                    let d = docker::connect().await?;
                    let subnet = docker::network_ipv4_subnet(&d, network).await?;
                    metallb::install(&self.client, subnet)
                        .await
                        .map_err(LbSetupError::from)?;
                }
                let (what, mut checked) = match self.mode {
                    LbMode::Metallb => (
                        "MetalLB (L2)",
                        "MetalLB's controller and every speaker were ready".to_owned(),
                    ),
                    _ => ("cloud-provider-kind's envoy", String::new()),
                };
                let target = ingress_target(&self.client, namespace, service)
                    .await
                    .map_err(|e| LbSetupError::NoIngress {
                        lb: what,
                        namespace: namespace.to_owned(),
                        service: service.to_owned(),
                        source: Box::new(e),
                    })?;
                if self.mode == LbMode::CloudProviderKind {
                    // The ingress is the container's address, set before
                    // envoy serves; wait for envoy itself.
                    let d = docker::connect().await?;
                    let lb = cpk::lb_name(self.cluster.name(), namespace, service);
                    let envoy = cpk::wait_envoy_ready(&d, network, &lb, cpk::READY_TIMEOUT)
                        .await
                        .map_err(LbSetupError::from)?;
                    checked = format!(
                        "envoy's admin API at {envoy}:{} answered /ready with LIVE",
                        cpk::ENVOY_ADMIN_PORT
                    );
                }
                Ok(Exposure {
                    target,
                    lb: LbControl::External {
                        target,
                        what: what.to_owned(),
                        checked: Some(checked),
                    },
                })
            }
        }
    }

    /// zdt's LB model as a container on the `kind` network: backends are the
    /// workers' InternalIP:NodePort, probed on the Service's
    /// healthCheckNodePort (Local) or kube-proxy's :10256 (Cluster).
    async fn expose_zdt(
        &self,
        namespace: &str,
        service: &str,
        config: &LbConfig,
        events: EventSink,
        cancel: CancellationToken,
    ) -> Result<Exposure, ClusterError> {
        let svc = self.service_with_node_ports(namespace, service).await?;
        let nodes = self.cluster.nodes().await?;
        let backends = kind::lb_backends(&nodes, &svc, None).map_err(LbSetupError::from)?;
        let d = docker::connect().await?;
        let image = lb_container::ensure_image(&d, &self.run_id)
            .await
            .map_err(LbSetupError::from)?;
        let file = lb_container::lb_file(config, backends);
        let lb = lb_container::start(&d, &image, self.cluster.network(), &file, &self.run_id)
            .await
            .map_err(LbSetupError::from)?;
        *self.lb_follow.lock().unwrap_or_else(|p| p.into_inner()) = Some(LbFollow {
            admin: lb.admin.clone(),
            service: svc.clone(),
            events: events.clone(),
        });
        self.lb_container.set(lb.container.id.clone());
        if let Some(ip) = lb.container.ipv4 {
            show_ingress(&self.client, namespace, service, ip).await;
        }
        let watch = cancel.child_token();
        lb_container::follow_events(d, lb.container.id.clone(), events, watch.clone());
        Ok(Exposure {
            target: lb.frontend,
            lb: LbControl::Remote {
                frontend: lb.frontend,
                admin: lb.admin,
                container: lb.container.id,
                watch: Some(watch.drop_guard()),
            },
        })
    }

    /// After a node fault is undone: point the node's backend in zdt's LB
    /// at the address its container has now. kind rewrites a restarted
    /// node's IP (its entrypoint replaces the old one in the kubelet's and
    /// kubeadm's files), and the LB keeps the address it was started with,
    /// so without this a resumed node never becomes healthy again.
    async fn follow_node(&self, node: &str) -> Result<(), ClusterError> {
        let Some(follow) = self
            .lb_follow
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        else {
            return Ok(());
        };
        let nodes = self.cluster.nodes().await?;
        let current: Vec<_> = nodes.into_iter().filter(|n| n.name == node).collect();
        let desired =
            kind::lb_backends(&current, &follow.service, None).map_err(LbSetupError::from)?;
        for backend in desired {
            let moved = lb_container::follow_backend(&follow.admin, &backend)
                .await
                .map_err(|e| ClusterError::LbBackendNotMoved {
                    node: node.to_owned(),
                    source: Box::new(e),
                })?;
            if let Some(was) = moved {
                follow.events.emit(
                    zdt_core::events::Source::Lb,
                    "BackendMoved",
                    &backend.name,
                    Some(node),
                    format!(
                        "node {node} is back at {}; its LB backend probed {was} before",
                        backend.address
                    ),
                );
            }
        }
        Ok(())
    }

    /// The Service once the API server has given it its node ports.
    async fn service_with_node_ports(
        &self,
        namespace: &str,
        service: &str,
    ) -> Result<k8s_openapi::api::core::v1::Service, ClusterError> {
        let api: kube::Api<k8s_openapi::api::core::v1::Service> =
            kube::Api::namespaced(self.client.clone(), namespace);
        let deadline = Instant::now() + NODE_PORT_WAIT;
        loop {
            let svc = api
                .get(service)
                .await
                .map_err(|source| LbSetupError::ReadService {
                    namespace: namespace.to_owned(),
                    service: service.to_owned(),
                    source,
                })?;
            let spec = svc.spec.as_ref();
            let has_node_port = spec
                .and_then(|s| s.ports.as_ref())
                .and_then(|p| p.first())
                .is_some_and(|p| p.node_port.is_some());
            let local = spec.and_then(|s| s.external_traffic_policy.as_deref()) == Some("Local");
            let has_hc = !local || spec.is_some_and(|s| s.health_check_node_port.is_some());
            if (has_node_port && has_hc) || Instant::now() >= deadline {
                // lb_backends names what is still missing.
                return Ok(svc);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn teardown(self) -> String {
        if let Some(c) = self.lb_container.take() {
            remove_lb_container(&c).await;
        }
        let name = self.cluster.name().to_owned();
        let kept = self.cluster.keep();
        let created = self.cluster.created();
        let result = self.cluster.teardown().await;
        release_cluster(&name, self.marker.as_deref(), kept, created, &result).await;
        match result {
            Ok(()) if kept => format!(
                "kind cluster {name} kept (--keep-cluster): the next run of the same shape reuses it; `zdt clean` deletes it"
            ),
            Ok(()) => format!("kind cluster {name} deleted"),
            Err(e) => format!("kind cluster {name} NOT deleted: {e}"),
        }
    }
}

/// Write the LB's address into the Service's `status.loadBalancer.ingress`,
/// as a cloud controller would, so `kubectl get svc` shows it. The run's
/// traffic goes to the LB's frontend either way, so a failure is only
/// logged.
async fn show_ingress(client: &Client, namespace: &str, service: &str, ip: std::net::Ipv4Addr) {
    let api: kube::Api<k8s_openapi::api::core::v1::Service> =
        kube::Api::namespaced(client.clone(), namespace);
    let patch =
        serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": ip.to_string()}]}}});
    if let Err(e) = api
        .patch_status(
            service,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
    {
        tracing::warn!(
            "Service {namespace}/{service}: cannot show the LB's address in its status: {e}"
        );
    }
}

/// Record this run as a user of kind cluster `name` (created now, or
/// reused: a zdt-named cluster either way), so `zdt clean` keeps it while
/// the run lives and knows it is zdt's. Without Docker (kind on podman)
/// there is no marker: the cluster is then not zdt's to `zdt clean`, the
/// safe side.
async fn claim_cluster(name: &str, run_id: &str) -> Option<String> {
    let claimed = async {
        let d = docker::connect().await?;
        crate::kind_owner::claim(&d, name, true, run_id).await
    };
    match claimed.await {
        Ok(marker) => Some(marker),
        Err(e) => {
            tracing::warn!(cluster = %name, "no owner marker for the kind cluster ({e}); `zdt clean` will leave it alone");
            None
        }
    }
}

/// Remove this run's marker (the cluster never came up).
async fn release_marker(marker: &str) {
    let released = async {
        let d = docker::connect().await?;
        crate::kind_owner::release(&d, marker).await
    };
    if let Err(e) = released.await {
        tracing::warn!(%marker, "owner marker not removed ({e}); `zdt clean` removes it");
    }
}

/// After teardown: a deleted cluster takes every marker with it; a kept
/// one keeps its maker's marker (it is what tells `zdt clean` the cluster
/// is zdt's) and loses this run's claim when this run only reused it.
async fn release_cluster(
    name: &str,
    marker: Option<&str>,
    kept: bool,
    created: bool,
    result: &Result<(), KindError>,
) {
    let released = async {
        let d = docker::connect().await?;
        match (kept, result.is_ok(), marker) {
            (false, true, _) => crate::kind_owner::release_cluster(&d, name).await,
            (true, _, Some(m)) if !created => crate::kind_owner::release(&d, m).await,
            _ => Ok(()),
        }
    };
    if let Err(e) = released.await {
        tracing::warn!(cluster = %name, "owner marker not removed ({e}); `zdt clean` removes it");
    }
}

/// The emulated workers as LB backends: each dials through its node's
/// kube-proxy rules and is probed over HTTP like a cloud LB probes a node.
pub fn emulator_lb_backends(
    emulator: &Emulator,
    namespace: &str,
    service: &str,
) -> Result<Vec<zdt_lb::BackendSpec>, zdt_emulator::EmulatorError> {
    Ok(emulator
        .service_backends(namespace, service)?
        .into_iter()
        .map(|b| zdt_lb::BackendSpec {
            name: b.node,
            dialer: b.dialer,
            probe: zdt_lb::ProbeTarget::Http {
                addr: b.health_check,
                path: "/healthz".into(),
            },
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_lb_without_admin_api_refuses_admin_steps_saying_which_lb_and_why() {
        let admin = LbAdmin::Unavailable("MetalLB (L2)".into());
        let err = admin.remove("zdt-x-worker").await.unwrap_err().to_string();
        assert!(
            err.contains("MetalLB (L2)")
                && err.contains("lbRemoveBackend")
                && err.contains("loadBalancer.mode: model"),
            "{err}"
        );
        assert!(admin.drain("w", None).await.is_err());
        assert!(admin.restore("w").await.is_err());
        assert!(admin.backend_count().await.is_err());
        assert!(admin
            .wait_healthy(1, Duration::from_millis(10))
            .await
            .is_err());
    }

    #[tokio::test]
    async fn an_external_lb_is_ready_once_its_address_accepts_connections() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let lb = LbControl::External {
            target,
            what: "the cloud's load balancer".into(),
            checked: None,
        };
        let checked = lb.wait_ready(3, Duration::from_secs(5)).await.unwrap();
        // It says what was checked, and claims nothing about backends.
        assert_eq!(
            checked,
            format!(
                "the cloud's load balancer at {target} accepts TCP connections (only that was \
                 checked: zdt cannot see its backends or their health)"
            )
        );
        assert!(!checked.contains("healthy"), "{checked}");
        drop(listener);
        let err = lb
            .wait_ready(3, Duration::from_millis(600))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!(
                "the cloud's load balancer at {target} accepted no connection within"
            )),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_external_lb_ready_message_keeps_what_was_checked_before() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let lb = LbControl::External {
            target,
            what: "MetalLB (L2)".into(),
            checked: Some("MetalLB's controller and every speaker were ready".into()),
        };
        let checked = lb.wait_ready(3, Duration::from_secs(5)).await.unwrap();
        assert_eq!(
            checked,
            format!(
                "MetalLB (L2) at {target} accepts TCP connections; before that, MetalLB's \
                 controller and every speaker were ready (nothing more was checked: zdt cannot \
                 see its backends or their health)"
            )
        );
    }

    #[test]
    fn explain_appends_the_fix_of_a_diagnostic() {
        let e = ClusterError::from(KindError::NotInstalled {
            command: "kind get clusters".into(),
        });
        let text = e.explain();
        assert!(text.starts_with("`kind` is not installed"), "{text}");
        assert!(text.contains(kind::INSTALL_URL), "{text}");
        let e = ClusterError::from(LbSetupError::NoAddress {
            address: "x".into(),
        });
        assert_eq!(e.explain(), "load balancer: x resolves to no address");
    }
}
