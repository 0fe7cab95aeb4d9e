//! Sygnal-compatible YAML configuration, read into typed and validated structs.
//!
//! The file is found by Sygnal's lookup order extended with ours
//! (`--config`, `$PUSHGATE_CONF`, `$SYGNAL_CONF`, `./pushgate.yaml`,
//! `./sygnal.yaml`), parsed as YAML, then walked key by key so that every
//! problem is reported with its key path. Secrets named by the config (VAPID
//! keys, APNs keys, service-account files) are read and checked here, at
//! start-up, not at the first push.

mod apps;
mod logsetup;
mod problems;
mod tls;
mod walk;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

pub use apps::{
    certificate_not_after, check_certificate, ApnsAuth, ApnsConfig, ApnsPlatform, AppConfig,
    AppKind, EndpointKeys, FcmConfig, UnifiedPushConfig, VapidKey, WebPushConfig,
};
pub use problems::{ConfigError, Problem, Problems, Severity};
pub use tls::TlsConfig;
use walk::Section;

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub log: LogConfig,
    pub http: HttpConfig,
    /// Outbound proxy URL (`proxy`, else `$HTTPS_PROXY`); CONNECT is used for https.
    pub proxy: Option<String>,
    pub metrics: MetricsConfig,
    pub tracing: TracingConfig,
    pub limits: Limits,
    pub dispatch: DispatchConfig,
    pub store: StoreConfig,
    /// Serve HTTPS instead of plain HTTP.
    pub tls: Option<TlsConfig>,
    /// Apps in file order; keys are exact app ids or globs.
    pub apps: Vec<AppConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    /// A `tracing` filter directive such as `info` or `pushgate=debug`.
    pub level: String,
    pub format: LogFormat,
    /// Take the client address of the request log line from `X-Forwarded-For`.
    pub x_forwarded_for: bool,
    /// Where log lines go: `log.file`, or the handler `log.setup` names.
    pub output: LogOutput,
    /// `log.access.enabled`: one line per HTTP request (target `pushgate::access`).
    pub access_enabled: bool,
    /// Access lines go here instead of with the other lines (`log.access.file`,
    /// or a handler of `log.setup`'s `sygnal.access` logger).
    pub access_output: Option<LogOutput>,
}

/// Where log lines are written. A file is opened for appending and reopened
/// at `SIGHUP`, so logrotate can move it away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogOutput {
    Stderr,
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub bind_addresses: Vec<IpAddr>,
    pub port: u16,
    /// At shutdown, how long in-flight requests (and pushes still being sent
    /// after their answer) may take before they are cut.
    pub shutdown_timeout: Duration,
    /// A client has this long to send a request's headers (HTTP/1), and a
    /// new connection this long to send its first request (either protocol).
    pub header_read_timeout: Duration,
    /// A `/notify` body must have arrived completely this long after its headers.
    pub body_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Streams one HTTP/2 connection may have open at once.
    pub http2_max_concurrent_streams: u32,
    /// An HTTP/2 connection is pinged after this long without traffic ...
    pub http2_keep_alive_interval: Duration,
    /// ... and closed when the ping is not answered within this long.
    pub http2_keep_alive_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            bind_addresses: vec![IpAddr::from([127, 0, 0, 1])],
            port: 5000,
            shutdown_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            http2_max_concurrent_streams: 32,
            http2_keep_alive_interval: Duration::from_secs(20),
            http2_keep_alive_timeout: Duration::from_secs(20),
        }
    }
}

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// `metrics.prometheus` when enabled: where the exporter listens.
    pub prometheus: Option<(IpAddr, u16)>,
}

/// `tracing`: OpenTelemetry export of the spans notify → dispatch → upstream.
#[derive(Debug, Clone, Default)]
pub struct TracingConfig {
    pub otlp: Option<OtlpConfig>,
}

#[derive(Debug, Clone)]
pub struct OtlpConfig {
    /// The collector's OTLP/HTTP traces URL, used verbatim (JSON encoding).
    pub endpoint: String,
    pub service_name: String,
}

