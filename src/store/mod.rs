//! Durable state behind the delivery guarantees (design §4): the outbox of
//! pushes still to deliver, the memory of dead pushkeys, and the
//! de-duplication claims of (device, event) pairs.
//!
//! One trait, two backends sharing one schema and one set of generic queries
//! ([`queries`]; what differs is the small [`backend::Backend`] trait): SQLite for one gateway (a local file, nothing to set up) and
//! PostgreSQL for several gateways behind one load balancer. SQLite's claims,
//! settlements and rejection lookups, the store's work per request, skip sqlx
//! ([`sqlite_direct`]). Only `dispatch`
//! talks to the store. Times are milliseconds since the Unix epoch, taken from
//! the gateway's clock so that both backends behave the same.

mod backend;
mod batch;
mod combine;
mod held;
mod jobs;
mod migrations;
mod postgres;
mod queries;
mod sql_store;
mod sqlite;
mod sqlite_direct;

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::config::StoreConfig;

pub type Millis = i64;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {what}: {message}")]
    Open { what: String, message: String },
    #[error("store migration failed: {0}")]
    Migrate(#[source] sqlx::Error),
    #[error("store query failed: {0}")]
    Query(#[from] sqlx::Error),
    /// From the SQLite hot path's own connections ([`sqlite_direct`]).
    #[error("store query failed: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot start the store's checkpoint thread: {0}")]
    Thread(#[from] std::io::Error),
    #[error("the store's reader or writer task has stopped")]
    Stopped,
    #[error("the last write to the store failed (disk full?): {0}")]
    WriteFailing(String),
}

/// A device as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceKey {
    pub app_id: String,
    pub pushkey: String,
}

/// One delivery of one event to one device: the unit of de-duplication.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClaimKey {
    pub app_id: String,
    pub pushkey: String,
    pub event_id: String,
}

/// A pushkey that a push service declared dead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub app_id: String,
    pub pushkey: String,
    /// When the token stopped being valid (the push service's time when it gives one).
    pub rejected_at: Millis,
    pub reason: String,
}

/// Where a claim stands, as seen by a request that did not get it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimState {
    /// Another request is sending it; its lease ends at the given time.
    Sending { until: Millis },
    /// Delivered, queued in the outbox, or finished otherwise.
    Settled { at: Millis },
}

/// A push waiting in the outbox, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    pub app_id: String,
    pub pushkey: String,
    /// Without `shared`: the notification with this one device, in the wire
    /// format of `/notify`. With it: only the device (`{"app_id": …}`).
    pub body: String,
    /// The notification without its devices (`{"event_id": …}`), written once
    /// for every entry of a settlement that shares it (the same `Arc`), so a
    /// request's 100 queued devices do not store its content 100 times.
    pub shared: Option<std::sync::Arc<str>>,
    pub created_at: Millis,
    pub due_at: Millis,
    /// How many attempts were already made (1 when the request's own attempt failed).
    pub attempts: i64,
    pub last_error: Option<String>,
}

/// A push taken from the outbox by a worker; leased to it until `due_at` moved on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: i64,
    pub app_id: String,
    pub body: String,
    pub created_at: Millis,
    /// Attempts before this one.
    pub attempts: i64,
}

/// How [`Store::take_due_fair`] shares a take among app ids, so that one
/// app's backlog cannot take every slot of the outbox worker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fairness {
    /// At most this many entries of one app id (its earliest due).
    pub per_app: i64,
    /// Ranked among the first this many due entries (of the apps not
    /// skipped), which bounds the cost of a take.
    pub window: i64,
    /// App ids to leave out (those already holding their share of the worker).
    pub skip_apps: Vec<String>,
}

/// Everything one request (or one outbox round) learnt, written in one transaction.
#[derive(Debug, Default, Clone)]
pub struct Settlement {
    pub now: Millis,
    /// Claims whose push is finished or safely queued.
    pub settle_claims: Vec<ClaimKey>,
    /// Claims given up: the push was neither sent nor queued (the outbox was
    /// full), so a homeserver retry must send it again.
    pub release_claims: Vec<ClaimKey>,
    /// Dead pushkeys to remember.
    pub remember: Vec<Rejection>,
    /// Remembered rejections to drop (the app re-registered the token since).
    pub forget: Vec<DeviceKey>,
    /// New outbox entries; their ids come back in this order.
    pub enqueue: Vec<NewEntry>,
    /// Outbox entries that are finished (delivered, rejected, failed or dropped).
    pub delete: Vec<i64>,
    /// Outbox entries to try again: (id, due_at, attempts so far, error).
    pub reschedule: Vec<(i64, Millis, i64, String)>,
}

