use std::path::PathBuf;

use crate::cli::{not_built, Exit};

/// `zdt validate FILE…`
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Scenario files to check.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

pub async fn run(_args: ValidateArgs) -> miette::Result<Exit> {
    Err(not_built("validate", 2))
}
