//! A recorder of the HTTP exchanges a pushkin has with its push service, for
//! `pushgate send-test`: what was sent (headers, payload) and exactly what the
//! service answered. Pushes of the gateway itself run without one.
//!
//! An observer set at construction ([`Tap::observed`]) is told of each
//! request as it is sent and of each answer as it arrives, so that a push
//! service that hangs shows progress instead of silence. Code that is not
//! handed a tap (the FCM token source) records into the [ambient](ambient)
//! one, set for a task with [`scope`].
//!
//! Credentials never reach the record: `Authorization` keeps only its scheme,
//! and the secret fields named by the recorder (an OAuth assertion, an access
//! token) are replaced by [`REDACTED`].

use std::future::Future;
use std::sync::{Arc, Mutex};

use crate::net::transport::Outbound;
use serde::Serialize;
use serde_json::Value;

/// What a secret is shown as.
pub const REDACTED: &str = "…(redacted)";

/// One request to a push service and its answer.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Exchange {
    /// What the request is for, when it is not the push itself (`OAuth access token`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    pub method: String,
    pub url: String,
    pub request_headers: Vec<(String, String)>,
    /// The body as text, or `<N bytes>` when it is not UTF-8 (Web Push's ciphertext).
    pub request_body: String,
    /// What was encrypted, when the body is ciphertext.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plaintext: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub response_headers: Vec<(String, String)>,
    pub response_body: String,
    /// Why no answer came (connection refused, timeout…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Exchange {
    /// An answer or an error was recorded.
    pub fn finished(&self) -> bool {
        self.status.is_some() || self.error.is_some()
    }
}

/// What a [`Tap`]'s observer is told, as it happens (`usize`: the exchange's index).
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A request is about to be sent.
    Sending(usize, &'a Exchange),
    /// Its answer, or why none came, was recorded.
    Finished(usize, &'a Exchange),
}

type Observer = Box<dyn Fn(Event<'_>) + Send + Sync>;

#[derive(Default)]
pub struct Tap {
    exchanges: Mutex<Vec<Exchange>>,
    observer: Option<Observer>,
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tap")
            .field("exchanges", &self.exchanges)
            .field("observed", &self.observer.is_some())
            .finish()
    }
}

tokio::task_local! {
    static AMBIENT: Arc<Tap>;
}

/// Runs `f` with `tap` as the [ambient] tap of its task.
pub async fn scope<F: Future>(tap: Arc<Tap>, f: F) -> F::Output {
    AMBIENT.scope(tap, f).await
}

/// The tap of the current task's [`scope`], if any: for code that records
/// exchanges without being handed a tap.
pub fn ambient() -> Option<Arc<Tap>> {
    AMBIENT.try_with(Arc::clone).ok()
}

fn text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => format!("<{} bytes>", bytes.len()),
    }
}

fn headers(h: &reqwest::header::HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| {
            let v = v.to_str().unwrap_or("<not text>");
            let v = if k == reqwest::header::AUTHORIZATION {
                // Keep the scheme: it tells which credential kind was used.
                match v.split_once(' ') {
                    Some((scheme, _)) => format!("{scheme} {REDACTED}"),
                    None => REDACTED.to_owned(),
                }
            } else {
                v.to_owned()
            };
            (k.as_str().to_owned(), v)
        })
        .collect()
}

/// A form body (`application/x-www-form-urlencoded`) with the values of `secret` fields redacted.
fn redact_form(body: &[u8], secret: &[&str]) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in url::form_urlencoded::parse(body) {
        let v = if secret.contains(&k.as_ref()) {
            REDACTED.into()
        } else {
            v
        };
        out.append_pair(&k, &v);
    }
    out.finish()
}

/// A JSON body with the values of its top-level `secret` fields redacted. A
/// body that is not a JSON object is shown only when no secret name appears in it.
fn redact_json(body: &[u8], secret: &[&str]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(mut m)) => {
            for field in secret {
                if let Some(v) = m.get_mut(*field) {
                    *v = Value::String(REDACTED.into());
                }
            }
            Value::Object(m).to_string()
        }
        _ => {
            let shown = text(body);
            if secret.iter().any(|s| shown.contains(s)) {
                format!("<{} bytes> {REDACTED}", body.len())
            } else {
                shown
            }
        }
    }
}

