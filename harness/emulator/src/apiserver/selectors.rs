//! Label and field selectors as the API server parses them
//! (`app=web,tier!=db,env in (a,b),!canary`, `spec.nodeName=worker2`).

use serde_json::Value;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Req {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    reqs: Vec<Req>,
}

fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 317
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A selector the API cannot parse; the message is the API server's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("unable to parse requirement: {part:?} in label selector {text:?}")]
    Requirement { part: String, text: String },
    #[error("{0:?} is not a valid label selector operator")]
    Operator(Option<String>),
    #[error("invalid selector: '{text}'; can't understand '{part}'")]
    Field { part: String, text: String },
    #[error("field label not supported: {0}")]
    FieldLabel(String),
}

impl LabelSelector {
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        if text.trim().is_empty() {
            return Ok(Self { reqs });
        }
        for raw in split_top_level(text) {
            let part = raw.trim();
            let bad = || SelectorError::Requirement {
                part: part.to_owned(),
                text: text.to_owned(),
            };
            if part.is_empty() {
                return Err(bad());
            }
            let req = if let Some(key) = part.strip_prefix('!') {
                let key = key.trim();
                if !valid_key(key) {
                    return Err(bad());
                }
                Req::NotExists(key.to_owned())
            } else if let Some((k, v)) = part.split_once("!=") {
                Req::NotEq(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = part.split_once("==") {
                Req::Eq(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = part.split_once('=') {
                Req::Eq(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some(open) = part.find('(') {
                let head: Vec<&str> = part[..open].split_whitespace().collect();
                let Some(body) = part[open + 1..].strip_suffix(')') else {
                    return Err(bad());
                };
                let values: Vec<String> = body
                    .split(',')
                    .map(|v| v.trim().to_owned())
                    .filter(|v| !v.is_empty())
                    .collect();
                if values.iter().any(|v| !valid_value(v)) {
                    return Err(bad());
                }
                match head.as_slice() {
                    [k, "in"] => Req::In((*k).to_owned(), values),
                    [k, "notin"] => Req::NotIn((*k).to_owned(), values),
                    _ => return Err(bad()),
                }
            } else {
                if !valid_key(part) {
                    return Err(bad());
                }
                Req::Exists(part.to_owned())
            };
            match &req {
                Req::Eq(k, v) | Req::NotEq(k, v) if !valid_key(k) || !valid_value(v) => {
                    return Err(bad())
                }
                Req::In(k, _) | Req::NotIn(k, _) if !valid_key(k) => return Err(bad()),
                _ => {}
            }
            reqs.push(req);
        }
        Ok(Self { reqs })
    }

    /// A `metav1.LabelSelector` (matchLabels + matchExpressions) as JSON.
    /// `None` (absent) matches nothing, as for a Service without selector;
    /// `{}` matches everything, as for a PDB.
    pub fn from_json(sel: &Value) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in m {
                reqs.push(Req::Eq(
                    k.clone(),
                    v.as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
        if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let key = e["key"].as_str().unwrap_or_default().to_owned();
                let values: Vec<String> = e["values"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                reqs.push(match e["operator"].as_str() {
                    Some("In") => Req::In(key, values),
                    Some("NotIn") => Req::NotIn(key, values),
                    Some("Exists") => Req::Exists(key),
                    Some("DoesNotExist") => Req::NotExists(key),
                    other => return Err(SelectorError::Operator(other.map(str::to_owned))),
                });
            }
        }
        Ok(Self { reqs })
    }

    /// A plain map selector (Service.spec.selector).
    pub fn from_map(map: &serde_json::Map<String, Value>) -> Self {
        Self {
            reqs: map
                .iter()
                .map(|(k, v)| Req::Eq(k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect(),
        }
    }

    pub fn matches_labels(&self, labels: Option<&serde_json::Map<String, Value>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.reqs.iter().all(|r| match r {
            Req::Eq(k, v) => get(k) == Some(v.as_str()),
            Req::NotEq(k, v) => get(k) != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Req::NotIn(k, vs) => get(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
        })
    }

    /// Does the object's `metadata.labels` match?
    pub fn matches(&self, obj: &Value) -> bool {
        self.matches_labels(obj["metadata"]["labels"].as_object())
    }
}

/// A field selector: `path=value`, `path==value`, `path!=value`, comma
/// separated. Any dotted path of the object is accepted (Kubernetes only
/// allows a fixed list per kind; every field kubectl uses is a plain path).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    reqs: Vec<(String, bool, String)>,
}

impl FieldSelector {
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        if text.trim().is_empty() {
            return Ok(Self { reqs });
        }
        for part in text.split(',') {
            let part = part.trim();
            let (path, eq, value) = if let Some((p, v)) = part.split_once("!=") {
                (p, false, v)
            } else if let Some((p, v)) = part.split_once("==") {
                (p, true, v)
            } else if let Some((p, v)) = part.split_once('=') {
                (p, true, v)
            } else {
                return Err(SelectorError::Field {
                    part: part.to_owned(),
                    text: text.to_owned(),
                });
            };
            let path = path.trim();
            if path.is_empty()
                || !path
                    .split('.')
                    .all(|seg| !seg.is_empty() && seg.chars().all(|c| c.is_ascii_alphanumeric()))
            {
                return Err(SelectorError::FieldLabel(path.to_owned()));
            }
            reqs.push((path.to_owned(), eq, value.trim().to_owned()));
        }
        Ok(Self { reqs })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.reqs.iter().all(|(path, eq, want)| {
            let mut v = obj;
            for seg in path.split('.') {
                v = &v[seg];
            }
            let have = match v {
                Value::String(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                // Unset booleans read as false (`spec.unschedulable=false`
                // matches schedulable nodes), other unset fields as "".
                Value::Null if path == "spec.unschedulable" => "false".into(),
                _ => String::new(),
            };
            (have == *want) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors_follow_the_api_grammar() {
        let obj = json!({"metadata": {"labels": {"app": "web", "env": "prod"}}});
        let yes = [
            "",
            "app=web",
            "app==web",
            "app!=db",
            "env in (prod, dev)",
            "env notin (dev)",
            "app",
            "!canary",
            "app=web,env in (prod,stage),!canary",
        ];
        for s in yes {
            assert!(LabelSelector::parse(s).unwrap().matches(&obj), "{s}");
        }
        let no = [
            "app=db",
            "app!=web",
            "env in (dev)",
            "env notin (prod)",
            "canary",
            "!app",
        ];
        for s in no {
            assert!(!LabelSelector::parse(s).unwrap().matches(&obj), "{s}");
        }
        for bad in ["app=", "=x", "env in prod", "a b", ",", "app=w@b"] {
            if bad == "app=" {
                // `app=` selects an empty value: valid in Kubernetes.
                assert!(LabelSelector::parse(bad).is_ok());
                continue;
            }
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn field_selectors_read_paths() {
        let pod = json!({"metadata": {"name": "p", "namespace": "default"},
                         "spec": {"nodeName": "w2"}, "status": {"phase": "Running"}});
        assert!(FieldSelector::parse("spec.nodeName=w2")
            .unwrap()
            .matches(&pod));
        assert!(
            FieldSelector::parse("spec.nodeName=w2,status.phase!=Failed")
                .unwrap()
                .matches(&pod)
        );
        assert!(!FieldSelector::parse("metadata.name=q")
            .unwrap()
            .matches(&pod));
        let node = json!({"metadata": {"name": "n"}, "spec": {}});
        assert!(FieldSelector::parse("spec.unschedulable=false")
            .unwrap()
            .matches(&node));
        assert!(FieldSelector::parse("nodeName").is_err());
        assert!(FieldSelector::parse("spec..x=1").is_err());
    }

    #[test]
    fn json_selectors() {
        let sel = LabelSelector::from_json(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]
        }))
        .unwrap();
        assert!(sel.matches(&json!({"metadata": {"labels": {"app": "web", "env": "prod"}}})));
        assert!(!sel.matches(&json!({"metadata": {"labels": {"app": "web"}}})));
    }
}
