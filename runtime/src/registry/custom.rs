//! Resources served by user code instead of the key-value store, as metrics-server serves
//! its metrics. The user implements [`CustomStorage`] (get and list, and if it likes create,
//! update and delete); [`CustomStore`] adds what every resource gets: admission (type checks,
//! `fieldValidation`, schema validation, defaults and the validate hook), resourceVersions,
//! selectors, pagination, dry run, JSON and merge patch, delete preconditions, and watch (by
//! polling `list`, with resume from a change log).
//! Discovery and OpenAPI list only the verbs in [`CustomStorage::VERBS`]; others answer 405.

use std::collections::{BTreeMap, VecDeque};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};

use super::list::watch_type;
use super::object::{meta_str, metadata_mut, name_required, now, random_suffix, set_url_name};
use super::options::{ContinueToken, decode_continue, encode_continue};
use super::patch::Patch;
use super::rest::{Rest, WatchStream};
use super::{
    Admission, DeleteOptions, ListOptions, Listed, MAX_LIMIT, Part, TypedStrategy, WatchEvent, WriteOptions, Written,
    set_type_meta,
};
use crate::admission::Chain;
use crate::resource::{ApiResource, RESOURCE_VERBS, ResourceMeta};
use crate::status::{ApiError, ApiResult};

/// How often a watch on custom storage re-lists to find changes, unless the storage says.
pub const DEFAULT_POLL: Duration = Duration::from_secs(2);

