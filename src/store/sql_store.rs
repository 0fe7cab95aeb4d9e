//! The [`Store`] of either backend: pools, the writer's held connection and
//! the grouping tasks, with each method one call into [`super::queries`]
//! (SQLite's claims, settlements and rejection lookups: [`super::sqlite_direct`]).

use futures::future::BoxFuture;
use futures::FutureExt;
use sqlx::{ColumnIndex, Decode, Encode, Executor, Pool, Type};

use super::backend::Backend;
use super::batch::{Reader, Writer};
use super::held::Held;
use super::{
    AppStats, ClaimKey, ClaimState, DeviceKey, Entry, Expiry, Fairness, Millis, OutboxRow,
    Rejection, Selection, Settlement, Stats, Store, StoreError, Usage,
};

pub struct SqlStore<DB: Backend> {
    /// Writes (PostgreSQL: the same pool as reads).
    pub(super) write_pool: Pool<DB>,
    /// Reads that need not wait for the writer.
    pub(super) read_pool: Pool<DB>,
    /// The writer's connection, shared by group commits, outbox takes and expiry.
    pub(super) held: Held<DB>,
    pub(super) writer: Writer,
    pub(super) reader: Reader,
    /// Whether the leases of claims being sent are kept in memory by the
    /// hot path (SQLite's) rather than in the `claims` table.
    leases_in_memory: bool,
}

impl<DB> SqlStore<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    usize: ColumnIndex<DB::Row>,
    i32: Type<DB> + for<'r> Decode<'r, DB>,
    i64: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
    Option<i64>: for<'q> Encode<'q, DB>,
    String: Type<DB> + for<'r> Decode<'r, DB>,
    for<'q> &'q str: Type<DB> + Encode<'q, DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
{
    /// Starts the group-commit writer on `write_pool` and the grouped reader
    /// on `read_pool` (of a database already migrated).
    pub fn start(write_pool: Pool<DB>, read_pool: Pool<DB>) -> Self {
        let (held, writer, reader) = Self::start_grouping(write_pool.clone(), read_pool.clone());
        let parts = (held, writer, reader);
        Self::assemble(write_pool, read_pool, parts, false)
    }

    /// With a writer and a reader served by a combining queue (SQLite's,
    /// which keeps the leases of claims); `held` is the sqlx writer's
    /// connection, whose turn that writer takes.
    pub fn combined(
        write_pool: Pool<DB>,
        read_pool: Pool<DB>,
        held: Held<DB>,
        writer: Writer,
        reader: Reader,
    ) -> Self {
        Self::assemble(write_pool, read_pool, (held, writer, reader), true)
    }

    fn assemble(
        write_pool: Pool<DB>,
        read_pool: Pool<DB>,
        (held, writer, reader): (Held<DB>, Writer, Reader),
        leases_in_memory: bool,
    ) -> Self {
        SqlStore {
            write_pool,
            read_pool,
            held,
            writer,
            reader,
            leases_in_memory,
        }
    }
}

