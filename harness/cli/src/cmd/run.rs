use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::Exit;
use zdt::report;
use zdt_core::units::{Dur, Rate};
use zdt_scenario::{LbMode, Overrides, Provider};

use zdt::run::executor::{self, RunObserver, RunOptions};
use zdt::run::summary::{RunSummary, VariantSummary, Verdict};
use zdt::run_planned;

/// `zdt run FILE…`
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Scenario files to run.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Run on this provider instead of the scenario's (emulator, kind, existing).
    #[arg(long)]
    pub provider: Option<String>,
    /// Run only this variant (repeatable).
    #[arg(long = "variant")]
    pub variants: Vec<String>,
    /// Output directory (default reports/<scenario>/<timestamp>/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Override the traffic rate (`5000/s`).
    #[arg(long)]
    pub rate: Option<Rate>,
    /// Send from N generator pods in the cluster, each rate/N (1: from
    /// zdt's own process); overrides `traffic.generators`.
    #[arg(long, value_name = "N")]
    pub generators: Option<u32>,
    /// Override the traffic duration (`60s`).
    #[arg(long)]
    pub duration: Option<Dur>,
    /// Seed for node choice and LB choices (reproducible runs).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Multiply every variant's rate (e.g. 0.1 on a small machine).
    #[arg(long, env = "ZDT_SCALE")]
    pub scale: Option<f64>,
    /// The kube context to run in: an existing cluster (`--provider existing`
    /// is implied unless the scenario runs on kind) may be disrupted only in
    /// the context named here and listed in the scenario's allowContexts.
    #[arg(long)]
    pub context: Option<String>,
    /// Leave the kind cluster running after the run; the next run of the
    /// same shape reuses it (`zdt clean` deletes it).
    #[arg(long)]
    pub keep_cluster: bool,
    /// What gives the Service its load balancer on kind, instead of the
    /// scenario's `loadBalancer.mode`: model (zdt's LB in a container),
    /// metallb or cloud-provider-kind.
    #[arg(long, value_name = "MODE")]
    pub lb_mode: Option<String>,
    /// Compare with this baseline; a regression beyond the scenario's
    /// `expect.tolerance` fails the run (exit 1).
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Write (or overwrite) the baseline from this run instead of checking it.
    #[arg(long, requires = "baseline")]
    pub update_baseline: bool,
    /// Start a run estimated at an hour or more without asking.
    #[arg(long)]
    pub yes: bool,
    /// Run this many variants at once, each on its own cluster. Their
    /// traffic shares this machine's cores: scale the rate down to match
    /// (`--scale`), or the generator falls behind and the run is INVALID.
    #[arg(long, short = 'j', default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Run every variant once per value of a field a variant can patch,
    /// e.g. `--sweep workload.mitigations.preStopSleep=0s,5s,10s,15s`; the
    /// report plots success ratio and p99 against the value and names the
    /// smallest value that meets `expect:`. Replaces the file's `sweep:`.
    #[arg(long, value_name = "FIELD=VALUES", value_parser = parse_sweep)]
    pub sweep: Option<(String, Vec<String>)>,
}

/// `FIELD=V1,V2,…` → the field and its values.
fn parse_sweep(arg: &str) -> Result<(String, Vec<String>), String> {
    let (field, values) = arg.split_once('=').ok_or_else(|| {
        format!(
            "`{arg}` is not FIELD=VALUES; write e.g. workload.mitigations.preStopSleep=0s,5s,10s"
        )
    })?;
    let values: Vec<String> = values
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect();
    if field.trim().is_empty() || values.is_empty() {
        return Err(format!(
            "`{arg}` needs a field and at least one value, e.g. workload.mitigations.preStopSleep=0s,5s,10s"
        ));
    }
    Ok((field.trim().to_owned(), values))
}

