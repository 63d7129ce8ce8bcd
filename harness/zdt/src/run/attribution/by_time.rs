//! Attribution by time and node, where the data path kept no record of
//! each connection (kind, existing clusters): group failed requests (by
//! due time) into windows, then find the cluster or LB event near each
//! window's edges that most likely opened and closed it.

use std::collections::BTreeMap;
use std::time::Duration;

use zdt_core::events::{Event, Source};

use super::super::summary::{Attribution, ErrorWindow};

/// Errors in one time bucket, times relative to traffic start.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BucketErrors {
    pub start: Duration,
    pub width: Duration,
    pub requests: u64,
    /// Error kind → count.
    pub errors: BTreeMap<String, u64>,
}

impl BucketErrors {
    fn total(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// How far around a window's edges to look for its causes.
const LOOK_BEFORE: Duration = Duration::from_secs(3);
const LOOK_AFTER: Duration = Duration::from_secs(3);
const EDGE_SLACK: Duration = Duration::from_millis(500);

/// Group buckets with errors into windows (gaps of at most `merge_gap` are
/// bridged) and attribute each. `traffic_start` is the offset of traffic
/// start on the events' clock.
pub(crate) fn error_windows(
    buckets: &[BucketErrors],
    events: &[Event],
    traffic_start: Duration,
    merge_gap: Duration,
) -> Vec<ErrorWindow> {
    let mut raw: Vec<(Duration, Duration, BTreeMap<String, u64>)> = Vec::new();
    for b in buckets.iter().filter(|b| b.total() > 0) {
        let end = b.start + b.width;
        match raw.last_mut() {
            Some((_, last_end, kinds)) if b.start <= *last_end + merge_gap => {
                *last_end = end;
                for (k, v) in &b.errors {
                    *kinds.entry(k.clone()).or_default() += v;
                }
            }
            _ => raw.push((b.start, end, b.errors.clone())),
        }
    }
    // Events on traffic time; events before traffic start get negative times.
    let rel = |e: &Event| e.at.as_secs_f64() - traffic_start.as_secs_f64();
    raw.into_iter()
        .map(|(start, end, kinds)| {
            let (s, e) = (start.as_secs_f64(), end.as_secs_f64());
            let opened = events
                .iter()
                .filter(|ev| {
                    let t = rel(ev);
                    t >= s - LOOK_BEFORE.as_secs_f64() && t <= s + EDGE_SLACK.as_secs_f64()
                })
                .filter_map(|ev| opening_rank(ev).map(|r| (r, ev)))
                // best rank, then the latest before the window
                .max_by(|(ra, a), (rb, b)| ra.cmp(rb).then(rel(a).total_cmp(&rel(b))))
                .map(|(_, ev)| ev);
            let node = opened.and_then(|ev| ev.node.clone());
            let closed = events
                .iter()
                .filter(|ev| {
                    let t = rel(ev);
                    t >= e - EDGE_SLACK.as_secs_f64() - 0.5 && t <= e + LOOK_AFTER.as_secs_f64()
                })
                .filter(|ev| node.is_none() || ev.node.is_none() || ev.node == node)
                .filter_map(|ev| closing_rank(ev).map(|r| (r, ev)))
                // best rank, then the closest to the window's end
                .max_by(|(ra, a), (rb, b)| {
                    ra.cmp(rb)
                        .then((rel(b) - e).abs().total_cmp(&(rel(a) - e).abs()))
                })
                .map(|(_, ev)| ev);
            let node = node.or_else(|| closed.and_then(|ev| ev.node.clone()));
            let errors = kinds.values().sum();
            ErrorWindow {
                start_s: s,
                end_s: e,
                errors,
                explanation: explain(s, e, errors, &kinds, node.as_deref(), opened, closed),
                kinds,
                node,
                opened_by: opened.map(describe),
                closed_by: closed.map(describe),
                attribution: Attribution::Time,
                pod: None,
                cause: None,
                opened_at_s: opened.map(rel),
                closed_at_s: closed.map(rel),
                predicted: None,
            }
        })
        .collect()
}

/// Which events can open an error window, best first: what the data path
/// did (a kube-proxy view change) explains more than the pod or the chaos
/// step that led to it.
fn opening_rank(ev: &Event) -> Option<u8> {
    match (ev.source, ev.reason.as_str()) {
        (Source::Endpoint, "NoLocalEndpoints" | "NoEndpoints") => Some(9),
        // A pod told to stop explains more than a kube-proxy's routine sync.
        (Source::Pod, "StopSignal" | "GracePeriodExpired" | "Exited") => Some(8),
        (Source::Endpoint, _) => Some(7),
        (Source::Pod, "Killing" | "NotReady" | "Terminating" | "PreStopStarted" | "Stopped") => {
            Some(6)
        }
        (Source::Node, _) => Some(5),
        (Source::Chaos, "Evicted" | "PodDeleted" | "NodeStopped" | "NodePaused" | "NodeKilled") => {
            Some(4)
        }
        (Source::Lb, "Unhealthy" | "Removed" | "Draining" | "FailOpen") => Some(3),
        (Source::Chaos, _) => Some(2),
        _ => None,
    }
}

/// Which events can close an error window, best first.
fn closing_rank(ev: &Event) -> Option<u8> {
    match (ev.source, ev.reason.as_str()) {
        (Source::Lb, "Unhealthy" | "Removed") => Some(9),
        (Source::Endpoint, "LocalEndpointsRestored" | "EndpointsRestored") => Some(8),
        (Source::Endpoint, _) => Some(6),
        (Source::Pod, "Ready" | "Gone" | "Deleted") => Some(5),
        (Source::Lb, _) => Some(4),
        (Source::Chaos, _) => Some(2),
        _ => None,
    }
}

/// "; closed when the LB marked worker2 unhealthy", or by whatever event.
pub(super) fn closing_words(closed: Option<&Event>) -> String {
    match closed {
        Some(ev) if ev.source == Source::Lb && ev.reason == "Unhealthy" => format!(
            "; closed when the LB marked {} unhealthy",
            ev.node.as_deref().unwrap_or(&ev.object)
        ),
        Some(ev) if ev.source == Source::Lb && ev.reason == "Removed" => format!(
            "; closed when {} was removed from the LB pool",
            ev.node.as_deref().unwrap_or(&ev.object)
        ),
        Some(ev) => format!("; closed by {} {} ({})", ev.reason, ev.object, ev.message),
        None => String::new(),
    }
}

/// "150 timeout, 3 reset".
pub(super) fn kinds_words(kinds: &BTreeMap<String, u64>) -> String {
    kinds
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn describe(ev: &Event) -> String {
    format!("{} {}: {}", ev.reason, ev.object, ev.message)
}

fn explain(
    s: f64,
    e: f64,
    errors: u64,
    kinds: &BTreeMap<String, u64>,
    node: Option<&str>,
    opened: Option<&Event>,
    closed: Option<&Event>,
) -> String {
    let kinds = kinds_words(kinds);
    let cause = match (opened, node) {
        (Some(ev), Some(n)) if ev.reason == "NoLocalEndpoints" => format!(
            "node {n} had no local endpoint ({}) while the LB still sent it traffic",
            ev.message
        ),
        (Some(ev), _) if ev.reason == "NoEndpoints" => {
            format!("the Service had no ready endpoint ({})", ev.message)
        }
        (Some(ev), _) => format!("after {} {} ({})", ev.reason, ev.object, ev.message),
        (None, _) => "no cluster or LB event explains it".to_owned(),
    };
    let close = closing_words(closed);
    format!(
        "{s:.1} s–{e:.1} s: {errors} errors ({kinds}): {cause}{close} (attributed by time and node: \
         no per-request record of the data path)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(at_s: f64, source: Source, reason: &str, node: Option<&str>, msg: &str) -> Event {
        Event {
            at: Duration::from_secs_f64(at_s),
            source,
            reason: reason.into(),
            object: node.map(|n| format!("node/{n}")).unwrap_or("pod/x".into()),
            node: node.map(str::to_owned),
            message: msg.into(),
            since: None,
        }
    }

    fn bucket(start_ms: u64, errors: u64) -> BucketErrors {
        let mut m = BTreeMap::new();
        if errors > 0 {
            m.insert("timeout".to_owned(), errors);
        }
        BucketErrors {
            start: Duration::from_millis(start_ms),
            width: Duration::from_millis(100),
            requests: 500,
            errors: m,
        }
    }

    #[test]
    fn a_drain_window_is_attributed_to_the_node_and_the_lb_probe() {
        // traffic started at 2 s on the clock; window 10.2–15.1 s of traffic
        let mut buckets: Vec<BucketErrors> = (0..200).map(|i| bucket(i * 100, 0)).collect();
        for b in buckets.iter_mut().skip(102).take(49) {
            b.errors.insert("timeout".into(), 150);
        }
        let events = vec![
            ev(
                11.9,
                Source::Chaos,
                "Evicted",
                Some("worker2"),
                "evicted nginx-a",
            ),
            ev(
                12.1,
                Source::Endpoint,
                "NoLocalEndpoints",
                Some("worker2"),
                "pod nginx-a terminating",
            ),
            ev(
                12.1,
                Source::Endpoint,
                "EndpointsApplied",
                Some("worker3"),
                "2 endpoints",
            ),
            ev(
                17.1,
                Source::Lb,
                "Unhealthy",
                Some("worker2"),
                "2 probes failed",
            ),
            ev(30.0, Source::Lb, "Unhealthy", Some("worker3"), "unrelated"),
        ];
        let w = error_windows(
            &buckets,
            &events,
            Duration::from_secs(2),
            Duration::from_millis(200),
        );
        assert_eq!(w.len(), 1, "{w:?}");
        let w = &w[0];
        assert!(
            (w.start_s - 10.2).abs() < 1e-9 && (w.end_s - 15.1).abs() < 1e-9,
            "{w:?}"
        );
        assert_eq!(w.errors, 49 * 150);
        assert_eq!(w.node.as_deref(), Some("worker2"));
        assert!(
            w.explanation.contains("node worker2 had no local endpoint"),
            "{}",
            w.explanation
        );
        assert!(
            w.explanation.contains("LB marked worker2 unhealthy"),
            "{}",
            w.explanation
        );
    }

    #[test]
    fn separate_bursts_make_separate_windows_and_small_gaps_merge() {
        let mut buckets: Vec<BucketErrors> = (0..100).map(|i| bucket(i * 100, 0)).collect();
        for i in [10, 11, 13, 50, 51] {
            buckets[i].errors.insert("refused".into(), 3);
        }
        let w = error_windows(&buckets, &[], Duration::ZERO, Duration::from_millis(100));
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(w[0].errors, 9);
        assert!(w[0]
            .explanation
            .contains("no cluster or LB event explains it"));
        assert!(w[1].opened_by.is_none());
    }

    #[test]
    fn a_pods_stop_signal_outranks_a_routine_kube_proxy_sync() {
        let mut buckets: Vec<BucketErrors> = (0..100).map(|i| bucket(i * 100, 0)).collect();
        buckets[50].errors.insert("closed".into(), 20);
        let events = vec![
            ev(4.9, Source::Pod, "StopSignal", Some("w3"), "sent SIGTERM"),
            ev(
                4.95,
                Source::Endpoint,
                "EndpointsApplied",
                Some("w1"),
                "2 ready",
            ),
        ];
        let w = error_windows(&buckets, &events, Duration::ZERO, Duration::ZERO);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].node.as_deref(), Some("w3"), "{w:?}");
        assert!(w[0].explanation.contains("attributed by time and node"));
    }

    #[test]
    fn no_errors_no_windows() {
        let buckets: Vec<BucketErrors> = (0..10).map(|i| bucket(i * 100, 0)).collect();
        assert!(error_windows(&buckets, &[], Duration::ZERO, Duration::ZERO).is_empty());
    }
}
