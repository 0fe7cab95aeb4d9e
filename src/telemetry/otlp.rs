//! OpenTelemetry export (`tracing.otlp`): the `tracing` spans of a request —
//! `notify` → `dispatch` (one per device) → `upstream` (one per HTTP request
//! to a push service) — sent to an OTLP/HTTP collector as JSON.
//!
//! The SDK's batch processor exports from its own thread with a blocking
//! client, so exporting never runs on (or waits for) the request path.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

use crate::config::OtlpConfig;

/// Keeps the exporter alive; flushes what is buffered when dropped (at exit).
pub struct OtlpGuard(SdkTracerProvider);

impl Drop for OtlpGuard {
    fn drop(&mut self) {
        if let Err(e) = self.0.shutdown() {
            eprintln!("OpenTelemetry: spans not flushed at exit: {e}");
        }
    }
}

/// The layer that turns spans into OTLP spans, and its guard.
pub fn layer<S>(cfg: &OtlpConfig) -> Result<(impl tracing_subscriber::Layer<S>, OtlpGuard), String>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    crate::net::install_crypto_provider();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(cfg.endpoint.clone())
        .build()
        .map_err(|e| format!("tracing.otlp: cannot build the exporter: {e}"))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder_empty()
                .with_service_name(cfg.service_name.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer("pushgate");
    let layer = tracing_opentelemetry::layer().with_tracer(tracer);
    Ok((layer, OtlpGuard(provider)))
}
