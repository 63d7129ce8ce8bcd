//! The OpenAPI documents kubectl reads before `apply`, `apply --server-side`
//! and `explain`: `/openapi/v2` (Swagger 2.0, JSON) and `/openapi/v3` (an
//! index plus one document per group/version), for exactly the kinds and
//! operations the emulator serves.
//!
//! The schemas are not written here: they come from k8s-openapi's
//! `JsonSchema` impls (its `schemars` feature), i.e. from the Kubernetes
//! type definitions the emulator already decodes objects with. What this
//! module adds is what the API server adds upstream: the
//! `x-kubernetes-group-version-kind` of each kind and operation, the list
//! kinds, the paths with their query parameters, and the strategic-merge
//! keys, taken from the table the emulator's own patch code merges by (so
//! kubectl computes patches the server applies the same way).
//!
//! The protobuf form of the documents is refused with 406 NotAcceptable:
//! client-go then falls back (for v2, to the legacy path, then to the
//! types compiled into kubectl), and everything kubectl needs is in the
//! JSON v3 documents.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use bytes::Bytes;
use http::{header, Method, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{DeleteOptions, ListMeta, Patch, Status};
use k8s_openapi::schemars::generate::{SchemaGenerator, SchemaSettings};
use k8s_openapi::schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

use super::kinds::{with_type, KindVisitor};
use super::patch::merge_key;
use super::{full, ApiError, Body};
use crate::store::{Resource, ResourceInfo, RESOURCES};

/// The Kubernetes release whose type definitions k8s-openapi was built
/// with (the workspace enables its `v1_34` feature).
const SCHEMA_RELEASE: &str = "v1.34.0";

const GVK: &str = "x-kubernetes-group-version-kind";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavour {
    /// Swagger 2.0: `#/definitions/`, body parameters, `consumes`.
    V2,
    /// OpenAPI 3.0: `#/components/schemas/`, `requestBody`, `$ref`
    /// siblings moved into `allOf` (as upstream publishes them).
    V3,
}

impl Flavour {
    fn ref_prefix(self) -> &'static str {
        match self {
            Flavour::V2 => "#/definitions/",
            Flavour::V3 => V3_REF_PREFIX,
        }
    }
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "version": version, "kind": kind})
}

/// What an operation does, as upstream's `x-kubernetes-action` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Get,
    List,
    Post,
    Put,
    Patch,
    Delete,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Get => "get",
            Action::List => "list",
            Action::Post => "post",
            Action::Put => "put",
            Action::Patch => "patch",
            Action::Delete => "delete",
        }
    }

    fn method(self) -> &'static str {
        match self {
            Action::Get | Action::List => "get",
            Action::Post => "post",
            Action::Put => "put",
            Action::Patch => "patch",
            Action::Delete => "delete",
        }
    }

    /// The operationId's verb (`readAppsV1NamespacedDeployment`).
    fn verb(self) -> &'static str {
        match self {
            Action::Get => "read",
            Action::List => "list",
            Action::Post => "create",
            Action::Put => "replace",
            Action::Patch => "patch",
            Action::Delete => "delete",
        }
    }

    /// The query parameters the emulator reads for this action.
    fn query(self) -> &'static [&'static str] {
        match self {
            Action::Get => &["pretty"],
            Action::List => &[
                "pretty",
                "labelSelector",
                "fieldSelector",
                "limit",
                "continue",
                "resourceVersion",
                "resourceVersionMatch",
                "timeoutSeconds",
                "watch",
                "allowWatchBookmarks",
                "sendInitialEvents",
            ],
            Action::Post | Action::Put => &["pretty", "dryRun", "fieldManager", "fieldValidation"],
            Action::Patch => &[
                "pretty",
                "dryRun",
                "fieldManager",
                "fieldValidation",
                "force",
            ],
            Action::Delete => &[
                "pretty",
                "dryRun",
                "gracePeriodSeconds",
                "propagationPolicy",
            ],
        }
    }
}

