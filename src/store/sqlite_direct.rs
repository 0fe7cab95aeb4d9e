//! The SQLite store's hot path without sqlx: the claims and settlements of
//! requests and their rejection lookups run on one `rusqlite` connection to
//! the database file, in the tasks of the requests themselves: whoever finds
//! it free serves every job waiting ([`super::combine`]), one read of the
//! rejections and one transaction of single-row statements for all of them,
//! each statement prepared once for the connection's life. No thread is
//! woken and none sleeps for a request; the connection's page cache stays
//! warm, as it is the one that wrote last. What would make a request's
//! worker wait is done elsewhere: checkpoints on a thread of their own
//! ([`Checkpointer`]), a write that finds the sqlx writer's turn taken on the
//! blocking pool.
//!
//! The leases of claims being sent live with the connection, not in the file
//! ([`Leases`]): one gateway alone uses a SQLite store, so a claim is one
//! read and only its settlement is written — one write per push instead of
//! two, and nothing written before a push goes out.
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
//! ([`Held::try_lock`], or [`Held::lock_blocking`] on the blocking pool)
//! around each transaction, so the two connections never wait for each other
//! on SQLite's lock.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use rusqlite::{params, CachedStatement, Connection, OpenFlags};

use super::batch::{self, Done, Group, Op, Reader, Writer};
use super::combine::Serve;
use super::held::Held;
use super::{ClaimKey, ClaimState, DeviceKey, Millis, Rejection, Settlement, StoreError};

/// Starts the hot path on a connection of its own to `path` (a database
/// already migrated and in WAL mode): its jobs are served in the tasks of the
/// requests that queue them ([`super::combine`]); `turn` is the sqlx writer's.
pub fn start(path: &Path, turn: Held<sqlx::Sqlite>) -> Result<(Writer, Reader), StoreError> {
    let conn = open(path)?;
    conn.set_prepared_statement_cache_capacity(SQL_COUNT * 2);
    // Checkpoints (and their fsyncs) run on a thread of their own, not in a
    // request's task ([`Checkpointer`]).
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    let checkpointer = Checkpointer::start(path)?;
    let hot = Hot {
        conn,
        leases: Leases::default(),
        turn,
        deferred: Vec::new(),
        checkpointer,
        waits: true,
    };
    Ok(Writer::start_combined(hot))
}

/// The hot path's connection and what it keeps between groups.
struct Hot {
    conn: Connection,
    leases: Leases,
    /// The sqlx writer's turn, taken around each write transaction.
    turn: Held<sqlx::Sqlite>,
    /// Settlements that found the turn taken, in order: written on the
    /// blocking pool, before any that come later.
    deferred: Vec<Op>,
    checkpointer: Checkpointer,
    /// Whether the connection's busy timeout is [`BUSY_WAIT`] (on the
    /// blocking pool) or zero (in a request's task).
    waits: bool,
}

/// How long a write on the blocking pool waits for SQLite's lock.
const BUSY_WAIT: Duration = Duration::from_secs(5);

impl Serve for Hot {
    fn serve(&mut self, group: Group, may_block: bool) -> bool {
        let Hot {
            conn,
            leases,
            turn,
            deferred,
            checkpointer,
            waits,
        } = self;
        let mut st = Statements::new(conn);
        let (claims, mut writes): (Vec<Op>, Vec<Op>) = group
            .ops
            .into_iter()
            .partition(|op| matches!(op, Op::Claim { .. }));
        if !deferred.is_empty() {
            deferred.append(&mut writes);
            writes = std::mem::take(deferred);
        }
        if !writes.is_empty() {
            let held = if may_block {
                Some(turn.lock_blocking())
            } else {
                turn.try_lock()
            };
            match held {
                Some(_turn) => {
                    // In a request's task, SQLite's lock is not waited for either.
                    if *waits != may_block {
                        let wait = if may_block { BUSY_WAIT } else { Duration::ZERO };
                        if conn.busy_timeout(wait).is_ok() {
                            *waits = may_block;
                        }
                    }
                    let unwritten = write_group(&mut st, leases, writes, *waits);
                    checkpointer.committed();
                    if let Some(ops) = unwritten {
                        *deferred = ops;
                    }
                }
                // The sqlx writer has it: waiting here would stop a request's worker.
                None => *deferred = writes,
            }
        }
        // After the group's settlements: a claim of a key one of them
        // settled finds it settled, as if it had come a moment later.
        let reads = Reads {
            lookups: group.lookups,
            claims,
            states: group.states,
        };
        reads.answer(&mut st, leases);
        !deferred.is_empty()
    }
}