#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest accepted `/notify` body, in bytes.
    pub max_body_size: usize,
    /// Most devices accepted in one notification.
    pub max_devices: usize,
    /// Most `/notify` requests handled at once (counted once their body is
    /// read); more are answered 429.
    pub max_inflight_requests: usize,
    /// Most bytes of `/notify` bodies being read or handled at once (a body
    /// counts its declared length, or `max_body_size` when it declares none,
    /// from before it is read until its answer); past it, 429.
    pub max_inflight_bytes: usize,
    /// Most inbound connections open at once; past it new ones are closed at once.
    pub max_connections: usize,
    /// Most inbound connections open at once from one source IP (`None`: no such cap).
    pub max_connections_per_ip: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// TCP + TLS connect timeout for every outbound request.
    pub connect_timeout: Duration,
    /// Total time allowed for one upstream request, connect included.
    pub upstream_timeout: Duration,
    /// How long `/notify` waits for upstream results before queueing the rest in the outbox.
    pub answer_within: Duration,
    /// How long the outbox keeps retrying an entry before dropping it.
    pub max_age: Duration,
    /// A device already delivered for the same event id within this window is not sent again.
    pub dedup_window: Duration,
    /// How long a pushkey found dead is answered as rejected without asking upstream.
    pub rejection_ttl: Duration,
    /// First outbox retry delay; doubles per attempt (with jitter) up to `retry_max_delay`.
    pub retry_initial_delay: Duration,
    pub retry_max_delay: Duration,
    /// `dispatch.rejection_breaker`: stop rejecting when an app's tokens die too fast.
    pub rejection_breaker: BreakerConfig,
    /// Outbox caps: past them, temporary failures are answered 429 instead of queued.
    pub outbox_max_entries: u64,
    pub outbox_max_bytes: u64,
    pub outbox_max_entries_per_app: u64,
}

/// `dispatch.rejection_breaker`: per app, when the push service calls more than
/// `share` of at least `min_tokens` distinct tokens dead within `window`,
/// token-dead answers are held back (failed, not rejected).
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    pub enabled: bool,
    pub share: f64,
    pub min_tokens: usize,
    pub window: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            enabled: true,
            share: 0.5,
            min_tokens: 20,
            window: Duration::from_secs(300),
        }
    }
}

/// `store`: where the outbox, the rejection memory and the de-duplication
/// records live. SQLite (a local file) unless the config says otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// Stateless: temporary failures answer 502, nothing is remembered.
    None,
    Sqlite {
        path: PathBuf,
    },
    Postgres {
        /// Holds the database password: redacted in `Debug`.
        url: crate::secret::Secret,
        max_connections: u32,
    },
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::Sqlite {
            path: PathBuf::from("./pushgate.db"),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // The largest legal Matrix event is 64 KiB; room for the envelope and devices.
            max_body_size: 128 * 1024,
            max_devices: 100,
            max_inflight_requests: 1024,
            // 512 maximum-size bodies; typical ones are a few KiB.
            max_inflight_bytes: 64 * 1024 * 1024,
            max_connections: 4096,
            max_connections_per_ip: None,
        }
    }
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            connect_timeout: Duration::from_secs(5),
            upstream_timeout: Duration::from_secs(10),
            answer_within: Duration::from_secs(2),
            max_age: Duration::from_secs(3600),
            dedup_window: Duration::from_secs(600),
            rejection_ttl: Duration::from_secs(30 * 24 * 3600),
            retry_initial_delay: Duration::from_secs(1),
            retry_max_delay: Duration::from_secs(300),
            rejection_breaker: BreakerConfig::default(),
            outbox_max_entries: 1_000_000,
            outbox_max_bytes: 1 << 30,
            outbox_max_entries_per_app: 200_000,
        }
    }
}

/// Where the configuration came from, for messages.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub file: PathBuf,
    pub config: Config,
    /// Warnings found while loading (errors make loading fail).
    pub warnings: Vec<Problem>,
}

