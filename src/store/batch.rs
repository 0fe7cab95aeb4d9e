//! Group commit and grouped reads. The claims and settlements of concurrent
//! requests queue up for one writer task, which writes everything waiting in
//! one transaction: under load, one commit serves many requests instead of
//! two commits each. Each caller still gets its own answer only after that
//! commit, so nothing is answered before it is durable. When a group
//! transaction fails, its operations are written again one by one, so one
//! bad operation fails only its own caller. Rejection lookups are grouped the
//! same way by a reader task: one query for every request waiting. On SQLite
//! the callers serve both kinds of work themselves, one at a time, each
//! serving whatever is waiting ([`Writer::start_combined`], [`super::combine`],
//! `super::sqlite_direct`).
//!
//! The writer remembers whether its last write failed (a full disk, a lost
//! database), so that `/ready` fails from the first failed write until one
//! succeeds again, not only when a read fails.

use std::future::Future;

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::combine::{Combiner, Serve};
pub use super::jobs::{Done, Group, Job, Lookup, Op, States, MAX_BATCH};

use super::{ClaimKey, ClaimState, DeviceKey, Millis, Rejection, Settlement, StoreError};

/// Operations waiting for the writer; callers wait for room beyond this.
const QUEUE: usize = 4096;

/// Spawns a task that hands `run` every queued item at once (up to
/// [`MAX_BATCH`]); returns the queue. The task ends when the queue's senders are gone.
fn spawn_grouping<T, F, Fut>(run: F) -> mpsc::Sender<T>
where
    T: Send + 'static,
    F: Fn(Vec<T>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let (tx, mut rx) = mpsc::channel::<T>(QUEUE);
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            run(gather(first, &mut rx)).await;
        }
    });
    tx
}

/// `first` and whatever else is waiting, up to [`MAX_BATCH`].
fn gather<T>(first: T, rx: &mut mpsc::Receiver<T>) -> Vec<T> {
    let mut group = vec![first];
    while group.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(item) => group.push(item),
            Err(_) => break,
        }
    }
    group
}

fn split_jobs(jobs: Vec<Job>) -> Group {
    let mut group = Group::default();
    group.add(jobs);
    group
}

/// The callers' side of the reader task.
pub struct Reader {
    queue: Queue,
}

/// Where a caller's job goes: to a grouping task (sqlx), or to the combining
/// queue served by the callers themselves (SQLite's hot path).
#[derive(Clone)]
enum Queue {
    Task(mpsc::Sender<Job>),
    Combined(Arc<Combiner>),
}

impl Reader {
    /// Spawns the reader task; `read` looks up every device of a group at once.
    pub fn start<F, Fut>(read: F) -> Reader
    where
        F: Fn(Vec<DeviceKey>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<Rejection>, sqlx::Error>> + Send,
    {
        let read = Arc::new(read);
        Reader {
            queue: Queue::Task(spawn_grouping(move |group: Vec<Job>| {
                let read = read.clone();
                let group = split_jobs(group).lookups;
                async move {
                    match read(all_devices(&group)).await {
                        Ok(found) => hand_out(group, &found),
                        // The error is not Clone: each caller learns it by asking alone.
                        Err(_) => {
                            for l in group {
                                let _ = l.reply.send(read(l.devices).await.map_err(Into::into));
                            }
                        }
                    }
                }
            })),
        }
    }

    pub async fn rejections(&self, devices: &[DeviceKey]) -> Result<Vec<Rejection>, StoreError> {
        let (reply, answer) = oneshot::channel();
        let lookup = Lookup {
            devices: devices.to_vec(),
            reply,
        };
        hand_off(&self.queue, Job::Read(lookup), answer).await
    }

    /// The claims' states from the hot path that keeps their leases (SQLite's).
    pub async fn claim_states(
        &self,
        keys: &[ClaimKey],
    ) -> Result<Vec<(ClaimKey, ClaimState)>, StoreError> {
        let (reply, answer) = oneshot::channel();
        let states = States {
            keys: keys.to_vec(),
            reply,
        };
        hand_off(&self.queue, Job::States(states), answer).await
    }
}

/// Queues `job` and waits for its answer (`Stopped` when the task serving
/// the queue is gone). On the combining queue the answer is often there
/// already: this caller served it.
async fn hand_off<T>(
    queue: &Queue,
    job: Job,
    answer: oneshot::Receiver<Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match queue {
        Queue::Task(tx) => tx.send(job).await.map_err(|_| StoreError::Stopped)?,
        Queue::Combined(c) => c.submit(job).await,
    }
    answer.await.map_err(|_| StoreError::Stopped)?
}

/// Every device of a group of lookups, once each.
fn all_devices(group: &[Lookup]) -> Vec<DeviceKey> {
    let mut all: Vec<DeviceKey> = group
        .iter()
        .flat_map(|l| l.devices.iter().cloned())
        .collect();
    all.sort();
    all.dedup();
    all
}

/// Answers a group of lookups from one `read` of all their devices, or,
/// when that fails, from one `read` each.
pub fn answer_lookups<F>(group: Vec<Lookup>, mut read: F)
where
    F: FnMut(&[DeviceKey]) -> Result<Vec<Rejection>, StoreError>,
{
    match read(&all_devices(&group)) {
        Ok(found) => hand_out(group, &found),
        Err(_) => {
            for l in group {
                let _ = l.reply.send(read(&l.devices));
            }
        }
    }
}

/// Answers each lookup of a group with its own devices' rejections among `found`.
fn hand_out(group: Vec<Lookup>, found: &[Rejection]) {
    for l in group {
        let mine = found
            .iter()
            .filter(|r| {
                l.devices
                    .iter()
                    .any(|d| d.app_id == r.app_id && d.pushkey == r.pushkey)
            })
            .cloned()
            .collect();
        let _ = l.reply.send(Ok(mine));
    }
}

/// The callers' side of the writer task.
pub struct Writer {
    queue: Queue,
    /// Why the last write failed; `None` once one succeeds again.
    last_failure: std::sync::Mutex<Option<String>>,
}

impl Writer {
    /// Spawns the writer task; `write` writes one group (and answers every operation).
    pub fn start<F, Fut>(write: F) -> Writer
    where
        F: Fn(Vec<Op>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        Writer {
            queue: Queue::Task(spawn_grouping(move |group: Vec<Job>| {
                write(split_jobs(group).ops)
            })),
            last_failure: std::sync::Mutex::new(None),
        }
    }

