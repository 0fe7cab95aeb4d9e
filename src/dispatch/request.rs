//! One `/notify` request, from the devices to the answer.
//!
//! Each device is a [`DeviceTask`] that carries its route (looked up once),
//! its rejection-memory key, its de-duplication claim and its fate through
//! these steps:
//! 1. Routing: an unknown or ambiguous app id, or pusher data the app's
//!    pushkin can never serve, is answered rejected at once — without a claim
//!    and never remembered (it is the request's own doing).
//! 2. Rejection memory: devices whose token is known dead are answered
//!    rejected at once (unless `pushkey_ts` says the app registered it again).
//! 3. Claims: devices already pushed for this event are not pushed again.
//!    (Steps 2 and 3 ask the store at the same time; a device step 2 answers
//!    gives back the claim step 3 took.)
//! 4. Every remaining device is sent concurrently.
//! 5. Answer budget: at `dispatch.answer_within`, devices still in flight or
//!    failed temporarily go to the outbox, in the same transaction that
//!    settles the claims and remembers new rejections; only then is the
//!    request answered. Devices still in flight are followed to their end
//!    after the answer and their outbox entries updated.
//!
//! Without a store, steps 2, 3 and 5 are skipped: the request waits for every
//! device and a temporary failure cannot be queued (the answer is a 502).

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::join_all;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

use super::dedup::{self, Claim, Waited, Window};
use super::outbox::backoff;
use super::{Answer, Dispatcher, Fate};
use crate::ids::{AppId, PushKey};
use crate::notification::{self, Device, Notification};
use crate::pushkin::outcome::{Cause, Rejected};
use crate::pushkin::Outcome;
use crate::routing::Route;
use crate::store::{ClaimKey, DeviceKey, Millis, NewEntry, Rejection, Settlement, Store};
use crate::telemetry::metrics::UNROUTED;

/// One device of the request on its way to an answer.
struct DeviceTask {
    /// `None` when the app id has no route (the fate says why).
    route: Option<Arc<Route>>,
    /// Where the rejection memory keeps this device's token.
    memory_key: Option<PushKey>,
    claim: Claim,
    /// `None` while undecided (to be sent, or still in flight at the answer).
    fate: Option<Fate>,
}

impl DeviceTask {
    /// Step 1: the route, and the decisions that need no send.
    /// `remembering`: whether there is a rejection memory to look the device up in.
    fn route(routes: &crate::routing::Routes, dev: &Device, remembering: bool) -> DeviceTask {
        let (route, fate) = match routes.find(&dev.app_id) {
            Err(e) => (None, Some(Fate::Unroutable(e))),
            Ok(route) => {
                let fate = route
                    .pushkin
                    .unusable(dev)
                    .map(|u| Fate::Pushed(Outcome::unusable(u)));
                (Some(route.clone()), fate)
            }
        };
        DeviceTask {
            memory_key: route
                .as_ref()
                .filter(|_| remembering)
                .and_then(|r| r.pushkin.memory_key(dev)),
            route,
            claim: Claim::None,
            fate,
        }
    }

    /// The app as metrics and logs name it.
    fn app(&self) -> &str {
        self.route.as_ref().map_or(UNROUTED, |r| r.key.as_str())
    }
}

