//! Firing the chaos timeline: every step waits for its start (`at:` on the
//! traffic clock, or `after:` another step), resolves its node, acts, and
//! records what it did. Steps run concurrently, so a long drain does not
//! delay a later `at:` step. What a step changes is recorded for undo.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use kube::Client;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use zdt_cluster::chaos::{self, DrainOptions, NodeChoice};
use zdt_cluster::{Cluster, ClusterError, LbAdmin, LbAdminError};
use zdt_core::events::{EventSink, Source};
use zdt_emulator::NodeFault;
use zdt_scenario::{Action, ChaosStep, NodeSelector, PodTarget, Start, Wait, WaitCondition};

use super::summary::StepResult;

/// Something a step changed that the run puts back before it ends, as a
/// `kubectl drain` user would (uncordon) — so no cluster is left cordoned,
/// tainted or out of its LB pool by a chaos test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Undo {
    Uncordon(String),
    Untaint { node: String, key: String },
    LbRestore(String),
    NodeResume(String),
}

/// Why a step (or the undo of one) did not do what it says.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum StepError {
    /// The step it runs `after:` failed (`step` counts from 1).
    #[error("not run: step {step} failed")]
    AfterFailed { step: usize },
    #[error("no node named `{name}`: the workers are {}", workers.join(", "))]
    NoSuchNode { name: String, workers: Vec<String> },
    /// `sameNodeAs` a step that acted on no node (`step` counts from 1).
    #[error("step {step} chose no node to reuse")]
    NoNodeToReuse { step: usize },
    #[error("this action needs a node")]
    NeedsNode,
    #[error("this provider's load balancer has no admin API (use the zdt LB model)")]
    NoLbAdmin,
    #[error("get deployment {namespace}/{deployment}: {source}")]
    GetDeployment {
        namespace: String,
        deployment: String,
        #[source]
        source: kube::Error,
    },
    #[error("deployment {namespace}/{deployment} has no containers")]
    NoContainers {
        namespace: String,
        deployment: String,
    },
    #[error("list deployments: {0}")]
    ListDeployments(#[source] kube::Error),
    #[error("timed out after {timeout:?} waiting for {condition:?}")]
    WaitTimeout {
        condition: WaitCondition,
        timeout: Duration,
    },
    #[error(transparent)]
    Chaos(#[from] chaos::ChaosError),
    /// A node fault (stop, pause, kill, resume).
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Lb(#[from] LbAdminError),
}

/// A change the run could not put back.
#[derive(Debug, thiserror::Error)]
#[error("undo {undo:?}: {source}")]
pub(crate) struct UndoError {
    pub undo: Undo,
    #[source]
    pub source: StepError,
}

/// What the timeline needs from the run.
pub(crate) struct Context {
    pub client: Client,
    pub cluster: Arc<Cluster>,
    pub lb: Option<LbAdmin>,
    pub events: EventSink,
    pub namespace: String,
    pub workers: Vec<String>,
    pub seed: u64,
    /// Traffic's t0.
    pub t0: Instant,
    /// What to put back before the run ends.
    pub undo: Arc<Mutex<Vec<Undo>>>,
    /// Fired when a step fails: the run cannot be trusted any more, so
    /// its traffic stops now instead of running out the duration.
    pub step_failed: CancellationToken,
}

impl Context {
    fn since_t0(&self) -> f64 {
        Instant::now()
            .checked_duration_since(self.t0)
            .map(|d| d.as_secs_f64())
            .unwrap_or_else(|| -(self.t0 - Instant::now()).as_secs_f64())
    }

    fn push_undo(&self, u: Undo) {
        let mut list = self.undo.lock().expect("undo list lock");
        if !list.contains(&u) {
            list.push(u);
        }
    }

    fn forget_undo(&self, u: &Undo) {
        self.undo.lock().expect("undo list lock").retain(|x| x != u);
    }
}

/// A step's state as other steps see it: `None` until it finished, then
/// the node it acted on (if any) and whether it succeeded.
type Done = Option<(Option<String>, bool)>;

/// Run every step; returns their results in step order. A step whose
/// `after:` step failed does not run (it is recorded as failed).
pub async fn run(
    steps: &[ChaosStep],
    ctx: Arc<Context>,
    cancel: CancellationToken,
) -> Vec<StepResult> {
    let (senders, receivers): (Vec<_>, Vec<_>) =
        steps.iter().map(|_| watch::channel::<Done>(None)).unzip();
    let receivers = Arc::new(receivers);
    let mut tasks = tokio::task::JoinSet::new();
    for ((index, step), done_tx) in steps.iter().cloned().enumerate().zip(senders) {
        let ctx = ctx.clone();
        let receivers = receivers.clone();
        let cancel = cancel.clone();
        tasks.spawn(async move {
            let result = tokio::select! {
                r = run_step(index, &step, &ctx, &receivers) => r,
                _ = cancel.cancelled() => StepResult {
                    index,
                    name: step.name.clone(),
                    action: step.action.kind().into(),
                    node: None,
                    started_s: ctx.since_t0(),
                    finished_s: ctx.since_t0(),
                    ok: false,
                    message: "cancelled before it finished (the run was stopped or traffic ended)".into(),
                },
            };
            let _ = done_tx.send(Some((result.node.clone(), result.ok)));
            // A step stopped by the run's own cancel is not a failure to
            // react to; one that failed on its own is.
            if !result.ok && !cancel.is_cancelled() {
                ctx.step_failed.cancel();
            }
            result
        });
    }
    let mut results: Vec<StepResult> = Vec::with_capacity(steps.len());
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(step) => results.push(step),
            Err(e) => results.push(StepResult {
                index: usize::MAX,
                name: "?".into(),
                action: "?".into(),
                node: None,
                started_s: 0.0,
                finished_s: 0.0,
                ok: false,
                message: format!("chaos step task failed: {e}"),
            }),
        }
    }
    results.sort_by_key(|r| r.index);
    results
}