/// Storage for one resource type, written by the user.
///
/// Objects are returned whole; the runtime sets `apiVersion` and `kind`. `get` answers
/// [`ApiError::not_found`] for a missing object. Writes are called only for verbs listed in
/// `VERBS`, after admission, never for a dry run; `update` should refuse (409, see
/// [`ApiError::conflict`]) an object whose `resourceVersion` is not the stored one.
#[async_trait]
pub trait CustomStorage<T: ApiResource>: Send + Sync + 'static {
    /// The verbs served: `get` and `list`, and any of `watch` (by polling `list`), `create`,
    /// `update`, `patch` (needs `update`), `delete`, `deletecollection` (needs `delete`).
    const VERBS: &'static [&'static str];

    /// One object.
    async fn get(&self, namespace: Option<&str>, name: &str) -> ApiResult<T>;

    /// Every object in `namespace` (all namespaces when `None`, or for a cluster-scoped type).
    async fn list(&self, namespace: Option<&str>) -> ApiResult<Vec<T>>;

    /// Store a new object (its name is set); AlreadyExists when the name is taken.
    async fn create(&self, object: T) -> ApiResult<T> {
        let _ = object;
        Err(ApiError::method_not_allowed(&T::META, "create"))
    }

    /// Replace an existing object.
    async fn update(&self, object: T) -> ApiResult<T> {
        let _ = object;
        Err(ApiError::method_not_allowed(&T::META, "update"))
    }

    /// Remove an object; returns it as it was.
    async fn delete(&self, namespace: Option<&str>, name: &str) -> ApiResult<T> {
        let _ = (namespace, name);
        Err(ApiError::method_not_allowed(&T::META, "delete"))
    }

    /// How often a watch re-lists to find changes.
    fn poll_interval(&self) -> Duration {
        DEFAULT_POLL
    }

    /// Whether the storage can serve requests (for `/readyz`).
    async fn ready(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Changes kept for watchers to resume from.
pub const HISTORY: usize = 1_000;

/// The runtime's side of a [`CustomStorage`]: the HTTP layer's [`Rest`] interface.
///
/// Custom storage has no revisions of its own that clients could list and watch from, so the
/// store keeps a change log: every read and write observes what the storage returned, and a
/// difference from the last observation is a change with the next revision. Objects are served
/// with that revision as their `resourceVersion` (the storage's own version stays behind, for
/// its optimistic concurrency), so list-then-watch and watch resumes miss nothing.
pub struct CustomStore<T, S> {
    meta: ResourceMeta,
    admission: Admission,
    /// The server's admission steps, around the strategy's validation.
    chain: Chain,
    storage: Arc<S>,
    log: tokio::sync::Mutex<Log>,
    changed: tokio::sync::watch::Sender<u64>,
    types: PhantomData<fn() -> T>,
}

/// What the store last observed, and the changes that led there.
struct Log {
    revision: u64,
    /// Watches can resume from any revision at or after this one.
    from: u64,
    /// Key (`namespace/name`) → (revision of its last change, value as the storage gave it).
    objects: BTreeMap<String, (u64, Value)>,
    changes: VecDeque<Change>,
    /// When the storage was last listed whole.
    listed: Option<Instant>,
}

/// One observed change, with the objects as served (resourceVersion = the change's revision
/// for the new object, the previous change's for the old).
struct Change {
    revision: u64,
    key: String,
    old: Option<Value>,
    new: Option<Value>,
}

fn key_of(value: &Value) -> String {
    format!(
        "{}/{}",
        meta_str(value, "namespace").unwrap_or_default(),
        meta_str(value, "name").unwrap_or_default()
    )
}

/// `value` as served: its resourceVersion is the change log's revision.
fn served(value: &Value, revision: u64) -> Value {
    let mut value = value.clone();
    metadata_mut(&mut value).insert("resourceVersion".into(), json!(revision.to_string()));
    value
}

impl Log {
    /// Record what the storage holds at `key` now; returns the object as served.
    fn observe(&mut self, key: String, now: Option<Value>) -> Option<Value> {
        let before = self.objects.get(&key);
        if before.map(|(_, v)| v) == now.as_ref() {
            return before.map(|(rev, v)| served(v, *rev));
        }
        self.revision += 1;
        let revision = self.revision;
        let old = before.map(|(rev, v)| served(v, *rev));
        let new = now.as_ref().map(|v| served(v, revision));
        match now {
            Some(v) => self.objects.insert(key.clone(), (revision, v)),
            None => self.objects.remove(&key),
        };
        self.changes.push_back(Change {
            revision,
            key,
            old,
            new: new.clone(),
        });
        while self.changes.len() > HISTORY {
            if let Some(evicted) = self.changes.pop_front() {
                self.from = evicted.revision;
            }
        }
        new
    }
}

impl<T: ApiResource, S: CustomStorage<T>> CustomStore<T, S> {
    /// Serve `T` from `storage`; fails when `S::VERBS` is inconsistent or `T` declares a
    /// status or scale subresource (custom storage serves the resource itself only).
    pub fn new(storage: S) -> Result<Self, String> {
        let meta = ResourceMeta {
            verbs: S::VERBS,
            ..T::META
        };
        let kind = meta.kind;
        if let Some(v) = S::VERBS.iter().find(|v| !RESOURCE_VERBS.contains(v)) {
            return Err(format!(
                "{kind}'s custom storage lists the unknown verb {v:?}; the verbs are {RESOURCE_VERBS:?}"
            ));
        }
        for (verb, needs) in [
            ("get", "get"),
            ("list", "list"),
            ("watch", "list"),
            ("patch", "update"),
            ("deletecollection", "delete"),
        ] {
            if (verb == needs || meta.serves(verb)) && !meta.serves(needs) {
                return Err(format!(
                    "{kind}'s custom storage must serve {needs:?} (add it to VERBS{})",
                    if verb == needs {
                        String::new()
                    } else {
                        format!(", or remove {verb:?}")
                    }
                ));
            }
        }
        if meta.status || meta.scale.is_some() {
            return Err(format!(
                "{kind} declares a status or scale subresource, which custom storage does not serve: remove `status = ...`/`scale(...)` from its #[api(...)]"
            ));
        }
        // Revisions start at the clock (ms), so a restarted server does not reuse old ones.
        let start = jiff::Timestamp::now().as_millisecond().max(1) as u64;
        Ok(CustomStore {
            meta,
            admission: Admission::new(Arc::new(TypedStrategy::<T>::default()))?,
            chain: Chain::default(),
            storage: Arc::new(storage),
            log: tokio::sync::Mutex::new(Log {
                revision: start,
                from: start,
                objects: BTreeMap::new(),
                changes: VecDeque::new(),
                listed: None,
            }),
            changed: tokio::sync::watch::channel(start).0,
            types: PhantomData,
        })
    }

    /// The same store, running `chain`'s admission steps (the server's, shared by its stores).
    pub fn with_admission(self, chain: Chain) -> Self {
        CustomStore { chain, ..self }
    }

    fn untyped(&self, object: T) -> ApiResult<Value> {
        let mut value = serde_json::to_value(object).map_err(ApiError::internal)?;
        set_type_meta(&mut value, &self.meta);
        Ok(value)
    }

    fn typed(&self, value: Value) -> ApiResult<T> {
        serde_json::from_value(value)
            .map_err(|e| ApiError::bad_request(format!("error decoding {}: {e}", self.meta.kind)))
    }

    fn key(&self, namespace: Option<&str>, name: &str) -> String {
        let namespace = namespace.filter(|_| self.meta.namespaced()).unwrap_or_default();
        format!("{namespace}/{name}")
    }

    fn namespace<'a>(&self, namespace: Option<&'a str>) -> Option<&'a str> {
        namespace.filter(|_| self.meta.namespaced())
    }

    /// Wake the watchers if the log moved.
    fn notify(&self, log: &Log) {
        self.changed
            .send_if_modified(|seen| std::mem::replace(seen, log.revision) != log.revision);
    }

    /// Log an object the storage returned: (as served, as stored).
    fn record(&self, log: &mut Log, object: T) -> ApiResult<(Value, Value)> {
        let stored = self.untyped(object)?;
        let shown = log.observe(key_of(&stored), Some(stored.clone()));
        self.notify(log);
        Ok((shown.expect("an object was observed"), stored))
    }

    /// Read one object fresh from the storage into the log: (as served, as stored).
    async fn observe_one(&self, log: &mut Log, namespace: Option<&str>, name: &str) -> ApiResult<(Value, Value)> {
        match self.storage.get(self.namespace(namespace), name).await {
            Ok(object) => self.record(log, object),
            Err(e) if e.code == 404 => {
                log.observe(self.key(namespace, name), None);
                self.notify(log);
                Err(ApiError::not_found(&self.meta, name))
            }
            Err(e) => Err(e),
        }
    }

    /// List the whole storage into the log, unless that was done within `fresh`.
    async fn sync(&self, fresh: Option<Duration>) -> ApiResult<tokio::sync::MutexGuard<'_, Log>> {
        let mut log = self.log.lock().await;
        if let (Some(fresh), Some(listed)) = (fresh, log.listed)
            && listed.elapsed() < fresh
        {
            return Ok(log);
        }
        let mut now = BTreeMap::new();
        for object in self.storage.list(None).await? {
            let value = self.untyped(object)?;
            now.insert(key_of(&value), value);
        }
        let gone: Vec<String> = log.objects.keys().filter(|k| !now.contains_key(*k)).cloned().collect();
        for key in gone {
            log.observe(key, None);
        }
        for (key, value) in now {
            log.observe(key, Some(value));
        }
        log.listed = Some(Instant::now());
        self.notify(&log);
        Ok(log)
    }

    /// `body` (admitted, named) replaces the stored object, if its resourceVersion is current.
    pub(super) async fn replace(
        &self,
        namespace: Option<&str>,
        name: &str,
        mut body: Value,
        options: &WriteOptions,
    ) -> ApiResult<Written> {
        let mut log = self.log.lock().await;
        let (current, stored) = self.observe_one(&mut log, namespace, name).await?;
        let given = meta_str(&body, "resourceVersion").filter(|rv| !rv.is_empty());
        if given.is_some_and(|rv| Some(rv) != meta_str(&current, "resourceVersion")) {
            return Err(ApiError::conflict(&self.meta, name));
        }
        let m = metadata_mut(&mut body);
        for field in ["uid", "creationTimestamp", "resourceVersion"] {
            // The storage checks its own version of the object.
            match stored.pointer(&format!("/metadata/{field}")) {
                Some(v) => m.insert(field.into(), v.clone()),
                None => m.remove(field),
            };
        }
        let review = options.review(false);
        let attributes = options.attributes(&self.meta, namespace, name, Some(&current), &review);
        self.chain
            .mutate(&attributes, &mut body, |o| self.admission.default(o))
            .await?;
        let change = super::Change {
            old: &current,
            status: false,
        };
        let object = self.admission.prepare_update(body, name, change)?;
        self.chain.validate(&attributes, &object).await?;
        if options.dry_run {
            return Ok(Written::new(served(&object, log.revision), false));
        }
        let updated = self.storage.update(self.typed(object)?).await?;
        Ok(Written::new(self.record(&mut log, updated)?.0, false))
    }

    /// Changes after `position` for one watcher, or None when it fell out of the history.
    fn changes_after(&self, log: &Log, position: u64, options: &ListOptions) -> Option<(u64, Vec<WatchEvent>)> {
        if position < log.from {
            return None;
        }
        let prefix = options.namespace.as_deref().map(|ns| format!("{ns}/"));
        let start = log.changes.partition_point(|c| c.revision <= position);
        let mut events = Vec::new();
        for change in log.changes.range(start..) {
            if prefix.as_ref().is_some_and(|p| !change.key.starts_with(p.as_str())) {
                continue;
            }
            let old_matches = change.old.as_ref().is_some_and(|o| options.selects(o));
            let new_matches = change.new.as_ref().is_some_and(|n| options.selects(n));
            let object = match (&change.new, &change.old) {
                (Some(new), _) => new,
                (None, Some(old)) => &served(old, change.revision),
                (None, None) => continue,
            };
            if let Some(kind) = watch_type(change.new.is_none(), old_matches, new_matches) {
                events.push(WatchEvent::Object(kind, object.clone()));
            }
        }
        events.push(WatchEvent::Progress(log.revision));
        Some((log.revision, events))
    }
}

