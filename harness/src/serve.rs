//! `zdt serve`: a small HTTP backend answering 200 with `X-Pod`/`X-Node`
//! headers, with nginx's stop-signal semantics (SIGTERM fast, SIGQUIT
//! graceful). Used in containers and as the emulator's pod fallback.

use crate::cli::{not_built, Exit};

/// `zdt serve --listen ADDR`
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
}

pub async fn run_cli(_args: ServeArgs) -> miette::Result<Exit> {
    Err(not_built("serve", 4))
}
