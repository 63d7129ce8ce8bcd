use std::path::PathBuf;

use crate::cli::{not_built, Exit};

/// `zdt report OUT`
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// A run's output directory.
    pub out: PathBuf,
}

/// `zdt compare A B`
#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    pub a: PathBuf,
    pub b: PathBuf,
}

pub async fn run_report(_args: ReportArgs) -> miette::Result<Exit> {
    Err(not_built("report", 8))
}

pub async fn run_compare(_args: CompareArgs) -> miette::Result<Exit> {
    Err(not_built("compare", 8))
}
