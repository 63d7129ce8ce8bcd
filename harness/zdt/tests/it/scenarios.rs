//! Every scenario file in `scenarios/` is a test: all its variants run on
//! the provider from `ZDT_PROVIDER` (default: the embedded emulator), and
//! each variant's verdict must be PASS — i.e. the scenario's own `expect:`
//! holds. `ZDT_SCALE` (default 0.1 here) multiplies the traffic rate so the
//! suite fits a small CI machine; timelines and durations stay as written,
//! and `zdt run` checks the same files at full size.
//!
//! `ZDT_JOBS` (default 4) variants of a file run at once, each on its own
//! cluster, as `zdt run --jobs` does; with the test harness running two
//! files at once that is up to eight variants on a 2-core machine. At this
//! scale they wait more than they work (the five files took 135 CPU
//! seconds in 280 s with two variants per file), so the generator stays on
//! schedule (a variant that fell behind is INVALID, and fails this test). Where the emulator has no network of its
//! own, files and variants run one at a time (see [`HOST_STACK`]), and a
//! file whose containers are the user's own (`workload.run`) says SKIPPED.

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;
use zdt::run::{run_variants, RunOptions, Verdict};
use zdt_scenario::{Overrides, Provider};

fn options() -> RunOptions {
    let scale = std::env::var("ZDT_SCALE")
        .ok()
        .map(|s| {
            s.parse::<f64>()
                .expect("ZDT_SCALE must be a number such as 0.1")
        })
        .unwrap_or(0.1);
    let provider = std::env::var("ZDT_PROVIDER").ok().map(|p| {
        p.parse::<Provider>()
            .expect("ZDT_PROVIDER: emulator, kind or existing")
    });
    let jobs = std::env::var("ZDT_JOBS")
        .ok()
        .map(|s| {
            s.parse::<usize>()
                .expect("ZDT_JOBS must be a count such as 4")
        })
        .unwrap_or(4);
    RunOptions {
        overrides: Overrides {
            provider,
            ..Overrides::default()
        },
        scale: Some(scale),
        jobs,
        ..RunOptions::default()
    }
}

/// Without a network of its own (no namespaces here, or `ZDT_NETWORK=host`)
/// every variant's connections cross the host's stack and its one
/// connection-tracking table (each leaves its entries for the TIME_WAIT
/// timeout): one variant of one file at a time keeps the suite inside a
/// default-sized table, as a user's single `zdt run` is.
static HOST_STACK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One test per file of `scenarios/`, named for it (`scenario::seed_drain`);
/// [`every_scenario_file_is_a_test`] fails when a file is missing here.
macro_rules! scenario_tests {
    ($($name:ident => $file:literal),* $(,)?) => {
        const FILES: &[&str] = &[$($file),*];
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                scenario(scenarios_dir().join($file)).await
            }
        )*
    };
}

scenario_tests! {
    keepalive_drain => "keepalive-drain.yaml",
    own_service => "own-service.yaml",
    prestop_sweep => "prestop-sweep.yaml",
    rolling_update => "rolling-update.yaml",
    seed_drain => "seed-drain.yaml",
}

fn scenarios_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scenarios")
}

