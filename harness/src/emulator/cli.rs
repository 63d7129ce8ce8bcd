use crate::cli::{not_built, Exit};

/// `zdt emulator up …`
#[derive(Debug, clap::Args)]
pub struct EmulatorArgs {
    /// What to do (`up`).
    pub action: String,
}

pub async fn run(_args: EmulatorArgs) -> miette::Result<Exit> {
    Err(not_built("emulator", 5))
}
