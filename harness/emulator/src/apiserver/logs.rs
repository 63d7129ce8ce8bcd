//! `GET pods/NAME/log`: what the pod's container process wrote, with the
//! PodLogOptions kubectl sends (`container`, `follow`, `previous`,
//! `sinceSeconds`, `sinceTime`, `timestamps`, `tailLines`, `limitBytes`),
//! answered and refused as the kubelet does.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use jiff::Timestamp;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::streaming::PodAccess;
use super::{full, ApiError, Body, Query};
use crate::node::logs::{ContainerLog, LogLine};
use crate::store::{Resource, Store};

/// The options of one log request.
#[derive(Debug, Clone, Default, PartialEq)]
struct LogOptions {
    container: Option<String>,
    follow: bool,
    previous: bool,
    since: Option<Timestamp>,
    timestamps: bool,
    tail: Option<usize>,
    limit_bytes: Option<usize>,
}

fn number(query: &Query, key: &str) -> Result<Option<i64>, ApiError> {
    query
        .get(key)
        .map(|v| {
            v.parse::<i64>().map_err(|_| {
                ApiError::bad_request(format!("invalid {key} {v:?}: must be an integer"))
            })
        })
        .transpose()
}

impl LogOptions {
    fn parse(query: &Query) -> Result<LogOptions, ApiError> {
        let since_seconds = number(query, "sinceSeconds")?;
        let since_time = query.get("sinceTime");
        if since_seconds.is_some() && since_time.is_some() {
            return Err(ApiError::new(
                422,
                "Invalid",
                "PodLogOptions is invalid: at most one of `sinceTime` or `sinceSeconds` may be specified",
            ));
        }
        let since =
            match (since_seconds, since_time) {
                (Some(s), _) if s < 1 => return Err(ApiError::new(
                    422,
                    "Invalid",
                    "PodLogOptions is invalid: sinceSeconds: Invalid value: must be greater than 0",
                )),
                (Some(s), _) => Some(
                    Timestamp::now()
                        .checked_sub(jiff::SignedDuration::from_secs(s))
                        .unwrap_or(Timestamp::MIN),
                ),
                (None, Some(t)) => Some(t.parse::<Timestamp>().map_err(|e| {
                    ApiError::bad_request(format!(
                    "invalid sinceTime {t:?}: {e} (an RFC 3339 time such as 2024-01-02T03:04:05Z)"
                ))
                })?),
                (None, None) => None,
            };
        let tail = match number(query, "tailLines")? {
            Some(n) if n < 0 => {
                return Err(ApiError::new(
                    422,
                    "Invalid",
                    "PodLogOptions is invalid: tailLines: Invalid value: must be greater than or equal to 0",
                ))
            }
            n => n.map(|n| n as usize),
        };
        let limit_bytes =
            match number(query, "limitBytes")? {
                Some(n) if n < 1 => return Err(ApiError::new(
                    422,
                    "Invalid",
                    "PodLogOptions is invalid: limitBytes: Invalid value: must be greater than 0",
                )),
                n => n.map(|n| n as usize),
            };
        Ok(LogOptions {
            container: query.get("container").map(str::to_owned),
            follow: query.flag("follow"),
            previous: query.flag("previous"),
            since,
            timestamps: query.flag("timestamps"),
            tail,
            limit_bytes,
        })
    }

    fn render(&self, lines: &[LogLine], out: &mut Vec<u8>) {
        for l in lines {
            if self.since.is_some_and(|s| l.at < s) {
                continue;
            }
            if self.timestamps {
                out.extend_from_slice(format!("{} ", l.at).as_bytes());
            }
            out.extend_from_slice(l.text.as_bytes());
            out.push(b'\n');
        }
    }
}

/// The container whose log is asked for, as the kubelet picks it.
fn container_of(pod: &Value, name: &str, asked: Option<&str>) -> Result<String, ApiError> {
    let names: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let others: Vec<&str> = ["initContainers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| pod["spec"][k].as_array().into_iter().flatten())
        .filter_map(|c| c["name"].as_str())
        .collect();
    match asked {
        Some(c) if names.contains(&c) || others.contains(&c) => Ok(c.to_owned()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None if names.len() == 1 => Ok(names[0].to_owned()),
        None => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            names.join(" ")
        ))),
    }
}

