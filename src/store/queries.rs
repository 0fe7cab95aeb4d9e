//! The store's queries, written once and compiled for both backends.
//!
//! The SQL is the common subset of SQLite (3.35+) and PostgreSQL: row values,
//! `INSERT … ON CONFLICT … DO UPDATE … WHERE`, `RETURNING`. `QueryBuilder`
//! writes each backend's placeholders. Lists are sent in chunks so that a
//! request with many devices stays under both backends' parameter limits.

/// Keys per statement (3 parameters each, far below SQLite's 32766 and PostgreSQL's 65535).
pub const CHUNK: usize = 500;

/// Expands to the query functions for one sqlx database type. `$skip_locked` is
/// appended to the outbox claim (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so that
/// concurrent gateways never take the same entry; SQLite serialises writers).
macro_rules! queries {
    ($db:ty, $skip_locked:literal) => {
        use sqlx::{Pool, QueryBuilder, Row};

        use $crate::store::batch::{Done, Op};
        use $crate::store::queries::CHUNK;
        use $crate::store::{
            ClaimKey, ClaimState, DeviceKey, Entry, Expiry, Millis, Rejection, Settlement, Stats,
        };

        pub async fn ping(pool: &Pool<$db>) -> Result<(), sqlx::Error> {
            sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
        }


        /// The connection a grouping task (writer or reader) keeps between
        /// groups: taking one from the pool for each group would cost a ping
        /// on every return. Dropped after an error, taken again when next needed.
        pub type Held = std::sync::Arc<tokio::sync::Mutex<Option<sqlx::pool::PoolConnection<$db>>>>;

        /// Runs `$body` with `$conn` bound to the held connection (taken from
        /// `$pool` if there is none); drops the connection if `$body` fails.
        macro_rules! on_held {
            ($pool:expr, $held:expr, |$conn:ident| $body:expr) => {{
                let mut guard = $held.lock().await;
                let conn = match guard.take() {
                    Some(c) => Ok(c),
                    None => $pool.acquire().await,
                };
                match conn {
                    Err(e) => Err(e),
                    Ok(mut $conn) => {
                        let result = $body.await;
                        // Kept only while it works.
                        if result.is_ok() {
                            *guard = Some($conn);
                        }
                        result
                    }
                }
            }};
        }

        /// Starts the group-commit writer on `write_pool` and the grouped
        /// rejection reader on `read_pool`; returns the writer's held connection
        /// (outbox takes and expiry share it), the writer and the reader.
        pub fn start_grouping(
            write_pool: Pool<$db>,
            read_pool: Pool<$db>,
        ) -> (Held, $crate::store::batch::Writer, $crate::store::batch::Reader) {
            let held = Held::default();
            let writer_held = held.clone();
            let writer = $crate::store::batch::Writer::start(move |ops| {
                write_batch(write_pool.clone(), writer_held.clone(), ops)
            });
            let reader_held = Held::default();
            let reader = $crate::store::batch::Reader::start(move |devices| {
                rejections_held(read_pool.clone(), reader_held.clone(), devices)
            });
            (held, writer, reader)
        }

        /// Remembered rejections among `devices`, on the reader's held connection.
        pub async fn rejections_held(
            pool: Pool<$db>,
            held: Held,
            devices: Vec<DeviceKey>,
        ) -> Result<Vec<Rejection>, sqlx::Error> {
            on_held!(pool, held, |conn| rejections(&mut conn, &devices))
        }

        pub async fn rejections(
            conn: &mut <$db as sqlx::Database>::Connection,
            devices: &[DeviceKey],
        ) -> Result<Vec<Rejection>, sqlx::Error> {
            let mut out = Vec::new();
            for chunk in devices.chunks(CHUNK) {
                let mut q = QueryBuilder::<$db>::new(
                    "SELECT app_id, pushkey, rejected_at, reason FROM rejections \
                     WHERE (app_id, pushkey) IN (",
                );
                q.push_values(chunk, |mut b, d| {
                    b.push_bind(d.app_id.as_str()).push_bind(d.pushkey.as_str());
                });
                q.push(")");
                for row in q.build().fetch_all(&mut *conn).await? {
                    out.push(Rejection {
                        app_id: row.try_get(0)?,
                        pushkey: row.try_get(1)?,
                        rejected_at: row.try_get(2)?,
                        reason: row.try_get(3)?,
                    });
                }
            }
            Ok(out)
        }

        /// Claims `keys` (each with its lease end); returns the keys granted.
        pub async fn claim(
            conn: &mut <$db as sqlx::Database>::Connection,
            keys: &[(&ClaimKey, Millis)],
            now: Millis,
            settled_before: Millis,
        ) -> Result<Vec<ClaimKey>, sqlx::Error> {
            let mut granted = Vec::new();
            for chunk in keys.chunks(CHUNK) {
                let mut q = QueryBuilder::<$db>::new(
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

        pub async fn claim_states(
            pool: &Pool<$db>,
            keys: &[ClaimKey],
        ) -> Result<Vec<(ClaimKey, ClaimState)>, sqlx::Error> {
            let mut out = Vec::new();
            for chunk in keys.chunks(CHUNK) {
                let mut q = QueryBuilder::<$db>::new(
                    "SELECT app_id, pushkey, event_id, settled, until_ms FROM claims \
                     WHERE (app_id, pushkey, event_id) IN (",
                );
                q.push_values(chunk, |mut b, k| {
                    b.push_bind(k.app_id.as_str())
                        .push_bind(k.pushkey.as_str())
                        .push_bind(k.event_id.as_str());
                });
                q.push(")");
                for row in q.build().fetch_all(pool).await? {
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

        /// The statements of a settlement, inside the caller's transaction.
        pub async fn settle(
            tx: &mut <$db as sqlx::Database>::Connection,
            s: &Settlement,
        ) -> Result<Vec<i64>, sqlx::Error> {
            // Claims are named by their key in a row-value list: `… IN ((a, p, e), …)`.
            let in_keys = |mut q: QueryBuilder<$db>, chunk: &[ClaimKey]| {
                q.push(" (app_id, pushkey, event_id) IN (");
                q.push_values(chunk.to_vec(), |mut b, k| {
                    b.push_bind(k.app_id).push_bind(k.pushkey).push_bind(k.event_id);
                });
                q.push(")");
                q
            };
            for chunk in s.settle_claims.chunks(CHUNK) {
                let mut q = QueryBuilder::<$db>::new("UPDATE claims SET settled = 1, until_ms = ");
                q.push_bind(s.now);
                q.push(" WHERE");
                in_keys(q, chunk).build().execute(&mut *tx).await?;
            }
            for chunk in s.release_claims.chunks(CHUNK) {
                let q = QueryBuilder::<$db>::new("DELETE FROM claims WHERE settled = 0 AND");
                in_keys(q, chunk).build().execute(&mut *tx).await?;
            }
            for chunk in s.forget.chunks(CHUNK) {
                let mut q =
                    QueryBuilder::<$db>::new("DELETE FROM rejections WHERE (app_id, pushkey) IN (");
                q.push_values(chunk, |mut b, d| {
                    b.push_bind(d.app_id.as_str()).push_bind(d.pushkey.as_str());
                });
                q.push(")");
                q.build().execute(&mut *tx).await?;
            }
            // One row per key: PostgreSQL refuses an upsert that touches a row twice.
            let mut remember = s.remember.clone();
            remember.sort_by(|a, b| (&a.app_id, &a.pushkey).cmp(&(&b.app_id, &b.pushkey)));
            remember.dedup_by(|a, b| a.app_id == b.app_id && a.pushkey == b.pushkey);
            for chunk in remember.chunks(CHUNK) {
                let mut q = QueryBuilder::<$db>::new(
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
                q.build().execute(&mut *tx).await?;
            }
            let mut ids = Vec::with_capacity(s.enqueue.len());
            // Each shared notification once (entries of one request share the same Arc).
            let mut shared: Vec<(std::sync::Arc<str>, i64)> = Vec::new();
            // One statement per entry: the id of each must be known, and RETURNING
            // does not promise the order of a multi-row insert.
            for e in &s.enqueue {
                let notification_id = match &e.shared {
                    None => None,
                    Some(n) => match shared.iter().find(|(m, _)| std::sync::Arc::ptr_eq(m, n)) {
                        Some((_, id)) => Some(*id),
                        None => {
                            let row = sqlx::query(
                                "INSERT INTO outbox_notifications (body, created_at) VALUES ($1, $2) \
                                 RETURNING id",
                            )
                            .bind(&**n)
                            .bind(e.created_at)
                            .fetch_one(&mut *tx)
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
                .fetch_one(&mut *tx)
                .await?;
                ids.push(row.try_get::<i64, _>(0)?);
            }
            for chunk in s.delete.chunks(CHUNK) {
                let mut q = QueryBuilder::<$db>::new("DELETE FROM outbox WHERE id IN (");
                let mut list = q.separated(", ");
                for id in chunk {
                    list.push_bind(*id);
                }
                q.push(")");
                q.build().execute(&mut *tx).await?;
            }
            for (id, due_at, attempts, error) in &s.reschedule {
                sqlx::query(
                    "UPDATE outbox SET due_at = $1, attempts = $2, last_error = $3 WHERE id = $4",
                )
                .bind(*due_at)
                .bind(*attempts)
                .bind(error.as_str())
                .bind(*id)
                .execute(&mut *tx)
                .await?;
            }
            Ok(ids)
        }

        /// A group of operations in one transaction and (up to [`CHUNK`]
        /// keys) two statements: settlements first, then claims.
        async fn in_one_transaction(
            conn: &mut <$db as sqlx::Database>::Connection,
            ops: &[Op],
        ) -> Result<Vec<Done>, sqlx::Error> {
            let merged = $crate::store::batch::merge(ops);
            let mut tx = sqlx::Connection::begin(conn).await?;
            let ids = settle(&mut *tx, &merged.settlement).await?;
            let granted = if merged.claims.is_empty() {
                Vec::new()
            } else {
                claim(&mut *tx, &merged.claims, merged.now, merged.settled_before).await?
            };
            tx.commit().await?;
            Ok(merged.split(ops, ids, granted))
        }

        /// Writes a group of operations (see [`crate::store::batch`]) and answers each.
        pub async fn write_batch(pool: Pool<$db>, held: Held, ops: Vec<Op>) {
            if ops.len() > 1 {
                let grouped: Result<_, sqlx::Error> =
                    on_held!(pool, held, |conn| in_one_transaction(&mut conn, &ops));
                match grouped {
                    Ok(done) => {
                        for (op, d) in ops.into_iter().zip(done) {
                            op.answer(Ok(d));
                        }
                        return;
                    }
                    Err(e) => tracing::debug!(error = %e, ops = ops.len(), "group commit failed; writing each alone"),
                }
            }
            for op in ops {
                let result: Result<_, sqlx::Error> = on_held!(pool, held, |conn| {
                    in_one_transaction(&mut conn, std::slice::from_ref(&op))
                });
                op.answer(result.map(|mut d| d.remove(0)));
            }
        }

        /// A real, tiny write (one row rewritten), on the writer's held
        /// connection: succeeds only when the store can be written to.
        pub async fn probe_write(pool: &Pool<$db>, held: &Held) -> Result<(), sqlx::Error> {
            on_held!(pool, held, |conn| sqlx::query(
                "UPDATE pushgate_schema SET version = version \
                 WHERE version = (SELECT MAX(version) FROM pushgate_schema)"
            )
            .execute(&mut *conn))
            .map(|_| ())
        }

        /// On the writer's held connection: SQLite has one writer at a time.
        pub async fn take_due(
            pool: &Pool<$db>,
            held: &Held,
            now: Millis,
            lease_until: Millis,
            limit: i64,
            fair: &$crate::store::Fairness,
        ) -> Result<Vec<Entry>, sqlx::Error> {
            on_held!(pool, held, |conn| take_due_on(&mut conn, now, lease_until, limit, fair))
        }

        /// Among the first `fair.window` due entries (of the apps not
        /// skipped), each app's first `fair.per_app` are ranked with a window
        /// function (in a subquery: PostgreSQL locks no rows at a level that
        /// has one), and the earliest `limit` of them leased.
        async fn take_due_on(
            conn: &mut <$db as sqlx::Database>::Connection,
            now: Millis,
            lease_until: Millis,
            limit: i64,
            fair: &$crate::store::Fairness,
        ) -> Result<Vec<Entry>, sqlx::Error> {
            let mut q = QueryBuilder::<$db>::new("UPDATE outbox SET due_at = ");
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
            q.push(" ORDER BY due_at LIMIT ");
            q.push_bind(fair.window);
            q.push(") candidates) ranked WHERE n <= ");
            q.push_bind(fair.per_app);
            q.push(") ORDER BY due_at LIMIT ");
            q.push_bind(limit);
            q.push(concat!(
                $skip_locked,
                ") RETURNING id, body, created_at, attempts, notification_id, app_id"
            ));
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
                    QueryBuilder::<$db>::new("SELECT id, body FROM outbox_notifications WHERE id IN (");
                let mut list = q.separated(", ");
                for id in chunk {
                    list.push_bind(*id);
                }
                q.push(")");
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
                        e.body = $crate::store::join_wire(notification, &e.body);
                    }
                    e
                })
                .collect())
        }

        /// On the writer's held connection: SQLite has one writer at a time.
        pub async fn expire(pool: &Pool<$db>, held: &Held, e: Expiry) -> Result<u64, sqlx::Error> {
            on_held!(pool, held, |conn| expire_on(&mut conn, e))
        }

        async fn expire_on(
            conn: &mut <$db as sqlx::Database>::Connection,
            e: Expiry,
        ) -> Result<u64, sqlx::Error> {
            let claims = sqlx::query(
                "DELETE FROM claims WHERE (app_id, pushkey, event_id) IN \
                 (SELECT app_id, pushkey, event_id FROM claims WHERE until_ms < $1 LIMIT $2)",
            )
            .bind(e.claims_before)
            .bind(e.batch)
            .execute(&mut *conn)
            .await?;
            let rejections = sqlx::query(
                "DELETE FROM rejections WHERE (app_id, pushkey) IN \
                 (SELECT app_id, pushkey FROM rejections WHERE rejected_at < $1 LIMIT $2)",
            )
            .bind(e.rejections_before)
            .bind(e.batch)
            .execute(&mut *conn)
            .await?;
            let notifications = sqlx::query(
                "DELETE FROM outbox_notifications WHERE id IN \
                 (SELECT id FROM outbox_notifications n WHERE NOT EXISTS \
                  (SELECT 1 FROM outbox o WHERE o.notification_id = n.id) LIMIT $1)",
            )
            .bind(e.batch)
            .execute(&mut *conn)
            .await?;
            Ok(claims.rows_affected() + rejections.rows_affected() + notifications.rows_affected())
        }

        pub async fn app_stats(
            pool: &Pool<$db>,
        ) -> Result<Vec<$crate::store::AppStats>, sqlx::Error> {
            let rows = sqlx::query(
                "SELECT app_id, CAST(SUM(o) AS BIGINT), MIN(oldest), CAST(SUM(r) AS BIGINT), \
                 CAST(SUM(c) AS BIGINT) FROM (\
                 SELECT app_id, COUNT(*) AS o, MIN(created_at) AS oldest, 0 AS r, 0 AS c \
                 FROM outbox GROUP BY app_id \
                 UNION ALL SELECT app_id, 0, NULL, COUNT(*), 0 FROM rejections GROUP BY app_id \
                 UNION ALL SELECT app_id, 0, NULL, 0, COUNT(*) FROM claims GROUP BY app_id\
                 ) t GROUP BY app_id ORDER BY app_id",
            )
            .fetch_all(pool)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push($crate::store::AppStats {
                    app_id: row.try_get(0)?,
                    outbox: row.try_get(1)?,
                    oldest: row.try_get(2)?,
                    rejections: row.try_get(3)?,
                    claims: row.try_get(4)?,
                });
            }
            Ok(out)
        }

        pub async fn outbox_list(
            pool: &Pool<$db>,
            app_id: Option<&str>,
            limit: i64,
        ) -> Result<Vec<$crate::store::OutboxRow>, sqlx::Error> {
            let rows = sqlx::query(
                "SELECT id, app_id, pushkey, created_at, due_at, attempts, last_error FROM outbox \
                 WHERE ($1 IS NULL OR app_id = $1) ORDER BY created_at, id LIMIT $2",
            )
            .bind(app_id)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push($crate::store::OutboxRow {
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
        pub async fn outbox_change(
            pool: &Pool<$db>,
            held: &Held,
            which: &$crate::store::Selection,
            retry_at: Option<Millis>,
        ) -> Result<u64, sqlx::Error> {
            on_held!(pool, held, |conn| outbox_change_on(&mut conn, which, retry_at))
        }

        async fn outbox_change_on(
            conn: &mut <$db as sqlx::Database>::Connection,
            which: &$crate::store::Selection,
            retry_at: Option<Millis>,
        ) -> Result<u64, sqlx::Error> {
            let head = || {
                let mut q = match retry_at {
                    Some(at) => {
                        let mut q = QueryBuilder::<$db>::new("UPDATE outbox SET due_at = ");
                        q.push_bind(at);
                        q
                    }
                    None => QueryBuilder::<$db>::new("DELETE FROM outbox"),
                };
                q.push(" WHERE ");
                q
            };
            match which {
                $crate::store::Selection::App(app) => {
                    let mut q = head();
                    q.push("app_id = ");
                    q.push_bind(app.as_str());
                    Ok(q.build().execute(&mut *conn).await?.rows_affected())
                }
                $crate::store::Selection::Ids(ids) => {
                    let mut n = 0;
                    for chunk in ids.chunks(CHUNK) {
                        let mut q = head();
                        q.push("id IN (");
                        let mut list = q.separated(", ");
                        for id in chunk {
                            list.push_bind(*id);
                        }
                        q.push(")");
                        n += q.build().execute(&mut *conn).await?.rows_affected();
                    }
                    Ok(n)
                }
            }
        }

        pub async fn rejections_list(
            pool: &Pool<$db>,
            app_id: Option<&str>,
            limit: i64,
        ) -> Result<Vec<Rejection>, sqlx::Error> {
            let rows = sqlx::query(
                "SELECT app_id, pushkey, rejected_at, reason FROM rejections \
                 WHERE ($1 IS NULL OR app_id = $1) ORDER BY rejected_at DESC, app_id, pushkey LIMIT $2",
            )
            .bind(app_id)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(Rejection {
                    app_id: row.try_get(0)?,
                    pushkey: row.try_get(1)?,
                    rejected_at: row.try_get(2)?,
                    reason: row.try_get(3)?,
                });
            }
            Ok(out)
        }

        pub async fn forget_rejection(
            pool: &Pool<$db>,
            held: &Held,
            device: &DeviceKey,
        ) -> Result<u64, sqlx::Error> {
            on_held!(pool, held, |conn| async {
                Ok::<_, sqlx::Error>(
                    sqlx::query("DELETE FROM rejections WHERE app_id = $1 AND pushkey = $2")
                        .bind(device.app_id.as_str())
                        .bind(device.pushkey.as_str())
                        .execute(&mut *conn)
                        .await?
                        .rows_affected(),
                )
            })
        }

        /// In batches of 10,000 rows, each its own short transaction, so that
        /// running gateways wait for the writer no longer than for housekeeping.
        pub async fn purge_claims(
            pool: &Pool<$db>,
            held: &Held,
            before: Millis,
        ) -> Result<u64, sqlx::Error> {
            let mut total = 0;
            loop {
                let n = on_held!(pool, held, |conn| async {
                    Ok::<_, sqlx::Error>(
                        sqlx::query(
                            "DELETE FROM claims WHERE (app_id, pushkey, event_id) IN \
                             (SELECT app_id, pushkey, event_id FROM claims WHERE until_ms < $1 LIMIT 10000)",
                        )
                        .bind(before)
                        .execute(&mut *conn)
                        .await?
                        .rows_affected(),
                    )
                })?;
                total += n;
                if n < 10000 {
                    return Ok(total);
                }
            }
        }

        pub async fn stats(pool: &Pool<$db>) -> Result<Stats, sqlx::Error> {
            let row = sqlx::query(
                "SELECT (SELECT COUNT(*) FROM outbox), (SELECT MIN(created_at) FROM outbox), \
                 (SELECT COUNT(*) FROM rejections), (SELECT COUNT(*) FROM claims), \
                 (SELECT CAST(COALESCE(SUM(LENGTH(body)), 0) AS BIGINT) FROM outbox) \
                 + (SELECT CAST(COALESCE(SUM(LENGTH(body)), 0) AS BIGINT) FROM outbox_notifications)",
            )
            .fetch_one(pool)
            .await?;
            Ok(Stats {
                outbox: row.try_get(0)?,
                oldest: row.try_get(1)?,
                rejections: row.try_get(2)?,
                claims: row.try_get(3)?,
                outbox_bytes: row.try_get(4)?,
            })
        }

        pub async fn usage(pool: &Pool<$db>) -> Result<$crate::store::Usage, sqlx::Error> {
            let rows = sqlx::query(
                "SELECT app_id, COUNT(*), CAST(COALESCE(SUM(LENGTH(body)), 0) AS BIGINT) \
                 FROM outbox GROUP BY app_id",
            )
            .fetch_all(pool)
            .await?;
            let mut apps = Vec::with_capacity(rows.len());
            for row in rows {
                apps.push($crate::store::AppUsage {
                    app_id: row.try_get(0)?,
                    entries: row.try_get(1)?,
                    bytes: row.try_get(2)?,
                });
            }
            let shared = sqlx::query(
                "SELECT CAST(COALESCE(SUM(LENGTH(body)), 0) AS BIGINT) FROM outbox_notifications",
            )
            .fetch_one(pool)
            .await?;
            Ok($crate::store::Usage {
                apps,
                shared_bytes: shared.try_get(0)?,
            })
        }
    };
}

pub(crate) use queries;

/// Implements [`Store`] for a backend type whose module `q` holds the shared
/// queries; `$read`/`$write` name the pools used for reads and for writes, and
/// `held` is the writer's connection (see `Held`); the type's `writer` and
/// `reader` fields are its group-commit
/// [`crate::store::batch::Writer`] and grouped-lookup [`crate::store::batch::Reader`].
macro_rules! impl_store {
    ($ty:ty, $name:literal, read = $read:ident, write = $write:ident) => {
        impl $crate::store::Store for $ty {
            fn backend(&self) -> &'static str {
                $name
            }

            fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
                async move {
                    if self.writer.last_write().is_err() {
                        // The last write failed: only a write can tell whether
                        // writes work again (an idle gateway makes none).
                        let probe = q::probe_write(&self.$write, &self.held).await;
                        // Noted either way; still failing is told as a failing write.
                        let _ = self.writer.noted(probe.map_err(StoreError::from));
                        self.writer.last_write()?;
                    }
                    Ok(q::ping(&self.$read).await?)
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
                async move { Ok(q::claim_states(&self.$read, keys).await?) }.boxed()
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
                let all = $crate::store::Fairness {
                    per_app: limit,
                    window: limit,
                    skip_apps: Vec::new(),
                };
                let (pool, held) = (&self.$write, &self.held);
                async move { Ok(q::take_due(pool, held, now, lease_until, limit, &all).await?) }
                    .boxed()
            }

            fn take_due_fair<'a>(
                &'a self,
                now: Millis,
                lease_until: Millis,
                limit: i64,
                fair: &'a $crate::store::Fairness,
            ) -> BoxFuture<'a, Result<Vec<Entry>, StoreError>> {
                let (pool, held) = (&self.$write, &self.held);
                async move { Ok(q::take_due(pool, held, now, lease_until, limit, fair).await?) }
                    .boxed()
            }

            fn expire(&self, e: Expiry) -> BoxFuture<'_, Result<u64, StoreError>> {
                async move { Ok(q::expire(&self.$write, &self.held, e).await?) }.boxed()
            }

            fn stats(&self) -> BoxFuture<'_, Result<Stats, StoreError>> {
                async move { Ok(q::stats(&self.$read).await?) }.boxed()
            }

            fn usage(&self) -> BoxFuture<'_, Result<$crate::store::Usage, StoreError>> {
                async move { Ok(q::usage(&self.$read).await?) }.boxed()
            }

            fn app_stats(&self) -> BoxFuture<'_, Result<Vec<$crate::store::AppStats>, StoreError>> {
                async move { Ok(q::app_stats(&self.$read).await?) }.boxed()
            }

            fn outbox_list<'a>(
                &'a self,
                app_id: Option<&'a str>,
                limit: i64,
            ) -> BoxFuture<'a, Result<Vec<$crate::store::OutboxRow>, StoreError>> {
                async move { Ok(q::outbox_list(&self.$read, app_id, limit).await?) }.boxed()
            }

            fn outbox_retry<'a>(
                &'a self,
                which: &'a $crate::store::Selection,
                now: Millis,
            ) -> BoxFuture<'a, Result<u64, StoreError>> {
                async move {
                            Ok(q::outbox_change(&self.$write, &self.held, which, Some(now)).await?)
                        }
                        .boxed()
            }

            fn outbox_drop<'a>(
                &'a self,
                which: &'a $crate::store::Selection,
            ) -> BoxFuture<'a, Result<u64, StoreError>> {
                async move { Ok(q::outbox_change(&self.$write, &self.held, which, None).await?) }
                    .boxed()
            }

            fn rejections_list<'a>(
                &'a self,
                app_id: Option<&'a str>,
                limit: i64,
            ) -> BoxFuture<'a, Result<Vec<Rejection>, StoreError>> {
                async move { Ok(q::rejections_list(&self.$read, app_id, limit).await?) }.boxed()
            }

            fn forget_rejection<'a>(
                &'a self,
                device: &'a DeviceKey,
            ) -> BoxFuture<'a, Result<u64, StoreError>> {
                async move { Ok(q::forget_rejection(&self.$write, &self.held, device).await?) }
                    .boxed()
            }

            fn purge_claims(&self, before: Millis) -> BoxFuture<'_, Result<u64, StoreError>> {
                async move { Ok(q::purge_claims(&self.$write, &self.held, before).await?) }.boxed()
            }
        }
    };
}

pub(crate) use impl_store;