impl Tap {
    /// A tap that tells `observer` of every request and answer as it is recorded.
    pub fn observed(observer: impl Fn(Event<'_>) + Send + Sync + 'static) -> Tap {
        Tap {
            exchanges: Mutex::default(),
            observer: Some(Box::new(observer)),
        }
    }

    fn append(&self, e: Exchange) -> usize {
        let i = {
            let mut all = self.exchanges.lock().unwrap_or_else(|p| p.into_inner());
            all.push(e.clone());
            all.len() - 1
        };
        // Outside the lock: the observer may take its time (it writes to a terminal).
        if let Some(observe) = &self.observer {
            observe(Event::Sending(i, &e));
        }
        i
    }

    fn finish(&self, i: usize, update: impl FnOnce(&mut Exchange)) {
        let done = {
            let mut all = self.exchanges.lock().unwrap_or_else(|p| p.into_inner());
            all.get_mut(i).map(|e| {
                update(e);
                e.clone()
            })
        };
        if let (Some(observe), Some(e)) = (&self.observer, done) {
            observe(Event::Finished(i, &e));
        }
    }

    /// Records a request about to be sent; returns its index for [`Tap::answered`].
    pub fn sent(&self, req: &impl Outbound, plaintext: Option<&[u8]>) -> usize {
        self.append(Exchange {
            method: req.method().to_string(),
            url: req.url(),
            request_headers: headers(req.headers()),
            request_body: text(req.body_bytes()),
            plaintext: plaintext.map(text),
            ..Exchange::default()
        })
    }

    /// Records a request whose body is a form carrying credentials (an OAuth
    /// token request): the values of the `secret` fields are redacted.
    pub fn sent_form(&self, purpose: &str, req: &reqwest::Request, secret: &[&str]) -> usize {
        let body = req.body().and_then(|b| b.as_bytes()).unwrap_or_default();
        self.append(Exchange {
            purpose: Some(purpose.to_owned()),
            method: req.method().to_string(),
            url: req.url().to_string(),
            request_headers: headers(req.headers()),
            request_body: redact_form(body, secret),
            ..Exchange::default()
        })
    }

    pub fn answered(&self, i: usize, status: u16, h: &reqwest::header::HeaderMap, body: &[u8]) {
        self.finish(i, |e| {
            e.status = Some(status);
            e.response_headers = headers(h);
            e.response_body = text(body);
        });
    }

    /// [`Tap::answered`] for a JSON answer carrying credentials (an access
    /// token): the values of its top-level `secret` fields are redacted.
    pub fn answered_secret(
        &self,
        i: usize,
        status: u16,
        h: &reqwest::header::HeaderMap,
        body: &[u8],
        secret: &[&str],
    ) {
        self.finish(i, |e| {
            e.status = Some(status);
            e.response_headers = headers(h);
            e.response_body = redact_json(body, secret);
        });
    }

    pub fn failed(&self, i: usize, error: String) {
        self.finish(i, |e| e.error = Some(error));
    }

    pub fn exchanges(&self) -> Vec<Exchange> {
        self.exchanges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::{redact_form, redact_json};

    #[test]
    fn secret_form_fields_are_redacted_and_the_rest_kept() {
        assert_eq!(
            redact_form(
                b"grant_type=urn%3Aa%3Ab&assertion=eyJ.secret.sig",
                &["assertion"]
            ),
            "grant_type=urn%3Aa%3Ab&assertion=%E2%80%A6%28redacted%29"
        );
    }

    #[test]
    fn secret_json_fields_are_redacted_and_the_rest_kept() {
        assert_eq!(
            redact_json(
                br#"{"access_token":"ya29.secret","expires_in":3599,"token_type":"Bearer"}"#,
                &["access_token"]
            ),
            r#"{"access_token":"…(redacted)","expires_in":3599,"token_type":"Bearer"}"#
        );
        assert_eq!(
            redact_json(br#"{"error":"invalid_grant"}"#, &["access_token"]),
            r#"{"error":"invalid_grant"}"#
        );
        assert_eq!(
            redact_json(b"access_token=ya29.secret", &["access_token"]),
            "<24 bytes> …(redacted)"
        );
        assert_eq!(
            redact_json(b"Bad Gateway", &["access_token"]),
            "Bad Gateway"
        );
    }
}
