//! The exact `kind` command lines zdt runs, through a recorded fake `kind`
//! on PATH (`tests/data/kind/fake-kind`, a test double that logs its argv
//! and prints canned kind output — it creates nothing).

use std::path::{Path, PathBuf};
use std::process::Command;

use miette::Diagnostic;
use zdt_cluster::clean::{describe, execute, CleanPlan, Found};
use zdt_cluster::kind::{
    cluster_name, render_config, KindCli, KindCluster, KindError, KindSpec, INSTALL_URL,
};
use zdt_core::owner::Liveness;

/// A private copy of the fake kind: `<root>/bin/kind`, state in `<root>/state`.
pub(crate) struct FakeKind {
    root: tempfile::TempDir,
}

impl FakeKind {
    pub(crate) fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("bin")).unwrap();
        std::fs::create_dir_all(root.path().join("state")).unwrap();
        let src =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../cluster/tests/data/kind/fake-kind");
        let dst = root.path().join("bin/kind");
        std::fs::copy(src, &dst).unwrap();
        let docker = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../cluster/tests/data/kind/fake-docker");
        std::fs::copy(docker, root.path().join("bin/docker")).unwrap();
        Self { root }
    }

    pub(crate) fn path_env(&self) -> String {
        format!(
            "{}:{}",
            self.root.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    pub(crate) fn cli(&self) -> KindCli {
        KindCli::on_path(self.path_env())
    }

    pub(crate) fn state(&self, file: &str) -> PathBuf {
        self.root.path().join("state").join(file)
    }

    pub(crate) fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.state("argv.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The kubeconfig files `kind delete cluster` locked (and would edit).
    fn locked(&self) -> Vec<String> {
        std::fs::read_to_string(self.state("kubeconfig-locks"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn set_clusters(&self, names: &[&str]) {
        let mut text = names.join("\n");
        text.push('\n');
        std::fs::write(self.state("clusters"), text).unwrap();
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[tokio::test]
async fn up_creates_then_a_second_up_reuses_and_teardown_deletes() {
    let fake = FakeKind::new();
    let spec = KindSpec::new(3, "1.31");
    let name = cluster_name(&spec).unwrap();

    let first = KindCluster::up_with(fake.cli(), spec.clone(), true)
        .await
        .unwrap();
    assert!(first.created());
    assert_eq!(first.name(), name);
    assert_eq!(first.context(), format!("kind-{name}"));
    let dir = first.kubeconfig_path().parent().unwrap().to_owned();
    assert!(
        dir.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&format!("zdt-{}-", std::process::id())),
        "temp dir must carry the owning pid for `zdt clean`: {}",
        dir.display()
    );
    assert_eq!(
        fake.calls(),
        vec![
            "get clusters".to_owned(),
            format!(
                "create cluster --name {name} --config {} --wait 120s --kubeconfig {}",
                s(&dir.join("kind-config.yaml")),
                s(first.kubeconfig_path())
            ),
        ]
    );
    // The config kind got is the generated one.
    let given = std::fs::read_to_string(fake.state(&format!("config-{name}.yaml"))).unwrap();
    assert_eq!(given, render_config(&spec).unwrap());
    // The client comes from the kubeconfig kind wrote, context kind-<name>.
    let client = first.client().await.unwrap();
    assert_eq!(client.default_namespace(), "default");

    // Same shape: found by `kind get clusters`, never created again.
    let second = KindCluster::up_with(fake.cli(), spec.clone(), false)
        .await
        .unwrap();
    assert!(!second.created());
    assert_eq!(second.name(), name);
    let calls = fake.calls();
    assert_eq!(
        calls[2..],
        [
            "get clusters".to_owned(),
            format!("get kubeconfig --name {name}")
        ]
    );
    assert_eq!(calls.iter().filter(|c| c.starts_with("create")).count(), 1);
    let kubeconfig = std::fs::read_to_string(second.kubeconfig_path()).unwrap();
    assert!(kubeconfig.contains(&format!("current-context: kind-{name}")));
    second.client().await.unwrap();

    // Kept: no delete. Not kept: `kind delete cluster --name … --kubeconfig`
    // with the handle's own kubeconfig, the only file kind locks.
    first.teardown().await.unwrap();
    assert_eq!(fake.calls().len(), 4);
    let second_kubeconfig = s(second.kubeconfig_path());
    second.teardown().await.unwrap();
    assert_eq!(
        fake.calls()[4],
        format!("delete cluster --name {name} --kubeconfig {second_kubeconfig}")
    );
    assert_eq!(fake.locked(), vec![second_kubeconfig]);
    assert!(!dir.exists(), "the temp dir goes with the handle");
}

#[tokio::test]
async fn another_shape_gets_its_own_cluster() {
    let fake = FakeKind::new();
    let a = KindCluster::up_with(fake.cli(), KindSpec::new(3, "1.31"), false)
        .await
        .unwrap();
    let b = KindCluster::up_with(fake.cli(), KindSpec::new(3, "1.27"), false)
        .await
        .unwrap();
    assert!(a.created() && b.created());
    assert_ne!(a.name(), b.name());
    assert_eq!(
        fake.calls()
            .iter()
            .filter(|c| c.starts_with("create"))
            .count(),
        2
    );
}

#[tokio::test]
async fn a_cluster_file_from_the_repo_is_passed_with_the_pinned_image_filled_in() {
    let fake = FakeKind::new();
    let spec = KindSpec {
        workers: 3,
        kubernetes: "1.27".into(),
        config_file: Some(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../clusters/kind-3-workers.yaml"),
        ),
    };
    let c = KindCluster::up_with(fake.cli(), spec.clone(), false)
        .await
        .unwrap();
    let given = std::fs::read_to_string(fake.state(&format!("config-{}.yaml", c.name()))).unwrap();
    assert_eq!(given, render_config(&spec).unwrap());
    assert_eq!(
        given.matches("kindest/node:v1.27.16@sha256:").count(),
        4,
        "{given}"
    );
    c.teardown().await.unwrap();
}

#[tokio::test]
async fn a_failed_create_keeps_the_command_line_and_output() {
    let fake = FakeKind::new();
    std::fs::write(fake.state("fail"), "create cluster").unwrap();
    let err = KindCluster::up_with(fake.cli(), KindSpec::new(2, "1.31"), false)
        .await
        .unwrap_err();
    let KindError::CommandFailed {
        command, stderr, ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert!(
        command.starts_with("kind create cluster --name zdt-") && command.contains("--wait 120s"),
        "{command}"
    );
    assert!(
        stderr.contains("canned failure from the fake kind"),
        "{stderr}"
    );
    let shown = err.to_string();
    assert!(
        shown.contains(command.as_str()) && shown.contains("canned failure"),
        "{shown}"
    );
}

#[tokio::test]
async fn missing_kind_is_an_install_hint_not_a_panic() {
    let empty = tempfile::tempdir().unwrap();
    let err = KindCluster::up_with(
        KindCli::on_path(empty.path().as_os_str()),
        KindSpec::new(1, "1.31"),
        false,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, KindError::NotInstalled { .. }), "{err:?}");
    assert!(err.to_string().contains("kind get clusters"), "{err}");
    let help = err.help().unwrap().to_string();
    assert!(help.contains(INSTALL_URL), "{help}");
}

#[tokio::test]
async fn unsupported_version_fails_before_running_kind() {
    let fake = FakeKind::new();
    let err = KindCluster::up_with(fake.cli(), KindSpec::new(1, "1.20"), false)
        .await
        .unwrap_err();
    assert!(
        matches!(err, KindError::UnsupportedVersion { .. }),
        "{err:?}"
    );
    assert!(fake.calls().is_empty());
}

#[tokio::test]
async fn clean_deletes_only_clusters_zdt_created() {
    let fake = FakeKind::new();
    fake.set_clusters(&["zdt-0123456789", "kind", "team-dev"]);
    // No owner marker says zdt made zdt-0123456789: it is not zdt's.
    let plan = zdt_cluster::clean::plan(&fake.cli(), true).await;
    assert!(plan.clusters.is_empty(), "{:?}", plan.clusters);
    assert_eq!(plan.foreign_clusters, vec!["zdt-0123456789".to_owned()]);
    // One zdt made whose owner is gone is deleted, and only it. Execute
    // only the cluster part: containers and temp dirs of other tests
    // running right now must not be touched.
    let only_clusters = CleanPlan {
        clusters: vec![Found {
            item: "zdt-0123456789".into(),
            owner: None,
            liveness: Liveness::Gone("pid 1234 exited".into()),
            remove: true,
        }],
        ..Default::default()
    };
    assert!(describe(&only_clusters, false).contains(
        &"removing kind cluster zdt-0123456789 (owner gone: pid 1234 exited)".to_owned()
    ));
    let failures = execute(&fake.cli(), &only_clusters).await;
    assert!(failures.is_empty(), "{failures:?}");
    let calls = fake.calls();
    let last = calls.last().unwrap();
    let kubeconfig = last
        .strip_prefix("delete cluster --name zdt-0123456789 --kubeconfig ")
        .unwrap_or_else(|| panic!("{last}"));
    // `zdt clean` holds no kubeconfig of the cluster: it names a file in a
    // temp dir of its own, so the user's ~/.kube/config is never locked.
    let kubeconfig = Path::new(kubeconfig);
    assert!(kubeconfig.starts_with(std::env::temp_dir()), "{last}");
    assert!(
        kubeconfig
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&format!("zdt-{}-kind-delete", std::process::id())),
        "{last}"
    );
    assert_eq!(fake.locked(), vec![kubeconfig.display().to_string()]);
    assert_eq!(calls.iter().filter(|c| c.starts_with("delete")).count(), 1);
}

#[tokio::test]
async fn export_logs_names_the_directory_and_the_cluster() {
    let fake = FakeKind::new();
    fake.set_clusters(&["zdt-0123456789"]);
    let out = tempfile::tempdir().unwrap();
    fake.cli()
        .export_logs("zdt-0123456789", out.path())
        .await
        .unwrap();
    assert_eq!(
        fake.calls(),
        vec![format!(
            "export logs {} --name zdt-0123456789",
            s(out.path())
        )]
    );
    assert!(out
        .path()
        .join("zdt-0123456789-control-plane/journal.log")
        .exists());
    // A cluster kind does not know is kind's error, kept whole.
    let err = fake
        .cli()
        .export_logs("zdt-gone", out.path())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unknown cluster"), "{err}");
}

#[test]
fn zdt_clean_dry_run_lists_stale_temp_dirs_keeps_hand_made_clusters_and_deletes_nothing() {
    let fake = FakeKind::new();
    fake.set_clusters(&["zdt-abcdef0123", "kind"]);
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("zdt-99999999-kind-x")).unwrap();
    std::fs::create_dir(tmp.path().join("unrelated-99999999")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_zdt"))
        .args(["clean", "--dry-run"])
        .env("PATH", fake.path_env())
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("keeping kind cluster zdt-abcdef0123 (not created by zdt"),
        "{stdout}"
    );
    assert!(!stdout.contains("cluster kind "), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "would remove temp dir {} (owner gone: pid 99999999 exited)",
            tmp.path().join("zdt-99999999-kind-x").display()
        )),
        "{stdout}"
    );
    assert!(!stdout.contains("unrelated"), "{stdout}");
    assert!(
        fake.calls().iter().all(|c| c == "get clusters"),
        "{:?}",
        fake.calls()
    );
    assert!(tmp.path().join("zdt-99999999-kind-x").exists());
}

/// Issue #17 item 2: a kind cluster a user named `zdt-something` by hand
/// survives `zdt clean` (not a dry run). With Docker reachable, a cluster
/// zdt made (its owner marker names a process that is gone) is deleted
/// beside it; without Docker nothing says which clusters are zdt's, so
/// none is touched.
#[tokio::test]
async fn a_hand_made_zdt_cluster_survives_zdt_clean() {
    let fake = FakeKind::new();
    let made = format!("zdt-made-{}", std::process::id());
    fake.set_clusters(&["zdt-something", &made]);
    let tmp = tempfile::tempdir().unwrap();
    let clean = |docker_host: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_zdt"));
        cmd.arg("clean")
            .env("PATH", fake.path_env())
            .env("TMPDIR", tmp.path());
        if let Some(h) = docker_host {
            cmd.env("DOCKER_HOST", h);
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };

    // No Docker: neither cluster can be shown to be zdt's.
    let nowhere = format!("unix://{}", tmp.path().join("no-docker.sock").display());
    let stdout = clean(Some(&nowhere));
    assert!(
        stdout.contains("keeping kind cluster zdt-something (not created by zdt: no owner marker; `kind delete cluster --name` removes it)"),
        "{stdout}"
    );
    assert!(
        !fake.calls().iter().any(|c| c.starts_with("delete")),
        "{:?}",
        fake.calls()
    );

    let Ok(d) = zdt_cluster::docker::connect().await else {
        eprintln!("skipped the Docker half: no Docker Engine answers");
        return;
    };
    // The marker a crashed zdt run would have left: created by a pid that
    // cannot exist (pid_max is at most 2^22).
    let dead = zdt_core::owner::Owner {
        pid: 99_999_999,
        ..zdt_core::owner::Owner::current("crashed")
    };
    let mut labels = dead.labels();
    labels.insert("zdt.managed".into(), "true".into());
    labels.insert(zdt_cluster::kind_owner::CLUSTER_LABEL.into(), made.clone());
    labels.insert(zdt_cluster::kind_owner::CREATED_LABEL.into(), "true".into());
    let marker = format!("zdt-owner-{made}-crashed");
    d.create_volume(bollard::models::VolumeCreateRequest {
        name: Some(marker.clone()),
        labels: Some(labels),
        ..Default::default()
    })
    .await
    .unwrap();
    let stdout = clean(None);
    let _ = zdt_cluster::kind_owner::release(&d, &marker).await;
    assert!(
        stdout.contains(&format!(
            "removing kind cluster {made} (owner gone: pid 99999999 exited)"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("keeping kind cluster zdt-something (not created by zdt"),
        "{stdout}"
    );
    let deletes: Vec<String> = fake
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("delete"))
        .collect();
    // Exactly one delete, of the dead run's cluster, with zdt's own
    // kubeconfig (never ~/.kube/config).
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert!(
        deletes[0].starts_with(&format!("delete cluster --name {made} --kubeconfig ")),
        "{deletes:?}"
    );
    let left = zdt_cluster::kind_owner::list(&d).await.unwrap();
    assert!(
        !left.iter().any(|m| m.name == marker),
        "the marker went with its cluster"
    );
}

/// The workload's images on kind: an image neither local nor pullable is
/// an error before `kind create cluster` runs; after the cluster is up,
/// `kind load docker-image` runs once per image some node lacks, and not
/// for an image every node already has.
#[tokio::test]
async fn workload_images_are_checked_before_create_and_loaded_once_when_missing() {
    use zdt_cluster::kind_images::{DockerCli, ImageError};
    let fake = FakeKind::new();
    let docker = DockerCli::on_path(fake.path_env());
    let images: Vec<String> = ["shop/web:1.4", "shop/side:2", "busybox:1"]
        .map(String::from)
        .to_vec();
    std::fs::write(fake.state("local-images"), "shop/web:1.4\nbusybox:1\n").unwrap();

    // shop/side:2 is not local and the (fake) registry refuses it.
    let e = docker.ensure_local(&images).await.unwrap_err();
    assert!(
        matches!(&e, ImageError::Unavailable { image, .. } if image == "shop/side:2"),
        "{e}"
    );
    assert!(e.to_string().contains("docker build -t shop/side:2"), "{e}");
    assert!(
        fake.calls().is_empty(),
        "kind was touched: {:?}",
        fake.calls()
    );

    std::fs::write(
        fake.state("local-images"),
        "shop/web:1.4\nshop/side:2\nbusybox:1\n",
    )
    .unwrap();
    assert!(docker.ensure_local(&images).await.unwrap().is_empty());
    let spec = KindSpec::new(1, "1.31");
    let name = cluster_name(&spec).unwrap();
    let cluster = KindCluster::up_with(fake.cli(), spec, false).await.unwrap();
    // busybox is already on both nodes: it is not loaded again.
    std::fs::write(
        fake.state("node-images"),
        format!("{name}-control-plane busybox:1\n{name}-worker busybox:1\n"),
    )
    .unwrap();
    let loaded = docker
        .load_missing(cluster.cli(), &name, &images)
        .await
        .unwrap();
    assert_eq!(loaded, ["shop/web:1.4", "shop/side:2"]);
    let calls = fake.calls();
    let loads: Vec<&String> = calls.iter().filter(|c| c.starts_with("load ")).collect();
    assert_eq!(
        loads,
        [
            &format!("load docker-image shop/web:1.4 --name {name}"),
            &format!("load docker-image shop/side:2 --name {name}"),
        ],
        "{calls:?}"
    );
    let create = calls.iter().position(|c| c.starts_with("create cluster"));
    let first_load = calls.iter().position(|c| c.starts_with("load "));
    assert!(create < first_load, "{calls:?}");
    // A second pass finds every image on every node: nothing loaded.
    let again = docker
        .load_missing(cluster.cli(), &name, &images)
        .await
        .unwrap();
    assert!(again.is_empty(), "{again:?}");
    cluster.teardown().await.unwrap();
}
