//! `fieldValidation` on writes: with `Strict` (what kubectl sends once the
//! OpenAPI documents say the server takes it), a body with fields its kind
//! does not have is refused with 400, naming each, as upstream's strict
//! decoder does. The kinds' fields are read from the same OpenAPI schemas
//! the emulator serves ([`super::openapi`]).

use serde_json::{Map, Value};

use super::openapi::{kind_schema, V3_REF_PREFIX};
use super::ApiError;
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

/// `fieldValidation=Strict` on a create, update or patch: 400 BadRequest
/// naming every unknown field, worded as upstream's strict decoder
/// (`Warn` and `Ignore` accept them, as the emulator always did).
pub(super) fn check_strict(
    resource: Resource,
    validation: Option<&str>,
    body: &Value,
) -> Result<(), ApiError> {
    match validation {
        Some("Strict") => {}
        None | Some("") | Some("Ignore") | Some("Warn") => return Ok(()),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "invalid fieldValidation {other:?}: use Ignore, Warn or Strict"
            )))
        }
    }
    let unknown = unknown_fields(resource, body);
    if unknown.is_empty() {
        return Ok(());
    }
    let info = resource.info();
    let fields: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
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
        let err = check_strict(Resource::Deployments, Some("Strict"), &d).unwrap_err();
        assert_eq!(err.code, 400);
        assert!(
            err.message.starts_with("Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: unknown field \"spec.replica\""),
            "{}",
            err.message
        );
        assert!(check_strict(Resource::Deployments, Some("Warn"), &d).is_ok());
        assert!(check_strict(Resource::Deployments, Some("Bogus"), &d).is_err());
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
