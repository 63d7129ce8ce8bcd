//! Turning a variant's measurements into a verdict: every `expect:` entry is
//! evaluated with its threshold and actual value; a run that cannot be
//! trusted is INVALID whatever its numbers say.

use zdt_core::units::Dur;
use zdt_scenario::{Bound, Expect};
use zdt_traffic::Summary;

use super::summary::{ErrorWindow, ExpectationResult, StepResult, Verdict};

fn fmt_bound<T: Copy>(b: &Bound<T>, f: impl Fn(T) -> String) -> String {
    match (b.min, b.max) {
        (Some(lo), Some(hi)) => format!("in [{}, {}]", f(lo), f(hi)),
        (Some(lo), None) => format!(">= {}", f(lo)),
        (None, Some(hi)) => format!("<= {}", f(hi)),
        (None, None) => "any".into(),
    }
}

fn pct(x: f64) -> String {
    format!("{:.4}%", x * 100.0)
}

fn dur(d: Dur) -> String {
    let s = d.get().as_secs_f64();
    if s >= 1.0 {
        format!("{s:.3}s")
    } else {
        format!("{:.1}ms", s * 1000.0)
    }
}

/// How many requests were in flight on average, by Little's law: the send
/// rate times the mean time from send to answer.
fn mean_in_flight(t: &Summary) -> f64 {
    let secs = t.last_send.saturating_sub(t.first_send).as_secs_f64();
    let rate = if secs > 0.0 {
        t.sent as f64 / secs
    } else {
        0.0
    };
    rate * t.latency_uncorrected.mean.as_secs_f64()
}

/// Why the generator fell behind: the scenario's own in-flight bound, or the
/// machine. A bound the average in-flight count reaches was full, and every
/// request due then waited for a free slot.
fn behind_because(in_flight: f64, max_in_flight: usize) -> String {
    if in_flight >= 0.9 * max_in_flight as f64 {
        format!(
            "the scenario's traffic.maxInFlight ({max_in_flight}) was full: about {in_flight:.0} requests \
             were in flight on average, so requests waited for a free slot; raise maxInFlight \
             (rate × timeout never waits) or lower the rate"
        )
    } else {
        format!(
            "the machine could not keep up (about {in_flight:.0} of {max_in_flight} in-flight slots \
             were in use, so the bound was not the cause); lower the rate or run on a quieter machine"
        )
    }
}

/// Why the run cannot be trusted, if it cannot. Each rule and its threshold
/// is documented in docs/scenario-format.md ("When a run is INVALID").
pub(crate) fn invalid_reasons(
    t: &Summary,
    expect: &Expect,
    max_in_flight: usize,
    steps: &[StepResult],
) -> Vec<String> {
    let mut reasons = Vec::new();
    if t.requests > 0 {
        let sent = t.sent as f64 / t.requests as f64;
        if sent < expect.min_achieved_rate {
            reasons.push(format!(
                "the generator sent only {} of the {} requests due ({}; expect.minAchievedRate {}): {}",
                t.sent,
                t.requests,
                pct(sent),
                pct(expect.min_achieved_rate),
                behind_because(mean_in_flight(t), max_in_flight)
            ));
        }
    }
    // vegeta's achieved rate (sent / first-to-last send) is not used here:
    // one late final request moves it, while the send lag percentiles and
    // the not-sent count say how far behind the generator really was.
    if t.schedule_lag.p99 > expect.max_send_lag.get() {
        reasons.push(format!(
            "requests went out late: send lag p99 {} (expect.maxSendLag {}): {}",
            dur(Dur(t.schedule_lag.p99)),
            dur(expect.max_send_lag),
            behind_because(mean_in_flight(t), max_in_flight)
        ));
    }
    for g in &t.generators {
        if let Some(why) = &g.lost {
            let kept = if g.merged {
                format!(
                    "its partial result ({} requests) is merged and marked partial",
                    g.requests
                )
            } else {
                format!(
                    "its last report ({} requests, {} successes) is kept in its row, not in the totals",
                    g.requests, g.successes
                )
            };
            reasons.push(format!(
                "generator {} (index {}) was lost: {why}; {kept}",
                g.name, g.index
            ));
        } else if g.send_lag_p99 > expect.max_send_lag.get() {
            reasons.push(format!(
                "generator {} (index {}) fell behind: send lag p99 {} (expect.maxSendLag {})",
                g.name,
                g.index,
                dur(Dur(g.send_lag_p99)),
                dur(expect.max_send_lag)
            ));
        }
    }
    for (fault, n) in &t.host_faults {
        reasons.push(format!(
            "the machine, not the cluster, failed {n} time(s): {} [{fault}]; the result \
             says nothing about the cluster (see docs/emulator.md, \"Host limits\")",
            fault.explain()
        ));
    }
    for s in steps.iter().filter(|s| !s.ok) {
        reasons.push(format!(
            "chaos step {} `{}` ({}) failed: {}",
            s.index + 1,
            s.name,
            s.action,
            s.message
        ));
    }
    reasons
}