pub async fn run(args: RunArgs) -> miette::Result<Exit> {
    if let Some(w) = zdt_cluster::clean::leftovers_warning().await {
        eprintln!("{w}");
    }
    let provider = match &args.provider {
        Some(p) => Some(
            p.parse::<Provider>()
                .map_err(|e| miette::miette!("--provider: {e}"))?,
        ),
        None => None,
    };
    let lb_mode = match args.lb_mode.as_deref() {
        None => None,
        Some(m) => Some(m.parse::<LbMode>().map_err(|e| miette::miette!("{e}"))?),
    };
    if let Some(f) = args.scale {
        if !(f.is_finite() && f > 0.0) {
            return Err(miette::miette!("--scale must be a number > 0, e.g. 0.1"));
        }
    }
    let live = Arc::new(crate::progress::Live::new(std::io::stderr().is_terminal()));
    let opts = RunOptions {
        variants: args.variants.clone(),
        overrides: Overrides {
            rate: args.rate,
            generators: args.generators,
            duration: args.duration,
            provider,
            context: args.context.clone(),
        },
        seed: args.seed,
        scale: args.scale,
        out: None,
        observer: Some(Arc::new(Terminal {
            colour: crate::colour(std::io::stdout().is_terminal()),
            live: live.clone(),
        })),
        keep_cluster: args.keep_cluster,
        lb_mode,
        jobs: usize::from(args.jobs),
        sweep: args.sweep.clone(),
    };
    // A baseline that cannot be read would fail the run only after all of
    // it: read it before anything starts.
    let baseline = match (&args.baseline, args.update_baseline) {
        (None, _) => None,
        (Some(path), true) => Some(BaselineStep::Write(path.clone())),
        (Some(path), false) => {
            let loaded = report::baseline::load(path).map_err(|e| {
                miette::miette!(
                    help = "create it with `zdt run FILE --baseline PATH --update-baseline`, or fix the path",
                    "--baseline: {e}"
                )
            })?;
            Some(BaselineStep::Check(path.clone(), loaded))
        }
    };
    // Validate every file before running any, so a typo in the third file
    // does not surface after two long runs.
    let mut plans = Vec::new();
    for file in &args.files {
        let plan = executor::plan(file, &opts).map_err(|e| match e {
            executor::RunError::Scenario(e) => miette::Report::new(e),
            other => miette::miette!("{other}"),
        })?;
        for v in &plan.1 {
            if v.cluster.provider == Provider::Existing {
                // Before anything touches the cluster: a scenario file alone
                // must never disrupt whatever the kubeconfig points at.
                zdt_cluster::existing::preflight(
                    None,
                    v.cluster.context.as_deref(),
                    args.context.as_deref(),
                    &v.cluster.allow_contexts,
                    &v.chaos,
                )
                .map_err(miette::Report::new)?;
            }
        }
        plans.push((file.clone(), plan));
    }
    if let Some(refusal) = host_network_refusal(&plans) {
        eprintln!("zdt: {refusal}");
        return Ok(Exit::Usage);
    }
    let all: Vec<&zdt_scenario::Scenario> = plans.iter().flat_map(|(_, (_, v))| v.iter()).collect();
    let estimate = super::long_run::estimate(all.iter().copied());
    if let Err(m) = super::long_run::confirm(all.len(), estimate, args.yes) {
        return Err(miette::miette!("{m}"));
    }
    let busiest = plans
        .iter()
        .flat_map(|(_, (_, variants))| variants.iter())
        .filter(|v| v.cluster.provider != Provider::Emulator && !v.traffic.load.keep_alive)
        .map(|v| v.traffic.load.rate.get())
        .fold(0.0, f64::max);
    if let Some(w) = zdt::run::host::conntrack_warning(busiest) {
        eprintln!("{w}");
    }

    let cancel = CancellationToken::new();
    let signals = tokio::spawn(stop_on_signals(cancel.clone()));

    let mut worst = Exit::Pass;
    for (file, (name, variants)) in plans {
        let out = match &args.out {
            Some(o) if args.files.len() == 1 => o.clone(),
            Some(o) => o.join(&name),
            None => executor::default_out(&name),
        };
        let outcome = run_planned(&file, &name, variants, &out, &opts, cancel.clone())
            .await
            .map_err(|e| miette::miette!("{e}"))?;
        if let Some(e) = &outcome.render_error {
            eprintln!("zdt: the run's data is saved but the reports could not be rendered: {e}");
        }
        // The variants side by side, as `zdt report` prints them.
        println!("zdt: {name}");
        print!(
            "{}",
            report::print_verdicts(
                &outcome.summary,
                &outcome.out,
                crate::colour(std::io::stdout().is_terminal())
            )
        );
        let summary = &outcome.summary;
        worst = worst_exit(worst, exit_for(summary.worst(), summary.complete));
        if let Some(step) = &baseline {
            worst = worst_exit(worst, baseline_step(step, summary, &outcome.variants)?);
        }
    }
    signals.abort();
    Ok(worst)
}

/// Shows each variant's progress as it goes (see [`crate::progress`]) and
/// prints its verdict as it ends.
struct Terminal {
    colour: bool,
    live: Arc<crate::progress::Live>,
}

impl RunObserver for Terminal {
    fn phase(&self, variant: &str, phase: zdt::run::Phase) {
        self.live.phase(variant, phase);
    }

    fn event(&self, variant: &str, event: &zdt_core::events::Event) {
        self.live.event(variant, event);
    }

