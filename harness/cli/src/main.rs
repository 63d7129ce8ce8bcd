//! The `zdt` command line: glue over the libraries. `main` parses flags,
//! dispatches to one subcommand's module in `cmd/`, and maps the outcome to
//! the one exit-code policy below. Everything testable lives in the
//! libraries.

mod cmd;
mod progress;
mod signals;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The exit-code policy, shared by every subcommand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Every expectation held.
    Pass = 0,
    /// The run was valid but an expectation failed (or a baseline regressed).
    Fail = 1,
    /// Bad input or usage: a scenario file, a flag, a manifest, a missing tool.
    Usage = 2,
    /// The run cannot be trusted: the generator fell behind its schedule or a
    /// chaos step failed. Never reported as a pass.
    Invalid = 3,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "zdt",
    version,
    about = "Chaos-test zero-downtime updates on Kubernetes",
    long_about = "zdt runs declarative scenarios: it brings up a cluster (embedded emulator, kind or an existing one), deploys a workload behind a cloud-style load balancer, sends constant-rate traffic, drains nodes or rolls out updates, and checks the success ratio and latencies against the scenario's expectations.\n\nExit codes: 0 pass, 1 expectation failed, 2 bad input or usage, 3 run invalid."
)]
pub struct Cli {
    /// More log output on stderr (repeat for more); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check scenario files without running them.
    Validate(cmd::validate::ValidateArgs),
    /// Run scenario files: every variant, with a verdict each.
    Run(cmd::run::RunArgs),
    /// Constant-rate HTTP load against one URL (vegeta-style report).
    Attack(cmd::attack::AttackArgs),
    /// Run the cloud load-balancer model standalone.
    Lb(cmd::lb::LbArgs),
    /// A small HTTP backend with nginx's stop-signal semantics.
    Serve(cmd::serve::ServeArgs),
    /// Run an emulated cluster for kubectl until Ctrl-C.
    Emulator(cmd::emulator::EmulatorArgs),
    /// Re-render the reports of a finished run.
    Report(cmd::report::ReportArgs),
    /// Compare two runs of the same scenario.
    Compare(cmd::report::CompareArgs),
    /// Remove clusters, containers and temp files zdt created.
    Clean(cmd::clean::CleanArgs),
    /// Internal: the traffic generator of `zdt run`, in its own process
    /// (protocol on stdin/stdout, see traffic::child).
    #[command(name = "traffic-child", hide = true)]
    TrafficChild,
    /// (internal) Holds connections the emulated nodes blackhole, for the LB.
    #[command(name = "lb-hold", hide = true)]
    LbHold,
    /// (internal) One traffic generator pod of a scaled-out run
    /// (`traffic.generators`); see docs/generators.md.
    #[command(name = "generator", hide = true)]
    Generator,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version on stdout with success; usage errors get 2.
            let code = if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Pass
            };
            let _ = e.print();
            return code.into();
        }
    };
    init_logging(cli.verbose);
    zdt_core::process::raise_fd_limit();
    // This binary has the hidden generator subcommand; runs may re-exec it.
    zdt_core::process::allow_self_exec();
    let runtime = match runtime_for(&cli.command).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("zdt: cannot start the async runtime: {e}");
            return Exit::Usage.into();
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(exit) => exit.into(),
        Err(report) => {
            eprintln!("{report:?}");
            Exit::Usage.into()
        }
    }
}

/// A thread per core, except where a command asks for its own: `zdt lb`
/// runs its data path on `--threads` threads (one by default, as haproxy's
/// `nbthread 1`; see docs/bench-lb.md for why).
fn runtime_for(command: &Command) -> tokio::runtime::Builder {
    match command {
        Command::Lb(a) if a.threads == 1 => tokio::runtime::Builder::new_current_thread(),
        Command::Lb(a) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(usize::from(a.threads));
            b
        }
        _ => tokio::runtime::Builder::new_multi_thread(),
    }
}

async fn dispatch(command: Command) -> miette::Result<Exit> {
    match command {
        Command::Validate(a) => cmd::validate::run(a).await,
        Command::Run(a) => cmd::run::run(a).await,
        Command::Attack(a) => cmd::attack::run(a).await,
        Command::Lb(a) => cmd::lb::run(a).await,
        Command::Serve(a) => cmd::serve::run(a).await,
        Command::Emulator(a) => cmd::emulator::run(a).await,
        Command::Report(a) => cmd::report::run_report(a).await,
        Command::Compare(a) => cmd::report::run_compare(a).await,
        Command::Clean(a) => cmd::clean::run(a).await,
        Command::TrafficChild => cmd::internal::traffic_child().await,
        Command::LbHold => cmd::internal::lb_hold().await,
        Command::Generator => cmd::internal::generator().await,
    }
}

/// The error for a subcommand whose issue has not landed yet: it says so
/// and exits 2 instead of pretending to work.
pub fn not_built(command: &str, issue: u32) -> miette::Report {
    miette::miette!(
        help = format!("track issue #{issue}"),
        "`zdt {command}` is not built yet"
    )
}

/// Whether to colour output going to a terminal (`is_terminal`): not when
/// `NO_COLOR` is set to anything but the empty string (no-color.org).
pub fn colour(is_terminal: bool) -> bool {
    is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info,zdt=info",
        2 => "info,zdt=debug",
        _ => "debug,zdt=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Escape codes only for a person at a terminal: not in a file, a
        // pipe or CI logs.
        .with_ansi(colour(std::io::IsTerminal::is_terminal(&std::io::stderr())))
        .try_init();
}
