//! Generator pods on kind (issue #22), at kind's boundary: the recorded
//! fake kind (`tests/data/kind/fake-kind`, which creates nothing) names an
//! emulated cluster (`zdt emulator up`) as its API server, so zdt's kind
//! path runs for real up to the `kind` command lines and the API calls:
//! zdt builds its image in the local Docker, loads it with `kind load`, and
//! the emulator runs the Job's `zdt-local:*` pods as the zdt binary.
//! The emulator stores the ServiceAccount, Role and RoleBinding a kind
//! cluster gets (it enforces no RBAC).

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Api;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use zdt::generators::{job, launch, lines};
use zdt_cluster::docker as zd;
use zdt_cluster::kind::{cluster_name, KindSpec};
use zdt_cluster::Cluster;
use zdt_traffic::Summary;

use crate::emulator_api_cli::up_with_nginx;
use crate::kind_cli::FakeKind;
use crate::lb_docker::ZdtMade;

/// The local `zdt-local` images, `REPOSITORY:TAG`.
fn zdt_images() -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args([
            "images",
            "zdt-local",
            "--format",
            "{{.Repository}}:{{.Tag}}",
        ])
        .output()
        .expect("docker runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The emulator's API server URL, from the kubeconfig it wrote.
fn server(kubeconfig: &Path) -> String {
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .unwrap_or_else(|| panic!("no server in {text}"))
        .to_owned()
}

/// An nginx pod's IP (what the generators send to), waiting at most 30 s.
async fn pod_ip(client: &kube::Client) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = pods.list(&Default::default()).await.unwrap();
        let ip = list
            .items
            .iter()
            .filter(|p| {
                p.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.starts_with("nginx"))
            })
            .find_map(|p| p.status.as_ref()?.pod_ip.clone());
        if let Some(ip) = ip {
            return ip;
        }
        assert!(Instant::now() < deadline, "no nginx pod got an IP in 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// 2 generators × 50/s for 3 s on a "kind" cluster: the image is zdt's,
/// built and loaded with `kind load docker-image`; the Job the API stored
/// is the indexed one of docs/generators.md; the barrier carries the start
/// time; the merged result is the sum of the two pods' own results.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generator_pods_on_kind_use_zdts_loaded_image_and_merge() {
    if let Some(why) = zdt_core::netns::private_unavailable() {
        eprintln!("SKIPPED: generator pods run in the emulated cluster's network namespaces, which cannot be made here: {why}");
        return;
    }
    let d = match zd::connect().await {
        Ok(d) => d,
        Err(e) => {
            eprintln!(
                "SKIPPED: zdt builds its image for kind in the local Docker, unreachable here: {e}"
            );
            return;
        }
    };
    let mut made = ZdtMade::default();
    let before = zdt_images();

    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kc");
    let (mut emulator, _) = up_with_nginx(&kc).await;

    let fake = FakeKind::new();
    std::fs::write(fake.state("server"), server(&kc)).unwrap();
    let spec = KindSpec::new(2, "1.31");
    let name = cluster_name(&spec).unwrap();
    made.kind_markers.push(name.clone());
    let cancel = CancellationToken::new();
    let cluster = Cluster::kind(
        fake.cli(),
        spec,
        false,
        zdt_scenario::LbMode::Model,
        "default",
        &cancel,
    )
    .await
    .unwrap();
    let client = cluster.client().unwrap();
    let target = format!("http://{}:80/", pod_ip(&client).await);

    let image = cluster
        .zdt_image()
        .await
        .unwrap()
        .expect("kind builds zdt's image");
    if !before.contains(&image) {
        made.images.push(image.clone());
    }
    assert!(image.starts_with("zdt-local:"), "{image}");
    let built = d.inspect_image(&image).await.unwrap();
    let labels = built.config.and_then(|c| c.labels).unwrap_or_default();
    assert_eq!(
        labels.get(zd::MANAGED_LABEL).map(String::as_str),
        Some(zd::MANAGED_VALUE),
        "{image} is zdt's: {labels:?}"
    );
    let load = format!("load docker-image {image} --name {name}");
    assert!(fake.calls().contains(&load), "{:?}", fake.calls());

    let config = lines::Config {
        settings: zdt_traffic::Settings::new(
            &target,
            "50/s".parse().unwrap(),
            Duration::from_secs(3),
        )
        .unwrap(),
        namespace: "default".into(),
        barrier: job::BARRIER.into(),
        start_timeout: launch::RUNNING_TIMEOUT,
        clock_bound: zdt::generators::CLOCK_BOUND,
    };
    let keep = dir.path().join("generators");
    let clock = zdt_core::clock::Clock::start();
    let attack = launch::start(
        launch::Launch {
            client: client.clone(),
            spec: job::JobSpec {
                count: 2,
                image: image.clone(),
                config,
                node_selector: Default::default(),
                avoid: Default::default(),
                rbac: true,
            },
            record: None,
            clock,
            events: zdt_core::events::EventSink::discard(clock),
            keep: Some(keep.clone()),
        },
        cancel.clone(),
    )
    .await
    .unwrap();

    // The objects as the API stored them, while the generators send.
    let stored: Job = Api::namespaced(client.clone(), "default")
        .get(job::JOB)
        .await
        .unwrap();
    let stored = serde_json::to_value(stored).unwrap();
    let s = &stored["spec"];
    assert_eq!(s["completionMode"], "Indexed");
    assert_eq!(s["completions"], 2);
    assert_eq!(s["parallelism"], 2);
    let pod = &s["template"]["spec"];
    assert_eq!(pod["containers"][0]["image"], json!(image));
    assert_eq!(
        pod["containers"][0]["args"],
        json!([zdt::generators::SUBCOMMAND])
    );
    let spread = &pod["affinity"]["podAntiAffinity"]
        ["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"];
    assert_eq!(spread["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(
        spread["labelSelector"]["matchLabels"][job::ROLE_LABEL.0],
        job::ROLE_LABEL.1
    );
    assert_eq!(pod["serviceAccountName"], job::ACCOUNT);
    let account: ServiceAccount = Api::namespaced(client.clone(), "default")
        .get(job::ACCOUNT)
        .await
        .unwrap();
    assert_eq!(account.metadata.name.as_deref(), Some(job::ACCOUNT));
    let role: Role = Api::namespaced(client.clone(), "default")
        .get(job::ACCOUNT)
        .await
        .unwrap();
    let rule = &role.rules.unwrap()[0];
    assert_eq!(
        rule.resources.as_deref(),
        Some(&["configmaps".to_string()][..])
    );
    assert_eq!(
        rule.resource_names.as_deref(),
        Some(&[job::BARRIER.to_string()][..])
    );
    assert_eq!(rule.verbs, ["get"]);
    let binding: RoleBinding = Api::namespaced(client.clone(), "default")
        .get(job::ACCOUNT)
        .await
        .unwrap();
    assert_eq!(
        (
            binding.role_ref.kind.as_str(),
            binding.role_ref.name.as_str()
        ),
        ("Role", job::ACCOUNT)
    );
    let subject = &binding.subjects.unwrap()[0];
    assert_eq!(
        (subject.kind.as_str(), subject.name.as_str()),
        ("ServiceAccount", job::ACCOUNT)
    );
    let barrier: ConfigMap = Api::namespaced(client.clone(), "default")
        .get(job::BARRIER)
        .await
        .unwrap();
    let start = barrier
        .data
        .as_ref()
        .and_then(|d| d.get(lines::START_KEY))
        .unwrap_or_else(|| panic!("no start time in {barrier:?}"));
    start
        .parse::<jiff::Timestamp>()
        .unwrap_or_else(|e| panic!("start time {start:?}: {e}"));

    let merged: Summary = tokio::time::timeout(Duration::from_secs(60), attack.finish())
        .await
        .expect("the run ends within 60 s")
        .unwrap();
    let parts: Vec<Summary> = (0..2)
        .map(|i| {
            let path = keep.join(format!("generator-{i}.json"));
            let text = std::fs::read_to_string(&path).unwrap();
            let Ok(lines::Line::Result(line)) = lines::Line::decode(&text) else {
                panic!("{}: not a result line", path.display());
            };
            line.into_part(Duration::ZERO).unwrap().summary
        })
        .collect();
    let sum = |f: fn(&Summary) -> u64| parts.iter().map(f).sum::<u64>();
    assert_eq!(merged.requests, 300, "2 × 50/s × 3 s");
    assert_eq!(merged.requests, sum(|s| s.requests));
    assert_eq!(merged.successes, sum(|s| s.successes));
    assert_eq!(merged.sent, sum(|s| s.sent));
    assert_eq!(merged.generators.len(), 2);

    cluster.teardown(Duration::from_secs(1)).await;
    let delete = format!("delete cluster --name {name}");
    assert!(
        fake.calls().iter().any(|c| c.starts_with(&delete)),
        "{:?}",
        fake.calls()
    );
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(emulator.id().unwrap() as i32, libc::SIGTERM) };
    let _ = tokio::time::timeout(Duration::from_secs(20), emulator.wait()).await;
}
