//! Delivery: fan-out of one notification to all its devices, and the
//! guarantees of design §4 around it.
//!
//! - [`request`]: one `/notify` request — rejection memory, de-duplication
//!   claims, parallel sends, the answer budget, and the settlement written to
//!   the store before the answer;
//! - [`settle_later`]: the settled claims of the requests answered at one
//!   moment, written together a tick after their answers;
//! - [`outbox`]: the background worker that retries queued pushes, and the
//!   housekeeping of expired rows;
//! - [`capacity`]: the outbox caps (entries and bytes, in all and per app);
//! - [`clock`]: the time the delivery core reads — request, claims, outbox,
//!   housekeeping and breakers (injectable, for tests);
//! - [`breaker`]: the rejection breaker that holds token-dead answers back
//!   when an app's tokens die too fast (a configuration mistake);
//! - this module: the dispatcher itself, the per-device send and its log line.
//!
//! Without a store the dispatcher is stateless: it waits for every device and
//! any temporary failure makes the request a 502 so that the homeserver retries.

mod breaker;
mod capacity;
pub mod clock;
mod dedup;
mod finish;
pub mod outbox;
mod request;
mod settle_later;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::DispatchConfig;
use crate::ids::{AppId, PushKey};
use crate::notification::{Device, Notification};
use crate::pushkin::outcome::Cause;
use crate::pushkin::Outcome;
use crate::routing::{Route, RouteError, Routes};
use crate::store::Store;
use crate::telemetry::metrics::{Metrics, UNROUTED};
use breaker::Breakers;

/// What a caught panic said (its `&str` or `String` payload), for its log line.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