#[async_trait]
impl<T: ApiResource, S: CustomStorage<T>> Rest for CustomStore<T, S> {
    fn meta(&self) -> &ResourceMeta {
        &self.meta
    }

    fn schema(&self) -> Value {
        self.admission.schema()
    }

    async fn ready(&self) -> Result<(), String> {
        self.storage.ready().await
    }

    async fn get(&self, namespace: Option<&str>, name: &str) -> ApiResult<Value> {
        let mut log = self.log.lock().await;
        Ok(self.observe_one(&mut log, namespace, name).await?.0)
    }

    async fn list(&self, options: &ListOptions) -> ApiResult<Listed> {
        let limit = options.limit.min(MAX_LIMIT);
        let start = match options.continue_token.as_deref().filter(|t| !t.is_empty()) {
            Some(token) => Some(decode_continue(token)?.start),
            None => None,
        };
        let log = self.sync(None).await?;
        let prefix = options.namespace.as_deref().map(|ns| format!("{ns}/"));
        let mut items = Vec::new();
        let mut more = false;
        let matching = log
            .objects
            .iter()
            .filter(|(key, _)| prefix.as_ref().is_none_or(|p| key.starts_with(p.as_str())))
            .filter(|(key, _)| start.as_ref().is_none_or(|s| *key > s))
            .map(|(key, (rev, value))| (key, served(value, *rev)))
            .filter(|(_, object)| options.selects(object));
        for (key, object) in matching {
            if limit > 0 && items.len() == limit {
                more = true;
                break;
            }
            items.push((key.clone(), object));
        }
        let mut metadata = json!({ "resourceVersion": log.revision.to_string() });
        if more && let Some((last, _)) = items.last() {
            metadata["continue"] = json!(encode_continue(&ContinueToken {
                rv: log.revision,
                start: last.clone(),
            }));
        }
        Ok(Listed {
            items: items.into_iter().map(|(_, o)| o).collect(),
            metadata,
            revision: log.revision,
        })
    }