/// Commits between two checkpoints, at most (a commit of a group writes a
/// few pages; SQLite's own default is a checkpoint per 1,000 pages).
const CHECKPOINT_EVERY: u32 = 256;
/// A checkpoint at least this often while the gateway is up.
const CHECKPOINT_IDLE: Duration = Duration::from_secs(5);

/// Copies the write-ahead log back into the database file, on a connection
/// and thread of its own: a checkpoint syncs both files to disk, which
/// must not stop a request's worker thread. Passive: it never waits for,
/// nor stops, the writer.
struct Checkpointer {
    wake: std::sync::mpsc::SyncSender<()>,
    commits: u32,
}

impl Checkpointer {
    fn start(path: &Path) -> Result<Checkpointer, StoreError> {
        let conn = open(path)?;
        let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
        std::thread::Builder::new()
            .name("store-checkpoint".to_owned())
            .spawn(move || loop {
                match woken.recv_timeout(CHECKPOINT_IDLE) {
                    Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                        {
                            tracing::warn!(error = %e, "store: checkpoint of the write-ahead log failed");
                        }
                    }
                    // The store is gone.
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                }
            })?;
        Ok(Checkpointer { wake, commits: 0 })
    }

    fn committed(&mut self) {
        self.commits += 1;
        if self.commits >= CHECKPOINT_EVERY {
            self.commits = 0;
            // Full: a checkpoint is pending already.
            let _ = self.wake.try_send(());
        }
    }
}

/// The reads of a group: rejection lookups, claims (a read of the file and
/// a lease here) and claim states.
struct Reads {
    lookups: Vec<batch::Lookup>,
    claims: Vec<Op>,
    states: Vec<batch::States>,
}

impl Reads {
    /// Answers every read, all in one read transaction when there are
    /// several: SQLite would otherwise begin and end one per statement,
    /// which costs more than the statement's own lookup.
    fn answer(self, st: &mut Statements, leases: &mut Leases) {
        let keys = self.lookups.iter().map(|l| l.devices.len()).sum::<usize>()
            + self.claims.iter().map(Op::keys).sum::<usize>()
            + self.states.iter().map(|s| s.keys.len()).sum::<usize>();
        if keys == 0 {
            return;
        }
        let in_transaction = keys > 1 && st.begin_read();
        if !self.lookups.is_empty() {
            batch::answer_lookups(self.lookups, |devices| Ok(find_rejections(st, devices)?));
        }
        for op in self.claims {
            let result = match &op {
                Op::Claim {
                    keys,
                    now,
                    lease_until,
                    settled_before,
                    ..
                } => {
                    claim(st, leases, keys, *now, *lease_until, *settled_before).map(Done::Claimed)
                }
                Op::Settle { .. } => Ok(Done::Settled(Vec::new())),
            };
            op.answer(result);
        }
        for s in self.states {
            let _ = s
                .reply
                .send(claim_states(st, leases, &s.keys).map_err(Into::into));
        }
        if in_transaction {
            st.end_read();
        }
    }
}

/// The leases of the claims being sent, by this gateway: kept here rather
/// than written to the file, as one gateway alone uses a SQLite store. A
/// push's claim is then one read before it is sent, and one write (its
/// settlement) after; a lease would only outlive a crash of the gateway,
/// whose sends died with it (a lease of an older version found in the file
/// is still honoured until it ends).
#[derive(Default)]
struct Leases {
    until: HashMap<ClaimKey, Millis>,
    /// Expired leases (of requests that ended without settling them) are
    /// dropped when the map grows past this.
    sweep_at: usize,
}

impl Leases {
    /// Whether another claimant holds `key` at `now`.
    fn held(&self, key: &ClaimKey, now: Millis) -> bool {
        self.until.get(key).is_some_and(|&until| until >= now)
    }

