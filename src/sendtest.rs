//! `pushgate send-test`: one push to one device through a configured app,
//! and a report of exactly what was sent and what the push service answered —
//! the first thing to run when "push doesn't work".
//!
//! The push goes through the same pushkin code as the gateway's (payload
//! building, auth, retries), with a [`Tap`] recording the HTTP exchanges.
//! Nothing is stored: no outbox, no rejection memory, no de-duplication.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::config::Config;
use crate::gateway::{build_routes, StartError};
use crate::notification::{self, ParseError};
use crate::pushkin::tap::{Exchange, Tap};
use crate::telemetry::metrics::Metrics;

/// What to send.
#[derive(Debug, Clone)]
pub struct TestPush {
    pub app_id: String,
    /// The APNs/FCM token, Web Push `p256dh`, or UnifiedPush endpoint URL.
    pub pushkey: String,
    /// The pusher's `data` (Web Push needs `endpoint` and `auth`).
    pub data: Map<String, Value>,
    /// Send what an `event_id_only` pusher gets (no content, no sender).
    pub event_id_only: bool,
    pub body: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SendTestError {
    #[error("no app in the config serves app_id `{0}`")]
    NoApp(String),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("the test notification is invalid: {0}")]
    Invalid(#[from] ParseError),
}

/// The report: what was sent, what came back, what the gateway concluded.
#[derive(Debug, Serialize)]
pub struct Report {
    pub app: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub notification: Value,
    pub exchanges: Vec<Exchange>,
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Report {
    /// Delivered means the push service accepted it.
    pub fn delivered(&self) -> bool {
        self.outcome == "delivered"
    }
}

/// The notification a homeserver would send for a test message to this device.
fn notification(t: &TestPush) -> Value {
    let event_id = format!("$pushgate-test-{}", uuid::Uuid::new_v4().simple());
    let mut data = t.data.clone();
    if t.event_id_only {
        data.insert("format".into(), json!("event_id_only"));
    }
    let device = json!({"app_id": t.app_id, "pushkey": t.pushkey, "pushkey_ts": 0, "data": data});
    if t.event_id_only {
        json!({"notification": {
            "event_id": event_id, "room_id": "!pushgate-test:localhost",
            "counts": {"unread": 1}, "prio": "high", "devices": [device]
        }})
    } else {
        json!({"notification": {
            "event_id": event_id, "room_id": "!pushgate-test:localhost",
            "type": "m.room.message", "sender": "@pushgate:localhost",
            "sender_display_name": "pushgate", "room_name": "pushgate test",
            "prio": "high", "counts": {"unread": 1},
            "content": {"msgtype": "m.text", "body": t.body},
            "devices": [device]
        }})
    }
}

/// Sends the test push and reports.
pub async fn run(config: &Config, t: &TestPush) -> Result<Report, SendTestError> {
    let routes = build_routes(config, &Metrics::new())?;
    let route = routes
        .find(&t.app_id)
        .map_err(|_| SendTestError::NoApp(t.app_id.clone()))?;
    let body = notification(t);
    let n = notification::parse(body.to_string().as_bytes(), 1)?;
    let device = &n.devices[0];
    let tap = Tap::default();
    let outcome = route.pushkin.dispatch_traced(&n, device, Some(&tap)).await;
    let reason = outcome.reason();
    Ok(Report {
        app: route.key.clone(),
        kind: route.pushkin.type_name(),
        notification: body,
        exchanges: tap.exchanges(),
        outcome: outcome.kind(),
        reason,
    })
}

/// JSON bodies pretty-printed, anything else as is.
fn pretty(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_else(|_| body.to_owned()),
        Err(_) => body.to_owned(),
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

/// The human-readable form.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "app {} (type {})", r.app, r.kind);
    if r.exchanges.is_empty() {
        let _ = writeln!(out, "nothing was sent to the push service");
    }
    for (i, e) in r.exchanges.iter().enumerate() {
        let _ = writeln!(out, "\nattempt {}:", i + 1);
        let _ = writeln!(out, "> {} {}", e.method, e.url);
        for (k, v) in &e.request_headers {
            let _ = writeln!(out, "> {k}: {v}");
        }
        if let Some(plain) = &e.plaintext {
            let _ = writeln!(out, "> body: {} (encrypted); plaintext:", e.request_body);
            out.push_str(&indent(&pretty(plain)));
        } else if !e.request_body.is_empty() {
            let _ = writeln!(out, "> body:");
            out.push_str(&indent(&pretty(&e.request_body)));
        }
        match (&e.status, &e.error) {
            (_, Some(err)) => {
                let _ = writeln!(out, "< no answer: {err}");
            }
            (Some(status), None) => {
                let _ = writeln!(out, "< {status}");
                for (k, v) in &e.response_headers {
                    let _ = writeln!(out, "< {k}: {v}");
                }
                if !e.response_body.is_empty() {
                    let _ = writeln!(out, "< body:");
                    out.push_str(&indent(&pretty(&e.response_body)));
                }
            }
            (None, None) => {
                let _ = writeln!(out, "< no answer");
            }
        }
    }
    let _ = writeln!(
        out,
        "\noutcome: {}{}",
        r.outcome,
        r.reason
            .as_deref()
            .map(|why| format!(" ({why})"))
            .unwrap_or_default()
    );
    out
}