async fn wait_done(rx: &watch::Receiver<Done>) -> (Option<String>, bool) {
    let mut rx = rx.clone();
    loop {
        if let Some(done) = rx.borrow().clone() {
            return done;
        }
        if rx.changed().await.is_err() {
            return (None, false);
        }
    }
}

async fn run_step(
    index: usize,
    step: &ChaosStep,
    ctx: &Context,
    done: &[watch::Receiver<Done>],
) -> StepResult {
    let fail = |started_s: f64, node: Option<String>, message: String| StepResult {
        index,
        name: step.name.clone(),
        action: step.action.kind().into(),
        node,
        started_s,
        finished_s: ctx.since_t0(),
        ok: false,
        message,
    };
    match &step.start {
        Start::At(at) => tokio::time::sleep_until(ctx.t0 + at.get()).await,
        Start::After { step: prev, delay } => {
            let (_, ok) = wait_done(&done[*prev]).await;
            if !ok {
                let now = ctx.since_t0();
                let e = StepError::AfterFailed { step: prev + 1 };
                return fail(now, None, e.to_string());
            }
            tokio::time::sleep(delay.get()).await;
        }
    }
    let started_s = ctx.since_t0();
    let node = match step.action.node() {
        Some(sel) => match resolve_node(sel, ctx, done).await {
            Ok(n) => Some(n),
            Err(e) => return fail(started_s, None, e.to_string()),
        },
        None => None,
    };
    tracing::info!(step = %step.name, "run phase: chaos step `{}`", step.action.kind());
    ctx.events.emit(
        Source::Chaos,
        "StepStarted",
        format!("step/{}", step.name),
        node.as_deref(),
        format!(
            "step {} `{}` ({}){} started",
            index + 1,
            step.name,
            step.action.kind(),
            node.as_deref()
                .map(|n| format!(" on {n}"))
                .unwrap_or_default()
        ),
    );
    let outcome = act(&step.action, node.as_deref(), ctx).await;
    let finished_s = ctx.since_t0();
    let (ok, message) = match outcome {
        Ok(m) => (true, m),
        Err(e) => (false, e.to_string()),
    };
    ctx.events.emit(
        Source::Chaos,
        if ok { "StepFinished" } else { "StepFailed" },
        format!("step/{}", step.name),
        node.as_deref(),
        format!("step {} `{}`: {message}", index + 1, step.name),
    );
    StepResult {
        index,
        name: step.name.clone(),
        action: step.action.kind().into(),
        node,
        started_s,
        finished_s,
        ok,
        message,
    }
}

async fn resolve_node(
    sel: &NodeSelector,
    ctx: &Context,
    done: &[watch::Receiver<Done>],
) -> Result<String, StepError> {
    let choice = match sel {
        NodeSelector::Name(n) => {
            // kind prefixes node names with the cluster name: accept `worker2`
            // for `zdt-abc-worker2`.
            let found = ctx
                .workers
                .iter()
                .find(|w| *w == n || w.ends_with(&format!("-{n}")))
                .cloned();
            return found.ok_or_else(|| StepError::NoSuchNode {
                name: n.clone(),
                workers: ctx.workers.clone(),
            });
        }
        NodeSelector::Index(i) => NodeChoice::WorkerIndex(*i),
        NodeSelector::HostingPod(labels) => NodeChoice::HostingPod(
            labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
        ),
        NodeSelector::SameAs(j) => {
            let (node, _) = wait_done(&done[*j]).await;
            return node.ok_or(StepError::NoNodeToReuse { step: j + 1 });
        }
    };
    Ok(chaos::choose_node(&ctx.client, &ctx.namespace, &choice, &ctx.workers, ctx.seed).await?)
}

