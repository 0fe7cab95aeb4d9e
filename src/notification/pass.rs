//! One pass over a `/notify` body: the values of the fields the API defines,
//! as they were seen (borrowed from the body where they can be), every other
//! value checked as JSON and skipped.
//!
//! The pass walks the body with the parser paths a `serde_json::Value` takes
//! (`deserialize_any` at every level), so what it refuses, and where, is what
//! a `Value` parse refuses, the recursion limit included. Two values are read
//! differently and checked again on their own: the event `content`, kept as
//! raw text (serde_json's raw reader is more lenient than its `Value` parser,
//! so the text is walked again like a `Value`, and its depth added to the
//! two levels above it), and, in [`Maps::Raw`] mode, a device's `data` and
//! `tweaks`. The type checks of the fields come after the pass, so a syntax
//! error anywhere wins over a wrong type.

use std::borrow::Cow;
use std::fmt;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::{kind_of, Kind};

/// serde_json's recursion limit: the 128th nested array or object is refused.
const MOST_LEVELS: usize = 127;
/// Levels above the event `content`: the body and `notification`.
const ABOVE_CONTENT: usize = 2;

/// How a device's `data` and `tweaks` are read.
#[derive(Clone, Copy)]
pub(super) enum Maps {
    /// Built during the pass (the body's own parse).
    InPlace,
    /// Kept as raw text and parsed on their own, as a `Map` parse of that
    /// text alone: for serde_json's raw-value token, which a `Value` parse
    /// reads as JSON text, with errors that count their position from it.
    Raw,
}

/// A scalar field's value: only what its type check needs.
#[derive(Default)]
pub(super) enum Scalar<'a> {
    /// Absent or `null`.
    #[default]
    Null,
    Str(Cow<'a, str>),
    Bool(bool),
    /// An integer that fits a `u64`.
    UInt(u64),
    /// Any other number, list or object.
    Other,
}

/// An object field's value (a list for `devices`).
#[derive(Default)]
pub(super) enum Seen<T> {
    /// Absent or `null`.
    #[default]
    Null,
    Is(T),
    /// A value of another type.
    Other,
}

/// The body's root object.
#[derive(Default)]
pub(super) struct Root<'a> {
    pub notification: Seen<Fields<'a>>,
}

/// The fields of `notification`.
#[derive(Default)]
pub(super) struct Fields<'a> {
    pub event_id: Scalar<'a>,
    pub id: Scalar<'a>,
    pub room_id: Scalar<'a>,
    pub kind: Scalar<'a>,
    pub sender: Scalar<'a>,
    pub sender_display_name: Scalar<'a>,
    pub room_name: Scalar<'a>,
    pub room_alias: Scalar<'a>,
    pub membership: Scalar<'a>,
    pub user_is_target: Scalar<'a>,
    pub prio: Scalar<'a>,
    /// Raw, of any type (`null` included).
    pub content: Option<&'a RawValue>,
    pub counts: Seen<CountFields<'a>>,
    pub devices: Seen<Devices<'a>>,
}

#[derive(Default)]
pub(super) struct CountFields<'a> {
    pub unread: Scalar<'a>,
    pub missed_calls: Scalar<'a>,
}

pub(super) struct Devices<'a> {
    /// How many the list holds.
    pub count: usize,
    /// The first `max_devices` of them (the rest are only checked).
    pub read: Vec<Seen<DeviceFields<'a>>>,
}

#[derive(Default)]
pub(super) struct DeviceFields<'a> {
    pub app_id: Scalar<'a>,
    pub pushkey: Scalar<'a>,
    pub pushkey_ts: Scalar<'a>,
    pub data: Seen<MapOf<'a>>,
    pub tweaks: Seen<MapOf<'a>>,
}

/// A `data` or `tweaks` object, as [`Maps`] says.
pub(super) enum MapOf<'a> {
    Built(Map<String, Value>),
    Raw(&'a RawValue),
}

