//! Size limits on scenario input, checked before anything is built from
//! it: a scenario is a few kilobytes of settings, and every string in it
//! ends up in reports (a 50 MB `description` once made 315 MB of reports
//! and 485 MB RSS). Each limit is far above what a real scenario needs.

use super::yaml::{Key, Node, Span, Value};

/// The largest scenario file zdt reads.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// The longest `description` (scenario or variant): it is printed in every
/// report.
pub const MAX_DESCRIPTION_CHARS: usize = 4096;
/// The longest other string (a request body, a header, an image name).
pub const MAX_STRING_BYTES: usize = 64 * 1024;
/// The most variants a file may have. A run of each takes its traffic's
/// duration plus setup; `zdt run` prints the estimate before long runs.
pub const MAX_VARIANTS: usize = 1000;

/// The most YAML nodes (after alias expansion) a file may make; the parser
/// enforces it, so it lives with the parser.
pub use super::yaml::MAX_YAML_NODES;

/// A string over its limit: where, and the message.
pub(crate) struct TooLong {
    pub span: Span,
    pub message: String,
}

/// Every string value in the tree over its limit (keys are names the
/// decoder rejects anyway unless they are known fields).
pub(crate) fn long_strings(root: &Node) -> Vec<TooLong> {
    let mut out = Vec::new();
    walk(root, None, &mut out);
    out
}

fn walk(node: &Node, key: Option<&Key>, out: &mut Vec<TooLong>) {
    match &node.value {
        Value::Str(s) => {
            let is_description = key.is_some_and(|k| k.name == "description");
            let (len, max, unit) = if is_description {
                (s.chars().count(), MAX_DESCRIPTION_CHARS, "characters")
            } else {
                (s.len(), MAX_STRING_BYTES, "bytes")
            };
            if len > max {
                let what = key
                    .map(|k| format!("`{}`", k.name))
                    .unwrap_or_else(|| "this string".into());
                out.push(TooLong {
                    span: Span {
                        offset: node.span.offset,
                        len: node.span.len.min(40),
                    },
                    message: format!("{what} is {len} {unit} long; at most {max} {unit}"),
                });
            }
        }
        Value::Seq(items) => items.iter().for_each(|n| walk(n, key, out)),
        Value::Map(entries) => entries.iter().for_each(|(k, n)| walk(n, Some(k), out)),
        _ => {}
    }
}
