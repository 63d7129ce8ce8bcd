//! The emulator's container runtime: a pod's container is a real process.
//!
//! When the image is an nginx image and nginx is installed, the container is
//! a real nginx (master + one worker) with a per-pod config in a temp dir,
//! listening on its own 127.0.0.1 port and adding `X-Pod`/`X-Node` headers;
//! its stop-signal semantics (SIGQUIT graceful, SIGTERM fast) come for free.
//! Otherwise it is the built-in [`super::serve::Server`] with the same
//! semantics, in-process — unless the scenario's `workload.run` names the
//! container (by name or image): then it is the user's own process, a host
//! command ([`super::host_command`]) or the image's entrypoint from the
//! local Docker ([`super::docker_image`]), started in the cluster's network
//! namespace exactly as nginx is, with the same signal delivery, exit
//! watching and cleanup. zdt's own image runs the zdt binary the same way
//! ([`super::zdt_image`]).
//!
//! The app's [`Behaviour`] (pod annotations, see [`super::app`]) makes it
//! less than instant: with a start delay the container is started at once
//! but listens only later (nginx runs behind `sh -c 'sleep N && exec nginx'`,
//! its port held meanwhile by a bound, non-listening `SO_REUSEPORT` socket,
//! so connections are refused, not stolen); with a response delay nginx
//! proxies `/` to a built-in server that waits that long, so requests are in
//! flight — and nginx's own SIGQUIT/SIGTERM decide their fate (unbuffered,
//! so a body delay reaches the client as head first, body later).
//!
//! Signals behave as a container runtime delivers them: the stop signal goes
//! to the container's PID 1 (the nginx master); SIGKILL, SIGSTOP and SIGCONT
//! go to every process of the container (here: nginx's process group), as
//! the kernel/cgroup freezer would. Every container is SIGKILLed when its
//! [`Container`] or the [`Runtime`] drops, so no nginx ever outlives a run;
//! temp dirs are named `zdt-<pid>-runtime-…` so `zdt clean` can find what a
//! crashed run left (see [`leftovers`]).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpSocket;
use tokio::sync::watch;

use super::app::Behaviour;
use super::docker_image::{self, Image};
use super::host_command::{self, CommandError};
use super::logs::{ContainerLog, PodLogs};
use super::serve::{ServeConfig, Server, ServerExit, ServerHandle, Signal};
use crate::RuntimeChoice;
use zdt_core::emulated::{ContainerRun, RunEngine};
use zdt_core::events::{EventSink, Source};
use zdt_core::netns::Net;

/// Where Debian installs nginx; `PATH` is searched too.
pub const NGINX_PATH: &str = "/usr/sbin/nginx";

/// How long nginx may take to start listening before the start fails.
const NGINX_START_TIMEOUT: Duration = Duration::from_secs(10);

/// Lines of a container's output quoted in errors and events.
const LOG_TAIL: usize = 64;

/// What actually runs a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Engine {
    /// A real nginx process tree.
    Nginx,
    /// The in-process `serve::Server`.
    Builtin,
    /// A `workload.run` host command.
    Host,
    /// A `workload.run` image's entrypoint, from the local Docker.
    Docker,
    /// The zdt binary, for zdt's own image.
    Zdt,
}

impl Engine {
    /// The engine's name in reports and container IDs.
    pub fn name(&self) -> &'static str {
        match self {
            Engine::Nginx => "nginx",
            Engine::Builtin => "builtin",
            Engine::Host => "host",
            Engine::Docker => "docker",
            Engine::Zdt => "zdt",
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Engine::Nginx => "nginx",
            Engine::Builtin => "built-in server",
            Engine::Host => "host command",
            Engine::Docker => "docker image",
            Engine::Zdt => "zdt binary",
        })
    }
}

/// Failures of the runtime; each says what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    #[error("runtime `nginx` was asked for but nginx is not installed ({NGINX_PATH} or on PATH): install it (Debian: `apt-get install nginx-light`) or use runtime `builtin`/`auto`")]
    NginxMissing,
    #[error("cannot create the runtime's temp dir under {dir}: {source}; set TMPDIR to a writable directory")]
    TempDir { dir: PathBuf, source: io::Error },
    #[error("container {pod}: cannot prepare {path}: {source}")]
    Prepare {
        pod: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("container {pod}: cannot start {engine}: {source}")]
    Spawn {
        pod: String,
        engine: Engine,
        source: io::Error,
    },
    #[error("container {pod}: nginx exited while starting ({status}); its log:\n{log}")]
    NginxFailed {
        pod: String,
        status: String,
        log: String,
    },
    #[error("container {pod}: nginx did not listen on {addr} within {NGINX_START_TIMEOUT:?}")]
    NginxTimeout { pod: String, addr: SocketAddr },
    #[error("the runtime was shut down")]
    ShutDown,
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    ZdtImage(#[from] super::zdt_image::ZdtImageError),
    #[error("workload.run needs the emulator's private network (every pod binds its own pod IP there), and this machine has none: {why}")]
    NeedsPrivateNetwork { why: String },
    #[error("container {pod}: workload.run.{key} asks for runtime `docker`, but {reason}")]
    Docker {
        pod: String,
        key: String,
        reason: String,
    },
    #[error("container {pod}: workload.run.{key} has no `command`, and the image cannot run from Docker: {reason}; give a `command` or make the image local (`docker build`/`docker load`)")]
    NoEngine {
        pod: String,
        key: String,
        reason: String,
    },
}

/// What to run for one pod's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    pub namespace: String,
    pub pod: String,
    pub node: String,
    /// The container's name in the pod spec.
    pub container: String,
    /// The image reference from the manifest (`nginx:1.27`, `registry/app`).
    pub image: String,
    /// How slow the app is to start and to answer.
    pub app: Behaviour,
    /// The pod's IP and the container's port: where it listens in a
    /// private network (on the host's stack, a free 127.0.0.1 port).
    pub ip: Ipv4Addr,
    pub port: u16,
    /// The container's env as the kubelet resolved it (`env:`, the
    /// downward API); what a user's own process gets.
    pub env: Vec<(String, String)>,
    /// The pod spec's `command` and `args` (the image's entrypoint and cmd
    /// when empty): what the docker engine runs.
    pub command: Vec<String>,
    pub args: Vec<String>,
}

