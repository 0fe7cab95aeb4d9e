//! Apple Push Notification service (`type: apns`): HTTP/2 over TLS to
//! `api.push.apple.com` (or the sandbox, or a configured `endpoint`), token
//! (ES256 provider JWT) or certificate auth.
//!
//! One [`net::h2::Client`] per app: every push of the app is a stream on the
//! same warm HTTP/2 connection; a new one is opened after GOAWAY or a broken
//! connection. 429/5xx/connection errors are retried with backoff while the
//! request's budget (`dispatch.upstream_timeout`) lasts.

mod judge;
pub mod payload;
pub mod reason;
pub mod token;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use futures::future::BoxFuture;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::auth_header::AuthHeader;
use super::exchange::{self, Attempt, Exchange, Policy, Reply, Step};
use super::outcome::{Cause, Unusable};
use super::tap::Tap;
use super::{Built, Outcome, Prepared, Pushkin, Settings};
use crate::config::{ApnsAuth, ApnsConfig, ApnsPlatform};
use crate::net::{self, NetError};
use crate::notification::{Device, Notification, Prio};
use crate::telemetry::metrics::Upstream;
use judge::judge;
use reason::ErrorBody;
use token::ProviderToken;

const PRODUCTION: &str = "https://api.push.apple.com";
const SANDBOX: &str = "https://api.sandbox.push.apple.com";
/// Three attempts for one push when APNs answers 429/5xx or the connection fails.
const POLICY: Policy = Policy {
    service: "APNs",
    max_attempts: 3,
    first_backoff: Duration::from_millis(100),
    read_body: true,
};

/// Errors building an APNs pushkin from a validated config.
#[derive(Debug, thiserror::Error)]
pub enum ApnsError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("`{0}` is not an EC P-256 private key in PKCS#8 PEM")]
    Key(String),
    #[error("`{path}`: {source}")]
    Identity {
        path: String,
        source: net::h2::IdentityError,
    },
    #[error("`{key}` is not usable in an HTTP header: {value:?}")]
    Header { key: &'static str, value: String },
    #[error("`endpoint` is not a URL: {0}")]
    Endpoint(String),
}

/// The header names of an APNs request, built once.
static APNS_ID: HeaderName = HeaderName::from_static("apns-id");
static APNS_PRIORITY: HeaderName = HeaderName::from_static("apns-priority");
static APNS_TOPIC: HeaderName = HeaderName::from_static("apns-topic");
static APNS_PUSH_TYPE: HeaderName = HeaderName::from_static("apns-push-type");
static APNS_EXPIRATION: HeaderName = HeaderName::from_static("apns-expiration");
static APNS_COLLAPSE_ID: HeaderName = HeaderName::from_static("apns-collapse-id");

/// `value` of the config key `key` as a header value, checked at start.
fn header_value(key: &'static str, value: &str) -> Result<HeaderValue, ApnsError> {
    HeaderValue::from_str(value).map_err(|_| ApnsError::Header {
        key,
        value: value.to_owned(),
    })
}

pub struct Apns {
    client: net::h2::Client,
    /// The endpoint; each push's URI is it with the device's path (no parse per push).
    base: Base,
    token: Option<ProviderToken>,
    /// The `authorization` header of the provider token in use, made once per token.
    authorization: AuthHeader,
    topic: Option<HeaderValue>,
    /// `apns-push-type`, as configured.
    push_type: Option<HeaderValue>,
    convert_to_hex: bool,
    send_badge_counts: bool,
    expiration: Option<Duration>,
    collapse_id_from_room: bool,
    budget: Duration,
    metrics: Upstream,
}