pub(super) async fn run(d: Arc<Dispatcher>, n: Arc<Notification>, request_id: String) -> Answer {
    let started = Instant::now();
    let store = d.store.clone();
    let now = d.clock.now_ms();
    let mut settlement = Settlement {
        now,
        ..Settlement::default()
    };

    // In-flight requests finish on the apps they started with, whatever a reload does.
    let routes = d.routes();
    let mut tasks: Vec<DeviceTask> = n
        .devices
        .iter()
        .map(|dev| DeviceTask::route(&routes, dev, store.is_some()))
        .collect();
    for t in &tasks {
        if let Some(route) = &t.route {
            d.metrics.routed(&route.key);
        }
    }

    if let Some(store) = &store {
        let window = Window {
            now,
            lease_until: now + d.lease().as_millis() as Millis,
            settled_before: now - d.policy.dedup_window.as_millis() as Millis,
        };
        // The memory and the claims are asked at once (on SQLite, served
        // together in one group); a device the memory answers gives its
        // claim back, as if it had never taken it.
        let decided: Vec<bool> = tasks.iter().map(|t| t.fate.is_some()).collect();
        let (claims, ()) = tokio::join!(
            dedup::claim_all(&**store, &n, &decided, &window, &request_id),
            consult_memory(&**store, &n, &mut tasks, &mut settlement, &request_id),
        );
        for (t, claim) in tasks.iter_mut().zip(claims) {
            match (&t.fate, claim) {
                (Some(_), Claim::Granted(k)) => settlement.release_claims.push(k),
                (Some(_), _) => {}
                (None, claim) => {
                    if matches!(claim, Claim::Twin | Claim::Settled) {
                        t.fate = Some(Fate::Duplicate);
                    }
                    t.claim = claim;
                }
            }
        }
    }
    for (t, dev) in tasks.iter().zip(&n.devices) {
        if let Some(f) = &t.fate {
            d.log_and_count(t.app(), &request_id, dev, f);
        }
    }

    // Send everything undecided at once; results arrive on `rx` in completion order.
    let to_send: Vec<(usize, Arc<Route>, Option<ClaimKey>)> = tasks
        .iter()
        .enumerate()
        .filter(|(_, t)| t.fate.is_none())
        .filter_map(|(i, t)| {
            // Only a claim another request holds matters to the send (it waits for it).
            let waiting = match &t.claim {
                Claim::Waiting(k) => Some(k.clone()),
                _ => None,
            };
            Some((i, t.route.clone()?, waiting))
        })
        .collect();
    let deadline = started + d.policy.answer_within;
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Fate)>();
    {
        // Each send owns its handle on the notification and lets it go once its
        // push is prepared: sends still in flight after the answer hold only
        // their prepared requests.
        let shared_id: Arc<str> = request_id.as_str().into();
        let sends: Vec<_> = to_send
            .into_iter()
            .map(|(i, route, waiting)| {
                let (d, n, request_id, tx) = (d.clone(), n.clone(), shared_id.clone(), tx.clone());
                async move {
                    let fate =
                        send_one(&d, &route, n, waiting.as_ref(), i, deadline, &request_id).await;
                    let _ = tx.send((i, fate));
                }
            })
            .collect();
        drop(tx);
        // Driven here until they end or the answer is due: most requests need
        // no task and no wake-up of their own for their sends. Those still in
        // flight at the deadline go on in a task of their own.
        let mut sends = Box::pin(join_all(sends));
        // Without a store nothing can be queued: wait for all (each pushkin bounds its own time).
        let ended = match &store {
            Some(_) => tokio::time::timeout_at(deadline, sends.as_mut())
                .await
                .is_ok(),
            None => {
                sends.as_mut().await;
                true
            }
        };
        if !ended {
            d.after_answer
                .spawn(sends.instrument(tracing::Span::current()));
        }
    }

    // What ended by now; the rest is still in flight (its results come later on `rx`).
    while let Ok((i, fate)) = rx.try_recv() {
        tasks[i].fate = Some(fate);
    }

    let wire = WireParts::new(&n);
    let room = match &store {
        Some(store) => has_room(&d, &**store, &routes, &n, &tasks, &wire).await,
        None => false,
    };
    let queueing = Queueing {
        has_store: store.is_some(),
        room,
        wire: &wire,
    };
    let (mut answer, in_flight) = decide(&d, &n, &tasks, &mut settlement, &queueing);

    let Some(store) = store else { return answer };
    let queued = settlement.enqueue.len();
    let queued_apps: Vec<AppId> = settlement
        .enqueue
        .iter()
        .map(|e| AppId::from(e.app_id.as_str()))
        .collect();
    let claims_only = settlement.enqueue.is_empty()
        && settlement.remember.is_empty()
        && settlement.forget.is_empty();
    if claims_only && !settlement.is_empty() {
        // The common case, every device delivered: marking the claims settled
        // need not hold the answer up (a duplicate arriving before it is written
        // waits for the claim to settle). Queued pushes and changes to the
        // rejection memory are written before the answer, so the next request sees them.
        d.settle_later.add(
            &store,
            &d.after_answer,
            settlement.now,
            settlement.settle_claims,
            settlement.release_claims,
        );
    } else if !settlement.is_empty() {
        match store.settle(settlement).await {
            Ok(ids) => {
                answer.queued = queued;
                for e in &queued_apps {
                    d.metrics.queued(&d.app_label(e));
                }
                let follow: HashMap<usize, (i64, Device)> = in_flight
                    .iter()
                    .zip(ids)
                    .filter_map(|(i, id)| {
                        let i = (*i)?;
                        Some((i, (id, n.devices.get(i)?.clone())))
                    })
                    .collect();
                if !follow.is_empty() {
                    let follow = follow_up(d.clone(), store, rx, follow);
                    d.after_answer
                        .spawn(follow.instrument(tracing::Span::current()));
                }
            }
            Err(e) => {
                tracing::error!(request_id, error = %e, "store unavailable: temporary failures cannot be queued");
                answer.unqueued += queued;
            }
        }
    }
    answer
}

