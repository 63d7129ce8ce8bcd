//! What an attack leaves behind: a serialisable summary with fixed-size
//! latency tables and per-bucket counts. Reports re-render from it alone.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use zdt_core::events::duration_ns;
use zdt_core::units::Rate;

/// How a request failed. Successes are 2xx/3xx responses (vegeta's rule);
/// everything else has exactly one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The TCP connect did not finish within the timeout (e.g. SYNs dropped
    /// by a node without local endpoints).
    ConnectTimeout,
    /// Connected, but the response (head or body) did not arrive in time.
    ResponseTimeout,
    /// Connection refused (RST to the SYN): nothing listens, or a `Cluster`
    /// service without endpoints rejects.
    Refused,
    /// Connection reset (or broken pipe) after it was established.
    Reset,
    /// The peer closed the connection before a complete response.
    Closed,
    /// The bytes that came back are not a valid HTTP/1.x response.
    BadResponse,
    /// Any other I/O error (e.g. no local ports left).
    OtherIo,
    /// A complete response with a status outside 200–399.
    HttpStatus,
    /// Due but never sent: the in-flight bound held it until the attack ended.
    NotSent,
    /// In flight when the attack was cancelled.
    Cancelled,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 10] = [
        ErrorKind::ConnectTimeout,
        ErrorKind::ResponseTimeout,
        ErrorKind::Refused,
        ErrorKind::Reset,
        ErrorKind::Closed,
        ErrorKind::BadResponse,
        ErrorKind::OtherIo,
        ErrorKind::HttpStatus,
        ErrorKind::NotSent,
        ErrorKind::Cancelled,
    ];

    /// The kebab-case name used in JSON, CSV and the text report.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::ConnectTimeout => "connect-timeout",
            ErrorKind::ResponseTimeout => "response-timeout",
            ErrorKind::Refused => "refused",
            ErrorKind::Reset => "reset",
            ErrorKind::Closed => "closed",
            ErrorKind::BadResponse => "bad-response",
            ErrorKind::OtherIo => "other-io",
            ErrorKind::HttpStatus => "http-status",
            ErrorKind::NotSent => "not-sent",
            ErrorKind::Cancelled => "cancelled",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A latency distribution, read from an HDR histogram (exact to 3
/// significant digits, unlike vegeta's t-digest tails). All in ns in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Latencies {
    /// How many values the distribution holds.
    pub count: u64,
    #[serde(with = "duration_ns")]
    pub total: Duration,
    #[serde(with = "duration_ns")]
    pub min: Duration,
    #[serde(with = "duration_ns")]
    pub mean: Duration,
    #[serde(with = "duration_ns")]
    pub p50: Duration,
    #[serde(with = "duration_ns")]
    pub p90: Duration,
    #[serde(with = "duration_ns")]
    pub p95: Duration,
    #[serde(with = "duration_ns")]
    pub p99: Duration,
    #[serde(with = "duration_ns")]
    pub p999: Duration,
    #[serde(with = "duration_ns")]
    pub p9999: Duration,
    #[serde(with = "duration_ns")]
    pub max: Duration,
}

/// One time bucket of the attack, by due time: the requests that were due
/// in `[start, start + bucket)` after t0, and what became of them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Bucket {
    /// Offset of the bucket from t0 (not from the run clock's origin).
    #[serde(with = "duration_ns")]
    pub start: Duration,
    pub requests: u64,
    pub successes: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub errors: BTreeMap<ErrorKind, u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub status_codes: BTreeMap<u16, u64>,
    /// Corrected latency (from the due time) of the requests sent.
    #[serde(with = "duration_ns")]
    pub p50: Duration,
    #[serde(with = "duration_ns")]
    pub p99: Duration,
    #[serde(with = "duration_ns")]
    pub max: Duration,
    /// Responses by `X-Node` response header value.
    #[serde(default)]
    pub by_node: BTreeMap<String, u64>,
    /// Responses by `X-Pod` response header value.
    #[serde(default)]
    pub by_pod: BTreeMap<String, u64>,
}

impl Bucket {
    /// Success ratio of the bucket (1.0 when empty).
    pub fn success_ratio(&self) -> f64 {
        if self.requests == 0 {
            1.0
        } else {
            self.successes as f64 / self.requests as f64
        }
    }
}

