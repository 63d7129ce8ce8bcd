//! Baselines: the headline numbers of a known-good run, committed under
//! `reports/baselines/`, so a nightly job notices when a change (to zdt, the
//! workload, the manifests or Kubernetes) makes a drain or a rollout worse.
//!
//! `zdt run … --update-baseline` calls [`write`]; `zdt run … --baseline F`
//! calls [`load`] and [`check`] and exits 1 on any [`Regression`].
//! `zdt compare A B` uses the same check with run A as the baseline.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::format;
use super::ReportError;
use crate::run::summary::{RunSummary, VariantSummary};

/// The file format (`reports/baselines/NAME.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// The scenario's `name`: a baseline only applies to its own scenario.
    pub scenario: String,
    /// Where the numbers came from (`emulator`, `kind`, `existing`): an
    /// emulator baseline says little about a kind run.
    #[serde(default)]
    pub provider: String,
    #[serde(default)]
    pub zdt_version: String,
    /// When the run that produced it started (RFC 3339).
    #[serde(default)]
    pub recorded_at: String,
    pub variants: BTreeMap<String, Metrics>,
}

/// One variant's headline numbers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub success_ratio: f64,
    /// Failed requests.
    pub errors: u64,
    /// p99 latency in milliseconds, from the requests' due times.
    pub p99_ms: f64,
    pub requests: u64,
}

impl Metrics {
    pub fn of(v: &VariantSummary) -> Self {
        Self {
            success_ratio: v.success_ratio,
            errors: format::failed(v),
            p99_ms: v.latency_ms.p99,
            requests: v.requests,
        }
    }
}

impl Baseline {
    pub fn from_summary(s: &RunSummary) -> Self {
        Self {
            scenario: s.scenario.clone(),
            provider: s.provider.clone(),
            zdt_version: s.zdt_version.clone(),
            recorded_at: s.started_at.clone(),
            variants: s
                .variants
                .iter()
                .map(|v| (v.name.clone(), Metrics::of(v)))
                .collect(),
        }
    }
}

/// How much worse than the baseline a variant may get before it counts as
/// a regression. From the scenario's `tolerance:` (see
/// [`Tolerance::from_scenario`]), else these defaults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tolerance {
    /// Allowed absolute drop of the success ratio (0.001 = 0.1 points).
    pub success_ratio: f64,
    /// Allowed relative growth of p99 (0.2 = +20 %).
    pub p99: f64,
    /// p99 growth below this many milliseconds is never a regression: on a
    /// shared machine a 2 ms → 3 ms p99 is noise, not a +50 % slowdown.
    pub p99_min_ms: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Self {
            success_ratio: 0.001,
            p99: 0.20,
            p99_min_ms: 5.0,
        }
    }
}

impl From<&zdt_scenario::Tolerance> for Tolerance {
    /// The scenario's validated `expect.tolerance` (the latency allowance
    /// applies to p99, the percentile a baseline keeps).
    fn from(t: &zdt_scenario::Tolerance) -> Self {
        Self {
            success_ratio: t.success_ratio,
            p99: t.latency,
            ..Self::default()
        }
    }
}

/// Why a tolerance (from a scenario or `--tolerance KEY=VALUE`) is unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ToleranceError {
    #[error("`{spec}`: write KEY=VALUE, e.g. `p99=30%`")]
    NotKeyValue { spec: String },
    #[error("unknown tolerance `{key}`: use successRatio, p99 or p99Min")]
    UnknownKey { key: String },
    /// A value given on the command line.
    #[error(transparent)]
    Value(#[from] ValueError),
    /// A value of the scenario's `tolerance:` section.
    #[error("tolerance.{key}: {source}")]
    Field {
        key: &'static str,
        #[source]
        source: ValueError,
    },
}

/// A tolerance value that is not what its key takes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    #[error("`{0}` is not a number or percentage (e.g. `0.2` or `20%`)")]
    NotRatio(String),
    /// Neither a number nor a string (a list, a map, a boolean).
    #[error("`{0}` is not a number or percentage")]
    NotRatioValue(Value),
    #[error("{0} must be a non-negative number")]
    OutOfRange(f64),
    #[error(transparent)]
    Duration(#[from] zdt_core::units::UnitError),
    #[error("`{0}` is not a duration (e.g. `5ms`)")]
    NotDuration(Value),
}

impl Tolerance {
    /// The `expect.tolerance:` section of a scenario document as run
    /// (missing keys keep their defaults): `successRatio: 0.001`,
    /// `latency: 20%` (or `0.2`; `p99` is accepted too), `p99Min: 5ms`.
    pub fn from_scenario(doc: &Value) -> Result<Self, ToleranceError> {
        let mut t = Self::default();
        let sec = doc
            .get("expect")
            .and_then(|e| e.get("tolerance"))
            .or_else(|| doc.get("tolerance"));
        let Some(sec) = sec.filter(|s| s.is_object()) else {
            return Ok(t);
        };
        let field = |key| move |source| ToleranceError::Field { key, source };
        if let Some(v) = sec.get("successRatio") {
            t.success_ratio = ratio(v).map_err(field("successRatio"))?;
        }
        if let Some(v) = sec.get("latency").or_else(|| sec.get("p99")) {
            t.p99 = ratio(v).map_err(field("latency"))?;
        }
        if let Some(v) = sec.get("p99Min") {
            t.p99_min_ms = millis(v).map_err(field("p99Min"))?;
        }
        Ok(t)
    }