impl ContainerSpec {
    fn object(&self) -> String {
        format!("pod/{}", self.pod)
    }
}

/// How a container ended, as the kubelet reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerExit {
    /// Exit code when it exited by itself.
    pub code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
}

impl ContainerExit {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The exit code Kubernetes shows (128 + signal for a killed process).
    pub fn exit_code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            (None, None) => 255,
        }
    }
}

/// Which engine ran a pod's container. The runtime says it in a `Runtime`
/// event; reports read it back from there ([`PodRuntime::from_event`]), so
/// the words and their reading live in one place.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodRuntime {
    pub pod: String,
    pub container: String,
    pub image: String,
    /// `nginx`, `builtin`, `host` or `docker` ([`Engine::name`]).
    pub runtime: String,
}

impl PodRuntime {
    /// The event reason the runtime records a container start under.
    pub const REASON: &'static str = "Runtime";

    /// The head of the `Runtime` event's message.
    fn message(&self) -> String {
        format!(
            "container {} (image {}) runtime {}:",
            self.container, self.image, self.runtime
        )
    }

    /// The record in a `Runtime` event, if `event` is one.
    pub fn from_event(event: &zdt_core::events::Event) -> Option<PodRuntime> {
        if event.reason != Self::REASON {
            return None;
        }
        let rest = event.message.strip_prefix("container ")?;
        let (container, rest) = rest.split_once(" (image ")?;
        let (image, rest) = rest.split_once(") runtime ")?;
        let (runtime, _) = rest.split_once(':')?;
        Some(PodRuntime {
            pod: event.object.strip_prefix("pod/")?.to_owned(),
            container: container.to_owned(),
            image: image.to_owned(),
            runtime: runtime.to_owned(),
        })
    }
}

/// Process groups of live nginx containers, so `Runtime::shutdown` and the
/// runtime's drop can SIGKILL them all even if a `Container` leaked.
#[derive(Default)]
struct Registry {
    groups: Mutex<HashMap<u64, i32>>,
    next: std::sync::atomic::AtomicU64,
    shut_down: std::sync::atomic::AtomicBool,
}

impl Registry {
    fn kill_all(&self) {
        let groups: Vec<i32> = self
            .groups
            .lock()
            .expect("registry lock")
            .drain()
            .map(|(_, g)| g)
            .collect();
        for pgid in groups {
            killpg(pgid, libc::SIGKILL);
        }
    }
}

/// A `workload.run` entry with its program found.
#[derive(Debug, Clone)]
struct RunEntry {
    run: ContainerRun,
    program: Option<PathBuf>,
}

/// How one container is launched.
enum Launch {
    Nginx(PathBuf),
    Builtin,
    Host { key: String, entry: RunEntry },
    Docker(Arc<Image>),
    Zdt(PathBuf),
}

/// Starts containers. One per emulated cluster, shared by every kubelet.
pub struct Runtime {
    choice: RuntimeChoice,
    run: std::collections::BTreeMap<String, RunEntry>,
    /// Images exported from Docker so far, by reference (the error says why
    /// one cannot be): every pod of an image shares one root filesystem.
    images: tokio::sync::Mutex<HashMap<String, Result<Arc<Image>, String>>>,
    nginx: Option<PathBuf>,
    events: EventSink,
    root: tempfile::TempDir,
    registry: Arc<Registry>,
    net: Net,
    /// The live pods' sandboxes' networks by pod IP, in a routed network
    /// ([`Runtime::sandbox`]): their containers listen and run there.
    sandboxes: Arc<Mutex<HashMap<Ipv4Addr, Net>>>,
    /// Nodes' own namespaces by InternalIP ([`Runtime::add_node`]): their
    /// pods' sandboxes hang off them, and the kubelet's connections to
    /// pods leave from them.
    nodes: Mutex<HashMap<Ipv4Addr, Net>>,
    logs: PodLogs,
}

/// A pod's sandbox (see [`zdt_core::netns::Sandbox`]) while the kubelet
/// holds it: its containers start in it. Dropping it removes the sandbox.
pub struct PodSandbox {
    sandbox: Option<zdt_core::netns::Sandbox>,
    sandboxes: Arc<Mutex<HashMap<Ipv4Addr, Net>>>,
}

impl PodSandbox {
    /// The pod's network.
    pub fn net(&self) -> Option<&Net> {
        self.sandbox.as_ref().map(zdt_core::netns::Sandbox::net)
    }
}

impl Drop for PodSandbox {
    fn drop(&mut self) {
        let Some(sandbox) = self.sandbox.take() else {
            return;
        };
        self.sandboxes
            .lock()
            .expect("sandboxes lock")
            .remove(&sandbox.ip());
        // Removing it runs `ip`: off the async threads when there are any.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(move || drop(sandbox))),
            Err(_) => drop(sandbox),
        }
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("choice", &self.choice)
            .field("nginx", &self.nginx)
            .field("root", &self.root.path())
            .finish_non_exhaustive()
    }
}

/// The nginx binary, if installed.
pub fn find_nginx() -> Option<PathBuf> {
    let fixed = Path::new(NGINX_PATH);
    if fixed.is_file() {
        return Some(fixed.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("nginx"))
            .find(|p| p.is_file())
    })
}

impl Runtime {
    /// A runtime following `choice`. `Nginx` without nginx installed is an
    /// error; `Auto` falls back to the built-in server.
    pub fn new(
        choice: RuntimeChoice,
        events: EventSink,
        net: Net,
    ) -> Result<Arc<Runtime>, RuntimeError> {
        Self::with_run(choice, Default::default(), events, net)
    }

