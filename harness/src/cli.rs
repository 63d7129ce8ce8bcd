//! The `zdt` command line: glue over the library. `main` parses flags,
//! dispatches to one module's `cli::run`, and maps the outcome to the one
//! exit-code policy below. Everything testable lives in the modules.

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
    Validate(crate::scenario::cli::ValidateArgs),
    /// Run scenario files: every variant, with a verdict each.
    Run(crate::run::cli::RunArgs),
    /// Constant-rate HTTP load against one URL (vegeta-style report).
    Attack(crate::traffic::cli::AttackArgs),
    /// Run the cloud load-balancer model standalone.
    Lb(crate::lb::cli::LbArgs),
    /// A small HTTP backend with nginx's stop-signal semantics.
    Serve(crate::serve::ServeArgs),
    /// Run an emulated cluster for kubectl until Ctrl-C.
    Emulator(crate::emulator::cli::EmulatorArgs),
    /// Re-render the reports of a finished run.
    Report(crate::report::cli::ReportArgs),
    /// Compare two runs of the same scenario.
    Compare(crate::report::cli::CompareArgs),
    /// Remove clusters, containers and temp files zdt created.
    Clean(crate::cluster::cli::CleanArgs),
    /// Internal: the traffic generator of `zdt run`, in its own process
    /// (protocol on stdin/stdout, see traffic::child).
    #[command(name = "traffic-child", hide = true)]
    TrafficChild,
    /// (internal) Holds connections the emulated nodes blackhole, for the LB.
    #[command(name = "lb-hold", hide = true)]
    LbHold,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
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
    raise_fd_limit();
    // This binary has the hidden generator subcommand; runs may re-exec it.
    crate::process::allow_self_exec();
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
        Command::Validate(a) => crate::scenario::cli::run(a).await,
        Command::Run(a) => crate::run::cli::run(a).await,
        Command::Attack(a) => crate::traffic::cli::run(a).await,
        Command::Lb(a) => crate::lb::cli::run(a).await,
        Command::Serve(a) => crate::serve::run_cli(a).await,
        Command::Emulator(a) => crate::emulator::cli::run(a).await,
        Command::Report(a) => crate::report::cli::run_report(a).await,
        Command::Compare(a) => crate::report::cli::run_compare(a).await,
        Command::Clean(a) => crate::cluster::cli::run(a).await,
        Command::TrafficChild => crate::traffic::child::run_child().await,
        Command::LbHold => crate::lb::hold::run().await,
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
        .try_init();
}

/// A 5000/s run with a 10 s timeout keeps ~10k client sockets and as many
/// LB-side sockets open at once; the default soft limit (often 1024) would
/// turn that into spurious errors, so raise it as far as allowed.
pub fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        // Root may raise the hard limit too; try a generous value first.
        let want = libc::rlimit {
            rlim_cur: 262_144,
            rlim_max: 262_144.max(lim.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &want) != 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
