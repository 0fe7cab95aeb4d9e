//! The SQLite backend: one file, WAL mode, for a single gateway.
//!
//! Writes go through one connection at a time (SQLite has one writer at a
//! time; queueing is cheaper than retrying on `SQLITE_BUSY`): the hot path's
//! writer ([`super::sqlite_direct`]) and sqlx's write connection take turns.
//! Reads use connections of their own, which WAL lets run beside the writer. `synchronous =
//! NORMAL` makes every commit durable against a crash of the gateway process
//! (`kill -9`); only a power loss can take back the last commits.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::Sqlite;

use super::held::Held;
use super::sql_store::SqlStore;
use super::sqlite_direct;
use super::StoreError;

/// Opens (creating it if need be) the database file at `path`.
pub async fn open(path: &Path) -> Result<SqlStore<Sqlite>, StoreError> {
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
    super::migrations::migrate(&write_pool).await?;
    let read_pool = SqlitePoolOptions::new()
        .max_connections(2)
        .test_before_acquire(false)
        .connect_with(options.read_only(true))
        .await
        .map_err(|e| open_err(e.to_string()))?;
    // The hot path (claims, settlements, rejection lookups) on connections of its own.
    let held = Held::default();
    let (writer, reader) = sqlite_direct::start(path, held.clone())?;
    Ok(SqlStore::on_thread(
        write_pool, read_pool, held, writer, reader,
    ))
}

/// Creates the database file readable by its owner only (it names pushkeys);
/// an existing one (and its `-wal`/`-shm` files) that others may read is made
/// so, with a warning: SQLite gives new `-wal`/`-shm` files the mode of the
/// database file.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path)?;
    #[cfg(unix)]
    {
        make_private(path, &file)?;
        for suffix in ["-wal", "-shm"] {
            let mut side = path.as_os_str().to_owned();
            side.push(suffix);
            let side = Path::new(&side);
            // Only a regular file of its own: a link is left alone, absent is fine.
            match std::fs::symlink_metadata(side) {
                Ok(m) if m.file_type().is_file() => {
                    make_private(side, &std::fs::File::open(side)?)?
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    drop(file);
    Ok(())
}

/// Takes group and other permissions away from an open file, saying so.
#[cfg(unix)]
fn make_private(path: &Path, file: &std::fs::File) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = file.metadata()?.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        tracing::warn!(
            file = %path.display(),
            was = format!("{mode:04o}"),
            now = "0600",
            "store file was readable by others (it names pushkeys): made private to its owner"
        );
    }
    Ok(())
}
