//! `sweep:` — one field a variant can patch, and the values to try: every
//! named variant (or the base document) runs once per value, so a report
//! can show the success ratio against the value and name the smallest one
//! that meets `expect:`. Each point is a variant of its own named
//! `<variant>@<value>`, built by merging the variant's patch and then
//! `{field: value}` onto the base document, so a bad value is reported at
//! its place in the file like any patch.

use serde::{Deserialize, Serialize};

use crate::yaml::{Key, Node, Span, Value};

/// Values a sweep may have at most (each is a full run per variant).
pub const MAX_VALUES: usize = 50;

/// Top-level keys a sweep cannot change (what variants cannot patch, and
/// the scenario's identity).
const FIXED: [&str; 5] = ["apiVersion", "kind", "name", "variants", "sweep"];

/// The file's `sweep:`, as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SweepSpec {
    /// A dotted path into the scenario: `workload.mitigations.preStopSleep`.
    pub field: String,
    /// The values to try, in order (smallest first, for "the smallest value
    /// that meets `expect:`").
    pub values: Vec<serde_json::Value>,
    /// The variants to cross the values with (default: all of them).
    #[serde(default)]
    pub variants: Option<Vec<String>>,
}

/// Which sweep point a variant is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepPoint {
    /// The swept field (dotted path).
    pub field: String,
    /// Its value here, as written.
    pub value: String,
    /// The position of the value in the sweep (for ordering).
    pub index: usize,
    /// The variant the value was applied to.
    pub base: String,
}

/// A sweep ready to expand.
#[derive(Debug, Clone)]
pub(crate) struct Sweep {
    pub field: String,
    pub path: Vec<String>,
    pub values: Vec<Node>,
    pub variants: Option<Vec<String>>,
    pub span: Span,
}

impl Sweep {
    /// Checks the field and the values' count; the message names the fix.
    pub fn new(
        field: &str,
        values: Vec<Node>,
        variants: Option<Vec<String>>,
        span: Span,
    ) -> Result<Self, String> {
        let path: Vec<String> = field.split('.').map(str::to_owned).collect();
        if path.iter().any(String::is_empty) {
            return Err(format!(
                "sweep field `{field}` is not a dotted path such as `workload.mitigations.preStopSleep`"
            ));
        }
        if FIXED.contains(&path[0].as_str()) {
            return Err(format!(
                "sweep field `{field}`: `{}` cannot be swept (variants cannot change it)",
                path[0]
            ));
        }
        if values.is_empty() || values.len() > MAX_VALUES {
            return Err(format!(
                "sweep of `{field}` has {} values; give 1 to {MAX_VALUES}",
                values.len()
            ));
        }
        Ok(Self {
            field: field.to_owned(),
            path,
            values,
            variants,
            span,
        })
    }

    /// The merge patch that sets the field to `value`.
    pub fn patch(&self, value: &Node) -> Node {
        self.path.iter().rev().fold(value.clone(), |inner, key| {
            Node::new(
                Value::Map(vec![(
                    Key {
                        name: key.clone(),
                        span: self.span,
                    },
                    inner,
                )]),
                self.span,
            )
        })
    }

    /// The value as people write it (`10s`, `1.31`).
    pub fn label(value: &Node) -> String {
        match &value.value {
            Value::Str(s) => s.clone(),
            _ => {
                let json = value.to_json();
                json.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| json.to_string())
            }
        }
    }

    /// The name of the point: `<variant>@<value>` (a `/` in the value, as
    /// in a rate, becomes `-per-`: names become directory names).
    pub fn point_name(base: &str, value: &Node) -> String {
        format!("{base}@{}", Self::label(value).replace('/', "-per-"))
    }
}
