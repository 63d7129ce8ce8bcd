//! The emulator as a dev-dependency, the way a kube-rs user would test a
//! controller with it: start a cluster in-process, get a client, run the
//! controller, check what it made, stop. The controller is the one in
//! examples/controller.rs.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::await_condition;
use serde_json::json;
use zdt_emulator::Emulator;

#[allow(dead_code)] // its `main` is the example's, not the test's
#[path = "../../examples/controller.rs"]
mod controller;

/// Wait (at most 30 s) until the controller's Deployment `shop` runs
/// `replicas` available pods of `image`.
async fn rolled_out(deployments: &Api<Deployment>, image: &str, replicas: i32) {
    tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(
            deployments.clone(),
            "shop",
            controller::rolled_out(image, replicas),
        ),
    )
    .await
    .unwrap_or_else(|_| panic!("{replicas} pods of {image} are available within 30 s"))
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_reconciles_a_deployment_against_the_emulator() {
    let emu = Emulator::simulated(2).await.unwrap();
    let client = emu.client().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(controller::run(client.clone(), async {
        let _ = stop_rx.await;
    }));
    let configmaps: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let cm = configmaps
        .create(
            &PostParams::default(),
            &controller::web("shop", "nginx:1.27", 2),
        )
        .await
        .unwrap();

    rolled_out(&deployments, "nginx:1.27", 2).await;
    let d = deployments.get("shop").await.unwrap();
    let owner = &d.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("ConfigMap", "shop")
    );
    assert_eq!(Some(&owner.uid), cm.metadata.uid.as_ref());
    assert_eq!(owner.controller, Some(true));

    // A change to the ConfigMap is a rollout: a second ReplicaSet, all
    // pods on the new image.
    configmaps
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"image": "nginx:1.28", "replicas": "3"}})),
        )
        .await
        .unwrap();
    rolled_out(&deployments, "nginx:1.28", 3).await;
    let replicasets: Api<ReplicaSet> = Api::default_namespaced(client.clone());
    let rs = replicasets
        .list(&ListParams::default().labels("app=shop"))
        .await
        .unwrap();
    let mut sizes: Vec<i32> = rs
        .items
        .iter()
        .map(|r| r.spec.as_ref().unwrap().replicas.unwrap())
        .collect();
    sizes.sort();
    assert_eq!(
        sizes,
        [0, 3],
        "the old ReplicaSet scaled to 0, the new one to 3"
    );

    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the controller stops within 10 s")
        .unwrap();
    emu.shutdown().await;
}

/// How long from nothing to a client whose first request has been
/// answered (`/version`), over 5 starts: the median must stay under
/// 100 ms (docs/emulator.md quotes the figures this prints).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_to_a_ready_client_is_under_100_ms() {
    let mut took = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        let emu = Emulator::simulated(2).await.unwrap();
        let client = emu.client().unwrap();
        client.apiserver_version().await.unwrap();
        took.push(t0.elapsed());
        emu.shutdown().await;
    }
    took.sort();
    eprintln!("startup to a ready client: {took:?}");
    assert!(
        took[2] < Duration::from_millis(100),
        "median {:?} of {took:?}",
        took[2]
    );
}