    /// A runtime that also runs the containers `run` names (by container
    /// name or image) as the user's own processes. Every program is looked
    /// up here, so a missing one is an error before any pod starts.
    pub fn with_run(
        choice: RuntimeChoice,
        run: std::collections::BTreeMap<String, ContainerRun>,
        events: EventSink,
        net: Net,
    ) -> Result<Arc<Runtime>, RuntimeError> {
        if !run.is_empty() && !net.is_private() {
            return Err(RuntimeError::NeedsPrivateNetwork {
                why: zdt_core::netns::private_unavailable()
                    .unwrap_or("the emulator runs on the host's network stack (ZDT_NETWORK=host)")
                    .to_owned(),
            });
        }
        let mut entries = std::collections::BTreeMap::new();
        for (key, r) in run {
            let program = match (r.runtime, r.command.is_empty()) {
                (RunEngine::Docker, _) | (RunEngine::Auto, true) => None,
                _ => Some(host_command::resolve(&key, &r)?),
            };
            entries.insert(key, RunEntry { run: r, program });
        }
        let nginx = match choice {
            RuntimeChoice::Builtin => None,
            RuntimeChoice::Auto => find_nginx(),
            RuntimeChoice::Nginx => Some(find_nginx().ok_or(RuntimeError::NginxMissing)?),
        };
        let tmp = std::env::temp_dir();
        let root = zdt_core::process::temp_dir("runtime")
            .map_err(|source| RuntimeError::TempDir { dir: tmp, source })?;
        match (&nginx, choice) {
            (Some(path), _) => tracing::info!(
                nginx = %path.display(),
                "emulator runtime: nginx images run as real nginx processes"
            ),
            (None, RuntimeChoice::Auto) => tracing::info!(
                "emulator runtime: nginx is not installed; every container runs the built-in server"
            ),
            (None, _) => {
                tracing::info!("emulator runtime: every container runs the built-in server")
            }
        }
        Ok(Arc::new(Runtime {
            choice,
            run: entries,
            images: Default::default(),
            nginx,
            events,
            root,
            registry: Arc::default(),
            net,
            sandboxes: Arc::default(),
            nodes: Mutex::default(),
            logs: PodLogs::default(),
        }))
    }

    pub fn choice(&self) -> RuntimeChoice {
        self.choice
    }

    /// The network containers listen in.
    pub fn net(&self) -> &Net {
        &self.net
    }

    /// The node whose InternalIP is `ip` has a namespace of its own, `net`.
    pub fn add_node(&self, ip: Ipv4Addr, net: Net) {
        self.nodes.lock().expect("nodes lock").insert(ip, net);
    }

    /// Where the node whose InternalIP is `ip` connects to its pods from
    /// (the kubelet's probes and httpGet hooks): its own namespace if it
    /// has one, else the cluster's ([`Runtime::net`]).
    pub fn node_net(&self, ip: Option<Ipv4Addr>) -> Net {
        ip.and_then(|ip| self.nodes.lock().expect("nodes lock").get(&ip).cloned())
            .unwrap_or_else(|| self.net.clone())
    }

    /// What every container started here wrote.
    pub fn logs(&self) -> &PodLogs {
        &self.logs
    }

    /// A sandbox for the pod with address `ip` on the node whose
    /// InternalIP is `node_ip` (behind the node's own namespace, if it has
    /// one), when the cluster's network is routed (`None` otherwise: pods
    /// share the cluster's network). Its containers start in it until it
    /// is dropped.
    pub async fn sandbox(
        &self,
        ip: Ipv4Addr,
        node_ip: Option<Ipv4Addr>,
    ) -> Result<Option<PodSandbox>, zdt_core::netns::NetError> {
        if !self.net.is_routed() {
            return Ok(None);
        }
        let net = self.node_net(node_ip);
        let sandbox = tokio::task::spawn_blocking(move || net.sandbox(ip, node_ip))
            .await
            .map_err(|e| zdt_core::netns::NetError::Sandbox {
                ip,
                message: e.to_string(),
            })??;
        self.sandboxes
            .lock()
            .expect("sandboxes lock")
            .insert(ip, sandbox.net().clone());
        Ok(Some(PodSandbox {
            sandbox: Some(sandbox),
            sandboxes: self.sandboxes.clone(),
        }))
    }

    /// The network of the live pod sandbox whose pod IP is `ip`.
    pub fn sandbox_net(&self, ip: Ipv4Addr) -> Option<Net> {
        self.sandboxes
            .lock()
            .expect("sandboxes lock")
            .get(&ip)
            .cloned()
    }

    /// The network `spec`'s container runs in: its pod's sandbox, else
    /// the cluster's.
    fn net_for(&self, spec: &ContainerSpec) -> Net {
        self.sandbox_net(spec.ip)
            .unwrap_or_else(|| self.net.clone())
    }

    /// Where `spec`'s container listens: its pod IP and port in a private
    /// network; on the host's stack a loopback address, `port` 0 meaning a
    /// free one (pods share 127.0.0.1 there).
    fn listen_addr(&self, spec: &ContainerSpec, port: u16) -> SocketAddr {
        if self.net.is_private() {
            SocketAddr::from((spec.ip, port))
        } else {
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
        }
    }

    /// The directory holding per-container temp dirs.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Which engine runs `image`: nginx images run nginx when it is
    /// available (and wanted); everything else runs the built-in server,
    /// which has nginx's signal semantics anyway.
    pub fn engine_for(&self, image: &str) -> Engine {
        let forced = self.choice == RuntimeChoice::Nginx;
        if self.nginx.is_some() && (forced || is_nginx_image(image)) {
            Engine::Nginx
        } else {
            Engine::Builtin
        }
    }

    /// The `workload.run` entry for a container: by its name, else its
    /// image as written, else the image without tag or digest.
    fn run_entry(&self, spec: &ContainerSpec) -> Option<(&String, &RunEntry)> {
        let bare = spec
            .image
            .split('@')
            .next()
            .map(|i| match i.rsplit_once(':') {
                Some((name, tag)) if !tag.contains('/') => name,
                _ => i,
            })
            .unwrap_or(&spec.image);
        [spec.container.as_str(), spec.image.as_str(), bare]
            .into_iter()
            .find_map(|k| self.run.get_key_value(k))
    }

    /// The image's root filesystem from the local Docker, exported once.
    async fn docker_image(&self, image: &str) -> Result<Arc<Image>, String> {
        let mut images = self.images.lock().await;
        if let Some(done) = images.get(image) {
            return done.clone();
        }
        let dir = self.root.path().join(format!("image-{}", images.len()));
        let made = docker_image::export(image, &dir).await.map(Arc::new);
        images.insert(image.to_owned(), made.clone());
        made
    }

