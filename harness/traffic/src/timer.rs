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

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;

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
        loop {
            let mut guard = self.fd.readable().await?;
            let mut expirations = 0u64;
            // SAFETY: reads 8 bytes into a u64, as timerfd(2) specifies.
            let n = unsafe {
                libc::read(
                    guard.get_inner().as_raw_fd(),
                    (&mut expirations as *mut u64).cast(),
                    8,
                )
            };
            if n == 8 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::WouldBlock {
                return Err(e);
            }
            // Readiness left over from an earlier deadline: wait again.
            guard.clear_ready();
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