impl Apns {
    pub fn new(cfg: &ApnsConfig, s: &Settings<'_>) -> Result<Self, ApnsError> {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|source| ApnsError::Read {
                path: p.display().to_string(),
                source,
            })
        };
        let mut certificate_topic = None;
        let (token, identity) = match &cfg.auth {
            ApnsAuth::Token {
                keyfile,
                key_id,
                team_id,
            } => {
                let pem = String::from_utf8_lossy(&read(keyfile)?).into_owned();
                let key = crate::keys::parse_p256_key(&pem)
                    .ok_or_else(|| ApnsError::Key(keyfile.display().to_string()))?;
                (
                    Some(ProviderToken::new(
                        key,
                        key_id.clone(),
                        team_id.clone(),
                        s.metrics.clone(),
                    )),
                    None,
                )
            }
            ApnsAuth::Certificate { certfile } => {
                let pem = read(certfile)?;
                certificate_topic = certificate_uid(&pem);
                let identity =
                    net::h2::Identity::from_pem(&pem).map_err(|source| ApnsError::Identity {
                        path: certfile.display().to_string(),
                        source,
                    })?;
                (None, Some(identity))
            }
        };
        let base = cfg.endpoint.as_deref().unwrap_or(match cfg.platform {
            ApnsPlatform::Production => PRODUCTION,
            ApnsPlatform::Sandbox => SANDBOX,
        });
        let url = url::Url::parse(base).map_err(|e| ApnsError::Endpoint(format!("{base}: {e}")))?;
        let client = net::h2::Client::new(net::h2::Options {
            origin: &url,
            connect_timeout: s.connect_timeout,
            proxy: s.proxy,
            extra_ca: cfg.ca_file.as_deref(),
            identity,
            connections: Some(s.metrics.connections()),
        })?;
        let base = Base::new(&url).map_err(|e| ApnsError::Endpoint(format!("{base}: {e}")))?;
        // Without a configured topic, the certificate's own (as the reference does).
        let topic = cfg.topic.clone().or(certificate_topic);
        Ok(Apns {
            client,
            base,
            token,
            authorization: AuthHeader::new("bearer"),
            topic: topic.map(|t| header_value("topic", &t)).transpose()?,
            push_type: cfg
                .push_type
                .as_deref()
                .map(|t| header_value("push_type", t))
                .transpose()?,
            convert_to_hex: cfg.convert_device_token_to_hex,
            send_badge_counts: cfg.send_badge_counts,
            expiration: cfg.expiration,
            collapse_id_from_room: cfg.collapse_id_from_room,
            budget: s.timeout,
            metrics: s.metrics.clone(),
        })
    }

    /// Step 1: the device token, the payload within Apple's limit, and the
    /// headers that depend on the notification.
    fn build_push(&self, n: &Notification, d: &Device) -> Result<Push, Outcome> {
        // The URI is made first: it reads the token, which may be unusable.
        let uri = match with_device_token(d.pushkey.expose(), self.convert_to_hex, |token| {
            device_url(&self.base, token)
        }) {
            Ok(Ok(uri)) => uri,
            Ok(Err(e)) => {
                return Err(Outcome::failed(Cause::Local(format!(
                    "bad request URI: {e}"
                ))))
            }
            Err(why) => return Err(Outcome::unusable(Unusable::MalformedToken(why))),
        };
        let voip = self.push_type.as_ref().is_some_and(|t| t == "voip");
        let limit = if voip {
            payload::MAX_VOIP_PAYLOAD
        } else {
            payload::MAX_PAYLOAD
        };
        let body = match payload::render(n, d, self.send_badge_counts, limit) {
            Ok(Some(b)) => bytes::Bytes::from(b),
            Ok(None) => return Err(Outcome::Delivered),
            Err(payload::PayloadError::BadDefaultPayload) => {
                return Err(Outcome::unusable(Unusable::BadDefaultPayload))
            }
            // Nothing could be shortened: this push can never be delivered, but
            // the token is fine (ours: the reference answers 500).
            Err(e @ payload::PayloadError::TooLarge(..)) => {
                return Err(Outcome::failed(Cause::PayloadTooLarge(e.to_string())))
            }
        };
        let background = self.push_type.as_ref().is_some_and(|t| t == "background");
        let collapse_id = match (self.collapse_id_from_room, &n.room_id) {
            (true, Some(room)) => match HeaderValue::from_str(&collapse_id(room)) {
                Ok(v) => Some(v),
                Err(_) => {
                    return Err(Outcome::failed(Cause::Local(
                        "the room id is not usable as apns-collapse-id".into(),
                    )))
                }
            },
            _ => None,
        };
        Ok(Push {
            uri,
            body,
            priority: HeaderValue::from_static(if n.prio == Prio::Low || background {
                "5"
            } else {
                "10"
            }),
            collapse_id,
        })
    }

    /// The request of one attempt: a fresh `apns-id`, the current provider
    /// token and expiration. Header names and values are made once: no URI
    /// or header name is parsed per push.
    fn request(
        &self,
        p: &Push,
        jwt: Option<&Arc<str>>,
        apns_id: Uuid,
    ) -> Result<http::Request<bytes::Bytes>, String> {
        let mut req = http::Request::new(p.body.clone());
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = p.uri.clone();
        // The eight headers below and the client's two (`user-agent`, `accept`).
        *req.headers_mut() = http::HeaderMap::with_capacity(10);
        let h = req.headers_mut();
        h.insert(APNS_PRIORITY.clone(), p.priority.clone());
        h.insert(APNS_ID.clone(), apns_id_header(apns_id)?);
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(jwt) = jwt {
            h.insert(AUTHORIZATION, self.authorization.value(jwt)?);
        }
        if let Some(topic) = &self.topic {
            h.insert(APNS_TOPIC.clone(), topic.clone());
        }
        if let Some(t) = &self.push_type {
            h.insert(APNS_PUSH_TYPE.clone(), t.clone());
        }
        if let Some(exp) = self.expiration {
            let at = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                + exp;
            h.insert(APNS_EXPIRATION.clone(), HeaderValue::from(at.as_secs()));
        }
        if let Some(id) = &p.collapse_id {
            h.insert(APNS_COLLAPSE_ID.clone(), id.clone());
        }
        Ok(req)
    }
}

