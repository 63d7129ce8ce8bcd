//! The kind provider: real multi-node Kubernetes in Docker through the `kind`
//! CLI (<https://kind.sigs.k8s.io>).
//!
//! A cluster's *shape* (worker count + node image, or a user's own kind
//! config file) is hashed into its name, `zdt-<hash>`, so a second scenario
//! with the same shape finds the cluster with `kind get clusters` and reuses
//! it instead of paying creation again. The hash is also a node label
//! ([`CONFIG_HASH_LABEL`]) so `kubectl get nodes -L zdt.io/config-hash`
//! shows which shape a cluster was made from.
//!
//! Every `kind` invocation goes through [`KindCli::run`], which keeps the
//! command line and its output in the error (as kind's own exec package
//! does), and turns a missing binary into an install hint, not a panic.
//!
//! This module is built to kind's documented interfaces (config
//! `kind.x-k8s.io/v1alpha4`, `kind create|delete|get` flags, node images by
//! digest from kind's release notes); it is tested here against a recorded
//! fake `kind`, not against real kind (see `docs/kind.md`).

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::docker::{self, DockerError, NodeFault, KIND_NETWORK};

/// The kind release zdt is written and pinned against (CI installs exactly
/// this one; see `.github/workflows/nightly.yml`).
pub const KIND_VERSION: &str = "v0.31.0";

/// Where `kind` install instructions live.
pub const INSTALL_URL: &str = "https://kind.sigs.k8s.io/docs/user/quick-start/#installation";

/// Node label carrying the shape hash (same hash as in the cluster name).
pub const CONFIG_HASH_LABEL: &str = "zdt.io/config-hash";

/// Every cluster zdt creates is named with this prefix; `zdt clean` deletes
/// only these.
pub const CLUSTER_PREFIX: &str = "zdt-";

/// How long every node may take to be Ready once `kind create cluster
/// --wait` returned: kind's `--wait` covers the control plane only, and
/// workers join (CNI, kubelet) after it.
pub const NODES_READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(180);

/// Names a directory: before zdt deletes a kind cluster it runs `kind
/// export logs DIR/<cluster> --name <cluster>` (the nightly sets it, so a
/// cluster deleted at a variant's end leaves its evidence).
pub const LOGS_ENV: &str = "ZDT_KIND_LOGS";

/// How long `kind create cluster --wait` waits for the control plane.
pub const CREATE_WAIT: &str = "120s";

/// Kubernetes minor version → kindest/node image pinned by digest, and the
/// kind release whose notes list it. kind only guarantees an image with the
/// kind release it was built for ("You _must_ use the `@sha256` digest");
/// images from older releases are best effort with newer kind, which is why
/// the release is kept next to each entry.
const NODE_IMAGES: &[(&str, &str, &str)] = &[
    (
        "1.35",
        "kindest/node:v1.35.0@sha256:452d707d4862f52530247495d180205e029056831160e22870e37e3f6c1ac31f",
        "v0.31.0",
    ),
    (
        "1.34",
        "kindest/node:v1.34.3@sha256:08497ee19eace7b4b5348db5c6a1591d7752b164530a36f855cb0f2bdcbadd48",
        "v0.31.0",
    ),
    (
        "1.33",
        "kindest/node:v1.33.7@sha256:d26ef333bdb2cbe9862a0f7c3803ecc7b4303d8cea8e814b481b09949d353040",
        "v0.31.0",
    ),
    (
        "1.32",
        "kindest/node:v1.32.11@sha256:5fc52d52a7b9574015299724bd68f183702956aa4a2116ae75a63cb574b35af8",
        "v0.31.0",
    ),
    (
        "1.31",
        "kindest/node:v1.31.14@sha256:6f86cf509dbb42767b6e79debc3f2c32e4ee01386f0489b3b2be24b0a55aac2b",
        "v0.31.0",
    ),
    (
        "1.30",
        "kindest/node:v1.30.13@sha256:397209b3d947d154f6641f2d0ce8d473732bd91c87d9575ade99049aa33cd648",
        "v0.29.0",
    ),
    (
        "1.29",
        "kindest/node:v1.29.14@sha256:8703bd94ee24e51b778d5556ae310c6c0fa67d761fae6379c8e0bb480e6fea29",
        "v0.27.0",
    ),
    (
        "1.28",
        "kindest/node:v1.28.15@sha256:a7c05c7ae043a0b8c818f5a06188bc2c4098f6cb59ca7d1856df00375d839251",
        "v0.25.0",
    ),
    (
        "1.27",
        "kindest/node:v1.27.16@sha256:2d21a61643eafc439905e18705b8186f3296384750a835ad7a005dceb9546d20",
        "v0.25.0",
    ),
];

