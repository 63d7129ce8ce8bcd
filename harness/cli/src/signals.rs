//! Stop signals for the long-running subcommands (`zdt emulator up`,
//! `zdt lb`, `zdt attack`). SIGINT (Ctrl-C) and SIGTERM (`kill`, systemd,
//! `docker stop`, CI timeouts) mean the same thing: stop and clean up. A
//! subcommand that waited for SIGINT alone died of SIGTERM's default action
//! and skipped its cleanup.

use tokio::signal::unix::{signal, SignalKind};

/// Resolves at the first SIGINT or SIGTERM. If a handler cannot be
/// installed (it can only fail when the runtime has no signal driver), the
/// other signal still stops the command.
pub async fn stop_requested() {
    let int = signal(SignalKind::interrupt());
    let term = signal(SignalKind::terminate());
    match (int, term) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        (Ok(mut one), Err(_)) | (Err(_), Ok(mut one)) => {
            one.recv().await;
        }
        (Err(_), Err(_)) => std::future::pending().await,
    }
}
