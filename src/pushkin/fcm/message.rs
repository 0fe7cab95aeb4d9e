//! The FCM v1 `message` for one device: `fcm_options` deep-merged under
//! `message`, the `token`, `android.priority`, and the flat `data` map that
//! Matrix Android apps (Element) parse.
//!
//! FCM v1 only accepts strings in `data`, so every value is a string: a
//! non-string `default_payload` value is sent JSON-encoded. Each value is cut
//! to 1024 bytes (at a UTF-8 boundary, `…` appended), and the whole `data`
//! stays within FCM's 4096-byte limit by shortening `content_*` values further.

use serde_json::{Map, Value};

use crate::notification::{Device, Notification, Prio};
use crate::pushkin::json;

const MAX_VALUE_BYTES: usize = 1024;
/// FCM's limit for the data payload (keys and values).
pub const MAX_DATA_BYTES: usize = 4096;
const ELLIPSIS: &str = "…";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("data.default_payload must be an object")]
    BadDefaultPayload,
    #[error(
        "the data payload is {0} bytes without its content; FCM accepts at most {MAX_DATA_BYTES}"
    )]
    TooLarge(usize),
}

/// Builds the JSON text of `{"message": {...}}` for one device, or `None`
/// when there is nothing to send: a badge-only update without a count to
/// carry (zero counts, or `send_badge_counts: false`), as the reference
/// since 0.17. Keys come in serde_json's order (sorted), as they did when
/// the message was a `Value` tree: without `fcm_options` it is written
/// straight into its buffer ([`write`]); with them, merged as a tree.
pub fn build(
    n: &Notification,
    d: &Device,
    fcm_options: &Map<String, Value>,
    send_badge_counts: bool,
) -> Result<Option<Vec<u8>>, MessageError> {
    let Some((data, priority)) = parts(n, d, send_badge_counts)? else {
        return Ok(None);
    };
    if fcm_options.is_empty() {
        return Ok(Some(write(data, priority, d.pushkey.expose())));
    }
    let message = tree(data, priority, d.pushkey.expose(), fcm_options);
    // Into a `Vec` a `Value` always serializes.
    Ok(Some(serde_json::to_vec(&message).unwrap_or_default()))
}

