//! Folding results into histograms and time buckets as they arrive, so
//! memory depends on the attack's duration, not on its request count.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::failed::{FailedList, FailedRequest};
use super::http::{Detail, Failure};
use super::raw::{RawRecord, RawSink};
use super::summary::{Bucket, ErrorKind, Latencies, Summary};

/// Latencies above this are clamped (the timeout is far below it).
const MAX_TRACKABLE_NS: u64 = 3_600_000_000_000;
/// The Error Set keeps at most this many distinct messages.
const MAX_ERROR_SET: usize = 100;
/// Lower bounds of vegeta's latency histogram (`buckets` in its JSON
/// report), from the corrected latencies.
const HISTOGRAM_BOUNDS: [Duration; 16] = [
    Duration::ZERO,
    Duration::from_micros(100),
    Duration::from_micros(250),
    Duration::from_micros(500),
    Duration::from_millis(1),
    Duration::from_micros(2500),
    Duration::from_millis(5),
    Duration::from_millis(10),
    Duration::from_millis(25),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_millis(2500),
    Duration::from_secs(5),
];
/// Distinct backend names tracked; more fold into "(other)".
const MAX_BACKENDS: usize = 4096;
const KINDS: usize = ErrorKind::ALL.len();

/// What became of one request, as the aggregator sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Record<'a> {
    pub seq: u64,
    /// Offsets from t0.
    pub due: Duration,
    /// `None` when the request was never sent.
    pub sent: Option<Duration>,
    pub end: Duration,
    /// The status code (0 = no complete response).
    pub status: u16,
    /// `None` = success.
    pub failure: Option<ErrorKey>,
    pub bytes_in: u64,
    /// Times it went again after its reused connection turned out closed.
    pub replays: u32,
    pub node: Option<&'a [u8]>,
    pub pod: Option<&'a [u8]>,
    /// The connection's local address, kept for failures only.
    pub local: Option<std::net::SocketAddr>,
}

/// Identifies a distinct error message without formatting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ErrorKey {
    Failure(Failure),
    Status(u16),
}

impl ErrorKey {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ErrorKey::Failure(f) => f.kind,
            ErrorKey::Status(_) => ErrorKind::HttpStatus,
        }
    }

    /// The machine's failure this was, if it was one.
    pub fn host_fault(&self) -> Option<zdt_core::hostfault::HostFault> {
        match self {
            ErrorKey::Failure(Failure {
                detail: Detail::Io(Some(errno), _),
                ..
            }) => zdt_core::hostfault::HostFault::from_errno(*errno),
            _ => None,
        }
    }
}

/// Static facts about the attack the summary repeats.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub target: String,
    pub method: String,
    pub rate: zdt_core::units::Rate,
    pub duration: Duration,
    pub keep_alive: bool,
    pub timeout: Duration,
    pub started_at: Duration,
    pub started_wall: jiff::Timestamp,
    pub bucket: Duration,
    pub bytes_out: u64,
}

struct Dist {
    hist: Histogram<u64>,
    total: u128,
    min: u64,
    max: u64,
}

