//! Number formatting and escaping shared by the renderers, so every report
//! writes a latency or a ratio the same way.

use crate::run::summary::VariantSummary;

/// A ratio as a percentage with enough digits to tell 99.99 % from 100 %.
pub(crate) fn pct(ratio: f64) -> String {
    if !ratio.is_finite() {
        return "n/a".into();
    }
    let p = ratio * 100.0;
    if (99.0..100.0).contains(&p) {
        // Four nines must stay visible: never round 99.996 up to 100.00.
        format!("{:.3}%", (p * 1000.0).floor() / 1000.0)
    } else {
        format!("{p:.2}%")
    }
}

/// Which runtime ran the variant's pods, one entry per runtime, container
/// and image: `host ×6 (app, image zdt/tiny:1)`; None when the summary has
/// none (kind, existing clusters, older runs).
pub(crate) fn runtimes(v: &VariantSummary) -> Option<String> {
    let mut counts: std::collections::BTreeMap<(&str, &str, &str), usize> = Default::default();
    for r in &v.pod_runtimes {
        *counts
            .entry((r.runtime.as_str(), r.container.as_str(), r.image.as_str()))
            .or_default() += 1;
    }
    (!counts.is_empty()).then(|| {
        counts
            .iter()
            .map(|((rt, c, i), n)| format!("{rt} ×{n} (container {c}, image {i})"))
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// Milliseconds in the unit a person reads best.
pub(crate) fn ms(v: f64) -> String {
    if !v.is_finite() {
        "n/a".into()
    } else if v >= 1000.0 {
        format!("{:.2} s", v / 1000.0)
    } else if v >= 10.0 {
        format!("{v:.0} ms")
    } else if v >= 1.0 {
        format!("{v:.2} ms")
    } else {
        // Microseconds matter here (a generator's send lag, a fast server).
        format!("{v:.3} ms")
    }
}

/// Seconds since traffic start, as an axis or table label.
pub(crate) fn secs(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0} s")
    } else {
        format!("{v:.1} s")
    }
}

/// Where a variant's time went, in one line: what it spent outside its
/// traffic, then each phase. Empty for a summary without timings (written
/// before zdt recorded them).
pub(crate) fn timing(v: &VariantSummary) -> String {
    let t = &v.timing;
    if t.phases.is_empty() {
        return String::new();
    }
    let phases: Vec<String> = t
        .phases
        .iter()
        .map(|(p, s)| format!("{} {s:.1} s", p.label()))
        .collect();
    format!(
        "{:.1} s outside the traffic ({:.1} s wall: {})",
        t.outside_traffic_s,
        t.wall_s,
        phases.join(", ")
    )
}

/// Failed requests of a variant (the summary keeps the ratio, not the count).
pub(crate) fn failed(v: &VariantSummary) -> u64 {
    let errs: u64 = v.errors.values().sum();
    if errs > 0 {
        return errs;
    }
    let ok = (v.success_ratio * v.requests as f64).round() as u64;
    v.requests.saturating_sub(ok)
}

/// Text for XML/HTML element content and attribute values.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // XML 1.0 forbids most control characters even escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Text for a Markdown table cell: pipes and newlines would break the row.
pub(crate) fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// Where a window's requests went: `node · pod`.
pub(crate) fn window_place(w: &crate::run::summary::ErrorWindow) -> String {
    match (w.node.as_deref(), w.pod.as_deref()) {
        (Some(n), Some(p)) => format!("{n} · {p}"),
        (Some(n), None) => n.to_owned(),
        (None, Some(p)) => p.to_owned(),
        (None, None) => "—".to_owned(),
    }
}

/// A window's predicted and measured length, flagged when they disagree by
/// a probe interval or more (docs/physics.md).
pub(crate) fn window_physics(w: &crate::run::summary::ErrorWindow) -> String {
    match &w.predicted {
        None => "—".to_owned(),
        Some(p) => format!(
            "predicted {} · measured {}{}",
            secs(p.duration_s),
            secs(p.measured_s),
            if p.agrees {
                String::new()
            } else {
                format!(" — DISAGREE (> {} apart)", secs(p.tolerance_s))
            }
        ),
    }
}

/// The header of the per-generator table.
pub(crate) const GENERATOR_COLUMNS: [&str; 7] = [
    "generator",
    "requests",
    "success",
    "achieved rate",
    "send lag p99 / max",
    "clock offset",
    "state",
];

/// One row per generator pod of a scaled-out run, in
/// [`GENERATOR_COLUMNS`] order.
pub(crate) fn generator_rows(v: &VariantSummary) -> Vec<[String; 7]> {
    let ms_of = |d: std::time::Duration| ms(d.as_secs_f64() * 1e3);
    v.generators
        .iter()
        .map(|g| {
            let clock = match (g.clock_offset_ns, g.clock_uncertainty) {
                (Some(o), Some(u)) => format!(
                    "{:+.1} ms ± {:.1} ms",
                    o as f64 / 1e6,
                    u.as_secs_f64() * 1e3
                ),
                _ => "—".into(),
            };
            let state = match (&g.lost, g.partial, g.merged) {
                (None, _, _) => "complete".to_string(),
                (Some(why), _, true) => format!("LOST, partial result merged: {why}"),
                (Some(why), _, false) => format!("LOST, last report only (not merged): {why}"),
            };
            [
                format!("{} (#{})", g.name, g.index),
                g.requests.to_string(),
                pct(g.success_ratio()),
                if g.merged {
                    format!("{:.1}/s", g.achieved_rate)
                } else {
                    "—".into()
                },
                format!("{} / {}", ms_of(g.send_lag_p99), ms_of(g.send_lag_max)),
                clock,
                state,
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_keep_the_nines() {
        assert_eq!(pct(0.99996), "99.996%");
        assert_eq!(pct(0.9727), "97.27%");
        assert_eq!(pct(1.0), "100.00%");
    }

    #[test]
    fn latencies_pick_a_unit() {
        assert_eq!(ms(10_000.0), "10.00 s");
        assert_eq!(ms(80.4), "80 ms");
        assert_eq!(ms(1.234), "1.23 ms");
    }

    #[test]
    fn escaping_covers_markup_and_control_characters() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(escape("a\u{1}b"), "a\u{FFFD}b");
    }
}
