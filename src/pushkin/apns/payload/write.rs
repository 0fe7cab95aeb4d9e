//! A payload's JSON bytes, written straight from its parts: no `Value` tree
//! is built, the `default_payload` is read in place. The bytes are those
//! serde_json gives for the payload as a `Map` (its default `Map` sorts
//! keys: every object here is written in that order, ours merged into the
//! default payload's), and [`fit`] shortens the `loc-args` as the limit
//! requires.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::PayloadError;
use crate::pushkin::json::{number, plain, string, value};

/// What a payload holds, as `super::shape` decided.
pub(super) enum Shape<'a> {
    /// The default payload (its `aps` as it is) with the ids and counts.
    EventIdOnly {
        default: Option<&'a Map<String, Value>>,
        room_id: Option<&'a str>,
        event_id: Option<&'a str>,
        unread: Option<u64>,
        missed_calls: Option<u64>,
    },
    /// `{"aps":{"badge":N}}`, without the default payload.
    BadgeOnly(u64),
    /// The default payload, its `aps` merged with ours.
    Event {
        default: Option<&'a Map<String, Value>>,
        alert: Option<Alert<'a>>,
        badge: Option<u64>,
        sound: Option<&'a str>,
        room_id: Option<&'a str>,
        event_id: Option<&'a str>,
    },
}

/// An `aps.alert`: its `loc-key` and up to three `loc-args`.
pub(super) struct Alert<'a> {
    key: &'static str,
    args: [Cow<'a, str>; 3],
    count: usize,
}

impl<'a> Alert<'a> {
    /// The alert with the `args` that are `Some`, in order.
    pub(super) fn new(key: &'static str, args: [Option<Cow<'a, str>>; 3]) -> Alert<'a> {
        let mut alert = Alert {
            key,
            args: Default::default(),
            count: 0,
        };
        for (slot, arg) in alert.args.iter_mut().zip(args.into_iter().flatten()) {
            *slot = arg;
            alert.count += 1;
        }
        alert
    }

    fn args(&self) -> &[Cow<'a, str>] {
        self.args.get(..self.count).unwrap_or_default()
    }
}