impl Dist {
    fn new() -> Self {
        Self {
            hist: Histogram::new_with_bounds(1, MAX_TRACKABLE_NS, 3)
                .expect("static histogram bounds are valid"),
            total: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.hist.saturating_record(ns.clamp(1, MAX_TRACKABLE_NS));
        self.total += u128::from(ns);
        self.min = self.min.min(ns);
        self.max = self.max.max(ns);
    }

    fn count(&self) -> u64 {
        self.hist.len()
    }

    fn quantile(&self, q: f64) -> Duration {
        if self.count() == 0 {
            return Duration::ZERO;
        }
        let v = self.hist.value_at_quantile(q).clamp(self.min, self.max);
        Duration::from_nanos(v)
    }

    /// How many values fall in each `[bound, next bound)`, the last one
    /// open-ended (to the histogram's 3 significant digits).
    fn histogram(&self, bounds: &[Duration]) -> Vec<(Duration, u64)> {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let below = |d: Duration| -> u64 {
            let v = ns(d);
            if v <= 1 {
                return 0;
            }
            self.hist
                .iter_recorded()
                .take_while(|it| it.value_iterated_to() < v)
                .map(|it| it.count_at_value())
                .sum()
        };
        let total = self.count();
        let mut out = Vec::with_capacity(bounds.len());
        for (i, &lo) in bounds.iter().enumerate() {
            let upto = bounds.get(i + 1).map_or(total, |&hi| below(hi));
            out.push((lo, upto - below(lo)));
        }
        out
    }

    fn latencies(&self) -> Latencies {
        let count = self.count();
        if count == 0 {
            return Latencies::default();
        }
        let ns = |v: u128| Duration::from_nanos(u64::try_from(v).unwrap_or(u64::MAX));
        Latencies {
            count,
            total: ns(self.total),
            min: Duration::from_nanos(self.min),
            mean: ns(self.total / u128::from(count)),
            p50: self.quantile(0.50),
            p90: self.quantile(0.90),
            p95: self.quantile(0.95),
            p99: self.quantile(0.99),
            p999: self.quantile(0.999),
            p9999: self.quantile(0.9999),
            max: Duration::from_nanos(self.max),
        }
    }
}

/// Small "value → count" tables: a handful of distinct keys, scanned linearly.
type Counts<K> = Vec<(K, u64)>;

fn bump<K: PartialEq + Copy>(counts: &mut Counts<K>, key: K) {
    match counts.iter_mut().find(|(k, _)| *k == key) {
        Some((_, n)) => *n += 1,
        None => counts.push((key, 1)),
    }
}

struct BucketAgg {
    requests: u64,
    successes: u64,
    errors: [u64; KINDS],
    codes: Counts<u16>,
    hist: Histogram<u32>,
    max: u64,
    nodes: Counts<u32>,
    pods: Counts<u32>,
}

impl BucketAgg {
    fn new() -> Self {
        let mut hist = Histogram::new_with_bounds(1_000, 1_000_000, 2)
            .expect("static histogram bounds are valid");
        // Grows to the largest latency seen in this bucket only.
        hist.auto(true);
        Self {
            requests: 0,
            successes: 0,
            errors: [0; KINDS],
            codes: Vec::new(),
            hist,
            max: 0,
            nodes: Vec::new(),
            pods: Vec::new(),
        }
    }
}

/// Backend names seen in responses, interned so a response costs a hash
/// lookup and no allocation.
#[derive(Default)]
struct Names {
    ids: HashMap<Box<[u8]>, u32>,
    names: Vec<Arc<str>>,
}

impl Names {
    fn intern(&mut self, raw: &[u8]) -> u32 {
        if let Some(&id) = self.ids.get(raw) {
            return id;
        }
        let key: &[u8] = if self.names.len() >= MAX_BACKENDS {
            b"(other)"
        } else {
            raw
        };
        if let Some(&id) = self.ids.get(key) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names
            .push(Arc::from(String::from_utf8_lossy(key).as_ref()));
        self.ids.insert(key.into(), id);
        id
    }

    fn name(&self, id: u32) -> &Arc<str> {
        &self.names[id as usize]
    }

    fn table(&self, counts: &Counts<u32>) -> BTreeMap<String, u64> {
        counts
            .iter()
            .map(|&(id, n)| (self.name(id).to_string(), n))
            .collect()
    }
}

/// A live view for progress displays (durations in ns in JSON: a child
/// generator process streams these).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    /// Requests accounted for so far (completed, failed or not sent).
    pub done: u64,
    pub successes: u64,
    /// Corrected p99 so far.
    #[serde(with = "zdt_core::events::duration_ns")]
    pub p99: Duration,
    /// Largest send − due so far.
    #[serde(with = "zdt_core::events::duration_ns")]
    pub max_lag: Duration,
}

