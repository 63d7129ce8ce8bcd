//! From the decoded `v1alpha1` types to the internal [`Scenario`]: fill every
//! default, resolve names to indexes and paths to absolute ones, and reject
//! what cannot run. Each problem names the path of the YAML node it is about;
//! the loader turns that into a file position.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::model::*;
use super::v1alpha1 as v1;
use super::yaml::{suggest, Seg};
use zdt_core::units::Dur;
use zdt_traffic::Method;

/// A validation failure: where (path in the document) and what to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub path: Vec<Seg>,
    /// Point at the key rather than its value (for "remove this" errors).
    pub at_key: bool,
    pub message: String,
    pub help: Option<String>,
}

impl Problem {
    fn new(path: &[Seg], message: impl Into<String>) -> Self {
        Problem {
            path: path.to_vec(),
            at_key: false,
            message: message.into(),
            help: None,
        }
    }

    fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    fn key(mut self) -> Self {
        self.at_key = true;
        self
    }
}

type R<T> = Result<T, Problem>;

macro_rules! path {
    ($($seg:expr),* $(,)?) => { [$(Seg::from($seg)),*] };
}

/// Names the default manifests directory, relative to the scenario file.
pub const DEFAULT_MANIFESTS: &str = "../manifests/nginx";

pub const STOP_SIGNALS: &[&str] = &[
    "SIGTERM", "SIGQUIT", "SIGINT", "SIGHUP", "SIGKILL", "SIGUSR1", "SIGUSR2", "SIGWINCH",
];

const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// Validates one (already merged) document. `dir` is the scenario file's
/// directory, against which relative paths resolve. Every section is
/// checked even when another has a problem, so one pass reports them all;
/// only checks that need a section's result wait for it.
pub fn validate(
    spec: &v1::ScenarioSpec,
    variant: &str,
    variant_description: Option<&str>,
    source: &Path,
    dir: &Path,
) -> Result<Scenario, Vec<Problem>> {
    if spec.api_version != v1::API_VERSION {
        return Err(vec![Problem::new(
            &path!["apiVersion"],
            format!(
                "unsupported apiVersion `{}`: this zdt reads `{}`",
                spec.api_version,
                v1::API_VERSION
            ),
        )
        .help(format!("write `apiVersion: {}`", v1::API_VERSION))]);
    }
    if spec.kind != v1::KIND {
        return Err(vec![Problem::new(
            &path!["kind"],
            format!("unsupported kind `{}`: expected `{}`", spec.kind, v1::KIND),
        )]);
    }
    let mut problems = Vec::new();
    let name_ok = keep(
        &mut problems,
        check_name(&path!["name"], "name", &spec.name),
    );
    let cluster_spec = spec.cluster.clone().unwrap_or_default();
    let cluster = keep(&mut problems, cluster(cluster_spec.clone(), dir));
    let load_balancer = cluster.as_ref().and_then(|c| {
        keep(
            &mut problems,
            load_balancer(spec.load_balancer.clone().unwrap_or_default(), c.provider),
        )
    });
    let workload = cluster.as_ref().and_then(|c| {
        keep(
            &mut problems,
            workload(spec.workload.clone().unwrap_or_default(), c, dir),
        )
    });
    let traffic = keep(&mut problems, traffic(&spec.traffic));
    let expect = keep(
        &mut problems,
        expect(spec.expect.clone().unwrap_or_default()),
    );
    if let Some(c) = &cluster {
        keep(
            &mut problems,
            provider_fields(&cluster_spec, c, &spec.traffic),
        );
    }
    let steps = spec.chaos.as_deref().unwrap_or_default();
    let chaos = match (&cluster, &load_balancer, &workload, &traffic) {
        (Some(c), Some(lb), Some(w), Some(t)) => {
            let chaos = chaos(steps, c, lb, w, t)
                .map_err(|p| problems.extend(p))
                .ok();
            // Node names are checked on their own so every wrong one is
            // reported, not only the first step's problem.
            problems.extend(node_names(steps, c));
            chaos
        }
        _ => None,
    };
    match (
        name_ok,
        cluster,
        load_balancer,
        workload,
        traffic,
        chaos,
        expect,
    ) {
        (
            Some(()),
            Some(cluster),
            Some(load_balancer),
            Some(workload),
            Some(traffic),
            Some(chaos),
            Some(expect),
        ) if problems.is_empty() => Ok(Scenario {
            name: spec.name.clone(),
            variant: variant.to_string(),
            description: variant_description
                .map(str::to_string)
                .or_else(|| spec.description.clone()),
            source: source.to_path_buf(),
            cluster,
            load_balancer,
            workload,
            traffic,
            chaos,
            expect,
            sweep: None,
        }),
        _ => Err(problems),
    }
}

/// The value, or `None` with its problem noted.
fn keep<T>(problems: &mut Vec<Problem>, r: R<T>) -> Option<T> {
    r.map_err(|p| problems.push(p)).ok()
}

/// Settings one provider reads, written for another: zdt would ignore
/// them silently. `provider: auto` keeps `kindConfig` meaningful (for
/// `--provider kind`), an explicit other provider does not.
fn provider_fields(c: &v1::ClusterSpec, cluster: &Cluster, t: &v1::TrafficSpec) -> R<()> {
    let explicit = c.provider.filter(|p| *p != v1::Provider::Auto);
    if t.image.is_some() && explicit.is_some() && cluster.provider != Provider::Existing {
        return Err(Problem::new(
            &path!["traffic", "image"],
            format!(
                "`traffic.image` is read only on an existing cluster; this scenario runs on `{}`, where {}",
                cluster.provider,
                if cluster.provider == Provider::Kind {
                    "zdt builds the generator image and loads it with `kind load`"
                } else {
                    "generator pods need no image"
                }
            ),
        )
        .key()
        .help("remove it, or write `provider: auto` so `zdt run --context NAME` uses it"));
    }
    if c.kind_config.is_some() && explicit.is_some() && cluster.provider != Provider::Kind {
        return Err(Problem::new(
            &path!["cluster", "kindConfig"],
            format!(
                "`kindConfig` is read only by provider `kind`; this scenario runs on `{}`",
                cluster.provider
            ),
        )
        .key()
        .help("remove it, or write `provider: auto` so `zdt run --provider kind` uses it"));
    }
    Ok(())
}

/// The node names the cluster will have, when they are known before it
/// exists: the emulator names them as kind does in a cluster called `zdt`.
pub fn emulator_node_names(workers: u32) -> Vec<String> {
    std::iter::once("zdt-control-plane".to_owned())
        .chain((1..=workers).map(|i| match i {
            1 => "zdt-worker".to_owned(),
            n => format!("zdt-worker{n}"),
        }))
        .collect()
}

