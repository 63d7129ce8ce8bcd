//! `zdt compare A B`: two runs of the same scenario side by side, per
//! variant, with regressions of B against A (same rules as a baseline).

use std::io::{self, Write};

use super::baseline::{self, Baseline, Metrics, Regression, Tolerance};
use super::format;
use super::verdict_word;
use crate::run::summary::{RunSummary, Verdict};

/// One variant in both runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub variant: String,
    pub a: Option<(Verdict, Metrics)>,
    pub b: Option<(Verdict, Metrics)>,
    pub regressions: Vec<Regression>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub scenario_a: String,
    pub scenario_b: String,
    pub tolerance: Tolerance,
    pub rows: Vec<Row>,
    /// Every regression of B against A, including a scenario mismatch.
    pub regressions: Vec<Regression>,
}

/// Compare run `b` against run `a` as its baseline.
pub fn compare(a: &RunSummary, b: &RunSummary, tol: &Tolerance) -> Comparison {
    let regressions = baseline::check(b, &Baseline::from_summary(a), tol);
    let mut names: Vec<String> = a.variants.iter().map(|v| v.name.clone()).collect();
    for v in &b.variants {
        if !names.contains(&v.name) {
            names.push(v.name.clone());
        }
    }
    let rows = names
        .into_iter()
        .map(|name| {
            let find = |s: &RunSummary| {
                s.variants
                    .iter()
                    .find(|v| v.name == name)
                    .map(|v| (v.verdict, Metrics::of(v)))
            };
            Row {
                a: find(a),
                b: find(b),
                regressions: regressions
                    .iter()
                    .filter(|r| r.variant == name)
                    .cloned()
                    .collect(),
                variant: name,
            }
        })
        .collect();
    Comparison {
        scenario_a: a.scenario.clone(),
        scenario_b: b.scenario.clone(),
        tolerance: *tol,
        rows,
        regressions,
    }
}

/// A fixed-width table for the terminal, then one line per regression.
pub fn write_text(w: &mut dyn Write, c: &Comparison) -> io::Result<()> {
    writeln!(
        w,
        "scenario {}; tolerance: success ratio -{}, p99 +{:.0}% (at least +{})",
        c.scenario_b,
        c.tolerance.success_ratio,
        c.tolerance.p99 * 100.0,
        format::ms(c.tolerance.p99_min_ms)
    )?;
    let header = [
        "variant", "verdict", "success", "Δ", "errors", "Δ", "p99", "Δ", "",
    ];
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for r in &c.rows {
        let verdict = format!(
            "{} → {}",
            r.a.map_or("—", |(v, _)| verdict_word(v)),
            r.b.map_or("—", |(v, _)| verdict_word(v))
        );
        let (sa, sb) = (r.a.map(|x| x.1), r.b.map(|x| x.1));
        let cell = |m: Option<Metrics>, f: &dyn Fn(Metrics) -> String| m.map_or("—".into(), f);
        let delta = |f: &dyn Fn(Metrics) -> f64, show: &dyn Fn(f64) -> String| match (sa, sb) {
            (Some(a), Some(b)) => show(f(b) - f(a)),
            _ => String::new(),
        };
        table.push(vec![
            r.variant.clone(),
            verdict,
            cell(sb, &|m| format::pct(m.success_ratio)),
            delta(&|m| m.success_ratio, &|d| format!("{:+.3} pt", d * 100.0)),
            cell(sb, &|m| m.errors.to_string()),
            delta(&|m| m.errors as f64, &|d| format!("{d:+.0}")),
            cell(sb, &|m| format::ms(m.p99_ms)),
            delta(&|m| m.p99_ms, &|d| format!("{d:+.1} ms")),
            match (&r.a, &r.b, r.regressions.is_empty()) {
                (_, _, false) => "REGRESSION".into(),
                (Some(_), None, true) => "not run in B".into(),
                (None, Some(_), true) => "new in B".into(),
                _ => String::new(),
            },
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            table
                .iter()
                .map(|row| row[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in &table {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        writeln!(w, "{}", line.join("  ").trim_end())?;
    }
    let not_run: Vec<&str> = c
        .rows
        .iter()
        .filter(|r| r.a.is_some() && r.b.is_none())
        .map(|r| r.variant.as_str())
        .collect();
    if !not_run.is_empty() {
        writeln!(
            w,
            "not run in B: {} (only the variants both runs have are compared)",
            not_run.join(", ")
        )?;
    }
    if c.regressions.is_empty() {
        writeln!(w, "no regressions")?;
    } else {
        for r in &c.regressions {
            writeln!(w, "regression: {r}")?;
        }
    }
    Ok(())
}
