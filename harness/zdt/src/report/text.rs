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
        generators_text(w, v)?;
        let timing = format::timing(v);
        if !timing.is_empty() {
            writeln!(w, "Time          {timing}")?;
        }
    }
    Ok(())
}

/// The per-generator table of a scaled-out run, columns aligned.
fn generators_text(w: &mut dyn Write, v: &VariantSummary) -> io::Result<()> {
    let rows = format::generator_rows(v);
    if rows.is_empty() {
        return Ok(());
    }
    let mut widths = format::GENERATOR_COLUMNS.map(|c| c.chars().count());
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    writeln!(
        w,
        "Generators    ({} pods; the figures above are their merge)",
        rows.len()
    )?;
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(widths)
            .map(|(c, n)| format!("{c:<n$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    writeln!(w, "  {}", line(format::GENERATOR_COLUMNS.to_vec()))?;
    for r in &rows {
        writeln!(w, "  {}", line(r.iter().map(String::as_str).collect()))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::testing::variant;
    use crate::run::Verdict;
    use std::time::Duration;
    use zdt_traffic::GeneratorPart;

    fn generator(index: u32, lost: Option<&str>, merged: bool) -> GeneratorPart {
        GeneratorPart {
            name: format!("zdt-generators-{index}-abcde"),
            index,
            requests: 30_000,
            successes: 29_970,
            achieved_rate: 1000.02,
            send_lag_p99: Duration::from_micros(180),
            send_lag_max: Duration::from_millis(3),
            clock_offset_ns: Some(-1_500_000),
            clock_uncertainty: Some(Duration::from_micros(400)),
            lost: lost.map(str::to_string),
            partial: lost.is_some(),
            merged,
        }
    }

    #[test]
    fn a_scaled_out_variant_has_a_row_per_generator() {
        let mut v = variant("published", Verdict::Invalid, 0);
        v.generators = vec![
            generator(0, None, true),
            generator(1, Some("its pod was deleted"), false),
        ];
        let mut out = Vec::new();
        generators_text(&mut out, &v).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("Generators    (2 pods"), "{text}");
        assert!(lines[1].contains("generator") && lines[1].contains("clock offset"));
        assert!(lines[2].contains("zdt-generators-0-abcde (#0)"), "{text}");
        assert!(
            lines[2].contains("99.900%") && lines[2].contains("1000.0/s"),
            "{text}"
        );
        assert!(
            lines[2].contains("-1.5 ms ± 0.4 ms") && lines[2].ends_with("complete"),
            "{text}"
        );
        assert!(
            lines[3].ends_with("LOST, last report only (not merged): its pod was deleted"),
            "{text}"
        );
        // One generator: no table at all.
        let mut out = Vec::new();
        generators_text(&mut out, &variant("one", Verdict::Pass, 0)).unwrap();
        assert!(out.is_empty());
    }
}
