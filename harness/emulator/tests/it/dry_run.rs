//! Server-side dry run (`dryRun=All`) on every write: the answer is what
//! the write would give — defaults, generated names, 409/422/429 — and the
//! store is left as it was: the object unchanged, no change recorded (so no
//! watch event and nothing for a controller to react to).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, EvictParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use zdt_emulator::store::Resource;
use zdt_emulator::Emulator;

use super::support::{deployment, emulator, no_retry_client, pod, until};

fn dry_post() -> PostParams {
    PostParams {
        dry_run: true,
        ..PostParams::default()
    }
}

fn dry_patch() -> PatchParams {
    PatchParams {
        dry_run: true,
        ..PatchParams::default()
    }
}

/// The store's view of one object, and the resourceVersion to look for
/// changes after.
struct Before {
    resource: Resource,
    name: String,
    object: Option<Value>,
    rv: u64,
}

fn before(emu: &Emulator, resource: Resource, name: &str) -> Before {
    Before {
        resource,
        name: name.to_owned(),
        object: emu.store().get(resource, "default", name),
        rv: emu.store().resource_version(),
    }
}

/// The object is as it was and no change to it was recorded since.
fn assert_untouched(emu: &Emulator, b: &Before) {
    assert_eq!(
        emu.store().get(b.resource, "default", &b.name),
        b.object,
        "{} {} changed",
        b.resource.info().kind,
        b.name
    );
    let changes = emu.store().changes_since(b.resource, b.rv).unwrap();
    let touched: Vec<_> = changes
        .iter()
        .filter(|c| c.object["metadata"]["name"] == b.name.as_str())
        .map(|c| c.kind)
        .collect();
    assert!(
        touched.is_empty(),
        "changes recorded for {}: {touched:?}",
        b.name
    );
}

fn spec_of(d: &Deployment) -> Value {
    serde_json::to_value(d.spec.as_ref().unwrap()).unwrap()
}

#[tokio::test]
async fn create_answers_with_defaults_and_names_but_stores_nothing() {
    let emu = emulator(2).await;
    let deploys: Api<Deployment> = Api::default_namespaced(emu.client().unwrap());
    let b = before(&emu, Resource::Deployments, "web");
    let dry = deploys
        .create(&dry_post(), &deployment("web", 1, json!({})))
        .await
        .unwrap();
    assert_untouched(&emu, &b);
    assert_eq!(dry.metadata.name.as_deref(), Some("web"));
    assert!(
        dry.metadata.uid.is_some(),
        "the answer is the object as created"
    );

    // The real create gives the same object (defaults included).
    let real = deploys
        .create(&PostParams::default(), &deployment("web", 1, json!({})))
        .await
        .unwrap();
    assert_eq!(spec_of(&dry), spec_of(&real));

    // generateName: a name is generated, nothing is stored under it.
    let mut generated = pod("ignored", json!({}));
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("gen-".into());
    let pods: Api<Pod> = Api::default_namespaced(emu.client().unwrap());
    let rv = emu.store().resource_version();
    let answer = pods.create(&dry_post(), &generated).await.unwrap();
    let name = answer.metadata.name.unwrap();
    assert!(name.starts_with("gen-") && name.len() > 4, "{name}");
    assert_eq!(emu.store().get(Resource::Pods, "default", &name), None);
    assert!(emu
        .store()
        .changes_since(Resource::Pods, rv)
        .unwrap()
        .is_empty());

    // The errors of the real write: 409 for a name in use, 422 for an
    // invalid object.
    let conflict = deploys
        .create(&dry_post(), &deployment("web", 1, json!({})))
        .await;
    assert!(
        matches!(&conflict, Err(kube::Error::Api(s)) if s.code == 409),
        "{conflict:?}"
    );
    let services: Api<Service> = Api::default_namespaced(emu.client().unwrap());
    let bad: Service = serde_json::from_value(json!({
        "metadata": {"name": "bad"},
        "spec": {"type": "Sideways", "ports": [{"port": 80}]}
    }))
    .unwrap();
    let invalid = services.create(&dry_post(), &bad).await;
    assert!(
        matches!(&invalid, Err(kube::Error::Api(s)) if s.code == 422),
        "{invalid:?}"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn update_and_every_patch_type_answer_without_storing() {
    let emu = emulator(2).await;
    let deploys: Api<Deployment> = Api::default_namespaced(emu.client().unwrap());
    deploys
        .create(&PostParams::default(), &deployment("web", 1, json!({})))
        .await
        .unwrap();
    // The deployment controller writes the status until the rollout is
    // complete; a snapshot taken before then would count its write as the
    // dry run's.
    until(&emu, 10, "rollout complete", |e| {
        let d = e
            .store()
            .get(Resource::Deployments, "default", "web")
            .unwrap_or_default();
        d["status"]["observedGeneration"] == d["metadata"]["generation"]
            && d["status"]["availableReplicas"] == 1
            && d["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["reason"] == "NewReplicaSetAvailable")
    })
    .await;
    let b = before(&emu, Resource::Deployments, "web");

    // PUT
    let mut wanted = deploys.get("web").await.unwrap();
    wanted.spec.as_mut().unwrap().replicas = Some(5);
    let put = deploys.replace("web", &dry_post(), &wanted).await.unwrap();
    assert_eq!(put.spec.unwrap().replicas, Some(5));
    assert_untouched(&emu, &b);

    // The four patch types.
    let patches: [(&str, Patch<Value>); 4] = [
        ("merge", Patch::Merge(json!({"spec": {"replicas": 4}}))),
        (
            "strategic",
            Patch::Strategic(json!({"spec": {"replicas": 4}})),
        ),
        (
            "json",
            Patch::Json(
                serde_json::from_value(
                    json!([{"op": "replace", "path": "/spec/replicas", "value": 4}]),
                )
                .unwrap(),
            ),
        ),
        (
            "apply",
            Patch::Apply(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web"}, "spec": {"replicas": 4}
            })),
        ),
    ];
    for (what, patch) in patches {
        let params = if what == "apply" {
            PatchParams::apply("dry-test").dry_run()
        } else {
            dry_patch()
        };
        let answer = deploys.patch("web", &params, &patch).await.unwrap();
        assert_eq!(answer.spec.unwrap().replicas, Some(4), "{what} patch");
        assert_untouched(&emu, &b);
    }

    // Server-side apply of an object that does not exist yet creates it,
    // in a dry run only in the answer.
    let absent = before(&emu, Resource::Deployments, "fresh");
    let mut fresh = serde_json::to_value(deployment("fresh", 1, json!({}))).unwrap();
    fresh["apiVersion"] = json!("apps/v1");
    fresh["kind"] = json!("Deployment");
    let created = deploys
        .patch(
            "fresh",
            &PatchParams::apply("dry-test").dry_run(),
            &Patch::Apply(fresh),
        )
        .await
        .unwrap();
    assert_eq!(created.metadata.name.as_deref(), Some("fresh"));
    assert_untouched(&emu, &absent);

    // `/status` and `/scale`.
    let status = deploys
        .patch_status(
            "web",
            &dry_patch(),
            &Patch::Merge(json!({"status": {"observedGeneration": 42}})),
        )
        .await
        .unwrap();
    assert_eq!(status.status.unwrap().observed_generation, Some(42));
    assert_untouched(&emu, &b);
    let scale = deploys
        .patch_scale(
            "web",
            &dry_patch(),
            &Patch::Merge(json!({"spec": {"replicas": 7}})),
        )
        .await
        .unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(7));
    assert_untouched(&emu, &b);

    // And the real patch does store it: the checks above could fail.
    deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap();
    let after = emu
        .store()
        .get(Resource::Deployments, "default", "web")
        .unwrap();
    assert_eq!(after["spec"]["replicas"], 4);
    emu.shutdown().await;
}