    /// How `spec`'s container runs: its `workload.run` entry, else nginx
    /// or the built-in server by image.
    async fn launch_for(&self, spec: &ContainerSpec) -> Result<Launch, RuntimeError> {
        let Some((key, entry)) = self.run_entry(spec) else {
            if zdt_core::in_cluster::is_zdt_image(&spec.image) {
                let exe = zdt_core::process::zdt_exe().ok_or_else(|| {
                    super::zdt_image::ZdtImageError::NoBinary {
                        pod: spec.pod.clone(),
                        image: spec.image.clone(),
                    }
                })?;
                return Ok(Launch::Zdt(exe));
            }
            return Ok(match self.engine_for(&spec.image) {
                Engine::Nginx => Launch::Nginx(self.nginx.clone().expect("engine_for checked")),
                _ => Launch::Builtin,
            });
        };
        let host = || Launch::Host {
            key: key.clone(),
            entry: entry.clone(),
        };
        match entry.run.runtime {
            RunEngine::Host => Ok(host()),
            RunEngine::Docker => match self.docker_image(&spec.image).await {
                Ok(image) => Ok(Launch::Docker(image)),
                Err(reason) => Err(RuntimeError::Docker {
                    pod: spec.pod.clone(),
                    key: key.clone(),
                    reason,
                }),
            },
            RunEngine::Auto => match self.docker_image(&spec.image).await {
                Ok(image) => Ok(Launch::Docker(image)),
                Err(reason) if entry.program.is_some() => {
                    let msg = format!(
                        "image {} does not run from Docker ({reason}); workload.run.{key} runs its host command instead",
                        spec.image
                    );
                    tracing::info!(pod = %spec.pod, "{msg}");
                    self.events.emit(
                        Source::Pod,
                        "RuntimeFallback",
                        spec.object(),
                        Some(&spec.node),
                        msg,
                    );
                    Ok(host())
                }
                Err(reason) => Err(RuntimeError::NoEngine {
                    pod: spec.pod.clone(),
                    key: key.clone(),
                    reason,
                }),
            },
        }
    }

    /// Start a container and wait until it listens (nginx, the built-in
    /// server) or until its process runs (a user's own: whether it listens
    /// is its readiness probe's business, as in Kubernetes).
    pub async fn start(&self, spec: &ContainerSpec) -> Result<Container, RuntimeError> {
        use std::sync::atomic::Ordering;
        if self.registry.shut_down.load(Ordering::SeqCst) {
            return Err(RuntimeError::ShutDown);
        }
        let launch = self.launch_for(spec).await?;
        let id = self.registry.next.fetch_add(1, Ordering::SeqCst);
        let container = match launch {
            Launch::Builtin => self.start_builtin(spec).await?,
            Launch::Nginx(nginx) => self.start_nginx(&nginx, spec, id).await?,
            Launch::Host { key, entry } => self.start_host(&key, &entry, spec, id).await?,
            Launch::Docker(image) => self.start_docker(&image, spec, id).await?,
            Launch::Zdt(exe) => self.start_zdt(&exe, spec, id)?,
        };
        let engine = container.engine;
        self.logs.insert(
            &spec.namespace,
            &spec.pod,
            &spec.container,
            container.log.clone(),
        );
        let record = PodRuntime {
            pod: spec.pod.clone(),
            container: spec.container.clone(),
            image: spec.image.clone(),
            runtime: engine.name().to_owned(),
        };
        let msg = format!(
            "{} runs as {} on {} (pid {}){}",
            record.message(),
            engine,
            container.addr,
            container
                .pid()
                .map_or_else(|| "in-process".to_owned(), |p| p.to_string()),
            spec.app
                .describe()
                .map_or_else(String::new, |d| format!("; app {d}")),
        );
        tracing::info!(pod = %spec.pod, node = %spec.node, "{msg}");
        self.events.emit(
            Source::Pod,
            PodRuntime::REASON,
            spec.object(),
            Some(&spec.node),
            msg,
        );
        Ok(container)
    }