/// Errors of the kind provider. Each names what failed and how to fix it.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[non_exhaustive]
pub enum KindError {
    /// `cluster.kubernetes` names a version with no pinned node image.
    #[error("no kindest/node image pinned for Kubernetes {requested:?}")]
    #[diagnostic(
        code(zdt::kind::unsupported_version),
        help("set `cluster.kubernetes` to one of: {supported}; or give `cluster.kindConfig` a kind config file with your own `image:`")
    )]
    UnsupportedVersion {
        requested: String,
        supported: String,
    },

    /// The `kind` binary is not on PATH.
    #[error("`kind` is not installed or not on PATH (tried to run `{command}`)")]
    #[diagnostic(
        code(zdt::kind::not_installed),
        help("install kind {KIND_VERSION}: {INSTALL_URL} — or use `cluster.provider: emulator`")
    )]
    NotInstalled { command: String },

    /// `kind` ran and failed: the command line and all it printed.
    #[error("`{command}` failed ({status})\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}")]
    #[diagnostic(code(zdt::kind::command_failed), help("{hint}"))]
    CommandFailed {
        command: String,
        status: String,
        stdout: String,
        stderr: String,
        hint: String,
    },

    /// Reading or writing the cluster's files (config, kubeconfig).
    #[error("{what} {path}: {source}")]
    #[diagnostic(code(zdt::kind::io))]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A user's kind config file that zdt cannot use.
    #[error("kind config {path}: {message}")]
    #[diagnostic(
        code(zdt::kind::config_file),
        help("see https://kind.sigs.k8s.io/docs/user/configuration/ and clusters/kind-3-workers.yaml")
    )]
    ConfigFile { path: PathBuf, message: String },

    /// The kubeconfig kind wrote could not be turned into a client.
    #[error("cannot load context {context:?} from the kubeconfig kind wrote at {path}: {message}")]
    #[diagnostic(
        code(zdt::kind::kubeconfig),
        help("`kind get kubeconfig --name {cluster}` shows what kind has for this cluster")
    )]
    Kubeconfig {
        cluster: String,
        context: String,
        path: PathBuf,
        message: String,
    },

    /// A node container operation failed.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Docker(#[from] DockerError),

    /// A node container with no address on the kind network.
    #[error("node {node} of cluster {cluster} has no address on the `kind` network")]
    #[diagnostic(
        code(zdt::kind::node_without_address),
        help("the node container is stopped or disconnected: `docker start {node}` or `docker network connect kind {node}`")
    )]
    NodeWithoutAddress { cluster: String, node: String },

    /// The run was interrupted while kind was working; a cluster it was
    /// creating has been deleted again.
    #[error("interrupted while {doing}")]
    #[diagnostic(code(zdt::kind::interrupted))]
    Interrupted { doing: String },

    /// The API server did not list the nodes (the control plane is up once
    /// `kind create cluster --wait` returns, so this is not waited out).
    #[error("listing the nodes of kind cluster {cluster}: {source}")]
    #[diagnostic(code(zdt::kind::list_nodes))]
    ListNodes {
        cluster: String,
        #[source]
        source: Box<kube::Error>,
    },

    /// Nodes that did not become Ready in time; `waiting` names each and
    /// why.
    #[error("kind cluster {cluster}: nodes not Ready after {timeout:?}: {waiting}")]
    #[diagnostic(
        code(zdt::kind::nodes_not_ready),
        help("`kubectl --context kind-{cluster} describe nodes` shows why; `kind export logs --name {cluster}` collects the kubelets' logs")
    )]
    NodesNotReady {
        cluster: String,
        timeout: std::time::Duration,
        waiting: String,
    },

    /// A node name that is not one of this cluster's node containers.
    #[error("cluster {cluster} has no node {node:?} (nodes: {known})")]
    #[diagnostic(code(zdt::kind::unknown_node))]
    UnknownNode {
        cluster: String,
        node: String,
        known: String,
    },
}

pub type Result<T, E = KindError> = std::result::Result<T, E>;

/// The Kubernetes versions with a pinned node image, newest first.
pub fn supported_versions() -> Vec<&'static str> {
    NODE_IMAGES.iter().map(|(v, _, _)| *v).collect()
}

/// The pinned `kindest/node:vX.Y.Z@sha256:…` image for a Kubernetes version
/// given as `1.31`, `v1.31` or the exact patch `1.31.14`.
pub fn node_image(version: &str) -> Result<&'static str> {
    let v = version.trim().trim_start_matches('v');
    let mut parts = v.split('.');
    let minor = match (parts.next(), parts.next()) {
        (Some(a), Some(b)) => format!("{a}.{b}"),
        _ => String::new(),
    };
    let patch = parts.next();
    let unsupported = || KindError::UnsupportedVersion {
        requested: version.to_owned(),
        supported: supported_versions().join(", "),
    };
    let (_, image, _) = NODE_IMAGES
        .iter()
        .find(|(m, _, _)| *m == minor)
        .ok_or_else(unsupported)?;
    // A patch version is only accepted when it is the one pinned: silently
    // running another patch would make results lie about what was tested.
    if let Some(patch) = patch {
        if !image.starts_with(&format!("kindest/node:v{minor}.{patch}@")) {
            return Err(unsupported());
        }
    }
    Ok(image)
}

/// The kind release whose notes list the node image for `version`.
pub fn node_image_release(version: &str) -> Result<&'static str> {
    let image = node_image(version)?;
    Ok(NODE_IMAGES
        .iter()
        .find(|(_, i, _)| *i == image)
        .map(|(_, _, r)| *r)
        .unwrap_or(KIND_VERSION))
}

/// What kind cluster a scenario needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindSpec {
    /// Worker nodes besides the one control-plane node.
    pub workers: usize,
    /// Kubernetes version, e.g. `"1.31"` (see [`supported_versions`]).
    pub kubernetes: String,
    /// A user's own kind config (e.g. from `clusters/`), used verbatim
    /// instead of the generated one.
    pub config_file: Option<PathBuf>,
}

impl KindSpec {
    pub fn new(workers: usize, kubernetes: impl Into<String>) -> Self {
        Self {
            workers,
            kubernetes: kubernetes.into(),
            config_file: None,
        }
    }

    /// The kind config text `kind create cluster --config` gets; see
    /// [`render_config`].
    pub fn config_text(&self) -> Result<String> {
        render_config(self)
    }
}

