//! `report.txt`: vegeta's text layout, one block per variant.
//!
//! The traffic generator's own text reporter renders each variant from its
//! full summary (`OUT/traffic/VARIANT.json`); a variant without one (the run
//! was interrupted before the summary was written) gets the same layout from
//! the numbers `summary.json` keeps.

use std::io::{self, Write};

use super::format;
use super::{verdict_word, RunData};
use crate::run::summary::VariantSummary;

pub fn write(w: &mut dyn Write, data: &RunData) -> io::Result<()> {
    let s = &data.summary;
    writeln!(
        w,
        "zdt {} — scenario {} ({}), provider {}{}",
        s.zdt_version,
        s.scenario,
        s.file,
        s.provider,
        if s.emulated {
            " (emulated: numbers come from a model)"
        } else {
            ""
        }
    )?;
    for v in &s.variants {
        writeln!(w)?;
        writeln!(w, "== variant {}: {}", v.name, verdict_word(v.verdict))?;
        for r in &v.reasons {
            writeln!(w, "   {r}")?;
        }
        if let Some(r) = format::runtimes(v) {
            writeln!(w, "   pods ran as: {r}")?;
        }
        match data.traffic.get(&v.name) {
            Some(t) => traffic_text(w, t)?,
            None => from_summary(w, v)?,
        }
        let timing = format::timing(v);
        if !timing.is_empty() {
            writeln!(w, "Time          {timing}")?;
        }
    }
    Ok(())
}

fn traffic_text(w: &mut dyn Write, t: &super::data::TrafficSummary) -> io::Result<()> {
    write!(w, "{}", zdt_traffic::report::text(t))
}

/// vegeta's `text` reporter layout from the run summary's numbers.
pub(crate) fn from_summary(w: &mut dyn Write, v: &VariantSummary) -> io::Result<()> {
    let ms = |x: f64| format!("{:.3}ms", x);
    let ok = v.requests.saturating_sub(format::failed(v));
    let duration = if v.rate.achieved > 0.0 {
        v.requests as f64 / v.rate.achieved
    } else {
        0.0
    };
    let throughput = if duration > 0.0 {
        ok as f64 / duration
    } else {
        0.0
    };
    writeln!(
        w,
        "Requests      [total, rate, throughput]         {}, {:.2}, {:.2}",
        v.requests, v.rate.achieved, throughput
    )?;
    writeln!(
        w,
        "Duration      [attack]                          {:.3}s",
        duration
    )?;
    let l = &v.latency_ms;
    writeln!(
        w,
        "Latencies     [mean, 50, 90, 95, 99, max]       {}, {}, {}, {}, {}, {}",
        ms(l.mean),
        ms(l.p50),
        ms(l.p90),
        ms(l.p95),
        ms(l.p99),
        ms(l.max)
    )?;
    writeln!(
        w,
        "Success       [ratio]                           {:.2}%",
        v.success_ratio * 100.0
    )?;
    let codes: Vec<String> = v
        .status_codes
        .iter()
        .map(|(c, n)| format!("{c}:{n}"))
        .collect();
    writeln!(
        w,
        "Status Codes  [code:count]                      {}",
        codes.join("  ")
    )?;
    let lag = &v.schedule_lag_ms;
    writeln!(
        w,
        "Send Lag      [50, 99, max]                     {}, {}, {}",
        ms(lag.p50),
        ms(lag.p99),
        ms(lag.max)
    )?;
    writeln!(w, "Error Set:")?;
    for (kind, n) in &v.errors {
        writeln!(w, "{kind}: {n}")?;
    }
    Ok(())
}
