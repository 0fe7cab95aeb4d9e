//! `log.setup`: Sygnal hands this mapping to Python's `logging.dictConfig`.
//! The parts that have a meaning here are honoured — the root, `sygnal` and
//! `sygnal.access` levels and where their handlers write (a stream or a file)
//! — and everything else is named in one warning, so an operator's Sygnal
//! file starts unchanged and says what it lost.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use super::problems::Problems;
use super::walk::Section;
use super::{LogConfig, LogOutput};

/// What one `handlers` entry turns into.
#[derive(Debug, Clone, PartialEq)]
enum Handler {
    Output(LogOutput),
    /// A handler class with no counterpart here (syslog, SMTP, rotating …).
    Unsupported(String),
}

/// The logger a set of handlers belongs to, for choosing destinations.
struct Logger {
    level: Option<String>,
    handlers: Vec<String>,
    propagate: bool,
}

/// Reads `log.setup` into `cfg`: levels into its filter directive, handlers
/// into its outputs. Ignored parts are collected into a single warning.
pub(super) fn read_setup(mut setup: Section<'_>, cfg: &mut LogConfig, p: &mut Problems) {
    let mut ignored: Vec<String> = Vec::new();
    // Meaningful only to Python's logging machinery; nothing is lost.
    setup.ignore(&["version", "disable_existing_loggers", "incremental"]);
    for part in ["formatters", "filters"] {
        if let Some(Value::Object(map)) = setup.raw(part) {
            for name in map.keys() {
                ignored.push(format!("{part}.{name}"));
            }
        }
    }
    let handlers = read_handlers(&mut setup, &mut ignored, p);
    let root = setup
        .section("root", p)
        .map(|s| read_logger(s, p))
        .unwrap_or(Logger {
            level: None,
            handlers: Vec::new(),
            propagate: true,
        });
    let mut sygnal = None;
    let mut access = None;
    if let Some(mut loggers) = setup.section("loggers", p) {
        let names: Vec<String> = loggers.keys().map(str::to_owned).collect();
        for name in names {
            let path = loggers.key_path(&name);
            let Some(value) = loggers.raw_owned(&name) else {
                continue;
            };
            match name.as_str() {
                "sygnal" => sygnal = Section::of(path, value, p).map(|s| read_logger(s, p)),
                "sygnal.access" => {
                    access = Section::of(path, value, p).map(|s| read_logger(s, p));
                }
                _ => ignored.push(format!("loggers.{name}")),
            }
        }
        loggers.finish(p);
    }
    let setup_path = setup.path.clone();
    setup.finish(p);

    let mut directives = vec![root.level.clone().unwrap_or_else(|| "warn".into())];
    if let Some(level) = sygnal.as_ref().and_then(|l| l.level.clone()) {
        directives.push(format!("pushgate={level}"));
    }
    if let Some(level) = access.as_ref().and_then(|l| l.level.clone()) {
        directives.push(format!("pushgate::access={level}"));
    }
    cfg.level = directives.join(",");

    // Our lines are all `sygnal`'s: its handlers, plus the root's unless it
    // does not propagate.
    let mut main: Vec<&str> = Vec::new();
    if let Some(l) = &sygnal {
        main.extend(l.handlers.iter().map(String::as_str));
    }
    if sygnal.as_ref().is_none_or(|l| l.propagate) {
        main.extend(root.handlers.iter().map(String::as_str));
    }
    if let Some(out) = choose(&main, &handlers, &mut ignored) {
        cfg.output = out;
    }
    if let Some(a) = &access {
        let mut own: Vec<&str> = a.handlers.iter().map(String::as_str).collect();
        if a.propagate {
            own.extend(main.iter().copied());
        }
        let out = choose(&own, &handlers, &mut ignored);
        if out.as_ref().is_some_and(|o| *o != cfg.output) {
            cfg.access_output = out;
        }
    }
    // Handlers no logger of ours uses.
    for (name, h) in &handlers {
        let used = main.contains(&name.as_str())
            || access
                .as_ref()
                .is_some_and(|a| a.handlers.iter().any(|n| n == name));
        if !used && matches!(h, Handler::Output(_)) {
            ignored.push(format!("handlers.{name} (used by no logger pushgate has)"));
        }
    }
    ignored.sort();
    ignored.dedup();
    if !ignored.is_empty() {
        p.warn(
            setup_path,
            format!(
                "parts of this Python logging setup have no meaning for pushgate and are ignored: {} \
                 (lines are formatted by `log.format`: text or json)",
                ignored.join(", ")
            ),
        );
    }
}