/// Reads `body` in one pass. `None` when it is JSON but not an object. An
/// error says only that the body is not what a `Value` parse accepts
/// (its message may differ from that parse's: see the module doc).
pub(super) fn read(
    body: &[u8],
    max_devices: usize,
    maps: Maps,
) -> Result<Option<Root<'_>>, serde_json::Error> {
    let reader = Any(RootReader(Options { max_devices, maps }));
    // A body that is UTF-8 throughout (every honest one) is read as text:
    // checked once here, instead of each string on its own as serde_json
    // does for bytes (30-odd strings a notification). Any other body takes
    // the bytes path, whose error is the one a `Value` parse gives.
    let root = match std::str::from_utf8(body) {
        Ok(text) => {
            let mut de = serde_json::Deserializer::from_str(text);
            let root = reader.deserialize(&mut de)?;
            de.end()?;
            root
        }
        Err(_) => {
            let mut de = serde_json::Deserializer::from_slice(body);
            let root = reader.deserialize(&mut de)?;
            de.end()?;
            root
        }
    };
    Ok(match root {
        Seen::Is(root) => Some(root),
        Seen::Null | Seen::Other => None,
    })
}

/// Walks `body` as a `Value` parse does, building nothing: its error is
/// that parse's.
pub(super) fn check(body: &[u8]) -> Result<(), serde_json::Error> {
    serde_json::from_slice::<Checked>(body).map(|_| ())
}

/// The known keys, at any level (each reader ignores the others').
enum Key {
    Notification,
    EventId,
    Id,
    RoomId,
    Type,
    Sender,
    SenderDisplayName,
    RoomName,
    RoomAlias,
    Membership,
    UserIsTarget,
    Prio,
    Content,
    Counts,
    Devices,
    Unread,
    MissedCalls,
    AppId,
    Pushkey,
    PushkeyTs,
    Data,
    Tweaks,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            // Borrowed or unescaped, a key is matched by its value.
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key, E> {
                Ok(match s {
                    "notification" => Key::Notification,
                    "event_id" => Key::EventId,
                    "id" => Key::Id,
                    "room_id" => Key::RoomId,
                    "type" => Key::Type,
                    "sender" => Key::Sender,
                    "sender_display_name" => Key::SenderDisplayName,
                    "room_name" => Key::RoomName,
                    "room_alias" => Key::RoomAlias,
                    "membership" => Key::Membership,
                    "user_is_target" => Key::UserIsTarget,
                    "prio" => Key::Prio,
                    "content" => Key::Content,
                    "counts" => Key::Counts,
                    "devices" => Key::Devices,
                    "unread" => Key::Unread,
                    "missed_calls" => Key::MissedCalls,
                    "app_id" => Key::AppId,
                    "pushkey" => Key::Pushkey,
                    "pushkey_ts" => Key::PushkeyTs,
                    "data" => Key::Data,
                    "tweaks" => Key::Tweaks,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_str(V)
    }
}

/// Reads the values of one shape into `Out`: an object, or for `devices` a
/// list. A value of another type is checked, skipped and seen as `Other`.
trait Reader<'de>: Sized {
    type Out;
    fn object<A: MapAccess<'de>>(self, map: A) -> Result<Seen<Self::Out>, A::Error> {
        skip_map(map)?;
        Ok(Seen::Other)
    }
    fn list<A: SeqAccess<'de>>(self, seq: A) -> Result<Seen<Self::Out>, A::Error> {
        skip_seq(seq)?;
        Ok(Seen::Other)
    }
}

/// Reads one value of any type with `R`.
struct Any<R>(R);

impl<'de, R: Reader<'de>> DeserializeSeed<'de> for Any<R> {
    type Value = Seen<R::Out>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Seen<R::Out>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, R: Reader<'de>> Visitor<'de> for Any<R> {
    type Value = Seen<R::Out>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Seen::Other)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Seen::Other)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Seen::Other)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Seen::Other)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Seen::Other)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Seen::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.0.list(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.0.object(map)
    }
}

