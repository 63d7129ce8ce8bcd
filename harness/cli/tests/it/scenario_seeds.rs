//! The seed scenarios in scenarios/ load, validate, and say what the run
//! will do (the values the run engineer builds on).

use std::path::{Path, PathBuf};
use std::process::Command;

use zdt_scenario::{self as scenario, Action, NodeSelector, Provider, Start};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn seeds() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("scenarios"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_seed_scenario_passes_zdt_validate() {
    let files = seeds();
    assert!(files.len() >= 3, "{files:?}");
    let out = Command::new(env!("CARGO_BIN_EXE_zdt"))
        .arg("validate")
        .args(&files)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in &files {
        assert!(stdout.contains(&format!("ok {}", f.display())), "{stdout}");
    }
}

#[test]
fn seed_drain_is_the_reference_experiment() {
    let file = scenario::load(repo().join("scenarios/seed-drain.yaml")).unwrap();
    let variants = file.variants().unwrap();
    let names: Vec<&str> = variants.iter().map(|v| v.variant.as_str()).collect();
    assert_eq!(
        names,
        ["published", "lb-first", "k8s-1.31", "no-mitigation"]
    );

    let published = &variants[0];
    assert_eq!(published.cluster.provider, Provider::Emulator);
    assert_eq!(published.cluster.kubernetes.to_string(), "1.27");
    assert_eq!(published.cluster.workers, 3);
    assert_eq!(published.traffic.load.rate.get(), 5000.0);
    assert_eq!(published.traffic.load.duration.get().as_secs(), 60);
    assert_eq!(published.traffic.load.timeout.get().as_secs(), 10);
    assert!(!published.traffic.load.keep_alive);
    let sr = published.expect.success_ratio.unwrap();
    assert_eq!((sr.min, sr.max), (Some(0.93), Some(0.99)));
    assert_eq!(
        published.expect.status_codes.as_deref(),
        Some(&[200, 0][..])
    );
    assert_eq!(published.chaos.len(), 1);
    assert_eq!(published.chaos[0].start, Start::At("10s".parse().unwrap()));
    assert!(matches!(
        &published.chaos[0].action,
        Action::Drain { node: NodeSelector::HostingPod(l), .. } if l["app"] == "nginx"
    ));

    let lb_first = &variants[1];
    assert_eq!(lb_first.chaos.len(), 3);
    assert_eq!(lb_first.chaos[0].action.kind(), "lbRemoveBackend");
    assert_eq!(
        lb_first.chaos[2].action.node(),
        Some(&NodeSelector::SameAs(0))
    );
    // lb-first inherits the base's zero-downtime expectation.
    assert_eq!(lb_first.expect.success_ratio.unwrap().min, Some(0.9999));

    let k131 = &variants[2];
    assert_eq!(k131.cluster.kubernetes.to_string(), "1.31");
    assert_eq!(
        k131.workload.mitigations.pre_stop_sleep,
        Some("15s".parse().unwrap())
    );

    let none = &variants[3];
    assert_eq!(
        none.workload.mitigations.external_traffic_policy,
        Some(scenario::TrafficPolicy::Cluster)
    );
    assert_eq!(
        none.workload.mitigations.readiness_probe,
        Some(scenario::Switch::Off)
    );
}
