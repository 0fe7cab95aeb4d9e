//! pushgate: a Matrix push gateway (Push Gateway API v1), Sygnal-compatible.
//!
//! # Layout
//! A request flows one way: `api` → `notification` → `routing` → `dispatch` → `pushkin` → `net`.
//!
//! - [`config`]: Sygnal-compatible YAML → typed, validated [`config::Config`].
//! - [`api`]: request ids, access lines and panic answers around every request (`front`), axum router, `/notify` handler, Matrix JSON errors, `/health`, `/ready`, the metrics listener, inbound TLS, and the serving loop (connection caps, header/body/idle timers, HTTP/2 stream cap).
//! - [`notification`]: the spec's request model and its validation.
//! - [`routing`]: `app_id` → pushkin (exact first, then globs, then a UnifiedPush default app; ambiguous = rejected).
//! - [`dispatch`]: concurrent fan-out to all devices, the per-request summary.
//! - [`pushkin`]: the `Pushkin` trait (prepare a push, then send it) and one module per push service (`webpush`, `apns`, `fcm`, `unifiedpush`; `endpoint` holds the checks of client-chosen endpoint URLs); `exchange` is the one send/retry/tap loop, `token` the one credential cache (`auth_header` its `authorization` value), `jwt` the one JWT minting.
//! - [`net`]: the outbound HTTP clients (reqwest; APNs's own HTTP/2 client), rustls, proxy, timeouts, trusted CA, address guard.
//! - [`telemetry`]: logging, the access log and Prometheus metrics.
//! - [`store`]: the outbox, the rejection memory and the de-duplication claims (SQLite, PostgreSQL).
//! - [`gateway`]: start-up, serving, reload and shutdown.
//! - [`admin`]: the operator's commands on the store (`store stats`, `outbox`, `rejections`, `claims`) and `healthcheck`.
//! - [`sendtest`]: `pushgate send-test`, one push with a report of the HTTP exchanges.
//! - [`glob`], [`keys`], [`secret`], [`ids`]: leaves — app-id/host globs, private keys read from PEM, values never printed, and the typed pushkeys (redacted when shown), app ids and event ids.
//!
//! # Layers
//! Each module imports only the modules after its arrow, and the arrows form
//! no cycle; `tests/layers.rs` reads this list and checks the code against it.
//! Only `dispatch` (and `gateway`, which starts its workers) and `admin` (the
//! operator's commands) talk to the store.
//!
//! - `gateway` → `api`, `dispatch`, `routing`, `pushkin`, `store`, `telemetry`, `config`, `net`
//! - `admin` → `store`, `config`, `telemetry`, `pushkin`, `ids`
//! - `sendtest` → `gateway`, `pushkin`, `notification`, `telemetry`, `config`, `ids`
//! - `api` → `dispatch`, `notification`, `telemetry`, `config`, `net`, `ids`
//! - `dispatch` → `routing`, `pushkin`, `store`, `notification`, `telemetry`, `config`, `ids`
//! - `routing` → `pushkin`, `telemetry`, `glob`, `ids`
//! - `pushkin` → `net`, `notification`, `telemetry`, `config`, `glob`, `keys`, `ids`
//! - `telemetry` → `store`, `config`, `net`, `ids`
//! - `store` → `config`
//! - `config` → `keys`, `glob`, `secret`
//! - `notification` → `ids`
//! - `net` → (nothing)
//! - `glob` → (nothing)
//! - `keys` → (nothing)
//! - `secret` → (nothing)
//! - `ids` → (nothing)

pub mod admin;
pub mod api;
pub mod config;
pub mod dispatch;
pub mod gateway;
pub mod glob;
pub mod ids;
pub mod keys;
pub mod net;
pub mod notification;
pub mod pushkin;
pub mod routing;
pub mod secret;
pub mod sendtest;
pub mod store;
pub mod telemetry;

pub use gateway::Gateway;
