//! What the emulator's API tests share: an emulator started without real
//! processes, the objects they create, and waiting on the store.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use zdt_core::clock::Clock;
use zdt_core::events::EventSink;
use zdt_core::units::Dur;
use zdt_emulator::store::Resource;
use zdt_emulator::{Emulator, EmulatorConfig, Timings};

pub(crate) async fn emulator(workers: usize) -> Emulator {
    emulator_with_start_delay(workers, 50).await
}

pub(crate) async fn emulator_with_start_delay(workers: usize, start_ms: u64) -> Emulator {
    let config = EmulatorConfig {
        workers,
        timings: Timings {
            pod_start_delay: Dur::from_millis(start_ms),
            ..Timings::default()
        },
        ..EmulatorConfig::default()
    };
    Emulator::start_simulated(config, EventSink::discard(Clock::start()))
        .await
        .expect("emulator starts")
}

/// A client that does not retry: kube-rs retries 429s by default, and a
/// test of a refusal wants to see it.
pub(crate) fn no_retry_client(emu: &Emulator) -> kube::Client {
    let mut config = emu.client_config();
    config.default_retry = false;
    kube::Client::try_from(config).unwrap()
}

pub(crate) fn pod(name: &str, labels: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]}
    }))
    .unwrap()
}

/// A Deployment of `replicas` nginx pods labelled `app: NAME` in
/// `default`, with `pod_spec_extra` merged into its pod template's spec and
/// `spec_extra` into its spec.
pub(crate) fn deployment_value(
    name: &str,
    replicas: i64,
    pod_spec_extra: serde_json::Value,
    spec_extra: serde_json::Value,
) -> serde_json::Value {
    let mut d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}
            }
        }
    });
    json_patch::merge(&mut d["spec"]["template"]["spec"], &pod_spec_extra);
    json_patch::merge(&mut d["spec"], &spec_extra);
    d
}

/// [`deployment_value`] as a typed object, for kube-rs.
pub(crate) fn deployment(name: &str, replicas: i64, extra_spec: serde_json::Value) -> Deployment {
    serde_json::from_value(deployment_value(name, replicas, json!({}), extra_spec)).unwrap()
}

/// Wait (on store changes, bounded) until `f` holds.
pub(crate) async fn until(emu: &Emulator, secs: u64, what: &str, f: impl Fn(&Emulator) -> bool) {
    let mut changed = emu.store().subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !f(emu) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            for p in emu.store().list(Resource::Pods, None) {
                eprintln!(
                    "{} {} {}",
                    p["metadata"]["name"], p["spec"]["nodeName"], p["status"]
                );
            }
            panic!("timed out waiting for {what}");
        }
        let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), changed.changed()).await;
    }
}
