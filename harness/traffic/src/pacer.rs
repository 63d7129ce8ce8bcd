//! When is the next request due? A clock-free answer, so it can be tested
//! with a table instead of a stopwatch.
//!
//! The schedule is absolute: request `i` is due at `t0 + i / rate` whatever
//! happened to the requests before it. A generator that falls behind sends
//! the overdue requests at once (and the latency from the due time shows it)
//! instead of quietly stretching the schedule, so errors never accumulate.

use std::time::Duration;

use zdt_core::units::Rate;

/// What the attack loop should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Request number `sent` is due (or overdue): send it now.
    Send,
    /// Nothing is due yet; the next request is due after this wait.
    Wait(Duration),
    /// Every request of the attack has been sent.
    Stop,
}

/// A constant-rate schedule of `count` requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pacer {
    per_second: f64,
    count: u64,
}

impl Pacer {
    /// The schedule of `rate` for `duration`: `rate × duration` requests
    /// (rounded down), the first one due at once.
    pub fn new(rate: Rate, duration: Duration) -> Self {
        Self {
            per_second: rate.get(),
            count: rate.count_in(duration),
        }
    }

    /// How many requests the whole attack sends.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The due time of request `i` as an offset from t0.
    pub fn due(&self, i: u64) -> Duration {
        Duration::from_secs_f64(i as f64 / self.per_second)
    }

    /// How many requests are due at `elapsed` (capped at the total).
    pub fn due_by(&self, elapsed: Duration) -> u64 {
        // +1 because request 0 is due at t0; the small epsilon keeps
        // exact multiples (e.g. 1 s at 1000/s) on the "due" side.
        let n = (elapsed.as_secs_f64() * self.per_second + 1e-9).floor() as u64 + 1;
        n.min(self.count)
    }

    /// `elapsed` since t0 and `sent` requests so far → what to do next.
    pub fn pace(&self, elapsed: Duration, sent: u64) -> Pace {
        if sent >= self.count {
            return Pace::Stop;
        }
        let due = self.due(sent);
        if due <= elapsed {
            Pace::Send
        } else {
            Pace::Wait(due - elapsed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pacer(rate: &str, duration_ms: u64) -> Pacer {
        Pacer::new(rate.parse().unwrap(), Duration::from_millis(duration_ms))
    }

    #[test]
    fn pace_table() {
        let ms = Duration::from_millis;
        let us = Duration::from_micros;
        // (rate, duration, elapsed, sent) -> expected
        let table: &[(&str, u64, Duration, u64, Pace)] = &[
            // The first request is due at t0.
            ("10/s", 1000, ms(0), 0, Pace::Send),
            // Request 1 is due 100 ms later.
            ("10/s", 1000, ms(0), 1, Pace::Wait(ms(100))),
            ("10/s", 1000, ms(40), 1, Pace::Wait(ms(60))),
            ("10/s", 1000, ms(100), 1, Pace::Send),
            // Behind schedule: overdue requests are sent at once, no skipping.
            ("10/s", 1000, ms(950), 2, Pace::Send),
            // Ahead of nothing: all 10 sent → stop, however early.
            ("10/s", 1000, ms(10), 10, Pace::Stop),
            ("10/s", 1000, ms(5000), 9, Pace::Send),
            ("10/s", 1000, ms(5000), 10, Pace::Stop),
            // High rate: 20000/s is a 50 µs gap.
            ("20000/s", 1000, us(0), 1, Pace::Wait(us(50))),
            ("20000/s", 1000, us(1000), 20, Pace::Send),
            ("20000/s", 1000, us(1000), 21, Pace::Wait(us(50))),
            // Slow rate: 30/m is one every 2 s.
            ("30/m", 10_000, ms(1999), 1, Pace::Wait(ms(1))),
            ("30/m", 10_000, ms(2000), 1, Pace::Send),
            // A duration shorter than one interval still sends request 0.
            ("1/s", 1000, ms(0), 0, Pace::Send),
            ("1/s", 1000, ms(0), 1, Pace::Stop),
            // Below one request: nothing to send at all.
            ("1/s", 999, ms(0), 0, Pace::Stop),
        ];
        for &(rate, duration, elapsed, sent, want) in table {
            let got = pacer(rate, duration).pace(elapsed, sent);
            match (got, want) {
                // f64 → ns rounding may be off by a nanosecond.
                (Pace::Wait(a), Pace::Wait(b)) => assert!(
                    a.abs_diff(b) <= Duration::from_nanos(2),
                    "{rate} {duration}ms at {elapsed:?} sent {sent}: {got:?} != {want:?}"
                ),
                _ => assert_eq!(got, want, "{rate} {duration}ms at {elapsed:?} sent {sent}"),
            }
        }
    }

    #[test]
    fn count_is_rate_times_duration() {
        assert_eq!(pacer("5000/s", 60_000).count(), 300_000);
        assert_eq!(pacer("20000/s", 10_000).count(), 200_000);
        assert_eq!(pacer("300/m", 60_000).count(), 300);
        assert_eq!(pacer("3/s", 1_000).count(), 3);
    }

    #[test]
    fn due_times_are_absolute() {
        let p = pacer("3/s", 10_000);
        // No accumulated rounding error after many intervals.
        assert_eq!(p.due(3), Duration::from_secs(1));
        assert_eq!(p.due(29), Duration::from_secs_f64(29.0 / 3.0));
        assert_eq!(p.due(0), Duration::ZERO);
    }

    #[test]
    fn due_by_counts_requests_due_so_far() {
        let p = pacer("1000/s", 1000);
        assert_eq!(p.due_by(Duration::ZERO), 1);
        assert_eq!(p.due_by(Duration::from_micros(999)), 1);
        assert_eq!(p.due_by(Duration::from_millis(1)), 2);
        assert_eq!(p.due_by(Duration::from_millis(500)), 501);
        assert_eq!(p.due_by(Duration::from_secs(5)), 1000);
    }

    #[test]
    fn pacing_loop_sends_exactly_count_in_order() {
        // Drive the pacer with a fake clock that jumps by arbitrary steps,
        // as a late-waking timer would: every request is still sent once.
        let p = pacer("997/s", 2_000);
        let mut elapsed = Duration::ZERO;
        let mut sent = 0u64;
        let mut last_due = Duration::ZERO;
        let steps = [1u64, 3, 7, 0, 1500, 2, 11];
        let mut k = 0;
        loop {
            match p.pace(elapsed, sent) {
                Pace::Send => {
                    let due = p.due(sent);
                    assert!(due <= elapsed && due >= last_due);
                    last_due = due;
                    sent += 1;
                }
                Pace::Wait(d) => {
                    assert!(d > Duration::ZERO);
                    elapsed += d.max(Duration::from_micros(steps[k % steps.len()]));
                    k += 1;
                }
                Pace::Stop => break,
            }
        }
        assert_eq!(sent, 1994);
    }
}
