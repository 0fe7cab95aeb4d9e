//! The log writer that never blocks a request: a formatted line is handed to
//! a bounded in-memory queue and written by one thread per destination, in
//! batches (one `write` per batch, not per line). When the queue is full —
//! the disk or the pipe behind it is slower than the lines arrive — the line
//! is dropped and counted (`pushgate_log_lines_dropped_total`), never waited
//! for. The queue is drained and flushed at exit (keep [`super::LogGuard`]).

use std::io::{BufWriter, Write};
use std::sync::{Mutex, OnceLock};

use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};

/// Lines a destination may have waiting (at a few hundred bytes each, a few
/// MiB at most; about a quarter of a second at 30,000 requests/s).
pub const QUEUE_LINES: usize = 8192;

/// The writer thread's batch buffer: the lines it finds waiting go out in
/// one `write` of up to this many bytes.
const BATCH_BYTES: usize = 64 * 1024;

/// The drop counters of every queue this process made.
fn counters() -> &'static Mutex<Vec<ErrorCounter>> {
    static COUNTERS: OnceLock<Mutex<Vec<ErrorCounter>>> = OnceLock::new();
    COUNTERS.get_or_init(Default::default)
}

/// A queued writer in front of `out`, and the guard that flushes it when dropped.
pub fn spawn<W: Write + Send + 'static>(out: W, thread_name: &str) -> (NonBlocking, WorkerGuard) {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUE_LINES)
        .thread_name(thread_name)
        .finish(BufWriter::with_capacity(BATCH_BYTES, out));
    counters()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(writer.error_counter());
    (writer, guard)
}

/// Log lines dropped so far because a queue was full.
pub fn dropped_lines() -> u64 {
    counters()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|c| c.dropped_lines() as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Condvar};

    /// A writer that blocks until released, as a stalled disk or a full pipe does.
    #[derive(Clone, Default)]
    struct Stalled {
        released: Arc<(Mutex<bool>, Condvar)>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (lock, cv) = &*self.released;
            let mut open = lock.lock().unwrap_or_else(|e| e.into_inner());
            while !*open {
                open = cv.wait(open).unwrap_or_else(|e| e.into_inner());
            }
            self.written
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_writer_drops_and_counts_lines_instead_of_blocking() {
        let out = Stalled::default();
        let (mut writer, guard) = spawn(out.clone(), "log-test");
        // More lines than the queue and the batch buffer hold; every write returns at once.
        let lines = QUEUE_LINES + 2 * BATCH_BYTES;
        let started = std::time::Instant::now();
        for i in 0..lines {
            writer
                .write_all(format!("{i}\n").as_bytes())
                .expect("write");
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let dropped = writer.error_counter().dropped_lines() as u64;
        assert!(dropped > 0, "a full queue drops lines");
        assert!(dropped_lines() >= dropped, "counted for the metric");
        {
            let (lock, cv) = &*out.released;
            *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
            cv.notify_all();
        }
        // Dropping the guard drains the queue and flushes the batch buffer.
        drop(guard);
        let written = out
            .written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let written = String::from_utf8(written).expect("utf-8");
        assert_eq!(written.lines().count() as u64 + dropped, lines as u64);
        assert!(written.starts_with("0\n1\n"), "lines in order, whole");
    }
}
