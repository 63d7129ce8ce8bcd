//! `zdt emulator up`: run an emulated cluster until Ctrl-C so a user can
//! point kubectl at it (`kubectl get pods -o wide`, `kubectl drain`).

use std::path::PathBuf;

use miette::{miette, IntoDiagnostic};

use crate::Exit;
use zdt_core::clock::Clock;
use zdt_core::events::EventSink;
use zdt_emulator::{apiserver as api, Emulator, EmulatorConfig, KubeVersion, RuntimeChoice};

/// `zdt emulator up [--workers N] [--kubernetes 1.31] [--manifests DIR] --kubeconfig PATH`
#[derive(Debug, clap::Args)]
pub struct EmulatorArgs {
    /// What to do: `up` (the only action).
    pub action: String,

    /// Worker nodes besides the control plane (1 … 20, as in scenarios).
    #[arg(long, default_value_t = 3)]
    pub workers: u32,

    /// Kubernetes version whose behaviour to model (1.25 … 1.34, as in
    /// scenarios).
    #[arg(long, default_value = "1.31")]
    pub kubernetes: KubeVersion,

    /// Apply every *.yaml / *.yml / *.json in this directory at start.
    #[arg(long)]
    pub manifests: Option<PathBuf>,

    /// Where to write the kubeconfig for kubectl.
    #[arg(long)]
    pub kubeconfig: PathBuf,

    /// How pods run: auto (nginx when installed), nginx, builtin.
    #[arg(long, value_enum, default_value = "auto")]
    pub runtime: RuntimeArg,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum RuntimeArg {
    Auto,
    Nginx,
    Builtin,
}

impl From<RuntimeArg> for RuntimeChoice {
    fn from(r: RuntimeArg) -> Self {
        match r {
            RuntimeArg::Auto => RuntimeChoice::Auto,
            RuntimeArg::Nginx => RuntimeChoice::Nginx,
            RuntimeArg::Builtin => RuntimeChoice::Builtin,
        }
    }
}

pub async fn run(args: EmulatorArgs) -> miette::Result<Exit> {
    if args.action != "up" {
        return Err(miette!(
            help = "run `zdt emulator up --kubeconfig PATH`",
            "unknown emulator action `{}`",
            args.action
        ));
    }
    // The same rules as a scenario's `cluster:`, so what runs here runs
    // in a scenario and the other way round.
    zdt_scenario::check_workers(args.workers)
        .map_err(|m| miette!(help = "e.g. --workers 3", "--workers: {m}"))?;
    zdt_scenario::check_kubernetes(args.kubernetes)
        .map_err(|m| miette!(help = "e.g. --kubernetes 1.31", "--kubernetes: {m}"))?;
    let manifests = match &args.manifests {
        Some(dir) => zdt_scenario::workload::read_dir(dir).map_err(|e| miette!("{e}"))?,
        None => Vec::new(),
    };
    let config = EmulatorConfig {
        workers: args.workers as usize,
        kubernetes: args.kubernetes,
        runtime: args.runtime.into(),
        ..EmulatorConfig::default()
    };
    let timings = config.timings;
    let emulator = Emulator::start(config, EventSink::discard(Clock::start()))
        .await
        .into_diagnostic()?;
    emulator
        .write_kubeconfig(&args.kubeconfig)
        .into_diagnostic()?;
    for obj in manifests {
        let what = format!(
            "{}/{}",
            obj["kind"].as_str().unwrap_or("?"),
            obj["metadata"]["name"].as_str().unwrap_or("?")
        );
        api::apply_object(emulator.store(), &timings, obj)
            .map_err(|e| miette!("cannot apply {what}: {}", e.message))?;
        eprintln!("applied {what}");
    }
    let pods_as = match (args.runtime, zdt_emulator::node::runtime::find_nginx()) {
        (RuntimeArg::Builtin, _) => "the built-in server (zdt serve semantics)".to_owned(),
        (_, Some(nginx)) => format!(
            "real nginx processes ({}) for nginx images, the built-in server otherwise",
            nginx.display()
        ),
        (_, None) => "the built-in server (nginx is not installed)".to_owned(),
    };
    eprintln!("pods run as {pods_as}");
    match emulator.net().enter_command() {
        Some(enter) => eprintln!(
            "the cluster has a network of its own: pod IPs (10.244.N.x), node IPs \
             (172.18.0.x) and the LB's address are reachable inside it, e.g.\n  \
             {enter} curl -s http://POD_IP/"
        ),
        None => eprintln!(
            "the cluster's data path is on the host's network stack (127.0.0.1 ports; \
             pod and node IPs in the API are labels, not addresses)"
        ),
    }
    let node_nets: Vec<(String, String)> = emulator
        .nodes()
        .iter()
        .filter_map(|n| {
            let enter = emulator.node_network(&n.name)?.enter_command()?;
            Some((n.name.clone(), enter))
        })
        .collect();
    if !node_nets.is_empty() {
        eprintln!(
            "every node has a network namespace of its own (ZDT_NETWORK=nodes): its InternalIP \
             on `eth0`, a veth `zn<node IP in hex>` to the cluster's, kube-proxy's rules \
             (`nft list table ip zdt`) and its pods' veths `zp<pod IP in hex>`; enter one with"
        );
        for (name, enter) in &node_nets {
            eprintln!("  {name}: {enter} nft list table ip zdt");
        }
        eprintln!("every pod has a network namespace of its own behind its node's");
    } else if emulator.net().is_routed() {
        eprintln!(
            "every pod has a network namespace of its own, reached from the cluster's over \
             a veth `zp<pod IP in hex>`; its server listens on 0.0.0.0:containerPort there \
             (ZDT_NETWORK=private: one namespace shared by the pods)"
        );
    }
    eprintln!(
        "emulated cluster (Kubernetes {}, {} workers) at {}\nkubectl --kubeconfig {} get nodes\nCtrl-C or SIGTERM stops it.",
        args.kubernetes,
        args.workers,
        emulator.url(),
        args.kubeconfig.display()
    );
    crate::signals::stop_requested().await;
    let state = emulator.shutdown().await;
    for n in state.nodes {
        eprintln!(
            "{}: ready={} unschedulable={} taints={}",
            n.name,
            n.ready,
            n.unschedulable,
            n.taints.len()
        );
    }
    Ok(Exit::Pass)
}