/// FNV-1a 64: stable across Rust versions and machines (std's hasher is
/// not), so the same shape gives the same cluster name everywhere.
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Short hex hash of a config text (10 hex digits: 40 bits is plenty to
/// keep a handful of local cluster shapes apart).
pub fn config_hash(text: &str) -> String {
    format!("{:016x}", fnv1a64(text.as_bytes()))[..10].to_owned()
}

/// The shape text the hash is taken over: the config without the hash label
/// (which cannot contain its own hash).
fn shape_text(spec: &KindSpec, image: &str) -> String {
    render_nodes(spec.workers, image, None)
}

fn render_nodes(workers: usize, image: &str, hash: Option<&str>) -> String {
    let mut out = String::from("kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnodes:\n");
    let roles = std::iter::once("control-plane").chain(std::iter::repeat_n("worker", workers));
    for role in roles {
        let _ = writeln!(out, "- role: {role}\n  image: {image}");
        if let Some(hash) = hash {
            let _ = writeln!(out, "  labels:\n    {CONFIG_HASH_LABEL}: \"{hash}\"");
        }
    }
    out
}

/// The config text and its shape hash.
fn prepare(spec: &KindSpec) -> Result<(String, String)> {
    let image = node_image(&spec.kubernetes)?;
    let release = node_image_release(&spec.kubernetes)?;
    match &spec.config_file {
        None => {
            let hash = config_hash(&shape_text(spec, image));
            let mut out = format!(
                "# Generated by zdt for {} worker(s), Kubernetes {} (node image from kind {release}).\n\
                 # The cluster is named zdt-{hash}: the same shape reuses the same cluster.\n",
                spec.workers, spec.kubernetes
            );
            out.push_str(&render_nodes(spec.workers, image, Some(&hash)));
            Ok((out, hash))
        }
        Some(path) => prepare_file(spec, path, image, release),
    }
}

/// A user's kind config (e.g. `clusters/kind-3-workers.yaml`) with the
/// pinned node image filled into every node that names none — so
/// `cluster.kubernetes` decides the version — and the shape-hash label added.
fn prepare_file(
    spec: &KindSpec,
    path: &Path,
    image: &str,
    release: &str,
) -> Result<(String, String)> {
    let bad = |message: String| KindError::ConfigFile {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|source| KindError::Io {
        what: "cannot read kind config",
        path: path.to_owned(),
        source,
    })?;
    let mut doc: serde_json::Value =
        serde_saphyr::from_str(&text).map_err(|e| bad(format!("not YAML: {e}")))?;
    if doc["kind"] != "Cluster" || doc["apiVersion"] != "kind.x-k8s.io/v1alpha4" {
        return Err(bad(
            "expected `kind: Cluster` and `apiVersion: kind.x-k8s.io/v1alpha4`".into(),
        ));
    }
    if doc.get("nodes").is_none() {
        // kind's default: a single control-plane node.
        doc["nodes"] = serde_json::json!([{"role": "control-plane"}]);
    }
    let Some(nodes) = doc["nodes"].as_array_mut() else {
        return Err(bad("`nodes` must be a list".into()));
    };
    let workers = nodes.iter().filter(|n| n["role"] == "worker").count();
    if workers != spec.workers {
        return Err(bad(format!(
            "it has {workers} worker node(s) but the scenario's cluster.workers is {}; make them agree",
            spec.workers
        )));
    }
    for node in nodes.iter_mut() {
        let Some(obj) = node.as_object_mut() else {
            return Err(bad("every entry of `nodes` must be a mapping".into()));
        };
        obj.entry("image").or_insert_with(|| image.into());
    }
    let hash = config_hash(&doc.to_string());
    for node in doc["nodes"].as_array_mut().into_iter().flatten() {
        let labels = node
            .as_object_mut()
            .map(|o| o.entry("labels").or_insert_with(|| serde_json::json!({})));
        match labels.and_then(|l| l.as_object_mut()) {
            Some(l) => {
                l.insert(CONFIG_HASH_LABEL.into(), hash.clone().into());
            }
            None => return Err(bad("a node's `labels` must be a mapping".into())),
        }
    }
    // Every string quoted and on one line: kind reads YAML 1.1 (go-yaml),
    // where an unquoted hash like `1e10` would turn into a number.
    let options = serde_saphyr::ser_options! { quote_all: true, prefer_block_scalars: false };
    let yaml =
        serde_saphyr::to_string_with_options(&doc, options).map_err(|e| bad(e.to_string()))?;
    let out = format!(
        "# {} with zdt's node image for Kubernetes {} (kind {release}) and shape label.\n\
         # The cluster is named zdt-{hash}: the same shape reuses the same cluster.\n{yaml}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        spec.kubernetes
    );
    Ok((out, hash))
}

/// The kind config for `spec`: generated (one control-plane node and
/// `workers` workers on the pinned node image), or the user's config file
/// with the pinned image filled in where a node names none. Either way every
/// node is labelled with the shape hash.
pub fn render_config(spec: &KindSpec) -> Result<String> {
    prepare(spec).map(|(text, _)| text)
}

/// `zdt-<short hash>` of the cluster's shape.
pub fn cluster_name(spec: &KindSpec) -> Result<String> {
    prepare(spec).map(|(_, hash)| format!("{CLUSTER_PREFIX}{hash}"))
}

/// The kubeconfig context kind writes for a cluster.
pub fn context_name(cluster: &str) -> String {
    format!("kind-{cluster}")
}

/// What a `kind` invocation printed.
#[derive(Debug, Clone)]
pub struct KindOutput {
    pub stdout: String,
    pub stderr: String,
}

/// The one way zdt runs `kind`.
#[derive(Debug, Clone)]
pub struct KindCli {
    program: OsString,
    path: Option<OsString>,
}

impl Default for KindCli {
    /// `kind` from PATH, or the binary named by `ZDT_KIND`.
    fn default() -> Self {
        Self {
            program: std::env::var_os("ZDT_KIND").unwrap_or_else(|| "kind".into()),
            path: None,
        }
    }
}

impl KindCli {
    /// `kind` looked up on the given PATH instead of the process's (tests put
    /// a recorded fake first).
    pub fn on_path(path: impl Into<OsString>) -> Self {
        Self {
            program: "kind".into(),
            path: Some(path.into()),
        }
    }

    /// A specific binary.
    pub fn program(program: impl Into<OsString>) -> Self {
        Self {
            program: program.into(),
            path: None,
        }
    }

    /// The command line as a user would type it (for errors and logs).
    pub fn command_line(&self, args: &[&str]) -> String {
        let mut line = self.program.to_string_lossy().into_owned();
        for a in args {
            line.push(' ');
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '"') {
                let _ = write!(line, "{a:?}");
            } else {
                line.push_str(a);
            }
        }
        line
    }

    /// Run `kind ARGS…`; on failure the error carries the command line, the
    /// exit status and everything it printed.
    pub async fn run(&self, args: &[&str]) -> Result<KindOutput> {
        let command = self.command_line(args);
        tracing::info!(%command, "running kind");
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(path) = &self.path {
            cmd.env("PATH", path);
        }
        let output = match cmd.output().await {
            Ok(o) => o,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KindError::NotInstalled { command })
            }
            Err(e) => {
                return Err(KindError::CommandFailed {
                    command,
                    status: format!("could not start: {e}"),
                    stdout: String::new(),
                    stderr: String::new(),
                    hint: format!(
                        "check that the kind binary is executable; install: {INSTALL_URL}"
                    ),
                })
            }
        };
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if !output.status.success() {
            let hint = failure_hint(&stdout, &stderr);
            return Err(KindError::CommandFailed {
                command,
                status: output.status.to_string(),
                stdout,
                stderr,
                hint,
            });
        }
        Ok(KindOutput { stdout, stderr })
    }

    /// Cluster names `kind get clusters` lists (kind prints "No kind clusters
    /// found." on stderr when there are none).
    pub async fn get_clusters(&self) -> Result<Vec<String>> {
        let out = self.run(&["get", "clusters"]).await?;
        Ok(out
            .stdout
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// `kind delete cluster --name NAME --kubeconfig KUBECONFIG`, blocking,
    /// output discarded: for a panic's unwinding, where nothing async can
    /// run any more.
    fn delete_cluster_blocking(&self, name: &str, kubeconfig: &Path) {
        let mut cmd = std::process::Command::new(&self.program);
        cmd.args(["delete", "cluster", "--name", name, "--kubeconfig"])
            .arg(kubeconfig)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(path) = &self.path {
            cmd.env("PATH", path);
        }
        let _ = cmd.status();
    }

    /// `kind delete cluster --name NAME --kubeconfig FILE`, FILE being a
    /// kubeconfig of zdt's own. Without `--kubeconfig`, kind locks and
    /// edits `$KUBECONFIG` or `~/.kube/config` (the user's), and a stale
    /// `config.lock` there makes the delete fail after the nodes are gone
    /// (kind v0.31.0, pkg/cluster/internal/delete). A file that does not
    /// exist is fine: kind reads it as empty and writes nothing.
    pub async fn delete_cluster_with(&self, name: &str, kubeconfig: &Path) -> Result<()> {
        let kubeconfig = kubeconfig.to_string_lossy();
        self.run(&[
            "delete",
            "cluster",
            "--name",
            name,
            "--kubeconfig",
            &kubeconfig,
        ])
        .await
        .map(drop)
    }

    /// [`delete_cluster_with`](KindCli::delete_cluster_with) a kubeconfig
    /// path in a fresh temp dir of zdt's (`zdt clean`, which holds no
    /// kubeconfig of the cluster).
    pub async fn delete_cluster(&self, name: &str) -> Result<()> {
        let dir = zdt_core::process::temp_dir("kind-delete").map_err(|source| KindError::Io {
            what: "cannot create a temp dir under",
            path: std::env::temp_dir(),
            source,
        })?;
        self.delete_cluster_with(name, &dir.path().join("kubeconfig"))
            .await
    }

    /// `kind export logs DIR --name NAME`: the nodes' journals, container
    /// runtime and pod logs, for evidence before a cluster is deleted.
    pub async fn export_logs(&self, name: &str, dir: &Path) -> Result<()> {
        let dir = dir.to_string_lossy();
        self.run(&["export", "logs", &dir, "--name", name])
            .await
            .map(drop)
    }
}

/// The docker network kind puts the nodes on: `kind`, or what
/// `KIND_EXPERIMENTAL_DOCKER_NETWORK` names (kind v0.31.0 and
/// cloud-provider-kind v0.9.0 both honour it, so zdt must look there too).
pub fn docker_network() -> String {
    network_from(std::env::var("KIND_EXPERIMENTAL_DOCKER_NETWORK").ok())
}

fn network_from(var: Option<String>) -> String {
    var.filter(|n| !n.is_empty())
        .unwrap_or_else(|| KIND_NETWORK.to_owned())
}

/// The most likely fix for a failed kind command, from what it printed.
fn failure_hint(stdout: &str, stderr: &str) -> String {
    let all = format!("{stdout}\n{stderr}").to_lowercase();
    if all.contains("docker") && (all.contains("daemon") || all.contains("not found")) {
        "kind needs a running Docker Engine: start it (`docker info` must answer), see https://docs.docker.com/engine/install/".into()
    } else if all.contains("already exist") {
        "a cluster or container with this name is left over: `zdt clean` removes zdt's clusters"
            .into()
    } else if all.contains("cgroup") {
        "the node image needs cgroup v2 for Kubernetes ≥ 1.35; pick an older `cluster.kubernetes` or move the host to cgroup v2".into()
    } else if all.contains("pull") || all.contains("manifest") {
        "the node image could not be pulled: without a registry, `docker load` the pinned kindest/node image first (docs/kind.md, air-gapped)".into()
    } else {
        "rerun the command above by hand with `-v 3` for details; `kind export logs` collects node logs".into()
    }
}

/// A node of a kind cluster as the LB and node faults need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindNode {
    /// Kubernetes node name = docker container name (kind names both alike).
    pub name: String,
    /// `control-plane` or `worker` (kind's `io.x-k8s.kind.role` label).
    pub role: String,
    /// The node's InternalIP: its address on the `kind` docker network.
    pub internal_ip: Ipv4Addr,
    pub container_id: String,
}

