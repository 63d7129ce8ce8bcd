//! Traffic from generator pods on the emulator (issue #22): the same code
//! path as on a real cluster (an indexed Job of `zdt generator` pods, the
//! barrier ConfigMap, the pods' logs), with the pods as zdt processes in the
//! emulated cluster's network.

use std::path::{Path, PathBuf};
use std::process::Command;

use zdt::generators::lines::Line;
use zdt_traffic::Summary;

fn scenario(dir: &Path, name: &str, rate: &str, duration: &str, chaos: &str) -> PathBuf {
    let manifests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests/nginx");
    let text = format!(
        r#"apiVersion: zdt/v1alpha1
kind: Scenario
name: {name}
cluster:
  provider: emulator
  workers: 3
loadBalancer:
  profile: cloud-provider-kind
workload:
  manifests: {manifests}
  service: nginx
  deployment: nginx
  mitigations:
    replicas: 3
traffic:
  rate: {rate}
  duration: {duration}
  timeout: 2s
  generators: 2
{chaos}
expect:
  successRatio: 0.99
"#,
        manifests = manifests.display(),
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn run(file: &Path, out: &Path) -> (Option<i32>, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_zdt"))
        .arg("run")
        .arg(file)
        .arg("--out")
        .arg(out)
        .env_remove("ZDT_SCALE")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.code(), text)
}

fn unavailable() -> bool {
    if let Some(why) = zdt_core::netns::private_unavailable() {
        eprintln!("SKIPPED: generator pods run in the emulated cluster's network namespaces, which cannot be made here: {why}");
        return true;
    }
    false
}

fn read<T: serde::de::DeserializeOwned>(path: &Path) -> T {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// 2 generators × 1000/s: one 2000/s run whose figures are exactly the
/// sums and the merge of the two generators' own results, as each wrote
/// them in its pod's log (kept in OUT/generators/VARIANT/).
#[test]
fn two_generators_merge_into_one_run_exactly() {
    if unavailable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path(), "two-generators", "2000/s", "10s", "");
    let out = dir.path().join("out");
    let (code, text) = run(&file, &out);
    assert_eq!(code, Some(0), "{text}");
    let merged: Summary = read(&out.join("traffic/default.json"));
    let parts: Vec<_> = (0..2)
        .map(|i| {
            let path = out.join(format!("generators/default/generator-{i}.json"));
            let text = std::fs::read_to_string(&path).unwrap();
            let Ok(Line::Result(line)) = Line::decode(&text) else {
                panic!("{}: not a result line", path.display());
            };
            line.into_part(std::time::Duration::ZERO).unwrap()
        })
        .collect();
    let sum = |f: fn(&Summary) -> u64| parts.iter().map(|p| f(&p.summary)).sum::<u64>();
    assert_eq!(merged.requests, sum(|s| s.requests));
    assert_eq!(merged.requests, 20_000);
    assert_eq!(merged.successes, sum(|s| s.successes));
    assert_eq!(merged.sent, sum(|s| s.sent));
    assert_eq!(
        merged.success_ratio(),
        sum(|s| s.successes) as f64 / sum(|s| s.requests) as f64
    );
    for p in &parts {
        assert_eq!(p.summary.rate.get(), 1000.0);
        assert_eq!(p.summary.requests, 10_000);
    }
    // The histogram of all requests is the sum of the two, and the merged
    // percentiles are read from it.
    let mut hist = parts[0].histograms.latency.clone();
    hist.add(&parts[1].histograms.latency).unwrap();
    assert_eq!(hist.len(), merged.latency.count);
    let at = |q: f64| {
        let lo = merged.latency.min.as_nanos() as u64;
        let hi = merged.latency.max.as_nanos() as u64;
        std::time::Duration::from_nanos(hist.value_at_quantile(q).clamp(lo, hi))
    };
    assert_eq!(
        [merged.latency.p50, merged.latency.p99, merged.latency.p9999],
        [at(0.5), at(0.99), at(0.9999)]
    );
    assert_eq!(
        merged.latency.max,
        parts.iter().map(|p| p.summary.latency.max).max().unwrap()
    );
    // Per-second buckets add.
    for (i, b) in merged.buckets.iter().enumerate() {
        let n: u64 = parts
            .iter()
            .filter_map(|p| p.summary.buckets.get(i))
            .map(|b| b.requests)
            .sum();
        assert_eq!(b.requests, n, "bucket {i}");
    }
    let accuracy = merged.achieved_rate / 2000.0;
    assert!(
        (accuracy - 1.0).abs() <= 0.005,
        "achieved {}/s",
        merged.achieved_rate
    );
    assert_eq!(merged.generators.len(), 2);
    assert!(
        merged
            .generators
            .iter()
            .all(|g| g.lost.is_none() && g.merged && !g.partial),
        "{:?}",
        merged.generators
    );
    let report = std::fs::read_to_string(out.join("report.txt")).unwrap();
    assert!(report.contains("Generators    (2 pods"), "{report}");
}

/// A generator pod deleted mid-run (killed, no grace): the variant is
/// INVALID, naming it, and the other's data is still there.
#[test]
fn a_generator_killed_mid_run_makes_the_variant_invalid_naming_it() {
    if unavailable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let chaos = r#"chaos:
  - name: kill-generator-1
    at: 3s
    deletePod:
      selector: {"zdt.dev/role": generator, "batch.kubernetes.io/job-completion-index": "1"}
      gracePeriod: 0s"#;
    let file = scenario(dir.path(), "kill-generator", "200/s", "8s", chaos);
    let out = dir.path().join("out");
    let (code, text) = run(&file, &out);
    assert_eq!(code, Some(3), "INVALID exits 3: {text}");
    let summary: serde_json::Value = read(&out.join("summary.json"));
    let v = &summary["variants"][0];
    assert_eq!(v["verdict"], "INVALID", "{v}");
    let reasons = v["reasons"].to_string();
    assert!(
        reasons.contains("generator zdt-generators-1-") && reasons.contains("(index 1) was lost"),
        "{reasons}"
    );
    // Only the killed one: the other sent its whole schedule.
    assert!(!reasons.contains("zdt-generators-0-"), "{reasons}");
    let rows = v["generators"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(
        rows[0]["lost"].is_null() && rows[0]["merged"] == true,
        "{v}"
    );
    assert!(
        rows[1]["lost"].is_string() && rows[1]["partial"] == true,
        "{v}"
    );
}
