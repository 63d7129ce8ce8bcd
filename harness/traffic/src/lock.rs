//! Locking the generator's shared state.

use std::sync::{Mutex, MutexGuard};

/// A poisoned lock only means another request task panicked mid-update;
/// the counters are still the best information there is.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
