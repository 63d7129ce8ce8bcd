//! vegeta's report layouts, rendered from a [`Summary`]: the text report
//! (`vegeta report`) and the JSON one (`vegeta report -type=json`), with
//! vegeta's field names, units (ns) and definitions, followed by zdt's
//! additions (latency tails to p99.99 from HDR, uncorrected latency,
//! schedule lag, error kinds, backends).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::summary::{Latencies, Summary};

/// vegeta's text report, zdt's additions after a blank line, and vegeta's
/// `Error Set:` last, holding only error lines.
///
/// vegeta's lines describe the requests that were sent, as vegeta's do (it
/// has no other kind); requests the generator owed but never sent have
/// their own line, and a warning heads the report when there were any.
pub fn text(s: &Summary) -> String {
    let mut out = String::new();
    if let Some(warning) = behind_warning(s) {
        let _ = writeln!(out, "{warning}");
    }
    let d = |d: Duration| go_duration(round(d));
    let l = &s.latency;
    let sent = s.sent.max(1) as f64;
    let codes: String = sent_status_codes(s)
        .iter()
        .map(|(code, n)| format!("{code}:{n}  "))
        .collect();
    let vegeta = [
        [
            "Requests".to_string(),
            "[total, rate, throughput]".into(),
            format!("{}, {:.2}, {:.2}", s.sent, s.achieved_rate, s.throughput),
        ],
        [
            "Duration".into(),
            "[total, attack, wait]".into(),
            format!("{}, {}, {}", d(s.attack + s.wait), d(s.attack), d(s.wait)),
        ],
        [
            "Latencies".into(),
            "[min, mean, 50, 90, 95, 99, max]".into(),
            [l.min, l.mean, l.p50, l.p90, l.p95, l.p99, l.max]
                .map(d)
                .join(", "),
        ],
        [
            "Bytes In".into(),
            "[total, mean]".into(),
            format!("{}, {:.2}", s.bytes_in, s.bytes_in as f64 / sent),
        ],
        [
            "Bytes Out".into(),
            "[total, mean]".into(),
            format!("{}, {:.2}", s.bytes_out, s.bytes_out as f64 / sent),
        ],
        [
            "Success".into(),
            "[ratio]".into(),
            format!("{:.2}%", sent_success_ratio(s) * 100.0),
        ],
        ["Status Codes".into(), "[code:count]".into(), codes],
    ];
    tabulate(&mut out, &vegeta);

    let tail = |l: &Latencies| {
        [l.p50, l.p90, l.p99, l.p999, l.p9999, l.max]
            .map(d)
            .join(", ")
    };
    let lag = &s.schedule_lag;
    let kinds: String = s.errors.iter().map(|(k, n)| format!("{k}:{n}  ")).collect();
    let table = |t: &BTreeMap<String, u64>| -> String {
        t.iter().map(|(k, n)| format!("{k}:{n}  ")).collect()
    };
    let mut zdt = vec![
        [
            "Send Lag".to_string(),
            "[mean, 50, 99, max]".into(),
            [lag.mean, lag.p50, lag.p99, lag.max].map(d).join(", "),
        ],
        [
            "Corrected".into(),
            "[50, 90, 99, 99.9, 99.99, max]".into(),
            tail(&s.latency),
        ],
        [
            "Uncorrected".into(),
            "[50, 90, 99, 99.9, 99.99, max]".into(),
            tail(&s.latency_uncorrected),
        ],
        [
            "Schedule".into(),
            "[rate, duration, due]".into(),
            format!(
                "{}, {}, {}{}",
                s.rate,
                go_duration(s.duration),
                s.requests,
                if s.cancelled { " (cancelled)" } else { "" }
            ),
        ],
        [
            "Not Sent".into(),
            "[count, ratio]".into(),
            format!(
                "{}, {:.2}%",
                s.not_sent,
                s.not_sent as f64 / s.requests.max(1) as f64 * 100.0
            ),
        ],
        ["Replayed".into(), "[count]".into(), s.replayed.to_string()],
        ["Error Kinds".into(), "[kind:count]".into(), kinds],
    ];
    if !s.by_node.is_empty() {
        zdt.push(["Nodes".into(), "[X-Node:count]".into(), table(&s.by_node)]);
    }
    if !s.by_pod.is_empty() {
        zdt.push(["Pods".into(), "[X-Pod:count]".into(), table(&s.by_pod)]);
    }
    out.push('\n');
    tabulate(&mut out, &zdt);
    out.push_str("Error Set:\n");
    for e in &s.error_set {
        out.push_str(e);
        out.push('\n');
    }
    out
}

