//! The audit log's file: events handed to a writer thread through a bounded queue, so that no
//! request's task (nor a watch's end, which cannot wait) does file I/O on an async worker; the
//! thread appends and rotates by size, count and age (`--audit-log-*`).
//!
//! Like kube-apiserver's `batch` mode, an event that finds the queue full (more than
//! [`QUEUE_EVENTS`] events or [`QUEUE_BYTES`] bytes waiting, when the disk cannot keep up) is
//! dropped rather than holding the request, and counted in `apiserver_audit_error_total
//! {plugin="log"}`.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Duration, SystemTime};

/// Events waiting for the writer at most (kube-apiserver's default batch buffer).
pub const QUEUE_EVENTS: usize = 10_000;
/// Bytes of events waiting for the writer at most.
pub const QUEUE_BYTES: usize = 64 * 1024 * 1024;

/// `--audit-log-*` rotation settings.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rotation {
    /// Rotate when the file would exceed this many bytes (0: never).
    pub max_bytes: u64,
    /// Keep at most this many rotated files (0: all).
    pub max_backups: usize,
    /// Delete rotated files older than this (zero: keep).
    pub max_age: Duration,
}

/// What the writer thread is sent.
enum Message {
    /// One event's line.
    Line(Vec<u8>),
    /// Answer once everything sent before is written.
    Flush(std::sync::mpsc::Sender<()>),
}

/// The file's side of the audit log: the queue to its writer thread.
pub(crate) struct AuditFile {
    queue: SyncSender<Message>,
    queued_bytes: Arc<AtomicUsize>,
    dropped: prometheus::IntCounter,
}

impl AuditFile {
    /// Open (append to) `path` and start its writer thread; `dropped` counts refused events.
    pub(crate) fn open(path: &Path, rotation: Rotation, dropped: prometheus::IntCounter) -> Result<Self, String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let file = append(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let (queue, received) = std::sync::mpsc::sync_channel(QUEUE_EVENTS);
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let writer = Writer {
            path: path.to_path_buf(),
            rotation,
            file,
            size,
            queued_bytes: queued_bytes.clone(),
        };
        std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || writer.run(received))
            .map_err(|e| format!("the audit log's writer thread: {e}"))?;
        Ok(AuditFile {
            queue,
            queued_bytes,
            dropped,
        })
    }

    /// Queue one line; never waits (see the module's note on a full queue).
    pub(crate) fn write(&self, line: Vec<u8>) {
        let length = line.len();
        if self.queued_bytes.fetch_add(length, Ordering::SeqCst) + length > QUEUE_BYTES {
            self.queued_bytes.fetch_sub(length, Ordering::SeqCst);
            self.refused("its queue holds the most bytes allowed");
            return;
        }
        match self.queue.try_send(Message::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.queued_bytes.fetch_sub(length, Ordering::SeqCst);
                self.refused("its queue holds the most events allowed");
            }
            Err(TrySendError::Disconnected(_)) => {
                self.queued_bytes.fetch_sub(length, Ordering::SeqCst);
                self.refused("its writer thread has ended");
            }
        }
    }

    fn refused(&self, why: &str) {
        self.dropped.inc();
        // The first, then every thousandth: a stalled disk must not also flood the log.
        let count = self.dropped.get();
        if count == 1 || count.is_multiple_of(1000) {
            tracing::error!(dropped = count, "audit event dropped: {why}");
        }
    }

    /// Wait (blocking the calling thread) until every line queued before is in the file.
    pub(crate) fn flush(&self) {
        let (done, finished) = std::sync::mpsc::channel();
        if self.queue.send(Message::Flush(done)).is_ok() {
            let _ = finished.recv();
        }
    }
}

/// The writer thread's state: the open file and its size.
struct Writer {
    path: PathBuf,
    rotation: Rotation,
    file: File,
    size: u64,
    queued_bytes: Arc<AtomicUsize>,
}

impl Writer {
    /// Write what arrives until every sender is gone and the queue is empty.
    fn run(mut self, received: Receiver<Message>) {
        for message in received {
            match message {
                Message::Line(line) => {
                    self.queued_bytes.fetch_sub(line.len(), Ordering::SeqCst);
                    self.write(&line);
                }
                Message::Flush(done) => {
                    let _ = self.file.flush();
                    let _ = done.send(());
                }
            }
        }
    }

    /// Append one line, rotating first if it would not fit.
    fn write(&mut self, line: &[u8]) {
        let full = self.size > 0 && self.size + line.len() as u64 > self.rotation.max_bytes;
        if self.rotation.max_bytes > 0 && full {
            match rotate(&self.path, &self.rotation) {
                Ok(fresh) => (self.file, self.size) = (fresh, 0),
                Err(e) => tracing::error!("audit log rotation failed: {e}"),
            }
        }
        match self.file.write_all(line) {
            Ok(()) => self.size += line.len() as u64,
            Err(e) => tracing::error!("audit log write failed: {e}"),
        }
    }
}

fn append(path: &Path) -> std::io::Result<File> {
    File::options().create(true).append(true).open(path)
}

/// Move the file at `path` aside (`name-<time>.ext`), prune old ones, open a new one.
fn rotate(path: &Path, rotation: &Rotation) -> std::io::Result<File> {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("audit").to_string();
    let ext = path
        .extension()
        .and_then(|s| s.to_str())
        .map(|e| format!(".{e}"))
        .unwrap_or_default();
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let stamp = jiff::Timestamp::now().strftime("%Y-%m-%dT%H-%M-%S%.3f").to_string();
    std::fs::rename(path, dir.join(format!("{stem}-{stamp}{ext}")))?;
    let mut backups: Vec<(PathBuf, SystemTime)> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(&format!("{stem}-")) && name.ends_with(&ext)
        })
        .filter_map(|e| Some((e.path(), e.metadata().ok()?.modified().ok()?)))
        .collect();
    // Names carry the time: newest first.
    backups.sort_by(|a, b| b.0.cmp(&a.0));
    for (i, (backup, modified)) in backups.iter().enumerate() {
        let too_many = rotation.max_backups > 0 && i >= rotation.max_backups;
        let too_old = !rotation.max_age.is_zero() && modified.elapsed().is_ok_and(|age| age > rotation.max_age);
        if too_many || too_old {
            let _ = std::fs::remove_file(backup);
        }
    }
    append(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_beyond_the_queue_bound_is_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let dropped = prometheus::IntCounter::new("dropped", "dropped events").unwrap();
        let file = AuditFile::open(&path, Rotation::default(), dropped.clone()).unwrap();
        file.write(vec![b'x'; QUEUE_BYTES + 1]);
        file.write(b"kept\n".to_vec());
        file.flush();
        assert_eq!(dropped.get(), 1);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "kept\n");
        assert_eq!(
            file.queued_bytes.load(Ordering::SeqCst),
            0,
            "nothing left counted as queued"
        );
    }
}
