//! The outbox worker: retries queued pushes until they are delivered, found
//! dead, or too old; and the housekeeping that deletes expired rows.
//!
//! Entries are taken in small batches and leased (their `due_at` moves past
//! the time one attempt can take), so with PostgreSQL several gateways drain
//! one outbox without sending an entry twice, and the entries of a gateway
//! that died mid-attempt fall due again when their lease ends.
//!
//! Taken entries are a bounded stream, not a batch: at most [`CONCURRENCY`]
//! sends are in flight, each entry is settled as soon as its own send ends
//! (so a crash re-sends only what was in flight, and a hanging entry delays
//! nothing but itself), and the worker takes more as soon as there is room.
//! Takes are fair across app ids: one app id holds at most [`PER_APP`] of the
//! slots, and a take gives each app at most [`PER_TAKE`] entries (its earliest
//! due among the first [`WINDOW`]), so an app whose endpoints hang leaves the
//! others' due entries going. Apps at their share are left out of the take,
//! which then reads past their backlog: when that finds nothing it is not
//! repeated for [`RESEARCH`].
//! [`drain_once`] is one step of the same work (take, send, settle), for
//! tests; time is read from the dispatcher's [`Clock`](super::clock::Clock).
//! The worker runs under [`supervise`]: a panic is logged at ERROR,
//! counted, and the worker restarted; `/ready` fails while it is down.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use rand_core::RngCore;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use super::clock::Clock;
use super::{Dispatcher, Fate};
use crate::config::DispatchConfig;
use crate::notification::{self, Device};
use crate::pushkin::outcome::{Cause, Rejected};
use crate::pushkin::Outcome;
use crate::store::{Entry, Expiry, Fairness, Millis, Rejection, Settlement, Store, StoreError};
use crate::telemetry::metrics::Metrics;

/// Outbox sends in flight at once; also the most entries taken at once.
const CONCURRENCY: usize = 64;
/// Outbox sends of one app id in flight at once: an app whose endpoints hang
/// leaves the other half of the slots to the other apps.
const PER_APP: usize = CONCURRENCY / 2;
/// Entries of one app id per take, so that a take shares its room among the
/// apps with due entries.
const PER_TAKE: usize = 8;
/// A take ranks the first this many due entries of the apps not skipped, so
/// its cost does not grow with the backlog.
const WINDOW: usize = CONCURRENCY * 4;
/// Finding other apps' entries behind the backlog of apps at their share
/// reads that backlog: a search that found nothing is not repeated for the
/// same apps sooner than this, nor than ten times as long as it took (so that
/// it keeps the store busy a tenth of the time at most).
const RESEARCH: Duration = Duration::from_secs(1);
/// Pause between polls when nothing is due.
const IDLE: Duration = Duration::from_millis(200);
/// Pause after a store error.
const STORE_DOWN: Duration = Duration::from_secs(1);
/// Pauses before restarting a worker that panicked: the first, and the cap
/// of its doubling while it keeps panicking.
const FIRST_RESTART: Duration = Duration::from_secs(1);
const MAX_RESTART: Duration = Duration::from_secs(30);
/// A worker that ran this long before its panic restarts after [`FIRST_RESTART`] again.
const STABLE: Duration = Duration::from_secs(60);
/// Rows deleted per housekeeping statement, and the pause between rounds.
const EXPIRY_BATCH: i64 = 1000;
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(30);
/// Most statements per round: 1,000 × 1,000 rows every 30 s keeps up with
/// 33,000 settled pushes a second (each leaves a claim).
const EXPIRY_ROUND: usize = 1000;

/// How long after its creation a push gets its last attempt: a tenth of
/// `max_age` (at most a minute) before it is dropped, so that a long back-off
/// or `Retry-After` ends in one more attempt rather than in a silent drop.
pub fn last_chance(p: &DispatchConfig) -> Duration {
    p.max_age
        .saturating_sub((p.max_age / 10).min(Duration::from_secs(60)))
}

/// Delay before attempt `attempts + 1`: exponential from `retry_initial_delay`,
/// capped at `retry_max_delay`, with jitter (50–100 % of the step) so that
/// pushes failed together do not retry together; never sooner than `Retry-After`,
/// and never later than [`last_chance`] (within `max_age`, whatever the push
/// service asked for: upstream values are hostile).
pub fn backoff(p: &DispatchConfig, attempts: i64, retry_after: Option<Duration>) -> Duration {
    let exp = attempts.clamp(1, 32) as u32 - 1;
    let step = p
        .retry_initial_delay
        .saturating_mul(2u32.saturating_pow(exp))
        .min(p.retry_max_delay);
    let jittered = step.mul_f64(jitter());
    let wait = match retry_after {
        Some(r) if r > jittered => r,
        _ => jittered,
    };
    wait.min(last_chance(p))
}

