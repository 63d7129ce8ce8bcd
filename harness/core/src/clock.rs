//! One monotonic clock per run: every request, probe and cluster event is
//! stamped as an offset from the same origin, so they can be lined up.

use std::time::{Duration, Instant};

/// A run's time origin. Cheap to copy; every component of a run gets the
/// same value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    /// A clock whose origin is now.
    pub fn start() -> Self {
        Self {
            origin: Instant::now(),
        }
    }

    /// A clock with a given origin (tests, or aligning with another clock).
    pub fn with_origin(origin: Instant) -> Self {
        Self { origin }
    }

    pub fn origin(&self) -> Instant {
        self.origin
    }

    /// Time since the origin.
    pub fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// The offset of `instant` from the origin; instants before the origin
    /// are clamped to zero rather than panicking.
    pub fn offset(&self, instant: Instant) -> Duration {
        instant.saturating_duration_since(self.origin)
    }

    /// The instant `offset` after the origin.
    pub fn instant(&self, offset: Duration) -> Instant {
        self.origin + offset
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::start()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip_and_clamp() {
        let clock = Clock::start();
        let later = clock.instant(Duration::from_millis(1500));
        assert_eq!(clock.offset(later), Duration::from_millis(1500));
        let before = Clock::with_origin(later);
        assert_eq!(before.offset(clock.origin()), Duration::ZERO);
    }
}