    fn grant(&mut self, key: &ClaimKey, until: Millis, now: Millis) {
        if self.until.len() >= self.sweep_at {
            self.until.retain(|_, &mut u| u >= now);
            self.sweep_at = (self.until.len() * 2).max(1024);
        }
        self.until.insert(key.clone(), until);
    }

    /// The settlement's claims are settled or given up: no lease of ours any more.
    fn end(&mut self, s: &Settlement) {
        for k in s.settle_claims.iter().chain(&s.release_claims) {
            self.until.remove(k);
        }
    }
}

/// Grants each key that no live lease holds and that was not settled at or
/// after `settled_before`; returns the keys granted, leased until `lease_until`.
fn claim(
    st: &mut Statements,
    leases: &mut Leases,
    keys: &[ClaimKey],
    now: Millis,
    lease_until: Millis,
    settled_before: Millis,
) -> rusqlite::Result<Vec<ClaimKey>> {
    let mut granted: Vec<ClaimKey> = Vec::new();
    for k in keys {
        if leases.held(k, now) {
            continue;
        }
        let free = match stored_claim(st, k) {
            Ok(None) => true,
            Ok(Some(ClaimState::Settled { at })) => at < settled_before,
            Ok(Some(ClaimState::Sending { until })) => until < now,
            Err(e) => {
                // The caller sends without claims: none of these may stay leased.
                for g in &granted {
                    leases.until.remove(g);
                }
                return Err(e);
            }
        };
        if free {
            leases.grant(k, lease_until, now);
            granted.push(k.clone());
        }
    }
    Ok(granted)
}

/// Where each claim stands: our lease, else the file's row (missing ones left out).
fn claim_states(
    st: &mut Statements,
    leases: &Leases,
    keys: &[ClaimKey],
) -> rusqlite::Result<Vec<(ClaimKey, ClaimState)>> {
    let mut out = Vec::new();
    for k in keys {
        let state = match leases.until.get(k) {
            Some(&until) => Some(ClaimState::Sending { until }),
            None => stored_claim(st, k)?,
        };
        if let Some(state) = state {
            out.push((k.clone(), state));
        }
    }
    Ok(out)
}

/// The claim's row in the file: settled, or a lease written by an older version.
fn stored_claim(st: &mut Statements, k: &ClaimKey) -> rusqlite::Result<Option<ClaimState>> {
    let find = st.get(Sql::FindClaim)?;
    let mut rows = find.query(params![k.app_id, k.pushkey, k.event_id])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    let (settled, at): (i64, Millis) = (row.get(0)?, row.get(1)?);
    Ok(Some(if settled != 0 {
        ClaimState::Settled { at }
    } else {
        ClaimState::Sending { until: at }
    }))
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_WAIT)?;
    // As the sqlx connections have them: 1 MiB of cache (the OS caches the
    // file anyway), commits durable against a crash of the process.
    conn.pragma_update(None, "cache_size", -1024)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

/// Every statement the hot path runs, by what it does.
#[derive(Clone, Copy)]
enum Sql {
    Begin,
    BeginImmediate,
    Commit,
    Rollback,
    FindRejection,
    FindClaim,
    SettleClaim,
    ReleaseClaim,
    Forget,
    Remember,
    NewNotification,
    Enqueue,
    Dequeue,
    Reschedule,
}

const SQL_COUNT: usize = Sql::Reschedule as usize + 1;