pub struct Dispatcher {
    /// Replaced whole on reload; each request keeps the snapshot it started with.
    routes: RwLock<Arc<Routes>>,
    store: Option<Arc<dyn Store>>,
    policy: DispatchConfig,
    metrics: Arc<Metrics>,
    /// Work that goes on after a request is answered (following pushes still
    /// in flight), waited for at shutdown so that its results are recorded.
    after_answer: TaskTracker,
    /// Settled claims waiting a moment for others to be written with.
    settle_later: settle_later::SettleLater,
    breakers: Breakers,
    capacity: capacity::Capacity,
    clock: clock::Clock,
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
    pub fn label(&self) -> &'static str {
        match self {
            Fate::Pushed(o) => o.label(),
            Fate::Unroutable(_) | Fate::Remembered { .. } => "rejected",
            Fate::Duplicate => "duplicate",
            Fate::Contended => "temporary",
        }
    }

    /// The `outcome` label of `pushgate_outcomes_total`: finer than [`Fate::label`].
    fn metric_label(&self) -> &'static str {
        match self {
            Fate::Pushed(o) => o.label(),
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
    pub rejected: Vec<PushKey>,
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
            settle_later: Default::default(),
            clock: clock::Clock::system(),
        }
    }

    /// The same dispatcher reading time from `clock` (a manual one in tests).
    pub fn with_clock(mut self, clock: clock::Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The time this dispatcher reads (for the background tasks that go with it).
    pub fn clock(&self) -> &clock::Clock {
        &self.clock
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
        self.breakers.open(self.clock.now_ms(), &self.metrics)
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
    pub fn app_label(&self, app_id: &AppId) -> String {
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
        self.metrics.store_read(stats, self.clock.now_ms());
    }

    /// Delivers `n` to all its devices and says what to answer.
    ///
    /// A homeserver that hangs up mid-request does not cut the work short
    /// (claims and outbox entries are always settled): if the caller is
    /// dropped, the rest runs in a task of its own ([`finish::Finished`]).
    pub async fn dispatch(self: &Arc<Self>, n: Notification, request_id: String) -> Answer {
        let this = self.clone();
        let run = async move { request::run(this, Arc::new(n), request_id).await };
        let run = AssertUnwindSafe(run.instrument(tracing::Span::current())).catch_unwind();
        match finish::Finished::new(run, &self.after_answer).await {
            Some(Ok(answer)) => answer,
            panicked => {
                let why = match &panicked {
                    Some(Err(p)) => panic_message(p.as_ref()),
                    _ => String::new(),
                };
                tracing::error!(error = why, "dispatch panicked (a bug)");
                Answer {
                    unqueued: 1,
                    ..Answer::default()
                }
            }
        }
    }

    /// Sends device `i` of `n` through its app's pushkin, and logs and counts the result.
    async fn push_device(
        &self,
        routes: &Routes,
        n: Arc<Notification>,
        i: usize,
        request_id: &str,
    ) -> Fate {
        let found = match n.devices.get(i) {
            Some(d) => routes.find(&d.app_id).map_err(|e| (e, identity(d))),
            None => return Fate::Pushed(Outcome::failed(Cause::Local("no such device".into()))),
        };
        match found {
            Err((e, d)) => {
                let fate = Fate::Unroutable(e);
                self.log_and_count(UNROUTED, request_id, &d, &fate);
                fate
            }
            Ok(route) => self.push_on_route(route, n, i, request_id).await,
        }
    }

    /// [`Dispatcher::push_device`] on a route already found. The notification is let
    /// go as soon as the push is prepared: a send that goes on after the
    /// answer holds only the prepared request (and the device's app id and
    /// pushkey, for its log line).
    async fn push_on_route(
        &self,
        route: &Route,
        n: Arc<Notification>,
        i: usize,
        request_id: &str,
    ) -> Fate {
        let Some(d) = n.devices.get(i) else {
            return Fate::Pushed(Outcome::failed(Cause::Local("no such device".into())));
        };
        let who = identity(d);
        let span = tracing::info_span!(
            "dispatch",
            app = %route.key,
            pushkin = route.pushkin.type_name(),
            outcome = tracing::field::Empty
        );
        // A panic in one send is one push tried again later, not a lost
        // request or a dead outbox worker.
        let panicked = || {
            self.metrics.send_panicked();
            tracing::error!(request_id, app = %route.key, "a send panicked (a bug): the push is tried again");
            Outcome::temporary(Cause::Panicked)
        };
        let (permit, prepared) = match route.inflight.try_acquire() {
            Err(_) => {
                self.metrics.inflight_limit_hit(&route.key);
                (None, Err(Outcome::temporary(Cause::InflightLimit)))
            }
            Ok(permit) => {
                let prepared = AssertUnwindSafe(route.pushkin.prepare(&n, d, false))
                    .catch_unwind()
                    .instrument(span.clone())
                    .await
                    .unwrap_or_else(|_| Err(panicked()));
                (Some(permit), prepared)
            }
        };
        drop(n);
        let outcome = match prepared {
            Ok(push) => AssertUnwindSafe(route.pushkin.send(push, None))
                .catch_unwind()
                .instrument(span.clone())
                .await
                .unwrap_or_else(|_| panicked()),
            Err(outcome) => outcome,
        };
        drop(permit);
        span.record("outcome", outcome.label());
        let outcome = self.breakers.judge(
            &route.key,
            &who.pushkey,
            outcome,
            self.clock.now_ms(),
            &self.metrics,
        );
        let fate = Fate::Pushed(outcome);
        route.outcomes.count(fate.metric_label());
        self.count_failure_and_log(&route.key, request_id, &who, &fate);
        fate
    }

    /// Every outcome is counted and logged once; `app` is the config key.
    fn log_and_count(&self, app: &str, request_id: &str, d: &Device, fate: &Fate) {
        self.metrics.outcome(app, fate.metric_label());
        self.count_failure_and_log(app, request_id, d, fate);
    }

    /// [`Dispatcher::log_and_count`] after the outcome was counted.
    fn count_failure_and_log(&self, app: &str, request_id: &str, d: &Device, fate: &Fate) {
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

/// What the log line and the rejection breaker need of a device: its app id
/// and pushkey, without the pusher's data.
fn identity(d: &Device) -> Device {
    Device {
        app_id: d.app_id.clone(),
        pushkey: d.pushkey.clone(),
        pushkey_ts: d.pushkey_ts,
        data: serde_json::Map::new(),
        tweaks: serde_json::Map::new(),
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
    // Its `Display` is the redacted form; recorded as a string, as before.
    let pushkey = d.pushkey.to_string();
    let app_id = d.app_id.as_str();
    let outcome = fate.label();
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
    use super::*;

    /// Issue 15 item 3: a send still in flight (as after the answer) holds
    /// its prepared request, not the notification it was built from.
    #[tokio::test]
    async fn a_send_in_flight_holds_the_prepared_push_not_the_notification() {
        let fake = testkit::unifiedpush::FakeUnifiedPush::start().await;
        fake.set_behaviour("t", testkit::unifiedpush::Behaviour::Stall);
        let yaml = "store: none\napps:\n  up:\n    type: unifiedpush\n    allow_private_endpoints: true\n    allow_http_endpoints: true\n";
        let (config, _) = crate::config::Config::from_yaml(yaml, "test").expect("config");
        let metrics = Arc::new(Metrics::new());
        let crate::config::AppKind::UnifiedPush(up) = &config.apps[0].kind else {
            panic!("a UnifiedPush app")
        };
        let settings = crate::pushkin::Settings {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            proxy: None,
            metrics: metrics.upstream(crate::telemetry::metrics::Service::UnifiedPush, "up"),
        };
        let mut routes = Routes::default();
        routes.add(Route {
            key: "up".into(),
            pushkin: crate::pushkin::unifiedpush::build(up, &settings).expect("pushkin"),
            inflight: Arc::new(tokio::sync::Semaphore::new(10)),
            outcomes: metrics.app_outcomes("up"),
        });
        let d = Arc::new(Dispatcher::new(
            routes,
            None,
            config.dispatch.clone(),
            metrics,
        ));
        let body = serde_json::json!({"notification": {
            "event_id": "$e", "room_id": "!r", "type": "m.room.message",
            "content": {"body": "x".repeat(10_000), "msgtype": "m.text"},
            "devices": [{"app_id": "up", "pushkey": fake.endpoint("t")}]
        }});
        let n =
            Arc::new(crate::notification::parse(body.to_string().as_bytes(), 10).expect("valid"));
        let held = Arc::downgrade(&n);
        let sending = tokio::spawn({
            let d = d.clone();
            async move {
                let routes = d.routes();
                let route = routes.find(&"up".into()).expect("route").clone();
                d.push_on_route(&route, n, 0, "r").await
            }
        });
        let received = fake.wait_for(1, Duration::from_secs(10)).await;
        assert_eq!(received.len(), 1, "the push is in flight");
        assert!(
            held.upgrade().is_none(),
            "the notification was let go once the push was prepared"
        );
        assert!(
            !sending.is_finished(),
            "the send still waits for its answer"
        );
        sending.abort();
    }

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
