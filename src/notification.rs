//! The Push Gateway API v1 request model (`{"notification": {...}}`) and its validation.
//!
//! Parsing is lenient where homeservers differ (unknown fields ignored, `null`
//! means absent, an empty `id`/`event_id`/`sender` means absent, the 2015 `id`
//! is a synonym of `event_id`, an unknown `prio` is `high`) and strict about
//! types: a field of the wrong type is an error that names its path, e.g.
//! `notification.devices[1].pushkey`.
//!
//! Memory is bounded by the body, not amplified by it: the body is never
//! turned into a `serde_json::Value` tree (which costs 10–16 times the text).
//! It is read in one pass (`pass`) that walks it with the parser paths a
//! `Value` takes (so the `M_NOT_JSON` messages are serde_json's own) and keeps
//! only the fields the API defines, their strings borrowed from the body where
//! they have no escapes; their types are checked after the pass, so a syntax
//! error anywhere in the body wins over a field of the wrong type. The event
//! `content`, by far the largest part, is kept as its raw JSON text
//! ([`Content`]; with [`parse_shared`] a view into the body, not a copy) and
//! parsed only by the payload builders that need it, one key at a time where
//! they can.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::ids::{AppId, EventId, PushKey};

use self::pass::{MapOf, Maps, Scalar, Seen};

mod pass;

/// Why a body was refused; turned into a Matrix error by `api::error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not JSON at all (or NaN/Infinity, which JSON does not have).
    #[error("request body is not valid JSON: {0}")]
    NotJson(String),
    /// JSON, but not of the shape the API defines; `path` names the field.
    #[error("{path}: {message}")]
    BadJson { path: String, message: String },
}

/// Length limits: the spec's for `pushkey` (bytes) and `app_id` (characters),
/// the Matrix identifier grammar's for event and room ids. Longer values are
/// refused, not stored: the store's indexes must hold every accepted value.
const MAX_PUSHKEY_BYTES: usize = 512;
const MAX_APP_ID_CHARS: usize = 64;
const MAX_ID_BYTES: usize = 255;

fn bad(path: impl Into<String>, message: impl Into<String>) -> ParseError {
    ParseError::BadJson {
        path: path.into(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Prio {
    #[default]
    High,
    Low,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub unread: Option<u64>,
    pub missed_calls: Option<u64>,
}

/// One pusher of the user, as the homeserver sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub app_id: AppId,
    pub pushkey: PushKey,
    /// Seconds since the epoch when the pushkey was last updated.
    pub pushkey_ts: Option<u64>,
    /// The pusher's `data` minus `url` (the homeserver keeps `url`); may hold `default_payload`, `format`, …
    pub data: Map<String, Value>,
    pub tweaks: Map<String, Value>,
}

/// The event `content`: a JSON object kept as the text the homeserver sent
/// (always a valid object: [`parse`] checked it), parsed only when a payload
/// needs it. Two contents are equal when they hold the same JSON object.
///
/// From [`parse_shared`] it is a view into the request body itself (no copy:
/// the body's one allocation is what stays); from [`parse`], a copy.
#[derive(Clone)]
pub struct Content(Bytes);

impl Content {
    /// The raw JSON text of the object.
    pub fn get(&self) -> &str {
        // Checked as UTF-8 JSON when it was parsed; the check is repeated
        // because nothing here may assume it (no `unsafe`), and costs far
        // less than the parse that follows every use.
        std::str::from_utf8(&self.0).unwrap_or("{}")
    }

    /// `raw`, a slice of `body`, as a view into it when it is most of the
    /// body (else a copy: a small content must not keep a large body alive).
    fn within(body: &Bytes, raw: &RawValue) -> Content {
        let text = raw.get().as_bytes();
        let start = (text.as_ptr() as usize).checked_sub(body.as_ptr() as usize);
        match start {
            Some(start) if start + text.len() <= body.len() && text.len() * 2 >= body.len() => {
                Content(body.slice(start..start + text.len()))
            }
            _ => Content(Bytes::copy_from_slice(text)),
        }
    }

    /// The whole object as a map (a tree the size of the content: payload
    /// builders that need only some keys use [`Content::field`] or
    /// [`Content::strings`]).
    pub fn to_map(&self) -> Map<String, Value> {
        serde_json::from_str(self.get()).unwrap_or_default()
    }

    /// The value of one key (the last one, when the key is repeated), parsed
    /// on its own; the other keys are skipped without building anything.
    pub fn field(&self, key: &str) -> Option<Value> {
        let [raw] = self.raw_fields([key]);
        serde_json::from_str(raw?.get()).ok()
    }

    /// The raw JSON text of several keys' values (of each the last one, when
    /// a key is repeated), found in one pass over the object. Each is a
    /// valid JSON value that a `Value` parse accepts: [`parse`] checked the
    /// content as one.
    pub fn raw_fields<const N: usize>(&self, keys: [&str; N]) -> [Option<&RawValue>; N] {
        match RawObject::of_text(self.get()) {
            Some(entries) => keys.map(|k| entries.last(k)),
            None => [None; N],
        }
    }

    /// Every key whose value is a string, with that string, in key order
    /// (the order of a `serde_json::Map`); other values are skipped unparsed.
    pub fn strings(&self) -> BTreeMap<String, String> {
        let Some(entries) = RawObject::of_text(self.get()) else {
            return BTreeMap::new();
        };
        let mut out = BTreeMap::new();
        for (k, raw) in entries.0 {
            // A later duplicate replaces an earlier one, as in a map; one that
            // is not a string removes it.
            let text = match kind_of(raw) {
                Kind::String => serde_json::from_str::<String>(raw.get()).ok(),
                _ => None,
            };
            match text {
                Some(s) => {
                    out.insert(k.into_owned(), s);
                }
                None => {
                    out.remove(k.as_ref());
                }
            }
        }
        out
    }
}

impl From<Map<String, Value>> for Content {
    fn from(m: Map<String, Value>) -> Content {
        Content(Bytes::from(Value::Object(m).to_string()))
    }
}

impl PartialEq for Content {
    fn eq(&self, other: &Content) -> bool {
        self.get() == other.get() || self.to_map() == other.to_map()
    }
}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Content").field(&self.get()).finish()
    }
}

