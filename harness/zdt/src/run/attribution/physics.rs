//! The window the documented mechanics predict, beside the measured one
//! (docs/physics.md has the formulae and their sources):
//!
//! - a node that drops new connections (`externalTrafficPolicy: Local`, no
//!   usable local endpoint) gets them until the LB marks it unhealthy: its
//!   `healthCheckNodePort` answers 503 from the same kube-proxy sync that
//!   left it without a local *ready* endpoint, the first probe after that
//!   comes a phase φ later (uniform in one interval, ½ interval expected),
//!   and `unhealthyThreshold − 1` more probes later the LB stops sending;
//! - a pod that stops listening while it is still an endpoint gets new
//!   connections until every kube-proxy removed it: the endpoint leaves at
//!   the pod's deletion (the kubelet's `Killing`), the EndpointSlice
//!   follows after the endpoints controller's batch period, each
//!   kube-proxy applies it after its sync delay;
//! - a stop signal that cuts connections cuts every one in flight at once.

use std::time::Duration;

use zdt_core::events::{Event, Source};
use zdt_scenario::{Provider, Scenario, TrafficPolicy};

use super::super::summary::Prediction;
use super::by_route::Cause;

/// The numbers the predictions use, from the scenario as run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Physics {
    pub probe_interval: Duration,
    pub unhealthy_threshold: u32,
    /// kube-proxy's sync delay (known on the emulator only).
    pub sync_delay: Option<Duration>,
    /// The endpoints controller's batch period (zero by default).
    pub endpoints_delay: Duration,
    /// How long the app takes to listen after its container started (the
    /// emulator's `zdt.io/start-delay` annotation, from the workload's
    /// patches), when the scenario sets one.
    pub start_delay: Option<Duration>,
}

/// The annotation the emulator reads for an app's warm-up.
const START_DELAY: &str = "zdt.io/start-delay";

/// The first `zdt.io/start-delay` value in `v`.
fn find_start_delay(v: &serde_json::Value) -> Option<Duration> {
    match v {
        serde_json::Value::Object(m) => m
            .get(START_DELAY)
            .and_then(|d| d.as_str()?.parse::<zdt_core::units::Dur>().ok())
            .map(|d| d.get())
            .or_else(|| m.values().find_map(find_start_delay)),
        serde_json::Value::Array(items) => items.iter().find_map(find_start_delay),
        _ => None,
    }
}

impl Physics {
    pub fn of(s: &Scenario) -> Self {
        // The profile's probe for the Service's policy; a policy the
        // manifests set without a mitigation counts as Local, the
        // reference setup's.
        let local = s.workload.mitigations.external_traffic_policy != Some(TrafficPolicy::Cluster);
        let probe = s.load_balancer.probe(local);
        let emulator = s.cluster.provider == Provider::Emulator;
        Self {
            probe_interval: probe.interval.get(),
            unhealthy_threshold: probe.unhealthy_threshold,
            sync_delay: emulator.then(|| s.cluster.emulator.kube_proxy_sync_delay.get()),
            endpoints_delay: if emulator {
                s.cluster.emulator.endpoint_slice_batch_period.get()
            } else {
                Duration::ZERO
            },
            start_delay: s
                .workload
                .patches
                .iter()
                .find_map(|p| find_start_delay(&p.patch)),
        }
    }

    /// The LB's expected detection time after a backend starts failing its
    /// probe: ½ interval to the first failing probe, then `threshold − 1`
    /// intervals.
    pub fn lb_detection(&self) -> f64 {
        let i = self.probe_interval.as_secs_f64();
        (f64::from(self.unhealthy_threshold.max(1)) - 0.5) * i
    }
}

