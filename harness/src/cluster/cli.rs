use crate::cli::{not_built, Exit};

/// `zdt clean`
#[derive(Debug, clap::Args)]
pub struct CleanArgs {
    /// Only list what would be removed.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run(_args: CleanArgs) -> miette::Result<Exit> {
    Err(not_built("clean", 9))
}
