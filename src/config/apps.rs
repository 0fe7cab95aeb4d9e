//! The `apps` section: one entry per app id (or glob), typed by `type`.
//!
//! Secrets are loaded and checked here so that a bad key file is reported
//! by `check-config` and at start-up, with the key path that names it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use p256::pkcs8::DecodePrivateKey;
use serde_json::{Map, Value};

use super::problems::Problems;
use super::walk::Section;

/// One configured app.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// The key under `apps`: an exact app id or a glob (`*`, `?`).
    pub id: String,
    /// Most dispatches in flight for this app; more count as temporary failures.
    pub inflight_request_limit: usize,
    pub kind: AppKind,
}

#[derive(Debug, Clone)]
pub enum AppKind {
    Apns(ApnsConfig),
    Fcm(FcmConfig),
    WebPush(WebPushConfig),
    UnifiedPush(UnifiedPushConfig),
}

impl AppConfig {
    /// When this app's APNs client certificate expires (Unix seconds); `None`
    /// for token auth, other types, or a file no longer readable.
    pub fn certificate_expiry(&self) -> Option<i64> {
        match &self.kind {
            AppKind::Apns(ApnsConfig {
                auth: ApnsAuth::Certificate { certfile },
                ..
            }) => certificate_not_after(&std::fs::read(certfile).ok()?),
            _ => None,
        }
    }
}

impl AppKind {
    /// The pushkin type name used in logs and metrics.
    pub fn type_name(&self) -> &'static str {
        match self {
            AppKind::Apns(_) => "apns",
            AppKind::Fcm(_) => "gcm",
            AppKind::WebPush(_) => "webpush",
            AppKind::UnifiedPush(_) => "unifiedpush",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApnsPlatform {
    Production,
    Sandbox,
}

#[derive(Debug, Clone)]
pub enum ApnsAuth {
    /// Token auth: a `.p8` key, its key id and the team id.
    Token {
        keyfile: PathBuf,
        key_id: String,
        team_id: String,
    },
    /// Certificate auth: a PEM file with the certificate and its unencrypted key.
    Certificate { certfile: PathBuf },
}

#[derive(Debug, Clone)]
pub struct ApnsConfig {
    pub auth: ApnsAuth,
    pub topic: Option<String>,
    pub platform: ApnsPlatform,
    pub push_type: Option<String>,
    pub convert_device_token_to_hex: bool,
    pub send_badge_counts: bool,
    /// `apns-expiration`: how long Apple keeps trying to deliver; none = try once.
    pub expiration: Option<Duration>,
    /// (ours) Send `apns-collapse-id` = room id, so a device shows one notification per room.
    pub collapse_id_from_room: bool,
    /// Base URL override for tests and mirrors.
    pub endpoint: Option<String>,
    /// Extra CA certificate (PEM) trusted for this app's upstream.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct FcmConfig {
    pub project_id: String,
    pub service_account_file: PathBuf,
    pub fcm_options: Map<String, Value>,
    pub max_connections: usize,
    pub send_badge_counts: bool,
    pub endpoint: Option<String>,
    pub token_uri: Option<String>,
    pub ca_file: Option<PathBuf>,
}

/// A VAPID private key; its `Debug` never shows the secret.
#[derive(Clone)]
pub struct VapidKey(pub Arc<p256::ecdsa::SigningKey>);

impl fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VapidKey(<redacted>)")
    }
}

#[derive(Debug, Clone)]
pub struct WebPushConfig {
    pub vapid_key: VapidKey,
    /// The VAPID `sub` claim: `mailto:` + `vapid_contact_email` (or the value as given if it is a URI).
    pub vapid_subject: String,
    pub endpoints: EndpointKeys,
}

/// The keys of an app whose endpoints are URLs chosen by clients (Web Push, UnifiedPush).
#[derive(Debug, Clone)]
pub struct EndpointKeys {
    /// Globs on `host` or `host:port`; empty means any host.
    pub allowed_endpoints: Vec<String>,
    /// How long the push server keeps a push for an offline device (`TTL`).
    pub ttl: Duration,
    /// Concurrent requests per endpoint origin.
    pub max_connections: usize,
    /// (ours) Allow endpoints on loopback/private/link-local addresses.
    pub allow_private_endpoints: bool,
    /// (ours) Allow plain `http://` endpoints.
    pub allow_http_endpoints: bool,
    pub ca_file: Option<PathBuf>,
}

