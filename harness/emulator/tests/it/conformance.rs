//! Conformance from the outside: the same operations through two clients
//! nobody here wrote — kubectl and the official Python client (`kubernetes`
//! on PyPI) — against an in-process emulator, each with the status code
//! and body upstream documents for it.
//!
//! The table below is the suite. Every case names the claim it checks: a
//! row of the "Checked from outside" table in docs/emulator.md, and
//! [`docs_claims_each_have_a_case`] fails when a row there has no case
//! (or a case names no row). To add a claim (`logs`, `port-forward`, …):
//! add its row to that docs table and its cases to [`cases`]; kubectl's
//! status code is read from its `-v=6` request log, so any kubectl command
//! works as a case, and the Python driver (tests/conformance/python_client.py)
//! calls any `*_with_http_info` method of the client, a watch, or a raw
//! request.
//!
//! Objects are named `@P@-…`: `@P@` is `k` for kubectl and `py` for
//! Python, so the two clients' cases run on objects of their own.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use zdt_emulator::apiserver::apply_object;
use zdt_emulator::Emulator;

const KUBECTL: &str = "/usr/bin/kubectl";
const DOC: &str = "docs/emulator.md";
/// The heading of the claims table in [`DOC`].
const CLAIMS_HEADING: &str = "### Checked from outside";

/// What one JSON pointer of the answer must be.
#[derive(Debug, Clone)]
enum Check {
    Eq(Value),
    Present,
    Absent,
}

