//! The access line in the text format, written straight to its log queue.
//!
//! Through `tracing`, the access line of a `/notify` cost about 9,400
//! instructions (6 % of a notification's work, `scripts/instructions`): the
//! event's dispatch through the layers and their filters, then a visitor call
//! and half a dozen dynamic writes per field, for 17 fields. Its fields are
//! known here, so when the access lines go to a text log without colours and
//! no exporter sees events, [`write`] makes the same line in one buffer and
//! hands it to the same queue ([`super::queue`]); everywhere else (JSON, a
//! terminal, OTLP, tests with their own subscriber) the line goes through
//! `tracing` as before. The text is the fmt layer's, byte for byte: the
//! values are written by the same functions ([`super::fields`]) and a test
//! compares the two lines.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::sync::OnceLock;

use tracing_appender::non_blocking::NonBlocking;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

use super::access::{duration_ms, NotifySummary, Request};
use super::fields::{write_f64_value, write_str_value};
use super::timestamp::Timestamp;

/// The queue of the log the access lines go to, when they are written here.
static DIRECT: OnceLock<NonBlocking> = OnceLock::new();

/// From now on, access lines are written here, to `queue` (the first call wins).
pub(super) fn direct_to(queue: NonBlocking) {
    let _ = DIRECT.set(queue);
}

/// The room a line buffer starts with, and the most it keeps between lines.
const LINE_ROOM: usize = 512;
const LINE_KEPT: usize = 4096;

thread_local! {
    /// The line being made, kept between lines (no allocation per line).
    static LINE: RefCell<String> = RefCell::new(String::with_capacity(LINE_ROOM));
}

/// Writes the access line of `r` when access lines are written here; false
/// when they are not (the caller then logs it through `tracing`).
pub(super) fn write(r: &Request<'_>, notify: Option<&NotifySummary>) -> bool {
    let Some(queue) = DIRECT.get() else {
        return false;
    };
    LINE.with_borrow_mut(|line| {
        line.clear();
        if format(line, r, notify).is_ok() {
            // As the fmt layer: a full queue drops the line and counts it.
            let _ = queue.clone().write_all(line.as_bytes());
        }
        keep_small(line);
    });
    true
}

/// Lets go of a line buffer grown past [`LINE_KEPT`]: a long path or error
/// (from the client) must not stay allocated on every worker thread that
/// once wrote it.
fn keep_small(line: &mut String) {
    if line.capacity() > LINE_KEPT {
        *line = String::with_capacity(LINE_ROOM);
    }
}

/// The line as the text fmt layer writes the `request` event of
/// [`super::access::log`]: the time, the level, the message, the fields.
fn format(out: &mut String, r: &Request<'_>, notify: Option<&NotifySummary>) -> fmt::Result {
    Timestamp.format_time(&mut Writer::new(out))?;
    out.push_str("  INFO request client=");
    match r.client {
        Some(ip) => write!(out, "{ip}")?,
        None => out.push('-'),
    }
    out.push_str(" method=");
    out.push_str(r.method.as_str());
    text(out, "path", r.path)?;
    out.push_str(" status=");
    out.push_str(itoa::Buffer::new().format(r.status));
    out.push_str(" duration_ms=");
    write_f64_value(out, duration_ms(r.elapsed))?;
    text(out, "request_id", r.request_id)?;
    if let Some(n) = notify {
        if let Some(id) = &n.event_id {
            text(out, "event_id", id.as_str())?;
        }
        if let Some(apps) = &n.app_ids {
            text(out, "app_ids", apps)?;
        }
        if let Some(devices) = n.devices {
            number(out, "devices", devices);
        }
        if let Some(c) = &n.counts {
            number(out, "delivered", c.delivered);
            number(out, "rejected", c.rejected);
            number(out, "failed", c.failed);
            number(out, "duplicates", c.duplicates);
            number(out, "queued", c.queued);
            number(out, "unqueued", c.unqueued);
        }
        if let Some(error) = &n.error {
            text(out, "error", error)?;
        }
    }
    out.push('\n');
    Ok(())
}

/// ` name="value"`, quoted and escaped as the fmt layer writes a string.
fn text(out: &mut String, name: &str, value: &str) -> fmt::Result {
    out.push(' ');
    out.push_str(name);
    out.push('=');
    write_str_value(out, value)
}

