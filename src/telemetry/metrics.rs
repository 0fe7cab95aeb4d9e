//! Prometheus metrics: Sygnal's families under Sygnal's names (so existing
//! dashboards keep working) and pushgate's own under `pushgate_`.
//!
//! One [`Metrics`] per gateway (not a process-wide registry), so that tests
//! running several gateways in one process read exact counts. Label values
//! are config keys, service names and status codes only — never a pushkey or
//! a client-supplied app id, which would let a homeserver grow the series
//! without bound.

use std::sync::OnceLock;
use std::time::Instant;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::store::Stats;

/// The label Sygnal gives `sygnal_requests_in_flight` for `/notify`.
const NOTIFY_RESOURCE: &str = "V1NotifyHandler";

/// The buckets of Sygnal's histograms (Python prometheus_client's defaults), in seconds.
const SYGNAL_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Every `outcome` label value of `pushgate_outcomes_total`.
const OUTCOMES: [&str; 8] = [
    "delivered",
    "rejected",
    "remembered",
    "failed",
    "temporary",
    "duplicate",
    "contended",
    "unroutable",
];

/// The `pushkin` label of devices no configured app serves.
pub const UNROUTED: &str = "(none)";

/// The push services, as Sygnal names them in metric names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Apns,
    Gcm,
    WebPush,
    UnifiedPush,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::Apns => "apns",
            Service::Gcm => "gcm",
            Service::WebPush => "webpush",
            Service::UnifiedPush => "unifiedpush",
        }
    }
}

/// The per-service families: request time, requests in flight, status codes.
struct ServiceFamilies {
    request_time: Histogram,
    active: IntGauge,
    status_codes: IntCounterVec,
}

pub struct Metrics {
    registry: Registry,
    notifications_received: IntCounter,
    devices_received: IntCounter,
    per_pushkin_type: IntCounterVec,
    status_codes: IntCounterVec,
    notify_time: HistogramVec,
    /// The `200` series of `status_codes` and `notify_time`, resolved at the
    /// first `200` (not before: the series appears with its first count) so
    /// that the common answer costs no label lookup.
    notify_ok: OnceLock<(IntCounter, Histogram)>,
    /// `requests_in_flight` for `/notify`, resolved once.
    notify_in_flight: IntGauge,
    inflight_limit_drop: IntCounterVec,
    apns: ServiceFamilies,
    gcm: ServiceFamilies,
    webpush: ServiceFamilies,
    unifiedpush: ServiceFamilies,
    outcomes: IntCounterVec,
    outbox_queued: IntCounterVec,
    outbox_dropped: IntCounterVec,
    overload: IntCounterVec,
    token_refreshes: IntCounterVec,
    connections: IntCounterVec,
    store_up: IntGauge,
    store_rows: IntGaugeVec,
    outbox_oldest: Gauge,
    failures: IntCounterVec,
    breaker_open: IntGaugeVec,
    breaker_trips: IntCounterVec,
    send_panics: IntCounter,
    /// Read from the log queues at scrape time (they are process-wide).
    log_lines_dropped: IntCounter,
    outbox_full: IntCounterVec,
    outbox_bytes: IntGauge,
    inbound_connections: IntGauge,
    inbound_refused: IntCounterVec,
    outbox_worker_restarts: IntCounter,
    outbox_worker_up: IntGauge,
    /// Sygnal's FCM connection-slot families: time waiting, requests waiting.
    gcm_queue_time: Histogram,
    gcm_pending: IntGauge,
    /// Sygnal's: when each APNs app's client certificate expires (Unix seconds).
    client_cert_expiry: IntGaugeVec,
}

/// Registers every family up front, so a scrape shows each one (at zero)
/// before its first event, as dashboards and alerts expect.
struct Builder {
    registry: Registry,
}