impl Settlement {
    pub fn is_empty(&self) -> bool {
        self.settle_claims.is_empty()
            && self.release_claims.is_empty()
            && self.remember.is_empty()
            && self.forget.is_empty()
            && self.enqueue.is_empty()
            && self.delete.is_empty()
            && self.reschedule.is_empty()
    }
}

/// Sizes, for metrics and `/ready`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub outbox: i64,
    /// Characters of outbox bodies and of the notifications they share.
    pub outbox_bytes: i64,
    /// `created_at` of the oldest outbox entry.
    pub oldest: Option<Millis>,
    pub rejections: i64,
    pub claims: i64,
}

/// One app id's share of the outbox (for the outbox caps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppUsage {
    pub app_id: String,
    pub entries: i64,
    /// Characters of the entries' own bodies (shared notifications not included).
    pub bytes: i64,
}

/// The outbox's size, for its caps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub apps: Vec<AppUsage>,
    /// Characters of the shared notifications.
    pub shared_bytes: i64,
}

/// What to delete in housekeeping: rows older than these times.
#[derive(Debug, Clone, Copy)]
pub struct Expiry {
    pub claims_before: Millis,
    pub rejections_before: Millis,
    pub batch: i64,
}

/// One app id's rows, for `pushgate store stats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppStats {
    pub app_id: String,
    pub outbox: i64,
    /// `created_at` of the app's oldest outbox entry.
    pub oldest: Option<Millis>,
    pub rejections: i64,
    pub claims: i64,
}

/// An outbox entry as `pushgate outbox list` shows it (its body left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub id: i64,
    pub app_id: String,
    pub pushkey: String,
    pub created_at: Millis,
    /// The next attempt (or, while a worker sends it, the end of its lease).
    pub due_at: Millis,
    pub attempts: i64,
    pub last_error: Option<String>,
}

/// Which outbox entries an admin command acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    Ids(Vec<i64>),
    App(String),
}

/// The store as `dispatch` uses it. Every method is one round trip (one
/// statement or one transaction), whatever the number of devices; `claim` and
/// `settle` of concurrent callers share one transaction ([`batch`]).
pub trait Store: Send + Sync {
    /// `sqlite` or `postgres`, for logs.
    fn backend(&self) -> &'static str;