/// A uniform share of the back-off step in [0.5, 1): 53 random bits as a
/// fraction (the precision of an `f64`), halved and shifted.
fn jitter() -> f64 {
    let unit = (rand_core::OsRng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    0.5 + unit / 2.0
}

/// Runs `worker` until `stop` turns true, restarting it after a panic (logged
/// at ERROR and counted in `pushgate_outbox_worker_restarts_total`). While it
/// is down, `metrics` says so and `/ready` answers 503.
pub async fn supervise<F, Fut>(metrics: Arc<Metrics>, mut stop: watch::Receiver<bool>, worker: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut pause = FIRST_RESTART;
    while !*stop.borrow() {
        metrics.outbox_worker_up(true);
        let started = tokio::time::Instant::now();
        let ended = tokio::spawn(worker()).await;
        metrics.outbox_worker_up(false);
        let Err(e) = ended else {
            // The worker returns only when told to stop.
            continue;
        };
        let what = if e.is_panic() {
            super::panic_message(e.into_panic().as_ref())
        } else {
            "cancelled".to_owned()
        };
        if started.elapsed() >= STABLE {
            pause = FIRST_RESTART;
        }
        tracing::error!(
            panic = what,
            restart_in_ms = pause.as_millis() as u64,
            "outbox worker stopped (a bug): nothing is retried until it restarts"
        );
        if tokio::time::timeout(pause, stop.changed()).await.is_ok() {
            break;
        }
        pause = pause.saturating_mul(2).min(MAX_RESTART);
        metrics.outbox_worker_restarted();
        tracing::warn!("outbox worker restarted");
    }
    metrics.outbox_worker_up(false);
}

/// One step of the worker: takes the entries due now (up to the concurrency
/// limit, at most [`PER_APP`] of one app id), sends them with bounded
/// concurrency, and settles each as its send ends. Returns how many entries
/// were taken.
pub async fn drain_once(d: &Arc<Dispatcher>, store: &Arc<dyn Store>) -> Result<usize, StoreError> {
    let fair = Fairness {
        per_app: PER_APP as i64,
        window: WINDOW as i64,
        skip_apps: Vec::new(),
    };
    let entries = take(d, &**store, CONCURRENCY, &fair).await?;
    let n = entries.len();
    sends(
        d.clone(),
        store.clone(),
        entries.into_iter().map(|e| (e, None)),
    )
    .await;
    Ok(n)
}

/// Takes up to `limit` due entries, shared among app ids as `fair` says, and
/// leases them for one attempt.
async fn take(
    d: &Dispatcher,
    store: &dyn Store,
    limit: usize,
    fair: &Fairness,
) -> Result<Vec<Entry>, StoreError> {
    let now = d.clock.now_ms();
    let lease = Millis::try_from(d.lease().as_millis()).unwrap_or(Millis::MAX);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    store
        .take_due_fair(now, now.saturating_add(lease), limit, fair)
        .await
}

/// The worker's send slots: how many entries are in flight, in all and per
/// app id.
#[derive(Default)]
struct Slots {
    held: Mutex<Held>,
    /// Woken whenever a slot is given back.
    freed: Notify,
}

#[derive(Default)]
struct Held {
    total: usize,
    apps: HashMap<String, usize>,
}

impl Slots {
    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn room(&self) -> usize {
        CONCURRENCY.saturating_sub(self.held().total)
    }

    /// The next take: up to [`PER_TAKE`] entries of each app id that has room
    /// for that many below [`PER_APP`].
    fn fairness(&self, room: usize) -> Fairness {
        let mut skip_apps: Vec<String> = self
            .held()
            .apps
            .iter()
            .filter(|(_, &n)| n + PER_TAKE > PER_APP)
            .map(|(app, _)| app.clone())
            .collect();
        skip_apps.sort();
        Fairness {
            per_app: PER_TAKE.min(room) as i64,
            window: WINDOW as i64,
            skip_apps,
        }
    }

    /// Holds a slot for an entry of `app_id` until the returned guard is dropped.
    fn hold(self: &Arc<Self>, app_id: &str) -> Slot {
        let mut held = self.held();
        held.total += 1;
        *held.apps.entry(app_id.to_owned()).or_default() += 1;
        Slot {
            slots: self.clone(),
            app_id: app_id.to_owned(),
        }
    }
}

/// One entry in flight: gives its slot back when dropped, and wakes the worker.
struct Slot {
    slots: Arc<Slots>,
    app_id: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        {
            let mut held = self.slots.held();
            held.total = held.total.saturating_sub(1);
            if let Some(n) = held.apps.get_mut(&self.app_id) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    held.apps.remove(&self.app_id);
                }
            }
        }
        self.slots.freed.notify_one();
    }
}