fn need_node(node: Option<&str>) -> Result<&str, StepError> {
    node.ok_or(StepError::NeedsNode)
}

fn need_lb(ctx: &Context) -> Result<&LbAdmin, StepError> {
    ctx.lb.as_ref().ok_or(StepError::NoLbAdmin)
}

/// Do one action; `Ok` carries a short description of what happened.
async fn act(action: &Action, node: Option<&str>, ctx: &Context) -> Result<String, StepError> {
    let c = &ctx.client;
    let ev = &ctx.events;
    let ns = ctx.namespace.as_str();
    match action {
        Action::Drain {
            timeout,
            grace_period,
            ..
        } => {
            let node = need_node(node)?;
            // Registered before acting: a drain that times out leaves the node
            // cordoned, and the run must still put it back.
            ctx.push_undo(Undo::Uncordon(node.to_owned()));
            let opts = DrainOptions {
                timeout: timeout.get(),
                grace_period: grace_period.map(|g| g.get()),
                ..DrainOptions::default()
            };
            let out = chaos::drain(c, ev, node, &opts).await?;
            Ok(format!(
                "drained {node}: evicted {} ({} PDB refusals)",
                if out.evicted.is_empty() {
                    "nothing".to_owned()
                } else {
                    out.evicted.join(", ")
                },
                out.refusals
            ))
        }
        Action::Cordon { .. } => {
            let node = need_node(node)?;
            ctx.push_undo(Undo::Uncordon(node.to_owned()));
            chaos::cordon(c, ev, node).await?;
            Ok(format!("cordoned {node}"))
        }
        Action::Uncordon { .. } => {
            let node = need_node(node)?;
            chaos::uncordon(c, ev, node).await?;
            ctx.forget_undo(&Undo::Uncordon(node.to_owned()));
            Ok(format!("uncordoned {node}"))
        }
        Action::Taint {
            key, value, effect, ..
        } => {
            let node = need_node(node)?;
            let effect = format!("{effect:?}");
            let added = chaos::taint(c, ev, node, key, value.as_deref(), &effect).await?;
            if added {
                ctx.push_undo(Undo::Untaint {
                    node: node.to_owned(),
                    key: key.clone(),
                });
            }
            Ok(format!("tainted {node} with {key}:{effect}"))
        }
        Action::RolloutRestart { deployment } => {
            chaos::rollout_restart(c, ev, ns, deployment).await?;
            Ok(format!("restarted deployment {deployment}"))
        }
        Action::SetImage {
            deployment,
            container,
            image,
        } => {
            let container = match container {
                Some(c) => c.clone(),
                None => first_container(c, ns, deployment).await?,
            };
            chaos::set_image(c, ev, ns, deployment, &container, image).await?;
            Ok(format!(
                "deployment {deployment} container {container} → {image}"
            ))
        }
        Action::Scale {
            deployment,
            replicas,
        } => {
            chaos::scale(c, ev, ns, deployment, *replicas as i32).await?;
            Ok(format!("scaled {deployment} to {replicas}"))
        }
        Action::DeletePod {
            target,
            grace_period,
        } => {
            let (name, selector) = match target {
                PodTarget::Name(n) => (Some(n.as_str()), None),
                PodTarget::Selector(labels) => (
                    None,
                    Some(
                        labels
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(","),
                    ),
                ),
            };
            let n = chaos::delete_pods(
                c,
                ev,
                ns,
                name,
                selector.as_deref(),
                grace_period.map(|g| g.get()),
            )
            .await?;
            Ok(format!("deleted {n} pod(s)"))
        }
        Action::NodeStop { .. } | Action::NodePause { .. } | Action::NodeKill { .. } => {
            let node = need_node(node)?;
            let fault = match action {
                Action::NodeStop { .. } => NodeFault::Stop,
                Action::NodePause { .. } => NodeFault::Pause,
                _ => NodeFault::Kill,
            };
            ctx.push_undo(Undo::NodeResume(node.to_owned()));
            ctx.cluster.node_fault(node, fault).await?;
            Ok(format!("{fault:?} on {node}"))
        }
        Action::NodeResume { .. } => {
            let node = need_node(node)?;
            ctx.cluster.node_fault(node, NodeFault::Resume).await?;
            ctx.forget_undo(&Undo::NodeResume(node.to_owned()));
            Ok(format!("resumed {node}"))
        }
        Action::LbRemoveBackend { .. } => {
            let node = need_node(node)?;
            // No undo: restore only ends a drain, a removed backend is gone
            // (restoring it failed with "no backend named …" on every run),
            // and the LB itself lives only as long as the variant.
            need_lb(ctx)?.remove(node).await?;
            Ok(format!("removed {node} from the LB pool"))
        }
        Action::LbDrainBackend { timeout, .. } => {
            let node = need_node(node)?;
            ctx.push_undo(Undo::LbRestore(node.to_owned()));
            need_lb(ctx)?.drain(node, Some(timeout.get())).await?;
            Ok(format!("draining {node} in the LB (timeout {timeout})"))
        }
        Action::LbRestoreBackend { .. } => {
            let node = need_node(node)?;
            need_lb(ctx)?.restore(node).await?;
            ctx.forget_undo(&Undo::LbRestore(node.to_owned()));
            Ok(format!("restored {node} in the LB pool"))
        }
        Action::Wait(Wait::For(d)) => {
            tokio::time::sleep(d.get()).await;
            Ok(format!("waited {d}"))
        }
        Action::Wait(Wait::Until { condition, timeout }) => {
            wait_until(*condition, timeout.get(), ctx).await?;
            Ok(format!("{condition:?} reached"))
        }
    }
}

