//! `cluster.emulator.apiLatency` in a scenario file reaches the emulator the
//! run starts: every API request is served that much later.

use std::path::Path;
use std::time::{Duration, Instant};

use zdt::run::executor::{emulator_config, plan, RunOptions};
use zdt_core::clock::Clock;
use zdt_core::events::EventSink;
use zdt_emulator::Emulator;

/// The seed scenario, with `extra` added to its `cluster:` block, written
/// beside the real one so its relative paths still resolve.
fn seed_with(dir: &Path, extra: &str) -> std::path::PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(repo.join("scenarios/seed-drain.yaml")).unwrap();
    let text = text
        .replace("  workers: 3\n", &format!("  workers: 3\n{extra}"))
        .replace(
            "../manifests/nginx",
            &repo.join("manifests/nginx").display().to_string(),
        )
        .replace(
            "../clusters/kind-3-workers.yaml",
            &repo
                .join("clusters/kind-3-workers.yaml")
                .display()
                .to_string(),
        );
    let path = dir.join("seed.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The fastest and slowest of a few `GET /version` round trips to a fresh
/// emulator configured from `scenario`.
async fn request_times(scenario: &Path) -> (Duration, Duration) {
    let (_, variants) = plan(scenario, &RunOptions::default()).expect("scenario plans");
    let emulator = Emulator::start_simulated(
        emulator_config(&variants[0]),
        EventSink::discard(Clock::start()),
    )
    .await
    .expect("emulator starts");
    let client = emulator.client().expect("client");
    let (mut fastest, mut slowest) = (Duration::MAX, Duration::ZERO);
    for _ in 0..3 {
        let start = Instant::now();
        client.apiserver_version().await.expect("GET /version");
        fastest = fastest.min(start.elapsed());
        slowest = slowest.max(start.elapsed());
    }
    emulator.shutdown().await;
    (fastest, slowest)
}

#[tokio::test]
async fn a_configured_api_latency_delays_every_api_call() {
    let dir = tempfile::tempdir().unwrap();
    let slow = seed_with(dir.path(), "  emulator:\n    apiLatency: 400ms\n");
    let fast_dir = tempfile::tempdir().unwrap();
    let fast = seed_with(fast_dir.path(), "");

    let (fastest_slow, _) = request_times(&slow).await;
    let (_, slowest_plain) = request_times(&fast).await;
    assert!(
        fastest_slow >= Duration::from_millis(400),
        "with apiLatency 400ms a request took {fastest_slow:?}"
    );
    assert!(
        slowest_plain < Duration::from_millis(400),
        "without apiLatency a request took {slowest_plain:?}"
    );
}
