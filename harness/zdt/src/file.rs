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
    // The variants write what they keep besides the summary (the rendered
    // manifests) into the same directory.
    let opts = &RunOptions {
        out: Some(out.to_path_buf()),
        ..opts.clone()
    };
    // Each variant's data is written as it ends (an interrupted run keeps
    // what finished), in file order whatever order `--jobs` ends them in.
    let mut done: Vec<Option<executor::VariantRun>> = Vec::new();
    done.resize_with(variants.len(), || None);
    let mut written: Result<(), RunError> = Ok(());
    executor::run_variants(&variants, opts, cancel.clone(), |i, run| {
        if let Some(observer) = &opts.observer {
            observer.variant_finished(&variants[i].id(), &run.summary);
        }
        done[i] = Some(run);
        summary.variants = done.iter().flatten().map(|r| r.summary.clone()).collect();
        if written.is_ok() {
            written = output::write(out, &summary, &data_of(&variants, &done))
                .map(drop)
                .map_err(Into::into);
        }
    })
    .await;
    written?;
    let data = data_of(&variants, &done);
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

/// The run's data so far, in file order.
fn data_of(variants: &[Scenario], done: &[Option<executor::VariantRun>]) -> RunData {
    let mut data = RunData::default();
    for (v, run) in variants.iter().zip(done) {
        let Some(run) = run else { continue };
        for e in &run.events {
            data.events.push((v.variant.clone(), e.clone()));
        }
        if let Some(t) = &run.traffic {
            data.traffic.insert(v.variant.clone(), t.clone());
        }
    }
    data
}