/// Chaos steps naming a node the cluster will not have. The emulator's
/// names are known exactly; kind's are `<cluster>-worker`, `…-worker2`, …
/// (the cluster name is a hash the run computes, and checks there), so
/// here only a worker number past the cluster's size is caught. An
/// existing cluster's nodes are unknown until zdt connects.
fn node_names(steps: &[v1::ChaosStepSpec], cluster: &Cluster) -> Vec<Problem> {
    let mut out = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let n = i + 1;
        for (kind, sel) in node_selectors(s) {
            let v1::NodeSelectorSpec::Name(name) = sel else {
                continue;
            };
            if name.is_empty() {
                continue; // reported by the step's own checks
            }
            let p = path!["chaos", i, kind, "node"];
            match cluster.provider {
                Provider::Emulator => {
                    let names = emulator_node_names(cluster.workers);
                    if !names.contains(name) {
                        let mut problem = Problem::new(
                            &p,
                            format!(
                                "chaos step {n}: no node `{name}` in this cluster: its {} workers are {}",
                                cluster.workers,
                                names[1..].join(", ")
                            ),
                        )
                        .help("use one of those names (or `zdt-control-plane`), or `node: {index: 0}` to pick a worker by position");
                        if let Some(near) = suggest(name, names.iter().map(String::as_str)) {
                            problem
                                .message
                                .push_str(&format!(" (did you mean `{near}`?)"));
                        }
                        out.push(problem);
                    }
                }
                Provider::Kind => {
                    if let Some(k) = worker_number(name).filter(|k| *k > cluster.workers) {
                        out.push(
                            Problem::new(
                                &p,
                                format!(
                                    "chaos step {n}: node `{name}` is worker {k}, but the cluster has {} workers",
                                    cluster.workers
                                ),
                            )
                            .help("kind names workers `<cluster>-worker`, `<cluster>-worker2`, …; or use `node: {index: 0}`"),
                        );
                    }
                }
                Provider::Existing => {}
            }
        }
    }
    out
}

/// The node selectors of a step, with the action key they sit under.
fn node_selectors(s: &v1::ChaosStepSpec) -> Vec<(&'static str, &v1::NodeSelectorSpec)> {
    [
        ("drain", s.drain.as_ref().map(|d| &d.node)),
        ("cordon", s.cordon.as_ref().map(|d| &d.node)),
        ("uncordon", s.uncordon.as_ref().map(|d| &d.node)),
        ("taint", s.taint.as_ref().map(|d| &d.node)),
        ("nodeStop", s.node_stop.as_ref().map(|d| &d.node)),
        ("nodePause", s.node_pause.as_ref().map(|d| &d.node)),
        ("nodeKill", s.node_kill.as_ref().map(|d| &d.node)),
        ("nodeResume", s.node_resume.as_ref().map(|d| &d.node)),
        (
            "lbRemoveBackend",
            s.lb_remove_backend.as_ref().map(|d| &d.node),
        ),
        (
            "lbDrainBackend",
            s.lb_drain_backend.as_ref().map(|d| &d.node),
        ),
        (
            "lbRestoreBackend",
            s.lb_restore_backend.as_ref().map(|d| &d.node),
        ),
    ]
    .into_iter()
    .filter_map(|(k, sel)| sel.map(|sel| (k, sel)))
    .collect()
}

/// `…-worker` is worker 1, `…-workerN` worker N (kind's naming).
fn worker_number(name: &str) -> Option<u32> {
    let i = name.rfind("-worker")?;
    let tail = &name[i + "-worker".len()..];
    if tail.is_empty() {
        Some(1)
    } else if tail.bytes().all(|b| b.is_ascii_digit()) {
        tail.parse().ok()
    } else {
        None
    }
}

/// Chaos steps naming a Deployment the workload's manifests do not have
/// (the workload's own Deployment is checked when rendering).
pub(crate) fn chaos_deployments(s: &Scenario, objects: &[serde_json::Value]) -> Vec<Problem> {
    let have: Vec<&str> = objects
        .iter()
        .filter(|o| o["kind"] == "Deployment")
        .filter_map(|o| o["metadata"]["name"].as_str())
        .collect();
    let mut out = Vec::new();
    for (i, step) in s.chaos.iter().enumerate() {
        let name = match &step.action {
            Action::RolloutRestart { deployment }
            | Action::SetImage { deployment, .. }
            | Action::Scale { deployment, .. } => deployment,
            _ => continue,
        };
        if !have.contains(&name.as_str()) {
            let mut p = Problem::new(
                &path!["chaos", i, step.action.kind(), "deployment"],
                format!(
                    "chaos step {}: no Deployment `{name}` in the workload's manifests (they have: {})",
                    i + 1,
                    if have.is_empty() { "none".to_owned() } else { have.join(", ") }
                ),
            );
            if let Some(near) = suggest(name, have.iter().copied()) {
                p.message.push_str(&format!(" (did you mean `{near}`?)"));
            }
            out.push(p.help("name a Deployment of `workload.manifests`, or leave `deployment` out for the workload's own"));
        }
    }
    out
}

/// `cluster.workers`' rule, shared with `zdt emulator up --workers`.
pub fn check_workers(workers: u32) -> Result<(), String> {
    if (1..=20).contains(&workers) {
        Ok(())
    } else {
        Err(format!("`workers` must be 1 … 20, got {workers}"))
    }
}

/// `cluster.kubernetes`' rule, shared with `zdt emulator up --kubernetes`.
pub fn check_kubernetes(version: KubeVersion) -> Result<(), String> {
    if version.major == 1 && (25..=34).contains(&version.minor) {
        Ok(())
    } else {
        Err(format!(
            "Kubernetes {version} is not supported: use 1.25 … 1.34"
        ))
    }
}

/// Names end up in file names, report titles and Kubernetes objects.
pub(crate) fn check_name(path: &[Seg], what: &str, name: &str) -> R<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Problem::new(
            path,
            format!("{what} `{name}` must be 1–63 lowercase letters, digits, `-` or `.`, starting with a letter or digit"),
        ))
    }
}

fn whole_seconds(path: &[Seg], what: &str, d: Dur) -> R<u64> {
    let dd = d.get();
    if dd.subsec_nanos() != 0 {
        return Err(Problem::new(
            path,
            format!("{what} must be whole seconds (Kubernetes counts it in seconds), got {d}"),
        )
        .help(format!("write e.g. `{}s`", dd.as_secs().max(1))));
    }
    Ok(dd.as_secs())
}

fn positive(path: &[Seg], what: &str, d: Dur) -> R<Dur> {
    if d.get().is_zero() {
        Err(Problem::new(path, format!("`{what}` must be > 0")))
    } else {
        Ok(d)
    }
}