/// Evaluate every expectation.
pub(crate) fn evaluate(
    t: &Summary,
    expect: &Expect,
    windows: &[ErrorWindow],
) -> Vec<ExpectationResult> {
    let mut out = Vec::new();
    if let Some(b) = &expect.success_ratio {
        let actual = success_ratio(t);
        out.push(ExpectationResult {
            name: "successRatio".into(),
            threshold: fmt_bound(b, pct),
            actual: pct(actual),
            ok: b.contains(actual),
        });
    }
    for (name, q, b) in expect.latency.bounds() {
        let actual = Dur(match q {
            q if q >= 1.0 => t.latency.max,
            q if q >= 0.999 => t.latency.p999,
            q if q >= 0.99 => t.latency.p99,
            q if q >= 0.95 => t.latency.p95,
            q if q >= 0.90 => t.latency.p90,
            _ => t.latency.p50,
        });
        out.push(ExpectationResult {
            name: format!("latency.{name}"),
            threshold: fmt_bound(&b, dur),
            actual: dur(actual),
            ok: b.contains(actual),
        });
    }
    if let Some(allowed) = &expect.status_codes {
        let bad: Vec<String> = t
            .status_codes
            .iter()
            .filter(|(code, n)| **n > 0 && !allowed.contains(code))
            .map(|(code, n)| format!("{code}×{n}"))
            .collect();
        let allowed = allowed.iter().map(u16::to_string).collect::<Vec<_>>();
        out.push(only_allowed("statusCodes", &allowed, bad));
    }
    if let Some(allowed) = &expect.error_kinds {
        let bad: Vec<String> = t
            .errors
            .iter()
            .filter(|(kind, n)| **n > 0 && !allowed.iter().any(|a| a.matches(**kind)))
            .map(|(kind, n)| format!("{kind}×{n}"))
            .collect();
        let allowed = allowed.iter().map(|k| k.to_string()).collect::<Vec<_>>();
        out.push(only_allowed("errorKinds", &allowed, bad));
    }
    if let Some(max) = expect.max_error_window {
        let longest = windows
            .iter()
            .map(|w| w.end_s - w.start_s)
            .fold(0.0_f64, f64::max);
        out.push(ExpectationResult {
            name: "maxErrorWindow".into(),
            threshold: format!("<= {}", dur(max)),
            actual: format!("{longest:.1}s"),
            ok: longest <= max.get().as_secs_f64() + 1e-9,
        });
    }
    out
}

/// An "only these values" expectation: ok when nothing outside `allowed`
/// was seen; `bad` lists what was (`503×12`).
fn only_allowed(name: &str, allowed: &[String], bad: Vec<String>) -> ExpectationResult {
    ExpectationResult {
        name: name.into(),
        threshold: format!("only {}", allowed.join(", ")),
        actual: if bad.is_empty() {
            "none other".into()
        } else {
            bad.join(", ")
        },
        ok: bad.is_empty(),
    }
}

/// vegeta's success ratio: successful requests over all requests due.
pub(crate) fn success_ratio(t: &Summary) -> f64 {
    if t.requests == 0 {
        0.0
    } else {
        t.successes as f64 / t.requests as f64
    }
}

/// The verdict from invalidity reasons and expectation results.
pub(crate) fn verdict(invalid: &[String], results: &[ExpectationResult]) -> (Verdict, Vec<String>) {
    if !invalid.is_empty() {
        return (Verdict::Invalid, invalid.to_vec());
    }
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !r.ok)
        .map(|r| format!("{}: expected {}, got {}", r.name, r.threshold, r.actual))
        .collect();
    if failed.is_empty() {
        (Verdict::Pass, failed)
    } else {
        (Verdict::Fail, failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falling_behind_blames_the_bound_only_when_it_was_full() {
        let full = behind_because(995.0, 1000);
        assert!(
            full.contains("traffic.maxInFlight (1000) was full"),
            "{full}"
        );
        let machine = behind_because(12.0, 1000);
        assert!(
            machine.contains("the machine could not keep up"),
            "{machine}"
        );
        assert!(machine.contains("12 of 1000"), "{machine}");
    }

    #[test]
    fn only_allowed_lists_what_was_seen_outside_the_list() {
        let allowed = vec!["200".to_owned(), "0".to_owned()];
        let ok = only_allowed("statusCodes", &allowed, vec![]);
        assert!(ok.ok);
        assert_eq!(ok.threshold, "only 200, 0");
        assert_eq!(ok.actual, "none other");
        let bad = only_allowed("statusCodes", &allowed, vec!["503×12".into()]);
        assert!(!bad.ok);
        assert_eq!(bad.actual, "503×12");
    }

    #[test]
    fn bounds_format_as_written() {
        let b = Bound {
            min: Some(0.93),
            max: Some(0.99),
        };
        assert_eq!(fmt_bound(&b, pct), "in [93.0000%, 99.0000%]");
        let b: Bound<f64> = Bound {
            min: Some(0.9999),
            max: None,
        };
        assert_eq!(fmt_bound(&b, pct), ">= 99.9900%");
    }

    #[test]
    fn invalid_beats_pass_and_failures_are_listed() {
        let ok = ExpectationResult {
            name: "successRatio".into(),
            threshold: ">= 99%".into(),
            actual: "99.5%".into(),
            ok: true,
        };
        let bad = ExpectationResult {
            ok: false,
            ..ok.clone()
        };
        assert_eq!(verdict(&[], std::slice::from_ref(&ok)).0, Verdict::Pass);
        let (v, why) = verdict(&[], &[ok.clone(), bad]);
        assert_eq!(v, Verdict::Fail);
        assert_eq!(why.len(), 1);
        assert_eq!(verdict(&["behind".into()], &[ok]).0, Verdict::Invalid);
    }
}
