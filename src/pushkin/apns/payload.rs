//! The APNs payloads Element iOS and other Matrix apps parse: event_id_only,
//! full (an `aps.alert` with a `loc-key` per event kind), and badge-only —
//! then cut to Apple's size limit without splitting a UTF-8 character.
//!
//! What goes in a payload is decided here; [`write`] puts it in bytes.

use std::borrow::Cow;

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::ids::EventId;
use crate::notification::{Device, Notification};

mod write;

use write::{Alert, Shape};

/// Display names, room names and bodies are cut to this many characters first.
const MAX_FIELD_CHARS: usize = 1024;
/// Apple's payload limits: 4 KiB, 5 KiB for VoIP pushes.
pub const MAX_PAYLOAD: usize = 4096;
pub const MAX_VOIP_PAYLOAD: usize = 5120;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("data.default_payload must be an object")]
    BadDefaultPayload,
    #[error(
        "the payload is {0} bytes and nothing in it can be shortened to fit Apple's {1}-byte limit"
    )]
    TooLarge(usize, usize),
}

/// The payload for one device as the bytes sent to Apple, within `limit`;
/// `None` when there is nothing to send.
pub fn render(
    n: &Notification,
    d: &Device,
    send_badge_counts: bool,
    limit: usize,
) -> Result<Option<Vec<u8>>, PayloadError> {
    let default = match d.data.get("default_payload") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(_) => return Err(PayloadError::BadDefaultPayload),
    };
    let Some(shape) = shape(n, d, default, send_badge_counts) else {
        return Ok(None);
    };
    write::fit(&shape, limit).map(Some)
}

/// What the payload holds, or `None` when there is nothing to send.
fn shape<'a>(
    n: &'a Notification,
    d: &'a Device,
    default: Option<&'a Map<String, Value>>,
    send_badge_counts: bool,
) -> Option<Shape<'a>> {
    let room_id = n.room_id.as_deref();
    let event_id = n.event_id.as_ref().map(EventId::as_str);
    if n.is_event_id_only() {
        let counts = send_badge_counts.then_some(&n.counts);
        return Some(Shape::EventIdOnly {
            default,
            room_id,
            event_id,
            unread: counts.and_then(|c| c.unread),
            missed_calls: counts.and_then(|c| c.missed_calls),
        });
    }
    let badge = badge(n, send_badge_counts);
    let Some(kind) = n.kind.as_deref() else {
        // No event: a badge update, if there is a badge to set.
        return badge.map(Shape::BadgeOnly);
    };
    // A membership change that is not an invite of this user has no alert:
    // at most a badge update, on the default payload, without ids or sound.
    let alert = alert(n, kind);
    if alert.is_none() && badge.is_none() {
        return None;
    }
    let with_alert = alert.is_some();
    Some(Shape::Event {
        default,
        alert,
        badge,
        sound: with_alert
            .then(|| d.tweaks.get("sound").and_then(Value::as_str))
            .flatten(),
        room_id: room_id.filter(|_| with_alert),
        event_id: event_id.filter(|_| with_alert),
    })
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

/// `s` cut to its first [`MAX_FIELD_CHARS`] characters.
fn cut(s: &str) -> &str {
    // Fewer bytes than the limit: fewer characters too.
    if s.len() <= MAX_FIELD_CHARS {
        return s;
    }
    match s.char_indices().nth(MAX_FIELD_CHARS) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

fn cut_cow(s: Cow<'_, str>) -> Cow<'_, str> {
    match s {
        Cow::Borrowed(b) => Cow::Borrowed(cut(b)),
        Cow::Owned(mut o) => {
            let end = cut(&o).len();
            o.truncate(end);
            Cow::Owned(o)
        }
    }
}

/// A raw JSON value as a string, borrowed when it has no escapes; `None`
/// when it is not a string.
fn raw_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    if !text.starts_with('"') {
        return None;
    }
    match serde_json::from_str::<&str>(text) {
        Ok(s) => Some(Cow::Borrowed(s)),
        Err(_) => serde_json::from_str::<String>(text).ok().map(Cow::Owned),
    }
}

/// The `loc-key` and `loc-args` for an event kind; `None` for a membership
/// change that is not an invite of this user.
fn alert<'a>(n: &'a Notification, kind: &str) -> Option<Alert<'a>> {
    let from = Cow::Borrowed(cut(n
        .sender_display_name
        .as_deref()
        .or(n.sender.as_deref())
        .unwrap_or(" ")));
    let room = n
        .room_name
        .as_deref()
        .or(n.room_alias.as_deref())
        .map(|r| Cow::Borrowed(cut(r)));
    let content = n.content.as_ref();
    Some(match kind {
        "m.room.message" | "m.room.encrypted" => {
            // Only the keys the alert reads are taken out of the raw content.
            let [msgtype, body] =
                content.map_or([None, None], |c| c.raw_fields(["msgtype", "body"]));
            // A body is shown only alongside a msgtype (of any value), as the apps expect.
            let body = msgtype
                .and(body)
                .and_then(raw_str)
                .filter(|b| !b.is_empty())
                .map(cut_cow);
            match msgtype.and_then(raw_str).as_deref() {
                // The image's body (its file name) comes before the room.
                Some("m.image") => Alert::new(
                    if room.is_some() {
                        "IMAGE_FROM_USER_IN_ROOM"
                    } else {
                        "IMAGE_FROM_USER"
                    },
                    [Some(from), Some(body.unwrap_or_default()), room],
                ),
                Some("m.emote") => {
                    let body = Some(body.unwrap_or_default());
                    match room {
                        Some(r) => {
                            Alert::new("ACTION_FROM_USER_IN_ROOM", [Some(r), Some(from), body])
                        }
                        None => Alert::new("ACTION_FROM_USER", [Some(from), body, None]),
                    }
                }
                _ => {
                    let key = match (room.is_some(), body.is_some()) {
                        (false, false) => "MSG_FROM_USER",
                        (false, true) => "MSG_FROM_USER_WITH_CONTENT",
                        (true, false) => "MSG_FROM_USER_IN_ROOM",
                        (true, true) => "MSG_FROM_USER_IN_ROOM_WITH_CONTENT",
                    };
                    Alert::new(key, [Some(from), room, body])
                }
            }
        }
        "m.call.invite" => {
            let offer = content.and_then(|c| c.field("offer"));
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
            Alert::new(key, [Some(from), None, None])
        }
        "m.room.member"
            if n.membership.as_deref() == Some("invite") && n.user_is_target == Some(true) =>
        {
            match room {
                Some(r) => Alert::new("USER_INVITE_TO_NAMED_ROOM", [Some(from), Some(r), None]),
                None => Alert::new("USER_INVITE_TO_CHAT", [Some(from), None, None]),
            }
        }
        "m.room.member" => return None,
        _ => Alert::new("MSG_FROM_USER", [Some(from), None, None]),
    })
}

#[cfg(test)]
mod differential;
#[cfg(test)]
mod golden;
#[cfg(test)]
mod oracle;
#[cfg(test)]
mod tests;
