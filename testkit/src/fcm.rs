//! A fake Google: the OAuth 2.0 token endpoint (`POST /token`, RFC 7523 JWT
//! bearer grant, RS256 assertion verified with the service account's public
//! key) and FCM v1 (`POST /v1/projects/{project}/messages:send`, bearer token
//! checked against the tokens it issued). Every message is recorded; each
//! registration token is answered as told by [`FcmBehaviour`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{RsaKeyPair, UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::load::LoadKnobs;

/// The RSA key of the test service account (a test-only key made for this repository).
pub const SERVICE_ACCOUNT_KEY: &str = include_str!("../keys/test-service-account-key.pem");
/// Another RSA key, for a service account the fake does not know.
pub const OTHER_KEY: &str = include_str!("../keys/other-rsa-key.pem");
pub const CLIENT_EMAIL: &str = "pushgate-test@example-project.iam.gserviceaccount.com";

/// How the fake FCM answers one registration token.
#[derive(Clone, Debug)]
pub enum FcmBehaviour {
    Ok,
    /// 404 NOT_FOUND / UNREGISTERED.
    Unregistered,
    /// 400 INVALID_ARGUMENT about the registration token.
    InvalidToken,
    /// 403 PERMISSION_DENIED / SENDER_ID_MISMATCH.
    SenderIdMismatch,
    /// 400 INVALID_ARGUMENT about something else in the message.
    InvalidMessage,
    /// Answer `status` (429/500/503) with `Retry-After` (seconds), `times` times, then 200.
    Unavailable {
        status: u16,
        retry_after: Option<u64>,
        times: usize,
    },
    Stall,
}

#[derive(Clone, Debug)]
pub struct FcmRequest {
    pub project: String,
    pub bearer: Option<String>,
    pub message: Result<Value, String>,
    pub answered: u16,
    pub at: Instant,
}

struct Inner {
    public_key: Vec<u8>,
    token_lifetime: Mutex<u64>,
    issued: Mutex<HashMap<String, Instant>>,
    token_requests: AtomicUsize,
    /// Every call of the token endpoint, answered or refused.
    token_attempts: AtomicUsize,
    /// When set, the token endpoint answers this status (e.g. 500) without a token.
    token_failure: Mutex<Option<u16>>,
    assertion_errors: Mutex<Vec<String>>,
    behaviours: Mutex<HashMap<String, FcmBehaviour>>,
    requests: Mutex<Vec<FcmRequest>>,
    arrived: Notify,
    origin: String,
    load: LoadKnobs,
}

pub struct FakeGoogle {
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGoogle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A service-account key file for the test account, pointing at `token_uri`.
pub fn service_account_json(token_uri: &str, key_pem: &str) -> String {
    json!({
        "type": "service_account", "project_id": "example-project", "private_key_id": "k1",
        "private_key": key_pem, "client_email": CLIENT_EMAIL, "client_id": "1",
        "token_uri": token_uri
    })
    .to_string()
}

impl FakeGoogle {
    /// Starts on 127.0.0.1; issued access tokens live `token_lifetime_s` seconds.
    pub async fn start(token_lifetime_s: u64) -> FakeGoogle {
        use rustls::pki_types::pem::PemObject;
        let der =
            rustls::pki_types::PrivatePkcs8KeyDer::from_pem_slice(SERVICE_ACCOUNT_KEY.as_bytes())
                .expect("test key");
        let key = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).expect("rsa key");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake google");
        let port = listener.local_addr().expect("addr").port();
        let inner = Arc::new(Inner {
            public_key: key.public().as_ref().to_vec(),
            token_lifetime: Mutex::new(token_lifetime_s),
            issued: Mutex::new(HashMap::new()),
            token_requests: AtomicUsize::new(0),
            token_attempts: AtomicUsize::new(0),
            token_failure: Mutex::new(None),
            assertion_errors: Mutex::new(Vec::new()),
            behaviours: Mutex::new(HashMap::new()),
            requests: Mutex::new(Vec::new()),
            arrived: Notify::new(),
            origin: format!("http://127.0.0.1:{port}"),
            load: LoadKnobs::default(),
        });
        let app = Router::new()
            .route("/token", post(token))
            .route("/v1/projects/{project}/{action}", post(send))
            .with_state(inner.clone());
        let task = tokio::spawn(async move {
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let _ = axum::serve(listener, app).await;
        });
        FakeGoogle { inner, task }
    }

    /// The benchmark's knobs: count-only mode, answer delay, counts.
    pub fn load(&self) -> &LoadKnobs {
        &self.inner.load
    }

    pub fn token_uri(&self) -> String {
        format!("{}/token", self.inner.origin)
    }

    /// The FCM base URL to configure as the app's `endpoint`.
    pub fn base_url(&self) -> String {
        self.inner.origin.clone()
    }

    pub fn set(&self, token: &str, b: FcmBehaviour) {
        if let Ok(mut m) = self.inner.behaviours.lock() {
            m.insert(token.to_owned(), b);
        }
    }

