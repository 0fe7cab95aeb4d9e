//! De-duplication by (device, event id) claims in the store.
//!
//! Before sending, a request claims each (app_id, pushkey, event_id) it is
//! about to push. A claim that exists means "already sent or queued" (answer
//! without a push) or "being sent right now by another request" (wait for it to
//! settle). A claim whose lease ran out belongs to a sender that died before
//! answering, so it is taken over. Badge-only notifications (no event id) are
//! never de-duplicated.

use std::collections::HashSet;
use std::time::Duration;

use tokio::time::Instant;

use super::clock::Clock;
use crate::notification::Notification;
use crate::store::{ClaimKey, ClaimState, Millis, Store};

/// How often a waiting duplicate looks at the claim it waits for.
const POLL: Duration = Duration::from_millis(50);

/// What a device's claim turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Claim {
    /// Nothing to claim (no event id, already decided, or store unavailable): just send.
    None,
    /// Ours: send, then settle it.
    Granted(ClaimKey),
    /// Someone else's, still being sent: wait for it.
    Waiting(ClaimKey),
    /// Someone else's, already delivered or queued: answered as a duplicate.
    Settled,
    /// The same device appears earlier in this request: answered as a duplicate.
    Twin,
}

impl Claim {
    pub(super) fn key(&self) -> Option<&ClaimKey> {
        match self {
            Claim::Granted(k) | Claim::Waiting(k) => Some(k),
            Claim::None | Claim::Twin | Claim::Settled => None,
        }
    }
}

pub(super) struct Window {
    pub now: Millis,
    pub lease_until: Millis,
    pub settled_before: Millis,
}

/// Claims every undecided device of `n` (`decided[i]` false) in one query.
pub(super) async fn claim_all(
    store: &dyn Store,
    n: &Notification,
    decided: &[bool],
    w: &Window,
    request_id: &str,
) -> Vec<Claim> {
    let mut claims = vec![Claim::None; n.devices.len()];
    let Some(event_id) = &n.event_id else {
        return claims;
    };
    let mut keys: Vec<ClaimKey> = Vec::new();
    // Most requests have one device or a few: a scan of the keys so far
    // costs less than hashing them; a large fan-out gets a set.
    let mut seen: Option<HashSet<ClaimKey>> = (n.devices.len() > SCAN_UP_TO).then(HashSet::new);
    for (i, d) in n.devices.iter().enumerate() {
        if decided[i] {
            continue;
        }
        let key = ClaimKey {
            app_id: d.app_id.as_str().to_owned(),
            pushkey: d.pushkey.expose().to_owned(),
            event_id: event_id.as_str().to_owned(),
        };
        let twin = match &mut seen {
            Some(seen) => !seen.insert(key.clone()),
            None => keys.contains(&key),
        };
        if twin {
            claims[i] = Claim::Twin;
        } else {
            claims[i] = Claim::Waiting(key.clone());
            keys.push(key);
        }
    }
    if keys.is_empty() {
        return claims;
    }
    match store
        .claim(&keys, w.now, w.lease_until, w.settled_before)
        .await
    {
        Ok(granted) => {
            let granted = Keys::of(granted);
            for c in &mut claims {
                if matches!(c, Claim::Waiting(k) if granted.contains(k)) {
                    if let Claim::Waiting(k) = std::mem::replace(c, Claim::None) {
                        *c = Claim::Granted(k);
                    }
                }
            }
            settled_at_once(store, &mut claims).await;
        }
        Err(e) => {
            // Sending twice beats not sending: go on without de-duplication.
            tracing::warn!(request_id, error = %e, "store unavailable: pushes sent without de-duplication");
            for c in &mut claims {
                if matches!(c, Claim::Waiting(_)) {
                    *c = Claim::None;
                }
            }
        }
    }
    claims
}

/// Up to this many devices, duplicates and granted keys are found by a scan.
const SCAN_UP_TO: usize = 16;

/// Keys to look up: scanned when few, hashed when many.
enum Keys {
    Few(Vec<ClaimKey>),
    Many(HashSet<ClaimKey>),
}

impl Keys {
    fn of(keys: Vec<ClaimKey>) -> Keys {
        if keys.len() > SCAN_UP_TO {
            Keys::Many(keys.into_iter().collect())
        } else {
            Keys::Few(keys)
        }
    }

    fn contains(&self, k: &ClaimKey) -> bool {
        match self {
            Keys::Few(v) => v.contains(k),
            Keys::Many(s) => s.contains(k),
        }
    }
}

