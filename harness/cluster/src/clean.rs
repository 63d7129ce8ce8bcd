//! What `zdt clean` removes: what zdt left behind — and only that: kind clusters
//! named `zdt-*`, docker containers, networks and images labelled
//! `zdt.managed=true`, and `$TMPDIR/zdt-<pid>-*` directories whose owning
//! process is gone.

use std::path::PathBuf;

use crate::docker;
use crate::kind::{KindCli, KindError, CLUSTER_PREFIX};

/// What `zdt clean` found.
#[derive(Debug, Default)]
pub struct CleanPlan {
    pub clusters: Vec<String>,
    pub containers: Vec<docker::Managed>,
    pub networks: Vec<docker::Managed>,
    /// The LB images zdt built (rebuilt when a run needs them again).
    pub images: Vec<docker::Managed>,
    pub temp_dirs: Vec<PathBuf>,
    /// Parts that could not be looked at (no kind, no Docker), with why.
    pub skipped: Vec<String>,
}

/// Look for zdt's clusters, containers, networks and stale temp dirs.
pub async fn plan(kind: &KindCli) -> CleanPlan {
    let mut plan = CleanPlan::default();
    match kind.get_clusters().await {
        Ok(names) => {
            plan.clusters = names
                .into_iter()
                .filter(|n| n.starts_with(CLUSTER_PREFIX))
                .collect()
        }
        Err(KindError::NotInstalled { .. }) => plan
            .skipped
            .push("kind clusters: `kind` is not on PATH".into()),
        Err(e) => plan.skipped.push(format!("kind clusters: {e}")),
    }
    match docker::connect().await {
        Ok(d) => match docker::list_managed(&d).await {
            Ok((containers, networks)) => {
                plan.containers = containers;
                plan.networks = networks;
                match docker::list_managed_images(&d).await {
                    Ok(images) => plan.images = images,
                    Err(e) => plan.skipped.push(format!("docker images: {e}")),
                }
            }
            Err(e) => plan.skipped.push(format!("docker: {e}")),
        },
        Err(e) => plan
            .skipped
            .push(format!("docker containers and networks: {e}")),
    }
    plan.temp_dirs = zdt_core::process::stale_temp_dirs(&std::env::temp_dir());
    plan
}

/// Remove everything in the plan; returns the failures (the rest is done).
pub async fn execute(kind: &KindCli, plan: &CleanPlan) -> Vec<String> {
    let mut failures = Vec::new();
    for name in &plan.clusters {
        if let Err(e) = kind.delete_cluster(name).await {
            failures.push(e.to_string());
        }
    }
    if !plan.containers.is_empty() || !plan.networks.is_empty() || !plan.images.is_empty() {
        match docker::connect().await {
            Ok(d) => {
                for c in &plan.containers {
                    if let Err(e) = docker::remove_container(&d, &c.id).await {
                        failures.push(e.to_string());
                    }
                }
                // Networks after containers: a network with endpoints cannot go.
                for n in &plan.networks {
                    if let Err(e) = docker::remove_network(&d, &n.id).await {
                        failures.push(e.to_string());
                    }
                }
                for i in &plan.images {
                    if let Err(e) = docker::remove_image(&d, &i.id).await {
                        failures.push(e.to_string());
                    }
                }
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    // A crashed run's pods may outlive it (an nginx master whose parent died
    // before PR_SET_PDEATHSIG reached it, or a run killed mid-spawn): kill
    // the masters recorded in its runtime dirs before removing the dirs.
    for leftover in zdt_emulator::node::runtime::leftovers() {
        if plan.temp_dirs.contains(&leftover.dir) {
            if let Err(e) = zdt_emulator::node::runtime::remove_leftover(&leftover) {
                failures.push(format!("remove {}: {e}", leftover.dir.display()));
            }
        }
    }
    for dir in plan.temp_dirs.iter().filter(|d| d.exists()) {
        if let Err(e) = std::fs::remove_dir_all(dir) {
            failures.push(format!("remove {}: {e}", dir.display()));
        }
    }
    failures
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// The lines `zdt clean` prints, one per object.
pub fn describe(plan: &CleanPlan, dry_run: bool) -> Vec<String> {
    let verb = if dry_run { "would remove" } else { "removing" };
    let mut lines = Vec::new();
    for c in &plan.clusters {
        lines.push(format!("{verb} kind cluster {c}"));
    }
    for c in &plan.containers {
        let run = c
            .run
            .as_deref()
            .map(|r| format!(", run {r}"))
            .unwrap_or_default();
        lines.push(format!(
            "{verb} container {} ({}{run})",
            c.name,
            short(&c.id)
        ));
    }
    for n in &plan.networks {
        lines.push(format!("{verb} network {} ({})", n.name, short(&n.id)));
    }
    for i in &plan.images {
        lines.push(format!(
            "{verb} image {} ({})",
            i.name,
            short(i.id.trim_start_matches("sha256:"))
        ));
    }
    for d in &plan.temp_dirs {
        lines.push(format!("{verb} temp dir {}", d.display()));
    }
    for s in &plan.skipped {
        lines.push(format!("skipped {s}"));
    }
    if plan.clusters.is_empty()
        && plan.containers.is_empty()
        && plan.networks.is_empty()
        && plan.images.is_empty()
        && plan.temp_dirs.is_empty()
    {
        lines.push("nothing of zdt's to remove".into());
    }
    lines
}

/// One line for `zdt run` to print when a crashed run left something
/// behind (stale temp dirs, labelled containers or networks), or `None`.
/// Docker gets two seconds to answer: a warning must not delay a run.
pub async fn leftovers_warning() -> Option<String> {
    let dirs = zdt_core::process::stale_temp_dirs(&std::env::temp_dir()).len();
    let docker = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        let d = docker::connect().await.ok()?;
        docker::list_managed(&d).await.ok()
    })
    .await
    .ok()
    .flatten()
    .map_or(0, |(c, n)| c.len() + n.len());
    if dirs + docker == 0 {
        return None;
    }
    Some(format!(
        "zdt: warning: found {dirs} temp dir(s) of dead zdt runs and {docker} zdt-labelled container(s)/network(s) — leftovers of a crashed run? `zdt clean --dry-run` lists them, `zdt clean` removes them"
    ))
}