/// The `apns-id` header: the id in lower-case hyphenated form, marked never
/// to be indexed by HPACK. A fresh id per push would otherwise go into the
/// connection's header table each time (at both ends), evicting the headers
/// that do repeat, and each push would walk the ids already there (measured:
/// 1,800 instructions a push, docs/performance.md).
fn apns_id_header(id: Uuid) -> Result<HeaderValue, String> {
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = id.hyphenated().encode_lower(&mut text);
    let mut value = HeaderValue::from_str(text).map_err(|e| e.to_string())?;
    value.set_sensitive(true);
    Ok(value)
}

/// One APNs push, prepared: where it goes and what it carries.
pub(super) struct Push {
    uri: http::Uri,
    body: bytes::Bytes,
    priority: HeaderValue,
    collapse_id: Option<HeaderValue>,
}

/// The attempts of one push: APNs's part of the [exchange](super::exchange).
struct Attempts<'a> {
    apns: &'a Apns,
    push: &'a Push,
    /// The `apns-id` of the attempt in flight, for the log line of its answer.
    apns_id: Mutex<Uuid>,
}

impl exchange::Attempts<net::h2::Client> for Attempts<'_> {
    async fn request(&self) -> Result<Attempt<http::Request<bytes::Bytes>>, Outcome> {
        let jwt = match &self.apns.token {
            Some(t) => Some(t.get().await.map_err(|e| {
                Outcome::temporary(Cause::Credentials(format!("APNs provider token: {e}")))
            })?),
            None => None,
        };
        let apns_id = Uuid::new_v4();
        let request = self
            .apns
            .request(self.push, jwt.as_ref(), apns_id)
            .map_err(|e| Outcome::failed(Cause::Local(format!("bad request: {e}"))))?;
        if let Ok(mut id) = self.apns_id.lock() {
            *id = apns_id;
        }
        Ok(Attempt {
            request,
            credential: jwt,
        })
    }

    fn judge(&self, r: &Reply<'_>) -> Step {
        let body = r.error_body::<ErrorBody>();
        // The id is copied out of its lock only for a line that is written.
        if tracing::enabled!(tracing::Level::DEBUG) {
            let apns_id = self.apns_id.lock().map(|id| *id).unwrap_or_default();
            tracing::debug!(
                apns_id = %apns_id,
                status = r.status,
                reason = body.reason.as_deref().unwrap_or(""),
                "APNs answered"
            );
        }
        judge(r.status, &body, r.retry_after)
    }

    fn renew(&self, used: &str) {
        if let Some(t) = &self.apns.token {
            t.refused(used);
        }
    }
}

