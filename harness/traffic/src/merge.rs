//! Several generators' results as one: counts and per-bucket counts by
//! addition, latency distributions by adding their HDR histograms (never by
//! averaging percentiles), so the merged p99 is the p99 of every request.
//!
//! A [`Summary`] alone cannot be merged exactly (its percentiles are read
//! from histograms it does not keep); a [`Part`] is a summary with the
//! [`Histograms`] it was read from. Their wire form is hdrhistogram's V2
//! compressed encoding in base64, the form HdrHistogram's tools read.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::summary::{Bucket, Latencies, Summary};
use super::MAX_LISTED;
use zdt_core::events::duration_ns;
use zdt_core::units::Rate;

/// The distributions a summary's percentiles were read from.
#[derive(Debug, Clone, PartialEq)]
pub struct Histograms {
    /// Corrected latency (from the due time), ns.
    pub latency: Histogram<u64>,
    /// Latency from the actual send, ns.
    pub latency_uncorrected: Histogram<u64>,
    /// Send − due, ns.
    pub schedule_lag: Histogram<u64>,
    /// Each bucket's corrected latency, ns, in bucket order.
    pub buckets: Vec<Histogram<u32>>,
}

/// [`Histograms`] as text: each one V2-deflate encoded, then base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodedHistograms {
    pub latency: String,
    pub latency_uncorrected: String,
    pub schedule_lag: String,
    pub buckets: Vec<String>,
}

/// Why histograms or parts do not merge.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MergeError {
    #[error("nothing to merge")]
    Empty,
    #[error("histogram `{what}` does not decode: {why}")]
    Decode { what: String, why: String },
    #[error("histogram `{what}` does not encode: {why}")]
    Encode { what: String, why: String },
    #[error("histogram `{what}` cannot be added: {why}")]
    Add { what: String, why: String },
    #[error("part {index} has {found} buckets but {histograms} bucket histograms")]
    BucketCount {
        index: usize,
        found: usize,
        histograms: usize,
    },
    #[error("part {index} has {found:?} buckets, the first part {want:?}: the generators ran with different settings")]
    BucketWidth {
        index: usize,
        found: Duration,
        want: Duration,
    },
}

fn encode<T: hdrhistogram::Counter>(what: &str, h: &Histogram<T>) -> Result<String, MergeError> {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut bytes)
        .map_err(|e| MergeError::Encode {
            what: what.into(),
            why: format!("{e:?}"),
        })?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn decode<T: hdrhistogram::Counter>(what: &str, text: &str) -> Result<Histogram<T>, MergeError> {
    let err = |why: String| MergeError::Decode {
        what: what.into(),
        why,
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| err(e.to_string()))?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| err(format!("{e:?}")))
}

impl Histograms {
    pub fn encode(&self) -> Result<EncodedHistograms, MergeError> {
        Ok(EncodedHistograms {
            latency: encode("latency", &self.latency)?,
            latency_uncorrected: encode("latency_uncorrected", &self.latency_uncorrected)?,
            schedule_lag: encode("schedule_lag", &self.schedule_lag)?,
            buckets: self
                .buckets
                .iter()
                .enumerate()
                .map(|(i, h)| encode(&format!("buckets[{i}]"), h))
                .collect::<Result<_, _>>()?,
        })
    }
}

