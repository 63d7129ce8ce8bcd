use std::path::PathBuf;

use crate::cli::{not_built, Exit};

/// `zdt lb --config FILE`
#[derive(Debug, clap::Args)]
pub struct LbArgs {
    /// LB config (YAML or JSON): frontend, backends, probe settings.
    #[arg(long)]
    pub config: PathBuf,
}

pub async fn run(_args: LbArgs) -> miette::Result<Exit> {
    Err(not_built("lb", 4))
}
