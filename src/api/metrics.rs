//! The Prometheus listener (`metrics.prometheus`): a separate port so that the
//! metrics are never exposed where homeservers reach `/notify`.
//!
//! Every GET path answers the exposition, as Sygnal's exporter does, so a
//! scrape config written for Sygnal keeps working. The store gauges are read
//! at scrape time (one cheap query), not on the request path.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::dispatch::Dispatcher;

/// Prometheus text exposition format 0.0.4.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn router(dispatcher: Arc<Dispatcher>) -> Router {
    Router::new()
        .route("/", get(scrape))
        .fallback(get(scrape))
        .with_state(dispatcher)
}

async fn scrape(State(d): State<Arc<Dispatcher>>) -> Response {
    d.read_store_metrics(Duration::from_secs(2)).await;
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        d.metrics().render(),
    )
        .into_response()
}
