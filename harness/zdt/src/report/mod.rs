//! Reports: vegeta-compatible text, Markdown, self-contained HTML, JUnit
//! XML, comparisons across variants and against a baseline.
//!
//! Every report is rendered from what the run saved in `OUT/` ([`RunData`]),
//! so `zdt report OUT` re-renders them after the fact. Like vegeta's
//! reporters, each renderer is a function writing to a writer; [`write_all`]
//! only picks the file names.

pub mod baseline;
pub mod compare;
pub mod data;
mod format;
pub mod html;
pub mod junit;
pub(crate) mod markdown;
mod svg;
pub mod sweep;
#[cfg(feature = "testing")]
pub mod testing;
pub(crate) mod text;

use std::path::{Path, PathBuf};

pub use data::{Point, RunData, VariantEvent};

use crate::run::summary::{RunSummary, VariantSummary, Verdict};

/// Why a report could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a valid zdt output file ({detail}); re-run the scenario or restore the file", path.display())]
    Parse { path: PathBuf, detail: String },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The reports [`write_all`] produces, in this order.
pub const FILES: [&str; 4] = ["report.txt", "report.md", "report.html", "junit.xml"];

/// Render every report of a run into `out` and return the paths written.
pub fn write_all(out: &Path, data: &RunData) -> Result<Vec<PathBuf>, ReportError> {
    std::fs::create_dir_all(out).map_err(|source| ReportError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    let mut written = Vec::new();
    for name in FILES {
        let mut buf = Vec::new();
        let res = match name {
            "report.txt" => text::write(&mut buf, data),
            "report.md" => markdown::write(&mut buf, data),
            "report.html" => html::write(&mut buf, data),
            _ => junit::write(&mut buf, &data.summary),
        };
        let path = out.join(name);
        res.map_err(|source| ReportError::Write {
            path: path.clone(),
            source,
        })?;
        written.push(data::write_file(&path, &buf)?);
    }
    // A sweep's plot on its own too, for READMEs and slides.
    if let Some(svg) = sweep::chart(&data.summary) {
        written.push(data::write_file(&out.join(SWEEP_SVG), svg.as_bytes())?);
    }
    Ok(written)
}

/// The sweep plot [`write_all`] writes when the run was a sweep.
pub const SWEEP_SVG: &str = "sweep.svg";

/// Load a run's saved data from `out` and render every report next to it:
/// what `zdt run` calls after writing `summary.json` & co., and what
/// `zdt report OUT` does.
pub fn render(out: &Path) -> Result<(RunData, Vec<PathBuf>), ReportError> {
    let data = RunData::load(out)?;
    let written = write_all(out, &data)?;
    Ok((data, written))
}

/// A variant's verdict and headline numbers on one line (the name padded to
/// `name_width`), then each reason on a line of its own. `zdt run` prints it
/// as each variant ends and again side by side at the end; `zdt report`
/// prints the same. ANSI colour only when `colour` (the caller knows whether
/// stdout is a terminal); the verdict word carries the meaning either way.
pub fn verdict_line(v: &VariantSummary, name_width: usize, colour: bool) -> String {
    let word = format!("{:<10}", verdict_word(v.verdict));
    let word = if colour {
        let code = match v.verdict {
            Verdict::Pass => "1;32",
            Verdict::Fail => "1;31",
            Verdict::Invalid => "1;33",
            Verdict::Incomplete => "1;35",
        };
        format!("\x1b[{code}m{word}\x1b[0m")
    } else {
        word
    };
    let failed = format::failed(v);
    let mut s = format!(
        "{word} {name:<name_width$}  success {ratio} ({failed}/{req} failed)  p99 {p99}",
        name = v.name,
        ratio = format::pct(v.success_ratio),
        req = v.requests,
        p99 = format::ms(v.latency_ms.p99),
    );
    if !v.errors.is_empty() {
        let kinds: Vec<String> = v.errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
        s.push_str(&format!("  errors: {}", kinds.join(", ")));
    }
    if !v.timing.phases.is_empty() {
        s.push_str(&format!(
            "  outside traffic {:.1} s",
            v.timing.outside_traffic_s
        ));
    }
    for reason in &v.reasons {
        s.push_str("\n           - ");
        s.push_str(reason);
    }
    s
}

/// [`verdict_line`] for every variant, names aligned, then where the
/// reports are.
pub fn print_verdicts(summary: &RunSummary, out_dir: &Path, colour: bool) -> String {
    let width = summary
        .variants
        .iter()
        .map(|v| v.name.chars().count())
        .max()
        .unwrap_or(0);
    let mut s = String::new();
    for v in &summary.variants {
        s.push_str(&verdict_line(v, width, colour));
        s.push('\n');
    }
    s.push_str(&format!(
        "reports: {}  (also report.md, report.txt, junit.xml, summary.json)\n",
        out_dir.join("report.html").display()
    ));
    s
}

pub(crate) fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "PASS",
        Verdict::Fail => "FAIL",
        Verdict::Invalid => "INVALID",
        Verdict::Incomplete => "INCOMPLETE",
    }
}
