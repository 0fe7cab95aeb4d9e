//! A combining queue: the store's work runs in the tasks of the requests
//! that ask for it, not on a thread of its own. A caller queues its job,
//! and if the engine (SQLite's connection) is free it takes it and serves
//! everything queued — its own job and those of callers that came while
//! another held it — then answers each. A caller that finds the engine taken
//! just waits for its answer: the holder serves it before letting go.
//!
//! Why: handing every job to a thread and back cost two sleeps and two
//! wake-ups per request (futex calls, context switches), a third of what
//! the SQLite store added per notification (docs/performance.md). Served
//! here, a job that finds the engine free costs none of them.
//!
//! What must not block a request's worker thread is sent to the blocking
//! pool instead ([`Serve::serve`] says when): a write that would wait for
//! the sqlx writer's turn or for SQLite's lock. A holder serves a bounded number of groups and
//! passes the rest on to a task of its own, so one request does not serve
//! everybody else's for long.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError, TryLockError};

use super::jobs::{Group, Job, MAX_BATCH};

/// Groups one holder serves before passing the queue on to a task.
const GROUPS_PER_TURN: usize = 4;

/// The engine's side: serves one group of jobs.
pub trait Serve: Send + 'static {
    /// Serves `group` (answering every job it can); `may_block`: this runs
    /// on the blocking pool and may wait (for the writer's turn, SQLite's lock). Returns
    /// `true` when work is left that needs waiting: the combiner then has
    /// [`Serve::serve`] called again with `may_block` on the blocking pool.
    fn serve(&mut self, group: Group, may_block: bool) -> bool;
}

struct Engine {
    engine: Box<dyn Serve>,
    /// A blocking-pool run is scheduled and has not begun yet.
    blocking_scheduled: bool,
}

/// The queue and the engine, shared by every caller.
pub struct Combiner {
    queue: Mutex<VecDeque<Job>>,
    engine: Mutex<Engine>,
}

impl Combiner {
    pub fn new(engine: impl Serve) -> Arc<Self> {
        Arc::new(Combiner {
            queue: Mutex::new(VecDeque::new()),
            engine: Mutex::new(Engine {
                engine: Box::new(engine),
                blocking_scheduled: false,
            }),
        })
    }

    /// Queues `job` and serves the queue if nobody else is — after letting
    /// the other tasks ready on this worker run once, so that under load
    /// they queue theirs and one transaction serves them all (group
    /// commit); on an idle gateway that costs nothing. If the caller is
    /// dropped in between, the queue is still served.
    pub async fn submit(self: &Arc<Self>, job: Job) {
        if let Ok(mut q) = self.queue.lock() {
            q.push_back(job);
        }
        let serve = ServeOnDrop(self);
        tokio::task::yield_now().await;
        drop(serve);
    }

    /// Serves the queue while the engine is free; see the module's docs.
    fn combine(self: &Arc<Self>, may_block: bool) {
        let mut groups = 0;
        let mut first = true;
        let mut waits_here: Option<Arc<Combiner>> = None;
        loop {
            {
                // Blocking-pool runs wait for the engine; callers never do.
                let may_block = may_block && std::mem::take(&mut first);
                // A panic while serving (a bug) leaves the engine as it was
                // between statements: serving goes on (an open transaction
                // is rolled back before the next).
                let mut held = if may_block {
                    self.engine.lock().unwrap_or_else(PoisonError::into_inner)
                } else {
                    match self.engine.try_lock() {
                        Ok(e) => e,
                        Err(TryLockError::Poisoned(p)) => p.into_inner(),
                        Err(TryLockError::WouldBlock) => return,
                    }
                };
                let mut blocking = may_block;
                if blocking {
                    held.blocking_scheduled = false;
                }
                loop {
                    let group = self.take();
                    let empty =
                        group.ops.is_empty() && group.lookups.is_empty() && group.states.is_empty();
                    // A blocking run serves at least once: the work left to it.
                    if empty && !blocking {
                        break;
                    }
                    let left = held.engine.serve(group, blocking);
                    blocking = false;
                    if left && !held.blocking_scheduled {
                        held.blocking_scheduled = true;
                        let me = self.clone();
                        match tokio::runtime::Handle::try_current() {
                            Ok(rt) => drop(rt.spawn_blocking(move || me.combine(true))),
                            // Outside a runtime (a caller dropped at shutdown): this
                            // thread may wait, once the engine is let go.
                            Err(_) => waits_here = Some(me),
                        }
                    }
                    groups += 1;
                    if empty {
                        break;
                    }
                    if groups >= GROUPS_PER_TURN {
                        if let Ok(rt) = tokio::runtime::Handle::try_current() {
                            // Enough for one request: a task of its own goes on.
                            drop(held);
                            let me = self.clone();
                            rt.spawn(async move { me.combine(false) });
                            return;
                        }
                    }
                }
            }
            if let Some(me) = waits_here.take() {
                me.combine(true);
                return;
            }
            // A job queued after the last take, by a caller that found the
            // engine taken, is ours to serve.
            if self.queue.lock().map_or(true, |q| q.is_empty()) {
                return;
            }
        }
    }

    /// Up to [`MAX_BATCH`] queued jobs, split by kind.
    fn take(&self) -> Group {
        let mut group = Group::default();
        if let Ok(mut q) = self.queue.lock() {
            let n = q.len().min(MAX_BATCH);
            group.add(q.drain(..n));
        }
        group
    }
}

/// Serves the queue when dropped: a job queued is never left with nobody to serve it.
struct ServeOnDrop<'a>(&'a Arc<Combiner>);

impl Drop for ServeOnDrop<'_> {
    fn drop(&mut self) {
        self.0.combine(false);
    }
}
