//! The store's one seam to time.

use std::sync::atomic::{AtomicU64 as StdAtomicU64, Ordering as StdOrdering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where the store reads "now", in milliseconds since the Unix epoch.
///
/// Every decision of one call reads the clock once. The clock may step backwards
/// (NTP); the store never lets a session's rotation time or expiry go down because of it.
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    fn now_ms(&self) -> u64 {
        // A clock before 1970 reads as 1970: every session then looks young, never expired early.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// A clock moved only by hand, for tests and simulations. Clones share one time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<StdAtomicU64>,
}

impl ManualClock {
    /// A clock that reads `start_ms` until it is moved.
    pub fn new(start_ms: u64) -> Self {
        Self {
            now: Arc::new(StdAtomicU64::new(start_ms)),
        }
    }

    /// Moves the clock forward by `by` (whole milliseconds; saturates).
    pub fn advance(&self, by: Duration) {
        let ms = millis(by);
        // Relaxed: the clock is a single value; callers that need ordering get it from
        // the store's own synchronisation.
        let _ = self
            .now
            .fetch_update(StdOrdering::Relaxed, StdOrdering::Relaxed, |t| {
                Some(t.saturating_add(ms))
            });
    }

    /// Sets the clock to `ms`, forwards or backwards.
    pub fn set(&self, ms: u64) {
        self.now.store(ms, StdOrdering::Relaxed);
    }
}

impl Default for ManualClock {
    /// Starts at 2024-01-01T00:00:00Z, so expiries look like real ones.
    fn default() -> Self {
        Self::new(1_704_067_200_000)
    }
}

impl Clock for ManualClock {
    #[inline]
    fn now_ms(&self) -> u64 {
        self.now.load(StdOrdering::Relaxed)
    }
}

/// Whole milliseconds of `d`, saturating at `u64::MAX` (584 million years), as every
/// setting and clock step is kept.
#[inline]
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    #[inline]
    fn now_ms(&self) -> u64 {
        (**self).now_ms()
    }
}