/// A query parameter's type and meaning.
fn query_param(name: &str) -> (&'static str, &'static str) {
    match name {
        "pretty" => ("string", "If 'true', the output is pretty printed."),
        "dryRun" => ("string", "When present (the only valid value is All), the modification is checked and answered but not persisted."),
        "fieldManager" => ("string", "A name for the actor making the change (accepted; the emulator keeps no managedFields)."),
        "fieldValidation" => ("string", "What to do with fields the type does not know: Ignore, Warn, or Strict (400 BadRequest naming every unknown field)."),
        "force" => ("boolean", "Force an apply request to take over conflicting fields."),
        "labelSelector" => ("string", "A selector to restrict the returned objects by their labels."),
        "fieldSelector" => ("string", "A selector to restrict the returned objects by their fields."),
        "limit" => ("integer", "The maximum number of objects to return in one list call."),
        "continue" => ("string", "The continue token of the previous page of a paginated list."),
        "resourceVersion" => ("string", "The resourceVersion a list or watch starts from."),
        "resourceVersionMatch" => ("string", "How resourceVersion applies to a list: Exact or NotOlderThan."),
        "timeoutSeconds" => ("integer", "How long a list or watch call may last."),
        "watch" => ("boolean", "Watch for changes instead of listing."),
        "allowWatchBookmarks" => ("boolean", "Ask for BOOKMARK watch events."),
        "sendInitialEvents" => ("boolean", "Start a watch with the current state as ADDED events, closed by a bookmark."),
        "gracePeriodSeconds" => ("integer", "How long the object may take to terminate; 0 deletes at once."),
        "propagationPolicy" => ("string", "Whether and how dependents are garbage collected: Orphan, Background or Foreground."),
        _ => ("string", ""),
    }
}

/// One operation of a path.
struct Op {
    action: Action,
    id: String,
    description: String,
    gvk: Value,
    /// The request body's schema (`Patch` for patches).
    body: Option<Value>,
    response: Value,
    path_params: &'static [&'static str],
}

const PATCH_TYPES: [&str; 4] = [
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

impl Op {
    fn render(&self, flavour: Flavour, tag: &str) -> Value {
        let mut params: Vec<Value> = Vec::new();
        for p in self.path_params {
            let desc = match *p {
                "namespace" => "object name and auth scope, such as for teams and projects",
                _ => "name of the object",
            };
            params.push(match flavour {
                Flavour::V2 => json!({"name": p, "in": "path", "required": true,
                    "type": "string", "uniqueItems": true, "description": desc}),
                Flavour::V3 => json!({"name": p, "in": "path", "required": true,
                    "schema": {"type": "string", "uniqueItems": true}, "description": desc}),
            });
        }
        for q in self.action.query() {
            let (ty, desc) = query_param(q);
            params.push(match flavour {
                Flavour::V2 => json!({"name": q, "in": "query", "type": ty,
                    "uniqueItems": true, "description": desc}),
                Flavour::V3 => json!({"name": q, "in": "query",
                    "schema": {"type": ty, "uniqueItems": true}, "description": desc}),
            });
        }
        let consumes: Vec<&str> = match self.action {
            Action::Patch => PATCH_TYPES.to_vec(),
            _ => vec!["application/json", "application/yaml"],
        };
        let codes: &[&str] = match self.action {
            Action::Post => &["200", "201", "202"],
            Action::Put | Action::Patch => &["200", "201"],
            Action::Delete => &["200", "202"],
            Action::Get | Action::List => &["200"],
        };
        let mut op = json!({
            "description": self.description,
            "operationId": self.id,
            "tags": [tag],
            "x-kubernetes-action": self.action.name(),
            GVK: self.gvk,
        });
        let mut responses = Map::new();
        for code in codes {
            let desc = match *code {
                "201" => "Created",
                "202" => "Accepted",
                _ => "OK",
            };
            responses.insert(
                (*code).to_owned(),
                match flavour {
                    Flavour::V2 => json!({"description": desc, "schema": self.response}),
                    Flavour::V3 => json!({"description": desc, "content": {
                        "application/json": {"schema": self.response},
                        "application/yaml": {"schema": self.response},
                    }}),
                },
            );
        }
        responses.insert("401".into(), json!({"description": "Unauthorized"}));
        op["responses"] = Value::Object(responses);
        match flavour {
            Flavour::V2 => {
                if let Some(body) = &self.body {
                    params.push(
                        json!({"name": "body", "in": "body", "required": true, "schema": body}),
                    );
                    op["consumes"] = json!(consumes);
                }
                op["produces"] = json!(["application/json", "application/yaml"]);
                op["schemes"] = json!(["https"]);
            }
            Flavour::V3 => {
                if let Some(body) = &self.body {
                    let content: Map<String, Value> = consumes
                        .iter()
                        .map(|c| ((*c).to_owned(), json!({"schema": body})))
                        .collect();
                    op["requestBody"] = json!({"content": content, "required": true});
                }
            }
        }
        op["parameters"] = Value::Array(params);
        op
    }
}

/// Builds one document: the schemas it references and its paths.
struct Builder {
    flavour: Flavour,
    gen: SchemaGenerator,
    /// Definition name → the kinds it is (Status and DeleteOptions serve
    /// several groups).
    gvks: BTreeMap<String, Vec<Value>>,
    lists: Map<String, Value>,
    paths: Map<String, Value>,
}

/// Registers the k8s-openapi type of a resource and returns its name.
struct Register<'a>(&'a mut SchemaGenerator);

