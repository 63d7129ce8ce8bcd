//! Deployment changes and the waits that go with them.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::Client;
use serde_json::json;
use tokio::time::Instant;

use super::ChaosError;
use zdt_core::events::{EventSink, Source};

fn deployments(client: &Client, ns: &str) -> Api<Deployment> {
    Api::namespaced(client.clone(), ns)
}

/// `kubectl rollout restart`: bump the template's restartedAt annotation.
pub async fn rollout_restart(
    client: &Client,
    events: &EventSink,
    ns: &str,
    name: &str,
) -> Result<(), ChaosError> {
    deployments(client, ns)
        .restart(name)
        .await
        .map_err(|e| ChaosError::api(format!("rollout restart deployment {ns}/{name}"), e))?;
    events.emit(
        Source::Chaos,
        "RolloutRestart",
        format!("deployment/{name}"),
        None,
        format!("rollout restart of deployment {ns}/{name}"),
    );
    Ok(())
}

/// `kubectl set image deployment/NAME CONTAINER=IMAGE`.
pub async fn set_image(
    client: &Client,
    events: &EventSink,
    ns: &str,
    name: &str,
    container: &str,
    image: &str,
) -> Result<(), ChaosError> {
    // Strategic merge: containers merge by name, so the others are kept.
    let patch = json!({ "spec": { "template": { "spec": {
        "containers": [ { "name": container, "image": image } ]
    } } } });
    deployments(client, ns)
        .patch(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .map_err(|e| ChaosError::api(format!("set image on deployment {ns}/{name}"), e))?;
    events.emit(
        Source::Chaos,
        "SetImage",
        format!("deployment/{name}"),
        None,
        format!("deployment {ns}/{name} container {container} image → {image}"),
    );
    Ok(())
}

/// `kubectl scale deployment/NAME --replicas=N`.
pub async fn scale(
    client: &Client,
    events: &EventSink,
    ns: &str,
    name: &str,
    replicas: i32,
) -> Result<(), ChaosError> {
    deployments(client, ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": replicas } })),
        )
        .await
        .map_err(|e| ChaosError::api(format!("scale deployment {ns}/{name}"), e))?;
    events.emit(
        Source::Chaos,
        "Scaled",
        format!("deployment/{name}"),
        None,
        format!("deployment {ns}/{name} scaled to {replicas}"),
    );
    Ok(())
}

/// Delete pods by name or label selector, with an optional grace period.
/// Returns how many were deleted.
pub async fn delete_pods(
    client: &Client,
    events: &EventSink,
    ns: &str,
    name: Option<&str>,
    selector: Option<&str>,
    grace: Option<Duration>,
) -> Result<usize, ChaosError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let names: Vec<String> = match (name, selector) {
        (Some(n), _) => vec![n.to_owned()],
        (None, Some(sel)) => api
            .list(&ListParams::default().labels(sel))
            .await
            .map_err(|e| ChaosError::api(format!("list pods {sel}"), e))?
            .items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect(),
        (None, None) => {
            return Err(ChaosError::NotFound(
                "deletePod needs a name or a selector".into(),
            ))
        }
    };
    let dp = DeleteParams {
        grace_period_seconds: grace.map(|g| g.as_secs() as u32),
        ..DeleteParams::default()
    };
    for n in &names {
        let pod = api
            .delete(n, &dp)
            .await
            .map_err(|e| ChaosError::api(format!("delete pod {ns}/{n}"), e))?;
        let node = pod.left().and_then(|p| p.spec.and_then(|s| s.node_name));
        events.emit(
            Source::Chaos,
            "PodDeleted",
            format!("pod/{n}"),
            node.as_deref(),
            format!("pod {ns}/{n} deleted"),
        );
    }
    Ok(names.len())
}

/// Whether a rollout is complete, as `kubectl rollout status` decides it:
/// the controller has seen the latest spec, and every replica is updated
/// and available, with no old replicas left.
pub fn rollout_complete(d: &Deployment) -> bool {
    let (Some(spec), Some(status)) = (&d.spec, &d.status) else {
        return false;
    };
    let generation = d.metadata.generation.unwrap_or(0);
    let want = spec.replicas.unwrap_or(1);
    status.observed_generation.unwrap_or(0) >= generation
        && status.updated_replicas.unwrap_or(0) >= want
        && status.replicas.unwrap_or(0) <= status.updated_replicas.unwrap_or(0)
        && status.available_replicas.unwrap_or(0) >= status.updated_replicas.unwrap_or(0)
}

/// Wait until the deployment's rollout is complete, polling the API.
pub async fn wait_rollout(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> Result<(), ChaosError> {
    let api = deployments(client, ns);
    let deadline = Instant::now() + timeout;
    loop {
        let d = api
            .get_opt(name)
            .await
            .map_err(|e| ChaosError::api(format!("get deployment {ns}/{name}"), e))?
            .ok_or_else(|| ChaosError::NotFound(format!("deployment {ns}/{name} not found")))?;
        if rollout_complete(&d) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ChaosError::WaitTimeout {
                what: format!("rollout of deployment {ns}/{name}"),
                timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};

    fn dep(
        gen: i64,
        want: i32,
        observed: i64,
        replicas: i32,
        updated: i32,
        available: i32,
    ) -> Deployment {
        let mut d = Deployment::default();
        d.metadata.generation = Some(gen);
        d.spec = Some(DeploymentSpec {
            replicas: Some(want),
            ..Default::default()
        });
        d.status = Some(DeploymentStatus {
            observed_generation: Some(observed),
            replicas: Some(replicas),
            updated_replicas: Some(updated),
            available_replicas: Some(available),
            ..Default::default()
        });
        d
    }

    #[test]
    fn rollout_complete_follows_kubectl() {
        assert!(rollout_complete(&dep(2, 3, 2, 3, 3, 3)));
        // controller has not seen the new spec yet
        assert!(!rollout_complete(&dep(3, 3, 2, 3, 3, 3)));
        // old replicas still around (surge)
        assert!(!rollout_complete(&dep(2, 3, 2, 4, 3, 3)));
        // not every updated replica available yet
        assert!(!rollout_complete(&dep(2, 3, 2, 3, 3, 2)));
        // not all updated
        assert!(!rollout_complete(&dep(2, 3, 2, 3, 2, 3)));
        assert!(!rollout_complete(&Deployment::default()));
    }
}