impl KindNode {
    pub fn control_plane(&self) -> bool {
        self.role == "control-plane"
    }

    /// kind's `worker` role (not a control plane, not the
    /// `external-load-balancer` or `external-etcd` containers).
    pub fn worker(&self) -> bool {
        self.role == "worker"
    }
}

/// A kind cluster zdt created or reused.
#[derive(Debug)]
pub struct KindCluster {
    name: String,
    spec: KindSpec,
    kind: KindCli,
    keep: bool,
    created: bool,
    /// Set by [`KindCluster::teardown`]; a handle dropped without it while
    /// panicking deletes the cluster on the way out.
    settled: bool,
    kubeconfig: PathBuf,
    /// The docker network of the nodes ([`docker_network`]).
    network: String,
    // Node InternalIPs as first seen: a disconnected node has none, and
    // Resume must reconnect it with the same one.
    known_ips: std::sync::Mutex<HashMap<String, Ipv4Addr>>,
    // Holds the kubeconfig and rendered config; removed with the cluster
    // handle (`zdt clean` removes it if the process died first).
    _dir: tempfile::TempDir,
}

impl KindCluster {
    /// Create the cluster for `spec`, or reuse it when `kind get clusters`
    /// already lists its name. `keep` leaves it running after [`teardown`].
    ///
    /// [`teardown`]: KindCluster::teardown
    pub async fn up(spec: KindSpec, keep: bool) -> Result<KindCluster> {
        Self::up_with(KindCli::default(), spec, keep).await
    }

