//! What `zdt clean` removes: what zdt made — and only that — whose owner is
//! gone. zdt's things are kind clusters with a `created` owner marker
//! ([`crate::kind_owner`]), docker containers, networks and images labelled
//! `zdt.managed=true`, and `$TMPDIR/zdt-<pid>-*` directories. Each carries
//! its owner (run, host, pid, the pid's start time); what belongs to a live
//! process is listed and kept, what cannot be checked (another host, no
//! owner recorded) is kept too, and `--force` takes both. A `zdt-*` kind
//! cluster without zdt's marker was made by hand and is never touched.

use std::path::PathBuf;

use crate::docker;
use crate::kind::{KindCli, KindError, CLUSTER_PREFIX};
use crate::kind_owner::{self, Marker};
use zdt_core::owner::{Liveness, Owner};

/// One thing zdt made, whose it is, and what `zdt clean` does with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found<T> {
    pub item: T,
    pub owner: Option<Owner>,
    pub liveness: Liveness,
    /// Decided by [`plan`]: the owner is gone, or `--force`.
    pub remove: bool,
}

impl<T> Found<T> {
    fn new(item: T, owner: Option<Owner>, force: bool) -> Self {
        let liveness = match &owner {
            Some(o) => o.liveness(),
            None => Liveness::Unknown("no owner recorded (made by an older zdt)".into()),
        };
        Found {
            remove: force || matches!(liveness, Liveness::Gone(_)),
            item,
            owner,
            liveness,
        }
    }
}

/// What `zdt clean` found.
#[derive(Debug, Default)]
pub struct CleanPlan {
    /// kind clusters zdt created; `owner` is a live user's, if any.
    pub clusters: Vec<Found<String>>,
    /// `zdt-*` kind clusters zdt did not create: never touched.
    pub foreign_clusters: Vec<String>,
    /// Owner markers of clusters; removed with their cluster, or when the
    /// cluster is gone.
    pub markers: Vec<Found<String>>,
    pub containers: Vec<Found<docker::Managed>>,
    pub networks: Vec<Found<docker::Managed>>,
    /// The LB images zdt built (rebuilt when a run needs them again).
    pub images: Vec<Found<docker::Managed>>,
    pub temp_dirs: Vec<Found<PathBuf>>,
    /// Parts that could not be looked at (no kind, no Docker), with why.
    pub skipped: Vec<String>,
}

impl CleanPlan {
    /// How many things would be removed.
    pub fn removals(&self) -> usize {
        fn n<T>(v: &[Found<T>]) -> usize {
            v.iter().filter(|f| f.remove).count()
        }
        n(&self.clusters)
            + n(&self.markers)
            + n(&self.containers)
            + n(&self.networks)
            + n(&self.images)
            + n(&self.temp_dirs)
    }
}

/// Look for zdt's clusters, containers, networks, images and temp dirs and
/// decide each: removed when its owner is gone (or `force`), kept otherwise.
pub async fn plan(kind: &KindCli, force: bool) -> CleanPlan {
    let mut plan = CleanPlan::default();
    let kind_clusters = match kind.get_clusters().await {
        Ok(names) => Some(
            names
                .into_iter()
                .filter(|n| n.starts_with(CLUSTER_PREFIX))
                .collect::<Vec<_>>(),
        ),
        Err(KindError::NotInstalled { .. }) => {
            plan.skipped
                .push("kind clusters: `kind` is not on PATH".into());
            None
        }
        Err(e) => {
            plan.skipped.push(format!("kind clusters: {e}"));
            None
        }
    };
    let mut markers = None;
    match docker::connect().await {
        Ok(d) => {
            match kind_owner::list(&d).await {
                Ok(m) => markers = Some(m),
                Err(e) => plan.skipped.push(format!("kind owner markers: {e}")),
            }
            match docker::list_managed(&d).await {
                Ok((containers, networks)) => {
                    plan.containers = found(containers, force);
                    plan.networks = found(networks, force);
                    match docker::list_managed_images(&d).await {
                        Ok(images) => plan.images = images_plan(images, &plan.containers, force),
                        Err(e) => plan.skipped.push(format!("docker images: {e}")),
                    }
                }
                Err(e) => plan.skipped.push(format!("docker: {e}")),
            }
        }
        Err(e) => plan.skipped.push(format!(
            "docker containers, networks, images and kind owner markers: {e}"
        )),
    }
    match (kind_clusters, markers) {
        (Some(clusters), Some(markers)) => clusters_plan(&mut plan, clusters, markers, force),
        // Without the markers nothing says which clusters are zdt's.
        (Some(clusters), None) => plan.foreign_clusters = clusters,
        (None, _) => {}
    }
    plan.temp_dirs = zdt_core::process::zdt_temp_dirs(&std::env::temp_dir())
        .into_iter()
        .map(|d| {
            let mut f = Found::new(d.path, d.owner, force);
            // Dirs from before owner files: the pid in the name decided.
            f.liveness = d.liveness;
            f.remove = force || matches!(f.liveness, Liveness::Gone(_));
            f
        })
        .collect();
    plan
}