impl Serialize for Content {
    /// Written verbatim, as the homeserver sent it.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let raw: &RawValue = serde_json::from_str(self.get()).map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

/// A validated notification.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Notification {
    pub event_id: Option<EventId>,
    pub room_id: Option<String>,
    /// The event type (`type` on the wire).
    pub kind: Option<String>,
    pub sender: Option<String>,
    /// The homeserver sent `"sender": ""` (Synapse's badge-only pushes do): absent
    /// for everything but FCM, whose apps receive `data.sender` as `""`, as from
    /// the reference.
    pub sender_empty: bool,
    pub sender_display_name: Option<String>,
    pub room_name: Option<String>,
    pub room_alias: Option<String>,
    pub membership: Option<String>,
    pub user_is_target: Option<bool>,
    pub prio: Prio,
    pub content: Option<Content>,
    pub counts: Counts,
    pub devices: Vec<Device>,
}

impl Notification {
    /// An *event_id_only* notification: the homeserver sent the event id but no event type.
    pub fn is_event_id_only(&self) -> bool {
        self.event_id.is_some() && self.kind.is_none()
    }

    /// Roughly the heap bytes this notification holds: its strings, the raw
    /// content and the devices' `data` and `tweaks` maps (a `Value` costs
    /// about 10 times its JSON text; estimated from the text). For the
    /// in-flight byte budget.
    pub fn heap_size(&self) -> usize {
        let strings = [
            self.event_id.as_ref().map(EventId::as_str),
            self.room_id.as_deref(),
            self.kind.as_deref(),
            self.sender.as_deref(),
            self.sender_display_name.as_deref(),
            self.room_name.as_deref(),
            self.room_alias.as_deref(),
            self.membership.as_deref(),
        ]
        .iter()
        .map(|s| s.map_or(0, str::len))
        .sum::<usize>();
        let content = self.content.as_ref().map_or(0, |c| c.get().len());
        let devices = self
            .devices
            .iter()
            .map(|d| {
                std::mem::size_of::<Device>()
                    + d.app_id.as_str().len()
                    + d.pushkey.len()
                    + map_heap_size(&d.data)
                    + map_heap_size(&d.tweaks)
            })
            .sum::<usize>();
        std::mem::size_of::<Notification>() + strings + content + devices
    }
}

/// Heap bytes of a `Value` map: node overhead per entry plus its strings.
fn map_heap_size(m: &Map<String, Value>) -> usize {
    m.iter()
        .map(|(k, v)| 64 + k.len() + value_heap_size(v))
        .sum()
}

fn value_heap_size(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len(),
        Value::Array(a) => a
            .iter()
            .map(|v| std::mem::size_of::<Value>() + value_heap_size(v))
            .sum(),
        Value::Object(m) => map_heap_size(m),
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
    }
}

/// The `/notify` body for this notification and one of its devices: what the
/// outbox stores to rebuild the push later. `parse` reads it back to an equal
/// notification (with that one device). `content` is written as it came.
pub fn to_wire(n: &Notification, device: &Device) -> String {
    let devices = [wire_device(device)];
    let wire = Wire {
        notification: wire_notification(n, &devices),
    };
    // Plain structs, maps with string keys and checked raw JSON: serialising cannot fail.
    serde_json::to_string(&wire).unwrap_or_default()
}

/// [`to_wire`] in two parts, for a request whose devices share one stored
/// notification: the notification object without `devices`, and one device.
/// `store::join_wire` puts them back together.
pub fn to_wire_shared(n: &Notification) -> String {
    serde_json::to_string(&wire_notification(n, &[])).unwrap_or_default()
}

/// The device part of [`to_wire_shared`].
pub fn device_to_wire(device: &Device) -> String {
    serde_json::to_string(&wire_device(device)).unwrap_or_default()
}

fn wire_device(device: &Device) -> WireDevice<'_> {
    WireDevice {
        app_id: &device.app_id,
        data: &device.data,
        pushkey: &device.pushkey,
        pushkey_ts: device.pushkey_ts,
        tweaks: &device.tweaks,
    }
}

fn wire_notification<'a>(
    n: &'a Notification,
    devices: &'a [WireDevice<'a>],
) -> WireNotification<'a> {
    WireNotification {
        content: n.content.as_ref(),
        counts: WireCounts {
            missed_calls: n.counts.missed_calls,
            unread: n.counts.unread,
        },
        devices,
        event_id: n.event_id.as_ref(),
        membership: n.membership.as_deref(),
        prio: match n.prio {
            Prio::High => "high",
            Prio::Low => "low",
        },
        room_alias: n.room_alias.as_deref(),
        room_id: n.room_id.as_deref(),
        room_name: n.room_name.as_deref(),
        sender: n.sender.as_deref().or(n.sender_empty.then_some("")),
        sender_display_name: n.sender_display_name.as_deref(),
        kind: n.kind.as_deref(),
        user_is_target: n.user_is_target,
    }
}

/// The wire format, fields in the order of a `serde_json::Map` (sorted), as
/// before `content` was kept raw.
#[derive(Serialize)]
struct Wire<'a> {
    notification: WireNotification<'a>,
}
#[derive(Serialize)]
struct WireNotification<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a Content>,
    counts: WireCounts,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    devices: &'a [WireDevice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    event_id: Option<&'a EventId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    membership: Option<&'a str>,
    prio: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    room_alias: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    room_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    room_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sender: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sender_display_name: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_is_target: Option<bool>,
}
#[derive(Serialize)]
struct WireCounts {
    #[serde(skip_serializing_if = "Option::is_none")]
    missed_calls: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unread: Option<u64>,
}
#[derive(Serialize)]
struct WireDevice<'a> {
    app_id: &'a AppId,
    data: &'a Map<String, Value>,
    pushkey: &'a PushKey,
    #[serde(skip_serializing_if = "Option::is_none")]
    pushkey_ts: Option<u64>,
    tweaks: &'a Map<String, Value>,
}

/// Parses a request body. `max_devices` bounds `devices`. The content is copied.
pub fn parse(body: &[u8], max_devices: usize) -> Result<Notification, ParseError> {
    parse_with(body, max_devices, &|raw| {
        Content(Bytes::copy_from_slice(raw.get().as_bytes()))
    })
}

