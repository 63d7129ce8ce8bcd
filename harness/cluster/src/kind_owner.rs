//! Which kind clusters are zdt's, and which are in use. kind labels its
//! node containers itself and offers no way to add labels of ours
//! (`kind create cluster` has no label flag, and Docker cannot relabel a
//! container), so each run that uses a cluster records itself in a marker:
//! an empty Docker volume `zdt-owner-<cluster>-<run>` labelled with the
//! owner ([`zdt_core::owner::Owner`]), the cluster's name and that zdt
//! created it. A volume needs no image, no address and no process, and
//! lives on the same engine as the cluster's nodes. A run makes its marker
//! before `kind create cluster`, so a run that dies while kind works still
//! leaves the half-made cluster findable.
//!
//! A `zdt-*` cluster without a `created` marker was not made by zdt (or by
//! a zdt from before the markers): `zdt clean` never deletes it.

use std::collections::HashMap;

use bollard::Docker;

use crate::docker::{self, DockerError, Result};
use zdt_core::owner::Owner;

/// Label naming the kind cluster a marker is about.
pub const CLUSTER_LABEL: &str = "zdt.kind.cluster";
/// Label saying the cluster is zdt's (`true`: zdt created it, or a zdt
/// run is creating or reusing a zdt-named cluster); `false` marks a mere
/// user.
pub const CREATED_LABEL: &str = "zdt.kind.created";

/// One run's marker on one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// The volume's name.
    pub name: String,
    pub cluster: String,
    pub created: bool,
    pub owner: Option<Owner>,
}

fn marker_name(cluster: &str, run_id: &str) -> String {
    format!("zdt-owner-{cluster}-{run_id}")
}

/// Record that this process's run `run_id` uses `cluster` (and created it,
/// when `created`). Returns the marker's name for [`release`].
pub async fn claim(d: &Docker, cluster: &str, created: bool, run_id: &str) -> Result<String> {
    let name = marker_name(cluster, run_id);
    let mut labels = docker::managed_labels(Some(run_id));
    labels.insert(CLUSTER_LABEL.to_owned(), cluster.to_owned());
    labels.insert(CREATED_LABEL.to_owned(), created.to_string());
    d.create_volume(bollard::models::VolumeCreateRequest {
        name: Some(name.clone()),
        labels: Some(labels),
        ..Default::default()
    })
    .await
    .map_err(|source| DockerError::Api {
        op: format!("create owner marker volume {name}"),
        source,
    })?;
    Ok(name)
}

/// Remove one marker; one already gone is not an error.
pub async fn release(d: &Docker, marker: &str) -> Result<()> {
    match d
        .remove_volume(
            marker,
            None::<bollard::query_parameters::RemoveVolumeOptions>,
        )
        .await
    {
        Ok(()) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(source) => Err(DockerError::Api {
            op: format!("remove owner marker volume {marker}"),
            source,
        }),
    }
}

/// Every marker on the engine.
pub async fn list(d: &Docker) -> Result<Vec<Marker>> {
    let filters = HashMap::from([("label".to_owned(), vec![CLUSTER_LABEL.to_owned()])]);
    let volumes = d
        .list_volumes(Some(
            bollard::query_parameters::ListVolumesOptionsBuilder::new()
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(|source| DockerError::Api {
            op: "list zdt's kind owner markers".into(),
            source,
        })?;
    let mut out: Vec<Marker> = volumes
        .volumes
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| {
            Some(Marker {
                cluster: v.labels.get(CLUSTER_LABEL)?.clone(),
                created: v.labels.get(CREATED_LABEL).is_some_and(|c| c == "true"),
                owner: Owner::from_labels(&v.labels),
                name: v.name,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Remove every marker of `cluster` (it was deleted).
pub async fn release_cluster(d: &Docker, cluster: &str) -> Result<()> {
    for m in list(d).await?.into_iter().filter(|m| m.cluster == cluster) {
        release(d, &m.name).await?;
    }
    Ok(())
}