fn found(items: Vec<docker::Managed>, force: bool) -> Vec<Found<docker::Managed>> {
    items
        .into_iter()
        .map(|m| {
            let owner = m.owner.clone();
            Found::new(m, owner, force)
        })
        .collect()
}

/// Images are shared: one LB image per zdt binary, built by one run and
/// used by every later one. An image a kept container runs is kept too.
fn images_plan(
    images: Vec<docker::Managed>,
    containers: &[Found<docker::Managed>],
    force: bool,
) -> Vec<Found<docker::Managed>> {
    let mut out = found(images, force);
    for image in out.iter_mut().filter(|i| i.remove && !force) {
        if let Some(user) = containers
            .iter()
            .find(|c| !c.remove && c.item.image.as_deref() == Some(image.item.id.as_str()))
        {
            image.remove = false;
            image.liveness = Liveness::Alive;
            image.owner = user.owner.clone();
        }
    }
    out
}

/// A cluster is zdt's when a marker says zdt created it; it is in use
/// while any of its markers' owners runs.
fn clusters_plan(plan: &mut CleanPlan, clusters: Vec<String>, markers: Vec<Marker>, force: bool) {
    for name in clusters {
        let mine: Vec<&Marker> = markers.iter().filter(|m| m.cluster == name).collect();
        if !mine.iter().any(|m| m.created) {
            plan.foreign_clusters.push(name);
            continue;
        }
        let claims: Vec<Found<()>> = mine
            .iter()
            .map(|m| Found::new((), m.owner.clone(), force))
            .collect();
        // The liveliest claim decides: any live user keeps the cluster.
        let decisive = claims
            .iter()
            .find(|c| c.liveness == Liveness::Alive)
            .or_else(|| claims.iter().find(|c| !c.remove))
            .or(claims.first())
            .cloned()
            .expect("a created marker exists");
        let remove = force || decisive.remove;
        for m in &mine {
            // A cluster's markers go with it; a kept cluster keeps them all
            // but the dead users' claims (never its maker's).
            let own = Found::new(m.name.clone(), m.owner.clone(), force);
            let drop_claim = remove || (own.remove && !m.created);
            plan.markers.push(Found {
                remove: drop_claim,
                ..own
            });
        }
        plan.clusters.push(Found {
            item: name,
            owner: decisive.owner,
            liveness: decisive.liveness,
            remove,
        });
    }
    // Markers of clusters kind no longer lists (deleted by hand, or a
    // crashed run's half-made cluster): nothing uses them once their
    // owner is gone.
    let listed: Vec<&str> = plan
        .clusters
        .iter()
        .map(|c| c.item.as_str())
        .chain(plan.foreign_clusters.iter().map(String::as_str))
        .collect();
    for m in markers
        .iter()
        .filter(|m| !listed.contains(&m.cluster.as_str()))
    {
        plan.markers
            .push(Found::new(m.name.clone(), m.owner.clone(), force));
    }
}