fn cluster(c: v1::ClusterSpec, dir: &Path) -> R<Cluster> {
    let provider = match c.provider.unwrap_or(v1::Provider::Auto) {
        v1::Provider::Auto if c.context.is_some() => Provider::Existing,
        v1::Provider::Auto | v1::Provider::Emulator => Provider::Emulator,
        v1::Provider::Kind => Provider::Kind,
        v1::Provider::Existing => Provider::Existing,
    };
    let kubernetes = match &c.kubernetes {
        None => KubeVersion::new(1, 31),
        Some(v) => {
            let p = path!["cluster", "kubernetes"];
            let version: KubeVersion =
                v.0.parse()
                    .map_err(|e: zdt_core::version::KubeVersionError| {
                        Problem::new(&p, e.to_string())
                    })?;
            check_kubernetes(version).map_err(|m| Problem::new(&p, m))?;
            version
        }
    };
    let workers = c.workers.unwrap_or(3);
    check_workers(workers).map_err(|m| Problem::new(&path!["cluster", "workers"], m))?;
    let kind_config = match &c.kind_config {
        None => None,
        Some(file) => {
            let p = dir.join(file);
            if !p.is_file() {
                return Err(Problem::new(
                    &path!["cluster", "kindConfig"],
                    format!("kind config `{file}` not found"),
                )
                .help(format!("looked at {}; the path is relative to the scenario file, e.g. `../clusters/kind-3-workers.yaml`", p.display())));
            }
            Some(p)
        }
    };
    let allow_contexts = c.allow_contexts.clone().unwrap_or_default();
    if provider == Provider::Existing {
        let Some(ctx) = &c.context else {
            return Err(Problem::new(
                &path!["cluster", "provider"],
                "provider `existing` needs a kube `context`",
            )
            .help("add `context: NAME` (see `kubectl config get-contexts`); zdt never guesses which cluster to disrupt"));
        };
        if !allow_contexts.is_empty() && !allow_contexts.contains(ctx) {
            return Err(Problem::new(
                &path!["cluster", "context"],
                format!("context `{ctx}` is not in `allowContexts`"),
            )
            .help("add it to `allowContexts` if zdt may drain nodes there"));
        }
    }
    let e = c.emulator.clone().unwrap_or_default();
    let d = Timings::default();
    let emulator = Timings {
        kube_proxy_sync_delay: e.kube_proxy_sync_delay.unwrap_or(d.kube_proxy_sync_delay),
        pod_start_delay: e.pod_start_delay.unwrap_or(d.pod_start_delay),
        endpoint_slice_batch_period: e.endpoints_delay.unwrap_or(d.endpoint_slice_batch_period),
        node_monitor_grace_period: e
            .node_monitor_grace_period
            .unwrap_or(d.node_monitor_grace_period),
        node_status_update_frequency: positive(
            &path!["cluster", "emulator", "nodeStatusUpdateFrequency"],
            "nodeStatusUpdateFrequency",
            e.node_status_update_frequency
                .unwrap_or(d.node_status_update_frequency),
        )?,
        api_latency: e.api_latency.unwrap_or(d.api_latency),
        ..d
    };
    Ok(Cluster {
        provider,
        kubernetes,
        workers,
        kind_config,
        context: c.context,
        allow_contexts,
        emulator,
        runtime: e.runtime.unwrap_or_default(),
    })
}

fn load_balancer(lb: v1::LoadBalancerSpec, provider: Provider) -> R<LoadBalancer> {
    let mode = lb.mode.unwrap_or(LbMode::Model);
    if mode != LbMode::Model && provider != Provider::Kind {
        let name = match mode {
            LbMode::Metallb => "metallb",
            _ => "cloud-provider-kind",
        };
        return Err(Problem::new(
            &path!["loadBalancer", "mode"],
            format!("loadBalancer mode `{name}` needs `cluster.provider: kind`"),
        )
        .help("use `mode: model` (zdt's cloud LB model) on the emulator"));
    }
    let profile = lb.profile.unwrap_or(match mode {
        LbMode::CloudProviderKind => LbProfile::CloudProviderKind,
        _ => LbProfile::Azure,
    });
    if profile == LbProfile::Custom {
        for (field, set) in [
            ("interval", lb.interval.is_some()),
            ("timeout", lb.timeout.is_some()),
            ("unhealthyThreshold", lb.unhealthy_threshold.is_some()),
            ("healthyThreshold", lb.healthy_threshold.is_some()),
        ] {
            if !set {
                return Err(Problem::new(
                    &path!["loadBalancer", "profile"],
                    format!("profile `custom` needs `{field}`"),
                )
                .help("a custom profile sets interval, timeout, unhealthyThreshold and healthyThreshold"));
            }
        }
    }
    if let Some(i) = lb.interval {
        positive(&path!["loadBalancer", "interval"], "interval", i)?;
    }
    if let Some(t) = lb.timeout {
        positive(&path!["loadBalancer", "timeout"], "timeout", t)?;
        if let Some(i) = lb.interval {
            if t > i {
                return Err(Problem::new(
                    &path!["loadBalancer", "timeout"],
                    format!("probe `timeout` {t} is longer than its `interval` {i}"),
                )
                .help("a probe must time out before the next one is due"));
            }
        }
    }
    for (field, v) in [
        ("unhealthyThreshold", lb.unhealthy_threshold),
        ("healthyThreshold", lb.healthy_threshold),
    ] {
        if v == Some(0) {
            return Err(Problem::new(
                &path!["loadBalancer", field],
                format!("`{field}` must be ≥ 1"),
            ));
        }
    }
    if lb.initial_health == Some(InitialHealth::Ready) && provider != Provider::Emulator {
        return Err(Problem::new(
            &path!["loadBalancer", "initialHealth"],
            format!("`initialHealth: ready` applies to the emulator, not {provider}"),
        )
        .help("on kind zdt's LB container watches its first probes: remove the field, or use `initialHealth: probed`"));
    }
    Ok(LoadBalancer {
        profile,
        probe: zdt_lb::config::ProbeOverrides {
            interval: lb.interval,
            timeout: lb.timeout,
            unhealthy_threshold: lb.unhealthy_threshold,
            healthy_threshold: lb.healthy_threshold,
        },
        fail_open: lb.fail_open.unwrap_or(true),
        selection: lb.selection.unwrap_or(Selection::Random),
        mode,
        initial_health: lb.initial_health,
    })
}

fn dns_label(path: &[Seg], what: &str, name: &str) -> R<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Problem::new(
            path,
            format!("{what} `{name}` is not a valid Kubernetes name (lowercase letters, digits and `-`)"),
        ))
    }
}

