//! The payload builder this crate had before [`super::render`] wrote bytes
//! directly: `serde_json::Value` trees merged and serialized, re-serialized
//! after each shortening. Kept, for tests only, as the oracle the writer is
//! compared with on generated notifications (`super::differential`).

use serde_json::{json, Map, Value};

use super::{PayloadError, MAX_FIELD_CHARS};
use crate::notification::{Device, Notification};

/// The payload for one device as the bytes sent to Apple, within `limit`;
/// `None` when there is nothing to send.
pub fn render(
    n: &Notification,
    d: &Device,
    send_badge_counts: bool,
    limit: usize,
) -> Result<Option<Vec<u8>>, PayloadError> {
    match build(n, d, send_badge_counts)? {
        Some(payload) => encode(payload, limit).map(Some),
        None => Ok(None),
    }
}

/// Builds the payload for one device, or `None` when there is nothing to send.
fn build(
    n: &Notification,
    d: &Device,
    send_badge_counts: bool,
) -> Result<Option<Map<String, Value>>, PayloadError> {
    let default = match d.data.get("default_payload") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(_) => return Err(PayloadError::BadDefaultPayload),
    };
    if n.is_event_id_only() {
        return Ok(Some(event_id_only(n, default, send_badge_counts)));
    }
    let badge = badge(n, send_badge_counts);
    let Some(kind) = n.kind.as_deref() else {
        // No event: a badge update, if there is a badge to set.
        return Ok(badge.map(|b| {
            let mut m = Map::new();
            m.insert("aps".into(), json!({ "badge": b }));
            m
        }));
    };
    // A membership change that is not an invite of this user has no alert:
    // at most a badge update.
    let alert = alert(n, kind);
    if alert.is_none() && badge.is_none() {
        return Ok(None);
    }
    let mut payload = default.cloned().unwrap_or_default();
    let mut aps = match payload.remove("aps") {
        Some(Value::Object(aps)) => aps,
        _ => Map::new(),
    };
    if let Some((loc_key, loc_args)) = &alert {
        aps.insert(
            "alert".into(),
            json!({ "loc-key": loc_key, "loc-args": loc_args }),
        );
    }
    if let Some(b) = badge {
        aps.insert("badge".into(), Value::from(b));
    }
    if alert.is_some() {
        if let Some(sound) = d.tweaks.get("sound").filter(|s| s.is_string()) {
            aps.insert("sound".into(), sound.clone());
        }
    }
    payload.insert("aps".into(), Value::Object(aps));
    if alert.is_some() {
        if let Some(room) = &n.room_id {
            payload.insert("room_id".into(), Value::String(room.clone()));
        }
        if let Some(event) = &n.event_id {
            payload.insert("event_id".into(), Value::String(event.as_str().to_owned()));
        }
    }
    Ok(Some(payload))
}

fn event_id_only(
    n: &Notification,
    default: Option<&Map<String, Value>>,
    send_badge_counts: bool,
) -> Map<String, Value> {
    let mut p = default.cloned().unwrap_or_default();
    if let Some(room) = &n.room_id {
        p.insert("room_id".into(), Value::String(room.clone()));
    }
    if let Some(event) = &n.event_id {
        p.insert("event_id".into(), Value::String(event.as_str().to_owned()));
    }
    if send_badge_counts {
        if let Some(u) = n.counts.unread {
            p.insert("unread_count".into(), Value::from(u));
        }
        if let Some(m) = n.counts.missed_calls {
            p.insert("missed_calls".into(), Value::from(m));
        }
    }
    p
}

fn badge(n: &Notification, send_badge_counts: bool) -> Option<u64> {
    let c = &n.counts;
    if !send_badge_counts || (c.unread.is_none() && c.missed_calls.is_none()) {
        return None;
    }
    Some(
        c.unread
            .unwrap_or(0)
            .saturating_add(c.missed_calls.unwrap_or(0)),
    )
}

fn cut(s: &str) -> String {
    s.chars().take(MAX_FIELD_CHARS).collect()
}

