use std::net::SocketAddr;
use std::path::PathBuf;

use miette::{miette, IntoDiagnostic};
use tokio_util::sync::CancellationToken;

use crate::Exit;
use zdt_core::clock::Clock;
use zdt_core::events::EventSink;
use zdt_lb::{Lb, LbFile};

/// `zdt lb --config FILE [--admin ADDR]`
#[derive(Debug, clap::Args)]
pub struct LbArgs {
    /// LB config (YAML or JSON): frontend, backends, profile, probe settings.
    #[arg(long)]
    pub config: PathBuf,
    /// Serve the HTTP admin API here (overrides `admin:` in the config).
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    /// Threads for the data path, probes and admin API. One thread (the
    /// default, like haproxy's `nbthread 1`) costs less CPU per connection
    /// and adds less latency than a thread per core on a small machine:
    /// cross-thread wake-ups cost more than they give below ~10k new
    /// connections/s (docs/bench-lb.md).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: u16,
}

/// Runs until Ctrl-C or SIGTERM; every LB event is printed on stdout as one
/// JSON line (what `docker logs` of the LB container shows).
pub async fn run(args: LbArgs) -> miette::Result<Exit> {
    let (file, deprecated) = LbFile::load(&args.config).map_err(|e| {
        miette!(
            help = "see `zdt lb --help` and docs/lb.md, which documents every field",
            "{e}"
        )
    })?;
    for d in deprecated {
        eprintln!("zdt lb: warning: {}: {d}", args.config.display());
    }
    let (config, backends) = file.resolve().await.map_err(|e| {
        miette!(
            help = "fix the field named in the message",
            "LB config {}: {e}",
            args.config.display()
        )
    })?;
    let admin_addr = match args.admin {
        Some(a) => Some(a),
        None => file
            .admin_addr()
            .await
            .map_err(|e| miette!("LB config {}: {e}", args.config.display()))?,
    };
    let (events, mut rx) = EventSink::channel(Clock::start());
    let printer = tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            if let Ok(line) = serde_json::to_string(&ev) {
                println!("{line}");
            }
        }
    });
    let probe = config.probe;
    let lb = Lb::start(config, backends, events, CancellationToken::new())
        .await
        .into_diagnostic()?;
    eprintln!(
        "zdt lb: frontend {} (profile {}, probe every {} timeout {}, {} fails out, {} successes in)",
        lb.frontend_addr(),
        file.profile,
        probe.interval,
        probe.timeout,
        probe.unhealthy_threshold,
        probe.healthy_threshold
    );
    if let Some(addr) = admin_addr {
        let bound = lb.serve_admin(addr).await.into_diagnostic()?;
        eprintln!("zdt lb: admin API on http://{bound}/backends");
    }
    crate::signals::stop_requested().await;
    lb.shutdown().await;
    let _ = printer.await;
    Ok(Exit::Pass)
}
