//! Caps on the outbox, so that an outage, or a client whose pushes can never
//! be delivered, cannot fill the disk: at most `dispatch.outbox_max_entries`
//! entries and `outbox_max_bytes` of bodies in all, and
//! `outbox_max_entries_per_app` per configured app. Past a cap a request's
//! temporary failures are not queued: the request is answered `429` and the
//! homeserver retries it later (de-duplication makes that safe).
//!
//! The outbox's size is read from the store at most once a second (one
//! grouped query, only on the path of requests that have something to queue)
//! and what this gateway queues meanwhile is added to that reading, so a burst
//! cannot run far past a cap; other gateways sharing a PostgreSQL store are
//! seen at the next reading.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::DispatchConfig;
use crate::ids::AppId;
use crate::routing::Routes;
use crate::store::Store;
use crate::telemetry::metrics::UNROUTED;

/// How old a reading of the outbox's size may be.
const FRESH: Duration = Duration::from_secs(1);

pub struct Capacity {
    max_entries: i64,
    max_bytes: i64,
    max_per_app: i64,
    reading: tokio::sync::Mutex<Reading>,
}

#[derive(Default)]
struct Reading {
    at: Option<Instant>,
    entries: i64,
    bytes: i64,
    /// Entries per configured app (config key).
    per_app: HashMap<String, i64>,
}

fn cap(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Capacity {
    pub fn new(p: &DispatchConfig) -> Self {
        Capacity {
            max_entries: cap(p.outbox_max_entries),
            max_bytes: cap(p.outbox_max_bytes),
            max_per_app: cap(p.outbox_max_entries_per_app),
            reading: tokio::sync::Mutex::new(Reading::default()),
        }
    }

    /// Whether entries of `(app key, bytes)` plus `shared` bytes fit under
    /// every cap; when they do, they are counted at once. All or nothing: a
    /// request is queued whole or answered 429 whole. If the store cannot be
    /// read, the last reading decides (the settlement will fail anyway if the
    /// store is away).
    pub async fn admit(
        &self,
        store: &dyn Store,
        routes: &Routes,
        wanted: &[(String, i64)],
        shared: i64,
    ) -> bool {
        let mut r = self.reading.lock().await;
        if r.at.is_none_or(|at| at.elapsed() >= FRESH) {
            if let Ok(usage) = store.usage().await {
                let mut fresh = Reading {
                    at: Some(Instant::now()),
                    bytes: usage.shared_bytes,
                    ..Reading::default()
                };
                for a in usage.apps {
                    let key = routes
                        .find(&AppId::from(a.app_id))
                        .map_or(UNROUTED, |route| route.key.as_str());
                    *fresh.per_app.entry(key.to_owned()).or_default() += a.entries;
                    fresh.entries = fresh.entries.saturating_add(a.entries);
                    fresh.bytes = fresh.bytes.saturating_add(a.bytes);
                }
                *r = fresh;
            }
        }
        let count = wanted.len() as i64;
        let bytes = wanted
            .iter()
            .fold(shared, |sum, (_, b)| sum.saturating_add(*b));
        if r.entries.saturating_add(count) > self.max_entries
            || r.bytes.saturating_add(bytes) > self.max_bytes
        {
            return false;
        }
        let mut per_app: HashMap<&str, i64> = HashMap::new();
        for (app, _) in wanted {
            *per_app.entry(app.as_str()).or_default() += 1;
        }
        let over = per_app.iter().any(|(app, n)| {
            r.per_app
                .get(*app)
                .copied()
                .unwrap_or_default()
                .saturating_add(*n)
                > self.max_per_app
        });
        if over {
            return false;
        }
        r.entries += count;
        r.bytes = r.bytes.saturating_add(bytes);
        for (app, n) in per_app {
            *r.per_app.entry(app.to_owned()).or_default() += n;
        }
        true
    }
}