/// The `loc-key` and `loc-args` for an event kind; `None` for a membership
/// change that is not an invite of this user.
fn alert(n: &Notification, kind: &str) -> Option<(String, Vec<String>)> {
    let from = cut(n
        .sender_display_name
        .as_deref()
        .or(n.sender.as_deref())
        .unwrap_or(" "));
    let room = n.room_name.as_deref().or(n.room_alias.as_deref()).map(cut);
    // Only the keys the alert reads are parsed out of the raw content.
    let content = n.content.as_ref();
    let field = |key: &str| content.and_then(|c| c.field(key));
    let msgtype = match kind {
        "m.room.message" | "m.room.encrypted" => field("msgtype"),
        _ => None,
    };
    // A body is shown only alongside a msgtype, as the apps expect.
    let body = msgtype.as_ref().and_then(|_| field("body"));
    let in_room = |base: &str| match &room {
        Some(_) => format!("{base}_IN_ROOM"),
        None => base.to_owned(),
    };
    Some(match kind {
        "m.room.message" | "m.room.encrypted" => {
            let body = body
                .as_ref()
                .and_then(Value::as_str)
                .filter(|b| !b.is_empty())
                .map(cut);
            match msgtype.as_ref().and_then(Value::as_str) {
                // The image's body (its file name) comes before the room.
                Some("m.image") => (
                    in_room("IMAGE_FROM_USER"),
                    [Some(from), Some(body.unwrap_or_default()), room]
                        .into_iter()
                        .flatten()
                        .collect(),
                ),
                Some("m.emote") => {
                    let body = body.unwrap_or_default();
                    match room {
                        Some(r) => ("ACTION_FROM_USER_IN_ROOM".into(), vec![r, from, body]),
                        None => ("ACTION_FROM_USER".into(), vec![from, body]),
                    }
                }
                _ => {
                    let mut key = in_room("MSG_FROM_USER");
                    if body.is_some() {
                        key.push_str("_WITH_CONTENT");
                    }
                    (
                        key,
                        [Some(from), room, body].into_iter().flatten().collect(),
                    )
                }
            }
        }
        "m.call.invite" => {
            let offer = field("offer");
            let sdp = offer
                .as_ref()
                .and_then(|o| o.get("sdp"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let key = if sdp.contains("m=video") {
                "VIDEO_CALL_FROM_USER"
            } else {
                "VOICE_CALL_FROM_USER"
            };
            (key.into(), vec![from])
        }
        "m.room.member"
            if n.membership.as_deref() == Some("invite") && n.user_is_target == Some(true) =>
        {
            match room {
                Some(r) => ("USER_INVITE_TO_NAMED_ROOM".into(), vec![from, r]),
                None => ("USER_INVITE_TO_CHAT".into(), vec![from]),
            }
        }
        "m.room.member" => return None,
        _ => ("MSG_FROM_USER".into(), vec![from]),
    })
}

/// Serializes the payload within `limit` bytes. Too large: the longest `loc-args`
/// entries are shortened first — all entries above a common length are cut to
/// it, never inside a UTF-8 character — until it fits.
fn encode(mut payload: Map<String, Value>, limit: usize) -> Result<Vec<u8>, PayloadError> {
    loop {
        let bytes = serde_json::to_vec(&payload).unwrap_or_default();
        if bytes.len() <= limit {
            return Ok(bytes);
        }
        let excess = bytes.len() - limit;
        let args = payload
            .get_mut("aps")
            .and_then(|a| a.get_mut("alert"))
            .and_then(|a| a.get_mut("loc-args"))
            .and_then(Value::as_array_mut);
        let Some(args) = args else {
            return Err(PayloadError::TooLarge(bytes.len(), limit));
        };
        let lens: Vec<usize> = args
            .iter()
            .map(|a| a.as_str().map_or(0, str::len))
            .collect();
        let removed = |level: usize| lens.iter().map(|l| l.saturating_sub(level)).sum::<usize>();
        if removed(0) == 0 {
            return Err(PayloadError::TooLarge(bytes.len(), limit));
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
        for arg in args.iter_mut() {
            if let Value::String(s) = arg {
                if s.len() > lo {
                    let mut end = lo;
                    while !s.is_char_boundary(end) {
                        end -= 1;
                    }
                    s.truncate(end);
                }
            }
        }
    }
}