impl KindVisitor for Register<'_> {
    type Out = String;
    fn visit<T: DeserializeOwned + JsonSchema>(self) -> String {
        self.0.subschema_for::<T>();
        T::schema_name().into_owned()
    }
}

fn camel(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

impl Builder {
    fn new(flavour: Flavour) -> Builder {
        let settings = match flavour {
            Flavour::V3 => SchemaSettings::openapi3().with(|s| s.meta_schema = None),
            // Swagger 2.0 keeps `$ref` siblings (descriptions), as upstream's
            // v2 document does.
            Flavour::V2 => SchemaSettings::draft07().with(|s| {
                s.meta_schema = None;
                s.transforms.clear();
            }),
        };
        Builder {
            flavour,
            gen: settings.into_generator(),
            gvks: BTreeMap::new(),
            lists: Map::new(),
            paths: Map::new(),
        }
    }

    fn reference(&self, name: &str) -> Value {
        json!({"$ref": format!("{}{name}", self.flavour.ref_prefix())})
    }

    fn named<T: JsonSchema>(&mut self, kinds: Vec<Value>) -> Value {
        self.gen.subschema_for::<T>();
        let name = T::schema_name().into_owned();
        self.gvks.entry(name.clone()).or_default().extend(kinds);
        self.reference(&name)
    }

    fn add_path(&mut self, path: &str, op: Op, tag: &str) {
        let rendered = op.render(self.flavour, tag);
        let entry = self
            .paths
            .entry(path.to_owned())
            .or_insert_with(|| json!({}));
        entry[op.action.method()] = rendered;
    }

    /// `<Kind>List`, which k8s-openapi has no schema for (its `List<T>` is
    /// generic): the shape every list kind has upstream.
    fn add_list_kind(&mut self, info: &ResourceInfo, name: &str, obj: &Value) -> Value {
        let (g, v) = (info.group, info.version);
        let list_name = format!("{name}List");
        let list_kind = format!("{}List", info.kind);
        let list_meta = self.named::<ListMeta>(Vec::new());
        self.lists.insert(
            list_name.clone(),
            json!({
                "description": format!("{list_kind} is a list of {}.", info.kind),
                "type": "object",
                "properties": {
                    "apiVersion": {"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."},
                    "kind": {"type": "string", "description": "Kind is a string value representing the REST resource this object represents."},
                    "items": {"type": "array", "items": obj, "description": format!("The {} objects.", info.kind)},
                    "metadata": list_meta,
                },
                "required": ["items"],
                GVK: [gvk(g, v, &list_kind)],
            }),
        );
        self.reference(&list_name)
    }

    fn add_resource(&mut self, info: &ResourceInfo) {
        let (g, v) = (info.group, info.version);
        let kind_gvk = gvk(g, v, info.kind);
        let name = with_type(info.resource, Register(&mut self.gen));
        self.gvks
            .entry(name.clone())
            .or_default()
            .push(kind_gvk.clone());
        let obj = self.reference(&name);
        let list = self.add_list_kind(info, &name, &obj);
        let patch = self.named::<Patch>(Vec::new());
        let delete_options = self.named::<DeleteOptions>(vec![gvk(g, v, "DeleteOptions")]);
        let prefix = if g.is_empty() {
            format!("/api/{v}")
        } else {
            format!("/apis/{g}/{v}")
        };
        let tag = if g.is_empty() {
            format!("core_{v}")
        } else {
            format!("{}_{v}", g.split('.').next().unwrap_or(g))
        };
        let group_id = camel(if g.is_empty() {
            "core"
        } else {
            g.split('.').next().unwrap_or(g)
        });
        let scope = if info.namespaced { "Namespaced" } else { "" };
        let id = |a: Action, suffix: &str| {
            format!(
                "{}{group_id}{}{scope}{}{suffix}",
                a.verb(),
                camel(v),
                info.kind
            )
        };
        let (collection, item_params): (String, &'static [&'static str]) = if info.namespaced {
            (
                format!("{prefix}/namespaces/{{namespace}}/{}", info.plural),
                &["name", "namespace"],
            )
        } else {
            (format!("{prefix}/{}", info.plural), &["name"])
        };
        let coll_params: &'static [&'static str] =
            if info.namespaced { &["namespace"] } else { &[] };
        let item = format!("{collection}/{{name}}");
        let kind = info.kind;
        let op =
            |action: Action, suffix: &str, description: String, body, response: &Value, params| {
                Op {
                    action,
                    id: id(action, suffix),
                    description,
                    gvk: kind_gvk.clone(),
                    body,
                    response: response.clone(),
                    path_params: params,
                }
            };
        // read, replace and patch of an object or a subresource.
        let read_write = |path: &str, suffix: &str, of: &str, schema: &Value, gvk: &Value| {
            [
                (Action::Get, format!("read {of}"), None),
                (Action::Put, format!("replace {of}"), Some(schema.clone())),
                (
                    Action::Patch,
                    format!("partially update {of}"),
                    Some(patch.clone()),
                ),
            ]
            .map(|(action, description, body)| {
                let mut o = op(action, suffix, description, body, schema, item_params);
                o.gvk = gvk.clone();
                (path.to_owned(), o)
            })
        };
        let mut ops = vec![
            (
                collection.clone(),
                op(
                    Action::List,
                    "",
                    format!("list or watch objects of kind {kind}"),
                    None,
                    &list,
                    coll_params,
                ),
            ),
            (
                collection.clone(),
                op(
                    Action::Post,
                    "",
                    format!("create a {kind}"),
                    Some(obj.clone()),
                    &obj,
                    coll_params,
                ),
            ),
            (
                item.clone(),
                op(
                    Action::Delete,
                    "",
                    format!("delete a {kind}"),
                    Some(delete_options),
                    &obj,
                    item_params,
                ),
            ),
        ];
        ops.extend(read_write(
            &item,
            "",
            &format!("the specified {kind}"),
            &obj,
            &kind_gvk,
        ));
        if info.status {
            let of = format!("status of the specified {kind}");
            ops.extend(read_write(
                &format!("{item}/status"),
                "Status",
                &of,
                &obj,
                &kind_gvk,
            ));
        }
        if info.namespaced {
            let mut all = op(
                Action::List,
                "",
                format!("list or watch objects of kind {kind}"),
                None,
                &list,
                &[],
            );
            all.id = format!("list{group_id}{}{kind}ForAllNamespaces", camel(v));
            ops.push((format!("{prefix}/{}", info.plural), all));
        }
        if matches!(info.resource, Resource::Deployments | Resource::ReplicaSets) {
            let scale_gvk = gvk("autoscaling", "v1", "Scale");
            let scale =
                self.named::<k8s_openapi::api::autoscaling::v1::Scale>(vec![scale_gvk.clone()]);
            let of = format!("scale of the specified {kind}");
            ops.extend(read_write(
                &format!("{item}/scale"),
                "Scale",
                &of,
                &scale,
                &scale_gvk,
            ));
        }
        if info.resource == Resource::Pods {
            let eviction_gvk = gvk("policy", "v1", "Eviction");
            let eviction =
                self.named::<k8s_openapi::api::policy::v1::Eviction>(vec![eviction_gvk.clone()]);
            let mut o = op(
                Action::Post,
                "Eviction",
                "create eviction of a Pod".into(),
                Some(eviction.clone()),
                &eviction,
                item_params,
            );
            o.gvk = eviction_gvk;
            ops.push((format!("{item}/eviction"), o));
        }
        for (path, o) in ops {
            self.add_path(&path, o, &tag);
        }
        self.named::<Status>(vec![gvk("", "v1", "Status")]);
    }

    /// The schemas: k8s-openapi's, plus the list kinds, each top-level
    /// kind marked with its group/version/kind and every list the patch
    /// code merges by key marked with that key.
    fn definitions(&mut self) -> Map<String, Value> {
        let mut defs = self.gen.take_definitions(true);
        defs.append(&mut self.lists);
        for (name, kinds) in &self.gvks {
            if kinds.is_empty() {
                continue;
            }
            let mut kinds = kinds.clone();
            kinds.dedup();
            if let Some(d) = defs.get_mut(name) {
                d[GVK] = Value::Array(kinds);
            }
        }
        annotate_merge_keys(&mut defs, self.flavour.ref_prefix());
        defs
    }
}