fn workload(w: v1::WorkloadSpec, cluster: &Cluster, dir: &Path) -> R<Workload> {
    let rel = w.manifests.as_deref().unwrap_or(DEFAULT_MANIFESTS);
    let manifests: PathBuf = dir.join(rel);
    if !manifests.is_dir() {
        return Err(Problem::new(
            &path!["workload", "manifests"],
            format!("manifests directory `{rel}` not found"),
        )
        .help(format!(
            "looked at {}; `manifests` is relative to the scenario file",
            manifests.display()
        )));
    }
    let source = manifest_source(&manifests, w.helm, dir)?;
    let run = container_runs(w.run.unwrap_or_default(), dir)?;
    let namespace = w.namespace.unwrap_or_else(|| "default".into());
    dns_label(&path!["workload", "namespace"], "namespace", &namespace)?;
    let service = w.service.unwrap_or_else(|| "nginx".into());
    dns_label(&path!["workload", "service"], "service", &service)?;
    let deployment = w.deployment.unwrap_or_else(|| "nginx".into());
    dns_label(&path!["workload", "deployment"], "deployment", &deployment)?;

    let m = w.mitigations.unwrap_or_default();
    let mp = |f: &str| path!["workload", "mitigations", f];
    if let Some(d) = m.pre_stop_sleep {
        whole_seconds(&mp("preStopSleep"), "preStopSleep", d)?;
    }
    let pre_stop_sleep_mode = match m.pre_stop_sleep_mode {
        Some(PreStopSleepMode::Action) if !cluster.kubernetes.at_least(1, 30) => {
            return Err(Problem::new(
                &mp("preStopSleepMode"),
                format!(
                    "preStopSleepMode `action` needs Kubernetes ≥ 1.30 (the cluster is {})",
                    cluster.kubernetes
                ),
            )
            .help("use `preStopSleepMode: exec` (runs `sleep N` in the container)"));
        }
        Some(mode) => mode,
        None if cluster.kubernetes.at_least(1, 30) => PreStopSleepMode::Action,
        None => PreStopSleepMode::Exec,
    };
    let readiness_probe = match m.readiness_probe {
        None => None,
        Some(v1::Toggle::Enabled(false)) => Some(Switch::Off),
        Some(v1::Toggle::Enabled(true)) => Some(Switch::On(ReadinessProbe::default())),
        Some(v1::Toggle::With(p)) => Some(Switch::On(probe(p)?)),
    };
    let pdb = match m.pdb {
        None => None,
        Some(v1::Toggle::Enabled(false)) => Some(Switch::Off),
        Some(v1::Toggle::Enabled(true)) => {
            Some(Switch::On(Pdb::MaxUnavailable(IntOrPercent::Int(1))))
        }
        Some(v1::Toggle::With(p)) => match (p.min_available, p.max_unavailable) {
            (Some(a), None) => Some(Switch::On(Pdb::MinAvailable(a))),
            (None, Some(u)) => Some(Switch::On(Pdb::MaxUnavailable(u))),
            _ => {
                return Err(Problem::new(
                    &mp("pdb"),
                    "`pdb` takes exactly one of `minAvailable` or `maxUnavailable`",
                ))
            }
        },
    };
    if m.max_unavailable == Some(IntOrPercent::Int(0)) && m.max_surge == Some(IntOrPercent::Int(0))
    {
        return Err(Problem::new(
            &mp("maxSurge"),
            "`maxUnavailable` and `maxSurge` cannot both be 0: the rollout could never progress",
        ));
    }
    if let Some(d) = m.termination_grace_period {
        whole_seconds(&mp("terminationGracePeriod"), "terminationGracePeriod", d)?;
    }
    if let Some(d) = m.min_ready {
        whole_seconds(&mp("minReady"), "minReady", d)?;
    }
    let stop_signal = match m.stop_signal {
        None => None,
        Some(s) => {
            let upper = s.to_ascii_uppercase();
            let canonical = if upper.starts_with("SIG") {
                upper
            } else {
                format!("SIG{upper}")
            };
            if !STOP_SIGNALS.contains(&canonical.as_str()) {
                let mut p = Problem::new(&mp("stopSignal"), format!("unknown stop signal `{s}`"))
                    .help(format!("use one of {}", STOP_SIGNALS.join(", ")));
                if let Some(near) = suggest(&canonical, STOP_SIGNALS.iter().copied()) {
                    p.message = format!("unknown stop signal `{s}`, did you mean `{near}`?");
                }
                return Err(p);
            }
            if let Err(why) =
                crate::model::stop_signal_supported(cluster.provider, cluster.kubernetes)
            {
                return Err(Problem::new(&mp("stopSignal"), why.to_string()).help(
                    "run it on the emulator (`provider: emulator`), or use an image whose STOPSIGNAL is the one you want",
                ));
            }
            Some(canonical)
        }
    };
    let spread = m.spread.map(|s| match s {
        v1::SpreadSpec::None => Spread::None,
        v1::SpreadSpec::Preferred => Spread::Preferred,
        v1::SpreadSpec::Required => Spread::Required,
    });

    let mut patches = Vec::new();
    for (i, p) in w.patches.unwrap_or_default().into_iter().enumerate() {
        let pp = path!["workload", "patches", i];
        if p.kind.is_empty() {
            return Err(Problem::new(&pp, "patch `kind` must not be empty"));
        }
        if !p.patch.is_object() {
            return Err(Problem::new(
                &path!["workload", "patches", i, "patch"],
                "`patch` must be a mapping (a JSON merge patch on the manifest)",
            ));
        }
        patches.push(ManifestPatch {
            kind: p.kind,
            name: p.name,
            patch: p.patch,
        });
    }

    Ok(Workload {
        manifests,
        source,
        run,
        namespace,
        service,
        deployment,
        container: w.container,
        mitigations: Mitigations {
            pre_stop_sleep: m.pre_stop_sleep,
            pre_stop_sleep_mode,
            readiness_probe,
            pdb,
            external_traffic_policy: m.external_traffic_policy,
            max_unavailable: m.max_unavailable,
            max_surge: m.max_surge,
            termination_grace_period: m.termination_grace_period,
            stop_signal,
            replicas: m.replicas,
            spread,
            min_ready: m.min_ready,
        },
        patches,
    })
}

