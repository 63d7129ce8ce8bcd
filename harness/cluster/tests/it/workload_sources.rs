//! Manifests as people keep them: a kustomize overlay
//! (`manifests/nginx-overlay`) rendered for real by kubectl, then applied
//! to the emulator through the same `apply_objects` a run uses.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use zdt_cluster::apply::{apply_objects, wait_deployments_ready};
use zdt_core::clock::Clock;
use zdt_core::events::EventSink;
use zdt_emulator::{Emulator, EmulatorConfig};
use zdt_scenario::{self as scenario, ManifestSource};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A scenario file in a temp dir whose workload is `manifests`.
fn scenario_file(manifests: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: zdt/v1alpha1\nkind: Scenario\nname: overlay\n\
             workload:\n  manifests: {}\ntraffic:\n  rate: 10/s\n  duration: 1s\n",
            manifests.display()
        ),
    )
    .unwrap();
    (dir, file)
}

/// That scenario, loaded: its default variant.
fn scenario_with(manifests: &Path) -> (tempfile::TempDir, scenario::Scenario) {
    let (dir, file) = scenario_file(manifests);
    let s = scenario::load(&file).unwrap().variant("default").unwrap();
    (dir, s)
}

fn kubectl_on_path() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("kubectl").is_file()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kustomize_overlay_renders_through_kubectl_and_applies() {
    if !kubectl_on_path() {
        eprintln!("SKIPPED: kubectl is not on PATH, so a kustomization cannot render here");
        return;
    }
    let overlay = std::path::absolute(repo().join("manifests/nginx-overlay")).unwrap();
    let (_dir, s) = scenario_with(&overlay);
    assert_eq!(s.workload.source, ManifestSource::Kustomization);
    let objects = scenario::workload::render(&s).unwrap();
    // The overlay's changes are there: kubectl rendered it, not a file read.
    let dep = objects
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("a Deployment");
    assert_eq!(dep["spec"]["replicas"], 2, "{dep:#}");
    assert_eq!(
        dep["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.27-alpine"
    );
    assert_eq!(dep["metadata"]["labels"]["team"], "shop");
    assert_eq!(objects.len(), 4, "configmap, deployment, pdb, service");

    let emu = Emulator::start_simulated(
        EmulatorConfig {
            workers: 2,
            ..EmulatorConfig::default()
        },
        EventSink::discard(Clock::start()),
    )
    .await
    .unwrap();
    let client = emu.client().unwrap();
    let applied = apply_objects(&client, &objects, "default").await.unwrap();
    assert_eq!(applied.len(), 4, "{applied:?}");
    wait_deployments_ready(&client, "default", Duration::from_secs(30))
        .await
        .unwrap();
    let d = Api::<Deployment>::namespaced(client, "default")
        .get("nginx")
        .await
        .unwrap();
    assert_eq!(d.status.and_then(|s| s.ready_replicas), Some(2));
}

#[test]
fn a_broken_kustomization_names_the_command_and_its_error() {
    if !kubectl_on_path() {
        eprintln!("SKIPPED: kubectl is not on PATH, so a kustomization cannot render here");
        return;
    }
    let bad = tempfile::tempdir().unwrap();
    std::fs::write(
        bad.path().join("kustomization.yaml"),
        "resources:\n  - missing.yaml\n",
    )
    .unwrap();
    let (_dir, file) = scenario_file(bad.path());
    let e = scenario::load(&file)
        .and_then(|f| f.variants())
        .unwrap_err();
    let text = format!("{e:?}");
    assert!(text.contains("kustomize"), "{text}");
    assert!(text.contains("missing.yaml"), "{text}");
}