/// The endpoint, split once: scheme and authority are shared by every push.
struct Base {
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// The endpoint's path without its trailing `/`.
    path: String,
    /// `?` and the endpoint's query, if it has one.
    query: String,
}

impl Base {
    fn new(url: &url::Url) -> Result<Base, String> {
        let uri: http::Uri = url.as_str().parse().map_err(|e| format!("{e}"))?;
        let parts = uri.into_parts();
        let (Some(scheme), Some(authority)) = (parts.scheme, parts.authority) else {
            return Err("not an absolute URL".into());
        };
        Ok(Base {
            scheme,
            authority,
            path: url.path().trim_end_matches('/').to_owned(),
            query: url.query().map(|q| format!("?{q}")).unwrap_or_default(),
        })
    }
}

/// Where a push for `token` goes: the endpoint with `/3/device/<token>`
/// after its path (only the path is parsed, not the whole URL).
fn device_url(base: &Base, token: Token<'_>) -> Result<http::Uri, http::Error> {
    const DEVICE: &str = "/3/device/";
    let mut path =
        String::with_capacity(base.path.len() + DEVICE.len() + token.len() + base.query.len());
    path.push_str(&base.path);
    path.push_str(DEVICE);
    token.push_to(&mut path);
    path.push_str(&base.query);
    http::Uri::builder()
        .scheme(base.scheme.clone())
        .authority(base.authority.clone())
        .path_and_query(path)
        .build()
}

/// Apple limits `apns-collapse-id` to 64 bytes; longer room ids are hashed.
fn collapse_id(room_id: &str) -> String {
    if room_id.len() <= 64 {
        room_id.to_owned()
    } else {
        lower_hex(&Sha256::digest(room_id.as_bytes()))
    }
}

/// Base64 as pushkeys come: the standard alphabet, with or without padding.
const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Decoded tokens up to this size are decoded on the stack (a pushkey of
/// at most 512 characters decodes to at most 384 bytes).
const STACK_TOKEN: usize = 384;

/// A device token as the URL path carries it, before it is written there.
#[derive(Clone, Copy)]
enum Token<'a> {
    /// A hex pushkey, written lowercase.
    Hex(&'a str),
    /// A decoded base64 pushkey, written as lowercase hex.
    Bytes(&'a [u8]),
}

impl Token<'_> {
    /// Its length in the path.
    fn len(self) -> usize {
        match self {
            Token::Hex(h) => h.len(),
            Token::Bytes(b) => b.len() * 2,
        }
    }

    fn push_to(self, out: &mut String) {
        match self {
            Token::Hex(h) => {
                let start = out.len();
                out.push_str(h);
                out[start..].make_ascii_lowercase();
            }
            Token::Bytes(b) => push_lower_hex(out, b),
        }
    }
}

/// `f` of the device token of `pushkey`: the base64 pushkey's bytes (Sygnal's
/// `convert_device_token_to_hex`), or the pushkey as given, which must be
/// hex; the error says why the pushkey is no token. Without allocating
/// (unless the token is longer than a pushkey may be): the check of every
/// device before it is sent runs this too.
fn with_device_token<R>(
    pushkey: &str,
    convert_to_hex: bool,
    f: impl FnOnce(Token<'_>) -> R,
) -> Result<R, &'static str> {
    const NOT_BASE64: &str = "pushkey is not valid base64 (convert_device_token_to_hex is on)";
    if convert_to_hex {
        let text = pushkey.trim();
        let mut stack = [0u8; STACK_TOKEN];
        let heap;
        let bytes: &[u8] = if base64::decoded_len_estimate(text.len()) <= STACK_TOKEN {
            let n = BASE64
                .decode_slice(text, &mut stack)
                .map_err(|_| NOT_BASE64)?;
            &stack[..n]
        } else {
            heap = BASE64.decode(text).map_err(|_| NOT_BASE64)?;
            &heap
        };
        if bytes.is_empty() {
            return Err("pushkey decodes to nothing");
        }
        Ok(f(Token::Bytes(bytes)))
    } else if !pushkey.is_empty() && pushkey.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(f(Token::Hex(pushkey)))
    } else {
        Err("pushkey is not a hex device token (convert_device_token_to_hex is off)")
    }
}

