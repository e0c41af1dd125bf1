//! Storage migration: rewrite every object of a kind stored at another version than its
//! storage version, as kube-storage-version-migrator does through no-op updates, but directly
//! on the storage (no admission, no managedFields entry, no new generation).
//!
//! Safe while clients write: each rewrite is a compare-and-swap on the revision read, and a
//! lost race reads the key again. Resumable: objects already at the storage version are only
//! read, so running it again finishes what an interrupted run left.

use serde_json::Value;

use super::object::metadata_mut;
use super::store::{Store, corrupt};
use crate::status::{ApiError, ApiResult};
use crate::storage::{KeyValue, RangeRequest, Storage, StorageError};

/// Objects read per page.
pub const MIGRATE_PAGE: usize = 500;
/// Attempts at one object that concurrent writers keep changing.
const MIGRATE_RETRIES: usize = 5;

/// What a migration did so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Migrated {
    /// Objects read.
    pub scanned: u64,
    /// Objects rewritten at the storage version.
    pub rewritten: u64,
    /// Objects that were at the storage version already (or a concurrent write put them there).
    pub current: u64,
    /// Objects deleted while the migration ran.
    pub gone: u64,
    /// Objects that could not be converted (key, why); left as they are.
    pub failed: Vec<(String, String)>,
    /// The last key read: where the next page starts.
    pub last_key: Option<String>,
}

impl std::fmt::Display for Migrated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} scanned, {} rewritten, {} already current, {} deleted meanwhile, {} failed",
            self.scanned,
            self.rewritten,
            self.current,
            self.gone,
            self.failed.len()
        )
    }
}

impl Store {
    /// Rewrite every object of this store's kind that is not at the storage version, page by
    /// page in key order; `progress` hears after each page.
    pub async fn migrate(&self, mut progress: impl FnMut(&Migrated)) -> ApiResult<Migrated> {
        let mut done = Migrated::default();
        loop {
            let page = self
                .storage
                .range(RangeRequest {
                    prefix: self.prefix.clone(),
                    start_after: done.last_key.clone(),
                    limit: MIGRATE_PAGE,
                    revision: None,
                })
                .await
                .map_err(|e| ApiError::from_storage(&self.meta, "", e))?;
            for kv in &page.kvs {
                done.scanned += 1;
                self.migrate_one(kv.clone(), &mut done).await?;
            }
            if let Some(last) = page.kvs.last() {
                done.last_key = Some(last.key.clone());
            }
            progress(&done);
            if page.remaining == 0 || page.kvs.is_empty() {
                return Ok(done);
            }
        }
    }

    async fn migrate_one(&self, mut kv: KeyValue, done: &mut Migrated) -> ApiResult<()> {
        for _ in 0..MIGRATE_RETRIES {
            let stored: Value = match serde_json::from_slice(&kv.value) {
                Ok(v) => v,
                Err(e) => {
                    done.failed.push((kv.key.clone(), corrupt(&[&kv.key], e).message));
                    return Ok(());
                }
            };
            if self.codec.is_storage_version(&stored) {
                done.current += 1;
                return Ok(());
            }
            let storage = self.codec.versions().storage().to_string();
            let mut converted = match self.codec.convert(stored, &storage) {
                Ok(v) => v,
                Err(e) => {
                    done.failed.push((kv.key.clone(), e));
                    return Ok(());
                }
            };
            metadata_mut(&mut converted).remove("resourceVersion");
            let bytes = serde_json::to_vec(&converted).map_err(ApiError::internal)?;
            match self.storage.update(&kv.key, bytes, kv.mod_revision).await {
                Ok(_) => {
                    done.rewritten += 1;
                    return Ok(());
                }
                // A client wrote it meanwhile: judge the new revision.
                Err(StorageError::Conflict { .. }) => match self.storage.get(&kv.key).await {
                    Ok(Some(now)) => kv = now,
                    Ok(None) => {
                        done.gone += 1;
                        return Ok(());
                    }
                    Err(e) => return Err(ApiError::from_storage(&self.meta, "", e)),
                },
                Err(StorageError::NotFound) => {
                    done.gone += 1;
                    return Ok(());
                }
                Err(e) => return Err(ApiError::from_storage(&self.meta, "", e)),
            }
        }
        done.failed.push((
            kv.key.clone(),
            format!("changed by other writers {MIGRATE_RETRIES} times in a row"),
        ));
        Ok(())
    }
}
