//! `report.html`: one self-contained page — inline CSS and SVG, no script,
//! no font, no image, no URL (the SVG namespace aside), so it opens the same
//! from a CI artifact, an air-gapped laptop or a mail attachment.
//!
//! Per variant a timeline shares one time axis (seconds since traffic
//! start) across stacked panels: requests/s split into successes and
//! failures, success ratio, p50/p99/max latency, responses by node and by
//! pod, and a lane per event source. Chaos steps are vertical lines over
//! every panel, error windows are shaded with their attribution as labels.
//! Then a comparison across variants: success ratio over time, headline
//! bars, and a table.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{self, Write};

use super::data::{points, Point};
use super::format::{self, escape};
use super::svg::{self, Linear, Log, Svg};
use super::{verdict_word, RunData};
use crate::run::summary::{RunSummary, VariantSummary, Verdict};
use zdt_core::events::{Event, Source};

pub(crate) const WIDTH: f64 = 1320.0;
pub(crate) const LEFT: f64 = 84.0;
pub(crate) const RIGHT: f64 = 190.0;

pub fn write(w: &mut dyn Write, data: &RunData) -> io::Result<()> {
    let s = &data.summary;
    let mut h = String::new();
    let title = format!("zdt report: {}", s.scenario);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
        escape(&title)
    );
    header(&mut h, s);
    super::sweep::html(&mut h, s);
    for v in &s.variants {
        let pts = data
            .buckets
            .get(&v.name)
            .map(|b| points(b))
            .unwrap_or_default();
        let events: Vec<(f64, &Event)> = data
            .events_of(&v.name)
            .into_iter()
            .map(|e| (e.at.as_secs_f64() - v.traffic_started_s, e))
            .collect();
        variant_section(&mut h, v, &pts, &events);
    }
    comparison(&mut h, data);
    h.push_str(
        "<footer>Rendered by zdt from summary.json, events.jsonl and buckets.json; \
         <code>zdt report OUT</code> renders it again.</footer>\n</body>\n</html>\n",
    );
    w.write_all(h.as_bytes())
}

