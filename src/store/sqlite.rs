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
    Ok(SqlStore::combined(
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::{ClaimKey, ClaimState, DeviceKey, Settlement, Store};

    fn key(pushkey: &str) -> ClaimKey {
        ClaimKey {
            app_id: "app".into(),
            pushkey: pushkey.into(),
            event_id: "$e".into(),
        }
    }

    /// A new store file (in the directory returned) with `pushkey`'s claim granted.
    async fn store_with_claim(
        pushkey: &str,
    ) -> (
        tempfile::TempDir,
        std::path::PathBuf,
        SqlStore<Sqlite>,
        ClaimKey,
    ) {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s.db");
        let store = open(&path).await.expect("open");
        let k = key(pushkey);
        let granted = store
            .claim(std::slice::from_ref(&k), 1_000, 61_000, 0)
            .await;
        assert_eq!(granted.expect("claim"), vec![k.clone()]);
        (dir, path, store, k)
    }

    /// The statements the outbox's poll and housekeeping run over and over
    /// are prepared once: SQLite prepares a statement whose `LIMIT` is a
    /// bound parameter again at each run (its planner reads the value), which
    /// cost an idle gateway's poll three quarters of its CPU.
    #[tokio::test]
    async fn the_poll_and_housekeeping_statements_are_not_prepared_again_at_each_run() {
        use crate::store::backend::Backend;
        use crate::store::queries::{EXPIRE_NOTIFICATIONS, EXPIRE_REJECTIONS};
        use crate::store::Fairness;
        use rusqlite::StatementStatus;

        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s.db");
        let _migrated = open(&path).await.expect("open");
        let fair = Fairness {
            per_app: 10,
            window: 100,
            skip_apps: vec!["skipped".into()],
        };
        let take = SqlStore::<Sqlite>::take_due_query(1, 2, 3, &fair)
            .sql()
            .to_owned();
        let conn = rusqlite::Connection::open(&path).expect("connection");
        for sql in [
            take.as_str(),
            Sqlite::EXPIRE_CLAIMS,
            Sqlite::PURGE_CLAIMS,
            EXPIRE_REJECTIONS,
            EXPIRE_NOTIFICATIONS,
        ] {
            let mut st = conn.prepare(sql).expect("prepare");
            for run in 0..3 {
                for i in 1..=st.parameter_count() {
                    st.raw_bind_parameter(i, 10 * run + i as i64).expect("bind");
                }
                let mut rows = st.raw_query();
                while rows.next().expect("step").is_some() {}
            }
            assert_eq!(st.get_status(StatementStatus::RePrepare), 0, "{sql}");
        }
    }

    fn settling(k: &ClaimKey) -> Settlement {
        Settlement {
            now: 2_000,
            settle_claims: vec![k.clone()],
            ..Settlement::default()
        }
    }

    /// The sqlx writer holds its turn: a settlement waits for it on the
    /// blocking pool (waiting for it in the caller's worker would panic:
    /// a blocking lock inside the runtime), and is written once the turn is
    /// given back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_that_finds_the_turn_taken_waits_for_it_off_the_request_s_worker() {
        let (_dir, _, store, k) = store_with_claim("p1").await;

        let (taken, turn_taken) = tokio::sync::oneshot::channel::<()>();
        let (give_back, given_back) = tokio::sync::oneshot::channel::<()>();
        let held = store.held.clone();
        let pool = store.write_pool.clone();
        let holder = tokio::spawn(async move {
            held.run(&pool, async |_conn| {
                let _ = taken.send(());
                let _ = given_back.await;
                Ok(())
            })
            .await
        });
        turn_taken.await.expect("turn taken");

        let settle = tokio::spawn({
            let store = std::sync::Arc::new(store);
            let s = store.clone();
            async move { (s.settle(settling(&k)).await, store) }
        });
        // The write waits for the turn.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !settle.is_finished(),
            "written while the sqlx writer had its turn"
        );
        give_back.send(()).expect("holder waiting");
        holder.await.expect("holder").expect("held run");
        let (settled, store) = tokio::time::timeout(Duration::from_secs(5), settle)
            .await
            .expect("settled once the turn was given back")
            .expect("task");
        assert_eq!(settled.expect("settle"), Vec::<i64>::new());
        let device = DeviceKey {
            app_id: "app".into(),
            pushkey: "p1".into(),
        };
        assert_eq!(store.rejections(&[device]).await.expect("read"), vec![]);
        assert_eq!(
            store.claim_states(&[key("p1")]).await.expect("states"),
            vec![(key("p1"), ClaimState::Settled { at: 2_000 })]
        );
    }

    /// Another process (an operator's command) holds SQLite's write lock: a
    /// settlement does not wait for it in the request's thread (here the
    /// runtime's only one), but on the blocking pool, and is written once
    /// the lock is let go.
    #[tokio::test]
    async fn a_write_that_finds_sqlite_locked_by_another_process_waits_off_the_request_s_thread() {
        let (_dir, path, store, k) = store_with_claim("p3").await;
        let store = std::sync::Arc::new(store);
        let other = rusqlite::Connection::open(&path).expect("other connection");
        other.execute_batch("BEGIN IMMEDIATE").expect("write lock");

        let started = std::time::Instant::now();
        let settle = tokio::spawn({
            let store = store.clone();
            async move { store.settle(settling(&k)).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the runtime's thread waited for SQLite's lock"
        );
        assert!(
            !settle.is_finished(),
            "written while another process had the lock"
        );
        other.execute_batch("COMMIT").expect("let go");
        let settled = tokio::time::timeout(Duration::from_secs(5), settle)
            .await
            .expect("written once the lock was let go")
            .expect("task");
        assert_eq!(settled.expect("settle"), Vec::<i64>::new());
        assert_eq!(
            store.claim_states(&[key("p3")]).await.expect("states"),
            vec![(key("p3"), ClaimState::Settled { at: 2_000 })]
        );
    }

    /// A caller dropped after queueing its settlement (the request's task was
    /// cancelled) still has it written: nobody else may come to serve the queue.
    #[tokio::test]
    async fn a_settlement_queued_by_a_caller_that_goes_away_is_still_written() {
        let (_dir, _, store, k) = store_with_claim("p2").await;

        let mut settle = store.settle(settling(&k));
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        // Queued, then pending on its turn to serve the queue.
        assert!(settle.as_mut().poll(&mut cx).is_pending());
        drop(settle);

        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT settled, until_ms FROM claims WHERE pushkey = 'p2'")
                .fetch_optional(&store.read_pool)
                .await
                .expect("read");
        assert_eq!(row, Some((1, 2_000)));
    }
}