    /// A writer and a reader whose jobs `serve` serves, in their callers'
    /// tasks ([`Combiner`]): it keeps what it prepared (a connection, its
    /// statements) across groups. No hand-off to another thread.
    pub fn start_combined(serve: impl Serve) -> (Writer, Reader) {
        let queue = Queue::Combined(Combiner::new(serve));
        let reader = Reader {
            queue: queue.clone(),
        };
        let writer = Writer {
            queue,
            last_failure: std::sync::Mutex::new(None),
        };
        (writer, reader)
    }

    /// `Err` from a failed write until a write succeeds again.
    pub fn last_write(&self) -> Result<(), StoreError> {
        match self.last_failure.lock().map(|f| f.clone()) {
            Ok(None) => Ok(()),
            Ok(Some(why)) => Err(StoreError::WriteFailing(why)),
            Err(_) => Err(StoreError::Stopped),
        }
    }

    /// Remembers how a write ended, and passes its result on.
    pub fn noted<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        let failure = result.as_ref().err().map(ToString::to_string);
        if let Ok(mut last) = self.last_failure.lock() {
            if last.is_some() != failure.is_some() {
                match &failure {
                    Some(why) => {
                        tracing::error!(error = %why, "store write failed: not ready until a write succeeds")
                    }
                    None => tracing::info!("store writes succeed again"),
                }
            }
            *last = failure;
        }
        result
    }

    pub async fn claim(
        &self,
        keys: &[ClaimKey],
        now: Millis,
        lease_until: Millis,
        settled_before: Millis,
    ) -> Result<Vec<ClaimKey>, StoreError> {
        let (reply, answer) = oneshot::channel();
        let op = Op::Claim {
            keys: keys.to_vec(),
            now,
            lease_until,
            settled_before,
            reply,
        };
        self.noted(self.submit(op, answer).await)
    }

    async fn submit<T>(
        &self,
        op: Op,
        answer: oneshot::Receiver<Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        hand_off(&self.queue, Job::Write(op), answer).await
    }

    pub async fn settle(&self, settlement: Settlement) -> Result<Vec<i64>, StoreError> {
        let (reply, answer) = oneshot::channel();
        let op = Op::Settle { settlement, reply };
        self.noted(self.submit(op, answer).await)
    }
}

/// A group of operations as two statements' worth of work: one settlement
/// (every settle of the group) and one claim list (every claim of the group).
/// A key claimed twice in the group goes to its first claimant, as if the
/// second had lost the race; claims use the group's latest `now`.
pub struct Merged<'a> {
    pub settlement: Settlement,
    /// Unique claim keys with the lease end their claimant asked for.
    pub claims: Vec<(&'a ClaimKey, Millis)>,
    pub now: Millis,
    pub settled_before: Millis,
    owner: std::collections::HashMap<&'a ClaimKey, usize>,
    /// Outbox entries each operation enqueued, in order.
    enqueued: Vec<usize>,
}