impl Builder {
    fn register<C: prometheus::core::Collector + Clone + 'static>(&self, c: C) -> C {
        // Names are constants of this file: a clash is a bug caught by the unit test.
        if let Err(e) = self.registry.register(Box::new(c.clone())) {
            tracing::error!(error = %e, "metric registration failed (a bug)");
        }
        c
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::new(name, help).expect("valid metric name"))
    }

    fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::new(name, help).expect("valid metric name"))
    }

    fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.register(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn histogram(&self, name: &str, help: &str) -> Histogram {
        self.register(
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(SYGNAL_BUCKETS.to_vec()))
                .expect("valid metric"),
        )
    }

    fn service(&self, s: Service, status_prefix: &str) -> ServiceFamilies {
        self.service_named(s, "sygnal", status_prefix)
    }

    /// A service's families, the timing ones under `prefix` (Sygnal's name for
    /// the services Sygnal has, ours for the others).
    fn service_named(&self, s: Service, prefix: &str, status_prefix: &str) -> ServiceFamilies {
        let n = s.name();
        ServiceFamilies {
            request_time: self.histogram(
                &format!("{prefix}_{n}_request_time"),
                &format!("Time taken to send HTTP request to {n}"),
            ),
            active: self.gauge(
                &format!("{prefix}_active_{n}_requests"),
                &format!("Number of {n} requests in flight"),
            ),
            status_codes: self.counter_vec(
                &format!("{status_prefix}_{n}_status_codes_total"),
                &format!("Number of HTTP response status codes received from {n}"),
                &["pushkin", "code"],
            ),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let b = Builder {
            registry: Registry::new(),
        };
        let requests_in_flight = b.gauge_vec(
            "sygnal_requests_in_flight",
            "Number of HTTP requests in flight",
            &["resource"],
        );
        let m = Metrics {
            notifications_received: b.counter(
                "sygnal_notifications_received_total",
                "Number of notification pokes received",
            ),
            devices_received: b.counter(
                "sygnal_notifications_devices_received_total",
                "Number of devices been asked to push",
            ),
            per_pushkin_type: b.counter_vec(
                "sygnal_per_pushkin_type_total",
                "Number of pushes sent via each type of pushkin",
                &["pushkin"],
            ),
            status_codes: b.counter_vec(
                "sygnal_pushgateway_status_codes_total",
                "HTTP Response Codes given on the Push Gateway API",
                &["code"],
            ),
            notify_time: b.register(
                HistogramVec::new(
                    HistogramOpts::new(
                        "sygnal_notify_time",
                        "Time taken to handle /notify push gateway request",
                    )
                    .buckets(SYGNAL_BUCKETS.to_vec()),
                    &["code"],
                )
                .expect("valid metric"),
            ),
            notify_ok: OnceLock::new(),
            notify_in_flight: requests_in_flight.with_label_values(&[NOTIFY_RESOURCE]),
            inflight_limit_drop: b.counter_vec(
                "sygnal_inflight_request_limit_drop_total",
                "Number of notifications dropped because the number of inflight requests \
                 exceeded the configured inflight_request_limit.",
                &["pushkin"],
            ),
            apns: b.service(Service::Apns, "sygnal"),
            gcm: b.service(Service::Gcm, "sygnal"),
            // Sygnal has no status-code family for Web Push: ours is prefixed pushgate_.
            webpush: b.service(Service::WebPush, "pushgate"),
            // Sygnal has no UnifiedPush pushkin: all of its families are ours.
            unifiedpush: b.service_named(Service::UnifiedPush, "pushgate", "pushgate"),
            outcomes: b.counter_vec(
                "pushgate_outcomes_total",
                "Device outcomes, per app and kind (delivered, rejected, remembered, \
                 failed, temporary, duplicate, contended, unroutable)",
                &["pushkin", "outcome"],
            ),
            outbox_queued: b.counter_vec(
                "pushgate_outbox_queued_total",
                "Pushes written to the outbox for delivery after the answer",
                &["pushkin"],
            ),
            outbox_dropped: b.counter_vec(
                "pushgate_outbox_dropped_total",
                "Outbox pushes dropped undelivered after dispatch.max_age",
                &["pushkin"],
            ),
            overload: b.counter_vec(
                "pushgate_limit_hits_total",
                "Requests answered 429 because an in-flight limit was reached",
                &["limit"],
            ),
            token_refreshes: b.counter_vec(
                "pushgate_token_refreshes_total",
                "Upstream credentials minted or fetched: APNs provider JWTs, FCM OAuth tokens",
                &["pushkin", "token", "result"],
            ),
            connections: b.counter_vec(
                "pushgate_upstream_connections_opened_total",
                "Connections opened to push services",
                &["pushkin"],
            ),
            store_up: b.gauge(
                "pushgate_store_up",
                "1 when the store answered at the last scrape, else 0",
            ),
            store_rows: b.gauge_vec(
                "pushgate_store_rows",
                "Rows in the store: outbox (queue depth), rejections (remembered dead \
                 pushkeys), claims (de-duplication records)",
                &["table"],
            ),
            outbox_oldest: b.register(
                Gauge::new(
                    "pushgate_outbox_oldest_age_seconds",
                    "Age of the oldest push waiting in the outbox (0 when empty)",
                )
                .expect("valid metric name"),
            ),
            failures: b.counter_vec(
                "pushgate_failures_total",
                "Pushes that failed for good while the pusher stays, per app and reason \
                 (endpoint_refused, endpoint_not_allowed, payload_too_large, bad_request, \
                 configuration, breaker_open, other)",
                &["pushkin", "reason"],
            ),
            breaker_open: b.gauge_vec(
                "pushgate_rejection_breaker_open",
                "1 while the app's rejection breaker holds token-dead answers back",
                &["pushkin"],
            ),
            breaker_trips: b.counter_vec(
                "pushgate_rejection_breaker_trips_total",
                "Times the app's rejection breaker opened",
                &["pushkin"],
            ),
            send_panics: b.counter(
                "pushgate_send_panics_total",
                "Sends that panicked (a bug); each push was treated as a temporary failure",
            ),
            log_lines_dropped: b.counter(
                "pushgate_log_lines_dropped_total",
                "Log lines dropped because the log writer was behind (its queue full)",
            ),
            outbox_full: b.counter_vec(
                "pushgate_outbox_full_total",
                "Temporary failures not queued because an outbox cap was reached \
                 (their requests were answered 429)",
                &["pushkin"],
            ),
            outbox_bytes: b.gauge(
                "pushgate_outbox_bytes",
                "Characters of outbox bodies and of the notifications they share",
            ),
            inbound_connections: b.gauge(
                "pushgate_inbound_connections",
                "Connections open on the API listeners",
            ),
            inbound_refused: b.counter_vec(
                "pushgate_inbound_connections_refused_total",
                "Connections closed at accept because a connection cap was reached \
                 (max_connections, max_connections_per_ip)",
                &["limit"],
            ),
            outbox_worker_restarts: b.counter(
                "pushgate_outbox_worker_restarts_total",
                "Panics in the outbox worker (each followed by a restart) or in one of its \
                 sends (that entry retried when its lease ends)",
            ),
            outbox_worker_up: b.gauge(
                "pushgate_outbox_worker_up",
                "1 while the outbox worker runs; 0 without a store, or while it restarts",
            ),
            gcm_queue_time: b.histogram(
                "sygnal_gcm_queue_time",
                "Time taken waiting for a connection to GCM",
            ),
            gcm_pending: b.gauge(
                "sygnal_pending_gcm_requests",
                "Number of GCM requests waiting for a connection",
            ),
            client_cert_expiry: b.gauge_vec(
                "sygnal_client_cert_expiry",
                "The expiry date of the client certificate in seconds since the epoch",
                &["pushkin"],
            ),
            registry: b.registry,
        };
        // process_cpu_seconds_total, process_resident_memory_bytes,
        // process_open_fds, process_max_fds …: Sygnal's dashboard plots them.
        #[cfg(target_os = "linux")]
        if let Err(e) = m.registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        )) {
            tracing::error!(error = %e, "process metrics registration failed (a bug)");
        }
        for limit in ["max_connections", "max_connections_per_ip"] {
            m.inbound_refused.with_label_values(&[limit]);
        }
        for limit in ["global", "app", "outbox"] {
            m.overload.with_label_values(&[limit]);
        }
        m.outcomes.with_label_values(&[UNROUTED, "unroutable"]);
        let info = IntGaugeVec::new(
            Opts::new("pushgate_build_info", "The running version"),
            &["version"],
        )
        .expect("valid metric");
        info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let _ = m.registry.register(Box::new(info));
        m
    }

    /// The exposition, in Prometheus text format 0.0.4.
    pub fn render(&self) -> String {
        let dropped = super::queue::dropped_lines();
        let seen = self.log_lines_dropped.get();
        if dropped > seen {
            self.log_lines_dropped.inc_by(dropped - seen);
        }
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "metrics encoding failed (a bug)");
        }
        String::from_utf8(buf).unwrap_or_default()
    }

    /// A `/notify` request arrived; the guard counts it in flight until dropped.
    pub fn notify_started(&self) -> InFlight {
        let g = self.notify_in_flight.clone();
        g.inc();
        InFlight(g)
    }

    /// A `/notify` request was answered with `code` after `started`.
    pub fn notify_answered(&self, code: u16, started: Instant) {
        let elapsed = started.elapsed().as_secs_f64();
        if code == 200 {
            let (count, time) = self.notify_ok.get_or_init(|| {
                (
                    self.status_codes.with_label_values(&["200"]),
                    self.notify_time.with_label_values(&["200"]),
                )
            });
            count.inc();
            time.observe(elapsed);
            return;
        }
        // Not `to_string`: this runs for every request.
        let mut code_text = itoa::Buffer::new();
        let code = code_text.format(code);
        self.status_codes.with_label_values(&[code]).inc();
        self.notify_time.with_label_values(&[code]).observe(elapsed);
    }

    /// A valid notification with `devices` devices was received.
    pub fn notification_received(&self, devices: usize) {
        self.notifications_received.inc();
        self.devices_received.inc_by(devices as u64);
    }

    /// A device of a request was handed to the pushkin of `app` (Sygnal's count).
    pub fn routed(&self, app: &str) {
        self.per_pushkin_type.with_label_values(&[app]).inc();
    }

    /// The final outcome of one device attempt.
    pub fn outcome(&self, app: &str, outcome: &str) {
        self.outcomes.with_label_values(&[app, outcome]).inc();
    }

    /// The `pushgate_outcomes_total` series of `app`, resolved once for its
    /// route (they exist from the app's configuration on: see [`Metrics::upstream`]).
    pub fn app_outcomes(&self, app: &str) -> AppOutcomes {
        AppOutcomes {
            series: OUTCOMES.map(|o| self.outcomes.with_label_values(&[app, o])),
            family: self.outcomes.clone(),
            app: app.to_owned(),
        }
    }

    /// A push failed for good; `reason` is one of a small fixed set of codes.
    pub fn failure(&self, app: &str, reason: &str) {
        self.failures.with_label_values(&[app, reason]).inc();
    }

    /// The rejection breaker of `app` opened (`true`) or closed.
    pub fn breaker(&self, app: &str, open: bool) {
        self.breaker_open
            .with_label_values(&[app])
            .set(i64::from(open));
        if open {
            self.breaker_trips.with_label_values(&[app]).inc();
        }
    }

    pub fn outbox_full(&self, app: &str) {
        self.outbox_full.with_label_values(&[app]).inc();
    }

    pub fn send_panicked(&self) {
        self.send_panics.inc();
    }

    pub fn inflight_limit_hit(&self, app: &str) {
        self.inflight_limit_drop.with_label_values(&[app]).inc();
    }

    /// A request was answered 429; `limit` is `global` or `app`.
    pub fn overloaded(&self, limit: &str) {
        self.overload.with_label_values(&[limit]).inc();
    }

    /// The gauge of open API connections (the accept loop moves it).
    pub fn inbound_connections(&self) -> IntGauge {
        self.inbound_connections.clone()
    }

    /// A connection was closed at accept; `limit` names the cap it hit.
    pub fn inbound_refused(&self, limit: &str) {
        self.inbound_refused.with_label_values(&[limit]).inc();
    }

    /// The client certificate of APNs app `app` expires at `not_after` (Unix seconds).
    pub fn client_cert_expiry(&self, app: &str, not_after: i64) {
        self.client_cert_expiry
            .with_label_values(&[app])
            .set(not_after);
    }

    pub fn queued(&self, app: &str) {
        self.outbox_queued.with_label_values(&[app]).inc();
    }

    pub fn dropped(&self, app: &str) {
        self.outbox_dropped.with_label_values(&[app]).inc();
    }

    /// The counters of one app's calls to its push service. Called once per
    /// configured app, which also shows that app's series at zero.
    pub fn upstream(&self, service: Service, app: &str) -> Upstream {
        for family in [
            &self.per_pushkin_type,
            &self.inflight_limit_drop,
            &self.outbox_queued,
            &self.outbox_dropped,
            &self.breaker_trips,
            &self.outbox_full,
        ] {
            family.with_label_values(&[app]);
        }
        self.breaker_open.with_label_values(&[app]);
        for outcome in OUTCOMES {
            self.outcomes.with_label_values(&[app, outcome]);
        }
        let f = match service {
            Service::Apns => &self.apns,
            Service::Gcm => &self.gcm,
            Service::WebPush => &self.webpush,
            Service::UnifiedPush => &self.unifiedpush,
        };
        Upstream {
            service: service.name(),
            app: app.to_owned(),
            request_time: f.request_time.clone(),
            active: f.active.clone(),
            status_codes: f.status_codes.clone(),
            status_ok: OnceLock::new(),
            token_refreshes: self.token_refreshes.clone(),
            connections: self.connections.with_label_values(&[app]),
            slot_wait: (service == Service::Gcm)
                .then(|| (self.gcm_queue_time.clone(), self.gcm_pending.clone())),
        }
    }

    /// The outbox worker panicked, or one of its sends did.
    pub fn outbox_worker_restarted(&self) {
        self.outbox_worker_restarts.inc();
    }

    /// The outbox worker started (`true`) or stopped.
    pub fn outbox_worker_up(&self, up: bool) {
        self.outbox_worker_up.set(i64::from(up));
    }

    /// Whether the outbox worker is running (for `/ready`).
    pub fn is_outbox_worker_up(&self) -> bool {
        self.outbox_worker_up.get() == 1
    }

    /// Sets the store gauges from a scrape-time reading (`None`: the store did not answer).
    pub fn store_read(&self, stats: Option<Stats>, now_ms: i64) {
        let Some(s) = stats else {
            self.store_up.set(0);
            return;
        };
        self.store_up.set(1);
        for (table, n) in [
            ("outbox", s.outbox),
            ("rejections", s.rejections),
            ("claims", s.claims),
        ] {
            self.store_rows.with_label_values(&[table]).set(n);
        }
        self.outbox_bytes.set(s.outbox_bytes);
        let age_ms = s.oldest.map(|t| (now_ms - t).max(0)).unwrap_or(0);
        self.outbox_oldest.set(age_ms as f64 / 1000.0);
    }
}

