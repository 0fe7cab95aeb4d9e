//! Logging set-up (`tracing`, text or JSON), redaction of pushkeys, and the
//! Prometheus metrics ([`metrics`]).

pub mod metrics;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `log.level`.
pub fn init(cfg: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // try_init: tests may install their own subscriber first.
    let _ = match cfg.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
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
