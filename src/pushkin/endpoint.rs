//! Pushes to user-supplied endpoint URLs (Web Push, UnifiedPush): the checks
//! an endpoint must pass before anything is sent, and the one exchange with
//! it through the one [exchange](super::exchange) (per-origin concurrency, a
//! short time for unknown hosts, one attempt: the outbox retries).
//!
//! Invariants: an endpoint refused by policy (scheme, `allowed_endpoints`,
//! the private-address guard) fails the push and is never a rejection; a
//! slow origin holds only its own slots; redirects are never followed (the
//! client is built with redirects off), so a 3xx is the pushkin's to judge.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use url::{Host, Url};

use super::exchange::{self, Attempt, Exchange, Policy, Reply, Step};
use super::outcome::{Answer, Cause};
use super::tap::Tap;
use super::{Built, Outcome, Prepared, Settings};
use crate::config::EndpointKeys;
use crate::glob::glob_match;
use crate::net::{self, AddressGuard, ClientOptions, NetError};
use crate::telemetry::metrics::Upstream;

mod encrypt;
pub use encrypt::{UaKeys, ENCRYPTION_OVERHEAD};

/// Time given to a push to an endpoint that is not a well-known push service.
pub const OTHER_HOST_TIMEOUT: Duration = Duration::from_secs(5);

/// The client and checks for one app's endpoints.
pub struct Endpoints {
    client: reqwest::Client,
    guard: AddressGuard,
    /// Set when a proxy resolves names for us: then the guard must resolve first.
    proxied: bool,
    allowed_endpoints: Vec<String>,
    allow_http: bool,
    known_services: &'static [&'static str],
    slots: OriginSlots,
    timeout: Duration,
    metrics: Upstream,
}

