//! `zdt validate FILE…`: load and validate scenario files without running
//! them. Prints `ok FILE (N variants)` per good file; for a bad file prints
//! the report (file:line:column, the line, the fix). Exit 0 when every file
//! is good, 2 otherwise.
//!
//! `zdt validate --list-variants [--lb-mode MODE] FILE` prints the file's
//! variant names instead, one a line — with `--lb-mode`, only those that
//! can run behind that LB (the others, which have LB admin steps, are named
//! on stderr with the step), ready for `zdt run --variant NAME …`. The
//! nightly workflow runs the rest of a scenario this way in the MetalLB and
//! cloud-provider-kind modes.

use std::io::IsTerminal;
use std::path::PathBuf;

use miette::{GraphicalReportHandler, GraphicalTheme};

use crate::Exit;

/// `zdt validate FILE…`
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Scenario files to check.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print the variant names, one a line (for `zdt run --variant NAME`),
    /// instead of `ok FILE (N variants)`.
    #[arg(long)]
    pub list_variants: bool,
    /// With --list-variants: only the variants that can run with this
    /// `loadBalancer.mode` (model, metallb, cloud-provider-kind); variants
    /// with LB admin steps need `model` and are named on stderr.
    #[arg(long, value_name = "MODE", requires = "list_variants")]
    pub lb_mode: Option<String>,
    /// Check the files as `zdt run --rate RATE` would run them.
    #[arg(long)]
    pub rate: Option<zdt_core::units::Rate>,
    /// Check the files as `zdt run --duration D` would run them: the chaos
    /// timeline and the LB's detection time must fit in it.
    #[arg(long)]
    pub duration: Option<zdt_core::units::Dur>,
}

pub async fn run(args: ValidateArgs) -> miette::Result<Exit> {
    if args.list_variants {
        return list_variants(&args);
    }
    let mut failed = false;
    for file in &args.files {
        match zdt_scenario::load(file).and_then(|f| f.variants()) {
            Ok(variants) => {
                let overrides = zdt_scenario::Overrides {
                    rate: args.rate,
                    duration: args.duration,
                    ..Default::default()
                };
                let mut bad = Vec::new();
                for v in &variants {
                    match v.clone().with_overrides(&overrides) {
                        Err(e) => {
                            bad.push(format!("{}: variant `{}`: {e}", file.display(), v.variant))
                        }
                        Ok(run) => {
                            for w in zdt_scenario::assumption_warnings(v, &run) {
                                eprintln!(
                                    "{}: warning: variant `{}`: {w}",
                                    file.display(),
                                    v.variant
                                );
                            }
                        }
                    }
                }
                if !bad.is_empty() {
                    eprintln!("{}", bad.join("\n"));
                    failed = true;
                    continue;
                }
                let n = variants.len();
                let noun = if n == 1 { "variant" } else { "variants" };
                println!("ok {} ({n} {noun})", file.display());
            }
            Err(e) => {
                // Keep going so one run reports every bad file.
                eprintln!("{}", render(&e));
                failed = true;
            }
        }
    }
    Ok(if failed { Exit::Usage } else { Exit::Pass })
}

/// `--list-variants`: the variant names of one file on stdout, those that
/// cannot run with `--lb-mode` on stderr with the step that needs zdt's LB.
fn list_variants(args: &ValidateArgs) -> miette::Result<Exit> {
    let mode = match args.lb_mode.as_deref() {
        None => zdt_scenario::LbMode::Model,
        Some(m) => m
            .parse::<zdt_scenario::LbMode>()
            .map_err(|e| miette::miette!("{e}"))?,
    };
    let [file] = args.files.as_slice() else {
        return Err(miette::miette!(
            help = "run `zdt validate --list-variants FILE` once per file",
            "--list-variants takes one scenario file, not {}",
            args.files.len()
        ));
    };
    let variants = match zdt_scenario::load(file).and_then(|f| f.variants()) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{}", render(&e));
            return Ok(Exit::Usage);
        }
    };
    for v in &variants {
        match v.lb_admin_step() {
            Some(step) if mode != zdt_scenario::LbMode::Model => eprintln!(
                "{}: variant `{}` cannot run with --lb-mode {}: chaos step `{}` ({}) needs zdt's LB",
                file.display(),
                v.variant,
                mode.as_str(),
                step.name,
                step.action.kind()
            ),
            _ => println!("{}", v.variant),
        }
    }
    Ok(Exit::Pass)
}

/// The report as miette draws it. On a terminal it is coloured and wrapped
/// to the terminal; piped (CI logs, tests, editors) each message stays on one
/// line so it can be searched for.
pub fn render(e: &zdt_scenario::ScenarioError) -> String {
    let handler = if std::io::stderr().is_terminal() {
        GraphicalReportHandler::new()
    } else {
        GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor()).with_width(10_000)
    };
    let mut out = String::new();
    match handler.render_report(&mut out, e) {
        Ok(()) => out,
        Err(_) => e.one_line(),
    }
}
