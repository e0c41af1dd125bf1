//! The generic store ([`Store`]): create, get, update and delete on the key-value storage,
//! with uid, timestamps, generation, finalizers, managedFields and optimistic concurrency.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};

use super::encoded::{self, Encoded, EncodedCache};
use super::managed::{self, Writer};
use super::object::{
    copy_status, meta_field, meta_str, metadata_mut, name_required, next_generation, now, random_suffix, set_url_name,
    spec_part,
};
use super::options::{DeleteOptions, Part, WriteOptions, Written};
use super::strategy::{Admission, Change, Strategy};
use super::versions::{Codec, Versions};
use crate::admission::Chain;

/// Optimistic-concurrency retries of a write against concurrent writers.
const WRITE_RETRIES: usize = 5;
use crate::resource::ResourceMeta;
use crate::status::{ApiError, ApiResult};
use crate::storage::{KeyValue, Revision, Storage, StorageError, WatchCache};

/// One resource's registry.
pub struct Store {
    pub(super) meta: ResourceMeta,
    pub(super) admission: Admission,
    /// The server's admission steps, around the strategy's validation.
    pub(super) chain: Chain,
    pub(super) storage: Arc<WatchCache>,
    pub(super) prefix: String,
    /// Objects as clients receive them, one encoding per revision.
    pub(super) encoded: EncodedCache,
    /// How objects go between the served version and the stored one.
    pub(super) codec: Codec,
}

impl Store {
    /// A store for the resource described by `strategy`, keyed under `prefix` in `storage`
    /// (whose watch cache serves this resource's watchers).
    pub fn new(strategy: Arc<dyn Strategy>, storage: Arc<WatchCache>, prefix: &str) -> Result<Self, String> {
        let admission = Admission::new(strategy)?;
        let meta = admission.meta;
        let prefix = format!("{}/{}/{}/", prefix.trim_end_matches('/'), meta.group, meta.plural);
        Ok(Store {
            meta,
            admission,
            chain: Chain::default(),
            storage,
            prefix,
            encoded: EncodedCache::default(),
            codec: Codec::single(&meta),
        })
    }

    /// The versions of this store's kind.
    pub fn versions(&self) -> Arc<Versions> {
        self.codec.versions()
    }

    /// The same store, serving one version of a kind served at several (`codec`'s).
    pub fn with_codec(self, codec: Codec) -> Self {
        Store { codec, ..self }
    }

    /// The same store, running `chain`'s admission steps (the server's, shared by its stores).
    pub fn with_admission(self, chain: Chain) -> Self {
        Store { chain, ..self }
    }

    /// The resource's metadata.
    pub fn meta(&self) -> &ResourceMeta {
        &self.meta
    }

    /// The storage behind this store.
    pub fn storage(&self) -> &Arc<WatchCache> {
        &self.storage
    }

    fn key(&self, namespace: Option<&str>, name: &str) -> String {
        // Pushed, not `format!`ted: every request that names an object builds one.
        let namespace = namespace.filter(|_| self.meta.namespaced());
        let mut key = String::with_capacity(self.prefix.len() + namespace.map_or(0, |n| n.len() + 1) + name.len());
        key.push_str(&self.prefix);
        if let Some(ns) = namespace {
            key.push_str(ns);
            key.push('/');
        }
        key.push_str(name);
        key
    }

