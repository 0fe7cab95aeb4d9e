//! Logging set-up (`tracing`, text or JSON, to a stream or a file that is
//! reopened at `SIGHUP`, through a queue that never blocks a request:
//! [`queue`]), the access log ([`access`]) and the Prometheus metrics
//! ([`metrics`]). Pushkeys are redacted by their own type (`ids::PushKey`).

pub mod access;
#[cfg(test)]
mod capture;
pub mod fields;
mod line;
pub mod logfile;
pub mod metrics;
pub mod otlp;
pub mod queue;
mod timestamp;

use std::io::IsTerminal;

use tracing_appender::non_blocking::{NonBlocking, WorkerGuard};
use tracing_subscriber::filter::{filter_fn, FilterFn, LevelFilter};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Filter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer, Registry};

use crate::config::{LogConfig, LogFormat, LogOutput, TracingConfig};

/// A queued writer for `out` (see [`queue`]), its guard, and whether it is a
/// terminal (colours on). A file that cannot be opened (it was checked at
/// load, so this is rare) falls back to standard error, with the reason
/// returned for logging once the subscriber is up.
fn writer(out: &LogOutput) -> (NonBlocking, WorkerGuard, bool, Option<String>) {
    let stderr = || {
        let (w, g) = queue::spawn(std::io::stderr(), "log-stderr");
        (w, g, std::io::stderr().is_terminal())
    };
    match out {
        LogOutput::Stderr => {
            let (w, g, ansi) = stderr();
            (w, g, ansi, None)
        }
        LogOutput::Stdout => {
            let (w, g) = queue::spawn(std::io::stdout(), "log-stdout");
            (w, g, std::io::stdout().is_terminal(), None)
        }
        LogOutput::File(path) => match logfile::LogFile::open(path) {
            Ok(f) => {
                let (w, g) = queue::spawn(logfile::LineWriter::new(f), "log-file");
                (w, g, false, None)
            }
            Err(e) => {
                let (w, g, ansi) = stderr();
                let problem = format!(
                    "cannot open the log file {}: {e}; logging to standard error",
                    path.display()
                );
                (w, g, ansi, Some(problem))
            }
        },
    }
}

/// A log's formatting layer and its writer's guard; the writer's queue when
/// the layer writes text without colours (access lines may be written to it
/// directly, [`line`]).
struct Output {
    layer: Box<dyn Layer<Registry> + Send + Sync>,
    guard: WorkerGuard,
    plain_text: Option<NonBlocking>,
    problem: Option<String>,
}

/// The text log's formatting layer, writing to `w`.
fn text_layer<W>(w: W, ansi: bool) -> Box<dyn Layer<Registry> + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    // Request ids are fields of every line already; span context would repeat
    // them (and spans never reach this layer, see `init`).
    fmt::layer()
        .fmt_fields(fields::PlainFields)
        .with_timer(timestamp::Timestamp)
        .with_target(false)
        .with_writer(w)
        .with_ansi(ansi)
        .boxed()
}

/// A formatting layer for `out`.
fn fmt_layer(format: LogFormat, out: &LogOutput) -> Output {
    let (w, guard, ansi, problem) = writer(out);
    let plain_text = (format == LogFormat::Text && !ansi).then(|| w.clone());
    let layer = match format {
        LogFormat::Text => text_layer(w, ansi),
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_timer(timestamp::Timestamp)
            .with_target(false)
            .with_writer(w)
            .boxed(),
    };
    Output {
        layer,
        guard,
        plain_text,
        problem,
    }
}