    async fn start_builtin(&self, spec: &ContainerSpec) -> Result<Container, RuntimeError> {
        let net = self.net_for(spec);
        // In a sandbox of its own the pod listens on every address it has,
        // as a server in a Kubernetes pod usually does.
        let listen = if net.is_sandbox() {
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, spec.port))
        } else {
            self.listen_addr(spec, spec.port)
        };
        let config = ServeConfig {
            delay: spec.app.response_delay,
            body_delay: spec.app.body_delay,
            start_delay: spec.app.start_delay,
            net,
            ..ServeConfig::new(listen, spec.pod.clone(), spec.node.clone())
        };
        let handle = Server::start(config)
            .await
            .map_err(|source| RuntimeError::Spawn {
                pod: spec.pod.clone(),
                engine: Engine::Builtin,
                source,
            })?;
        let (exit_tx, exit) = watch::channel(None);
        let exited = handle.exited();
        // The in-process server writes no output of its own.
        let log = ContainerLog::new(0);
        let log_exit = log.clone();
        tokio::spawn(async move {
            let status = match exited.await {
                ServerExit::Graceful | ServerExit::Fast => ContainerExit {
                    code: Some(0),
                    signal: None,
                },
                ServerExit::Killed => ContainerExit {
                    code: None,
                    signal: Some(libc::SIGKILL),
                },
            };
            log_exit.exited();
            let _ = exit_tx.send(Some(status));
        });
        // Where the cluster reaches it: the pod IP, whatever it bound.
        let addr = match handle.addr() {
            a if a.ip().is_unspecified() => SocketAddr::from((spec.ip, a.port())),
            a => a,
        };
        Ok(Container {
            engine: Engine::Builtin,
            stop_signal: None,
            addr,
            inner: Inner::Builtin(handle),
            exit,
            log,
            dir: None,
            registry: self.registry.clone(),
            id: u64::MAX,
            upstream: None,
            reservation: None,
        })
    }

    async fn start_nginx(
        &self,
        nginx: &Path,
        spec: &ContainerSpec,
        id: u64,
    ) -> Result<Container, RuntimeError> {
        let dir = self
            .root
            .path()
            .join(format!("{}_{}-{id}", spec.namespace, spec.pod));
        let prepare = |path: &Path, source| RuntimeError::Prepare {
            pod: spec.pod.clone(),
            path: path.to_path_buf(),
            source,
        };
        let upstream = if spec.app.response_delay.is_zero() && spec.app.body_delay.is_zero() {
            None
        } else {
            Some(self.slow_upstream(spec).await?)
        };
        let upstream_addr = upstream.as_ref().map(ServerHandle::addr);
        if !spec.app.start_delay.is_zero() {
            std::fs::create_dir_all(dir.join("tmp")).map_err(|e| prepare(&dir, e))?;
            let reservation = reserve_port(&self.net_for(spec), self.listen_addr(spec, spec.port))
                .map_err(|e| prepare(&dir, e))?;
            let addr = reservation.local_addr().map_err(|e| prepare(&dir, e))?;
            let conf = dir.join("nginx.conf");
            let text = nginx_config(&dir, addr, &spec.pod, &spec.node, upstream_addr, true);
            std::fs::write(&conf, text).map_err(|e| prepare(&conf, e))?;
            let mut c = self.spawn_nginx(nginx, spec, &dir, &conf, addr, id).await?;
            c.upstream = upstream;
            c.reservation = Some(reservation);
            return Ok(c);
        }
        // Another process may grab the free port between our probe bind and
        // nginx's bind; retry with a fresh port when that happens.
        let mut last_err = None;
        for _ in 0..5 {
            std::fs::create_dir_all(dir.join("tmp")).map_err(|e| prepare(&dir, e))?;
            // The pod's own address and port in a private network: nobody
            // else binds it there.
            let addr = if self.net.is_private() {
                self.listen_addr(spec, spec.port)
            } else {
                SocketAddr::from((
                    Ipv4Addr::LOCALHOST,
                    free_port().map_err(|e| prepare(&dir, e))?,
                ))
            };
            let conf = dir.join("nginx.conf");
            let text = nginx_config(&dir, addr, &spec.pod, &spec.node, upstream_addr, false);
            std::fs::write(&conf, text).map_err(|e| prepare(&conf, e))?;
            match self.spawn_nginx(nginx, spec, &dir, &conf, addr, id).await {
                Ok(mut c) => {
                    c.upstream = upstream;
                    return Ok(c);
                }
                Err(RuntimeError::NginxFailed { log, pod, status })
                    if log.contains("Address already in use") =>
                {
                    last_err = Some(RuntimeError::NginxFailed { log, pod, status });
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.expect("loop ran"))
    }

    /// The app behind a slow nginx: a built-in server with the response
    /// and body delays, which nginx proxies `/` to.
    async fn slow_upstream(&self, spec: &ContainerSpec) -> Result<ServerHandle, RuntimeError> {
        let config = ServeConfig {
            delay: spec.app.response_delay,
            body_delay: spec.app.body_delay,
            net: self.net_for(spec),
            ..ServeConfig::new(
                self.listen_addr(spec, 0),
                spec.pod.clone(),
                spec.node.clone(),
            )
        };
        Server::start(config)
            .await
            .map_err(|source| RuntimeError::Spawn {
                pod: spec.pod.clone(),
                engine: Engine::Builtin,
                source,
            })
    }

    async fn spawn_nginx(
        &self,
        nginx: &Path,
        spec: &ContainerSpec,
        dir: &Path,
        conf: &Path,
        addr: SocketAddr,
        id: u64,
    ) -> Result<Container, RuntimeError> {
        let warm_up = spec.app.start_delay;
        let mut cmd = if warm_up.is_zero() {
            tokio::process::Command::new(nginx)
        } else {
            // PID 1 is a shell sleeping out the warm-up, then nginx itself
            // (exec keeps the pid): a stop signal before that kills it, as
            // it would an app that has no handlers installed yet.
            let mut sh = tokio::process::Command::new("/bin/sh");
            sh.arg("-c")
                .arg(r#"sleep "$0" && exec "$@""#)
                .arg(format!("{:.3}", warm_up.as_secs_f64()))
                .arg(nginx);
            sh
        };
        cmd.arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(conf)
            .args(["-e", "stderr", "-g", "daemon off; master_process on;"])
            .stdout(Stdio::null());
        // nginx's workers start in the cluster's PID namespace, which the
        // kernel empties when the network's helper ends.
        self.net_for(spec).join_before_exec(cmd.as_std_mut(), true);
        let mut container = self.spawn_process(cmd, spec, Engine::Nginx, id)?;
        container.dir = Some(dir.to_path_buf());
        container.addr = addr;
        let (log, mut exit) = (container.log.clone(), container.exit.clone());
        if !warm_up.is_zero() {
            // Started, not listening: that is the point of the warm-up.
            return Ok(container);
        }
        // Ready when it answers, or failed when it exits first.
        let deadline = Instant::now() + NGINX_START_TIMEOUT;
        loop {
            if let Some(status) = *exit.borrow_and_update() {
                return Err(RuntimeError::NginxFailed {
                    pod: spec.pod.clone(),
                    status: format!("{status:?}"),
                    log: log.tail(LOG_TAIL).join("\n"),
                });
            }
            // A full answer, not just a connect: the kernel accepts into the
            // backlog before nginx has set up its signal handlers, and a
            // stop signal in that window would kill it outright.
            let probe = zdt_core::net::http_status(&self.net, addr, "/healthz", "zdt-runtime");
            if let Ok(Ok(200)) = tokio::time::timeout(Duration::from_secs(1), probe).await {
                return Ok(container);
            }
            if Instant::now() > deadline {
                return Err(RuntimeError::NginxTimeout {
                    pod: spec.pod.clone(),
                    addr,
                });
            }
            let _ = tokio::time::timeout(Duration::from_millis(5), exit.changed()).await;
        }
    }

    /// A `workload.run` host command: the program with the container's
    /// env, in the cluster's network (the pod IP is one of its addresses).
    async fn start_host(
        &self,
        key: &str,
        entry: &RunEntry,
        spec: &ContainerSpec,
        id: u64,
    ) -> Result<Container, RuntimeError> {
        let program = entry.program.clone().ok_or_else(|| CommandError::Empty {
            key: key.to_owned(),
        })?;
        let (args, env) = host_command::invocation(&entry.run, &spec.env);
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args).env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        cmd.env("HOSTNAME", &spec.pod).envs(env);
        self.spawn_user(cmd, spec, Engine::Host, id)
    }

    /// zdt's image: the zdt binary with the container's args and env, in
    /// the cluster's network as any user process.
    fn start_zdt(
        &self,
        exe: &Path,
        spec: &ContainerSpec,
        id: u64,
    ) -> Result<Container, RuntimeError> {
        let args =
            super::zdt_image::args(&spec.pod, &spec.image, &spec.command, &spec.args, &spec.env)?;
        let mut cmd = tokio::process::Command::new(exe);
        cmd.args(args).env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        cmd.env("HOSTNAME", &spec.pod)
            .envs(spec.env.iter().cloned());
        self.spawn_user(cmd, spec, Engine::Zdt, id)
    }

    /// An image's entrypoint from its exported root filesystem (chroot),
    /// with the image's env under the container's.
    async fn start_docker(
        &self,
        image: &Image,
        spec: &ContainerSpec,
        id: u64,
    ) -> Result<Container, RuntimeError> {
        let argv = image.argv(&spec.command, &spec.args);
        let env = image.env(&spec.env);
        let Some((program, args)) = argv.split_first() else {
            return Err(RuntimeError::Docker {
                pod: spec.pod.clone(),
                key: spec.container.clone(),
                reason: format!(
                    "image {} has no entrypoint or cmd, and the pod spec gives no `command`",
                    spec.image
                ),
            });
        };
        let program = image
            .find_program(program, &env)
            .map_err(|reason| RuntimeError::Docker {
                pod: spec.pod.clone(),
                key: spec.container.clone(),
                reason,
            })?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .env_clear()
            .env("HOSTNAME", &spec.pod)
            .envs(env);
        let mut c = {
            // The network first (its descriptors are open here), then the
            // image's root: the program path resolves inside it.
            self.net_for(spec).join_before_exec(cmd.as_std_mut(), false);
            image.enter_before_exec(cmd.as_std_mut());
            self.spawn_process(cmd, spec, Engine::Docker, id)?
        };
        c.stop_signal = image.stop_signal;
        Ok(c)
    }

    /// A user's process: in the cluster's network without its PID
    /// namespace (a process whose children go elsewhere cannot start
    /// threads, and most servers do).
    fn spawn_user(
        &self,
        mut cmd: tokio::process::Command,
        spec: &ContainerSpec,
        engine: Engine,
        id: u64,
    ) -> Result<Container, RuntimeError> {
        self.net_for(spec).join_before_exec(cmd.as_std_mut(), false);
        self.spawn_process(cmd, spec, engine, id)
    }

    /// Start `cmd` as a container's PID 1 (it has joined the network
    /// already): its own process group, killed if zdt dies, output kept
    /// for errors, exit watched. Returns at once; the caller decides what
    /// "started" means.
    fn spawn_process(
        &self,
        mut cmd: tokio::process::Command,
        spec: &ContainerSpec,
        engine: Engine,
        id: u64,
    ) -> Result<Container, RuntimeError> {
        if engine != Engine::Nginx {
            cmd.stdout(Stdio::piped());
        }
        cmd.stdin(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group: SIGKILL/SIGSTOP reach the workers too,
            // and a terminal's Ctrl-C does not reach the pods directly.
            .process_group(0);
        // The container is SIGKILLed if zdt dies without cleaning up.
        zdt_core::process::die_with_parent(cmd.as_std_mut());
        zdt_core::process::default_signals(cmd.as_std_mut());
        let mut child = cmd.spawn().map_err(|source| RuntimeError::Spawn {
            pod: spec.pod.clone(),
            engine,
            source,
        })?;
        let pid = child.id().expect("a freshly spawned child has a pid") as i32;
        self.registry
            .groups
            .lock()
            .expect("registry lock")
            .insert(id, pid);

        let streams: Vec<Box<dyn tokio::io::AsyncRead + Send + Unpin>> = [
            child.stderr.take().map(|s| Box::new(s) as _),
            child.stdout.take().map(|s| Box::new(s) as _),
        ]
        .into_iter()
        .flatten()
        .collect();
        let log = ContainerLog::new(streams.len());
        for stream in streams {
            let log = log.clone();
            let pod = spec.pod.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::debug!(pod = %pod, "{engine}: {line}");
                    log.push(line);
                }
                log.writer_done();
            });
        }
        let log_exit = log.clone();

        let (exit_tx, exit) = watch::channel(None);
        let registry = self.registry.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            // The master is gone; take any orphaned worker with it, as a
            // container runtime tears down the container's cgroup, and only
            // then call the container exited: a dying worker still holds
            // the listening socket.
            let members = group_members(pid);
            killpg(pid, libc::SIGKILL);
            let deadline = Instant::now() + Duration::from_secs(5);
            while members.iter().any(|&m| process_live(m)) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            registry.groups.lock().expect("registry lock").remove(&id);
            let status = match status {
                Ok(s) => {
                    use std::os::unix::process::ExitStatusExt;
                    ContainerExit {
                        code: s.code(),
                        signal: s.signal(),
                    }
                }
                Err(_) => ContainerExit {
                    code: None,
                    signal: Some(libc::SIGKILL),
                },
            };
            log_exit.exited();
            let _ = exit_tx.send(Some(status));
        });

        Ok(Container {
            engine,
            stop_signal: None,
            addr: self.listen_addr(spec, spec.port),
            inner: Inner::Process { pid },
            exit,
            log,
            dir: None,
            registry: self.registry.clone(),
            id,
            upstream: None,
            reservation: None,
        })
    }

    /// SIGKILL every container still running; later starts fail. Idempotent.
    pub fn shutdown(&self) {
        self.registry
            .shut_down
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.registry.kill_all();
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.registry.kill_all();
    }
}