#[test]
fn every_scenario_file_is_a_test() {
    let mut on_disk: Vec<String> = std::fs::read_dir(scenarios_dir())
        .expect("scenarios/ is readable")
        .map(|e| {
            e.expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = FILES.iter().map(|f| f.to_string()).collect();
    listed.sort();
    assert_eq!(
        on_disk, listed,
        "every file in scenarios/ needs a line in scenario_tests! (tests/it/scenarios.rs)"
    );
}

async fn scenario(path: PathBuf) {
    zdt_core::process::raise_fd_limit();
    let mut opts = options();
    let (_, variants) = zdt::run::executor::plan(&path, &opts).expect("scenario loads");
    assert!(!variants.is_empty());
    let host_stack = variants
        .iter()
        .all(|v| v.cluster.provider == Provider::Emulator)
        .then(zdt_core::netns::private_unavailable)
        .flatten();
    let _one_at_a_time = match host_stack {
        Some(why) if variants.iter().any(|v| !v.workload.run.is_empty()) => {
            eprintln!(
                "SKIPPED: {}: workload.run needs the emulator's own network: {why}",
                path.display()
            );
            return;
        }
        Some(_) => {
            opts.jobs = 1;
            Some(HOST_STACK.lock().await)
        }
        None => None,
    };
    let mut failures = Vec::new();
    let mut runs = Vec::new();
    run_variants(&variants, &opts, CancellationToken::new(), |i, run| {
        runs.push((i, run))
    })
    .await;
    assert_eq!(runs.len(), variants.len(), "every variant ran");
    runs.sort_by_key(|(i, _)| *i);
    for (i, run) in &runs {
        let v = &variants[*i];
        let s = &run.summary;
        eprintln!(
            "{}: {:?} success {:.4}% requests {} p99 {:.1}ms lag p99 {:.1}ms errors {:?} windows {:?} outside traffic {:.1}s",
            v.id(),
            s.verdict,
            s.success_ratio * 100.0,
            s.requests,
            s.latency_ms.p99,
            s.schedule_lag_ms.p99,
            s.errors,
            s.error_windows
                .iter()
                .map(|w| &w.explanation)
                .collect::<Vec<_>>(),
            s.timing.outside_traffic_s,
        );
        // The run puts back what chaos changed; an undo that fails means a
        // step registered something it cannot undo.
        for e in run.events.iter().filter(|e| e.reason == "UndoFailed") {
            failures.push(format!("{}: {}", v.id(), e.message));
        }
        // A container the scenario runs itself (`workload.run`) must have
        // run as its own process on the emulator, and the summary say so:
        // never silently as the built-in server.
        if v.cluster.provider == Provider::Emulator && !v.workload.run.is_empty() {
            let own: Vec<_> = s
                .pod_runtimes
                .iter()
                .filter(|r| v.workload.run.contains_key(&r.container))
                .collect();
            if own.is_empty()
                || own
                    .iter()
                    .any(|r| r.runtime != "host" && r.runtime != "docker")
            {
                failures.push(format!(
                    "{}: workload.run containers ran as {:?}",
                    v.id(),
                    s.pod_runtimes
                ));
            }
        }
        if v.cluster.provider == Provider::Emulator {
            failures.extend(super::attribution::check(v, run));
        }
        // A sweep point's verdict is a data point (the sweep asks where it
        // flips), checked below against the physics; it must still be a
        // valid measurement.
        if s.sweep.is_some() {
            if !matches!(s.verdict, Verdict::Pass | Verdict::Fail) {
                failures.push(format!(
                    "{}: {:?}: {}",
                    v.id(),
                    s.verdict,
                    s.reasons.join("; ")
                ));
            }
            continue;
        }
        if s.verdict != Verdict::Pass {
            failures.push(format!(
                "{}: {:?}: {}; slowest seconds: {}",
                v.id(),
                s.verdict,
                s.reasons.join("; "),
                slowest_seconds(run)
            ));
        }
    }
    failures.extend(sweep_answers(&runs));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The three seconds of traffic with the slowest requests, so a latency
/// failure says whether it was one burst (a start-up, a stall) or spread.
fn slowest_seconds(run: &zdt::run::VariantRun) -> String {
    let Some(t) = &run.traffic else {
        return "no traffic summary".into();
    };
    let mut buckets: Vec<_> = t.buckets.iter().collect();
    buckets.sort_by_key(|b| std::cmp::Reverse(b.max));
    buckets
        .iter()
        .take(3)
        .map(|b| {
            format!(
                "t={:.0}s p99 {:.0}ms max {:.0}ms ({} requests, {:?})",
                b.start.as_secs_f64(),
                b.p99.as_secs_f64() * 1e3,
                b.max.as_secs_f64() * 1e3,
                b.requests,
                b.by_node
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// For each variant a sweep crossed: the smallest value that met `expect:`
/// must be the smallest the physics predicts (both may be "none").
fn sweep_answers(runs: &[(usize, zdt::run::VariantRun)]) -> Vec<String> {
    let mut by_base: std::collections::BTreeMap<&str, Vec<&zdt::run::VariantSummary>> =
        Default::default();
    for (_, run) in runs {
        if let Some(p) = &run.summary.sweep {
            by_base
                .entry(p.base.as_str())
                .or_default()
                .push(&run.summary);
        }
    }
    let mut out = Vec::new();
    for (base, mut points) in by_base {
        points.sort_by_key(|s| s.sweep.as_ref().map_or(0, |p| p.index));
        let value = |s: &&zdt::run::VariantSummary| s.sweep.as_ref().map(|p| p.value.clone());
        let measured = points
            .iter()
            .find(|s| s.verdict == Verdict::Pass)
            .and_then(value);
        if points.iter().all(|s| s.sweep_predicted_pass.is_none()) {
            continue;
        }
        let predicted = points
            .iter()
            .find(|s| s.sweep_predicted_pass == Some(true))
            .and_then(value);
        eprintln!("sweep of {base}: smallest passing {measured:?}, predicted {predicted:?}");
        if measured != predicted {
            out.push(format!(
                "sweep of {base}: the smallest value meeting expect is {measured:?}, the physics predicts {predicted:?}: {:?}",
                points
                    .iter()
                    .map(|s| (s.name.as_str(), s.verdict, s.success_ratio))
                    .collect::<Vec<_>>()
            ));
        }
    }
    out
}
