//! The connection a grouping task keeps between groups, and the turn it
//! gives to writers outside the runtime: one small type that the queries,
//! the SQLite hot path and the store's set-up all hold.

use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::Pool;

/// The connection a grouping task (writer or reader) keeps between groups:
/// taking one from the pool for each group would cost a ping on every
/// return. Dropped after an error, taken again when next needed.
pub struct Held<DB: sqlx::Database>(Arc<tokio::sync::Mutex<Option<PoolConnection<DB>>>>);

impl<DB: sqlx::Database> Clone for Held<DB> {
    fn clone(&self) -> Self {
        Held(self.0.clone())
    }
}

impl<DB: sqlx::Database> Default for Held<DB> {
    fn default() -> Self {
        Held(Arc::default())
    }
}

impl<DB: sqlx::Database> Held<DB> {
    /// Takes this connection's turn from a thread outside the runtime (the
    /// SQLite hot path's writer, [`super::sqlite_direct`]), so that the two
    /// never write at the same time; the turn is held until the guard drops.
    pub fn lock_blocking(&self) -> tokio::sync::MutexGuard<'_, Option<PoolConnection<DB>>> {
        self.0.blocking_lock()
    }

    /// Takes this connection's turn if nobody has it (the SQLite hot path's
    /// writer in a request's task, which must not wait for it there).
    pub fn try_lock(&self) -> Option<tokio::sync::MutexGuard<'_, Option<PoolConnection<DB>>>> {
        self.0.try_lock().ok()
    }

    /// Runs `work` on the held connection (taken from `pool` if there is
    /// none), one caller at a time; drops the connection if `work` fails.
    pub async fn run<T>(
        &self,
        pool: &Pool<DB>,
        work: impl AsyncFnOnce(&mut DB::Connection) -> Result<T, sqlx::Error>,
    ) -> Result<T, sqlx::Error> {
        let mut slot = self.0.lock().await;
        let mut conn = match slot.take() {
            Some(c) => c,
            None => pool.acquire().await?,
        };
        let result = work(&mut conn).await;
        // Kept only while it works.
        if result.is_ok() {
            *slot = Some(conn);
        }
        result
    }
}