/// Finds the config file by the documented lookup order.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, ConfigError> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    for var in ["PUSHGATE_CONF", "SYGNAL_CONF"] {
        if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(v));
        }
    }
    for name in ["pushgate.yaml", "sygnal.yaml"] {
        let p = PathBuf::from(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(ConfigError::NotFound {
        tried: "--config, $PUSHGATE_CONF, $SYGNAL_CONF, ./pushgate.yaml, ./sygnal.yaml".into(),
    })
}

/// Locates, reads and validates the configuration.
pub fn load(explicit: Option<&Path>) -> Result<Loaded, ConfigError> {
    let file = locate(explicit)?;
    let text = std::fs::read_to_string(&file).map_err(|source| ConfigError::Unreadable {
        file: file.display().to_string(),
        source,
    })?;
    let (config, warnings) = Config::from_yaml(&text, &file.display().to_string())?;
    Ok(Loaded {
        file,
        config,
        warnings,
    })
}

impl Config {
    /// Parses and validates YAML text; `label` names the source in messages.
    /// Relative paths inside the config are taken from the working directory, as Sygnal does.
    pub fn from_yaml(text: &str, label: &str) -> Result<(Config, Vec<Problem>), ConfigError> {
        let value: Value = if text.trim().is_empty() {
            Value::Object(Default::default())
        } else {
            serde_saphyr::from_str(text).map_err(|e| ConfigError::Yaml {
                file: label.to_owned(),
                message: e.to_string(),
            })?
        };
        let mut p = Problems::default();
        let config = match &value {
            Value::Object(map) => Some(read_root(Section::new("", map), &mut p)),
            Value::Null => Some(read_root(Section::new("", &Default::default()), &mut p)),
            _ => {
                p.error("", "the top level must be a mapping of keys");
                None
            }
        };
        match config {
            Some(c) if !p.has_errors() => Ok((c, p.list)),
            _ => Err(ConfigError::Invalid {
                file: label.to_owned(),
                problems: p.list,
            }),
        }
    }
}

fn read_root<'a>(mut root: Section<'a>, p: &mut Problems) -> Config {
    let log = read_log(root.section("log", p), p);
    let http = read_http(root.section("http", p), p);
    let proxy = root.string("proxy", p).or_else(|| {
        ["HTTPS_PROXY", "https_proxy"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
    });
    if let Some(url) = &proxy {
        if url::Url::parse(url).is_err() {
            p.error("proxy", "expected a URL such as http://proxy.example:3128");
        }
    }
    let metrics = read_metrics(root.section("metrics", p), p);
    let tracing = read_tracing(root.section("tracing", p), p);
    let limits = read_limits(root.section("limits", p), p);
    let dispatch = read_dispatch(root.section("dispatch", p), p);
    let store = read_store(&mut root, p);
    let tls = tls::read_tls(root.section("tls", p), p);
    if root.raw("database").is_some() {
        p.warn(
            "database",
            "Sygnal's `database` key is not used; see `store`",
        );
    }
    // Sygnal's per-process keys that apply to every app; read where they are used.
    let apps = apps::read_apps(&mut root, p);
    root.finish(p);
    Config {
        log,
        http,
        proxy,
        metrics,
        tracing,
        limits,
        dispatch,
        store,
        tls,
        apps,
    }
}

fn read_log(s: Option<Section<'_>>, p: &mut Problems) -> LogConfig {
    let mut cfg = LogConfig {
        level: "info".into(),
        format: LogFormat::Text,
        x_forwarded_for: false,
        output: LogOutput::Stderr,
        access_enabled: true,
        access_output: None,
    };
    let Some(mut s) = s else { return cfg };
    if let Some(setup) = s.section("setup", p) {
        // Sygnal passes this to Python's logging.dictConfig.
        logsetup::read_setup(setup, &mut cfg, p);
    }
    if let Some(file) = s.path("file", p) {
        cfg.output = LogOutput::File(file);
    }
    if let Some(level) = s.string("level", p) {
        cfg.level = level;
    }
    if let Some(f) = s.string("format", p) {
        match f.as_str() {
            "text" => cfg.format = LogFormat::Text,
            "json" => cfg.format = LogFormat::Json,
            _ => p.error(s.key_path("format"), "expected `text` or `json`"),
        }
    }
    if let Some(mut access) = s.section("access", p) {
        cfg.x_forwarded_for = access.bool("x_forwarded_for", false, p);
        cfg.access_enabled = access.bool("enabled", true, p);
        if let Some(file) = access.path("file", p) {
            cfg.access_output = Some(LogOutput::File(file));
        }
        access.finish(p);
    }
    // A file named by `log.setup`'s handlers is reported there.
    let access_has_file = s
        .raw("access")
        .and_then(|a| a.get("file"))
        .is_some_and(|f| !f.is_null());
    for (key, out) in [
        (
            if s.has("file") {
                "file"
            } else {
                "setup.handlers"
            },
            Some(&cfg.output),
        ),
        (
            if access_has_file {
                "access.file"
            } else {
                "setup.handlers"
            },
            cfg.access_output.as_ref(),
        ),
    ] {
        if let Some(LogOutput::File(path)) = out {
            if let Err(why) = writable_file(path) {
                p.error(s.key_path(key), why);
            }
        }
    }
    if tracing_subscriber::EnvFilter::try_new(&cfg.level).is_err() {
        p.error(
            s.key_path("level"),
            format!(
                "`{}` is not a log level or filter (try info, debug, warn)",
                cfg.level
            ),
        );
    }
    s.finish(p);
    cfg
}

fn read_http(s: Option<Section<'_>>, p: &mut Problems) -> HttpConfig {
    let mut cfg = HttpConfig::default();
    let Some(mut s) = s else { return cfg };
    if let Some(list) = s.string_list("bind_addresses", p) {
        let mut addrs = Vec::new();
        for (i, a) in list.iter().enumerate() {
            match a.trim_matches(|c| c == '[' || c == ']').parse::<IpAddr>() {
                Ok(ip) => addrs.push(ip),
                Err(_) => p.error(
                    format!("http.bind_addresses[{i}]"),
                    format!("`{a}` is not an IP address"),
                ),
            }
        }
        if list.is_empty() {
            p.error("http.bind_addresses", "must list at least one address");
        }
        cfg.bind_addresses = addrs;
    }
    cfg.port = s.uint("port", 5000, 0, 65535, p) as u16;
    cfg.shutdown_timeout = s.duration("shutdown_timeout", cfg.shutdown_timeout, p);
    cfg.header_read_timeout = s.duration("header_read_timeout", cfg.header_read_timeout, p);
    cfg.body_read_timeout = s.duration("body_read_timeout", cfg.body_read_timeout, p);
    cfg.idle_timeout = s.duration("idle_timeout", cfg.idle_timeout, p);
    cfg.http2_max_concurrent_streams = s.uint(
        "http2_max_concurrent_streams",
        u64::from(cfg.http2_max_concurrent_streams),
        1,
        1000,
        p,
    ) as u32;
    cfg.http2_keep_alive_interval = s.duration(
        "http2_keep_alive_interval",
        cfg.http2_keep_alive_interval,
        p,
    );
    cfg.http2_keep_alive_timeout =
        s.duration("http2_keep_alive_timeout", cfg.http2_keep_alive_timeout, p);
    // A zero timer would close every connection at once (or, for hyper, panic).
    for (key, v) in [
        ("header_read_timeout", cfg.header_read_timeout),
        ("body_read_timeout", cfg.body_read_timeout),
        ("idle_timeout", cfg.idle_timeout),
        ("http2_keep_alive_interval", cfg.http2_keep_alive_interval),
        ("http2_keep_alive_timeout", cfg.http2_keep_alive_timeout),
    ] {
        if v.is_zero() {
            p.error(s.key_path(key), "must be more than zero");
        }
    }
    s.finish(p);
    cfg
}

fn read_metrics(s: Option<Section<'_>>, p: &mut Problems) -> MetricsConfig {
    let mut cfg = MetricsConfig { prometheus: None };
    let Some(mut s) = s else { return cfg };
    if let Some(mut prom) = s.section("prometheus", p) {
        if prom.bool("enabled", false, p) {
            let addr = prom
                .string("address", p)
                .unwrap_or_else(|| "127.0.0.1".into());
            // Sygnal (Python's HTTP server) reads an empty address as every interface.
            let addr = if addr.trim().is_empty() {
                "0.0.0.0".to_owned()
            } else {
                addr
            };
            let port = prom.uint("port", 8000, 0, 65535, p) as u16;
            match addr
                .trim_matches(|c| c == '[' || c == ']')
                .parse::<IpAddr>()
            {
                Ok(ip) => cfg.prometheus = Some((ip, port)),
                Err(_) => p.error(
                    prom.key_path("address"),
                    format!("`{addr}` is not an IP address"),
                ),
            }
        }
        prom.ignore(&["address", "port"]);
        prom.finish(p);
    }
    for unsupported in ["sentry", "opentracing"] {
        if let Some(mut sec) = s.section(unsupported, p) {
            if sec.bool("enabled", false, p) {
                p.warn(
                    sec.path.clone(),
                    format!("{unsupported} is not supported by pushgate (OpenTelemetry tracing replaces it: see `tracing.otlp`); ignored"),
                );
            }
            let keys: Vec<&str> = ["dsn", "implementation", "jaeger", "service_name"].to_vec();
            sec.ignore(&keys);
            sec.finish(p);
        }
    }
    s.finish(p);
    cfg
}

fn read_tracing(s: Option<Section<'_>>, p: &mut Problems) -> TracingConfig {
    let mut cfg = TracingConfig::default();
    let Some(mut s) = s else { return cfg };
    if let Some(mut otlp) = s.section("otlp", p) {
        let enabled = otlp.bool("enabled", false, p);
        let endpoint = otlp
            .string("endpoint", p)
            .unwrap_or_else(|| "http://127.0.0.1:4318/v1/traces".into());
        let service_name = otlp
            .string("service_name", p)
            .unwrap_or_else(|| "pushgate".into());
        let valid =
            url::Url::parse(&endpoint).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
        if !valid {
            p.error(
                otlp.key_path("endpoint"),
                format!(
                    "`{endpoint}` is not an http(s) URL such as http://127.0.0.1:4318/v1/traces"
                ),
            );
        } else if enabled {
            cfg.otlp = Some(OtlpConfig {
                endpoint,
                service_name,
            });
        }
        otlp.finish(p);
    }
    s.finish(p);
    cfg
}

fn read_limits(s: Option<Section<'_>>, p: &mut Problems) -> Limits {
    let d = Limits::default();
    let Some(mut s) = s else { return d };
    let cfg = Limits {
        max_body_size: s.bytes("max_body_size", d.max_body_size as u64, p) as usize,
        max_devices: s.uint("max_devices", d.max_devices as u64, 1, 100_000, p) as usize,
        max_inflight_requests: s.uint(
            "max_inflight_requests",
            d.max_inflight_requests as u64,
            1,
            1_000_000,
            p,
        ) as usize,
        max_inflight_bytes: s.bytes("max_inflight_bytes", d.max_inflight_bytes as u64, p) as usize,
        max_connections: s.uint("max_connections", d.max_connections as u64, 1, 1_000_000, p)
            as usize,
        // Absent (or null): no per-address cap.
        max_connections_per_ip: s
            .raw("max_connections_per_ip")
            .is_some()
            .then(|| s.uint("max_connections_per_ip", 1, 1, 1_000_000, p) as usize),
    };
    if cfg.max_inflight_bytes < cfg.max_body_size {
        // A body of the maximum size could never be admitted: its sender would retry forever.
        p.error(
            s.key_path("max_inflight_bytes"),
            format!(
                "must be at least limits.max_body_size ({} bytes)",
                cfg.max_body_size
            ),
        );
    }
    s.finish(p);
    cfg
}

fn read_dispatch(s: Option<Section<'_>>, p: &mut Problems) -> DispatchConfig {
    let d = DispatchConfig::default();
    let Some(mut s) = s else { return d };
    let cfg = DispatchConfig {
        connect_timeout: s.duration("connect_timeout", d.connect_timeout, p),
        upstream_timeout: s.duration("upstream_timeout", d.upstream_timeout, p),
        answer_within: s.duration("answer_within", d.answer_within, p),
        max_age: s.duration("max_age", d.max_age, p),
        dedup_window: s.duration("dedup_window", d.dedup_window, p),
        rejection_ttl: s.duration("rejection_ttl", d.rejection_ttl, p),
        retry_initial_delay: s.duration("retry_initial_delay", d.retry_initial_delay, p),
        retry_max_delay: s.duration("retry_max_delay", d.retry_max_delay, p),
        rejection_breaker: read_breaker(s.section("rejection_breaker", p), p),
        outbox_max_entries: s.uint(
            "outbox_max_entries",
            d.outbox_max_entries,
            1,
            u64::MAX >> 1,
            p,
        ),
        outbox_max_bytes: s.bytes("outbox_max_bytes", d.outbox_max_bytes, p),
        outbox_max_entries_per_app: s.uint(
            "outbox_max_entries_per_app",
            d.outbox_max_entries_per_app,
            1,
            u64::MAX >> 1,
            p,
        ),
    };
    for (key, v) in [
        ("connect_timeout", cfg.connect_timeout),
        ("upstream_timeout", cfg.upstream_timeout),
        ("answer_within", cfg.answer_within),
        ("max_age", cfg.max_age),
        ("retry_initial_delay", cfg.retry_initial_delay),
        ("retry_max_delay", cfg.retry_max_delay),
    ] {
        if v.is_zero() {
            p.error(s.key_path(key), "must be more than zero");
        }
    }
    if cfg.retry_max_delay < cfg.retry_initial_delay {
        p.error(
            s.key_path("retry_max_delay"),
            "must not be shorter than retry_initial_delay",
        );
    }
    s.finish(p);
    cfg
}

fn read_breaker(s: Option<Section<'_>>, p: &mut Problems) -> BreakerConfig {
    let d = BreakerConfig::default();
    let Some(mut s) = s else { return d };
    let cfg = BreakerConfig {
        enabled: s.bool("enabled", d.enabled, p),
        share: s.fraction("share", d.share, p),
        min_tokens: s.uint("min_tokens", d.min_tokens as u64, 1, 1_000_000, p) as usize,
        window: s.duration("window", d.window, p),
    };
    if cfg.window < Duration::from_secs(1) {
        p.error(s.key_path("window"), "must be at least 1s");
    }
    s.finish(p);
    cfg
}

fn read_store(root: &mut Section<'_>, p: &mut Problems) -> StoreConfig {
    const EXPECTED: &str =
        "expected `none`, `{sqlite: {path}}` or `{postgres: {url, max_connections}}`";
    let Some(v) = root.raw("store") else {
        return StoreConfig::default();
    };
    match v {
        Value::String(s) if s == "none" => StoreConfig::None,
        Value::Object(_) => {
            let Some(mut s) = Section::of("store".into(), v, p) else {
                return StoreConfig::None;
            };
            let cfg = if let Some(mut sq) = s.section("sqlite", p) {
                let path = sq
                    .path("path", p)
                    .unwrap_or_else(|| PathBuf::from("./pushgate.db"));
                if let Err(why) = writable_file(&path) {
                    p.error(sq.key_path("path"), why);
                }
                sq.finish(p);
                StoreConfig::Sqlite { path }
            } else if let Some(mut pg) = s.section("postgres", p) {
                let url = pg.required_string("url", p).unwrap_or_default();
                if !(url.is_empty()
                    || url.starts_with("postgres://")
                    || url.starts_with("postgresql://"))
                {
                    p.error(
                        pg.key_path("url"),
                        "expected a URL such as postgres://user:password@127.0.0.1/pushgate",
                    );
                }
                let max_connections = pg.uint("max_connections", 10, 1, 1000, p) as u32;
                pg.finish(p);
                StoreConfig::Postgres {
                    url: url.into(),
                    max_connections,
                }
            } else {
                p.error("store", EXPECTED);
                StoreConfig::None
            };
            s.finish(p);
            cfg
        }
        _ => {
            p.error("store", EXPECTED);
            StoreConfig::None
        }
    }
}

/// Whether the gateway will be able to create or append to `path`: its
/// directory exists and is writable, and the file, if there, is writable.
/// An existing file is opened for appending (nothing written); for a new one,
/// a uniquely named probe file is created in the directory and removed.
fn writable_file(path: &Path) -> Result<(), String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(format!(
            "`{}`: the directory `{}` does not exist",
            path.display(),
            dir.display()
        ));
    }
    if path.is_dir() {
        return Err(format!("`{}` is a directory", path.display()));
    }
    let probe = if path.exists() {
        std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map(drop)
    } else {
        let name = dir.join(format!(
            ".pushgate-check-{}-{}",
            std::process::id(),
            rand_core::RngCore::next_u32(&mut rand_core::OsRng)
        ));
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&name)
            .map(|_| {
                let _ = std::fs::remove_file(&name);
            })
    };
    probe.map_err(|e| format!("`{}` cannot be written: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(yaml: &str) -> Vec<String> {
        match Config::from_yaml(yaml, "test.yaml") {
            Ok(_) => Vec::new(),
            Err(ConfigError::Invalid { problems, .. }) => problems
                .iter()
                .filter(|p| p.severity == Severity::Error)
                .map(|p| p.to_string())
                .collect(),
            Err(e) => vec![e.to_string()],
        }
    }

    /// `n` comment lines at `indent` spaces, the way sample configs explain a key.
    fn comments(n: usize, indent: usize) -> String {
        (0..n)
            .map(|i| {
                format!(
                    "{:indent$}# line {i}: explains the key below, 'quoted' and \"quoted\" too\n",
                    ""
                )
            })
            .collect()
    }

    #[test]
    fn long_comment_blocks_parse_at_every_nesting_level() {
        for n in [32, 33, 100, 1000] {
            let (c0, c2, c4, c6, c8) = (
                comments(n, 0),
                comments(n, 2),
                comments(n, 4),
                comments(n, 6),
                comments(n, 8),
            );
            let yaml = format!(
                "{c0}log:\n{c2}  level: 'debug'\n{c2}  access:\n{c4}    x_forwarded_for: true\n{c4}\n\
                 http:\n{c2}  bind_addresses:\n{c4}    - \"127.0.0.1\"\n{c4}    - '::1'\n{c2}  port: 5000\n\
                 {c0}limits: &limits\n{c2}  max_devices: 50\n\
                 metrics:\n{c2}  prometheus:\n{c4}    enabled: false\n{c4}    address: ''\n\
                 store: \"none\"\n\
                 apps:\n{c2}  com.example.a:\n{c4}    type: \"sygnal.gcmpushkin.GcmPushkin\"\n\
                 {c4}    api_version: v1\n{c4}    project_id: 'p'\n\
                 {c4}    service_account_file: \"/nonexistent/sa.json\"\n\
                 {c4}    fcm_options:\n{c6}      android:\n{c8}        priority: high\n{c8}\n\
                 {c2}  com.example.b:\n{c4}    type: apns\n{c4}    keyfile: /nonexistent/k.p8\n\
                 {c4}    key_id: &kid 'ABC'\n{c4}    team_id: *kid\n{c4}    topic: \"t\"\n{c0}"
            );
            let problems = match Config::from_yaml(&yaml, "t.yaml") {
                Err(ConfigError::Invalid { problems, .. }) => problems,
                other => panic!("{n} comment lines: expected the missing key files, got {other:?}"),
            };
            let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
            assert_eq!(
                text,
                vec![
                    "error: apps.com.example.a.service_account_file: cannot read `/nonexistent/sa.json`: No such file or directory (os error 2)".to_owned(),
                    "error: apps.com.example.b.keyfile: cannot read `/nonexistent/k.p8`: No such file or directory (os error 2)".to_owned(),
                ],
                "{n} comment lines"
            );
        }
    }

    #[test]
    fn anchors_aliases_and_quoting_styles_read_alike() {
        let yaml = "defaults: &d\n  upstream_timeout: \"5s\"\n  connect_timeout: '2s'\n\
                    dispatch:\n  <<: *d\n  max_age: 1h\n\
                    http:\n  bind_addresses: [\"127.0.0.1\", '::1']\n";
        let (c, warnings) = Config::from_yaml(yaml, "t.yaml").expect("valid");
        assert_eq!(c.dispatch.upstream_timeout, Duration::from_secs(5));
        assert_eq!(c.dispatch.connect_timeout, Duration::from_secs(2));
        assert_eq!(c.dispatch.max_age, Duration::from_secs(3600));
        assert_eq!(c.http.bind_addresses.len(), 2);
        // The anchor's holder is not a key we know; it is named, not fatal.
        assert!(warnings
            .iter()
            .any(|w| w.to_string() == "warning: defaults: unknown key, ignored"));
    }

    #[test]
    fn sygnal_values_we_used_to_refuse() {
        let (c, _) = Config::from_yaml(
            "metrics:\n  prometheus:\n    enabled: true\n    address: ''\n    port: 9000\n",
            "t.yaml",
        )
        .expect("valid");
        assert_eq!(
            c.metrics.prometheus,
            Some((IpAddr::from([0, 0, 0, 0]), 9000))
        );
    }

    #[test]
    fn with_certfile_and_keyfile_the_certificate_is_used_and_prod_is_production() {
        use p256::pkcs8::{EncodePrivateKey, LineEnding};
        let dir = tempfile::tempdir().expect("dir");
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.p8");
        let ca = testkit::tls::TestCa::new();
        std::fs::write(&cert, ca.client_cert("com.example.ios").combined_pem()).expect("cert");
        let p8 = p256::SecretKey::random(&mut rand_core::OsRng)
            .to_pkcs8_pem(LineEnding::LF)
            .expect("pem");
        std::fs::write(&key, p8.as_bytes()).expect("key");
        let yaml = format!(
            "store: none\napps:\n  a:\n    type: sygnal.apnspushkin.ApnsPushkin\n    certfile: {}\n    keyfile: {}\n    key_id: K\n    team_id: T\n    platform: prod\n",
            cert.display(),
            key.display()
        );
        let (c, warnings) = Config::from_yaml(&yaml, "t.yaml").expect("valid");
        let AppKind::Apns(apns) = &c.apps[0].kind else {
            panic!("an APNs app: {:?}", c.apps[0].kind);
        };
        assert!(
            matches!(&apns.auth, ApnsAuth::Certificate { certfile } if *certfile == cert),
            "{:?}",
            apns.auth
        );
        assert_eq!(apns.platform, ApnsPlatform::Production);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(c.apps[0]
            .certificate_expiry()
            .is_some_and(|t| t > 1_700_000_000));
    }

    #[test]
    fn an_unusable_store_path_is_a_config_error() {
        assert_eq!(
            errors("store:\n  sqlite:\n    path: /nonexistent/dir/pushgate.db\n"),
            vec!["error: store.sqlite.path: `/nonexistent/dir/pushgate.db`: the directory `/nonexistent/dir` does not exist"]
        );
        let dir = tempfile::tempdir().expect("dir");
        let yaml = format!("store:\n  sqlite:\n    path: {}\n", dir.path().display());
        assert_eq!(
            errors(&yaml),
            vec![format!(
                "error: store.sqlite.path: `{}` is a directory",
                dir.path().display()
            )]
        );
        let ok = format!(
            "store:\n  sqlite:\n    path: {}/new.db\n",
            dir.path().display()
        );
        assert_eq!(errors(&ok), Vec::<String>::new());
        // Checking created nothing.
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 0);
    }

    #[test]
    fn inbound_bounds_have_safe_defaults() {
        let (c, _) = Config::from_yaml("", "test.yaml").expect("valid");
        assert_eq!(c.http.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.http.body_read_timeout, Duration::from_secs(10));
        assert_eq!(c.http.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.http.http2_max_concurrent_streams, 32);
        assert_eq!(c.http.http2_keep_alive_interval, Duration::from_secs(20));
        assert_eq!(c.http.http2_keep_alive_timeout, Duration::from_secs(20));
        assert_eq!(c.limits.max_body_size, 128 * 1024);
        assert_eq!(c.limits.max_connections, 4096);
        assert_eq!(c.limits.max_connections_per_ip, None);
        assert_eq!(c.limits.max_inflight_bytes, 64 * 1024 * 1024);
    }

    #[test]
    fn the_byte_budget_holds_at_least_one_maximum_body() {
        let (c, _) = Config::from_yaml(
            "limits:\n  max_inflight_bytes: 1024MiB\n  max_body_size: 64KiB\n",
            "test.yaml",
        )
        .expect("valid");
        assert_eq!(c.limits.max_inflight_bytes, 1 << 30);
        let e = errors("limits:\n  max_inflight_bytes: 64KiB\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].contains(
                "limits.max_inflight_bytes: must be at least limits.max_body_size (131072 bytes)"
            ),
            "{e:?}"
        );
    }

    #[test]
    fn inbound_bounds_are_read_and_checked_with_their_key_paths() {
        let (c, _) = Config::from_yaml(
            "http:\n  header_read_timeout: 2s\n  idle_timeout: 30\n  http2_max_concurrent_streams: 8\nlimits:\n  max_connections: 10\n  max_connections_per_ip: 3\n",
            "test.yaml",
        )
        .expect("valid");
        assert_eq!(c.http.header_read_timeout, Duration::from_secs(2));
        assert_eq!(c.http.idle_timeout, Duration::from_secs(30));
        assert_eq!(c.http.http2_max_concurrent_streams, 8);
        assert_eq!(c.limits.max_connections, 10);
        assert_eq!(c.limits.max_connections_per_ip, Some(3));
        assert_eq!(
            errors("http:\n  header_read_timeout: 0s\n  body_read_timeout: soon\n  http2_max_concurrent_streams: 0\nlimits:\n  max_connections: 0\n  max_connections_per_ip: many\n"),
            vec![
                "error: http.body_read_timeout: expected a duration: seconds as a number, or a string like \"500ms\", \"2s\", \"10m\"",
                "error: http.http2_max_concurrent_streams: expected a whole number from 1 to 1000, found 0",
                "error: http.header_read_timeout: must be more than zero",
                "error: limits.max_connections: expected a whole number from 1 to 1000000, found 0",
                "error: limits.max_connections_per_ip: expected a whole number from 1 to 1000000, found a string",
            ]
        );
    }
}
