//! The SQLite store's hot path without sqlx: the claims and settlements of
//! requests and their rejection lookups run on one thread that owns a
//! `rusqlite` connection to the database file. Everything waiting costs one
//! hand-off to that thread, one read of the rejections and one transaction of
//! single-row statements, each prepared once for the connection's life; the
//! connection's page cache stays warm, as it is the one that wrote last.
//!
//! Why not sqlx here: its SQLite driver sends every statement, and every row
//! it returns, to the connection's worker thread and back, and a group's
//! multi-row statements (a different size for most groups) were prepared
//! again each time; measured, that was most of the store's CPU time per
//! notification (docs/performance.md, "Store on the hot path").
//!
//! The semantics are those of the sqlx path ([`super::batch`]): nothing is
//! answered before its group is committed; a group that fails is written again
//! one operation at a time, so a bad operation fails only its own caller. The
//! rest of the store (migrations, outbox takes, expiry, the operator's
//! commands) stays on sqlx; this writer takes the sqlx writer's turn
//! ([`Held::lock_blocking`]) around each transaction, so the two connections
//! never wait for each other on SQLite's lock.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, TransactionBehavior};

use super::batch::{self, Done, Op, Reader, Writer};
use super::held::Held;
use super::{DeviceKey, Rejection, Settlement, StoreError};

/// Starts the thread that writes claims and settlements and looks up
/// rejections, on a connection of its own to `path` (a database already
/// migrated and in WAL mode); `turn` is the sqlx writer's.
pub fn start(path: &Path, turn: Held<sqlx::Sqlite>) -> Result<(Writer, Reader), StoreError> {
    let mut conn = open(path)?;
    Ok(Writer::start_thread("store", move |ops, lookups| {
        // Lookups first: they are short, and a request waits for them before it sends anything.
        if !lookups.is_empty() {
            batch::answer_lookups(lookups, |devices| Ok(rejections(&conn, devices)?));
        }
        if !ops.is_empty() {
            let _turn = turn.lock_blocking();
            write_group(&mut conn, ops);
        }
    })?)
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // As the sqlx connections have them: 1 MiB of cache (the OS caches the
    // file anyway), commits durable against a crash of the process.
    conn.pragma_update(None, "cache_size", -1024)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

/// Every device's remembered rejection, in one read transaction.
fn rejections(conn: &Connection, devices: &[DeviceKey]) -> rusqlite::Result<Vec<Rejection>> {
    let snapshot = conn.unchecked_transaction()?;
    let mut find = snapshot.prepare_cached(
        "SELECT rejected_at, reason FROM rejections WHERE app_id = ?1 AND pushkey = ?2",
    )?;
    let mut out = Vec::new();
    for d in devices {
        let mut rows = find.query(params![d.app_id, d.pushkey])?;
        if let Some(row) = rows.next()? {
            out.push(Rejection {
                app_id: d.app_id.clone(),
                pushkey: d.pushkey.clone(),
                rejected_at: row.get(0)?,
                reason: row.get(1)?,
            });
        }
    }
    Ok(out)
}

/// Writes a group of operations and answers each: all in one transaction,
/// or, when that fails, each in its own.
fn write_group(conn: &mut Connection, ops: Vec<Op>) {
    if ops.len() > 1 {
        match in_one_transaction(conn, &ops) {
            Ok(done) => {
                for (op, d) in ops.into_iter().zip(done) {
                    op.answer(Ok::<_, StoreError>(d));
                }
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, ops = ops.len(), "group commit failed; writing each alone")
            }
        }
    }
    for op in ops {
        let result = in_one_transaction(conn, std::slice::from_ref(&op))
            .map(|d| d.into_iter().next().unwrap_or(Done::Settled(Vec::new())));
        op.answer(result);
    }
}

/// The operations in order, in one transaction (rolled back on error).
fn in_one_transaction(conn: &mut Connection, ops: &[Op]) -> rusqlite::Result<Vec<Done>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut done = Vec::with_capacity(ops.len());
    for op in ops {
        done.push(apply(&tx, op)?);
    }
    tx.commit()?;
    Ok(done)
}

