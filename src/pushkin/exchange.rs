//! The one upstream exchange every pushkin uses: a prepared HTTP request sent
//! within the push's time budget, retried with bounded back-off that honours
//! the service's (clamped) `Retry-After`, each attempt recorded in the
//! optional [`Tap`] and counted in the app's upstream metrics.
//!
//! A pushkin says only what is particular to its service ([`Attempts`]): the
//! request of each attempt (fresh ids and credentials) and what an answer or
//! a transport error means ([`Step`]). Invariants: no sleep passes the push's
//! deadline ([`retry_pause`]); the whole exchange — credentials, waiting for
//! a connection slot, every attempt and pause — ends by that deadline, as a
//! temporary [`Cause::Timeout`] at the latest.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::Instrument;

use super::outcome::{Answer, Cause, Outcome};
use super::tap::Tap;
use super::{parse_retry_after, retry_pause};
use crate::net::transport::{Inbound, Transport};
use crate::telemetry::metrics::Upstream;

/// How one service's pushes are retried.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Who did not answer, for [`Cause::Timeout`].
    pub service: &'static str,
    /// Attempts per push (1: never retried here; the outbox retries).
    pub max_attempts: u32,
    /// The first pause without `Retry-After`, doubled per attempt.
    pub first_backoff: Duration,
    /// Whether answers are judged by their body (else it is read only for the tap).
    pub read_body: bool,
}

/// What the exchange does after one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// This is the push's outcome.
    Done(Outcome),
    /// Try again after a pause, if an attempt and time are left; else the
    /// push is temporary with this cause.
    Retry {
        cause: Cause,
        after: Option<Duration>,
    },
    /// The credential was refused: renew it and try again at once (once per
    /// push; a second refusal is temporary).
    Renew(Answer),
}

/// One attempt's request, and the credential it carries (renewed when refused).
pub struct Attempt<R = reqwest::Request> {
    pub request: R,
    pub credential: Option<Arc<str>>,
}

/// An answer, as a pushkin judges it.
pub struct Reply<'a> {
    pub status: u16,
    /// `Retry-After`, parsed and clamped ([`parse_retry_after`]).
    pub retry_after: Option<Duration>,
    /// Empty unless [`Policy::read_body`] (or the body could not be read).
    pub body: &'a [u8],
}

impl Reply<'_> {
    /// The service's error body, for an answer that is not a success: a
    /// success is judged by its status alone, so its body (FCM's message
    /// name, APNs's empty one) is not parsed on every delivered push. An
    /// unreadable body is the default (no reason given).
    pub fn error_body<T: serde::de::DeserializeOwned + Default>(&self) -> T {
        if (200..300).contains(&self.status) || self.body.is_empty() {
            return T::default();
        }
        serde_json::from_slice(self.body).unwrap_or_default()
    }
}

/// What a pushkin tells the exchange about its service, whose requests go
/// out through `C` (reqwest unless said otherwise).
pub trait Attempts<C: Transport = reqwest::Client>: Sync {
    /// The request of the next attempt; an `Err` ends the push with that outcome.
    fn request(&self) -> impl Future<Output = Result<Attempt<C::Request>, Outcome>> + Send;

    /// What an answer means.
    fn judge(&self, reply: &Reply<'_>) -> Step;

    /// What a request that got no answer means (default: temporary, retried).
    fn no_answer(&self, e: &C::Error) -> Step {
        Step::Retry {
            cause: Cause::transport(e),
            after: None,
        }
    }

    /// The service refused `credential`: the next [`Attempts::request`] must carry another.
    fn renew(&self, _credential: &str) {}

    /// What the body encrypts, for the tap.
    fn plaintext(&self) -> Option<&[u8]> {
        None
    }
}

/// Where and how a push goes out: the app's client and metrics, the slots
/// it must wait for, and the tap of `send-test`.
pub struct Exchange<'a, C = reqwest::Client> {
    pub client: &'a C,
    pub metrics: &'a Upstream,
    /// Held for each attempt's request and answer.
    pub slot: Option<&'a Semaphore>,
    pub tap: Option<&'a Tap>,
}

const NO_RECORD: usize = usize::MAX;

