//! A store's objects as their Rust type, for the server's own code (admission steps,
//! controllers running in the process): the same writes as a client's, with the strategy,
//! admission and storage they go through, without JSON values in sight. The JSON-value
//! [`Store`] stays for custom storage and generic code.

use std::marker::PhantomData;
use std::sync::Arc;

use serde_json::Value;

use super::{DeleteOptions, ListOptions, Listed, Part, Store, WriteOptions};
use crate::resource::ApiResource;
use crate::status::{ApiError, ApiResult};

/// The objects of resource `T` in one server (from [`Server::objects`](crate::server::Server::objects)).
pub struct Objects<T> {
    store: Arc<Store>,
    kind: PhantomData<fn() -> T>,
}

impl<T> Clone for Objects<T> {
    fn clone(&self) -> Self {
        Objects {
            store: self.store.clone(),
            kind: PhantomData,
        }
    }
}

/// `value` as a `T`; a stored object that does not decode is the server's fault (500).
fn decode<T: ApiResource>(value: Value) -> ApiResult<T> {
    serde_json::from_value(value).map_err(|e| ApiError::internal(format!("a stored {}: {e}", T::META.kind)))
}

fn encode<T: ApiResource>(object: &T) -> ApiResult<Value> {
    serde_json::to_value(object).map_err(ApiError::internal)
}

/// The name in `object`'s metadata, which an update needs.
fn name_of<T: ApiResource>(object: &T) -> ApiResult<String> {
    object
        .meta()
        .name
        .clone()
        .ok_or_else(|| ApiError::bad_request(format!("a {} to update needs metadata.name", T::META.kind)))
}

impl<T: ApiResource> Objects<T> {
    /// `T`'s objects in `store`; `None` when the store serves another resource.
    pub fn new(store: Arc<Store>) -> Option<Self> {
        (*store.meta() == T::META).then_some(Objects {
            store,
            kind: PhantomData,
        })
    }

    /// The JSON-value store underneath.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// One object (`namespace` is `None` for a cluster-scoped kind).
    pub async fn get(&self, namespace: Option<&str>, name: &str) -> ApiResult<T> {
        decode(self.store.get(namespace, name).await?)
    }

    /// The objects `options` select, and the revision they were read at.
    pub async fn list(&self, options: &ListOptions) -> ApiResult<Listed<T>> {
        let listed = self.store.list(options).await?;
        Ok(Listed {
            items: listed.items.into_iter().map(decode).collect::<ApiResult<_>>()?,
            metadata: listed.metadata,
            revision: listed.revision,
        })
    }

    /// Create `object`; the object as stored.
    pub async fn create(&self, namespace: Option<&str>, object: &T, options: &WriteOptions) -> ApiResult<T> {
        decode(self.store.create(namespace, encode(object)?, options).await?.object)
    }

    /// Replace the object named in `object`'s metadata (its status changes are ignored; a
    /// `resourceVersion` in it must match, else 409).
    pub async fn update(&self, namespace: Option<&str>, object: &T, options: &WriteOptions) -> ApiResult<T> {
        self.replace(namespace, object, Part::Main, options).await
    }

    /// Replace the status of the object named in `object`'s metadata (the rest is ignored).
    pub async fn update_status(&self, namespace: Option<&str>, object: &T, options: &WriteOptions) -> ApiResult<T> {
        self.replace(namespace, object, Part::Status, options).await
    }

    async fn replace(&self, namespace: Option<&str>, object: &T, part: Part, options: &WriteOptions) -> ApiResult<T> {
        let name = name_of(object)?;
        let written = self
            .store
            .update(namespace, &name, encode(object)?, part, options)
            .await?;
        decode(written.object)
    }

    /// Delete one object: the object as deleted, or as marked for deletion (with a
    /// `deletionTimestamp`) while finalizers keep it; `None` when what was stored could not be
    /// read and was removed unread (`ignore_store_read_error` in `options`).
    pub async fn delete(&self, namespace: Option<&str>, name: &str, options: &DeleteOptions) -> ApiResult<Option<T>> {
        let answer = self.store.delete(namespace, name, options).await?;
        if answer.get("kind").and_then(Value::as_str) == Some("Status") {
            return Ok(None);
        }
        decode(answer).map(Some)
    }
}