impl Endpoints {
    /// `known_services`: host globs of the well-known push services, which
    /// get the full timeout.
    pub fn new(
        keys: &EndpointKeys,
        known_services: &'static [&'static str],
        s: &Settings<'_>,
    ) -> Result<Self, NetError> {
        let guard = AddressGuard {
            allow_private: keys.allow_private_endpoints,
            exempt: None,
        };
        let client = net::build_client(&ClientOptions {
            connect_timeout: s.connect_timeout,
            proxy: s.proxy,
            extra_ca: keys.ca_file.as_deref(),
            max_idle_per_host: keys.max_connections,
            guard: Some(guard.clone()),
            connections: Some(s.metrics.connections()),
        })?;
        Ok(Endpoints {
            client,
            guard,
            proxied: s.proxy.is_some(),
            allowed_endpoints: keys.allowed_endpoints.clone(),
            allow_http: keys.allow_http_endpoints,
            known_services,
            slots: OriginSlots::new(keys.max_connections),
            timeout: s.timeout,
            metrics: s.metrics.clone(),
        })
    }

    /// The client to build requests with (the one [`Endpoints::send`] uses).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Checks that an endpoint may be used. A refusal is this push's failure
    /// (the pusher stays); a name that cannot be resolved is temporary.
    pub async fn check(&self, url: &Url) -> Result<(), Outcome> {
        let not_allowed = |why: String| Err(Outcome::failed(Cause::EndpointNotAllowed(why)));
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            other => {
                return not_allowed(format!(
                    "endpoint scheme `{other}` is not allowed (https only)"
                ))
            }
        }
        let (Some(host), Some(host_str)) = (url.host(), url.host_str()) else {
            return not_allowed("endpoint has no host".into());
        };
        if !self.allowed_endpoints.is_empty() {
            let with_port = url.port().map(|p| format!("{host_str}:{p}"));
            let allowed = self.allowed_endpoints.iter().any(|g| {
                glob_match(g, host_str) || with_port.as_deref().is_some_and(|hp| glob_match(g, hp))
            });
            if !allowed {
                return not_allowed(format!(
                    "endpoint host {host_str} is not in allowed_endpoints"
                ));
            }
        }
        let refused = |r: net::Refused| Outcome::failed(Cause::EndpointRefused(r.to_string()));
        match host {
            // Literal addresses skip DNS in the client: judged here.
            Host::Ipv4(ip) => self.guard.check(host_str, ip.into()).map_err(refused)?,
            Host::Ipv6(ip) => self.guard.check(host_str, ip.into()).map_err(refused)?,
            Host::Domain(name) if self.proxied && !self.guard.allow_private => {
                // Through a proxy the client does not resolve the endpoint: resolve
                // it here with the system resolver and judge what it resolves to.
                let port = url.port_or_known_default().unwrap_or(443);
                let addrs = tokio::net::lookup_host((name, port)).await.map_err(|e| {
                    Outcome::temporary(Cause::Dns(format!("cannot resolve {name}: {e}")))
                })?;
                for a in addrs {
                    self.guard.check(name, a.ip()).map_err(refused)?;
                }
            }
            // Resolved and judged by the client's resolver at connect time.
            Host::Domain(_) => {}
        }
        Ok(())
    }

    /// Sends a prepared push (its endpoint already [checked](Endpoints::check))
    /// once: the outbox retries. No answer is a temporary outcome, the guard
    /// refusing the endpoint at connect time a failed one.
    pub async fn send(&self, push: Push, tap: Option<&Tap>) -> Outcome {
        // An endpoint outside the well-known push services (or the operator's
        // allowed_endpoints) may be anyone's server: it gets a short time.
        let timeout = if self.allowed_endpoints.is_empty() && !self.is_known_service(&push.endpoint)
        {
            self.timeout.min(OTHER_HOST_TIMEOUT)
        } else {
            self.timeout
        };
        let slots = self.slots.of(&push.endpoint.origin().ascii_serialization());
        let x = Exchange {
            client: &self.client,
            metrics: &self.metrics,
            slot: Some(&slots),
            tap,
        };
        x.run(&POLICY, timeout, &Once::new(push)).await
    }

    /// [`Endpoints::send`] of a push an endpoint pushkin (Web Push, UnifiedPush) prepared.
    pub async fn send_prepared(&self, push: Prepared, tap: Option<&Tap>) -> Outcome {
        match push {
            Prepared(Built::Endpoint(push)) => self.send(*push, tap).await,
            _ => Prepared::mismatch(),
        }
    }

    fn is_known_service(&self, endpoint: &Url) -> bool {
        endpoint.scheme() == "https"
            && endpoint
                .host_str()
                .is_some_and(|h| self.known_services.iter().any(|g| glob_match(g, h)))
    }
}

/// Endpoints are tried once per push; only send-test reads their answers' bodies.
const POLICY: Policy = Policy {
    service: "push service",
    max_attempts: 1,
    first_backoff: Duration::ZERO,
    read_body: false,
};

/// A push to an endpoint, prepared: the request (body encrypted when the
/// subscription has keys) and how its answer is judged.
pub struct Push {
    pub request: reqwest::Request,
    pub endpoint: Url,
    /// What the body encrypts, kept only for the tap.
    pub plaintext: Option<Vec<u8>>,
    /// The outcome of a status and `Retry-After` (Web Push and UnifiedPush
    /// answers are told apart).
    pub judge: fn(u16, Option<Duration>) -> Outcome,
}

impl From<Push> for Prepared {
    fn from(p: Push) -> Prepared {
        Prepared(Built::Endpoint(Box::new(p)))
    }
}

/// The one attempt of an endpoint push.
struct Once {
    request: std::sync::Mutex<Option<reqwest::Request>>,
    endpoint: Url,
    plaintext: Option<Vec<u8>>,
    judge: fn(u16, Option<Duration>) -> Outcome,
}

impl Once {
    fn new(p: Push) -> Self {
        Once {
            request: std::sync::Mutex::new(Some(p.request)),
            endpoint: p.endpoint,
            plaintext: p.plaintext,
            judge: p.judge,
        }
    }
}

