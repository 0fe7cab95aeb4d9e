//! pushgate: a Matrix push gateway (Push Gateway API v1), Sygnal-compatible.
//!
//! # Layout
//! A request flows one way: `api` → `notification` → `routing` → `dispatch` → `pushkin` → `net`.
//!
//! - [`config`]: Sygnal-compatible YAML → typed, validated [`config::Config`].
//! - [`api`]: axum router, `/notify` handler, Matrix JSON errors, `/health`, `/ready`, the metrics listener, inbound TLS, and the serving loop (connection caps, header/body/idle timers, HTTP/2 stream cap).
//! - [`notification`]: the spec's request model and its validation.
//! - [`routing`]: `app_id` → pushkin (exact first, then globs, then a UnifiedPush default app; ambiguous = rejected).
//! - [`dispatch`]: concurrent fan-out to all devices, the per-request summary.
//! - [`pushkin`]: the `Pushkin` trait and one module per push service (`webpush`, `apns`, `fcm`, `unifiedpush`; `endpoint` holds the checks of client-chosen endpoint URLs).
//! - [`net`]: the outbound HTTP client (rustls, HTTP/2, proxy, timeouts, trusted CA, address guard).
//! - [`telemetry`]: logging, pushkey redaction and Prometheus metrics.
//! - [`gateway`]: start-up, serving, reload and shutdown.
//! - [`sendtest`]: `pushgate send-test`, one push with a report of the HTTP exchanges.

pub mod api;
pub mod config;
pub mod dispatch;
pub mod gateway;
pub mod glob;
pub mod keys;
pub mod net;
pub mod notification;
pub mod pushkin;
pub mod routing;
pub mod sendtest;
pub mod store;
pub mod telemetry;

pub use gateway::Gateway;
