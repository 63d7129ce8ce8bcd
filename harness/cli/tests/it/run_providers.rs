//! `zdt run` on the kind and existing providers, through the real binary, at
//! the boundaries that exist here: a recorded fake `kind` on PATH
//! (`tests/data/kind/fake-kind`, a test double that logs its argv and prints
//! canned kind output — it creates nothing, and its kubeconfig points at an
//! API server that is not there) and kubeconfig files. No real cluster is
//! involved: these tests check which commands run, what is refused, and that
//! what was created is deleted — not any result on kind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A private copy of the fake kind (`<root>/bin/kind`, state in
/// `<root>/state`), a scratch dir for the scenario and reports, and the
/// API server the fake's kubeconfigs name.
struct Sandbox {
    root: tempfile::TempDir,
    api: NodesApi,
}

impl Sandbox {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        for d in ["bin", "state", "tmp", "empty"] {
            std::fs::create_dir_all(root.path().join(d)).unwrap();
        }
        let src =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../cluster/tests/data/kind/fake-kind");
        std::fs::copy(src, root.path().join("bin/kind")).unwrap();
        // kind's own dependency, docker, as a fake beside it: the workload's
        // image is local, so zdt's image check passes without a registry.
        let docker = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../cluster/tests/data/kind/fake-docker");
        std::fs::copy(&docker, root.path().join("bin/docker")).unwrap();
        std::fs::write(
            root.path().join("state/local-images"),
            "nginx:1.27\n", /* manifests/nginx */
        )
        .unwrap();
        let api = NodesApi::start();
        std::fs::write(root.path().join("state/server"), api.url()).unwrap();
        Self { root, api }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("state/argv.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// A one-variant scenario on `provider` with the repo's nginx manifests.
    fn scenario(&self, provider: &str, extra: &str) -> PathBuf {
        let manifests = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../manifests/nginx");
        let text = format!(
            "apiVersion: zdt/v1alpha1\nkind: Scenario\nname: wiring\n\
             cluster:\n  provider: {provider}\n  kubernetes: \"1.31\"\n  workers: 2\n{extra}\
             workload:\n  manifests: {}\n\
             traffic:\n  rate: 10/s\n  duration: 5s\n",
            manifests.display()
        );
        let path = self.path(&format!("{provider}.yaml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `zdt run FILE ARGS…` with the fake kind first on PATH (or, when
    /// `with_kind` is false, a PATH where no kind exists).
    fn run(&self, file: &Path, args: &[&str], with_kind: bool) -> Output {
        self.run_env(file, args, with_kind, &[])
    }

    fn run_env(
        &self,
        file: &Path,
        args: &[&str],
        with_kind: bool,
        envs: &[(&str, &str)],
    ) -> Output {
        let bin = if with_kind { "bin" } else { "empty" };
        let path = format!(
            "{}:{}",
            self.path(bin).display(),
            if with_kind {
                std::env::var("PATH").unwrap_or_default()
            } else {
                // Nothing else: no kind can be found anywhere.
                String::new()
            }
        );
        Command::new(env!("CARGO_BIN_EXE_zdt"))
            .arg("run")
            .arg(file)
            .arg("--out")
            .arg(self.path("out"))
            .args(args)
            .env("PATH", path)
            .env("TMPDIR", self.path("tmp"))
            .env_remove("ZDT_KIND")
            .env_remove("KUBECONFIG")
            .env("HOME", self.path("tmp"))
            .envs(envs.iter().copied())
            .output()
            .unwrap()
    }

    fn reasons(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.path("out/summary.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["variants"][0]["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_owned())
            .collect()
    }

    /// `line` is `kind delete cluster --name NAME --kubeconfig FILE` with
    /// FILE a kubeconfig of zdt's own (under the run's TMPDIR), never the
    /// user's: without `--kubeconfig` kind locks and edits ~/.kube/config.
    fn assert_delete(&self, line: &str, name: &str) {
        let prefix = format!("delete cluster --name {name} --kubeconfig ");
        let file = line
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("{line:?} is not `{prefix}FILE`"));
        assert!(
            Path::new(file).starts_with(self.path("tmp"))
                && Path::new(file).ends_with("kubeconfig")
                && !Path::new(file).starts_with(self.path("tmp/.kube")),
            "{line}"
        );
    }

    fn events(&self) -> String {
        std::fs::read_to_string(self.path("out/events.jsonl")).unwrap_or_default()
    }
}

/// A stub API server for the fake kind's clusters: `GET /api/v1/nodes`
/// lists a control plane and two workers, all Ready (what the kind
/// provider waits for before anything else); every other request gets a
/// 404 Status, so a run goes on to fail at the workload apply, as a
/// cluster without the API would. Counts the node lists; stopped on drop.
struct NodesApi {
    addr: std::net::SocketAddr,
    node_lists: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NodesApi {
    fn start() -> Self {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let node_lists = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (lists, stopped) = (node_lists.clone(), stop.clone());
        let node = |name: &str, control_plane: bool| {
            let labels = if control_plane {
                serde_json::json!({"node-role.kubernetes.io/control-plane": ""})
            } else {
                serde_json::json!({})
            };
            serde_json::json!({"metadata": {"name": name, "labels": labels},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
        };
        let nodes = serde_json::json!({"apiVersion": "v1", "kind": "NodeList",
            "metadata": {"resourceVersion": "1"},
            "items": [node("cp", true), node("w1", false), node("w2", false)]})
        .to_string();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut s) = stream else { continue };
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&req);
                let (status, body) = if head.starts_with("GET /api/v1/nodes") {
                    lists.fetch_add(1, Ordering::SeqCst);
                    ("200 OK", nodes.clone())
                } else {
                    (
                        "404 Not Found",
                        r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#
                            .to_owned(),
                    )
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self {
            addr,
            node_lists,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn node_lists(&self) -> usize {
        self.node_lists.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for NodesApi {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = std::net::TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Everything the run printed, with miette's line wrapping and frame
/// characters undone, so messages can be matched whole.
fn text(o: &Output) -> String {
    let all = format!(
        "exit {:?} --- stdout --- {} --- stderr --- {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    all.replace(['│', '×'], " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// What loading manifests/nginx's image into cluster `name` asks of kind:
/// its nodes (the fake docker says none has the image), then one load.
fn loads_nginx(name: &str) -> [String; 2] {
    [
        format!("get nodes --name {name}"),
        format!("load docker-image nginx:1.27 --name {name}"),
    ]
}

fn cluster_name(calls: &[String]) -> String {
    let create = calls
        .iter()
        .find(|c| c.starts_with("create cluster --name "))
        .unwrap_or_else(|| panic!("no create in {calls:?}"));
    create.split_whitespace().nth(3).unwrap().to_owned()
}

#[test]
fn kind_run_creates_the_cluster_and_deletes_it_even_when_the_variant_fails() {
    let sb = Sandbox::new();
    let file = sb.scenario("kind", "");
    let out = sb.run(&file, &[], true);
    // The fake's kubeconfig points at no API server: the workload cannot be
    // applied, the variant is INVALID (exit 3), and the cluster still goes.
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let calls = sb.calls();
    let name = cluster_name(&calls);
    assert!(name.starts_with("zdt-") && name.len() == 14, "{name}");
    assert_eq!(calls[0], "get clusters", "{calls:?}");
    let create: Vec<&str> = calls[1].split(' ').collect();
    assert_eq!(
        (create[0], create[1], create[4], create[6], create[7], create[8]),
        (
            "create",
            "cluster",
            "--config",
            "--wait",
            "120s",
            "--kubeconfig"
        ),
        "{calls:?}"
    );
    // The workload's image, local but on no node, is loaded before the apply.
    assert_eq!(calls[2..4], loads_nginx(&name), "{calls:?}");
    // The kubeconfig kind wrote at create is the one the delete names.
    assert_eq!(
        calls[4],
        format!("delete cluster --name {name} --kubeconfig {}", create[9])
    );
    assert_eq!(calls.len(), 5, "{calls:?}");
    let config = std::fs::read_to_string(sb.path(&format!("state/config-{name}.yaml"))).unwrap();
    assert_eq!(config.matches("- role: worker").count(), 2, "{config}");
    assert!(config.contains("kindest/node:v1.31.14@sha256:"), "{config}");
    let reasons = sb.reasons();
    assert!(
        reasons.iter().any(|r| r.starts_with("workload:")),
        "{reasons:?}"
    );
    // Before the workload, the run waited for the nodes to be Ready.
    assert!(sb.api.node_lists() >= 1, "the nodes were never listed");
    assert!(
        sb.events()
            .contains(&format!("kind cluster {name} deleted")),
        "{}",
        sb.events()
    );
}

#[test]
fn a_panic_inside_a_kind_variant_still_deletes_the_cluster() {
    let sb = Sandbox::new();
    let file = sb.scenario("kind", "");
    // The variant panics as it enters the workload phase, with the
    // cluster up: the unwinding handle must delete it.
    let out = sb.run_env(&file, &[], true, &[("ZDT_FAILPOINT", "workload apply")]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let calls = sb.calls();
    let name = cluster_name(&calls);
    sb.assert_delete(calls.last().unwrap(), &name);
    let reasons = sb.reasons();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("zdt failed inside this variant") && r.contains("failpoint")),
        "{reasons:?}"
    );
}

#[test]
fn keep_cluster_leaves_it_and_the_next_run_reuses_it() {
    let sb = Sandbox::new();
    let file = sb.scenario("kind", "");
    let first = sb.run(&file, &["--keep-cluster"], true);
    assert_eq!(first.status.code(), Some(3), "{}", text(&first));
    let calls = sb.calls();
    let name = cluster_name(&calls);
    assert_eq!(calls[2..], loads_nginx(&name), "{calls:?}");
    assert_eq!(calls.len(), 4, "no delete with --keep-cluster: {calls:?}");
    assert!(
        sb.events().contains("kept (--keep-cluster)"),
        "{}",
        sb.events()
    );

    // The kept cluster's owner marker outlives the run: it is what tells
    // `zdt clean` the cluster is zdt's (skipped without Docker).
    let markers = |name: &str| -> Option<Vec<zdt_cluster::kind_owner::Marker>> {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let d = zdt_cluster::docker::connect().await.ok()?;
            let all = zdt_cluster::kind_owner::list(&d).await.unwrap();
            Some(all.into_iter().filter(|m| m.cluster == name).collect())
        })
    };
    if let Some(kept) = markers(&name) {
        assert!(
            kept.iter().any(|m| m.created
                && m.owner
                    .as_ref()
                    .is_some_and(|o| matches!(o.liveness(), zdt_core::owner::Liveness::Gone(_)))),
            "{kept:?}"
        );
    } else {
        eprintln!("skipped the owner-marker checks: no Docker Engine answers");
    }

    let second = sb.run(&file, &[], true);
    assert_eq!(second.status.code(), Some(3), "{}", text(&second));
    if let Some(left) = markers(&name) {
        assert!(
            left.is_empty(),
            "deleting the cluster removes its markers: {left:?}"
        );
    }
    let calls = sb.calls();
    assert_eq!(
        calls[4..6],
        [
            "get clusters".to_owned(),
            format!("get kubeconfig --name {name}"),
        ],
        "a second run of the same shape reuses the cluster: {calls:?}"
    );
    assert_eq!(calls.len(), 7, "{calls:?}");
    sb.assert_delete(&calls[6], &name);
}

#[test]
fn a_stale_lock_on_the_users_kubeconfig_does_not_fail_the_delete() {
    // kind locks the kubeconfig it edits by creating <file>.lock; one left
    // by a killed kubectl or kind makes `kind delete cluster` without
    // --kubeconfig fail after the nodes are gone (the fake does as kind
    // v0.31.0 does). HOME is the sandbox's tmp/ here.
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.path("tmp/.kube")).unwrap();
    std::fs::write(sb.path("tmp/.kube/config.lock"), "").unwrap();
    let file = sb.scenario("kind", "");
    let out = sb.run(&file, &[], true);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let calls = sb.calls();
    let name = cluster_name(&calls);
    sb.assert_delete(calls.last().unwrap(), &name);
    let left = std::fs::read_to_string(sb.path("state/clusters")).unwrap();
    assert!(left.trim().is_empty(), "cluster left: {left}");
    let events = sb.events();
    assert!(
        events.contains(&format!("kind cluster {name} deleted")),
        "{events}"
    );
    let locked = std::fs::read_to_string(sb.path("state/kubeconfig-locks")).unwrap();
    assert!(!locked.contains(".kube/config"), "{locked}");
    assert!(
        !sb.path("tmp/.kube/config").exists(),
        "~/.kube/config written"
    );
}

#[test]
fn missing_kind_fails_the_variant_with_the_install_link() {
    let sb = Sandbox::new();
    let file = sb.scenario("kind", "");
    let out = sb.run(&file, &[], false);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let reasons = sb.reasons().join("\n");
    assert!(
        reasons
            .contains("`kind` is not installed or not on PATH (tried to run `kind get clusters`)"),
        "{reasons}"
    );
    assert!(
        reasons.contains("https://kind.sigs.k8s.io/docs/user/quick-start/#installation"),
        "{reasons}"
    );
    assert!(sb.calls().is_empty());
}

#[test]
fn a_failing_kind_create_keeps_its_command_line_and_output_in_the_reason() {
    let sb = Sandbox::new();
    std::fs::write(sb.path("state/fail"), "create cluster").unwrap();
    let file = sb.scenario("kind", "");
    let out = sb.run(&file, &[], true);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let reasons = sb.reasons().join("\n");
    let name = cluster_name(&sb.calls());
    assert!(
        reasons.contains(&format!("`kind create cluster --name {name} --config ")),
        "{reasons}"
    );
    assert!(
        reasons.contains("canned failure from the fake kind"),
        "{reasons}"
    );
    assert!(reasons.contains("--- stderr ---"), "{reasons}");
}

#[test]
fn lb_modes_other_than_model_need_kind() {
    let sb = Sandbox::new();
    let file = sb.scenario("emulator", "");
    let out = sb.run(&file, &["--lb-mode", "metallb"], true);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("loadBalancer mode `metallb` needs the kind provider, not emulator"),
        "{}",
        text(&out)
    );
    let out = sb.run(&file, &["--lb-mode", "haproxy"], true);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("use model, metallb or cloud-provider-kind"),
        "{}",
        text(&out)
    );
    // On kind, but with an LB admin step: refused before anything runs,
    // naming the variant and how to run the others.
    let kind = sb.scenario(
        "kind",
        "chaos:\n  - name: pick\n    at: 2s\n    lbRemoveBackend:\n      node: {hostingPod: {app: nginx}}\n",
    );
    let out = sb.run(&kind, &["--lb-mode", "cloud-provider-kind"], true);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains(
            "chaos step `pick` (lbRemoveBackend) needs zdt's LB (`--lb-mode model`): cloud-provider-kind has no admin API"
        ),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("variant `default`: chaos step `pick`")
            && text(&out)
                .contains("`zdt validate --list-variants --lb-mode cloud-provider-kind FILE`"),
        "{}",
        text(&out)
    );
    assert!(sb.calls().is_empty(), "nothing ran: {:?}", sb.calls());
}

/// What the nightly does in the MetalLB and cloud-provider-kind modes: of a
/// file whose `lb-first` variant needs zdt's LB, `--variant` runs the other
/// one; an unknown name is refused, listing the real ones.
#[test]
fn variant_selects_what_runs_behind_an_lb_without_admin_api() {
    let sb = Sandbox::new();
    let file = sb.scenario(
        "kind",
        "variants:\n  - name: plain\n    patch: {}\n  - name: lb-first\n    patch:\n      chaos:\n        - name: pick\n          at: 2s\n          lbRemoveBackend:\n            node: {hostingPod: {app: nginx}}\n",
    );
    let out = sb.run(&file, &["--lb-mode", "metallb"], true);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out)
            .contains("variant `lb-first`: chaos step `pick` (lbRemoveBackend) needs zdt's LB"),
        "{}",
        text(&out)
    );
    assert!(sb.calls().is_empty(), "nothing ran: {:?}", sb.calls());

    let out = sb.run(&file, &["--lb-mode", "metallb", "--variant", "nope"], true);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        // (miette may wrap the list; `text` keeps the break as a space)
        text(&out).contains("no variant `nope`; the variants are plain, lb-"),
        "{}",
        text(&out)
    );
    assert!(sb.calls().is_empty(), "nothing ran: {:?}", sb.calls());

    // `plain` alone gets past the check and runs on (the fake) kind: the
    // workload cannot be applied there (INVALID), and the cluster goes.
    let out = sb.run(&file, &["--lb-mode", "metallb", "--variant", "plain"], true);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let calls = sb.calls();
    let name = cluster_name(&calls);
    sb.assert_delete(calls.last().unwrap(), &name);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sb.path("out/summary.json")).unwrap())
            .unwrap();
    let ran: Vec<&str> = summary["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(ran, ["plain"]);
}

/// A kubeconfig with contexts `prod` (current) and `staging`, both at an
/// address nothing listens on: the refusals must come before any request.
fn kubeconfig(sb: &Sandbox) -> PathBuf {
    let text = "apiVersion: v1\nkind: Config\ncurrent-context: prod\n\
        clusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:9\n\
        contexts:\n- name: prod\n  context: {cluster: c, user: u}\n- name: staging\n  context: {cluster: c, user: u}\n\
        users:\n- name: u\n  user: {token: t}\n";
    let path = sb.path("kubeconfig");
    std::fs::write(&path, text).unwrap();
    path
}

const DRAIN: &str =
    "chaos:\n  - name: drain-one\n    at: 2s\n    drain:\n      node: {hostingPod: {app: nginx}}\n";

#[test]
fn existing_without_context_on_the_command_line_is_refused_before_anything_runs() {
    let sb = Sandbox::new();
    let kc = kubeconfig(&sb);
    let file = sb.scenario("emulator", DRAIN);
    let out = Command::new(env!("CARGO_BIN_EXE_zdt"))
        .arg("run")
        .arg(&file)
        .args(["--provider", "existing", "--out"])
        .arg(sb.path("out"))
        .env("KUBECONFIG", &kc)
        .env("TMPDIR", sb.path("tmp"))
        .output()
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(
        all.contains(
            "refusing disruptive steps on context \"prod\": it was not named on the command line"
        ),
        "{all}"
    );
    assert!(all.contains("--context prod"), "{all}");
    assert!(!sb.path("out/summary.json").exists(), "nothing may run");
}

#[test]
fn existing_with_a_named_context_missing_from_allow_contexts_is_refused() {
    let sb = Sandbox::new();
    let kc = kubeconfig(&sb);
    // --context alone (no --provider) selects the existing provider.
    let file = sb.scenario("emulator", DRAIN);
    let out = Command::new(env!("CARGO_BIN_EXE_zdt"))
        .arg("run")
        .arg(&file)
        .args(["--context", "staging", "--out"])
        .arg(sb.path("out"))
        .env("KUBECONFIG", &kc)
        .env("TMPDIR", sb.path("tmp"))
        .output()
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(
        all.contains("the scenario's cluster.allowContexts [] does not list it"),
        "{all}"
    );
    assert!(all.contains("allowContexts: [\"staging\"]"), "{all}");
}

#[test]
fn existing_with_the_context_named_and_allowed_gets_past_the_check() {
    let sb = Sandbox::new();
    let kc = kubeconfig(&sb);
    let file = sb.scenario("emulator", &format!("  allowContexts: [staging]\n{DRAIN}"));
    let out = Command::new(env!("CARGO_BIN_EXE_zdt"))
        .arg("run")
        .arg(&file)
        .args(["--provider", "existing", "--context", "staging", "--out"])
        .arg(sb.path("out"))
        .env("KUBECONFIG", &kc)
        .env("TMPDIR", sb.path("tmp"))
        .output()
        .unwrap();
    // Allowed: the run goes on to the cluster, which is not there (INVALID).
    let all = text(&out);
    assert_eq!(out.status.code(), Some(3), "{all}");
    let reasons = sb.reasons().join("\n");
    assert!(
        reasons.contains("listing the nodes of context \"staging\""),
        "{reasons}"
    );
}

#[test]
fn ctrl_c_during_kind_create_kills_kind_and_deletes_the_half_made_cluster() {
    use std::time::{Duration, Instant};
    let sb = Sandbox::new();
    std::fs::write(sb.path("state/delay-create"), "30").unwrap();
    let file = sb.scenario("kind", "");
    let log = std::fs::File::create(sb.path("zdt.log")).unwrap();
    let mut child = crate::zdt_child()
        .arg("run")
        .arg(&file)
        .arg("--out")
        .arg(sb.path("out"))
        .env(
            "PATH",
            format!(
                "{}:{}",
                sb.path("bin").display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("TMPDIR", sb.path("tmp"))
        .env_remove("ZDT_KIND")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !sb.calls().iter().any(|c| c.starts_with("create cluster")) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "kind create never started: {:?}",
            sb.calls()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: signalling the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(25) {
            let _ = child.kill();
            panic!("zdt did not stop on SIGINT during kind create (the fake create sleeps 30 s)");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let printed = std::fs::read_to_string(sb.path("zdt.log")).unwrap();
    assert_eq!(status.code(), Some(3), "{printed}");
    let calls = sb.calls();
    let name = cluster_name(&calls);
    sb.assert_delete(calls.last().unwrap(), &name);
    let reasons = sb.reasons();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("interrupted during cluster start")),
        "{reasons:?}"
    );
}