/// True for images built from nginx (`nginx`, `nginx:1.27`,
/// `docker.io/library/nginx`, `nginxinc/nginx-unprivileged`).
pub fn is_nginx_image(image: &str) -> bool {
    let name = image.rsplit('/').next().unwrap_or(image);
    let name = name.split(['@', ':']).next().unwrap_or(name);
    name.contains("nginx") || image.contains("/nginx")
}

enum Inner {
    /// A process tree (nginx, a host command, an image's entrypoint).
    Process {
        pid: i32,
    },
    Builtin(ServerHandle),
}

/// A running (or exited) container. Dropping it SIGKILLs what is left.
pub struct Container {
    engine: Engine,
    /// The image's own STOPSIGNAL (docker engine), which the kubelet uses
    /// when the pod spec sets no `lifecycle.stopSignal`.
    stop_signal: Option<i32>,
    addr: SocketAddr,
    inner: Inner,
    exit: watch::Receiver<Option<ContainerExit>>,
    log: Arc<ContainerLog>,
    dir: Option<PathBuf>,
    registry: Arc<Registry>,
    id: u64,
    /// The slow app nginx proxies to (a response delay), paused and
    /// resumed with the container.
    upstream: Option<ServerHandle>,
    /// Holds a warming-up nginx's port until the container is gone.
    reservation: Option<TcpSocket>,
}