/// [`parse`], the content kept as a view into `body` (which it keeps alive).
pub fn parse_shared(body: &Bytes, max_devices: usize) -> Result<Notification, ParseError> {
    parse_with(body, max_devices, &|raw| Content::within(body, raw))
}

/// How the parser keeps the content it found.
type KeepContent<'k> = &'k dyn Fn(&RawValue) -> Content;

fn parse_with(
    body: &[u8],
    max_devices: usize,
    keep: KeepContent<'_>,
) -> Result<Notification, ParseError> {
    // 1. One pass: is it JSON (as a `Value` parse says), and what the fields
    //    the API defines hold.
    let root = match pass::read(body, max_devices, Maps::InPlace) {
        Ok(root) => root,
        Err(e) => reread(body, max_devices, e)?,
    };
    let Some(root) = root else {
        return Err(ParseError::NotJson("the body must be a JSON object".into()));
    };
    // 2. The fields' types, in a fixed order: the first wrong one is the error.
    match root.notification {
        Seen::Is(n) => check_notification(n, max_devices, keep),
        Seen::Null => Err(bad("notification", "required, but missing")),
        Seen::Other => Err(bad("notification", "must be an object")),
    }
}

/// The pass refused `body`: the error of a `Value` parse of it, if it has
/// one (the pass's own may name another position); if it has none, the pass
/// refused serde_json's raw-value token in a device's `data` or `tweaks`,
/// which a second pass leaves to the field checks.
#[cold]
fn reread(
    body: &[u8],
    max_devices: usize,
    first: serde_json::Error,
) -> Result<Option<pass::Root<'_>>, ParseError> {
    pass::check(body).map_err(|e| ParseError::NotJson(e.to_string()))?;
    pass::read(body, max_devices, Maps::Raw).map_err(|_| ParseError::NotJson(first.to_string()))
}

/// The entries of one JSON object as slices of the text, in order (a key may repeat).
struct RawObject<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> RawObject<'a> {
    /// `None` when `text` is not a JSON object (a content is checked when parsed, so never).
    fn of_text(text: &'a str) -> Option<RawObject<'a>> {
        serde_json::from_str(text).ok()
    }

    /// The value of `key`: the last one, as in a map.
    fn last(&self, key: &str) -> Option<&'a RawValue> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawObject<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RawObject<'a>, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = RawObject<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawObject<'a>, A::Error> {
                let mut entries = Vec::new();
                while let Some(Key(k)) = map.next_key::<Key<'a>>()? {
                    entries.push((k, map.next_value::<&'a RawValue>()?));
                }
                Ok(RawObject(entries))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// An object key, borrowed from the text unless it has escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key<'a>, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Key<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// What a raw value is, from its first character (the text is valid JSON).
enum Kind {
    Null,
    String,
    Object,
    Other,
}

fn kind_of(raw: &RawValue) -> Kind {
    match raw.get().trim_start().as_bytes().first() {
        Some(b'"') => Kind::String,
        Some(b'{') => Kind::Object,
        Some(b'n') | None => Kind::Null,
        Some(_) => Kind::Other,
    }
}

/// `prefix.key`, for an error's path.
fn path<P: fmt::Display + ?Sized>(prefix: &P, key: &str) -> String {
    format!("{prefix}.{key}")
}

/// The path of device `i`, written only for an error's message.
struct DevicePath(usize);

impl fmt::Display for DevicePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "notification.devices[{}]", self.0)
    }
}

/// A string field, still borrowed from the body where it can be: what is
/// only checked (`id` beside `event_id`) is never copied.
fn string<'a, P: fmt::Display + ?Sized>(
    v: Scalar<'a>,
    prefix: &P,
    key: &str,
) -> Result<Option<Cow<'a, str>>, ParseError> {
    match v {
        Scalar::Null => Ok(None),
        Scalar::Str(s) => Ok(Some(s)),
        _ => Err(bad(path(prefix, key), "must be a string")),
    }
}

/// A string where `""` means absent (Synapse's badge-only pushes send `"id": ""`).
fn non_empty<'a>(
    v: Scalar<'a>,
    prefix: &str,
    key: &str,
) -> Result<Option<Cow<'a, str>>, ParseError> {
    Ok(string(v, prefix, key)?.filter(|s| !s.is_empty()))
}

fn uint<P: fmt::Display + ?Sized>(
    v: Scalar<'_>,
    prefix: &P,
    key: &str,
) -> Result<Option<u64>, ParseError> {
    match v {
        Scalar::Null => Ok(None),
        Scalar::UInt(n) => Ok(Some(n)),
        _ => Err(bad(path(prefix, key), "must be a non-negative integer")),
    }
}

/// Refuses the value at `prefix.key` when it is longer than `max` bytes.
fn at_most_bytes<P: fmt::Display + ?Sized>(
    prefix: &P,
    key: &str,
    value: Option<&str>,
    max: usize,
) -> Result<(), ParseError> {
    match value {
        Some(v) if v.len() > max => Err(bad(path(prefix, key), format!("longer than {max} bytes"))),
        _ => Ok(()),
    }
}

