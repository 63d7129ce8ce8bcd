//! `report.md`: the run for people reading a pull request or a wiki page —
//! the per-variant table, expectations with what was measured, the error
//! windows with their causes, the chaos timeline, and the scenario as run.

use std::io::{self, Write};

use serde_json::Value;

use super::format::{self, md_cell};
use super::{verdict_word, RunData};
use crate::run::summary::{RunSummary, VariantSummary};

pub fn write(w: &mut dyn Write, data: &RunData) -> io::Result<()> {
    let s = &data.summary;
    writeln!(w, "# zdt report: {}", md_cell(&s.scenario))?;
    writeln!(w)?;
    if s.emulated {
        writeln!(
            w,
            "> **Emulated cluster.** These numbers come from zdt's Kubernetes emulator, a model of \
             the API, kubelet, kube-proxy and a cloud load balancer; kind is the ground truth \
             (see docs/emulator.md)."
        )?;
        writeln!(w)?;
    }
    if !s.complete {
        writeln!(
            w,
            "> **Incomplete run:** {}. What was recorded up to then is kept.",
            s.incomplete_reason.as_deref().unwrap_or("interrupted")
        )?;
        writeln!(w)?;
    }
    header(w, s)?;
    writeln!(w)?;
    writeln!(w, "## Variants")?;
    writeln!(w)?;
    variant_table(w, s)?;
    writeln!(w)?;
    super::sweep::markdown(w, s)?;
    for v in &s.variants {
        writeln!(w)?;
        variant(w, v)?;
    }
    Ok(())
}

fn header(w: &mut dyn Write, s: &RunSummary) -> io::Result<()> {
    writeln!(w, "| | |")?;
    writeln!(w, "|---|---|")?;
    writeln!(w, "| scenario file | `{}` |", md_cell(&s.file))?;
    writeln!(
        w,
        "| provider | {}{} |",
        md_cell(&s.provider),
        if s.emulated { " (emulated)" } else { "" }
    )?;
    writeln!(w, "| zdt version | {} |", md_cell(&s.zdt_version))?;
    writeln!(w, "| started | {} |", md_cell(&s.started_at))?;
    writeln!(w, "| seed | {} |", s.seed)?;
    writeln!(w, "| overall | **{}** |", verdict_word(s.worst()))?;
    Ok(())
}

/// The comparison table across variants (also used by `zdt compare`'s
/// neighbours: one row per variant, the headline numbers).
pub(crate) fn variant_table(w: &mut dyn Write, s: &RunSummary) -> io::Result<()> {
    writeln!(
        w,
        "| variant | verdict | requests | success | failed | errors by kind | p50 | p99 | max | rate achieved/requested | error windows |"
    )?;
    writeln!(w, "|---|---|--:|--:|--:|---|--:|--:|--:|--:|--:|")?;
    for v in &s.variants {
        let kinds: Vec<String> = v.errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
        writeln!(
            w,
            "| {} | **{}** | {} | {} | {} | {} | {} | {} | {} | {:.0}/{:.0} per s | {} |",
            md_cell(&v.name),
            verdict_word(v.verdict),
            v.requests,
            format::pct(v.success_ratio),
            format::failed(v),
            md_cell(&kinds.join(", ")),
            format::ms(v.latency_ms.p50),
            format::ms(v.latency_ms.p99),
            format::ms(v.latency_ms.max),
            v.rate.achieved,
            v.rate.requested,
            v.error_windows.len(),
        )?;
    }
    Ok(())
}