/// One app's series of `pushgate_outcomes_total`, so that counting an
/// outcome costs no label lookup.
#[derive(Clone)]
pub struct AppOutcomes {
    /// In the order of [`OUTCOMES`].
    series: [IntCounter; OUTCOMES.len()],
    family: IntCounterVec,
    app: String,
}

impl AppOutcomes {
    /// The final outcome of one device attempt of this app.
    pub fn count(&self, outcome: &str) {
        match OUTCOMES.iter().position(|o| *o == outcome) {
            Some(i) => self.series[i].inc(),
            None => self.family.with_label_values(&[&self.app, outcome]).inc(),
        }
    }
}

/// Counts a `/notify` request in flight while alive.
pub struct InFlight(IntGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// One app's view of its push service's families; cheap to clone.
#[derive(Clone)]
pub struct Upstream {
    service: &'static str,
    app: String,
    request_time: Histogram,
    active: IntGauge,
    status_codes: IntCounterVec,
    /// The app's `200` series of `status_codes`, resolved at its first count.
    status_ok: OnceLock<IntCounter>,
    token_refreshes: IntCounterVec,
    connections: IntCounter,
    /// FCM only (Sygnal has these for GCM alone): time waiting for a
    /// connection slot, and the requests waiting for one.
    slot_wait: Option<(Histogram, IntGauge)>,
}

/// A request waiting for a connection slot: counted as pending until dropped,
/// then its wait is observed.
pub struct SlotWait<'a> {
    families: Option<&'a (Histogram, IntGauge)>,
    started: Instant,
}