/// The answer, and what the store must learn, from the device states alone.
/// Returns, per new outbox entry, the device index of those still in flight.
fn decide(
    d: &Dispatcher,
    n: &Notification,
    tasks: &[DeviceTask],
    settlement: &mut Settlement,
    q: &Queueing<'_>,
) -> (Answer, Vec<Option<usize>>) {
    let now = settlement.now;
    let mut answer = Answer::default();
    let mut in_flight: Vec<Option<usize>> = Vec::new();
    for (i, (t, dev)) in tasks.iter().zip(&n.devices).enumerate() {
        let fate = match &t.fate {
            // Another request is sending it: it is not ours to queue.
            None if matches!(t.claim, Claim::Waiting(_)) => Fate::Contended,
            // No result and nowhere to queue it (without a store every send is
            // awaited, so only a bug gets here): the homeserver must retry.
            None if !q.has_store => {
                answer.unqueued += 1;
                continue;
            }
            None => {
                settlement.enqueue.push(entry(
                    q.wire,
                    dev,
                    now,
                    now + d.lease().as_millis() as Millis,
                    "still in flight when the answer was due",
                ));
                in_flight.push(Some(i));
                if let Some(k) = t.claim.key() {
                    settlement.settle_claims.push(k.clone());
                }
                continue;
            }
            Some(f) => f.clone(),
        };
        if let Fate::Pushed(o) = &fate {
            let unqueued = matches!(o, Outcome::Temporary { .. }) && !(q.has_store && q.room);
            match t.claim.key() {
                // Neither sent nor queued: a retry of this request must send it.
                Some(k) if unqueued => settlement.release_claims.push(k.clone()),
                // Whatever the push service said, this device's push is finished
                // (or queued): a retry of this request is answered as a duplicate.
                Some(k) => settlement.settle_claims.push(k.clone()),
                None => {}
            }
            match o {
                Outcome::Rejected(Rejected::TokenDead { since_ms, .. }) => {
                    if let Some(key) = &t.memory_key {
                        settlement.remember.push(Rejection {
                            app_id: dev.app_id.as_str().to_owned(),
                            pushkey: key.expose().to_owned(),
                            rejected_at: super::rejected_at(*since_ms, now),
                            reason: o.reason().unwrap_or_default(),
                        });
                    }
                }
                Outcome::Temporary { cause, retry_after } if q.has_store && q.room => {
                    let due = now + backoff(&d.policy, 1, *retry_after).as_millis() as Millis;
                    settlement
                        .enqueue
                        .push(entry(q.wire, dev, now, due, &cause.to_string()));
                    in_flight.push(None);
                }
                Outcome::Temporary { cause, .. } => {
                    answer.unqueued += 1;
                    if q.has_store {
                        // The outbox is full: the homeserver is asked to come back later.
                        answer.overloaded += 1;
                        answer.outbox_full += 1;
                        d.metrics.outbox_full(t.app());
                    } else if *cause == Cause::InflightLimit {
                        answer.overloaded += 1;
                    }
                }
                // Rejected for the request's own data (never remembered), delivered or failed.
                Outcome::Rejected(Rejected::Unusable(_))
                | Outcome::Delivered
                | Outcome::Failed(_) => {}
            }
        }
        if fate == Fate::Contended {
            answer.unqueued += 1;
        }
        answer.tally(dev, &fate);
    }
    (answer, in_flight)
}

/// Sends one device, first waiting for the claim another request holds on it (`waiting`) if there is one.
async fn send_one(
    d: &Dispatcher,
    route: &Route,
    n: Arc<Notification>,
    waiting: Option<&ClaimKey>,
    i: usize,
    deadline: Instant,
    request_id: &str,
) -> Fate {
    if let (Some(key), Some(store), Some(dev)) = (waiting, &d.store, n.devices.get(i)) {
        let waited = dedup::wait_for(
            &**store,
            &d.clock,
            key,
            d.lease(),
            d.policy.dedup_window,
            deadline,
        )
        .await;
        match waited {
            Waited::TookOver => {}
            Waited::Settled => {
                d.log_and_count(&route.key, request_id, dev, &Fate::Duplicate);
                return Fate::Duplicate;
            }
            Waited::Timeout => {
                d.log_and_count(&route.key, request_id, dev, &Fate::Contended);
                return Fate::Contended;
            }
        }
    }
    d.push_on_route(route, n, i, request_id).await
}

