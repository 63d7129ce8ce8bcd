//! Waking the attack loop at a request's due time, to the microsecond.
//!
//! tokio's timers have millisecond granularity: a request due 200 µs from
//! now waited up to a whole tick, so requests left ~0.8 ms late on average
//! and that lag was most of the latency zdt reported against a fast server.
//! The attack loop has a thread of its own, so it sleeps by itself: one
//! `epoll_pwait2` with a nanosecond timeout (an hrtimer; the thread's timer
//! slack is set to 1 ns so none is added), on an epoll set that holds only
//! an eventfd the attack's cancel rings. One syscall per wake-up, no
//! spinning, no turn of the runtime. Kernels before 5.11 lack
//! `epoll_pwait2` (and some seccomp filters refuse it): there a `timerfd`
//! armed with the absolute deadline sits in the same set. The schedule stays in [`crate::Pacer`]; this only
//! sleeps.
//!
//! Each wake-up has a price, though: ~15 µs of CPU on the benchmark VM
//! (timer interrupt, context switch, hypervisor exits), more than the
//! request it sends. So [`Wakeups`] spaces wake-ups at least
//! [`MIN_WAKE_GAP`] apart (at 20000/s three requests go out per wake-up,
//! the earliest ≤ 150 µs late, and the send lag reports it), and the
//! connections' responses are read at these wake-ups instead of waking
//! the loop themselves (see [`crate::polled`]).

use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Wake, Waker};
use std::time::{Duration, Instant};

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

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
    sleeper: Sleeper,
    poll: Duration,
    /// When the loop last woke, after t0.
    woke: Duration,
}

impl Wakeups {
    /// Wake-ups of the calling thread (the attack loop's own), cut short
    /// when any of `cancels` fires.
    pub fn new(t0: Instant, cancels: &[&CancellationToken]) -> io::Result<Self> {
        Ok(Self {
            sleeper: Sleeper::new(t0, cancels)?,
            poll: POLL_MIN,
            woke: Duration::ZERO,
        })
    }

    /// Sleeps until `due` (see [`next_wake`]; `None`: nothing is due any
    /// more; `busy`: requests are in flight, so the connections need
    /// polling), or until a cancel fires: true then, and the caller checks
    /// its cancels. It then polls the connections and says whether that
    /// read anything ([`Wakeups::polled`]).
    pub fn sleep(&mut self, due: Option<Duration>, busy: bool) -> io::Result<bool> {
        let poll = busy.then_some(self.poll);
        let now = self.sleeper.t0.elapsed();
        let at = next_wake(due, self.woke, now, poll);
        let rang = self.sleeper.sleep_until(at)?;
        self.woke = self.sleeper.t0.elapsed();
        Ok(rang)
    }

    /// True when the loop, sending without sleeping, has gone
    /// [`MIN_WAKE_GAP`] without polling the connections (and notes that it
    /// does now).
    pub fn turn_due(&mut self) -> bool {
        let now = self.sleeper.t0.elapsed();
        if now < self.woke + MIN_WAKE_GAP {
            return false;
        }
        self.woke = now;
        true
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

/// Sleeps the calling thread to deadlines that are offsets from t0, or
/// until a cancel rings its bell.
pub(crate) struct Sleeper {
    epoll: OwnedFd,
    bell: Arc<Bell>,
    /// Set once `epoll_pwait2` said ENOSYS: the timerfd then keeps time.
    timerfd: Option<OwnedFd>,
    /// t0 on `CLOCK_MONOTONIC` (what `Instant` reads on Linux).
    origin: Duration,
    t0: Instant,
    /// The cancels watched; each rings the bell once.
    _watch: Vec<Pin<Box<WaitForCancellationFutureOwned>>>,
}

/// The token of the bell's eventfd in the epoll set (the timerfd's is 1).
const BELL: u64 = 0;

impl Sleeper {
    pub fn new(t0: Instant, cancels: &[&CancellationToken]) -> io::Result<Self> {
        // No slack on this thread's timeouts (the default adds 50 µs).
        // SAFETY: plain prctl on the calling thread.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
        // SAFETY: plain syscalls; results are checked before use.
        let epoll = owned(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        let bell = Arc::new(Bell(owned(unsafe {
            libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
        })?));
        watch(&epoll, bell.0.as_raw_fd(), BELL)?;
        let waker = Waker::from(bell.clone());
        let mut cx = Context::from_waker(&waker);
        let mut watched = Vec::new();
        for cancel in cancels {
            let mut cancelled = Box::pin((*cancel).clone().cancelled_owned());
            if cancelled.as_mut().poll(&mut cx).is_ready() {
                bell.ring();
            }
            watched.push(cancelled);
        }
        // Instant hides its clock reading: take both readings back to back
        // and carry t0 over (the gap between them is tens of nanoseconds).
        let now = Instant::now();
        let origin = monotonic()?.saturating_sub(now.saturating_duration_since(t0));
        Ok(Self {
            epoll,
            bell,
            timerfd: None,
            origin,
            t0,
            _watch: watched,
        })
    }

    /// Returns at `at` after t0 or later (`None`: only a cancel ends the
    /// sleep), or at once when a cancel rang: true then.
    pub fn sleep_until(&mut self, at: Option<Duration>) -> io::Result<bool> {
        loop {
            let left = match at {
                Some(at) => match at.checked_sub(self.t0.elapsed()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Ok(false),
                },
                None => None,
            };
            let mut event = libc::epoll_event { events: 0, u64: 0 };
            let n = match (&self.timerfd, left) {
                (None, left) => {
                    let ts = left.map(|d| libc::timespec {
                        tv_sec: d.as_secs() as libc::time_t,
                        tv_nsec: d.subsec_nanos() as libc::c_long,
                    });
                    let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const _);
                    // SAFETY: valid epoll descriptor, room for one event,
                    // a timespec or null, no signal mask.
                    unsafe {
                        libc::syscall(
                            libc::SYS_epoll_pwait2,
                            self.epoll.as_raw_fd(),
                            &mut event as *mut libc::epoll_event,
                            1,
                            ts_ptr,
                            std::ptr::null::<libc::sigset_t>(),
                            0,
                        ) as libc::c_int
                    }
                }
                (Some(timer), _) => {
                    if let Some(at) = at {
                        arm(timer, self.origin + at)?;
                    }
                    // SAFETY: valid epoll descriptor, room for one event.
                    unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), &mut event, 1, -1) }
                }
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    // ENOSYS before Linux 5.11; EPERM where a seccomp
                    // filter predates the syscall (containers).
                    Some(libc::ENOSYS | libc::EPERM) if self.timerfd.is_none() => {
                        self.timerfd = Some(self.add_timerfd()?);
                        continue;
                    }
                    _ => return Err(e),
                }
            }
            if n == 1 && event.u64 == BELL {
                self.bell.quiet();
                return Ok(true);
            }
            match &self.timerfd {
                // The timeout: an hrtimer never ends a sleep early, so the
                // clock need not be read again to know `at` has come.
                None => return Ok(false),
                // The timerfd's readiness only says it fired (perhaps for
                // an earlier deadline); the clock decides, above.
                Some(timer) => {
                    let mut count = 0u64;
                    // SAFETY: reads 8 bytes into `count`; a non-blocking timerfd.
                    unsafe { libc::read(timer.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
                }
            }
        }
    }