    /// Apply `key=value` overrides from the command line
    /// (`successRatio=0.002`, `p99=30%`, `p99Min=10ms`).
    pub fn apply(&mut self, spec: &str) -> Result<(), ToleranceError> {
        let (k, v) = spec
            .split_once('=')
            .ok_or_else(|| ToleranceError::NotKeyValue {
                spec: spec.to_owned(),
            })?;
        let val = Value::String(v.trim().to_owned());
        match k.trim() {
            "successRatio" | "success_ratio" => self.success_ratio = ratio(&val)?,
            "p99" | "latency" => self.p99 = ratio(&val)?,
            "p99Min" | "p99_min_ms" => self.p99_min_ms = millis(&val)?,
            other => {
                return Err(ToleranceError::UnknownKey {
                    key: other.to_owned(),
                })
            }
        }
        Ok(())
    }
}

fn ratio(v: &Value) -> Result<f64, ValueError> {
    let x = match v {
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        Value::String(s) => {
            let s = s.trim();
            match s.strip_suffix('%') {
                Some(p) => p.trim().parse::<f64>().map(|x| x / 100.0),
                None => s.parse::<f64>(),
            }
            .map_err(|_| ValueError::NotRatio(s.to_owned()))?
        }
        other => return Err(ValueError::NotRatioValue(other.clone())),
    };
    if x.is_finite() && x >= 0.0 {
        Ok(x)
    } else {
        Err(ValueError::OutOfRange(x))
    }
}

fn millis(v: &Value) -> Result<f64, ValueError> {
    match v {
        Value::Number(n) => Ok(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Ok(s.parse::<zdt_core::units::Dur>()?.get().as_secs_f64() * 1000.0),
        other => Err(ValueError::NotDuration(other.clone())),
    }
}

/// What got worse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Metric {
    SuccessRatio,
    P99,
    /// The baseline is for another scenario.
    Scenario,
}

/// One regression beyond the tolerance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Regression {
    pub variant: String,
    pub metric: Metric,
    pub baseline: f64,
    pub actual: f64,
    /// The worst value the tolerance still accepted.
    pub limit: f64,
}

impl fmt::Display for Regression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.metric {
            Metric::SuccessRatio => write!(
                f,
                "{}: success ratio {} < {} allowed (baseline {})",
                self.variant,
                format::pct(self.actual),
                format::pct(self.limit),
                format::pct(self.baseline)
            ),
            Metric::P99 => write!(
                f,
                "{}: p99 {} > {} allowed (baseline {})",
                self.variant,
                format::ms(self.actual),
                format::ms(self.limit),
                format::ms(self.baseline)
            ),
            Metric::Scenario => write!(
                f,
                "the baseline is for scenario `{}`, not this run's: pass this scenario's baseline file",
                self.variant
            ),
        }
    }
}

/// Every variant of `summary` that got worse than `baseline` beyond
/// `tol`. Only variants both ran are compared: one new in the run has
/// nothing to compare with, and one the run left out (`--variant`) is
/// [`not_run`], not worse.
pub fn check(summary: &RunSummary, baseline: &Baseline, tol: &Tolerance) -> Vec<Regression> {
    let mut out = Vec::new();
    if baseline.scenario != summary.scenario {
        out.push(Regression {
            variant: baseline.scenario.clone(),
            metric: Metric::Scenario,
            baseline: 0.0,
            actual: 0.0,
            limit: 0.0,
        });
        return out;
    }
    for (name, base) in &baseline.variants {
        let Some(v) = summary.variants.iter().find(|v| &v.name == name) else {
            continue;
        };
        out.extend(check_variant(name, base, &Metrics::of(v), tol));
    }
    out
}

/// The baseline's variants that `summary` did not run (a subset chosen with
/// `--variant`, or a variant since renamed), for the same scenario.
pub fn not_run(summary: &RunSummary, baseline: &Baseline) -> Vec<String> {
    if baseline.scenario != summary.scenario {
        return Vec::new();
    }
    baseline
        .variants
        .keys()
        .filter(|name| !summary.variants.iter().any(|v| &v.name == *name))
        .cloned()
        .collect()
}

/// Compare one variant's numbers against its baseline numbers.
pub fn check_variant(
    name: &str,
    base: &Metrics,
    now: &Metrics,
    tol: &Tolerance,
) -> Vec<Regression> {
    let mut out = Vec::new();
    // A tiny epsilon keeps float noise (0.999 - 0.001) from flagging an
    // exactly-at-the-limit run.
    let min_ratio = base.success_ratio - tol.success_ratio;
    if now.success_ratio < min_ratio - 1e-12 {
        out.push(Regression {
            variant: name.to_owned(),
            metric: Metric::SuccessRatio,
            baseline: base.success_ratio,
            actual: now.success_ratio,
            limit: min_ratio,
        });
    }
    let max_p99 = (base.p99_ms * (1.0 + tol.p99)).max(base.p99_ms + tol.p99_min_ms);
    if now.p99_ms > max_p99 + 1e-9 {
        out.push(Regression {
            variant: name.to_owned(),
            metric: Metric::P99,
            baseline: base.p99_ms,
            actual: now.p99_ms,
            limit: max_p99,
        });
    }
    out
}

pub fn load(path: &Path) -> Result<Baseline, ReportError> {
    super::data::read_json(path)
}

/// Write the run's numbers as the new baseline (creating the directory).
pub fn write(summary: &RunSummary, path: &Path) -> Result<PathBuf, ReportError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| ReportError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let mut json = serde_json::to_string_pretty(&Baseline::from_summary(summary))
        .expect("a baseline always serialises");
    json.push('\n');
    super::data::write_file(path, json.as_bytes())
}