    /// Cheap query that proves the store answers, and that its last write
    /// succeeded (`StoreError::WriteFailing` from a failed write until one succeeds).
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Remembered rejections among `devices`.
    fn rejections<'a>(
        &'a self,
        devices: &'a [DeviceKey],
    ) -> BoxFuture<'a, Result<Vec<Rejection>, StoreError>>;

    /// Claims each (device, event) for sending until `lease_until`: granted when no
    /// claim exists, when the existing one is an expired lease (its sender died),
    /// or when it was settled before `settled_before` (outside the dedup window).
    /// Returns the claims granted.
    fn claim<'a>(
        &'a self,
        keys: &'a [ClaimKey],
        now: Millis,
        lease_until: Millis,
        settled_before: Millis,
    ) -> BoxFuture<'a, Result<Vec<ClaimKey>, StoreError>>;

    /// The current state of these claims (missing ones are left out).
    fn claim_states<'a>(
        &'a self,
        keys: &'a [ClaimKey],
    ) -> BoxFuture<'a, Result<Vec<(ClaimKey, ClaimState)>, StoreError>>;

    /// Writes a settlement atomically; returns the ids of `enqueue`, in order.
    fn settle(&self, s: Settlement) -> BoxFuture<'_, Result<Vec<i64>, StoreError>>;

    /// Takes up to `limit` due outbox entries and leases them until `lease_until`
    /// (an entry leased by another worker is skipped; an expired lease is due again).
    fn take_due(
        &self,
        now: Millis,
        lease_until: Millis,
        limit: i64,
    ) -> BoxFuture<'_, Result<Vec<Entry>, StoreError>>;

    /// [`Store::take_due`], at most `fair.per_app` entries per app id (each
    /// app's earliest due among the first `fair.window` due) and none of
    /// `fair.skip_apps`.
    fn take_due_fair<'a>(
        &'a self,
        now: Millis,
        lease_until: Millis,
        limit: i64,
        fair: &'a Fairness,
    ) -> BoxFuture<'a, Result<Vec<Entry>, StoreError>>;

    /// Deletes one batch of expired claims and rejections; returns how many rows went.
    fn expire(&self, e: Expiry) -> BoxFuture<'_, Result<u64, StoreError>>;

    fn stats(&self) -> BoxFuture<'_, Result<Stats, StoreError>>;

    /// The outbox's entries and bytes per app id.
    fn usage(&self) -> BoxFuture<'_, Result<Usage, StoreError>>;

    // The operator's commands (`pushgate store|outbox|rejections|claims`):
    // each one short statement, safe beside running gateways.

    /// Rows per app id (outbox, rejections, claims), sorted by app id.
    fn app_stats(&self) -> BoxFuture<'_, Result<Vec<AppStats>, StoreError>>;

    /// Up to `limit` outbox entries (of one app id if given), oldest first.
    fn outbox_list<'a>(
        &'a self,
        app_id: Option<&'a str>,
        limit: i64,
    ) -> BoxFuture<'a, Result<Vec<OutboxRow>, StoreError>>;

    /// Makes the selected entries due at `now`; returns how many there were.
    fn outbox_retry<'a>(
        &'a self,
        which: &'a Selection,
        now: Millis,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// Deletes the selected entries (never sent); returns how many there were.
    fn outbox_drop<'a>(&'a self, which: &'a Selection) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// Up to `limit` remembered rejections (of one app id if given), newest first.
    fn rejections_list<'a>(
        &'a self,
        app_id: Option<&'a str>,
        limit: i64,
    ) -> BoxFuture<'a, Result<Vec<Rejection>, StoreError>>;

    /// Forgets one remembered rejection; returns 1 if it was there, else 0.
    fn forget_rejection<'a>(
        &'a self,
        device: &'a DeviceKey,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// Deletes every claim (lease or settled) whose time is before `before`.
    fn purge_claims(&self, before: Millis) -> BoxFuture<'_, Result<u64, StoreError>>;
}

/// The notify body of one queued device from its shared notification (a JSON
/// object without `devices`) and the device (a JSON object): the wire format
/// the outbox worker reads.
pub fn join_wire(notification: &str, device: &str) -> String {
    let inner = notification.trim().strip_suffix('}').unwrap_or("{");
    let sep = if inner.trim_end().ends_with('{') {
        ""
    } else {
        ","
    };
    format!(r#"{{"notification":{inner}{sep}"devices":[{device}]}}}}"#)
}

/// Opens the configured store and brings its schema up to date; `None` for `store: none`.
pub async fn open(config: &StoreConfig) -> Result<Option<Arc<dyn Store>>, StoreError> {
    Ok(match config {
        StoreConfig::None => None,
        StoreConfig::Sqlite { path } => Some(Arc::new(sqlite::open(path).await?)),
        StoreConfig::Postgres {
            url,
            max_connections,
        } => Some(Arc::new(
            postgres::open(url.expose(), *max_connections).await?,
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::join_wire;

    #[test]
    fn a_shared_notification_and_a_device_make_one_notify_body() {
        let body = join_wire(
            r#"{"event_id":"$e","counts":{}}"#,
            r#"{"app_id":"a","pushkey":"k"}"#,
        );
        assert_eq!(
            body,
            r#"{"notification":{"event_id":"$e","counts":{},"devices":[{"app_id":"a","pushkey":"k"}]}}"#
        );
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(v["notification"]["devices"][0]["pushkey"], "k");
        assert_eq!(
            join_wire("{}", r#"{"pushkey":"k"}"#),
            r#"{"notification":{"devices":[{"pushkey":"k"}]}}"#
        );
    }
}
