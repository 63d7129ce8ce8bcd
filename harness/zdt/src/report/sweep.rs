//! A sweep's answer: success ratio and p99 against the swept value, per
//! variant the values were crossed with, as a table and an SVG plot, with
//! the smallest value that meets `expect:` called out beside the smallest
//! one the physics predicts.

use std::fmt::Write as _;
use std::io::{self, Write};

use super::format::escape;
use super::html::{y_axis, LEFT, RIGHT, WIDTH};
use super::svg::{self, Linear, Svg};
use crate::run::summary::{RunSummary, VariantSummary, Verdict};

/// One variant's points, in sweep order.
#[derive(Debug)]
pub struct Series<'a> {
    /// The variant the values were applied to.
    pub base: &'a str,
    pub points: Vec<&'a VariantSummary>,
}

impl<'a> Series<'a> {
    /// The smallest (first) swept value whose run met `expect:`.
    pub fn smallest_passing(&self) -> Option<&'a str> {
        self.points
            .iter()
            .find(|v| v.verdict == Verdict::Pass)
            .and_then(|v| v.sweep.as_ref())
            .map(|p| p.value.as_str())
    }

    /// The smallest swept value the physics predicts to meet it; `None`
    /// when it predicts none does, or predicts nothing for this field.
    pub fn smallest_predicted(&self) -> Option<&'a str> {
        self.points
            .iter()
            .find(|v| v.sweep_predicted_pass == Some(true))
            .and_then(|v| v.sweep.as_ref())
            .map(|p| p.value.as_str())
    }

    /// Whether the physics has a prediction for this sweep at all.
    pub fn predicts(&self) -> bool {
        self.points.iter().any(|v| v.sweep_predicted_pass.is_some())
    }
}

/// The swept field and its series, when the run was a sweep.
pub fn series(s: &RunSummary) -> Option<(&str, Vec<Series<'_>>)> {
    let field = s
        .variants
        .iter()
        .find_map(|v| v.sweep.as_ref())?
        .field
        .as_str();
    let mut out: Vec<Series> = Vec::new();
    for v in &s.variants {
        let Some(p) = &v.sweep else { continue };
        match out.iter_mut().find(|x| x.base == p.base) {
            Some(x) => x.points.push(v),
            None => out.push(Series {
                base: &p.base,
                points: vec![v],
            }),
        }
    }
    for x in &mut out {
        x.points
            .sort_by_key(|v| v.sweep.as_ref().map_or(0, |p| p.index));
    }
    Some((field, out))
}

/// The one-line answers: "preStopSleep ≥ 12s meets `expect:` (k8s-1.31)".
pub fn answers(field: &str, series: &[Series]) -> Vec<String> {
    let leaf = field.rsplit('.').next().unwrap_or(field);
    series
        .iter()
        .map(|x| {
            let measured = match x.smallest_passing() {
                Some(v) => format!("{leaf} ≥ {v} meets `expect:`"),
                None => format!("no swept {leaf} meets `expect:`"),
            };
            let predicted = if !x.predicts() {
                String::new()
            } else {
                match x.smallest_predicted() {
                    Some(v) => format!("; predicted: ≥ {v}"),
                    None => "; predicted: none".to_owned(),
                }
            };
            format!("{measured} with `{}`{predicted}", x.base)
        })
        .collect()
}

/// The table's "predicted to meet `expect:`" cell.
fn predicted_words(v: &VariantSummary) -> &'static str {
    match v.sweep_predicted_pass {
        Some(true) => "yes",
        Some(false) => "no",
        None => "—",
    }
}

/// The Markdown section.
pub fn markdown(w: &mut dyn Write, s: &RunSummary) -> io::Result<()> {
    let Some((field, series)) = series(s) else {
        return Ok(());
    };
    writeln!(w, "## Sweep: `{field}`")?;
    writeln!(w)?;
    for a in answers(field, &series) {
        writeln!(w, "- **{a}**")?;
    }
    writeln!(w)?;
    writeln!(
        w,
        "| variant | {field} | verdict | success | p99 | predicted to meet `expect:` |"
    )?;
    writeln!(w, "|---|---|---|---:|---:|---|")?;
    for x in &series {
        for v in &x.points {
            let value = v.sweep.as_ref().map_or("", |p| p.value.as_str());
            writeln!(
                w,
                "| {} | {value} | {:?} | {:.4} % | {:.0} ms | {} |",
                x.base,
                v.verdict,
                v.success_ratio * 100.0,
                v.latency_ms.p99,
                predicted_words(v)
            )?;
        }
    }
    Ok(())
}

/// One panel's height; the width and margins are the timelines'.
const PANEL: f64 = 170.0;