/// ` name=value` for a count.
fn number(out: &mut String, name: &str, value: usize) {
    out.push(' ');
    out.push_str(name);
    out.push('=');
    out.push_str(itoa::Buffer::new().format(value));
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::time::Duration;

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;
    use crate::ids::EventId;
    use crate::telemetry::access::Counts;
    use crate::telemetry::capture::Buf;

    /// The line `tracing` writes for `r` through the gateway's text fmt
    /// layer (as `telemetry::init` builds it, colours off).
    fn through_tracing(r: &Request<'_>, notify: Option<&NotifySummary>) -> String {
        let buf = Buf::default();
        let layer = super::super::text_layer(buf.clone(), false);
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || super::super::access::log(r, notify));
        buf.text()
    }

    fn here(r: &Request<'_>, notify: Option<&NotifySummary>) -> String {
        let mut line = String::new();
        format(&mut line, r, notify).expect("formatted");
        line
    }

    /// Both lines without their timestamps, and the timestamps.
    fn split(line: &str) -> (&str, &str) {
        line.split_once(' ').expect("a timestamp")
    }

    /// Client, path, status, time taken, `/notify` summary.
    type Case<'a> = (
        Option<IpAddr>,
        &'a str,
        u16,
        Duration,
        Option<&'a NotifySummary>,
    );

    #[test]
    fn the_line_is_the_fmt_layer_s_byte_for_byte() {
        let summary = NotifySummary {
            event_id: Some(EventId::from("$e1:example.org")),
            app_ids: Some("com.example.a,org.example.web".into()),
            devices: Some(3),
            counts: Some(Counts {
                delivered: 1,
                rejected: 1,
                failed: 0,
                duplicates: 0,
                queued: 1,
                unqueued: 0,
            }),
            error: None,
        };
        let refused = NotifySummary {
            error: Some("bad \"devices\"\n\u{1b}[2J é".into()),
            ..NotifySummary::default()
        };
        let empty = NotifySummary::default();
        let v4 = Some(IpAddr::from([203, 0, 113, 9]));
        let v6 = Some("2001:db8::1".parse().expect("address"));
        let cases: Vec<Case<'_>> = vec![
            (
                v4,
                "/_matrix/push/v1/notify",
                200,
                Duration::from_micros(1_250),
                Some(&summary),
            ),
            (
                v6,
                "/_matrix/push/v1/notify/",
                400,
                Duration::from_nanos(1),
                Some(&refused),
            ),
            (None, "/health", 200, Duration::ZERO, None),
            (v4, "/odd\"path\\ü", 404, Duration::from_secs(12_345), None),
            (
                v4,
                "/_matrix/push/v1/notify",
                500,
                Duration::from_nanos(999_999_999),
                Some(&empty),
            ),
        ];
        for (client, path, status, elapsed, notify) in cases {
            let r = Request {
                client,
                method: &http::Method::POST,
                path,
                status,
                elapsed,
                request_id: "req-7",
            };
            let (theirs, ours) = (through_tracing(&r, notify), here(&r, notify));
            let ((their_time, their_rest), (our_time, our_rest)) = (split(&theirs), split(&ours));
            assert_eq!(our_rest, their_rest);
            assert_eq!(
                our_time.len(),
                their_time.len(),
                "{our_time} / {their_time}"
            );
            assert!(
                our_time.ends_with('Z') && our_time.as_bytes()[10] == b'T',
                "{our_time}"
            );
        }
    }

    #[test]
    fn a_long_line_s_buffer_is_not_kept() {
        let long = "x".repeat(64 * 1024);
        let r = Request {
            client: None,
            method: &http::Method::GET,
            path: &long,
            status: 414,
            elapsed: Duration::ZERO,
            request_id: "r",
        };
        let mut line = String::with_capacity(LINE_ROOM);
        format(&mut line, &r, None).expect("formatted");
        assert!(line.capacity() > LINE_KEPT);
        keep_small(&mut line);
        assert!(line.capacity() <= LINE_KEPT, "{}", line.capacity());
        let usual = Request {
            path: "/health",
            ..r
        };
        let mut short = String::with_capacity(LINE_ROOM);
        format(&mut short, &usual, None).expect("formatted");
        let before = (short.capacity(), short.clone());
        keep_small(&mut short);
        assert_eq!(
            (short.capacity(), short),
            before,
            "a usual line's buffer is kept"
        );
    }

    #[test]
    fn without_a_direct_queue_the_line_is_not_written_here() {
        // Tests never call `telemetry::init`: nothing set the queue.
        let r = Request {
            client: None,
            method: &http::Method::GET,
            path: "/health",
            status: 200,
            elapsed: Duration::ZERO,
            request_id: "r",
        };
        assert!(!write(&r, None));
    }
}