impl Sql {
    fn text(self) -> &'static str {
        match self {
            Sql::Begin => "BEGIN",
            Sql::BeginImmediate => "BEGIN IMMEDIATE",
            Sql::Commit => "COMMIT",
            Sql::Rollback => "ROLLBACK",
            Sql::FindRejection => {
                "SELECT rejected_at, reason FROM rejections WHERE app_id = ?1 AND pushkey = ?2"
            }
            // Written pushkey first, as the primary key is (migration 4).
            Sql::FindClaim => {
                "SELECT settled, until_ms FROM claims \
                 WHERE pushkey = ?2 AND event_id = ?3 AND app_id = ?1"
            }
            // The row is new unless a lease of an older version is there.
            Sql::SettleClaim => {
                "INSERT INTO claims (app_id, pushkey, event_id, settled, until_ms) \
                 VALUES (?1, ?2, ?3, 1, ?4) \
                 ON CONFLICT (pushkey, event_id, app_id) DO UPDATE \
                 SET settled = 1, until_ms = excluded.until_ms"
            }
            Sql::ReleaseClaim => {
                "DELETE FROM claims WHERE settled = 0 \
                 AND pushkey = ?2 AND event_id = ?3 AND app_id = ?1"
            }
            Sql::Forget => "DELETE FROM rejections WHERE app_id = ?1 AND pushkey = ?2",
            Sql::Remember => {
                "INSERT INTO rejections (app_id, pushkey, rejected_at, reason) \
                 VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (app_id, pushkey) DO UPDATE \
                 SET rejected_at = excluded.rejected_at, reason = excluded.reason"
            }
            Sql::NewNotification => {
                "INSERT INTO outbox_notifications (body, created_at) VALUES (?1, ?2)"
            }
            Sql::Enqueue => {
                "INSERT INTO outbox (app_id, pushkey, body, created_at, due_at, attempts, \
                 last_error, notification_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            }
            Sql::Dequeue => "DELETE FROM outbox WHERE id = ?1",
            Sql::Reschedule => {
                "UPDATE outbox SET due_at = ?1, attempts = ?2, last_error = ?3 WHERE id = ?4"
            }
        }
    }
}

/// The connection's statements, from its cache of prepared statements (a
/// statement cannot be kept apart from it: it would tie the connection to
/// one thread, and requests run on several). Each is taken from the cache
/// once per group and given back when the group is served: a take and a
/// give-back hash the statement's text, which cost more than many of the
/// statements themselves.
struct Statements<'c> {
    conn: &'c Connection,
    taken: [Option<CachedStatement<'c>>; SQL_COUNT],
}

impl<'c> Statements<'c> {
    fn new(conn: &'c Connection) -> Self {
        Statements {
            conn,
            taken: std::array::from_fn(|_| None),
        }
    }

    fn get(&mut self, sql: Sql) -> rusqlite::Result<&mut CachedStatement<'c>> {
        let slot = &mut self.taken[sql as usize];
        let statement = match slot.take() {
            Some(s) => s,
            None => self.conn.prepare_cached(sql.text())?,
        };
        Ok(slot.insert(statement))
    }

    /// Runs a statement that takes no parameters and returns no rows.
    fn run(&mut self, sql: Sql) -> rusqlite::Result<()> {
        self.get(sql)?.raw_execute().map(drop)
    }

    /// Begins a read transaction; false when it could not (the reads then
    /// run one statement at a time, each in its own snapshot).
    fn begin_read(&mut self) -> bool {
        if !self.conn.is_autocommit() {
            if let Err(e) = self.run(Sql::Rollback) {
                tracing::warn!(error = %e, "store: ending a transaction left open failed");
                return false;
            }
        }
        self.run(Sql::Begin).is_ok()
    }

    /// Ends a read transaction (nothing to keep: it wrote nothing).
    fn end_read(&mut self) {
        if !self.conn.is_autocommit() {
            if let Err(e) = self.run(Sql::Commit) {
                tracing::warn!(error = %e, "store: ending a read transaction failed");
            }
        }
    }

    /// Runs `work` in a transaction begun with `begin`: committed when it
    /// succeeds, rolled back when anything fails.
    fn in_transaction<T>(
        &mut self,
        begin: Sql,
        work: impl FnOnce(&mut Self) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        // A transaction an earlier failed rollback left open would make every
        // BEGIN from now on fail (and hold SQLite's write lock): end it first.
        if !self.conn.is_autocommit() {
            self.run(Sql::Rollback)?;
        }
        self.run(begin)?;
        let result = work(self).and_then(|t| self.run(Sql::Commit).map(|()| t));
        // Some errors roll back by themselves (SQLite then is in autocommit mode again).
        if result.is_err() && !self.conn.is_autocommit() {
            if let Err(e) = self.run(Sql::Rollback) {
                tracing::warn!(error = %e, "store: rolling back a failed transaction failed");
            }
        }
        result
    }
}