/// The plot: success ratio (top) and p99 (bottom) against the swept value,
/// one line per variant; the smallest passing value of each is ringed.
pub fn chart(s: &RunSummary) -> Option<String> {
    let (field, series) = series(s)?;
    let values: Vec<&str> = series
        .iter()
        .max_by_key(|x| x.points.len())
        .map(|x| {
            x.points
                .iter()
                .filter_map(|v| v.sweep.as_ref().map(|p| p.value.as_str()))
                .collect()
        })
        .unwrap_or_default();
    let n = values.len().max(2) as f64;
    let height = 30.0 + PANEL + 50.0 + PANEL + 50.0;
    let mut c = Svg::new(
        WIDTH,
        height,
        "sweep",
        &format!("Sweep of {field}: success ratio and p99 latency against the value"),
    );
    let x = Linear::new((0.0, n - 1.0), (LEFT + 20.0, WIDTH - RIGHT - 20.0));
    let min = series
        .iter()
        .flat_map(|x| x.points.iter().map(|v| v.success_ratio))
        .fold(1.0, f64::min);
    let lo = if min >= 0.999 {
        0.998
    } else {
        ((min * 100.0).floor() / 100.0).max(0.0)
    };
    let top1 = 30.0;
    let y1 = Linear::new((lo, 1.0), (top1 + PANEL, top1));
    let p99_max = svg::nice_max(
        series
            .iter()
            .flat_map(|x| x.points.iter().map(|v| v.latency_ms.p99))
            .fold(1.0, f64::max),
    );
    let top2 = top1 + PANEL + 50.0;
    let y2 = Linear::new((0.0, p99_max), (top2 + PANEL, top2));
    let ratio_ticks: Vec<(f64, String)> = svg::ticks(lo, 1.0, 4)
        .into_iter()
        .map(|t| (y1.at(t), format!("{}%", svg::num(t * 100.0))))
        .collect();
    let p99_ticks: Vec<(f64, String)> = svg::ticks(0.0, p99_max, 4)
        .into_iter()
        .map(|t| {
            let label = if t == 0.0 {
                "0".to_owned()
            } else {
                svg::ms_label(t)
            };
            (y2.at(t), label)
        })
        .collect();
    panel(&mut c, top1, "success ratio", &ratio_ticks);
    panel(&mut c, top2, "p99 latency", &p99_ticks);
    for (i, v) in values.iter().enumerate() {
        c.text(
            x.at(i as f64),
            top2 + PANEL + 16.0,
            v,
            r##"text-anchor="middle" fill="#444""##,
        );
    }
    c.text(
        (LEFT + WIDTH - RIGHT) / 2.0,
        top2 + PANEL + 36.0,
        field,
        r##"text-anchor="middle" font-weight="700" fill="#333""##,
    );
    for (i, s) in series.iter().enumerate() {
        let colour = svg::CATEGORICAL[i % svg::CATEGORICAL.len()];
        let dash = svg::DASHES[i % svg::DASHES.len()];
        let style = format!(
            r#"stroke="{colour}" stroke-width="2" stroke-dasharray="{}""#,
            if dash.is_empty() { "1 0" } else { dash }
        );
        c.raw(&format!(
            r#"<g class="series sweep" data-variant="{}">"#,
            escape(s.base)
        ));
        c.title(s.base);
        let at = |j: usize| x.at(j as f64);
        let ratio: Vec<Option<(f64, f64)>> = s
            .points
            .iter()
            .enumerate()
            .map(|(j, v)| Some((at(j), y1.at(v.success_ratio.max(lo)))))
            .collect();
        let p99: Vec<Option<(f64, f64)>> = s
            .points
            .iter()
            .enumerate()
            .map(|(j, v)| Some((at(j), y2.at(v.latency_ms.p99))))
            .collect();
        c.polyline(&ratio, &style);
        c.polyline(&p99, &style);
        for (j, v) in s.points.iter().enumerate() {
            let pass = v.verdict == Verdict::Pass;
            let (px, py) = (at(j), y1.at(v.success_ratio.max(lo)));
            let mut dot = String::new();
            let _ = write!(
                dot,
                r#"<circle cx="{}" cy="{}" r="{}" fill="{}" stroke="{colour}" stroke-width="2"><title>{}: {:.4} % ({:?})</title></circle>"#,
                svg::num(px),
                svg::num(py),
                if pass { 4.5 } else { 3.5 },
                if pass { colour } else { "#fff" },
                escape(&v.name),
                v.success_ratio * 100.0,
                v.verdict
            );
            c.raw(&dot);
        }
        c.raw("</g>");
        let ly = top1 + 10.0 + i as f64 * 16.0;
        let lx = WIDTH - RIGHT + 12.0;
        c.line(lx, ly, lx + 16.0, ly, &style);
        let answer = match s.smallest_passing() {
            Some(v) => format!("{} (≥ {v})", s.base),
            None => format!("{} (none)", s.base),
        };
        c.text(lx + 20.0, ly + 4.0, &answer, "");
    }
    c.text(
        WIDTH - RIGHT + 12.0,
        top1 + 10.0 + series.len() as f64 * 16.0 + 6.0,
        "filled: meets expect",
        r##"fill="#666""##,
    );
    Some(c.finish())
}

fn panel(c: &mut Svg, top: f64, title: &str, ticks: &[(f64, String)]) {
    y_axis(c, top, PANEL, ticks);
    c.text(LEFT, top - 8.0, title, r##"font-weight="700" fill="#333""##);
}

/// The HTML section: the answers, the plot and the table.
pub fn html(h: &mut String, s: &RunSummary) {
    let Some((field, series)) = series(s) else {
        return;
    };
    let _ = write!(
        h,
        "<section id=\"sweep\"><h2>Sweep: <code>{}</code></h2><ul>",
        escape(field)
    );
    for a in answers(field, &series) {
        let _ = write!(
            h,
            "<li><strong>{}</strong></li>",
            escape(&a.replace('`', ""))
        );
    }
    h.push_str("</ul>");
    if let Some(svg) = chart(s) {
        h.push_str(&svg);
    }
    let _ = write!(
        h,
        "<table><tr><th>variant</th><th>{}</th><th>verdict</th><th>success</th><th>p99</th><th>predicted to meet expect</th></tr>",
        escape(field)
    );
    for x in &series {
        for v in &x.points {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{:?}</td><td>{:.4} %</td><td>{:.0} ms</td><td>{}</td></tr>",
                escape(x.base),
                escape(v.sweep.as_ref().map_or("", |p| p.value.as_str())),
                v.verdict,
                v.success_ratio * 100.0,
                v.latency_ms.p99,
predicted_words(v)
            );
        }
    }
    h.push_str("</table></section>");
}