    async fn watch(
        self: Arc<Self>,
        options: ListOptions,
        send_initial_events: Option<bool>,
        bookmarks: bool,
    ) -> ApiResult<WatchStream> {
        let rv = options.resource_version.as_deref().filter(|r| !r.is_empty());
        let initial = send_initial_events.unwrap_or(matches!(rv, None | Some("0")));
        let mut first = Vec::new();
        let position = if initial {
            let listed = self
                .list(&ListOptions {
                    limit: 0,
                    continue_token: None,
                    ..options.clone()
                })
                .await?;
            first.push(WatchEvent::Progress(listed.revision));
            first.extend(listed.items.into_iter().map(|o| WatchEvent::Object("ADDED", o)));
            if send_initial_events == Some(true) && bookmarks {
                first.push(WatchEvent::Bookmark(listed.revision, true));
            }
            listed.revision
        } else {
            let rv = rv.unwrap_or_default();
            rv.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?
        };
        let interval = self.storage.poll_interval();
        let changed = self.changed.subscribe();
        let state = Some((self, position, changed));
        let changes = futures::stream::unfold(state, move |state| {
            let options = options.clone();
            async move {
                let (store, position, mut changed) = state?;
                changed.borrow_and_update();
                let found = {
                    let log = store.log.lock().await;
                    store.changes_after(&log, position, &options)
                };
                let Some((position, events)) = found else {
                    let expired = ApiError::expired(format!("too old resource version: {position}"));
                    return Some((vec![WatchEvent::Error(expired)], None));
                };
                if events.len() > 1 {
                    return Some((events, Some((store, position, changed))));
                }
                // Nothing new: wait for another reader to observe a change, or poll ourselves.
                let polled = tokio::select! {
                    _ = changed.changed() => Ok(()),
                    _ = tokio::time::sleep(interval) => store.sync(Some(interval / 2)).await.map(drop),
                };
                match polled {
                    Ok(()) => Some((Vec::new(), Some((store, position, changed)))),
                    Err(e) => Some((vec![WatchEvent::Error(e)], None)),
                }
            }
        });
        let changes = futures::StreamExt::flat_map(changes, futures::stream::iter);
        Ok(Box::pin(futures::StreamExt::chain(
            futures::stream::iter(first),
            changes,
        )))
    }