/// Marks each list of objects with the merge key the emulator's strategic
/// merge uses for it ([`merge_key`]), as upstream marks them with the Go
/// types' `patchMergeKey` tags.
fn annotate_merge_keys(defs: &mut Map<String, Value>, prefix: &str) {
    // An object with the item type's fields, for merge_key's look at which
    // fields an element has (container ports vs Service ports).
    let samples: BTreeMap<String, Value> = defs
        .iter()
        .filter_map(|(name, d)| {
            let props = d.get("properties")?.as_object()?;
            let sample: Map<String, Value> =
                props.keys().map(|k| (k.clone(), Value::Null)).collect();
            Some((name.clone(), Value::Object(sample)))
        })
        .collect();
    for d in defs.values_mut() {
        let Some(props) = d.get_mut("properties").and_then(Value::as_object_mut) else {
            continue;
        };
        for (field, p) in props.iter_mut() {
            let key = p
                .get("items")
                .and_then(|i| i.get("$ref"))
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix(prefix))
                .and_then(|item| samples.get(item))
                .and_then(|sample| merge_key(field, sample));
            if let (Some(key), Some(p)) = (key, p.as_object_mut()) {
                p.insert("x-kubernetes-patch-merge-key".into(), json!(key));
                p.insert("x-kubernetes-patch-strategy".into(), json!("merge"));
            }
        }
    }
}

