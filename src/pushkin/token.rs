//! The one cache of the credentials pushkins put on their requests: APNs
//! provider JWTs, FCM OAuth access tokens and VAPID JWTs (one per push-service
//! origin).
//!
//! - A token is renewed before it expires ([`Lifetime::renew_before`]), so
//!   minting and fetching stay off the hot path.
//! - Refreshes are single-flight per key: however many pushes find a token
//!   stale, one refresh runs and the others wait for its result.
//! - A failed refresh is not repeated at once: until its back-off ends
//!   (doubling from [`Lifetime::first_backoff`] up to
//!   [`Lifetime::max_backoff`]) every caller fails fast with the last error,
//!   so a broken token endpoint sees one request per back-off step, not one
//!   per push.
//! - A lifetime given by the other side (`expires_in`) is hostile: it is
//!   believed only between [`Lifetime::min`] and [`Lifetime::max`].
//! - The number of keys is bounded: a flood of distinct origins cannot grow
//!   memory without bound.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::telemetry::metrics::Upstream;

/// How long tokens of one kind are kept, and how failed refreshes back off.
#[derive(Debug, Clone, Copy)]
pub struct Lifetime {
    /// The shortest lifetime believed.
    pub min: Duration,
    /// The longest lifetime believed.
    pub max: Duration,
    /// Renew this long before the token expires (at most halfway through its life).
    pub renew_before: Duration,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Lifetime {
    /// How long a token said to live `lifetime` is used: clamped, then
    /// renewed early. The clamp keeps `Instant + Duration` from overflowing.
    pub fn fresh_for(&self, lifetime: Duration) -> Duration {
        let lifetime = lifetime.clamp(self.min, self.max);
        lifetime - self.renew_before.min(lifetime / 2)
    }

    /// The wait after the `failures`-th refresh failure in a row.
    pub fn backoff(&self, failures: u32) -> Duration {
        self.first_backoff
            .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)))
            .min(self.max_backoff)
    }
}

/// Why no token could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The refresh just tried failed (the text says why).
    #[error("{0}")]
    Refresh(String),
    #[error(
        "{failures} token refresh(es) failed in a row, next attempt in {wait_ms} ms; last: {last}"
    )]
    BackingOff {
        failures: u32,
        wait_ms: u128,
        last: String,
    },
}

/// What a refresh yields: the token and how long it lives.
pub type Refreshed = Result<(Arc<str>, Duration), String>;

struct Fresh {
    token: Arc<str>,
    renew_at: Instant,
}

/// The refreshes that failed in a row, and when the next one may be tried.
struct Failing {
    failures: u32,
    retry_at: Instant,
    last: String,
}

/// One key's token.
#[derive(Default)]
struct Slot {
    current: RwLock<Option<Fresh>>,
    /// Held while refreshing (single flight); remembers failed refreshes.
    refreshing: tokio::sync::Mutex<Option<Failing>>,
}

impl Slot {
    fn fresh(&self) -> Option<Arc<str>> {
        let current = self.current.read().ok()?;
        current
            .as_ref()
            .filter(|c| Instant::now() < c.renew_at)
            .map(|c| c.token.clone())
    }
}