fn check_notification(
    n: pass::Fields<'_>,
    max_devices: usize,
    keep: KeepContent<'_>,
) -> Result<Notification, ParseError> {
    const P: &str = "notification";
    let event_id = non_empty(n.event_id, P, "event_id")?;
    let id = non_empty(n.id, P, "id")?;
    at_most_bytes(P, "event_id", event_id.as_deref(), MAX_ID_BYTES)?;
    at_most_bytes(P, "id", id.as_deref(), MAX_ID_BYTES)?;
    let room_id = non_empty(n.room_id, P, "room_id")?;
    at_most_bytes(P, "room_id", room_id.as_deref(), MAX_ID_BYTES)?;
    let prio = match n.prio {
        Scalar::Null => Prio::High,
        Scalar::Str(s) if s == "low" => Prio::Low,
        // The spec allows only high/low; anything else is treated as high rather than refused.
        Scalar::Str(_) => Prio::High,
        _ => {
            return Err(bad(
                "notification.prio",
                "must be a string (\"high\" or \"low\")",
            ))
        }
    };
    let counts = match n.counts {
        Seen::Null => Counts::default(),
        Seen::Is(c) => {
            const C: &str = "notification.counts";
            Counts {
                unread: uint(c.unread, C, "unread")?,
                missed_calls: uint(c.missed_calls, C, "missed_calls")?,
            }
        }
        Seen::Other => return Err(bad("notification.counts", "must be an object")),
    };
    let sender = string(n.sender, P, "sender")?;
    let kind = non_empty(n.kind, P, "type")?;
    let sender_display_name = non_empty(n.sender_display_name, P, "sender_display_name")?;
    let room_name = non_empty(n.room_name, P, "room_name")?;
    let room_alias = non_empty(n.room_alias, P, "room_alias")?;
    let membership = non_empty(n.membership, P, "membership")?;
    let user_is_target = match n.user_is_target {
        Scalar::Null => None,
        Scalar::Bool(b) => Some(b),
        _ => return Err(bad("notification.user_is_target", "must be true or false")),
    };
    let content = match n.content.map(|raw| (kind_of(raw), raw)) {
        None | Some((Kind::Null, _)) => None,
        Some((Kind::Object, raw)) => Some(keep(raw)),
        Some(_) => return Err(bad("notification.content", "must be an object")),
    };
    let devices = match n.devices {
        Seen::Null => return Err(bad("notification.devices", "required, but missing")),
        Seen::Is(d) => d,
        Seen::Other => return Err(bad("notification.devices", "must be a list")),
    };
    if devices.count == 0 {
        return Err(bad("notification.devices", "must not be empty"));
    }
    if devices.count > max_devices {
        return Err(bad(
            "notification.devices",
            format!(
                "{} devices, at most {max_devices} are accepted per request",
                devices.count
            ),
        ));
    }
    let mut checked = Vec::with_capacity(devices.read.len());
    for (i, d) in devices.read.into_iter().enumerate() {
        checked.push(check_device(i, d)?);
    }
    Ok(Notification {
        event_id: event_id.or(id).map(|e| EventId::from(e.into_owned())),
        room_id: room_id.map(Cow::into_owned),
        kind: kind.map(Cow::into_owned),
        sender_empty: sender.as_deref().is_some_and(str::is_empty),
        sender: sender.filter(|s| !s.is_empty()).map(Cow::into_owned),
        sender_display_name: sender_display_name.map(Cow::into_owned),
        room_name: room_name.map(Cow::into_owned),
        room_alias: room_alias.map(Cow::into_owned),
        membership: membership.map(Cow::into_owned),
        user_is_target,
        prio,
        content,
        counts,
        devices: checked,
    })
}

