//! The schema, as numbered migrations applied in order at start-up.
//!
//! Both backends get the same tables, columns and indexes; only the spelling
//! of an auto-incrementing id differs. A migration, once released, is never
//! edited: a change is a new migration.

pub struct Migration {
    pub version: i64,
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

/// Tables:
/// - `rejections`: pushkeys a push service declared dead (answered as rejected without asking again);
/// - `claims`: one row per (device, event) being sent or sent, for de-duplication;
///   `settled = 0` means "being sent, lease until `until_ms`", `settled = 1` means "done at `until_ms`";
/// - `outbox`: pushes still to deliver, leased to a worker by moving `due_at` forward;
/// - `outbox_notifications`: a request's notification without its devices, shared by its
///   outbox entries (`outbox.notification_id`), deleted once no entry refers to it.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sqlite: concat!(
            "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, ",
            outbox_columns!(),
            ");",
            common_tables!()
        ),
        postgres: concat!(
            "CREATE TABLE outbox (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, ",
            outbox_columns!(),
            ");",
            common_tables!()
        ),
    },
    // Version 2: only the push service's token-dead answers are remembered now.
    // Rows that earlier versions wrote for the request's own data (a bad
    // default_payload, an incomplete subscription, a refused endpoint) or for a
    // configuration matter (SENDER_ID_MISMATCH, TopicDisallowed) would keep
    // answering `rejected` for up to 30 days: dropped. Web Push rows are now
    // keyed by endpoint, so the old ones (keyed by p256dh) go too.
    Migration {
        version: 2,
        sqlite: FORGET_WRONG_REJECTIONS,
        postgres: FORGET_WRONG_REJECTIONS,
    },
    // Version 3: a request's notification is stored once for all its queued
    // devices (`outbox.body` is then only the device); rows of earlier
    // versions keep their whole body and a NULL `notification_id`.
    Migration {
        version: 3,
        sqlite: "CREATE TABLE outbox_notifications (id INTEGER PRIMARY KEY AUTOINCREMENT, \
                 body TEXT NOT NULL, created_at BIGINT NOT NULL); \
                 ALTER TABLE outbox ADD COLUMN notification_id BIGINT; \
                 CREATE INDEX outbox_notification ON outbox (notification_id);",
        postgres: "CREATE TABLE outbox_notifications (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
                   body TEXT NOT NULL, created_at BIGINT NOT NULL); \
                   ALTER TABLE outbox ADD COLUMN notification_id BIGINT; \
                   CREATE INDEX outbox_notification ON outbox (notification_id);",
    },
];

const FORGET_WRONG_REJECTIONS: &str = "DELETE FROM rejections WHERE NOT (\
     reason LIKE 'APNs answered 410%' \
     OR reason LIKE 'APNs answered 400 BadDeviceToken%' \
     OR reason LIKE 'APNs answered 400 DeviceTokenNotForTopic%' \
     OR reason LIKE 'FCM answered 404%' \
     OR reason LIKE 'FCM answered 400%' \
     OR (reason LIKE 'FCM answered %' AND reason LIKE '%UNREGISTERED%'))";

macro_rules! outbox_columns {
    () => {
        "app_id TEXT NOT NULL, pushkey TEXT NOT NULL, body TEXT NOT NULL, \
         created_at BIGINT NOT NULL, due_at BIGINT NOT NULL, attempts BIGINT NOT NULL, \
         last_error TEXT"
    };
}

macro_rules! common_tables {
    () => {
        "CREATE INDEX outbox_due ON outbox (due_at);
         CREATE TABLE rejections (app_id TEXT NOT NULL, pushkey TEXT NOT NULL,
             rejected_at BIGINT NOT NULL, reason TEXT NOT NULL, PRIMARY KEY (app_id, pushkey));
         CREATE INDEX rejections_rejected_at ON rejections (rejected_at);
         CREATE TABLE claims (app_id TEXT NOT NULL, pushkey TEXT NOT NULL, event_id TEXT NOT NULL,
             settled INTEGER NOT NULL, until_ms BIGINT NOT NULL,
             PRIMARY KEY (app_id, pushkey, event_id));
         CREATE INDEX claims_until ON claims (until_ms);"
    };
}

use {common_tables, outbox_columns};

/// Expands to `migrate(pool)` for one backend: creates the version table, then
/// applies every newer migration in its own transaction. `$lock` runs first in
/// each transaction (PostgreSQL takes an advisory lock so that gateways starting
/// together do not race; SQLite's writer lock already serialises them).
macro_rules! migrate_fn {
    ($db:ty, $field:ident, $lock:literal) => {
        pub async fn migrate(pool: &sqlx::Pool<$db>) -> Result<(), $crate::store::StoreError> {
            use sqlx::Row;
            use $crate::store::migrations::MIGRATIONS;
            use $crate::store::StoreError;
            sqlx::raw_sql("CREATE TABLE IF NOT EXISTS pushgate_schema (version BIGINT NOT NULL)")
                .execute(pool)
                .await?;
            for m in MIGRATIONS {
                let fail = |source| StoreError::Migrate {
                    version: m.version,
                    source,
                };
                let mut tx = pool.begin().await.map_err(fail)?;
                if !$lock.is_empty() {
                    sqlx::raw_sql($lock).execute(&mut *tx).await.map_err(fail)?;
                }
                let current: i64 =
                    sqlx::query("SELECT COALESCE(MAX(version), 0) FROM pushgate_schema")
                        .fetch_one(&mut *tx)
                        .await
                        .and_then(|row| row.try_get(0))
                        .map_err(fail)?;
                if current >= m.version {
                    continue;
                }
                sqlx::raw_sql(m.$field)
                    .execute(&mut *tx)
                    .await
                    .map_err(fail)?;
                sqlx::query("INSERT INTO pushgate_schema (version) VALUES ($1)")
                    .bind(m.version)
                    .execute(&mut *tx)
                    .await
                    .map_err(fail)?;
                tx.commit().await.map_err(fail)?;
                tracing::info!(version = m.version, "store schema migrated");
            }
            Ok(())
        }
    };
}

pub(crate) use migrate_fn;