    /// [`up`](KindCluster::up) with a given `kind` binary.
    pub async fn up_with(kind: KindCli, spec: KindSpec, keep: bool) -> Result<KindCluster> {
        Self::up_until(
            kind,
            spec,
            keep,
            &tokio_util::sync::CancellationToken::new(),
        )
        .await
    }

    /// [`up_with`](KindCluster::up_with) that stops when `cancel` fires: the
    /// running `kind` is killed, and a cluster it was creating is deleted
    /// (`kind delete cluster` removes whatever nodes exist); a reused one
    /// is left alone. Returns [`KindError::Interrupted`] then.
    pub async fn up_until(
        kind: KindCli,
        spec: KindSpec,
        keep: bool,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<KindCluster> {
        let interrupted = |doing: &str| KindError::Interrupted {
            doing: doing.to_owned(),
        };
        let config = spec.config_text()?;
        let name = cluster_name(&spec)?;
        let dir = zdt_core::process::temp_dir("kind").map_err(|source| KindError::Io {
            what: "cannot create a temp dir under",
            path: std::env::temp_dir(),
            source,
        })?;
        let kubeconfig = dir.path().join("kubeconfig");
        let existing = tokio::select! {
            r = kind.get_clusters() => r?,
            _ = cancel.cancelled() => return Err(interrupted("listing kind clusters")),
        };
        let created = if existing.contains(&name) {
            tracing::info!(cluster = %name, "reusing kind cluster of the same shape");
            let get_kubeconfig = ["get", "kubeconfig", "--name", &name];
            let out = tokio::select! {
                r = kind.run(&get_kubeconfig) => r?,
                _ = cancel.cancelled() => return Err(interrupted("reading the kubeconfig")),
            };
            write_file(&kubeconfig, &out.stdout, "cannot write kubeconfig")?;
            false
        } else {
            let config_path = dir.path().join("kind-config.yaml");
            write_file(&config_path, &config, "cannot write kind config")?;
            let config_arg = config_path.to_string_lossy().into_owned();
            let kubeconfig_arg = kubeconfig.to_string_lossy().into_owned();
            let args = [
                "create",
                "cluster",
                "--name",
                &name,
                "--config",
                &config_arg,
                "--wait",
                CREATE_WAIT,
                "--kubeconfig",
                &kubeconfig_arg,
            ];
            let create = kind.run(&args);
            tokio::select! {
                r = create => { r?; }
                _ = cancel.cancelled() => {
                    // The create future is gone, and kind with it
                    // (kill_on_drop); remove the nodes it made so far.
                    if let Err(e) = kind.delete_cluster_with(&name, &kubeconfig).await {
                        tracing::warn!("deleting the interrupted kind cluster {name}: {e}");
                    }
                    return Err(interrupted(&format!("creating kind cluster {name}")));
                }
            }
            true
        };
        Ok(KindCluster {
            name,
            spec,
            kind,
            keep,
            created,
            settled: false,
            kubeconfig,
            network: docker_network(),
            known_ips: Default::default(),
            _dir: dir,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn spec(&self) -> &KindSpec {
        &self.spec
    }

    /// The docker network its nodes are on.
    pub fn network(&self) -> &str {
        &self.network
    }

    /// Whether [`teardown`](KindCluster::teardown) leaves the cluster running.
    pub fn keep(&self) -> bool {
        self.keep
    }

    /// Whether this handle created the cluster (false: reused).
    pub fn created(&self) -> bool {
        self.created
    }

    /// The kubeconfig kind wrote for this cluster.
    /// The `kind` binary this cluster is driven with.
    pub fn cli(&self) -> &KindCli {
        &self.kind
    }

    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// `kind-<name>`.
    pub fn context(&self) -> String {
        context_name(&self.name)
    }

    /// The worker node names kind gives this cluster's workers:
    /// `<name>-worker`, `<name>-worker2`, … (kind names the n-th node of a
    /// role `<cluster>-<role>` then `<cluster>-<role>N`).
    pub fn worker_names(&self) -> Vec<String> {
        (1..=self.spec.workers)
            .map(|i| match i {
                1 => format!("{}-worker", self.name),
                n => format!("{}-worker{n}", self.name),
            })
            .collect()
    }

    /// A kube client from the kubeconfig kind wrote, context `kind-<name>`.
    pub async fn client(&self) -> Result<kube::Client> {
        let context = self.context();
        let err = |message: String| KindError::Kubeconfig {
            cluster: self.name.clone(),
            context: context.clone(),
            path: self.kubeconfig.clone(),
            message,
        };
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)
            .map_err(|e| err(e.to_string()))?;
        let options = kube::config::KubeConfigOptions {
            context: Some(context.clone()),
            ..Default::default()
        };
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| err(e.to_string()))?;
        // As on every provider: PDB refusals (429) of evictions must reach
        // the drain code, not be retried away inside kube-rs.
        config.default_retry = false;
        kube::Client::try_from(config).map_err(|e| err(e.to_string()))
    }

    /// The cluster's nodes (control plane first, then workers by name) with
    /// their InternalIPs, from the node containers on the `kind` network.
    pub async fn nodes(&self) -> Result<Vec<KindNode>> {
        let docker = docker::connect().await?;
        let containers = docker::kind_nodes(&docker, &self.name, &self.network).await?;
        let mut known = self.known_ips.lock().unwrap_or_else(|p| p.into_inner());
        let mut nodes = Vec::with_capacity(containers.len());
        for c in containers {
            let ip = c
                .ipv4
                .or_else(|| known.get(&c.name).copied())
                .ok_or_else(|| KindError::NodeWithoutAddress {
                    cluster: self.name.clone(),
                    node: c.name.clone(),
                })?;
            known.insert(c.name.clone(), ip);
            nodes.push(KindNode {
                name: c.name,
                role: c.role,
                internal_ip: ip,
                container_id: c.id,
            });
        }
        nodes.sort_by(|a, b| (!a.control_plane(), &a.name).cmp(&(!b.control_plane(), &b.name)));
        Ok(nodes)
    }

    /// A node fault as a docker operation on the node's container.
    pub async fn node_fault(&self, node: &str, fault: NodeFault) -> Result<()> {
        let docker = docker::connect().await?;
        let nodes = docker::kind_nodes(&docker, &self.name, &self.network).await?;
        let Some(container) = nodes.iter().find(|n| n.name == node) else {
            return Err(KindError::UnknownNode {
                cluster: self.name.clone(),
                node: node.to_owned(),
                known: nodes
                    .iter()
                    .map(|n| n.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let mut container = container.clone();
        {
            let mut known = self.known_ips.lock().unwrap_or_else(|p| p.into_inner());
            match container.ipv4 {
                Some(ip) => {
                    known.insert(container.name.clone(), ip);
                }
                None => container.ipv4 = known.get(&container.name).copied(),
            }
        }
        docker::node_fault(&docker, &container, &self.network, fault).await?;
        Ok(())
    }

    /// `kind delete cluster --name …`, unless the cluster is kept.
    pub async fn teardown(mut self) -> Result<()> {
        self.settled = true;
        if self.keep {
            tracing::info!(
                cluster = %self.name,
                "keeping kind cluster; delete it with `kind delete cluster --name {}` or `zdt clean`",
                self.name
            );
            return Ok(());
        }
        if let Some(dir) = std::env::var_os(LOGS_ENV) {
            // Evidence first: once the nodes are gone, so are their logs.
            let dir = PathBuf::from(dir).join(&self.name);
            if let Err(e) = self.kind.export_logs(&self.name, &dir).await {
                tracing::warn!("kind export logs for {} failed: {e}", self.name);
            }
        }
        self.kind
            .delete_cluster_with(&self.name, &self.kubeconfig)
            .await
    }
}

impl Drop for KindCluster {
    fn drop(&mut self) {
        // A panic inside a variant unwinds past the executor's teardown:
        // delete the cluster here rather than leave it for `zdt clean`.
        if !self.settled && !self.keep && std::thread::panicking() {
            tracing::warn!(cluster = %self.name, "panic: deleting kind cluster");
            self.kind
                .delete_cluster_blocking(&self.name, &self.kubeconfig);
        }
    }
}

fn write_file(path: &Path, text: &str, what: &'static str) -> Result<()> {
    std::fs::write(path, text).map_err(|source| KindError::Io {
        what,
        path: path.to_owned(),
        source,
    })
}

/// What keeps a cluster from being ready for a run: nodes whose `Ready`
/// condition is not True (with its reason and message), and workers that
/// have not registered yet (`workers` of them are expected; a worker is a
/// node without the control-plane role label). `None` when all is ready.
pub fn nodes_not_ready(
    nodes: &[k8s_openapi::api::core::v1::Node],
    workers: usize,
) -> Option<String> {
    let mut waiting = Vec::new();
    let mut registered = 0;
    for node in nodes {
        let name = node.metadata.name.as_deref().unwrap_or("?");
        let control_plane = node
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key("node-role.kubernetes.io/control-plane"));
        if !control_plane {
            registered += 1;
        }
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
        match ready {
            Some(c) if c.status == "True" => {}
            Some(c) => waiting.push(format!(
                "{name} Ready={} ({}: {})",
                c.status,
                c.reason.as_deref().unwrap_or("no reason"),
                c.message.as_deref().unwrap_or("no message")
            )),
            None => waiting.push(format!("{name} has no Ready condition yet")),
        }
    }
    if registered < workers {
        waiting.push(format!(
            "{registered} of {workers} worker node(s) registered"
        ));
    }
    (!waiting.is_empty()).then(|| waiting.join("; "))
}

/// Wait until every node of the cluster is Ready and `workers` workers
/// have registered, at most `timeout`. An API error ends the wait at once:
/// the control plane answered before this is called.
pub async fn wait_nodes_ready(
    client: &kube::Client,
    cluster: &str,
    workers: usize,
    timeout: std::time::Duration,
) -> Result<()> {
    let api: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let list = api
            .list(&Default::default())
            .await
            .map_err(|e| KindError::ListNodes {
                cluster: cluster.to_owned(),
                source: Box::new(e),
            })?;
        let Some(waiting) = nodes_not_ready(&list.items, workers) else {
            return Ok(());
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(KindError::NodesNotReady {
                cluster: cluster.to_owned(),
                timeout,
                waiting,
            });
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// Why a Service cannot be put behind zdt's LB (yet): what it lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LbBackendsError {
    #[error("Service {service} has no spec")]
    NoSpec { service: String },
    /// No port of that name (`None`: no port at all).
    #[error("Service {service} has no port {}", port.as_deref().unwrap_or("at all"))]
    NoPort {
        service: String,
        port: Option<String>,
    },
    #[error(
        "Service {service} port {port} has no nodePort yet: is it type LoadBalancer or NodePort?"
    )]
    NoNodePort { service: String, port: i32 },
    #[error(
        "Service {service} is externalTrafficPolicy: Local but has no healthCheckNodePort yet"
    )]
    NoHealthCheckNodePort { service: String },
}

/// The backends of zdt's LB container for a Service on kind, as the cloud
/// controllers build them: every worker's `InternalIP:NodePort`, probed over
/// HTTP on the Service's `healthCheckNodePort` for
/// `externalTrafficPolicy: Local`, else on kube-proxy's `:10256/healthz`.
/// `port_name` picks a Service port (default: the first).
pub fn lb_backends(
    nodes: &[KindNode],
    service: &k8s_openapi::api::core::v1::Service,
    port_name: Option<&str>,
) -> std::result::Result<Vec<zdt_lb::BackendConfig>, LbBackendsError> {
    let name = || service.metadata.name.clone().unwrap_or_else(|| "?".into());
    let spec = service
        .spec
        .as_ref()
        .ok_or_else(|| LbBackendsError::NoSpec { service: name() })?;
    let port = spec
        .ports
        .iter()
        .flatten()
        .find(|p| port_name.is_none_or(|n| p.name.as_deref() == Some(n)))
        .ok_or_else(|| LbBackendsError::NoPort {
            service: name(),
            port: port_name.map(str::to_owned),
        })?;
    let node_port = port.node_port.ok_or_else(|| LbBackendsError::NoNodePort {
        service: name(),
        port: port.port,
    })?;
    let local = spec.external_traffic_policy.as_deref() == Some("Local");
    let probe_port = if local {
        spec.health_check_node_port
            .ok_or_else(|| LbBackendsError::NoHealthCheckNodePort { service: name() })?
    } else {
        10256
    };
    // Workers only: with two or more control planes kind adds a container
    // with role `external-load-balancer` (haproxy in front of the API
    // servers), labelled like a node; it serves no NodePort.
    Ok(nodes
        .iter()
        .filter(|n| n.worker())
        .map(|n| zdt_lb::BackendConfig {
            name: n.name.clone(),
            address: format!("{}:{node_port}", n.internal_ip),
            probe: Some(format!("http://{}:{probe_port}/healthz", n.internal_ip)),
        })
        .collect())
}

/// An address range for MetalLB's L2 pool inside the kind network's IPv4
/// subnet: the top of the subnet (`.200`–`.250` of its last /24), far from
/// the low addresses docker hands to node containers.
pub fn metallb_pool(subnet: Ipv4Addr, prefix: u8) -> Option<(Ipv4Addr, Ipv4Addr)> {
    if prefix > 24 {
        return None;
    }
    let base = u32::from(subnet) & (u32::MAX << (32 - u32::from(prefix)));
    let last_24 = base | ((1u32 << (32 - u32::from(prefix))) - 1) & !0xff;
    Some((Ipv4Addr::from(last_24 | 200), Ipv4Addr::from(last_24 | 250)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_image_accepts_minor_v_prefix_and_exact_patch() {
        let img = node_image("1.31").unwrap();
        assert!(img.starts_with("kindest/node:v1.31.14@sha256:"), "{img}");
        assert_eq!(node_image("v1.31").unwrap(), img);
        assert_eq!(node_image("1.31.14").unwrap(), img);
        assert!(node_image("1.27").unwrap().contains("v1.27.16@sha256:"));
    }

    #[test]
    fn every_image_is_pinned_by_a_full_sha256_digest() {
        for (minor, image, release) in NODE_IMAGES {
            let (tag, digest) = image.split_once("@sha256:").expect(image);
            assert!(
                tag.starts_with(&format!("kindest/node:v{minor}.")),
                "{image}"
            );
            assert_eq!(digest.len(), 64, "{image}");
            assert!(digest.bytes().all(|b| b.is_ascii_hexdigit()), "{image}");
            assert!(release.starts_with("v0."), "{release}");
        }
    }

    #[test]
    fn unsupported_version_lists_the_supported_ones() {
        for bad in ["1.22", "1.31.2", "latest", ""] {
            let err = node_image(bad).unwrap_err();
            let KindError::UnsupportedVersion { supported, .. } = &err else {
                panic!("{err:?}")
            };
            assert!(
                supported.contains("1.27") && supported.contains("1.35"),
                "{supported}"
            );
        }
    }

    #[test]
    fn same_shape_same_name_other_shape_other_name() {
        let a = cluster_name(&KindSpec::new(3, "1.31")).unwrap();
        assert_eq!(a, cluster_name(&KindSpec::new(3, "v1.31")).unwrap());
        assert!(a.starts_with("zdt-") && a.len() == 14, "{a}");
        assert_ne!(a, cluster_name(&KindSpec::new(2, "1.31")).unwrap());
        assert_ne!(a, cluster_name(&KindSpec::new(3, "1.27")).unwrap());
    }

    #[test]
    fn rendered_label_carries_the_hash_in_the_name() {
        let spec = KindSpec::new(2, "1.31");
        let text = render_config(&spec).unwrap();
        let name = cluster_name(&spec).unwrap();
        let hash = name.trim_start_matches("zdt-");
        assert_eq!(
            text.matches(&format!("zdt.io/config-hash: \"{hash}\""))
                .count(),
            3
        );
    }

    #[test]
    fn the_network_is_kinds_unless_kind_is_told_another() {
        // What KIND_EXPERIMENTAL_DOCKER_NETWORK holds, as kind reads it.
        assert_eq!(network_from(None), "kind");
        assert_eq!(network_from(Some(String::new())), "kind");
        assert_eq!(network_from(Some("ci-net".into())), "ci-net");
    }

    #[test]
    fn command_line_quotes_what_a_shell_would_split() {
        let k = KindCli::program("kind");
        assert_eq!(
            k.command_line(&["create", "cluster", "--config", "/tmp/a b.yaml"]),
            "kind create cluster --config \"/tmp/a b.yaml\""
        );
    }

    fn node(name: &str, role: &str, ip: &str) -> KindNode {
        KindNode {
            name: name.into(),
            role: role.into(),
            internal_ip: ip.parse().unwrap(),
            container_id: format!("id-{name}"),
        }
    }

    #[test]
    fn lb_backends_are_workers_at_the_node_port_probed_like_the_cloud() {
        let nodes = [
            node("zdt-x-control-plane", "control-plane", "172.18.0.2"),
            node("zdt-x-control-plane2", "control-plane", "172.18.0.5"),
            // kind's haproxy in front of two or more API servers.
            node(
                "zdt-x-external-load-balancer",
                "external-load-balancer",
                "172.18.0.6",
            ),
            node("zdt-x-worker", "worker", "172.18.0.3"),
            node("zdt-x-worker2", "worker", "172.18.0.4"),
        ];
        let svc = |policy: &str, hc: Option<i32>| -> k8s_openapi::api::core::v1::Service {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "nginx"},
                "spec": {"type": "LoadBalancer", "externalTrafficPolicy": policy,
                         "healthCheckNodePort": hc,
                         "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}
            }))
            .unwrap()
        };
        let local = lb_backends(&nodes, &svc("Local", Some(31234)), None).unwrap();
        let names: Vec<&str> = local.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(
            names,
            ["zdt-x-worker", "zdt-x-worker2"],
            "control planes and kind's haproxy are no backends"
        );
        assert_eq!(local[0].name, "zdt-x-worker");
        assert_eq!(local[0].address, "172.18.0.3:30080");
        assert_eq!(
            local[0].probe.as_deref(),
            Some("http://172.18.0.3:31234/healthz")
        );
        let cluster = lb_backends(&nodes, &svc("Cluster", None), Some("http")).unwrap();
        assert_eq!(
            cluster[1].probe.as_deref(),
            Some("http://172.18.0.4:10256/healthz")
        );
        let err = lb_backends(&nodes, &svc("Local", None), None).unwrap_err();
        assert_eq!(
            err,
            LbBackendsError::NoHealthCheckNodePort {
                service: "nginx".into()
            }
        );
        let err = err.to_string();
        assert!(err.contains("healthCheckNodePort"), "{err}");
        assert_eq!(
            lb_backends(&nodes, &svc("Cluster", None), Some("grpc"))
                .unwrap_err()
                .to_string(),
            "Service nginx has no port grpc"
        );
    }

    #[test]
    fn metallb_pool_sits_at_the_top_of_the_kind_subnet() {
        let (a, b) = metallb_pool("172.18.0.0".parse().unwrap(), 16).unwrap();
        assert_eq!(a, "172.18.255.200".parse::<Ipv4Addr>().unwrap());
        assert_eq!(b, "172.18.255.250".parse::<Ipv4Addr>().unwrap());
        let (a, _) = metallb_pool("10.89.0.0".parse().unwrap(), 24).unwrap();
        assert_eq!(a, "10.89.0.200".parse::<Ipv4Addr>().unwrap());
        assert!(metallb_pool("10.0.0.0".parse().unwrap(), 28).is_none());
    }
}
