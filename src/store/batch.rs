//! Group commit. The claims and settlements of concurrent requests queue up
//! for one writer task, which writes everything waiting in one transaction:
//! under load, one commit serves many requests instead of two commits each.
//! Each caller still gets its own answer only after that commit, so nothing
//! is answered before it is durable. When a group transaction fails, its
//! operations are written again one by one, so one bad operation fails only
//! its own caller.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

use super::{ClaimKey, Millis, Settlement, StoreError};

/// Most operations in one transaction (bounds how long its locks are held).
pub const MAX_BATCH: usize = 128;
/// Operations waiting for the writer; callers wait for room beyond this.
const QUEUE: usize = 4096;

/// One write of one caller.
pub enum Op {
    Claim {
        keys: Vec<ClaimKey>,
        now: Millis,
        lease_until: Millis,
        settled_before: Millis,
        reply: oneshot::Sender<Result<Vec<ClaimKey>, StoreError>>,
    },
    Settle {
        settlement: Settlement,
        reply: oneshot::Sender<Result<Vec<i64>, StoreError>>,
    },
}

/// What an operation returned.
pub enum Done {
    Claimed(Vec<ClaimKey>),
    Settled(Vec<i64>),
}

impl Op {
    /// Sends the result to the caller (who may have gone: then nothing happens).
    pub fn answer(self, result: Result<Done, sqlx::Error>) {
        match self {
            Op::Claim { reply, .. } => {
                let _ = reply.send(match result {
                    Ok(Done::Claimed(v)) => Ok(v),
                    Ok(Done::Settled(_)) => Err(StoreError::WriterGone),
                    Err(e) => Err(e.into()),
                });
            }
            Op::Settle { reply, .. } => {
                let _ = reply.send(match result {
                    Ok(Done::Settled(v)) => Ok(v),
                    Ok(Done::Claimed(_)) => Err(StoreError::WriterGone),
                    Err(e) => Err(e.into()),
                });
            }
        }
    }
}

/// The callers' side of the writer task.
pub struct Writer {
    tx: mpsc::Sender<Op>,
}

impl Writer {
    /// Spawns the writer task; `write` writes one group (and answers every operation).
    pub fn start<F, Fut>(write: F) -> Writer
    where
        F: Fn(Vec<Op>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let (tx, mut rx) = mpsc::channel::<Op>(QUEUE);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut ops = vec![first];
                while ops.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(op) => ops.push(op),
                        Err(_) => break,
                    }
                }
                write(ops).await;
            }
        });
        Writer { tx }
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
        self.tx.send(op).await.map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }

    pub async fn settle(&self, settlement: Settlement) -> Result<Vec<i64>, StoreError> {
        let (reply, answer) = oneshot::channel();
        let op = Op::Settle { settlement, reply };
        self.tx.send(op).await.map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
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