impl<C: Transport> Exchange<'_, C> {
    /// Runs the attempts of one push within `budget` and says what happened.
    pub async fn run<A: Attempts<C>>(&self, policy: &Policy, budget: Duration, a: &A) -> Outcome {
        let now = Instant::now();
        // The budget comes from the config; the fallback only keeps the sum from overflowing.
        let deadline = now
            .checked_add(budget)
            .unwrap_or_else(|| now + super::MAX_RETRY_AFTER);
        // The tap record of the attempt in flight, marked when the deadline cuts it.
        let in_flight = AtomicUsize::new(NO_RECORD);
        match tokio::time::timeout_at(deadline, self.attempts(policy, deadline, a, &in_flight))
            .await
        {
            Ok(outcome) => outcome,
            Err(_) => {
                let i = in_flight.load(Ordering::Relaxed);
                if let (Some(t), true) = (self.tap, i != NO_RECORD) {
                    t.failed(i, "no answer in time".into());
                }
                Outcome::temporary(Cause::Timeout(policy.service))
            }
        }
    }

    async fn attempts<A: Attempts<C>>(
        &self,
        policy: &Policy,
        deadline: Instant,
        a: &A,
        in_flight: &AtomicUsize,
    ) -> Outcome {
        let mut renewed = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Attempt {
                request,
                credential,
            } = match a.request().await {
                Ok(r) => r,
                Err(outcome) => return outcome,
            };
            let step = self.once(policy, request, a, in_flight).await;
            match step {
                Step::Done(outcome) => return outcome,
                Step::Renew(answer) => match credential {
                    Some(used) if !renewed => {
                        a.renew(&used);
                        renewed = true;
                    }
                    _ => return Outcome::temporary(Cause::Answer(answer)),
                },
                // Never sleeps past the push's own deadline, whatever the service asked for.
                Step::Retry { cause, after } => {
                    match retry_pause(
                        attempt,
                        policy.max_attempts,
                        policy.first_backoff,
                        after,
                        deadline,
                    ) {
                        Some(pause) => tokio::time::sleep(pause).await,
                        None => {
                            return Outcome::Temporary {
                                cause,
                                retry_after: after,
                            }
                        }
                    }
                }
            }
        }
    }

    /// One request and its answer, inside a slot when there are slots.
    async fn once<A: Attempts<C>>(
        &self,
        policy: &Policy,
        request: C::Request,
        a: &A,
        in_flight: &AtomicUsize,
    ) -> Step {
        let waiting = self.metrics.waiting_for_slot();
        let _permit = match self.slot {
            Some(slots) => slots.acquire().await.ok(),
            None => None,
        };
        drop(waiting);
        let tapped = self.tap.map(|t| (t, t.sent(&request, a.plaintext())));
        if let Some((_, i)) = tapped {
            in_flight.store(i, Ordering::Relaxed);
        }
        let call = self.metrics.request();
        let step = match self.client.send(request).instrument(call.span()).await {
            Err(e) => {
                if let Some((t, i)) = tapped {
                    t.failed(i, Cause::transport(&e).to_string());
                }
                a.no_answer(&e)
            }
            Ok(resp) => {
                let status = resp.status();
                call.answered(status);
                let retry_after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                let headers = tapped.map(|_| resp.headers().clone());
                let body = if policy.read_body || tapped.is_some() {
                    bounded_body(resp).await
                } else {
                    bytes::Bytes::new()
                };
                if let (Some((t, i)), Some(h)) = (tapped, &headers) {
                    t.answered(i, status, h, &body);
                }
                a.judge(&Reply {
                    status,
                    retry_after,
                    body: if policy.read_body { &body } else { &[] },
                })
            }
        };
        in_flight.store(NO_RECORD, Ordering::Relaxed);
        step
    }
}

/// The most of an answer's body read: push services answer errors in a few
/// hundred bytes; a service (or a client-chosen endpoint) that sends more is
/// not allowed to grow memory with it. The rest is left unread.
const MAX_ANSWER_BODY: usize = 64 * 1024;