/// `RUST_LOG` when set, else `level`, else INFO.
fn log_filter(level: &str) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// `f` with the level hint of the log filter it sits behind (see `init`).
fn hinted<F>(f: FilterFn<F>, hint: Option<LevelFilter>) -> FilterFn<F>
where
    F: Fn(&tracing::Metadata<'_>) -> bool,
{
    match hint {
        Some(level) => f.with_max_level_hint(level),
        None => f,
    }
}

/// Keep until exit: dropping it writes the log lines still queued and
/// flushes the spans not yet exported.
#[must_use]
pub struct LogGuard {
    _otlp: Option<otlp::OtlpGuard>,
    // After the exporter: its last words are logged.
    _writers: Vec<WorkerGuard>,
}

/// Installs the global subscriber: log lines (text or JSON) to `log`'s
/// output, access lines to theirs, and, when `tracing.otlp` is on, span
/// export. `RUST_LOG`, when set, overrides `log.level`.
pub fn init(cfg: &LogConfig, tracing_cfg: &TracingConfig) -> LogGuard {
    access::configure(cfg);
    let (layers, guard, problems, direct) = layers(cfg, tracing_cfg);
    // try_init: tests may install their own subscriber first.
    if tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .is_ok()
    {
        if let Some(queue) = direct {
            line::direct_to(queue);
        }
    }
    for p in problems {
        tracing::error!("{p}");
    }
    guard
}

type Layers = Vec<Box<dyn Layer<Registry> + Send + Sync>>;

/// The layers [`init`] installs, their guard, what went wrong building them,
/// and the queue access lines may be written to directly ([`line`]): that
/// of their log when it is text without colours and no exporter is on.
fn layers(
    cfg: &LogConfig,
    tracing_cfg: &TracingConfig,
) -> (Layers, LogGuard, Vec<String>, Option<NonBlocking>) {
    let filter = || log_filter(&cfg.level);
    // Log lines (text or JSON) show no span context: the lines that matter
    // carry their request id and app as fields. Spans are then nothing to the
    // log layers, and, unless exported, are never created: in text mode the
    // three spans of a one-device request cost 10-15 % of its CPU.
    // The level `filter` lets through at most, given to the closures that
    // split the output too: a closure gives no hint of its own, and one layer
    // without a hint makes every `trace!` in the process (h2 writes ~20 per
    // push) pass the macros' static level check and be filtered one by one
    // (measured: ~9 % of the instructions per notification).
    let hint = <EnvFilter as Filter<Registry>>::max_level_hint(&filter());
    let separate_access = cfg.access_output.is_some();
    let mut layers: Layers = Vec::new();
    let mut writers = Vec::new();
    let main = fmt_layer(cfg.format, &cfg.output);
    writers.push(main.guard);
    let mut problems: Vec<String> = main.problem.into_iter().collect();
    let mut direct = main.plain_text;
    layers.push(
        main.layer
            .with_filter(filter())
            .with_filter(hinted(
                filter_fn(move |m| {
                    let elsewhere = separate_access && m.target() == access::TARGET;
                    !(elsewhere || m.is_span())
                }),
                hint,
            ))
            .boxed(),
    );
    if let Some(out) = &cfg.access_output {
        let access = fmt_layer(cfg.format, out);
        writers.push(access.guard);
        problems.extend(access.problem);
        direct = access.plain_text;
        layers.push(
            access
                .layer
                .with_filter(filter())
                .with_filter(hinted(
                    // Not `is_event`: `access::enabled` asks with a hint
                    // (`tracing::enabled!`), which is no event, and a "no"
                    // from here made every access line go unwritten.
                    filter_fn(|m| !m.is_span() && m.target() == access::TARGET),
                    hint,
                ))
                .boxed(),
        );
    }
    let mut otlp_guard = None;
    if let Some(otlp_cfg) = &tracing_cfg.otlp {
        match otlp::layer(otlp_cfg) {
            Ok((layer, g)) => {
                layers.push(layer.with_filter(filter()).boxed());
                otlp_guard = Some(g);
                // The exporter sees events in spans: access lines stay events.
                direct = None;
            }
            Err(e) => problems.push(format!("{e}; spans are not exported")),
        }
    }
    let guard = LogGuard {
        _otlp: otlp_guard,
        _writers: writers,
    };
    (layers, guard, problems, direct)
}

/// Writes the access line of `r` (with the `/notify` summary when there is
/// one): straight to its log's queue when that is a text log without colours
/// ([`line`]), else through `tracing` ([`access::log`]); the same text.
pub fn log_access(r: &access::Request<'_>, notify: Option<&access::NotifySummary>) {
    if !line::write(r, notify) {
        access::log(r, notify);
    }
}

/// Reopens the log files (at `SIGHUP`, after logrotate moved them).
pub fn reopen_logs() {
    for (path, e) in logfile::reopen_all() {
        tracing::error!(file = %path.display(), error = %e, "cannot reopen the log file; still writing to the old one");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Subscriber;

    fn log_config(level: &str, access_output: Option<LogOutput>) -> LogConfig {
        LogConfig {
            level: level.into(),
            format: LogFormat::Text,
            x_forwarded_for: false,
            output: LogOutput::Stderr,
            access_enabled: true,
            access_output,
        }
    }

    /// The whole subscriber tells the `tracing` macros the most verbose level
    /// any layer wants, so that everything above it is skipped where it is
    /// written, without a call: one layer without a hint would make it TRACE.
    #[test]
    fn the_subscriber_hints_the_configured_level() {
        for level in ["info", "debug"] {
            // RUST_LOG, when the tests run with it, overrides the level.
            let hint = <EnvFilter as Filter<Registry>>::max_level_hint(&log_filter(level));
            if std::env::var_os("RUST_LOG").is_none() {
                let expected = if level == "info" {
                    LevelFilter::INFO
                } else {
                    LevelFilter::DEBUG
                };
                assert_eq!(hint, Some(expected));
            }
            for access in [None, Some(LogOutput::Stderr)] {
                let (layers, _guard, problems, _) = layers(
                    &log_config(level, access.clone()),
                    &TracingConfig::default(),
                );
                assert!(problems.is_empty(), "{problems:?}");
                let subscriber = tracing_subscriber::registry().with(layers);
                assert_eq!(
                    subscriber.max_level_hint(),
                    hint,
                    "level {level}, access output {access:?}"
                );
            }
        }
    }
}