fn info(title_suffix: &str) -> Value {
    json!({"title": format!("Kubernetes{title_suffix}"), "version": SCHEMA_RELEASE})
}

/// The group/versions the emulator serves, as `(group, version)`.
fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut gvs: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES {
        if !gvs.contains(&(r.group, r.version)) {
            gvs.push((r.group, r.version));
        }
    }
    gvs
}

/// A group/version's key in the v3 index: `api/v1`, `apis/apps/v1`.
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn v3_document(group: &str, version: &str) -> Value {
    let mut b = Builder::new(Flavour::V3);
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        b.add_resource(r);
    }
    let schemas = b.definitions();
    json!({
        "openapi": "3.0.0",
        "info": info(""),
        "paths": b.paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"BearerToken": {"type": "apiKey", "description": "Bearer Token authentication", "name": "authorization", "in": "header"}},
        },
    })
}

fn v2_document() -> Value {
    let mut b = Builder::new(Flavour::V2);
    for r in RESOURCES {
        b.add_resource(r);
    }
    let definitions = b.definitions();
    json!({
        "swagger": "2.0",
        "info": info(""),
        "paths": b.paths,
        "definitions": definitions,
        "securityDefinitions": {"BearerToken": {"type": "apiKey", "description": "Bearer Token authentication", "name": "authorization", "in": "header"}},
        "security": [{"BearerToken": []}],
    })
}