pub(super) fn pod_log(
    store: &Store,
    access: Option<&PodAccess>,
    cancel: &CancellationToken,
    namespace: &str,
    name: &str,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let opts = LogOptions::parse(query)?;
    let pod = store
        .get(Resource::Pods, namespace, name)
        .ok_or_else(|| ApiError::not_found(format!("pods \"{name}\" not found")))?;
    let container = container_of(&pod, name, opts.container.as_deref())?;
    if opts.previous {
        // The kubelet model never restarts a container.
        return Err(ApiError::bad_request(format!(
            "previous terminated container \"{container}\" in pod \"{name}\" not found"
        )));
    }
    let text = |body: Body| {
        Response::builder()
            .header(header::CONTENT_TYPE, "text/plain")
            .body(body)
            .expect("valid response")
    };
    // A simulated pod has no process: it wrote nothing.
    let Some(access) = access else {
        return Ok(text(full(Bytes::new())));
    };
    let Some(log) = access.logs.get(namespace, name, &container) else {
        // A container that could not start (its error is the pod's
        // status.message) wrote nothing.
        if matches!(
            pod["status"]["phase"].as_str(),
            Some("Failed" | "Succeeded")
        ) {
            return Ok(text(full(Bytes::new())));
        }
        let first = pod["spec"]["containers"][0]["name"].as_str() == Some(container.as_str());
        return Err(ApiError::bad_request(if first {
            format!("container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating")
        } else {
            format!("container \"{container}\" in pod \"{name}\" is not running: the emulator runs only a pod's first container")
        }));
    };
    let from = opts.tail.map_or(0, |n| log.seq_of_last(n));
    if !opts.follow {
        let (lines, _, _) = log.since(from);
        let mut out = Vec::new();
        opts.render(&lines, &mut out);
        if let Some(n) = opts.limit_bytes {
            out.truncate(n);
        }
        return Ok(text(full(out)));
    }
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(follow(log, opts, from, tx, cancel.clone()));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    Ok(text(StreamBody::new(stream).boxed_unsync()))
}

/// `follow=true`: everything so far, then each line as it comes, until the
/// container is done, the client goes or the emulator stops.
async fn follow(
    log: Arc<ContainerLog>,
    opts: LogOptions,
    mut from: u64,
    tx: mpsc::Sender<Bytes>,
    cancel: CancellationToken,
) {
    let mut changed = log.subscribe();
    let mut left = opts.limit_bytes.unwrap_or(usize::MAX);
    loop {
        changed.borrow_and_update();
        let (lines, next, done) = log.since(from);
        from = next;
        let mut out = Vec::new();
        opts.render(&lines, &mut out);
        if !out.is_empty() {
            out.truncate(left);
            left -= out.len();
            if tx.send(Bytes::from(out)).await.is_err() || left == 0 {
                return;
            }
        }
        if done {
            return;
        }
        tokio::select! {
            r = changed.changed() => if r.is_err() { return },
            _ = cancel.cancelled() => return,
            _ = tx.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(pairs: &[(&str, &str)]) -> Query {
        Query::of(pairs)
    }

    #[test]
    fn options_are_validated_as_upstream() {
        let o = LogOptions::parse(&q(&[("follow", "true"), ("tailLines", "3")])).unwrap();
        assert!(o.follow && o.tail == Some(3));
        let e = LogOptions::parse(&q(&[("sinceSeconds", "0")])).unwrap_err();
        assert_eq!(e.code, 422);
        let e = LogOptions::parse(&q(&[("sinceSeconds", "5"), ("sinceTime", "x")])).unwrap_err();
        assert!(e.message.contains("at most one"), "{}", e.message);
        let e = LogOptions::parse(&q(&[("tailLines", "x")])).unwrap_err();
        assert_eq!(e.code, 400);
    }

    #[test]
    fn the_container_is_picked_as_the_kubelet_does() {
        let one = json!({"spec": {"containers": [{"name": "app"}]}});
        assert_eq!(container_of(&one, "p", None).unwrap(), "app");
        let e = container_of(&one, "p", Some("db")).unwrap_err();
        assert_eq!(e.message, "container db is not valid for pod p");
        let two = json!({"spec": {"containers": [{"name": "app"}, {"name": "side"}]}});
        let e = container_of(&two, "p", None).unwrap_err();
        assert!(
            e.message.ends_with("choose one of: [app side]"),
            "{}",
            e.message
        );
    }
}
