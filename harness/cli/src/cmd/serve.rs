//! `zdt serve`: the built-in pod server as a process of its own, with real
//! signals mapped onto it.

use std::net::SocketAddr;

use zdt_core::units::Dur;
use zdt_emulator::node::serve::{ServeConfig, Server, Signal};

use crate::Exit;

/// `zdt serve --listen ADDR --pod NAME --node NAME [--delay 0ms] [--body-delay 0ms] [--start-delay 0ms]`
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Value of the `X-Pod` response header.
    #[arg(long, env = "POD_NAME", default_value = "zdt-serve")]
    pub pod: String,
    /// Value of the `X-Node` response header.
    #[arg(long, env = "NODE_NAME", default_value = "")]
    pub node: String,
    /// Wait this long before each response (e.g. `250ms`).
    #[arg(long, default_value = "0ms")]
    pub delay: Dur,
    /// Send the head at once and the body this long later (e.g. `500ms`).
    #[arg(long, default_value = "0ms")]
    pub body_delay: Dur,
    /// Listen only this long after start (e.g. `3s`), like an app warming
    /// up: connections are refused until then.
    #[arg(long, default_value = "0ms")]
    pub start_delay: Dur,
}

/// The binary: real signals mapped onto the in-process server.
pub async fn run(args: ServeArgs) -> miette::Result<Exit> {
    use miette::IntoDiagnostic;
    use tokio::signal::unix::{signal, SignalKind};

    let node = if args.node.is_empty() {
        hostname()
    } else {
        args.node
    };
    let config = ServeConfig {
        listen: args.listen,
        pod: args.pod,
        node,
        delay: args.delay.get(),
        body_delay: args.body_delay.get(),
        start_delay: args.start_delay.get(),
        net: zdt_emulator::Net::host(),
    };
    let handle = Server::start(config.clone()).await.map_err(|e| {
        miette::miette!(
            help = "pick a free address with --listen, e.g. 127.0.0.1:0",
            "zdt serve: cannot listen on {}: {e}",
            config.listen
        )
    })?;
    eprintln!(
        "zdt serve: listening on {} as pod {:?} on node {:?}{}",
        handle.addr(),
        config.pod,
        config.node,
        if config.start_delay.is_zero() {
            String::new()
        } else {
            format!(" after a start delay of {}", args.start_delay)
        }
    );
    let mut term = signal(SignalKind::terminate()).into_diagnostic()?;
    let mut int = signal(SignalKind::interrupt()).into_diagnostic()?;
    let mut quit = signal(SignalKind::quit()).into_diagnostic()?;
    let exited = handle.exited();
    tokio::pin!(exited);
    loop {
        tokio::select! {
            status = &mut exited => {
                eprintln!("zdt serve: exited ({status:?})");
                return Ok(Exit::Pass);
            }
            _ = term.recv() => handle.signal(Signal::Term),
            _ = int.recv() => handle.signal(Signal::Term),
            _ = quit.recv() => handle.signal(Signal::Quit),
        }
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