/// The device token for the URL path, as text.
#[cfg(test)]
fn device_token(pushkey: &str, convert_to_hex: bool) -> Result<String, &'static str> {
    with_device_token(pushkey, convert_to_hex, |t| {
        let mut out = String::with_capacity(t.len());
        t.push_to(&mut out);
        out
    })
}

/// `bytes` as lowercase hex, two digits each (a `format!` per byte cost
/// about 150 instructions and an allocation).
fn lower_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_lower_hex(&mut out, bytes);
    out
}

fn push_lower_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
}

impl Pushkin for Apns {
    fn type_name(&self) -> &'static str {
        "apns"
    }

    fn unusable(&self, d: &Device) -> Option<Unusable> {
        if let Err(why) = with_device_token(d.pushkey.expose(), self.convert_to_hex, |_| ()) {
            return Some(Unusable::MalformedToken(why));
        }
        Unusable::default_payload_of(d)
    }

    fn prepare<'a>(
        &'a self,
        n: &'a Notification,
        d: &'a Device,
        _traced: bool,
    ) -> BoxFuture<'a, Result<Prepared, Outcome>> {
        let prepared = self.build_push(n, d).map(|p| Prepared(Built::Apns(p)));
        Box::pin(std::future::ready(prepared))
    }

    fn send<'a>(&'a self, push: Prepared, tap: Option<&'a Tap>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let Prepared(Built::Apns(push)) = push else {
                return Prepared::mismatch();
            };
            let x = Exchange {
                client: &self.client,
                metrics: &self.metrics,
                slot: None,
                tap,
            };
            let attempts = Attempts {
                apns: self,
                push: &push,
                apns_id: Mutex::new(Uuid::nil()),
            };
            x.run(&POLICY, self.budget, &attempts).await
        })
    }
}

pub fn build(cfg: &ApnsConfig, s: &Settings<'_>) -> Result<Arc<dyn Pushkin>, ApnsError> {
    Ok(Arc::new(Apns::new(cfg, s)?))
}

