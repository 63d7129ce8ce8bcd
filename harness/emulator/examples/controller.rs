//! The emulator as a library: a kube-rs controller run and checked against
//! an in-process cluster, with no envtest, kind or Docker.
//!
//! ```text
//! cargo run -p zdt-emulator --example controller
//! ```
//!
//! The controller: every ConfigMap labelled `example.zdt.io/web=true` gets
//! a Deployment of the same name, owned by it, running `data.image` with
//! `data.replicas` pods (server-side apply). The emulator's own controllers
//! then do what a cluster's do: ReplicaSets, pods scheduled on its nodes,
//! Ready, the Deployment's status.
//!
//! tests/it/library.rs runs this same controller as a user's test would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{wait, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use zdt_emulator::Emulator;

/// The label that puts a ConfigMap under this controller.
pub const LABEL: &str = "example.zdt.io/web";

/// Make the ConfigMap's Deployment what its data says.
pub async fn reconcile(cm: Arc<ConfigMap>, client: Arc<Client>) -> Result<Action, kube::Error> {
    let ns = cm.namespace().unwrap_or_else(|| "default".into());
    let name = cm.name_any();
    let data = cm.data.clone().unwrap_or_default();
    let image = data
        .get("image")
        .cloned()
        .unwrap_or_else(|| "nginx:1.27".into());
    let replicas: i32 = data
        .get("replicas")
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    let owner = cm.controller_owner_ref(&());
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "ownerReferences": [owner]},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": image}]},
            },
        },
    });
    Api::<Deployment>::namespaced((*client).clone(), &ns)
        .patch(
            &name,
            &PatchParams::apply("web-controller").force(),
            &Patch::Apply(deployment),
        )
        .await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

fn error_policy(_cm: Arc<ConfigMap>, _err: &kube::Error, _client: Arc<Client>) -> Action {
    Action::requeue(Duration::from_secs(1))
}

/// Run the controller until `stop` resolves.
pub async fn run(
    client: Client,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    Controller::new(
        Api::<ConfigMap>::all(client.clone()),
        watcher::Config::default().labels(&format!("{LABEL}=true")),
    )
    .owns(
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default(),
    )
    .graceful_shutdown_on(stop)
    .run(reconcile, error_policy, Arc::new(client))
    .for_each(|_| async {})
    .await;
}

/// A ConfigMap for the controller.
pub fn web(name: &str, image: &str, replicas: u32) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {LABEL: "true"}},
        "data": {"image": image, "replicas": replicas.to_string()},
    }))
    .expect("a valid ConfigMap")
}

/// Holds once the Deployment's pods all run `image` and are available.
pub fn rolled_out(image: &str, replicas: i32) -> impl wait::Condition<Deployment> + '_ {
    move |d: Option<&Deployment>| {
        d.is_some_and(|d| {
            let spec = d.spec.as_ref();
            let status = d.status.clone().unwrap_or_default();
            spec.and_then(|s| s.template.spec.as_ref())
                .is_some_and(|p| p.containers[0].image.as_deref() == Some(image))
                && status.observed_generation == d.metadata.generation
                && status.updated_replicas == Some(replicas)
                && status.available_replicas == Some(replicas)
                && status.replicas == Some(replicas)
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let t0 = Instant::now();
    let emu = Emulator::simulated(2).await?;
    let client = emu.client()?;
    client.apiserver_version().await?;
    println!(
        "emulated cluster at {} answers its first request {:?} after start",
        emu.url(),
        t0.elapsed()
    );

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(run(client.clone(), async {
        let _ = stop_rx.await;
    }));

    let configmaps: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    configmaps
        .create(&PostParams::default(), &web("web", "nginx:1.27", 3))
        .await?;
    let t1 = Instant::now();
    tokio::time::timeout(
        Duration::from_secs(30),
        wait::await_condition(deployments.clone(), "web", rolled_out("nginx:1.27", 3)),
    )
    .await??;
    println!(
        "Deployment web: 3 pods of nginx:1.27 available after {:?}",
        t1.elapsed()
    );

    configmaps
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"image": "nginx:1.28"}})),
        )
        .await?;
    let t2 = Instant::now();
    tokio::time::timeout(
        Duration::from_secs(30),
        wait::await_condition(deployments, "web", rolled_out("nginx:1.28", 3)),
    )
    .await??;
    println!("rolled out nginx:1.28 after {:?}", t2.elapsed());

    let _ = stop_tx.send(());
    controller.await?;
    emu.shutdown().await;
    println!("stopped");
    Ok(())
}
