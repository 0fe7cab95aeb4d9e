//! Settled claims written a moment after the answer, together: the claims of
//! every request answered within one tick of the runtime's clock go into one
//! settlement, written by one task.
//!
//! Why: a task, a timer and a job on the store's queue for each request cost
//! more than the rows they write (docs/performance.md, ninth session); the
//! store's group commit put them in one transaction anyway. Only claims wait
//! here — a request that queues a push or changes the rejection memory
//! writes before it answers, so the next request sees it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio_util::task::TaskTracker;

use crate::store::{ClaimKey, Millis, Settlement, Store};

/// How long settled claims wait for others: one tick of the runtime's timer.
const GATHER: Duration = Duration::from_millis(1);

/// Most claims in one merged settlement: it is written in one transaction,
/// in the task of whichever request serves the store's queue.
const MOST_KEYS: usize = 1_024;

/// The claims waiting to be written, and whether a task will write them.
#[derive(Default)]
pub(super) struct SettleLater {
    pending: Arc<Mutex<Pending>>,
}

#[derive(Default)]
struct Pending {
    /// `Some` while a task is to write it (it takes it when it wakes).
    settlement: Option<Settlement>,
    /// Requests whose claims it holds, for the log line if it fails.
    requests: usize,
}

impl SettleLater {
    /// Writes these claims within [`GATHER`] (one task for all the requests
    /// of the moment, tracked by `tracker`, so shutdown waits for it): settled
    /// (the push is done) at `now`, or released (neither sent nor queued).
    pub(super) fn add(
        &self,
        store: &Arc<dyn Store>,
        tracker: &TaskTracker,
        now: Millis,
        settle: Vec<ClaimKey>,
        release: Vec<ClaimKey>,
    ) {
        let next = |settle, release| Settlement {
            now,
            settle_claims: settle,
            release_claims: release,
            ..Settlement::default()
        };
        let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = &mut p.settlement {
            let keys = s.settle_claims.len() + s.release_claims.len();
            if keys + settle.len() + release.len() <= MOST_KEYS {
                s.now = s.now.max(now);
                s.settle_claims.extend(settle);
                s.release_claims.extend(release);
                p.requests += 1;
                return;
            }
            // Full: written now, and these claims start the next one, which
            // the task that was to write the full one takes when it wakes.
            let full = std::mem::replace(s, next(settle, release));
            let requests = std::mem::replace(&mut p.requests, 1);
            drop(p);
            tracker.spawn(write(store.clone(), full, requests));
            return;
        }
        p.settlement = Some(next(settle, release));
        p.requests = 1;
        drop(p);
        let (pending, store) = (self.pending.clone(), store.clone());
        tracker.spawn(async move {
            tokio::time::sleep(GATHER).await;
            let (settlement, requests) = {
                let mut p = pending.lock().unwrap_or_else(PoisonError::into_inner);
                (p.settlement.take(), std::mem::take(&mut p.requests))
            };
            if let Some(settlement) = settlement {
                write(store, settlement, requests).await;
            }
        });
    }
}

async fn write(store: Arc<dyn Store>, settlement: Settlement, requests: usize) {
    if let Err(e) = store.settle(settlement).await {
        tracing::error!(requests, error = %e, "store unavailable: settled claims not recorded");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ClaimState;

    fn key(event: &str) -> ClaimKey {
        ClaimKey {
            app_id: "app".into(),
            pushkey: "key".into(),
            event_id: event.into(),
        }
    }

    /// A SQLite store in a directory of its own (kept while the test holds it).
    async fn sqlite_store() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().expect("dir");
        let config = crate::config::StoreConfig::Sqlite {
            path: dir.path().join("s.db"),
        };
        let store = crate::store::open(&config)
            .await
            .expect("store")
            .expect("a SQLite store");
        (dir, store)
    }

    #[tokio::test]
    async fn the_claims_of_requests_answered_together_are_written_by_one_task() {
        let (_dir, store) = sqlite_store().await;
        let (later, tracker) = (SettleLater::default(), TaskTracker::new());
        later.add(&store, &tracker, 1_000, vec![key("$a")], vec![]);
        later.add(&store, &tracker, 1_002, vec![key("$b")], vec![]);
        later.add(&store, &tracker, 1_001, vec![key("$c")], vec![key("$d")]);
        assert_eq!(tracker.len(), 1, "one task for the three requests");
        tracker.close();
        tracker.wait().await;
        let keys = [key("$a"), key("$b"), key("$c"), key("$d")];
        let states = store.claim_states(&keys).await.expect("states");
        let settled_at = ClaimState::Settled { at: 1_002 };
        assert_eq!(
            states,
            vec![
                (key("$a"), settled_at),
                (key("$b"), settled_at),
                (key("$c"), settled_at),
            ]
        );
        // The next request's claims start a task of their own.
        let tracker = TaskTracker::new();
        later.add(&store, &tracker, 2_000, vec![key("$e")], vec![]);
        assert_eq!(tracker.len(), 1);
        tracker.close();
        tracker.wait().await;
        let states = store.claim_states(&[key("$e")]).await.expect("states");
        assert_eq!(states, vec![(key("$e"), ClaimState::Settled { at: 2_000 })]);
    }

    #[tokio::test]
    async fn a_full_settlement_is_written_at_once_and_the_next_one_still_gathers() {
        let (_dir, store) = sqlite_store().await;
        let (later, tracker) = (SettleLater::default(), TaskTracker::new());
        let keys =
            |from: usize, n: usize| (from..from + n).map(|i| key(&format!("${i}"))).collect();
        later.add(&store, &tracker, 1, keys(0, MOST_KEYS - 10), vec![]);
        later.add(&store, &tracker, 2, keys(MOST_KEYS - 10, 10), vec![]);
        assert_eq!(tracker.len(), 1, "exactly full: still gathering");
        later.add(&store, &tracker, 3, keys(MOST_KEYS, 1), vec![]);
        later.add(&store, &tracker, 4, keys(MOST_KEYS + 1, 2), vec![]);
        assert_eq!(
            tracker.len(),
            2,
            "the gathering task and the full one's write"
        );
        tracker.close();
        tracker.wait().await;
        let all: Vec<ClaimKey> = keys(0, MOST_KEYS + 3);
        let states = store.claim_states(&all).await.expect("states");
        assert_eq!(states.len(), MOST_KEYS + 3, "every claim written");
        assert_eq!(states[0].1, ClaimState::Settled { at: 2 });
        assert_eq!(states[MOST_KEYS].1, ClaimState::Settled { at: 4 });
    }
}
