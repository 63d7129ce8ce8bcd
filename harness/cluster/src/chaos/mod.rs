//! Chaos actions written once against the Kubernetes API, so the same code
//! drains an emulated node, a kind node and a node of an existing cluster.
//!
//! Each action is a plain async function taking a kube `Client` and an
//! [`EventSink`]; composite actions (drain = cordon + evict + wait) are built
//! from the small ones. Waiting is separate from acting, and every wait is
//! bounded by a timeout the caller chooses (as kube-runtime's
//! `await_condition` documents).

pub mod drain;
pub(crate) mod node;
pub(crate) mod rollout;
pub(crate) mod select;

use std::time::Duration;

pub use drain::{drain, DrainOptions, DrainOutcome};
pub use node::{cordon, taint, uncordon, untaint};
pub use rollout::{delete_pods, rollout_complete, rollout_restart, scale, set_image, wait_rollout};
pub use select::{choose_node, NodeChoice};

/// A chaos action that could not do what it was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChaosError {
    /// The API server refused or failed a request.
    #[error("{action}: {source}")]
    Api {
        action: String,
        #[source]
        source: kube::Error,
    },
    /// A drain could not evict every pod before its timeout; the node stays
    /// cordoned, as `kubectl drain` leaves it.
    #[error("drain of node {node} timed out after {timeout:?}: {blocked}")]
    DrainTimeout {
        node: String,
        timeout: Duration,
        /// Which pods were left and what blocked them (PDB names).
        blocked: String,
    },
    /// A wait for a condition ran out of time.
    #[error("timed out after {timeout:?} waiting for {what}")]
    WaitTimeout { what: String, timeout: Duration },
    /// No node matches a selector.
    #[error("no node matches {0}")]
    NoNode(String),
    /// The step names something that does not exist.
    #[error("{0}")]
    NotFound(String),
}

impl ChaosError {
    pub(crate) fn api(action: impl Into<String>, source: kube::Error) -> Self {
        ChaosError::Api {
            action: action.into(),
            source,
        }
    }
}

/// HTTP status of an API error, if it is one.
pub(crate) fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}
