use crate::cli::{not_built, Exit};

/// `zdt attack URL …`
#[derive(Debug, clap::Args)]
pub struct AttackArgs {
    /// Target URL (http://HOST:PORT/PATH).
    pub url: String,
}

pub async fn run(_args: AttackArgs) -> miette::Result<Exit> {
    Err(not_built("attack", 3))
}
