//! batch/v1 Jobs on the emulator: the API's defaults and refusals, the Job
//! controller's pods, counts and conditions, pods reaching the API server
//! from inside the cluster's network, deletion's propagation policies, and
//! what kubectl shows of a Job (`get`, `describe`, `wait`, `logs`,
//! `delete`). Tests that need processes skip (saying why) without a
//! private network or kubectl.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams, PropagationPolicy};
use serde_json::{json, Value};
use tokio::process::Command;
use zdt_core::clock::Clock;
use zdt_core::emulated::{ContainerRun, RunEngine};
use zdt_core::events::EventSink;
use zdt_emulator::store::Resource;
use zdt_emulator::{Emulator, EmulatorConfig, NetworkChoice, RuntimeChoice};

use super::support::{emulator, no_retry_client, until};

const KUBECTL: &str = "/usr/bin/kubectl";
const INDEX: &str = "batch.kubernetes.io/job-completion-index";

fn job_value(name: &str, container: &str, spec_extra: Value) -> Value {
    let mut j = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": container, "image": "busybox"}],
            }},
        },
    });
    json_patch::merge(&mut j["spec"], &spec_extra);
    j
}

fn job(name: &str, container: &str, spec_extra: Value) -> Job {
    serde_json::from_value(job_value(name, container, spec_extra)).unwrap()
}

fn job_status(emu: &Emulator, name: &str) -> Value {
    emu.store()
        .get(Resource::Jobs, "default", name)
        .map(|j| j["status"].clone())
        .unwrap_or(Value::Null)
}

fn has_condition(emu: &Emulator, name: &str, ty: &str) -> bool {
    job_status(emu, name)["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == ty && c["status"] == "True"))
}

fn pods_of(emu: &Emulator, job: &str) -> Vec<Value> {
    emu.store()
        .list(Resource::Pods, Some("default"))
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["job-name"] == job)
        .collect()
}

async fn real_emulator(run: BTreeMap<String, ContainerRun>) -> Emulator {
    let config = EmulatorConfig {
        workers: 2,
        runtime: RuntimeChoice::Builtin,
        network: NetworkChoice::Private,
        run,
        ..EmulatorConfig::default()
    };
    Emulator::start(config, EventSink::discard(Clock::start()))
        .await
        .expect("emulator starts")
}

fn shell(script: &str) -> ContainerRun {
    ContainerRun {
        runtime: RunEngine::Host,
        command: vec!["/bin/sh".into(), "-c".into()],
        args: vec![script.into()],
        ..Default::default()
    }
}

