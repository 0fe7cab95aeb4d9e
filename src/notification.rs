//! The Push Gateway API v1 request model (`{"notification": {...}}`) and its validation.
//!
//! Parsing is lenient where homeservers differ (unknown fields ignored, `null`
//! means absent, an empty `id`/`event_id`/`sender` means absent, the 2015 `id`
//! is a synonym of `event_id`, an unknown `prio` is `high`) and strict about
//! types: a field of the wrong type is an error that names its path, e.g.
//! `notification.devices[1].pushkey`.

use serde_json::{Map, Value};

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

/// Refuses `value` at `path` when it is longer than `max` bytes.
fn at_most_bytes(path: String, value: Option<&str>, max: usize) -> Result<(), ParseError> {
    match value {
        Some(v) if v.len() > max => Err(bad(path, format!("longer than {max} bytes"))),
        _ => Ok(()),
    }
}

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
    pub app_id: String,
    pub pushkey: String,
    /// Seconds since the epoch when the pushkey was last updated.
    pub pushkey_ts: Option<u64>,
    /// The pusher's `data` minus `url` (the homeserver keeps `url`); may hold `default_payload`, `format`, …
    pub data: Map<String, Value>,
    pub tweaks: Map<String, Value>,
}

/// A validated notification.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Notification {
    pub event_id: Option<String>,
    pub room_id: Option<String>,
    /// The event type (`type` on the wire).
    pub kind: Option<String>,
    pub sender: Option<String>,
    pub sender_display_name: Option<String>,
    pub room_name: Option<String>,
    pub room_alias: Option<String>,
    pub membership: Option<String>,
    pub user_is_target: Option<bool>,
    pub prio: Prio,
    pub content: Option<Map<String, Value>>,
    pub counts: Counts,
    pub devices: Vec<Device>,
}

impl Notification {
    /// An *event_id_only* notification: the homeserver sent the event id but no event type.
    pub fn is_event_id_only(&self) -> bool {
        self.event_id.is_some() && self.kind.is_none()
    }
}

/// The `/notify` body for this notification and one of its devices: what the
/// outbox stores to rebuild the push later. `parse` reads it back to an equal
/// notification (with that one device).
pub fn to_wire(n: &Notification, device: &Device) -> String {
    let mut m = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            m.insert(k.to_owned(), v);
        }
    };
    let s = |v: &Option<String>| v.clone().map(Value::String);
    put("event_id", s(&n.event_id));
    put("room_id", s(&n.room_id));
    put("type", s(&n.kind));
    put("sender", s(&n.sender));
    put("sender_display_name", s(&n.sender_display_name));
    put("room_name", s(&n.room_name));
    put("room_alias", s(&n.room_alias));
    put("membership", s(&n.membership));
    put("user_is_target", n.user_is_target.map(Value::Bool));
    put(
        "prio",
        Some(Value::from(match n.prio {
            Prio::High => "high",
            Prio::Low => "low",
        })),
    );
    put("content", n.content.clone().map(Value::Object));
    let mut counts = Map::new();
    if let Some(u) = n.counts.unread {
        counts.insert("unread".into(), u.into());
    }
    if let Some(c) = n.counts.missed_calls {
        counts.insert("missed_calls".into(), c.into());
    }
    put("counts", Some(Value::Object(counts)));
    let mut d = Map::new();
    d.insert("app_id".into(), device.app_id.clone().into());
    d.insert("pushkey".into(), device.pushkey.clone().into());
    if let Some(ts) = device.pushkey_ts {
        d.insert("pushkey_ts".into(), ts.into());
    }
    d.insert("data".into(), Value::Object(device.data.clone()));
    d.insert("tweaks".into(), Value::Object(device.tweaks.clone()));
    put("devices", Some(Value::Array(vec![Value::Object(d)])));
    let mut root = Map::new();
    root.insert("notification".into(), Value::Object(m));
    Value::Object(root).to_string()
}

/// Parses a request body. `max_devices` bounds `devices`.
pub fn parse(body: &[u8], max_devices: usize) -> Result<Notification, ParseError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ParseError::NotJson(e.to_string()))?;
    let Value::Object(mut root) = value else {
        return Err(ParseError::NotJson("the body must be a JSON object".into()));
    };
    match root.remove("notification") {
        Some(Value::Object(n)) => parse_notification(n, max_devices),
        None | Some(Value::Null) => Err(bad("notification", "required, but missing")),
        Some(_) => Err(bad("notification", "must be an object")),
    }
}

/// Reads optional typed fields of one object, naming paths in errors.
struct Fields<'a> {
    path: &'a str,
    map: Map<String, Value>,
}

impl Fields<'_> {
    fn p(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    fn take(&mut self, key: &str) -> Option<Value> {
        self.map.remove(key).filter(|v| !v.is_null())
    }

    fn string(&mut self, key: &str) -> Result<Option<String>, ParseError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(bad(self.p(key), "must be a string")),
        }
    }

    /// A string where `""` means absent (Synapse's badge-only pushes send `"id": ""`).
    fn non_empty(&mut self, key: &str) -> Result<Option<String>, ParseError> {
        Ok(self.string(key)?.filter(|s| !s.is_empty()))
    }

    fn bool(&mut self, key: &str) -> Result<Option<bool>, ParseError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(_) => Err(bad(self.p(key), "must be true or false")),
        }
    }

    fn uint(&mut self, key: &str) -> Result<Option<u64>, ParseError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) => Ok(Some(v)),
                None => Err(bad(self.p(key), "must be a non-negative integer")),
            },
            Some(_) => Err(bad(self.p(key), "must be a non-negative integer")),
        }
    }

    fn object(&mut self, key: &str) -> Result<Option<Map<String, Value>>, ParseError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(_) => Err(bad(self.p(key), "must be an object")),
        }
    }
}

