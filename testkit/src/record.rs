//! What a fake received, in arrival order, with a bounded wait for more:
//! tests wait for a condition instead of sleeping and hoping.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

pub struct Recorder<T> {
    items: Mutex<Vec<T>>,
    arrived: Notify,
}

impl<T> Default for Recorder<T> {
    fn default() -> Self {
        Recorder {
            items: Mutex::new(Vec::new()),
            arrived: Notify::new(),
        }
    }
}

impl<T: Clone> Recorder<T> {
    /// Records `item` and wakes the waiters.
    pub fn push(&self, item: T) {
        self.items
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(item);
        self.arrived.notify_waiters();
    }

    /// Everything so far.
    pub fn all(&self) -> Vec<T> {
        self.items.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits until at least `n` items arrived or `timeout` passed; returns what arrived.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.arrived.notified();
            let got = self.all();
            if got.len() >= n || tokio::time::Instant::now() >= deadline {
                return got;
            }
            let _ = tokio::time::timeout_at(deadline, arrived).await;
        }
    }
}