    pub(super) fn list_prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.meta.namespaced() => format!("{}{ns}/", self.prefix),
            _ => self.prefix.clone(),
        }
    }

    pub(super) fn decode(&self, kv: &KeyValue) -> ApiResult<Value> {
        let object = match serde_json::from_slice::<Value>(&kv.value) {
            Ok(object @ Value::Object(_)) => object,
            Ok(_) => return Err(corrupt(&[&kv.key], "not a JSON object")),
            Err(e) => return Err(corrupt(&[&kv.key], e)),
        };
        let mut object = self.codec.decode(object).map_err(|e| corrupt(&[&kv.key], e))?;
        metadata_mut(&mut object).insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
        Ok(object)
    }

    /// The stored bytes of `object` (at the served version): at the storage version, without
    /// its `resourceVersion`, which `object` loses too (the write that stores them sets the new one).
    fn encode(&self, object: &mut Value) -> ApiResult<Vec<u8>> {
        metadata_mut(object).remove("resourceVersion");
        if self.codec.stores_served() {
            return serde_json::to_vec(object).map_err(ApiError::internal);
        }
        let stored = self.codec.encode(object.clone()).map_err(ApiError::bad_request)?;
        serde_json::to_vec(&stored).map_err(ApiError::internal)
    }

    /// The answer to a write stored as `kv`: its bytes with their `resourceVersion` when they
    /// are at the served version (otherwise the handler encodes the object).
    fn answer(&self, kv: &KeyValue) -> Option<Vec<u8>> {
        self.codec
            .stores_served()
            .then(|| encoded::splice(&kv.value, kv.mod_revision))
            .flatten()
    }

    /// `kv` as clients of this version receive it, encoded once per revision.
    pub(super) fn encoded(&self, kv: &KeyValue) -> Option<Arc<Encoded>> {
        self.encoded.get(kv, |kv| self.encode_for_client(kv))
    }

    /// The JSON a client of this version receives for `kv`: the stored bytes with their
    /// `resourceVersion` when stored at this version, else converted.
    pub(super) fn encode_for_client(&self, kv: &KeyValue) -> Option<Vec<u8>> {
        if self.codec.converts() && !self.codec.stored_at_served(&kv.value)? {
            return serde_json::to_vec(&self.decode(kv).ok()?).ok();
        }
        encoded::encode(&kv.value, kv.mod_revision)
    }

    /// Whether the object under `key` is stored at another version than the storage version
    /// (so even a no-op update rewrites it: the storage-version migrator's way).
    async fn stored_elsewhere(&self, key: &str) -> bool {
        if !self.codec.converts() {
            return false;
        }
        match self.storage.get(key).await {
            Ok(Some(kv)) => {
                serde_json::from_slice::<Value>(&kv.value).is_ok_and(|v| !self.codec.is_storage_version(&v))
            }
            _ => false,
        }
    }

    fn storage_error(&self, name: &str) -> impl Fn(StorageError) -> ApiError + '_ {
        let name = name.to_string();
        move |e| ApiError::from_storage(&self.meta, &name, e)
    }

    /// Start the watch cache's feed of this resource (see [`WatchCache::start`]).
    pub async fn start_cache(&self) -> Result<(), StorageError> {
        self.storage.start(&self.prefix).await
    }

    /// The stored object as of the newest revision (from the watch cache once it is current),
    /// or 404.
    async fn read(&self, namespace: Option<&str>, name: &str) -> ApiResult<KeyValue> {
        let kv = self
            .storage
            .read(&self.prefix, &self.key(namespace, name))
            .await
            .map_err(self.storage_error(name))?;
        kv.ok_or_else(|| ApiError::not_found(&self.meta, name))
    }

    /// Read one object.
    pub async fn get(&self, namespace: Option<&str>, name: &str) -> ApiResult<Value> {
        self.decode(&self.read(namespace, name).await?)
    }

    /// Read one object as clients receive it, encoded once per revision and shared.
    pub async fn get_encoded(&self, namespace: Option<&str>, name: &str) -> ApiResult<Bytes> {
        let kv = self.read(namespace, name).await?;
        match self.encoded(&kv) {
            Some(encoded) => Ok(encoded.json.clone()),
            // The decoder says what is wrong.
            None => Err(self
                .decode(&kv)
                .err()
                .unwrap_or_else(|| corrupt(&[&kv.key], "not JSON"))),
        }
    }

    pub(super) fn writer<'a>(&'a self, options: &'a WriteOptions) -> Writer<'a> {
        Writer {
            manager: options.manager(),
            subresource: options.subresource,
            api_version: self.meta.api_version(),
            schema: &self.admission.fields,
            codec: self.codec.converts().then_some(&self.codec),
        }
    }

    /// Record `object`'s write in its managedFields, unless the request set them itself (valid
    /// and different from `current`'s: a client migrating ownership, or an apply).
    fn track(&self, current: Option<&Value>, object: &mut Value, options: &WriteOptions) {
        let sent = meta_field(object, "managedFields");
        let had = current.and_then(|c| meta_field(c, "managedFields"));
        if sent.is_some() && sent != had && managed::decode(object).is_some_and(|e| !e.is_empty()) {
            return;
        }
        let Some(current) = current else {
            return managed::track_create(object, &self.writer(options));
        };
        let entries = managed::decode(current).unwrap_or_default();
        let entries = managed::track_update(entries, Some(current), object, &self.writer(options));
        managed::set(object, &entries);
    }

    /// Create an object (POST).
    pub async fn create(&self, namespace: Option<&str>, mut body: Value, options: &WriteOptions) -> ApiResult<Written> {
        let warnings = self.admission.admit_body(&mut body, namespace, options)?;
        let generate = meta_str(&body, "generateName").unwrap_or_default().to_string();
        let given = meta_str(&body, "name").unwrap_or_default().to_string();
        if given.is_empty() && generate.is_empty() {
            return Err(name_required(&self.meta));
        }
        if self.meta.status
            && let Value::Object(map) = &mut body
        {
            map.remove("status");
        }
        let review = options.review(true);
        // A generated name that collides is drawn again, up to this many times in all.
        const ATTEMPTS: usize = 3;
        for attempt in 0..ATTEMPTS {
            let name = if given.is_empty() {
                format!("{generate}{}", random_suffix())
            } else {
                given.clone()
            };
            // Only a generated name may need another attempt, and the body again.
            let last = attempt + 1 == ATTEMPTS;
            let mut object = if given.is_empty() && !last {
                body.clone()
            } else {
                std::mem::take(&mut body)
            };
            {
                let m = metadata_mut(&mut object);
                m.insert("name".into(), json!(name));
                m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
                m.insert("creationTimestamp".into(), json!(now()));
                m.insert("generation".into(), json!(1));
                for k in [
                    "resourceVersion",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                    "selfLink",
                ] {
                    m.remove(k);
                }
            }
            let mut attributes = options.attributes(&self.meta, namespace, &name, None, &review);
            attributes.codec = Some(&self.codec);
            self.chain
                .mutate(&attributes, &mut object, |o| self.admission.default(o))
                .await?;
            let mut object = self.admission.prepare(object, &name)?;
            self.chain.validate(&attributes, &object).await?;
            self.track(None, &mut object, options);
            if options.dry_run {
                return Ok(Written::new(object, true).with_warnings(warnings));
            }
            match self
                .storage
                .create(&self.key(namespace, &name), self.encode(&mut object)?)
                .await
            {
                Ok(kv) => {
                    let mut object = object;
                    metadata_mut(&mut object).insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
                    return Ok(Written {
                        object,
                        created: true,
                        warnings,
                        json: self.answer(&kv),
                    });
                }
                // A generated name collided: draw another.
                Err(StorageError::AlreadyExists) if given.is_empty() && !last => continue,
                Err(e) => return Err(ApiError::from_storage(&self.meta, &name, e)),
            }
        }
        unreachable!("the loop returns on its last attempt")
    }

    /// Replace an object (PUT), or its status.
    pub async fn update(
        &self,
        namespace: Option<&str>,
        name: &str,
        mut body: Value,
        part: Part,
        options: &WriteOptions,
    ) -> ApiResult<Written> {
        let warnings = self.admission.admit_body(&mut body, namespace, options)?;
        set_url_name(&mut body, name)?;
        let current = self.get(namespace, name).await?;
        let mut written = self.replace(namespace, name, &current, body, part, options).await?;
        written.warnings.extend(warnings);
        Ok(written)
    }

    /// The common tail of update and patch: `body` replaces `current`.
    pub(super) async fn replace(
        &self,
        namespace: Option<&str>,
        name: &str,
        current: &Value,
        body: Value,
        part: Part,
        options: &WriteOptions,
    ) -> ApiResult<Written> {
        let current_rv = meta_str(current, "resourceVersion").unwrap_or_default().to_string();
        match meta_str(&body, "resourceVersion") {
            Some(rv) if !rv.is_empty() && rv != current_rv => {
                return Err(ApiError::conflict(&self.meta, name));
            }
            _ => {}
        }
        let mut object = match part {
            Part::Main => {
                let mut object = body;
                if self.meta.status {
                    copy_status(current, &mut object);
                }
                object
            }
            Part::Status => {
                // A status write changes status only (and nothing of the spec or metadata but
                // the ownership an apply to /status computed).
                let mut object = current.clone();
                copy_status(&body, &mut object);
                if let Some(sent) = meta_field(&body, "managedFields") {
                    metadata_mut(&mut object).insert("managedFields".into(), sent.clone());
                }
                object
            }
        };
        {
            let old = current
                .get("metadata")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let m = metadata_mut(&mut object);
            for k in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "namespace",
                "name",
            ] {
                match old.get(k) {
                    Some(v) => m.insert(k.into(), v.clone()),
                    None => m.remove(k),
                };
            }
            m.insert("resourceVersion".into(), json!(current_rv));
        }
        let review = options.review(false);
        let mut attributes = options.attributes(&self.meta, namespace, name, Some(current), &review);
        attributes.codec = Some(&self.codec);
        self.chain
            .mutate(&attributes, &mut object, |o| self.admission.default(o))
            .await?;
        let change = Change {
            old: current,
            status: part == Part::Status,
        };
        let mut object = self.admission.prepare_update(object, name, change)?;
        self.chain.validate(&attributes, &object).await?;
        if spec_part(&object) != spec_part(current) {
            let generation = next_generation(current);
            metadata_mut(&mut object).insert("generation".into(), json!(generation));
        }
        if object == *current && !self.stored_elsewhere(&self.key(namespace, name)).await {
            return Ok(Written::new(object, false));
        }
        self.track(Some(current), &mut object, options);
        let finalized = meta_str(&object, "deletionTimestamp").is_some()
            && meta_field(&object, "finalizers")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty);
        if options.dry_run {
            return Ok(Written::new(object, false));
        }
        let expected: Revision = current_rv.parse().map_err(ApiError::internal)?;
        let key = self.key(namespace, name);
        if finalized {
            // The last finalizer is gone from an object being deleted: delete it now.
            self.storage
                .delete(&key, expected)
                .await
                .map_err(self.storage_error(name))?;
            return Ok(Written::new(object, false));
        }
        let kv = self
            .storage
            .update(&key, self.encode(&mut object)?, expected)
            .await
            .map_err(self.storage_error(name))?;
        metadata_mut(&mut object).insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
        Ok(Written {
            object,
            created: false,
            warnings: Vec::new(),
            json: self.answer(&kv),
        })
    }

    /// Delete an object: at once, or by marking it when finalizers remain. A write that loses
    /// a race with another writer (the status loop, a controller) reads again and retries, as
    /// kube-apiserver does; only the client's own uid/resourceVersion preconditions give 409.
    pub async fn delete(&self, namespace: Option<&str>, name: &str, options: &DeleteOptions) -> ApiResult<Value> {
        if options.ignore_store_read_error {
            return self.delete_unreadable(namespace, name).await;
        }
        self.retrying(name, || async move {
            let current = self.get(namespace, name).await?;
            options.check_preconditions(&self.meta, name, &current)?;
            let review = options.review();
            let mut attributes = options.attributes(&self.meta, namespace, name, &current, &review);
            attributes.codec = Some(&self.codec);
            self.chain.validate(&attributes, &current).await?;
            let expected: Revision = meta_str(&current, "resourceVersion")
                .unwrap_or_default()
                .parse()
                .map_err(ApiError::internal)?;
            let key = self.key(namespace, name);
            let (finalizers, changed) = deletion_finalizers(&current, options.propagation.as_deref());
            if !finalizers.is_empty() {
                let deleting = meta_str(&current, "deletionTimestamp").is_some();
                if deleting && !changed {
                    return Ok(Some(current));
                }
                let mut object = current.clone();
                metadata_mut(&mut object).insert("finalizers".into(), json!(finalizers));
                if deleting {
                    // Already being deleted: only the garbage collector's finalizers change.
                    return self.write_deletion(&key, name, object, expected, options).await;
                }
                let generation = next_generation(&current);
                let m = metadata_mut(&mut object);
                m.insert("deletionTimestamp".into(), json!(now()));
                m.insert("deletionGracePeriodSeconds".into(), json!(0));
                m.insert("generation".into(), json!(generation));
                return self.write_deletion(&key, name, object, expected, options).await;
            }
            if !options.dry_run {
                let deleted = self
                    .storage
                    .delete(&key, expected)
                    .await
                    .map_err(self.storage_error(name));
                if settle(deleted, false)?.is_none() {
                    return Ok(None);
                }
            }
            Ok(Some(current))
        })
        .await
    }

    /// Store an object marked for deletion (or with its deletion finalizers changed).
    async fn write_deletion(
        &self,
        key: &str,
        name: &str,
        mut object: Value,
        expected: Revision,
        options: &DeleteOptions,
    ) -> ApiResult<Option<Value>> {
        if options.dry_run {
            return Ok(Some(object));
        }
        let written = self
            .storage
            .update(key, self.encode(&mut object)?, expected)
            .await
            .map_err(self.storage_error(name));
        let Some(kv) = settle(written, false)? else {
            return Ok(None);
        };
        metadata_mut(&mut object).insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
        Ok(Some(object))
    }

    /// Remove whatever is stored for the object without reading it (no decode, no
    /// finalizers, no preconditions): the way out for an object whose stored bytes are
    /// damaged (`ignoreStoreReadErrorWithClusterBreakingPotential`, as kube-apiserver).
    async fn delete_unreadable(&self, namespace: Option<&str>, name: &str) -> ApiResult<Value> {
        let key = self.key(namespace, name);
        for _ in 0..WRITE_RETRIES {
            let kv = self
                .storage
                .get(&key)
                .await
                .map_err(self.storage_error(name))?
                .ok_or_else(|| ApiError::not_found(&self.meta, name))?;
            let deleted = self
                .storage
                .delete(&key, kv.mod_revision)
                .await
                .map_err(self.storage_error(name));
            if settle(deleted, false)?.is_some() {
                tracing::warn!(
                    key,
                    "deleted an object without reading it (ignoreStoreReadErrorWithClusterBreakingPotential)"
                );
                return Ok(json!({
                    "apiVersion": "v1", "kind": "Status", "status": "Success",
                    "details": {"name": name, "group": self.meta.group, "kind": self.meta.plural},
                }));
            }
        }
        Err(ApiError::conflict(&self.meta, name))
    }

    /// Run `attempt` until it is done: `None` is a write that lost a race with a concurrent
    /// one (its client gave no precondition), and it reads again, up to a bound.
    pub(super) async fn retrying<T, Fut>(&self, name: &str, mut attempt: impl FnMut() -> Fut) -> ApiResult<T>
    where
        Fut: std::future::Future<Output = ApiResult<Option<T>>>,
    {
        for _ in 0..WRITE_RETRIES {
            if let Some(written) = attempt().await? {
                return Ok(written);
            }
        }
        Err(ApiError::conflict(&self.meta, name))
    }
}