pub(crate) struct Aggregator {
    meta: Meta,
    requests: u64,
    sent: u64,
    successes: u64,
    replayed: u64,
    bytes_in: u64,
    codes: Counts<u16>,
    errors: [u64; KINDS],
    error_keys: HashSet<ErrorKey>,
    error_set: Vec<String>,
    corrected: Dist,
    uncorrected: Dist,
    lag: Dist,
    first_send: Option<Duration>,
    last_send: Duration,
    last_end: Duration,
    names: Names,
    nodes: Counts<u32>,
    pods: Counts<u32>,
    buckets: Vec<BucketAgg>,
    host_faults: zdt_core::hostfault::HostFaults,
    raw: Option<RawSink>,
    failed: FailedList,
}

impl Aggregator {
    pub fn new(meta: Meta, raw: Option<RawSink>) -> Self {
        Self {
            meta,
            requests: 0,
            sent: 0,
            successes: 0,
            replayed: 0,
            bytes_in: 0,
            codes: Vec::new(),
            errors: [0; KINDS],
            error_keys: HashSet::new(),
            error_set: Vec::new(),
            corrected: Dist::new(),
            uncorrected: Dist::new(),
            lag: Dist::new(),
            first_send: None,
            last_send: Duration::ZERO,
            last_end: Duration::ZERO,
            names: Names::default(),
            nodes: Vec::new(),
            pods: Vec::new(),
            buckets: Vec::new(),
            host_faults: Default::default(),
            raw,
            failed: FailedList::default(),
        }
    }

    pub fn record(&mut self, r: &Record<'_>) {
        let success = r.failure.is_none();
        self.requests += 1;
        self.successes += u64::from(success);
        self.bytes_in += r.bytes_in;
        self.replayed += u64::from(r.replays > 0);
        bump(&mut self.codes, r.status);
        if let Some(key) = r.failure {
            self.errors[key.kind().index()] += 1;
            self.remember_error(key);
            self.failed.push(FailedRequest {
                due: r.due,
                sent: r.sent,
                end: r.end,
                kind: key.kind(),
                status: r.status,
                local: r.local,
                provenance: None,
                routed_at: None,
            });
            if let Some(fault) = key.host_fault() {
                *self.host_faults.entry(fault).or_default() += 1;
            }
        }
        let corrected = r.sent.map(|_| r.end.saturating_sub(r.due));
        if let Some(sent) = r.sent {
            self.sent += 1;
            self.corrected.record(r.end.saturating_sub(r.due));
            self.uncorrected.record(r.end.saturating_sub(sent));
            self.lag.record(sent.saturating_sub(r.due));
            self.first_send = Some(self.first_send.map_or(sent, |f| f.min(sent)));
            self.last_send = self.last_send.max(sent);
            self.last_end = self.last_end.max(r.end);
        }
        let node = r.node.map(|n| self.names.intern(n));
        let pod = r.pod.map(|p| self.names.intern(p));
        if let Some(id) = node {
            bump(&mut self.nodes, id);
        }
        if let Some(id) = pod {
            bump(&mut self.pods, id);
        }

        let index = (r.due.as_nanos() / self.meta.bucket.as_nanos().max(1)) as usize;
        if self.buckets.len() <= index {
            self.buckets.resize_with(index + 1, BucketAgg::new);
        }
        let b = &mut self.buckets[index];
        b.requests += 1;
        b.successes += u64::from(success);
        if let Some(key) = r.failure {
            b.errors[key.kind().index()] += 1;
        }
        bump(&mut b.codes, r.status);
        if let Some(c) = corrected {
            let ns = u64::try_from(c.as_nanos()).unwrap_or(u64::MAX);
            // `record`, not `saturating_record`: the latter clamps to the
            // current 1 ms top instead of letting `auto` grow the histogram,
            // which pinned every bucket's p50/p99 at ~1 ms.
            let v = ns.clamp(1, MAX_TRACKABLE_NS);
            if b.hist.record(v).is_err() {
                b.hist.saturating_record(v);
            }
            b.max = b.max.max(ns);
        }
        if let Some(id) = node {
            bump(&mut b.nodes, id);
        }
        if let Some(id) = pod {
            bump(&mut b.pods, id);
        }

        if let Some(raw) = &self.raw {
            let at = |d: Duration| self.meta.started_at + d;
            raw.send(RawRecord {
                seq: r.seq,
                due: at(r.due),
                sent: r.sent.map(at),
                latency: corrected,
                latency_uncorrected: r.sent.map(|s| r.end.saturating_sub(s)),
                status: r.status,
                error: r.failure.map(|k| k.kind()),
                bytes_in: r.bytes_in,
                bytes_out: if r.sent.is_some() {
                    self.meta.bytes_out
                } else {
                    0
                },
                node: node.map(|id| self.names.name(id).clone()),
                pod: pod.map(|id| self.names.name(id).clone()),
            });
        }
    }

