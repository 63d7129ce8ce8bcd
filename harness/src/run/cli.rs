use std::path::PathBuf;

use crate::cli::{not_built, Exit};

/// `zdt run FILE…`
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Scenario files to run.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

pub async fn run(_args: RunArgs) -> miette::Result<Exit> {
    Err(not_built("run", 6))
}
