//! What the shipped scenarios' error windows must say when every request
//! is traced through the data path (the emulator): the cause on the right
//! node and pod, events in order, and the physics' prediction within one
//! LB probe interval of the measurement. Called by the scenario test for
//! each variant it ran, so the runs are not repeated.

use zdt::run::summary::{Attribution, ErrorWindow};
use zdt::run::VariantRun;
use zdt_scenario::Scenario;

/// Problems with the variant's windows (empty: fine).
pub fn check(v: &Scenario, run: &VariantRun) -> Vec<String> {
    let s = &run.summary;
    let mut out = Vec::new();
    let id = v.id();
    let windows = &s.error_windows;
    let drained = s
        .chaos
        .iter()
        .find(|c| c.action == "drain")
        .and_then(|c| c.node.clone());
    for w in windows {
        if w.attribution != Attribution::DataPath {
            continue;
        }
        if let (Some(o), Some(c)) = (w.opened_at_s, w.closed_at_s) {
            if o > c {
                out.push(format!("{id}: window opened after it closed: {w:?}"));
            }
        }
        if let Some(c) = w.closed_at_s {
            if c <= w.end_s {
                out.push(format!(
                    "{id}: closed at {c:.3} s, not after its last error at {:.3} s: {}",
                    w.end_s, w.explanation
                ));
            }
        }
        // Every traced window of a shipped scenario has a mechanism with a
        // formula (docs/physics.md), and the measurement agrees with it.
        if w.predicted.is_none() {
            out.push(format!(
                "{id}: no prediction for {}; its requests: {}",
                w.explanation,
                requests_in(run, w)
            ));
        }
        if let Some(p) = &w.predicted {
            if !p.agrees {
                out.push(format!(
                    "{id}: predicted {:.2} s vs measured {:.2} s differ by a probe interval or more ({}): {}",
                    p.duration_s, p.measured_s, p.formula, w.explanation
                ));
            }
        }
    }
    let traced = |w: &&ErrorWindow| w.attribution == Attribution::DataPath;
    match (v.name.as_str(), v.variant.as_str()) {
        ("keepalive-drain", "sigterm") => {
            let ok = windows.iter().filter(traced).any(|w| {
                w.node == drained
                    && w.opened_by
                        .as_deref()
                        .is_some_and(|o| o.starts_with("StopSignal") && o.contains("SIGTERM"))
            });
            if !ok {
                out.push(format!(
                    "{id}: no window on the drained node {drained:?} cites its SIGTERM: {:#?}",
                    windows
                ));
            }
        }
        ("seed-drain", "published") => {
            let ok = windows.iter().filter(traced).any(|w| {
                let node = drained.as_deref().unwrap_or("?");
                w.node == drained
                    && w.opened_by
                        .as_deref()
                        .is_some_and(|o| o.starts_with("NoLocalEndpoints"))
                    && w.explanation
                        .contains(&format!("node {node} had no local endpoint"))
                    && w.explanation
                        .contains(&format!("LB marked {node} unhealthy"))
                    && w.predicted.is_some()
            });
            if !ok {
                out.push(format!(
                    "{id}: no window cites {drained:?}'s missing local endpoint and the LB marking it unhealthy: {:#?}\nthe node's events: {}",
                    windows,
                    node_events(run, drained.as_deref())
                ));
            }
        }
        ("rolling-update", "no-prestop") => {
            // Each old pod stops at once while every kube-proxy still
            // routes to it: one window per pod, on its own node.
            let refused: Vec<&ErrorWindow> = windows
                .iter()
                .filter(traced)
                .filter(|w| w.cause.as_deref() == Some("refused by the pod (not listening)"))
                .collect();
            let mut pods: Vec<&str> = refused.iter().filter_map(|w| w.pod.as_deref()).collect();
            pods.sort();
            pods.dedup();
            let nodes: std::collections::BTreeSet<_> =
                refused.iter().filter_map(|w| w.node.as_deref()).collect();
            if refused.len() != 3 || pods.len() != 3 || nodes.len() != 3 {
                out.push(format!(
                    "{id}: expected three refused windows on three pods and nodes: {:#?}",
                    windows
                ));
            }
            for w in &refused {
                if w.closed_at_s.is_none() || w.predicted.is_none() {
                    out.push(format!(
                        "{id}: window without its close or prediction: {w:#?}"
                    ));
                }
            }
        }
        _ => {}
    }
    out
}

/// The failed requests of window `w` (at most five), with what a reader
/// needs to follow one through the data path: the client address, when it
/// was due and sent, and when the data path recorded its connection (all
/// seconds from the traffic's start). A window is placed by each request's
/// send, end or route time, by cause: any of them within 50 ms selects it,
/// if it went to the window's pod.
/// The events about `node` (seconds since traffic start), for a failure
/// message: what the node's kube-proxy, the LB and the chaos did when.
fn node_events(run: &VariantRun, node: Option<&str>) -> String {
    let t0 = run
        .traffic
        .as_ref()
        .map_or(0.0, |t| t.started_at.as_secs_f64());
    run.events
        .iter()
        .filter(|e| node.is_some() && e.node.as_deref() == node)
        .map(|e| {
            format!(
                "\n  {:.3} s{} {:?} {} {}: {}",
                e.at.as_secs_f64() - t0,
                e.since.map_or(String::new(), |s| format!(
                    " (from {:.3} s)",
                    s.as_secs_f64() - t0
                )),
                e.source,
                e.reason,
                e.object,
                e.message
            )
        })
        .collect()
}

fn requests_in(run: &VariantRun, w: &ErrorWindow) -> String {
    let Some(t) = &run.traffic else {
        return "(no traffic summary)".into();
    };
    let secs = |d: std::time::Duration| d.as_secs_f64();
    t.failed
        .iter()
        .filter(|f| {
            // The window's pod, where it names one (windows of other pods
            // may overlap in time).
            let pod = f.provenance.as_ref().and_then(|p| p.pod.as_deref());
            if w.pod.is_some() && pod != w.pod.as_deref() {
                return false;
            }
            let routed = f.routed_at.map(|r| r.saturating_sub(t.started_at));
            [Some(f.due), f.sent, Some(f.end), routed]
                .into_iter()
                .flatten()
                .any(|at| (w.start_s - 0.05..=w.end_s + 0.05).contains(&secs(at)))
        })
        .take(5)
        .map(|f| {
            format!(
                "[{} {} due {:.4} sent {:?} routed {:?} {:?}]",
                f.kind,
                f.local.map_or("-".into(), |l| l.to_string()),
                secs(f.due),
                f.sent.map(secs),
                f.routed_at.map(|r| secs(r.saturating_sub(t.started_at))),
                f.provenance
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}
