//! The SQLite backend: one file, WAL mode, for a single gateway.
//!
//! Writes go through one connection (SQLite has one writer at a time; queueing
//! in the pool is cheaper than retrying on `SQLITE_BUSY`); reads use a small
//! pool of their own, which WAL lets run beside the writer. `synchronous =
//! NORMAL` makes every commit durable against a crash of the gateway process
//! (`kill -9`); only a power loss can take back the last commits.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Pool, Sqlite};

use super::batch::{Reader, Writer};
use super::{
    ClaimKey, ClaimState, DeviceKey, Entry, Expiry, Millis, Rejection, Settlement, Stats,
    StoreError,
};

mod q {
    crate::store::queries::queries!(sqlx::Sqlite, "");
    crate::store::migrations::migrate_fn!(sqlx::Sqlite, sqlite, "");
}

pub struct SqliteStore {
    write_pool: Pool<Sqlite>,
    read_pool: Pool<Sqlite>,
    /// The writer's connection, shared by group commits, outbox takes and expiry.
    held: q::Held,
    writer: Writer,
    reader: Reader,
}

impl SqliteStore {
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let open_err = |message: String| StoreError::Open {
            what: path.display().to_string(),
            message,
        };
        create_private(path).map_err(|e| open_err(e.to_string()))?;
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(|e| open_err(e.to_string()))?
            .filename(path)
            .create_if_missing(false)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            // 1 MiB of page cache per connection (SQLite's default is 2 MiB): the OS caches the file anyway.
            .pragma("cache_size", "-1024")
            // Grouped statements differ in their number of rows, so most prepared
            // statements are used rarely; sqlx's default of 100 per connection
            // held megabytes of them.
            .statement_cache_capacity(16);
        // A local file has no connection to lose: skip sqlx's ping before each use.
        let write_pool = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await
            .map_err(|e| open_err(e.to_string()))?;
        q::migrate(&write_pool).await?;
        let read_pool = SqlitePoolOptions::new()
            .max_connections(2)
            .test_before_acquire(false)
            .connect_with(options.read_only(true))
            .await
            .map_err(|e| open_err(e.to_string()))?;
        let (held, writer, reader) = q::start_grouping(write_pool.clone(), read_pool.clone());
        Ok(SqliteStore {
            write_pool,
            read_pool,
            held,
            writer,
            reader,
        })
    }
}

/// Creates the database file readable by its owner only (it names pushkeys).
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map(drop)
}

crate::store::queries::impl_store!(SqliteStore, "sqlite", read = read_pool, write = write_pool);
