//! The timestamp of a log line: the text tracing-subscriber's `SystemTime`
//! timer writes (RFC 3339, UTC, microseconds: `2026-12-03T04:05:06.123456Z`),
//! made by `humantime` in one buffer and written with one append. The default
//! timer writes each part through `write!` with padding: about 2,200
//! instructions a line, more than all the fields of an access line but one.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// The first second of the year 10000: `humantime` writes four-digit years only.
const YEAR_10000: u64 = 253_402_300_800;

/// The log lines' timer (see the module docs).
#[derive(Debug, Default, Clone, Copy)]
pub struct Timestamp;

impl FormatTime for Timestamp {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let now = SystemTime::now();
        match now.duration_since(UNIX_EPOCH) {
            Ok(since) if since.as_secs() < YEAR_10000 => {
                write!(w, "{}", humantime::format_rfc3339_micros(now))
            }
            // A clock before 1970 or after 9999: the default timer's text.
            _ => tracing_subscriber::fmt::time::SystemTime.format_time(w),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(timer: impl FormatTime) -> String {
        let mut s = String::new();
        timer
            .format_time(&mut Writer::new(&mut s))
            .expect("written");
        s
    }

    /// The same text as the default timer: the two read the clock one after
    /// the other, so they are compared down to the second (tried again when
    /// a second began between them), and the fraction's shape.
    #[test]
    fn writes_what_the_default_timer_writes() {
        for _ in 0..5 {
            let ours = line(Timestamp);
            let theirs = line(tracing_subscriber::fmt::time::SystemTime);
            if ours[..19] != theirs[..19] {
                continue;
            }
            assert_eq!(ours.len(), theirs.len(), "{ours} / {theirs}");
            assert_eq!(ours.len(), "2026-12-03T04:05:06.123456Z".len(), "{ours}");
            assert_eq!(&ours[19..20], ".");
            assert!(ours[20..26].bytes().all(|b| b.is_ascii_digit()), "{ours}");
            assert!(ours.ends_with('Z'), "{ours}");
            return;
        }
        panic!("the clock kept changing seconds");
    }

    #[test]
    fn a_fixed_instant() {
        let at = UNIX_EPOCH + std::time::Duration::new(1_796_270_706, 123_456_789);
        assert_eq!(
            humantime::format_rfc3339_micros(at).to_string(),
            "2026-12-03T04:05:06.123456Z"
        );
    }
}