/// A kubectl command: its arguments (and stdin), and the request whose
/// status code the case is about (method and the end of the path).
#[derive(Debug, Clone)]
struct Kubectl {
    args: Vec<String>,
    stdin: Option<String>,
    request: (&'static str, String),
}

#[derive(Debug, Clone)]
struct Case {
    claim: &'static str,
    name: &'static str,
    kubectl: Option<Kubectl>,
    /// An op for tests/conformance/python_client.py.
    python: Option<Value>,
    status: u16,
    /// Checked on both clients' JSON answers (kubectl's with `-o json`).
    body: Vec<(&'static str, Check)>,
    /// Text kubectl's output must contain (for commands without JSON).
    kubectl_says: Option<&'static str>,
    /// Checked on the Python client's answer only.
    python_checks: Vec<(&'static str, Check)>,
}

fn kubectl(args: &str, method: &'static str, path: &str) -> Option<Kubectl> {
    Some(Kubectl {
        args: args.split_whitespace().map(str::to_owned).collect(),
        stdin: None,
        request: (method, path.to_owned()),
    })
}

fn kubectl_stdin(args: &str, stdin: Value, method: &'static str, path: &str) -> Option<Kubectl> {
    let mut k = kubectl(args, method, path)?;
    k.stdin = Some(match stdin {
        Value::String(s) => s,
        v => v.to_string(),
    });
    Some(k)
}

fn py(api: &str, call: &str, args: Value) -> Option<Value> {
    Some(json!({"api": api, "call": call, "args": args}))
}

fn raw(method: &str, path: &str, headers: Value, body: Option<&str>) -> Option<Value> {
    Some(json!({"raw": {"method": method, "path": path, "headers": headers, "body": body}}))
}

fn eq(v: impl Into<Value>) -> Check {
    Check::Eq(v.into())
}

const NS: &str = "/api/v1/namespaces/default";

/// The suite: every claim of docs/emulator.md's table, through both
/// clients where the client can express it.
fn cases() -> Vec<Case> {
    let case = |claim, name, kubectl, python, status, body: Vec<(&'static str, Check)>| Case {
        claim,
        name,
        kubectl,
        python,
        status,
        body,
        kubectl_says: None,
        python_checks: Vec::new(),
    };
    let deployment = |name: &str, image: &str| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "web", "image": image}]}}}})
    };
    vec![
        case("get", "get an object", kubectl("get pod @P@-pod -o json", "GET", "/pods/@P@-pod"),
            py("CoreV1Api", "read_namespaced_pod", json!({"name": "@P@-pod", "namespace": "default"})),
            200, vec![("/kind", eq("Pod")), ("/metadata/name", eq("@P@-pod")), ("/status/phase", eq("Running"))]),
        case("get", "get a missing object is 404 NotFound", kubectl("get pod @P@-nope -o json", "GET", "/pods/@P@-nope"),
            py("CoreV1Api", "read_namespaced_pod", json!({"name": "@P@-nope", "namespace": "default"})),
            404, vec![]).says("(NotFound)").python_body(vec![("/reason", eq("NotFound")), ("/kind", eq("Status"))]),
        case("list", "list by label selector", kubectl("get pods -l app=@P@-web -o json", "GET", "/pods?labelSelector=app%3D@P@-web"),
            py("CoreV1Api", "list_namespaced_pod", json!({"namespace": "default", "label_selector": "app=@P@-web"})),
            200, vec![("/items/0/metadata/labels/app", eq("@P@-web")), ("/items/1/metadata/labels/app", eq("@P@-web")), ("/items/2", Check::Absent)]),
        case("list", "list by field selector", kubectl("get pods --field-selector metadata.name=@P@-pod -o json", "GET", "/pods?fieldSelector=metadata.name%3D@P@-pod"),
            py("CoreV1Api", "list_namespaced_pod", json!({"namespace": "default", "field_selector": "metadata.name=@P@-pod"})),
            200, vec![("/items/0/metadata/name", eq("@P@-pod")), ("/items/1", Check::Absent)]),
        case("table", "get as a Table (kubectl's columns)", kubectl("get pod @P@-pod", "GET", "/pods/@P@-pod"),
            raw("GET", &format!("{NS}/pods/@P@-pod"), json!({"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}), None),
            200, vec![]).says("Running").python_body(vec![("/kind", eq("Table")), ("/rows/0/cells/0", eq("@P@-pod"))]),
        case("watch", "watch starts with the current state", kubectl("get pods --field-selector metadata.name=@P@-pod --watch --request-timeout=2s -o json", "GET", "watch=true"),
            Some(json!({"api": "CoreV1Api", "call": "list_namespaced_pod", "watch": 1,
                "args": {"namespace": "default", "field_selector": "metadata.name=@P@-pod"}})),
            200, vec![]).says("\"name\": \"@P@-pod\"").python_body(vec![("/0/type", eq("ADDED")), ("/0/object/metadata/name", eq("@P@-pod"))]),
        case("create", "create is 201 with the stored object", kubectl("create configmap @P@-new --from-literal=a=b -o json", "POST", "/configmaps"),
            py("CoreV1Api", "create_namespaced_config_map", json!({"namespace": "default",
                "body": {"metadata": {"name": "@P@-new"}, "data": {"a": "b"}}})),
            201, vec![("/data/a", eq("b")), ("/metadata/uid", Check::Present), ("/metadata/resourceVersion", Check::Present)]),
        case("create", "create an existing name is 409 AlreadyExists", kubectl("create configmap @P@-cm --from-literal=a=b", "POST", "/configmaps"),
            py("CoreV1Api", "create_namespaced_config_map", json!({"namespace": "default",
                "body": {"metadata": {"name": "@P@-cm"}, "data": {"a": "b"}}})),
            409, vec![]).says("\"@P@-cm\" already exists").python_body(vec![("/reason", eq("AlreadyExists"))]),
        case("create", "an invalid name is 422 Invalid", kubectl("create configmap Bad_Name --from-literal=a=b", "POST", "/configmaps"),
            py("CoreV1Api", "create_namespaced_config_map", json!({"namespace": "default",
                "body": {"metadata": {"name": "Bad_Name"}}})),
            422, vec![]).says("\"Bad_Name\" is invalid").python_body(vec![("/reason", eq("Invalid"))]),
        case("create", "dryRun=All answers without storing", kubectl("create configmap @P@-dry --from-literal=a=b --dry-run=server -o json", "POST", "/configmaps?dryRun=All"),
            py("CoreV1Api", "create_namespaced_config_map", json!({"namespace": "default", "dry_run": "All",
                "body": {"metadata": {"name": "@P@-dry"}, "data": {"a": "b"}}})),
            201, vec![("/metadata/name", eq("@P@-dry"))]),
        case("create", "…and the dry-run object is not there", kubectl("get configmap @P@-dry -o json", "GET", "/configmaps/@P@-dry"),
            py("CoreV1Api", "read_namespaced_config_map", json!({"name": "@P@-dry", "namespace": "default"})),
            404, vec![]).says("(NotFound)"),
        case("create", "fieldValidation=Strict names unknown fields (400)",
            kubectl_stdin("create -f -", json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "@P@-strict"}, "dataa": {"a": "b"}}), "POST", "/configmaps? fieldValidation=Strict"),
            raw("POST", &format!("{NS}/configmaps?fieldValidation=Strict"), json!({"Content-Type": "application/json"}),
                Some(r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"@P@-strict"},"dataa":{"a":"b"}}"#)),
            400, vec![]).says("strict decoding error: unknown field \"dataa\"").python_body(vec![("/reason", eq("BadRequest"))]),
        case("create", "fieldValidation=Warn accepts unknown fields with a warning each",
            kubectl_stdin("create --validate=warn -f -", json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "@P@-warned"}, "dataa": {"a": "b"}}), "POST", "/configmaps? fieldValidation=Warn"),
            None, 201, vec![]).says("Warning: unknown field \"dataa\""),
        case("replace", "replace is 200",
            kubectl_stdin("replace -f - -o json", json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "@P@-cm", "namespace": "default"}, "data": {"r": "1"}}), "PUT", "/configmaps/@P@-cm"),
            py("CoreV1Api", "replace_namespaced_config_map", json!({"name": "@P@-cm", "namespace": "default",
                "body": {"metadata": {"name": "@P@-cm"}, "data": {"r": "1"}}})),
            200, vec![("/data/r", eq("1"))]),
        case("replace", "replace with a stale resourceVersion is 409 Conflict",
            kubectl_stdin("replace -f -", json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "@P@-cm", "namespace": "default", "resourceVersion": "1"}, "data": {"r": "2"}}), "PUT", "/configmaps/@P@-cm"),
            py("CoreV1Api", "replace_namespaced_config_map", json!({"name": "@P@-cm", "namespace": "default",
                "body": {"metadata": {"name": "@P@-cm", "resourceVersion": "1"}, "data": {"r": "2"}}})),
            409, vec![]).says("(Conflict)").python_body(vec![("/reason", eq("Conflict"))]),
        case("patch", "merge patch", kubectl(r#"patch configmap @P@-cm --type merge -p {"data":{"m":"1"}} -o json"#, "PATCH", "/configmaps/@P@-cm"),
            py("CoreV1Api", "patch_namespaced_config_map", json!({"name": "@P@-cm", "namespace": "default",
                "body": {"data": {"m": "1"}}, "_content_type": "application/merge-patch+json"})),
            200, vec![("/data/m", eq("1")), ("/data/r", eq("1"))]),
        case("patch", "strategic merge patch merges containers by name",
            kubectl(r#"patch deployment @P@-web -p {"spec":{"template":{"spec":{"containers":[{"name":"web","image":"nginx:1.28"}]}}}} -o json"#, "PATCH", "/deployments/@P@-web"),
            py("AppsV1Api", "patch_namespaced_deployment", json!({"name": "@P@-web", "namespace": "default",
                "body": {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.28"}]}}}},
                "_content_type": "application/strategic-merge-patch+json"})),
            200, vec![("/spec/template/spec/containers/0/image", eq("nginx:1.28")), ("/spec/template/spec/containers/1", Check::Absent)]),
        case("patch", "JSON patch", kubectl(r#"patch configmap @P@-cm --type json -p [{"op":"add","path":"/data/j","value":"2"}] -o json"#, "PATCH", "/configmaps/@P@-cm"),
            py("CoreV1Api", "patch_namespaced_config_map", json!({"name": "@P@-cm", "namespace": "default",
                "body": [{"op": "add", "path": "/data/j", "value": "2"}], "_content_type": "application/json-patch+json"})),
            200, vec![("/data/j", eq("2"))]),
        case("apply", "server-side apply creates",
            kubectl_stdin("apply --server-side -f - -o json", json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "@P@-ssa", "namespace": "default"}, "data": {"s": "1"}}), "PATCH", "/configmaps/@P@-ssa?fieldManager=kubectl"),
            py("CoreV1Api", "patch_namespaced_config_map", json!({"name": "@P@-ssa", "namespace": "default", "field_manager": "python",
                "body": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "@P@-ssa"}, "data": {"s": "1"}},
                "_content_type": "application/apply-patch+yaml"})),
            201, vec![("/data/s", eq("1"))]),
        case("apply", "client-side apply (kubectl apply, no flags) creates…",
            kubectl_stdin("apply -f - -o json", deployment("@P@-applied", "nginx:1.27"), "POST", "/deployments?fieldManager=kubectl-client-side-apply"),
            None, 201, vec![("/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration", Check::Present)]),
        case("apply", "…and patches what changed",
            kubectl_stdin("apply -f - -o json", deployment("@P@-applied", "nginx:1.28"), "PATCH", "/deployments/@P@-applied"),
            None, 200, vec![("/spec/template/spec/containers/0/image", eq("nginx:1.28")), ("/spec/template/spec/containers/1", Check::Absent)]),
        case("apply", "plain kubectl apply of the repo's nginx manifests", kubectl("apply -f @REPO@/manifests/nginx/", "POST", "/deployments? fieldValidation=Strict"),
            None, 201, vec![]).says("deployment.apps/nginx created"),
        case("apply", "…again: nothing to change", kubectl("apply -f @REPO@/manifests/nginx/", "GET", "/deployments/nginx"),
            None, 200, vec![]).says("deployment.apps/nginx unchanged"),
        case("apply", "…and server-side over it", kubectl("apply --server-side -f @REPO@/manifests/nginx/", "PATCH", "/deployments/nginx? fieldManager=kubectl"),
            None, 200, vec![]).says("deployment.apps/nginx serverside-applied"),
        case("apply", "an unknown field is refused, naming it",
            kubectl_stdin("apply -f -", {
                let mut d = deployment("@P@-typo", "nginx:1.27");
                d["spec"]["replica"] = json!(2);
                d
            }, "POST", "/deployments? fieldValidation=Strict"),
            None, 400, vec![]).says("unknown field \"spec.replica\""),
        case("status", "get through /status", kubectl("get --raw /apis/apps/v1/namespaces/default/deployments/@P@-web/status", "GET", "/deployments/@P@-web/status"),
            py("AppsV1Api", "read_namespaced_deployment_status", json!({"name": "@P@-web", "namespace": "default"})),
            200, vec![("/kind", eq("Deployment")), ("/status", Check::Present)]),
        case("status", "a patch through /status changes only .status",
            kubectl(r#"patch deployment @P@-web --subresource status --type merge -p {"metadata":{"labels":{"via":"status"}}} -o json"#, "PATCH", "/deployments/@P@-web/status"),
            py("AppsV1Api", "patch_namespaced_deployment_status", json!({"name": "@P@-web", "namespace": "default",
                "body": {"metadata": {"labels": {"via": "status"}}}, "_content_type": "application/merge-patch+json"})),
            200, vec![("/metadata/labels/via", Check::Absent)]),
        case("scale", "get the Scale", kubectl("get --raw /apis/apps/v1/namespaces/default/deployments/@P@-web/scale", "GET", "/deployments/@P@-web/scale"),
            py("AppsV1Api", "read_namespaced_deployment_scale", json!({"name": "@P@-web", "namespace": "default"})),
            200, vec![("/kind", eq("Scale")), ("/apiVersion", eq("autoscaling/v1")), ("/spec/replicas", eq(2))]),
        case("scale", "patch the Scale", kubectl("scale deployment @P@-web --replicas=3", "PATCH", "/deployments/@P@-web/scale"),
            py("AppsV1Api", "patch_namespaced_deployment_scale", json!({"name": "@P@-web", "namespace": "default",
                "body": {"spec": {"replicas": 3}}, "_content_type": "application/merge-patch+json"})),
            200, vec![]).says("scaled").python_body(vec![("/spec/replicas", eq(3))]),
        case("delete", "delete is 200", kubectl("delete configmap @P@-new", "DELETE", "/configmaps/@P@-new"),
            py("CoreV1Api", "delete_namespaced_config_map", json!({"name": "@P@-new", "namespace": "default"})),
            200, vec![]).says("deleted"),
        case("delete", "a bound pod is deleted gracefully", kubectl("delete pod @P@-doomed --wait=false", "DELETE", "/pods/@P@-doomed"),
            py("CoreV1Api", "delete_namespaced_pod", json!({"name": "@P@-doomed", "namespace": "default"})),
            200, vec![]).says("deleted").python_body(vec![("/metadata/deletionTimestamp", Check::Present)]),
        case("delete", "delete a missing object is 404", kubectl("delete configmap @P@-nope", "DELETE", "/configmaps/@P@-nope"),
            py("CoreV1Api", "delete_namespaced_config_map", json!({"name": "@P@-nope", "namespace": "default"})),
            404, vec![]).says("(NotFound)").python_body(vec![("/reason", eq("NotFound"))]),
        case("eviction", "an eviction the budget allows is 201",
            kubectl_stdin("create --raw /api/v1/namespaces/default/pods/@P@-pod/eviction -f -",
                json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "@P@-pod", "namespace": "default"}}),
                "POST", "/pods/@P@-pod/eviction"),
            py("CoreV1Api", "create_namespaced_pod_eviction", json!({"name": "@P@-pod", "namespace": "default",
                "body": {"metadata": {"name": "@P@-pod", "namespace": "default"}}})),
            201, vec![]),
        case("eviction", "an eviction the budget forbids is 429",
            kubectl_stdin("create --raw /api/v1/namespaces/default/pods/@P@-guarded/eviction -f -",
                json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "@P@-guarded", "namespace": "default"}}),
                "POST", "/pods/@P@-guarded/eviction"),
            py("CoreV1Api", "create_namespaced_pod_eviction", json!({"name": "@P@-guarded", "namespace": "default",
                "body": {"metadata": {"name": "@P@-guarded", "namespace": "default"}}})),
            429, vec![]).says("disruption budget").python_body(vec![("/reason", eq("TooManyRequests")), ("/details/causes/0/reason", eq("DisruptionBudget"))]),
        case("errors", "malformed JSON is 400",
            kubectl_stdin("create --raw /api/v1/namespaces/default/configmaps -f -", json!("{not json"), "POST", "/configmaps"),
            raw("POST", &format!("{NS}/configmaps"), json!({"Content-Type": "application/json"}), Some("{not json")),
            400, vec![]).python_body(vec![("/kind", eq("Status")), ("/reason", eq("BadRequest"))]),
        case("errors", "a method the resource does not allow is 405",
            kubectl_stdin("create --raw /api/v1/namespaces/default/configmaps/@P@-cm -f -", json!({}), "POST", "/configmaps/@P@-cm"),
            raw("POST", &format!("{NS}/configmaps/@P@-cm"), json!({"Content-Type": "application/json"}), Some("{}")),
            405, vec![]).python_body(vec![("/reason", eq("MethodNotAllowed"))]),
        case("errors", "an unknown patch type is 415", None,
            raw("PATCH", &format!("{NS}/configmaps/@P@-cm"), json!({"Content-Type": "text/plain"}), Some("x")),
            415, vec![("/reason", eq("UnsupportedMediaType"))]),
        case("errors", "an unknown resource is 404", kubectl("get --raw /api/v1/namespaces/default/secrets", "GET", "/secrets"),
            raw("GET", &format!("{NS}/secrets"), json!({}), None),
            404, vec![]).python_body(vec![("/kind", eq("Status")), ("/reason", eq("NotFound"))]),
        case("pagination", "a limited list returns a continue token",
            kubectl("get pods --chunk-size=1 -o json", "GET", "/pods?limit=1"),
            py("CoreV1Api", "list_namespaced_pod", json!({"namespace": "default", "limit": 1})),
            200, vec![("/items/0", Check::Present)]).python_body(vec![("/items/1", Check::Absent), ("/metadata/continue", Check::Present)]),
        case("pagination", "resourceVersionMatch without resourceVersion is 400",
            kubectl("get --raw /api/v1/namespaces/default/pods?resourceVersionMatch=Exact", "GET", "resourceVersionMatch=Exact"),
            raw("GET", &format!("{NS}/pods?resourceVersionMatch=Exact"), json!({}), None),
            400, vec![]).python_body(vec![("/kind", eq("Status")), ("/reason", eq("BadRequest"))]),
        case("events", "events.k8s.io/v1 lists the core/v1 Events",
            kubectl("get events.v1.events.k8s.io -o json", "GET", "/apis/events.k8s.io/v1/namespaces/default/events"),
            raw("GET", "/apis/events.k8s.io/v1/namespaces/default/events", json!({}), None),
            200, vec![("/items/0/note", Check::Present), ("/items/0/regarding/name", Check::Present)]),
        case("exec", "exec is 501 NotImplemented saying what to use instead", None,
            raw("POST", &format!("{NS}/pods/@P@-pod/exec?command=ls&stdout=true"), json!({}), None),
            501, vec![("/reason", eq("NotImplemented")), ("/kind", eq("Status"))]),
        case("discovery", "the core group's resources", kubectl("api-resources --api-group=", "GET", "/api/v1"),
            py("CoreV1Api", "get_api_resources", json!({})),
            200, vec![]).says("pods").python_body(vec![("/groupVersion", eq("v1"))]),
        case("discovery", "the version", kubectl("version -o json", "GET", "/version"),
            py("VersionApi", "get_code", json!({})),
            200, vec![]).says("serverVersion").python_body(vec![("/gitVersion", Check::Present)]),
        case("openapi", "kubectl explain reads the v3 document", kubectl("explain deployment.spec.strategy", "GET", "/openapi/v3/apis/apps/v1"),
            raw("GET", "/openapi/v3", json!({}), None),
            200, vec![]).says("FIELD: strategy <DeploymentStrategy>").python_body(vec![("/paths/apis~1apps~1v1/serverRelativeURL", Check::Present)]),
        case("openapi", "the v2 document in JSON", kubectl("get --raw /openapi/v2", "GET", "/openapi/v2"),
            raw("GET", "/openapi/v2", json!({}), None),
            200, vec![("/swagger", eq("2.0")), ("/definitions/io.k8s.api.apps.v1.Deployment/x-kubernetes-group-version-kind/0/kind", eq("Deployment"))]),
        case("openapi", "v2 in protobuf is refused with 406 so clients fall back", None,
            raw("GET", "/openapi/v2", json!({"Accept": "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"}), None),
            406, vec![("/reason", eq("NotAcceptable"))]),
    ]
}