impl<DB> Store for SqlStore<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    usize: ColumnIndex<DB::Row>,
    i32: Type<DB> + for<'r> Decode<'r, DB>,
    i64: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
    Option<i64>: for<'q> Encode<'q, DB>,
    String: Type<DB> + for<'r> Decode<'r, DB>,
    for<'q> &'q str: Type<DB> + Encode<'q, DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
{
    fn backend(&self) -> &'static str {
        DB::LOG_NAME
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            if self.writer.last_write().is_err() {
                // The last write failed: only a write can tell whether
                // writes work again (an idle gateway makes none).
                let probe = self.probe_write().await;
                // Noted either way; still failing is told as a failing write.
                let _ = self.writer.noted(probe.map_err(StoreError::from));
                self.writer.last_write()?;
            }
            Ok(self.ping_read().await?)
        }
        .boxed()
    }

    fn rejections<'a>(
        &'a self,
        devices: &'a [DeviceKey],
    ) -> BoxFuture<'a, Result<Vec<Rejection>, StoreError>> {
        self.reader.rejections(devices).boxed()
    }

    fn claim<'a>(
        &'a self,
        keys: &'a [ClaimKey],
        now: Millis,
        lease_until: Millis,
        settled_before: Millis,
    ) -> BoxFuture<'a, Result<Vec<ClaimKey>, StoreError>> {
        self.writer
            .claim(keys, now, lease_until, settled_before)
            .boxed()
    }

    fn claim_states<'a>(
        &'a self,
        keys: &'a [ClaimKey],
    ) -> BoxFuture<'a, Result<Vec<(ClaimKey, ClaimState)>, StoreError>> {
        async move {
            if self.leases_in_memory {
                self.reader.claim_states(keys).await
            } else {
                Ok(self.claim_states_read(keys).await?)
            }
        }
        .boxed()
    }

    fn settle(&self, s: Settlement) -> BoxFuture<'_, Result<Vec<i64>, StoreError>> {
        self.writer.settle(s).boxed()
    }

    fn take_due(
        &self,
        now: Millis,
        lease_until: Millis,
        limit: i64,
    ) -> BoxFuture<'_, Result<Vec<Entry>, StoreError>> {
        let all = Fairness {
            per_app: limit,
            window: limit,
            skip_apps: Vec::new(),
        };
        async move { Ok(self.take_due_held(now, lease_until, limit, &all).await?) }.boxed()
    }

    fn take_due_fair<'a>(
        &'a self,
        now: Millis,
        lease_until: Millis,
        limit: i64,
        fair: &'a Fairness,
    ) -> BoxFuture<'a, Result<Vec<Entry>, StoreError>> {
        async move { Ok(self.take_due_held(now, lease_until, limit, fair).await?) }.boxed()
    }

    fn expire(&self, e: Expiry) -> BoxFuture<'_, Result<u64, StoreError>> {
        async move { Ok(self.expire_held(e).await?) }.boxed()
    }

    fn stats(&self) -> BoxFuture<'_, Result<Stats, StoreError>> {
        async move { Ok(self.stats_read().await?) }.boxed()
    }

    fn usage(&self) -> BoxFuture<'_, Result<Usage, StoreError>> {
        async move { Ok(self.usage_read().await?) }.boxed()
    }

    fn app_stats(&self) -> BoxFuture<'_, Result<Vec<AppStats>, StoreError>> {
        async move { Ok(self.app_stats_read().await?) }.boxed()
    }

    fn outbox_list<'a>(
        &'a self,
        app_id: Option<&'a str>,
        limit: i64,
    ) -> BoxFuture<'a, Result<Vec<OutboxRow>, StoreError>> {
        async move { Ok(self.outbox_list_read(app_id, limit).await?) }.boxed()
    }

    fn outbox_retry<'a>(
        &'a self,
        which: &'a Selection,
        now: Millis,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        async move { Ok(self.outbox_change(which, Some(now)).await?) }.boxed()
    }

    fn outbox_drop<'a>(&'a self, which: &'a Selection) -> BoxFuture<'a, Result<u64, StoreError>> {
        async move { Ok(self.outbox_change(which, None).await?) }.boxed()
    }

    fn rejections_list<'a>(
        &'a self,
        app_id: Option<&'a str>,
        limit: i64,
    ) -> BoxFuture<'a, Result<Vec<Rejection>, StoreError>> {
        async move { Ok(self.rejections_list_read(app_id, limit).await?) }.boxed()
    }

    fn forget_rejection<'a>(
        &'a self,
        device: &'a DeviceKey,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        async move { Ok(self.forget_rejection_held(device).await?) }.boxed()
    }

    fn purge_claims(&self, before: Millis) -> BoxFuture<'_, Result<u64, StoreError>> {
        async move { Ok(self.purge_claims_held(before).await?) }.boxed()
    }
}
