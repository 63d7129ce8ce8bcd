//! Per-connection provenance: where the data path sent one client
//! connection (the LB's backend node, the pod that node's rules chose) and
//! what became of the dial. The LB records one [`ConnRecord`] per accepted
//! connection, or — where packets pass it by — the emulator's netfilter
//! rules log one per decision a SYN met; the run joins a failed request to it by the generator's
//! local address, so each error is attributed to the events of *its* node
//! and pod instead of whatever happened nearby in time.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What the data path did with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fate {
    /// Sent to the pod (connected by the LB, or DNATed by the node's
    /// rules); whatever failed, failed between the client and the pod.
    Connected,
    /// The node dropped it (no local endpoint, or a pod IP with no
    /// container behind it): the client times out.
    Dropped,
    /// Refused: the node had no endpoint, or the pod no listener.
    Refused,
    /// Any other dial failure.
    DialFailed,
    /// The LB itself had no backend for it and reset it.
    Rejected,
}

impl Fate {
    /// Words for reports: "dropped by the node".
    pub fn describe(self) -> &'static str {
        match self {
            Fate::Connected => "connected to the pod",
            Fate::Dropped => "dropped by the node",
            Fate::Refused => "refused",
            Fate::DialFailed => "dial failed",
            Fate::Rejected => "rejected by the LB (no backend)",
        }
    }
}

/// Where one connection went.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Provenance {
    /// The LB backend (node) that took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The pod the node's rules chose, when they chose one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    pub fate: Fate,
}

/// The LB's record of one accepted connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnRecord {
    /// The client's address as the LB saw it (the generator's local address).
    pub client: SocketAddr,
    /// On the run's clock: when the LB asked the node for a route (before
    /// the choice, so a route from a view that was replaced after this
    /// instant is stamped before the event of that replacement).
    pub at: Duration,
    pub provenance: Provenance,
}

/// Join a client connection to the LB's record of it: the latest record for
/// `client` at or before `until` (a 4-tuple is reused only after the
/// earlier connection closed, so the latest one before the request ended is
/// its connection). `records` must be sorted by `(client, at)`.
pub fn find(records: &[ConnRecord], client: SocketAddr, until: Duration) -> Option<&ConnRecord> {
    let end = records.partition_point(|r| (r.client, r.at) <= (client, until));
    records[..end].last().filter(|r| r.client == client)
}

/// Sort records for [`find`].
pub fn sort(records: &mut [ConnRecord]) {
    records.sort_by_key(|r| (r.client, r.at));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(port: u16, at_ms: u64, node: &str) -> ConnRecord {
        ConnRecord {
            client: SocketAddr::from(([10, 0, 0, 1], port)),
            at: Duration::from_millis(at_ms),
            provenance: Provenance {
                node: Some(node.into()),
                pod: None,
                fate: Fate::Dropped,
            },
        }
    }

    #[test]
    fn a_reused_port_joins_the_connection_open_at_the_time() {
        let mut records = vec![
            rec(40000, 5_000, "w3"),
            rec(40001, 1_000, "w2"),
            rec(40000, 1_000, "w1"),
        ];
        sort(&mut records);
        let client = SocketAddr::from(([10, 0, 0, 1], 40000));
        let node = |until_ms| {
            find(&records, client, Duration::from_millis(until_ms))
                .and_then(|r| r.provenance.node.clone())
        };
        assert_eq!(node(999), None);
        assert_eq!(node(1_000).as_deref(), Some("w1"));
        assert_eq!(node(4_999).as_deref(), Some("w1"));
        assert_eq!(node(9_000).as_deref(), Some("w3"));
        let other = SocketAddr::from(([10, 0, 0, 2], 40000));
        assert!(find(&records, other, Duration::from_secs(60)).is_none());
    }
}
