//! How the application inside a pod's container behaves, beyond "answers
//! 200 at once": real apps are not instant. A JVM or an nginx with a warm-up
//! listens only some time after its process started, and real requests take
//! time, so some are in flight when the stop signal arrives. Without these
//! two, a readiness probe and a graceful stop signal change nothing in the
//! emulator, because there is nothing for them to protect.
//!
//! Set per pod through annotations (on the Deployment's pod template, e.g.
//! with a scenario's `workload.patches`), so no manifest field is invented:
//!
//! - [`START_DELAY`] (`zdt.io/start-delay: 3s`): the container counts as
//!   started at once (the kubelet reports it Running, and Ready when there is
//!   no readiness probe), but the app listens only after this long; until
//!   then connections are refused. A stop signal during the warm-up ends it.
//! - [`RESPONSE_DELAY`] (`zdt.io/response-delay: 500ms`): every response
//!   except `/healthz` is sent this long after the request arrived.
//! - [`BODY_DELAY`] (`zdt.io/body-delay: 500ms`): the response head goes at
//!   once and the body this long later (a download, a stream). A request
//!   cut there cannot be replayed by the client, unlike one cut before any
//!   byte of its response (HTTP clients retry idempotent requests on a
//!   reused keep-alive connection that closes before answering).
//!
//! kind and existing clusters run the real image and ignore them.

use std::collections::BTreeMap;
use std::time::Duration;

use zdt_core::units::Dur;

/// Annotation: the app listens this long after its container started.
pub const START_DELAY: &str = "zdt.io/start-delay";

/// Annotation: each response (not `/healthz`) takes this long.
pub const RESPONSE_DELAY: &str = "zdt.io/response-delay";

/// Annotation: each response body (not `/healthz`) follows its head this
/// long later.
pub const BODY_DELAY: &str = "zdt.io/body-delay";

/// What the app in one container is like. The default is the instant app.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Behaviour {
    /// From the container's start until it listens.
    pub start_delay: Duration,
    /// From a request's arrival until its response.
    pub response_delay: Duration,
    /// From a response's head to its body.
    pub body_delay: Duration,
}

/// An annotation that is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pod annotation {key}: {value:?} is not a duration ({why}); write e.g. \"3s\" or \"250ms\" in the pod template's annotations")]
pub struct AnnotationError {
    pub key: &'static str,
    pub value: String,
    pub why: String,
}

impl Behaviour {
    /// Read from a pod's annotations; absent ones mean instant.
    pub fn from_annotations(
        annotations: Option<&BTreeMap<String, String>>,
    ) -> Result<Behaviour, AnnotationError> {
        let read = |key: &'static str| -> Result<Duration, AnnotationError> {
            match annotations.and_then(|a| a.get(key)) {
                None => Ok(Duration::ZERO),
                Some(value) => value
                    .parse::<Dur>()
                    .map(Dur::get)
                    .map_err(|e| AnnotationError {
                        key,
                        value: value.clone(),
                        why: e.to_string(),
                    }),
            }
        };
        Ok(Behaviour {
            start_delay: read(START_DELAY)?,
            response_delay: read(RESPONSE_DELAY)?,
            body_delay: read(BODY_DELAY)?,
        })
    }

    /// The non-default parts, for events: `start delay 3s, response delay 500ms`.
    pub fn describe(&self) -> Option<String> {
        let mut parts = Vec::new();
        if !self.start_delay.is_zero() {
            parts.push(format!("start delay {}", Dur(self.start_delay)));
        }
        if !self.response_delay.is_zero() {
            parts.push(format!("response delay {}", Dur(self.response_delay)));
        }
        if !self.body_delay.is_zero() {
            parts.push(format!("body delay {}", Dur(self.body_delay)));
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn annotations_set_the_delays_and_absence_is_instant() {
        assert_eq!(
            Behaviour::from_annotations(None).unwrap(),
            Behaviour::default()
        );
        let b = Behaviour::from_annotations(Some(&annotations(&[
            (START_DELAY, "3s"),
            (RESPONSE_DELAY, "250ms"),
            (BODY_DELAY, "1s"),
            ("unrelated", "x"),
        ])))
        .unwrap();
        assert_eq!(b.start_delay, Duration::from_secs(3));
        assert_eq!(b.response_delay, Duration::from_millis(250));
        assert_eq!(b.body_delay, Duration::from_secs(1));
        assert_eq!(
            b.describe().as_deref(),
            Some("start delay 3s, response delay 250ms, body delay 1s")
        );
        assert_eq!(Behaviour::default().describe(), None);
    }

    #[test]
    fn a_bad_annotation_names_itself_and_the_fix() {
        let e = Behaviour::from_annotations(Some(&annotations(&[(START_DELAY, "3")]))).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("zdt.io/start-delay"), "{text}");
        assert!(text.contains("\"3\""), "{text}");
        assert!(text.contains("\"3s\""), "{text}");
    }
}