    fn add_timerfd(&self) -> io::Result<OwnedFd> {
        // SAFETY: plain syscall; the result is checked before use.
        let timer = owned(unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        })?;
        watch(&self.epoll, timer.as_raw_fd(), 1)?;
        Ok(timer)
    }
}

/// An eventfd a cancel rings (as the waker of its cancellation future).
struct Bell(OwnedFd);

impl Bell {
    fn ring(&self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from `one` to an eventfd.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    fn quiet(&self) {
        let mut count = 0u64;
        // SAFETY: reads 8 bytes into `count` from a non-blocking eventfd.
        unsafe { libc::read(self.0.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
    }
}

impl Wake for Bell {
    fn wake(self: Arc<Self>) {
        self.ring();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ring();
    }
}

fn owned(raw: libc::c_int) -> io::Result<OwnedFd> {
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor the caller hands over.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Adds `fd` to `epoll` for reading (level-triggered) under `token`.
fn watch(epoll: &OwnedFd, fd: libc::c_int, token: u64) -> io::Result<()> {
    let mut event = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: token,
    };
    // SAFETY: both descriptors are open; the event is initialised.
    if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Arms `timer` for `deadline` on the monotonic clock (absolute: no drift,
/// no slack).
fn arm(timer: &OwnedFd, deadline: Duration) -> io::Result<()> {
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
            timer.as_raw_fd(),
            libc::TFD_TIMER_ABSTIME,
            &spec,
            std::ptr::null_mut(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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

    #[test]
    fn never_wakes_before_the_deadline() {
        let t0 = Instant::now();
        let mut sleeper = Sleeper::new(t0, &[]).unwrap();
        for i in 1..=20u64 {
            let at = Duration::from_micros(300 * i);
            sleeper.sleep_until(Some(at)).unwrap();
            let woke = t0.elapsed();
            assert!(woke >= at, "woke at {woke:?}, due {at:?}");
        }
        // A deadline already past returns at once.
        let before = t0.elapsed();
        sleeper.sleep_until(Some(Duration::ZERO)).unwrap();
        assert!(t0.elapsed() - before < Duration::from_millis(50));
        // So does the timerfd that stands in for epoll_pwait2.
        sleeper.timerfd = Some(sleeper.add_timerfd().unwrap());
        let at = t0.elapsed() + Duration::from_millis(2);
        sleeper.sleep_until(Some(at)).unwrap();
        assert!(t0.elapsed() >= at);
    }

    #[test]
    fn a_cancel_ends_the_sleep() {
        let t0 = Instant::now();
        let cancel = CancellationToken::new();
        let mut sleeper = Sleeper::new(t0, &[&cancel]).unwrap();
        let canceller = {
            let cancel = cancel.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                cancel.cancel();
            })
        };
        // With no deadline only the cancel can end it.
        sleeper.sleep_until(None).unwrap();
        assert!(cancel.is_cancelled());
        canceller.join().unwrap();
        // The bell is quiet again: a deadline is slept to, not cut short.
        let at = t0.elapsed() + Duration::from_millis(5);
        sleeper.sleep_until(Some(at)).unwrap();
        assert!(t0.elapsed() >= at);
    }
}
