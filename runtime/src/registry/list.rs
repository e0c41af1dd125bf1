//! Reads of many objects from the [`Store`]: paginated lists at a resourceVersion with
//! selectors, and watches served from the watch cache.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use serde_json::json;

use super::encoded::Encoded;
use super::options::{ContinueToken, ListOptions, Listed, SharedObject, WatchEvent, decode_continue, encode_continue};
use super::store::Store;
use crate::status::{ApiError, ApiResult};
use crate::storage::{EventKind, Freshness, KeyValue, RangeRequest, Revision, Storage, StorageError};

/// Most objects one list page returns, whatever `limit` asks.
pub const MAX_LIMIT: usize = 10_000;

impl Store {
    /// How many objects are stored (counted by storage, not read).
    pub async fn count(&self) -> ApiResult<u64> {
        self.storage
            .count(&self.prefix)
            .await
            .map_err(|e| ApiError::from_storage(&self.meta, "", e))
    }

    /// List objects.
    pub async fn list(&self, options: &ListOptions) -> ApiResult<Listed> {
        self.collect(options, |kv| match self.decode(kv) {
            Ok(object) => Ok(options.selects(&object).then_some(object)),
            Err(_) => Err(()),
        })
        .await
    }

    /// List objects as clients receive them, each encoded once per revision and shared.
    pub async fn list_encoded(&self, options: &ListOptions) -> ApiResult<Listed<Arc<Encoded>>> {
        let filtered = options.labels.is_some() || !options.fields.is_empty();
        self.collect(options, |kv| {
            if filtered && !options.selects(&self.decode(kv).map_err(|_| ())?) {
                return Ok(None);
            }
            self.encoded(kv).map(Some).ok_or(())
        })
        .await
    }

    /// The paginated read behind every list: `take` turns a stored object into an item, `None`
    /// when the selectors leave it out, `Err` when it is damaged.
    async fn collect<T>(
        &self,
        options: &ListOptions,
        mut take: impl FnMut(&KeyValue) -> Result<Option<T>, ()>,
    ) -> ApiResult<Listed<T>> {
        let limit = if options.limit == 0 {
            0
        } else {
            options.limit.min(MAX_LIMIT)
        };
        let prefix = self.list_prefix(options.namespace.as_deref());
        let (mut revision, mut start_after, freshness);
        if let Some(token) = options.continue_token.as_deref().filter(|t| !t.is_empty()) {
            let token = decode_continue(token)?;
            if !token.start.starts_with(&prefix) {
                return Err(ApiError::bad_request("continue key is not valid for this list"));
            }
            (revision, start_after, freshness) = (Some(token.rv), Some(token.start), Freshness::Consistent);
        } else {
            start_after = None;
            (revision, freshness) = self
                .read_revision(
                    options.resource_version.as_deref(),
                    options.resource_version_match.as_deref(),
                )
                .await?;
        }
        let filtered = options.labels.is_some() || !options.fields.is_empty();
        let mut items = Vec::new();
        let mut more = false;
        let mut last_key = None;
        let mut unreadable = Vec::new();
        let (read_at, remaining) = loop {
            // The first page from the watch cache, as fresh as asked; any more at its revision.
            let request = RangeRequest {
                prefix: prefix.clone(),
                start_after: start_after.clone(),
                limit,
                revision,
            };
            let page = self
                .storage
                .list(&self.prefix, &request, freshness)
                .await
                .map_err(|e| match e {
                    StorageError::Expired { .. } if options.continue_token.is_some() => ApiError::expired(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                    ),
                    e => ApiError::from_storage(&self.meta, "", e),
                })?;
            revision = Some(page.revision);
            for kv in &page.kvs {
                if limit > 0 && items.len() == limit {
                    more = true;
                    break;
                }
                last_key = Some(kv.key.clone());
                // A damaged object fails the list, naming every damaged key on the page, so
                // each can be deleted; the others stay readable one by one.
                match take(kv) {
                    Ok(Some(item)) => items.push(item),
                    Ok(None) => {}
                    Err(()) => unreadable.push(kv.key.clone()),
                }
            }
            if limit == 0 || page.remaining == 0 || more || items.len() == limit {
                more |= page.remaining > 0;
                break (page.revision, page.remaining);
            }
            start_after = last_key.clone();
        };
        if !unreadable.is_empty() {
            let keys: Vec<&str> = unreadable.iter().map(String::as_str).collect();
            return Err(super::store::corrupt(&keys, "damaged in storage"));
        }
        let mut metadata = json!({ "resourceVersion": read_at.to_string() });
        if more && let Some(key) = last_key {
            metadata["continue"] = json!(encode_continue(&ContinueToken {
                rv: read_at,
                start: key
            }));
            if !filtered {
                metadata["remainingItemCount"] = json!(remaining);
            }
        }
        Ok(Listed {
            items,
            metadata,
            revision: read_at,
        })
    }

