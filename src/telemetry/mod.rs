//! Logging set-up (`tracing`, text or JSON), redaction of pushkeys, and the
//! Prometheus metrics ([`metrics`]).

pub mod metrics;
pub mod otlp;

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

use crate::config::{LogConfig, LogFormat, TracingConfig};

/// Installs the global subscriber: log lines (text or JSON) and, when
/// `tracing.otlp` is on, span export. `RUST_LOG`, when set, overrides
/// `log.level`. Keep the returned guard until exit: dropping it flushes spans.
pub fn init(cfg: &LogConfig, tracing_cfg: &TracingConfig) -> Option<otlp::OtlpGuard> {
    let filter = || {
        EnvFilter::try_from_default_env()
            .or_else(|_| EnvFilter::try_new(&cfg.level))
            .unwrap_or_else(|_| EnvFilter::new("info"))
    };
    let ansi = std::io::stderr().is_terminal();
    // Request ids are fields of every line already; span context would repeat them.
    let fmt = match cfg.format {
        LogFormat::Text => fmt::layer()
            .with_target(false)
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_target(false)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let registry = tracing_subscriber::registry().with(fmt.with_filter(filter()));
    let Some(otlp_cfg) = &tracing_cfg.otlp else {
        // try_init: tests may install their own subscriber first.
        let _ = registry.try_init();
        return None;
    };
    match otlp::layer(otlp_cfg) {
        Ok((layer, guard)) => {
            let _ = registry.with(layer.with_filter(filter())).try_init();
            Some(guard)
        }
        Err(e) => {
            let _ = registry.try_init();
            tracing::error!("{e}; spans are not exported");
            None
        }
    }
}

/// A pushkey as it may appear in logs: first 4 and last 4 characters (`abcd…wxyz`);
/// keys too short for that to hide anything are masked entirely.
pub fn redact(pushkey: &str) -> String {
    let chars: Vec<char> = pushkey.chars().collect();
    if chars.len() <= 12 {
        return "…".into();
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redaction() {
        assert_eq!(redact("abcdefghijklmnopqrstuvwxyz"), "abcd…wxyz");
        assert_eq!(redact("short"), "…");
        assert_eq!(redact("😀😀😀😀12345😀😀😀😀"), "😀😀😀😀…😀😀😀😀");
    }
}
