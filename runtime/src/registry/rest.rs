//! What the HTTP layer needs of a resource, as k8s.io/apiserver's `registry/rest`: one
//! interface for the key-value [`Store`] and for resources served by user code
//! ([`super::custom`]). Handlers check [`ResourceMeta::serves`] before calling a verb.

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use serde_json::Value;

use super::encoded::Encoded;
use super::patch::Patch;
use super::{DeleteOptions, ListOptions, Listed, Part, ScaleChange, Store, WatchEvent, WriteOptions, Written};
use crate::resource::ResourceMeta;
use crate::status::{ApiError, ApiResult};
use crate::storage::Storage as _;

/// A watch's events, ending after an `Error`.
pub type WatchStream = Pin<Box<dyn Stream<Item = WatchEvent> + Send>>;

/// One resource's verbs, as the HTTP layer calls them.
#[async_trait]
pub trait Rest: Send + Sync + 'static {
    /// The resource's metadata, with the verbs it serves.
    fn meta(&self) -> &ResourceMeta;
    /// The structural schema (for OpenAPI).
    fn schema(&self) -> Value;
    /// Whether the backing storage can serve requests (for `/readyz`).
    async fn ready(&self) -> Result<(), String>;
    /// `get`.
    async fn get(&self, namespace: Option<&str>, name: &str) -> ApiResult<Value>;
    /// `list`.
    async fn list(&self, options: &ListOptions) -> ApiResult<Listed>;
    /// `get` as the JSON clients receive, when the store keeps it encoded (`None`: use `get`).
    async fn get_encoded(&self, namespace: Option<&str>, name: &str) -> ApiResult<Option<Bytes>> {
        let _ = (namespace, name);
        Ok(None)
    }
    /// `list` with each item as the JSON clients receive, when the store keeps it encoded.
    async fn list_encoded(&self, options: &ListOptions) -> ApiResult<Option<Listed<Arc<Encoded>>>> {
        let _ = options;
        Ok(None)
    }
    /// `watch`: initial events as `sendInitialEvents`/`resourceVersion` ask, then changes.
    async fn watch(
        self: Arc<Self>,
        options: ListOptions,
        send_initial_events: Option<bool>,
        bookmarks: bool,
    ) -> ApiResult<WatchStream>;
    /// `create`.
    async fn create(&self, namespace: Option<&str>, body: Value, options: &WriteOptions) -> ApiResult<Written>;
    /// `update` of the object or its status.
    async fn update(
        &self,
        namespace: Option<&str>,
        name: &str,
        body: Value,
        part: Part,
        options: &WriteOptions,
    ) -> ApiResult<Written>;
    /// `patch` of the object or its status.
    async fn patch(
        &self,
        namespace: Option<&str>,
        name: &str,
        patch: &Patch,
        part: Part,
        options: &WriteOptions,
    ) -> ApiResult<Written>;
    /// `delete`: the deleted object, or the object marked for deletion while finalizers remain.
    async fn delete(&self, namespace: Option<&str>, name: &str, options: &DeleteOptions) -> ApiResult<Value>;
    /// How many objects are stored (for `apiserver_storage_objects`), if cheap to know.
    async fn count(&self) -> Option<u64> {
        None
    }
    /// `get` of `/scale`.
    async fn get_scale(&self, namespace: Option<&str>, name: &str) -> ApiResult<Value> {
        let _ = (namespace, name);
        Err(ApiError::path_not_found())
    }
    /// `update` or `patch` of `/scale`.
    async fn update_scale(
        &self,
        namespace: Option<&str>,
        name: &str,
        change: ScaleChange,
        options: &WriteOptions,
    ) -> ApiResult<Written> {
        let _ = (namespace, name, change, options);
        Err(ApiError::path_not_found())
    }
}

#[async_trait]
impl Rest for Store {
    fn meta(&self) -> &ResourceMeta {
        Store::meta(self)
    }

    fn schema(&self) -> Value {
        Store::schema(self)
    }

    async fn ready(&self) -> Result<(), String> {
        self.storage().ready().await.map_err(|e| e.to_string())
    }

    async fn get(&self, namespace: Option<&str>, name: &str) -> ApiResult<Value> {
        Store::get(self, namespace, name).await
    }

    async fn list(&self, options: &ListOptions) -> ApiResult<Listed> {
        Store::list(self, options).await
    }

    async fn get_encoded(&self, namespace: Option<&str>, name: &str) -> ApiResult<Option<Bytes>> {
        Store::get_encoded(self, namespace, name).await.map(Some)
    }

    async fn list_encoded(&self, options: &ListOptions) -> ApiResult<Option<Listed<Arc<Encoded>>>> {
        Store::list_encoded(self, options).await.map(Some)
    }

    async fn watch(
        self: Arc<Self>,
        options: ListOptions,
        send_initial_events: Option<bool>,
        bookmarks: bool,
    ) -> ApiResult<WatchStream> {
        Ok(Box::pin(
            Store::watch(&self, options, send_initial_events, bookmarks).await?,
        ))
    }

    async fn create(&self, namespace: Option<&str>, body: Value, options: &WriteOptions) -> ApiResult<Written> {
        Store::create(self, namespace, body, options).await
    }

    async fn update(
        &self,
        namespace: Option<&str>,
        name: &str,
        body: Value,
        part: Part,
        options: &WriteOptions,
    ) -> ApiResult<Written> {
        Store::update(self, namespace, name, body, part, options).await
    }

    async fn patch(
        &self,
        namespace: Option<&str>,
        name: &str,
        patch: &Patch,
        part: Part,
        options: &WriteOptions,
    ) -> ApiResult<Written> {
        Store::patch(self, namespace, name, patch, part, options).await
    }

    async fn delete(&self, namespace: Option<&str>, name: &str, options: &DeleteOptions) -> ApiResult<Value> {
        Store::delete(self, namespace, name, options).await
    }

    async fn get_scale(&self, namespace: Option<&str>, name: &str) -> ApiResult<Value> {
        Store::get_scale(self, namespace, name).await
    }

    async fn count(&self) -> Option<u64> {
        Store::count(self).await.ok()
    }

    async fn update_scale(
        &self,
        namespace: Option<&str>,
        name: &str,
        change: ScaleChange,
        options: &WriteOptions,
    ) -> ApiResult<Written> {
        Store::update_scale(self, namespace, name, change, options).await
    }
}