fn read_handlers(
    setup: &mut Section<'_>,
    ignored: &mut Vec<String>,
    p: &mut Problems,
) -> BTreeMap<String, Handler> {
    let mut out = BTreeMap::new();
    let Some(mut section) = setup.section("handlers", p) else {
        return out;
    };
    let names: Vec<String> = section.keys().map(str::to_owned).collect();
    for name in names {
        let path = section.key_path(&name);
        let Some(value) = section.raw_owned(&name) else {
            continue;
        };
        let Some(mut h) = Section::of(path, value, p) else {
            continue;
        };
        let class = h.string("class", p).unwrap_or_default();
        let handler = match class.trim_start_matches("logging.") {
            "StreamHandler" => match h.string("stream", p).as_deref() {
                Some("ext://sys.stdout") => Handler::Output(LogOutput::Stdout),
                None | Some("ext://sys.stderr") => Handler::Output(LogOutput::Stderr),
                Some(other) => Handler::Unsupported(format!("stream {other}")),
            },
            "FileHandler" | "handlers.WatchedFileHandler" => {
                match h.string("filename", p).filter(|f| !f.is_empty()) {
                    Some(f) => Handler::Output(LogOutput::File(PathBuf::from(f))),
                    None => {
                        p.error(h.key_path("filename"), "required for a file handler");
                        Handler::Unsupported(class.clone())
                    }
                }
            }
            _ => Handler::Unsupported(class.clone()),
        };
        if let Handler::Unsupported(what) = &handler {
            ignored.push(format!("handlers.{name} ({what})"));
        }
        // The rest shapes Python's output (formatter, level, encoding, mode …).
        h.ignore(&[
            "formatter",
            "level",
            "filters",
            "mode",
            "encoding",
            "delay",
            "errors",
            "stream",
            "filename",
            "maxBytes",
            "backupCount",
            "when",
            "interval",
            "utc",
            "address",
            "facility",
        ]);
        h.finish(p);
        out.insert(name, handler);
    }
    section.finish(p);
    out
}

fn read_logger(mut s: Section<'_>, p: &mut Problems) -> Logger {
    let level = s.raw("level").and_then(|v| {
        let level = python_level(v);
        if level.is_none() {
            p.error(
                s.key_path("level"),
                "expected a Python log level: DEBUG, INFO, WARNING, ERROR or CRITICAL",
            );
        }
        level.flatten()
    });
    let handlers = s.string_list("handlers", p).unwrap_or_default();
    let propagate = s.bool("propagate", true, p);
    s.ignore(&["filters"]);
    s.finish(p);
    Logger {
        level,
        handlers,
        propagate,
    }
}

/// A Python level (name or number) as a `tracing` level; `Some(None)` for
/// NOTSET (inherit), `None` when it is not a level.
fn python_level(v: &Value) -> Option<Option<String>> {
    let n = match v {
        Value::String(s) => match s.trim().to_ascii_uppercase().as_str() {
            "NOTSET" => 0,
            "DEBUG" => 10,
            "INFO" => 20,
            "WARN" | "WARNING" => 30,
            "ERROR" => 40,
            "CRITICAL" | "FATAL" => 50,
            _ => return None,
        },
        Value::Number(n) => n.as_u64()?,
        _ => return None,
    };
    Some(match n {
        0 => None,
        1..=10 => Some("debug".into()),
        11..=20 => Some("info".into()),
        21..=30 => Some("warn".into()),
        _ => Some("error".into()),
    })
}

/// The one destination for a logger's handlers: a file if there is one
/// (that is where the operator looks), else the first stream. The others
/// are named as ignored.
fn choose(
    names: &[&str],
    handlers: &BTreeMap<String, Handler>,
    ignored: &mut Vec<String>,
) -> Option<LogOutput> {
    let outputs: Vec<(&str, &LogOutput)> = names
        .iter()
        .filter_map(|n| match handlers.get(*n) {
            Some(Handler::Output(o)) => Some((*n, o)),
            _ => None,
        })
        .collect();
    let chosen = outputs
        .iter()
        .find(|(_, o)| matches!(o, LogOutput::File(_)))
        .or(outputs.first())
        .copied()?;
    for (name, out) in &outputs {
        if *out != chosen.1 {
            ignored.push(format!(
                "handlers.{name} (pushgate writes each logger's lines to one place: handlers.{})",
                chosen.0
            ));
        }
    }
    Some(chosen.1.clone())
}