/// Marks the claims not granted that are already settled (the common case of a
/// homeserver retry), in one query, so that only claims really being sent are
/// waited for. On a store error they stay `Waiting`: `wait_for` polls them.
async fn settled_at_once(store: &dyn Store, claims: &mut [Claim]) {
    let others: Vec<ClaimKey> = claims
        .iter()
        .filter_map(|c| match c {
            Claim::Waiting(k) => Some(k.clone()),
            _ => None,
        })
        .collect();
    if others.is_empty() {
        return;
    }
    let Ok(states) = store.claim_states(&others).await else {
        return;
    };
    let settled = Keys::of(
        states
            .into_iter()
            .filter(|(_, st)| matches!(st, ClaimState::Settled { .. }))
            .map(|(k, _)| k)
            .collect(),
    );
    for c in claims.iter_mut() {
        if matches!(c, Claim::Waiting(k) if settled.contains(k)) {
            *c = Claim::Settled;
        }
    }
}

/// What waiting for another request's claim ended with.
pub(super) enum Waited {
    /// It was delivered or queued: nothing to send.
    Settled,
    /// Its sender died (lease over): the claim is ours now; send.
    TookOver,
    /// Still being sent when our answer is due.
    Timeout,
}

/// Waits until the claim `key` settles, its lease ends on `clock` (then takes
/// it over), or `deadline`.
pub(super) async fn wait_for(
    store: &dyn Store,
    clock: &Clock,
    key: &ClaimKey,
    lease: Duration,
    window: Duration,
    deadline: Instant,
) -> Waited {
    let keys = std::slice::from_ref(key);
    loop {
        let state = store
            .claim_states(keys)
            .await
            .ok()
            .map(|s| s.first().map(|(_, st)| *st));
        let now = clock.now_ms();
        let take_over = match state {
            Some(Some(ClaimState::Settled { .. })) => return Waited::Settled,
            Some(Some(ClaimState::Sending { until })) => until < now,
            // Expired and cleaned up in the meantime.
            Some(None) => true,
            // Store unavailable: keep waiting, the deadline bounds it.
            None => false,
        };
        if take_over {
            let granted = store
                .claim(
                    keys,
                    now,
                    now + lease.as_millis() as Millis,
                    now - window.as_millis() as Millis,
                )
                .await;
            if matches!(granted, Ok(g) if !g.is_empty()) {
                return Waited::TookOver;
            }
        }
        if Instant::now() + POLL >= deadline {
            return Waited::Timeout;
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::time::Instant;

    use super::{wait_for, Waited};
    use crate::config::StoreConfig;
    use crate::dispatch::clock::Clock;
    use crate::store::{now_ms, ClaimKey, Store};

    /// A claim held by a sender that went quiet is taken over by the duplicate
    /// waiting for it when its lease ends on the dispatcher's clock, not the
    /// system's: the manual clock stands an hour ahead, where the system clock
    /// cannot end the lease during the test.
    #[tokio::test]
    async fn a_waiting_duplicate_takes_a_claim_over_when_its_lease_ends_on_the_clock() {
        let dir = tempfile::tempdir().expect("dir");
        let store: Arc<dyn Store> = crate::store::open(&StoreConfig::Sqlite {
            path: dir.path().join("d.db"),
        })
        .await
        .expect("open")
        .expect("a store");
        let start = now_ms() + 3_600_000;
        let clock = Clock::manual(start);
        let key = ClaimKey {
            app_id: "app".into(),
            pushkey: "key".into(),
            event_id: "$ev".into(),
        };
        let (lease, window) = (Duration::from_secs(1), Duration::from_secs(600));
        let held = store
            .claim(
                std::slice::from_ref(&key),
                start,
                start + 1_000,
                start - 600_000,
            )
            .await
            .expect("claimed");
        assert_eq!(held.len(), 1);

        clock.advance(Duration::from_millis(1_000));
        let within = Instant::now() + Duration::from_millis(200);
        let waited = wait_for(&*store, &clock, &key, lease, window, within).await;
        assert!(
            matches!(waited, Waited::Timeout),
            "the lease's last millisecond"
        );

        let waiting = tokio::spawn({
            let (store, clock, key) = (store.clone(), clock.clone(), key.clone());
            async move {
                let within = Instant::now() + Duration::from_secs(10);
                wait_for(&*store, &clock, &key, lease, window, within).await
            }
        });
        clock.advance(Duration::from_millis(1));
        let waited = waiting.await.expect("task");
        assert!(matches!(waited, Waited::TookOver), "taken over");
    }
}