/// Tokens of one kind, per key (`()` for a pushkin's single credential).
pub struct TokenCache<K = ()> {
    /// The `token` label of `pushgate_token_refreshes_total`; `None`: not counted.
    counted: Option<(Upstream, &'static str)>,
    lifetime: Lifetime,
    max_keys: usize,
    slots: Mutex<HashMap<K, Arc<Slot>>>,
}

impl<K: Hash + Eq> TokenCache<K> {
    pub fn new(
        lifetime: Lifetime,
        max_keys: usize,
        counted: Option<(Upstream, &'static str)>,
    ) -> Self {
        TokenCache {
            counted,
            lifetime,
            max_keys: max_keys.max(1),
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn slot<Q>(&self, key: &Q) -> Arc<Slot>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = slots.get(key) {
            return s.clone();
        }
        if slots.len() >= self.max_keys {
            // Forget the stale ones first; if all are fresh, start over.
            slots.retain(|_, s| s.fresh().is_some());
            if slots.len() >= self.max_keys {
                slots.clear();
            }
        }
        let slot = Arc::new(Slot::default());
        slots.insert(key.to_owned(), slot.clone());
        slot
    }

    /// The token for `key`: the cached one while fresh, else the result of
    /// `refresh` (run by one caller at a time, and not again during the
    /// back-off after a failure).
    pub async fn get<Q, F, Fut>(&self, key: &Q, refresh: F) -> Result<Arc<str>, TokenError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Refreshed>,
    {
        let slot = self.slot(key);
        if let Some(t) = slot.fresh() {
            return Ok(t);
        }
        let mut failing = slot.refreshing.lock().await;
        if let Some(t) = slot.fresh() {
            return Ok(t);
        }
        if let Some(f) = failing.as_ref() {
            let now = Instant::now();
            if now < f.retry_at {
                return Err(TokenError::BackingOff {
                    failures: f.failures,
                    wait_ms: (f.retry_at - now).as_millis(),
                    last: f.last.clone(),
                });
            }
        }
        let refreshed = refresh().await;
        if let Some((metrics, label)) = &self.counted {
            metrics.token_refreshed(label, refreshed.is_ok());
        }
        match refreshed {
            Ok((token, lifetime)) => {
                *failing = None;
                let renew_at = Instant::now() + self.lifetime.fresh_for(lifetime);
                if let Ok(mut current) = slot.current.write() {
                    *current = Some(Fresh {
                        token: token.clone(),
                        renew_at,
                    });
                }
                Ok(token)
            }
            Err(e) => {
                let failures = failing.as_ref().map_or(0, |f| f.failures).saturating_add(1);
                let wait = self.lifetime.backoff(failures);
                let label = self.counted.as_ref().map_or("", |(_, l)| *l);
                tracing::warn!(token = label, error = %e, failures, wait_ms = wait.as_millis() as u64, "token refresh failed; pushes fail fast until the next attempt");
                *failing = Some(Failing {
                    failures,
                    retry_at: Instant::now() + wait,
                    last: e.clone(),
                });
                Err(TokenError::Refresh(e))
            }
        }
    }

    /// The service refused `used`: drop it so that the next call refreshes,
    /// unless another push already replaced it.
    pub fn refused<Q>(&self, key: &Q, used: &str)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let slot = self.slot(key);
        if let Ok(mut current) = slot.current.write() {
            if current.as_ref().is_some_and(|c| &*c.token == used) {
                *current = None;
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const MS: Duration = Duration::from_millis(1);

    fn lifetime() -> Lifetime {
        Lifetime {
            min: 100 * MS,
            max: 400 * MS,
            renew_before: 100 * MS,
            first_backoff: 100 * MS,
            max_backoff: 1000 * MS,
        }
    }

    #[test]
    fn lifetimes_are_clamped_and_renewed_early() {
        let l = Lifetime {
            min: Duration::from_secs(60),
            max: Duration::from_secs(3600),
            renew_before: Duration::from_secs(60),
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        };
        let secs = |s| Duration::from_secs(s);
        assert_eq!(l.fresh_for(secs(0)), secs(30), "a minute, renewed halfway");
        assert_eq!(l.fresh_for(secs(1800)), secs(1740));
        assert_eq!(l.fresh_for(secs(3600)), secs(3540));
        assert_eq!(l.fresh_for(Duration::MAX), secs(3540));
        assert!(Instant::now()
            .checked_add(l.fresh_for(Duration::MAX))
            .is_some());
        let waits: Vec<u64> = (1..=8).map(|n| l.backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(l.backoff(0), secs(1));
        assert_eq!(l.backoff(u32::MAX), secs(60));
    }

    /// A refresh that counts its calls and yields `tN` living 300 ms.
    async fn counted(calls: &AtomicUsize) -> Refreshed {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        Ok((format!("t{n}").into(), 300 * MS))
    }

    #[tokio::test]
    async fn tokens_are_reused_then_renewed_before_they_expire() {
        let cache: TokenCache = TokenCache::new(lifetime(), 1, None);
        let calls = AtomicUsize::new(0);
        let first = cache.get(&(), || counted(&calls)).await;
        assert_eq!(first.as_deref(), Ok("t1"));
        assert_eq!(
            cache.get(&(), || counted(&calls)).await.as_deref(),
            Ok("t1")
        );
        // Lives 300 ms, renewed 100 ms early: at 250 ms a new one is fetched.
        tokio::time::sleep(250 * MS).await;
        assert_eq!(
            cache.get(&(), || counted(&calls)).await.as_deref(),
            Ok("t2")
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        cache.refused(&(), "t1");
        assert_eq!(
            cache.get(&(), || counted(&calls)).await.as_deref(),
            Ok("t2"),
            "t1 was already replaced"
        );
        cache.refused(&(), "t2");
        assert_eq!(
            cache.get(&(), || counted(&calls)).await.as_deref(),
            Ok("t3")
        );
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_refresh() {
        let cache: TokenCache = TokenCache::new(lifetime(), 1, None);
        let calls = AtomicUsize::new(0);
        let slow = || async {
            tokio::time::sleep(50 * MS).await;
            counted(&calls).await
        };
        let got = futures::future::join_all((0..20).map(|_| cache.get(&(), slow))).await;
        assert!(got.iter().all(|t| t.as_deref() == Ok("t1")), "{got:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn failed_refreshes_back_off_and_callers_fail_fast_meanwhile() {
        let cache: TokenCache = TokenCache::new(lifetime(), 1, None);
        let calls = AtomicUsize::new(0);
        let failing = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(Arc<str>, Duration), _>("503 from the token endpoint".to_owned())
        };
        assert_eq!(
            cache.get(&(), failing).await,
            Err(TokenError::Refresh("503 from the token endpoint".into()))
        );
        for _ in 0..5 {
            match cache.get(&(), failing).await {
                Err(TokenError::BackingOff {
                    failures: 1, last, ..
                }) => {
                    assert_eq!(last, "503 from the token endpoint")
                }
                other => panic!("expected a fast failure, got {other:?}"),
            }
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "nothing asked during the back-off"
        );
        tokio::time::sleep(150 * MS).await;
        assert!(matches!(
            cache.get(&(), failing).await,
            Err(TokenError::Refresh(_))
        ));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "asked again once the back-off ended"
        );
        // The second failure in a row waits twice as long (200 ms).
        match cache.get(&(), failing).await {
            Err(TokenError::BackingOff {
                failures: 2,
                wait_ms,
                ..
            }) => {
                assert!(wait_ms > 100, "{wait_ms} ms")
            }
            other => panic!("expected a fast failure, got {other:?}"),
        }
        tokio::time::sleep(250 * MS).await;
        let ok = AtomicUsize::new(0);
        assert_eq!(cache.get(&(), || counted(&ok)).await.as_deref(), Ok("t1"));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn keys_are_separate_and_bounded() {
        let cache: TokenCache<String> = TokenCache::new(lifetime(), 2, None);
        let calls = AtomicUsize::new(0);
        let a = cache.get("a", || counted(&calls)).await;
        let b = cache.get("b", || counted(&calls)).await;
        assert_ne!(a, b);
        assert_eq!(cache.get("a", || counted(&calls)).await, a);
        let _ = cache.get("c", || counted(&calls)).await;
        let slots = cache.slots.lock().map(|s| s.len()).unwrap_or(0);
        assert!(slots <= 2, "{slots} keys kept");
    }
}