/// Looks up remembered rejections for every undecided device in one query.
async fn consult_memory(
    store: &dyn Store,
    n: &Notification,
    tasks: &mut [DeviceTask],
    settlement: &mut Settlement,
    request_id: &str,
) {
    let mut keys: Vec<DeviceKey> = tasks
        .iter()
        .zip(&n.devices)
        .filter(|(t, _)| t.fate.is_none())
        .filter_map(|(t, dev)| {
            Some(DeviceKey {
                app_id: dev.app_id.as_str().to_owned(),
                pushkey: t.memory_key.as_ref()?.expose().to_owned(),
            })
        })
        .collect();
    if keys.is_empty() {
        return;
    }
    keys.sort();
    keys.dedup();
    let found = match store.rejections(&keys).await {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(request_id, error = %e, "store unavailable: rejection memory not consulted");
            return;
        }
    };
    for r in found {
        for (t, dev) in tasks.iter_mut().zip(&n.devices) {
            if t.fate.is_some()
                || dev.app_id.as_str() != r.app_id
                || t.memory_key.as_ref().map(PushKey::expose) != Some(r.pushkey.as_str())
            {
                continue;
            }
            // The app registered this same token again after it was found dead.
            let renewed = dev
                .pushkey_ts
                .is_some_and(|ts| (ts as i64).saturating_mul(1000) > r.rejected_at);
            if renewed {
                let key = DeviceKey {
                    app_id: r.app_id.clone(),
                    pushkey: r.pushkey.clone(),
                };
                if !settlement.forget.contains(&key) {
                    settlement.forget.push(key);
                }
            } else {
                t.fate = Some(Fate::Remembered {
                    reason: r.reason.clone(),
                });
            }
        }
    }
}

/// How this request may queue: with a store, and with room in the outbox.
struct Queueing<'a> {
    has_store: bool,
    room: bool,
    wire: &'a WireParts<'a>,
}

/// The request's notification as the outbox stores it: the notification
/// without devices, serialised once and shared by every entry of the request,
/// and each device apart. Built only when something is queued.
struct WireParts<'a> {
    n: &'a Notification,
    shared: std::sync::OnceLock<Arc<str>>,
}

impl<'a> WireParts<'a> {
    fn new(n: &'a Notification) -> Self {
        WireParts {
            n,
            shared: std::sync::OnceLock::new(),
        }
    }

    fn shared(&self) -> Arc<str> {
        self.shared
            .get_or_init(|| Arc::from(notification::to_wire_shared(self.n)))
            .clone()
    }
}

/// Whether the outbox has room for this request's temporary failures (those
/// still in flight at the answer are always queued: they are being sent).
async fn has_room(
    d: &Dispatcher,
    store: &dyn Store,
    routes: &crate::routing::Routes,
    n: &Notification,
    tasks: &[DeviceTask],
    wire: &WireParts<'_>,
) -> bool {
    let mut wanted: Vec<(String, i64)> = Vec::new();
    let mut shared = 0;
    for (t, dev) in tasks.iter().zip(&n.devices) {
        if let Some(Fate::Pushed(Outcome::Temporary { .. })) = &t.fate {
            let size = notification::device_to_wire(dev).len() as i64;
            shared = wire.shared().len() as i64;
            wanted.push((t.app().to_owned(), size));
        }
    }
    if wanted.is_empty() {
        return true;
    }
    d.capacity.admit(store, routes, &wanted, shared).await
}

fn entry(wire: &WireParts<'_>, dev: &Device, now: Millis, due_at: Millis, why: &str) -> NewEntry {
    NewEntry {
        app_id: dev.app_id.as_str().to_owned(),
        pushkey: dev.pushkey.expose().to_owned(),
        body: notification::device_to_wire(dev),
        shared: Some(wire.shared()),
        created_at: now,
        due_at,
        attempts: 1,
        last_error: Some(why.to_owned()),
    }
}

/// After the answer: records how the pushes still in flight ended (`follow`:
/// their outbox entries and devices, by device index).
async fn follow_up(
    d: Arc<Dispatcher>,
    store: Arc<dyn Store>,
    mut rx: mpsc::UnboundedReceiver<(usize, Fate)>,
    mut follow: HashMap<usize, (i64, Device)>,
) {
    while let Some((i, fate)) = rx.recv().await {
        let Some((id, dev)) = follow.remove(&i) else {
            continue;
        };
        let mut s = Settlement {
            now: d.clock.now_ms(),
            ..Settlement::default()
        };
        super::outbox::settle_attempt(&d, &mut s, id, 1, &fate, Some(&dev));
        if let Err(e) = store.settle(s).await {
            // The entry stays leased and falls due again: delivered at least once.
            tracing::warn!(error = %e, "store unavailable: the outbox will retry a push that may have been delivered");
        }
        if follow.is_empty() {
            break;
        }
    }
}