/// An answer's body, at most [`MAX_ANSWER_BODY`] bytes (empty if unreadable).
pub(super) async fn bounded_body<R: Inbound>(resp: R) -> bytes::Bytes {
    crate::net::transport::bounded_body(resp, MAX_ANSWER_BODY).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pushkin::outcome::Answer;
    use std::sync::Mutex;
    use testkit::unifiedpush::{Behaviour, FakeUnifiedPush};

    /// Posts to one URL and judges the answer as UnifiedPush does; counts its requests.
    struct Post {
        client: reqwest::Client,
        url: String,
        made: Mutex<Vec<Instant>>,
    }

    impl Attempts for Post {
        async fn request(&self) -> Result<Attempt, Outcome> {
            if let Ok(mut m) = self.made.lock() {
                m.push(Instant::now());
            }
            let request = self
                .client
                .post(&self.url)
                .body("{}")
                .build()
                .map_err(|e| Outcome::failed(Cause::Local(e.to_string())))?;
            Ok(Attempt {
                request,
                credential: None,
            })
        }

        fn judge(&self, r: &Reply<'_>) -> Step {
            let answer = Answer::UnifiedPush { status: r.status };
            match r.status {
                200..=299 => Step::Done(Outcome::Delivered),
                429 | 500..=599 => Step::Retry {
                    cause: Cause::Answer(answer),
                    after: r.retry_after,
                },
                _ => Step::Done(Outcome::from_final_answer(answer, None)),
            }
        }
    }

    #[derive(Debug, Default, PartialEq, serde::Deserialize)]
    struct Why {
        reason: Option<String>,
    }

    #[test]
    fn only_an_unsuccessful_answer_s_body_is_parsed() {
        let body = br#"{"reason":"BadDeviceToken"}"#;
        let reply = |status| Reply {
            status,
            retry_after: None,
            body,
        };
        assert_eq!(
            reply(400).error_body::<Why>().reason.as_deref(),
            Some("BadDeviceToken")
        );
        assert_eq!(reply(200).error_body::<Why>(), Why::default());
        let garbage = Reply {
            status: 500,
            retry_after: None,
            body: b"<html>",
        };
        assert_eq!(garbage.error_body::<Why>(), Why::default());
    }

    #[tokio::test]
    async fn an_answer_body_is_read_up_to_its_cap_only() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let big = 1024 * 1024;
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 4096];
            let _ = sock.read(&mut buf).await;
            let head = format!("HTTP/1.1 400 Bad Request\r\ncontent-length: {big}\r\n\r\n");
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(&vec![b'x'; big]).await;
        });
        let resp = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client")
            .get(format!("http://{addr}/"))
            .send()
            .await
            .expect("answer");
        let body = bounded_body(resp).await;
        assert_eq!(body.len(), MAX_ANSWER_BODY);
        assert!(body.iter().all(|&b| b == b'x'));
    }

    fn policy() -> Policy {
        Policy {
            service: "the fake",
            max_attempts: 3,
            first_backoff: Duration::from_millis(50),
            read_body: true,
        }
    }

    async fn setup(topic: &str, script: Vec<Behaviour>) -> (FakeUnifiedPush, Post) {
        let fake = FakeUnifiedPush::start().await;
        fake.script(topic, script);
        let post = Post {
            client: reqwest::Client::new(),
            url: fake.endpoint(topic),
            made: Mutex::new(Vec::new()),
        };
        (fake, post)
    }

    fn exchange<'a>(post: &'a Post, m: &'a Upstream, tap: Option<&'a Tap>) -> Exchange<'a> {
        Exchange {
            client: &post.client,
            metrics: m,
            slot: None,
            tap,
        }
    }

    fn metrics() -> Upstream {
        crate::telemetry::metrics::Metrics::new()
            .upstream(crate::telemetry::metrics::Service::UnifiedPush, "test")
    }

    fn pauses(p: &Post) -> Vec<Duration> {
        let made = p.made.lock().map(|m| m.clone()).unwrap_or_default();
        made.windows(2).map(|w| w[1] - w[0]).collect()
    }

    #[tokio::test]
    async fn retries_honour_retry_after_and_the_tap_records_each_attempt() {
        let (fake, post) = setup(
            "t",
            vec![
                Behaviour::RetryAfter(503, "1".into()),
                Behaviour::Status(500),
            ],
        )
        .await;
        let (tap, m) = (Tap::default(), metrics());
        let x = exchange(&post, &m, Some(&tap));
        let outcome = x.run(&policy(), Duration::from_secs(5), &post).await;
        assert_eq!(outcome, Outcome::Delivered);
        assert_eq!(fake.received().len(), 3);
        let p = pauses(&post);
        assert!(
            p[0] >= Duration::from_secs(1),
            "Retry-After honoured: {p:?}"
        );
        assert!(
            (Duration::from_millis(100)..Duration::from_millis(900)).contains(&p[1]),
            "without Retry-After, the doubled back-off (100 ms): {p:?}"
        );
        let statuses: Vec<Option<u16>> = tap.exchanges().iter().map(|e| e.status).collect();
        assert_eq!(statuses, [Some(503), Some(500), Some(200)]);
        assert_eq!(tap.exchanges()[0].request_body, "{}");
    }

    #[tokio::test]
    async fn a_retry_after_past_the_deadline_ends_the_push_at_once() {
        let (fake, post) = setup("t", vec![Behaviour::RetryAfter(429, "30".into())]).await;
        let m = metrics();
        let x = exchange(&post, &m, None);
        let started = Instant::now();
        let outcome = x.run(&policy(), Duration::from_secs(5), &post).await;
        assert_eq!(
            outcome,
            Outcome::Temporary {
                cause: Cause::Answer(Answer::UnifiedPush { status: 429 }),
                retry_after: Some(Duration::from_secs(30))
            },
            "the service's advice goes to the outbox"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(fake.received().len(), 1);
    }

    #[tokio::test]
    async fn a_hanging_service_is_given_up_at_the_deadline() {
        let (fake, post) = setup("t", vec![Behaviour::Status(503), Behaviour::Stall]).await;
        let tap = Tap::default();
        let m = metrics();
        let x = exchange(&post, &m, Some(&tap));
        let started = Instant::now();
        let outcome = x.run(&policy(), Duration::from_millis(700), &post).await;
        let took = started.elapsed();
        assert_eq!(outcome, Outcome::temporary(Cause::Timeout("the fake")));
        assert!(
            (Duration::from_millis(700)..Duration::from_millis(1500)).contains(&took),
            "{took:?}"
        );
        assert_eq!(fake.received().len(), 2);
        let e = tap.exchanges();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].status, Some(503));
        assert_eq!(e[1].error.as_deref(), Some("no answer in time"));
    }

    /// The gateway's own client has no total timeout of its own: a push
    /// whose service hangs ends at the push's deadline, as the push's timeout
    /// (with a client timer of the same length, the client's "timed out"
    /// could win the race at that instant).
    #[tokio::test]
    async fn a_hanging_service_ends_as_the_push_s_timeout_with_the_gateway_s_client() {
        let (fake, mut post) = setup("t", vec![Behaviour::Stall]).await;
        post.client =
            crate::net::build_client(&crate::net::ClientOptions::for_tests()).expect("client");
        let tap = Tap::default();
        let m = metrics();
        let x = exchange(&post, &m, Some(&tap));
        let started = Instant::now();
        let budget = Duration::from_millis(500);
        let outcome = tokio::time::timeout(Duration::from_secs(5), x.run(&policy(), budget, &post))
            .await
            .expect("bounded by the push's deadline");
        let took = started.elapsed();
        assert_eq!(outcome, Outcome::temporary(Cause::Timeout("the fake")));
        assert!(
            (budget..Duration::from_millis(1300)).contains(&took),
            "{took:?}"
        );
        assert_eq!(fake.received().len(), 1);
        let e = tap.exchanges();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].error.as_deref(), Some("no answer in time"));
    }

    #[tokio::test]
    async fn attempts_are_bounded() {
        let (fake, post) = setup(
            "t",
            vec![
                Behaviour::Status(503),
                Behaviour::Status(503),
                Behaviour::Status(503),
                Behaviour::Status(200),
            ],
        )
        .await;
        let m = metrics();
        let x = exchange(&post, &m, None);
        let outcome = x.run(&policy(), Duration::from_secs(5), &post).await;
        assert_eq!(
            outcome,
            Outcome::temporary(Cause::Answer(Answer::UnifiedPush { status: 503 }))
        );
        assert_eq!(fake.received().len(), 3);
    }
}