/// The result of one attack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The URL attacked.
    pub target: String,
    pub method: String,
    /// Requested rate and duration.
    pub rate: Rate,
    #[serde(with = "duration_ns")]
    pub duration: Duration,
    pub keep_alive: bool,
    #[serde(with = "duration_ns")]
    pub timeout: Duration,
    /// t0 (request 0 due) as an offset on the run's clock.
    #[serde(with = "duration_ns")]
    pub started_at: Duration,
    /// t0 on the wall clock, for vegeta's `earliest`/`latest`/`end`.
    pub started_wall: jiff::Timestamp,
    /// Every request that was due: sent ones plus not-sent ones.
    pub requests: u64,
    /// Requests that went out (`requests - not_sent`).
    pub sent: u64,
    pub successes: u64,
    pub not_sent: u64,
    /// Requests that went again on a fresh connection after the reused one
    /// turned out closed before any response (counted once each, whatever
    /// their outcome).
    #[serde(default)]
    pub replayed: u64,
    /// The attack was cancelled before its schedule ended; the counts
    /// cover what was due until then.
    pub cancelled: bool,
    /// First send to last send (vegeta's `duration`).
    #[serde(with = "duration_ns")]
    pub attack: Duration,
    /// Last send to last completion (vegeta's `wait`).
    #[serde(with = "duration_ns")]
    pub wait: Duration,
    /// Offsets from t0 of the first and last send (vegeta's earliest/latest).
    #[serde(with = "duration_ns")]
    pub first_send: Duration,
    #[serde(with = "duration_ns")]
    pub last_send: Duration,
    /// Sent requests per second of attack (vegeta's `rate`).
    pub achieved_rate: f64,
    /// Successes per second of attack + wait (vegeta's `throughput`).
    pub throughput: f64,
    /// Response body bytes received and request body bytes sent.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Status codes of every request; 0 = no (complete) response.
    pub status_codes: BTreeMap<u16, u64>,
    pub errors: BTreeMap<ErrorKind, u64>,
    /// Distinct error messages, first seen first (vegeta's Error Set),
    /// capped so a storm of distinct errors stays bounded.
    pub error_set: Vec<String>,
    /// Latency from the due time: includes any wait the generator imposed,
    /// so coordinated omission cannot hide a stall.
    pub latency: Latencies,
    /// Latency from the actual send.
    pub latency_uncorrected: Latencies,
    /// Actual send − due time: the generator's own lag, which the
    /// corrected latency includes.
    pub schedule_lag: Latencies,
    /// vegeta's latency histogram: (lower bound, requests with a corrected
    /// latency from it to the next bound), the last bin open-ended.
    #[serde(default, with = "histogram_ns")]
    pub histogram: Vec<(Duration, u64)>,
    /// Responses by `X-Node` / `X-Pod` response header value.
    #[serde(default)]
    pub by_node: BTreeMap<String, u64>,
    #[serde(default)]
    pub by_pod: BTreeMap<String, u64>,
    /// Failures that were the generator's machine's, not the target's
    /// (also counted in `errors`): see [`zdt_core::hostfault`].
    #[serde(default)]
    pub host_faults: zdt_core::hostfault::HostFaults,
    #[serde(with = "duration_ns")]
    pub bucket: Duration,
    pub buckets: Vec<Bucket>,
    /// The failed requests one by one (by due time), up to
    /// [`crate::MAX_LISTED`]: what per-request attribution joins against
    /// the data path's records.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<crate::FailedRequest>,
    /// Failures beyond that cap (counted, not listed).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed_unlisted: u64,
    /// A run scaled out to generator pods: each generator's own figures
    /// (the rest of this summary is their merge); empty for one generator.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub generators: Vec<crate::GeneratorPart>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Summary {
    /// Successes / requests (vegeta's `success`), 0 when nothing was due.
    pub fn success_ratio(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.successes as f64 / self.requests as f64
        }
    }

    /// Failures of every kind.
    pub fn failures(&self) -> u64 {
        self.requests - self.successes
    }

    /// Achieved / requested rate (1.0 = perfect).
    pub fn rate_accuracy(&self) -> f64 {
        self.achieved_rate / self.rate.get()
    }

    /// Whether the generator kept its schedule: every due request was sent
    /// and 99 % of them within `max_lag` of their due time. A run whose
    /// generator fell behind measures the generator, not the system.
    pub fn on_schedule(&self, max_lag: Duration) -> bool {
        self.not_sent == 0 && self.schedule_lag.p99 <= max_lag
    }
}

/// Histogram bins as `[[lower bound ns, count], …]`.
mod histogram_ns {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        bins: &[(Duration, u64)],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            bins.iter()
                .map(|(d, n)| (u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), *n)),
        )
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(Duration, u64)>, D::Error> {
        let bins = Vec::<(u64, u64)>::deserialize(d)?;
        Ok(bins
            .into_iter()
            .map(|(ns, n)| (Duration::from_nanos(ns), n))
            .collect())
    }
}
