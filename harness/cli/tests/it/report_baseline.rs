//! Baselines catch a deliberately degraded run; `zdt compare` exits 1 on it.

use zdt::report::testing as report_common;

use std::process::Command;

use zdt::report::baseline::{self, Metric, Tolerance, ToleranceError, ValueError};

fn degraded() -> zdt::run::summary::RunSummary {
    let mut s = report_common::summary();
    let v = &mut s.variants[1]; // lb-remove-first: was 100 %, p99 8 ms
    v.success_ratio = 0.995;
    v.errors.insert("timeout".into(), 1500);
    v.latency_ms.p99 = 40.0;
    s
}

#[test]
fn a_run_matches_its_own_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baselines/seed-drain.json");
    let s = report_common::summary();
    baseline::write(&s, &path).unwrap();
    let b = baseline::load(&path).unwrap();
    assert_eq!(b.scenario, "seed-drain");
    assert_eq!(b.variants["no-mitigation"].errors, 8182);
    assert!(baseline::check(&s, &b, &Tolerance::default()).is_empty());
}

#[test]
fn a_degraded_run_regresses_on_success_ratio_and_p99() {
    let b = baseline::Baseline::from_summary(&report_common::summary());
    let regs = baseline::check(&degraded(), &b, &Tolerance::default());
    let metrics: Vec<Metric> = regs.iter().map(|r| r.metric).collect();
    assert_eq!(metrics, vec![Metric::SuccessRatio, Metric::P99], "{regs:?}");
    assert!(regs.iter().all(|r| r.variant == "lb-remove-first"));
    assert!(regs[0].to_string().contains("99.500%"), "{}", regs[0]);
}

#[test]
fn small_changes_within_tolerance_pass() {
    let b = baseline::Baseline::from_summary(&report_common::summary());
    let mut s = report_common::summary();
    s.variants[1].success_ratio = 0.9995; // -0.05 points, under 0.1
    s.variants[1].latency_ms.p99 = 12.0; // +4 ms: under the 5 ms floor
    s.variants[0].latency_ms.p99 = 11_000.0; // +10 %
    assert!(baseline::check(&s, &b, &Tolerance::default()).is_empty());
    let strict = Tolerance {
        success_ratio: 0.0001,
        p99: 0.05,
        p99_min_ms: 0.0,
    };
    assert_eq!(baseline::check(&s, &b, &strict).len(), 3);
}

#[test]
fn variants_left_out_are_not_run_and_other_scenarios_are_regressions() {
    let b = baseline::Baseline::from_summary(&report_common::summary());
    let mut s = report_common::summary();
    let left_out = s.variants.remove(0).name;
    assert!(baseline::check(&s, &b, &Tolerance::default()).is_empty());
    assert_eq!(baseline::not_run(&s, &b), vec![left_out]);
    s.scenario = "rollout".into();
    assert_eq!(
        baseline::check(&s, &b, &Tolerance::default())[0].metric,
        Metric::Scenario
    );
    assert!(baseline::not_run(&s, &b).is_empty());
}

#[test]
fn zdt_compare_of_a_subset_lists_what_was_not_run_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.json"), dir.path().join("b.json"));
    let all = report_common::summary();
    let mut subset = report_common::summary();
    let left_out = subset.variants.remove(0).name;
    std::fs::write(&a, serde_json::to_string(&all).unwrap()).unwrap();
    std::fs::write(&b, serde_json::to_string(&subset).unwrap()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_zdt"))
        .arg("compare")
        .arg(&a)
        .arg(&b)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "not run in B: {left_out} (only the variants both runs have are compared)"
        )),
        "{stdout}"
    );
    assert!(stdout.contains("no regressions"), "{stdout}");
    assert!(!stdout.contains("REGRESSION"), "{stdout}");
}

