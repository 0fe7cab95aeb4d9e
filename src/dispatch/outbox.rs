//! The outbox worker: retries queued pushes until they are delivered, found
//! dead, or too old; and the housekeeping that deletes expired rows.
//!
//! Entries are taken in small batches and leased (their `due_at` moves past
//! the time one attempt can take), so with PostgreSQL several gateways drain
//! one outbox without sending an entry twice, and the entries of a gateway
//! that died mid-attempt fall due again when their lease ends.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use rand::Rng;
use tokio::sync::watch;

use super::{Dispatcher, Fate};
use crate::config::DispatchConfig;
use crate::notification::{self, Device};
use crate::pushkin::outcome::{Cause, Rejected};
use crate::pushkin::Outcome;
use crate::store::{now_ms, Entry, Expiry, Millis, Rejection, Settlement, Store};
use crate::telemetry::redact;

/// Entries taken per round.
const BATCH: i64 = 64;
/// Pause between polls when nothing is due.
const IDLE: Duration = Duration::from_millis(200);
/// Pause after a store error.
const STORE_DOWN: Duration = Duration::from_secs(1);
/// Rows deleted per housekeeping statement, and the pause between rounds.
const EXPIRY_BATCH: i64 = 1000;
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(30);

/// Delay before attempt `attempts + 1`: exponential from `retry_initial_delay`,
/// capped at `retry_max_delay`, with jitter (50–100 % of the step) so that
/// pushes failed together do not retry together; never sooner than `Retry-After`.
pub fn backoff(p: &DispatchConfig, attempts: i64, retry_after: Option<Duration>) -> Duration {
    let exp = attempts.clamp(1, 32) as u32 - 1;
    let step = p
        .retry_initial_delay
        .saturating_mul(2u32.saturating_pow(exp))
        .min(p.retry_max_delay);
    let jittered = step.mul_f64(rand::thread_rng().gen_range(0.5..=1.0));
    match retry_after {
        Some(r) if r > jittered => r.min(p.max_age),
        _ => jittered,
    }
}

/// Runs the outbox worker until `stop` turns true.
pub async fn run(d: Arc<Dispatcher>, store: Arc<dyn Store>, mut stop: watch::Receiver<bool>) {
    let mut store_down = false;
    while !*stop.borrow() {
        let now = now_ms();
        let lease_until = now + d.lease().as_millis() as Millis;
        let pause = match store.take_due(now, lease_until, BATCH).await {
            Ok(entries) if entries.is_empty() => IDLE,
            Ok(entries) => {
                store_down = false;
                round(&d, &*store, entries).await;
                Duration::ZERO
            }
            Err(e) => {
                if !store_down {
                    tracing::error!(error = %e, "store unavailable: outbox paused until it answers");
                }
                store_down = true;
                STORE_DOWN
            }
        };
        if !pause.is_zero() {
            let _ = tokio::time::timeout(pause, stop.changed()).await;
        }
    }
}

/// Attempts a batch of entries concurrently and records the results in one transaction.
async fn round(d: &Dispatcher, store: &dyn Store, entries: Vec<Entry>) {
    let now = now_ms();
    let max_age = d.policy.max_age.as_millis() as Millis;
    let routes = d.routes();
    let routes = &routes;
    let results = join_all(entries.iter().map(|e| async move {
        let n = match notification::parse(e.body.as_bytes(), 1) {
            Ok(n) => n,
            Err(err) => {
                tracing::error!(entry = e.id, error = %err, "outbox: unreadable entry deleted");
                let why = Cause::Local("unreadable outbox entry".into());
                return (e, Some((Fate::Pushed(Outcome::failed(why)), None)));
            }
        };
        let Some(dev) = n.devices.first() else {
            let why = Cause::Local("outbox entry without a device".into());
            return (e, Some((Fate::Pushed(Outcome::failed(why)), None)));
        };
        if now - e.created_at > max_age {
            d.metrics.dropped(&d.app_label(&dev.app_id));
            return (e, None);
        }
        let fate = d.send(routes, &n, dev, "outbox").await;
        (e, Some((fate, Some(dev.clone()))))
    }))
    .await;
    let mut s = Settlement {
        now: now_ms(),
        ..Settlement::default()
    };
    for (e, fate) in results {
        match fate {
            None => {
                tracing::warn!(
                    entry = e.id,
                    attempts = e.attempts,
                    "outbox: push dropped after dispatch.max_age without delivery"
                );
                s.delete.push(e.id);
            }
            Some((fate, dev)) => record(d, &mut s, e.id, e.attempts + 1, &fate, dev.as_ref()),
        }
    }
    if let Err(e) = store.settle(s).await {
        tracing::error!(error = %e, "store unavailable: outbox results not recorded; the entries fall due again");
    }
}

