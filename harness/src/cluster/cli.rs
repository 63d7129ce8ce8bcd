//! `zdt clean`: remove what zdt left behind — and only that: kind clusters
//! named `zdt-*`, docker containers, networks and images labelled
//! `zdt.managed=true`, and `$TMPDIR/zdt-<pid>-*` directories whose owning
//! process is gone.

use std::path::{Path, PathBuf};

use super::docker;
use super::kind::{KindCli, KindError, CLUSTER_PREFIX};
use crate::cli::Exit;

/// `zdt clean`
#[derive(Debug, clap::Args)]
pub struct CleanArgs {
    /// Only list what would be removed.
    #[arg(long)]
    pub dry_run: bool,
}

/// A zdt temp dir, `$TMPDIR/zdt-<pid>-<purpose>-XXXXXX`: the pid lets
/// `zdt clean` tell a live run's files from a crashed run's.
pub fn temp_dir(purpose: &str) -> std::io::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("zdt-{}-{purpose}-", std::process::id()))
        .tempdir()
}

/// The pid in a `zdt-<pid>-…` name.
fn owning_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix("zdt-")?;
    let (pid, _) = rest.split_once('-')?;
    pid.parse().ok().filter(|p| *p > 0)
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks existence/permission.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

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

/// zdt temp dirs under `dir` whose owning process is dead.
pub fn stale_temp_dirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| owning_pid(&e.file_name().to_string_lossy()).is_some_and(|pid| !pid_alive(pid)))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
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
    plan.temp_dirs = stale_temp_dirs(&std::env::temp_dir());
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
    for leftover in crate::emulator::runtime::leftovers() {
        if plan.temp_dirs.contains(&leftover.dir) {
            if let Err(e) = crate::emulator::runtime::remove_leftover(&leftover) {
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
    let dirs = stale_temp_dirs(&std::env::temp_dir()).len();
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

pub async fn run(args: CleanArgs) -> miette::Result<Exit> {
    let kind = KindCli::default();
    let plan = plan(&kind).await;
    for line in describe(&plan, args.dry_run) {
        println!("{line}");
    }
    if args.dry_run {
        return Ok(Exit::Pass);
    }
    let failures = execute(&kind, &plan).await;
    if failures.is_empty() {
        Ok(Exit::Pass)
    } else {
        Err(miette::miette!(
            help = "rerun `zdt clean`; `docker ps -a --filter label=zdt.managed=true` and `kind get clusters` show what is left",
            "zdt clean could not remove everything:\n{}",
            failures.join("\n")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owning_pid_is_read_from_zdt_dirs_only() {
        assert_eq!(owning_pid("zdt-1234-kind-abc"), Some(1234));
        assert_eq!(owning_pid("zdt-x-kind"), None);
        assert_eq!(owning_pid("other-1234-x"), None);
        assert_eq!(owning_pid("zdt-0-x"), None);
    }

    #[test]
    fn only_dead_owners_temp_dirs_are_stale() {
        let root = tempfile::tempdir().unwrap();
        let live = root
            .path()
            .join(format!("zdt-{}-kind-live", std::process::id()));
        // pid_max is at most 2^22 on Linux: this pid cannot exist.
        let dead = root.path().join("zdt-99999999-kind-dead");
        let foreign = root.path().join("not-zdt-99999999-x");
        for d in [&live, &dead, &foreign] {
            std::fs::create_dir(d).unwrap();
        }
        assert_eq!(stale_temp_dirs(root.path()), vec![dead]);
    }
}