impl Drop for SlotWait<'_> {
    fn drop(&mut self) {
        if let Some((time, pending)) = self.families {
            pending.dec();
            time.observe(self.started.elapsed().as_secs_f64());
        }
    }
}

impl Upstream {
    /// A request starts waiting for a connection slot; drop the guard once it has one.
    pub fn waiting_for_slot(&self) -> SlotWait<'_> {
        let families = self.slot_wait.as_ref();
        if let Some((_, pending)) = families {
            pending.inc();
        }
        SlotWait {
            families,
            started: Instant::now(),
        }
    }

    /// An HTTP request to the push service starts; the guard times it and
    /// carries its `upstream` span (instrument the request future with it).
    pub fn request(&self) -> UpstreamCall<'_> {
        self.active.inc();
        UpstreamCall {
            m: self,
            started: Instant::now(),
            span: tracing::info_span!(
                "upstream",
                service = self.service,
                app = %self.app,
                http.status_code = tracing::field::Empty
            ),
        }
    }

    /// A credential was minted or fetched (`ok`), or could not be (`error`).
    pub fn token_refreshed(&self, token: &str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.token_refreshes
            .with_label_values(&[&self.app, token, result])
            .inc();
    }

    /// The connection counter, for the client's connector layer.
    pub fn connections(&self) -> IntCounter {
        self.connections.clone()
    }
}

