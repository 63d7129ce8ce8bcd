//! Waking the attack loop at a request's due time, to the microsecond.
//!
//! tokio's timers have millisecond granularity: a request due 200 µs from
//! now waited up to a whole tick, so requests left ~0.8 ms late on average
//! and that lag was most of the latency zdt reported against a fast server.
//! A `timerfd` armed with an absolute deadline on the monotonic clock fires
//! within microseconds of it (it is an hrtimer, with no timer slack added),
//! and its readiness arrives through the same epoll the runtime already
//! waits in: no second thread, no cross-thread wake-up per request, no
//! spinning. The schedule stays in [`crate::Pacer`]; this only sleeps.
//!
//! Each wake-up has a price, though: ~15 µs of CPU on the benchmark VM
//! (timer interrupt, context switch, hypervisor exits), more than the
//! request it sends. So [`Wakeups`] spaces wake-ups at least
//! [`MIN_WAKE_GAP`] apart (at 20000/s three requests go out per wake-up,
//! the earliest ≤ 150 µs late, and the send lag reports it), and the
//! connections' responses are read at these wake-ups instead of waking
//! the loop themselves (see [`crate::polled`]).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;

/// The least time between two wake-ups of the attack loop: up to this
/// rate (6,667/s) each request has a wake-up of its own, above it the
/// requests due in between go out together.
pub(crate) const MIN_WAKE_GAP: Duration = Duration::from_micros(150);
/// While requests wait for responses and no request is due, the
/// connections are polled after this long, doubling up to [`POLL_MAX`]
/// while the polls find nothing. It only delays when a result is
/// recorded: its latency ends at the kernel's receive timestamp.
const POLL_MIN: Duration = Duration::from_millis(1);
const POLL_MAX: Duration = Duration::from_millis(16);

/// The attack loop's wake-ups: at due times, and to poll the connections
/// while requests wait for responses.
pub(crate) struct Wakeups {
    timer: DueTimer,
    poll: Duration,
    /// When the loop last woke, after t0.
    woke: Duration,
}

impl Wakeups {
    pub fn new(t0: Instant) -> io::Result<Self> {
        Ok(Self {
            timer: DueTimer::new(t0)?,
            poll: POLL_MIN,
            woke: Duration::ZERO,
        })
    }

    /// Sleeps until `due` (see [`next_wake`]; `None`: nothing is due any
    /// more; `busy`: requests are in flight, so the connections need
    /// polling). Never returns without a due time or a poll to wake for.
    /// The caller then polls the connections and says whether that read
    /// anything ([`Wakeups::polled`]).
    pub async fn sleep(&mut self, due: Option<Duration>, busy: bool) -> io::Result<()> {
        let poll = busy.then_some(self.poll);
        let now = self.timer.t0.elapsed();
        let Some(at) = next_wake(due, self.woke, now, poll) else {
            return std::future::pending().await;
        };
        self.timer.sleep_until(at).await?;
        self.woke = self.timer.t0.elapsed();
        Ok(())
    }

    /// Backs the poll off while polls find nothing.
    pub fn polled(&mut self, read: bool) {
        self.poll = if read {
            POLL_MIN
        } else {
            (self.poll * 2).min(POLL_MAX)
        };
    }
}

/// When the attack loop wakes next, after t0: at `due`, the next request's
/// due time, but no sooner than [`MIN_WAKE_GAP`] after `woke` (its last
/// wake-up), and no later than `poll` after `now` when connections wait
/// for responses. `None`: nothing to wake for.
fn next_wake(
    due: Option<Duration>,
    woke: Duration,
    now: Duration,
    poll: Option<Duration>,
) -> Option<Duration> {
    let due = due.map(|d| d.max(woke + MIN_WAKE_GAP));
    match (due, poll.map(|p| now + p)) {
        (Some(d), Some(p)) => Some(d.min(p)),
        (d, p) => d.or(p),
    }
}