/// A UnifiedPush app: the pushkey is the endpoint URL on the user's push server.
#[derive(Debug, Clone)]
pub struct UnifiedPushConfig {
    pub endpoints: EndpointKeys,
    /// This app also serves every app id that no other app matches.
    pub default_app: bool,
}

pub(super) fn read_apps(root: &mut Section<'_>, p: &mut Problems) -> Vec<AppConfig> {
    let Some(mut apps) = root.section("apps", p) else {
        p.warn("apps", "no apps configured: every device will be rejected");
        return Vec::new();
    };
    let ids: Vec<String> = apps_keys(&apps);
    let mut out = Vec::new();
    for id in ids {
        let path = apps.key_path(&id);
        // Sections borrow keys for their lifetime; leak-free by looking the key up again.
        let Some(value) = apps.raw_owned(&id) else {
            p.error(path, "expected a mapping with at least `type`");
            continue;
        };
        let Some(mut s) = Section::of(path.clone(), value, p) else {
            continue;
        };
        if id.is_empty() {
            p.error(path.clone(), "an app id must not be empty");
        }
        let Some(kind) = s.required_string("type", p) else {
            s.ignore(&ALL_APP_KEYS);
            s.finish(p);
            continue;
        };
        let kind = canonical_type(kind);
        let type_keys = keys_of_type(&kind);
        let inflight = s.uint("inflight_request_limit", 512, 1, 1_000_000, p) as usize;
        let kind = match kind.as_str() {
            "apns" => read_apns(&mut s, p).map(AppKind::Apns),
            "gcm" | "fcm" => read_fcm(&mut s, p).map(AppKind::Fcm),
            "webpush" => read_webpush(&mut s, p).map(AppKind::WebPush),
            "unifiedpush" => Some(AppKind::UnifiedPush(read_unifiedpush(&mut s, p))),
            other if other.contains('.') => {
                p.error(
                    s.key_path("type"),
                    format!("`{other}` looks like a Python pushkin class; plugins are not supported, use apns, gcm, webpush or unifiedpush"),
                );
                None
            }
            other => {
                p.error(
                    s.key_path("type"),
                    format!("unknown type `{other}`; expected apns, gcm (or fcm), webpush or unifiedpush"),
                );
                None
            }
        };
        // A reader that stopped at an error has not asked for the keys after
        // it: they are still valid keys, not unknown ones.
        s.ignore(type_keys);
        s.finish(p);
        if let Some(kind) = kind {
            out.push(AppConfig {
                id,
                inflight_request_limit: inflight,
                kind,
            });
        }
    }
    apps.finish(p);
    let defaults: Vec<&str> = out
        .iter()
        .filter(|a| matches!(&a.kind, AppKind::UnifiedPush(u) if u.default_app))
        .map(|a| a.id.as_str())
        .collect();
    if defaults.len() > 1 {
        p.error(
            "apps",
            format!(
                "`default_app: true` is set on several apps ({}); at most one may serve unmatched app ids",
                defaults.join(", ")
            ),
        );
    }
    out
}

/// Sygnal's pushkin class paths name our types too (`type:` takes either).
fn canonical_type(kind: String) -> String {
    match kind.as_str() {
        "sygnal.apnspushkin.ApnsPushkin" => "apns".into(),
        "sygnal.gcmpushkin.GcmPushkin" => "gcm".into(),
        "sygnal.webpushpushkin.WebpushPushkin" => "webpush".into(),
        _ => kind,
    }
}

const COMMON_KEYS: [&str; 2] = ["type", "inflight_request_limit"];
const APNS_KEYS: [&str; 14] = [
    "certfile",
    "keyfile",
    "key_id",
    "team_id",
    "topic",
    "platform",
    "push_type",
    "convert_device_token_to_hex",
    "send_badge_counts",
    "expiration",
    "collapse_id_from_room",
    "endpoint",
    "ca_file",
    "inflight_request_limit",
];
const FCM_KEYS: [&str; 11] = [
    "api_version",
    "api_key",
    "project_id",
    "service_account_file",
    "fcm_options",
    "max_connections",
    "send_badge_counts",
    "endpoint",
    "token_uri",
    "ca_file",
    "inflight_request_limit",
];
const WEBPUSH_KEYS: [&str; 9] = [
    "vapid_private_key",
    "vapid_contact_email",
    "allowed_endpoints",
    "ttl",
    "max_connections",
    "allow_private_endpoints",
    "allow_http_endpoints",
    "ca_file",
    "inflight_request_limit",
];
const UNIFIEDPUSH_KEYS: [&str; 8] = [
    "allowed_endpoints",
    "ttl",
    "max_connections",
    "allow_private_endpoints",
    "allow_http_endpoints",
    "ca_file",
    "inflight_request_limit",
    "default_app",
];
/// Every key some app type reads: an app whose type is missing or unknown
/// gets no "unknown key" warnings on top of its type error.
const ALL_APP_KEYS: [&str; 44] = concat_keys();

