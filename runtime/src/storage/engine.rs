//! The memory and embedded backends: one in-memory revisioned map with a bounded event
//! history, optionally written through to a redb file before any write is acknowledged.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use futures::StreamExt;
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::{
    Census, Event, EventKind, EventStream, KeyValue, RangeRequest, RangeResponse, Revision, Storage, StorageError,
    end_after_error,
};

/// Events kept for watch resume and reads at past revisions; older ones are compacted.
pub const HISTORY: usize = 10_000;
/// Events buffered per watcher before a slow watcher is ended with 410 Expired.
const WATCH_BUFFER: usize = 4_096;

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

#[derive(Default)]
struct State {
    revision: Revision,
    /// Reads below this revision are gone.
    compacted: Revision,
    data: BTreeMap<String, KeyValue>,
    history: VecDeque<Arc<Event>>,
}

/// The memory/embedded storage engine (cheap to clone: one shared store).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    state: RwLock<State>,
    /// Serializes writers so a durable commit happens outside the state lock.
    writer: Mutex<()>,
    file: Option<redb::Database>,
    events: broadcast::Sender<Arc<Event>>,
    history: usize,
}

fn internal(e: impl std::fmt::Display) -> StorageError {
    StorageError::Internal(e.to_string())
}

impl Engine {
    /// A store that lives only in memory.
    pub fn memory() -> Self {
        Self::with_state(State::default(), None, HISTORY)
    }

    /// A store with a custom history length (tests of compaction use a small one).
    pub fn memory_with_history(history: usize) -> Self {
        Self::with_state(State::default(), None, history.max(1))
    }

    fn with_state(state: State, file: Option<redb::Database>, history: usize) -> Self {
        let (events, _) = broadcast::channel(WATCH_BUFFER);
        let inner = Inner {
            state: RwLock::new(state),
            writer: Mutex::new(()),
            file,
            events,
            history,
        };
        Engine { inner: Arc::new(inner) }
    }

    /// Open (or create) a redb file and load it. A damaged file is an error that names the
    /// file and the way out, never a panic; an empty (0-byte) file is not a store, so it is
    /// refused rather than silently started empty.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(internal)?;
        }
        let damaged = |why: String| {
            StorageError::Internal(format!(
                "the data file {} is damaged ({why}); restore it from a backup, or move it away to start with an empty store",
                path.display()
            ))
        };
        if std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
            return Err(damaged("it is empty: 0 bytes".into()));
        }
        // redb asserts on some kinds of damage (truncated or zeroed pages); a panic here is a
        // damaged file, reported as such (the default hook would print a backtrace first).
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let loaded = std::panic::catch_unwind(|| load(path));
        std::panic::set_hook(hook);
        let (db, state) = match loaded {
            Ok(Ok(loaded)) => loaded,
            Ok(Err(e)) => return Err(damaged(e.to_string())),
            Err(panic) => {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                    .unwrap_or_else(|| "the storage library failed on it".into());
                return Err(damaged(why));
            }
        };
        Ok(Self::with_state(state, Some(db), HISTORY))
    }
}

/// The record format this version writes: revisions, a checksum, the value.
const FORMAT: u64 = 2;