fn variant(w: &mut dyn Write, v: &VariantSummary) -> io::Result<()> {
    writeln!(
        w,
        "## Variant `{}` — {}",
        md_cell(&v.name),
        verdict_word(v.verdict)
    )?;
    writeln!(w)?;
    if !v.description.is_empty() {
        writeln!(w, "{}", v.description.trim())?;
        writeln!(w)?;
    }
    for r in &v.reasons {
        writeln!(w, "- {}", r.trim())?;
    }
    if !v.reasons.is_empty() {
        writeln!(w)?;
    }
    if let Some(r) = format::runtimes(v) {
        writeln!(w, "Pods ran as: {}.", md_cell(&r))?;
        writeln!(w)?;
    }
    writeln!(
        w,
        "Latency from each request's due time: p50 {}, p90 {}, p95 {}, p99 {}, p99.9 {}, max {}, mean {}. \
         Send lag (the generator's own, sent − due) p50 {}, p99 {}, max {}. Status codes: {}.",
        format::ms(v.latency_ms.p50),
        format::ms(v.latency_ms.p90),
        format::ms(v.latency_ms.p95),
        format::ms(v.latency_ms.p99),
        format::ms(v.latency_ms.p999),
        format::ms(v.latency_ms.max),
        format::ms(v.latency_ms.mean),
        format::ms(v.schedule_lag_ms.p50),
        format::ms(v.schedule_lag_ms.p99),
        format::ms(v.schedule_lag_ms.max),
        v.status_codes
            .iter()
            .map(|(c, n)| format!("`{c}`×{n}"))
            .collect::<Vec<_>>()
            .join(", "),
    )?;
    writeln!(w)?;
    let timing = format::timing(v);
    if !timing.is_empty() {
        writeln!(w, "Time: {timing}.")?;
        writeln!(w)?;
    }

    writeln!(w, "### Expectations")?;
    writeln!(w)?;
    if v.expectations.is_empty() {
        writeln!(w, "None evaluated.")?;
    } else {
        writeln!(w, "| expectation | threshold | actual | result |")?;
        writeln!(w, "|---|---|---|---|")?;
        for e in &v.expectations {
            writeln!(
                w,
                "| {} | `{}` | {} | {} |",
                md_cell(&e.name),
                md_cell(&e.threshold),
                md_cell(&e.actual),
                if e.ok { "ok" } else { "**FAILED**" }
            )?;
        }
    }
    writeln!(w)?;

    writeln!(w, "### Error windows")?;
    writeln!(w)?;
    if v.error_windows.is_empty() {
        writeln!(w, "No failed requests.")?;
    } else {
        writeln!(
            w,
            "| from | to | errors | kinds | node · pod | cause | physics |"
        )?;
        writeln!(w, "|--:|--:|--:|---|---|---|---|")?;
        for e in &v.error_windows {
            let kinds: Vec<String> = e.kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
            writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} | {} |",
                format::secs(e.start_s),
                format::secs(e.end_s),
                e.errors,
                md_cell(&kinds.join(", ")),
                md_cell(&format::window_place(e)),
                md_cell(&e.explanation),
                md_cell(&format::window_physics(e)),
            )?;
        }
    }
    writeln!(w)?;

    writeln!(w, "### Chaos steps")?;
    writeln!(w)?;
    if v.chaos.is_empty() {
        writeln!(w, "None.")?;
    } else {
        writeln!(
            w,
            "| # | step | action | node | started | finished | result | message |"
        )?;
        writeln!(w, "|--:|---|---|---|--:|--:|---|---|")?;
        for c in &v.chaos {
            writeln!(
                w,
                "| {} | {} | `{}` | {} | {} | {} | {} | {} |",
                c.index,
                md_cell(&c.name),
                md_cell(&c.action),
                md_cell(c.node.as_deref().unwrap_or("—")),
                format::secs(c.started_s),
                format::secs(c.finished_s),
                if c.ok { "ok" } else { "**FAILED**" },
                md_cell(&c.message),
            )?;
        }
    }
    writeln!(w)?;

    writeln!(w, "### Cluster and load balancer")?;
    writeln!(w)?;
    let mut any = false;
    for key in [
        "cluster",
        "loadBalancer",
        "load_balancer",
        "traffic",
        "tolerance",
    ] {
        if let Some(section) = v.scenario_as_run.get(key) {
            any = true;
            writeln!(w, "`{key}`:")?;
            writeln!(w)?;
            yaml_block(w, section)?;
        }
    }
    if !any {
        writeln!(w, "Not recorded in the scenario as run.")?;
        writeln!(w)?;
    }

    writeln!(
        w,
        "<details><summary>Scenario as run (variant patch applied)</summary>"
    )?;
    writeln!(w)?;
    yaml_block(w, &v.scenario_as_run)?;
    writeln!(w, "</details>")?;
    Ok(())
}

fn yaml_block(w: &mut dyn Write, v: &Value) -> io::Result<()> {
    let (lang, body) = match serde_saphyr::to_string(v) {
        Ok(y) => ("yaml", y),
        Err(_) => ("json", serde_json::to_string_pretty(v).unwrap_or_default()),
    };
    // A fence longer than any backtick run inside keeps the block closed.
    let fence = "`".repeat(longest_backtick_run(&body).max(2) + 1);
    writeln!(w, "{fence}{lang}")?;
    writeln!(w, "{}", body.trim_end())?;
    writeln!(w, "{fence}")?;
    writeln!(w)
}

fn longest_backtick_run(s: &str) -> usize {
    s.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}
