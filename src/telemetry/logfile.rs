//! Log files that logrotate can move away: opened for appending, and opened
//! again by path at `SIGHUP` ([`reopen_all`]), as Python's
//! `WatchedFileHandler` notices a renamed file. Lines come in whole (a
//! batch of them from the log queue) and each batch is written under a
//! lock, so lines never interleave.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// One log file, shared by every layer that writes to it.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: Mutex<File>,
}

/// Every log file opened by this process, for [`reopen_all`].
fn open_files() -> &'static Mutex<Vec<Arc<LogFile>>> {
    static FILES: OnceLock<Mutex<Vec<Arc<LogFile>>>> = OnceLock::new();
    FILES.get_or_init(Default::default)
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl LogFile {
    /// Opens `path` for appending (creating it), or returns the one already
    /// open for the same path so two layers share a lock.
    pub fn open(path: &Path) -> io::Result<Arc<LogFile>> {
        let mut files = open_files().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = files.iter().find(|f| f.path == path) {
            return Ok(f.clone());
        }
        let f = Arc::new(LogFile {
            path: path.to_path_buf(),
            file: Mutex::new(open_append(path)?),
        });
        files.push(f.clone());
        Ok(f)
    }

    /// Opens the path again: after a rotation it names a new file.
    fn reopen(&self) -> io::Result<()> {
        let fresh = open_append(&self.path)?;
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }
}

/// Reopens every log file (at `SIGHUP`); a file that cannot be reopened keeps
/// the old handle, so lines still go somewhere, and is returned with its error.
pub fn reopen_all() -> Vec<(PathBuf, io::Error)> {
    let files = open_files().lock().unwrap_or_else(|e| e.into_inner());
    files
        .iter()
        .filter_map(|f| f.reopen().err().map(|e| (f.path.clone(), e)))
        .collect()
}

/// Writes to one log file; the queue's writer thread ([`super::queue`])
/// hands it whole lines, a batch at a time.
pub struct LineWriter(Arc<LogFile>);

impl LineWriter {
    pub fn new(file: Arc<LogFile>) -> LineWriter {
        LineWriter(file)
    }
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut file = self.0.file.lock().unwrap_or_else(|e| e.into_inner());
        file.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_go_to_the_new_file_after_a_rename_and_reopen() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("pushgate.log");
        let mut f = LineWriter::new(LogFile::open(&path).expect("open"));
        f.write_all(b"one\n").expect("write");
        std::fs::rename(&path, dir.path().join("pushgate.log.1")).expect("rotate");
        f.write_all(b"two\n").expect("write");
        assert!(reopen_all().is_empty());
        f.write_all(b"three\n").expect("write");
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).expect("read");
        assert_eq!(read("pushgate.log.1"), "one\ntwo\n");
        assert_eq!(read("pushgate.log"), "three\n");
    }
}
