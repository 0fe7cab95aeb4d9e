//! `pushgate send-test`: one push to one device through a configured app,
//! and a report of exactly what was sent and what the push service answered —
//! the first thing to run when "push doesn't work".
//!
//! The push goes through the same pushkin code as the gateway's (payload
//! building, auth, retries), with a [`Tap`] recording the HTTP exchanges —
//! FCM's OAuth token request included. In text form each request is printed
//! as it is sent and each answer as it arrives. Nothing is stored: no
//! outbox, no rejection memory, no de-duplication.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use crate::config::Config;
use crate::gateway::{build_routes, StartError};
use crate::ids::{AppId, PushKey};
use crate::notification::{self, ParseError};
use crate::pushkin::tap::{self, Event, Exchange, Tap};
use crate::telemetry::metrics::Metrics;

/// The shape of the test notification: each one a homeserver (Synapse) sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// A text message (`m.room.message`, `msgtype: m.text`) with `--body`.
    Message,
    /// An image (`m.room.message`, `msgtype: m.image`, with `url` and `info`); `--body` is its file name.
    Image,
    /// A voice call invite (`m.call.invite` with an SDP offer): APNs alerts
    /// `VOICE_CALL_FROM_USER`, FCM and Web Push send it at high priority.
    Call,
    /// A badge-only update (after a read receipt): counts, no event.
    Badge,
    /// What an `event_id_only` pusher gets: the event and room ids and the counts.
    EventIdOnly,
}

