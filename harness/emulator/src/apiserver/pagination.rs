//! A list's `resourceVersion`, `resourceVersionMatch`, `limit` and
//! `continue`, with upstream's semantics: unset is the latest state, `0` any
//! state, `NotOlderThan` at least that new (504 when the server has not seen
//! it yet), `Exact` that very state; a limited list returns a `continue`
//! token, and the next pages show the same snapshot. A snapshot older than
//! the store's history is 410 Expired, as after an etcd compaction.

use serde_json::{json, Value};

use super::{served, ApiError, Query};
use crate::store::{name_of, namespace_of, Resource, State, StoreError};

/// Where a continued list goes on: the snapshot and the last key sent.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Continue {
    rv: u64,
    namespace: String,
    name: String,
}

impl Continue {
    /// Opaque to clients, as upstream's: hex of a small JSON document.
    fn encode(&self) -> String {
        let doc =
            json!({"v": "meta.k8s.io/v1", "rv": self.rv, "start": [self.namespace, self.name]});
        serde_json::to_vec(&doc)
            .unwrap_or_default()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn decode(token: &str) -> Result<Continue, ApiError> {
        let bad = || {
            ApiError::bad_request(format!(
                "continue key is not valid: {token:?} is not a token this server returned (start the list again without `continue`)"
            ))
        };
        if !token.len().is_multiple_of(2) || !token.is_ascii() {
            return Err(bad());
        }
        let bytes: Vec<u8> = (0..token.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&token[i..i + 2], 16))
            .collect::<Result<_, _>>()
            .map_err(|_| bad())?;
        let doc: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        Ok(Continue {
            rv: doc["rv"].as_u64().ok_or_else(bad)?,
            namespace: doc["start"][0].as_str().ok_or_else(bad)?.to_owned(),
            name: doc["start"][1].as_str().ok_or_else(bad)?.to_owned(),
        })
    }
}

