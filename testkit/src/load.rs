//! Load knobs shared by the fakes, for the benchmark: in count-only mode a
//! fake checks what is cheap to check (path, auth — each distinct token
//! verified once —, required headers, JSON body), counts, and records nothing,
//! so that it can keep up with the gateway; an optional delay before each
//! answer stands in for a slow push service.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

#[derive(Default)]
pub struct LoadKnobs {
    count_only: AtomicBool,
    delay_us: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
}

impl LoadKnobs {
    /// Stop recording requests; count them instead (see [`LoadKnobs::counts`]).
    pub fn set_count_only(&self, on: bool) {
        self.count_only.store(on, Ordering::Relaxed);
    }

    pub fn count_only(&self) -> bool {
        self.count_only.load(Ordering::Relaxed)
    }

    /// Wait this long before each answer (count-only mode).
    pub fn set_delay(&self, d: Duration) {
        self.delay_us.store(d.as_micros() as u64, Ordering::Relaxed);
    }

    pub(crate) async fn pause(&self) {
        let us = self.delay_us.load(Ordering::Relaxed);
        if us > 0 {
            tokio::time::sleep(Duration::from_micros(us)).await;
        }
    }

    pub(crate) fn count(&self, accepted: bool) {
        let c = if accepted {
            &self.accepted
        } else {
            &self.refused
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests answered in count-only mode: (accepted, refused).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.accepted.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }
}

/// Remembers the distinct bearer/JWT strings already verified, so that a fake
/// under load checks each token once instead of once per request.
#[derive(Default)]
pub(crate) struct VerifiedOnce(std::sync::Mutex<std::collections::HashSet<String>>);

impl VerifiedOnce {
    pub(crate) fn check(&self, token: &str, verify: impl FnOnce() -> bool) -> bool {
        if self.0.lock().map(|s| s.contains(token)).unwrap_or(false) {
            return true;
        }
        let ok = verify();
        if ok {
            if let Ok(mut s) = self.0.lock() {
                s.insert(token.to_owned());
            }
        }
        ok
    }
}