#[cfg(test)]
mod tests {
    use super::super::problems::Severity;
    use super::super::{Config, LogOutput};
    use std::path::PathBuf;

    fn log_of(yaml: &str) -> (super::super::LogConfig, Vec<String>) {
        let (c, warnings) = Config::from_yaml(yaml, "t.yaml").expect("valid");
        let w = warnings
            .iter()
            .filter(|w| w.severity == Severity::Warning && w.path.starts_with("log"))
            .map(|w| w.to_string())
            .collect();
        (c.log, w)
    }

    const SYGNAL_SAMPLE_LOG: &str = r#"
log:
  setup:
    version: 1
    formatters:
      normal:
        format: "%(asctime)s [%(process)d] %(levelname)-5s %(name)s %(message)s"
    handlers:
      stderr:
        class: "logging.StreamHandler"
        formatter: "normal"
        stream: "ext://sys.stderr"
      stdout:
        class: "logging.StreamHandler"
        formatter: "normal"
        stream: "ext://sys.stdout"
      file:
        class: "logging.handlers.WatchedFileHandler"
        formatter: "normal"
        filename: "/tmp/pushgate-logsetup-test.log"
    loggers:
      sygnal.access:
        propagate: false
        handlers: ["stdout"]
        level: "INFO"
      sygnal:
        propagate: false
        handlers: ["stderr", "file"]
        level: DEBUG
      twisted:
        level: WARNING
    root:
      handlers: ["stderr"]
      level: "WARNING"
    disable_existing_loggers: false
"#;

    #[test]
    fn dict_config_levels_and_handlers_map_onto_ours() {
        let (log, warnings) = log_of(SYGNAL_SAMPLE_LOG);
        assert_eq!(log.level, "warn,pushgate=debug,pushgate::access=info");
        assert_eq!(
            log.output,
            LogOutput::File(PathBuf::from("/tmp/pushgate-logsetup-test.log"))
        );
        assert_eq!(log.access_output, Some(LogOutput::Stdout));
        assert_eq!(
            warnings,
            vec!["warning: log.setup: parts of this Python logging setup have no meaning for pushgate and are ignored: \
                  formatters.normal, handlers.stderr (pushgate writes each logger's lines to one place: handlers.file), loggers.twisted \
                  (lines are formatted by `log.format`: text or json)"]
        );
    }

    #[test]
    fn a_root_only_setup_logs_to_its_stream_and_level() {
        let (log, warnings) = log_of(
            "log:\n  setup:\n    version: 1\n    handlers:\n      out:\n        class: logging.StreamHandler\n        stream: ext://sys.stdout\n    root:\n      level: 20\n      handlers: [out]\n",
        );
        assert_eq!(log.level, "info");
        assert_eq!(log.output, LogOutput::Stdout);
        assert_eq!(log.access_output, None);
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn unsupported_handlers_are_named_and_bad_levels_refused() {
        let (log, warnings) = log_of(
            "log:\n  setup:\n    handlers:\n      sys:\n        class: logging.handlers.SysLogHandler\n        address: /dev/log\n    root:\n      level: INFO\n      handlers: [sys]\n",
        );
        assert_eq!(log.output, LogOutput::Stderr);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("handlers.sys (logging.handlers.SysLogHandler)"));
        let err = Config::from_yaml("log:\n  setup:\n    root:\n      level: LOUD\n", "t.yaml")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("error: log.setup.root.level: expected a Python log level"),
            "{err}"
        );
    }

    #[test]
    fn a_handler_file_in_a_missing_directory_is_an_error_where_it_is_named() {
        let err = Config::from_yaml(
            "log:\n  setup:\n    handlers:\n      f:\n        class: logging.FileHandler\n        filename: /nonexistent/sygnal.log\n    root:\n      level: INFO\n      handlers: [f]\n",
            "t.yaml",
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            err.contains("error: log.setup.handlers: `/nonexistent/sygnal.log`: the directory `/nonexistent` does not exist"),
            "{err}"
        );
    }

    #[test]
    fn access_keys_have_their_meaning() {
        let (log, _) = log_of(
            "log:\n  access:\n    enabled: false\n    file: /tmp/access.log\n    x_forwarded_for: true\n",
        );
        assert!(!log.access_enabled);
        assert!(log.x_forwarded_for);
        assert_eq!(
            log.access_output,
            Some(LogOutput::File(PathBuf::from("/tmp/access.log")))
        );
    }
}
