//! The rejection breaker: a safety net for the one answer that deletes
//! pushers.
//!
//! A configuration mistake (a revoked or wrong APNs key answered as
//! `BadDeviceToken` by a mirror, a wrong topic, a wrong FCM project) can make
//! the push service call *every* token of an app dead within minutes; passed
//! on, the homeserver would delete every pusher of the app. So, per app, the
//! breaker counts the distinct tokens the push service answered about in a
//! sliding window and those it declared dead. When the dead ones exceed
//! `share` of at least `min_tokens`, it opens: token-dead answers become
//! `failed` (logged, counted, not remembered) until the share falls again or
//! the operator reloads the config (`SIGHUP`).
//!
//! The window is kept as ten slices; tokens are distinct within a slice (a
//! token answered in two slices counts twice), and past a slice's cap the
//! rest are counted without being told apart, so memory stays bounded.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::Mutex;
use std::time::Duration;

use crate::config::BreakerConfig;
use crate::ids::PushKey;
use crate::pushkin::outcome::{Cause, Rejected};
use crate::pushkin::Outcome;
use crate::store::Millis;
use crate::telemetry::metrics::Metrics;

const SLICES: u32 = 10;
/// Distinct tokens kept per slice and kind; more are only counted.
const SLICE_CAP: usize = 16_384;

pub struct Breakers {
    config: BreakerConfig,
    hasher: RandomState,
    apps: Mutex<HashMap<String, AppBreaker>>,
}

/// The tokens of a slice, by their keyed hash (already SipHash under a
/// per-process key, so hashing it again for the set would only cost time).
type Tokens = HashSet<u64, BuildHasherDefault<TokenHash>>;

/// The hasher of [`Tokens`]: the token's keyed hash is its own hash.
#[derive(Default)]
struct TokenHash(u64);

