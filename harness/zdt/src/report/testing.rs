//! A run's data built from the real types: a drain scenario with two
//! variants, one that fails (a node drops traffic until the LB notices) and
//! one that passes (the node leaves the LB pool first).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::report::data::Bucket;
use crate::report::{RunData, VariantEvent};
use crate::run::summary::{
    ErrorWindow, ExpectationResult, LagMs, LatencyMs, RateSummary, RunSummary, StepResult,
    VariantSummary, Verdict,
};
use zdt_core::events::{Event, Source};
use zdt_traffic::ErrorKind;

pub const NODES: [&str; 3] = ["worker", "worker2", "worker3"];

pub fn variant(name: &str, verdict: Verdict, failed: u64) -> VariantSummary {
    let requests = 300_000u64;
    let ratio = (requests - failed) as f64 / requests as f64;
    let ok = failed == 0;
    VariantSummary {
        name: name.into(),
        description: format!("variant {name} <with markup & quotes \">"),
        verdict,
        reasons: if ok {
            vec![]
        } else {
            vec![format!("successRatio {ratio:.4} < 0.9999")]
        },
        requests,
        success_ratio: ratio,
        status_codes: BTreeMap::from([
            ("200".to_string(), requests - failed),
            ("0".to_string(), failed),
        ]),
        errors: if ok {
            BTreeMap::new()
        } else {
            BTreeMap::from([("timeout".to_string(), failed)])
        },
        latency_ms: LatencyMs {
            p50: 1.2,
            p90: 3.0,
            p95: 4.0,
            p99: if ok { 8.0 } else { 10_000.0 },
            p999: 10_000.0,
            max: 10_001.0,
            mean: 20.0,
        },
        rate: RateSummary {
            requested: 5000.0,
            achieved: 4999.9,
        },
        schedule_lag_ms: LagMs {
            p50: 0.02,
            p99: 0.4,
            max: 2.0,
        },
        expectations: vec![
            ExpectationResult {
                name: "successRatio".into(),
                threshold: ">= 0.9999".into(),
                actual: format!("{ratio:.4}"),
                ok,
            },
            ExpectationResult {
                name: "latency.p99".into(),
                threshold: "<= 250ms".into(),
                actual: if ok { "8ms".into() } else { "10s".into() },
                ok,
            },
        ],
        events: 5,
        error_windows: if ok {
            vec![]
        } else {
            vec![ErrorWindow {
                start_s: 20.3,
                end_s: 25.1,
                errors: failed,
                kinds: BTreeMap::from([("timeout".to_string(), failed)]),
                node: Some("worker2".into()),
                opened_by: Some("NoLocalEndpoints endpoint/worker2".into()),
                closed_by: Some("Unhealthy node/worker2".into()),
                explanation: "20.3 s–25.1 s: node worker2 had no local endpoint and dropped \
                              connections; closed when the LB marked worker2 unhealthy"
                    .into(),
                attribution: Default::default(),
                pod: None,
                cause: None,
                opened_at_s: None,
                closed_at_s: None,
                predicted: None,
            }]
        },
        chaos: vec![StepResult {
            index: 0,
            name: "drain worker2".into(),
            action: "drain".into(),
            node: Some("worker2".into()),
            started_s: 20.0,
            finished_s: 31.5,
            ok: true,
            message: "evicted 1 pod".into(),
        }],
        host_faults: Default::default(),
        pod_runtimes: Vec::new(),
        generators: Vec::new(),
        traffic_started_s: 3.0,
        timing: Default::default(),
        scenario_as_run: serde_json::json!({
            "name": "seed-drain",
            "cluster": {"provider": "emulator", "kubernetes": "1.31", "workers": 3},
            "loadBalancer": {"profile": "azure", "failOpen": true},
            "traffic": {"rate": "5000/s", "duration": "60s"},
        }),
        sweep: None,
        sweep_predicted_pass: None,
    }
}

pub fn summary() -> RunSummary {
    RunSummary {
        scenario: "seed-drain".into(),
        file: "scenarios/seed-drain.yaml".into(),
        provider: "emulator".into(),
        emulated: true,
        zdt_version: "0.1.0".into(),
        started_at: "2026-11-26T05:00:00Z".into(),
        seed: 7,
        complete: true,
        incomplete_reason: None,
        variants: vec![
            variant("no-mitigation", Verdict::Fail, 8182),
            variant("lb-remove-first", Verdict::Pass, 0),
        ],
    }
}

fn ev(
    variant: &str,
    at_s: f64,
    source: Source,
    reason: &str,
    object: &str,
    node: Option<&str>,
) -> VariantEvent {
    VariantEvent {
        variant: variant.into(),
        event: Event {
            at: Duration::from_secs_f64(at_s),
            source,
            reason: reason.into(),
            object: object.into(),
            node: node.map(str::to_owned),
            message: format!("{reason} <{object}>"),
            since: None,
        },
    }
}

/// Events on each variant's clock (traffic started at 3 s).
pub fn events(s: &RunSummary) -> Vec<VariantEvent> {
    let mut out = Vec::new();
    for v in &s.variants {
        let n = v.name.as_str();
        out.push(ev(
            n,
            23.0,
            Source::Chaos,
            "DrainStarted",
            "node/worker2",
            Some("worker2"),
        ));
        out.push(ev(
            n,
            23.1,
            Source::Node,
            "Cordoned",
            "node/worker2",
            Some("worker2"),
        ));
        out.push(ev(
            n,
            23.3,
            Source::Pod,
            "Terminating",
            "pod/nginx-a",
            Some("worker2"),
        ));
        out.push(ev(
            n,
            23.3,
            Source::Endpoint,
            "NoLocalEndpoints",
            "endpoint/worker2",
            Some("worker2"),
        ));
        out.push(ev(
            n,
            28.1,
            Source::Lb,
            "Unhealthy",
            "node/worker2",
            Some("worker2"),
        ));
        out.push(ev(
            n,
            34.5,
            Source::Chaos,
            "DrainFinished",
            "node/worker2",
            Some("worker2"),
        ));
    }
    out
}