/// The file names that make a directory a kustomization.
pub const KUSTOMIZATION_FILES: &[&str] =
    &["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// What the manifests directory holds: a Helm chart (`Chart.yaml`), a
/// kustomization, or plain files. `helm:` settings only fit a chart.
fn manifest_source(manifests: &Path, helm: Option<v1::HelmSpec>, dir: &Path) -> R<ManifestSource> {
    let chart = manifests.join("Chart.yaml").is_file();
    let kustomization = KUSTOMIZATION_FILES
        .iter()
        .any(|f| manifests.join(f).is_file());
    match (chart, helm) {
        (true, helm) => {
            let helm = helm.unwrap_or_default();
            let release = helm.release.unwrap_or_else(|| "zdt".into());
            dns_label(&path!["workload", "helm", "release"], "release", &release)?;
            let mut values = Vec::new();
            for (i, v) in helm.values.unwrap_or_default().iter().enumerate() {
                let p = dir.join(v);
                if !p.is_file() {
                    return Err(Problem::new(
                        &path!["workload", "helm", "values", i],
                        format!("values file `{v}` not found"),
                    )
                    .help(format!(
                        "looked at {}; values files are relative to the scenario file",
                        p.display()
                    )));
                }
                values.push(std::path::absolute(&p).unwrap_or(p));
            }
            Ok(ManifestSource::HelmChart { release, values })
        }
        (false, Some(_)) => Err(Problem::new(
            &path!["workload", "helm"],
            "`helm` settings need `workload.manifests` to be a Helm chart (a directory with Chart.yaml)",
        )
        .help(format!("{} has no Chart.yaml; remove `helm:` or point `manifests` at the chart", manifests.display()))),
        (false, None) if kustomization => Ok(ManifestSource::Kustomization),
        (false, None) => Ok(ManifestSource::Directory),
    }
}

/// `workload.run`: a program given as a path is made absolute against the
/// scenario's directory; a bare name stays (the emulator looks it up
/// next to zdt and on PATH when it starts).
fn container_runs(
    run: std::collections::BTreeMap<String, ContainerRun>,
    dir: &Path,
) -> R<std::collections::BTreeMap<String, ContainerRun>> {
    let mut out = std::collections::BTreeMap::new();
    for (key, mut r) in run {
        if key.is_empty() {
            return Err(Problem::new(
                &path!["workload", "run"],
                "a `workload.run` key must name a container or an image",
            ));
        }
        match (r.runtime, r.command.first()) {
            (RunEngine::Host, None) => {
                return Err(Problem::new(
                    &path!["workload", "run", key.as_str(), "command"],
                    "runtime `host` needs a `command`: the program to run and its first arguments",
                )
                .help("e.g. `command: [./target/release/myapp]` (relative to the scenario file) or a name on PATH"));
            }
            (_, Some(program)) if program.contains('/') && !program.starts_with('/') => {
                let abs = dir.join(program);
                r.command[0] = std::path::absolute(&abs)
                    .unwrap_or(abs)
                    .display()
                    .to_string();
            }
            _ => {}
        }
        out.insert(key, r);
    }
    Ok(out)
}

/// `workload.run` keys that name no container and no image of the
/// rendered manifests' Deployments: a typo would otherwise run the
/// built-in server without a word.
pub(crate) fn run_keys(scenario: &Scenario, objects: &[serde_json::Value]) -> Vec<Problem> {
    let mut known: Vec<String> = Vec::new();
    for o in objects {
        for c in o
            .pointer("/spec/template/spec/containers")
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
        {
            for field in ["name", "image"] {
                if let Some(v) = c.get(field).and_then(serde_json::Value::as_str) {
                    known.push(v.to_owned());
                    if field == "image" {
                        let bare = v.split('@').next().unwrap_or(v);
                        if let Some((name, tag)) = bare.rsplit_once(':') {
                            if !tag.contains('/') {
                                known.push(name.to_owned());
                            }
                        }
                    }
                }
            }
        }
    }
    scenario
        .workload
        .run
        .keys()
        .filter(|k| !known.contains(k))
        .map(|k| {
            let mut p = Problem::new(
                &path!["workload", "run", k.as_str()],
                format!(
                    "`{k}` is neither a container name nor an image in the workload's manifests"
                ),
            )
            .help(format!("use one of: {}", known.join(", ")));
            p.at_key = true;
            p
        })
        .collect()
}

fn probe(p: v1::ProbeSpec) -> R<ReadinessProbe> {
    let d = ReadinessProbe::default();
    let pp = |f: &str| path!["workload", "mitigations", "readinessProbe", f];
    let port = match p.port {
        None => None,
        Some(n) => Some(
            u16::try_from(n)
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    Problem::new(
                        &pp("port"),
                        format!("port {n} is out of range: ports are 1 … 65535"),
                    )
                    .help("the container port the probe dials, e.g. `port: 80`; leave it out for the container's first port")
                })?,
        ),
    };
    let period = p.period.unwrap_or(d.period);
    whole_seconds(&pp("period"), "readinessProbe period", period)?;
    positive(&pp("period"), "period", period)?;
    let timeout = p.timeout.unwrap_or(d.timeout);
    whole_seconds(&pp("timeout"), "readinessProbe timeout", timeout)?;
    positive(&pp("timeout"), "timeout", timeout)?;
    let initial_delay = p.initial_delay.unwrap_or(d.initial_delay);
    whole_seconds(
        &pp("initialDelay"),
        "readinessProbe initialDelay",
        initial_delay,
    )?;
    let failure_threshold = p.failure_threshold.unwrap_or(d.failure_threshold);
    let success_threshold = p.success_threshold.unwrap_or(d.success_threshold);
    for (f, v) in [
        ("failureThreshold", failure_threshold),
        ("successThreshold", success_threshold),
    ] {
        if v == 0 {
            return Err(Problem::new(&pp(f), format!("`{f}` must be ≥ 1")));
        }
    }
    let path = p.path.unwrap_or(d.path);
    if !path.starts_with('/') {
        return Err(Problem::new(
            &pp("path"),
            format!("probe path `{path}` must start with `/`"),
        ));
    }
    Ok(ReadinessProbe {
        path,
        port,
        period,
        timeout,
        failure_threshold,
        success_threshold,
        initial_delay,
    })
}

fn traffic(t: &v1::TrafficSpec) -> R<Traffic> {
    let tp = |f: &str| path!["traffic", f];
    let duration = positive(&tp("duration"), "duration", t.duration)?;
    let timeout = positive(
        &tp("timeout"),
        "timeout",
        t.timeout.unwrap_or(Dur::from_secs(10)),
    )?;
    let name = t.method.as_deref().unwrap_or("GET");
    let method = METHODS
        .contains(&name)
        .then(|| Method::from_bytes(name.as_bytes()).ok())
        .flatten();
    let Some(method) = method else {
        let mut p = Problem::new(&tp("method"), format!("unknown HTTP method `{name}`"))
            .help(format!("use one of {}", METHODS.join(", ")));
        if let Some(s) = suggest(&name.to_ascii_uppercase(), METHODS.iter().copied()) {
            p.message = format!("unknown HTTP method `{name}`, did you mean `{s}`?");
        }
        return Err(p);
    };
    let path = t.path.clone().unwrap_or_else(|| "/".into());
    if !path.starts_with('/') {
        return Err(Problem::new(
            &tp("path"),
            format!("request path `{path}` must start with `/`"),
        ));
    }
    let max_in_flight = match t.max_in_flight {
        Some(0) => {
            return Err(Problem::new(
                &tp("maxInFlight"),
                "`maxInFlight` must be ≥ 1",
            ))
        }
        Some(n) => n,
        None => default_max_in_flight(t.rate, timeout),
    };
    let bucket = t.bucket.unwrap_or(Dur::from_secs(1));
    if bucket < Dur::from_millis(100) || bucket > Dur::from_secs(1) {
        return Err(Problem::new(
            &tp("bucket"),
            format!("`bucket` must be between 100ms and 1s, got {bucket}"),
        ));
    }
    // Every field named: a setting added to `Load` must be decided here.
    let load = Load {
        method,
        path,
        headers: t.headers.clone().unwrap_or_default().into_iter().collect(),
        body: t.body.clone().map(String::into_bytes).unwrap_or_default(),
        rate: t.rate,
        duration,
        timeout,
        keep_alive: t.keep_alive.unwrap_or(false),
        max_in_flight,
        bucket,
        // Not a scenario field: the workload's redirects are followed as
        // vegeta does by default.
        redirects: zdt_traffic::DEFAULT_REDIRECTS,
        replay: t.replay_idempotent.unwrap_or(true),
    };
    Ok(Traffic {
        load,
        warmup: t.warmup.unwrap_or(Dur::ZERO),
        generators: generators(t)?,
    })
}