/// What to send.
#[derive(Debug, Clone)]
pub struct TestPush {
    pub app_id: AppId,
    /// The APNs/FCM token, Web Push `p256dh`, or UnifiedPush endpoint URL.
    pub pushkey: PushKey,
    /// The pusher's `data` (Web Push needs `endpoint` and `auth`).
    pub data: Map<String, Value>,
    pub kind: Kind,
    /// The message's body or the image's file name (defaults per kind).
    pub body: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SendTestError {
    #[error("no app in the config serves app_id `{0}`")]
    NoApp(AppId),
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

const ROOM_ID: &str = "!pushgate-test:localhost";
/// An SDP offer with one audio stream: a voice call.
const VOICE_OFFER: &str =
    "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";

/// The notification a homeserver would send for this kind of event to this device.
fn notification(t: &TestPush) -> Value {
    let event_id = format!("$pushgate-test-{}", uuid::Uuid::new_v4().simple());
    let mut data = t.data.clone();
    if t.kind == Kind::EventIdOnly {
        data.insert("format".into(), json!("event_id_only"));
    }
    let device = json!({"app_id": t.app_id, "pushkey": t.pushkey, "pushkey_ts": 0, "data": data});
    let event = |kind: &str, content: Value| {
        json!({"notification": {
            "event_id": event_id, "room_id": ROOM_ID,
            "type": kind, "sender": "@pushgate:localhost",
            "sender_display_name": "pushgate", "room_name": "pushgate test",
            "prio": "high", "counts": {"unread": 1},
            "content": content,
            "devices": [device]
        }})
    };
    match t.kind {
        Kind::Message => event(
            "m.room.message",
            json!({"msgtype": "m.text",
                   "body": t.body.as_deref().unwrap_or("Test push from pushgate")}),
        ),
        Kind::Image => event(
            "m.room.message",
            json!({"msgtype": "m.image",
                   "body": t.body.as_deref().unwrap_or("pushgate-test.png"),
                   "url": "mxc://localhost/pushgate-test",
                   "info": {"mimetype": "image/png", "size": 4096, "w": 64, "h": 64}}),
        ),
        Kind::Call => event(
            "m.call.invite",
            json!({"call_id": "pushgate-test-call", "party_id": "pushgate", "version": "1",
                   "lifetime": 60000, "offer": {"type": "offer", "sdp": VOICE_OFFER}}),
        ),
        // Synapse's badge-only push: empty id and sender, a null type, no event id.
        Kind::Badge => json!({"notification": {
            "id": "", "sender": "", "type": null,
            "counts": {"unread": 1}, "devices": [device]
        }}),
        Kind::EventIdOnly => json!({"notification": {
            "event_id": event_id, "room_id": ROOM_ID,
            "counts": {"unread": 1}, "prio": "high", "devices": [device]
        }}),
    }
}

/// Where the text form is written as the push goes; `None`: no text (`--json`).
pub type Live = Box<dyn std::io::Write + Send>;

/// Sends the test push and reports. With `live`, writes the text form there
/// as it happens: the app, each request before it is sent (with the time the
/// push has left), each answer as it arrives, then the outcome.
pub async fn run(
    config: &Config,
    t: &TestPush,
    live: Option<Live>,
) -> Result<Report, SendTestError> {
    let routes = build_routes(config, &Metrics::new())?;
    let route = routes
        .find(&t.app_id)
        .map_err(|_| SendTestError::NoApp(t.app_id.clone()))?;
    let body = notification(t);
    let n = notification::parse(body.to_string().as_bytes(), 1)?;
    let device = &n.devices[0];
    let kind = route.pushkin.type_name();
    let out = live.map(|w| Arc::new(Mutex::new(w)));
    if let Some(out) = &out {
        emit(out, &format!("app {} (type {kind})\n", route.key));
    }
    // Every pushkin gives up on a push after `upstream_timeout`.
    let deadline = Instant::now() + config.dispatch.upstream_timeout;
    let tap = Arc::new(match &out {
        Some(out) => {
            let out = out.clone();
            Tap::observed(move |event| {
                let left = deadline.saturating_duration_since(Instant::now());
                emit(&out, &render_event(event, left));
            })
        }
        None => Tap::default(),
    });
    let outcome = tap::scope(
        tap.clone(),
        route.pushkin.push_tapped(&n, device, Some(&tap)),
    )
    .await;
    let report = Report {
        app: route.key.clone(),
        kind,
        notification: body,
        exchanges: tap.exchanges(),
        outcome: outcome.label(),
        reason: outcome.reason(),
    };
    if let Some(out) = &out {
        emit(out, &render_end(&report));
    }
    Ok(report)
}

/// Writes and flushes at once: the point is to be seen while waiting.
fn emit(out: &Mutex<Live>, text: &str) {
    let mut w = out.lock().unwrap_or_else(|p| p.into_inner());
    let _ = w.write_all(text.as_bytes());
    let _ = w.flush();
}

/// JSON bodies pretty-printed, forms one field a line (decoded), anything else as is.
fn pretty(body: &str, headers: &[(String, String)]) -> String {
    let form = headers
        .iter()
        .any(|(k, v)| k == "content-type" && v.starts_with("application/x-www-form-urlencoded"));
    if form {
        return url::form_urlencoded::parse(body.as_bytes())
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect();
    }
    match serde_json::from_str::<Value>(body) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_else(|_| body.to_owned()),
        Err(_) => body.to_owned(),
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

fn title(i: usize, e: &Exchange) -> String {
    match &e.purpose {
        Some(p) => format!("exchange {} ({p})", i + 1),
        None => format!("exchange {}", i + 1),
    }
}

/// A request: its line, headers and body.
fn render_request(e: &Exchange) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "> {} {}", e.method, e.url);
    for (k, v) in &e.request_headers {
        let _ = writeln!(out, "> {k}: {v}");
    }
    if let Some(plain) = &e.plaintext {
        let _ = writeln!(out, "> body: {} (encrypted); plaintext:", e.request_body);
        out.push_str(&indent(&pretty(plain, &[])));
    } else if !e.request_body.is_empty() {
        let _ = writeln!(out, "> body:");
        out.push_str(&indent(&pretty(&e.request_body, &e.request_headers)));
    }
    out
}

/// An answer: status, headers and body, or why none came.
fn render_answer(e: &Exchange) -> String {
    let mut out = String::new();
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
                out.push_str(&indent(&pretty(&e.response_body, &e.response_headers)));
            }
        }
        (None, None) => {
            let _ = writeln!(out, "< no answer (the push gave up waiting)");
        }
    }
    out
}

/// What the tap's observer prints: a request before it goes, with the time
/// the push has left, and its answer when it arrives.
fn render_event(event: Event<'_>, left: Duration) -> String {
    match event {
        Event::Sending(i, e) => format!(
            "\n{}: sending (gives up within {:.1} s)\n{}",
            title(i, e),
            left.as_secs_f64(),
            render_request(e)
        ),
        Event::Finished(_, e) => render_answer(e),
    }
}

/// The end: the exchanges that never finished (the push gave up on them), and the outcome.
fn render_end(r: &Report) -> String {
    let mut out = String::new();
    if r.exchanges.is_empty() {
        let _ = writeln!(out, "nothing was sent to the push service");
    }
    for e in r.exchanges.iter().filter(|e| !e.finished()) {
        out.push_str(&render_answer(e));
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