    /// Access tokens issued so far.
    pub fn tokens_issued(&self) -> usize {
        self.inner.token_requests.load(Ordering::SeqCst)
    }

    /// Calls of the token endpoint so far, failed ones included.
    pub fn token_attempts(&self) -> usize {
        self.inner.token_attempts.load(Ordering::SeqCst)
    }

    /// The `expires_in` of the tokens issued from now on (any value, even absurd ones).
    pub fn set_token_lifetime(&self, seconds: u64) {
        if let Ok(mut l) = self.inner.token_lifetime.lock() {
            *l = seconds;
        }
    }

    /// `Some(status)`: the token endpoint answers `status` with an error body
    /// and issues nothing, until set back to `None`.
    pub fn fail_token_requests(&self, status: Option<u16>) {
        if let Ok(mut f) = self.inner.token_failure.lock() {
            *f = status;
        }
    }

    /// Why assertions were refused, if any were.
    pub fn assertion_errors(&self) -> Vec<String> {
        self.inner
            .assertion_errors
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default()
    }

    /// Ends the lifetime of every access token issued so far, as if it had
    /// passed: the next use of one is answered 401 (the gateway still
    /// believes the `expires_in` it was told).
    pub fn expire_tokens(&self) {
        if let Ok(mut i) = self.inner.issued.lock() {
            let now = Instant::now();
            for until in i.values_mut() {
                *until = now;
            }
        }
    }

    /// Forget every issued access token: the next use of one is answered 401.
    pub fn revoke_tokens(&self) {
        if let Ok(mut i) = self.inner.issued.lock() {
            i.clear();
        }
    }

    pub fn requests(&self) -> Vec<FcmRequest> {
        self.inner
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<FcmRequest> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.inner.arrived.notified();
            let got = self.requests();
            if got.len() >= n || tokio::time::Instant::now() >= deadline {
                return got;
            }
            let _ = tokio::time::timeout_at(deadline, arrived).await;
        }
    }
}

fn google_error(status: u16, code: &str, message: &str, details: Value) -> Response {
    let body =
        json!({"error": {"code": status, "status": code, "message": message, "details": details}});
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(body),
    )
        .into_response()
}

fn fcm_error(status: u16, code: &str, fcm_code: &str, message: &str) -> Response {
    google_error(
        status,
        code,
        message,
        json!([{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": fcm_code}]),
    )
}

async fn token(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    inner.token_attempts.fetch_add(1, Ordering::SeqCst);
    if let Some(status) = inner.token_failure.lock().ok().and_then(|f| *f) {
        return (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            axum::Json(json!({"error": "internal_failure", "error_description": "told to fail"})),
        )
            .into_response();
    }
    let form: HashMap<String, String> = url_decode(&body);
    let checked = (|| {
        if form.get("grant_type").map(String::as_str)
            != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
        {
            return Err(format!("grant_type is {:?}", form.get("grant_type")));
        }
        let jwt = form.get("assertion").ok_or("no assertion")?;
        verify_assertion(jwt, &inner.public_key, &format!("{}/token", inner.origin))
    })();
    if let Err(e) = checked {
        if let Ok(mut errs) = inner.assertion_errors.lock() {
            errs.push(e.clone());
        }
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant", "error_description": e})),
        )
            .into_response();
    }
    let n = inner.token_requests.fetch_add(1, Ordering::SeqCst);
    let lifetime = inner.token_lifetime.lock().map(|l| *l).unwrap_or(3600);
    let access = format!("ya29.test-token-{n}");
    if let Ok(mut issued) = inner.issued.lock() {
        // An absurd lifetime (a test of the gateway's clamp) means "never expires" here.
        let until = Instant::now().checked_add(Duration::from_secs(lifetime));
        issued.insert(
            access.clone(),
            until.unwrap_or_else(|| Instant::now() + Duration::from_secs(100 * 365 * 86_400)),
        );
    }
    axum::Json(json!({"access_token": access, "expires_in": lifetime, "token_type": "Bearer"}))
        .into_response()
}

fn url_decode(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// Checks the RS256 assertion as Google does: signature, `iss`, `scope`, `aud`, `iat`/`exp`.
fn verify_assertion(jwt: &str, public_key: &[u8], aud: &str) -> Result<(), String> {
    let mut parts = jwt.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("assertion is not a three-part JWT".into());
    };
    let decode = |p: &str| {
        URL_SAFE_NO_PAD
            .decode(p)
            .map_err(|_| "not base64url".to_owned())
    };
    let header: Value = serde_json::from_slice(&decode(h)?).map_err(|e| e.to_string())?;
    if header["alg"] != "RS256" {
        return Err(format!("alg is {}, expected RS256", header["alg"]));
    }
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public_key)
        .verify(format!("{h}.{c}").as_bytes(), &decode(s)?)
        .map_err(|_| {
            "assertion signature does not verify with the service account's key".to_owned()
        })?;
    let claims: Value = serde_json::from_slice(&decode(c)?).map_err(|e| e.to_string())?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap_or(0),
        claims["exp"].as_u64().unwrap_or(0),
    );
    if claims["iss"] != CLIENT_EMAIL {
        return Err(format!("iss is {}", claims["iss"]));
    }
    if claims["scope"] != "https://www.googleapis.com/auth/firebase.messaging" {
        return Err(format!("scope is {}", claims["scope"]));
    }
    if claims["aud"] != aud {
        return Err(format!("aud is {}, expected {aud}", claims["aud"]));
    }
    if iat > now + 60 || exp <= now || exp > iat + 3600 {
        return Err(format!("iat {iat} / exp {exp} out of range (now {now})"));
    }
    Ok(())
}

