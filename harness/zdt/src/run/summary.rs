//! `OUT/summary.json`: what a run found, per variant. The report module
//! renders every other output (Markdown, HTML, JUnit, comparisons,
//! baselines) from this file plus `events.jsonl` and `buckets.json`, so it
//! is a stable, documented format: fields are only ever added.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use zdt_emulator::node::runtime::PodRuntime;

/// The pods' runtimes in a variant's events (the emulator's `Runtime`
/// events; none on kind or an existing cluster).
pub(crate) fn pod_runtimes(events: &[zdt_core::events::Event]) -> Vec<PodRuntime> {
    events.iter().filter_map(PodRuntime::from_event).collect()
}

/// The verdict of one variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    /// Every expectation held on a valid run.
    Pass,
    /// The run was valid and at least one expectation failed.
    Fail,
    /// The run cannot be trusted (generator behind schedule, a chaos step
    /// failed, the workload never became ready): never a pass.
    Invalid,
    /// The run was interrupted (Ctrl-C, SIGTERM, an error) before this
    /// variant finished; what it recorded is kept.
    Incomplete,
}

/// The whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSummary {
    /// The scenario's `name`.
    pub scenario: String,
    /// The scenario file as given on the command line.
    pub file: String,
    /// `emulator`, `kind` or `existing`.
    pub provider: String,
    /// True when the emulator ran the cluster: its numbers come from a model
    /// (see docs/emulator.md), kind is the ground truth.
    pub emulated: bool,
    pub zdt_version: String,
    /// Wall-clock start, RFC 3339.
    pub started_at: String,
    pub seed: u64,
    /// False when the run was interrupted; `incomplete_reason` says why.
    pub complete: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete_reason: Option<String>,
    pub variants: Vec<VariantSummary>,
}

/// One variant's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VariantSummary {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub verdict: Verdict,
    /// Why the verdict is not PASS (failed expectations, invalidity).
    #[serde(default)]
    pub reasons: Vec<String>,
    pub requests: u64,
    pub success_ratio: f64,
    /// Status code → count; `"0"` is "no response" as in vegeta.
    pub status_codes: BTreeMap<String, u64>,
    /// Error kind (`timeout`, `refused`, `reset`, …) → count.
    pub errors: BTreeMap<String, u64>,
    pub latency_ms: LatencyMs,
    pub rate: RateSummary,
    /// How far the generator fell behind its schedule.
    pub schedule_lag_ms: LagMs,
    pub expectations: Vec<ExpectationResult>,
    /// Number of events recorded (pods, endpoints, LB, chaos).
    pub events: usize,
    pub error_windows: Vec<ErrorWindow>,
    pub chaos: Vec<StepResult>,
    /// Failures that were the machine's (out of descriptors, ports,
    /// buffers, connection-tracking entries), by kind; any makes the
    /// variant INVALID.
    #[serde(default)]
    pub host_faults: BTreeMap<String, u64>,
    /// Which runtime ran each pod's container (emulator only: `nginx`,
    /// `builtin`, `host`, `docker`), in start order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pod_runtimes: Vec<PodRuntime>,
    /// A scaled-out run's generators (`traffic.generators` ≥ 2), each with
    /// its own figures; the variant's are their exact merge.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub generators: Vec<zdt_traffic::GeneratorPart>,
    /// Offset of the first request on the variant's clock, in seconds; event
    /// times minus this are times since traffic start.
    pub traffic_started_s: f64,
    /// The scenario document as run (variant patch applied, CLI overrides).
    pub scenario_as_run: serde_json::Value,
    /// The sweep point this variant was, when the run swept a field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<zdt_scenario::SweepPoint>,
    /// Whether the physics predicts this point meets `expect:` (only for
    /// fields it has a formula for: docs/physics.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep_predicted_pass: Option<bool>,
    /// Where the variant's time went: per phase, and outside its traffic.
    #[serde(default)]
    pub timing: super::phases::Timing,
}

/// Latency percentiles in milliseconds, measured from each request's due
/// time (corrected for coordinated omission).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyMs {
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    #[serde(rename = "p99.9")]
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RateSummary {
    pub requested: f64,
    pub achieved: f64,
}

/// The generator's send lag (actual send − due time), in ms: small when
/// the latencies are the server's and not the generator's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LagMs {
    #[serde(default)]
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl From<&zdt_traffic::Latencies> for LagMs {
    fn from(l: &zdt_traffic::Latencies) -> Self {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        Self {
            p50: ms(l.p50),
            p99: ms(l.p99),
            max: ms(l.max),
        }
    }
}

/// One `expect:` entry, evaluated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpectationResult {
    /// `successRatio`, `latency.p99`, `statusCodes`, `maxErrorWindow`, …
    pub name: String,
    /// The bound as written (`>= 0.9999`, `<= 250ms`, `in [0.93, 0.99]`).
    pub threshold: String,
    /// The measured value, formatted in the bound's unit.
    pub actual: String,
    pub ok: bool,
}

/// A stretch of time with failed requests, and what caused it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorWindow {
    /// Seconds since traffic start: when the data path failed the first
    /// and last request of the window (see [`Attribution`]).
    pub start_s: f64,
    pub end_s: f64,
    pub errors: u64,
    /// Error kind → count inside the window.
    pub kinds: BTreeMap<String, u64>,
    /// The node the window is attributed to, when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The event that opened it (reason, object, message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened_by: Option<String>,
    /// The event that closed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_by: Option<String>,
    /// One sentence for people: "10.2 s–15.1 s: node worker2 had no local
    /// endpoint … closed when the LB marked worker2 unhealthy".
    pub explanation: String,
    /// How the errors were tied to their cause.
    #[serde(default)]
    pub attribution: Attribution,
    /// The pod the failed connections went to, when the data path chose one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// What the data path did with them ("dropped by the node").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// When the opening and closing events happened (seconds since traffic
    /// start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened_at_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at_s: Option<f64>,
    /// What the documented mechanics predict for this window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted: Option<Prediction>,
}

/// How an error window was tied to its cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attribution {
    /// Each failed request was joined to the LB's record of its connection
    /// (its node, its pod, the dial's fate): windows are per cause and per
    /// node or pod, times are when the data path failed each request.
    DataPath,
    /// No per-request provenance (kind, existing clusters, or requests the
    /// LB never saw): errors grouped by due time, causes searched by time
    /// and node.
    #[default]
    Time,
}

/// The window the documented mechanics predict (docs/physics.md), beside
/// the measured one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Predicted duration of the window, seconds.
    pub duration_s: f64,
    /// Measured duration (last − first failure), seconds.
    pub measured_s: f64,
    /// The formula with this run's numbers.
    pub formula: String,
    /// A disagreement larger than this (one LB probe interval) is flagged.
    pub tolerance_s: f64,
    pub agrees: bool,
}

/// What a chaos step did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepResult {
    pub index: usize,
    pub name: String,
    /// The action (`drain`, `lbRemoveBackend`, …).
    pub action: String,
    /// The node it acted on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Seconds since traffic start.
    pub started_s: f64,
    pub finished_s: f64,
    pub ok: bool,
    pub message: String,
}

impl RunSummary {
    /// The worst verdict across variants decides the exit code.
    pub fn worst(&self) -> Verdict {
        let rank = |v: Verdict| match v {
            Verdict::Pass => 0,
            Verdict::Fail => 1,
            Verdict::Invalid => 2,
            Verdict::Incomplete => 3,
        };
        self.variants
            .iter()
            .map(|v| v.verdict)
            .max_by_key(|v| rank(*v))
            .unwrap_or(Verdict::Invalid)
    }
}
