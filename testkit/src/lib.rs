//! Fake push-service upstreams for pushgate's tests and benchmark. Each fake
//! is a real server on 127.0.0.1 that speaks the service's wire protocol and
//! checks what it receives independently of the gateway's own code.
//!
//! # Layout
//! - [`webpush`]: a Web Push service (RFC 8030) that decrypts RFC 8291
//!   `aes128gcm` messages with the subscription's private key ([`webpush::ece`])
//!   and verifies VAPID (RFC 8292) tokens ([`webpush::vapid`]).
//! - [`apns`]: APNs over HTTP/2 + TLS: checks the provider JWT or client certificate, headers and path.
//! - [`fcm`]: Google OAuth (RS256 assertion checked) and FCM v1, with programmable errors.
//! - [`tls`]: a per-run test CA issuing server and client certificates.
//! - [`faulty`]: a TCP proxy that resets, answers garbage or refuses on command (fault tests).
//! - [`load`]: count-only mode and answer delays for the benchmark.
//! - [`otlp`]: an OpenTelemetry collector stand-in (OTLP/HTTP JSON) that records spans.
//! - [`proxy`]: a forward HTTP proxy (CONNECT and absolute-form) that records its targets.
//! - [`record`]: what a fake received, with a bounded wait for more.
//! - [`unifiedpush`]: an ntfy-like UnifiedPush server (HTTP or HTTPS) that records bodies and headers.

pub mod apns;
pub mod faulty;
pub mod fcm;
pub mod load;
pub mod otlp;
pub mod postgres;
pub mod proxy;
pub mod record;
pub mod store_faults;
pub mod tls;
pub mod unifiedpush;
pub mod webpush;
