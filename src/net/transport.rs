//! What `pushkin::exchange` needs of an HTTP client, so that one exchange
//! drives all of them: reqwest (Web Push, UnifiedPush), the APNs client of
//! [`super::h2`] and the FCM client of [`super::h1`]. A [`Transport`] sends one request and gives back
//! an [`Inbound`] answer (status, headers, body chunks); its requests show
//! themselves to the tap ([`Outbound`]) and its errors say how they are
//! logged and whether DNS failed ([`Failure`]).

use std::future::Future;

use bytes::Bytes;
use http::{HeaderMap, Method};

/// An HTTP client that sends one request and gives back its answer.
pub trait Transport: Sync {
    type Request: Outbound + Send;
    type Response: Inbound + Send;
    type Error: Failure + Send;

    fn send(
        &self,
        request: Self::Request,
    ) -> impl Future<Output = Result<Self::Response, Self::Error>> + Send;
}

/// A request, as the tap records it.
pub trait Outbound {
    fn method(&self) -> &Method;
    /// The whole URL, for the tap only.
    fn url(&self) -> String;
    fn headers(&self) -> &HeaderMap;
    /// The body when it is in memory (push bodies always are).
    fn body_bytes(&self) -> &[u8];
}

/// An answer whose head has arrived.
pub trait Inbound {
    fn status(&self) -> u16;
    fn headers(&self) -> &HeaderMap;
    /// The next chunk of the body; `None` at its end or on an error.
    fn chunk(&mut self) -> impl Future<Output = Option<Bytes>> + Send;
}

/// A request that got no answer.
pub trait Failure: std::error::Error {
    /// A short, loggable description (no URLs: they may hold secrets).
    fn describe(&self) -> String;
    /// Whether a name could not be resolved.
    fn is_dns_failure(&self) -> bool;
}

/// An answer's body, at most `max` bytes (empty if unreadable); the rest is left unread.
pub async fn bounded_body<R: Inbound>(mut resp: R, max: usize) -> Bytes {
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await {
        let room = max.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= max {
            break;
        }
    }
    body.freeze()
}

impl Transport for reqwest::Client {
    type Request = reqwest::Request;
    type Response = reqwest::Response;
    type Error = reqwest::Error;

    fn send(
        &self,
        request: reqwest::Request,
    ) -> impl Future<Output = Result<reqwest::Response, reqwest::Error>> + Send {
        self.execute(request)
    }
}

impl Outbound for reqwest::Request {
    fn method(&self) -> &Method {
        reqwest::Request::method(self)
    }

    fn url(&self) -> String {
        reqwest::Request::url(self).to_string()
    }

    fn headers(&self) -> &HeaderMap {
        reqwest::Request::headers(self)
    }

    fn body_bytes(&self) -> &[u8] {
        self.body().and_then(|b| b.as_bytes()).unwrap_or_default()
    }
}

impl Inbound for reqwest::Response {
    fn status(&self) -> u16 {
        reqwest::Response::status(self).as_u16()
    }

    fn headers(&self) -> &HeaderMap {
        reqwest::Response::headers(self)
    }

    async fn chunk(&mut self) -> Option<Bytes> {
        reqwest::Response::chunk(self).await.ok().flatten()
    }
}

impl Failure for reqwest::Error {
    fn describe(&self) -> String {
        super::describe(self)
    }

    fn is_dns_failure(&self) -> bool {
        super::is_dns_failure(self)
    }
}

/// The innermost source of an error: what actually went wrong.
pub(crate) fn root_cause<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> &'a (dyn std::error::Error + 'static) {
    let mut root = err;
    while let Some(next) = root.source() {
        root = next;
    }
    root
}
