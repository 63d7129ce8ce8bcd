//! Attribution by the data path's own record: every failed request knows
//! the node the LB sent it to, the pod that node's rules chose and what
//! became of the dial. Windows are per cause and per pod (or per node when
//! no pod was chosen); each is opened by the latest event of *that* pod or
//! node that can cause it, and closed by the first event of that pod or of
//! a node that routed to it, after its last failure, that can end it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use zdt_core::events::{Event, Source};
use zdt_core::provenance::Fate;
use zdt_traffic::{ErrorKind, FailedRequest};

use super::super::summary::{Attribution, ErrorWindow};
use super::by_time::{closing_words, describe, kinds_words};
use super::physics::{self, Physics};

/// Failures of one cause on one subject further apart than this start a
/// new window.
const SPLIT_GAP: f64 = 1.0;
/// How long after a window's first failure its cause may be stamped: a
/// kube-proxy replaces its rules a moment before it reports them, and the
/// LB stamps a connection before the route is chosen.
const OPEN_SLACK: f64 = 0.1;

/// What the data path did with the failed requests of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Cause {
    /// The node dropped new connections (no usable local endpoint, or the
    /// node itself was down).
    NodeDropped,
    /// The node rejected new connections (no endpoint at all).
    NodeRejected,
    /// Routed to a pod IP with no container behind it.
    PodGone,
    /// Routed to a pod that did not listen (stopped, or not started yet).
    PodRefused,
    /// Connected to the pod, which closed or reset the connection before
    /// the response was complete.
    PodCut,
    /// Connected to the pod, which did not answer in time.
    PodSilent,
    /// The pod answered with a failing status.
    PodStatus,
    /// The LB had no backend to send it to.
    LbRejected,
    /// The LB's dial failed otherwise.
    DialFailed,
}

impl Cause {
    fn of(fate: Fate, has_pod: bool, kind: ErrorKind) -> Self {
        match (fate, has_pod) {
            (Fate::Rejected, _) => Cause::LbRejected,
            (Fate::Dropped, false) => Cause::NodeDropped,
            (Fate::Dropped, true) => Cause::PodGone,
            (Fate::Refused, false) => Cause::NodeRejected,
            (Fate::Refused, true) => Cause::PodRefused,
            (Fate::DialFailed, _) => Cause::DialFailed,
            (Fate::Connected, _) => match kind {
                // Sent to the pod by a pass-through data path, which
                // answered the SYN with a reset: nothing listened.
                ErrorKind::Refused => Cause::PodRefused,
                ErrorKind::HttpStatus => Cause::PodStatus,
                ErrorKind::ConnectTimeout | ErrorKind::ResponseTimeout => Cause::PodSilent,
                _ => Cause::PodCut,
            },
        }
    }

    /// Whether the window belongs to a pod (else to a node).
    fn on_pod(self) -> bool {
        matches!(
            self,
            Cause::PodGone
                | Cause::PodRefused
                | Cause::PodCut
                | Cause::PodSilent
                | Cause::PodStatus
        )
    }