/// The headline when the generator owed requests it never sent: its
/// figures then measure the generator as much as the target.
pub fn behind_warning(s: &Summary) -> Option<String> {
    (s.not_sent > 0).then(|| {
        format!(
            "WARNING: the generator fell behind: {} of {} due requests ({:.2}%) were not sent; \
             the figures below cover the {} sent",
            s.not_sent,
            s.requests,
            s.not_sent as f64 / s.requests.max(1) as f64 * 100.0,
            s.sent
        )
    })
}

/// Status codes of the requests sent (those never sent are "0" in the
/// summary's table).
fn sent_status_codes(s: &Summary) -> BTreeMap<u16, u64> {
    let mut codes = s.status_codes.clone();
    if let Some(n) = codes.get_mut(&0) {
        *n = n.saturating_sub(s.not_sent);
        if *n == 0 {
            codes.remove(&0);
        }
    }
    codes
}

/// Successes / requests sent (vegeta's `success`), 0 when none was.
fn sent_success_ratio(s: &Summary) -> f64 {
    if s.sent == 0 {
        0.0
    } else {
        s.successes as f64 / s.sent as f64
    }
}

/// Go's `text/tabwriter` as vegeta configures it (padding 2, spaces): each
/// column as wide as its widest cell plus two; the last cell is not padded.
fn tabulate(out: &mut String, rows: &[[String; 3]]) {
    let width = |i: usize| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0) + 2;
    let (w0, w1) = (width(0), width(1));
    for r in rows {
        let _ = writeln!(out, "{:<w0$}{:<w1$}{}", r[0], r[1], r[2]);
    }
}

/// vegeta's `round`: to the next more precise unit than the value's own
/// (≥ 1 h → minutes, ≥ 1 m → seconds, ≥ 1 s → ms, ≥ 1 ms → µs, else ns).
pub fn round(d: Duration) -> Duration {
    const UNITS: [u128; 6] = [
        3_600_000_000_000,
        60_000_000_000,
        1_000_000_000,
        1_000_000,
        1_000,
        1,
    ];
    let ns = d.as_nanos();
    for (i, &unit) in UNITS.iter().enumerate() {
        if ns >= unit && i < UNITS.len() - 1 {
            let m = UNITS[i + 1];
            // Go's Duration.Round: halves away from zero.
            let r = (ns + m / 2) / m * m;
            return Duration::from_nanos(u64::try_from(r).unwrap_or(u64::MAX));
        }
    }
    d
}

/// Go's `time.Duration.String()`: `0s`, `850ns`, `1.069ms`, `375.411µs`,
/// `59.99s`, `3m0s`, `1h2m3.5s`.
pub fn go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", decimal(ns, 3));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", decimal(ns, 6));
    }
    let secs = ns / 1_000_000_000;
    let seconds = decimal(ns % 60_000_000_000, 9);
    if secs >= 3600 {
        format!("{}h{}m{}s", secs / 3600, secs / 60 % 60, seconds)
    } else if secs >= 60 {
        format!("{}m{}s", secs / 60, seconds)
    } else {
        format!("{seconds}s")
    }
}

/// `v / 10^digits` with trailing zeros of the fraction dropped.
fn decimal(v: u128, digits: u32) -> String {
    let scale = 10u128.pow(digits);
    let (int, frac) = (v / scale, v % scale);
    if frac == 0 {
        return int.to_string();
    }
    let frac = format!("{:0width$}", frac, width = digits as usize);
    format!("{int}.{}", frac.trim_end_matches('0'))
}

/// vegeta's `latencies` object (ns), plus the HDR tails.
#[derive(Serialize)]
struct VegetaLatencies {
    total: u64,
    mean: u64,
    #[serde(rename = "50th")]
    p50: u64,
    #[serde(rename = "90th")]
    p90: u64,
    #[serde(rename = "95th")]
    p95: u64,
    #[serde(rename = "99th")]
    p99: u64,
    max: u64,
    min: u64,
    #[serde(rename = "99.9th")]
    p999: u64,
    #[serde(rename = "99.99th")]
    p9999: u64,
}

