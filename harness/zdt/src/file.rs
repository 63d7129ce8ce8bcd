//! Running a whole scenario file: every variant in turn, the run's data
//! written after each, the reports rendered at the end. This is what
//! `zdt run FILE` does, as a library call.

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;
use zdt_scenario::{Provider, Scenario};

use crate::report;
use crate::run::executor::{self, RunError, RunOptions};
use crate::run::output::{self, RunData};
use crate::run::summary::RunSummary;

/// What a finished (or interrupted) file run left.
#[derive(Debug)]
pub struct RunOutcome {
    /// Every variant that ran, with its verdict; `complete` says whether
    /// every planned variant did.
    pub summary: RunSummary,
    /// Where the data and reports are.
    pub out: PathBuf,
    /// The variants as planned (validated, overrides applied).
    pub variants: Vec<Scenario>,
    /// The run's data is saved, but the reports could not be rendered.
    pub render_error: Option<report::ReportError>,
}

/// Load, plan and run `path` with `opts`, writing under `opts.out` (or
/// `reports/<scenario>/<timestamp>/`). Cancelling `cancel` stops the run
/// gracefully: the variant under way is torn down and the partial data and
/// reports are still written.
pub async fn run_file(
    path: &Path,
    opts: &RunOptions,
    cancel: CancellationToken,
) -> Result<RunOutcome, RunError> {
    let (name, variants) = executor::plan(path, opts)?;
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| executor::default_out(&name));
    run_planned(path, &name, variants, &out, opts, cancel).await
}

/// Run variants already planned from `path` (see [`executor::plan`]).
pub async fn run_planned(
    path: &Path,
    name: &str,
    variants: Vec<Scenario>,
    out: &Path,
    opts: &RunOptions,
    cancel: CancellationToken,
) -> Result<RunOutcome, RunError> {
    let mut summary = RunSummary {
        scenario: name.to_owned(),
        file: path.display().to_string(),
        provider: variants
            .first()
            .map(|v| v.cluster.provider.to_string())
            .unwrap_or_default(),
        emulated: variants
            .first()
            .is_some_and(|v| v.cluster.provider == Provider::Emulator),
        zdt_version: env!("CARGO_PKG_VERSION").into(),
        started_at: jiff::Timestamp::now().to_string(),
        seed: opts.seed,
        complete: false,
        incomplete_reason: None,
        variants: Vec::new(),
    };
    let mut data = RunData::default();
    // The variants write what they keep besides the summary (the rendered
    // manifests) into the same directory.
    let opts = &RunOptions {
        out: Some(out.to_path_buf()),
        ..opts.clone()
    };
    for v in &variants {
        if cancel.is_cancelled() {
            break;
        }
        let run = executor::run_variant(v, opts, cancel.clone()).await;
        for e in run.events {
            data.events.push((v.variant.clone(), e));
        }
        if let Some(t) = run.traffic {
            data.traffic.insert(v.variant.clone(), t);
        }
        if let Some(observer) = &opts.observer {
            observer.variant_finished(&run.summary);
        }
        summary.variants.push(run.summary);
        output::write(out, &summary, &data)?;
    }
    tracing::info!("run phase: report");
    summary.complete = !cancel.is_cancelled() && summary.variants.len() == variants.len();
    if !summary.complete {
        summary.incomplete_reason =
            Some("interrupted (Ctrl-C or SIGTERM) before every variant finished".into());
    }
    output::write(out, &summary, &data)?;
    let render_error = report::RunData::load(out)
        .and_then(|d| report::write_all(out, &d))
        .err();
    Ok(RunOutcome {
        summary,
        out: out.to_path_buf(),
        variants,
        render_error,
    })
}
