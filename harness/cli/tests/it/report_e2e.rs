//! A short real scenario on the embedded emulator through the `zdt`
//! binary: two variants, a drain under traffic. The HTML it renders must
//! have one timeline per variant with the run's events as markers and no
//! external URL; `zdt report` renders the same files again; the baseline
//! written from the run accepts the run and rejects a degraded copy.

use zdt::report::testing as report_common;

use std::path::Path;

use crate::drain_scenario::DrainScenario;
use std::process::Command;

fn scenario(dir: &Path) -> std::path::PathBuf {
    DrainScenario {
        name: "report-e2e",
        description: "A short drain on the emulator, two variants, for the report test",
        duration: "8s",
        timeout: "2s",
        drain_at: "2s",
    }
    .write(dir)
}

#[test]
fn a_real_emulator_run_renders_timelines_with_its_events() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path());
    let out = dir.path().join("out");
    let baseline = dir.path().join("baselines/report-e2e.json");
    let zdt = env!("CARGO_BIN_EXE_zdt");

    let run = Command::new(zdt)
        .arg("run")
        .arg(&file)
        .arg("--out")
        .arg(&out)
        .arg("--baseline")
        .arg(&baseline)
        .arg("--update-baseline")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        matches!(run.status.code(), Some(0 | 1)),
        "the run is valid (pass or fail): {stdout}{stderr}"
    );

    // `zdt report` renders every file again from the saved data.
    let rep = Command::new(zdt).arg("report").arg(&out).output().unwrap();
    assert_eq!(
        rep.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&rep.stderr)
    );

    let data = zdt::report::RunData::load(&out).unwrap();
    assert_eq!(data.summary.variants.len(), 2);
    for v in &data.summary.variants {
        assert!(v.requests >= 700, "{}: {} requests", v.name, v.requests);
        assert!(!data.buckets[&v.name].is_empty(), "{} has buckets", v.name);
    }
    // Requests that timed out after 2 s show in their buckets' p99 (bucket
    // histograms must grow past their initial 1 ms range).
    for v in &data.summary.variants {
        if v.errors.contains_key("response-timeout") {
            let worst = data.buckets[&v.name].iter().map(|b| b.p99).max().unwrap();
            assert!(
                worst >= std::time::Duration::from_secs(1),
                "{}: bucket p99 {worst:?}",
                v.name
            );
        }
    }
    let page = std::fs::read_to_string(out.join("report.html")).unwrap();
    report_common::check_structure(&page, &["local", "cluster-policy"]);
    // The drain is a chaos marker in each timeline; the run's cluster and
    // LB events are event markers.
    assert!(
        page.matches("class=\"marker chaos\" data-action=\"drain\"")
            .count()
            >= 2,
        "drain markers"
    );
    for source in ["pod", "lb"] {
        assert!(
            page.contains(&format!("class=\"marker event\" data-source=\"{source}\"")),
            "{source} events are marked"
        );
    }
    // Responses carry X-Node/X-Pod: the timelines split traffic by both.
    assert!(page.contains("class=\"series by-node\""));
    assert!(page.contains("class=\"series by-pod\""));

    let junit = std::fs::read_to_string(out.join("junit.xml")).unwrap();
    let doc = roxmltree::Document::parse(&junit).unwrap();
    assert_eq!(
        doc.descendants()
            .filter(|n| n.has_tag_name("testsuite"))
            .count(),
        2
    );
    let text = std::fs::read_to_string(out.join("report.txt")).unwrap();
    assert!(text.contains("Requests      [total, rate, throughput]"));
    // Which runtime ran the pods, per variant (nginx or the built-in
    // server here), in the text report and in summary.json.
    assert_eq!(text.matches("pods ran as: ").count(), 2, "{text}");
    assert!(data
        .summary
        .variants
        .iter()
        .all(|v| !v.pod_runtimes.is_empty()));
    // What each variant applied is saved with the report.
    let saved: Vec<_> = std::fs::read_dir(out.join("manifests"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(saved.len(), 2);
    assert!(
        saved.iter().all(|m| m.contains("kind: Deployment")),
        "{saved:?}"
    );

    // The baseline written from this run accepts it and rejects a copy
    // whose success ratio dropped.
    let b = zdt::report::baseline::load(&baseline).unwrap();
    let tol = zdt::report::baseline::Tolerance::default();
    assert!(zdt::report::baseline::check(&data.summary, &b, &tol).is_empty());
    let mut worse = data.summary.clone();
    worse.variants[0].success_ratio -= 0.01;
    assert_eq!(zdt::report::baseline::check(&worse, &b, &tol).len(), 1);
}