impl From<&Latencies> for VegetaLatencies {
    fn from(l: &Latencies) -> Self {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Self {
            total: ns(l.total),
            mean: ns(l.mean),
            p50: ns(l.p50),
            p90: ns(l.p90),
            p95: ns(l.p95),
            p99: ns(l.p99),
            max: ns(l.max),
            min: ns(l.min),
            p999: ns(l.p999),
            p9999: ns(l.p9999),
        }
    }
}

#[derive(Serialize)]
struct Bytes {
    total: u64,
    mean: f64,
}

/// vegeta's histogram (`buckets`): an object from each bin's lower bound
/// in ns to its count, in bin order.
struct HistogramJson<'a>(&'a [(Duration, u64)]);

impl Serialize for HistogramJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(d, n)| (d.as_nanos().to_string(), *n)))
    }
}

/// vegeta's `Metrics` JSON in its field order, then zdt's additions.
#[derive(Serialize)]
struct VegetaJson<'a> {
    latencies: VegetaLatencies,
    bytes_in: Bytes,
    bytes_out: Bytes,
    earliest: jiff::Timestamp,
    latest: jiff::Timestamp,
    end: jiff::Timestamp,
    duration: u64,
    wait: u64,
    requests: u64,
    rate: f64,
    throughput: f64,
    success: f64,
    status_codes: BTreeMap<String, u64>,
    errors: &'a [String],
    buckets: HistogramJson<'a>,
    // zdt's additions
    #[serde(skip_serializing_if = "Option::is_none")]
    warning: Option<String>,
    send_lag: VegetaLatencies,
    latencies_uncorrected: VegetaLatencies,
    error_kinds: &'a BTreeMap<super::ErrorKind, u64>,
    due: u64,
    not_sent: u64,
    replayed: u64,
    requested_rate: f64,
    cancelled: bool,
    started_at: u64,
    by_node: &'a BTreeMap<String, u64>,
    by_pod: &'a BTreeMap<String, u64>,
    bucket: u64,
    time_buckets: &'a [super::Bucket],
}