    /// The revision a read asks for (`Some` for an exact one) and how fresh it must be.
    async fn read_revision(
        &self,
        rv: Option<&str>,
        rv_match: Option<&str>,
    ) -> ApiResult<(Option<Revision>, Freshness)> {
        let rv = match rv.filter(|r| !r.is_empty()) {
            None => {
                if rv_match.is_some_and(|m| !m.is_empty()) {
                    return Err(ApiError::bad_request(
                        "resourceVersionMatch is forbidden unless resourceVersion is provided",
                    ));
                }
                return Ok((None, Freshness::Consistent));
            }
            Some(rv) => rv.parse::<Revision>().map_err(|_| {
                ApiError::bad_request(format!("invalid resourceVersion {rv:?}: must be a decimal revision"))
            })?,
        };
        match rv_match.unwrap_or("") {
            "" | "NotOlderThan" => {
                self.check_not_future(rv).await?;
                Ok((None, Freshness::NotOlderThan(rv)))
            }
            "Exact" => {
                if rv == 0 {
                    return Err(ApiError::bad_request(
                        "resourceVersionMatch=Exact is forbidden for resourceVersion \"0\"",
                    ));
                }
                self.check_not_future(rv).await?;
                Ok((Some(rv), Freshness::Consistent))
            }
            other => Err(ApiError::bad_request(format!(
                "unsupported resourceVersionMatch {other:?}"
            ))),
        }
    }

    /// 504 "Too large resource version" for a revision the store has not reached, as
    /// kube-apiserver answers (after waiting for it, which a single store need not do).
    async fn check_not_future(&self, rv: Revision) -> ApiResult<()> {
        // "0" (any revision) is never ahead: no storage round trip for what informers send.
        if rv == 0 {
            return Ok(());
        }
        let current = self
            .storage
            .current_revision()
            .await
            .map_err(|e| ApiError::from_storage(&self.meta, "", e))?;
        if rv > current {
            return Err(ApiError::new(
                504,
                "Timeout",
                format!("Too large resource version: {rv}, current: {current}"),
            ));
        }
        Ok(())
    }