/// A one-shot high-resolution timer whose deadlines are offsets from t0.
pub(crate) struct DueTimer {
    fd: AsyncFd<OwnedFd>,
    /// t0 on `CLOCK_MONOTONIC` (what `Instant` reads on Linux).
    origin: Duration,
    t0: Instant,
}

impl DueTimer {
    /// A timer for a schedule that starts at `t0`. Needs a tokio runtime
    /// with I/O enabled.
    pub fn new(t0: Instant) -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked before use.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor this function owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // Instant hides its clock reading: take both readings back to back
        // and carry t0 over (the gap between them is tens of nanoseconds).
        let now = Instant::now();
        let origin = monotonic()?.saturating_sub(now.saturating_duration_since(t0));
        // SAFETY: an OwnedFd returns the one descriptor it owns, open until
        // the AsyncFd (which owns it) is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Self { fd, origin, t0 })
    }

    /// Returns at `at` after t0 or later, never earlier.
    pub async fn sleep_until(&mut self, at: Duration) -> io::Result<()> {
        if self.t0.elapsed() >= at {
            return Ok(());
        }
        let deadline = self.origin + at;
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: deadline.as_secs() as libc::time_t,
                tv_nsec: deadline.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: a valid timerfd and a fully initialised itimerspec.
        let rc = unsafe {
            libc::timerfd_settime(
                self.fd.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // No read(2) of the expiration count: arming the timer again resets
        // it, and the runtime's epoll (edge-triggered) reports each expiry
        // anyway. Readiness left over from an earlier deadline (a sleep
        // given up before it fired) is told apart by the clock.
        loop {
            let mut guard = self.fd.readable().await?;
            guard.clear_ready();
            if self.t0.elapsed() >= at {
                return Ok(());
            }
        }
    }
}

fn monotonic() -> io::Result<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes into the timespec passed.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_wake_table() {
        let us = Duration::from_micros;
        let ms = Duration::from_millis;
        // (due, woke, now, poll) -> wake at
        let table = [
            // 5000/s: each request at its own due time.
            ((Some(us(1200)), us(1000), us(1005), None), Some(us(1200))),
            // 20000/s: the next due is 50 µs away, the loop waits the gap.
            ((Some(us(1050)), us(1000), us(1005), None), Some(us(1150))),
            // Never sooner than the gap after the last wake-up.
            ((Some(us(900)), us(1000), us(1005), None), Some(us(1150))),
            // The first wake-up has no gap before it.
            ((Some(us(0)), us(0), us(0), None), Some(us(150))),
            // Responses pending, next due far: poll first.
            ((Some(ms(100)), ms(10), ms(10), Some(ms(1))), Some(ms(11))),
            // Responses pending, next due sooner than the poll.
            (
                (Some(us(1200)), us(1000), us(1005), Some(ms(1))),
                Some(us(1200)),
            ),
            // Schedule over: only the polls.
            ((None, ms(10), ms(12), Some(ms(4))), Some(ms(16))),
            ((None, ms(10), ms(12), None), None),
        ];
        for ((due, woke, now, poll), want) in table {
            assert_eq!(
                next_wake(due, woke, now, poll),
                want,
                "due {due:?} woke {woke:?} now {now:?} poll {poll:?}"
            );
        }
    }

    #[tokio::test]
    async fn never_wakes_before_the_deadline() {
        let t0 = Instant::now();
        let mut timer = DueTimer::new(t0).unwrap();
        for i in 1..=20u64 {
            let at = Duration::from_micros(300 * i);
            timer.sleep_until(at).await.unwrap();
            let woke = t0.elapsed();
            assert!(woke >= at, "woke at {woke:?}, due {at:?}");
        }
        // A deadline already past returns at once.
        let before = t0.elapsed();
        timer.sleep_until(Duration::ZERO).await.unwrap();
        assert!(t0.elapsed() - before < Duration::from_millis(50));
    }
}
