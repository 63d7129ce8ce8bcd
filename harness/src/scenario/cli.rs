//! `zdt validate FILE…`: load and validate scenario files without running
//! them. Prints `ok FILE (N variants)` per good file; on the first bad file
//! prints the report (file:line:column, the line, the fix) and exits 2.

use std::path::PathBuf;

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
        match super::load(file).and_then(|f| f.variants().map(|v| (f, v))) {
            Ok((_, variants)) => {
                let n = variants.len();
                let noun = if n == 1 { "variant" } else { "variants" };
                println!("ok {} ({n} {noun})", file.display());
            }
            Err(e) => {
                // Keep going so one run reports every bad file.
                eprintln!("{:?}", miette::Report::new(e));
                failed = true;
            }
        }
    }
    Ok(if failed { Exit::Usage } else { Exit::Pass })
}
