//! `POST /_matrix/push/v1/notify`: read the bounded body, parse it, dispatch
//! every device and answer `{"rejected": [...]}` (or a Matrix error).
//!
//! The body is read (within `http.body_read_timeout`) before the global
//! in-flight permit is taken: a client that sends its body slowly, or never
//! finishes it, holds a connection and a stream, which the connection caps
//! bound, but never one of the permits honest homeservers need.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;
use tracing::Instrument;

use super::error::ApiError;
use super::{AppState, RequestId};
use crate::notification;

pub async fn notify(
    State(state): State<Arc<AppState>>,
    axum::Extension(RequestId(request_id)): axum::Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let metrics = state.dispatcher.metrics().clone();
    let _in_flight = metrics.notify_started();
    let span = tracing::info_span!("notify", request_id = %request_id);
    let result = async {
        let bytes = read_body(&state, &headers, body).await?;
        let Ok(_permit) = state.inflight.clone().try_acquire_owned() else {
            metrics.overloaded("global");
            return Err(ApiError::Overloaded {
                limit: "limits.max_inflight_requests",
            });
        };
        handle(&state, &request_id, &bytes).await
    }
    .instrument(span)
    .await;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let resp = match result {
        Ok(resp) => resp,
        Err(e) => {
            tracing::info!(request_id, error = %e, elapsed_ms, "notify refused");
            e.into_response()
        }
    };
    metrics.notify_answered(resp.status().as_u16(), started);
    resp
}

/// The whole body, at most `limits.max_body_size` bytes, within `http.body_read_timeout`.
async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<bytes::Bytes, ApiError> {
    let limit = state.limits.max_body_size;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::TooLarge { limit });
    }
    let read = Limited::new(body, limit).collect();
    match tokio::time::timeout(state.body_read_timeout, read).await {
        Err(_) => Err(ApiError::BodyTimeout),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::TooLarge { limit })
        }
        Ok(Err(e)) => Err(ApiError::BodyRead(e.to_string())),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

async fn handle(state: &AppState, request_id: &str, bytes: &[u8]) -> Result<Response, ApiError> {
    let n = notification::parse(bytes, state.limits.max_devices)?;
    state
        .dispatcher
        .metrics()
        .notification_received(n.devices.len());
    let started = Instant::now();
    let devices = n.devices.len();
    let event_id = n.event_id.clone().unwrap_or_default();
    let mut app_ids: Vec<String> = n.devices.iter().map(|d| d.app_id.clone()).collect();
    app_ids.sort_unstable();
    app_ids.dedup();
    let answer = state.dispatcher.dispatch(n, request_id.to_owned()).await;
    tracing::info!(
        request_id,
        event_id,
        app_ids = %app_ids.join(","),
        devices,
        delivered = answer.delivered,
        rejected = answer.rejected.len(),
        failed = answer.failed,
        duplicates = answer.duplicates,
        queued = answer.queued,
        unqueued = answer.unqueued,
        status = match (answer.unqueued, answer.overloaded) {
            (0, _) => 200,
            (u, o) if u == o => 429,
            _ => 502,
        },
        elapsed_ms = started.elapsed().as_millis() as u64,
        "notify"
    );
    if answer.unqueued > 0 && answer.overloaded == answer.unqueued {
        state.dispatcher.metrics().overloaded("app");
        return Err(ApiError::Overloaded {
            limit: "inflight_request_limit",
        });
    }
    if answer.unqueued > 0 {
        return Err(ApiError::Upstream {
            temporary: answer.unqueued,
            rejected: answer.rejected,
        });
    }
    Ok(Json(json!({ "rejected": answer.rejected })).into_response())
}
