//! The types the real API server's decoder enforces before anything else
//! looks at a body: `metadata` is an object, its names are strings, labels
//! and annotations map strings to strings, `spec` and `status` are objects.
//! Checked up front so every later step can index the object safely, and so
//! a client gets the 400 that a real cluster would give.

use serde_json::Value;

use super::ApiError;

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
}
