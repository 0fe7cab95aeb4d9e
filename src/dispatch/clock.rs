//! The time the delivery core reads: the system clock in the gateway, a
//! manual one in tests, so that due times, `max_age` and leases can be
//! checked by moving time rather than by waiting for it (and the
//! de-duplication window, claim leases and housekeeping cut-offs with them).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::store::{now_ms, Millis};

/// Milliseconds since the Unix epoch, from the system (the default) or from a
/// manual clock that moves only when told. Clones of a manual clock share its time.
#[derive(Debug, Clone, Default)]
pub struct Clock(Option<Arc<AtomicI64>>);

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Clock(None)
    }

    /// A clock that stands at `at` until [`Clock::advance`] moves it.
    pub fn manual(at: Millis) -> Self {
        Clock(Some(Arc::new(AtomicI64::new(at))))
    }

    pub fn now_ms(&self) -> Millis {
        match &self.0 {
            None => now_ms(),
            Some(t) => t.load(Ordering::SeqCst),
        }
    }

    /// Moves a manual clock forward by `by`; the system clock moves by itself.
    pub fn advance(&self, by: Duration) {
        if let Some(t) = &self.0 {
            let by = Millis::try_from(by.as_millis()).unwrap_or(Millis::MAX);
            let _ = t.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
                Some(v.saturating_add(by))
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Clock;
    use std::time::Duration;

    #[test]
    fn a_manual_clock_moves_only_when_advanced_and_its_clones_share_it() {
        let c = Clock::manual(1_000);
        let shared = c.clone();
        assert_eq!(c.now_ms(), 1_000);
        shared.advance(Duration::from_millis(250));
        assert_eq!(c.now_ms(), 1_250);
        c.advance(Duration::MAX);
        assert_eq!(c.now_ms(), i64::MAX, "saturates");
    }

    #[test]
    fn the_system_clock_is_the_stores_time() {
        let before = crate::store::now_ms();
        let now = Clock::system().now_ms();
        assert!(now >= before && now - before < 60_000);
        Clock::system().advance(Duration::from_secs(3600));
        assert!(Clock::system().now_ms() - before < 60_000, "not moved");
    }
}