/// One bucket per second for 60 s; the failing variant loses a third of
/// its traffic from 20 s to 25 s.
pub fn buckets(s: &RunSummary) -> BTreeMap<String, Vec<Bucket>> {
    let mut out = BTreeMap::new();
    for v in &s.variants {
        let failing = v.verdict == Verdict::Fail;
        let mut bs = Vec::new();
        for i in 0..60u64 {
            let requests = 5000;
            let bad = if failing && (20..25).contains(&i) {
                1666
            } else {
                0
            };
            let mut b = Bucket {
                start: Duration::from_secs(i),
                requests,
                successes: requests - bad,
                ..Default::default()
            };
            if bad > 0 {
                b.errors.insert(ErrorKind::ConnectTimeout, bad);
                b.status_codes.insert(0, bad);
            }
            b.status_codes.insert(200, requests - bad);
            b.p50 = Duration::from_micros(1200);
            b.p99 = if bad > 0 {
                Duration::from_secs(10)
            } else {
                Duration::from_millis(8)
            };
            b.max = b.p99 + Duration::from_millis(1);
            let drained = i >= 20;
            let nodes: Vec<&str> = NODES
                .iter()
                .copied()
                .filter(|n| !(drained && *n == "worker2"))
                .collect();
            let served = requests - bad;
            for (k, n) in nodes.iter().enumerate() {
                let share =
                    served / nodes.len() as u64 + u64::from(k == 0) * (served % nodes.len() as u64);
                b.by_node.insert((*n).into(), share);
                let pod = if *n == "worker3" && drained {
                    "nginx-c2".to_string()
                } else {
                    format!("nginx-{n}")
                };
                b.by_pod.insert(pod, share);
            }
            bs.push(b);
        }
        out.insert(v.name.clone(), bs);
    }
    out
}

pub fn run_data() -> RunData {
    let summary = summary();
    RunData {
        events: events(&summary),
        buckets: buckets(&summary),
        traffic: BTreeMap::new(),
        summary,
    }
}

/// Write the run's saved files (what `zdt run` leaves in OUT) to `dir`.
pub fn save(dir: &std::path::Path, data: &RunData) {
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(&data.summary).unwrap(),
    )
    .unwrap();
    let lines: Vec<String> = data
        .events
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    std::fs::write(dir.join("events.jsonl"), lines.join("\n") + "\n").unwrap();
    std::fs::write(
        dir.join("buckets.json"),
        serde_json::to_string(&data.buckets).unwrap(),
    )
    .unwrap();
}

/// The structure every report.html must have, whatever the run (used by
/// report_html.rs on fixtures and report_e2e.rs on a real run).
pub fn check_structure(page: &str, variants: &[&str]) {
    assert!(page.starts_with("<!DOCTYPE html>"));
    let timelines = page
        .matches("<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"timeline\"")
        .count();
    assert_eq!(timelines, variants.len(), "one SVG timeline per variant");
    for v in variants {
        assert!(
            page.contains(&format!("<g data-variant=\"{v}\">")),
            "timeline of {v}"
        );
    }
    assert_eq!(
        page.matches("<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"comparison\"")
            .count(),
        1,
        "one comparison chart"
    );
    assert!(page.contains("class=\"comparison-table\""));
    assert!(page.contains("seconds since traffic start"));
    // Self-contained: nothing the browser would fetch. The only URL in an
    // attribute is the SVG namespace; in-page links only; no script, style
    // import or embedded resource.
    let attr_urls = page.matches("=\"http").count() + page.matches("='http").count();
    let xmlns = page.matches("xmlns=\"http://www.w3.org/2000/svg\"").count();
    assert_eq!(
        attr_urls, xmlns,
        "only the SVG namespace is a URL attribute"
    );
    for (i, _) in page.match_indices("href=\"") {
        assert!(
            page[i + 6..].starts_with('#'),
            "in-page links only: {}",
            &page[i..i + 40]
        );
    }
    for needle in [
        "src=", "<script", "<link", "<img", "<iframe", "<object", "<embed", "@import", "url(",
    ] {
        assert!(
            !page.contains(needle),
            "external reference {needle:?} in the report"
        );
    }
    // URLs in text (event messages name probe targets) are displayed, not
    // fetched, and are never external: only loopback addresses and the
    // emulated cluster's own network (pods, nodes and LB, clients).
    let without_ns = page.replace("http://www.w3.org/2000/svg", "");
    for (i, _) in without_ns
        .match_indices("http://")
        .chain(without_ns.match_indices("https://"))
    {
        let rest = &without_ns[i..];
        let host = rest.split("://").nth(1).unwrap_or("");
        assert!(
            host.starts_with("127.0.0.1")
                || host.starts_with("10.244.")
                || host.starts_with("172.18.")
                || host.starts_with("100.64.")
                || host.starts_with("localhost")
                || host.starts_with("[::1]"),
            "external URL in the report: {}",
            &rest[..rest.len().min(60)]
        );
    }
    // Every SVG closes.
    assert_eq!(
        page.matches("<svg ").count(),
        page.matches("</svg>").count()
    );
}