impl Case {
    fn says(mut self, text: &'static str) -> Self {
        self.kubectl_says = Some(text);
        self
    }

    /// Checks on the Python client's answer only (kubectl's output for the
    /// same request is text, or a different document).
    fn python_body(mut self, checks: Vec<(&'static str, Check)>) -> Self {
        self.python_checks = checks;
        self
    }
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

/// The claims docs/emulator.md makes: the first cells of the table under
/// [`CLAIMS_HEADING`].
fn documented_claims() -> Vec<String> {
    let doc = std::fs::read_to_string(repo_file(DOC)).unwrap();
    let start = doc
        .find(CLAIMS_HEADING)
        .unwrap_or_else(|| panic!("{DOC} has no {CLAIMS_HEADING:?} section"));
    doc[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .filter_map(|l| l.split('|').nth(1))
        .map(|c| c.trim().trim_matches('`').to_owned())
        .collect()
}

#[test]
fn docs_claims_each_have_a_case() {
    let claims = documented_claims();
    assert!(claims.len() >= 10, "too few claims parsed: {claims:?}");
    let cases = cases();
    for claim in &claims {
        let covered: Vec<&Case> = cases.iter().filter(|c| c.claim == claim).collect();
        assert!(
            !covered.is_empty(),
            "{DOC} claims `{claim}` but tests/it/conformance.rs has no case for it: add one to cases()"
        );
        assert!(
            covered.iter().any(|c| c.kubectl.is_some())
                || covered.iter().any(|c| c.python.is_some()),
            "`{claim}` has cases for neither client"
        );
    }
    for c in &cases {
        assert!(
            claims.iter().any(|claim| claim == c.claim),
            "case {:?} checks `{}`, which {DOC}'s {CLAIMS_HEADING:?} table does not list: add the row",
            c.name,
            c.claim
        );
    }
}

/// `@P@` → the client's prefix, everywhere in a string or JSON value.
fn subst(s: &str, p: &str) -> String {
    s.replace("@P@", p)
}

fn subst_json(v: &Value, p: &str) -> Value {
    serde_json::from_str(&subst(&v.to_string(), p)).unwrap()
}

/// The objects each client's cases work on.
fn fixtures(p: &str) -> Vec<Value> {
    let pod = |name: &str, labels: Value| {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}})
    };
    let objects = [
        pod("@P@-pod", json!({"app": "@P@-solo"})),
        pod("@P@-doomed", json!({"app": "@P@-doomed"})),
        pod("@P@-guarded", json!({"guard": "@P@"})),
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "@P@-pdb", "namespace": "default"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"guard": "@P@"}}}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "@P@-web", "namespace": "default"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "@P@-web"}},
                "template": {"metadata": {"labels": {"app": "@P@-web"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "@P@-cm", "namespace": "default"}, "data": {"a": "b"}}),
    ];
    objects.iter().map(|o| subst_json(o, p)).collect()
}