/// A write's result for [`Store::retrying`]: a conflict is retried unless the client's
/// resourceVersion precondition caused it.
pub(super) fn settle<T>(written: ApiResult<T>, precondition: bool) -> ApiResult<Option<T>> {
    match written {
        Err(e) if e.reason == "Conflict" && !precondition => Ok(None),
        other => other.map(Some),
    }
}

/// 500 naming the stored keys that cannot be decoded and the way out.
pub(super) fn corrupt(keys: &[&str], why: impl std::fmt::Display) -> ApiError {
    let shown: Vec<String> = keys.iter().take(10).map(|k| format!("{k:?}")).collect();
    let more = keys.len().saturating_sub(shown.len());
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    ApiError::internal(format!(
        "stored object(s) cannot be decoded ({why}): {}{more}; delete each with ?ignoreStoreReadErrorWithClusterBreakingPotential=true (needs the \"unsafe-delete-ignore-read-errors\" verb)",
        shown.join(", ")
    ))
}

/// The garbage collector's finalizers, as kube-apiserver sets them on delete.
const ORPHAN: &str = "orphan";
const FOREGROUND: &str = "foregroundDeletion";

/// The finalizers `object` keeps when deleted with `propagation` (`Orphan` adds `orphan`,
/// `Foreground` adds `foregroundDeletion`, `Background` neither; none given keeps what the
/// object has), and whether they differ from its current ones.
fn deletion_finalizers(object: &Value, propagation: Option<&str>) -> (Vec<String>, bool) {
    let current: Vec<String> = meta_field(object, "finalizers")
        .and_then(Value::as_array)
        .map(|f| f.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    let Some(policy) = propagation else {
        return (current, false);
    };
    let mut finalizers: Vec<String> = current
        .iter()
        .filter(|f| *f != ORPHAN && *f != FOREGROUND)
        .cloned()
        .collect();
    match policy {
        "Orphan" => finalizers.push(ORPHAN.into()),
        "Foreground" => finalizers.push(FOREGROUND.into()),
        _ => {}
    }
    let changed = finalizers != current;
    (finalizers, changed)
}