fn generators(t: &v1::TrafficSpec) -> R<Generators> {
    let tp = |f: &str| path!["traffic", f];
    let count = t.generators.unwrap_or(1);
    if count == 0 || count > Generators::MAX {
        return Err(Problem::new(
            &tp("generators"),
            format!(
                "`generators` must be between 1 and {}, got {count}",
                Generators::MAX
            ),
        )
        .help(
            "1 sends from zdt's own process; N ≥ 2 starts N generator pods, each sending rate/N",
        ));
    }
    if let Some(image) = &t.image {
        if image.trim().is_empty() || image.contains(char::is_whitespace) {
            return Err(Problem::new(
                &tp("image"),
                format!("`image` must be an image reference, got `{image}`"),
            )
            .help("e.g. `registry.example.com/zdt:0.1.0`, an image holding the zdt binary as its entrypoint"));
        }
    }
    let node_selector = t.generator_node_selector.clone().unwrap_or_default();
    if let Some((k, _)) = node_selector.iter().find(|(k, _)| k.is_empty()) {
        return Err(Problem::new(
            &path!["traffic", "generatorNodeSelector", k.as_str()],
            "a node label key must not be empty",
        ));
    }
    Ok(Generators {
        count,
        image: t.image.clone(),
        node_selector,
    })
}

/// Every step is checked, so each bad one is reported. A bad step keeps
/// its place and name (later steps may wait for it) but has no action;
/// checks that would look into it are skipped, its problem is reported.
fn chaos(
    steps: &[v1::ChaosStepSpec],
    cluster: &Cluster,
    lb: &LoadBalancer,
    workload: &Workload,
    traffic: &Traffic,
) -> Result<Vec<ChaosStep>, Vec<Problem>> {
    let mut out: Vec<Option<ChaosStep>> = Vec::with_capacity(steps.len());
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut problems = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let checked = chaos_step(steps, i, &out, &names, cluster, lb, workload, traffic);
        match checked {
            Ok(step) => {
                names.insert(step.name.clone(), i);
                out.push(Some(step));
            }
            Err(p) => {
                if let Some(name) = &s.name {
                    names.entry(name.clone()).or_insert(i);
                }
                out.push(None);
                problems.push(p);
            }
        }
    }
    if problems.is_empty() {
        Ok(out.into_iter().flatten().collect())
    } else {
        Err(problems)
    }
}

#[allow(clippy::too_many_arguments)]
fn chaos_step(
    steps: &[v1::ChaosStepSpec],
    i: usize,
    out: &[Option<ChaosStep>],
    names: &HashMap<String, usize>,
    cluster: &Cluster,
    lb: &LoadBalancer,
    workload: &Workload,
    traffic: &Traffic,
) -> R<ChaosStep> {
    let s = &steps[i];
    let n = i + 1;
    let sp = |f: &str| path!["chaos", i, f];
    let name = match &s.name {
        Some(name) => {
            check_name(&sp("name"), &format!("chaos step {n}: name"), name)?;
            if name == "previous" {
                return Err(Problem::new(
                    &sp("name"),
                    format!("chaos step {n}: `previous` is reserved (it means the step before)"),
                ));
            }
            if let Some(first) = names.get(name) {
                return Err(Problem::new(
                    &sp("name"),
                    format!(
                        "chaos step {n}: name `{name}` is already used by step {}",
                        first + 1
                    ),
                ));
            }
            name.clone()
        }
        None => format!("step-{n}"),
    };

    let start = match (&s.at, &s.after) {
        (Some(_), Some(_)) => {
            return Err(Problem::new(
                &sp("after"),
                format!("chaos step {n} has both `at` and `after`: keep one"),
            )
            .key()
            .help(
                "`at` is an offset from traffic start; `after` waits for another step to finish",
            ))
        }
        (Some(at), None) => {
            if s.delay.is_some() {
                return Err(Problem::new(
                    &sp("delay"),
                    format!("chaos step {n}: `delay` only goes with `after`"),
                )
                .key()
                .help(format!("fold it into `at` (at: {at} + delay)")));
            }
            if *at >= traffic.load.duration {
                return Err(Problem::new(
                    &sp("at"),
                    format!(
                        "chaos step {n} starts at {at}, but traffic lasts only {}",
                        traffic.load.duration
                    ),
                )
                .help("start it earlier or make `traffic.duration` longer"));
            }
            Start::At(*at)
        }
        (None, Some(after)) => {
            let step = if after == "previous" {
                if i == 0 {
                    return Err(Problem::new(
                        &sp("after"),
                        format!("chaos step {n}: `after: previous` but there is no previous step"),
                    )
                    .help("use `at: 0s` for the first step"));
                }
                i - 1
            } else {
                match names.get(after) {
                    Some(&j) => j,
                    None => {
                        let later = steps[i + 1..]
                            .iter()
                            .any(|l| l.name.as_deref() == Some(after.as_str()));
                        let mut p = Problem::new(
                            &sp("after"),
                            if later {
                                format!("chaos step {n}: `after: {after}` names a later step; steps can only wait for earlier ones")
                            } else {
                                format!("chaos step {n}: `after: {after}` names no earlier step")
                            },
                        );
                        if let Some(near) = suggest(after, names.keys().map(String::as_str)) {
                            p.message.push_str(&format!(" (did you mean `{near}`?)"));
                        }
                        return Err(p.help("use `previous` or the `name` of an earlier step"));
                    }
                }
            };
            Start::After {
                step,
                delay: s.delay.unwrap_or(Dur::ZERO),
            }
        }
        (None, None) => {
            if s.delay.is_some() {
                return Err(Problem::new(
                    &sp("delay"),
                    format!("chaos step {n}: `delay` only goes with `after`"),
                )
                .key());
            }
            if i == 0 {
                Start::At(Dur::ZERO)
            } else {
                Start::After {
                    step: i - 1,
                    delay: Dur::ZERO,
                }
            }
        }
    };

    let action = action(s, i, out, names, cluster, lb, workload)?;
    Ok(ChaosStep {
        name,
        start,
        action,
    })
}