/// One group/version's v3 document, parsed and serialised.
struct V3Doc {
    doc: Value,
    bytes: Bytes,
    hash: String,
}

/// Every document, built once per process (they depend on nothing but the
/// compiled-in types).
struct Docs {
    v2: Bytes,
    v3_index: Bytes,
    v3: BTreeMap<String, V3Doc>,
}

/// FNV-1a: the index's `?hash=` tells a client's cache that a document
/// changed; any stable digest does.
fn digest(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016X}")
}

fn docs() -> &'static Docs {
    static DOCS: OnceLock<Docs> = OnceLock::new();
    DOCS.get_or_init(|| {
        let mut v3 = BTreeMap::new();
        let mut index = Map::new();
        for (g, v) in group_versions() {
            let doc = v3_document(g, v);
            let bytes = Bytes::from(serde_json::to_vec(&doc).unwrap_or_default());
            let hash = digest(&bytes);
            let path = gv_path(g, v);
            index.insert(
                path.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}),
            );
            v3.insert(path, V3Doc { doc, bytes, hash });
        }
        Docs {
            v2: Bytes::from(serde_json::to_vec(&v2_document()).unwrap_or_default()),
            v3_index: Bytes::from(serde_json::to_vec(&json!({"paths": index})).unwrap_or_default()),
            v3,
        }
    })
}

/// True when `accept` lets the server answer JSON (no header, `*/*`,
/// `application/*`, `application/json`, with or without parameters).
fn accepts_json(accept: Option<&str>) -> bool {
    accept.is_none_or(|a| {
        a.split(',').any(|m| {
            matches!(
                m.split(';').next().unwrap_or("").trim(),
                "" | "*/*" | "application/*" | "application/json"
            )
        })
    })
}

/// Serve `GET /openapi/<rest>` (`v2`, `v3`, `v3/api/v1`, `v3/apis/G/V`).
pub(super) fn serve(
    method: &Method,
    rest: &str,
    accept: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    if method != Method::GET && method != Method::HEAD {
        return Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("the OpenAPI documents are read-only: {method} is not allowed (use GET)"),
        ));
    }
    let docs = docs();
    let (bytes, etag) = match rest {
        "v2" => (&docs.v2, None),
        "v3" => (&docs.v3_index, None),
        _ => {
            let doc = rest
                .strip_prefix("v3/")
                .and_then(|gv| docs.v3.get(gv))
                .ok_or_else(|| {
                    ApiError::not_found(format!(
                        "no OpenAPI document at /openapi/{rest}: the emulator serves /openapi/v2, /openapi/v3 and /openapi/v3/{{{}}}",
                        docs.v3.keys().cloned().collect::<Vec<_>>().join(",")
                    ))
                })?;
            (&doc.bytes, Some(doc.hash.as_str()))
        }
    };
    if !accepts_json(accept) {
        return Err(ApiError::new(
            406,
            "NotAcceptable",
            format!(
                "the emulator serves its OpenAPI documents as application/json only, not {:?} (clients fall back to JSON or to their built-in types)",
                accept.unwrap_or("")
            ),
        ));
    }
    let mut resp = Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(hash) = etag {
        resp = resp.header(header::ETAG, format!("\"{hash}\""));
    }
    Ok(resp.body(full(bytes.clone())).expect("valid response"))
}

