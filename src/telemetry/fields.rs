//! The fields of a text log line, written as `name=value` pairs straight into
//! the line.
//!
//! `tracing-subscriber`'s default field formatter sends every value through
//! `Debug` and a styling wrapper, colours off or not: about 1,000 instructions
//! per field, 22,000 for the access line of one `/notify` (8 % of the whole
//! request's work, measured with `scripts/instructions`). This one writes the
//! same text (`name=value`, strings quoted and escaped as `Debug` does,
//! numbers as `Display`) with plain appends: strings that need no escaping
//! (almost all) are copied as they are; the rest go through `Debug`, as before.
//! Field names are never styled, so a terminal shows them plain; the line's
//! level keeps its colour. The message is sanitized of terminal control
//! characters like the default formatter does.

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::FormatFields;

/// The text log's field formatter (see the module docs).
#[derive(Debug, Default, Clone, Copy)]
pub struct PlainFields;

impl<'w> FormatFields<'w> for PlainFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut v = Fields {
            out: writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut v);
        v.result
    }
}

struct Fields<'w> {
    out: Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Fields<'_> {
    /// Starts a field: the separating space and `name=`; `None` when the
    /// field is not written (an earlier write failed, or it is `log`
    /// metadata the line's prefix already shows).
    fn start(&mut self, field: &Field) -> Option<()> {
        if self.result.is_err() {
            return None;
        }
        let name = field.name();
        if name.starts_with("log.") {
            return None;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        let sep = if self.first { "" } else { " " };
        self.first = false;
        if name != "message" {
            self.result = self
                .out
                .write_str(sep)
                .and_then(|()| self.out.write_str(name))
                .and_then(|()| self.out.write_char('='));
        } else {
            self.result = self.out.write_str(sep);
        }
        self.result.is_ok().then_some(())
    }

    fn message(&mut self, text: &str) {
        self.result = write_sanitized(&mut self.out, text);
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.start(field).is_none() {
            return;
        }
        if field.name() == "message" {
            self.message(value);
        } else {
            self.result = write_str_value(&mut self.out, value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.start(field).is_some() {
            self.result = self.out.write_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.start(field).is_some() {
            self.result = self.out.write_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.start(field).is_some() {
            self.result = write_f64_value(&mut self.out, value);
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.start(field).is_some() {
            self.result = self.out.write_str(if value { "true" } else { "false" });
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.start(field).is_none() {
            return;
        }
        // As the default formatter: the error, then its sources as a list.
        let mut out = Sanitizing(&mut self.out);
        self.result = write!(out, "{value}");
        if let (Ok(()), Some(source)) = (self.result, value.source()) {
            let name = field.name();
            let name = name.strip_prefix("r#").unwrap_or(name);
            self.result = write!(out, " {name}.sources=[");
            let mut next = Some(source);
            let mut sep = "";
            while let (Ok(()), Some(s)) = (self.result, next) {
                self.result = write!(out, "{sep}{s}");
                sep = ", ";
                next = s.source();
            }
            if self.result.is_ok() {
                self.result = out.write_char(']');
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.start(field).is_none() {
            return;
        }
        if field.name() != "message" {
            self.result = write!(self.out, "{value:?}");
            return;
        }
        // A message is `format_args!`: a literal one is copied as it is.
        let mut escaping = Sanitizing(&mut self.out);
        self.result = write!(escaping, "{value:?}");
    }
}

/// A string field's value as `Debug` writes it: between quotes, escaped.
pub(super) fn write_str_value(out: &mut impl Write, value: &str) -> fmt::Result {
    if needs_no_escape(value) {
        out.write_char('"')?;
        out.write_str(value)?;
        out.write_char('"')
    } else {
        write!(out, "{value:?}")
    }
}

/// A float field's value as `Debug` writes it (`1.25`, `3.0`, `NaN`).
pub(super) fn write_f64_value(out: &mut impl Write, value: f64) -> fmt::Result {
    match thousandths(value) {
        Some(m) => write_thousandths(out, m),
        None => write!(out, "{value:?}"),
    }
}

/// `value` as a whole number of thousandths (a duration in milliseconds
/// rounded to the microsecond, as lines carry them), when `Debug` writes it
/// as that decimal: non-negative, below 10^12 (there an `f64`'s step is far
/// below a thousandth, so no shorter decimal denotes the same value), and
/// exactly the `f64` nearest to it.
fn thousandths(value: f64) -> Option<u64> {
    if value.is_sign_negative() || !(0.0..1e12).contains(&value) {
        return None;
    }
    let m = (value * 1000.0).round();
    (m / 1000.0 == value).then_some(m as u64)
}

/// `m` thousandths as `Debug` writes the `f64` (`1.25`, `3.0`, `0.001`),
/// without its float formatting (a thousand instructions a field).
fn write_thousandths(out: &mut impl Write, m: u64) -> fmt::Result {
    let mut int = itoa::Buffer::new();
    out.write_str(int.format(m / 1000))?;
    let frac = m % 1000;
    let digits = [
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ];
    let keep = match frac {
        0 => 2,
        f if f % 100 == 0 => 2,
        f if f % 10 == 0 => 3,
        _ => 4,
    };
    // ASCII digits: always UTF-8.
    out.write_str(std::str::from_utf8(&digits[..keep]).unwrap_or(".0"))
}

/// Whether `Debug` would write `s` between quotes unchanged: printable
/// ASCII without `"` or `\`.
fn needs_no_escape(s: &str) -> bool {
    s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

/// Writes `text` with the terminal control characters a log line must not
/// carry (escape, bell, backspace, form feed, delete, C1 controls) escaped.
fn write_sanitized(out: &mut dyn Write, text: &str) -> fmt::Result {
    let mut rest = text;
    while let Some((at, c)) = rest.char_indices().find(|(_, c)| is_control(*c)) {
        out.write_str(&rest[..at])?;
        match c {
            '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' => write!(out, "\\x{:02x}", c as u32)?,
            c => write!(out, "\\u{{{:x}}}", c as u32)?,
        }
        rest = &rest[at + c.len_utf8()..];
    }
    out.write_str(rest)
}

fn is_control(c: char) -> bool {
    matches!(
        c,
        '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' | '\u{80}'..='\u{9f}'
    )
}

/// A writer that sanitizes what passes through it ([`write_sanitized`]).
struct Sanitizing<'a, 'w>(&'a mut Writer<'w>);

impl Write for Sanitizing<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_sanitized(self.0, s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::capture::Buf;
    use tracing_subscriber::fmt::format::DefaultFields;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot save")]
    struct Wrapped(#[source] std::io::Error);

    /// The events every test logs: each kind of value our lines carry,
    /// strings that need escaping, and a message with control characters.
    fn log_samples() {
        let ip = std::net::IpAddr::from([10, 0, 0, 1]);
        let none: Option<usize> = None;
        tracing::info!(
            client = %ip,
            method = %http::Method::POST,
            path = "/_matrix/push/v1/notify",
            status = 200u16,
            duration_ms = 1.25,
            zero_ms = 0.0,
            whole = 3.0,
            small = 0.001,
            large = 987_654_321.5,
            tiny = 1e-7,
            huge = 1e20,
            sum = 0.1 + 0.2,
            negative = -0.0,
            nan = f64::NAN,
            request_id = "abc-1",
            event_id = Some("$e:x"),
            devices = Some(2usize),
            skipped = none,
            delta = -3i64,
            ok = true,
            r#type = "m.room.message",
            "request"
        );
        tracing::warn!(
            quoted = "a \"b\" \\ c",
            newline = "line\nbreak",
            unicode = "café ☕",
            control = "\u{1b}[31m",
            debug = ?vec![1, 2],
            "push failed: {} \u{1b}[2J bell\u{7} c1\u{85}",
            "dead"
        );
        let e = std::io::Error::other("disk full");
        tracing::error!(error = &e as &dyn std::error::Error, "no store");
        let nested = Wrapped(e);
        tracing::error!(error = &nested as &dyn std::error::Error, "nested");
    }

    /// The fields part of each line (after the level and the space).
    fn fields_of(text: &str) -> Vec<String> {
        text.lines()
            .map(|l| {
                let l = l.trim_start();
                let rest = l.split_once(' ').map(|(_, r)| r).unwrap_or("");
                rest.trim_start().to_owned()
            })
            .collect()
    }

    fn capture<N>(fields: N) -> String
    where
        N: for<'w> FormatFields<'w> + Send + Sync + 'static,
    {
        let buf = Buf::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(buf.clone())
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .fmt_fields(fields)
            .finish();
        tracing::subscriber::with_default(subscriber, log_samples);
        buf.text()
    }

    #[test]
    fn lines_are_those_of_the_default_formatter() {
        let ours = capture(PlainFields);
        let theirs = capture(DefaultFields::new());
        let (ours, theirs) = (fields_of(&ours), fields_of(&theirs));
        assert_eq!(ours.len(), 4);
        // Written as the default formatter writes them (colours off).
        assert_eq!(ours, theirs);
        assert_eq!(
            ours[0],
            "request client=10.0.0.1 method=POST path=\"/_matrix/push/v1/notify\" status=200 \
             duration_ms=1.25 zero_ms=0.0 whole=3.0 small=0.001 large=987654321.5 tiny=1e-7 \
             huge=1e20 sum=0.30000000000000004 negative=-0.0 nan=NaN request_id=\"abc-1\" event_id=\"$e:x\" devices=2 delta=-3 ok=true \
             type=\"m.room.message\""
        );
        assert_eq!(
            ours[1],
            "push failed: dead \\x1b[2J bell\\x07 c1\\u{85} quoted=\"a \\\"b\\\" \\\\ c\" \
             newline=\"line\\nbreak\" unicode=\"café ☕\" control=\"\\u{1b}[31m\" debug=[1, 2]"
        );
        assert_eq!(ours[2], "no store error=disk full");
        assert_eq!(
            ours[3],
            "nested error=cannot save error.sources=[disk full]"
        );
    }

    /// Every thousandth up to 200 s, and some far beyond, as `Debug` writes them.
    #[test]
    fn thousandths_are_written_as_debug_writes_them() {
        let far = (0..2_000u64).map(|i| i * 4_999_999_937 + 17);
        for m in (0..200_000u64).chain(far) {
            let value = m as f64 / 1000.0;
            let mut ours = String::new();
            let written =
                thousandths(value).map(|t| write_thousandths(&mut Writer::new(&mut ours), t));
            assert!(matches!(written, Some(Ok(()))), "{value:?}");
            assert_eq!(ours, format!("{value:?}"), "{m}");
        }
    }
}