const fn concat_keys() -> [&'static str; 44] {
    let mut out = [""; 44];
    let mut n = 0;
    let lists: [&[&str]; 5] = [
        &COMMON_KEYS,
        &APNS_KEYS,
        &FCM_KEYS,
        &WEBPUSH_KEYS,
        &UNIFIEDPUSH_KEYS,
    ];
    let mut l = 0;
    while l < lists.len() {
        let mut i = 0;
        while i < lists[l].len() {
            out[n] = lists[l][i];
            n += 1;
            i += 1;
        }
        l += 1;
    }
    out
}

/// The keys an app of this type may have; all app keys for a type we don't know.
fn keys_of_type(kind: &str) -> &'static [&'static str] {
    match kind {
        "apns" => &APNS_KEYS,
        "gcm" | "fcm" => &FCM_KEYS,
        "webpush" => &WEBPUSH_KEYS,
        "unifiedpush" => &UNIFIEDPUSH_KEYS,
        _ => &ALL_APP_KEYS,
    }
}

fn apps_keys(apps: &Section<'_>) -> Vec<String> {
    apps.keys().map(str::to_owned).collect()
}

fn readable(path: &Path, key_path: String, p: &mut Problems) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            p.error(key_path, format!("cannot read `{}`: {e}", path.display()));
            None
        }
    }
}

fn url_key(s: &mut Section<'_>, key: &'static str, p: &mut Problems) -> Option<String> {
    let v = s.string(key, p)?;
    match url::Url::parse(&v) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Some(v.trim_end_matches('/').to_owned()),
        _ => {
            p.error(s.key_path(key), format!("`{v}` is not an http(s) URL"));
            None
        }
    }
}

fn ca_file(s: &mut Section<'_>, p: &mut Problems) -> Option<PathBuf> {
    let path = s.path("ca_file", p)?;
    let bytes = readable(&path, s.key_path("ca_file"), p)?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN CERTIFICATE-----") {
        p.error(
            s.key_path("ca_file"),
            format!("`{}` holds no PEM certificate", path.display()),
        );
    }
    Some(path)
}