impl std::fmt::Debug for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Container")
            .field("engine", &self.engine)
            .field("addr", &self.addr)
            .field("pid", &self.pid())
            .finish_non_exhaustive()
    }
}

impl Container {
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The real socket the container listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The image's STOPSIGNAL, when the engine knows it.
    pub fn image_stop_signal(&self) -> Option<i32> {
        self.stop_signal
    }

    /// The container's PID 1 (None for the in-process server).
    pub fn pid(&self) -> Option<i32> {
        match self.inner {
            Inner::Process { pid } => Some(pid),
            Inner::Builtin(_) => None,
        }
    }

    /// Deliver a signal the way a container runtime does: SIGKILL, SIGSTOP
    /// and SIGCONT to the whole container, anything else to PID 1.
    pub fn signal(&self, signo: i32) {
        if self.exit_status().is_some() {
            return;
        }
        match &self.inner {
            Inner::Process { pid } => match signo {
                libc::SIGKILL | libc::SIGSTOP | libc::SIGCONT => {
                    killpg(*pid, signo);
                    match (&self.upstream, signo) {
                        (Some(u), libc::SIGSTOP) => u.pause(),
                        (Some(u), libc::SIGCONT) => u.resume(),
                        _ => {}
                    }
                }
                _ => {
                    // SAFETY: plain kill(2) on the child we spawned and have
                    // not reaped yet (exit_status() is None).
                    unsafe { libc::kill(*pid, signo) };
                }
            },
            Inner::Builtin(h) => match signo {
                libc::SIGSTOP => h.pause(),
                libc::SIGCONT => h.resume(),
                other => h.signal(Signal::from_number(other)),
            },
        }
    }

    /// Freeze every process of the container (docker pause / SIGSTOP).
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    /// How it ended, once it has.
    pub fn exit_status(&self) -> Option<ContainerExit> {
        *self.exit.borrow()
    }

    /// Resolves when the container has exited (every process gone).
    pub fn exited(&self) -> impl Future<Output = ContainerExit> + Send + 'static {
        let mut rx = self.exit.clone();
        async move {
            match rx.wait_for(Option::is_some).await {
                Ok(v) => v.expect("checked is_some"),
                Err(_) => ContainerExit {
                    code: None,
                    signal: Some(libc::SIGKILL),
                },
            }
        }
    }

    /// The last lines the container's process wrote (nginx: stderr; a
    /// user's process: stdout and stderr; empty for the built-in server).
    pub fn log_tail(&self) -> Vec<String> {
        self.log.tail(LOG_TAIL)
    }

    /// The container's temp dir (nginx only).
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Inner::Process { pid } = self.inner {
            let registered = self
                .registry
                .groups
                .lock()
                .expect("registry lock")
                .remove(&self.id)
                .is_some();
            if registered {
                killpg(pid, libc::SIGKILL);
            }
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        // The built-in server's handle kills it on drop.
    }
}

fn killpg(pgid: i32, signo: i32) {
    if pgid > 1 {
        // SAFETY: signalling a process group we created (pgid == the nginx
        // master's pid, never 0/1 so never our own group or init).
        unsafe { libc::kill(-pgid, signo) };
    }
}

/// `(state, pgrp)` of a process from `/proc/<pid>/stat`.
fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid pgrp …; comm may contain spaces and parens.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let pgrp = fields.nth(1)?.parse().ok()?;
    Some((state, pgrp))
}

/// Processes still running (not zombies) in process group `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| matches!(proc_stat(pid), Some((s, g)) if g == pgid && s != 'Z'))
        .collect()
}

fn process_live(pid: i32) -> bool {
    matches!(proc_stat(pid), Some((s, _)) if s != 'Z' && s != 'X')
}

