//! What a command-line override (`--rate`, `--duration`, a test's rate
//! scale) does to the assumptions the scenario's `expect:` was written
//! with. These are warnings, not errors: a short or slow run is a useful
//! rehearsal, but its verdict may differ from the scenario's at full size,
//! and the user should hear that before reading it.

use std::time::Duration;

use zdt_core::units::Dur;

use crate::model::Scenario;

/// Fewer failed requests than this at a success-ratio bound means a handful
/// of requests decides the verdict.
const RESOLUTION: f64 = 10.0;

/// One assumption of the scenario's expectations that an override broke.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AssumptionWarning {
    /// The errors chaos causes last as long whatever the duration, so their
    /// share of the requests scales with 1 / duration.
    #[error(
        "traffic runs {run} instead of the {written} expect.successRatio ({bound}) was written for: \
         the errors of the chaos timeline are a {factor:.1}× {direction} share of this run's requests, \
         so the verdict may differ from a full-length run"
    )]
    DurationChangesRatio {
        written: Dur,
        run: Dur,
        bound: String,
        factor: f64,
        direction: &'static str,
    },
    /// Traffic ends before the last step's effect can have been detected and
    /// over: the run may end inside its error window.
    #[error(
        "traffic ends at {duration}, but chaos step {step} (`{name}`) can start at {start} and the \
         load balancer may take {detection} more to notice it: the run may end before its error window does"
    )]
    EndsBeforeDetection {
        duration: Dur,
        step: usize,
        name: String,
        start: Dur,
        detection: Dur,
    },
    /// So few requests at a success-ratio bound that one or two decide it.
    #[error(
        "expect.successRatio {side} {bound} is {count:.1} request(s) of the {requests} this run sends at \
         {rate} (the scenario as written sends {written_requests}): a handful of requests decides the \
         verdict; use a higher rate"
    )]
    TooFewRequests {
        side: &'static str,
        bound: String,
        count: f64,
        requests: u64,
        rate: String,
        written_requests: u64,
    },
}

fn pct(x: f64) -> String {
    format!("{:.4} %", x * 100.0)
}

fn requests(s: &Scenario) -> f64 {
    s.traffic.load.rate.get() * s.traffic.load.duration.get().as_secs_f64()
}

/// The ways `run` (the variant after overrides and scaling) departs from
/// what `written` (the variant as the file says) assumes.
pub fn assumption_warnings(written: &Scenario, run: &Scenario) -> Vec<AssumptionWarning> {
    let mut out = Vec::new();
    let (w, r) = (&written.traffic.load, &run.traffic.load);
    let ratio = run.expect.success_ratio.as_ref();
    if w.duration != r.duration && !run.chaos.is_empty() {
        if let Some(b) = ratio {
            let factor = w.duration.get().as_secs_f64() / r.duration.get().as_secs_f64();
            out.push(AssumptionWarning::DurationChangesRatio {
                written: w.duration,
                run: r.duration,
                bound: bound_text(b.min, b.max),
                factor: if factor >= 1.0 { factor } else { 1.0 / factor },
                direction: if factor >= 1.0 { "larger" } else { "smaller" },
            });
        }
        let lb = &run.load_balancer;
        let detection = [true, false]
            .map(|local| lb.probe(local).detection_budget())
            .into_iter()
            .max()
            .unwrap_or(Duration::ZERO);
        let starts = run.earliest_starts();
        if let Some((i, start)) = starts.iter().enumerate().max_by_key(|(_, s)| **s) {
            if start.get() + detection > r.duration.get() {
                out.push(AssumptionWarning::EndsBeforeDetection {
                    duration: r.duration,
                    step: i + 1,
                    name: run.chaos[i].name.clone(),
                    start: *start,
                    detection: Dur::from_millis(detection.as_millis() as u64),
                });
            }
        }
    }
    if w.rate != r.rate || w.duration != r.duration {
        if let Some(b) = ratio {
            let n = requests(run);
            let sides = [("≥", b.min), ("≤", b.max)];
            for (side, bound) in sides {
                let Some(bound) = bound.filter(|b| *b < 1.0) else {
                    continue;
                };
                let count = n * (1.0 - bound);
                if count < RESOLUTION && requests(written) * (1.0 - bound) >= RESOLUTION {
                    out.push(AssumptionWarning::TooFewRequests {
                        side,
                        bound: pct(bound),
                        count,
                        requests: n.round() as u64,
                        rate: r.rate.to_string(),
                        written_requests: requests(written).round() as u64,
                    });
                }
            }
        }
    }
    out
}

fn bound_text(min: Option<f64>, max: Option<f64>) -> String {
    match (min, max) {
        (Some(lo), Some(hi)) => format!("{}–{}", pct(lo), pct(hi)),
        (Some(lo), None) => format!("≥ {}", pct(lo)),
        (None, Some(hi)) => format!("≤ {}", pct(hi)),
        (None, None) => "any".into(),
    }
}
