//! The schema, as numbered migrations applied in order at start-up by sqlx's
//! migrator (`sqlx::migrate!`, versions recorded in `_sqlx_migrations`).
//!
//! The SQL lives in `migrations/sqlite/` and `migrations/postgres/`, one file
//! per version and backend; both get the same tables and columns, and
//! only the spelling of an auto-incrementing id differs, except SQLite's
//! `claims` from version 4: its primary key starts with the pushkey and it
//! has no `claims_until` index (it expires claims in rowid order). A migration, once
//! released, is never edited (sqlx refuses to start on a changed checksum): a
//! change is a new migration, in both directories.
//!
//! Databases written by pushgate before it used sqlx's migrator record their
//! version (1 to 3) in a `pushgate_schema` table instead. They are adopted
//! once: the migrations up to that version are recorded as applied (not run
//! again), then the newer ones run as for any database. `pushgate_schema` is
//! left as it was, so an older gateway still finds its version there.

use sqlx::{ColumnIndex, Decode, Encode, Executor, Pool, Row, Type};

use super::backend::Backend;
use super::StoreError;

/// The table the old migrator recorded versions in.
const OLD_VERSIONS: &str = "pushgate_schema";
/// The table sqlx's migrator records versions in.
const VERSIONS: &str = "_sqlx_migrations";

/// Brings the schema up to date: adopts a database of the old migrator (once:
/// when it has `pushgate_schema` and no `_sqlx_migrations`, the migrations up
/// to its version are recorded as applied), then applies every migration not
/// applied yet.
pub async fn migrate<DB>(pool: &Pool<DB>) -> Result<(), StoreError>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    usize: ColumnIndex<DB::Row>,
    i64: Type<DB> + for<'r> Decode<'r, DB>,
    for<'q> &'q str: Type<DB> + Encode<'q, DB>,
{
    let adopt = async || -> Result<(), sqlx::Error> {
        let mut tx = pool.begin().await?;
        if let Some(lock) = DB::OLD_MIGRATOR_LOCK {
            sqlx::raw_sql(lock).execute(&mut *tx).await?;
        }
        let exists = async |conn: &mut DB::Connection, table: &str| -> Result<bool, sqlx::Error> {
            let row = sqlx::query(DB::TABLE_EXISTS)
                .bind(table)
                .fetch_one(&mut *conn)
                .await?;
            Ok(row.try_get::<i64, _>(0)? > 0)
        };
        if !exists(&mut tx, OLD_VERSIONS).await? || exists(&mut tx, VERSIONS).await? {
            return Ok(());
        }
        let version: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM pushgate_schema")
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        // Within this transaction: an adoption that fails leaves no `_sqlx_migrations` behind.
        DB::migrator().skip(&mut tx, Some(version)).await?;
        tx.commit().await?;
        tracing::info!(version, "store schema versions adopted by sqlx's migrator");
        Ok(())
    };
    adopt().await.map_err(StoreError::Migrate)?;
    DB::migrator()
        .run(pool)
        .await
        .map_err(|e| StoreError::Migrate(e.into()))
}