/// Which state a list shows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum At {
    Latest,
    /// `resourceVersionMatch=Exact` (or a continued list).
    Exact(u64),
    /// `resourceVersion=N`, match unset or NotOlderThan.
    NotOlderThan(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ListRequest {
    at: At,
    limit: Option<usize>,
    after: Option<Continue>,
}

impl ListRequest {
    fn parse(query: &Query) -> Result<ListRequest, ApiError> {
        let rv = query.get("resourceVersion").filter(|s| !s.is_empty());
        let matching = query.get("resourceVersionMatch").filter(|s| !s.is_empty());
        let token = query.get("continue").filter(|s| !s.is_empty());
        let limit = match query.get("limit").filter(|s| !s.is_empty()) {
            None => None,
            Some(l) => match l.parse::<i64>() {
                Ok(n) if n > 0 => Some(n as usize),
                Ok(_) => None,
                Err(_) => {
                    return Err(ApiError::bad_request(format!(
                        "invalid limit {l:?}: must be an integer"
                    )))
                }
            },
        };
        if let Some(m) = matching {
            if !matches!(m, "Exact" | "NotOlderThan") {
                return Err(ApiError::bad_request(format!(
                    "resourceVersionMatch: Unsupported value: {m:?}: supported values: \"Exact\", \"NotOlderThan\""
                )));
            }
        }
        if let Some(t) = token {
            if rv.is_some() {
                return Err(ApiError::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            if matching.is_some() {
                return Err(ApiError::bad_request(
                    "resourceVersionMatch is forbidden when continue is provided",
                ));
            }
            let after = Continue::decode(t)?;
            return Ok(ListRequest {
                at: At::Exact(after.rv),
                limit,
                after: Some(after),
            });
        }
        let number = |s: &str| {
            s.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("invalid resourceVersion {s:?}: must be a number"))
            })
        };
        let at = match (rv, matching) {
            (None, Some(_)) => {
                return Err(ApiError::bad_request(
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                ))
            }
            (Some("0"), Some("Exact")) => {
                return Err(ApiError::bad_request(
                    "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                ))
            }
            (None, None) | (Some("0"), _) => At::Latest,
            (Some(v), Some("Exact")) => At::Exact(number(v)?),
            (Some(v), _) => At::NotOlderThan(number(v)?),
        };
        Ok(ListRequest {
            at,
            limit,
            after: None,
        })
    }
}

/// One page of a list: its items and its ListMeta.
#[derive(Debug)]
pub(super) struct Page {
    pub items: Vec<Value>,
    pub metadata: Value,
}

/// The page `query` asks for of `resource` (in `namespace` or all),
/// keeping the objects `keep` accepts (the selectors).
pub(super) fn list(
    st: &State,
    resource: Resource,
    namespace: Option<&str>,
    query: &Query,
    filtered: bool,
    keep: impl Fn(&Value) -> bool,
) -> Result<Page, ApiError> {
    let req = ListRequest::parse(query)?;
    let now = st.resource_version();
    let rv = match req.at {
        At::Latest => now,
        At::Exact(v) | At::NotOlderThan(v) if v > now => {
            let mut e = ApiError::new(
                504,
                "Timeout",
                format!("Too large resource version: {v}, current: {now}"),
            );
            e.details = Some(json!({
                "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                "retryAfterSeconds": 1
            }));
            return Err(e);
        }
        At::NotOlderThan(_) => now,
        At::Exact(v) => v,
    };
    let all = served::list_at(st, resource, namespace, rv, &keep).map_err(|e| match e {
        StoreError::Gone { .. } if req.after.is_some() => ApiError::new(
            410,
            "Expired",
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
        ),
        StoreError::Gone { .. } => ApiError::new(
            410,
            "Expired",
            format!("The resourceVersion for the provided list is too old: {rv} (start the list again without resourceVersion, or with a newer one)"),
        ),
        other => other.into(),
    })?;
    let after = |o: &Value| {
        req.after
            .as_ref()
            .is_none_or(|a| (namespace_of(o), name_of(o)) > (a.namespace.as_str(), a.name.as_str()))
    };
    let mut matching = all.into_iter().filter(|o| after(o));
    let mut items: Vec<Value> = match req.limit {
        Some(n) => matching.by_ref().take(n).collect(),
        None => matching.by_ref().collect(),
    };
    let rest = matching.count();
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if rest > 0 {
        let last = items.last_mut().expect("a limit is at least 1");
        let token = Continue {
            rv,
            namespace: namespace_of(last).to_owned(),
            name: name_of(last).to_owned(),
        };
        metadata["continue"] = json!(token.encode());
        // Upstream counts the rest only when no selector filters it.
        if !filtered {
            metadata["remainingItemCount"] = json!(rest);
        }
    }
    Ok(Page { items, metadata })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Query {
        Query::of(pairs)
    }

    #[test]
    fn continue_tokens_round_trip_and_bad_ones_are_refused() {
        let c = Continue {
            rv: 42,
            namespace: "default".into(),
            name: "web-1".into(),
        };
        assert_eq!(Continue::decode(&c.encode()).unwrap(), c);
        assert_eq!(Continue::decode("zz").unwrap_err().code, 400);
    }

    #[test]
    fn the_options_combine_as_upstream() {
        let r = ListRequest::parse(&q(&[("resourceVersion", "0"), ("limit", "5")])).unwrap();
        assert_eq!((r.at, r.limit), (At::Latest, Some(5)));
        let r = ListRequest::parse(&q(&[
            ("resourceVersion", "7"),
            ("resourceVersionMatch", "Exact"),
        ]))
        .unwrap();
        assert_eq!(r.at, At::Exact(7));
        let r = ListRequest::parse(&q(&[("resourceVersion", "7")])).unwrap();
        assert_eq!(r.at, At::NotOlderThan(7));
        for bad in [
            vec![("resourceVersionMatch", "Exact")],
            vec![("resourceVersion", "0"), ("resourceVersionMatch", "Exact")],
            vec![("resourceVersion", "1"), ("resourceVersionMatch", "Newest")],
            vec![("resourceVersion", "1"), ("continue", "00")],
        ] {
            assert_eq!(
                ListRequest::parse(&q(&bad)).unwrap_err().code,
                400,
                "{bad:?}"
            );
        }
    }
}
