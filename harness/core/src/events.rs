//! The run's event log: everything that happened besides requests — LB health
//! changes, pod phases, endpoint changes seen by each node's kube-proxy,
//! chaos steps — stamped on the run's [`Clock`].
//!
//! Producers hold an [`EventSink`]; the run owns the receiving end. A sink
//! with no receiver (standalone `zdt lb`, unit tests) just drops events.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::clock::Clock;

/// Which part of the system reported the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The load balancer: probe results, health transitions, admin actions.
    Lb,
    /// Pod lifecycle: scheduled, started, ready, terminating, signals, gone.
    Pod,
    /// An endpoint change as applied by one node's kube-proxy.
    Endpoint,
    /// Node changes: cordon, taints, readiness, stop/pause.
    Node,
    /// Chaos timeline steps: started, evictions, PDB refusals, finished.
    Chaos,
    /// The traffic generator (started, stopped, fell behind).
    Traffic,
    /// The executor itself (phases of a run).
    Run,
}

/// One event, in Kubernetes vocabulary: a `reason` (`Unhealthy`, `Evicted`,
/// `Ready`…), the object it is about (`node/worker2`, `pod/nginx-7d9f-x2`),
/// and a human message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Offset from the run's clock origin.
    #[serde(with = "duration_ns")]
    pub at: Duration,
    pub source: Source,
    pub reason: String,
    pub object: String,
    /// The node the event concerns, when there is one (used to attribute
    /// error windows to nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub message: String,
    /// When what the event reports began to take effect, where that is a
    /// span rather than an instant: a kube-proxy's new rules load between
    /// `since` (`nft` started) and `at` (it returned), so packets may meet
    /// them before `at`, never before `since`.
    #[serde(
        default,
        with = "opt_duration_ns",
        skip_serializing_if = "Option::is_none"
    )]
    pub since: Option<Duration>,
}

/// Where producers send events. Cloning is cheap.
#[derive(Debug, Clone)]
pub struct EventSink {
    clock: Clock,
    tx: Option<mpsc::UnboundedSender<Event>>,
}

impl EventSink {
    /// A sink and the receiver its events go to.
    pub fn channel(clock: Clock) -> (Self, mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Self {
                clock,
                tx: Some(tx),
            },
            rx,
        )
    }

    /// A sink that discards everything.
    pub fn discard(clock: Clock) -> Self {
        Self { clock, tx: None }
    }

    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Stamp and send an event. Never blocks; a closed receiver is ignored
    /// because producers must not fail when the run stopped listening.
    pub fn emit(
        &self,
        source: Source,
        reason: impl Into<String>,
        object: impl Into<String>,
        node: Option<&str>,
        message: impl Into<String>,
    ) {
        self.send(self.stamped(source, reason, object, node, message));
    }

    /// An event stamped now, to send after setting what [`emit`](Self::emit)
    /// does not (its [`since`](Event::since)).
    pub fn stamped(
        &self,
        source: Source,
        reason: impl Into<String>,
        object: impl Into<String>,
        node: Option<&str>,
        message: impl Into<String>,
    ) -> Event {
        Event {
            at: self.clock.now(),
            source,
            reason: reason.into(),
            object: object.into(),
            node: node.map(str::to_owned),
            message: message.into(),
            since: None,
        }
    }

    /// Send an already stamped event.
    pub fn send(&self, event: Event) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(event);
        }
    }
}

/// Durations as integer nanoseconds, the unit vegeta's JSON uses.
pub mod duration_ns {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_nanos(u64::deserialize(d)?))
    }
}

/// Optional durations as integer nanoseconds.
mod opt_duration_ns {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration_ns::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_are_stamped_and_serialised_in_ns() {
        let clock = Clock::start();
        let (sink, mut rx) = EventSink::channel(clock);
        sink.emit(
            Source::Lb,
            "Unhealthy",
            "node/worker2",
            Some("worker2"),
            "probe failed 2x",
        );
        let ev = rx.recv().await.unwrap();
        assert_eq!(ev.reason, "Unhealthy");
        assert!(ev.at <= clock.now());
        let json = serde_json::to_value(&ev).unwrap();
        assert_eq!(json["source"], "lb");
        assert_eq!(json["at"].as_u64().unwrap(), ev.at.as_nanos() as u64);
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, ev);
    }

    #[test]
    fn discard_sink_never_fails() {
        let sink = EventSink::discard(Clock::start());
        sink.emit(Source::Run, "Started", "run", None, "nothing listens");
    }
}