/// One HTTP request to a push service, timed and counted in flight until dropped.
pub struct UpstreamCall<'a> {
    m: &'a Upstream,
    started: Instant,
    span: tracing::Span,
}

impl UpstreamCall<'_> {
    pub fn span(&self) -> tracing::Span {
        self.span.clone()
    }

    /// The push service answered with `status`.
    pub fn answered(&self, status: u16) {
        self.span.record("http.status_code", status);
        if status == 200 {
            self.m
                .status_ok
                .get_or_init(|| self.m.status_codes.with_label_values(&[&self.m.app, "200"]))
                .inc();
            return;
        }
        self.m
            .status_codes
            .with_label_values(&[&self.m.app, itoa::Buffer::new().format(status)])
            .inc();
    }
}

impl Drop for UpstreamCall<'_> {
    fn drop(&mut self) {
        self.m.active.dec();
        self.m
            .request_time
            .observe(self.started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_exposed_before_its_first_event() {
        let m = Metrics::new();
        let text = m.render();
        for family in [
            "sygnal_notifications_received_total 0",
            "sygnal_notifications_devices_received_total 0",
            "sygnal_requests_in_flight{resource=\"V1NotifyHandler\"} 0",
            "pushgate_limit_hits_total{limit=\"global\"} 0",
            "sygnal_apns_request_time_count 0",
            "sygnal_active_gcm_requests 0",
            "sygnal_webpush_request_time_count 0",
            "pushgate_unifiedpush_request_time_count 0",
            "pushgate_active_unifiedpush_requests 0",
            "pushgate_outbox_oldest_age_seconds 0",
            "pushgate_store_up 0",
            "pushgate_inbound_connections 0",
            "pushgate_inbound_connections_refused_total{limit=\"max_connections\"} 0",
            "pushgate_build_info{version=",
            "sygnal_gcm_queue_time_count 0",
            "sygnal_pending_gcm_requests 0",
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            // Process-wide: another test may have dropped lines.
            "pushgate_log_lines_dropped_total ",
        ] {
            assert!(text.contains(family), "{family} missing from\n{text}");
        }
    }

    #[test]
    fn an_apps_series_show_at_zero_once_it_is_configured() {
        let m = Metrics::new();
        m.upstream(Service::Gcm, "im.example.android");
        let text = m.render();
        for series in [
            "sygnal_per_pushkin_type_total{pushkin=\"im.example.android\"} 0",
            "sygnal_inflight_request_limit_drop_total{pushkin=\"im.example.android\"} 0",
            "pushgate_outcomes_total{outcome=\"delivered\",pushkin=\"im.example.android\"} 0",
            "pushgate_outbox_dropped_total{pushkin=\"im.example.android\"} 0",
        ] {
            assert!(text.contains(series), "{series} missing from\n{text}");
        }
        assert!(text.contains("sygnal_apns_request_time_bucket{le=\"0.075\"} 0"));
    }

    #[test]
    fn upstream_calls_are_timed_and_counted() {
        let m = Metrics::new();
        let u = m.upstream(Service::Apns, "com.example.app");
        {
            let call = u.request();
            assert!(m.render().contains("sygnal_active_apns_requests 1"));
            call.answered(410);
        }
        let text = m.render();
        assert!(text.contains("sygnal_active_apns_requests 0"), "{text}");
        assert!(text.contains("sygnal_apns_request_time_count 1"), "{text}");
        assert!(
            text.contains(
                "sygnal_apns_status_codes_total{code=\"410\",pushkin=\"com.example.app\"} 1"
            ),
            "{text}"
        );
    }

    #[test]
    fn fcm_slot_waits_and_certificate_expiry_are_exported() {
        let m = Metrics::new();
        let fcm = m.upstream(Service::Gcm, "im.example.android");
        let apns = m.upstream(Service::Apns, "im.example.ios");
        {
            let _waiting = fcm.waiting_for_slot();
            let _other = apns.waiting_for_slot();
            assert!(m.render().contains("sygnal_pending_gcm_requests 1"));
        }
        m.client_cert_expiry("im.example.ios", 1_900_000_000);
        let text = m.render();
        assert!(text.contains("sygnal_pending_gcm_requests 0"), "{text}");
        assert!(text.contains("sygnal_gcm_queue_time_count 1"), "{text}");
        assert!(
            text.contains("sygnal_client_cert_expiry{pushkin=\"im.example.ios\"} 1900000000"),
            "{text}"
        );
    }
}
