//! The jobs callers hand to the store's grouping task or combining queue,
//! and a group of them as it is served: writes (claims, settlements),
//! rejection lookups and claim-state questions, each with its caller's reply
//! channel.

use tokio::sync::oneshot;

use super::{ClaimKey, ClaimState, DeviceKey, Millis, Rejection, Settlement, StoreError};

/// Most operations in one transaction (bounds how long its locks are held).
pub const MAX_BATCH: usize = 128;

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
    pub fn answer<E: Into<StoreError>>(self, result: Result<Done, E>) {
        match self {
            Op::Claim { reply, .. } => {
                let _ = reply.send(match result {
                    Ok(Done::Claimed(v)) => Ok(v),
                    Ok(Done::Settled(_)) => Err(StoreError::Stopped),
                    Err(e) => Err(e.into()),
                });
            }
            Op::Settle { reply, .. } => {
                let _ = reply.send(match result {
                    Ok(Done::Settled(v)) => Ok(v),
                    Ok(Done::Claimed(_)) => Err(StoreError::Stopped),
                    Err(e) => Err(e.into()),
                });
            }
        }
    }
}

impl Op {
    /// How many claim keys the operation holds (a settlement: none).
    pub fn keys(&self) -> usize {
        match self {
            Op::Claim { keys, .. } => keys.len(),
            Op::Settle { .. } => 0,
        }
    }
}
/// One rejection lookup of one caller.
pub struct Lookup {
    pub devices: Vec<DeviceKey>,
    pub reply: oneshot::Sender<Result<Vec<Rejection>, StoreError>>,
}

/// Where a caller stands on some claims (SQLite's hot path keeps the leases
/// of claims being sent in memory: only it can tell).
pub struct States {
    pub keys: Vec<ClaimKey>,
    pub reply: oneshot::Sender<Result<Vec<(ClaimKey, ClaimState)>, StoreError>>,
}

/// What a caller hands to a grouping task: writers' operations and readers'
/// lookups go to separate tasks on the sqlx path, to one combining queue on SQLite's
/// (which alone answers [`States`]).
pub enum Job {
    Write(Op),
    Read(Lookup),
    States(States),
}

/// One hand-off's jobs by kind, each in the order they came.
#[derive(Default)]
pub struct Group {
    pub ops: Vec<Op>,
    pub lookups: Vec<Lookup>,
    pub states: Vec<States>,
}

impl Group {
    /// Adds `jobs`, each to its kind's list.
    pub fn add(&mut self, jobs: impl IntoIterator<Item = Job>) {
        for job in jobs {
            match job {
                Job::Write(op) => self.ops.push(op),
                Job::Read(l) => self.lookups.push(l),
                Job::States(s) => self.states.push(s),
            }
        }
    }
}