fn read_apns(s: &mut Section<'_>, p: &mut Problems) -> Option<ApnsConfig> {
    let certfile = s.path("certfile", p);
    let keyfile = s.path("keyfile", p);
    let key_id = s.string("key_id", p);
    let team_id = s.string("team_id", p);
    let topic = s.string("topic", p);
    if certfile.is_some() && keyfile.is_some() {
        // Sygnal uses the certificate when both are given; so do we, but say so.
        p.warn(
            s.path.clone(),
            "both `certfile` and `keyfile` are set: the certificate is used and `keyfile` ignored (as Sygnal does); remove one",
        );
    }
    let keyfile = if certfile.is_some() { None } else { keyfile };
    let auth = match (certfile, keyfile) {
        (Some(certfile), _) => {
            if let Some(bytes) = readable(&certfile, s.key_path("certfile"), p) {
                match check_certificate(&bytes) {
                    Err(why) => p.error(
                        s.key_path("certfile"),
                        format!("`{}`: {why}", certfile.display()),
                    ),
                    Ok(days_left) if days_left < 30 => p.warn(
                        s.key_path("certfile"),
                        format!(
                            "`{}`: the certificate expires in {days_left} day(s); renew it",
                            certfile.display()
                        ),
                    ),
                    Ok(_) => {}
                }
            }
            ApnsAuth::Certificate { certfile }
        }
        (None, Some(keyfile)) => {
            for (key, v) in [
                ("key_id", &key_id),
                ("team_id", &team_id),
                ("topic", &topic),
            ] {
                if v.as_deref().is_none_or(str::is_empty) {
                    p.error(s.key_path(key), "required with token auth (`keyfile`)");
                }
            }
            if let Some(bytes) = readable(&keyfile, s.key_path("keyfile"), p) {
                let text = String::from_utf8_lossy(&bytes);
                if p256::SecretKey::from_pkcs8_pem(text.trim()).is_err() {
                    p.error(
                        s.key_path("keyfile"),
                        format!(
                            "`{}` is not an EC P-256 private key in PKCS#8 PEM (an Apple .p8 key)",
                            keyfile.display()
                        ),
                    );
                }
            }
            ApnsAuth::Token {
                keyfile,
                key_id: key_id.unwrap_or_default(),
                team_id: team_id.unwrap_or_default(),
            }
        }
        (None, None) => {
            p.error(s.path.clone(), "needs `keyfile` + `key_id` + `team_id` + `topic` (token auth) or `certfile` (certificate auth)");
            return None;
        }
    };
    let platform = match s.string("platform", p).as_deref() {
        // Sygnal's spellings: `prod` and an empty value mean production too.
        None | Some("production" | "prod" | "") => ApnsPlatform::Production,
        Some("sandbox") => ApnsPlatform::Sandbox,
        Some(other) => {
            p.error(
                s.key_path("platform"),
                format!("`{other}`: expected `production` (or `prod`) or `sandbox`"),
            );
            ApnsPlatform::Production
        }
    };
    let push_type = s.string("push_type", p);
    if let Some(t) = &push_type {
        const TYPES: [&str; 8] = [
            "alert",
            "background",
            "voip",
            "complication",
            "fileprovider",
            "mdm",
            "location",
            "liveactivity",
        ];
        if !TYPES.contains(&t.as_str()) {
            p.error(
                s.key_path("push_type"),
                format!("`{t}`: expected one of {}", TYPES.join(", ")),
            );
        }
    }
    Some(ApnsConfig {
        auth,
        topic,
        platform,
        push_type,
        convert_device_token_to_hex: s.bool("convert_device_token_to_hex", true, p),
        send_badge_counts: s.bool("send_badge_counts", true, p),
        expiration: s
            .has("expiration")
            .then(|| s.duration("expiration", Duration::ZERO, p)),
        collapse_id_from_room: s.bool("collapse_id_from_room", false, p),
        endpoint: url_key(s, "endpoint", p),
        ca_file: ca_file(s, p),
    })
}

fn read_fcm(s: &mut Section<'_>, p: &mut Problems) -> Option<FcmConfig> {
    let version = s.string("api_version", p);
    let has_api_key = s.raw("api_key").is_some();
    match version.as_deref() {
        Some("v1") => {}
        None | Some("legacy") => {
            p.error(
                s.key_path("api_version"),
                format!(
                    "{}Google shut down the legacy FCM API (api_key) in 2024; use the HTTP v1 API: \
                     `api_version: v1`, `project_id: <Firebase project id>` and \
                     `service_account_file: <path to the service-account JSON key>`",
                    if has_api_key && version.is_none() { "no api_version means `legacy`; " } else { "" }
                ),
            );
            return None;
        }
        Some(other) => {
            p.error(
                s.key_path("api_version"),
                format!("`{other}`: expected `v1`"),
            );
            return None;
        }
    }
    if has_api_key {
        p.warn(s.key_path("api_key"), "not used by the v1 API; remove it");
    }
    let project_id = s.required_string("project_id", p);
    let sa_path = s.path("service_account_file", p);
    if sa_path.is_none() {
        p.error(s.key_path("service_account_file"), "required, but missing");
    }
    if let Some(path) = &sa_path {
        if let Some(bytes) = readable(path, s.key_path("service_account_file"), p) {
            check_service_account(&bytes, path, s.key_path("service_account_file"), p);
        }
    }
    let fcm_options = s.object("fcm_options", p).unwrap_or_default();
    Some(FcmConfig {
        project_id: project_id.unwrap_or_default(),
        service_account_file: sa_path?,
        fcm_options,
        max_connections: s.uint("max_connections", 20, 1, 10_000, p) as usize,
        send_badge_counts: s.bool("send_badge_counts", true, p),
        endpoint: url_key(s, "endpoint", p),
        token_uri: url_key(s, "token_uri", p),
        ca_file: ca_file(s, p),
    })
}