/// Sends taken entries, [`CONCURRENCY`] at a time, settling each as it ends;
/// each entry's slot (if the worker holds one) is given back when it is settled.
async fn sends(
    d: Arc<Dispatcher>,
    store: Arc<dyn Store>,
    entries: impl IntoIterator<Item = (Entry, Option<Slot>)>,
) {
    let (d, store) = (&d, &store);
    futures::stream::iter(entries)
        .map(|(e, guard)| {
            async move {
                let id = e.id;
                // A panic is a bug in one send: that entry falls due again when
                // its lease ends; the other sends go on.
                if let Err(p) = AssertUnwindSafe(attempt(d, &**store, e))
                    .catch_unwind()
                    .await
                {
                    d.metrics.outbox_worker_restarted();
                    tracing::error!(
                        entry = id,
                        panic = super::panic_message(p.as_ref()),
                        "outbox: a send panicked (a bug); the entry is retried when its lease ends"
                    );
                }
                drop(guard);
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<()>()
        .await;
}

/// Attempts one entry and settles its result at once.
async fn attempt(d: &Dispatcher, store: &dyn Store, e: Entry) {
    let max_age = Millis::try_from(d.policy.max_age.as_millis()).unwrap_or(Millis::MAX);
    let routes = d.routes();
    let fate = match notification::parse(e.body.as_bytes(), 1) {
        Ok(n) => match n.devices.first() {
            None => Some((
                Fate::Pushed(Outcome::failed(Cause::Local(
                    "outbox entry without a device".into(),
                ))),
                None,
            )),
            Some(dev) if d.clock.now_ms().saturating_sub(e.created_at) > max_age => {
                d.metrics.dropped(&d.app_label(&dev.app_id));
                None
            }
            Some(dev) => {
                let dev = dev.clone();
                // The send holds only the prepared push, not the notification.
                let fate = d.push_device(&routes, Arc::new(n), 0, "outbox").await;
                Some((fate, Some(dev)))
            }
        },
        Err(err) => {
            tracing::error!(entry = e.id, error = %err, "outbox: unreadable entry deleted");
            Some((
                Fate::Pushed(Outcome::failed(Cause::Local(
                    "unreadable outbox entry".into(),
                ))),
                None,
            ))
        }
    };
    let mut s = Settlement {
        now: d.clock.now_ms(),
        ..Settlement::default()
    };
    match fate {
        None => {
            tracing::warn!(
                entry = e.id,
                attempts = e.attempts,
                "outbox: push dropped after dispatch.max_age without delivery"
            );
            s.delete.push(e.id);
        }
        Some((fate, dev)) => {
            settle_attempt(d, &mut s, e.id, e.attempts + 1, &fate, dev.as_ref());
            // A retry that would fall due after the push's last chance is
            // moved to it (once: past it, the retry is left to be dropped).
            let last = Millis::try_from(last_chance(&d.policy).as_millis())
                .map_or(Millis::MAX, |l| e.created_at.saturating_add(l));
            for r in &mut s.reschedule {
                if r.1 > last && s.now < last {
                    r.1 = last;
                }
            }
        }
    }
    if let Err(err) = store.settle(s).await {
        tracing::error!(entry = e.id, error = %err, "store unavailable: outbox result not recorded; the entry falls due again");
    }
}

/// Runs the outbox worker until `stop` turns true: takes due entries whenever
/// fewer than [`CONCURRENCY`] sends are in flight (fairly across app ids, see
/// [`Slots::fairness`]), and lets each batch taken run on its own, so the next
/// take does not wait for the slowest send.
pub async fn run(d: Arc<Dispatcher>, store: Arc<dyn Store>, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Slots::default());
    let mut running = JoinSet::new();
    let mut store_down = false;
    // The skipped apps of the last take that found nothing, and until when
    // not to search past them again.
    let mut fruitless: Option<(Vec<String>, tokio::time::Instant)> = None;
    while !*stop.borrow() {
        let room = slots.room();
        let fair = slots.fairness(room);
        let searched = |(skipped, until): &(Vec<String>, tokio::time::Instant)| {
            *skipped == fair.skip_apps && tokio::time::Instant::now() < *until
        };
        let pause = if room == 0
            || (!fair.skip_apps.is_empty() && fruitless.as_ref().is_some_and(searched))
        {
            // Full, or nothing found lately beside the apps at their share:
            // wait for a send to end (it wakes us), or a short while.
            let _ = tokio::time::timeout(IDLE, slots.freed.notified()).await;
            continue;
        } else {
            let started = tokio::time::Instant::now();
            match take(&d, &*store, room, &fair).await {
                Ok(entries) if entries.is_empty() => {
                    store_down = false;
                    if !fair.skip_apps.is_empty() {
                        let wait = RESEARCH.max(started.elapsed().saturating_mul(10));
                        fruitless = Some((fair.skip_apps, started + wait));
                    }
                    IDLE
                }
                Ok(entries) => {
                    store_down = false;
                    fruitless = None;
                    // Held before the next take, which must see them.
                    let held: Vec<_> = entries
                        .into_iter()
                        .map(|e| {
                            let slot = slots.hold(&e.app_id);
                            (e, Some(slot))
                        })
                        .collect();
                    running.spawn(sends(d.clone(), store.clone(), held));
                    Duration::ZERO
                }
                Err(e) => {
                    if !store_down {
                        tracing::error!(error = %e, "store unavailable: outbox paused until it answers");
                    }
                    store_down = true;
                    STORE_DOWN
                }
            }
        };
        // Finished batches are collected as we go.
        while running.try_join_next().is_some() {}
        if pause == IDLE {
            // Nothing due, or only entries of apps at their share: a send
            // that ends may make room for them.
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => {}
                _ = slots.freed.notified() => {}
            }
        } else if !pause.is_zero() {
            let _ = tokio::time::timeout(pause, stop.changed()).await;
        }
    }
    // Sends in flight finish (each bounded by the upstream timeout) and are settled.
    while running.join_next().await.is_some() {}
}

/// Records the fate of one attempt of outbox entry `id` (its `attempts`-th).
pub(super) fn settle_attempt(
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
                // The pushkey's `Display` is its redacted form.
                tracing::debug!(app_id = %dev.app_id, pushkey = dev.pushkey.to_string(), "outbox: pushkey rejected");
                s.remember.push(Rejection {
                    app_id: dev.app_id.as_str().to_owned(),
                    pushkey: key.expose().to_owned(),
                    rejected_at: super::rejected_at(*since_ms, s.now),
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
    clock: Clock,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        // A bounded number of batches per round; the rest waits for the next round.
        for _ in 0..EXPIRY_ROUND {
            let now = clock.now_ms();
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

    /// Waits until `cond` holds; false after 10 s of it.
    async fn eventually(cond: impl Fn() -> bool) -> bool {
        for _ in 0..1000 {
            if cond() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn a_panicking_worker_is_counted_down_meanwhile_and_restarted() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let metrics = Arc::new(crate::telemetry::metrics::Metrics::new());
        let (stop, rx) = tokio::sync::watch::channel(false);
        let starts = Arc::new(AtomicUsize::new(0));
        let worker_stop = rx.clone();
        let counted = starts.clone();
        // The first worker panics when told to, not after a while.
        let go = Arc::new(tokio::sync::Notify::new());
        let panic_now = go.clone();
        let supervisor = tokio::spawn(super::supervise(metrics.clone(), rx, move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            let mut stop = worker_stop.clone();
            let go = panic_now.clone();
            async move {
                if n == 0 {
                    go.notified().await;
                    panic!("a bug in the worker");
                }
                let _ = stop.wait_for(|s| *s).await;
            }
        }));
        assert!(eventually(|| starts.load(Ordering::SeqCst) == 1).await);
        assert!(
            metrics.is_outbox_worker_up(),
            "up while the first worker runs"
        );
        go.notify_one();
        assert!(
            eventually(|| !metrics.is_outbox_worker_up()).await,
            "down after the panic, until the restart"
        );
        assert!(eventually(|| starts.load(Ordering::SeqCst) == 2).await);
        assert!(eventually(|| metrics.is_outbox_worker_up()).await);
        let text = metrics.render();
        assert!(
            text.lines()
                .any(|l| l == "pushgate_outbox_worker_restarts_total 1"),
            "{text}"
        );
        assert!(text.lines().any(|l| l == "pushgate_outbox_worker_up 1"));
        stop.send(true).expect("supervisor listens");
        supervisor.await.expect("supervisor ends");
        assert!(!metrics.is_outbox_worker_up());
        assert_eq!(starts.load(Ordering::SeqCst), 2, "no restart after stop");
    }

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
            Duration::from_secs(59 * 60),
            "a Retry-After beyond max_age (1 h) is cut to its last chance, a minute before"
        );
    }

    #[test]
    fn backoff_never_passes_max_age_whatever_the_upstream_says() {
        for (max_age, last) in [(3600, 3540), (10, 9), (1, 0)] {
            let p = DispatchConfig {
                max_age: Duration::from_secs(max_age),
                ..DispatchConfig::default()
            };
            assert_eq!(super::last_chance(&p).as_secs(), last);
            for attempts in [i64::MIN, -1, 0, 1, 40, i64::MAX] {
                for r in [
                    None,
                    Some(Duration::MAX),
                    Some(Duration::from_secs(u64::MAX)),
                ] {
                    let b = backoff(&p, attempts, r);
                    assert!(b <= super::last_chance(&p), "{b:?}");
                    assert!(std::time::Instant::now().checked_add(b).is_some());
                }
            }
        }
    }
}
