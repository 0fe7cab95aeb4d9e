//! A future that is finished even when whoever awaits it goes away.
//!
//! A request's work (claims, sends, settlements, outbox entries) must not be
//! cut short when the homeserver hangs up and the server drops the handler.
//! Spawning the work and awaiting its handle does that, at the price of a
//! task and a cross-thread wake-up per request. [`Finished`] instead runs the
//! work in the caller's task and, only if it is dropped before the work is
//! done, hands what is left to a task of its own.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio_util::task::TaskTracker;

/// `fut`, polled in place; if dropped unfinished, finished on `tracker`
/// (its output then unused).
pub struct Finished<F: Future + Send + 'static>
where
    F::Output: Send,
{
    fut: Option<Pin<Box<F>>>,
    tracker: TaskTracker,
}

impl<F: Future + Send + 'static> Finished<F>
where
    F::Output: Send,
{
    pub fn new(fut: F, tracker: &TaskTracker) -> Self {
        Finished {
            fut: Some(Box::pin(fut)),
            tracker: tracker.clone(),
        }
    }
}

impl<F: Future + Send + 'static> Future for Finished<F>
where
    F::Output: Send,
{
    type Output = Option<F::Output>;

    /// The output, or `None` when polled again after it was given.
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<F::Output>> {
        // Out while it is polled: a future that panics is dropped with the
        // unwinding, not handed to the tracker to panic again.
        let Some(mut fut) = self.fut.take() else {
            return Poll::Ready(None);
        };
        match fut.as_mut().poll(cx) {
            Poll::Ready(out) => Poll::Ready(Some(out)),
            Poll::Pending => {
                self.fut = Some(fut);
                Poll::Pending
            }
        }
    }
}

impl<F: Future + Send + 'static> Drop for Finished<F>
where
    F::Output: Send,
{
    fn drop(&mut self) {
        let Some(fut) = self.fut.take() else { return };
        // Dropped inside the runtime (a closed connection): finish there.
        // Outside it (the runtime itself shutting down) nothing can run it.
        if tokio::runtime::Handle::try_current().is_ok() {
            self.tracker.spawn(async move {
                fut.await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn work_dropped_midway_is_finished_on_the_tracker() {
        let tracker = TaskTracker::new();
        let done = Arc::new(AtomicBool::new(false));
        let work = {
            let done = done.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                done.store(true, Ordering::SeqCst);
            }
        };
        let waiting = Finished::new(work, &tracker);
        // The caller gives up after 10 ms: the work goes on without it.
        assert!(tokio::time::timeout(Duration::from_millis(10), waiting)
            .await
            .is_err());
        assert!(!done.load(Ordering::SeqCst));
        tracker.close();
        tracker.wait().await;
        assert!(done.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn work_awaited_to_the_end_needs_no_task() {
        let tracker = TaskTracker::new();
        assert_eq!(Finished::new(async { 7 }, &tracker).await, Some(7));
        assert_eq!(tracker.len(), 0);
        tracker.close();
        assert!(tracker.is_empty());
    }
}