/// The subject UID of the first certificate in a PEM file: Apple issues push
/// certificates for one bundle id and puts it there, so it is the `apns-topic`.
fn certificate_uid(pem: &[u8]) -> Option<String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let first = CertificateDer::pem_slice_iter(pem).next()?.ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&first).ok()?;
    let uid = cert
        .subject()
        .iter_by_oid(&x509_parser::oid_registry::OID_USERID)
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    Some(uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate with the subject Apple gives push certificates.
    const APPLE_STYLE_CERT: &str = "-----BEGIN CERTIFICATE-----
MIICDjCCAbWgAwIBAgIUVOr1Qcbe8r1+idQtrRbephQMwOkwCgYIKoZIzj0EAwIw
XTEfMB0GCgmSJomT8ixkAQEMD2NvbS5leGFtcGxlLmFwcDEtMCsGA1UEAwwkQXBw
bGUgUHVzaCBTZXJ2aWNlczogY29tLmV4YW1wbGUuYXBwMQswCQYDVQQGEwJVUzAe
Fw0yNjEyMDIwNzUzNTBaFw0zNjExMjkwNzUzNTBaMF0xHzAdBgoJkiaJk/IsZAEB
DA9jb20uZXhhbXBsZS5hcHAxLTArBgNVBAMMJEFwcGxlIFB1c2ggU2VydmljZXM6
IGNvbS5leGFtcGxlLmFwcDELMAkGA1UEBhMCVVMwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAASok8ip3ujD/L5w4ePN6OdhVqbrI2t3vOUbbfoTf6evP77KsvpV5Khc
SVu3kUDkNuYFR8pdQneohiL/R0e/MhFvo1MwUTAdBgNVHQ4EFgQU7ft9U54JL7Mg
MPmqxKqbfl71/HwwHwYDVR0jBBgwFoAU7ft9U54JL7MgMPmqxKqbfl71/HwwDwYD
VR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNHADBEAiBbKJNBjFAaDpMX2tbav36+
TdCd6zcMN1oT6PFRDA7YfgIgETQqvAAxLQ81OMicE9Rh4rDg1LXe51pttxEA5H91
fK8=
-----END CERTIFICATE-----\n";

    #[test]
    fn the_topic_of_a_certificate_is_its_subject_uid() {
        assert_eq!(
            certificate_uid(APPLE_STYLE_CERT.as_bytes()).as_deref(),
            Some("com.example.app")
        );
        assert_eq!(certificate_uid(b"no PEM here"), None);
        // A certificate without a UID leaves the topic unset.
        let plain = testkit::tls::TestCa::new().client_cert("x").combined_pem();
        assert_eq!(certificate_uid(plain.as_bytes()), None);
    }

    #[test]
    fn lower_hex_is_two_digits_a_byte() {
        let all: Vec<u8> = (0..=255).collect();
        let expected: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(lower_hex(&all), expected);
        assert_eq!(lower_hex(&[]), "");
    }

    #[test]
    fn device_tokens() {
        assert_eq!(device_token("3q2+7w==", true), Ok("deadbeef".into()));
        assert_eq!(device_token("3q2+7w", true), Ok("deadbeef".into()));
        assert!(device_token("not base64!", true).is_err());
        assert_eq!(device_token("DEADbeef", false), Ok("deadbeef".into()));
        assert!(device_token("../../x", false).is_err());
    }

    /// Tokens too long for the stack buffer decode as the others do.
    #[test]
    fn tokens_of_every_length_decode_alike() {
        for n in [
            1,
            32,
            100,
            STACK_TOKEN - 1,
            STACK_TOKEN,
            STACK_TOKEN + 1,
            1000,
        ] {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 7) as u8).collect();
            let pushkey = base64::engine::general_purpose::STANDARD.encode(&bytes);
            assert_eq!(device_token(&pushkey, true), Ok(lower_hex(&bytes)), "{n}");
            let unpadded = pushkey.trim_end_matches('=');
            assert_eq!(device_token(unpadded, true), Ok(lower_hex(&bytes)), "{n}");
        }
        assert!(device_token(&"!".repeat(600), true).is_err());
        assert_eq!(device_token("", true), Err("pushkey decodes to nothing"));
    }

    #[test]
    fn device_urls_keep_the_endpoint_and_its_path() {
        let url = |base: &str| {
            let base = Base::new(&url::Url::parse(base).map_err(|e| e.to_string())?)?;
            Ok::<_, String>(
                device_url(&base, Token::Hex("abcd"))
                    .map_err(|e| e.to_string())?
                    .to_string(),
            )
        };
        assert_eq!(
            url(PRODUCTION).as_deref(),
            Ok("https://api.push.apple.com/3/device/abcd")
        );
        assert_eq!(
            url("https://127.0.0.1:8443/").as_deref(),
            Ok("https://127.0.0.1:8443/3/device/abcd")
        );
        assert_eq!(
            url("https://proxy.example/apns/").as_deref(),
            Ok("https://proxy.example/apns/3/device/abcd")
        );
    }

    #[test]
    fn config_values_that_cannot_be_headers_are_refused_naming_the_key() {
        assert!(header_value("topic", "com.example.app").is_ok());
        let e = header_value("topic", "com.example\napp")
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("`topic` is not usable in an HTTP header: \"com.example\\napp\"")
        );
    }

    #[test]
    fn the_apns_id_is_lower_case_and_never_indexed() {
        let id = Uuid::from_u128(0x0123_4567_89AB_CDEF_0123_4567_89AB_CDEF);
        let value = apns_id_header(id).expect("a header value");
        assert_eq!(
            value.to_str().ok(),
            Some("01234567-89ab-cdef-0123-456789abcdef")
        );
        assert!(value.is_sensitive(), "HPACK must not index a per-push id");
    }

    #[test]
    fn collapse_ids_fit_64_bytes() {
        assert_eq!(collapse_id("!r:x"), "!r:x");
        assert_eq!(collapse_id(&"r".repeat(100)).len(), 64);
    }
}