const CSS: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1360px;color:#111;background:#fff;padding:0 12px}
h1{font-size:24px;margin:0 0 6px}h2{font-size:19px;margin:34px 0 6px;border-top:1px solid #ccc;padding-top:16px}
h3{font-size:15px;margin:18px 0 6px}
table{border-collapse:collapse;margin:6px 0 12px;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f2f2f2}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.verdict{display:inline-block;padding:1px 8px;border-radius:3px;font-weight:700;color:#fff}
.PASS{background:#009E73}.FAIL{background:#D55E00}.INVALID{background:#000}.INCOMPLETE{background:#777}
.banner{background:#fff4d6;border-left:5px solid #E69F00;padding:8px 12px;margin:10px 0}
.meta{color:#444;font-size:13px}
.bad{color:#D55E00;font-weight:700}
svg{display:block;margin:8px 0;max-width:100%;height:auto}
details{margin:6px 0}pre{background:#f6f6f6;padding:8px;overflow:auto;font-size:12px}
footer{margin:40px 0 10px;color:#666;font-size:12px}
";

fn badge(v: Verdict) -> String {
    let w = verdict_word(v);
    format!("<span class=\"verdict {w}\">{w}</span>")
}

fn header(h: &mut String, s: &RunSummary) {
    let n = s.variants.len();
    let _ = write!(
        h,
        "<h1>zdt report: {} {}</h1>\n<p class=\"meta\">{n} variant{} · scenario file <code>{}</code> · \
         provider {} · zdt {} · started {} · seed {}</p>\n",
        escape(&s.scenario),
        badge(s.worst()),
        if n == 1 { "" } else { "s" },
        escape(&s.file),
        escape(&s.provider),
        escape(&s.zdt_version),
        escape(&s.started_at),
        s.seed
    );
    if s.emulated {
        h.push_str(
            "<div class=\"banner\"><b>Emulated cluster.</b> These numbers come from zdt's \
             Kubernetes emulator, a model of the API server, kubelet, kube-proxy and a cloud load \
             balancer. kind is the ground truth.</div>\n",
        );
    }
    if !s.complete {
        let _ = writeln!(
            h,
            "<div class=\"banner\"><b>Incomplete run:</b> {}. What was recorded up to then is kept.</div>",
            escape(s.incomplete_reason.as_deref().unwrap_or("interrupted"))
        );
    }
    h.push_str("<table class=\"verdicts\"><tr><th>variant</th><th>verdict</th><th>success</th><th>failed</th><th>p99</th><th>why</th></tr>\n");
    for v in &s.variants {
        let _ = writeln!(
            h,
            "<tr><td><a href=\"#{}\">{}</a></td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            anchor(&v.name),
            escape(&v.name),
            badge(v.verdict),
            format::pct(v.success_ratio),
            format::failed(v),
            format::ms(v.latency_ms.p99),
            escape(&v.reasons.join("; "))
        );
    }
    h.push_str("</table>\n");
}

/// An id for in-page links: only characters that need no escaping.
fn anchor(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("variant-{safe}")
}

fn variant_section(h: &mut String, v: &VariantSummary, pts: &[Point], events: &[(f64, &Event)]) {
    let _ = write!(
        h,
        "<section class=\"variant\" id=\"{}\">\n<h2>Variant {} {}</h2>\n",
        anchor(&v.name),
        escape(&v.name),
        badge(v.verdict)
    );
    if !v.description.is_empty() {
        let _ = writeln!(h, "<p>{}</p>", escape(&v.description));
    }
    if !v.reasons.is_empty() {
        h.push_str("<ul>");
        for r in &v.reasons {
            let _ = write!(h, "<li class=\"bad\">{}</li>", escape(r));
        }
        h.push_str("</ul>\n");
    }
    let _ = writeln!(
        h,
        "<p class=\"meta\">{} requests at {:.0}/s (requested {:.0}/s) · success {} · p50 {} · p99 {} · max {} · \
         send lag p50 / p99 / max {} / {} / {}</p>",
        v.requests,
        v.rate.achieved,
        v.rate.requested,
        format::pct(v.success_ratio),
        format::ms(v.latency_ms.p50),
        format::ms(v.latency_ms.p99),
        format::ms(v.latency_ms.max),
        format::ms(v.schedule_lag_ms.p50),
        format::ms(v.schedule_lag_ms.p99),
        format::ms(v.schedule_lag_ms.max),
    );
    let timing = format::timing(v);
    if !timing.is_empty() {
        let _ = writeln!(h, "<p class=\"meta\">time: {}</p>", escape(&timing));
    }
    if let Some(r) = format::runtimes(v) {
        let _ = writeln!(h, "<p class=\"meta\">pods ran as: {}</p>", escape(&r));
    }
    if !v.expectations.is_empty() {
        h.push_str("<table class=\"expectations\"><tr><th>expectation</th><th>threshold</th><th>actual</th><th>result</th></tr>\n");
        for e in &v.expectations {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                escape(&e.name),
                escape(&e.threshold),
                escape(&e.actual),
                if e.ok {
                    "ok"
                } else {
                    "<span class=\"bad\">FAILED</span>"
                }
            );
        }
        h.push_str("</table>\n");
    }
    h.push_str(&timeline(v, pts, events));
    h.push('\n');
    if !v.error_windows.is_empty() {
        h.push_str("<h3>Error windows</h3><table class=\"windows\"><tr><th>#</th><th>from</th><th>to</th><th>errors</th><th>kinds</th><th>node · pod</th><th>cause</th><th>physics</th></tr>\n");
        for (i, e) in v.error_windows.iter().enumerate() {
            let kinds: Vec<String> = e.kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
            let _ = writeln!(
                h,
                "<tr><td>W{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                i + 1,
                format::secs(e.start_s),
                format::secs(e.end_s),
                e.errors,
                escape(&kinds.join(", ")),
                escape(&format::window_place(e)),
                escape(&e.explanation),
                escape(&format::window_physics(e))
            );
        }
        h.push_str("</table>\n");
    }
    let generators = format::generator_rows(v);
    if !generators.is_empty() {
        h.push_str("<h3>Generators</h3><p>The figures above are the exact merge of these pods' results (histograms added, not percentiles averaged).</p><table class=\"generators\"><tr>");
        for c in format::GENERATOR_COLUMNS {
            let _ = write!(h, "<th>{}</th>", escape(c));
        }
        h.push_str("</tr>\n");
        for r in &generators {
            h.push_str("<tr>");
            for (i, cell) in r.iter().enumerate() {
                let class = if (1..=5).contains(&i) {
                    " class=\"num\""
                } else {
                    ""
                };
                let bad = i == 6 && cell.starts_with("LOST");
                let _ = write!(
                    h,
                    "<td{class}>{}{}{}</td>",
                    if bad { "<span class=\"bad\">" } else { "" },
                    escape(cell),
                    if bad { "</span>" } else { "" }
                );
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</table>\n");
    }
    if !v.chaos.is_empty() {
        h.push_str("<h3>Chaos steps</h3><table class=\"chaos\"><tr><th>#</th><th>step</th><th>action</th><th>node</th><th>started</th><th>finished</th><th>result</th><th>message</th></tr>\n");
        for c in &v.chaos {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
                c.index,
                escape(&c.name),
                escape(&c.action),
                escape(c.node.as_deref().unwrap_or("—")),
                format::secs(c.started_s),
                format::secs(c.finished_s),
                if c.ok { "ok" } else { "<span class=\"bad\">FAILED</span>" },
                escape(&c.message)
            );
        }
        h.push_str("</table>\n");
    }
    if !events.is_empty() {
        let _ = writeln!(
            h,
            "<details><summary>{} events (seconds since traffic start)</summary><table class=\"events\"><tr><th>t</th><th>source</th><th>reason</th><th>object</th><th>node</th><th>message</th></tr>",
            events.len()
        );
        for (t, e) in events {
            let _ = writeln!(
                h,
                "<tr><td class=\"num\">{t:.3}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                source_name(e.source),
                escape(&e.reason),
                escape(&e.object),
                escape(e.node.as_deref().unwrap_or("")),
                escape(&e.message)
            );
        }
        h.push_str("</table></details>\n");
    }
    let yaml = serde_saphyr::to_string(&v.scenario_as_run)
        .unwrap_or_else(|_| serde_json::to_string_pretty(&v.scenario_as_run).unwrap_or_default());
    let _ = writeln!(
        h,
        "<details><summary>Scenario as run (variant patch applied)</summary><pre>{}</pre></details>\n</section>",
        escape(&yaml)
    );
}

fn source_name(s: Source) -> &'static str {
    match s {
        Source::Lb => "lb",
        Source::Pod => "pod",
        Source::Endpoint => "endpoint",
        Source::Node => "node",
        Source::Chaos => "chaos",
        Source::Traffic => "traffic",
        Source::Run => "run",
    }
}

fn source_colour(s: Source) -> &'static str {
    match s {
        Source::Lb => svg::BLUE,
        Source::Pod => svg::GREEN,
        Source::Endpoint => svg::ORANGE,
        Source::Node => svg::PURPLE,
        Source::Chaos => svg::BLACK,
        Source::Traffic | Source::Run => svg::GREY,
    }
}

/// Events worth a text label in their lane (the rest are ticks with a
/// tooltip): health transitions and endpoint losses explain error windows.
fn labelled(e: &Event) -> bool {
    matches!(
        e.reason.as_str(),
        "Unhealthy"
            | "Healthy"
            | "FailOpen"
            | "Removed"
            | "Draining"
            | "Restored"
            | "NoLocalEndpoints"
            | "LocalEndpointsRestored"
            | "Cordoned"
            | "Uncordoned"
            | "Tainted"
            | "NodeNotReady"
            | "Evicted"
            | "Terminating"
            | "PreStopStarted"
            | "Killing"
            | "Exited"
    )
}

/// The time axis of a variant: from traffic start to the end of traffic
/// (the last bucket), stretched to show every chaos step's start and every
/// error window. A step that runs on after traffic stopped (a long drain)
/// does not stretch it: nothing is measured there.
fn time_domain(v: &VariantSummary, pts: &[Point]) -> (f64, f64) {
    let mut end: f64 = 1.0;
    if let Some(p) = pts.last() {
        end = end.max(p.start_s + p.width_s);
    }
    for c in &v.chaos {
        end = end.max(c.started_s + 1.0);
        if pts.is_empty() {
            end = end.max(c.finished_s);
        }
    }
    for e in &v.error_windows {
        end = end.max(e.end_s);
    }
    (0.0, end)
}

struct Panel {
    title: &'static str,
    height: f64,
}

/// The timeline of one variant (an `<svg class="timeline">`).
pub(crate) fn timeline(v: &VariantSummary, pts: &[Point], events: &[(f64, &Event)]) -> String {
    let (t0, t1) = time_domain(v, pts);
    let x = Linear::new((t0, t1), (LEFT, WIDTH - RIGHT));
    let sources: Vec<Source> = {
        let mut seen: Vec<Source> = vec![Source::Chaos];
        for (_, e) in events {
            if !seen.contains(&e.source) {
                seen.push(e.source);
            }
        }
        let order = [
            Source::Chaos,
            Source::Node,
            Source::Pod,
            Source::Endpoint,
            Source::Lb,
            Source::Traffic,
            Source::Run,
        ];
        order.into_iter().filter(|s| seen.contains(s)).collect()
    };
    let lane_h = 18.0;
    let panels = [
        Panel {
            title: "requests/s",
            height: 110.0,
        },
        Panel {
            title: "success ratio",
            height: 80.0,
        },
        Panel {
            title: "latency (log)",
            height: 110.0,
        },
        Panel {
            title: "responses/s by node",
            height: 90.0,
        },
        Panel {
            title: "responses/s by pod",
            height: 90.0,
        },
    ];
    // Chaos step names, then error window labels, above the first panel;
    // each panel's title sits in the gap above it.
    let top_band = 36.0;
    let gap = 20.0;
    let lanes_h = lane_h * sources.len() as f64;
    let mut tops = Vec::new();
    let mut y = top_band + gap;
    for p in &panels {
        tops.push(y);
        y += p.height + gap;
    }
    let lanes_top = y;
    let plot_bottom = lanes_top + lanes_h;
    let height = plot_bottom + 40.0;

    let mut s = Svg::new(
        WIDTH,
        height,
        "timeline",
        &format!(
            "Timeline of variant {}: requests, success ratio, latency, traffic by node and pod, events",
            v.name
        ),
    );
    s.raw(&format!(r#"<g data-variant="{}">"#, escape(&v.name)));

    // Error windows first so everything else draws over the shading.
    for (i, w) in v.error_windows.iter().enumerate() {
        let (a, b) = (x.at(w.start_s.max(t0)), x.at(w.end_s.min(t1)));
        let label = format!(
            "W{}: {}{} errors",
            i + 1,
            w.node
                .as_deref()
                .map(|n| format!("{n} · "))
                .unwrap_or_default(),
            w.errors
        );
        s.open(r#"class="error-window""#);
        s.title(&w.explanation);
        s.rect(
            a,
            top_band - 14.0,
            (b - a).max(2.0),
            plot_bottom - top_band + 14.0,
            &format!(
                r#"fill="{}" fill-opacity="0.13" stroke="{}" stroke-opacity="0.6" stroke-dasharray="3 3""#,
                svg::VERMILLION,
                svg::VERMILLION
            ),
        );
        s.text(
            a + 3.0,
            top_band - 4.0,
            &label,
            &format!(r#"fill="{}" font-weight="700""#, svg::VERMILLION),
        );
        if let Some(cause) = w.opened_by.as_deref() {
            s.text(
                a + 3.0,
                tops[1] + 12.0,
                &format!("opened by {cause}"),
                &format!(r#"fill="{}" font-size="10""#, svg::VERMILLION),
            );
        }
        if let Some(cause) = w.closed_by.as_deref() {
            s.text(
                a + 3.0,
                tops[1] + 24.0,
                &format!("closed by {cause}"),
                &format!(r#"fill="{}" font-size="10""#, svg::VERMILLION),
            );
        }
        s.close();
    }

    panel_requests(&mut s, &x, tops[0], panels[0].height, pts);
    panel_ratio(&mut s, &x, tops[1], panels[1].height, pts);
    panel_latency(&mut s, &x, tops[2], panels[2].height, pts);
    panel_split(
        &mut s,
        &x,
        tops[3],
        panels[3].height,
        pts,
        |p| &p.by_node,
        "node",
        "X-Node",
    );
    panel_split(
        &mut s,
        &x,
        tops[4],
        panels[4].height,
        pts,
        |p| &p.by_pod,
        "pod",
        "X-Pod",
    );
    for (p, top) in panels.iter().zip(&tops) {
        s.text(
            LEFT,
            top - 5.0,
            p.title,
            r##"font-weight="700" fill="#333""##,
        );
    }

    // Event lanes.
    for (i, src) in sources.iter().enumerate() {
        let ly = lanes_top + i as f64 * lane_h;
        s.rect(
            LEFT,
            ly + 1.0,
            WIDTH - RIGHT - LEFT,
            lane_h - 2.0,
            r##"fill="#f4f4f4""##,
        );
        s.text(
            LEFT - 8.0,
            ly + lane_h - 5.0,
            source_name(*src),
            &format!(r#"text-anchor="end" fill="{}""#, source_colour(*src)),
        );
    }
    let lane_of = |src: Source| sources.iter().position(|s| *s == src).unwrap_or(0);
    let mut last_label_x: BTreeMap<usize, f64> = BTreeMap::new();
    for (t, e) in events {
        if *t < t0 || *t > t1 {
            continue;
        }
        let lane = lane_of(e.source);
        let ly = lanes_top + lane as f64 * lane_h;
        let px = x.at(*t);
        let colour = source_colour(e.source);
        s.raw(&format!(
            r#"<g class="marker event" data-source="{}" data-reason="{}">"#,
            source_name(e.source),
            escape(&e.reason)
        ));
        s.title(&format!(
            "{t:.2} s · {} {} {}: {}",
            source_name(e.source),
            e.reason,
            e.object,
            e.message
        ));
        s.line(
            px,
            ly + 2.0,
            px,
            ly + lane_h - 2.0,
            &format!(r#"stroke="{colour}" stroke-width="2""#),
        );
        if labelled(e) && last_label_x.get(&lane).is_none_or(|lx| px - lx > 110.0) {
            let who = e.node.as_deref().unwrap_or(e.object.as_str());
            s.text(
                px + 3.0,
                ly + lane_h - 5.0,
                &format!("{} {}", e.reason, who),
                &format!(r#"fill="{colour}" font-size="10""#),
            );
            last_label_x.insert(lane, px);
        }
        s.close();
    }

    // Chaos steps: a line over every panel at the start, a bar in the
    // chaos lane while the step ran.
    let chaos_lane = lanes_top + lane_of(Source::Chaos) as f64 * lane_h;
    for c in &v.chaos {
        let a = x.at(c.started_s.clamp(t0, t1));
        let b = x.at(c.finished_s.clamp(t0, t1));
        let colour = if c.ok { svg::BLACK } else { svg::VERMILLION };
        s.open(&format!(
            r#"class="marker chaos" data-action="{}""#,
            escape(&c.action)
        ));
        s.title(&format!(
            "{} ({}{}) {:.2} s → {:.2} s: {}",
            c.name,
            c.action,
            c.node
                .as_deref()
                .map(|n| format!(" {n}"))
                .unwrap_or_default(),
            c.started_s,
            c.finished_s,
            c.message
        ));
        s.line(
            a,
            14.0,
            a,
            plot_bottom,
            &format!(r#"stroke="{colour}" stroke-width="1.5" stroke-dasharray="5 3""#),
        );
        s.rect(
            a,
            chaos_lane + 4.0,
            (b - a).max(2.0),
            lane_h - 8.0,
            &format!(r#"fill="{colour}" fill-opacity="0.25""#),
        );
        s.text(
            a + 3.0,
            12.0,
            &format!(
                "{}{}",
                c.name,
                c.node
                    .as_deref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            ),
            &format!(r#"fill="{colour}" font-weight="700""#),
        );
        s.close();
    }

    // The time axis under the lanes.
    let axis_y = plot_bottom + 4.0;
    s.line(LEFT, axis_y, WIDTH - RIGHT, axis_y, r##"stroke="#333""##);
    for t in svg::ticks(t0, t1, 12) {
        let px = x.at(t);
        s.line(px, axis_y, px, axis_y + 4.0, r##"stroke="#333""##);
        s.text(px, axis_y + 15.0, &svg::num(t), r#"text-anchor="middle""#);
    }
    s.text(
        (LEFT + WIDTH - RIGHT) / 2.0,
        axis_y + 30.0,
        "seconds since traffic start",
        r##"text-anchor="middle" fill="#333""##,
    );
    s.raw("</g>");
    s.finish()
}

/// Gridlines and a left axis for one panel.
pub(crate) fn y_axis(s: &mut Svg, top: f64, h: f64, ticks: &[(f64, String)]) {
    s.rect(
        LEFT,
        top,
        WIDTH - RIGHT - LEFT,
        h,
        r##"fill="none" stroke="#bbb""##,
    );
    for (py, label) in ticks {
        s.line(LEFT, *py, WIDTH - RIGHT, *py, r##"stroke="#e4e4e4""##);
        s.text(
            LEFT - 4.0,
            py + 3.5,
            label,
            r##"text-anchor="end" fill="#444""##,
        );
    }
}

/// Legend entries to the right of a panel.
fn legend(s: &mut Svg, top: f64, entries: &[(String, &str, &str)]) {
    let lx = WIDTH - RIGHT + 12.0;
    for (i, (label, colour, dash)) in entries.iter().enumerate() {
        let ly = top + 8.0 + i as f64 * 14.0;
        if dash.is_empty() {
            s.rect(lx, ly - 4.0, 14.0, 8.0, &format!(r#"fill="{colour}""#));
        } else {
            s.line(
                lx,
                ly,
                lx + 14.0,
                ly,
                &format!(r#"stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}""#),
            );
        }
        s.text(lx + 19.0, ly + 4.0, label, "");
    }
}

fn bar_geometry(x: &Linear, p: &Point) -> (f64, f64) {
    let a = x.at(p.start_s);
    let b = x.at(p.start_s + p.width_s);
    let w = (b - a - 0.6).max(0.8);
    (a, w)
}

fn panel_requests(s: &mut Svg, x: &Linear, top: f64, h: f64, pts: &[Point]) {
    let max = svg::nice_max(pts.iter().map(Point::requests_per_s).fold(0.0, f64::max) * 1.05);
    let y = Linear::new((0.0, max), (top + h, top));
    let ticks: Vec<(f64, String)> = svg::ticks(0.0, max, 4)
        .into_iter()
        .map(|t| (y.at(t), svg::num(t)))
        .collect();
    y_axis(s, top, h, &ticks);
    s.open(r#"class="series requests""#);
    for p in pts {
        let (a, w) = bar_geometry(x, p);
        let rate = |n: u64| n as f64 / p.width_s.max(1e-9);
        let ok_top = y.at(rate(p.successes));
        let all_top = y.at(rate(p.requests));
        s.rect_titled(
            a,
            ok_top,
            w,
            top + h - ok_top,
            &format!(r#"fill="{}""#, svg::BLUE),
            &format!("{:.1} s: {} ok", p.start_s, p.successes),
        );
        if p.failed() > 0 {
            let kinds: Vec<String> = p.errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
            s.rect_titled(
                a,
                all_top,
                w,
                ok_top - all_top,
                &format!(r#"fill="{}""#, svg::VERMILLION),
                &format!(
                    "{:.1} s: {} failed ({})",
                    p.start_s,
                    p.failed(),
                    kinds.join(", ")
                ),
            );
        }
    }
    s.close();
    legend(
        s,
        top,
        &[
            ("succeeded".into(), svg::BLUE, ""),
            ("failed".into(), svg::VERMILLION, ""),
        ],
    );
    if pts.is_empty() {
        s.text(
            LEFT + 10.0,
            top + h / 2.0,
            "no traffic buckets recorded",
            r##"fill="#666""##,
        );
    }
}

fn panel_ratio(s: &mut Svg, x: &Linear, top: f64, h: f64, pts: &[Point]) {
    let min = pts
        .iter()
        .filter_map(Point::success_ratio)
        .fold(1.0, f64::min);
    // Zoom so a 0.1 % dip is visible, but keep round bounds.
    let lo = if min >= 0.99 {
        0.98
    } else if min >= 0.9 {
        0.9
    } else {
        (min * 10.0).floor() / 10.0
    };
    let y = Linear::new((lo, 1.0), (top + h, top));
    let ticks: Vec<(f64, String)> = svg::ticks(lo, 1.0, 4)
        .into_iter()
        .map(|t| (y.at(t), format!("{}%", svg::num(t * 100.0))))
        .collect();
    y_axis(s, top, h, &ticks);
    let line: Vec<Option<(f64, f64)>> = pts
        .iter()
        .map(|p| {
            p.success_ratio()
                .map(|r| (x.at(p.start_s + p.width_s / 2.0), y.at(r)))
        })
        .collect();
    s.open(r#"class="series success-ratio""#);
    s.polyline(
        &line,
        &format!(r#"stroke="{}" stroke-width="2""#, svg::GREEN),
    );
    s.close();
    legend(s, top, &[("success ratio".into(), svg::GREEN, "1 0")]);
}

fn panel_latency(s: &mut Svg, x: &Linear, top: f64, h: f64, pts: &[Point]) {
    let lo = pts
        .iter()
        .map(|p| p.p50_ms)
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min);
    let hi = pts
        .iter()
        .map(|p| p.max_ms.max(p.p99_ms))
        .fold(0.0, f64::max);
    let lo = if lo.is_finite() {
        10f64.powf(lo.log10().floor())
    } else {
        0.1
    };
    let hi = if hi > lo {
        10f64.powf(hi.log10().ceil())
    } else {
        lo * 10.0
    };
    let y = Log::new((lo, hi), (top + h, top));
    let ticks: Vec<(f64, String)> = y
        .ticks()
        .into_iter()
        .map(|t| (y.at(t), svg::ms_label(t)))
        .collect();
    y_axis(s, top, h, &ticks);
    type Series = (&'static str, &'static str, &'static str, fn(&Point) -> f64);
    let series: [Series; 3] = [
        ("max", svg::GREY, "2 2", |p| p.max_ms),
        ("p99", svg::ORANGE, "6 3", |p| p.p99_ms),
        ("p50", svg::SKY, "1 0", |p| p.p50_ms),
    ];
    for (name, colour, dash, get) in series {
        let line: Vec<Option<(f64, f64)>> = pts
            .iter()
            .map(|p| {
                (p.requests > 0 && get(p) > 0.0)
                    .then(|| (x.at(p.start_s + p.width_s / 2.0), y.at(get(p))))
            })
            .collect();
        s.open(&format!(r#"class="series latency-{name}""#));
        s.polyline(
            &line,
            &format!(r#"stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}""#),
        );
        s.close();
    }
    legend(
        s,
        top,
        &[
            ("p50".into(), svg::SKY, "1 0"),
            ("p99".into(), svg::ORANGE, "6 3"),
            ("max".into(), svg::GREY, "2 2"),
        ],
    );
}

#[allow(clippy::too_many_arguments)]
fn panel_split(
    s: &mut Svg,
    x: &Linear,
    top: f64,
    h: f64,
    pts: &[Point],
    get: fn(&Point) -> &BTreeMap<String, u64>,
    what: &str,
    header: &str,
) {
    let names: BTreeSet<&String> = pts.iter().flat_map(|p| get(p).keys()).collect();
    let names: Vec<&String> = names.into_iter().collect();
    let max = svg::nice_max(
        pts.iter()
            .map(|p| get(p).values().sum::<u64>() as f64 / p.width_s.max(1e-9))
            .fold(0.0, f64::max),
    );
    let y = Linear::new((0.0, max), (top + h, top));
    let ticks: Vec<(f64, String)> = svg::ticks(0.0, max, 3)
        .into_iter()
        .map(|t| (y.at(t), svg::num(t)))
        .collect();
    y_axis(s, top, h, &ticks);
    if names.is_empty() {
        s.text(
            LEFT + 10.0,
            top + h / 2.0,
            &format!("no {header} response headers recorded"),
            r##"fill="#666""##,
        );
        return;
    }
    let colour = |i: usize| svg::CATEGORICAL[i % svg::CATEGORICAL.len()];
    s.open(&format!(r#"class="series by-{what}""#));
    for p in pts {
        let (a, w) = bar_geometry(x, p);
        let mut acc = 0u64;
        for (i, n) in names.iter().enumerate() {
            let Some(&c) = get(p).get(*n) else { continue };
            if c == 0 {
                continue;
            }
            let y0 = y.at(acc as f64 / p.width_s);
            acc += c;
            let y1 = y.at(acc as f64 / p.width_s);
            s.rect_titled(
                a,
                y1,
                w,
                y0 - y1,
                &format!(r#"fill="{}""#, colour(i)),
                &format!("{:.1} s: {what} {n}: {c}", p.start_s),
            );
        }
    }
    s.close();
    // A long pod list (rollouts) is cut with a count, not drawn off-canvas.
    let fit = ((h - 4.0) / 14.0).floor().max(1.0) as usize;
    let mut entries: Vec<(String, &str, &str)> = names
        .iter()
        .enumerate()
        .take(if names.len() > fit { fit - 1 } else { fit })
        .map(|(i, n)| ((*n).clone(), colour(i), ""))
        .collect();
    if names.len() > fit {
        entries.push((format!("+{} more", names.len() - (fit - 1)), "#fff", ""));
    }
    legend(s, top, &entries);
}

fn comparison(h: &mut String, data: &RunData) {
    let s = &data.summary;
    h.push_str("<section class=\"comparison\">\n<h2>Comparison across variants</h2>\n");
    h.push_str(&comparison_chart(data));
    h.push('\n');
    h.push_str("<table class=\"comparison-table\"><tr><th>variant</th><th>verdict</th><th>requests</th><th>success</th><th>failed</th><th>errors by kind</th><th>p50</th><th>p99</th><th>max</th><th>error windows</th><th>longest window</th></tr>\n");
    for v in &s.variants {
        let kinds: Vec<String> = v.errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let longest = v
            .error_windows
            .iter()
            .map(|w| w.end_s - w.start_s)
            .fold(0.0, f64::max);
        let _ = writeln!(
            h,
            "<tr><td><a href=\"#{}\">{}</a></td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            anchor(&v.name),
            escape(&v.name),
            badge(v.verdict),
            v.requests,
            format::pct(v.success_ratio),
            format::failed(v),
            escape(&kinds.join(", ")),
            format::ms(v.latency_ms.p50),
            format::ms(v.latency_ms.p99),
            format::ms(v.latency_ms.max),
            v.error_windows.len(),
            if v.error_windows.is_empty() { "—".into() } else { format::secs(longest) },
        );
    }
    h.push_str("</table>\n</section>\n");
}

/// Success ratio over time for every variant on one axis, then bars of
/// the headline numbers.
fn comparison_chart(data: &RunData) -> String {
    let s = &data.summary;
    let series: Vec<(&VariantSummary, Vec<Point>)> = s
        .variants
        .iter()
        .map(|v| {
            (
                v,
                data.buckets
                    .get(&v.name)
                    .map(|b| points(b))
                    .unwrap_or_default(),
            )
        })
        .collect();
    let t1 = series
        .iter()
        .map(|(v, p)| time_domain(v, p).1)
        .fold(1.0, f64::max);
    let n = s.variants.len().max(1) as f64;
    let line_top = 30.0;
    let line_h = 160.0;
    let bars_top = line_top + line_h + 60.0;
    let bar_h = 18.0;
    let bars_h = n * (bar_h + 6.0);
    let height = bars_top + bars_h + 30.0;
    let mut c = Svg::new(
        WIDTH,
        height,
        "comparison",
        "Comparison of variants: success ratio over time, success ratio and p99 latency",
    );
    let x = Linear::new((0.0, t1), (LEFT, WIDTH - RIGHT));
    let min = series
        .iter()
        .flat_map(|(_, p)| p.iter().filter_map(Point::success_ratio))
        .fold(1.0, f64::min);
    let lo = if min >= 0.99 {
        0.98
    } else {
        (min * 10.0).floor() / 10.0
    };
    let y = Linear::new((lo, 1.0), (line_top + line_h, line_top));
    c.text(
        LEFT - 8.0,
        line_top - 8.0,
        "success ratio over time",
        r##"font-weight="700" fill="#333""##,
    );
    let ticks: Vec<(f64, String)> = svg::ticks(lo, 1.0, 4)
        .into_iter()
        .map(|t| (y.at(t), format!("{}%", svg::num(t * 100.0))))
        .collect();
    y_axis(&mut c, line_top, line_h, &ticks);
    let mut entries = Vec::new();
    for (i, (v, pts)) in series.iter().enumerate() {
        let colour = svg::CATEGORICAL[i % svg::CATEGORICAL.len()];
        let dash = svg::DASHES[i % svg::DASHES.len()];
        let line: Vec<Option<(f64, f64)>> = pts
            .iter()
            .map(|p| {
                p.success_ratio()
                    .map(|r| (x.at(p.start_s + p.width_s / 2.0), y.at(r)))
            })
            .collect();
        c.raw(&format!(
            r#"<g class="series variant" data-variant="{}">"#,
            escape(&v.name)
        ));
        c.title(&v.name);
        c.polyline(
            &line,
            &format!(
                r#"stroke="{colour}" stroke-width="2" stroke-dasharray="{}""#,
                if dash.is_empty() { "1 0" } else { dash }
            ),
        );
        c.close();
        entries.push((
            v.name.clone(),
            colour,
            if dash.is_empty() { "1 0" } else { dash },
        ));
    }
    legend(&mut c, line_top, &entries);
    let axis_y = line_top + line_h;
    for t in svg::ticks(0.0, t1, 12) {
        let px = x.at(t);
        c.line(px, axis_y, px, axis_y + 4.0, r##"stroke="#333""##);
        c.text(px, axis_y + 15.0, &svg::num(t), r#"text-anchor="middle""#);
    }
    c.text(
        (LEFT + WIDTH - RIGHT) / 2.0,
        axis_y + 30.0,
        "seconds since traffic start",
        r##"text-anchor="middle" fill="#333""##,
    );

    // Bars: success ratio (left half) and p99 on a log axis (right half).
    let half = (WIDTH - LEFT - RIGHT) / 2.0 - 20.0;
    let name_w = 150.0;
    let bx0 = LEFT + name_w;
    let bx1 = LEFT + half;
    let px0 = LEFT + half + 40.0 + name_w;
    let px1 = WIDTH - RIGHT;
    let sr_lo = s
        .variants
        .iter()
        .map(|v| v.success_ratio)
        .fold(1.0, f64::min);
    let sr_lo = if sr_lo >= 0.99 {
        0.98
    } else {
        (sr_lo * 10.0).floor() / 10.0
    };
    let sx = Linear::new((sr_lo, 1.0), (bx0, bx1));
    let p99_hi = s
        .variants
        .iter()
        .map(|v| v.latency_ms.p99)
        .fold(1.0, f64::max);
    let p99_lo = s
        .variants
        .iter()
        .map(|v| v.latency_ms.p99)
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min);
    let p99_lo = if p99_lo.is_finite() {
        10f64.powf(p99_lo.log10().floor())
    } else {
        0.1
    };
    let lx = Log::new(
        (p99_lo, 10f64.powf(p99_hi.log10().ceil()).max(p99_lo * 10.0)),
        (px0, px1),
    );
    c.text(
        bx0,
        bars_top - 10.0,
        "success ratio",
        r##"font-weight="700" fill="#333""##,
    );
    c.text(
        px0,
        bars_top - 10.0,
        "p99 latency (log)",
        r##"font-weight="700" fill="#333""##,
    );
    for (i, v) in s.variants.iter().enumerate() {
        let by = bars_top + i as f64 * (bar_h + 6.0);
        let colour = svg::CATEGORICAL[i % svg::CATEGORICAL.len()];
        for nx in [bx0, px0] {
            c.text(nx - 6.0, by + bar_h - 5.0, &v.name, r#"text-anchor="end""#);
        }
        c.raw(&format!(
            r#"<g class="bar" data-variant="{}">"#,
            escape(&v.name)
        ));
        let w = sx.at(v.success_ratio.max(sr_lo)) - bx0;
        c.rect_titled(
            bx0,
            by,
            w.max(1.0),
            bar_h,
            &format!(r#"fill="{colour}""#),
            &format!("{}: {}", v.name, format::pct(v.success_ratio)),
        );
        c.text(
            bx0 + w.max(1.0) + 4.0,
            by + bar_h - 5.0,
            &format!(
                "{} {}",
                format::pct(v.success_ratio),
                verdict_word(v.verdict)
            ),
            "",
        );
        let w = lx.at(v.latency_ms.p99.max(p99_lo)) - px0;
        c.rect_titled(
            px0,
            by,
            w.max(1.0),
            bar_h,
            &format!(r#"fill="{colour}""#),
            &format!("{}: p99 {}", v.name, format::ms(v.latency_ms.p99)),
        );
        c.text(
            px0 + w.max(1.0) + 4.0,
            by + bar_h - 5.0,
            &format::ms(v.latency_ms.p99),
            "",
        );
        c.close();
    }
    c.finish()
}
