//! A recorder of the HTTP exchanges a pushkin has with its push service, for
//! `pushgate send-test`: what was sent (headers, payload) and exactly what the
//! service answered. Pushes of the gateway itself run without one.
//!
//! Credentials never reach the record: `Authorization` keeps only its scheme.

use std::sync::Mutex;

use serde::Serialize;

/// One request to a push service and its answer.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Exchange {
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

#[derive(Debug, Default)]
pub struct Tap {
    exchanges: Mutex<Vec<Exchange>>,
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
                    Some((scheme, _)) => format!("{scheme} …(redacted)"),
                    None => "…(redacted)".to_owned(),
                }
            } else {
                v.to_owned()
            };
            (k.as_str().to_owned(), v)
        })
        .collect()
}

impl Tap {
    /// Records a request about to be sent; returns its index for [`Tap::answered`].
    pub fn sent(&self, req: &reqwest::Request, plaintext: Option<&[u8]>) -> usize {
        let body = req.body().and_then(|b| b.as_bytes()).unwrap_or_default();
        let e = Exchange {
            method: req.method().to_string(),
            url: req.url().to_string(),
            request_headers: headers(req.headers()),
            request_body: text(body),
            plaintext: plaintext.map(text),
            ..Exchange::default()
        };
        let mut all = self.exchanges.lock().unwrap_or_else(|p| p.into_inner());
        all.push(e);
        all.len() - 1
    }

    pub fn answered(&self, i: usize, status: u16, h: &reqwest::header::HeaderMap, body: &[u8]) {
        let mut all = self.exchanges.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = all.get_mut(i) {
            e.status = Some(status);
            e.response_headers = headers(h);
            e.response_body = text(body);
        }
    }

    pub fn failed(&self, i: usize, error: String) {
        let mut all = self.exchanges.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = all.get_mut(i) {
            e.error = Some(error);
        }
    }

    pub fn exchanges(&self) -> Vec<Exchange> {
        self.exchanges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
