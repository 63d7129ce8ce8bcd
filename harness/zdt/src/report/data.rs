//! What a run leaves in `OUT/` and the report renders from: the summary,
//! the event log, the traffic buckets and the full traffic summaries.
//! Loading is lenient about optional files (an interrupted run may lack
//! some) and strict about the ones that exist: a corrupt file is an error
//! naming the file and the line.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ReportError;
use crate::run::summary::RunSummary;
use zdt_core::events::Event;

pub use zdt_traffic::Bucket;

/// The traffic generator's full summary (`OUT/traffic/VARIANT.json`).
pub use zdt_traffic::Summary as TrafficSummary;

/// One line of `events.jsonl`: an event and the variant whose clock it is on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantEvent {
    pub variant: String,
    #[serde(flatten)]
    pub event: Event,
}

/// Everything the reports are rendered from.
#[derive(Debug, Clone)]
pub struct RunData {
    pub summary: RunSummary,
    /// Every event of every variant, in file order.
    pub events: Vec<VariantEvent>,
    /// Variant name → the traffic generator's time buckets.
    pub buckets: BTreeMap<String, Vec<Bucket>>,
    /// Variant name → the traffic generator's full summary (vegeta layout).
    pub traffic: BTreeMap<String, TrafficSummary>,
}

impl RunData {
    /// Read a run's output directory. `summary.json` is required; the event
    /// log, buckets and traffic summaries are optional (empty when absent).
    pub fn load(out: &Path) -> Result<Self, ReportError> {
        let summary_path = out.join("summary.json");
        let summary: RunSummary = read_json(&summary_path)?;

        let events_path = out.join("events.jsonl");
        let mut events = Vec::new();
        if events_path.exists() {
            let text = read(&events_path)?;
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let ev: VariantEvent =
                    serde_json::from_str(line).map_err(|e| ReportError::Parse {
                        path: events_path.clone(),
                        detail: format!("line {}: {e}", i + 1),
                    })?;
                events.push(ev);
            }
        }

        let buckets_path = out.join("buckets.json");
        let buckets = if buckets_path.exists() {
            read_json(&buckets_path)?
        } else {
            BTreeMap::new()
        };

        let mut traffic = BTreeMap::new();
        for v in &summary.variants {
            let file = format!("{}.json", crate::run::output::sanitize(&v.name));
            let p = out.join("traffic").join(file);
            if p.exists() {
                traffic.insert(v.name.clone(), read_json(&p)?);
            }
        }

        Ok(Self {
            summary,
            events,
            buckets,
            traffic,
        })
    }

    /// A variant's events, in time order.
    pub(crate) fn events_of<'a>(&'a self, variant: &str) -> Vec<&'a Event> {
        let mut evs: Vec<&Event> = self
            .events
            .iter()
            .filter(|e| e.variant == variant)
            .map(|e| &e.event)
            .collect();
        evs.sort_by_key(|e| e.at);
        evs
    }
}

fn read(path: &Path) -> Result<String, ReportError> {
    fs::read_to_string(path).map_err(|source| ReportError::Read {
        path: path.to_path_buf(),
        source,
    })
}

pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ReportError> {
    let text = read(path)?;
    serde_json::from_str(&text).map_err(|e| ReportError::Parse {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

pub(crate) fn write_file(path: &Path, contents: &[u8]) -> Result<PathBuf, ReportError> {
    fs::write(path, contents).map_err(|source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(path.to_path_buf())
}

/// One time bucket as the charts and tables see it, in plain numbers:
/// seconds since traffic start and milliseconds of latency.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Point {
    pub start_s: f64,
    pub width_s: f64,
    pub requests: u64,
    pub successes: u64,
    pub errors: BTreeMap<String, u64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub by_node: BTreeMap<String, u64>,
    pub by_pod: BTreeMap<String, u64>,
}

impl Point {
    pub(crate) fn failed(&self) -> u64 {
        self.requests.saturating_sub(self.successes)
    }

    /// Success ratio of the bucket; `None` when nothing was due in it.
    pub(crate) fn success_ratio(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.successes as f64 / self.requests as f64)
    }

    pub(crate) fn requests_per_s(&self) -> f64 {
        if self.width_s > 0.0 {
            self.requests as f64 / self.width_s
        } else {
            0.0
        }
    }
}

/// The buckets of one variant as [`Point`]s, in time order. The bucket
/// width is not stored per bucket, so it is the smallest gap between
/// consecutive starts (1 s when there is only one bucket).
pub(crate) fn points(buckets: &[Bucket]) -> Vec<Point> {
    let mut pts: Vec<Point> = buckets.iter().map(point).collect();
    pts.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
    let width = pts
        .windows(2)
        .map(|w| w[1].start_s - w[0].start_s)
        .filter(|d| *d > 1e-6)
        .fold(f64::INFINITY, f64::min);
    let width = if width.is_finite() { width } else { 1.0 };
    for p in &mut pts {
        p.width_s = width;
    }
    pts
}

fn point(b: &Bucket) -> Point {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    Point {
        start_s: b.start.as_secs_f64(),
        width_s: 0.0,
        requests: b.requests,
        successes: b.successes,
        errors: b
            .errors
            .iter()
            .map(|(k, n)| (k.as_str().to_owned(), *n))
            .collect(),
        p50_ms: ms(b.p50),
        p99_ms: ms(b.p99),
        max_ms: ms(b.max),
        by_node: b.by_node.clone(),
        by_pod: b.by_pod.clone(),
    }
}
