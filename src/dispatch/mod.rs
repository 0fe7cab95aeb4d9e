//! Delivery: fan-out of one notification to all its devices, and the
//! guarantees of design §4 around it.
//!
//! - [`request`]: one `/notify` request — rejection memory, de-duplication
//!   claims, parallel sends, the answer budget, and the settlement written to
//!   the store before the answer;
//! - [`outbox`]: the background worker that retries queued pushes, and the
//!   housekeeping of expired rows;
//! - [`capacity`]: the outbox caps (entries and bytes, in all and per app);
//! - [`breaker`]: the rejection breaker that holds token-dead answers back
//!   when an app's tokens die too fast (a configuration mistake);
//! - this module: the dispatcher itself, the per-device send and its log line.
//!
//! Without a store the dispatcher is stateless: it waits for every device and
//! any temporary failure makes the request a 502 so that the homeserver retries.

mod breaker;
mod capacity;
mod dedup;
pub mod outbox;
mod request;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::FutureExt;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::DispatchConfig;
use crate::notification::{Device, Notification};
use crate::pushkin::outcome::Cause;
use crate::pushkin::Outcome;
use crate::routing::{Route, RouteError, Routes};
use crate::store::{now_ms, Store};
use crate::telemetry::metrics::{Metrics, UNROUTED};
use crate::telemetry::redact;
use breaker::Breakers;

pub struct Dispatcher {
    /// Replaced whole on reload; each request keeps the snapshot it started with.
    routes: RwLock<Arc<Routes>>,
    store: Option<Arc<dyn Store>>,
    policy: DispatchConfig,
    metrics: Arc<Metrics>,
    /// Work that goes on after a request is answered (following pushes still
    /// in flight), waited for at shutdown so that its results are recorded.
    after_answer: TaskTracker,
    breakers: Breakers,
    capacity: capacity::Capacity,
}

/// What the gateway did for one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// The pushkin's result (the push service's answer, or the pushkin's own decision).
    Pushed(Outcome),
    /// No configured app serves this app_id: rejected, but not remembered (a config matter).
    Unroutable(RouteError),
    /// Rejected from the rejection memory, without asking the push service.
    Remembered { reason: String },
    /// Already delivered (or queued) for this event: not sent again.
    Duplicate,
    /// Another request is still sending this same push and did not finish in time:
    /// neither sent nor queued here, so the homeserver must retry.
    Contended,
}

impl Fate {
    pub fn is_rejected(&self) -> bool {
        matches!(
            self,
            Fate::Pushed(Outcome::Rejected(_)) | Fate::Unroutable(_) | Fate::Remembered { .. }
        )
    }

    /// Short name for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Fate::Pushed(o) => o.kind(),
            Fate::Unroutable(_) | Fate::Remembered { .. } => "rejected",
            Fate::Duplicate => "duplicate",
            Fate::Contended => "temporary",
        }
    }

    /// The `outcome` label of `pushgate_outcomes_total`: finer than [`Fate::kind`].
    fn metric_label(&self) -> &'static str {
        match self {
            Fate::Pushed(o) => o.kind(),
            Fate::Unroutable(_) => "unroutable",
            Fate::Remembered { .. } => "remembered",
            Fate::Duplicate => "duplicate",
            Fate::Contended => "contended",
        }
    }
}

/// What one request ends with.
#[derive(Debug, Default)]
pub struct Answer {
    /// Pushkeys to give back in `rejected`, once each, in device order.
    pub rejected: Vec<String>,
    /// Devices that failed temporarily and could not be queued: the request must be retried (502).
    pub unqueued: usize,
    /// Devices queued in the outbox (delivery goes on after the answer).
    pub queued: usize,
    pub delivered: usize,
    pub failed: usize,
    pub duplicates: usize,
    /// Of `unqueued`, those refused because their app was at its in-flight limit
    /// or the outbox was full.
    pub overloaded: usize,
    /// Of `overloaded`, those refused because an outbox cap was reached.
    pub outbox_full: usize,
}

impl Answer {
    /// Collects the rejected pushkeys and counts, in device order.
    fn tally(&mut self, device: &Device, fate: &Fate) {
        if fate.is_rejected() && !self.rejected.contains(&device.pushkey) {
            self.rejected.push(device.pushkey.clone());
        }
        match fate {
            Fate::Pushed(Outcome::Delivered) => self.delivered += 1,
            Fate::Pushed(Outcome::Failed(_)) => self.failed += 1,
            Fate::Duplicate => self.duplicates += 1,
            _ => {}
        }
    }
}

impl Dispatcher {
    pub fn new(
        routes: Routes,
        store: Option<Arc<dyn Store>>,
        policy: DispatchConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        Dispatcher {
            routes: RwLock::new(Arc::new(routes)),
            store,
            breakers: Breakers::new(policy.rejection_breaker.clone()),
            capacity: capacity::Capacity::new(&policy),
            policy,
            metrics,
            after_answer: TaskTracker::new(),
        }
    }

