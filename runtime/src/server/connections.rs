//! Client connections, bounded: at most `--max-connections` at once (at the limit the one
//! idle longest is closed to make room; with none idle the new one is refused), each closed
//! after `--idle-connection-timeout` with no request in flight, and the process's open-file
//! limit raised to its hard limit at start (as Go does) so idle connections cannot starve
//! the server of file descriptors.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// File descriptors kept back from connections: storage files, etcd and core-API clients,
/// the audit log, certificate reloads.
pub const RESERVED_FDS: u64 = 256;
/// How long a new connection waits for a shed idle one to release its slot.
const SHED_WAIT: Duration = Duration::from_millis(250);

/// Raise the soft open-file limit to the hard one; the limit in force afterwards.
pub fn raise_open_file_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!("could not raise the open-file limit: {e}");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    }
}

/// The connection limit that fits `open_files` descriptors.
pub fn fitting_limit(wanted: usize, open_files: u64) -> usize {
    let fits = open_files.saturating_sub(RESERVED_FDS).max(1);
    wanted.min(usize::try_from(fits).unwrap_or(usize::MAX)).max(1)
}

/// What every connection shares.
pub struct Connections {
    permits: Arc<Semaphore>,
    max: u32,
    open: Mutex<HashMap<u64, Arc<State>>>,
    next_id: AtomicU64,
    idle_timeout: Duration,
    epoch: Instant,
}

/// One connection's state, as seen by the limiter.
struct State {
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` at which the last request ended (or the connection opened).
    idle_since: AtomicU64,
    close: Notify,
}

/// A connection's slot; released when dropped.
pub struct Admitted {
    connections: Arc<Connections>,
    id: u64,
    state: Arc<State>,
    _permit: OwnedSemaphorePermit,
}

/// Marks a request in flight on its connection until dropped.
pub struct Busy(Arc<State>, Arc<Connections>);

impl Connections {
    /// Room for `max` connections, closed after `idle_timeout` without a request.
    pub fn new(max: usize, idle_timeout: Duration) -> Arc<Self> {
        let max = u32::try_from(max.clamp(1, Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
        Arc::new(Connections {
            permits: Arc::new(Semaphore::new(max as usize)),
            max,
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            idle_timeout,
            epoch: Instant::now(),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A slot for a new connection: a free one, or one freed by closing the connection idle
    /// the longest; `None` when every connection is busy.
    pub async fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                self.shed_oldest_idle()?;
                tokio::time::timeout(SHED_WAIT, self.permits.clone().acquire_owned())
                    .await
                    .ok()?
                    .ok()?
            }
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(State {
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(self.now_ms()),
            close: Notify::new(),
        });
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, state.clone());
        Some(Admitted {
            connections: self.clone(),
            id,
            state,
            _permit: permit,
        })
    }

    /// Ask the connection idle the longest to close; `None` when none is idle.
    fn shed_oldest_idle(&self) -> Option<()> {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let oldest = open
            .values()
            .filter(|s| s.in_flight.load(Ordering::Acquire) == 0)
            .min_by_key(|s| s.idle_since.load(Ordering::Acquire))?;
        tracing::debug!("connection limit reached: closing the connection idle the longest");
        oldest.close.notify_one();
        Some(())
    }

    /// Wait until every connection has ended, at most `within`; whether they all did.
    pub async fn drained(&self, within: Duration) -> bool {
        tokio::time::timeout(within, self.permits.acquire_many(self.max))
            .await
            .is_ok()
    }
}

impl Admitted {
    /// A request starts on this connection.
    pub fn busy(&self) -> Busy {
        self.state.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(self.state.clone(), self.connections.clone())
    }

    /// Resolves when this connection should close: it was shed, or it has been idle for
    /// the idle timeout.
    pub async fn should_close(&self) {
        let timeout = self.connections.idle_timeout;
        loop {
            let idle_for = || {
                let since = self.state.idle_since.load(Ordering::Acquire);
                Duration::from_millis(self.connections.now_ms().saturating_sub(since))
            };
            let busy = self.state.in_flight.load(Ordering::Acquire) > 0;
            let wait = if busy {
                timeout
            } else {
                timeout.saturating_sub(idle_for())
            };
            if !busy && wait.is_zero() {
                return;
            }
            tokio::select! {
                () = self.state.close.notified() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.connections
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle_since.store(self.1.now_ms(), Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn sheds_the_oldest_idle_connection_and_times_out_idle_ones() {
        let connections = Connections::new(2, Duration::from_secs(90));
        let first = connections.admit().await.unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        let second = connections.admit().await.unwrap();
        let _working = second.busy();
        // Full: the third is admitted once the idle `first` gives its slot back.
        let shed = tokio::spawn(async move {
            first.should_close().await;
            drop(first);
        });
        let third = connections.admit().await;
        assert!(third.is_some(), "the idle connection was shed");
        shed.await.unwrap();
        // Now both are busy or new-and-idle; with every one busy, a newcomer is refused.
        let _also_working = third.as_ref().unwrap().busy();
        assert!(connections.admit().await.is_none());
        // An idle connection closes after the idle timeout, a busy one does not.
        drop(_also_working);
        let idle = tokio::time::timeout(Duration::from_secs(91), third.as_ref().unwrap().should_close()).await;
        assert!(idle.is_ok());
        let busy = tokio::time::timeout(Duration::from_secs(200), second.should_close()).await;
        assert!(busy.is_err(), "a connection with a request in flight stays open");
    }

    #[test]
    fn the_limit_fits_the_open_files() {
        assert_eq!(fitting_limit(10_000, 256 + 100), 100);
        assert_eq!(fitting_limit(10, 1 << 20), 10);
        assert_eq!(fitting_limit(10, 10), 1);
    }
}