/// A port for a warming-up nginx: bound with `SO_REUSEPORT` and not
/// listening, so connects are refused, nothing else (not even an outgoing
/// connection's ephemeral port) can take it, and nginx — listening with
/// `reuseport` — can bind it too.
fn reserve_port(net: &Net, addr: SocketAddr) -> io::Result<TcpSocket> {
    let socket = TcpSocket::from_std_stream(net.tcp_socket(&addr)?.into());
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

fn free_port() -> io::Result<u16> {
    Ok(StdListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// nginx's config for one pod: the nginx image's default server answering
/// every path with 200, plus the pod/node headers; with `upstream`, `/` is
/// proxied there instead (the slow app); `reuseport` to share a reserved
/// port.
fn nginx_config(
    dir: &Path,
    addr: SocketAddr,
    pod: &str,
    node: &str,
    upstream: Option<SocketAddr>,
    reuseport: bool,
) -> String {
    let d = dir.display();
    let q = |s: &str| s.replace(['"', '\\', '$'], "_");
    let (pod, node) = (q(pod), q(node));
    let reuseport = if reuseport { " reuseport" } else { "" };
    let (upstream_block, root) = match upstream {
        // Keep-alive to the app: a connection per request would burn
        // loopback ports at thousands of requests per second. Unbuffered:
        // the client gets the app's head when the app sends it.
        Some(app) => (
            format!(
                "upstream zdt_app {{\n        server {app};\n        keepalive 1024;\n    }}\n    "
            ),
            "proxy_pass http://zdt_app;\n            proxy_http_version 1.1;\n            proxy_set_header Connection \"\";\n            proxy_buffering off;\n            proxy_hide_header X-Pod;\n            proxy_hide_header X-Node;".to_owned(),
        ),
        None => (
            String::new(),
            format!("return 200 \"pod {pod} on node {node}\\n\";"),
        ),
    };
    format!(
        r#"# generated by zdt for pod {pod} on node {node}
worker_processes 1;
worker_rlimit_nofile 65536;
user root;
pid {d}/nginx.pid;
error_log stderr notice;
events {{
    worker_connections 32768;
}}
http {{
    access_log off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    default_type text/plain;
    {upstream_block}server {{
        listen {addr} backlog=4096{reuseport};
        add_header X-Pod "{pod}" always;
        add_header X-Node "{node}" always;
        location = /healthz {{
            return 200 "ok\n";
        }}
        location / {{
            {root}
        }}
    }}
}}
"#
    )
}

/// A leftover from a run that died without cleaning up: a runtime temp dir
/// whose creating process is gone, and the nginx masters recorded in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    pub dir: PathBuf,
    pub nginx_pids: Vec<i32>,
}

/// Runtime temp dirs in `$TMPDIR` whose zdt process no longer runs.
/// `zdt clean` kills their nginx process groups and removes them.
pub fn leftovers() -> Vec<Leftover> {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("zdt-") else {
            continue;
        };
        let Some((pid, tail)) = rest.split_once('-') else {
            continue;
        };
        let (Ok(pid), true) = (pid.parse::<i32>(), tail.starts_with("runtime-")) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue; // its run is still alive
        }
        let dir = entry.path();
        let nginx_pids = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|pod| std::fs::read_to_string(pod.path().join("nginx.pid")).ok())
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        out.push(Leftover { dir, nginx_pids });
    }
    out
}

/// Kill a leftover's nginx process groups and remove its dir.
pub fn remove_leftover(leftover: &Leftover) -> io::Result<()> {
    for &pid in &leftover.nginx_pids {
        // Only if it still is an nginx: the pid may have been reused.
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "nginx" {
            killpg(pid, libc::SIGKILL);
        }
    }
    std::fs::remove_dir_all(&leftover.dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_images_are_recognised() {
        for image in [
            "nginx",
            "nginx:1.27",
            "docker.io/library/nginx:1.27-alpine",
            "nginxinc/nginx-unprivileged:stable",
            "nginx@sha256:abc",
        ] {
            assert!(is_nginx_image(image), "{image}");
        }
        for image in ["zdt:latest", "registry.k8s.io/pause:3.9", "busybox"] {
            assert!(!is_nginx_image(image), "{image}");
        }
    }

    #[test]
    fn nginx_config_has_headers_and_high_connection_limit() {
        let conf = nginx_config(
            Path::new("/tmp/x"),
            "127.0.0.1:8080".parse().unwrap(),
            "web-1",
            "worker\"2",
            None,
            false,
        );
        assert!(conf.contains("listen 127.0.0.1:8080"));
        assert!(conf.contains(r#"add_header X-Pod "web-1" always;"#));
        assert!(conf.contains(r#"add_header X-Node "worker_2" always;"#));
        assert!(conf.contains("worker_connections 32768;"));
        assert!(conf.contains("pid /tmp/x/nginx.pid;"));
    }

    #[test]
    fn slow_app_config_proxies_and_shares_the_reserved_port() {
        let conf = nginx_config(
            Path::new("/tmp/x"),
            "127.0.0.1:8080".parse().unwrap(),
            "web-1",
            "w",
            Some("127.0.0.1:9090".parse().unwrap()),
            true,
        );
        assert!(
            conf.contains("listen 127.0.0.1:8080 backlog=4096 reuseport;"),
            "{conf}"
        );
        assert!(conf.contains("server 127.0.0.1:9090;"), "{conf}");
        assert!(conf.contains("proxy_pass http://zdt_app;"), "{conf}");
        // The app's own pod headers would double nginx's.
        assert!(conf.contains("proxy_hide_header X-Pod;"), "{conf}");
        // A body delay must reach the client as head first, body later.
        assert!(conf.contains("proxy_buffering off;"), "{conf}");
        assert!(!conf.contains("return 200 \"pod"), "{conf}");
    }

    #[test]
    fn leftovers_of_dead_runs_are_found_and_removed() {
        // A pid above the kernel's maximum: that run is surely gone.
        let dir = tempfile::Builder::new()
            .prefix("zdt-2147483000-runtime-")
            .tempdir()
            .unwrap()
            .keep();
        let pod = dir.join("default_web-0");
        std::fs::create_dir_all(&pod).unwrap();
        std::fs::write(pod.join("nginx.pid"), "2147483001\n").unwrap();
        let found: Vec<Leftover> = leftovers().into_iter().filter(|l| l.dir == dir).collect();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].nginx_pids, vec![2147483001]);
        remove_leftover(&found[0]).unwrap();
        assert!(!dir.exists());
        // Our own live runtime is not a leftover.
        let own = tempfile::Builder::new()
            .prefix(&format!("zdt-{}-runtime-", std::process::id()))
            .tempdir()
            .unwrap();
        assert!(leftovers().iter().all(|l| l.dir != own.path()));
    }

    #[test]
    fn exit_codes_follow_kubernetes() {
        let killed = ContainerExit {
            code: None,
            signal: Some(9),
        };
        assert_eq!(killed.exit_code(), 137);
        assert!(!killed.success());
        let ok = ContainerExit {
            code: Some(0),
            signal: None,
        };
        assert!(ok.success());
    }
}