    pub(super) fn describe(self) -> &'static str {
        match self {
            Cause::NodeDropped => "dropped by the node",
            Cause::NodeRejected => "rejected by the node (no endpoint)",
            Cause::PodGone => "sent to a pod IP with no container behind it",
            Cause::PodRefused => "refused by the pod (not listening)",
            Cause::PodCut => "cut by the pod mid-exchange",
            Cause::PodSilent => "not answered in time by the pod",
            Cause::PodStatus => "answered with a failing status by the pod",
            Cause::LbRejected => "rejected by the LB (no backend)",
            Cause::DialFailed => "not connected (the LB's dial failed)",
        }
    }

    /// How well `ev` explains the start of this cause (0: not at all).
    fn opening_rank(self, ev: &Event) -> u8 {
        let r = ev.reason.as_str();
        match (self, ev.source) {
            (_, Source::Chaos) if matches!(r, "NodeStopped" | "NodePaused" | "NodeKilled") => 9,
            (Cause::NodeDropped, Source::Endpoint) if r == "NoLocalEndpoints" => 10,
            (Cause::NodeRejected, Source::Endpoint) if r == "NoEndpoints" => 10,
            (Cause::NodeDropped | Cause::NodeRejected, Source::Endpoint) => 3,
            (Cause::PodGone, Source::Pod) if matches!(r, "Gone" | "Exited") => 10,
            (
                Cause::PodRefused | Cause::PodCut | Cause::PodSilent | Cause::PodGone,
                Source::Pod,
            ) => match r {
                "StopSignal" | "GracePeriodExpired" => 10,
                "Exited" => 9,
                "Killing" => 7,
                "PreStopStarted" | "PreStopFinished" | "NotReady" => 5,
                // A new pod that is an endpoint before it listens.
                "Ready" | "Started" => 4,
                _ => 0,
            },
            (Cause::PodStatus, Source::Pod) if matches!(r, "NotReady" | "StopSignal") => 5,
            (Cause::LbRejected, Source::Lb) => 5,
            _ => 0,
        }
    }

    /// How well `ev` explains the end of this cause (0: not at all).
    fn closing_rank(self, ev: &Event) -> u8 {
        let r = ev.reason.as_str();
        match (self, ev.source) {
            (Cause::NodeDropped | Cause::NodeRejected, Source::Lb)
                if matches!(r, "Unhealthy" | "Removed" | "Draining") =>
            {
                10
            }
            (Cause::NodeDropped | Cause::NodeRejected, Source::Endpoint) => match r {
                "LocalEndpointsRestored" | "EndpointsRestored" | "TerminatingFallback" => 9,
                _ => 0,
            },
            (_, Source::Chaos) if r == "NodeResumed" => 8,
            (Cause::LbRejected, Source::Lb) => 5,
            // A kube-proxy that stopped routing to the pod.
            (c, Source::Endpoint) if c.on_pod() && r == "EndpointsApplied" => 9,
            (c, Source::Lb) if c.on_pod() && matches!(r, "Unhealthy" | "Removed") => 8,
            (c, Source::Pod) if c.on_pod() => match r {
                "Exited" | "Gone" | "Deleted" | "Ready" => 7,
                _ => 0,
            },
            _ => 0,
        }
    }
}

/// One failed request, placed: when the data path failed it (seconds since
/// traffic start) and where.
struct Placed<'a> {
    at: f64,
    kind: ErrorKind,
    node: Option<&'a str>,
}

/// The subject a window belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Subject {
    Pod(String),
    Node(String),
    Lb,
}

pub(super) fn error_windows(
    failed: &[&FailedRequest],
    events: &[Event],
    traffic_start: Duration,
    physics: &Physics,
) -> Vec<ErrorWindow> {
    let t0 = traffic_start.as_secs_f64();
    let rel = |d: Duration| d.as_secs_f64() - t0;
    let mut groups: BTreeMap<(Subject, Cause), Vec<Placed>> = BTreeMap::new();
    for f in failed {
        let Some(p) = &f.provenance else { continue };
        let cause = Cause::of(p.fate, p.pod.is_some(), f.kind);
        let subject = match (&p.pod, &p.node) {
            (Some(pod), _) if cause.on_pod() => Subject::Pod(pod.clone()),
            (_, Some(node)) if cause != Cause::LbRejected => Subject::Node(node.clone()),
            _ => Subject::Lb,
        };
        // Where the connection was never made, the LB's route is the moment;
        // on a connection, a cut or a failing answer comes when the request
        // ended, silence from when it was sent.
        let at = match (p.fate, cause) {
            (Fate::Connected, Cause::PodSilent) => f.sent.unwrap_or(f.end).as_secs_f64(),
            (Fate::Connected, _) => f.end.as_secs_f64(),
            _ => f.routed_at.map(rel).unwrap_or(f.end.as_secs_f64()),
        };
        groups.entry((subject, cause)).or_default().push(Placed {
            at,
            kind: f.kind,
            node: p.node.as_deref(),
        });
    }
    let pod_nodes = pod_nodes(events);
    let mut out = Vec::new();
    for ((subject, cause), mut placed) in groups {
        placed.sort_by(|a, b| a.at.total_cmp(&b.at));
        let mut previous_end = f64::NEG_INFINITY;
        for run in split(&placed) {
            let w = window(
                &subject,
                cause,
                run,
                previous_end,
                events,
                t0,
                &pod_nodes,
                physics,
            );
            previous_end = w.end_s;
            out.push(w);
        }
    }
    out
}