    /// The apps in force now.
    pub fn routes(&self) -> Arc<Routes> {
        match self.routes.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts new apps in force for the requests that start from now on, and
    /// resets the rejection breakers (the operator fixed the config, or says so).
    pub fn replace_routes(&self, routes: Routes) {
        let new = Arc::new(routes);
        match self.routes.write() {
            Ok(mut r) => *r = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
        self.breakers.reset(&self.metrics);
    }

    /// The apps whose rejection breaker is open, for `/ready`.
    pub fn rejection_breakers_open(&self) -> Vec<String> {
        self.breakers.open(now_ms(), &self.metrics)
    }

    /// Waits (up to `within`) for the work still running after answers; true when all finished.
    pub async fn finish_after_answer_work(&self, within: Duration) -> bool {
        self.after_answer.close();
        tokio::time::timeout(within, self.after_answer.wait())
            .await
            .is_ok()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The app a device belongs to, as metrics name it: the config key, never
    /// the client-supplied app id (which would let anyone add series).
    pub fn app_label(&self, app_id: &str) -> String {
        self.routes()
            .find(app_id)
            .map(|r| r.key.clone())
            .unwrap_or_else(|_| UNROUTED.to_owned())
    }

    pub fn policy(&self) -> &DispatchConfig {
        &self.policy
    }

    /// The store, for the workers the gateway starts beside the dispatcher.
    pub fn store(&self) -> Option<&Arc<dyn Store>> {
        self.store.as_ref()
    }

    /// Whether the store (when there is one) answers within `within`, its last
    /// write succeeded and the outbox worker runs; the error says why not. For `/ready`: the API asks, only dispatch talks to the store.
    pub async fn store_ready(&self, within: Duration) -> Result<(), String> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        if !self.metrics.is_outbox_worker_up() {
            return Err("the outbox worker is not running (restarting after a panic): queued pushes are not retried".into());
        }
        match tokio::time::timeout(within, store.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "the store did not answer within {}",
                humantime::format_duration(within)
            )),
        }
    }

    /// Reads the store's sizes into the metrics (at scrape time, not on the request path).
    pub async fn read_store_metrics(&self, within: Duration) {
        let Some(store) = &self.store else { return };
        let stats = match tokio::time::timeout(within, store.stats()).await {
            Ok(Ok(s)) => Some(s),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "metrics: the store did not answer");
                None
            }
            Err(_) => None,
        };
        self.metrics.store_read(stats, now_ms());
    }

    /// Delivers `n` to all its devices and says what to answer.
    ///
    /// Runs in its own task: a homeserver that hangs up mid-request does not
    /// cut the work short (claims and outbox entries are always settled).
    pub async fn dispatch(self: &Arc<Self>, n: Notification, request_id: String) -> Answer {
        let this = self.clone();
        let run = async move { request::run(this, Arc::new(n), request_id).await };
        match tokio::spawn(run.instrument(tracing::Span::current())).await {
            Ok(answer) => answer,
            Err(e) => {
                tracing::error!(error = %e, "dispatch task failed (a bug)");
                Answer {
                    unqueued: 1,
                    ..Answer::default()
                }
            }
        }
    }

    /// Sends to one device through its app's pushkin, and logs and counts the result.
    async fn send(&self, routes: &Routes, n: &Notification, d: &Device, request_id: &str) -> Fate {
        match routes.find(&d.app_id) {
            Err(e) => {
                let fate = Fate::Unroutable(e);
                self.log_and_count(UNROUTED, request_id, d, &fate);
                fate
            }
            Ok(route) => self.send_on(route, n, d, request_id).await,
        }
    }

    /// [`Dispatcher::send`] on a route already found.
    async fn send_on(&self, route: &Route, n: &Notification, d: &Device, request_id: &str) -> Fate {
        let outcome = match route.inflight.try_acquire() {
            Err(_) => {
                self.metrics.inflight_limit_hit(&route.key);
                Outcome::temporary(Cause::InflightLimit)
            }
            Ok(_permit) => {
                let span = tracing::info_span!(
                    "dispatch",
                    app = %route.key,
                    pushkin = route.pushkin.type_name(),
                    outcome = tracing::field::Empty
                );
                // A panic in one send is one push tried again later, not a lost
                // request or a dead outbox worker.
                let sent = std::panic::AssertUnwindSafe(route.pushkin.dispatch(n, d))
                    .catch_unwind()
                    .instrument(span.clone())
                    .await;
                let outcome = sent.unwrap_or_else(|_| {
                    self.metrics.send_panicked();
                    tracing::error!(request_id, app = %route.key, "a send panicked (a bug): the push is tried again");
                    Outcome::temporary(Cause::Panicked)
                });
                span.record("outcome", outcome.kind());
                outcome
            }
        };
        let outcome = self
            .breakers
            .judge(&route.key, &d.pushkey, outcome, now_ms(), &self.metrics);
        let fate = Fate::Pushed(outcome);
        self.log_and_count(&route.key, request_id, d, &fate);
        fate
    }

    /// Every outcome is counted and logged once; `app` is the config key.
    fn log_and_count(&self, app: &str, request_id: &str, d: &Device, fate: &Fate) {
        self.metrics.outcome(app, fate.metric_label());
        if let Fate::Pushed(Outcome::Failed(cause)) = fate {
            self.metrics.failure(app, cause.failure_code());
        }
        log_fate(request_id, d, fate);
    }

    /// How long a claim or an outbox lease lasts: past it, the holder is presumed dead.
    fn lease(&self) -> Duration {
        self.policy.answer_within + self.policy.upstream_timeout + Duration::from_secs(5)
    }
}

