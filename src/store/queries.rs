//! The store's statements, written once and generic over the [`Backend`]:
//! each is one round trip (lists are sent in chunks of [`CHUNK`] keys, so that
//! a request with many devices stays under both backends' parameter limits).
//!
//! Writes that must not wait for a pool (group commits, outbox takes, expiry,
//! the operator's changes) run on the writer's [`Held`] connection.

use std::sync::Arc;

use sqlx::{ColumnIndex, Decode, Encode, Executor, Pool, QueryBuilder, Row, Type};

use super::backend::Backend;
use super::batch::{self, Done, Op};
use super::held::Held;
use super::sql_store::SqlStore;
use super::{
    AppStats, AppUsage, ClaimKey, ClaimState, DeviceKey, Entry, Expiry, Fairness, Millis,
    OutboxRow, Rejection, Selection, Settlement, Stats, Usage,
};

/// Keys per statement (3 parameters each, far below SQLite's 32766 and PostgreSQL's 65535).
pub const CHUNK: usize = 500;

/// Rows `purge_claims` deletes per transaction.
const PURGE_BATCH: u64 = 10_000;

/// Housekeeping's deletes of expired rejections and of shared notification
/// bodies no outbox entry uses any more; limits cast as in
/// [`SqlStore::take_due_query`].
pub(super) const EXPIRE_REJECTIONS: &str = "DELETE FROM rejections WHERE (app_id, pushkey) IN \
     (SELECT app_id, pushkey FROM rejections WHERE rejected_at < $1 LIMIT CAST($2 AS BIGINT))";