/// A message's `data` entries (of a key given twice the later wins) and its
/// `android.priority`.
type Parts = (Vec<(String, String)>, &'static str);

/// The message's parts, or `None` when there is nothing to send.
fn parts(
    n: &Notification,
    d: &Device,
    send_badge_counts: bool,
) -> Result<Option<Parts>, MessageError> {
    let badge_only = n.event_id.is_none() && n.kind.is_none();
    let has_count = send_badge_counts
        && [n.counts.unread, n.counts.missed_calls]
            .iter()
            .any(|c| c.is_some_and(|c| c > 0));
    let data = data(n, d, send_badge_counts)?;
    if badge_only && !has_count {
        return Ok(None);
    }
    let priority = match (n.prio, n.kind.as_deref()) {
        (_, Some("m.call.invite")) => "high",
        (Prio::Low, _) => "normal",
        _ => "high",
    };
    Ok(Some((data, priority)))
}

/// The message as a tree, `fcm_options` deep-merged under it.
fn tree(
    data: Vec<(String, String)>,
    priority: &str,
    token: &str,
    fcm_options: &Map<String, Value>,
) -> Value {
    // Later entries win, so notification fields override default_payload keys of the same name.
    let data: Map<String, Value> = data
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let mut ours = Map::new();
    ours.insert("token".into(), Value::String(token.to_owned()));
    ours.insert("data".into(), Value::Object(data));
    ours.insert(
        "android".into(),
        serde_json::json!({ "priority": priority }),
    );
    let mut message = Value::Object(fcm_options.clone());
    merge(&mut message, Value::Object(ours));
    serde_json::json!({ "message": message })
}

/// The message without `fcm_options`, written as serde_json writes [`tree`]'s:
/// keys sorted, the last of a repeated `data` key kept.
fn write(mut data: Vec<(String, String)>, priority: &str, token: &str) -> Vec<u8> {
    // Stable: of one key, the entry that came last stays last.
    data.sort_by(|a, b| a.0.cmp(&b.0));
    let text: usize = data.iter().map(|(k, v)| k.len() + v.len() + 6).sum();
    let mut buf = Vec::with_capacity(text + token.len() + 80);
    buf.extend_from_slice(br#"{"message":{"android":{"priority":"#);
    json::string(&mut buf, priority);
    buf.extend_from_slice(br#"},"data":{"#);
    let mut first = true;
    for (i, (k, v)) in data.iter().enumerate() {
        if data.get(i + 1).is_some_and(|next| next.0 == *k) {
            continue;
        }
        if !std::mem::take(&mut first) {
            buf.push(b',');
        }
        json::string(&mut buf, k);
        buf.push(b':');
        json::string(&mut buf, v);
    }
    buf.extend_from_slice(br#"},"token":"#);
    json::string(&mut buf, token);
    buf.extend_from_slice(b"}}");
    buf
}

/// Deep merge: objects merge key by key, anything else in `over` wins.
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// The `data` entries, each value cut and the whole fitted to FCM's limit;
/// of a key given twice the later entry wins.
fn data(
    n: &Notification,
    d: &Device,
    send_badge_counts: bool,
) -> Result<Vec<(String, String)>, MessageError> {
    let mut data: Vec<(String, String)> = Vec::new();
    match d.data.get("default_payload") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                match v {
                    Value::Null => {}
                    Value::String(s) => data.push((k.clone(), s.clone())),
                    other => data.push((k.clone(), other.to_string())),
                }
            }
        }
        Some(_) => return Err(MessageError::BadDefaultPayload),
    }
    // The apps read FCM's own priority words, as the reference sends them.
    let prio = match n.prio {
        Prio::High => "high",
        Prio::Low => "normal",
    };
    let fields = [
        ("event_id", n.event_id.as_ref().map(|e| e.as_str())),
        ("type", n.kind.as_deref()),
        // An empty sender is still sent, as the reference does.
        (
            "sender",
            n.sender.as_deref().or(n.sender_empty.then_some("")),
        ),
        ("room_name", n.room_name.as_deref()),
        ("room_alias", n.room_alias.as_deref()),
        ("membership", n.membership.as_deref()),
        ("sender_display_name", n.sender_display_name.as_deref()),
        ("room_id", n.room_id.as_deref()),
        ("prio", Some(prio)),
    ];
    for (k, v) in fields {
        if let Some(v) = v {
            data.push((k.into(), v.into()));
        }
    }
    if let Some(content) = &n.content {
        // Only the string values are parsed out of the raw content, in key order.
        for (k, s) in content.strings() {
            data.push((format!("content_{k}"), s));
        }
    }
    if send_badge_counts {
        for (k, c) in [
            ("unread", n.counts.unread),
            ("missed_calls", n.counts.missed_calls),
        ] {
            if let Some(c) = c.filter(|c| *c > 0) {
                data.push((k.into(), c.to_string()));
            }
        }
    }
    for (_, v) in data.iter_mut() {
        cut_with_ellipsis(v, MAX_VALUE_BYTES);
    }
    fit(&mut data)?;
    Ok(data)
}

fn size(data: &[(String, String)]) -> usize {
    data.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// Shortens the longest `content_*` values (all above a common length) until the data fits.
fn fit(data: &mut [(String, String)]) -> Result<(), MessageError> {
    let total = size(data);
    if total <= MAX_DATA_BYTES {
        return Ok(());
    }
    let excess = total - MAX_DATA_BYTES;
    let content: Vec<usize> = data
        .iter()
        .enumerate()
        .filter(|(_, (k, _))| k.starts_with("content_"))
        .map(|(i, _)| i)
        .collect();
    let removable = |level: usize| {
        content
            .iter()
            .map(|&i| data[i].1.len().saturating_sub(level.max(ELLIPSIS.len())))
            .sum::<usize>()
    };
    if removable(0) < excess {
        let without: usize = total - content.iter().map(|&i| data[i].1.len()).sum::<usize>();
        return Err(MessageError::TooLarge(without));
    }
    // The highest level (in bytes) that frees enough; every longer value is cut to it.
    let (mut lo, mut hi) = (
        0,
        content.iter().map(|&i| data[i].1.len()).max().unwrap_or(0),
    );
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if removable(mid) >= excess {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    for &i in &content {
        cut_with_ellipsis(&mut data[i].1, lo.max(ELLIPSIS.len()));
    }
    Ok(())
}

/// Cuts `s` to at most `max` bytes at a UTF-8 boundary, ending in `…` when cut.
pub fn cut_with_ellipsis(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut end = max.saturating_sub(ELLIPSIS.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str(ELLIPSIS);
}

#[cfg(test)]
mod tests;
