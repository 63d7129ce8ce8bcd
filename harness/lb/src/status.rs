//! What the LB says about its backends: each one's health and counters,
//! and what an admin operation can fail with.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A backend's health as the LB sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Health {
    /// Not yet `healthy_threshold` successful probes since it was added:
    /// gets new connections only when the LB fails open.
    #[default]
    Unknown,
    Healthy,
    Unhealthy,
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        })
    }
}

/// One row of `GET /backends`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendStatus {
    pub name: String,
    pub health: Health,
    /// `http://addr/path` or `tcp://addr`.
    pub probe: String,
    /// `succeeded` / `failed`, or absent before the first probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_error: Option<String>,
    /// Offset on the run's clock, in integer nanoseconds like events' `at`.
    #[serde(
        default,
        with = "zdt_core::units::opt_nanos",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_probe_at: Option<Duration>,
    pub probes: u64,
    pub consecutive_successes: u32,
    pub consecutive_failures: u32,
    pub active_connections: usize,
    pub total_connections: u64,
    pub draining: bool,
}

/// What an admin operation can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    #[error("no backend named `{0}` (GET /backends lists them)")]
    NotFound(String),
    #[error("a backend named `{0}` already exists: remove it first or pick another name")]
    AlreadyExists(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("the LB is shutting down")]
    ShuttingDown,
    #[error("only {healthy} of the {want} wanted backends became healthy within {after:?}")]
    Timeout {
        want: usize,
        healthy: usize,
        after: Duration,
    },
    /// The HTTP admin API could not be reached or answered nonsense.
    #[error("LB admin API at {addr}: {message}")]
    Unreachable { addr: SocketAddr, message: String },
}

impl AdminError {
    pub(crate) fn status(&self) -> u16 {
        match self {
            AdminError::NotFound(_) => 404,
            AdminError::AlreadyExists(_) => 409,
            AdminError::BadRequest(_) => 400,
            AdminError::ShuttingDown => 503,
            AdminError::Timeout { .. } => 504,
            AdminError::Unreachable { .. } => 502,
        }
    }
}