pub(super) const EXPIRE_NOTIFICATIONS: &str = "DELETE FROM outbox_notifications WHERE id IN \
     (SELECT id FROM outbox_notifications n WHERE NOT EXISTS \
      (SELECT 1 FROM outbox o WHERE o.notification_id = n.id) LIMIT CAST($1 AS BIGINT))";

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
    pub(super) async fn ping_read(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.read_pool)
            .await
            .map(|_| ())
    }

    /// Starts the group-commit writer on `write_pool` and the grouped
    /// rejection reader on `read_pool`; returns the writer's held connection
    /// (outbox takes and expiry share it), the writer and the reader.
    pub(super) fn start_grouping(
        write_pool: Pool<DB>,
        read_pool: Pool<DB>,
    ) -> (Held<DB>, batch::Writer, batch::Reader) {
        let held = Held::default();
        let writer_held = held.clone();
        let writer = batch::Writer::start(move |ops| {
            Self::write_batch(write_pool.clone(), writer_held.clone(), ops)
        });
        let reader_held = Held::default();
        let reader = batch::Reader::start(move |devices: Vec<DeviceKey>| {
            let (pool, held) = (read_pool.clone(), reader_held.clone());
            async move {
                held.run(&pool, async |conn| Self::rejections(conn, &devices).await)
                    .await
            }
        });
        (held, writer, reader)
    }

    async fn rejections(
        conn: &mut DB::Connection,
        devices: &[DeviceKey],
    ) -> Result<Vec<Rejection>, sqlx::Error> {
        let mut out = Vec::new();
        for chunk in devices.chunks(CHUNK) {
            let mut q = QueryBuilder::<DB>::new(
                "SELECT app_id, pushkey, rejected_at, reason FROM rejections \
                 WHERE (app_id, pushkey) IN (",
            );
            q.push_values(chunk, |mut b, d| {
                b.push_bind(d.app_id.as_str()).push_bind(d.pushkey.as_str());
            });
            q.push(")");
            for row in q.build().fetch_all(&mut *conn).await? {
                out.push(Self::rejection_from(&row)?);
            }
        }
        Ok(out)
    }

    /// A row of `SELECT app_id, pushkey, rejected_at, reason FROM rejections`.
    fn rejection_from(row: &DB::Row) -> Result<Rejection, sqlx::Error> {
        Ok(Rejection {
            app_id: row.try_get(0)?,
            pushkey: row.try_get(1)?,
            rejected_at: row.try_get(2)?,
            reason: row.try_get(3)?,
        })
    }

    /// Claims `keys` (each with its lease end); returns the keys granted.
    async fn claim(
        conn: &mut DB::Connection,
        keys: &[(&ClaimKey, Millis)],
        now: Millis,
        settled_before: Millis,
    ) -> Result<Vec<ClaimKey>, sqlx::Error> {
        let mut granted = Vec::new();
        for chunk in keys.chunks(CHUNK) {
            let mut q = QueryBuilder::<DB>::new(
                "INSERT INTO claims (app_id, pushkey, event_id, settled, until_ms) ",
            );
            q.push_values(chunk, |mut b, (k, lease_until)| {
                b.push_bind(k.app_id.as_str())
                    .push_bind(k.pushkey.as_str())
                    .push_bind(k.event_id.as_str())
                    .push("0")
                    .push_bind(*lease_until);
            });
            q.push(
                " ON CONFLICT (app_id, pushkey, event_id) DO UPDATE \
                 SET settled = 0, until_ms = excluded.until_ms \
                 WHERE (claims.settled = 0 AND claims.until_ms < ",
            );
            q.push_bind(now);
            q.push(") OR (claims.settled = 1 AND claims.until_ms < ");
            q.push_bind(settled_before);
            q.push(") RETURNING app_id, pushkey, event_id");
            for row in q.build().fetch_all(&mut *conn).await? {
                granted.push(ClaimKey {
                    app_id: row.try_get(0)?,
                    pushkey: row.try_get(1)?,
                    event_id: row.try_get(2)?,
                });
            }
        }
        Ok(granted)
    }

    pub(super) async fn claim_states_read(
        &self,
        keys: &[ClaimKey],
    ) -> Result<Vec<(ClaimKey, ClaimState)>, sqlx::Error> {
        let mut out = Vec::new();
        for chunk in keys.chunks(CHUNK) {
            let mut q = QueryBuilder::<DB>::new(
                "SELECT app_id, pushkey, event_id, settled, until_ms FROM claims \
                 WHERE (app_id, pushkey, event_id) IN (",
            );
            q.push_values(chunk, |mut b, k| {
                b.push_bind(k.app_id.as_str())
                    .push_bind(k.pushkey.as_str())
                    .push_bind(k.event_id.as_str());
            });
            q.push(")");
            for row in q.build().fetch_all(&self.read_pool).await? {
                let settled: i32 = row.try_get(3)?;
                let at: i64 = row.try_get(4)?;
                let key = ClaimKey {
                    app_id: row.try_get(0)?,
                    pushkey: row.try_get(1)?,
                    event_id: row.try_get(2)?,
                };
                let state = if settled == 0 {
                    ClaimState::Sending { until: at }
                } else {
                    ClaimState::Settled { at }
                };
                out.push((key, state));
            }
        }
        Ok(out)
    }

    /// Claims are named by their key in a row-value list: `… (app_id, pushkey, event_id) IN ((a, p, e), …)`.
    fn push_claim_keys(q: &mut QueryBuilder<DB>, chunk: &[ClaimKey]) {
        q.push(" (app_id, pushkey, event_id) IN (");
        q.push_values(chunk, |mut b, k| {
            b.push_bind(k.app_id.as_str())
                .push_bind(k.pushkey.as_str())
                .push_bind(k.event_id.as_str());
        });
        q.push(")");
    }

    /// `… IN ($1, $2, …)` of outbox or notification ids.
    fn push_ids(q: &mut QueryBuilder<DB>, ids: &[i64]) {
        q.push(" IN (");
        let mut list = q.separated(", ");
        for id in ids {
            list.push_bind(*id);
        }
        q.push(")");
    }

    /// The statements of a settlement, inside the caller's transaction.
    async fn settle(conn: &mut DB::Connection, s: &Settlement) -> Result<Vec<i64>, sqlx::Error> {
        for chunk in s.settle_claims.chunks(CHUNK) {
            let mut q = QueryBuilder::<DB>::new("UPDATE claims SET settled = 1, until_ms = ");
            q.push_bind(s.now);
            q.push(" WHERE");
            Self::push_claim_keys(&mut q, chunk);
            q.build().execute(&mut *conn).await?;
        }
        for chunk in s.release_claims.chunks(CHUNK) {
            let mut q = QueryBuilder::<DB>::new("DELETE FROM claims WHERE settled = 0 AND");
            Self::push_claim_keys(&mut q, chunk);
            q.build().execute(&mut *conn).await?;
        }
        for chunk in s.forget.chunks(CHUNK) {
            let mut q =
                QueryBuilder::<DB>::new("DELETE FROM rejections WHERE (app_id, pushkey) IN (");
            q.push_values(chunk, |mut b, d| {
                b.push_bind(d.app_id.as_str()).push_bind(d.pushkey.as_str());
            });
            q.push(")");
            q.build().execute(&mut *conn).await?;
        }
        if !s.remember.is_empty() {
            // One row per key: PostgreSQL refuses an upsert that touches a row twice.
            let mut remember = s.remember.clone();
            remember.sort_by(|a, b| (&a.app_id, &a.pushkey).cmp(&(&b.app_id, &b.pushkey)));
            remember.dedup_by(|a, b| a.app_id == b.app_id && a.pushkey == b.pushkey);
            for chunk in remember.chunks(CHUNK) {
                let mut q = QueryBuilder::<DB>::new(
                    "INSERT INTO rejections (app_id, pushkey, rejected_at, reason) ",
                );
                q.push_values(chunk, |mut b, r| {
                    b.push_bind(r.app_id.as_str())
                        .push_bind(r.pushkey.as_str())
                        .push_bind(r.rejected_at)
                        .push_bind(r.reason.as_str());
                });
                q.push(
                    " ON CONFLICT (app_id, pushkey) DO UPDATE \
                     SET rejected_at = excluded.rejected_at, reason = excluded.reason",
                );
                q.build().execute(&mut *conn).await?;
            }
        }
        let mut ids = Vec::with_capacity(s.enqueue.len());
        // Each shared notification once (entries of one request share the same Arc).
        let mut shared: Vec<(Arc<str>, i64)> = Vec::new();
        // One statement per entry: the id of each must be known, and RETURNING
        // does not promise the order of a multi-row insert.
        for e in &s.enqueue {
            let notification_id = match &e.shared {
                None => None,
                Some(n) => match shared.iter().find(|(m, _)| Arc::ptr_eq(m, n)) {
                    Some((_, id)) => Some(*id),
                    None => {
                        let row = sqlx::query(
                            "INSERT INTO outbox_notifications (body, created_at) VALUES ($1, $2) \
                             RETURNING id",
                        )
                        .bind(&**n)
                        .bind(e.created_at)
                        .fetch_one(&mut *conn)
                        .await?;
                        let id: i64 = row.try_get(0)?;
                        shared.push((n.clone(), id));
                        Some(id)
                    }
                },
            };
            let row = sqlx::query(
                "INSERT INTO outbox (app_id, pushkey, body, created_at, due_at, attempts, last_error, \
                 notification_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            )
            .bind(e.app_id.as_str())
            .bind(e.pushkey.as_str())
            .bind(e.body.as_str())
            .bind(e.created_at)
            .bind(e.due_at)
            .bind(e.attempts)
            .bind(e.last_error.as_deref())
            .bind(notification_id)
            .fetch_one(&mut *conn)
            .await?;
            ids.push(row.try_get::<i64, _>(0)?);
        }
        for chunk in s.delete.chunks(CHUNK) {
            let mut q = QueryBuilder::<DB>::new("DELETE FROM outbox WHERE id");
            Self::push_ids(&mut q, chunk);
            q.build().execute(&mut *conn).await?;
        }
        for (id, due_at, attempts, error) in &s.reschedule {
            sqlx::query(
                "UPDATE outbox SET due_at = $1, attempts = $2, last_error = $3 WHERE id = $4",
            )
            .bind(*due_at)
            .bind(*attempts)
            .bind(error.as_str())
            .bind(*id)
            .execute(&mut *conn)
            .await?;
        }
        Ok(ids)
    }

    /// A group of operations in one transaction and (up to [`CHUNK`]
    /// keys) two statements: settlements first, then claims.
    async fn in_one_transaction(
        conn: &mut DB::Connection,
        ops: &[Op],
    ) -> Result<Vec<Done>, sqlx::Error> {
        let merged = batch::merge(ops);
        let mut tx = sqlx::Connection::begin(conn).await?;
        let ids = Self::settle(&mut tx, &merged.settlement).await?;
        let granted = if merged.claims.is_empty() {
            Vec::new()
        } else {
            Self::claim(&mut tx, &merged.claims, merged.now, merged.settled_before).await?
        };
        tx.commit().await?;
        Ok(merged.split(ops, ids, granted))
    }

    /// Writes a group of operations (see [`batch`]) and answers each.
    async fn write_batch(pool: Pool<DB>, held: Held<DB>, ops: Vec<Op>) {
        if ops.len() > 1 {
            let grouped = held
                .run(&pool, async |conn| {
                    Self::in_one_transaction(conn, &ops).await
                })
                .await;
            match grouped {
                Ok(done) => {
                    for (op, d) in ops.into_iter().zip(done) {
                        op.answer(Ok::<_, sqlx::Error>(d));
                    }
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, ops = ops.len(), "group commit failed; writing each alone")
                }
            }
        }
        for op in ops {
            let result = held
                .run(&pool, async |conn| {
                    Self::in_one_transaction(conn, std::slice::from_ref(&op)).await
                })
                .await;
            op.answer(result.map(|mut d| d.remove(0)));
        }
    }

    /// A real, tiny write (one row rewritten), on the writer's held
    /// connection: succeeds only when the store can be written to.
    pub(super) async fn probe_write(&self) -> Result<(), sqlx::Error> {
        self.held
            .run(&self.write_pool, async |conn| {
                sqlx::query(
                    "UPDATE _sqlx_migrations SET success = success \
                     WHERE version = (SELECT MAX(version) FROM _sqlx_migrations)",
                )
                .execute(conn)
                .await
            })
            .await
            .map(|_| ())
    }

    /// On the writer's held connection: SQLite has one writer at a time.
    pub(super) async fn take_due_held(
        &self,
        now: Millis,
        lease_until: Millis,
        limit: i64,
        fair: &Fairness,
    ) -> Result<Vec<Entry>, sqlx::Error> {
        self.held
            .run(&self.write_pool, async |conn| {
                Self::take_due(conn, now, lease_until, limit, fair).await
            })
            .await
    }

    /// The statement of [`Self::take_due`]. Its limits are cast: SQLite's
    /// planner reads a bound `LIMIT` value, so a statement with `LIMIT ?` is
    /// prepared again at every execution (sqlx binds every parameter anew) —
    /// three quarters of an idle poll's CPU; through a cast it is not.
    pub(super) fn take_due_query(
        now: Millis,
        lease_until: Millis,
        limit: i64,
        fair: &Fairness,
    ) -> QueryBuilder<DB> {
        let mut q = QueryBuilder::<DB>::new("UPDATE outbox SET due_at = ");
        q.push_bind(lease_until);
        q.push(" WHERE id IN (SELECT id FROM outbox WHERE due_at <= ");
        q.push_bind(now);
        q.push(
            " AND id IN (SELECT id FROM (SELECT id, \
             ROW_NUMBER() OVER (PARTITION BY app_id ORDER BY due_at, id) AS n \
             FROM (SELECT id, app_id, due_at FROM outbox WHERE due_at <= ",
        );
        q.push_bind(now);
        if !fair.skip_apps.is_empty() {
            q.push(" AND app_id NOT IN (");
            let mut list = q.separated(", ");
            for app in &fair.skip_apps {
                list.push_bind(app.as_str());
            }
            q.push(")");
        }
        q.push(" ORDER BY due_at LIMIT CAST(");
        q.push_bind(fair.window);
        q.push(" AS BIGINT)) candidates) ranked WHERE n <= ");
        q.push_bind(fair.per_app);
        q.push(") ORDER BY due_at LIMIT CAST(");
        q.push_bind(limit);
        q.push(" AS BIGINT)");
        q.push(DB::SKIP_LOCKED);
        q.push(") RETURNING id, body, created_at, attempts, notification_id, app_id");
        q
    }

    /// Among the first `fair.window` due entries (of the apps not skipped),
    /// each app's first `fair.per_app` are ranked with a window function (in
    /// a subquery: PostgreSQL locks no rows at a level that has one), and the
    /// earliest `limit` of them leased.
    async fn take_due(
        conn: &mut DB::Connection,
        now: Millis,
        lease_until: Millis,
        limit: i64,
        fair: &Fairness,
    ) -> Result<Vec<Entry>, sqlx::Error> {
        let mut q = Self::take_due_query(now, lease_until, limit, fair);
        let rows = q.build().fetch_all(&mut *conn).await?;
        let mut entries = Vec::with_capacity(rows.len());
        let mut wanted: Vec<i64> = Vec::new();
        for row in rows {
            let notification_id: Option<i64> = row.try_get(4)?;
            if let Some(n) = notification_id {
                wanted.push(n);
            }
            entries.push((
                Entry {
                    id: row.try_get(0)?,
                    body: row.try_get(1)?,
                    created_at: row.try_get(2)?,
                    attempts: row.try_get(3)?,
                    app_id: row.try_get(5)?,
                },
                notification_id,
            ));
        }
        wanted.sort_unstable();
        wanted.dedup();
        let mut shared = std::collections::HashMap::new();
        for chunk in wanted.chunks(CHUNK) {
            let mut q =
                QueryBuilder::<DB>::new("SELECT id, body FROM outbox_notifications WHERE id");
            Self::push_ids(&mut q, chunk);
            for row in q.build().fetch_all(&mut *conn).await? {
                shared.insert(row.try_get::<i64, _>(0)?, row.try_get::<String, _>(1)?);
            }
        }
        Ok(entries
            .into_iter()
            .map(|(mut e, n)| {
                if let Some(n) = n {
                    // A missing notification leaves an unreadable body: the
                    // worker logs it and deletes the entry.
                    let notification = shared.get(&n).map_or("", String::as_str);
                    e.body = super::join_wire(notification, &e.body);
                }
                e
            })
            .collect())
    }

    /// On the writer's held connection: SQLite has one writer at a time.
    pub(super) async fn expire_held(&self, e: Expiry) -> Result<u64, sqlx::Error> {
        self.held
            .run(&self.write_pool, async |conn| Self::expire(conn, e).await)
            .await
    }

    async fn expire(conn: &mut DB::Connection, e: Expiry) -> Result<u64, sqlx::Error> {
        let claims = sqlx::query(DB::EXPIRE_CLAIMS)
            .bind(e.claims_before)
            .bind(e.batch)
            .execute(&mut *conn)
            .await?;
        let rejections = sqlx::query(EXPIRE_REJECTIONS)
            .bind(e.rejections_before)
            .bind(e.batch)
            .execute(&mut *conn)
            .await?;
        let notifications = sqlx::query(EXPIRE_NOTIFICATIONS)
            .bind(e.batch)
            .execute(&mut *conn)
            .await?;
        Ok(DB::rows_affected(&claims)
            + DB::rows_affected(&rejections)
            + DB::rows_affected(&notifications))
    }

    pub(super) async fn stats_read(&self) -> Result<Stats, sqlx::Error> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM outbox), (SELECT MIN(created_at) FROM outbox), \
             (SELECT COUNT(*) FROM rejections), (SELECT COUNT(*) FROM claims), \
             (SELECT CAST(COALESCE(SUM(LENGTH(body)), 0) AS BIGINT) FROM outbox) \
             + (SELECT CAST(COALESCE(SUM(LENGTH(body)), 0) AS BIGINT) FROM outbox_notifications)",
        )
        .fetch_one(&self.read_pool)
        .await?;
        Ok(Stats {
            outbox: row.try_get(0)?,
            oldest: row.try_get(1)?,
            rejections: row.try_get(2)?,
            claims: row.try_get(3)?,
            outbox_bytes: row.try_get(4)?,
        })
    }

    pub(super) async fn usage_read(&self) -> Result<Usage, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT app_id, COUNT(*), CAST(COALESCE(SUM(LENGTH(body)), 0) AS BIGINT) \
             FROM outbox GROUP BY app_id",
        )
        .fetch_all(&self.read_pool)
        .await?;
        let mut apps = Vec::with_capacity(rows.len());
        for row in rows {
            apps.push(AppUsage {
                app_id: row.try_get(0)?,
                entries: row.try_get(1)?,
                bytes: row.try_get(2)?,
            });
        }
        let shared = sqlx::query(
            "SELECT CAST(COALESCE(SUM(LENGTH(body)), 0) AS BIGINT) FROM outbox_notifications",
        )
        .fetch_one(&self.read_pool)
        .await?;
        Ok(Usage {
            apps,
            shared_bytes: shared.try_get(0)?,
        })
    }

    pub(super) async fn app_stats_read(&self) -> Result<Vec<AppStats>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT app_id, CAST(SUM(o) AS BIGINT), MIN(oldest), CAST(SUM(r) AS BIGINT), \
             CAST(SUM(c) AS BIGINT) FROM (\
             SELECT app_id, COUNT(*) AS o, MIN(created_at) AS oldest, 0 AS r, 0 AS c \
             FROM outbox GROUP BY app_id \
             UNION ALL SELECT app_id, 0, NULL, COUNT(*), 0 FROM rejections GROUP BY app_id \
             UNION ALL SELECT app_id, 0, NULL, 0, COUNT(*) FROM claims GROUP BY app_id\
             ) t GROUP BY app_id ORDER BY app_id",
        )
        .fetch_all(&self.read_pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(AppStats {
                app_id: row.try_get(0)?,
                outbox: row.try_get(1)?,
                oldest: row.try_get(2)?,
                rejections: row.try_get(3)?,
                claims: row.try_get(4)?,
            });
        }
        Ok(out)
    }

    pub(super) async fn outbox_list_read(
        &self,
        app_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id, app_id, pushkey, created_at, due_at, attempts, last_error FROM outbox \
             WHERE ($1 IS NULL OR app_id = $1) ORDER BY created_at, id LIMIT $2",
        )
        .bind(app_id)
        .bind(limit)
        .fetch_all(&self.read_pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(OutboxRow {
                id: row.try_get(0)?,
                app_id: row.try_get(1)?,
                pushkey: row.try_get(2)?,
                created_at: row.try_get(3)?,
                due_at: row.try_get(4)?,
                attempts: row.try_get(5)?,
                last_error: row.try_get(6)?,
            });
        }
        Ok(out)
    }

    /// `UPDATE outbox SET due_at = now` (retry) or `DELETE` (drop) of a
    /// selection, on the writer's held connection.
    pub(super) async fn outbox_change(
        &self,
        which: &Selection,
        retry_at: Option<Millis>,
    ) -> Result<u64, sqlx::Error> {
        self.held
            .run(&self.write_pool, async |conn| {
                Self::outbox_change_on(conn, which, retry_at).await
            })
            .await
    }

    async fn outbox_change_on(
        conn: &mut DB::Connection,
        which: &Selection,
        retry_at: Option<Millis>,
    ) -> Result<u64, sqlx::Error> {
        let head = || {
            let mut q = match retry_at {
                Some(at) => {
                    let mut q = QueryBuilder::<DB>::new("UPDATE outbox SET due_at = ");
                    q.push_bind(at);
                    q
                }
                None => QueryBuilder::<DB>::new("DELETE FROM outbox"),
            };
            q.push(" WHERE ");
            q
        };
        match which {
            Selection::App(app) => {
                let mut q = head();
                q.push("app_id = ");
                q.push_bind(app.as_str());
                Ok(DB::rows_affected(&q.build().execute(&mut *conn).await?))
            }
            Selection::Ids(ids) => {
                let mut n = 0;
                for chunk in ids.chunks(CHUNK) {
                    let mut q = head();
                    q.push("id");
                    Self::push_ids(&mut q, chunk);
                    n += DB::rows_affected(&q.build().execute(&mut *conn).await?);
                }
                Ok(n)
            }
        }
    }

    pub(super) async fn rejections_list_read(
        &self,
        app_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Rejection>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT app_id, pushkey, rejected_at, reason FROM rejections \
             WHERE ($1 IS NULL OR app_id = $1) ORDER BY rejected_at DESC, app_id, pushkey LIMIT $2",
        )
        .bind(app_id)
        .bind(limit)
        .fetch_all(&self.read_pool)
        .await?;
        rows.iter().map(Self::rejection_from).collect()
    }

    pub(super) async fn forget_rejection_held(
        &self,
        device: &DeviceKey,
    ) -> Result<u64, sqlx::Error> {
        self.held
            .run(&self.write_pool, async |conn| {
                let done = sqlx::query("DELETE FROM rejections WHERE app_id = $1 AND pushkey = $2")
                    .bind(device.app_id.as_str())
                    .bind(device.pushkey.as_str())
                    .execute(conn)
                    .await?;
                Ok(DB::rows_affected(&done))
            })
            .await
    }

    /// In batches of 10,000 rows, each its own short transaction, so that
    /// running gateways wait for the writer no longer than for housekeeping.
    pub(super) async fn purge_claims_held(&self, before: Millis) -> Result<u64, sqlx::Error> {
        let mut total = 0;
        loop {
            let n = self
                .held
                .run(&self.write_pool, async |conn| {
                    let done = sqlx::query(DB::PURGE_CLAIMS)
                        .bind(before)
                        .bind(PURGE_BATCH as i64)
                        .execute(conn)
                        .await?;
                    Ok(DB::rows_affected(&done))
                })
                .await?;
            total += n;
            if n < PURGE_BATCH {
                return Ok(total);
            }
        }
    }
}