/// What the readers down to the devices are told.
#[derive(Clone, Copy)]
struct Options {
    max_devices: usize,
    maps: Maps,
}

struct RootReader(Options);

impl<'de> Reader<'de> for RootReader {
    type Out = Root<'de>;
    fn object<A: MapAccess<'de>>(self, mut map: A) -> Result<Seen<Root<'de>>, A::Error> {
        let mut root = Root::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Notification => {
                    root.notification = map.next_value_seed(Any(NotificationReader(self.0)))?;
                }
                _ => skip_value(&mut map)?,
            }
        }
        Ok(Seen::Is(root))
    }
}

struct NotificationReader(Options);

impl<'de> Reader<'de> for NotificationReader {
    type Out = Fields<'de>;
    fn object<A: MapAccess<'de>>(self, mut map: A) -> Result<Seen<Fields<'de>>, A::Error> {
        let mut n = Fields::default();
        while let Some(key) = map.next_key::<Key>()? {
            let scalar = match key {
                Key::EventId => &mut n.event_id,
                Key::Id => &mut n.id,
                Key::RoomId => &mut n.room_id,
                Key::Type => &mut n.kind,
                Key::Sender => &mut n.sender,
                Key::SenderDisplayName => &mut n.sender_display_name,
                Key::RoomName => &mut n.room_name,
                Key::RoomAlias => &mut n.room_alias,
                Key::Membership => &mut n.membership,
                Key::UserIsTarget => &mut n.user_is_target,
                Key::Prio => &mut n.prio,
                Key::Content => {
                    n.content = Some(map.next_value_seed(ContentReader)?);
                    continue;
                }
                Key::Counts => {
                    n.counts = map.next_value_seed(Any(CountsReader))?;
                    continue;
                }
                Key::Devices => {
                    n.devices = map.next_value_seed(Any(DevicesReader(self.0)))?;
                    continue;
                }
                _ => {
                    skip_value(&mut map)?;
                    continue;
                }
            };
            *scalar = map.next_value::<Scalar<'de>>()?;
        }
        Ok(Seen::Is(n))
    }
}

struct CountsReader;

impl<'de> Reader<'de> for CountsReader {
    type Out = CountFields<'de>;
    fn object<A: MapAccess<'de>>(self, mut map: A) -> Result<Seen<CountFields<'de>>, A::Error> {
        let mut c = CountFields::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Unread => c.unread = map.next_value()?,
                Key::MissedCalls => c.missed_calls = map.next_value()?,
                _ => skip_value(&mut map)?,
            }
        }
        Ok(Seen::Is(c))
    }
}

struct DevicesReader(Options);

impl<'de> Reader<'de> for DevicesReader {
    type Out = Devices<'de>;
    fn list<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Seen<Devices<'de>>, A::Error> {
        let Options { max_devices, maps } = self.0;
        let mut devices = Devices {
            count: 0,
            read: Vec::with_capacity(seq.size_hint().unwrap_or(1).min(max_devices)),
        };
        loop {
            let more = if devices.read.len() < max_devices {
                match seq.next_element_seed(Any(DeviceReader(maps)))? {
                    Some(device) => {
                        devices.read.push(device);
                        true
                    }
                    None => false,
                }
            } else {
                seq.next_element::<Checked>()?.is_some()
            };
            if !more {
                return Ok(Seen::Is(devices));
            }
            devices.count += 1;
        }
    }
}

struct DeviceReader(Maps);