/// vegeta's JSON report (one line), with zdt's additions as extra fields.
/// As in the text report, vegeta's fields cover the requests sent; `due`,
/// `not_sent` and `warning` tell about the rest.
pub fn json(s: &Summary) -> String {
    let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let wall = |d: Duration| {
        jiff::SignedDuration::try_from(d)
            .ok()
            .and_then(|d| s.started_wall.checked_add(d).ok())
            .unwrap_or(s.started_wall)
    };
    let sent = s.sent.max(1) as f64;
    let v = VegetaJson {
        latencies: (&s.latency).into(),
        bytes_in: Bytes {
            total: s.bytes_in,
            mean: s.bytes_in as f64 / sent,
        },
        bytes_out: Bytes {
            total: s.bytes_out,
            mean: s.bytes_out as f64 / sent,
        },
        earliest: wall(s.first_send),
        latest: wall(s.last_send),
        end: wall(s.last_send + s.wait),
        duration: ns(s.attack),
        wait: ns(s.wait),
        requests: s.sent,
        rate: s.achieved_rate,
        throughput: s.throughput,
        success: sent_success_ratio(s),
        status_codes: sent_status_codes(s)
            .iter()
            .map(|(c, n)| (c.to_string(), *n))
            .collect(),
        errors: &s.error_set,
        buckets: HistogramJson(&s.histogram),
        warning: behind_warning(s),
        send_lag: (&s.schedule_lag).into(),
        latencies_uncorrected: (&s.latency_uncorrected).into(),
        error_kinds: &s.errors,
        due: s.requests,
        not_sent: s.not_sent,
        replayed: s.replayed,
        requested_rate: s.rate.get(),
        cancelled: s.cancelled,
        started_at: ns(s.started_at),
        by_node: &s.by_node,
        by_pod: &s.by_pod,
        bucket: ns(s.bucket),
        time_buckets: &s.buckets,
    };
    let mut line = serde_json::to_string(&v).expect("the report serialises");
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn ms(v: f64) -> Duration {
        Duration::from_secs_f64(v / 1000.0)
    }

    #[test]
    fn go_duration_strings() {
        for (ns, want) in [
            (0u64, "0s"),
            (850, "850ns"),
            (1_000, "1µs"),
            (375_411, "375.411µs"),
            (1_069_000, "1.069ms"),
            (1_160_000, "1.16ms"),
            (59_990_000_000, "59.99s"),
            (180_000_000_000, "3m0s"),
            (175_000_000_000, "2m55s"),
            (3_723_500_000_000, "1h2m3.5s"),
            (10_000_000_000, "10s"),
        ] {
            assert_eq!(go_duration(Duration::from_nanos(ns)), want, "{ns}");
        }
    }

    #[test]
    fn vegeta_rounding() {
        assert_eq!(
            round(Duration::from_nanos(1_069_499)),
            Duration::from_micros(1069)
        );
        assert_eq!(
            round(Duration::from_nanos(1_069_500)),
            Duration::from_micros(1070)
        );
        assert_eq!(
            round(Duration::from_nanos(59_990_400_000)),
            Duration::from_millis(59_990)
        );
        assert_eq!(
            round(Duration::from_nanos(375_411)),
            Duration::from_nanos(375_411)
        );
        assert_eq!(
            round(Duration::from_secs(179) + ms(600.0)),
            Duration::from_secs(180)
        );
        assert_eq!(
            go_duration(round(Duration::from_nanos(10_001_234_567))),
            "10.001s"
        );
    }

    fn summary() -> Summary {
        let lat = Latencies {
            count: 9000,
            total: ms(9000.0 * 1.257),
            min: Duration::from_nanos(375_411),
            mean: Duration::from_nanos(1_257_123),
            p50: Duration::from_nanos(1_069_000),
            p90: Duration::from_nanos(1_483_000),
            p95: Duration::from_nanos(1_635_000),
            p99: Duration::from_nanos(2_484_000),
            p999: ms(5.0),
            p9999: ms(100.0),
            max: Duration::from_nanos(261_781_000),
        };
        Summary {
            target: "http://127.0.0.1:8080/".into(),
            method: "GET".into(),
            rate: "50/s".parse().unwrap(),
            duration: Duration::from_secs(180),
            keep_alive: true,
            timeout: Duration::from_secs(30),
            started_at: Duration::from_secs(2),
            started_wall: "2026-11-26T05:00:00Z".parse().unwrap(),
            requests: 9000,
            sent: 9000,
            successes: 9000,
            not_sent: 0,
            replayed: 0,
            cancelled: false,
            attack: Duration::from_secs(180),
            wait: Duration::from_nanos(1_160_000),
            first_send: Duration::ZERO,
            last_send: Duration::from_secs(180),
            achieved_rate: 50.006,
            throughput: 50.01,
            bytes_in: 764_693,
            bytes_out: 211_500,
            status_codes: [(200, 4501), (202, 4499)].into(),
            errors: BTreeMap::new(),
            error_set: vec![],
            latency: lat,
            latency_uncorrected: lat,
            schedule_lag: Latencies::default(),
            histogram: vec![],
            by_node: BTreeMap::new(),
            by_pod: BTreeMap::new(),
            host_faults: BTreeMap::new(),
            bucket: Duration::from_secs(1),
            buckets: vec![],
            failed: vec![],
            failed_unlisted: 0,
            generators: Vec::new(),
        }
    }

    #[test]
    fn text_matches_vegeta_layout() {
        let t = text(&summary());
        let vegeta = "\
Requests      [total, rate, throughput]         9000, 50.01, 50.01
Duration      [total, attack, wait]             3m0s, 3m0s, 1.16ms
Latencies     [min, mean, 50, 90, 95, 99, max]  375.411µs, 1.257ms, 1.069ms, 1.483ms, 1.635ms, 2.484ms, 261.781ms
Bytes In      [total, mean]                     764693, 84.97
Bytes Out     [total, mean]                     211500, 23.50
Success       [ratio]                           100.00%
Status Codes  [code:count]                      200:4501  202:4499  

Send Lag     [mean, 50, 99, max]             0s, 0s, 0s, 0s
";
        assert!(t.starts_with(vegeta), "got:\n{t}");
        assert!(
            t.contains("Corrected    [50, 90, 99, 99.9, 99.99, max]"),
            "{t}"
        );
        assert!(t.contains("Not Sent     [count, ratio]"), "{t}");
        assert!(t.ends_with("Error Set:\n"), "{t}");
    }

    #[test]
    fn unsent_requests_have_their_own_line_and_a_headline() {
        let mut s = summary();
        // 9000 sent (3 refused), 10 more due but never sent.
        s.requests = 9010;
        s.not_sent = 10;
        s.successes = 8997;
        s.status_codes = [(0, 13), (200, 8997)].into();
        s.errors = [(ErrorKind::Refused, 3), (ErrorKind::NotSent, 10)].into();
        s.error_set = vec!["GET \"http://127.0.0.1:8080/\": dial tcp: connection refused".into()];
        let t = text(&s);
        let mut lines = t.lines();
        assert_eq!(
            lines.next(),
            Some(
                "WARNING: the generator fell behind: 10 of 9010 due requests (0.11%) were not sent; \
                 the figures below cover the 9000 sent"
            )
        );
        // vegeta's lines count what was sent, all of them alike.
        assert!(
            lines
                .next()
                .unwrap()
                .starts_with("Requests      [total, rate, throughput]         9000, "),
            "{t}"
        );
        assert!(
            t.contains("Success       [ratio]                           99.97%\n"),
            "{t}"
        );
        assert!(
            t.contains("[code:count]                      0:3  200:8997  \n"),
            "{t}"
        );
        assert!(
            t.contains("Not Sent     [count, ratio]                  10, 0.11%\n"),
            "{t}"
        );
        // Error Set: last, only error lines.
        let (_, errors) = t.split_once("Error Set:\n").unwrap();
        assert_eq!(errors, format!("{}\n", s.error_set[0]));

        let v: serde_json::Value = serde_json::from_str(&json(&s)).unwrap();
        assert_eq!(
            (v["requests"].as_u64(), v["due"].as_u64()),
            (Some(9000), Some(9010))
        );
        assert_eq!(v["not_sent"], 10);
        assert_eq!(v["status_codes"]["0"], 3);
        assert!(v["warning"].as_str().unwrap().contains("10 of 9010"));
        assert_eq!(v["success"], 8997.0 / 9000.0);
    }

    #[test]
    fn json_buckets_are_vegetas_histogram_object() {
        let mut s = summary();
        s.histogram = vec![
            (Duration::ZERO, 5),
            (Duration::from_micros(100), 7),
            (Duration::from_millis(1), 2),
        ];
        s.buckets = vec![crate::Bucket {
            requests: 14,
            ..Default::default()
        }];
        let line = json(&s);
        // An object, its keys the lower bounds in ns, in bin order.
        assert!(
            line.contains(r#""buckets":{"0":5,"100000":7,"1000000":2}"#),
            "{line}"
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["time_buckets"][0]["requests"], 14);
        assert!(v.get("warning").is_none());
    }

    #[test]
    fn json_has_vegeta_fields_and_units() {
        let mut s = summary();
        s.errors.insert(ErrorKind::Refused, 3);
        s.error_set.push("boom".into());
        let v: serde_json::Value = serde_json::from_str(&json(&s)).unwrap();
        assert_eq!(v["requests"], 9000);
        assert_eq!(v["success"], 1.0);
        assert_eq!(v["latencies"]["50th"], 1_069_000);
        assert_eq!(v["latencies"]["99.99th"], 100_000_000);
        assert_eq!(v["latencies"]["min"], 375_411);
        assert_eq!(v["duration"], 180_000_000_000u64);
        assert_eq!(v["wait"], 1_160_000);
        assert_eq!(v["bytes_in"]["total"], 764_693);
        assert_eq!(v["status_codes"]["200"], 4501);
        assert_eq!(v["errors"][0], "boom");
        assert_eq!(v["error_kinds"]["refused"], 3);
        assert_eq!(v["earliest"], "2026-11-26T05:00:00Z");
        assert_eq!(v["end"], "2026-11-26T05:03:00.00116Z");
        assert_eq!(v["send_lag"]["99th"], 0);
        assert_eq!(v["replayed"], 0);
    }
}