/// The schemas of the v3 document for `resource`'s group/version, and
/// the one of `resource`'s kind.
pub(super) fn kind_schema(
    resource: Resource,
) -> Option<(&'static Map<String, Value>, &'static Value)> {
    let info = resource.info();
    let doc = docs().v3.get(&gv_path(info.group, info.version))?;
    let schemas = doc.doc["components"]["schemas"].as_object()?;
    let want = gvk(info.group, info.version, info.kind);
    let root = schemas
        .values()
        .find(|s| s[GVK].as_array().is_some_and(|k| k.contains(&want)))?;
    Some((schemas, root))
}

/// The `$ref` prefix of the v3 documents' schemas.
pub(super) const V3_REF_PREFIX: &str = "#/components/schemas/";

#[cfg(test)]
mod tests {
    use super::*;

    fn v3(gv: &str) -> &'static Value {
        &docs().v3[gv].doc
    }

    #[test]
    fn every_served_kind_has_a_schema_with_its_group_version_kind() {
        for r in RESOURCES {
            let doc = v3(&gv_path(r.group, r.version));
            let want = gvk(r.group, r.version, r.kind);
            let found = doc["components"]["schemas"]
                .as_object()
                .unwrap()
                .values()
                .any(|s| s[GVK].as_array().is_some_and(|k| k.contains(&want)));
            assert!(found, "{} has no schema marked {want}", r.kind);
        }
    }

    #[test]
    fn patch_operations_name_their_kind_and_take_strategic_merge_and_field_validation() {
        let doc = v3("apis/apps/v1");
        let op = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(op[GVK], gvk("apps", "v1", "Deployment"));
        assert!(op["requestBody"]["content"]["application/strategic-merge-patch+json"].is_object());
        let params: Vec<&str> = op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert!(params.contains(&"fieldValidation"), "{params:?}");
        assert!(params.contains(&"dryRun"), "{params:?}");
    }

    #[test]
    fn lists_the_server_merges_by_key_carry_that_key() {
        let schemas = &v3("api/v1")["components"]["schemas"];
        let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        let ports = &schemas["io.k8s.api.core.v1.Container"]["properties"]["ports"];
        assert_eq!(ports["x-kubernetes-patch-merge-key"], "containerPort");
        let svc_ports = &schemas["io.k8s.api.core.v1.ServiceSpec"]["properties"]["ports"];
        assert_eq!(svc_ports["x-kubernetes-patch-merge-key"], "port");
    }

    #[test]
    fn v3_refs_point_into_components_and_every_ref_resolves() {
        for (path, d) in &docs().v3 {
            let text = String::from_utf8_lossy(&d.bytes).into_owned();
            let schemas = d.doc["components"]["schemas"].as_object().unwrap();
            for r in text.split("\"$ref\":\"").skip(1) {
                let r = &r[..r.find('"').unwrap()];
                let name = r
                    .strip_prefix("#/components/schemas/")
                    .unwrap_or_else(|| panic!("{path}: ref {r} outside components"));
                assert!(schemas.contains_key(name), "{path}: dangling ref {r}");
            }
        }
    }

    #[test]
    fn v2_has_definitions_for_every_kind() {
        let v2: Value = serde_json::from_slice(&docs().v2).unwrap();
        assert_eq!(v2["swagger"], "2.0");
        let d = &v2["definitions"]["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(d[GVK][0], gvk("apps", "v1", "Deployment"));
        assert!(
            v2["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/eviction"]["post"].is_object()
        );
    }

    #[test]
    fn protobuf_only_requests_are_refused_so_clients_fall_back() {
        assert!(accepts_json(None));
        assert!(accepts_json(Some("application/json, */*")));
        assert!(!accepts_json(Some(
            "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
        )));
        let e = serve(
            &Method::GET,
            "v2",
            Some("application/com.github.proto-openapi.spec.v2@v1.0+protobuf"),
        )
        .unwrap_err();
        assert_eq!((e.code, e.reason), (406, "NotAcceptable"));
    }
}
