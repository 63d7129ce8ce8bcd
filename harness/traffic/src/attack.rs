//! The one attack loop: it wakes at each due time, sends what is due
//! straight from the loop, and at the same wake-ups reads what the
//! requests in flight got back (see [`crate::exchange`]), every result
//! folded into the shared aggregator as it completes.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::aggregate::{ErrorKey, Record};
use super::context::RequestContext;
use super::exchange::Engine;
use super::http::{Detail, Failure, Stage};
use super::lock::lock;
use super::pacer::{Pace, Pacer};
use super::raw::RawWriter;
use super::summary::{ErrorKind, Summary};
use super::timer::Wakeups;
use super::TrafficError;

/// The attack loop: runs the schedule, then waits for what is in flight.
pub(crate) async fn run(
    context: std::sync::Arc<RequestContext>,
    pacer: Pacer,
    duration: Duration,
    max_in_flight: usize,
    cancel: CancellationToken,
    raw: Option<RawWriter>,
) -> Result<Summary, TrafficError> {
    let t0 = context.t0;
    let timer_error = |e| TrafficError::Internal(format!("high-resolution timer: {e}"));
    // The loop has this thread to itself: it sleeps in a syscall of its
    // own (see [`crate::timer`]), which a cancel cuts short.
    let mut wakeups = Wakeups::new(t0, &[&cancel, &context.stop]).map_err(timer_error)?;
    let mut engine = Engine::new(context.clone())
        .map_err(|e| TrafficError::Internal(format!("connection poller: {e}")))?;
    let mut sent = 0u64;
    let mut cancelled = false;
    'schedule: loop {
        match pacer.pace(t0.elapsed(), sent) {
            Pace::Stop => break,
            Pace::Wait(_) => {
                // Sleep to the due time itself (not a 1 ms tick after it),
                // or the least gap after the last wake-up if that is later;
                // every request due meanwhile then goes out at once and its
                // lag is recorded. The responses that arrived meanwhile are
                // read first, so the requests reuse the connections they
                // free.
                let due = earliest(pacer.due(sent), engine.next_deadline());
                let rang = wakeups
                    .sleep(Some(due), engine.in_flight() > 0)
                    .map_err(timer_error)?;
                // Only a cancel rings (the check takes a lock).
                if rang && cancel.is_cancelled() {
                    cancelled = true;
                    break;
                }
                wakeups.polled(engine.turn());
            }
            Pace::Send => {
                // At the bound: wait (the wait shows up as schedule lag and
                // in the corrected latency), but not past the end of the
                // schedule; what is left then is counted not sent.
                while engine.in_flight() >= max_in_flight {
                    if t0.elapsed() >= duration {
                        break 'schedule;
                    }
                    let due = earliest(duration, engine.next_deadline());
                    let rang = wakeups.sleep(Some(due), true).map_err(timer_error)?;
                    if rang && cancel.is_cancelled() {
                        cancelled = true;
                        break 'schedule;
                    }
                    wakeups.polled(engine.turn());
                }
                // Behind schedule the loop sends without sleeping; it
                // still reads as often as it would wake, or the responses
                // that free pooled connections would wait and every
                // overdue request would open a connection of its own.
                if engine.in_flight() > 0 && wakeups.turn_due() {
                    wakeups.polled(engine.turn());
                }
                engine.start(sent, pacer.due(sent));
                sent += 1;
            }
        }
    }

    // Requests that were due but never went out are failures, not omissions.
    let stopped = Instant::now().saturating_duration_since(t0);
    let due = if cancelled {
        pacer.due_by(stopped)
    } else {
        pacer.count()
    };
    if due > sent {
        let not_sent = Failure::new(ErrorKind::NotSent, Stage::Connect, Detail::NotSent);
        let mut agg = lock(&context.agg);
        for seq in sent..due {
            agg.record(&Record {
                seq,
                due: pacer.due(seq),
                sent: None,
                end: stopped,
                status: 0,
                failure: Some(ErrorKey::Failure(not_sent)),
                bytes_in: 0,
                replays: 0,
                node: None,
                pod: None,
                local: None,
            });
        }
    }

    // What is in flight ends with its response, its timeout, or the
    // attack's cancel.
    while engine.in_flight() > 0 {
        if context.stop.is_cancelled() {
            engine.cancel();
            break;
        }
        wakeups
            .sleep(engine.next_deadline(), true)
            .map_err(timer_error)?;
        wakeups.polled(engine.turn());
    }

    let raw_sink = lock(&context.agg).take_raw();
    drop(raw_sink);
    if let Some(writer) = raw {
        tokio::task::spawn_blocking(move || writer.finish())
            .await
            .map_err(|e| TrafficError::Internal(format!("raw writer task: {e}")))??;
    }
    let summary = lock(&context.agg).summary(cancelled);
    Ok(summary)
}

/// The earlier of a due time and a request's deadline.
fn earliest(due: Duration, deadline: Option<Duration>) -> Duration {
    deadline.map_or(due, |d| d.min(due))
}
