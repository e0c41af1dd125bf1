//! Storage: a revisioned key-value store shaped like etcd's model.
//!
//! `resourceVersion` is the store's global revision at an object's last write (etcd's
//! `mod_revision`), given to clients as a decimal string. Values are stored without their
//! resourceVersion; the registry sets it from `mod_revision` on the way out.

pub mod cache;
mod engine;
pub mod etcd;
mod newest;

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use futures::Stream;

pub use cache::{Freshness, WatchCache};
pub use engine::Engine;

/// A store revision; `resourceVersion` is its decimal form.
pub type Revision = u64;

/// A stored key and value with its revisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// Full key, e.g. `/registry/custom.example.com/widgets/default/w1`.
    pub key: String,
    /// Serialized object (JSON, without resourceVersion), shared: the watch cache, its events
    /// and every read hold the same bytes, not copies.
    pub value: bytes::Bytes,
    /// Revision of the write that created the key.
    pub create_revision: Revision,
    /// Revision of the last write to the key (for a deletion event: the deletion's revision).
    pub mod_revision: Revision,
}

/// What a watch event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Created or updated.
    Put,
    /// Deleted.
    Delete,
}

/// One change to one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The new value (for a delete: the last value, at the deletion's revision).
    pub kv: KeyValue,
    /// The value before this change, if the key existed.
    pub prev: Option<KeyValue>,
}

/// Range query over a key prefix.
#[derive(Clone, Debug, Default)]
pub struct RangeRequest {
    /// Keys starting with this.
    pub prefix: String,
    /// Only keys strictly after this one (pagination).
    pub start_after: Option<String>,
    /// At most this many keys (0 = all).
    pub limit: usize,
    /// Read at this past revision instead of the newest.
    pub revision: Option<Revision>,
}

/// A range answer.
#[derive(Clone, Debug, Default)]
pub struct RangeResponse {
    /// Matching keys in key order.
    pub kvs: Vec<KeyValue>,
    /// How many more keys match past `kvs`.
    pub remaining: u64,
    /// The revision this answer was read at.
    pub revision: Revision,
}

/// A count of the keys under a prefix at one revision, to tell whether a cached copy of them
/// is current without reading them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Census {
    /// Keys under the prefix.
    pub keys: u64,
    /// Whether any of them was last written after the revision asked about.
    pub written_after: bool,
    /// The revision counted at.
    pub revision: Revision,
}

/// Storage failures; the registry maps them to `Status` errors.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StorageError {
    /// The key does not exist.
    #[error("key not found")]
    NotFound,
    /// Create of a key that exists.
    #[error("key exists")]
    AlreadyExists,
    /// A precondition on the revision did not hold.
    #[error("revision conflict (current {current})")]
    Conflict {
        /// The key's current mod revision.
        current: Revision,
    },
    /// The revision asked for was compacted.
    #[error("too old resource version: {requested} ({compacted})")]
    Expired {
        /// What the client asked for.
        requested: Revision,
        /// The oldest revision still available.
        compacted: Revision,
    },
    /// The backend cannot be reached or refused service.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Anything else.
    #[error("storage error: {0}")]
    Internal(String),
}

/// A stream of watch events; an `Err` ends it (e.g. `Expired` when a slow watcher fell behind).
pub type EventStream = Pin<Box<dyn Stream<Item = Result<Event, StorageError>> + Send>>;

/// The storage interface every backend implements.
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// One key at the newest revision.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StorageError>;
    /// Keys under a prefix, optionally at a past revision and paginated.
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse, StorageError>;
    /// Create a key that must not exist.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StorageError>;
    /// Replace a key whose mod revision is `expected`.
    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<KeyValue, StorageError>;
    /// Delete a key whose mod revision is `expected`; returns the deleted value.
    async fn delete(&self, key: &str, expected: Revision) -> Result<KeyValue, StorageError>;
    /// Events under `prefix` with revisions after `after`.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<EventStream, StorageError>;
    /// [`watch`](Self::watch) for a follower that holds every key's current value itself (the
    /// watch cache) and fills in what a backend may leave out here: `prev`, and a deleted
    /// key's value. etcd then need not read each change's previous value.
    async fn follow(&self, prefix: &str, after: Revision) -> Result<EventStream, StorageError> {
        self.watch(prefix, after).await
    }
    /// The newest revision.
    async fn current_revision(&self) -> Result<Revision, StorageError>;
    /// The [`Census`] of `prefix` now, telling whether keys were written after `after`; `None`
    /// when the backend cannot tell (lists then read the backend itself). Required, so a
    /// wrapper cannot silently turn the watch cache's lists off.
    async fn census(&self, prefix: &str, after: Revision) -> Result<Option<Census>, StorageError>;
    /// How many keys are under `prefix` (counted, not read).
    async fn count(&self, prefix: &str) -> Result<u64, StorageError>;
    /// Whether the backend can serve requests (for `/readyz`).
    async fn ready(&self) -> Result<(), StorageError>;
    /// Whether reads are answered in this process (memory, embedded), not over a network: the
    /// watch cache then leaves single reads to the backend, as they cost no round trip to save.
    fn in_process(&self) -> bool;
}

/// A watch stream that ends right after its first error (the client must re-list).
pub fn end_after_error(stream: impl Stream<Item = Result<Event, StorageError>> + Send + 'static) -> EventStream {
    Box::pin(crate::take_through(stream, Result::is_err))
}

/// A slot for one value its first reader derives from what holds it (a change, an encoded
/// object), shared with every later reader: the fan-out's "work on each thing once".
#[derive(Default)]
pub struct Derived(std::sync::OnceLock<Option<Arc<dyn std::any::Any + Send + Sync>>>);

impl Derived {
    /// What `derive` makes, computed by the first caller only (`None` when it failed, or when
    /// an earlier caller derived another type).
    pub fn get_or_derive<T: Send + Sync + 'static>(&self, derive: impl FnOnce() -> Option<T>) -> Option<Arc<T>> {
        let slot = self
            .0
            .get_or_init(|| derive().map(|t| Arc::new(t) as Arc<dyn std::any::Any + Send + Sync>));
        slot.clone()?.downcast::<T>().ok()
    }
}

impl std::fmt::Debug for Derived {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Derived(set)"
        } else {
            "Derived(empty)"
        })
    }
}

/// In-memory storage, lost on exit: for tests.
pub fn memory() -> Arc<dyn Storage> {
    Arc::new(Engine::memory())
}

/// Embedded persistent storage in one file (redb); survives restarts and crashes.
pub fn embedded(path: &Path) -> Result<Arc<dyn Storage>, StorageError> {
    Ok(Arc::new(Engine::open(path)?))
}