fn fixtures_ready(emu: &Emulator, p: &str) -> bool {
    use zdt_emulator::store::Resource;
    let pods = emu.store().list(Resource::Pods, Some("default"));
    let ready = |name: &str| {
        pods.iter()
            .any(|pod| pod["metadata"]["name"] == name && zdt_emulator::controllers::pod_ready(pod))
    };
    let web = pods
        .iter()
        .filter(|pod| pod["metadata"]["labels"]["app"] == format!("{p}-web"))
        .filter(|pod| zdt_emulator::controllers::pod_ready(pod))
        .count();
    let pdb = emu.store().get(
        Resource::PodDisruptionBudgets,
        "default",
        &format!("{p}-pdb"),
    );
    ready(&format!("{p}-pod"))
        && ready(&format!("{p}-doomed"))
        && ready(&format!("{p}-guarded"))
        && web == 2
        && pdb.is_some_and(|b| b["status"]["currentHealthy"] == 1)
}

/// `(method, url, status)` of each request in kubectl's `-v=6` log.
fn requests(log: &str) -> Vec<(String, String, u16)> {
    log.lines()
        .filter(|l| l.contains("round_trippers"))
        .filter_map(|l| {
            let mut w = l.split("] ").nth(1)?.split_whitespace();
            let method = w.next()?.to_owned();
            let url = w.next()?.to_owned();
            let code = w.next()?.parse().ok()?;
            Some((method, url, code))
        })
        .collect()
}