    async fn create(&self, namespace: Option<&str>, mut body: Value, options: &WriteOptions) -> ApiResult<Written> {
        let warnings = self.admission.admit_body(&mut body, namespace, options)?;
        let name = match (meta_str(&body, "name"), meta_str(&body, "generateName")) {
            (Some(name), _) if !name.is_empty() => name.to_string(),
            (_, Some(generate)) if !generate.is_empty() => format!("{generate}{}", random_suffix()),
            _ => return Err(name_required(&self.meta)),
        };
        let m = metadata_mut(&mut body);
        m.insert("name".into(), json!(name));
        m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        m.insert("creationTimestamp".into(), json!(now()));
        m.remove("resourceVersion");
        let review = options.review(true);
        let attributes = options.attributes(&self.meta, namespace, &name, None, &review);
        self.chain
            .mutate(&attributes, &mut body, |o| self.admission.default(o))
            .await?;
        let object = self.admission.prepare(body, &name)?;
        self.chain.validate(&attributes, &object).await?;
        if options.dry_run {
            return Ok(Written::new(object, true).with_warnings(warnings));
        }
        let mut log = self.log.lock().await;
        let created = self.storage.create(self.typed(object)?).await?;
        Ok(Written::new(self.record(&mut log, created)?.0, true).with_warnings(warnings))
    }

    async fn update(
        &self,
        namespace: Option<&str>,
        name: &str,
        mut body: Value,
        part: Part,
        options: &WriteOptions,
    ) -> ApiResult<Written> {
        if part != Part::Main {
            return Err(ApiError::path_not_found());
        }
        let warnings = self.admission.admit_body(&mut body, namespace, options)?;
        set_url_name(&mut body, name)?;
        let mut written = self.replace(namespace, name, body, options).await?;
        written.warnings = warnings;
        Ok(written)
    }

    async fn patch(
        &self,
        namespace: Option<&str>,
        name: &str,
        patch: &Patch,
        part: Part,
        options: &WriteOptions,
    ) -> ApiResult<Written> {
        if part != Part::Main {
            return Err(ApiError::path_not_found());
        }
        let current = Rest::get(self, namespace, name).await?;
        let mut patched = patch.apply(&current)?;
        let warnings = self.admission.admit_body(&mut patched, namespace, options)?;
        set_url_name(&mut patched, name)?;
        let mut written = self.replace(namespace, name, patched, options).await?;
        written.warnings = warnings;
        Ok(written)
    }

    async fn delete(&self, namespace: Option<&str>, name: &str, options: &DeleteOptions) -> ApiResult<Value> {
        if options.ignore_store_read_error {
            return Err(ApiError::bad_request(
                "ignoreStoreReadErrorWithClusterBreakingPotential: custom storage reads its own data",
            ));
        }
        let mut log = self.log.lock().await;
        let (current, _) = self.observe_one(&mut log, namespace, name).await?;
        options.check_preconditions(&self.meta, name, &current)?;
        let review = options.review();
        let attributes = options.attributes(&self.meta, namespace, name, &current, &review);
        self.chain.validate(&attributes, &current).await?;
        if options.dry_run {
            return Ok(current);
        }
        self.storage.delete(self.namespace(namespace), name).await?;
        log.observe(self.key(namespace, name), None);
        self.notify(&log);
        Ok(served(&current, log.revision))
    }
}
