//! The phases a variant goes through and the time it spends in each: the
//! progress display shows them as they happen, and the report shows what a
//! variant costs outside its traffic (cluster start, rollout, LB, teardown).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::executor::RunObserver;

/// A variant's coarse phases, in the order it enters them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Starting the cluster (a fresh emulator, kind, or connecting).
    Cluster,
    /// Applying the workload and waiting for its rollout.
    Workload,
    /// Starting the load balancer and waiting for healthy backends.
    LbReady,
    /// Warmup and traffic, with the chaos timeline.
    Traffic,
    /// Chaos steps' grace, undoing chaos, stopping the LB and the cluster.
    Teardown,
}

impl Phase {
    /// As shown on the terminal and in reports.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Cluster => "cluster",
            Phase::Workload => "workload",
            Phase::LbReady => "LB ready",
            Phase::Traffic => "traffic",
            Phase::Teardown => "teardown",
        }
    }
}

/// Where one variant's time went, in seconds (`timing` in summary.json).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// From the variant's start to the end of its teardown.
    pub wall_s: f64,
    /// In the traffic phase (warmup included).
    pub traffic_s: f64,
    /// `wall_s − traffic_s`: the variant's cost beyond what it measures.
    pub outside_traffic_s: f64,
    /// Seconds per phase entered.
    pub phases: BTreeMap<Phase, f64>,
}

/// Marks phase changes of one variant: logs them (`zdt run -v` and the
/// reliability tests read `run phase:` lines), tells the observer, and
/// keeps the times for [`Timing`].
pub(crate) struct Phases {
    variant: String,
    id: String,
    observer: Option<Arc<dyn RunObserver>>,
    start: Instant,
    marks: Mutex<Vec<(Phase, Instant)>>,
}

impl Phases {
    pub fn new(variant: &str, id: String, observer: Option<Arc<dyn RunObserver>>) -> Self {
        Self {
            variant: variant.to_owned(),
            id,
            observer,
            start: Instant::now(),
            marks: Mutex::default(),
        }
    }

    /// Enter step `name` (finer than the phases: several steps share one
    /// phase); a new phase is recorded and told only when it changes.
    pub fn enter(&self, phase: Phase, name: &str) {
        tracing::info!(variant = %self.variant, "run phase: {name}");
        // Fault injection: `ZDT_FAILPOINT=<step>` panics as the variant
        // enters that step, so the reliability tests can check what a panic
        // leaves behind (a bug in zdt must not leave pods running or ports
        // bound).
        if std::env::var("ZDT_FAILPOINT").is_ok_and(|p| !p.is_empty() && name.starts_with(&p)) {
            panic!("failpoint `{name}` (ZDT_FAILPOINT)");
        }
        let mut marks = self.marks.lock().expect("phase marks lock");
        if marks.last().is_some_and(|(p, _)| *p == phase) {
            return;
        }
        marks.push((phase, Instant::now()));
        drop(marks);
        if let Some(o) = &self.observer {
            o.phase(&self.id, phase);
        }
    }

    /// The times so far, the last phase ending now.
    pub fn timing(&self) -> Timing {
        timing(
            self.start,
            &self.marks.lock().expect("phase marks lock"),
            Instant::now(),
        )
    }
}

fn timing(start: Instant, marks: &[(Phase, Instant)], end: Instant) -> Timing {
    let mut phases = BTreeMap::new();
    for (i, (phase, at)) in marks.iter().enumerate() {
        let until = marks.get(i + 1).map_or(end, |(_, t)| *t);
        *phases.entry(*phase).or_insert(0.0) += (until - *at).as_secs_f64();
    }
    let wall_s = (end - start).as_secs_f64();
    let traffic_s = phases.get(&Phase::Traffic).copied().unwrap_or(0.0);
    Timing {
        wall_s,
        traffic_s,
        outside_traffic_s: (wall_s - traffic_s).max(0.0),
        phases,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn time_outside_traffic_is_the_wall_time_less_the_traffic_phase() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let marks = [
            (Phase::Cluster, at(0)),
            (Phase::Workload, at(1)),
            (Phase::LbReady, at(3)),
            (Phase::Traffic, at(4)),
            (Phase::Teardown, at(64)),
        ];
        let t = timing(t0, &marks, at(66));
        assert_eq!(t.wall_s, 66.0);
        assert_eq!(t.traffic_s, 60.0);
        assert_eq!(t.outside_traffic_s, 6.0);
        assert_eq!(t.phases[&Phase::Workload], 2.0);
        assert_eq!(t.phases[&Phase::Teardown], 2.0);
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json["phases"]["lb-ready"], 1.0);
    }

    #[test]
    fn a_variant_that_never_sent_traffic_spent_all_of_it_outside() {
        let t0 = Instant::now();
        let marks = [(Phase::Cluster, t0)];
        let t = timing(t0, &marks, t0 + Duration::from_secs(5));
        assert_eq!(t.traffic_s, 0.0);
        assert_eq!(t.outside_traffic_s, 5.0);
    }
}
