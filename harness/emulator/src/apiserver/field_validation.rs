//! `fieldValidation` on writes: with `Strict` (what kubectl sends once the
//! OpenAPI documents say the server takes it), a body with fields its kind
//! does not have is refused with 400, naming each, as upstream's strict
//! decoder does; with `Warn` (the default) it is accepted with a `Warning`
//! header per field. The kinds' fields are read from the same OpenAPI schemas
//! the emulator serves ([`super::openapi`]).

use http::{header, HeaderValue, Response};
use serde_json::{Map, Value};

use super::openapi::{kind_schema, V3_REF_PREFIX};
use super::{ApiError, Body};
use crate::store::Resource;

/// Resolve `$ref` (and a lone `allOf` wrapper) against `schemas`.
fn resolve<'a>(schemas: &'a Map<String, Value>, mut schema: &'a Value) -> &'a Value {
    for _ in 0..8 {
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            match r.strip_prefix(V3_REF_PREFIX).and_then(|n| schemas.get(n)) {
                Some(s) => schema = s,
                None => return schema,
            }
        } else if let (None, Some([inner])) = (
            schema.get("properties"),
            schema
                .get("allOf")
                .and_then(Value::as_array)
                .map(Vec::as_slice),
        ) {
            schema = inner;
        } else {
            return schema;
        }
    }
    schema
}

fn unknown_in(
    schemas: &Map<String, Value>,
    schema: &Value,
    value: &Value,
    path: &str,
    out: &mut Vec<String>,
) {
    let schema = resolve(schemas, schema);
    let join = |k: &str| {
        if path.is_empty() {
            k.to_owned()
        } else {
            format!("{path}.{k}")
        }
    };
    match value {
        Value::Object(fields) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, v) in fields {
                    // Strategic-merge directives (`$patch`, `$setElementOrder/…`).
                    if k.starts_with('$') {
                        continue;
                    }
                    match props.get(k) {
                        Some(s) => unknown_in(schemas, s, v, &join(k), out),
                        None => out.push(join(k)),
                    }
                }
            } else if let Some(inner) = schema.get("additionalProperties").filter(|a| a.is_object())
            {
                for (k, v) in fields {
                    unknown_in(schemas, inner, v, &join(k), out);
                }
            }
        }
        Value::Array(items) => {
            if let Some(inner) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    unknown_in(schemas, inner, v, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// The fields of `obj` (a body for `resource`) that its Kubernetes type
/// does not have, as upstream's strict decoder names them
/// (`spec.template.spec.containers[0].imagee`).
fn unknown_fields(resource: Resource, obj: &Value) -> Vec<String> {
    let Some((schemas, root)) = kind_schema(resource) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    unknown_in(schemas, root, obj, "", &mut out);
    out
}

/// The unknown fields of a write that `fieldValidation` let through, or
/// another warning the API answers with.
#[derive(Debug, Default)]
pub(super) struct Warnings(Vec<String>);

impl Warnings {
    /// One warning of the API's own.
    pub(super) fn of(text: &str) -> Warnings {
        Warnings(vec![text.to_owned()])
    }

    /// `resp` with one `Warning: 299 - "unknown field \"…\""` header per
    /// unknown field, as upstream answers (kubectl prints them).
    pub(super) fn attach(self, mut resp: Response<Body>) -> Response<Body> {
        for w in self.0 {
            let text = format!("299 - {}", Value::String(w));
            if let Ok(v) = HeaderValue::from_str(&text) {
                resp.headers_mut().append(header::WARNING, v);
            }
        }
        resp
    }
}

/// What `fieldValidation` makes of the unknown fields of a create, update
/// or patch body: `Strict` refuses them (400 BadRequest naming each, worded
/// as upstream's strict decoder), `Warn` — upstream's default — lets them
/// through with a warning each, `Ignore` says nothing.
pub(super) fn check(
    resource: Resource,
    validation: Option<&str>,
    body: &Value,
) -> Result<Warnings, ApiError> {
    let strict = match validation {
        Some("Strict") => true,
        None | Some("") | Some("Warn") => false,
        Some("Ignore") => return Ok(Warnings::default()),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "invalid fieldValidation {other:?}: use Ignore, Warn or Strict"
            )))
        }
    };
    let fields: Vec<String> = unknown_fields(resource, body)
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    if !strict || fields.is_empty() {
        return Ok(Warnings(fields));
    }
    let info = resource.info();
    Err(ApiError::bad_request(format!(
        "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
        fields.join(", "),
        kind = info.kind,
        version = info.version,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strict_names_unknown_fields_with_their_path() {
        let d = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "x", "labels": {"a": "b"}},
            "spec": {"replica": 2, "selector": {"matchLabels": {"a": "b"}},
                "template": {"spec": {"containers": [{"name": "c", "imagee": "nginx"}]}}},
        });
        assert_eq!(
            unknown_fields(Resource::Deployments, &d),
            vec!["spec.replica", "spec.template.spec.containers[0].imagee"]
        );
        let err = check(Resource::Deployments, Some("Strict"), &d).unwrap_err();
        assert_eq!(err.code, 400);
        assert!(
            err.message.starts_with("Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: unknown field \"spec.replica\""),
            "{}",
            err.message
        );
        let warned = check(Resource::Deployments, None, &d).unwrap();
        let resp = warned.attach(Response::new(super::super::full("")));
        let headers: Vec<&str> = resp
            .headers()
            .get_all(header::WARNING)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(
            headers,
            [
                r#"299 - "unknown field \"spec.replica\"""#,
                r#"299 - "unknown field \"spec.template.spec.containers[0].imagee\"""#
            ]
        );
        assert!(check(Resource::Deployments, Some("Ignore"), &d)
            .unwrap()
            .0
            .is_empty());
        assert!(check(Resource::Deployments, Some("Bogus"), &d).is_err());
    }

    #[test]
    fn a_known_object_has_no_unknown_fields() {
        let svc = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "s", "annotations": {"x": "y"}},
            "spec": {"selector": {"app": "a"}, "ports": [{"port": 80, "targetPort": "http"}],
                     "$setElementOrder/ports": [{"port": 80}]},
        });
        assert_eq!(
            unknown_fields(Resource::Services, &svc),
            Vec::<String>::new()
        );
    }
}