/// Open a redb file and read every record into a [`State`]. Each record's checksum is checked:
/// a record that fails it (or whose header is cut short) is kept with no value, so the object
/// shows as damaged, named by its key, and can be deleted, and never reaches a client as if it
/// were an object; the other records load normally. A file of the format before checksums is
/// given them, in one transaction, at its first open.
fn load(path: &Path) -> Result<(redb::Database, State), StorageError> {
    let db = redb::Database::create(path).map_err(internal)?;
    let mut state = State::default();
    let format = {
        let txn = db.begin_write().map_err(internal)?;
        let empty = txn.open_table(KV).map_err(internal)?.is_empty().map_err(internal)?;
        let mut meta = txn.open_table(META).map_err(internal)?;
        let format = meta.get("format").map_err(internal)?.map(|v| v.value());
        // A new file is written in the current format from its first record.
        let format = match format {
            None if empty => {
                meta.insert("format", FORMAT).map_err(internal)?;
                FORMAT
            }
            None => 1,
            Some(format) => format,
        };
        drop(meta);
        txn.commit().map_err(internal)?;
        format
    };
    {
        let txn = db.begin_read().map_err(internal)?;
        let meta = txn.open_table(META).map_err(internal)?;
        state.revision = meta.get("revision").map_err(internal)?.map(|v| v.value()).unwrap_or(0);
        // History is not persisted: after a restart, watches resume only from now on.
        state.compacted = state.revision;
        let kv = txn.open_table(KV).map_err(internal)?;
        for entry in kv.iter().map_err(internal)? {
            let (key, value) = entry.map_err(internal)?;
            let key = key.value().to_string();
            let (create_revision, mod_revision, value) =
                decode_record(&key, value.value(), format).unwrap_or_else(|why| {
                    tracing::error!(
                        key,
                        "damaged record in the data file ({why}): served as unreadable until deleted"
                    );
                    (state.revision, state.revision, Vec::new())
                });
            state.data.insert(
                key.clone(),
                KeyValue {
                    key,
                    value: value.into(),
                    create_revision,
                    mod_revision,
                },
            );
        }
    }
    if format < FORMAT {
        upgrade(&db, &state)?;
    }
    Ok((db, state))
}

/// Rewrite every readable record of a file of the format before checksums with its checksum,
/// and mark the file as of the current format.
fn upgrade(db: &redb::Database, state: &State) -> Result<(), StorageError> {
    let txn = db.begin_write().map_err(internal)?;
    {
        let mut kv = txn.open_table(KV).map_err(internal)?;
        for record in state.data.values().filter(|kv| !kv.value.is_empty()) {
            kv.insert(record.key.as_str(), encode_record(record).as_slice())
                .map_err(internal)?;
        }
        let mut meta = txn.open_table(META).map_err(internal)?;
        meta.insert("format", FORMAT).map_err(internal)?;
    }
    txn.commit().map_err(internal)?;
    tracing::info!(records = state.data.len(), "data file given record checksums");
    Ok(())
}

impl Inner {
    /// Apply one change: check, persist (outside the state lock), publish.
    fn write(
        &self,
        key: &str,
        check: impl FnOnce(Option<&KeyValue>) -> Result<(), StorageError>,
        value: Option<Vec<u8>>,
    ) -> Result<Event, StorageError> {
        let _writer = self.writer.lock().map_err(internal)?;
        let (revision, prev) = {
            let state = self.state.read().map_err(internal)?;
            let prev = state.data.get(key).cloned();
            check(prev.as_ref())?;
            (state.revision + 1, prev)
        };
        let event = match value {
            Some(value) => Event {
                kind: EventKind::Put,
                kv: KeyValue {
                    key: key.to_string(),
                    value: value.into(),
                    create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
                    mod_revision: revision,
                },
                prev,
            },
            None => {
                let prev = prev.ok_or(StorageError::NotFound)?;
                Event {
                    kind: EventKind::Delete,
                    kv: KeyValue {
                        mod_revision: revision,
                        ..prev.clone()
                    },
                    prev: Some(prev),
                }
            }
        };
        if let Some(db) = &self.file {
            persist(db, &event, revision)?;
        }
        let event = Arc::new(event);
        {
            let mut state = self.state.write().map_err(internal)?;
            state.revision = revision;
            match event.kind {
                EventKind::Put => state.data.insert(key.to_string(), event.kv.clone()),
                EventKind::Delete => state.data.remove(key),
            };
            state.history.push_back(event.clone());
            while state.history.len() > self.history {
                let dropped = state.history.pop_front().expect("history is not empty");
                state.compacted = dropped.kv.mod_revision;
            }
        }
        // No receivers is fine: nobody watches.
        let _ = self.events.send(event.clone());
        Ok((*event).clone())
    }