#[tokio::test]
async fn the_api_defaults_a_job_and_refuses_what_the_controller_does_not_do() {
    let emu = emulator(1).await;
    let jobs: Api<Job> = Api::default_namespaced(no_retry_client(&emu));
    let made = jobs
        .create(&PostParams::default(), &job("plain", "c", json!({})))
        .await
        .unwrap();
    let uid = made.metadata.uid.clone().unwrap();
    let spec = made.spec.unwrap();
    assert_eq!(spec.completions, Some(1));
    assert_eq!(spec.parallelism, Some(1));
    assert_eq!(spec.backoff_limit, Some(6));
    assert_eq!(spec.completion_mode.as_deref(), Some("NonIndexed"));
    let selector = spec.selector.unwrap().match_labels.unwrap();
    assert_eq!(selector["batch.kubernetes.io/controller-uid"], uid);
    let labels = spec.template.metadata.unwrap().labels.unwrap();
    for (k, v) in [
        ("batch.kubernetes.io/controller-uid", uid.as_str()),
        ("controller-uid", uid.as_str()),
        ("batch.kubernetes.io/job-name", "plain"),
        ("job-name", "plain"),
    ] {
        assert_eq!(labels.get(k).map(String::as_str), Some(v), "{k}");
    }

    let refused = |extra: Value, restart: &str| {
        let mut j = job_value("bad", "c", extra);
        j["spec"]["template"]["spec"]["restartPolicy"] = json!(restart);
        serde_json::from_value::<Job>(j).unwrap()
    };
    for (j, words) in [
        (
            refused(json!({}), "Always"),
            "restartPolicy: Unsupported value: \"Always\"",
        ),
        (
            refused(
                json!({"completionMode": "Indexed", "completions": 2, "backoffLimitPerIndex": 1}),
                "Never",
            ),
            "spec.backoffLimitPerIndex: Forbidden",
        ),
        (
            refused(
                json!({"completionMode": "Indexed", "parallelism": 2}),
                "Never",
            ),
            "spec.completions: Required value: when completion mode is Indexed",
        ),
    ] {
        let e = jobs.create(&PostParams::default(), &j).await.unwrap_err();
        match e {
            kube::Error::Api(s) => {
                assert_eq!(s.code, 422, "{s:?}");
                assert!(s.message.contains(words), "{}", s.message);
            }
            other => panic!("{other}"),
        }
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn deleting_a_job_orphans_its_pods_by_default_and_takes_them_when_asked() {
    let emu = emulator(2).await;
    let client = no_retry_client(&emu);
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client);
    for name in ["orphaning", "background", "foreground"] {
        jobs.create(
            &PostParams::default(),
            &job(name, "c", json!({"parallelism": 2, "completions": 4})),
        )
        .await
        .unwrap();
    }
    until(&emu, 10, "two pods per Job", |e| {
        ["orphaning", "background", "foreground"]
            .iter()
            .all(|j| pods_of(e, j).len() == 2)
    })
    .await;
    let status = job_status(&emu, "orphaning");
    assert_eq!(status["active"], 2, "{status}");
    assert!(status["startTime"].is_string(), "{status}");

    // batch/v1's default is Orphan: the pods stay, without the owner.
    jobs.delete("orphaning", &DeleteParams::default())
        .await
        .unwrap();
    until(&emu, 10, "the orphaning Job gone", |e| {
        e.store()
            .get(Resource::Jobs, "default", "orphaning")
            .is_none()
    })
    .await;
    let left = pods_of(&emu, "orphaning");
    assert_eq!(left.len(), 2);
    assert!(left.iter().all(|p| p["metadata"]["ownerReferences"]
        .as_array()
        .is_none_or(Vec::is_empty)));

    jobs.delete("background", &DeleteParams::background())
        .await
        .unwrap();
    assert!(emu
        .store()
        .get(Resource::Jobs, "default", "background")
        .is_none());
    until(&emu, 10, "the background Job's pods deleted", |e| {
        pods_of(e, "background")
            .iter()
            .all(|p| p["metadata"]["deletionTimestamp"].is_string())
    })
    .await;

    // Foreground: the Job stays, being deleted, until its pods are gone
    // (simulated pods go at once, so the answer is what shows it).
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        ..DeleteParams::default()
    };
    let answer = jobs.delete("foreground", &params).await.unwrap();
    let waiting = answer
        .left()
        .expect("the Job is still there when the delete answers");
    assert!(waiting.metadata.deletion_timestamp.is_some());
    assert_eq!(waiting.metadata.finalizers.unwrap(), ["foregroundDeletion"]);
    until(&emu, 40, "the foreground Job gone after its pods", |e| {
        e.store()
            .get(Resource::Jobs, "default", "foreground")
            .is_none()
    })
    .await;
    assert!(pods_of(&emu, "foreground").is_empty());
    assert_eq!(
        pods.list(&ListParams::default().labels("job-name=orphaning"))
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    emu.shutdown().await;
}

/// What a pod of the indexed Job prints: its index, and the API server's
/// answer to a list of ConfigMaps in its service account's namespace,
/// asked at `KUBERNETES_SERVICE_HOST:PORT` from the cluster's network.
const INDEXED_SCRIPT: &str = "echo index=$JOB_COMPLETION_INDEX; \
    ns=`cat $ZDT_SERVICEACCOUNT_DIR/namespace`; \
    echo api=$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT; \
    curl -sS --max-time 5 http://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/api/v1/namespaces/$ns/configmaps";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_indexed_job_completes_every_index_and_its_pods_reach_the_api() {
    if let Some(why) = zdt_core::netns::private_unavailable() {
        eprintln!("SKIPPED: a pod running a host command needs a private network: {why}");
        return;
    }
    if !Path::new("/usr/bin/curl").exists() {
        eprintln!("SKIPPED: curl is not installed");
        return;
    }
    let run = BTreeMap::from([("worker".to_owned(), shell(INDEXED_SCRIPT))]);
    let emu = real_emulator(run).await;
    emu.store()
        .create(
            Resource::ConfigMaps,
            json!({"metadata": {"name": "seen-from-a-pod", "namespace": "default"}}),
        )
        .unwrap();
    let client = emu.client().unwrap();
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let spec = json!({"completionMode": "Indexed", "completions": 3, "parallelism": 3});
    jobs.create(&PostParams::default(), &job("gen", "worker", spec))
        .await
        .unwrap();
    until(&emu, 30, "the indexed Job complete", |e| {
        has_condition(e, "gen", "Complete")
    })
    .await;
    let status = job_status(&emu, "gen");
    assert_eq!(status["completedIndexes"], "0-2", "{status}");
    assert_eq!(status["succeeded"], 3, "{status}");
    assert!(status.get("failed").is_none(), "{status}");
    assert!(status["completionTime"].is_string(), "{status}");
    if emu.config().kubernetes.at_least(1, 31) {
        assert!(has_condition(&emu, "gen", "SuccessCriteriaMet"), "{status}");
    }

    let pods: Api<Pod> = Api::default_namespaced(client);
    let mut seen = Vec::new();
    for p in pods_of(&emu, "gen") {
        let name = p["metadata"]["name"].as_str().unwrap().to_owned();
        let index = p["metadata"]["annotations"][INDEX]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(p["metadata"]["labels"][INDEX], index.as_str());
        assert!(name.starts_with(&format!("gen-{index}-")), "{name}");
        assert_eq!(p["status"]["phase"], "Succeeded");
        // The logs stay readable after the pod finished.
        let log = pods.logs(&name, &LogParams::default()).await.unwrap();
        assert!(log.contains(&format!("index={index}\n")), "{name}: {log}");
        assert!(log.contains("api=10.96.0.1:443"), "{name}: {log}");
        assert!(log.contains("\"kind\":\"ConfigMapList\""), "{name}: {log}");
        assert!(log.contains("seen-from-a-pod"), "{name}: {log}");
        seen.push(index);
    }
    seen.sort();
    assert_eq!(seen, ["0", "1", "2"]);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_is_retried_up_to_its_backoff_limit_then_failed() {
    if let Some(why) = zdt_core::netns::private_unavailable() {
        eprintln!("SKIPPED: a pod running a host command needs a private network: {why}");
        return;
    }
    let run = BTreeMap::from([("failing".to_owned(), shell("echo trying; exit 3"))]);
    let emu = real_emulator(run).await;
    let jobs: Api<Job> = Api::default_namespaced(emu.client().unwrap());
    jobs.create(
        &PostParams::default(),
        &job("flaky", "failing", json!({"backoffLimit": 1})),
    )
    .await
    .unwrap();
    // One failure is within the limit: the pod is replaced after the
    // controller's 10 s back-off; the second failure exceeds it.
    until(&emu, 60, "the Job failed", |e| {
        has_condition(e, "flaky", "Failed")
    })
    .await;
    let status = job_status(&emu, "flaky");
    let failed = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Failed")
        .unwrap()
        .clone();
    assert_eq!(failed["reason"], "BackoffLimitExceeded", "{status}");
    assert_eq!(status["failed"], 2, "{status}");
    assert!(status.get("succeeded").is_none(), "{status}");
    assert!(!has_condition(&emu, "flaky", "Complete"));
    let pods = pods_of(&emu, "flaky");
    assert_eq!(pods.len(), 2, "one pod and its replacement");
    assert!(pods.iter().all(|p| p["status"]["phase"] == "Failed"));
    let exit_codes: Vec<&Value> = pods
        .iter()
        .map(|p| &p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"])
        .collect();
    assert!(exit_codes.iter().all(|c| **c == 3), "{exit_codes:?}");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_gets_describes_waits_for_logs_and_deletes_a_job() {
    if !Path::new(KUBECTL).exists() {
        eprintln!("SKIPPED: {KUBECTL} is not installed");
        return;
    }
    if let Some(why) = zdt_core::netns::private_unavailable() {
        eprintln!("SKIPPED: a pod running a host command needs a private network: {why}");
        return;
    }
    let run = BTreeMap::from([("hello".to_owned(), shell("echo hello from $HOSTNAME"))]);
    let emu = real_emulator(run).await;
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    emu.write_kubeconfig(&kc).unwrap();
    let manifest = dir.path().join("job.json");
    std::fs::write(
        &manifest,
        job_value("hello", "hello", json!({"completions": 2})).to_string(),
    )
    .unwrap();
    let kubectl = |args: &[&str]| {
        let mut c = Command::new(KUBECTL);
        c.arg("--kubeconfig").arg(&kc).args(args).kill_on_drop(true);
        async move {
            let out = tokio::time::timeout(Duration::from_secs(60), c.output())
                .await
                .expect("kubectl finishes within 60 s")
                .expect("kubectl runs");
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            (out.status.success(), text)
        }
    };
    let (ok, out) = kubectl(&["create", "-f", manifest.to_str().unwrap()]).await;
    assert!(ok, "{out}");
    let (ok, out) = kubectl(&[
        "wait",
        "--for=condition=complete",
        "job/hello",
        "--timeout=30s",
    ])
    .await;
    assert!(ok && out.contains("job.batch/hello condition met"), "{out}");

    let (ok, out) = kubectl(&["get", "jobs"]).await;
    assert!(ok, "{out}");
    let header = out.lines().next().unwrap_or("");
    for col in ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"] {
        assert!(header.contains(col), "{out}");
    }
    let row = out.lines().find(|l| l.starts_with("hello ")).unwrap_or("");
    assert!(row.contains("Complete") && row.contains("2/2"), "{out}");

    let (ok, out) = kubectl(&["describe", "job", "hello"]).await;
    assert!(ok, "{out}");
    for words in [
        "Completions:      2",
        "Pods Statuses:    0 Active",
        "2 Succeeded",
        "SuccessfulCreate",
        "Completed",
    ] {
        assert!(out.contains(words), "{words:?} in:\n{out}");
    }

    let (ok, out) = kubectl(&["logs", "job/hello"]).await;
    assert!(ok && out.starts_with("hello from hello-"), "{out}");

    let (ok, out) = kubectl(&["delete", "job", "hello"]).await;
    assert!(ok && out.contains("job.batch \"hello\" deleted"), "{out}");
    assert!(emu
        .store()
        .get(Resource::Jobs, "default", "hello")
        .is_none());
    until(&emu, 20, "the Job's pods gone with it", |e| {
        pods_of(e, "hello").is_empty()
    })
    .await;
    emu.shutdown().await;
}