async fn first_container(client: &Client, ns: &str, deployment: &str) -> Result<String, StepError> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let d = api
        .get(deployment)
        .await
        .map_err(|source| StepError::GetDeployment {
            namespace: ns.to_owned(),
            deployment: deployment.to_owned(),
            source,
        })?;
    d.spec
        .and_then(|s| s.template.spec)
        .and_then(|s| s.containers.into_iter().next())
        .map(|c| c.name)
        .ok_or_else(|| StepError::NoContainers {
            namespace: ns.to_owned(),
            deployment: deployment.to_owned(),
        })
}

async fn wait_until(
    condition: WaitCondition,
    timeout: Duration,
    ctx: &Context,
) -> Result<(), StepError> {
    match condition {
        WaitCondition::RolloutComplete | WaitCondition::PodsReady => {
            let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
            let deadline = Instant::now() + timeout;
            loop {
                let list = api
                    .list(&Default::default())
                    .await
                    .map_err(StepError::ListDeployments)?;
                let ok = list.items.iter().all(|d| match condition {
                    WaitCondition::RolloutComplete => chaos::rollout_complete(d),
                    _ => {
                        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                        d.status
                            .as_ref()
                            .and_then(|s| s.ready_replicas)
                            .unwrap_or(0)
                            >= want
                    }
                });
                if ok {
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    return Err(StepError::WaitTimeout { condition, timeout });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        WaitCondition::LbHealthy => {
            let lb = need_lb(ctx)?;
            let n = lb.backend_count().await?;
            Ok(lb.wait_healthy(n, timeout).await?)
        }
    }
}

/// Put back what the steps changed, in reverse order. Errors are collected,
/// not fatal: the run reports them and still tears down.
pub(crate) async fn undo_all(
    undo: &Mutex<Vec<Undo>>,
    client: &Client,
    cluster: &Cluster,
    lb: Option<&LbAdmin>,
    events: &EventSink,
) -> Vec<UndoError> {
    let list: Vec<Undo> = std::mem::take(&mut *undo.lock().expect("undo list lock"));
    let mut errors = Vec::new();
    for u in list.into_iter().rev() {
        let r: Result<(), StepError> = match &u {
            Undo::Uncordon(n) => chaos::uncordon(client, events, n).await.map_err(Into::into),
            Undo::Untaint { node, key } => chaos::untaint(client, events, node, key)
                .await
                .map_err(Into::into),
            Undo::LbRestore(n) => match lb {
                Some(lb) => lb.restore(n).await.map_err(Into::into),
                None => Ok(()),
            },
            Undo::NodeResume(n) => cluster
                .node_fault(n, NodeFault::Resume)
                .await
                .map_err(Into::into),
        };
        if let Err(source) = r {
            errors.push(UndoError { undo: u, source });
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_errors_keep_the_words_the_report_shows() {
        let e = StepError::NoSuchNode {
            name: "worker9".into(),
            workers: vec!["zdt-worker".into(), "zdt-worker2".into()],
        };
        assert_eq!(
            e.to_string(),
            "no node named `worker9`: the workers are zdt-worker, zdt-worker2"
        );
        assert_eq!(
            StepError::AfterFailed { step: 2 }.to_string(),
            "not run: step 2 failed"
        );
        let undo = UndoError {
            undo: Undo::LbRestore("w1".into()),
            source: StepError::NoLbAdmin,
        };
        assert_eq!(
            undo.to_string(),
            "undo LbRestore(\"w1\"): this provider's load balancer has no admin API (use the zdt LB model)"
        );
    }
}