    fn remember_error(&mut self, key: ErrorKey) {
        // Requests never sent have a line of their own in the reports.
        if key.kind() == ErrorKind::NotSent {
            return;
        }
        if self.error_set.len() >= MAX_ERROR_SET || !self.error_keys.insert(key) {
            return;
        }
        let message = match key {
            ErrorKey::Status(code) => match http::StatusCode::from_u16(code) {
                Ok(s) => format!("{} {}", code, s.canonical_reason().unwrap_or("")),
                Err(_) => code.to_string(),
            }
            .trim_end()
            .to_string(),
            ErrorKey::Failure(f) => format!("{} \"{}\": {}", self.meta.method, self.meta.target, f),
        };
        self.error_set.push(message);
    }

    /// Hand out the raw sink so the writer can finish once it is dropped.
    pub fn take_raw(&mut self) -> Option<RawSink> {
        self.raw.take()
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            done: self.requests,
            successes: self.successes,
            p99: self.corrected.quantile(0.99),
            max_lag: Duration::from_nanos(if self.lag.count() == 0 {
                0
            } else {
                self.lag.max
            }),
        }
    }

    /// The histograms the summary's percentiles are read from.
    pub fn histograms(&self) -> super::merge::Histograms {
        super::merge::Histograms {
            latency: self.corrected.hist.clone(),
            latency_uncorrected: self.uncorrected.hist.clone(),
            schedule_lag: self.lag.hist.clone(),
            buckets: self.buckets.iter().map(|b| b.hist.clone()).collect(),
        }
    }

    /// The summary; `cancelled` says whether the schedule was cut short.
    pub fn summary(&self, cancelled: bool) -> Summary {
        let (failed, failed_unlisted) = self.failed.snapshot();
        let first = self.first_send.unwrap_or_default();
        let attack = self.last_send.saturating_sub(first);
        let wait = self.last_end.saturating_sub(self.last_send);
        let achieved_rate = if attack.is_zero() {
            self.sent as f64
        } else {
            self.sent as f64 / attack.as_secs_f64()
        };
        let throughput = if attack.is_zero() {
            self.successes as f64
        } else {
            self.successes as f64 / (attack + wait).as_secs_f64()
        };
        let errors = |counts: &[u64; KINDS]| -> BTreeMap<ErrorKind, u64> {
            ErrorKind::ALL
                .iter()
                .filter(|k| counts[k.index()] > 0)
                .map(|&k| (k, counts[k.index()]))
                .collect()
        };
        let buckets = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let q = |q: f64| {
                    if b.hist.is_empty() {
                        Duration::ZERO
                    } else {
                        Duration::from_nanos(b.hist.value_at_quantile(q).min(b.max))
                    }
                };
                Bucket {
                    start: self.meta.bucket * i as u32,
                    requests: b.requests,
                    successes: b.successes,
                    errors: errors(&b.errors),
                    status_codes: b.codes.iter().copied().collect(),
                    p50: q(0.5),
                    p99: q(0.99),
                    max: Duration::from_nanos(b.max),
                    by_node: self.names.table(&b.nodes),
                    by_pod: self.names.table(&b.pods),
                }
            })
            .collect();
        Summary {
            target: self.meta.target.clone(),
            method: self.meta.method.clone(),
            rate: self.meta.rate,
            duration: self.meta.duration,
            keep_alive: self.meta.keep_alive,
            timeout: self.meta.timeout,
            started_at: self.meta.started_at,
            started_wall: self.meta.started_wall,
            requests: self.requests,
            sent: self.sent,
            successes: self.successes,
            not_sent: self.errors[ErrorKind::NotSent.index()],
            replayed: self.replayed,
            cancelled,
            attack,
            wait,
            first_send: first,
            last_send: self.last_send,
            achieved_rate,
            throughput,
            bytes_in: self.bytes_in,
            bytes_out: self.sent * self.meta.bytes_out,
            status_codes: self.codes.iter().copied().collect(),
            errors: errors(&self.errors),
            error_set: self.error_set.clone(),
            latency: self.corrected.latencies(),
            latency_uncorrected: self.uncorrected.latencies(),
            schedule_lag: self.lag.latencies(),
            histogram: self.corrected.histogram(&HISTOGRAM_BOUNDS),
            by_node: self.names.table(&self.nodes),
            by_pod: self.names.table(&self.pods),
            host_faults: self.host_faults.clone(),
            bucket: self.meta.bucket,
            buckets,
            failed,
            failed_unlisted,
            generators: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::http::{Detail, Stage};
    use super::*;

    fn meta() -> Meta {
        Meta {
            target: "http://127.0.0.1:1/".into(),
            method: "GET".into(),
            rate: "1000/s".parse().unwrap(),
            duration: Duration::from_secs(2),
            keep_alive: false,
            timeout: Duration::from_secs(1),
            started_at: Duration::from_secs(5),
            started_wall: jiff::Timestamp::UNIX_EPOCH,
            bucket: Duration::from_secs(1),
            bytes_out: 3,
        }
    }

    fn ok(seq: u64, due_ms: u64, latency_ms: u64, node: &'static [u8]) -> Record<'static> {
        let due = Duration::from_millis(due_ms);
        Record {
            seq,
            due,
            sent: Some(due),
            end: due + Duration::from_millis(latency_ms),
            status: 200,
            failure: None,
            bytes_in: 10,
            replays: 0,
            node: Some(node),
            pod: None,
            local: None,
        }
    }

    #[test]
    fn counts_buckets_backends_and_vegeta_rates() {
        let mut a = Aggregator::new(meta(), None);
        for i in 0..1000u64 {
            a.record(&ok(i, i, 1, if i % 2 == 0 { b"w1" } else { b"w2" }));
        }
        let refused = ErrorKey::Failure(Failure::new(
            ErrorKind::Refused,
            Stage::Connect,
            Detail::Io(Some(111), super::super::http::IoKind::Refused),
        ));
        for i in 1000..1010u64 {
            let mut r = ok(i, i, 0, b"w1");
            r.status = 0;
            r.failure = Some(refused);
            r.node = None;
            r.bytes_in = 0;
            a.record(&r);
        }
        let mut late = ok(1010, 1010, 0, b"w1");
        late.sent = None;
        late.status = 0;
        late.node = None;
        late.bytes_in = 0;
        late.failure = Some(ErrorKey::Failure(Failure::new(
            ErrorKind::NotSent,
            Stage::Connect,
            Detail::NotSent,
        )));
        a.record(&late);
        let s = a.summary(false);
        assert_eq!(
            (s.requests, s.sent, s.successes, s.not_sent),
            (1011, 1010, 1000, 1)
        );
        assert_eq!(s.errors[&ErrorKind::Refused], 10);
        assert_eq!(s.status_codes[&0], 11);
        assert_eq!(s.status_codes[&200], 1000);
        assert_eq!(s.bytes_in, 10_000);
        assert_eq!(s.bytes_out, 1010 * 3);
        assert_eq!(s.by_node["w1"], 500);
        assert_eq!(s.buckets.len(), 2);
        assert_eq!(s.buckets[0].requests, 1000);
        assert_eq!(s.buckets[1].errors[&ErrorKind::Refused], 10);
        assert_eq!(s.buckets[1].start, Duration::from_secs(1));
        // vegeta: rate = sent / (last send - first send)
        assert_eq!(s.attack, Duration::from_millis(1009));
        assert!((s.achieved_rate - 1010.0 / 1.009).abs() < 1e-6);
        // one message per distinct error, with the method and URL; requests
        // never sent have a line of their own instead
        assert_eq!(s.error_set.len(), 1, "{:?}", s.error_set);
        assert!(
            s.error_set[0].starts_with("GET \"http://127.0.0.1:1/\": dial tcp"),
            "{:?}",
            s.error_set
        );
        assert_eq!(s.latency.max, Duration::from_millis(1));
        // vegeta's histogram: 1000 at 1 ms, 10 refused at 0 ms (1 ns)
        let bin = |lo: Duration| s.histogram.iter().find(|(l, _)| *l == lo).unwrap().1;
        assert_eq!(bin(Duration::ZERO), 10);
        assert_eq!(bin(Duration::from_millis(1)), 1000);
        assert_eq!(s.histogram.iter().map(|(_, n)| n).sum::<u64>(), 1010);
        let json = serde_json::to_string(&s).unwrap();
        let back: Summary = serde_json::from_str(&json).unwrap();
        // (floats may lose their last bit through JSON)
        assert!((back.achieved_rate - s.achieved_rate).abs() < 1e-9);
        assert_eq!(
            (&back.buckets, &back.latency, &back.errors, back.started_at),
            (&s.buckets, &s.latency, &s.errors, s.started_at)
        );
    }

    #[test]
    fn corrected_latency_includes_the_wait_for_the_send() {
        let mut a = Aggregator::new(meta(), None);
        // Due at 0, sent 500 ms late, answered 1 ms after sending.
        a.record(&Record {
            seq: 0,
            due: Duration::ZERO,
            sent: Some(Duration::from_millis(500)),
            end: Duration::from_millis(501),
            status: 200,
            failure: None,
            bytes_in: 0,
            replays: 0,
            node: None,
            pod: None,
            local: None,
        });
        let s = a.summary(false);
        assert_eq!(s.latency.max, Duration::from_millis(501));
        assert_eq!(s.latency_uncorrected.max, Duration::from_millis(1));
        assert_eq!(s.schedule_lag.max, Duration::from_millis(500));
        assert!(!s.on_schedule(Duration::from_millis(100)));
    }

    #[test]
    fn memory_is_flat_in_the_request_count() {
        // Same span, 10x the requests: the number of buckets does not change
        // and nothing per request is kept.
        let mut a = Aggregator::new(meta(), None);
        for i in 0..100_000u64 {
            a.record(&ok(i, i / 100, 1, b"w"));
        }
        assert_eq!(a.buckets.len(), 1);
        assert_eq!(a.nodes.len(), 1);
    }

    #[test]
    fn a_request_replayed_twice_counts_once() {
        let mut a = Aggregator::new(meta(), None);
        for (seq, replays) in [(0u64, 0u32), (1, 1), (2, 2), (3, 0)] {
            let mut r = ok(seq, seq, 1, b"w");
            r.replays = replays;
            a.record(&r);
        }
        assert_eq!(a.summary(false).replayed, 2);
    }
}
