//! Issue #17 item 3: a chaos step that fails stops the variant's traffic
//! within a second, and the variant is INVALID with its partial data kept
//! (before, traffic ran out the whole duration after the step failed).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn events(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn at_s(events: &[serde_json::Value], reason: &str) -> f64 {
    let e = events
        .iter()
        .find(|e| e["reason"] == reason)
        .unwrap_or_else(|| panic!("no {reason} event in {events:#?}"));
    e["at"].as_f64().expect("`at` in ns") / 1e9
}

#[test]
fn a_failed_chaos_step_stops_traffic_and_the_variant_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("s.yaml");
    // A pod name validation cannot know: the step fails at run time (404).
    std::fs::write(
        &scenario,
        format!(
            "apiVersion: zdt/v1alpha1
kind: Scenario
name: step-fails
cluster:
  provider: emulator
  workers: 2
  emulator:
    runtime: builtin
loadBalancer:
  profile: custom
  interval: 200ms
  timeout: 150ms
  unhealthyThreshold: 2
  healthyThreshold: 1
workload:
  manifests: {}
traffic:
  rate: 20/s
  duration: 60s
chaos:
  - at: 1s
    deletePod: {{name: no-such-pod}}
expect:
  successRatio: 0.99
",
            repo().join("manifests/nginx").display()
        ),
    )
    .unwrap();
    let out_dir = dir.path().join("out");
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_zdt"))
        .arg("run")
        .arg(&scenario)
        .arg("--out")
        .arg(&out_dir)
        .env("TMPDIR", dir.path())
        .output()
        .expect("zdt runs");
    let took = started.elapsed();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(3), "{text}");
    // 60 s of traffic were asked for; the step fails at 1 s.
    assert!(
        took < Duration::from_secs(40),
        "the run took {took:?}: traffic ran on after the step failed\n{text}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("summary.json")).unwrap())
            .unwrap();
    let v = &summary["variants"][0];
    assert_eq!(v["verdict"], "INVALID", "{v:#}");
    let reasons = v["reasons"].to_string();
    assert!(
        reasons.contains("chaos step 1 `step-1` (deletePod) failed")
            && reasons.contains("traffic was stopped"),
        "{reasons}"
    );
    // Partial data kept: what was due until the stop, not 60 s worth.
    let requests = v["requests"].as_u64().unwrap();
    assert!((1..=60).contains(&requests), "requests {requests}");
    let ev = events(&out_dir);
    let failed = at_s(&ev, "StepFailed");
    let stopped = at_s(&ev, "TrafficStopped");
    assert!(
        stopped - failed <= 1.0,
        "traffic stopped {:.3} s after the step failed",
        stopped - failed
    );
    assert!(ev.iter().any(|e| e["reason"] == "TrafficStopped"
        && e["message"] == "traffic stopped: a chaos step failed"));
    for f in ["report.md", "report.html", "junit.xml"] {
        assert!(out_dir.join(f).is_file(), "{f} not written");
    }
}
