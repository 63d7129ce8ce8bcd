use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use crate::Exit;
use zdt::run::summary::RunSummary;

use zdt::report::baseline::Tolerance;
use zdt::report::{compare, print_verdicts, render, ReportError};

/// `zdt report OUT`
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// A run's output directory (holds summary.json, events.jsonl,
    /// buckets.json, traffic/). Every report in it is rendered again.
    pub out: PathBuf,
}

/// `zdt compare A B`
#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// The reference run: an output directory or its summary.json.
    pub a: PathBuf,
    /// The run to judge against A: an output directory or its summary.json.
    pub b: PathBuf,
    /// Override a tolerance, KEY=VALUE (repeatable): `successRatio=0.001`
    /// (absolute drop), `p99=20%` (relative growth), `p99Min=5ms` (growth
    /// always allowed). Defaults come from B's scenario `expect.tolerance`.
    #[arg(long = "tolerance", value_name = "KEY=VALUE")]
    pub tolerance: Vec<String>,
}

pub async fn run_report(args: ReportArgs) -> miette::Result<Exit> {
    let (data, written) = render(&args.out).map_err(|e| match e {
        ReportError::Write { .. } => miette::miette!("{e}"),
        _ => miette::miette!(
            help = "pass the directory a `zdt run` wrote (it holds summary.json)",
            "{e}"
        ),
    })?;
    for p in &written {
        println!("wrote {}", p.display());
    }
    print!(
        "{}",
        print_verdicts(&data.summary, &args.out, std::io::stdout().is_terminal())
    );
    Ok(Exit::Pass)
}

pub async fn run_compare(args: CompareArgs) -> miette::Result<Exit> {
    let a = load_summary(&args.a)?;
    let b = load_summary(&args.b)?;
    let mut tol = match b.variants.first() {
        Some(v) => Tolerance::from_scenario(&v.scenario_as_run).map_err(|e| {
            miette::miette!(
                help = "fix the scenario's `expect.tolerance` or pass --tolerance KEY=VALUE",
                "{}: {e}",
                args.b.display()
            )
        })?,
        None => Tolerance::default(),
    };
    for spec in &args.tolerance {
        tol.apply(spec).map_err(|e| {
            miette::miette!(
                help = "e.g. --tolerance successRatio=0.001 --tolerance p99=20%",
                "--tolerance {e}"
            )
        })?;
    }
    let c = compare::compare(&a, &b, &tol);
    let mut out = Vec::new();
    compare::write_text(&mut out, &c).map_err(|e| miette::miette!("{e}"))?;
    print!("{}", String::from_utf8_lossy(&out));
    Ok(if c.regressions.is_empty() {
        Exit::Pass
    } else {
        Exit::Fail
    })
}

fn load_summary(p: &Path) -> miette::Result<RunSummary> {
    let file = if p.is_dir() {
        p.join("summary.json")
    } else {
        p.to_path_buf()
    };
    zdt::report::data::read_json(&file).map_err(|e| {
        miette::miette!(
            help = "pass a `zdt run` output directory or its summary.json",
            "{e}"
        )
    })
}