impl Hasher for TokenHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64`s are hashed; fold anything else in rather than drop it.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[derive(Default)]
struct Slice {
    start: Millis,
    seen: Tokens,
    seen_overflow: usize,
    dead: Tokens,
    dead_overflow: usize,
}

impl Slice {
    fn add(set: &mut Tokens, overflow: &mut usize, token: u64) {
        if set.len() < SLICE_CAP {
            set.insert(token);
        } else if !set.contains(&token) {
            *overflow += 1;
        }
    }
}

#[derive(Default)]
struct AppBreaker {
    slices: VecDeque<Slice>,
    open: bool,
}

impl AppBreaker {
    fn counts(&self) -> (usize, usize) {
        self.slices.iter().fold((0, 0), |(seen, dead), s| {
            (
                seen + s.seen.len() + s.seen_overflow,
                dead + s.dead.len() + s.dead_overflow,
            )
        })
    }

    fn expire(&mut self, now: Millis, window: Millis) {
        while self
            .slices
            .front()
            .is_some_and(|s| s.start <= now.saturating_sub(window))
        {
            self.slices.pop_front();
        }
    }

    fn slice(&mut self, now: Millis, width: Millis) -> &mut Slice {
        let start = now - now.rem_euclid(width.max(1));
        if self.slices.back().is_none_or(|s| s.start != start) {
            self.slices.push_back(Slice {
                start,
                ..Slice::default()
            });
        }
        // Just pushed when empty.
        let last = self.slices.len() - 1;
        &mut self.slices[last]
    }
}

impl Breakers {
    pub fn new(config: BreakerConfig) -> Self {
        Breakers {
            config,
            hasher: RandomState::new(),
            apps: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one outcome of `app` and holds a token-dead answer back while the
    /// app's breaker is open. Outcomes without an answer from the push service
    /// (local decisions, timeouts) are not counted.
    pub fn judge(
        &self,
        app: &str,
        pushkey: &PushKey,
        outcome: Outcome,
        now: Millis,
        metrics: &Metrics,
    ) -> Outcome {
        if !self.config.enabled {
            return outcome;
        }
        let dead = matches!(outcome, Outcome::Rejected(Rejected::TokenDead { .. }));
        if !(dead || outcome == Outcome::Delivered || outcome.answer().is_some()) {
            return outcome;
        }
        let token = self.hasher.hash_one(pushkey);
        let window = millis(self.config.window);
        let mut apps = match self.apps.lock() {
            Ok(a) => a,
            Err(poisoned) => poisoned.into_inner(),
        };
        // One lookup per push; the app's name is allocated once, at its first.
        let b = match apps.get_mut(app) {
            Some(b) => b,
            None => apps.entry(app.to_owned()).or_default(),
        };
        b.expire(now, window);
        let slice = b.slice(now, window / Millis::from(SLICES));
        Slice::add(&mut slice.seen, &mut slice.seen_overflow, token);
        if dead {
            Slice::add(&mut slice.dead, &mut slice.dead_overflow, token);
        }
        let (seen, dead_count) = b.counts();
        let tripped = self.tripped(seen, dead_count);
        if tripped && !b.open {
            b.open = true;
            metrics.breaker(app, true);
            tracing::error!(
                app,
                dead = dead_count,
                answered = seen,
                "rejection breaker open: the push service calls too many of this app's tokens \
                 dead (a configuration mistake?); their pushes now fail instead of deleting \
                 pushers until the share falls or the config is reloaded"
            );
        } else if !tripped && b.open {
            b.open = false;
            metrics.breaker(app, false);
            tracing::warn!(
                app,
                "rejection breaker closed: dead tokens are rejected again"
            );
        }
        match outcome {
            Outcome::Rejected(Rejected::TokenDead { answer, .. }) if b.open => {
                Outcome::Failed(Cause::BreakerOpen(answer))
            }
            other => other,
        }
    }

    fn tripped(&self, seen: usize, dead: usize) -> bool {
        seen >= self.config.min_tokens && dead as f64 > self.config.share * seen as f64
    }

    /// The apps whose breaker is open now (after the window moved on), sorted.
    pub fn open(&self, now: Millis, metrics: &Metrics) -> Vec<String> {
        let window = millis(self.config.window);
        let mut apps = match self.apps.lock() {
            Ok(a) => a,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut open = Vec::new();
        for (app, b) in apps.iter_mut() {
            if !b.open {
                continue;
            }
            b.expire(now, window);
            let (seen, dead) = b.counts();
            if self.tripped(seen, dead) {
                open.push(app.clone());
            } else {
                b.open = false;
                metrics.breaker(app, false);
                tracing::warn!(
                    app,
                    "rejection breaker closed: dead tokens are rejected again"
                );
            }
        }
        open.sort();
        open
    }

    /// Closes every breaker and forgets the counts (the operator's reset).
    pub fn reset(&self, metrics: &Metrics) {
        let mut apps = match self.apps.lock() {
            Ok(a) => a,
            Err(poisoned) => poisoned.into_inner(),
        };
        for (app, b) in apps.iter() {
            if b.open {
                metrics.breaker(app, false);
                tracing::warn!(app, "rejection breaker reset by a config reload");
            }
        }
        apps.clear();
    }
}

fn millis(d: Duration) -> Millis {
    Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pushkin::apns::reason::Reason;
    use crate::pushkin::outcome::Answer;

    fn dead() -> Outcome {
        Outcome::Rejected(Rejected::TokenDead {
            answer: Answer::Apns {
                status: 400,
                reason: Reason::BadDeviceToken,
            },
            since_ms: None,
        })
    }

    fn breakers() -> Breakers {
        Breakers::new(BreakerConfig {
            enabled: true,
            share: 0.5,
            min_tokens: 20,
            window: Duration::from_secs(300),
        })
    }

    #[test]
    fn trips_at_min_tokens_and_holds_back_from_then_on() {
        let b = breakers();
        let m = Metrics::new();
        for i in 0..19 {
            let o = b.judge("app", &format!("t{i}").into(), dead(), 1_000, &m);
            assert!(
                o.is_rejected(),
                "token {i} is rejected before the breaker trips"
            );
        }
        let o = b.judge("app", &"t19".into(), dead(), 1_000, &m);
        assert_eq!(o.label(), "failed", "the 20th trips it");
        assert_eq!(b.open(1_000, &m), vec!["app".to_owned()]);
        assert_eq!(
            b.judge("app", &"t20".into(), dead(), 1_001, &m).label(),
            "failed"
        );
        // Another app is not affected.
        assert!(b
            .judge("other", &"t0".into(), dead(), 1_001, &m)
            .is_rejected());
    }

    #[test]
    fn healthy_traffic_keeps_it_closed_and_the_window_closes_it() {
        let b = breakers();
        let m = Metrics::new();
        for i in 0..30 {
            b.judge(
                "app",
                &format!("ok{i}").into(),
                Outcome::Delivered,
                1_000,
                &m,
            );
        }
        for i in 0..15 {
            let o = b.judge("app", &format!("t{i}").into(), dead(), 2_000, &m);
            assert!(o.is_rejected(), "15 dead of 45 is under half");
        }
        let b = breakers();
        for i in 0..25 {
            b.judge("app", &format!("t{i}").into(), dead(), 1_000, &m);
        }
        assert_eq!(b.open(1_000, &m).len(), 1);
        // Five minutes later the old answers are out of the window.
        assert!(b.open(1_000 + 300_001, &m).is_empty());
        assert!(b
            .judge("app", &"new".into(), dead(), 1_000 + 300_002, &m)
            .is_rejected());
    }

    #[test]
    fn local_decisions_are_not_counted_and_reset_clears() {
        let b = breakers();
        let m = Metrics::new();
        for i in 0..40 {
            let o = b.judge(
                "app",
                &format!("t{i}").into(),
                Outcome::temporary(Cause::Timeout("APNs")),
                1_000,
                &m,
            );
            assert_eq!(o.label(), "temporary");
        }
        for i in 0..25 {
            b.judge("app", &format!("d{i}").into(), dead(), 1_000, &m);
        }
        assert_eq!(
            b.open(1_000, &m).len(),
            1,
            "timeouts did not dilute the share"
        );
        b.reset(&m);
        assert!(b.open(1_000, &m).is_empty());
    }
}
