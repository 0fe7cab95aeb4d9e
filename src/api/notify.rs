//! `POST /_matrix/push/v1/notify`: read the bounded body, parse it, dispatch
//! every device and answer `{"rejected": [...]}` (or a Matrix error).
//!
//! The body is read (within `http.body_read_timeout`) before the global
//! in-flight permit is taken: a client that sends its body slowly, or never
//! finishes it, holds a connection and a stream, which the connection caps
//! bound, but never one of the permits honest homeservers need.
//!
//! Memory is bounded by the byte budget (`limits.max_inflight_bytes`), not by
//! the number of requests: before its body is read, a request reserves its
//! declared `Content-Length` (or `limits.max_body_size` when it declares
//! none, a chunked body) and keeps the reservation until it is answered;
//! once parsed, a notification whose in-memory form is larger than its body
//! (large pusher `data` maps) reserves the difference too. A reservation
//! that does not fit is answered `429 M_LIMIT_EXCEEDED` at once, before the
//! body is read: the homeserver retries later, as for the request limit.
//! Once parsed, the notification keeps only its fields and the raw `content`
//! (a view into the body when it is most of it; see `notification`).

use std::time::Instant;

use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use super::error::ApiError;
use super::AppState;
use crate::ids::PushKey;
use crate::notification;
use crate::telemetry::access::{Counts, NotifySummary};

/// A request's body: hyper's, or any other in tests.
pub(super) trait RequestBody:
    hyper::body::Body<Data = bytes::Bytes, Error: Into<axum::BoxError>> + Send + Unpin + 'static
{
}

impl<B> RequestBody for B where
    B: hyper::body::Body<Data = bytes::Bytes, Error: Into<axum::BoxError>> + Send + Unpin + 'static
{
}

/// Answers a `POST` on the notify path (`front` routes it here). With
/// `access_line` (the caller writes an access line), the summary is handed
/// back for that line; else it is logged here, as a line of its own.
pub(super) async fn notify<B: RequestBody>(
    state: &AppState,
    request_id: &str,
    req: http::Request<B>,
    access_line: bool,
) -> (Response, Option<NotifySummary>) {
    let (head, body) = req.into_parts();
    let headers = &head.headers;
    let started = Instant::now();
    let metrics = state.dispatcher.metrics().clone();
    let _in_flight = metrics.notify_started();
    let span = tracing::info_span!("notify", request_id = %request_id);
    let mut summary = NotifySummary::default();
    let result = async {
        let declared = declared_length(state, headers)?;
        let reserved = reserve(state, declared.unwrap_or(state.limits.max_body_size))?;
        let bytes = read_body(state, declared, body).await?;
        let Ok(_permit) = state.inflight.clone().try_acquire_owned() else {
            metrics.overloaded("global");
            return Err(ApiError::Overloaded {
                limit: "limits.max_inflight_requests",
            });
        };
        handle(state, request_id, bytes, reserved, &mut summary).await
    }
    .instrument(span)
    .await;
    let resp = match result {
        Ok(resp) => resp,
        Err(e) => {
            summary.error = Some(e.to_string());
            e.into_response()
        }
    };
    metrics.notify_answered(resp.status().as_u16(), started);
    // One INFO line per request: the access line's, or else its own.
    if access_line {
        return (resp, Some(summary));
    }
    summary.log(request_id, resp.status().as_u16(), started.elapsed());
    (resp, None)
}

/// The body's declared length; over `limits.max_body_size` it is refused before anything is read.
fn declared_length(state: &AppState, headers: &HeaderMap) -> Result<Option<usize>, ApiError> {
    let limit = state.limits.max_body_size;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(len) if len > limit as u64 => Err(ApiError::TooLarge { limit }),
        // At most `limit`, which is a usize.
        Some(len) => Ok(Some(usize::try_from(len).unwrap_or(limit))),
        None => Ok(None),
    }
}

/// `bytes` of the in-flight byte budget, or a 429 when they do not fit.
fn reserve(state: &AppState, bytes: usize) -> Result<OwnedSemaphorePermit, ApiError> {
    // A reservation is at most `max_body_size` or one notification: far below u32::MAX.
    let n = u32::try_from(bytes).unwrap_or(u32::MAX);
    state
        .inflight_bytes
        .clone()
        .try_acquire_many_owned(n)
        .map_err(|_| {
            state.dispatcher.metrics().overloaded("bytes");
            ApiError::OverBudget {
                limit: state.limits.max_inflight_bytes,
            }
        })
}

/// The whole body, at most `limits.max_body_size` bytes, within `http.body_read_timeout`.
///
/// Each piece is copied into one buffer of the declared length as it
/// arrives and dropped: the body is held once, in one exact allocation, and
/// hyper can reuse its read buffer (collecting the pieces first would hold
/// them and their copy together, and keep hyper's buffers shared).
async fn read_body<B: RequestBody>(
    state: &AppState,
    declared: Option<usize>,
    body: B,
) -> Result<bytes::Bytes, ApiError> {
    let limit = state.limits.max_body_size;
    let read = async {
        let mut body = Limited::new(body, limit);
        let mut buf = BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                buf.extend_from_slice(&data);
            }
        }
        Ok::<_, axum::BoxError>(buf.freeze())
    };
    match tokio::time::timeout(state.body_read_timeout, read).await {
        Err(_) => Err(ApiError::BodyTimeout),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::TooLarge { limit })
        }
        Ok(Err(e)) => Err(ApiError::BodyRead(e.to_string())),
        Ok(Ok(bytes)) => Ok(bytes),
    }
}