fn action(
    s: &v1::ChaosStepSpec,
    i: usize,
    earlier: &[Option<ChaosStep>],
    names: &HashMap<String, usize>,
    cluster: &Cluster,
    lb: &LoadBalancer,
    workload: &Workload,
) -> R<Action> {
    let n = i + 1;
    let set: Vec<&str> = [
        ("drain", s.drain.is_some()),
        ("cordon", s.cordon.is_some()),
        ("uncordon", s.uncordon.is_some()),
        ("taint", s.taint.is_some()),
        ("rolloutRestart", s.rollout_restart.is_some()),
        ("setImage", s.set_image.is_some()),
        ("scale", s.scale.is_some()),
        ("deletePod", s.delete_pod.is_some()),
        ("nodeStop", s.node_stop.is_some()),
        ("nodePause", s.node_pause.is_some()),
        ("nodeKill", s.node_kill.is_some()),
        ("nodeResume", s.node_resume.is_some()),
        ("lbRemoveBackend", s.lb_remove_backend.is_some()),
        ("lbDrainBackend", s.lb_drain_backend.is_some()),
        ("lbRestoreBackend", s.lb_restore_backend.is_some()),
        ("wait", s.wait.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, on)| on.then_some(k))
    .collect();
    let kind = match set.as_slice() {
        [one] => *one,
        [] => {
            return Err(Problem::new(
                &path!["chaos", i],
                format!("chaos step {n} has no action"),
            )
            .help(format!("add one of {}", v1::ACTIONS.join(", "))))
        }
        [a, b, ..] => {
            return Err(Problem::new(
                &path!["chaos", i, *b],
                format!("chaos step {n} has more than one action (`{a}` and `{b}`): split it into one step each"),
            )
            .key())
        }
    };
    let ap = |f: &str| path!["chaos", i, kind, f];
    let node = |sel: &v1::NodeSelectorSpec| -> R<NodeSelector> {
        let p = path!["chaos", i, kind, "node"];
        Ok(match sel {
            v1::NodeSelectorSpec::Name(name) => {
                if name.is_empty() {
                    return Err(Problem::new(&p, format!("chaos step {n}: empty node name")));
                }
                NodeSelector::Name(name.clone())
            }
            v1::NodeSelectorSpec::Index(idx) => {
                if *idx >= cluster.workers as usize {
                    return Err(Problem::new(
                        &path!["chaos", i, kind, "node", "index"],
                        format!(
                            "chaos step {n}: node index {idx} but the cluster has {} workers",
                            cluster.workers
                        ),
                    )
                    .help(format!(
                        "indexes are 0-based: use 0 … {}",
                        cluster.workers.saturating_sub(1)
                    )));
                }
                NodeSelector::Index(*idx)
            }
            v1::NodeSelectorSpec::HostingPod(labels) => NodeSelector::HostingPod(labels.clone()),
            v1::NodeSelectorSpec::SameAs(step) => {
                let sp = path!["chaos", i, kind, "node", "sameAs"];
                let Some(&j) = names.get(step) else {
                    let mut p = Problem::new(
                        &sp,
                        format!("chaos step {n}: `sameAs: {step}` names no earlier step"),
                    );
                    if let Some(near) = suggest(step, names.keys().map(String::as_str)) {
                        p.message.push_str(&format!(" (did you mean `{near}`?)"));
                    }
                    return Err(p);
                };
                // A bad earlier step was reported already.
                let Some(earlier) = &earlier[j] else {
                    return Ok(NodeSelector::SameAs(j));
                };
                if earlier.action.node().is_none() {
                    return Err(Problem::new(
                        &sp,
                        format!(
                            "chaos step {n}: `sameAs: {step}` but step {} (`{}`) does not choose a node",
                            j + 1,
                            earlier.action.kind()
                        ),
                    ));
                }
                NodeSelector::SameAs(j)
            }
        })
    };
    let deployment = |d: &Option<String>, f: &str| -> R<String> {
        let name = d.clone().unwrap_or_else(|| workload.deployment.clone());
        dns_label(&ap(f), "deployment", &name)?;
        Ok(name)
    };
    let needs_lb_model = || -> R<()> {
        if lb.mode != LbMode::Model {
            return Err(Problem::new(
                &path!["chaos", i, kind],
                format!("chaos step {n}: `{kind}` needs `loadBalancer.mode: model` (only zdt's LB has an admin API)"),
            )
            .key());
        }
        Ok(())
    };
    let needs_node_access = || -> R<()> {
        if cluster.provider == Provider::Existing {
            return Err(Problem::new(
                &path!["chaos", i, kind],
                format!("chaos step {n}: `{kind}` needs the emulator or kind: zdt cannot stop nodes of an existing cluster"),
            )
            .key());
        }
        Ok(())
    };

    Ok(match kind {
        "drain" => {
            let d = s.drain.as_ref().expect("checked above");
            Action::Drain {
                node: node(&d.node)?,
                timeout: positive(
                    &ap("timeout"),
                    "timeout",
                    d.timeout.unwrap_or(Dur::from_secs(300)),
                )?,
                grace_period: d.grace_period,
            }
        }
        "cordon" => Action::Cordon {
            node: node(&s.cordon.as_ref().expect("checked").node)?,
        },
        "uncordon" => Action::Uncordon {
            node: node(&s.uncordon.as_ref().expect("checked").node)?,
        },
        "taint" => {
            let t = s.taint.as_ref().expect("checked");
            if t.key.is_empty() {
                return Err(Problem::new(
                    &ap("key"),
                    format!("chaos step {n}: taint `key` must not be empty"),
                ));
            }
            Action::Taint {
                node: node(&t.node)?,
                key: t.key.clone(),
                value: t.value.clone(),
                effect: t.effect.unwrap_or(TaintEffect::NoSchedule),
            }
        }
        "rolloutRestart" => Action::RolloutRestart {
            deployment: deployment(
                &s.rollout_restart.as_ref().expect("checked").deployment,
                "deployment",
            )?,
        },
        "setImage" => {
            let si = s.set_image.as_ref().expect("checked");
            if si.image.trim().is_empty() {
                return Err(Problem::new(
                    &ap("image"),
                    format!("chaos step {n}: `image` must not be empty"),
                ));
            }
            Action::SetImage {
                deployment: deployment(&si.deployment, "deployment")?,
                container: si.container.clone().or_else(|| workload.container.clone()),
                image: si.image.clone(),
            }
        }
        "scale" => {
            let sc = s.scale.as_ref().expect("checked");
            Action::Scale {
                deployment: deployment(&sc.deployment, "deployment")?,
                replicas: sc.replicas,
            }
        }
        "deletePod" => {
            let dp = s.delete_pod.as_ref().expect("checked");
            let target = match (&dp.name, &dp.selector) {
                (Some(name), None) => PodTarget::Name(name.clone()),
                (None, Some(sel)) if !sel.is_empty() => PodTarget::Selector(sel.clone()),
                _ => {
                    return Err(Problem::new(
                        &path!["chaos", i, "deletePod"],
                        format!("chaos step {n}: `deletePod` takes exactly one of `name` or `selector` (labels)"),
                    )
                    .key())
                }
            };
            Action::DeletePod {
                target,
                grace_period: dp.grace_period,
            }
        }
        "nodeStop" => {
            needs_node_access()?;
            Action::NodeStop {
                node: node(&s.node_stop.as_ref().expect("checked").node)?,
            }
        }
        "nodePause" => {
            needs_node_access()?;
            Action::NodePause {
                node: node(&s.node_pause.as_ref().expect("checked").node)?,
            }
        }
        "nodeKill" => {
            needs_node_access()?;
            Action::NodeKill {
                node: node(&s.node_kill.as_ref().expect("checked").node)?,
            }
        }
        "nodeResume" => {
            needs_node_access()?;
            Action::NodeResume {
                node: node(&s.node_resume.as_ref().expect("checked").node)?,
            }
        }
        "lbRemoveBackend" => {
            needs_lb_model()?;
            Action::LbRemoveBackend {
                node: node(&s.lb_remove_backend.as_ref().expect("checked").node)?,
            }
        }
        "lbDrainBackend" => {
            needs_lb_model()?;
            let d = s.lb_drain_backend.as_ref().expect("checked");
            Action::LbDrainBackend {
                node: node(&d.node)?,
                timeout: d.timeout.unwrap_or(Dur::from_secs(30)),
            }
        }
        "lbRestoreBackend" => {
            needs_lb_model()?;
            Action::LbRestoreBackend {
                node: node(&s.lb_restore_backend.as_ref().expect("checked").node)?,
            }
        }
        "wait" => {
            let w = s.wait.as_ref().expect("checked");
            match (w.duration, w.until) {
                (Some(d), None) => {
                    if w.timeout.is_some() {
                        return Err(Problem::new(
                            &ap("timeout"),
                            format!("chaos step {n}: `timeout` only goes with `until`"),
                        )
                        .key());
                    }
                    Action::Wait(Wait::For(positive(&ap("duration"), "duration", d)?))
                }
                (None, Some(condition)) => {
                    if condition == WaitCondition::LbHealthy {
                        needs_lb_model()?;
                    }
                    Action::Wait(Wait::Until {
                        condition,
                        timeout: positive(
                            &ap("timeout"),
                            "timeout",
                            w.timeout.unwrap_or(Dur::from_secs(300)),
                        )?,
                    })
                }
                _ => return Err(Problem::new(
                    &path!["chaos", i, "wait"],
                    format!("chaos step {n}: `wait` takes exactly one of `duration` or `until`"),
                )
                .key()
                .help(
                    "e.g. `wait: {duration: 10s}` or `wait: {until: rolloutComplete, timeout: 2m}`",
                )),
            }
        }
        other => unreachable!("action `{other}` listed but not handled"),
    })
}