    fn traffic_started(
        &self,
        variant: &str,
        progress: zdt_traffic::Progress,
        load: &zdt_traffic::Load,
    ) -> Box<dyn Send> {
        Box::new(self.live.traffic(variant, progress, load))
    }

    fn variant_finished(&self, variant: &str, summary: &VariantSummary) {
        self.live.finished(variant);
        self.live
            .suspend(|| println!("{}", report::verdict_line(summary, 16, self.colour)));
    }
}

/// What `--baseline` asks of a run: write the baseline from it, or check it
/// against one read before the run started.
enum BaselineStep {
    Write(PathBuf),
    Check(PathBuf, report::baseline::Baseline),
}

/// Check the run against a baseline (or write it). Only complete runs may
/// become baselines: a partial one would make every later run look better.
fn baseline_step(
    step: &BaselineStep,
    summary: &RunSummary,
    variants: &[zdt_scenario::Scenario],
) -> miette::Result<Exit> {
    let (path, baseline) = match step {
        BaselineStep::Write(path) => {
            if !summary.complete {
                return Err(miette::miette!(
                    "not writing {}: the run was interrupted, and a partial run is no baseline",
                    path.display()
                ));
            }
            report::baseline::write(summary, path).map_err(|e| miette::miette!("{e}"))?;
            println!("zdt: baseline written to {}", path.display());
            return Ok(Exit::Pass);
        }
        BaselineStep::Check(path, baseline) => (path, baseline),
    };
    let tolerance = variants
        .first()
        .map(|v| report::baseline::Tolerance::from(&v.expect.tolerance))
        .unwrap_or_default();
    let regressions = report::baseline::check(summary, baseline, &tolerance);
    let not_run = report::baseline::not_run(summary, baseline);
    if !not_run.is_empty() {
        println!(
            "zdt: not run here, so not compared: {} (in the baseline)",
            not_run.join(", ")
        );
    }
    if regressions.is_empty() {
        println!("zdt: no regression against {}", path.display());
        Ok(Exit::Pass)
    } else {
        for r in &regressions {
            println!("zdt: REGRESSION {r}");
        }
        Ok(Exit::Fail)
    }
}

/// The first Ctrl-C or SIGTERM stops the run gracefully: traffic stops,
/// chaos is undone, what was created is torn down and the partial report is
/// written. A second one within the teardown forces exit after a short
/// grace, for a teardown that hangs.
async fn stop_on_signals(cancel: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    eprintln!("zdt: interrupted — stopping traffic, undoing chaos, tearing down, writing the partial report (again to force exit)");
    cancel.cancel();
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    eprintln!("zdt: forced exit in 2s");
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    std::process::exit(130);
}

fn exit_for(v: Verdict, complete: bool) -> Exit {
    if !complete {
        return Exit::Invalid;
    }
    match v {
        Verdict::Pass => Exit::Pass,
        Verdict::Fail => Exit::Fail,
        Verdict::Invalid | Verdict::Incomplete => Exit::Invalid,
    }
}

fn worst_exit(a: Exit, b: Exit) -> Exit {
    let rank = |e: Exit| match e {
        Exit::Pass => 0,
        Exit::Fail => 1,
        Exit::Usage => 2,
        Exit::Invalid => 3,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

/// Emulated clusters get networks of their own; where this machine cannot
/// make one, their traffic would meet the host's limits instead, and a run
/// past them measures the machine. Refused up front, with the fix.
fn host_network_refusal(
    plans: &[(PathBuf, (String, Vec<zdt_scenario::Scenario>))],
) -> Option<String> {
    let emulated: Vec<&zdt_scenario::Scenario> = plans
        .iter()
        .flat_map(|(_, (_, variants))| variants.iter())
        .filter(|v| v.cluster.provider == Provider::Emulator)
        .collect();
    let why = zdt_core::netns::private_unavailable()?;
    let demand = emulated
        .iter()
        .map(|v| {
            let load = &v.traffic.load;
            let rate = load.rate.get();
            zdt::run::host::Demand {
                new_connections_per_s: if load.keep_alive { 0.0 } else { rate },
                // One node's share held for a whole timeout: what a
                // blackholed node (a fault, or Local without endpoints)
                // costs; more shows as INVALID host faults during the run.
                open_at_once: ((rate * load.timeout.get().as_secs_f64()
                    / f64::from(v.cluster.workers.max(1)))
                .ceil() as u64)
                    .min(load.max_in_flight as u64),
            }
        })
        .reduce(|a, b| zdt::run::host::Demand {
            new_connections_per_s: a.new_connections_per_s.max(b.new_connections_per_s),
            open_at_once: a.open_at_once.max(b.open_at_once),
        })?;
    zdt::run::host::refusal(demand, zdt::run::host::Limits::read(), why)
}