fn parse_notification(
    map: Map<String, Value>,
    max_devices: usize,
) -> Result<Notification, ParseError> {
    let mut f = Fields {
        path: "notification",
        map,
    };
    let event_id = f.non_empty("event_id")?;
    let id = f.non_empty("id")?;
    at_most_bytes(f.p("event_id"), event_id.as_deref(), MAX_ID_BYTES)?;
    at_most_bytes(f.p("id"), id.as_deref(), MAX_ID_BYTES)?;
    let room_id = f.non_empty("room_id")?;
    at_most_bytes(f.p("room_id"), room_id.as_deref(), MAX_ID_BYTES)?;
    let prio = match f.take("prio") {
        None => Prio::High,
        Some(Value::String(s)) if s == "low" => Prio::Low,
        // The spec allows only high/low; anything else is treated as high rather than refused.
        Some(Value::String(_)) => Prio::High,
        Some(_) => {
            return Err(bad(
                "notification.prio",
                "must be a string (\"high\" or \"low\")",
            ))
        }
    };
    let counts = match f.object("counts")? {
        None => Counts::default(),
        Some(map) => {
            let mut c = Fields {
                path: "notification.counts",
                map,
            };
            Counts {
                unread: c.uint("unread")?,
                missed_calls: c.uint("missed_calls")?,
            }
        }
    };
    let mut n = Notification {
        event_id: event_id.or(id),
        room_id,
        kind: f.non_empty("type")?,
        sender: f.non_empty("sender")?,
        sender_display_name: f.non_empty("sender_display_name")?,
        room_name: f.non_empty("room_name")?,
        room_alias: f.non_empty("room_alias")?,
        membership: f.non_empty("membership")?,
        user_is_target: f.bool("user_is_target")?,
        prio,
        content: f.object("content")?,
        counts,
        devices: Vec::new(),
    };
    let devices = match f.take("devices") {
        None => return Err(bad("notification.devices", "required, but missing")),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(bad("notification.devices", "must be a list")),
    };
    if devices.is_empty() {
        return Err(bad("notification.devices", "must not be empty"));
    }
    if devices.len() > max_devices {
        return Err(bad(
            "notification.devices",
            format!(
                "{} devices, at most {max_devices} are accepted per request",
                devices.len()
            ),
        ));
    }
    n.devices = devices
        .into_iter()
        .enumerate()
        .map(|(i, d)| parse_device(i, d))
        .collect::<Result<_, _>>()?;
    Ok(n)
}

fn parse_device(i: usize, value: Value) -> Result<Device, ParseError> {
    let path = format!("notification.devices[{i}]");
    let Value::Object(map) = value else {
        return Err(bad(path, "must be an object"));
    };
    let mut f = Fields { path: &path, map };
    let required = |f: &mut Fields<'_>, key: &str| -> Result<String, ParseError> {
        match f.string(key)? {
            Some(s) if !s.is_empty() => Ok(s),
            Some(_) => Err(bad(f.p(key), "must not be empty")),
            None => Err(bad(f.p(key), "required, but missing")),
        }
    };
    let app_id = required(&mut f, "app_id")?;
    if app_id.chars().count() > MAX_APP_ID_CHARS {
        return Err(bad(
            f.p("app_id"),
            format!("longer than {MAX_APP_ID_CHARS} characters"),
        ));
    }
    let pushkey = required(&mut f, "pushkey")?;
    at_most_bytes(f.p("pushkey"), Some(&pushkey), MAX_PUSHKEY_BYTES)?;
    Ok(Device {
        app_id,
        pushkey,
        pushkey_ts: f.uint("pushkey_ts")?,
        data: f.object("data")?.unwrap_or_default(),
        tweaks: f.object("tweaks")?.unwrap_or_default(),
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
        assert_eq!(n.kind, None);
        assert_eq!(n.counts.unread, Some(0));
        assert!(!n.is_event_id_only());
    }

    #[test]
    fn id_is_a_synonym_of_event_id() {
        let body = br#"{"notification":{"id":"$e","devices":[{"app_id":"a","pushkey":"k"}]}}"#;
        let n = parse(body, 100).expect("accepted");
        assert_eq!(n.event_id.as_deref(), Some("$e"));
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
            br#"{"notification":{"id":"","counts":{},"devices":[{"app_id":"a","pushkey":"k"}]}}"#,
            1,
        )
        .expect("badge-only");
        let back = parse(to_wire(&badge, &badge.devices[0]).as_bytes(), 1).expect("parses");
        assert_eq!(back, badge);
    }

    #[test]
    fn wrong_type_names_the_path() {
        let body = br#"{"notification":{"devices":[{"app_id":"a","pushkey":"k"},{"app_id":"a","pushkey":3}]}}"#;
        assert_eq!(
            parse(body, 100),
            Err(bad("notification.devices[1].pushkey", "must be a string"))
        );
    }
}
