//! What differs between the two databases, as one small trait: the name for
//! logs, the outbox take's row locking, the migrations' spelling and how the
//! old migrator's schema version is read under its lock. Everything else
//! ([`super::queries`], [`super::sql_store`]) is generic over a [`Backend`].
//!
//! The SQL itself is the common subset of SQLite (3.35+) and PostgreSQL:
//! row values, `INSERT … ON CONFLICT … DO UPDATE … WHERE`, `RETURNING`,
//! `$1`-style placeholders (SQLite reads `$1` as parameter 1), and
//! `QueryBuilder` writes each backend's placeholders for lists.

use sqlx::migrate::{Migrate, Migrator};

/// One sqlx database the store runs on.
pub trait Backend:
    sqlx::Database<Connection: Migrate, Arguments: sqlx::IntoArguments<Self>>
{
    /// `sqlite` or `postgres`, for logs ([`super::Store::backend`]).
    const LOG_NAME: &'static str;

    /// Appended to the outbox take's row selection: PostgreSQL locks the rows
    /// it takes and skips rows another gateway holds (`FOR UPDATE SKIP
    /// LOCKED`), so that concurrent gateways never take the same entry;
    /// SQLite serialises writers anyway.
    const SKIP_LOCKED: &'static str;

    /// Deletes up to `$2` claims whose time is before `$1`. PostgreSQL finds
    /// them by the `claims_until` index; SQLite looks at its `$2` oldest rows
    /// (by rowid: settlements are written in time order) and deletes those
    /// expired, so a run costs `$2` rows whatever the table's size.
    const EXPIRE_CLAIMS: &'static str;

    /// Deletes up to `$2` claims whose time is before `$1`, wherever they
    /// are in the table (the operator's `claims purge`).
    const PURGE_CLAIMS: &'static str;

    /// `COUNT(*)` of tables named `$1` in the database (0 or 1).
    const TABLE_EXISTS: &'static str;

    /// Run first in the transaction that adopts a database versioned by the
    /// old migrator ([`super::migrations`]): PostgreSQL takes the advisory lock
    /// that migrator took, so that an older gateway starting beside us does
    /// not migrate at the same time; SQLite's writer lock already serialises them.
    const OLD_MIGRATOR_LOCK: Option<&'static str>;

    /// The schema's migrations in this backend's spelling.
    fn migrator() -> &'static Migrator;

    /// Rows a statement changed (each backend's result type has its own method).
    fn rows_affected(result: &Self::QueryResult) -> u64;
}

impl Backend for sqlx::Sqlite {
    const LOG_NAME: &'static str = "sqlite";
    const SKIP_LOCKED: &'static str = "";
    const EXPIRE_CLAIMS: &'static str = "DELETE FROM claims WHERE rowid IN \
         (SELECT r FROM (SELECT rowid AS r, until_ms FROM claims ORDER BY rowid \
          LIMIT CAST($2 AS BIGINT)) \
          WHERE until_ms < $1)";
    const PURGE_CLAIMS: &'static str = "DELETE FROM claims WHERE rowid IN \
         (SELECT rowid FROM claims WHERE until_ms < $1 LIMIT CAST($2 AS BIGINT))";
    const TABLE_EXISTS: &'static str =
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1";
    const OLD_MIGRATOR_LOCK: Option<&'static str> = None;

    fn migrator() -> &'static Migrator {
        static MIGRATOR: Migrator = sqlx::migrate!("src/store/migrations/sqlite");
        &MIGRATOR
    }

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}

impl Backend for sqlx::Postgres {
    const LOG_NAME: &'static str = "postgres";
    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";
    const EXPIRE_CLAIMS: &'static str = "DELETE FROM claims WHERE (app_id, pushkey, event_id) IN \
         (SELECT app_id, pushkey, event_id FROM claims WHERE until_ms < $1 LIMIT $2)";
    const PURGE_CLAIMS: &'static str = Self::EXPIRE_CLAIMS;
    const TABLE_EXISTS: &'static str = "SELECT COUNT(*) FROM pg_catalog.pg_tables \
         WHERE schemaname = current_schema() AND tablename = $1";
    const OLD_MIGRATOR_LOCK: Option<&'static str> = Some("SELECT pg_advisory_xact_lock(7243001)");

    fn migrator() -> &'static Migrator {
        static MIGRATOR: Migrator = sqlx::migrate!("src/store/migrations/postgres");
        &MIGRATOR
    }

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}
