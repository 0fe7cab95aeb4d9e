//! One `/notify` request, from the devices to the answer.
//!
//! 1. Rejection memory: devices whose pushkey is known dead are answered
//!    rejected at once (unless `pushkey_ts` says the app registered it again).
//! 2. Claims: devices already pushed for this event are not pushed again.
//! 3. Every remaining device is sent concurrently.
//! 4. Answer budget: at `dispatch.answer_within`, devices still in flight or
//!    failed temporarily go to the outbox, in the same transaction that
//!    settles the claims and remembers new rejections; only then is the
//!    request answered. Devices still in flight are followed to their end
//!    after the answer and their outbox entries updated.
//!
//! Without a store, steps 1, 2 and 4 are skipped: the request waits for every
//! device and a temporary failure cannot be queued (the answer is a 502).

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::join_all;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

use super::dedup::{self, Claim, Waited, Window};
use super::outbox::backoff;
use super::{Answer, Dispatcher, Fate, INFLIGHT_LIMIT_REASON};
use crate::notification::{self, Device, Notification};
use crate::pushkin::Outcome;
use crate::routing::Routes;
use crate::store::{now_ms, DeviceKey, Millis, NewEntry, Rejection, Settlement, Store};

pub(super) async fn run(d: Arc<Dispatcher>, n: Arc<Notification>, request_id: String) -> Answer {
    let started = Instant::now();
    let store = d.store.clone();
    let now = now_ms();
    let count = n.devices.len();
    let mut fates: Vec<Option<Fate>> = vec![None; count];
    let mut settlement = Settlement {
        now,
        ..Settlement::default()
    };

    // In-flight requests finish on the apps they started with, whatever a reload does.
    let routes = d.routes();
    for dev in &n.devices {
        if let Ok(route) = routes.find(&dev.app_id) {
            d.metrics.routed(&route.key);
        }
    }

    let mut claims = vec![Claim::None; count];
    if let Some(store) = &store {
        consult_memory(&**store, &n, &mut fates, &mut settlement, &request_id).await;
        let window = Window {
            now,
            lease_until: now + d.lease().as_millis() as Millis,
            settled_before: now - d.policy.dedup_window.as_millis() as Millis,
        };
        claims = dedup::claim_all(&**store, &n, &fates, &window, &request_id).await;
    }
    for (i, c) in claims.iter().enumerate() {
        if matches!(c, Claim::Twin | Claim::Settled) {
            fates[i] = Some(Fate::Duplicate);
        }
    }
    for (i, f) in fates.iter().enumerate() {
        if let Some(f) = f {
            d.record(&routes, &request_id, &n.devices[i], f);
        }
    }

    // Send everything undecided at once; results arrive on `rx` in completion order.
    let to_send: Vec<usize> = (0..count).filter(|&i| fates[i].is_none()).collect();
    let deadline = started + d.policy.answer_within;
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Fate)>();
    {
        let (d, routes, n) = (d.clone(), routes.clone(), n.clone());
        let (claims, request_id) = (claims.clone(), request_id.clone());
        let to_send = to_send.clone();
        let tracker = d.after_answer.clone();
        let span = tracing::Span::current();
        let send_all = async move {
            join_all(to_send.into_iter().map(|i| {
                let tx = tx.clone();
                let (d, routes, n, claims, request_id) = (&d, &routes, &n, &claims, &request_id);
                async move {
                    let fate = send_one(d, routes, n, &claims[i], i, deadline, request_id).await;
                    let _ = tx.send((i, fate));
                }
            }))
            .await;
        };
        tracker.spawn(send_all.instrument(span));
    }

    let mut waiting = to_send.len();
    while waiting > 0 {
        // Without a store nothing can be queued: wait for all (each pushkin bounds its own time).
        let next = if store.is_some() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(next) => next,
                Err(_) => break,
            }
        } else {
            rx.recv().await
        };
        let Some((i, fate)) = next else { break };
        fates[i] = Some(fate);
        waiting -= 1;
    }

    let mut answer = Answer::default();
    // Outbox entries, with the device index of those still in flight.
    let mut in_flight: Vec<Option<usize>> = Vec::new();
    for i in 0..count {
        let dev = &n.devices[i];
        let claim = &claims[i];
        let fate = match &fates[i] {
            // Another request is sending it: it is not ours to queue.
            None if matches!(claim, Claim::Waiting(_)) => Fate::Contended,
            None => {
                settlement.enqueue.push(entry(
                    &n,
                    dev,
                    now,
                    now + d.lease().as_millis() as Millis,
                    "still in flight when the answer was due",
                ));
                in_flight.push(Some(i));
                if let Some(k) = claim.key() {
                    settlement.settle_claims.push(k.clone());
                }
                continue;
            }
            Some(f) => f.clone(),
        };
        if let Fate::Pushed(o) = &fate {
            if let Some(k) = claim.key() {
                settlement.settle_claims.push(k.clone());
            }
            let queue = Queue {
                d: &d,
                has_store: store.is_some(),
            };
            queue.record(&n, dev, o, &mut settlement, &mut in_flight, &mut answer);
        }
        if fate == Fate::Contended {
            answer.unqueued += 1;
        }
        answer.tally(dev, &fate);
    }

    let Some(store) = store else { return answer };
    let queued = settlement.enqueue.len();
    let queued_apps: Vec<String> = settlement
        .enqueue
        .iter()
        .map(|e| e.app_id.clone())
        .collect();
    let claims_only = settlement.enqueue.is_empty()
        && settlement.remember.is_empty()
        && settlement.forget.is_empty();
    if claims_only && !settlement.is_empty() {
        // The common case, every device delivered: marking the claims settled
        // need not hold the answer up (a duplicate arriving before it is written
        // waits for the claim to settle). Queued pushes and changes to the
        // rejection memory are written before the answer, so the next request sees them.
        let request_id = request_id.clone();
        d.after_answer.spawn(
            async move {
                if let Err(e) = store.settle(settlement).await {
                    tracing::error!(request_id, error = %e, "store unavailable: settled claims not recorded");
                }
            }
            .instrument(tracing::Span::current()),
        );
    } else if !settlement.is_empty() {
        match store.settle(settlement).await {
            Ok(ids) => {
                answer.queued = queued;
                for e in &queued_apps {
                    d.metrics.queued(&d.app_label(e));
                }
                let follow: HashMap<usize, i64> = in_flight
                    .iter()
                    .zip(ids)
                    .filter_map(|(i, id)| i.map(|i| (i, id)))
                    .collect();
                if !follow.is_empty() {
                    let follow = follow_up(d.clone(), store, n.clone(), rx, follow);
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

/// Sends one device, first waiting for another request's claim on it if there is one.
async fn send_one(
    d: &Dispatcher,
    routes: &Routes,
    n: &Notification,
    claim: &Claim,
    i: usize,
    deadline: Instant,
    request_id: &str,
) -> Fate {
    let dev = &n.devices[i];
    if let (Claim::Waiting(key), Some(store)) = (claim, &d.store) {
        let waited =
            dedup::wait_for(&**store, key, d.lease(), d.policy.dedup_window, deadline).await;
        match waited {
            Waited::TookOver => {}
            Waited::Settled => {
                d.record(routes, request_id, dev, &Fate::Duplicate);
                return Fate::Duplicate;
            }
            Waited::Timeout => {
                d.record(routes, request_id, dev, &Fate::Contended);
                return Fate::Contended;
            }
        }
    }
    d.send(routes, n, dev, request_id).await
}

/// Looks up remembered rejections for every device in one query.
async fn consult_memory(
    store: &dyn Store,
    n: &Notification,
    fates: &mut [Option<Fate>],
    settlement: &mut Settlement,
    request_id: &str,
) {
    let mut keys: Vec<DeviceKey> = n
        .devices
        .iter()
        .map(|d| DeviceKey {
            app_id: d.app_id.clone(),
            pushkey: d.pushkey.clone(),
        })
        .collect();
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
        for (i, dev) in n.devices.iter().enumerate() {
            if dev.app_id != r.app_id || dev.pushkey != r.pushkey {
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
                fates[i] = Some(Fate::Remembered {
                    reason: r.reason.clone(),
                });
            }
        }
    }
}

struct Queue<'a> {
    d: &'a Dispatcher,
    has_store: bool,
}

impl Queue<'_> {
    /// Remembers a rejection, queues a temporary failure (or counts it as unqueued without a store).
    fn record(
        &self,
        n: &Notification,
        dev: &Device,
        o: &Outcome,
        settlement: &mut Settlement,
        in_flight: &mut Vec<Option<usize>>,
        answer: &mut Answer,
    ) {
        let now = settlement.now;
        match o {
            Outcome::Rejected { reason, since_ms } => settlement.remember.push(Rejection {
                app_id: dev.app_id.clone(),
                pushkey: dev.pushkey.clone(),
                rejected_at: since_ms.map(|t| t as Millis).unwrap_or(now),
                reason: reason.clone(),
            }),
            Outcome::Transient {
                reason,
                retry_after,
            } if self.has_store => {
                let due = now + backoff(&self.d.policy, 1, *retry_after).as_millis() as Millis;
                settlement.enqueue.push(entry(n, dev, now, due, reason));
                in_flight.push(None);
            }
            Outcome::Transient { reason, .. } => {
                answer.unqueued += 1;
                if reason == INFLIGHT_LIMIT_REASON {
                    answer.overloaded += 1;
                }
            }
            Outcome::Delivered | Outcome::Failed { .. } => {}
        }
    }
}

fn entry(n: &Notification, dev: &Device, now: Millis, due_at: Millis, why: &str) -> NewEntry {
    NewEntry {
        app_id: dev.app_id.clone(),
        pushkey: dev.pushkey.clone(),
        body: notification::to_wire(n, dev),
        created_at: now,
        due_at,
        attempts: 1,
        last_error: Some(why.to_owned()),
    }
}

/// After the answer: records how the pushes still in flight ended.
async fn follow_up(
    d: Arc<Dispatcher>,
    store: Arc<dyn Store>,
    n: Arc<Notification>,
    mut rx: mpsc::UnboundedReceiver<(usize, Fate)>,
    mut follow: HashMap<usize, i64>,
) {
    while let Some((i, fate)) = rx.recv().await {
        let Some(id) = follow.remove(&i) else {
            continue;
        };
        let mut s = Settlement {
            now: now_ms(),
            ..Settlement::default()
        };
        super::outbox::record(&d, &mut s, id, 1, &fate, n.devices.get(i));
        if let Err(e) = store.settle(s).await {
            // The entry stays leased and falls due again: delivered at least once.
            tracing::warn!(error = %e, "store unavailable: the outbox will retry a push that may have been delivered");
        }
        if follow.is_empty() {
            break;
        }
    }
}