impl EncodedHistograms {
    pub fn decode(&self) -> Result<Histograms, MergeError> {
        Ok(Histograms {
            latency: decode("latency", &self.latency)?,
            latency_uncorrected: decode("latency_uncorrected", &self.latency_uncorrected)?,
            schedule_lag: decode("schedule_lag", &self.schedule_lag)?,
            buckets: self
                .buckets
                .iter()
                .enumerate()
                .map(|(i, h)| decode(&format!("buckets[{i}]"), h))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// One generator's result: its summary (times on the run's clock) and the
/// histograms behind it.
#[derive(Debug, Clone)]
pub struct Part {
    pub summary: Summary,
    pub histograms: Histograms,
}

/// One generator of a scaled-out run, as the report lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratorPart {
    /// The pod's name.
    pub name: String,
    /// Its Job completion index.
    pub index: u32,
    pub requests: u64,
    pub successes: u64,
    /// Sent per second of its attack (vegeta's rate).
    pub achieved_rate: f64,
    #[serde(with = "duration_ns")]
    pub send_lag_p99: Duration,
    #[serde(with = "duration_ns")]
    pub send_lag_max: Duration,
    /// Its clock minus the run's, ns (as measured through the API server).
    pub clock_offset_ns: Option<i64>,
    /// How far that measurement may be off, either way.
    #[serde(default, with = "zdt_core::units::opt_nanos")]
    pub clock_uncertainty: Option<Duration>,
    /// Why it has no complete result (lost, failed, fell silent); `None`
    /// when it reported one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost: Option<String>,
    /// Its figures cover only part of its schedule (the last it reported
    /// before it was lost).
    #[serde(default)]
    pub partial: bool,
    /// Its requests are in the merged totals (a lost generator's are only
    /// when it still sent its partial histograms).
    pub merged: bool,
}

impl GeneratorPart {
    /// Success ratio of this generator's requests (0 when none were due).
    pub fn success_ratio(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.successes as f64 / self.requests as f64
        }
    }
}

fn add_into<T: hdrhistogram::Counter>(
    what: &str,
    into: &mut Histogram<T>,
    h: &Histogram<T>,
) -> Result<(), MergeError> {
    into.add(h).map_err(|e| MergeError::Add {
        what: what.into(),
        why: format!("{e:?}"),
    })
}

/// The distribution of every part's values at once: count, total, min and
/// max exactly from the parts' figures, percentiles from the added
/// histogram, clamped to the exact min and max as a generator clamps its own.
fn merged_latencies(all: &[&Latencies], hist: &Histogram<u64>) -> Latencies {
    let count: u64 = all.iter().map(|l| l.count).sum();
    if count == 0 {
        return Latencies::default();
    }
    let seen = all.iter().filter(|l| l.count > 0);
    let min = seen.clone().map(|l| l.min).min().unwrap_or_default();
    let max = seen.map(|l| l.max).max().unwrap_or_default();
    let total: Duration = all.iter().map(|l| l.total).sum();
    let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let q = |q: f64| Duration::from_nanos(hist.value_at_quantile(q).clamp(ns(min), ns(max)));
    Latencies {
        count,
        total,
        min,
        mean: Duration::from_nanos(
            u64::try_from(total.as_nanos() / u128::from(count)).unwrap_or(u64::MAX),
        ),
        p50: q(0.50),
        p90: q(0.90),
        p95: q(0.95),
        p99: q(0.99),
        p999: q(0.999),
        p9999: q(0.9999),
        max,
    }
}

fn add_counts<K: Ord + Clone>(into: &mut BTreeMap<K, u64>, from: &BTreeMap<K, u64>) {
    for (k, n) in from {
        *into.entry(k.clone()).or_default() += n;
    }
}

/// One summary of every part, as if one generator had sent all their
/// requests from the earliest part's t0. Bucket i of every part is
/// added to bucket i (the parts started together, within the clock bound);
/// the list of failed requests is re-timed to the merged t0.
pub fn merge(parts: &[Part]) -> Result<(Summary, Histograms), MergeError> {
    let first = parts.first().ok_or(MergeError::Empty)?;
    let width = first.summary.bucket;
    for (index, p) in parts.iter().enumerate() {
        if p.summary.bucket != width {
            return Err(MergeError::BucketWidth {
                index,
                found: p.summary.bucket,
                want: width,
            });
        }
        if p.summary.buckets.len() != p.histograms.buckets.len() {
            return Err(MergeError::BucketCount {
                index,
                found: p.summary.buckets.len(),
                histograms: p.histograms.buckets.len(),
            });
        }
    }
    let t0 = parts
        .iter()
        .map(|p| p.summary.started_at)
        .min()
        .unwrap_or_default();
    // A part's offsets from its own t0, as offsets from the merged t0.
    let shift = |p: &Part, d: Duration| d + (p.summary.started_at - t0);

    let mut hist = first.histograms.clone();
    for h in [
        &mut hist.latency,
        &mut hist.latency_uncorrected,
        &mut hist.schedule_lag,
    ] {
        h.auto(true);
    }
    for h in &mut hist.buckets {
        h.auto(true);
    }
    let mut s = first.summary.clone();
    for p in &parts[1..] {
        let (h, o) = (&p.histograms, &p.summary);
        add_into("latency", &mut hist.latency, &h.latency)?;
        add_into(
            "latency_uncorrected",
            &mut hist.latency_uncorrected,
            &h.latency_uncorrected,
        )?;
        add_into("schedule_lag", &mut hist.schedule_lag, &h.schedule_lag)?;
        for (i, (b, bh)) in o.buckets.iter().zip(&h.buckets).enumerate() {
            if hist.buckets.len() <= i {
                let mut empty = bh.clone();
                empty.reset();
                empty.auto(true);
                hist.buckets.push(empty);
                s.buckets.push(Bucket {
                    start: b.start,
                    ..Bucket::default()
                });
            }
            add_into(&format!("buckets[{i}]"), &mut hist.buckets[i], bh)?;
            let m = &mut s.buckets[i];
            m.requests += b.requests;
            m.successes += b.successes;
            add_counts(&mut m.errors, &b.errors);
            add_counts(&mut m.status_codes, &b.status_codes);
            add_counts(&mut m.by_node, &b.by_node);
            add_counts(&mut m.by_pod, &b.by_pod);
            m.max = m.max.max(b.max);
        }
        s.requests += o.requests;
        s.sent += o.sent;
        s.successes += o.successes;
        s.not_sent += o.not_sent;
        s.replayed += o.replayed;
        s.cancelled |= o.cancelled;
        s.bytes_in += o.bytes_in;
        s.bytes_out += o.bytes_out;
        s.duration = s.duration.max(o.duration);
        s.started_wall = s.started_wall.min(o.started_wall);
        add_counts(&mut s.status_codes, &o.status_codes);
        add_counts(&mut s.errors, &o.errors);
        add_counts(&mut s.by_node, &o.by_node);
        add_counts(&mut s.by_pod, &o.by_pod);
        for (fault, n) in &o.host_faults {
            *s.host_faults.entry(*fault).or_default() += n;
        }
        for m in &o.error_set {
            if s.error_set.len() < 100 && !s.error_set.contains(m) {
                s.error_set.push(m.clone());
            }
        }
        // vegeta's histogram bins hold counts: they add.
        for (bin, (_, n)) in s.histogram.iter_mut().zip(&o.histogram) {
            bin.1 += n;
        }
    }
    s.rate = Rate::per_second(parts.iter().map(|p| p.summary.rate.get()).sum())
        .unwrap_or(first.summary.rate);
    s.started_at = t0;
    let sending: Vec<&Part> = parts.iter().filter(|p| p.summary.sent > 0).collect();
    s.first_send = sending
        .iter()
        .map(|p| shift(p, p.summary.first_send))
        .min()
        .unwrap_or_default();
    s.last_send = sending
        .iter()
        .map(|p| shift(p, p.summary.last_send))
        .max()
        .unwrap_or_default();
    let last_end = sending
        .iter()
        .map(|p| shift(p, p.summary.last_send + p.summary.wait))
        .max()
        .unwrap_or_default();
    s.attack = s.last_send.saturating_sub(s.first_send);
    s.wait = last_end.saturating_sub(s.last_send);
    // The same rules as one generator's (see the aggregator's summary).
    s.achieved_rate = if s.attack.is_zero() {
        s.sent as f64
    } else {
        s.sent as f64 / s.attack.as_secs_f64()
    };
    s.throughput = if s.attack.is_zero() {
        s.successes as f64
    } else {
        s.successes as f64 / (s.attack + s.wait).as_secs_f64()
    };
    let lat =
        |f: fn(&Summary) -> &Latencies| parts.iter().map(|p| f(&p.summary)).collect::<Vec<_>>();
    s.latency = merged_latencies(&lat(|s| &s.latency), &hist.latency);
    s.latency_uncorrected =
        merged_latencies(&lat(|s| &s.latency_uncorrected), &hist.latency_uncorrected);
    s.schedule_lag = merged_latencies(&lat(|s| &s.schedule_lag), &hist.schedule_lag);
    for (b, h) in s.buckets.iter_mut().zip(&hist.buckets) {
        let max = u64::try_from(b.max.as_nanos()).unwrap_or(u64::MAX);
        let q = |q: f64| {
            if h.is_empty() {
                Duration::ZERO
            } else {
                Duration::from_nanos(h.value_at_quantile(q).min(max))
            }
        };
        b.p50 = q(0.5);
        b.p99 = q(0.99);
    }
    let mut failed: Vec<_> = parts
        .iter()
        .flat_map(|p| {
            p.summary.failed.iter().map(move |f| {
                let mut f = f.clone();
                f.due = shift(p, f.due);
                f.sent = f.sent.map(|d| shift(p, d));
                f.end = shift(p, f.end);
                f
            })
        })
        .collect();
    failed.sort_by_key(|f| f.due);
    let unlisted: u64 = parts.iter().map(|p| p.summary.failed_unlisted).sum();
    let over = failed.len().saturating_sub(MAX_LISTED);
    failed.truncate(MAX_LISTED);
    s.failed = failed;
    s.failed_unlisted = unlisted + over as u64;
    Ok((s, hist))
}

#[cfg(test)]
mod tests {
    use super::super::aggregate::{Aggregator, ErrorKey, Meta, Record};
    use super::super::http::{Detail, Failure, IoKind, Stage};
    use super::super::ErrorKind;
    use super::*;

    fn meta(rate: &str) -> Meta {
        Meta {
            target: "http://127.0.0.1:1/".into(),
            method: "GET".into(),
            rate: rate.parse().unwrap(),
            duration: Duration::from_secs(3),
            keep_alive: false,
            timeout: Duration::from_secs(1),
            started_at: Duration::from_secs(2),
            started_wall: jiff::Timestamp::UNIX_EPOCH,
            bucket: Duration::from_secs(1),
            bytes_out: 0,
        }
    }

    /// Request `seq` of a made-up run: spread over 3 s, latencies from
    /// 100 µs to ~2 s, every 37th refused and every 101st sent late.
    fn record(seq: u64) -> Record<'static> {
        let due = Duration::from_micros(seq * 1_000);
        let lag = Duration::from_micros(if seq.is_multiple_of(101) {
            40_000
        } else {
            seq % 7
        });
        let latency = Duration::from_micros(100 + (seq * seq * 7919) % 2_000_000);
        let refused = seq.is_multiple_of(37);
        Record {
            seq,
            due,
            sent: Some(due + lag),
            end: due + lag + latency,
            status: if refused { 0 } else { 200 },
            failure: refused.then(|| {
                ErrorKey::Failure(Failure::new(
                    ErrorKind::Refused,
                    Stage::Connect,
                    Detail::Io(Some(111), IoKind::Refused),
                ))
            }),
            bytes_in: 5,
            replays: 0,
            node: Some(if seq.is_multiple_of(3) { b"w1" } else { b"w2" }),
            pod: None,
            local: None,
        }
    }

    fn part(agg: &Aggregator) -> Part {
        Part {
            summary: agg.summary(false),
            histograms: agg.histograms(),
        }
    }

    #[test]
    fn two_halves_merge_into_exactly_the_whole() {
        // One generator sends every request; two generators send the even
        // and the odd ones (each at half the rate).
        let mut whole = Aggregator::new(meta("1000/s"), None);
        let mut halves = [
            Aggregator::new(meta("500/s"), None),
            Aggregator::new(meta("500/s"), None),
        ];
        for seq in 0..3000 {
            whole.record(&record(seq));
            halves[(seq % 2) as usize].record(&record(seq));
        }
        let parts: Vec<Part> = halves.iter().map(part).collect();
        // Through the wire form, as a generator pod sends them.
        let parts: Vec<Part> = parts
            .into_iter()
            .map(|p| Part {
                histograms: p.histograms.encode().unwrap().decode().unwrap(),
                summary: p.summary,
            })
            .collect();
        let (merged, hist) = merge(&parts).unwrap();
        let one = whole.summary(false);

        // The merged histogram is the sum of the parts' histograms…
        let mut sum = parts[0].histograms.latency.clone();
        sum.add(&parts[1].histograms.latency).unwrap();
        assert_eq!(hist.latency, sum);
        // … and the histogram of every request.
        assert_eq!(hist.latency, whole.histograms().latency);
        assert_eq!(merged.latency, one.latency);
        assert_eq!(merged.latency_uncorrected, one.latency_uncorrected);
        assert_eq!(merged.schedule_lag, one.schedule_lag);
        assert_eq!(
            (merged.requests, merged.sent, merged.successes),
            (one.requests, one.sent, one.successes)
        );
        assert_eq!(
            merged.requests,
            parts[0].summary.requests + parts[1].summary.requests
        );
        assert_eq!(merged.success_ratio(), one.success_ratio());
        assert_eq!(merged.errors, one.errors);
        assert_eq!(merged.status_codes, one.status_codes);
        assert_eq!(merged.by_node, one.by_node);
        assert_eq!(merged.histogram, one.histogram);
        assert_eq!(merged.buckets, one.buckets);
        assert_eq!(merged.failed, one.failed);
        assert_eq!(merged.rate.get(), 1000.0);
        assert_eq!(
            (
                merged.first_send,
                merged.last_send,
                merged.attack,
                merged.wait
            ),
            (one.first_send, one.last_send, one.attack, one.wait)
        );
        assert_eq!(merged.achieved_rate.to_bits(), one.achieved_rate.to_bits());
        // The p99 of all requests, read from the sum.
        assert_eq!(
            merged.latency.p99,
            Duration::from_nanos(sum.value_at_quantile(0.99))
        );
    }

    #[test]
    fn a_later_part_is_retimed_to_the_first_ones_t0() {
        let mut a = Aggregator::new(meta("10/s"), None);
        let mut late = meta("10/s");
        late.started_at += Duration::from_millis(3);
        let mut b = Aggregator::new(late, None);
        a.record(&record(37));
        b.record(&record(74));
        let (m, _) = merge(&[part(&a), part(&b)]).unwrap();
        assert_eq!(m.started_at, Duration::from_secs(2));
        assert_eq!(
            m.failed.iter().map(|f| f.due).collect::<Vec<_>>(),
            [Duration::from_millis(37), Duration::from_millis(77)]
        );
        // (request 74 went out 4 µs late)
        assert_eq!(m.last_send, Duration::from_micros(77_004));
    }

    #[test]
    fn parts_of_different_bucket_widths_are_refused() {
        let a = Aggregator::new(meta("10/s"), None);
        let mut m = meta("10/s");
        m.bucket = Duration::from_millis(500);
        let b = Aggregator::new(m, None);
        let e = merge(&[part(&a), part(&b)]).unwrap_err();
        assert!(matches!(e, MergeError::BucketWidth { index: 1, .. }), "{e}");
        assert!(matches!(merge(&[]), Err(MergeError::Empty)));
    }

    #[test]
    fn a_damaged_histogram_says_which() {
        let a = Aggregator::new(meta("10/s"), None);
        let mut enc = a.histograms().encode().unwrap();
        enc.schedule_lag = "not base64!".into();
        let e = enc.decode().unwrap_err().to_string();
        assert!(
            e.starts_with("histogram `schedule_lag` does not decode"),
            "{e}"
        );
    }
}