/// When a token stopped being valid, for the rejection memory: the push
/// service's time when it gives one (APNs 410), never later than now (the
/// value comes from outside: a huge one would outlive every re-registration).
fn rejected_at(since_ms: Option<u64>, now: crate::store::Millis) -> crate::store::Millis {
    since_ms
        .and_then(|t| crate::store::Millis::try_from(t).ok())
        .map_or(now, |t| t.min(now))
}

/// The log line of one outcome, with a redacted pushkey.
fn log_fate(request_id: &str, d: &Device, fate: &Fate) {
    let debug_only = matches!(
        fate,
        Fate::Pushed(Outcome::Delivered | Outcome::Rejected(_))
            | Fate::Duplicate
            | Fate::Unroutable(_)
            | Fate::Remembered { .. }
    );
    // The redaction allocates: not for a line nobody writes.
    if debug_only && !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let pushkey = redact(&d.pushkey);
    let app_id = d.app_id.as_str();
    let outcome = fate.kind();
    match fate {
        Fate::Pushed(Outcome::Delivered) | Fate::Duplicate => {
            tracing::debug!(request_id, app_id, pushkey, outcome, "device")
        }
        // Counted on the request's INFO line (`rejected`, `failed`): one INFO
        // line per request, whatever its number of devices.
        Fate::Pushed(o @ Outcome::Rejected(_)) => {
            let reason = o.reason().unwrap_or_default();
            tracing::debug!(request_id, app_id, pushkey, outcome, reason, "device")
        }
        Fate::Unroutable(e) => {
            let reason = e.to_string();
            tracing::debug!(request_id, app_id, pushkey, outcome, reason, "device")
        }
        Fate::Remembered { reason } => tracing::debug!(
            request_id,
            app_id,
            pushkey,
            outcome,
            reason,
            remembered = true,
            "device"
        ),
        Fate::Pushed(Outcome::Failed(cause)) => {
            let reason = cause.to_string();
            let code = cause.failure_code();
            // A configuration matter fails every push of the app: the operator must hear of it.
            if code == "configuration" {
                tracing::error!(request_id, app_id, pushkey, outcome, code, reason, "device")
            } else {
                tracing::warn!(request_id, app_id, pushkey, outcome, code, reason, "device")
            }
        }
        Fate::Pushed(Outcome::Temporary { cause, retry_after }) => tracing::warn!(
            request_id,
            app_id,
            pushkey,
            outcome,
            reason = %cause,
            retry_after_s = retry_after.map(|r| r.as_secs()),
            "device"
        ),
        Fate::Contended => tracing::warn!(
            request_id,
            app_id,
            pushkey,
            outcome,
            reason = "the same push is still being sent by another request",
            "device"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::rejected_at;

    /// The outbox's split form (the notification once, each device apart)
    /// joins back to what the whole wire form reads as.
    #[test]
    fn the_shared_wire_form_joins_back_to_the_notification() {
        let body = br#"{"notification":{"event_id":"$e","room_id":"!r","type":"m.room.message",
            "sender":"","counts":{"unread":2},"content":{"body":"hi","msgtype":"m.text"},
            "devices":[{"app_id":"a","pushkey":"k1","pushkey_ts":5,"data":{"x":1}},{"app_id":"a","pushkey":"k2"}]}}"#;
        let n = crate::notification::parse(body, 10).expect("valid");
        for d in &n.devices {
            let whole = crate::notification::to_wire(&n, d);
            let joined = crate::store::join_wire(
                &crate::notification::to_wire_shared(&n),
                &crate::notification::device_to_wire(d),
            );
            let a: serde_json::Value = serde_json::from_str(&whole).expect("JSON");
            let b: serde_json::Value = serde_json::from_str(&joined).expect("JSON");
            assert_eq!(a, b);
        }
    }

    #[test]
    fn rejected_at_trusts_the_service_only_up_to_now() {
        assert_eq!(rejected_at(None, 1_000), 1_000);
        assert_eq!(rejected_at(Some(900), 1_000), 900);
        assert_eq!(rejected_at(Some(5_000), 1_000), 1_000, "not in the future");
        assert_eq!(rejected_at(Some(u64::MAX), 1_000), 1_000, "no wrap-around");
    }
}