/// One `loc-args` entry while it is being shortened: a string, or a value
/// of the default payload's that is not one (counted as nothing, kept).
#[derive(Clone, Copy)]
enum Arg<'a> {
    Str(&'a str),
    Other(&'a Value),
}

/// The payload within `limit` bytes. Too large: the longest `loc-args`
/// entries are shortened first — all entries above a common length are cut
/// to it, never inside a UTF-8 character — until it fits. The entries are
/// those of our alert, else those of an alert in the default payload's `aps`.
pub(super) fn fit(shape: &Shape<'_>, limit: usize) -> Result<Vec<u8>, PayloadError> {
    let mut buf = Vec::with_capacity(256);
    shape.write(&mut buf, None);
    if buf.len() <= limit {
        return Ok(buf);
    }
    let Some(mut args) = shape.loc_args() else {
        return Err(PayloadError::TooLarge(buf.len(), limit));
    };
    loop {
        let excess = buf.len() - limit;
        let lens: Vec<usize> = args
            .iter()
            .map(|a| match a {
                Arg::Str(s) => s.len(),
                Arg::Other(_) => 0,
            })
            .collect();
        let removed = |level: usize| lens.iter().map(|l| l.saturating_sub(level)).sum::<usize>();
        if removed(0) == 0 {
            return Err(PayloadError::TooLarge(buf.len(), limit));
        }
        // The highest level that removes enough (serialized JSON is never shorter than the raw text).
        let (mut lo, mut hi) = (0, lens.iter().copied().max().unwrap_or(0));
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if removed(mid) >= excess {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        for arg in &mut args {
            if let Arg::Str(s) = arg {
                if s.len() > lo {
                    let mut end = lo;
                    while !s.is_char_boundary(end) {
                        end -= 1;
                    }
                    *s = &s[..end];
                }
            }
        }
        buf.clear();
        shape.write(&mut buf, Some(&args));
        if buf.len() <= limit {
            return Ok(buf);
        }
    }
}

/// One of our entries in an object.
enum Ours<'s, 'a> {
    Str(&'a str),
    Num(u64),
    /// The `aps` of [`Shape::Event`].
    Aps,
    Alert(&'s Alert<'a>),
}

impl<'a> Shape<'a> {
    /// The `loc-args` [`fit`] shortens, if the payload has any.
    fn loc_args(&self) -> Option<Vec<Arg<'_>>> {
        let default = match self {
            Shape::Event {
                alert: Some(alert), ..
            } => return Some(alert.args().iter().map(|a| Arg::Str(a)).collect()),
            Shape::Event { default, .. } | Shape::EventIdOnly { default, .. } => (*default)?,
            Shape::BadgeOnly(_) => return None,
        };
        let args = their_alert(default.get("aps")?)?
            .get("loc-args")?
            .as_array()?;
        Some(
            args.iter()
                .map(|a| match a {
                    Value::String(s) => Arg::Str(s),
                    other => Arg::Other(other),
                })
                .collect(),
        )
    }

    /// The payload, with its `loc-args` replaced by `cut` when given.
    fn write(&self, buf: &mut Vec<u8>, cut: Option<&[Arg<'_>]>) {
        let w = Writer { shape: self, cut };
        match self {
            Shape::EventIdOnly {
                default,
                room_id,
                event_id,
                unread,
                missed_calls,
            } => w.object(
                buf,
                theirs(*default),
                [
                    ("event_id", event_id.map(Ours::Str)),
                    ("missed_calls", missed_calls.map(Ours::Num)),
                    ("room_id", room_id.map(Ours::Str)),
                    ("unread_count", unread.map(Ours::Num)),
                ],
                Level::Top,
            ),
            Shape::BadgeOnly(badge) => {
                buf.extend_from_slice(br#"{"aps":{"badge":"#);
                number(buf, *badge);
                buf.extend_from_slice(b"}}");
            }
            Shape::Event {
                default,
                room_id,
                event_id,
                ..
            } => w.object(
                buf,
                // Their `aps` is replaced by ours (merged into it when an object).
                theirs(*default),
                [
                    ("aps", Some(Ours::Aps)),
                    ("event_id", event_id.map(Ours::Str)),
                    ("room_id", room_id.map(Ours::Str)),
                ],
                Level::Top,
            ),
        }
    }
}

/// An `aps` value's `alert`, when both are objects.
fn their_alert(aps: &Value) -> Option<&Map<String, Value>> {
    aps.as_object()?.get("alert")?.as_object()
}

fn theirs(map: Option<&Map<String, Value>>) -> impl Iterator<Item = (&String, &Value)> {
    map.into_iter().flat_map(Map::iter)
}

/// Where an object of the default payload is: its `loc-args` may be ours to
/// write while they are being cut.
#[derive(Clone, Copy, PartialEq)]
enum Level {
    Top,
    Aps,
    Alert,
}

struct Writer<'w, 'a> {
    shape: &'w Shape<'a>,
    cut: Option<&'w [Arg<'w>]>,
}

impl<'w, 'a> Writer<'w, 'a> {
    /// An object: `theirs` (sorted, as a `Map` iterates) merged with `ours`
    /// (sorted; `None` left out), ours written where both have a key.
    fn object<'v, const N: usize>(
        &self,
        buf: &mut Vec<u8>,
        theirs: impl Iterator<Item = (&'v String, &'v Value)>,
        ours: [(&'static str, Option<Ours<'_, 'a>>); N],
        level: Level,
    ) {
        let mut theirs = theirs.peekable();
        let mut ours = ours
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .peekable();
        buf.push(b'{');
        let mut first = true;
        loop {
            let take_ours = match (theirs.peek(), ours.peek()) {
                (None, None) => break,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some((t, _)), Some((o, _))) => match t.as_str().cmp(o) {
                    Ordering::Less => false,
                    Ordering::Equal => {
                        theirs.next();
                        true
                    }
                    Ordering::Greater => true,
                },
            };
            if !first {
                buf.push(b',');
            }
            first = false;
            if take_ours {
                if let Some((k, v)) = ours.next() {
                    plain(buf, k);
                    buf.push(b':');
                    self.ours(buf, &v);
                }
            } else if let Some((k, v)) = theirs.next() {
                string(buf, k);
                buf.push(b':');
                self.theirs(buf, k, v, level);
            }
        }
        buf.push(b'}');
    }

    fn ours(&self, buf: &mut Vec<u8>, v: &Ours<'_, 'a>) {
        match v {
            Ours::Str(s) => string(buf, s),
            Ours::Num(n) => number(buf, *n),
            Ours::Alert(alert) => {
                buf.extend_from_slice(br#"{"loc-args":"#);
                match self.cut {
                    Some(cut) => list(buf, cut.iter().copied()),
                    None => list(buf, alert.args().iter().map(|a| Arg::Str(a))),
                }
                buf.extend_from_slice(br#","loc-key":"#);
                plain(buf, alert.key);
                buf.push(b'}');
            }
            Ours::Aps => {
                let Shape::Event {
                    default,
                    alert,
                    badge,
                    sound,
                    ..
                } = self.shape
                else {
                    return;
                };
                let their_aps = default
                    .and_then(|d| d.get("aps"))
                    .and_then(Value::as_object);
                self.object(
                    buf,
                    theirs(their_aps),
                    [
                        ("alert", alert.as_ref().map(Ours::Alert)),
                        ("badge", badge.map(Ours::Num)),
                        ("sound", sound.map(Ours::Str)),
                    ],
                    Level::Aps,
                );
            }
        }
    }

    /// A value of the default payload's: as it is, but for the `loc-args`
    /// of its alert while they are being cut.
    fn theirs(&self, buf: &mut Vec<u8>, key: &str, v: &Value, level: Level) {
        let next = match (level, key) {
            (Level::Top, "aps") => Level::Aps,
            (Level::Aps, "alert") => Level::Alert,
            (Level::Alert, "loc-args") => {
                match (self.cut, v) {
                    (Some(cut), Value::Array(_)) => list(buf, cut.iter().copied()),
                    _ => value(buf, v),
                }
                return;
            }
            _ => return value(buf, v),
        };
        match (self.cut, v) {
            (Some(_), Value::Object(m)) => self.object(buf, m.iter(), [], next),
            _ => value(buf, v),
        }
    }
}

/// A JSON array of `loc-args`.
fn list<'x>(buf: &mut Vec<u8>, args: impl Iterator<Item = Arg<'x>>) {
    buf.push(b'[');
    for (i, a) in args.enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        match a {
            Arg::Str(s) => string(buf, s),
            Arg::Other(v) => value(buf, v),
        }
    }
    buf.push(b']');
}