fn ratio(path: &[Seg], what: &str, v: f64) -> R<f64> {
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(
            Problem::new(path, format!("{what} must be between 0 and 1, got {v}"))
                .help("a ratio: 0.999 means 99.9 %"),
        )
    }
}

fn expect(e: v1::ExpectSpec) -> R<Expect> {
    let ep = |f: &str| path!["expect", f];
    let success_ratio = match e.success_ratio {
        None => None,
        Some(b) => {
            let p = ep("successRatio");
            if b.min.is_none() && b.max.is_none() {
                return Err(Problem::new(&p, "`successRatio` needs `min` and/or `max`"));
            }
            let min = b
                .min
                .map(|v| ratio(&p, "successRatio min", v))
                .transpose()?;
            let max = b
                .max
                .map(|v| ratio(&p, "successRatio max", v))
                .transpose()?;
            if let (Some(lo), Some(hi)) = (min, max) {
                if lo > hi {
                    return Err(Problem::new(
                        &p,
                        format!("successRatio min {lo} is above its max {hi}"),
                    ));
                }
            }
            Some(Bound { min, max })
        }
    };
    let l = e.latency.unwrap_or_default();
    let lat = |name: &str, b: Option<v1::DurBound>| -> R<Option<Bound<Dur>>> {
        let Some(b) = b else { return Ok(None) };
        let p = path!["expect", "latency", name];
        if b.min.is_none() && b.max.is_none() {
            return Err(Problem::new(
                &p,
                format!("latency `{name}` needs `min` and/or `max`"),
            ));
        }
        if let (Some(lo), Some(hi)) = (b.min, b.max) {
            if lo > hi {
                return Err(Problem::new(
                    &p,
                    format!("latency {name} min {lo} is above its max {hi}"),
                ));
            }
        }
        Ok(Some(Bound {
            min: b.min,
            max: b.max,
        }))
    };
    let latency = LatencyExpect {
        p50: lat("p50", l.p50)?,
        p90: lat("p90", l.p90)?,
        p95: lat("p95", l.p95)?,
        p99: lat("p99", l.p99)?,
        p999: lat("p99.9", l.p999)?,
        max: lat("max", l.max)?,
    };
    if let Some(codes) = &e.status_codes {
        for (i, c) in codes.iter().enumerate() {
            if *c != 0 && !(100..=599).contains(c) {
                return Err(Problem::new(
                    &path!["expect", "statusCodes", i],
                    format!(
                        "status code {c} does not exist: use 100 … 599, or 0 for \"no response\""
                    ),
                ));
            }
        }
    }
    let min_achieved_rate = match e.min_achieved_rate {
        None => 0.999,
        Some(v) if v > 0.0 && v <= 1.0 => v,
        Some(v) => {
            return Err(Problem::new(
                &ep("minAchievedRate"),
                format!("`minAchievedRate` is a fraction of the requested rate in (0, 1], got {v}"),
            ))
        }
    };
    let max_send_lag = match e.max_send_lag {
        None => Expect::DEFAULT_MAX_SEND_LAG,
        Some(d) if d > Dur::ZERO => d,
        Some(_) => return Err(Problem::new(
            &ep("maxSendLag"),
            "`maxSendLag` must be above 0s: no generator sends every request at its exact due time",
        )),
    };
    let t = e.tolerance.unwrap_or_default();
    let dt = Tolerance::default();
    let tolerance = Tolerance {
        success_ratio: match t.success_ratio {
            None => dt.success_ratio,
            Some(v) => ratio(
                &path!["expect", "tolerance", "successRatio"],
                "tolerance successRatio",
                v,
            )?,
        },
        latency: match t.latency {
            None => dt.latency,
            Some(v1::Fraction(v)) if v >= 0.0 && v.is_finite() => v,
            Some(v1::Fraction(v)) => {
                return Err(Problem::new(
                    &path!["expect", "tolerance", "latency"],
                    format!("latency tolerance must be ≥ 0, got {v}"),
                ))
            }
        },
    };
    let mut kinds = e.error_kinds;
    if let Some(k) = kinds.as_mut() {
        k.sort();
        k.dedup();
    }
    Ok(Expect {
        success_ratio,
        latency,
        status_codes: e.status_codes,
        error_kinds: kinds,
        max_error_window: e.max_error_window,
        min_achieved_rate,
        max_send_lag,
        tolerance,
    })
}
