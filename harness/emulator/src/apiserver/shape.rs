//! The types the real API server's decoder enforces before anything else
//! looks at a body: `metadata` is an object, its names are strings, labels
//! and annotations map strings to strings, `spec` and `status` are objects.
//! Checked up front so every later step can index the object safely, and so
//! a client gets the 400 that a real cluster would give.

use k8s_openapi::schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::kinds::{with_type, KindVisitor};
use super::ApiError;
use crate::store::Resource;

/// `Ok` when `obj` decodes as the Kubernetes type `resource` holds: the
/// controllers and every kube-rs client read it back as that type, so an
/// object that does not decode (a port given as a word, a list given as a
/// map) must be refused at the door, naming the field, as the real API
/// server refuses it, rather than break every later read.
pub fn check_typed(resource: Resource, obj: &Value) -> Result<(), ApiError> {
    check(obj)?;
    match resource {
        // Events are stored as sent and read by nobody in zdt.
        Resource::CoreEvents | Resource::Events => Ok(()),
        _ => with_type(resource, Decodes(obj)),
    }
}

struct Decodes<'a>(&'a Value);

impl KindVisitor for Decodes<'_> {
    type Out = Result<(), ApiError>;
    fn visit<T: DeserializeOwned + JsonSchema>(self) -> Self::Out {
        decode::<T>(self.0)
    }
}

fn decode<T: DeserializeOwned>(obj: &Value) -> Result<(), ApiError> {
    // The kind/apiVersion fields are checked by the route; the typed decode
    // needs them to match the type, so take them out of the picture.
    let mut body = obj.clone();
    if let Some(m) = body.as_object_mut() {
        m.remove("kind");
        m.remove("apiVersion");
    }
    match serde_path_to_error::deserialize::<_, T>(body) {
        Ok(_) => Ok(()),
        Err(e) => {
            let path = e.path().to_string();
            Err(bad(format!("`{path}`: {}", e.into_inner())))
        }
    }
}

/// `Ok` when `obj` has the shape every handler relies on.
pub fn check(obj: &Value) -> Result<(), ApiError> {
    let Some(map) = obj.as_object() else {
        return Err(bad("the request body must be a JSON object"));
    };
    for field in ["apiVersion", "kind"] {
        if map.get(field).is_some_and(|v| !v.is_string()) {
            return Err(bad(format!("`{field}` must be a string")));
        }
    }
    for field in ["spec", "status"] {
        if map
            .get(field)
            .is_some_and(|v| !(v.is_object() || v.is_null()))
        {
            return Err(bad(format!(
                "`{field}` must be an object, got {}",
                type_name(&map[field])
            )));
        }
    }
    let Some(meta) = map.get("metadata") else {
        return Ok(());
    };
    if meta.is_null() {
        return Ok(());
    }
    let Some(meta) = meta.as_object() else {
        return Err(bad(format!(
            "`metadata` must be an object, got {}",
            type_name(meta)
        )));
    };
    for field in [
        "name",
        "namespace",
        "generateName",
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
    ] {
        if meta
            .get(field)
            .is_some_and(|v| !(v.is_string() || v.is_null()))
        {
            return Err(bad(format!(
                "`metadata.{field}` must be a string, got {}",
                type_name(&meta[field])
            )));
        }
    }
    for field in ["generation", "deletionGracePeriodSeconds"] {
        if meta
            .get(field)
            .is_some_and(|v| !(v.is_i64() || v.is_u64() || v.is_null()))
        {
            return Err(bad(format!("`metadata.{field}` must be a whole number")));
        }
    }
    for field in ["labels", "annotations"] {
        match meta.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                if let Some((k, v)) = m.iter().find(|(_, v)| !v.is_string()) {
                    return Err(bad(format!(
                        "`metadata.{field}.{k}` must be a string, got {}",
                        type_name(v)
                    )));
                }
            }
            Some(other) => {
                return Err(bad(format!(
                    "`metadata.{field}` must be an object of strings, got {}",
                    type_name(other)
                )))
            }
        }
    }
    for field in ["finalizers", "ownerReferences"] {
        if meta
            .get(field)
            .is_some_and(|v| !(v.is_array() || v.is_null()))
        {
            return Err(bad(format!("`metadata.{field}` must be a list")));
        }
    }
    Ok(())
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message.into())
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_real_objects_and_refuses_wrong_types_by_path() {
        check(&json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"app": "web"}}, "spec": {}}))
        .unwrap();
        check(&json!({})).unwrap();
        for (obj, says) in [
            (json!(false), "JSON object"),
            (
                json!({"metadata": false}),
                "`metadata` must be an object, got a boolean",
            ),
            (
                json!({"metadata": {"name": 3}}),
                "`metadata.name` must be a string",
            ),
            (
                json!({"metadata": {"labels": {"a": 1}}}),
                "`metadata.labels.a`",
            ),
            (
                json!({"metadata": {"annotations": []}}),
                "`metadata.annotations`",
            ),
            (json!({"spec": "x"}), "`spec` must be an object"),
            (json!({"kind": 1}), "`kind` must be a string"),
            (
                json!({"metadata": {"finalizers": "x"}}),
                "`metadata.finalizers`",
            ),
        ] {
            let e = check(&obj).unwrap_err();
            assert_eq!(e.code, 400, "{obj}");
            assert!(e.message.contains(says), "{obj}: {}", e.message);
        }
    }

    #[test]
    fn typed_check_names_the_field_that_does_not_decode() {
        let mut deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "nginx",
                        "ports": [{"containerPort": 80}]}]}}}});
        check_typed(Resource::Deployments, &deploy).unwrap();
        deploy["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] =
            json!("eighty");
        let e = check_typed(Resource::Deployments, &deploy).unwrap_err();
        assert_eq!(e.code, 400);
        assert!(
            e.message
                .contains("spec.template.spec.containers[0].ports[0].containerPort"),
            "{}",
            e.message
        );
        let e = check_typed(
            Resource::Pods,
            &json!({"metadata": {"name": "p"}, "spec": {"containers": {}}}),
        )
        .unwrap_err();
        assert!(e.message.contains("spec.containers"), "{}", e.message);
    }
}
