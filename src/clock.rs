//! keygate's notion of now: the system clock, read through a [`Clock`] handle that the
//! gateway carries, so that what expires (approvals, minted-token reuse, verified agent
//! tokens) expires by one clock that a test can move forward instead of sleeping.
//!
//! Only tests move it ([`Clock::advance`]): nothing in configuration, the admin API or
//! the environment reaches it, since moving time would let anyone resurrect an expired
//! approval or token. A handle belongs to one runtime, so tests running in parallel in
//! one process each move their own. Reading it costs one atomic load over the system
//! clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The clock of one runtime: the system clock plus an offset that only grows, and that
/// only a test sets (zero in production).
#[derive(Clone, Debug, Default)]
pub struct Clock {
    ahead_ms: Arc<AtomicU64>,
}

impl Clock {
    /// Now, by this clock.
    pub fn now(&self) -> SystemTime {
        SystemTime::now() + Duration::from_millis(self.ahead_ms.load(Ordering::Relaxed))
    }

    /// Unix time in seconds (0 if the system clock is before 1970).
    pub fn unix_secs(&self) -> i64 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }

    /// Unix time in milliseconds (0 if the system clock is before 1970).
    pub fn unix_millis(&self) -> i64 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }

    /// Moves this clock (and every copy of the handle) forward by `by`. For tests: a test
    /// waiting for an expiry advances the clock instead of sleeping.
    #[doc(hidden)]
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.ahead_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_moves_every_copy_and_no_other_clock() {
        let a = Clock::default();
        let copy = a.clone();
        let other = Clock::default();
        let before = a.unix_millis();
        copy.advance(Duration::from_secs(90));
        assert!(a.unix_millis() >= before + 90_000);
        assert!(a.unix_secs() >= before / 1000 + 90);
        assert!(other.unix_millis() < before + 90_000);
    }
}