#[tokio::test]
async fn delete_and_eviction_answer_without_removing() {
    let emu = emulator(2).await;
    let client = emu.client().unwrap();
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    pods.create(&PostParams::default(), &pod("solo", json!({"app": "solo"})))
        .await
        .unwrap();
    // Nothing else may change the pod while its dry runs are checked.
    until(&emu, 10, "pod solo running", |e| {
        e.store()
            .get(Resource::Pods, "default", "solo")
            .is_some_and(|p| p["status"]["phase"] == "Running")
    })
    .await;
    let b = before(&emu, Resource::Pods, "solo");

    let dry_delete = DeleteParams {
        dry_run: true,
        ..DeleteParams::default()
    };
    pods.delete("solo", &dry_delete).await.unwrap();
    assert_untouched(&emu, &b);

    let dry_evict = EvictParams {
        delete_options: None,
        post_options: dry_post(),
    };
    pods.evict("solo", &dry_evict).await.unwrap();
    assert_untouched(&emu, &b);

    // A PDB that allows no disruption: the dry run gets the real 429.
    let pdbs: Api<PodDisruptionBudget> = Api::default_namespaced(client);
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "solo"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "solo"}}}
    }))
    .unwrap();
    pdbs.create(&PostParams::default(), &pdb).await.unwrap();
    let b = before(&emu, Resource::Pods, "solo");
    // kube-rs retries 429s by default; see the refusal itself.
    let no_retry: Api<Pod> = Api::default_namespaced(no_retry_client(&emu));
    let refused = no_retry.evict("solo", &dry_evict).await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 429),
        "{refused:?}"
    );
    assert_untouched(&emu, &b);

    // Without dryRun the delete happens: the checks above could fail.
    pods.delete("solo", &DeleteParams::default()).await.unwrap();
    let gone = emu.store().get(Resource::Pods, "default", "solo");
    assert!(
        gone.as_ref()
            .is_none_or(|p| !p["metadata"]["deletionTimestamp"].is_null()),
        "{gone:?}"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn a_dry_run_value_other_than_all_is_refused() {
    let emu = emulator(2).await;
    let url = format!(
        "{}/api/v1/namespaces/default/pods?dryRun=Yes",
        emu.client_config().cluster_url
    );
    let client = emu.client().unwrap();
    let req = http::Request::post(url)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&pod("x", json!({}))).unwrap())
        .unwrap();
    let err = client.request::<Pod>(req).await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 400 && s.message.contains("\"All\"")),
        "{err:?}"
    );
    assert_eq!(emu.store().get(Resource::Pods, "default", "x"), None);
    emu.shutdown().await;
}
