//! A small bounded cache whose entries expire: for token reviews and authorization decisions.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most `capacity` entries; when full, expired ones are dropped, then all.
pub struct TtlCache<K, V> {
    capacity: usize,
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    /// An empty cache of `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        TtlCache {
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The value under `key` if it is younger than `ttl(value)`.
    pub fn get(&self, key: &K, ttl: impl Fn(&V) -> Duration) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .filter(|(at, v)| at.elapsed() < ttl(v))
            .map(|(_, v)| v.clone())
    }

    /// Store `value` under `key`; entries older than `longest` go first when full.
    pub fn insert(&self, key: K, value: V, longest: Duration) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity {
            entries.retain(|_, (at, _)| at.elapsed() < longest);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now(), value));
    }
}