#[test]
fn tolerance_comes_from_the_scenario_and_flags() {
    let doc = serde_json::json!({"expect": {"tolerance": {"successRatio": 0.01, "latency": "50%", "p99Min": "20ms"}}});
    let mut t = Tolerance::from_scenario(&doc).unwrap();
    assert_eq!(
        t,
        Tolerance {
            success_ratio: 0.01,
            p99: 0.5,
            p99_min_ms: 20.0
        }
    );
    t.apply("p99=0.1").unwrap();
    assert_eq!(t.p99, 0.1);
    assert!(t
        .apply("p99")
        .unwrap_err()
        .to_string()
        .contains("KEY=VALUE"));
    assert!(t
        .apply("p95=1")
        .unwrap_err()
        .to_string()
        .contains("unknown tolerance"));
    assert_eq!(
        t.apply("p99=-5%").unwrap_err(),
        ToleranceError::Value(ValueError::OutOfRange(-0.05))
    );
    let err =
        Tolerance::from_scenario(&serde_json::json!({"tolerance": {"p99": "lots"}})).unwrap_err();
    assert_eq!(
        err,
        ToleranceError::Field {
            key: "latency",
            source: ValueError::NotRatio("lots".into())
        }
    );
    assert_eq!(
        err.to_string(),
        "tolerance.latency: `lots` is not a number or percentage (e.g. `0.2` or `20%`)"
    );
    assert_eq!(
        Tolerance::from_scenario(&serde_json::json!({})).unwrap(),
        Tolerance::default()
    );
}

#[test]
fn zdt_compare_exits_1_on_a_regression_and_0_without() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let good = report_common::summary();
    std::fs::write(
        a.join("summary.json"),
        serde_json::to_string(&good).unwrap(),
    )
    .unwrap();
    std::fs::write(
        b.join("summary.json"),
        serde_json::to_string(&degraded()).unwrap(),
    )
    .unwrap();
    let zdt = env!("CARGO_BIN_EXE_zdt");

    let out = Command::new(zdt)
        .args(["compare"])
        .arg(&a)
        .arg(&b)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("REGRESSION"), "{stdout}");
    assert!(
        stdout.contains("regression: lb-remove-first: success ratio"),
        "{stdout}"
    );

    let out = Command::new(zdt)
        .args(["compare"])
        .arg(&a)
        .arg(b.join("summary.json"))
        .args([
            "--tolerance",
            "successRatio=0.01",
            "--tolerance",
            "p99=500%",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let out = Command::new(zdt)
        .args(["compare"])
        .arg(&a)
        .arg(&a)
        .args(["--tolerance", "bogus"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a bad flag is a usage error");
}

/// Text as miette drew it, with its line wrapping and frame taken out.
fn unwrapped(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '│')
        .collect()
}

/// A baseline that cannot be read is a usage error found before the run
/// starts: exit 2 at once, naming the file and the fix, nothing run.
#[test]
fn an_unreadable_baseline_is_refused_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-baseline.json");
    let out_dir = dir.path().join("out");
    let seed =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/seed-drain.yaml");
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_zdt"))
        .arg("run")
        .arg(&seed)
        .arg("--baseline")
        .arg(&missing)
        .arg("--out")
        .arg(&out_dir)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stderr = unwrapped(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--baseline:"), "{stderr}");
    assert!(stderr.contains("no-such-baseline.json"), "{stderr}");
    assert!(stderr.contains("--update-baseline"), "{stderr}");
    assert!(
        !out_dir.exists(),
        "nothing may run before the baseline is known good"
    );
    // The seed scenario alone takes minutes; refusing it is instant.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );

    // With --update-baseline the file need not exist yet: the check is
    // skipped (shown by a usage error that comes later, for a bad variant).
    let out = Command::new(env!("CARGO_BIN_EXE_zdt"))
        .arg("run")
        .arg(&seed)
        .args([
            "--variant",
            "no-such-variant",
            "--update-baseline",
            "--baseline",
        ])
        .arg(&missing)
        .output()
        .unwrap();
    let stderr = unwrapped(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no-such-variant"), "{stderr}");
    assert!(!stderr.contains("--baseline:"), "{stderr}");
}