impl<'de> Reader<'de> for DeviceReader {
    type Out = DeviceFields<'de>;
    fn object<A: MapAccess<'de>>(self, mut map: A) -> Result<Seen<DeviceFields<'de>>, A::Error> {
        let mut d = DeviceFields::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::AppId => d.app_id = map.next_value()?,
                Key::Pushkey => d.pushkey = map.next_value()?,
                Key::PushkeyTs => d.pushkey_ts = map.next_value()?,
                Key::Data => d.data = read_map(&mut map, self.0)?,
                Key::Tweaks => d.tweaks = read_map(&mut map, self.0)?,
                _ => skip_value(&mut map)?,
            }
        }
        Ok(Seen::Is(d))
    }
}

fn read_map<'de, A: MapAccess<'de>>(map: &mut A, maps: Maps) -> Result<Seen<MapOf<'de>>, A::Error> {
    match maps {
        Maps::InPlace => map.next_value_seed(Any(MapReader)),
        Maps::Raw => {
            let raw = map.next_value::<&'de RawValue>()?;
            Ok(match kind_of(raw) {
                Kind::Object => Seen::Is(MapOf::Raw(raw)),
                Kind::Null => Seen::Null,
                Kind::String | Kind::Other => Seen::Other,
            })
        }
    }
}

/// An object as a `Map`, read as a `Map` parse of it reads it.
struct MapReader;

impl<'de> Reader<'de> for MapReader {
    type Out = MapOf<'de>;
    fn object<A: MapAccess<'de>>(self, map: A) -> Result<Seen<MapOf<'de>>, A::Error> {
        Map::deserialize(MapAccessDeserializer::new(map)).map(|m| Seen::Is(MapOf::Built(m)))
    }
}

/// The raw `content`, checked as a `Value` parse in its place would check it.
struct ContentReader;

impl<'de> DeserializeSeed<'de> for ContentReader {
    type Value = &'de RawValue;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<&'de RawValue, D::Error> {
        let raw = <&'de RawValue>::deserialize(d)?;
        match serde_json::from_str::<Checked>(raw.get()) {
            Ok(Checked(levels)) if levels + ABOVE_CONTENT <= MOST_LEVELS => Ok(raw),
            Ok(_) => Err(de::Error::custom("content nests too deeply")),
            Err(e) => Err(de::Error::custom(e)),
        }
    }
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Scalar<'de>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Bool(b))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar<'de>, E> {
                Ok(u64::try_from(v).map_or(Scalar::Other, Scalar::UInt))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::UInt(v))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Other)
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Str(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Str(Cow::Owned(s.to_owned())))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Null)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Scalar<'de>, A::Error> {
                skip_seq(seq).map(|_| Scalar::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Scalar<'de>, A::Error> {
                skip_map(map).map(|_| Scalar::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// Any JSON value, walked as a `Value` parse walks it and kept as how many
/// levels of lists and objects it nests (0 for a scalar).
struct Checked(usize);

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Checked, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Checked;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Checked, E> {
                Ok(Checked(0))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Checked, E> {
                Ok(Checked(0))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Checked, E> {
                Ok(Checked(0))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Checked, E> {
                Ok(Checked(0))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Checked, E> {
                Ok(Checked(0))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Checked, E> {
                Ok(Checked(0))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Checked, A::Error> {
                skip_seq(seq).map(Checked)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Checked, A::Error> {
                skip_map(map).map(Checked)
            }
        }
        d.deserialize_any(V)
    }
}

fn skip_value<'de, A: MapAccess<'de>>(map: &mut A) -> Result<(), A::Error> {
    map.next_value::<Checked>().map(|_| ())
}

/// Walks the rest of a list; the levels it nests, itself included.
fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<usize, A::Error> {
    let mut deepest = 0;
    while let Some(Checked(levels)) = seq.next_element()? {
        deepest = deepest.max(levels);
    }
    Ok(deepest + 1)
}

/// Walks the rest of an object; the levels it nests, itself included.
fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<usize, A::Error> {
    let mut deepest = 0;
    while map.next_key::<Checked>()?.is_some() {
        deepest = deepest.max(map.next_value::<Checked>()?.0);
    }
    Ok(deepest + 1)
}