fn check_device(i: usize, d: Seen<pass::DeviceFields<'_>>) -> Result<Device, ParseError> {
    // Formatted only for an error.
    let prefix = DevicePath(i);
    let d = match d {
        Seen::Is(d) => d,
        Seen::Null | Seen::Other => return Err(bad(prefix.to_string(), "must be an object")),
    };
    let required = |v: Scalar<'_>, key: &str| -> Result<String, ParseError> {
        match string(v, &prefix, key)? {
            Some(s) if !s.is_empty() => Ok(s.into_owned()),
            Some(_) => Err(bad(path(&prefix, key), "must not be empty")),
            None => Err(bad(path(&prefix, key), "required, but missing")),
        }
    };
    let app_id = required(d.app_id, "app_id")?;
    if app_id.chars().count() > MAX_APP_ID_CHARS {
        return Err(bad(
            path(&prefix, "app_id"),
            format!("longer than {MAX_APP_ID_CHARS} characters"),
        ));
    }
    let pushkey = required(d.pushkey, "pushkey")?;
    at_most_bytes(&prefix, "pushkey", Some(&pushkey), MAX_PUSHKEY_BYTES)?;
    let object = |v: Seen<MapOf<'_>>, key: &str| -> Result<Map<String, Value>, ParseError> {
        match v {
            Seen::Null => Ok(Map::new()),
            Seen::Is(MapOf::Built(m)) => Ok(m),
            Seen::Is(MapOf::Raw(raw)) => {
                serde_json::from_str(raw.get()).map_err(|e| ParseError::NotJson(e.to_string()))
            }
            Seen::Other => Err(bad(path(&prefix, key), "must be an object")),
        }
    };
    Ok(Device {
        app_id: app_id.into(),
        pushkey: pushkey.into(),
        pushkey_ts: uint(d.pushkey_ts, &prefix, "pushkey_ts")?,
        data: object(d.data, "data")?,
        tweaks: object(d.tweaks, "tweaks")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn badge_only_synapse_shape_is_accepted() {
        let body = br#"{"notification":{"id":"","sender":"","type":null,"counts":{"unread":0},
            "devices":[{"app_id":"a","pushkey":"k","pushkey_ts":1,"data":{},"tweaks":{}}]}}"#;
        let n = parse(body, 100).expect("accepted");
        assert_eq!(n.event_id, None);
        assert_eq!(n.sender, None);
        assert!(n.sender_empty);
        assert_eq!(n.kind, None);
        assert_eq!(n.counts.unread, Some(0));
        assert!(!n.is_event_id_only());
    }

    #[test]
    fn id_is_a_synonym_of_event_id() {
        let body = br#"{"notification":{"id":"$e","devices":[{"app_id":"a","pushkey":"k"}]}}"#;
        let n = parse(body, 100).expect("accepted");
        assert_eq!(n.event_id, Some(EventId::from("$e")));
        assert!(n.is_event_id_only());
    }

    #[test]
    fn wire_form_of_one_device_parses_back_to_the_same_notification() {
        let body = br##"{"notification":{"event_id":"$e","room_id":"!r","type":"m.room.message",
            "sender":"@a:x","sender_display_name":"A","room_name":"R","room_alias":"#r:x",
            "membership":"invite","user_is_target":true,"prio":"low",
            "content":{"body":"hi","n":[1,2.5,null]},"counts":{"unread":3,"missed_calls":1},
            "devices":[{"app_id":"a","pushkey":"k1","pushkey_ts":5,"data":{"format":"event_id_only"},"tweaks":{"sound":"x"}},
                       {"app_id":"b","pushkey":"k2"}]}}"##;
        let n = parse(body, 100).expect("accepted");
        for d in &n.devices {
            let back = parse(to_wire(&n, d).as_bytes(), 1).expect("wire form parses");
            let mut one = n.clone();
            one.devices = vec![d.clone()];
            assert_eq!(back, one);
        }
        let badge = parse(
            br#"{"notification":{"id":"","sender":"","counts":{},"devices":[{"app_id":"a","pushkey":"k"}]}}"#,
            1,
        )
        .expect("badge-only");
        let back = parse(to_wire(&badge, &badge.devices[0]).as_bytes(), 1).expect("parses");
        assert!(back.sender_empty, "an empty sender survives the outbox");
        assert_eq!(back, badge);
    }

    #[test]
    fn not_json_errors_are_those_of_a_value_parse() {
        let deep = format!(
            "{{\"notification\":{}{}}}",
            "[".repeat(200),
            "]".repeat(200)
        );
        let bodies: Vec<Vec<u8>> = vec![
            deep.into_bytes(),
            b"{\"notification\":{\"content\":{\"a\":\"\\ud800\"}}}".to_vec(),
            b"{\"notification\":{\"content\":{\"a\":\"\xff\"}}}".to_vec(),
            b"{\"notification\":{\"counts\":{\"unread\":1e999}}}".to_vec(),
            b"{\"notification\":{}} x".to_vec(),
            b"{\"notification\":{\"a\":1,}}".to_vec(),
            b"{1:2}".to_vec(),
            b"{\"notification\":{\"content\":{\"a\":\"\x01\"}}}".to_vec(),
        ];
        for body in bodies {
            let expected = serde_json::from_slice::<Value>(&body)
                .expect_err("malformed")
                .to_string();
            assert_eq!(
                parse(&body, 100),
                Err(ParseError::NotJson(expected)),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    #[test]
    fn content_is_kept_as_sent_and_read_key_by_key() {
        let body = br#"{"notification":{"content":{"b":"x","n":[1,{"d":2}],"a":"y","b":"z","c":3,"a":null},
            "devices":[{"app_id":"a","pushkey":"k"}]}}"#;
        let n = parse(body, 100).expect("accepted");
        let c = n.content.as_ref().expect("content");
        assert_eq!(
            c.get(),
            r#"{"b":"x","n":[1,{"d":2}],"a":"y","b":"z","c":3,"a":null}"#
        );
        // Repeated keys: the last one counts, as in a map.
        assert_eq!(c.field("b"), Some(Value::from("z")));
        assert_eq!(c.field("n"), Some(serde_json::json!([1, {"d": 2}])));
        assert_eq!(c.field("missing"), None);
        let [b, missing, n] = c.raw_fields(["b", "missing", "n"]);
        assert_eq!(
            (
                b.map(RawValue::get),
                missing.map(RawValue::get),
                n.map(RawValue::get)
            ),
            (Some(r#""z""#), None, Some(r#"[1,{"d":2}]"#))
        );
        let strings: Vec<(String, String)> = c.strings().into_iter().collect();
        assert_eq!(strings, vec![("b".to_owned(), "z".to_owned())]);
        let map = c.to_map();
        assert_eq!(
            Value::Object(map.clone()),
            serde_json::json!({"a": null, "b": "z", "c": 3, "n": [1, {"d": 2}]})
        );
        assert_eq!(Content::from(map), *c);
    }

    #[test]
    fn escaped_keys_are_read_by_their_value() {
        let body = br#"{"notification":{"devices":[{"\u0061pp_id":"a","push\u006bey":"k\u0021"}],
            "content":{"b\u006fdy":"hi"}}}"#;
        let n = parse(body, 100).expect("accepted");
        assert_eq!(n.devices[0].app_id, "a");
        assert_eq!(n.devices[0].pushkey, "k!");
        let c = n.content.expect("content");
        assert_eq!(c.field("body"), Some(Value::from("hi")));
        assert_eq!(c.strings().get("body").map(String::as_str), Some("hi"));
    }

    #[test]
    fn shared_content_is_a_view_of_the_body_only_when_it_is_most_of_it() {
        let inside = |body: &Bytes, c: &Content| {
            let (start, at) = (body.as_ptr() as usize, c.get().as_ptr() as usize);
            (start..start + body.len()).contains(&at)
        };
        let mostly_content = Bytes::from(format!(
            r#"{{"notification":{{"content":{{"body":"{}"}},"devices":[{{"app_id":"a","pushkey":"k"}}]}}}}"#,
            "x".repeat(1000)
        ));
        let n = parse_shared(&mostly_content, 1).expect("accepted");
        assert!(inside(
            &mostly_content,
            n.content.as_ref().expect("content")
        ));
        assert_eq!(n, parse(&mostly_content, 1).expect("accepted"));
        let mostly_data = Bytes::from(format!(
            r#"{{"notification":{{"content":{{"body":"hi"}},"devices":[{{"app_id":"a","pushkey":"k","data":{{"pad":"{}"}}}}]}}}}"#,
            "x".repeat(1000)
        ));
        let n = parse_shared(&mostly_data, 1).expect("accepted");
        let c = n.content.as_ref().expect("content");
        assert!(!inside(&mostly_data, c), "a small content is copied");
        assert_eq!(c.get(), r#"{"body":"hi"}"#);
    }

    #[test]
    fn wrong_type_names_the_path() {
        let body = br#"{"notification":{"devices":[{"app_id":"a","pushkey":"k"},{"app_id":"a","pushkey":3}]}}"#;
        assert_eq!(
            parse(body, 100),
            Err(bad("notification.devices[1].pushkey", "must be a string"))
        );
    }

    const DEVICE: &str = r#"{"app_id":"a","pushkey":"k"}"#;

    /// What a `Value` parse of `body` says is wrong with it.
    fn value_error(body: &[u8]) -> ParseError {
        let e = serde_json::from_slice::<Value>(body).expect_err("malformed");
        ParseError::NotJson(e.to_string())
    }

    /// `levels` nested arrays.
    fn nested(levels: usize) -> String {
        format!("{}{}", "[".repeat(levels), "]".repeat(levels))
    }

    #[test]
    fn a_syntax_error_anywhere_wins_over_a_shape_error() {
        let bodies: Vec<Vec<u8>> = vec![
            br#"{"notification":5,"x":[1,]}"#.to_vec(),
            br#"{"notification":{"event_id":5,"devices":[]},"x":1e999}"#.to_vec(),
            br#"{"notification":{"devices":[{"app_id":3}],"content":{"a":"\ud800"}}}"#.to_vec(),
            br#"{"notification":{"devices":[5]}} x"#.to_vec(),
            br#"{"notification":{"counts":{"unread":-1},"sender":"\ud800"}}"#.to_vec(),
            br#"{"notification":{"counts":{"unread":-1},"sender":"\x"}}"#.to_vec(),
            // Invalid JSON in a value a later key replaces, or beyond the devices taken.
            br#"{"notification":{"content":{"a":1e999},"content":{},"devices":[{"app_id":"a","pushkey":"k"}]}}"#.to_vec(),
            br#"{"notification":{"devices":[{"app_id":"a","pushkey":"k","data":{"a":1e999},"data":{}}]}}"#.to_vec(),
            br#"{"notification":{"content":{"a":-1e999},"devices":[{"app_id":"a","pushkey":"k"}]},"notification":{"devices":[{"app_id":"a","pushkey":"k"}]}}"#.to_vec(),
            br#"{"notification":{"devices":[{"app_id":"a","pushkey":"k"},{"app_id":"a","pushkey":"k","data":{"a":1e999}}]}}"#.to_vec(),
            br#"{"notification":{"devices":[{"app_id":"a","pushkey":"k"}],"content":{"a":[1,]}}}"#.to_vec(),
            br#"{"notification":{"devices":[{"app_id":"a","pushkey":"k"}],"content":{"a":{"b":1,}}}}"#.to_vec(),
            br#"{"notification":{"devices":[{"app_id":"a","pushkey":"k"}],"content":{"a":tru}}}"#.to_vec(),
            b"{\"notification\":{\"devices\":[{\"app_id\":\"a\",\"pushkey\":\"k\"}],\"content\":{\"\xff\":1}}}".to_vec(),
            b"{\"notification\":{\"devices\":[{\"app_id\":\"a\",\"pushkey\":\"k\"}],\"content\":{\"a\":1}\xff}}".to_vec(),
            b"{\"notification\":{\"devices\":[{\"app_id\":\"a\",\"pushkey\":\"k\",\"\xff\":1}]}}".to_vec(),
            b"{\"notification\":{\"devices\":[{\"app_id\":\"a\",\"pushkey\":\"k\"}],\"content\":{\"a\":\"\t\"}}}".to_vec(),
            b"{\"notification\":{\"devices\":[{\"app_id\":\"a\",\"pushkey\":\"k\"}],\"content\":{\"a\":1}".to_vec(),
            br#"{"notification":{"devices":[{"app_id":"a","pushkey":"k"}],"content":{"a":1}}}}"#.to_vec(),
            br#"[1e999]"#.to_vec(),
            br#"{"notification":{"devices":[{"app_id":"a","pushkey":"k"}],"content":{"a":NaN}}}"#.to_vec(),
            br#"{"notification":{"devices":[{"app_id":"a","pushkey":"k"}],"content":{"a":-Infinity}}}"#.to_vec(),
        ];
        for body in bodies {
            let expected = Err(value_error(&body));
            assert_eq!(
                parse(&body, 1),
                expected,
                "{}",
                String::from_utf8_lossy(&body)
            );
            assert_eq!(parse_shared(&Bytes::from(body), 1), expected);
        }
    }

    #[test]
    fn a_body_that_is_json_but_not_an_object_is_not_json() {
        for body in ["[]", " \n[1]", "\"x\"", "1", "null", "true"] {
            assert_eq!(
                parse(body.as_bytes(), 1),
                Err(ParseError::NotJson("the body must be a JSON object".into())),
                "{body}"
            );
        }
    }

    #[test]
    fn the_recursion_limit_counts_from_the_body_root() {
        // (template, most levels at `@` that a `Value` parse of the body accepts: 127 in all)
        let d = DEVICE;
        let cases = [
            (
                format!(r#"{{"x":@,"notification":{{"devices":[{d}]}}}}"#),
                126,
            ),
            (
                format!(r#"{{"notification":{{"x":@,"devices":[{d}]}}}}"#),
                125,
            ),
            (
                format!(r#"{{"notification":{{"content":{{"a":@}},"devices":[{d}]}}}}"#),
                124,
            ),
            (
                format!(
                    r#"{{"notification":{{"content":{{"a":@}},"content":{{}},"devices":[{d}]}}}}"#
                ),
                124,
            ),
            (
                format!(r#"{{"notification":{{"counts":{{"x":@}},"devices":[{d}]}}}}"#),
                124,
            ),
            (format!(r#"{{"notification":{{"devices":[{d},@]}}}}"#), 124),
            (
                r#"{"notification":{"devices":[{"app_id":"a","pushkey":"k","x":@}]}}"#.to_owned(),
                123,
            ),
            (
                r#"{"notification":{"devices":[{"app_id":"a","pushkey":"k","data":{"a":@}}]}}"#
                    .to_owned(),
                122,
            ),
            (
                r#"{"notification":{"devices":[{"app_id":"a","pushkey":"k","tweaks":{"a":@}}]}}"#
                    .to_owned(),
                122,
            ),
            (
                r#"{"notification":{"devices":[{"app_id":"a","pushkey":"k","pushkey_ts":@}]}}"#
                    .to_owned(),
                123,
            ),
            (
                format!(r#"{{"notification":{{"event_id":@,"devices":[{d}]}}}}"#),
                125,
            ),
        ];
        for (template, most) in cases {
            let deepest = template.replace('@', &nested(most));
            assert!(
                serde_json::from_str::<Value>(&deepest).is_ok(),
                "{template}"
            );
            let too_deep = template.replace('@', &nested(most + 1));
            assert!(
                !matches!(parse(deepest.as_bytes(), 2), Err(ParseError::NotJson(_))),
                "{template}: {:?}",
                parse(deepest.as_bytes(), 2)
            );
            assert_eq!(
                parse(too_deep.as_bytes(), 2),
                Err(value_error(too_deep.as_bytes())),
                "{template}"
            );
        }
        // The deepest content is kept as sent.
        let deepest = format!(
            r#"{{"notification":{{"content":{{"a":{}}},"devices":[{DEVICE}]}}}}"#,
            nested(124)
        );
        let n = parse(deepest.as_bytes(), 1).expect("accepted");
        assert_eq!(
            n.content.expect("content").get(),
            format!(r#"{{"a":{}}}"#, nested(124))
        );
    }

    #[test]
    fn a_repeated_key_counts_by_its_last_value_at_every_level() {
        let d = DEVICE;
        let root = |body: String| parse(body.as_bytes(), 1);
        assert!(root(format!(
            r#"{{"notification":{{"devices":[]}},"notification":{{"devices":[{d}]}}}}"#
        ))
        .is_ok());
        let refused = [
            (
                format!(r#"{{"notification":{{"devices":[{d}]}},"notification":null}}"#),
                bad("notification", "required, but missing"),
            ),
            (
                format!(r#"{{"notification":{{"devices":[{d}]}},"notification":[]}}"#),
                bad("notification", "must be an object"),
            ),
            (
                format!(r#"{{"notification":{{"devices":[{d}],"devices":5}}}}"#),
                bad("notification.devices", "must be a list"),
            ),
            (
                format!(r#"{{"notification":{{"content":{{}},"content":[],"devices":[{d}]}}}}"#),
                bad("notification.content", "must be an object"),
            ),
        ];
        for (body, error) in refused {
            assert_eq!(root(body.clone()), Err(error), "{body}");
        }
        let body = r#"{"notification":{"event_id":"$a","event_id":"$b","room_id":"!r","room_id":null,
            "sender":5,"sender":"@s","counts":{"unread":1},"counts":{"missed_calls":2},
            "prio":"low","prio":"high","type":"t","type":"","user_is_target":1,"user_is_target":false,
            "content":{"a":1},"content":{"b":2},"devices":[{"app_id":"x"}],"devices":[
            {"app_id":"a","app_id":"b","pushkey":5,"pushkey":"k","data":{"x":1},"data":{"y":2},
              "tweaks":{"s":1},"tweaks":null,"pushkey_ts":1,"pushkey_ts":null}]}}"#
            .to_owned();
        let n = root(body).expect("accepted");
        assert_eq!(n.event_id, Some(EventId::from("$b")));
        assert_eq!(n.room_id, None);
        assert_eq!(n.sender.as_deref(), Some("@s"));
        assert_eq!(
            n.counts,
            Counts {
                unread: None,
                missed_calls: Some(2)
            }
        );
        assert_eq!(n.prio, Prio::High);
        assert_eq!(n.kind, None);
        assert_eq!(n.user_is_target, Some(false));
        assert_eq!(n.content.expect("content").get(), r#"{"b":2}"#);
        assert_eq!(n.devices.len(), 1);
        let dev = &n.devices[0];
        assert_eq!(dev.app_id, "b");
        assert_eq!(dev.pushkey, "k");
        assert_eq!(dev.pushkey_ts, None);
        assert_eq!(Value::Object(dev.data.clone()), serde_json::json!({"y": 2}));
        assert!(dev.tweaks.is_empty());
    }

    #[test]
    fn shape_errors_come_in_field_order() {
        let long = "x".repeat(256);
        let long_app = "a".repeat(65);
        let cases: Vec<(String, usize, ParseError)> = vec![
            (r#"{"notification":{"devices":5,"event_id":5}}"#.into(), 1, bad("notification.event_id", "must be a string")),
            (format!(r#"{{"notification":{{"event_id":"{long}","id":5}}}}"#), 1, bad("notification.id", "must be a string")),
            (format!(r#"{{"notification":{{"id":"{long}","room_id":5}}}}"#), 1, bad("notification.id", "longer than 255 bytes")),
            (r#"{"notification":{"prio":1,"room_id":5}}"#.into(), 1, bad("notification.room_id", "must be a string")),
            (r#"{"notification":{"counts":5,"prio":1}}"#.into(), 1, bad("notification.prio", "must be a string (\"high\" or \"low\")")),
            (r#"{"notification":{"sender":5,"counts":{"missed_calls":-1,"unread":1.5}}}"#.into(), 1, bad("notification.counts.unread", "must be a non-negative integer")),
            (r#"{"notification":{"sender":5,"counts":[]}}"#.into(), 1, bad("notification.counts", "must be an object")),
            (r#"{"notification":{"type":5,"sender":5}}"#.into(), 1, bad("notification.sender", "must be a string")),
            (r#"{"notification":{"membership":5,"room_alias":5,"room_name":5,"sender_display_name":5,"type":5}}"#.into(), 1, bad("notification.type", "must be a string")),
            (r#"{"notification":{"membership":5,"room_alias":5,"room_name":5,"sender_display_name":5}}"#.into(), 1, bad("notification.sender_display_name", "must be a string")),
            (r#"{"notification":{"membership":5,"room_alias":5,"room_name":5}}"#.into(), 1, bad("notification.room_name", "must be a string")),
            (r#"{"notification":{"membership":5,"room_alias":5}}"#.into(), 1, bad("notification.room_alias", "must be a string")),
            (r#"{"notification":{"user_is_target":"x","membership":5}}"#.into(), 1, bad("notification.membership", "must be a string")),
            (r#"{"notification":{"content":5,"user_is_target":"x"}}"#.into(), 1, bad("notification.user_is_target", "must be true or false")),
            (r#"{"notification":{"devices":5,"content":5}}"#.into(), 1, bad("notification.content", "must be an object")),
            (r#"{"notification":{"devices":null}}"#.into(), 1, bad("notification.devices", "required, but missing")),
            (r#"{"notification":{"devices":{}}}"#.into(), 1, bad("notification.devices", "must be a list")),
            (r#"{"notification":{"devices":[]}}"#.into(), 1, bad("notification.devices", "must not be empty")),
            (r#"{"notification":{"devices":[5,{"app_id":5}]}}"#.into(), 1, bad("notification.devices", "2 devices, at most 1 are accepted per request")),
            (format!(r#"{{"notification":{{"devices":[{DEVICE},null]}}}}"#), 2, bad("notification.devices[1]", "must be an object")),
            (format!(r#"{{"notification":{{"devices":[{DEVICE},[],5]}}}}"#), 3, bad("notification.devices[1]", "must be an object")),
            (r#"{"notification":{"devices":[{"pushkey":5,"app_id":""}]}}"#.into(), 1, bad("notification.devices[0].app_id", "must not be empty")),
            (format!(r#"{{"notification":{{"devices":[{{"pushkey":5,"app_id":"{long_app}"}}]}}}}"#), 1, bad("notification.devices[0].app_id", "longer than 64 characters")),
            (r#"{"notification":{"devices":[{"app_id":"a","pushkey":"","pushkey_ts":-1}]}}"#.into(), 1, bad("notification.devices[0].pushkey", "must not be empty")),
            (r#"{"notification":{"devices":[{"app_id":"a","pushkey":"k","data":5,"pushkey_ts":-1}]}}"#.into(), 1, bad("notification.devices[0].pushkey_ts", "must be a non-negative integer")),
            (r#"{"notification":{"devices":[{"app_id":"a","pushkey":"k","tweaks":5,"data":5}]}}"#.into(), 1, bad("notification.devices[0].data", "must be an object")),
            (r#"{"notification":{"devices":[{"app_id":"a","pushkey":"k","tweaks":5}]}}"#.into(), 1, bad("notification.devices[0].tweaks", "must be an object")),
        ];
        for (body, max, expected) in cases {
            assert_eq!(parse(body.as_bytes(), max), Err(expected), "{body}");
        }
    }

    #[test]
    fn values_are_read_as_their_json_types() {
        let ts = |v: &str| {
            let body = format!(
                r#"{{"notification":{{"devices":[{{"app_id":"a","pushkey":"k","pushkey_ts":{v}}}]}}}}"#
            );
            parse(body.as_bytes(), 1).map(|n| n.devices[0].pushkey_ts)
        };
        assert_eq!(ts("0"), Ok(Some(0)));
        assert_eq!(ts("18446744073709551615"), Ok(Some(u64::MAX)));
        let not_uint = Err(bad(
            "notification.devices[0].pushkey_ts",
            "must be a non-negative integer",
        ));
        for v in [
            "18446744073709551616",
            "-0",
            "1.0",
            "1e2",
            "-1",
            "\"1\"",
            "true",
            "[]",
            "{}",
        ] {
            assert_eq!(ts(v), not_uint, "{v}");
        }
        let notification = |fields: &str| {
            let body = format!(r#"{{"notification":{{{fields},"devices":[{DEVICE}]}}}}"#);
            parse(body.as_bytes(), 1)
        };
        let prio = |v: &str| notification(&format!(r#""prio":{v}"#)).map(|n| n.prio);
        assert_eq!(prio(r#""low""#), Ok(Prio::Low));
        assert_eq!(prio(r#""\u006cow""#), Ok(Prio::Low));
        assert_eq!(prio(r#""LOW""#), Ok(Prio::High));
        assert_eq!(prio(r#""""#), Ok(Prio::High));
        assert_eq!(prio("null"), Ok(Prio::High));
        let n = notification(
            r#""\u0065vent_id":"","id":"$x","sender":"\u0041\n","type":"","room_name":"\u00e9","user_is_target":true"#,
        )
        .expect("accepted");
        assert_eq!(n.event_id, Some(EventId::from("$x")));
        assert_eq!(n.sender.as_deref(), Some("A\n"));
        assert_eq!(n.kind, None);
        assert_eq!(n.room_name.as_deref(), Some("é"));
        assert_eq!(n.user_is_target, Some(true));
        let n = notification(r#""counts":{"unread":0,"missed_calls":18446744073709551615,"x":[{}]},"unknown":{"a":[1,2.5,"x",null]}"#)
            .expect("accepted");
        assert_eq!(
            n.counts,
            Counts {
                unread: Some(0),
                missed_calls: Some(u64::MAX)
            }
        );
        let n = notification(r#""counts":null,"content":null"#).expect("accepted");
        assert_eq!(n.counts, Counts::default());
        assert_eq!(n.content, None);
        let body = br#" {"notification":{"devices":[{"app_id":"a","pushkey":"k","data":{"url":"u","n":[1.5,-2,{"x":null}]},"tweaks":{"sound":"s"}}]}} "#;
        let d = &parse(body, 1).expect("accepted").devices[0];
        assert_eq!(
            Value::Object(d.data.clone()),
            serde_json::json!({"url": "u", "n": [1.5, -2, {"x": null}]})
        );
        assert_eq!(
            Value::Object(d.tweaks.clone()),
            serde_json::json!({"sound": "s"})
        );
    }

    /// serde_json's `Value` parse reads an object whose first key is its
    /// private raw-value token as JSON text: a device's `data` and `tweaks`
    /// are read as such a parse of their own text (the errors' positions
    /// count from that text), in field order.
    #[test]
    fn the_raw_value_token_in_data_reads_as_a_parse_of_data_alone() {
        let device = |fields: &str| {
            let body = format!(
                r#"{{"notification":{{"devices":[{{"app_id":"a","pushkey":"k",{fields}}},{{"app_id":5}}]}}}}"#
            );
            parse(body.as_bytes(), 2).map(|n| Value::Object(n.devices[0].data.clone()))
        };
        let token = "$serde_json::private::RawValue";
        assert_eq!(
            device(&format!(r#""data":{{"x":{{"{token}":"[1, 2]"}}}}"#)),
            Err(bad("notification.devices[1].app_id", "must be a string"))
        );
        for field in ["data", "tweaks"] {
            assert_eq!(
                device(&format!(r#""{field}":{{"x":{{"{token}":5}}}}"#)),
                Err(ParseError::NotJson(
                    "invalid type: integer `5`, expected raw value at line 1 column 40".into()
                ))
            );
            assert_eq!(
                device(&format!(r#""{field}":{{"x":{{"{token}":"[1,"}}}}"#)),
                Err(ParseError::NotJson(
                    "EOF while parsing a value at line 1 column 3".into()
                ))
            );
        }
        let one = |fields: &str| {
            let body = format!(
                r#"{{"notification":{{"devices":[{{"app_id":"a","pushkey":"k",{fields}}}]}}}}"#
            );
            parse(body.as_bytes(), 1).map(|n| Value::Object(n.devices[0].data.clone()))
        };
        assert_eq!(
            one(&format!(r#""data":{{"x":{{"{token}":"[1, 2]"}}}}"#)),
            Ok(serde_json::json!({"x": [1, 2]}))
        );
        assert_eq!(
            one(&format!(r#""data":{{"{token}":5}}"#)),
            Ok(serde_json::json!({ token: 5 }))
        );
    }
}