    fn range_sync(&self, request: &RangeRequest) -> Result<RangeResponse, StorageError> {
        let state = self.state.read().map_err(internal)?;
        let revision = match request.revision {
            Some(r) if r > state.revision => {
                return Err(StorageError::Unavailable(format!(
                    "revision {r} is newer than the store's {}",
                    state.revision
                )));
            }
            Some(r) if r < state.compacted => {
                return Err(StorageError::Expired {
                    requested: r,
                    compacted: state.compacted,
                });
            }
            Some(r) => r,
            None => state.revision,
        };
        let start = match &request.start_after {
            Some(after) => std::ops::Bound::Excluded(after.clone()),
            None => std::ops::Bound::Included(request.prefix.clone()),
        };
        let in_prefix = |k: &String| k.starts_with(&request.prefix);
        let mut kvs: Vec<KeyValue>;
        if revision == state.revision {
            kvs = state
                .data
                .range((start, std::ops::Bound::Unbounded))
                .take_while(|(k, _)| in_prefix(k))
                .map(|(_, v)| v.clone())
                .collect();
        } else {
            // Roll the newest state back through the history to the asked revision.
            let mut snapshot: BTreeMap<String, KeyValue> = state
                .data
                .range(request.prefix.clone()..)
                .take_while(|(k, _)| in_prefix(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for event in state.history.iter().rev().take_while(|e| e.kv.mod_revision > revision) {
                if !in_prefix(&event.kv.key) {
                    continue;
                }
                match &event.prev {
                    Some(prev) => snapshot.insert(prev.key.clone(), prev.clone()),
                    None => snapshot.remove(&event.kv.key),
                };
            }
            kvs = snapshot
                .range((start, std::ops::Bound::Unbounded))
                .map(|(_, v)| v.clone())
                .collect();
        }
        let mut remaining = 0;
        if request.limit > 0 && kvs.len() > request.limit {
            remaining = (kvs.len() - request.limit) as u64;
            kvs.truncate(request.limit);
        }
        Ok(RangeResponse {
            kvs,
            remaining,
            revision,
        })
    }
}

/// A record's checksum: the first 8 bytes of SHA-256 over its key, revisions and value (the
/// key included, so a record moved under another key fails too).
fn checksum(key: &str, create: Revision, modified: Revision, value: &[u8]) -> [u8; 8] {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    hash.update((key.len() as u64).to_le_bytes());
    hash.update(key.as_bytes());
    hash.update(create.to_le_bytes());
    hash.update(modified.to_le_bytes());
    hash.update(value);
    hash.finalize()[..8].try_into().expect("8 bytes")
}

/// A record: create and mod revisions, the checksum, the value.
fn encode_record(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + kv.value.len());
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.mod_revision.to_le_bytes());
    out.extend_from_slice(&checksum(&kv.key, kv.create_revision, kv.mod_revision, &kv.value));
    out.extend_from_slice(&kv.value);
    out
}

/// A record of `format` (1: without a checksum) under `key`: its revisions and value, or why
/// it is damaged.
fn decode_record(key: &str, bytes: &[u8], format: u64) -> Result<(Revision, Revision, Vec<u8>), &'static str> {
    let header = if format < 2 { 16 } else { 24 };
    if bytes.len() < header {
        return Err("cut short");
    }
    let create = u64::from_le_bytes(bytes[0..8].try_into().expect("8 bytes"));
    let modified = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let value = &bytes[header..];
    if format >= 2 && bytes[16..24] != checksum(key, create, modified, value) {
        return Err("checksum mismatch");
    }
    Ok((create, modified, value.to_vec()))
}

fn persist(db: &redb::Database, event: &Event, revision: Revision) -> Result<(), StorageError> {
    let txn = db.begin_write().map_err(internal)?;
    {
        let mut kv = txn.open_table(KV).map_err(internal)?;
        match event.kind {
            EventKind::Put => {
                kv.insert(event.kv.key.as_str(), encode_record(&event.kv).as_slice())
                    .map_err(internal)?;
            }
            EventKind::Delete => {
                kv.remove(event.kv.key.as_str()).map_err(internal)?;
            }
        }
        let mut meta = txn.open_table(META).map_err(internal)?;
        meta.insert("revision", revision).map_err(internal)?;
    }
    // redb's default durability is immediate: the commit is on disk when this returns.
    txn.commit().map_err(|e| StorageError::Unavailable(e.to_string()))
}