/// Consecutive failures no more than [`SPLIT_GAP`] apart.
fn split<'p, 'a>(placed: &'p [Placed<'a>]) -> Vec<&'p [Placed<'a>]> {
    let mut runs = Vec::new();
    let mut from = 0;
    for i in 1..=placed.len() {
        if i == placed.len() || placed[i].at - placed[i - 1].at > SPLIT_GAP {
            runs.push(&placed[from..i]);
            from = i;
        }
    }
    runs
}

/// Pod name → the node its events came from.
fn pod_nodes(events: &[Event]) -> HashMap<&str, &str> {
    events
        .iter()
        .filter(|e| e.source == Source::Pod)
        .filter_map(|e| Some((e.object.strip_prefix("pod/")?, e.node.as_deref()?)))
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn window(
    subject: &Subject,
    cause: Cause,
    run: &[Placed],
    previous_end: f64,
    events: &[Event],
    t0: f64,
    pod_nodes: &HashMap<&str, &str>,
    physics: &Physics,
) -> ErrorWindow {
    let rel = |e: &Event| e.at.as_secs_f64() - t0;
    let (first, last) = (run[0].at, run[run.len() - 1].at);
    let routers: BTreeSet<&str> = run.iter().filter_map(|p| p.node).collect();
    let (pod, node) = match subject {
        Subject::Pod(p) => (
            Some(p.as_str()),
            pod_nodes
                .get(p.as_str())
                .copied()
                .or_else(|| routers.iter().next().copied()),
        ),
        Subject::Node(n) => (None, Some(n.as_str())),
        Subject::Lb => (None, None),
    };
    // Events about this window's pod, its node, or a node that routed it.
    let concerns = |e: &Event| match (pod, e.object.strip_prefix("pod/")) {
        (Some(p), Some(o)) => o == p,
        (_, Some(_)) => false,
        _ => {
            let n = e.node.as_deref();
            let ours = n.is_some() && (n == node || n.is_some_and(|n| routers.contains(n)));
            ours || (subject == &Subject::Lb && e.source == Source::Lb)
        }
    };
    // A change that loaded over a span may have met packets from its
    // start: an opener counts from there.
    let began = |e: &Event| e.since.map_or_else(|| rel(e), |s| s.as_secs_f64() - t0);
    let opened = events
        .iter()
        .filter(|e| began(e) <= first + OPEN_SLACK && rel(e) > previous_end && concerns(e))
        .filter_map(|e| Some((cause.opening_rank(e), e)).filter(|(r, _)| *r > 0))
        .max_by(|(ra, a), (rb, b)| ra.cmp(rb).then(a.at.cmp(&b.at)))
        .map(|(_, e)| e);
    let not_before = opened.map(rel).unwrap_or(f64::NEG_INFINITY);
    let closed = events
        .iter()
        .filter(|e| {
            let t = rel(e);
            t > last && t >= not_before && concerns(e)
        })
        .filter_map(|e| Some((cause.closing_rank(e), e)).filter(|(r, _)| *r > 0))
        // the first that can end it; on a tie in time, the best
        .min_by(|(ra, a), (rb, b)| a.at.cmp(&b.at).then(rb.cmp(ra)))
        .map(|(_, e)| e);
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    for p in run {
        *kinds.entry(p.kind.to_string()).or_default() += 1;
    }
    let errors = run.len() as u64;
    let predicted = physics::predict(
        physics,
        cause,
        first,
        last,
        opened.map(|e| (e, rel(e))),
        events,
        t0,
        pod,
        node,
    );
    ErrorWindow {
        start_s: first,
        end_s: last,
        errors,
        explanation: explain(
            first, last, errors, &kinds, cause, pod, node, &routers, opened, closed,
        ),
        kinds,
        node: node.map(str::to_owned),
        opened_by: opened.map(describe),
        closed_by: closed.map(describe),
        attribution: Attribution::DataPath,
        pod: pod.map(str::to_owned),
        cause: Some(cause.describe().to_owned()),
        opened_at_s: opened.map(rel),
        closed_at_s: closed.map(rel),
        predicted,
    }
}

#[allow(clippy::too_many_arguments)]
fn explain(
    s: f64,
    e: f64,
    errors: u64,
    kinds: &BTreeMap<String, u64>,
    cause: Cause,
    pod: Option<&str>,
    node: Option<&str>,
    routers: &BTreeSet<&str>,
    opened: Option<&Event>,
    closed: Option<&Event>,
) -> String {
    let kinds = kinds_words(kinds);
    let whom = match (pod, node) {
        (Some(p), Some(n)) => format!("pod {p} on {n}"),
        (Some(p), None) => format!("pod {p}"),
        (None, Some(n)) => format!("node {n}"),
        (None, None) => "the LB".to_owned(),
    };
    let via = if pod.is_some() && !routers.is_empty() {
        format!(
            " (via {})",
            routers.iter().copied().collect::<Vec<_>>().join(", ")
        )
    } else {
        String::new()
    };
    let cause_words = match (cause, opened) {
        (Cause::NodeDropped, Some(ev)) if ev.reason == "NoLocalEndpoints" => format!(
            "node {} had no local endpoint ({}) while the LB still sent it traffic",
            node.unwrap_or("?"),
            ev.message
        ),
        (_, Some(ev)) => format!(
            "{} after {} {} ({})",
            cause.describe(),
            ev.reason,
            ev.object,
            ev.message
        ),
        (_, None) => format!("{}; no event of {whom} explains it", cause.describe()),
    };
    let close = closing_words(closed);
    format!("{s:.1} s–{e:.1} s: {errors} errors ({kinds}) on {whom}{via}: {cause_words}{close}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use zdt_core::provenance::Provenance;

    fn ev(at_s: f64, source: Source, reason: &str, object: &str, node: &str, msg: &str) -> Event {
        Event {
            at: Duration::from_secs_f64(at_s),
            source,
            reason: reason.into(),
            object: object.into(),
            node: Some(node.into()),
            message: msg.into(),
            since: None,
        }
    }

    fn failed(
        at_s: f64,
        kind: ErrorKind,
        node: &str,
        pod: Option<&str>,
        fate: Fate,
    ) -> FailedRequest {
        let at = Duration::from_secs_f64(at_s);
        FailedRequest {
            due: at,
            sent: Some(at),
            end: at,
            kind,
            status: 0,
            local: None,
            provenance: Some(Provenance {
                node: Some(node.into()),
                pod: pod.map(str::to_owned),
                fate,
            }),
            // traffic starts at 0 on the clock in these tests
            routed_at: Some(at),
        }
    }

    /// `n` failures `step` seconds apart from `from`.
    fn every(
        from: f64,
        step: f64,
        n: usize,
        f: impl Fn(f64) -> FailedRequest,
    ) -> Vec<FailedRequest> {
        (0..n).map(|i| f(from + step * i as f64)).collect()
    }

    fn windows(failures: &[FailedRequest], events: &[Event]) -> Vec<ErrorWindow> {
        let refs: Vec<&FailedRequest> = failures.iter().collect();
        error_windows(&refs, events, Duration::ZERO, &physics())
    }

    fn physics() -> Physics {
        Physics {
            probe_interval: Duration::from_secs(5),
            unhealthy_threshold: 2,
            sync_delay: Some(Duration::from_secs(1)),
            endpoints_delay: Duration::ZERO,
            start_delay: Some(Duration::from_secs(3)),
        }
    }

    #[test]
    fn three_pods_exiting_on_three_nodes_make_three_windows_each_closed_after_its_errors() {
        let mut events = Vec::new();
        let mut failures = Vec::new();
        for (i, (pod, node, stop)) in [
            ("web-a", "w1", 11.0),
            ("web-b", "w2", 12.0),
            ("web-c", "w3", 13.033),
        ]
        .into_iter()
        .enumerate()
        {
            let obj = format!("pod/{pod}");
            events.push(ev(
                stop - 0.01,
                Source::Pod,
                "Killing",
                &obj,
                node,
                "stopping",
            ));
            events.push(ev(
                stop,
                Source::Pod,
                "StopSignal",
                &obj,
                node,
                "sent SIGQUIT",
            ));
            // every node's kube-proxy routes to it until its sync
            for (j, via) in ["w1", "w2", "w3"].into_iter().enumerate() {
                let applied = stop + 0.9 + 0.03 * j as f64;
                let mut t = stop + 0.001;
                while t < applied {
                    failures.push(failed(t, ErrorKind::Reset, via, Some(pod), Fate::Refused));
                    t += 0.05;
                }
                events.push(ev(
                    applied + 0.0001,
                    Source::Endpoint,
                    "EndpointsApplied",
                    "service/default/web",
                    via,
                    "applied",
                ));
            }
            // an unrelated kube-proxy event of another node, during the window
            events.push(ev(
                stop + 0.5,
                Source::Endpoint,
                "NoEndpoints",
                "service/default/other",
                ["w2", "w3", "w1"][i],
                "noise",
            ));
        }
        events.sort_by_key(|e| e.at);
        let refs: Vec<&FailedRequest> = failures.iter().collect();
        let w = error_windows(&refs, &events, Duration::ZERO, &physics());
        assert_eq!(w.len(), 3, "{w:#?}");
        for (w, (pod, node)) in w
            .iter()
            .zip([("web-a", "w1"), ("web-b", "w2"), ("web-c", "w3")])
        {
            assert_eq!(w.pod.as_deref(), Some(pod), "{w:#?}");
            assert_eq!(w.node.as_deref(), Some(node), "{w:#?}");
            assert!(
                w.opened_by
                    .as_deref()
                    .unwrap()
                    .starts_with("StopSignal pod/"),
                "{w:#?}"
            );
            assert!(w.opened_by.as_deref().unwrap().contains(pod), "{w:#?}");
            let closed_at = w.closed_at_s.expect("closed");
            assert!(closed_at > w.end_s, "{w:#?}");
            assert!(w.opened_at_s.unwrap() <= closed_at);
            assert_eq!(w.attribution, Attribution::DataPath);
            let p = w.predicted.as_ref().expect("a prediction");
            assert!(p.agrees, "{p:?}");
        }
    }

    #[test]
    fn a_dropped_window_cites_the_missing_local_endpoint_and_the_lb_not_a_nearby_event() {
        let events = vec![
            ev(
                8.0,
                Source::Endpoint,
                "NoLocalEndpoints",
                "service/default/web",
                "w1",
                "none on w1",
            ),
            ev(
                11.9,
                Source::Chaos,
                "Evicted",
                "pod/web-b",
                "w2",
                "evicted web-b",
            ),
            ev(
                12.9,
                Source::Endpoint,
                "NoLocalEndpoints",
                "service/default/web",
                "w2",
                "none on w2",
            ),
            ev(
                12.95,
                Source::Endpoint,
                "EndpointsApplied",
                "service/default/web",
                "w3",
                "2 ready",
            ),
            ev(
                18.2,
                Source::Lb,
                "Unhealthy",
                "node/w2",
                "w2",
                "2 probes failed",
            ),
            ev(30.0, Source::Lb, "Unhealthy", "node/w3", "w3", "unrelated"),
        ];
        let failures = every(12.91, 0.01, 500, |at| {
            failed(at, ErrorKind::ResponseTimeout, "w2", None, Fate::Dropped)
        });
        let w = windows(&failures, &events);
        assert_eq!(w.len(), 1, "{w:#?}");
        let w = &w[0];
        assert_eq!(w.node.as_deref(), Some("w2"));
        assert!(
            w.explanation.contains("node w2 had no local endpoint"),
            "{}",
            w.explanation
        );
        assert!(
            w.explanation.contains("LB marked w2 unhealthy"),
            "{}",
            w.explanation
        );
        let p = w.predicted.as_ref().expect("a prediction");
        assert!(p.agrees, "{p:?}");
    }

    #[test]
    fn a_slow_rule_load_opens_its_window_from_when_the_load_began() {
        // A loaded machine: `nft` ran from 11.1 s to 11.6 s; the drop rule
        // met packets from 11.2 s, before the event's stamp, while the
        // terminating fallback of the sync before is the nearest earlier
        // event of the node.
        let mut applied = ev(
            11.6,
            Source::Endpoint,
            "NoLocalEndpoints",
            "service/default/web",
            "w2",
            "none on w2",
        );
        applied.since = Some(Duration::from_secs_f64(11.1));
        let events = vec![
            ev(
                5.0,
                Source::Endpoint,
                "TerminatingFallback",
                "service/default/web",
                "w2",
                "using serving-terminating endpoints",
            ),
            applied,
            ev(
                15.0,
                Source::Lb,
                "Unhealthy",
                "node/w2",
                "w2",
                "2 probes failed",
            ),
        ];
        let failures = every(11.2, 0.01, 300, |at| {
            failed(at, ErrorKind::ConnectTimeout, "w2", None, Fate::Dropped)
        });
        let w = windows(&failures, &events);
        assert_eq!(w.len(), 1, "{w:#?}");
        let w = &w[0];
        assert!(
            w.explanation.contains("node w2 had no local endpoint"),
            "{}",
            w.explanation
        );
        assert!(w.predicted.is_some(), "{w:#?}");
        // Without the span the same window has no opener of its own.
        let mut stamped_late = events.clone();
        stamped_late[1].since = None;
        let w = windows(&failures, &stamped_late);
        assert!(!w[0].explanation.contains("no local endpoint"), "{w:#?}");
    }

    #[test]
    fn a_pod_ready_before_it_listens_is_predicted_from_its_start_delay() {
        let events = vec![
            ev(
                7.0,
                Source::Pod,
                "Ready",
                "pod/web-n",
                "w1",
                "ready once started",
            ),
            ev(
                8.0,
                Source::Endpoint,
                "EndpointsApplied",
                "service/default/web",
                "w2",
                "3 ready",
            ),
            ev(10.05, Source::Pod, "Unrelated", "pod/web-n", "w1", "-"),
        ];
        let failures = every(8.0, 0.05, 40, |at| {
            failed(at, ErrorKind::Reset, "w2", Some("web-n"), Fate::Refused)
        });
        let w = windows(&failures, &events);
        assert_eq!(w.len(), 1, "{w:#?}");
        assert!(w[0]
            .opened_by
            .as_deref()
            .unwrap()
            .starts_with("Ready pod/web-n"));
        let p = w[0].predicted.as_ref().expect("a prediction");
        assert!((p.duration_s - 2.0).abs() < 1e-9 && p.agrees, "{p:?}");
    }

    #[test]
    fn a_window_with_no_event_of_its_own_says_so() {
        let events = vec![ev(
            9.9,
            Source::Pod,
            "StopSignal",
            "pod/other",
            "w1",
            "sent SIGTERM",
        )];
        let failures = [failed(
            10.0,
            ErrorKind::Closed,
            "w1",
            Some("web-a"),
            Fate::Connected,
        )];
        let refs: Vec<&FailedRequest> = failures.iter().collect();
        let w = error_windows(&refs, &events, Duration::ZERO, &physics());
        assert_eq!(w.len(), 1);
        assert!(w[0].opened_by.is_none(), "{w:#?}");
        assert!(
            w[0].explanation.contains("no event of pod web-a"),
            "{}",
            w[0].explanation
        );
    }
}