fn pointer_checks(
    what: &str,
    body: &Value,
    checks: &[(&'static str, Check)],
    p: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    for (ptr, check) in checks {
        let ptr = subst(ptr, p);
        let got = body.pointer(&ptr);
        let ok = match check {
            Check::Eq(want) => got == Some(&subst_json(want, p)),
            Check::Present => got.is_some(),
            Check::Absent => got.is_none(),
        };
        if !ok {
            out.push(format!("{what}: {ptr} should be {check:?}, is {got:?}"));
        }
    }
    out
}

async fn run_kubectl(kubeconfig: &Path, case: &Case, k: &Kubectl) -> Vec<String> {
    let p = "k";
    let what = format!("kubectl `{}` ({})", subst(&k.args.join(" "), p), case.name);
    let mut cmd = Command::new(KUBECTL);
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("-v=6")
        .args(
            k.args
                .iter()
                .map(|a| subst(a, p).replace("@REPO@", &repo_file("").to_string_lossy())),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("kubectl runs");
    let mut stdin = child.stdin.take().unwrap();
    if let Some(input) = &k.stdin {
        stdin.write_all(subst(input, p).as_bytes()).await.unwrap();
    }
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what} finishes within 30 s"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let (method, path) = (&k.request.0, subst(&k.request.1, p));
    let seen = requests(&stderr);
    let Some((_, _, code)) = seen
        .iter()
        .rev()
        .find(|(m, url, _)| m == method && path.split(' ').all(|f| url.contains(f)))
    else {
        return vec![format!(
            "{what}: made no {method} request matching {path:?}; requests: {seen:?}; exit {:?}\n{stdout}\n{stderr}",
            out.status.code()
        )];
    };
    let mut errs = Vec::new();
    if *code != case.status {
        errs.push(format!(
            "{what}: {method} {path} answered {code}, upstream answers {}",
            case.status
        ));
    }
    if out.status.success() != (case.status < 400) {
        errs.push(format!(
            "{what}: exit {:?} for a {} answer",
            out.status.code(),
            case.status
        ));
    }
    let said = format!(
        "{stdout}{}",
        stderr
            .lines()
            .filter(|l| !l.starts_with('I'))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // kubectl falls back quietly when it cannot use the OpenAPI documents
    // for a patch, but says so: any mention is a failure.
    if said.to_lowercase().contains("openapi") {
        errs.push(format!(
            "{what}: kubectl complains about the OpenAPI documents:\n{said}"
        ));
    }
    if let Some(text) = case.kubectl_says {
        let text = subst(text, p);
        if !said.contains(&text) {
            errs.push(format!("{what}: output lacks {text:?}:\n{said}"));
        }
    }
    if !case.body.is_empty() {
        match serde_json::from_str::<Value>(&stdout) {
            Ok(body) => errs.extend(pointer_checks(&what, &body, &case.body, p)),
            Err(e) => errs.push(format!("{what}: stdout is not JSON ({e}):\n{stdout}")),
        }
    }
    errs
}

/// python3 with the `kubernetes` package, or why not.
async fn python_client() -> Result<(), String> {
    let out = Command::new("python3")
        .args(["-c", "import kubernetes"])
        .output()
        .await
        .map_err(|e| format!("python3 does not run ({e})"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(
            "the Python client is not installed (`pip install kubernetes`; .ci/run installs it)"
                .into(),
        )
    }
}

async fn run_python(url: &str, cases: &[Case]) -> Vec<String> {
    let p = "py";
    let ops: Vec<Value> = cases
        .iter()
        .filter_map(|c| Some(json!({"name": c.name, "op": subst_json(c.python.as_ref()?, p)})))
        .collect();
    let mut child = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/python_client.py"))
        .arg(url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(Value::Array(ops).to_string().as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("the Python cases finish within 120 s")
        .unwrap();
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "the Python driver's output is not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let mut errs = Vec::new();
    for case in cases.iter().filter(|c| c.python.is_some()) {
        let what = format!("python: {}", case.name);
        let Some(r) = results.iter().find(|r| r["name"] == case.name) else {
            errs.push(format!("{what}: no result"));
            continue;
        };
        if let Some(e) = r.get("error") {
            errs.push(format!("{what}: the client failed: {e}"));
            continue;
        }
        if r["status"] != case.status {
            errs.push(format!(
                "{what}: answered {}, upstream answers {}: {}",
                r["status"], case.status, r["body"]
            ));
        }
        errs.extend(pointer_checks(&what, &r["body"], &case.body, p));
        errs.extend(pointer_checks(&what, &r["body"], &case.python_checks, p));
    }
    errs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_and_the_python_client_see_upstream_behaviour() {
    let have_kubectl = Path::new(KUBECTL).exists();
    let python = python_client().await;
    if !have_kubectl {
        eprintln!("SKIPPED (kubectl half): {KUBECTL} is not installed");
    }
    if let Err(why) = &python {
        eprintln!("SKIPPED (Python half): {why}");
    }
    if !have_kubectl && python.is_err() {
        return;
    }
    let emu = Emulator::simulated(2).await.unwrap();
    let timings = emu.config().timings;
    for p in ["k", "py"] {
        for obj in fixtures(p) {
            apply_object(emu.store(), &timings, obj).unwrap();
        }
    }
    super::support::until(&emu, 20, "the fixtures to be ready", |e| {
        fixtures_ready(e, "k") && fixtures_ready(e, "py")
    })
    .await;
    let cases = cases();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    emu.write_kubeconfig(&kubeconfig).unwrap();
    let mut failures = Vec::new();
    let (mut ran_kubectl, mut ran_python) = (0, 0);
    if have_kubectl {
        for case in &cases {
            if let Some(k) = &case.kubectl {
                failures.extend(run_kubectl(&kubeconfig, case, k).await);
                ran_kubectl += 1;
            }
        }
    }
    if python.is_ok() {
        failures.extend(run_python(&emu.url(), &cases).await);
        ran_python = cases.iter().filter(|c| c.python.is_some()).count();
    }
    eprintln!("conformance: {ran_kubectl} kubectl cases, {ran_python} Python cases");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    emu.shutdown().await;
}