/// Parses and dispatches; `reserved` is this request's share of the byte
/// budget, held until the answer. What it did goes into `summary`.
async fn handle(
    state: &AppState,
    request_id: &str,
    bytes: bytes::Bytes,
    mut reserved: OwnedSemaphorePermit,
    summary: &mut NotifySummary,
) -> Result<Response, ApiError> {
    // The content stays a view into the body: the body's one allocation is
    // what the notification keeps (its other parts are a few hundred bytes).
    let n = notification::parse_shared(&bytes, state.limits.max_devices)?;
    drop(bytes);
    let held = n.heap_size();
    if held > reserved.num_permits() {
        reserved.merge(reserve(state, held - reserved.num_permits())?);
    }
    state
        .dispatcher
        .metrics()
        .notification_received(n.devices.len());
    summary.event_id = n.event_id.clone();
    summary.devices = Some(n.devices.len());
    summary.app_ids = Some(app_ids(&n.devices));
    let answer = state.dispatcher.dispatch(n, request_id.to_owned()).await;
    summary.counts = Some(Counts {
        delivered: answer.delivered,
        rejected: answer.rejected.len(),
        failed: answer.failed,
        duplicates: answer.duplicates,
        queued: answer.queued,
        unqueued: answer.unqueued,
    });
    if answer.unqueued > 0 && answer.overloaded == answer.unqueued {
        let (label, limit) = if answer.outbox_full > 0 {
            ("outbox", "the outbox caps, dispatch.outbox_max_*")
        } else {
            ("app", "inflight_request_limit")
        };
        state.dispatcher.metrics().overloaded(label);
        return Err(ApiError::Overloaded { limit });
    }
    if answer.unqueued > 0 {
        return Err(ApiError::Upstream {
            temporary: answer.unqueued,
            rejected: answer.rejected,
        });
    }
    Ok(rejected_answer(&answer.rejected))
}

/// `{"rejected":[...]}`, written straight to its bytes (the bytes a
/// `serde_json::Value` of it serialises to, without building one), as
/// `application/json`.
fn rejected_answer(rejected: &[PushKey]) -> Response {
    const EMPTY: &[u8] = b"{\"rejected\":[]}";
    let body = if rejected.is_empty() {
        Bytes::from_static(EMPTY)
    } else {
        // Room for the keys, their quotes and commas; escapes may grow it.
        let keys: usize = rejected.iter().map(|k| k.len() + 3).sum();
        let mut buf = Vec::with_capacity(EMPTY.len() + keys);
        buf.extend_from_slice(b"{\"rejected\":");
        if serde_json::to_writer(&mut buf, rejected).is_err() {
            // Strings into a Vec: serde_json does not fail here.
            return ApiError::Internal.into_response();
        }
        buf.push(b'}');
        Bytes::from(buf)
    };
    let mut resp = Response::new(axum::body::Body::from(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The devices' app ids, sorted, without repeats, comma-separated.
fn app_ids(devices: &[notification::Device]) -> String {
    // One app (almost every request): its id, without a list to sort and join.
    if let Some((first, rest)) = devices.split_first() {
        if rest.iter().all(|d| d.app_id == first.app_id) {
            return first.app_id.as_str().to_owned();
        }
    }
    let mut ids: Vec<&str> = devices.iter().map(|d| d.app_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    ids.join(",")
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[test]
    fn app_ids_are_sorted_without_repeats() {
        let body = br#"{"notification":{"devices":[{"app_id":"b","pushkey":"1"},
            {"app_id":"a","pushkey":"2"},{"app_id":"b","pushkey":"3"}]}}"#;
        let n = notification::parse(body, 10).expect("valid");
        assert_eq!(app_ids(&n.devices), "a,b");
        assert_eq!(app_ids(&n.devices[..1]), "b");
        assert_eq!(app_ids(&n.devices[2..]), "b");
        assert_eq!(app_ids(&[]), "");
    }

    /// The bytes a `serde_json::Value` of the answer serialises to.
    #[tokio::test]
    async fn the_rejected_answer_is_the_json_of_its_value() {
        for keys in [vec![], vec!["k1"], vec!["a\"b\\c/é\u{1}", "second"]] {
            let keys: Vec<PushKey> = keys.into_iter().map(PushKey::from).collect();
            let resp = rejected_answer(&keys);
            assert_eq!(resp.status(), 200);
            assert_eq!(
                resp.headers().get(header::CONTENT_TYPE),
                Some(&HeaderValue::from_static("application/json"))
            );
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            let expected = serde_json::json!({ "rejected": keys }).to_string();
            assert_eq!(std::str::from_utf8(&body), Ok(expected.as_str()));
        }
    }
}