fn check_service_account(bytes: &[u8], path: &Path, key_path: String, p: &mut Problems) {
    let Ok(Value::Object(sa)) = serde_json::from_slice::<Value>(bytes) else {
        p.error(
            key_path,
            format!("`{}` is not a JSON service-account key", path.display()),
        );
        return;
    };
    for field in ["client_email", "private_key", "token_uri"] {
        if !matches!(sa.get(field), Some(Value::String(v)) if !v.is_empty()) {
            p.error(
                key_path.clone(),
                format!("`{}` has no `{field}`: download a service-account key (JSON) from the Firebase console", path.display()),
            );
        }
    }
    if let Some(Value::String(pem)) = sa.get("private_key") {
        if let Err(e) = crate::keys::parse_rsa_key(pem) {
            p.error(
                key_path,
                format!(
                    "`{}`: private_key is not a usable RSA key in PKCS#8 PEM ({e})",
                    path.display()
                ),
            );
        }
    }
}

fn read_webpush(s: &mut Section<'_>, p: &mut Problems) -> Option<WebPushConfig> {
    let key_path = s.path("vapid_private_key", p);
    let contact = s.required_string("vapid_contact_email", p);
    let Some(key_path) = key_path else {
        p.error(
            s.key_path("vapid_private_key"),
            "required: the path of a P-256 private key PEM (create one with `pushgate gen-vapid`)",
        );
        return None;
    };
    let key = readable(&key_path, s.key_path("vapid_private_key"), p).and_then(|bytes| {
        match crate::keys::parse_p256_key(&String::from_utf8_lossy(&bytes)) {
            Some(k) => Some(k),
            None => {
                p.error(
                    s.key_path("vapid_private_key"),
                    format!(
                        "`{}` is not a P-256 private key in PEM (PKCS#8 or SEC1) or base64url DER",
                        key_path.display()
                    ),
                );
                None
            }
        }
    });
    let endpoints = read_endpoint_keys(s, Duration::from_secs(900), p);
    let cfg = WebPushConfig {
        vapid_key: VapidKey(Arc::new(key?)),
        vapid_subject: vapid_subject(&contact?),
        endpoints,
    };
    Some(cfg)
}

fn read_endpoint_keys(
    s: &mut Section<'_>,
    default_ttl: Duration,
    p: &mut Problems,
) -> EndpointKeys {
    EndpointKeys {
        allowed_endpoints: s.string_list("allowed_endpoints", p).unwrap_or_default(),
        ttl: Duration::from_secs(s.uint("ttl", default_ttl.as_secs(), 0, 2_419_200, p)),
        max_connections: s.uint("max_connections", 20, 1, 10_000, p) as usize,
        allow_private_endpoints: s.bool("allow_private_endpoints", false, p),
        allow_http_endpoints: s.bool("allow_http_endpoints", false, p),
        ca_file: ca_file(s, p),
    }
}

fn read_unifiedpush(s: &mut Section<'_>, p: &mut Problems) -> UnifiedPushConfig {
    UnifiedPushConfig {
        // A day: a phone that was offline still learns that messages wait.
        endpoints: read_endpoint_keys(s, Duration::from_secs(86_400), p),
        default_app: s.bool("default_app", false, p),
    }
}

fn vapid_subject(contact: &str) -> String {
    if contact.starts_with("mailto:") || contact.starts_with("https:") {
        contact.to_owned()
    } else {
        format!("mailto:{contact}")
    }
}

/// Checks an APNs certificate file: a certificate and its unencrypted private
/// key in PEM, matching each other, not expired. Returns the days left.
pub fn check_certificate(pem: &[u8]) -> Result<i64, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("unreadable PEM: {e}"))?;
    let Some(first) = certs.first().cloned() else {
        return Err(
            "holds no certificate (expected a PEM file with the certificate and its private key)"
                .into(),
        );
    };
    let key = PrivateKeyDer::from_pem_slice(pem)
        .map_err(|_| "holds no unencrypted private key (expected a PEM file with the certificate and its private key)".to_owned())?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("the private key cannot be used: {e}"))?;
    rustls::sign::CertifiedKey::new(certs, signing)
        .keys_match()
        .map_err(|_| "the private key does not belong to the certificate".to_owned())?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(&first).map_err(|e| format!("bad certificate: {e}"))?;
    let not_after = cert.validity().not_after.timestamp();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    if not_after <= now {
        return Err(format!(
            "the certificate expired on {}",
            cert.validity().not_after
        ));
    }
    Ok((not_after - now) / 86_400)
}

/// When the first certificate of a PEM file expires (Unix seconds); `None`
/// when the file holds no readable certificate. For the expiry gauge.
pub fn certificate_not_after(pem: &[u8]) -> Option<i64> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let first = CertificateDer::pem_slice_iter(pem).next()?.ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&first).ok()?;
    Some(cert.validity().not_after.timestamp())
}