async fn send(
    State(inner): State<Arc<Inner>>,
    Path((project, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let valid = bearer.as_ref().is_some_and(|b| {
        inner
            .issued
            .lock()
            .ok()
            .and_then(|i| i.get(b).copied())
            .is_some_and(|until| Instant::now() < until)
    });
    if inner.load.count_only() {
        return count_only(&inner, &project, &action, valid, &body).await;
    }
    let message = serde_json::from_slice::<Value>(&body).map_err(|e| e.to_string());
    let token = message
        .as_ref()
        .ok()
        .and_then(|m| m["message"]["token"].as_str())
        .unwrap_or("")
        .to_owned();
    let behaviour = inner
        .behaviours
        .lock()
        .ok()
        .and_then(|m| m.get(&token).cloned())
        .unwrap_or(FcmBehaviour::Ok);
    let earlier = inner
        .requests
        .lock()
        .map(|r| {
            r.iter()
                .filter(|x| {
                    x.message
                        .as_ref()
                        .ok()
                        .and_then(|m| m["message"]["token"].as_str())
                        == Some(&token)
                        && x.answered != 200
                })
                .count()
        })
        .unwrap_or(0);

    let response = if action != "messages:send" {
        google_error(404, "NOT_FOUND", "unknown method", json!([]))
    } else if !valid {
        google_error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
            json!([]),
        )
    } else if message.is_err() || token.is_empty() {
        google_error(
            400,
            "INVALID_ARGUMENT",
            "Invalid JSON payload received.",
            json!([]),
        )
    } else if data_is_not_all_strings(message.as_ref().ok()) {
        google_error(
            400,
            "INVALID_ARGUMENT",
            "Invalid value at 'message.data': only strings",
            json!([]),
        )
    } else {
        match &behaviour {
            FcmBehaviour::Ok | FcmBehaviour::Stall => {
                axum::Json(json!({"name": format!("projects/{project}/messages/0:{}", inner.requests.lock().map(|r| r.len()).unwrap_or(0))})).into_response()
            }
            FcmBehaviour::Unregistered => fcm_error(404, "NOT_FOUND", "UNREGISTERED", "Requested entity was not found."),
            FcmBehaviour::InvalidToken => fcm_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token"),
            FcmBehaviour::SenderIdMismatch => fcm_error(403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH", "SenderId mismatch"),
            FcmBehaviour::InvalidMessage => google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received. Unknown name \"x\"",
                json!([{"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [{"field": "message.x"}]}])),
            FcmBehaviour::Unavailable { status, retry_after, times } if earlier < *times => {
                let mut r = fcm_error(*status, "UNAVAILABLE", "UNAVAILABLE", "The service is currently unavailable.");
                if let Some(s) = retry_after {
                    if let Ok(v) = s.to_string().parse() {
                        r.headers_mut().insert("retry-after", v);
                    }
                }
                r
            }
            FcmBehaviour::Unavailable { .. } => axum::Json(json!({"name": "ok"})).into_response(),
        }
    };
    let answered = response.status().as_u16();
    if let Ok(mut r) = inner.requests.lock() {
        r.push(FcmRequest {
            project,
            bearer,
            message,
            answered,
            at: Instant::now(),
        });
    }
    inner.arrived.notify_waiters();
    if matches!(behaviour, FcmBehaviour::Stall) && answered == 200 {
        std::future::pending::<()>().await;
    }
    response
}

/// The benchmark's path: method, bearer token, a JSON message with a token
/// and string-only `data` checked; nothing recorded.
async fn count_only(
    inner: &Inner,
    project: &str,
    action: &str,
    valid: bool,
    body: &[u8],
) -> Response {
    let message = serde_json::from_slice::<Value>(body).ok();
    let well_formed = action == "messages:send"
        && message.as_ref().is_some_and(|m| {
            m["message"]["token"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        })
        && !data_is_not_all_strings(message.as_ref());
    inner.load.pause().await;
    inner.load.count(valid && well_formed);
    if !valid {
        google_error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
            json!([]),
        )
    } else if !well_formed {
        google_error(
            400,
            "INVALID_ARGUMENT",
            "Invalid JSON payload received.",
            json!([]),
        )
    } else {
        axum::Json(json!({"name": format!("projects/{project}/messages/0:1")})).into_response()
    }
}

/// FCM v1 refuses non-string values in `data`.
fn data_is_not_all_strings(message: Option<&Value>) -> bool {
    message
        .and_then(|m| m["message"]["data"].as_object())
        .is_some_and(|d| d.values().any(|v| !v.is_string()))
}