#[async_trait]
impl Storage for Engine {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StorageError> {
        Ok(self.inner.state.read().map_err(internal)?.data.get(key).cloned())
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse, StorageError> {
        self.inner.range_sync(&request)
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StorageError> {
        self.write_async(key.to_string(), Some(value), None).await
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<KeyValue, StorageError> {
        self.write_async(key.to_string(), Some(value), Some(expected)).await
    }

    async fn delete(&self, key: &str, expected: Revision) -> Result<KeyValue, StorageError> {
        self.write_async(key.to_string(), None, Some(expected)).await
    }

    async fn count(&self, prefix: &str) -> Result<u64, StorageError> {
        Ok(self.census(prefix, 0).await?.map_or(0, |c| c.keys))
    }

    async fn census(&self, prefix: &str, after: Revision) -> Result<Option<Census>, StorageError> {
        let state = self.inner.state.read().map_err(internal)?;
        let (mut keys, mut written_after) = (0, false);
        let under = state
            .data
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix));
        for (_, kv) in under {
            keys += 1;
            written_after |= kv.mod_revision > after;
        }
        Ok(Some(Census {
            keys,
            written_after,
            revision: state.revision,
        }))
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<EventStream, StorageError> {
        // Subscribe and read the backlog under one lock so no event falls between them.
        let (backlog, live) = {
            let state = self.inner.state.read().map_err(internal)?;
            if after < state.compacted {
                return Err(StorageError::Expired {
                    requested: after,
                    compacted: state.compacted,
                });
            }
            let backlog: Vec<Arc<Event>> = state
                .history
                .iter()
                .filter(|e| e.kv.mod_revision > after && e.kv.key.starts_with(prefix))
                .cloned()
                .collect();
            (backlog, self.inner.events.subscribe())
        };
        let prefix = prefix.to_string();
        let last = backlog.last().map_or(after, |e| e.kv.mod_revision);
        let backlog = futures::stream::iter(backlog.into_iter().map(|e| Ok((*e).clone())));
        let live = BroadcastStream::new(live).filter_map(move |item| {
            let item = match item {
                Ok(e) if e.kv.mod_revision > last && e.kv.key.starts_with(&prefix) => Some(Ok((*e).clone())),
                Ok(_) => None,
                // A watcher that fell this far behind must re-list, as after a compaction.
                Err(BroadcastStreamRecvError::Lagged(_)) => Some(Err(StorageError::Expired {
                    requested: last,
                    compacted: last + 1,
                })),
            };
            futures::future::ready(item)
        });
        Ok(end_after_error(backlog.chain(live)))
    }

    async fn current_revision(&self) -> Result<Revision, StorageError> {
        Ok(self.inner.state.read().map_err(internal)?.revision)
    }

    fn in_process(&self) -> bool {
        true
    }

    async fn ready(&self) -> Result<(), StorageError> {
        if let Some(db) = &self.inner.file {
            db.begin_read().map_err(|e| StorageError::Unavailable(e.to_string()))?;
        }
        Ok(())
    }
}

impl Engine {
    async fn write_async(
        &self,
        key: String,
        value: Option<Vec<u8>>,
        expected: Option<Revision>,
    ) -> Result<KeyValue, StorageError> {
        let check = move |prev: Option<&KeyValue>| match (prev, expected) {
            (Some(_), None) => Err(StorageError::AlreadyExists),
            (None, Some(_)) => Err(StorageError::NotFound),
            (Some(p), Some(e)) if p.mod_revision != e => Err(StorageError::Conflict {
                current: p.mod_revision,
            }),
            _ => Ok(()),
        };
        let inner = self.inner.clone();
        // A durable commit waits for fsync: keep it off the async workers. A write to memory
        // alone would be quicker inline (25% more creates), but it then wakes every watcher
        // from one async worker: the 1,000-watcher bench wrote slower and delivered later.
        let event = tokio::task::spawn_blocking(move || inner.write(&key, check, value))
            .await
            .map_err(internal)??;
        Ok(event.kv)
    }
}