fn apply(tx: &Connection, op: &Op) -> rusqlite::Result<Done> {
    match op {
        Op::Claim {
            keys,
            now,
            lease_until,
            settled_before,
            ..
        } => {
            // Granted when the row is new, or taken over (an expired lease, or
            // settled before the de-duplication window): a row changed.
            let mut claim = tx.prepare_cached(
                "INSERT INTO claims (app_id, pushkey, event_id, settled, until_ms) \
                 VALUES (?1, ?2, ?3, 0, ?4) \
                 ON CONFLICT (app_id, pushkey, event_id) DO UPDATE \
                 SET settled = 0, until_ms = excluded.until_ms \
                 WHERE (claims.settled = 0 AND claims.until_ms < ?5) \
                 OR (claims.settled = 1 AND claims.until_ms < ?6)",
            )?;
            let mut granted = Vec::new();
            for k in keys {
                let changed = claim.execute(params![
                    k.app_id,
                    k.pushkey,
                    k.event_id,
                    lease_until,
                    now,
                    settled_before
                ])?;
                if changed > 0 {
                    granted.push(k.clone());
                }
            }
            Ok(Done::Claimed(granted))
        }
        Op::Settle { settlement, .. } => Ok(Done::Settled(settle(tx, settlement)?)),
    }
}

/// A settlement's statements, in the order of the sqlx path's; returns the
/// new outbox entries' ids.
fn settle(tx: &Connection, s: &Settlement) -> rusqlite::Result<Vec<i64>> {
    if !s.settle_claims.is_empty() {
        let mut st = tx.prepare_cached(
            "UPDATE claims SET settled = 1, until_ms = ?4 \
             WHERE app_id = ?1 AND pushkey = ?2 AND event_id = ?3",
        )?;
        for k in &s.settle_claims {
            st.execute(params![k.app_id, k.pushkey, k.event_id, s.now])?;
        }
    }
    if !s.release_claims.is_empty() {
        let mut st = tx.prepare_cached(
            "DELETE FROM claims WHERE settled = 0 \
             AND app_id = ?1 AND pushkey = ?2 AND event_id = ?3",
        )?;
        for k in &s.release_claims {
            st.execute(params![k.app_id, k.pushkey, k.event_id])?;
        }
    }
    if !s.forget.is_empty() {
        let mut st =
            tx.prepare_cached("DELETE FROM rejections WHERE app_id = ?1 AND pushkey = ?2")?;
        for d in &s.forget {
            st.execute(params![d.app_id, d.pushkey])?;
        }
    }
    if !s.remember.is_empty() {
        let mut st = tx.prepare_cached(
            "INSERT INTO rejections (app_id, pushkey, rejected_at, reason) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (app_id, pushkey) DO UPDATE \
             SET rejected_at = excluded.rejected_at, reason = excluded.reason",
        )?;
        // Backwards, so that of one device named twice the first is kept, as on the sqlx path.
        for r in s.remember.iter().rev() {
            st.execute(params![r.app_id, r.pushkey, r.rejected_at, r.reason])?;
        }
    }
    let mut ids = Vec::with_capacity(s.enqueue.len());
    if !s.enqueue.is_empty() {
        let mut notification = tx.prepare_cached(
            "INSERT INTO outbox_notifications (body, created_at) VALUES (?1, ?2)",
        )?;
        let mut entry = tx.prepare_cached(
            "INSERT INTO outbox (app_id, pushkey, body, created_at, due_at, attempts, \
             last_error, notification_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        // Each shared notification once (entries of one request share the same Arc).
        let mut shared: Vec<(&std::sync::Arc<str>, i64)> = Vec::new();
        for e in &s.enqueue {
            let notification_id = match &e.shared {
                None => None,
                Some(n) => match shared.iter().find(|(m, _)| std::sync::Arc::ptr_eq(m, n)) {
                    Some((_, id)) => Some(*id),
                    None => {
                        let id = notification.insert(params![&**n, e.created_at])?;
                        shared.push((n, id));
                        Some(id)
                    }
                },
            };
            ids.push(entry.insert(params![
                e.app_id,
                e.pushkey,
                e.body,
                e.created_at,
                e.due_at,
                e.attempts,
                e.last_error,
                notification_id
            ])?);
        }
    }
    if !s.delete.is_empty() {
        let mut st = tx.prepare_cached("DELETE FROM outbox WHERE id = ?1")?;
        for id in &s.delete {
            st.execute([id])?;
        }
    }
    if !s.reschedule.is_empty() {
        let mut st = tx.prepare_cached(
            "UPDATE outbox SET due_at = ?1, attempts = ?2, last_error = ?3 WHERE id = ?4",
        )?;
        for (id, due_at, attempts, error) in &s.reschedule {
            st.execute(params![due_at, attempts, error, id])?;
        }
    }
    Ok(ids)
}