/// Records the fate of one attempt of outbox entry `id` (its `attempts`-th).
pub(super) fn record(
    d: &Dispatcher,
    s: &mut Settlement,
    id: i64,
    attempts: i64,
    fate: &Fate,
    device: Option<&Device>,
) {
    match fate {
        Fate::Pushed(Outcome::Temporary { cause, retry_after }) => {
            let due = s.now + backoff(&d.policy, attempts, *retry_after).as_millis() as Millis;
            s.reschedule.push((id, due, attempts, cause.to_string()));
        }
        Fate::Pushed(o @ Outcome::Rejected(Rejected::TokenDead { since_ms, .. })) => {
            // Remembered under the key of what the push service judged.
            let key = device.and_then(|dev| {
                let routes = d.routes();
                let route = routes.find(&dev.app_id).ok()?;
                Some((dev, route.pushkin.memory_key(dev)?))
            });
            if let Some((dev, key)) = key {
                tracing::debug!(app_id = %dev.app_id, pushkey = redact(&dev.pushkey), "outbox: pushkey rejected");
                s.remember.push(Rejection {
                    app_id: dev.app_id.clone(),
                    pushkey: key,
                    rejected_at: since_ms.map(|t| t as Millis).unwrap_or(s.now),
                    reason: o.reason().unwrap_or_default(),
                });
            }
            s.delete.push(id);
        }
        _ => s.delete.push(id),
    }
}

/// Deletes expired claims and rejections every few seconds, in small batches
/// so that the store is never busy for long, until `stop` turns true.
pub async fn housekeeping(
    policy: DispatchConfig,
    store: Arc<dyn Store>,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        // A bounded number of batches per round; the rest waits for the next round.
        for _ in 0..100 {
            let now = now_ms();
            let e = Expiry {
                claims_before: now - policy.dedup_window.as_millis() as Millis,
                rejections_before: now - policy.rejection_ttl.as_millis() as Millis,
                batch: EXPIRY_BATCH,
            };
            match store.expire(e).await {
                Ok(n) if n > 0 => tokio::task::yield_now().await,
                Ok(_) => break,
                Err(err) => {
                    tracing::warn!(error = %err, "store housekeeping failed; retried later");
                    break;
                }
            }
        }
        let _ = tokio::time::timeout(HOUSEKEEPING_EVERY, stop.changed()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::backoff;
    use crate::config::DispatchConfig;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap_and_honours_retry_after() {
        let p = DispatchConfig {
            retry_initial_delay: Duration::from_secs(1),
            retry_max_delay: Duration::from_secs(60),
            ..DispatchConfig::default()
        };
        for _ in 0..200 {
            let first = backoff(&p, 1, None);
            assert!((Duration::from_millis(500)..=Duration::from_secs(1)).contains(&first));
            let fourth = backoff(&p, 4, None);
            assert!((Duration::from_secs(4)..=Duration::from_secs(8)).contains(&fourth));
            let late = backoff(&p, 30, None);
            assert!((Duration::from_secs(30)..=Duration::from_secs(60)).contains(&late));
        }
        assert_eq!(
            backoff(&p, 1, Some(Duration::from_secs(120))),
            Duration::from_secs(120)
        );
        assert_eq!(
            backoff(&p, 1, Some(Duration::from_secs(99_999))),
            p.max_age,
            "a Retry-After beyond max_age is cut to it"
        );
    }
}
