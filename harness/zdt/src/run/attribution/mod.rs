//! Error windows and their causes. Where the LB recorded every connection
//! (zdt's in-process LB in front of the emulator), each failed request is
//! joined to that record and attributed to the events of its own node and
//! pod ([`by_route`]); elsewhere, and for requests the LB never saw,
//! failures are grouped by time and attributed by time and node
//! ([`by_time`]). [`physics`] puts the window the documented mechanics
//! predict beside each measured one.

mod by_route;
mod by_time;
pub(crate) mod physics;

use std::time::Duration;

use zdt_core::events::Event;
use zdt_core::provenance::{self, ConnRecord};
use zdt_traffic::{FailedRequest, Summary};

use super::summary::ErrorWindow;
pub(crate) use by_time::BucketErrors;
pub(crate) use physics::Physics;

/// How late after a request ended its connection may still be stamped by
/// the LB (accept and route come first; this only absorbs scheduling).
const JOIN_SLACK: Duration = Duration::from_millis(100);

/// Fill in each failed request's provenance from the LB's records of its
/// connections (joined by the generator's local address). Returns how many
/// were joined.
pub(crate) fn trace(summary: &mut Summary, mut records: Vec<ConnRecord>) -> usize {
    provenance::sort(&mut records);
    let t0 = summary.started_at;
    let mut joined = 0;
    for f in summary.failed.iter_mut() {
        let Some(local) = f.local else { continue };
        if let Some(r) = provenance::find(&records, local, t0 + join_until(f.sent, f.end)) {
            f.provenance = Some(r.provenance.clone());
            f.routed_at = Some(r.at);
            joined += 1;
        }
    }
    joined
}

/// The latest moment a record can be of the connection of a request sent
/// at `sent` that ended at `end`: its end, plus [`JOIN_SLACK`] only while
/// that is within the slack of the send (a connection refused or reset at
/// once, stamped after it ended). The generator closes a failed request's
/// socket at its end, and the kernel may give the port to the next
/// connection at once: a record after a longer-lived request's end is that
/// next connection's (a connect timeout's port, reused 36 ms after it,
/// joined a healthy pod's record).
fn join_until(sent: Option<Duration>, end: Duration) -> Duration {
    match sent {
        Some(sent) => (end + JOIN_SLACK).min(end.max(sent + JOIN_SLACK)),
        None => end + JOIN_SLACK,
    }
}

/// The run's error windows, in time order.
pub(crate) fn error_windows(t: &Summary, events: &[Event], physics: &Physics) -> Vec<ErrorWindow> {
    let (traced, untraced): (Vec<&FailedRequest>, Vec<&FailedRequest>) =
        t.failed.iter().partition(|f| f.provenance.is_some());
    if traced.is_empty() {
        return by_time::error_windows(&buckets_of(t), events, t.started_at, t.bucket);
    }
    let mut windows = by_route::error_windows(&traced, events, t.started_at, physics);
    if !untraced.is_empty() {
        let rest = buckets_from(&untraced, t.bucket);
        windows.extend(by_time::error_windows(
            &rest,
            events,
            t.started_at,
            t.bucket,
        ));
    }
    windows.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
    windows
}

/// The summary's own buckets (every failure, by due time).
fn buckets_of(t: &Summary) -> Vec<BucketErrors> {
    t.buckets
        .iter()
        .map(|b| BucketErrors {
            start: b.start,
            width: t.bucket,
            requests: b.requests,
            errors: b.errors.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        })
        .collect()
}

/// Buckets holding only `failed` (by due time).
fn buckets_from(failed: &[&FailedRequest], width: Duration) -> Vec<BucketErrors> {
    let width = width.max(Duration::from_millis(1));
    let mut out: Vec<BucketErrors> = Vec::new();
    for f in failed {
        let i = (f.due.as_nanos() / width.as_nanos()) as usize;
        if out.len() <= i {
            let from = out.len();
            out.extend((from..=i).map(|j| BucketErrors {
                start: width * j as u32,
                width,
                requests: 0,
                errors: Default::default(),
            }));
        }
        *out[i].errors.entry(f.kind.to_string()).or_default() += 1;
        out[i].requests += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_joins_no_record_made_after_it_ended_unless_it_was_short() {
        let ms = Duration::from_millis;
        // A connect timeout: sent at 8,928 ms, ended 10 s later; the port's
        // next connection was recorded at 18,964 ms.
        let until = join_until(Some(ms(8_928)), ms(18_928));
        assert_eq!(until, ms(18_928));
        assert!(ms(18_964) > until);
        // A refusal 1 ms after the send: a record stamped 60 ms later is
        // still its own.
        assert_eq!(join_until(Some(ms(5_000)), ms(5_001)), ms(5_100));
        // Never sent: the end and the slack.
        assert_eq!(join_until(None, ms(5_000)), ms(5_100));
    }
}