impl exchange::Attempts for Once {
    async fn request(&self) -> Result<Attempt, Outcome> {
        let request = self.request.lock().ok().and_then(|mut r| r.take());
        match request {
            Some(request) => Ok(Attempt {
                request,
                credential: None,
            }),
            None => Err(Outcome::failed(Cause::Local(
                "an endpoint push was sent twice (a bug)".into(),
            ))),
        }
    }

    fn judge(&self, r: &Reply<'_>) -> Step {
        Step::Done((self.judge)(r.status, r.retry_after))
    }

    fn no_answer(&self, e: &reqwest::Error) -> Step {
        if let Some(refused) = net::refused_by_guard(e) {
            if Some(refused.host.as_str()) == self.endpoint.host_str() {
                return Step::Done(Outcome::failed(Cause::EndpointRefused(refused.to_string())));
            }
            // Something other than the endpoint was refused (a bug or a
            // misconfiguration): never the pusher's fault.
            tracing::error!(error = %refused, "the address guard refused a host that is not the endpoint");
        }
        Step::Retry {
            cause: Cause::transport(e),
            after: None,
        }
    }

    fn plaintext(&self) -> Option<&[u8]> {
        self.plaintext.as_deref()
    }
}

/// The outcome of an endpoint's answer (RFC 8030 §5, §8.3; UnifiedPush
/// servers answer alike): 2xx delivered; 429 and 5xx temporary; anything
/// else final — a 3xx too, as redirects are not followed — and judged by the
/// one rejection rule.
pub fn judge(answer: Answer, retry_after: Option<Duration>) -> Outcome {
    match answer.status() {
        200..=299 => Outcome::Delivered,
        429 | 500..=599 => Outcome::Temporary {
            cause: Cause::Answer(answer),
            retry_after,
        },
        _ => Outcome::from_final_answer(answer, None),
    }
}

/// The rejection-memory key of an endpoint URL: a hash, so that long URLs
/// (and the secrets some carry in their path) are not stored as given.
pub fn memory_key(endpoint: &str) -> String {
    let digest = Sha256::digest(endpoint.as_bytes());
    format!("endpoint:{}", URL_SAFE_NO_PAD.encode(digest))
}

/// Concurrency limits per endpoint origin: a slow or hanging push service
/// (or an attacker's endpoint) holds only its own slots, never another
/// origin's.
struct OriginSlots {
    per_origin: usize,
    origins: std::sync::Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// Origins tracked before idle ones are forgotten.
const TRACKED_ORIGINS: usize = 1024;

impl OriginSlots {
    fn new(per_origin: usize) -> Self {
        OriginSlots {
            per_origin,
            origins: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn of(&self, origin: &str) -> Arc<Semaphore> {
        let mut origins = match self.origins.lock() {
            Ok(o) => o,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(s) = origins.get(origin) {
            return s.clone();
        }
        if origins.len() >= TRACKED_ORIGINS {
            // Forget the origins nobody is sending to (all permits free).
            origins.retain(|_, s| s.available_permits() < self.per_origin);
        }
        let slots = Arc::new(Semaphore::new(self.per_origin));
        origins.insert(origin.to_owned(), slots.clone());
        slots
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_keys_hash_the_endpoint() {
        let k = memory_key("https://ntfy.example.org/upAbC?up=1");
        assert!(k.starts_with("endpoint:"), "{k}");
        assert_eq!(k.len(), "endpoint:".len() + 43);
        assert_eq!(k, memory_key("https://ntfy.example.org/upAbC?up=1"));
        assert_ne!(k, memory_key("https://ntfy.example.org/upAbD?up=1"));
    }

    #[test]
    fn origin_slots_are_per_origin() {
        let slots = OriginSlots::new(2);
        let a = slots.of("https://a.example");
        assert!(Arc::ptr_eq(&a, &slots.of("https://a.example")));
        assert!(!Arc::ptr_eq(&a, &slots.of("https://b.example")));
        assert_eq!(a.available_permits(), 2);
    }
}