/// Remove what the plan marks for removal; returns the failures (the rest
/// is done).
pub async fn execute(kind: &KindCli, plan: &CleanPlan) -> Vec<String> {
    let mut failures = Vec::new();
    for c in plan.clusters.iter().filter(|c| c.remove) {
        if let Err(e) = kind.delete_cluster(&c.item).await {
            failures.push(e.to_string());
        }
    }
    let docker_work = [
        plan.containers.iter().any(|f| f.remove),
        plan.networks.iter().any(|f| f.remove),
        plan.images.iter().any(|f| f.remove),
        plan.markers.iter().any(|f| f.remove),
    ];
    if docker_work.contains(&true) {
        match docker::connect().await {
            Ok(d) => {
                for c in plan.containers.iter().filter(|f| f.remove) {
                    if let Err(e) = docker::remove_container(&d, &c.item.id).await {
                        failures.push(e.to_string());
                    }
                }
                // Networks after containers: a network with endpoints cannot go.
                for n in plan.networks.iter().filter(|f| f.remove) {
                    if let Err(e) = docker::remove_network(&d, &n.item.id).await {
                        failures.push(e.to_string());
                    }
                }
                for i in plan.images.iter().filter(|f| f.remove) {
                    if let Err(e) = docker::remove_image(&d, &i.item.id).await {
                        failures.push(e.to_string());
                    }
                }
                for m in plan.markers.iter().filter(|f| f.remove) {
                    if let Err(e) = kind_owner::release(&d, &m.item).await {
                        failures.push(e.to_string());
                    }
                }
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    let doomed: Vec<&PathBuf> = plan
        .temp_dirs
        .iter()
        .filter(|d| d.remove)
        .map(|d| &d.item)
        .collect();
    // A crashed run's pods may outlive it (an nginx master whose parent died
    // before PR_SET_PDEATHSIG reached it, or a run killed mid-spawn): kill
    // the masters recorded in its runtime dirs before removing the dirs.
    for leftover in zdt_emulator::node::runtime::leftovers() {
        if doomed.contains(&&leftover.dir) {
            if let Err(e) = zdt_emulator::node::runtime::remove_leftover(&leftover) {
                failures.push(format!("remove {}: {e}", leftover.dir.display()));
            }
        }
    }
    for dir in doomed.into_iter().filter(|d| d.exists()) {
        if let Err(e) = std::fs::remove_dir_all(dir) {
            failures.push(format!("remove {}: {e}", dir.display()));
        }
    }
    failures
}

fn short(id: &str) -> &str {
    let id = id.trim_start_matches("sha256:");
    &id[..id.len().min(12)]
}

/// Why a thing is kept, for the listing.
fn kept_because<T>(f: &Found<T>) -> String {
    match (&f.liveness, &f.owner) {
        (Liveness::Alive, Some(o)) => format!("in use by {}", o.describe()),
        (Liveness::Alive, None) => "in use by a running zdt".into(),
        (Liveness::Unknown(why), _) => format!("owner unknown: {why}"),
        (Liveness::Gone(why), _) => format!("owner gone: {why}"),
    }
}

/// The lines `zdt clean` prints, one per object: what goes, what stays
/// and why.
pub fn describe(plan: &CleanPlan, dry_run: bool) -> Vec<String> {
    let verb = if dry_run { "would remove" } else { "removing" };
    let mut lines = Vec::new();
    let mut line = |remove: bool, what: String, why: String| {
        if remove {
            lines.push(format!("{verb} {what} ({why})"));
        } else {
            lines.push(format!("keeping {what} ({why})"));
        }
    };
    for c in &plan.clusters {
        line(c.remove, format!("kind cluster {}", c.item), reason(c));
    }
    for c in &plan.foreign_clusters {
        line(
            false,
            format!("kind cluster {c}"),
            "not created by zdt: no owner marker; `kind delete cluster --name` removes it".into(),
        );
    }
    let docker = [
        ("container", &plan.containers),
        ("network", &plan.networks),
        ("image", &plan.images),
    ];
    for (what, found) in docker {
        for f in found {
            let id = short(&f.item.id);
            line(
                f.remove,
                format!("{what} {} ({id})", f.item.name),
                reason(f),
            );
        }
    }
    for m in &plan.markers {
        line(m.remove, format!("owner marker {}", m.item), reason(m));
    }
    for d in &plan.temp_dirs {
        line(
            d.remove,
            format!("temp dir {}", d.item.display()),
            reason(d),
        );
    }
    for s in &plan.skipped {
        lines.push(format!("skipped {s}"));
    }
    if plan.removals() == 0 {
        lines.push("nothing of zdt's to remove".into());
    }
    lines
}

/// Why a thing goes or stays.
fn reason<T>(f: &Found<T>) -> String {
    match &f.liveness {
        _ if !f.remove => kept_because(f),
        Liveness::Gone(why) => format!("owner gone: {why}"),
        _ => format!("--force; {}", kept_because(f)),
    }
}

/// One line for `zdt run` to print when a dead run left something behind
/// (temp dirs, labelled containers or networks whose owner is gone), or
/// `None`; what live runs use is not a leftover. Docker gets two seconds
/// to answer: a warning must not delay a run.
pub async fn leftovers_warning() -> Option<String> {
    let dirs = zdt_core::process::stale_temp_dirs(&std::env::temp_dir()).len();
    let docker = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        let d = docker::connect().await.ok()?;
        docker::list_managed(&d).await.ok()
    })
    .await
    .ok()
    .flatten()
    .map_or(0, |(c, n)| {
        c.iter()
            .chain(&n)
            .filter(|m| {
                m.owner
                    .as_ref()
                    .is_some_and(|o| matches!(o.liveness(), Liveness::Gone(_)))
            })
            .count()
    });
    if dirs + docker == 0 {
        return None;
    }
    Some(format!(
        "zdt: warning: found {dirs} temp dir(s) and {docker} zdt-labelled container(s)/network(s) whose zdt process is gone — leftovers of a crashed run; `zdt clean --dry-run` lists them, `zdt clean` removes them"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Owner {
        Owner::current("live")
    }

    fn dead() -> Owner {
        Owner {
            pid: 99_999_999,
            ..Owner::current("dead")
        }
    }

    fn marker(cluster: &str, created: bool, owner: Owner) -> Marker {
        Marker {
            name: format!("zdt-owner-{cluster}-{}", owner.run),
            cluster: cluster.into(),
            created,
            owner: Some(owner),
        }
    }

    #[test]
    fn a_hand_made_zdt_cluster_is_never_touched_even_with_force() {
        let mut plan = CleanPlan::default();
        clusters_plan(&mut plan, vec!["zdt-mine".into()], vec![], true);
        assert!(plan.clusters.is_empty());
        assert_eq!(plan.foreign_clusters, vec!["zdt-mine".to_owned()]);
        assert!(describe(&plan, false)
            .iter()
            .any(|l| l.starts_with("keeping kind cluster zdt-mine (not created by zdt")));
    }

    #[test]
    fn a_cluster_goes_only_when_every_user_is_gone() {
        let mut plan = CleanPlan::default();
        let markers = vec![
            marker("zdt-a", true, dead()),
            marker("zdt-b", true, dead()),
            // zdt-b was made by a dead run and is reused by a live one.
            marker("zdt-b", false, me()),
        ];
        clusters_plan(
            &mut plan,
            vec!["zdt-a".into(), "zdt-b".into()],
            markers,
            false,
        );
        let decided: Vec<(&str, bool)> = plan
            .clusters
            .iter()
            .map(|c| (c.item.as_str(), c.remove))
            .collect();
        assert_eq!(decided, vec![("zdt-a", true), ("zdt-b", false)]);
        // zdt-b keeps its maker's marker (it says the cluster is zdt's).
        let b: Vec<bool> = plan
            .markers
            .iter()
            .filter(|m| m.item.contains("zdt-b"))
            .map(|m| m.remove)
            .collect();
        assert_eq!(b, vec![false, false]);
        let text = describe(&plan, false).join("\n");
        assert!(
            text.contains("keeping kind cluster zdt-b (in use by pid"),
            "{text}"
        );
        assert!(
            text.contains("removing kind cluster zdt-a (owner gone: pid 99999999 exited)"),
            "{text}"
        );
    }

    #[test]
    fn force_takes_live_clusters_and_markers_of_vanished_clusters_go() {
        let mut plan = CleanPlan::default();
        let markers = vec![
            marker("zdt-live", true, me()),
            marker("zdt-gone", true, dead()),
        ];
        clusters_plan(&mut plan, vec!["zdt-live".into()], markers, true);
        assert!(plan.clusters[0].remove);
        assert!(plan.markers.iter().all(|m| m.remove));
        let text = describe(&plan, false).join("\n");
        assert!(
            text.contains("removing kind cluster zdt-live (--force; in use by pid"),
            "{text}"
        );
    }

    #[test]
    fn an_image_a_kept_container_runs_is_kept() {
        let managed = |id: &str, owner: Option<Owner>, image: Option<&str>| docker::Managed {
            id: id.into(),
            name: id.into(),
            run: None,
            owner,
            image: image.map(str::to_owned),
        };
        let containers = found(vec![managed("c1", Some(me()), Some("sha256:img"))], false);
        let images = images_plan(
            vec![
                managed("sha256:img", Some(dead()), None),
                managed("sha256:old", Some(dead()), None),
                managed("sha256:legacy", None, None),
            ],
            &containers,
            false,
        );
        let decided: Vec<bool> = images.iter().map(|i| i.remove).collect();
        assert_eq!(decided, vec![false, true, false]);
    }
}