/// Every device's remembered rejection (in the group's read transaction when
/// there are several reads, so in one snapshot).
fn find_rejections(st: &mut Statements, devices: &[DeviceKey]) -> rusqlite::Result<Vec<Rejection>> {
    let find = st.get(Sql::FindRejection)?;
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

/// Writes a group of settlements and answers each: all in one transaction,
/// or, when that fails, each in its own. The leases of the claims a
/// committed settlement settles or gives up end with its commit. Returns
/// the settlements not written because SQLite's write lock is held by
/// another process (an operator's command) and this call may not wait for
/// it (`may_wait` false: the connection's busy timeout is then zero).
fn write_group(
    st: &mut Statements,
    leases: &mut Leases,
    ops: Vec<Op>,
    may_wait: bool,
) -> Option<Vec<Op>> {
    if ops.len() > 1 {
        match in_one_transaction(st, &ops) {
            Ok(done) => {
                for (op, d) in ops.into_iter().zip(done) {
                    end_leases(leases, &op);
                    op.answer(Ok::<_, StoreError>(d));
                }
                return None;
            }
            Err(e) if !may_wait && is_busy(&e) => return Some(ops),
            Err(e) => {
                tracing::debug!(error = %e, ops = ops.len(), "group commit failed; writing each alone")
            }
        }
    }
    let mut ops = ops.into_iter();
    while let Some(op) = ops.next() {
        let result = in_one_transaction(st, std::slice::from_ref(&op))
            .map(|d| d.into_iter().next().unwrap_or(Done::Settled(Vec::new())));
        match result {
            Err(e) if !may_wait && is_busy(&e) => {
                return Some(std::iter::once(op).chain(ops).collect());
            }
            Ok(_) => end_leases(leases, &op),
            Err(_) => {}
        }
        op.answer(result);
    }
    None
}

/// SQLite's write lock is taken (by another connection than ours).
fn is_busy(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
}

fn end_leases(leases: &mut Leases, op: &Op) {
    if let Op::Settle { settlement, .. } = op {
        leases.end(settlement);
    }
}

/// The settlements in order, in one transaction (rolled back on error).
fn in_one_transaction(st: &mut Statements, ops: &[Op]) -> rusqlite::Result<Vec<Done>> {
    st.in_transaction(Sql::BeginImmediate, |st| {
        ops.iter()
            .map(|op| match op {
                Op::Settle { settlement, .. } => Ok(Done::Settled(settle(st, settlement)?)),
                // Claims are not written ([`Leases`]); `start` answers them.
                Op::Claim { .. } => Ok(Done::Claimed(Vec::new())),
            })
            .collect()
    })
}

/// A settlement's statements, in the order of the sqlx path's; returns the
/// new outbox entries' ids.
fn settle(st: &mut Statements, s: &Settlement) -> rusqlite::Result<Vec<i64>> {
    for k in &s.settle_claims {
        st.get(Sql::SettleClaim)?
            .execute(params![k.app_id, k.pushkey, k.event_id, s.now])?;
    }
    for k in &s.release_claims {
        st.get(Sql::ReleaseClaim)?
            .execute(params![k.app_id, k.pushkey, k.event_id])?;
    }
    for d in &s.forget {
        st.get(Sql::Forget)?.execute(params![d.app_id, d.pushkey])?;
    }
    // Backwards, so that of one device named twice the first is kept, as on the sqlx path.
    for r in s.remember.iter().rev() {
        st.get(Sql::Remember)?
            .execute(params![r.app_id, r.pushkey, r.rejected_at, r.reason])?;
    }
    let mut ids = Vec::with_capacity(s.enqueue.len());
    // Each shared notification once (entries of one request share the same Arc).
    let mut shared: Vec<(&std::sync::Arc<str>, i64)> = Vec::new();
    for e in &s.enqueue {
        let notification_id = match &e.shared {
            None => None,
            Some(n) => match shared.iter().find(|(m, _)| std::sync::Arc::ptr_eq(m, n)) {
                Some((_, id)) => Some(*id),
                None => {
                    let id = st
                        .get(Sql::NewNotification)?
                        .insert(params![&**n, e.created_at])?;
                    shared.push((n, id));
                    Some(id)
                }
            },
        };
        ids.push(st.get(Sql::Enqueue)?.insert(params![
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
    for id in &s.delete {
        st.get(Sql::Dequeue)?.execute([id])?;
    }
    for (id, due_at, attempts, error) in &s.reschedule {
        st.get(Sql::Reschedule)?
            .execute(params![due_at, attempts, error, id])?;
    }
    Ok(ids)
}
