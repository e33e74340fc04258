//! The only place the storage layer reads time, so tests can move it by hand.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use koban_ledger::Timestamp;

/// A source of "now" for stamping transfers and expiring holds.
#[derive(Clone)]
pub struct Clock(Option<Arc<AtomicU64>>);

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Clock {
        Clock(None)
    }

    /// A clock that stands still until moved through the returned handle.
    pub fn manual(start: Timestamp) -> (Clock, ManualClock) {
        let nanos = Arc::new(AtomicU64::new(start.nanos()));
        (Clock(Some(nanos.clone())), ManualClock(nanos))
    }

    pub fn now(&self) -> Timestamp {
        match &self.0 {
            Some(nanos) => Timestamp::from_nanos(nanos.load(Ordering::SeqCst)),
            None => {
                let since_epoch = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                Timestamp::from_nanos(u64::try_from(since_epoch.as_nanos()).unwrap_or(u64::MAX))
            }
        }
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Clock(manual)"
        } else {
            "Clock(system)"
        })
    }
}

/// The handle that moves a manual [`Clock`].
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock that reads this handle's time.
    pub fn clock(&self) -> Clock {
        Clock(Some(self.0.clone()))
    }

    /// Moves the clock to `at` (replays of recorded time; it may go back).
    pub fn set(&self, at: koban_ledger::Timestamp) {
        self.0.store(at.nanos(), Ordering::SeqCst);
    }

    pub fn advance_secs(&self, seconds: u64) {
        self.0
            .fetch_add(seconds.saturating_mul(1_000_000_000), Ordering::SeqCst);
    }
}