    /// Watch objects: initial ADDED events (unless resuming from a resourceVersion), then changes.
    pub async fn watch(
        self: &Arc<Self>,
        options: ListOptions,
        send_initial_events: Option<bool>,
        bookmarks: bool,
    ) -> ApiResult<impl Stream<Item = WatchEvent> + Send + 'static> {
        let rv = options.resource_version.as_deref().filter(|r| !r.is_empty());
        let initial = send_initial_events.unwrap_or(matches!(rv, None | Some("0")));
        let (start, mut first) = if initial {
            let listed = self
                .list(&ListOptions {
                    limit: 0,
                    continue_token: None,
                    resource_version: None,
                    resource_version_match: None,
                    ..options.clone()
                })
                .await?;
            let mut events: Vec<WatchEvent> = listed
                .items
                .into_iter()
                .map(|o| WatchEvent::Object("ADDED", o))
                .collect();
            if send_initial_events == Some(true) && bookmarks {
                events.push(WatchEvent::Bookmark(listed.revision, true));
            }
            (listed.revision, events)
        } else {
            let rv = rv.unwrap_or("0");
            let rv: Revision = rv
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?;
            (rv, Vec::new())
        };
        first.insert(0, WatchEvent::Progress(start));
        // One shared feed per resource: namespaced watchers filter it by key.
        let prefix = self.list_prefix(options.namespace.as_deref());
        let changes = match self.storage.changes(&self.prefix, start).await {
            Ok(stream) => stream,
            Err(StorageError::Expired { requested, compacted }) => {
                first.push(WatchEvent::Error(ApiError::expired(format!(
                    "too old resource version: {requested} ({compacted})"
                ))));
                Box::pin(futures::stream::empty())
            }
            Err(e) => return Err(ApiError::from_storage(&self.meta, "", e)),
        };
        let store = self.clone();
        let changes = changes.map(move |change| {
            let change = match change {
                Ok(c) => c,
                Err(StorageError::Expired { requested, compacted }) => {
                    return WatchEvent::Error(ApiError::expired(format!(
                        "too old resource version: {requested} ({compacted})"
                    )));
                }
                Err(e) => return WatchEvent::Error(ApiError::from_storage(&store.meta, "", e)),
            };
            let event = &change.event;
            let revision = event.kv.mod_revision;
            if !event.kv.key.starts_with(&prefix) {
                return WatchEvent::Progress(revision);
            }
            // Decoded and encoded once for all watchers of the resource (of its version).
            let derive = |e: &crate::storage::Event| {
                let value = store.decode(&e.kv).ok()?;
                let json = store.encode_for_client(&e.kv)?.into();
                let old = e.prev.as_ref().and_then(|p| store.decode(p).ok());
                Some((Arc::new(SharedObject::new(value, json)), old))
            };
            let derived = if store.codec.converts() {
                change
                    .derived(|_| Some(PerVersion::default()))
                    .and_then(|versions| versions.get(store.meta.version, || derive(&change.event)))
            } else {
                change.derived(derive)
            };
            let Some(derived) = derived else {
                return WatchEvent::Error(ApiError::internal(format!(
                    "stored object {} does not decode",
                    event.kv.key
                )));
            };
            let (new, old) = &*derived;
            let old_matches = old.as_ref().is_some_and(|old| options.selects(old));
            match watch_type(
                event.kind == EventKind::Delete,
                old_matches,
                options.selects(&new.value),
            ) {
                Some(kind) => WatchEvent::Shared(kind, new.clone()),
                None => WatchEvent::Progress(revision),
            }
        });
        Ok(futures::stream::iter(first).chain(changes))
    }
}

/// The event type a selective watcher sees for a change, given whether the object matched its
/// selectors before and after; `None` when the change is outside its selection.
pub(crate) fn watch_type(deleted: bool, old_matches: bool, new_matches: bool) -> Option<&'static str> {
    match (deleted, old_matches, new_matches) {
        (true, true, _) => Some("DELETED"),
        (false, true, true) => Some("MODIFIED"),
        (false, false, true) => Some("ADDED"),
        // A change that moved the object out of the selection.
        (false, true, false) => Some("DELETED"),
        _ => None,
    }
}

/// What each version's watchers derive from one change of a kind served at several versions.
struct PerVersion<T>(std::sync::Mutex<Vec<Derivation<T>>>);

/// One version's derivation (`None`: it failed).
type Derivation<T> = (&'static str, Option<Arc<T>>);

impl<T> Default for PerVersion<T> {
    fn default() -> Self {
        PerVersion(std::sync::Mutex::new(Vec::new()))
    }
}

impl<T> PerVersion<T> {
    /// `version`'s, derived by its first watcher.
    fn get(&self, version: &'static str, derive: impl FnOnce() -> Option<T>) -> Option<Arc<T>> {
        let mut derived = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, hit)) = derived.iter().find(|(v, _)| *v == version) {
            return hit.clone();
        }
        let made = derive().map(Arc::new);
        derived.push((version, made.clone()));
        made
    }
}