pub fn merge(ops: &[Op]) -> Merged<'_> {
    let mut m = Merged {
        settlement: Settlement::default(),
        claims: Vec::new(),
        now: Millis::MIN,
        settled_before: Millis::MIN,
        owner: std::collections::HashMap::new(),
        enqueued: Vec::with_capacity(ops.len()),
    };
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Claim {
                keys,
                now,
                lease_until,
                settled_before,
                ..
            } => {
                m.now = m.now.max(*now);
                m.settled_before = m.settled_before.max(*settled_before);
                for k in keys {
                    if let std::collections::hash_map::Entry::Vacant(v) = m.owner.entry(k) {
                        v.insert(i);
                        m.claims.push((k, *lease_until));
                    }
                }
                m.enqueued.push(0);
            }
            Op::Settle { settlement: s, .. } => {
                let t = &mut m.settlement;
                t.now = t.now.max(s.now);
                t.settle_claims.extend(s.settle_claims.iter().cloned());
                t.release_claims.extend(s.release_claims.iter().cloned());
                t.remember.extend(s.remember.iter().cloned());
                t.forget.extend(s.forget.iter().cloned());
                t.enqueue.extend(s.enqueue.iter().cloned());
                t.delete.extend(s.delete.iter().copied());
                t.reschedule.extend(s.reschedule.iter().cloned());
                m.enqueued.push(s.enqueue.len());
            }
        }
    }
    m
}

impl Merged<'_> {
    /// Each operation's result, in order, from the ids of the merged
    /// settlement's new outbox entries and the claim keys granted.
    pub fn split(&self, ops: &[Op], ids: Vec<i64>, granted: Vec<ClaimKey>) -> Vec<Done> {
        let mut claimed: Vec<Vec<ClaimKey>> = vec![Vec::new(); ops.len()];
        for k in granted {
            if let Some(&i) = self.owner.get(&k) {
                claimed[i].push(k);
            }
        }
        let mut ids = ids.into_iter();
        ops.iter()
            .zip(claimed)
            .zip(&self.enqueued)
            .map(|((op, c), &n)| match op {
                Op::Claim { .. } => Done::Claimed(c),
                Op::Settle { .. } => Done::Settled(ids.by_ref().take(n).collect()),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewEntry;

    fn key(p: &str) -> ClaimKey {
        ClaimKey {
            app_id: "a".into(),
            pushkey: p.into(),
            event_id: "$e".into(),
        }
    }

    fn entry(p: &str) -> NewEntry {
        NewEntry {
            app_id: "a".into(),
            pushkey: p.into(),
            body: "{}".into(),
            shared: None,
            created_at: 0,
            due_at: 0,
            attempts: 1,
            last_error: None,
        }
    }

    fn claim(keys: &[&str], now: Millis) -> Op {
        Op::Claim {
            keys: keys.iter().map(|k| key(k)).collect(),
            now,
            lease_until: now + 100,
            settled_before: now - 1000,
            reply: oneshot::channel().0,
        }
    }

    fn settle(entries: &[&str], now: Millis) -> Op {
        Op::Settle {
            settlement: Settlement {
                now,
                enqueue: entries.iter().map(|p| entry(p)).collect(),
                ..Settlement::default()
            },
            reply: oneshot::channel().0,
        }
    }

    #[test]
    fn a_group_merges_into_one_settlement_and_one_claim_list_and_splits_back() {
        let ops = vec![
            claim(&["x", "shared"], 10),
            settle(&["q1", "q2"], 12),
            claim(&["shared", "y"], 11),
            settle(&[], 9),
            settle(&["q3"], 8),
        ];
        let m = merge(&ops);
        // A key claimed twice goes to its first claimant; claims use the latest clock.
        let claimed: Vec<&str> = m.claims.iter().map(|(k, _)| k.pushkey.as_str()).collect();
        assert_eq!(claimed, ["x", "shared", "y"]);
        assert_eq!(
            m.claims[2].1, 111,
            "each key keeps its own claimant's lease"
        );
        assert_eq!((m.now, m.settled_before), (11, -989));
        assert_eq!(m.settlement.now, 12);
        let queued: Vec<&str> = m
            .settlement
            .enqueue
            .iter()
            .map(|e| e.pushkey.as_str())
            .collect();
        assert_eq!(queued, ["q1", "q2", "q3"]);

        // The store granted "x", "shared" and "y", and gave the three entries ids 7, 8, 9.
        let done = m.split(&ops, vec![7, 8, 9], vec![key("y"), key("shared"), key("x")]);
        let shown: Vec<String> = done
            .iter()
            .map(|d| match d {
                Done::Claimed(k) => {
                    let mut k: Vec<&str> = k.iter().map(|k| k.pushkey.as_str()).collect();
                    k.sort();
                    format!("claimed {k:?}")
                }
                Done::Settled(ids) => format!("settled {ids:?}"),
            })
            .collect();
        assert_eq!(
            shown,
            [
                r#"claimed ["shared", "x"]"#,
                "settled [7, 8]",
                r#"claimed ["y"]"#,
                "settled []",
                "settled [9]",
            ]
        );
    }
}