/// The prediction for a window of `cause` whose failures span
/// `first..=last` (seconds since traffic start), opened by `opened` (and
/// its time); `None` where no documented mechanism gives its length.
#[allow(clippy::too_many_arguments)]
pub(super) fn predict(
    physics: &Physics,
    cause: Cause,
    first: f64,
    last: f64,
    opened: Option<(&Event, f64)>,
    events: &[Event],
    t0: f64,
    pod: Option<&str>,
    node: Option<&str>,
) -> Option<Prediction> {
    let rel = |e: &Event| e.at.as_secs_f64() - t0;
    let i = physics.probe_interval.as_secs_f64();
    let t = physics.unhealthy_threshold;
    let (opened, opened_at) = opened?;
    let (duration, formula) = match cause {
        Cause::NodeDropped if opened.reason == "NoLocalEndpoints" => {
            // The health check turned 503 at the sync that left no local
            // ready endpoint: a terminating-fallback sync before this one
            // (≥ 1.28), or this one.
            let node = node?;
            let since_restored = events
                .iter()
                .filter(|e| e.node.as_deref() == Some(node) && e.source == Source::Endpoint)
                .filter(|e| rel(e) <= opened_at)
                .rev()
                .take_while(|e| {
                    !matches!(
                        e.reason.as_str(),
                        "LocalEndpointsRestored" | "EndpointsRestored"
                    )
                })
                .filter(|e| e.reason == "TerminatingFallback")
                .map(rel)
                .last();
            let unhealthy_from = since_restored.unwrap_or(opened_at);
            let close = unhealthy_from + physics.lb_detection();
            let d = (close - opened_at).max(0.0);
            let head = match since_restored {
                Some(at) => {
                    format!("health check 503 since the terminating-fallback sync at {at:.1} s; ")
                }
                None => String::new(),
            };
            (
                d,
                format!(
                    "{head}LB detection ½ × {i:.0} s (probe phase) + ({t} − 1) × {i:.0} s = {:.1} s after the health check turned 503",
                    physics.lb_detection()
                ),
            )
        }
        Cause::NodeDropped
            if matches!(
                opened.reason.as_str(),
                "NodeStopped" | "NodePaused" | "NodeKilled"
            ) =>
        {
            let d = physics.lb_detection() + i;
            (
                d,
                format!(
                    "LB detection of a silent node: ½ × {i:.0} s + ({t} − 1) × {i:.0} s + one probe timeout (≤ {i:.0} s) = {d:.1} s"
                ),
            )
        }
        Cause::PodRefused | Cause::PodGone
            if opened.reason != "Ready" && opened.reason != "Started" =>
        {
            let sync = physics.sync_delay?;
            let pod = pod?;
            let killing = events
                .iter()
                .rev()
                .filter(|e| e.source == Source::Pod && e.reason == "Killing")
                .filter(|e| e.object.strip_prefix("pod/") == Some(pod))
                .map(rel)
                .find(|&at| at <= first + 0.1)?;
            // From 1.28 a node left with only terminating endpoints keeps
            // routing to the serving one: then the endpoint goes when the
            // pod stops serving, not at its deletion.
            let fallback = events.iter().any(|e| {
                e.reason == "TerminatingFallback"
                    && e.node.as_deref() == node
                    && (killing..=opened_at + 0.1).contains(&rel(e))
            });
            let (from, what) = if fallback {
                (
                    opened_at,
                    "stopped serving (terminating fallback until then)",
                )
            } else {
                (killing, "deletion")
            };
            let ep = physics.endpoints_delay.as_secs_f64();
            let close = from + ep + sync.as_secs_f64();
            let d = (close - opened_at).max(0.0);
            (
                d,
                format!(
                    "endpoint removed at {what} {from:.1} s + endpoints batch {ep:.1} s + kube-proxy sync {:.1} s − stopped listening at {opened_at:.1} s = {d:.1} s",
                    sync.as_secs_f64()
                ),
            )
        }
        Cause::PodRefused if opened.reason == "Ready" || opened.reason == "Started" => {
            // An endpoint before it listens: kube-proxies route to it from
            // B + S after it became ready until the app listens.
            let warm = physics.start_delay?.as_secs_f64();
            let sync = physics.sync_delay?.as_secs_f64();
            let ep = physics.endpoints_delay.as_secs_f64();
            let d = (warm - ep - sync).max(0.0);
            (
                d,
                format!(
                    "app start delay {warm:.1} s − endpoints batch {ep:.1} s − kube-proxy sync {sync:.1} s = {d:.1} s"
                ),
            )
        }
        Cause::PodCut if matches!(opened.reason.as_str(), "StopSignal" | "GracePeriodExpired") => (
            0.0,
            "a stop signal that cuts connections cuts every one in flight at once: 0 s".to_owned(),
        ),
        _ => return None,
    };
    let measured = last - first;
    Some(Prediction {
        duration_s: duration,
        measured_s: measured,
        formula,
        tolerance_s: i,
        agrees: (duration - measured).abs() < i,
    })
}

/// The swept field the physics can predict for.
const PRE_STOP_SLEEP: &str = "workload.mitigations.preStopSleep";

/// What a preStop sleep must cover for a drain to lose no request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum PreStopNeed {
    /// No sleep helps: before 1.28, a `Local` node drops new connections
    /// from the sync after the pod's deletion, whatever the pod does.
    Never,
    /// At least this long: the endpoint removal and kube-proxy sync, plus
    /// (for `Local`, ≥ 1.28) the LB's worst-case detection, `threshold ×
    /// interval`, while the terminating pod still serves.
    AtLeast(Duration),
}

/// The preStop sleep the mechanics need for a lossless drain of `s`;
/// `None` off the emulator (the sync delay is the cluster's to know).
pub(crate) fn pre_stop_need(s: &Scenario) -> Option<PreStopNeed> {
    let physics = Physics::of(s);
    let sync = physics.sync_delay?;
    let removal = physics.endpoints_delay + sync;
    let local = s.workload.mitigations.external_traffic_policy != Some(TrafficPolicy::Cluster);
    Some(
        match (local, s.cluster.kubernetes.proxy_terminating_endpoints()) {
            (false, _) => PreStopNeed::AtLeast(removal),
            (true, false) => PreStopNeed::Never,
            (true, true) => {
                PreStopNeed::AtLeast(removal + physics.probe_interval * physics.unhealthy_threshold)
            }
        },
    )
}

/// For a sweep over `preStopSleep`: whether the physics predicts this
/// point meets `expect:` (a lossless drain); `None` for other fields.
pub(crate) fn sweep_predicted_pass(s: &Scenario) -> Option<bool> {
    let point = s.sweep.as_ref()?;
    if point.field != PRE_STOP_SLEEP {
        return None;
    }
    let sleep = s
        .workload
        .mitigations
        .pre_stop_sleep
        .map(|d| d.get())
        .unwrap_or_default();
    Some(match pre_stop_need(s)? {
        PreStopNeed::Never => false,
        PreStopNeed::AtLeast(need) => sleep >= need,
    })
}
