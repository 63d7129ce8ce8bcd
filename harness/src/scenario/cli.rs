//! `zdt validate FILE…`: load and validate scenario files without running
//! them. Prints `ok FILE (N variants)` per good file; for a bad file prints
//! the report (file:line:column, the line, the fix). Exit 0 when every file
//! is good, 2 otherwise.

use std::io::IsTerminal;
use std::path::PathBuf;

use miette::{GraphicalReportHandler, GraphicalTheme};

use crate::cli::Exit;

/// `zdt validate FILE…`
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Scenario files to check.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

pub async fn run(args: ValidateArgs) -> miette::Result<Exit> {
    let mut failed = false;
    for file in &args.files {
        match super::load(file).and_then(|f| f.variants()) {
            Ok(variants) => {
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

/// The report as miette draws it. On a terminal it is coloured and wrapped
/// to the terminal; piped (CI logs, tests, editors) each message stays on one
/// line so it can be searched for.
pub fn render(e: &super::ScenarioError) -> String {
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
