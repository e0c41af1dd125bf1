//! The generic registry: object semantics on top of storage, with a resource's strategy.
//!
//! Handlers call a [`Store`] with decoded JSON; the store runs the strategy (defaults,
//! schema and hook validation, status/spec split, generation), sets server fields (uid,
//! creationTimestamp, resourceVersion, finalizers/deletionTimestamp) and talks to storage.

use std::marker::PhantomData;
use std::sync::Arc;

use base64::Engine as _;
use futures::{Stream, StreamExt};
use serde_json::{Map, Value, json};

use crate::managed::{self, Writer};
use crate::resource::{ApiResource, FieldError, ResourceMeta};
use crate::selector::FieldSelector;
use crate::status::{ApiError, ApiResult};
use crate::storage::{EventKind, KeyValue, RangeRequest, Revision, Storage, StorageError, WatchCache};
use crate::validation::Validator;

/// Most objects one list page returns, whatever `limit` asks.
pub const MAX_LIMIT: usize = 10_000;
/// Optimistic-concurrency retries of a patch against concurrent writers.
const PATCH_RETRIES: usize = 5;

/// The type-erased strategy hooks of one `ApiResource` type.
pub trait Strategy: Send + Sync + 'static {
    /// Static metadata.
    fn meta(&self) -> &ResourceMeta;
    /// The structural schema.
    fn schema(&self) -> Value;
    /// Decode into the Rust type (pruning unknown fields), default, validate, encode back.
    fn prepare(&self, object: Value) -> Result<Value, Prepared>;
}

/// Why [`Strategy::prepare`] refused an object.
pub enum Prepared {
    /// The JSON does not decode into the type: 400.
    Decode(String),
    /// The `validate` hook's errors: 422.
    Invalid(Vec<FieldError>),
}

/// The strategy of `T`, from its derived `ApiResource` impl.
pub struct TypedStrategy<T>(PhantomData<fn() -> T>);

impl<T> Default for TypedStrategy<T> {
    fn default() -> Self {
        TypedStrategy(PhantomData)
    }
}

impl<T: ApiResource> Strategy for TypedStrategy<T> {
    fn meta(&self) -> &ResourceMeta {
        &T::META
    }

    fn schema(&self) -> Value {
        T::openapi_schema()
    }

    fn prepare(&self, object: Value) -> Result<Value, Prepared> {
        let mut typed: T = serde_json::from_value(object).map_err(|e| Prepared::Decode(e.to_string()))?;
        typed.apply_defaults();
        let errors = typed.validate();
        if !errors.is_empty() {
            return Err(Prepared::Invalid(errors));
        }
        let mut value = serde_json::to_value(&typed).map_err(|e| Prepared::Decode(e.to_string()))?;
        set_type_meta(&mut value, &T::META);
        Ok(value)
    }
}

/// How unknown fields in a request body are treated (`fieldValidation`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Drop them and say so in a `Warning` header (the default).
    #[default]
    Warn,
    /// Reject the request with 400.
    Strict,
}

impl FieldValidation {
    /// Parse the query parameter.
    pub fn parse(value: Option<&str>) -> ApiResult<Self> {
        match value {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of Ignore, Warn or Strict, not {other:?}"
            ))),
        }
    }
}

/// Options shared by writes.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// `dryRun=All`: run everything, persist nothing.
    pub dry_run: bool,
    /// `fieldValidation`.
    pub field_validation: FieldValidation,
    /// `fieldManager` (required for apply).
    pub field_manager: Option<String>,
    /// The manager when `fieldManager` is absent (kube-apiserver takes the User-Agent's first part).
    pub default_manager: String,
    /// `force` (apply only): take conflicting fields over.
    pub force: bool,
    /// The subresource written: "", "status" or "scale".
    pub subresource: &'static str,
}

impl WriteOptions {
    /// The field manager of this write.
    pub fn manager(&self) -> &str {
        match (&self.field_manager, self.default_manager.as_str()) {
            (Some(m), _) => m,
            (None, "") => "unknown",
            (None, d) => d,
        }
    }
}

/// Which part of an object a write addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The main resource: status changes are ignored.
    Main,
    /// `/status`: only status changes are kept.
    Status,
}

/// A write's result: the object, whether it was created, and warnings for the client.
#[derive(Debug)]
pub struct Written {
    /// The object as stored (or as it would be, for a dry run).
    pub object: Value,
    /// 201 rather than 200.
    pub created: bool,
    /// `Warning` header texts.
    pub warnings: Vec<String>,
}

/// List parameters.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// Only this namespace (None: all, or a cluster-scoped resource).
    pub namespace: Option<String>,
    /// `labelSelector`.
    pub labels: Option<kube_core::Selector>,
    /// `fieldSelector`.
    pub fields: FieldSelector,
    /// `limit` (0 = no limit).
    pub limit: usize,
    /// `continue`.
    pub continue_token: Option<String>,
    /// `resourceVersion`.
    pub resource_version: Option<String>,
    /// `resourceVersionMatch`.
    pub resource_version_match: Option<String>,
}

impl ListOptions {
    /// Whether `object` matches the label and field selectors.
    pub fn selects(&self, object: &Value) -> bool {
        self.labels
            .as_ref()
            .is_none_or(|l| crate::selector::labels_match(l, object))
            && self.fields.matches(object)
    }
}

/// A list answer.
#[derive(Debug)]
pub struct Listed {
    /// Matching objects.
    pub items: Vec<Value>,
    /// The list's `metadata`.
    pub metadata: Value,
    /// The revision read at.
    pub revision: Revision,
}

/// Delete parameters (query and `DeleteOptions` body).
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    /// `dryRun=All`.
    pub dry_run: bool,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
}

impl DeleteOptions {
    /// 409 Conflict unless `object` meets the uid and resourceVersion preconditions.
    pub fn check_preconditions(&self, meta: &ResourceMeta, name: &str, object: &Value) -> ApiResult<()> {
        if let Some(uid) = &self.uid
            && meta_str(object, "uid") != Some(uid.as_str())
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta.group_resource(),
                    meta_str(object, "uid").unwrap_or_default()
                ),
            ));
        }
        if let Some(rv) = &self.resource_version
            && meta_str(object, "resourceVersion") != Some(rv.as_str())
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    meta.group_resource(),
                    meta_str(object, "resourceVersion").unwrap_or_default()
                ),
            ));
        }
        Ok(())
    }
}

/// A watch event for the HTTP layer.
#[derive(Clone, Debug)]
pub enum WatchEvent {
    /// ADDED, MODIFIED or DELETED with the object.
    Object(&'static str, Value),
    /// A BOOKMARK at a revision; `initial_events_end` marks the end of sendInitialEvents.
    Bookmark(Revision, bool),
    /// Nothing to send: every change up to this revision was considered (later bookmarks may use it).
    Progress(Revision),
    /// An ERROR with a Status (e.g. 410 Expired); the stream ends after it.
    Error(ApiError),
}

/// One resource's registry.
pub struct Store {
    meta: ResourceMeta,
    admission: Admission,
    storage: Arc<WatchCache>,
    prefix: String,
}

/// What every write goes through, whatever stores it: type and namespace checks,
/// `fieldValidation`, schema validation and the strategy's defaults and validation.
pub struct Admission {
    meta: ResourceMeta,
    strategy: Arc<dyn Strategy>,
    validator: Validator,
    schema: Value,
}

impl Admission {
    /// Admission for `strategy`'s resource; fails when its schema is not structural.
    pub fn new(strategy: Arc<dyn Strategy>) -> Result<Self, String> {
        let meta = *strategy.meta();
        let schema = strategy.schema();
        let violations = crate::schema::violations(&schema);
        if !violations.is_empty() {
            return Err(format!(
                "{} has a non-structural schema: {}",
                meta.kind,
                violations.join("; ")
            ));
        }
        let validator = Validator::new(schema.clone())?;
        Ok(Admission {
            meta,
            strategy,
            validator,
            schema,
        })
    }

    /// The structural schema.
    pub fn schema(&self) -> Value {
        self.schema.clone()
    }

    /// Check a request body's type and namespace, and apply `fieldValidation`.
    pub fn admit_body(
        &self,
        body: &mut Value,
        namespace: Option<&str>,
        options: &WriteOptions,
    ) -> ApiResult<Vec<String>> {
        let Value::Object(map) = body else {
            return Err(ApiError::bad_request("the request body must be a JSON or YAML object"));
        };
        let api_version = self.meta.api_version();
        if let Some(v) = map.get("apiVersion").filter(|v| !v.is_null())
            && v.as_str() != Some(api_version.as_str())
        {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({}) does not match the expected API version ({api_version})",
                v.as_str().unwrap_or("?")
            )));
        }
        if let Some(k) = map.get("kind").filter(|v| !v.is_null())
            && k.as_str() != Some(self.meta.kind)
        {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({}) does not match the expected kind ({})",
                k.as_str().unwrap_or("?"),
                self.meta.kind
            )));
        }
        set_type_meta(body, &self.meta);
        if let (Some(ns), true) = (namespace, self.meta.namespaced()) {
            match meta_str(body, "namespace") {
                Some(given) if !given.is_empty() && given != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {
                    metadata_mut(body).insert("namespace".into(), json!(ns));
                }
            }
        } else {
            metadata_mut(body).remove("namespace");
        }
        if options.field_validation == FieldValidation::Ignore {
            return Ok(Vec::new());
        }
        let unknown = self.validator.unknown_fields(body);
        match options.field_validation {
            FieldValidation::Ignore => Ok(Vec::new()),
            FieldValidation::Warn => Ok(unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect()),
            FieldValidation::Strict if unknown.is_empty() => Ok(Vec::new()),
            FieldValidation::Strict => Err(ApiError::bad_request(format!(
                "strict decoding error: {}",
                unknown
                    .iter()
                    .map(|f| format!("unknown field \"{f}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Schema, type and hook validation, all errors in one 422.
    pub fn prepare(&self, object: Value, name: &str) -> ApiResult<Value> {
        let mut errors = self.validator.validate(&object);
        if let Some(e) = check_name(name) {
            errors.insert(0, e);
        }
        if !errors.is_empty() {
            // Still run the hook when the object decodes, so one 422 lists everything.
            if let Err(Prepared::Invalid(more)) = self.strategy.prepare(object) {
                let more: Vec<_> = more
                    .into_iter()
                    .filter(|m| !errors.iter().any(|e| e.field == m.field))
                    .collect();
                errors.extend(more);
            }
            return Err(ApiError::invalid(&self.meta, name, &errors));
        }
        let metadata = object.get("metadata").cloned();
        let mut prepared = self.strategy.prepare(object).map_err(|e| match e {
            Prepared::Decode(m) => ApiError::bad_request(format!("error decoding {}: {m}", self.meta.kind)),
            Prepared::Invalid(errors) => ApiError::invalid(&self.meta, name, &errors),
        })?;
        // The typed round trip may drop metadata fields the Rust type does not model.
        if let Some(metadata) = metadata {
            prepared["metadata"] = metadata;
        }
        Ok(prepared)
    }
}

pub(crate) fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Whether an apply by kubectl's own manager ("kubectl") conflicts only on fields of the
/// object's client-side `last-applied-configuration`: then it takes them over (as
/// kube-apiserver does, so `kubectl apply --server-side` upgrades objects `kubectl apply`
/// made). Any other manager gets its conflicts.
fn upgrades_client_side_apply(current: &Value, conflicts: &[managed::Conflict], writer: &Writer<'_>) -> bool {
    if writer.manager != "kubectl" {
        return false;
    }
    let Some(last) = current
        .pointer("/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration")
        .and_then(Value::as_str)
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
    else {
        return false;
    };
    let last_applied = crate::fieldset::paths(&last, writer.schema);
    conflicts.iter().all(|c| last_applied.contains(&c.path))
}

/// A write's result for [`Store::retrying`]: a conflict is retried unless the client's
/// resourceVersion precondition caused it.
fn settle(written: ApiResult<Written>, precondition: bool) -> ApiResult<Option<Written>> {
    match written {
        Err(e) if e.reason == "Conflict" && !precondition => Ok(None),
        other => other.map(Some),
    }
}

/// Set `apiVersion` and `kind` on an encoded object.
pub fn set_type_meta(value: &mut Value, meta: &ResourceMeta) {
    if let Value::Object(map) = value {
        map.insert("apiVersion".into(), json!(meta.api_version()));
        map.insert("kind".into(), json!(meta.kind));
    }
}

pub(crate) fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str()
}

pub(crate) fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    object["metadata"].as_object_mut().expect("metadata is an object")
}

/// Make `into`'s status what `from`'s is (absent included): the status/spec split.
fn copy_status(from: &Value, into: &mut Value) {
    match (from.get("status"), into) {
        (Some(status), into) => into["status"] = status.clone(),
        (None, Value::Object(map)) => {
            map.remove("status");
        }
        (None, _) => {}
    }
}

/// The fields that make up "spec" for `metadata.generation`: all but metadata and status.
fn spec_part(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Value::Object(map) = &mut copy {
        for k in ["metadata", "status", "apiVersion", "kind"] {
            map.remove(k);
        }
    }
    copy
}

/// RFC 1123 subdomain, as Kubernetes requires of custom resource names.
/// The 422 for a create with neither name nor generateName.
pub(crate) fn name_required(meta: &ResourceMeta) -> ApiError {
    ApiError::invalid(
        meta,
        "",
        &[FieldError::required(
            "metadata.name",
            "name or generateName is required",
        )],
    )
}

/// Give `body` the name on the URL; 400 when it names another object.
pub(crate) fn set_url_name(body: &mut Value, name: &str) -> ApiResult<()> {
    match meta_str(body, "name") {
        Some(n) if n != name => Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        ))),
        _ => {
            metadata_mut(body).insert("name".into(), json!(name));
            Ok(())
        }
    }
}

pub(crate) fn check_name(name: &str) -> Option<FieldError> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.len() <= 253 && name.split('.').all(label_ok) {
        return None;
    }
    Some(FieldError::invalid(
        "metadata.name",
        &name,
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
    ))
}

pub(crate) fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4().as_bytes()[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct ContinueToken {
    pub(crate) rv: Revision,
    pub(crate) start: String,
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
            storage,
            prefix,
        })
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
        match namespace {
            Some(ns) if self.meta.namespaced() => format!("{}{ns}/{name}", self.prefix),
            _ => format!("{}{name}", self.prefix),
        }
    }

    fn list_prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.meta.namespaced() => format!("{}{ns}/", self.prefix),
            _ => self.prefix.clone(),
        }
    }

    fn decode(&self, kv: &KeyValue) -> ApiResult<Value> {
        let mut object: Value = serde_json::from_slice(&kv.value).map_err(ApiError::internal)?;
        metadata_mut(&mut object).insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
        Ok(object)
    }

    fn encode(object: &Value) -> ApiResult<Vec<u8>> {
        let mut object = object.clone();
        metadata_mut(&mut object).remove("resourceVersion");
        serde_json::to_vec(&object).map_err(ApiError::internal)
    }

    fn storage_error(&self, name: &str) -> impl Fn(StorageError) -> ApiError + '_ {
        let name = name.to_string();
        move |e| ApiError::from_storage(&self.meta, &name, e)
    }

    /// Read one object.
    pub async fn get(&self, namespace: Option<&str>, name: &str) -> ApiResult<Value> {
        let kv = self
            .storage
            .get(&self.key(namespace, name))
            .await
            .map_err(self.storage_error(name))?;
        let kv = kv.ok_or_else(|| ApiError::not_found(&self.meta, name))?;
        self.decode(&kv)
    }

    fn writer<'a>(&'a self, options: &'a WriteOptions) -> Writer<'a> {
        Writer {
            manager: options.manager(),
            subresource: options.subresource,
            api_version: self.meta.api_version(),
            schema: &self.admission.schema,
        }
    }

    /// Record `object`'s write in its managedFields, unless the request set them itself (valid
    /// and different from `current`'s: a client migrating ownership, or an apply).
    fn track(&self, current: Option<&Value>, object: &mut Value, options: &WriteOptions) {
        let sent = object.pointer("/metadata/managedFields");
        let had = current.and_then(|c| c.pointer("/metadata/managedFields"));
        if sent.is_some() && sent != had && managed::decode(object).is_some_and(|e| !e.is_empty()) {
            return;
        }
        let entries = current.and_then(managed::decode).unwrap_or_default();
        let entries = managed::track_update(entries, current, object, &self.writer(options));
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
        for attempt in 0..3 {
            let name = if given.is_empty() {
                format!("{generate}{}", random_suffix())
            } else {
                given.clone()
            };
            let mut object = body.clone();
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
            let mut object = self.admission.prepare(object, &name)?;
            self.track(None, &mut object, options);
            if options.dry_run {
                return Ok(Written {
                    object,
                    created: true,
                    warnings,
                });
            }
            match self
                .storage
                .create(&self.key(namespace, &name), Self::encode(&object)?)
                .await
            {
                Ok(kv) => {
                    let mut object = object;
                    metadata_mut(&mut object).insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
                    return Ok(Written {
                        object,
                        created: true,
                        warnings,
                    });
                }
                // A generated name collided: draw another.
                Err(StorageError::AlreadyExists) if given.is_empty() && attempt < 2 => continue,
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
    async fn replace(
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
                if let Some(sent) = body.pointer("/metadata/managedFields") {
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
        let mut object = self.admission.prepare(object, name)?;
        if spec_part(&object) != spec_part(current) {
            let generation = current
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                + 1;
            metadata_mut(&mut object).insert("generation".into(), json!(generation));
        }
        if object == *current {
            return Ok(Written {
                object,
                created: false,
                warnings: Vec::new(),
            });
        }
        self.track(Some(current), &mut object, options);
        let finalized = meta_str(&object, "deletionTimestamp").is_some()
            && object
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty);
        if options.dry_run {
            return Ok(Written {
                object,
                created: false,
                warnings: Vec::new(),
            });
        }
        let expected: Revision = current_rv.parse().map_err(ApiError::internal)?;
        let key = self.key(namespace, name);
        if finalized {
            // The last finalizer is gone from an object being deleted: delete it now.
            self.storage
                .delete(&key, expected)
                .await
                .map_err(self.storage_error(name))?;
            return Ok(Written {
                object,
                created: false,
                warnings: Vec::new(),
            });
        }
        let kv = self
            .storage
            .update(&key, Self::encode(&object)?, expected)
            .await
            .map_err(self.storage_error(name))?;
        metadata_mut(&mut object).insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
        Ok(Written {
            object,
            created: false,
            warnings: Vec::new(),
        })
    }

    /// Patch an object or its status with a JSON patch or merge patch.
    pub async fn patch(
        &self,
        namespace: Option<&str>,
        name: &str,
        patch: &crate::patch::Patch,
        part: Part,
        options: &WriteOptions,
    ) -> ApiResult<Written> {
        if let crate::patch::Patch::Apply(applied) = patch {
            return self.apply(namespace, name, applied, part, options).await;
        }
        if options.force {
            return Err(ApiError::bad_request(
                "force: Forbidden: may not be specified for non-apply patch",
            ));
        }
        self.retrying(name, || async move {
            let current = self.get(namespace, name).await?;
            let mut patched = patch.apply(&current)?;
            // A patch that sets resourceVersion makes it a precondition; otherwise the
            // current one is, and a concurrent write means: read again and retry.
            let precondition = meta_str(&patched, "resourceVersion") != meta_str(&current, "resourceVersion");
            let warnings = self.admission.admit_body(&mut patched, namespace, options)?;
            if meta_str(&patched, "name") != Some(name) {
                return Err(ApiError::bad_request(
                    "the name of an object cannot be changed by a patch",
                ));
            }
            let written = self.replace(namespace, name, &current, patched, part, options).await;
            Ok(settle(written, precondition)?.map(|mut w| {
                w.warnings.extend(warnings);
                w
            }))
        })
        .await
    }

    /// Server-side apply (`application/apply-patch+yaml`): merge `applied` as its field
    /// manager's intent, creating the object when absent.
    pub async fn apply(
        &self,
        namespace: Option<&str>,
        name: &str,
        applied: &Value,
        part: Part,
        options: &WriteOptions,
    ) -> ApiResult<Written> {
        if options.field_manager.as_deref().is_none_or(str::is_empty) {
            return Err(ApiError::bad_request(
                "fieldManager: Required value: is required for apply patch",
            ));
        }
        let mut applied = applied.clone();
        for key in ["apiVersion", "kind"] {
            if applied.get(key).and_then(Value::as_str).is_none_or(str::is_empty) {
                return Err(ApiError::bad_request(format!("{key} must be set in an apply patch")));
            }
        }
        let warnings = self.admission.admit_body(&mut applied, namespace, options)?;
        set_url_name(&mut applied, name)?;
        metadata_mut(&mut applied).remove("managedFields");
        if let Value::Object(map) = &mut applied {
            match part {
                Part::Main if self.meta.status => {
                    map.remove("status");
                }
                Part::Main => {}
                // Apply to /status: status only.
                Part::Status => map.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status")),
            }
        }
        let writer = self.writer(options);
        let (applied, warnings, writer) = (&applied, &warnings, &writer);
        self.retrying(name, || async move {
            let current = match self.get(namespace, name).await {
                Ok(c) => Some(c),
                Err(e) if e.code == 404 && part == Part::Main => None,
                Err(e) => return Err(e),
            };
            let before = current.as_ref().and_then(managed::decode).unwrap_or_default();
            let (mut merged, entries) =
                match managed::apply(current.as_ref(), applied, before.clone(), writer, options.force) {
                    Ok(done) => done,
                    Err(conflicts)
                        if current
                            .as_ref()
                            .is_some_and(|c| upgrades_client_side_apply(c, &conflicts, writer)) =>
                    {
                        managed::apply(current.as_ref(), applied, before.clone(), writer, true)
                            .expect("a forced apply has no conflicts")
                    }
                    Err(conflicts) => return Err(self.apply_conflict(name, &conflicts)),
                };
            let Some(current) = current else {
                managed::set(&mut merged, &entries);
                let mut written = self.create(namespace, merged, options).await?;
                written.warnings.extend(warnings.iter().cloned());
                return Ok(Some(written));
            };
            // Nothing changed, not even ownership: no write (and no new resourceVersion).
            let same_fields = |a: &[managed::Entry], b: &[managed::Entry]| {
                a.len() == b.len()
                    && a.iter().zip(b).all(|(x, y)| {
                        (&x.manager, &x.operation, &x.subresource, &x.fields)
                            == (&y.manager, &y.operation, &y.subresource, &y.fields)
                    })
            };
            let mut unmanaged = merged.clone();
            metadata_mut(&mut unmanaged).remove("managedFields");
            let mut live = current.clone();
            metadata_mut(&mut live).remove("managedFields");
            if unmanaged == live && same_fields(&before, &entries) {
                return Ok(Some(Written {
                    object: current,
                    created: false,
                    warnings: warnings.clone(),
                }));
            }
            managed::set(&mut merged, &entries);
            let precondition = meta_str(applied, "resourceVersion").is_some();
            let written = self.replace(namespace, name, &current, merged, part, options).await;
            Ok(settle(written, precondition)?.map(|mut w| {
                w.warnings.extend(warnings.iter().cloned());
                w
            }))
        })
        .await
    }

    /// Run `attempt` until it is done: `None` is a write that lost a race with a concurrent
    /// one (its client gave no precondition), and it reads again, up to a bound.
    async fn retrying<Fut>(&self, name: &str, mut attempt: impl FnMut() -> Fut) -> ApiResult<Written>
    where
        Fut: std::future::Future<Output = ApiResult<Option<Written>>>,
    {
        for _ in 0..PATCH_RETRIES {
            if let Some(written) = attempt().await? {
                return Ok(written);
            }
        }
        Err(ApiError::conflict(&self.meta, name))
    }

    /// The 409 of an apply whose fields other managers own.
    fn apply_conflict(&self, name: &str, conflicts: &[managed::Conflict]) -> ApiError {
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|c| json!({"reason": "FieldManagerConflict", "message": c.who(), "field": crate::fieldset::display(&c.path)}))
            .collect();
        ApiError {
            details: Some(json!({"name": name, "group": self.meta.group, "kind": self.meta.plural, "causes": causes})),
            ..ApiError::new(409, "Conflict", managed::conflicts_message(conflicts))
        }
    }

    /// Delete an object: at once, or by marking it when finalizers remain.
    pub async fn delete(&self, namespace: Option<&str>, name: &str, options: &DeleteOptions) -> ApiResult<Value> {
        let current = self.get(namespace, name).await?;
        options.check_preconditions(&self.meta, name, &current)?;
        let expected: Revision = meta_str(&current, "resourceVersion")
            .unwrap_or_default()
            .parse()
            .map_err(ApiError::internal)?;
        let key = self.key(namespace, name);
        let has_finalizers = current
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if meta_str(&current, "deletionTimestamp").is_some() {
                return Ok(current);
            }
            let mut object = current.clone();
            let generation = current
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                + 1;
            let m = metadata_mut(&mut object);
            m.insert("deletionTimestamp".into(), json!(now()));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
            m.insert("generation".into(), json!(generation));
            if options.dry_run {
                return Ok(object);
            }
            let kv = self
                .storage
                .update(&key, Self::encode(&object)?, expected)
                .await
                .map_err(self.storage_error(name))?;
            metadata_mut(&mut object).insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
            return Ok(object);
        }
        if !options.dry_run {
            self.storage
                .delete(&key, expected)
                .await
                .map_err(self.storage_error(name))?;
        }
        Ok(current)
    }

    /// How many objects are stored.
    pub async fn count(&self) -> ApiResult<u64> {
        let page = self
            .storage
            .range(RangeRequest {
                prefix: self.prefix.clone(),
                limit: 1,
                ..Default::default()
            })
            .await
            .map_err(|e| ApiError::from_storage(&self.meta, "", e))?;
        Ok(page.kvs.len() as u64 + page.remaining)
    }

    /// List objects.
    pub async fn list(&self, options: &ListOptions) -> ApiResult<Listed> {
        let limit = if options.limit == 0 {
            0
        } else {
            options.limit.min(MAX_LIMIT)
        };
        let prefix = self.list_prefix(options.namespace.as_deref());
        let (mut revision, mut start_after) = (None, None);
        if let Some(token) = options.continue_token.as_deref().filter(|t| !t.is_empty()) {
            let token = decode_continue(token)?;
            if !token.start.starts_with(&prefix) {
                return Err(ApiError::bad_request("continue key is not valid for this list"));
            }
            revision = Some(token.rv);
            start_after = Some(token.start);
        } else {
            revision = self
                .read_revision(
                    options.resource_version.as_deref(),
                    options.resource_version_match.as_deref(),
                )
                .await?
                .or(revision);
        }
        let filtered = options.labels.is_some() || !options.fields.is_empty();
        let mut items = Vec::new();
        let mut more = false;
        let mut last_key = None;
        let (read_at, remaining) = loop {
            let page = self
                .storage
                .range(RangeRequest { prefix: prefix.clone(), start_after: start_after.clone(), limit, revision })
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
                let object = self.decode(kv)?;
                if options.selects(&object) {
                    items.push(object);
                }
            }
            if limit == 0 || page.remaining == 0 || more || items.len() == limit {
                more |= page.remaining > 0;
                break (page.revision, page.remaining);
            }
            start_after = last_key.clone();
        };
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

    /// The revision a read asks for: None for "newest".
    async fn read_revision(&self, rv: Option<&str>, rv_match: Option<&str>) -> ApiResult<Option<Revision>> {
        let rv = match rv.filter(|r| !r.is_empty()) {
            None => {
                if rv_match.is_some_and(|m| !m.is_empty()) {
                    return Err(ApiError::bad_request(
                        "resourceVersionMatch is forbidden unless resourceVersion is provided",
                    ));
                }
                return Ok(None);
            }
            Some(rv) => rv.parse::<Revision>().map_err(|_| {
                ApiError::bad_request(format!("invalid resourceVersion {rv:?}: must be a decimal revision"))
            })?,
        };
        match rv_match.unwrap_or("") {
            "" | "NotOlderThan" => {
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
                Ok(None)
            }
            "Exact" => {
                if rv == 0 {
                    return Err(ApiError::bad_request(
                        "resourceVersionMatch=Exact is forbidden for resourceVersion \"0\"",
                    ));
                }
                Ok(Some(rv))
            }
            other => Err(ApiError::bad_request(format!(
                "unsupported resourceVersionMatch {other:?}"
            ))),
        }
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
            // Decoded once for all watchers of the resource.
            let decoded = change.decoded(|e| {
                let new = store.decode(&e.kv).ok()?;
                Some((new, e.prev.as_ref().and_then(|p| store.decode(p).ok())))
            });
            let Some((new, old)) = decoded else {
                return WatchEvent::Error(ApiError::internal(format!(
                    "stored object {} does not decode",
                    event.kv.key
                )));
            };
            let old_matches = old.as_ref().is_some_and(|old| options.selects(old));
            match watch_type(event.kind == EventKind::Delete, old_matches, options.selects(new)) {
                Some(kind) => WatchEvent::Object(kind, new.clone()),
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

pub(crate) fn encode_continue(token: &ContinueToken) -> String {
    let json = serde_json::to_vec(token).expect("a token serializes");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

pub(crate) fn decode_continue(token: &str) -> ApiResult<ContinueToken> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| ApiError::bad_request("continue key is not valid"))
}

/// A write to the scale subresource.
#[derive(Debug)]
pub enum ScaleChange {
    /// PUT of a whole `autoscaling/v1 Scale`.
    Replace(Value),
    /// PATCH of the Scale.
    Patch(crate::patch::Patch),
}

impl Store {
    /// The structural schema of the resource.
    pub fn schema(&self) -> Value {
        self.admission.schema()
    }

    /// The `autoscaling/v1 Scale` view of an object.
    pub fn to_scale(&self, object: &Value) -> ApiResult<Value> {
        let paths = self.meta.scale.ok_or_else(ApiError::path_not_found)?;
        let replicas = |path: &str| crate::jsonpath::get(object, path).and_then(Value::as_i64).unwrap_or(0);
        let mut status = json!({"replicas": replicas(paths.status_replicas)});
        if let Some(selector) = paths
            .label_selector
            .and_then(|p| crate::jsonpath::get(object, p))
            .and_then(Value::as_str)
        {
            status["selector"] = json!(selector);
        }
        let metadata = object.get("metadata").cloned().unwrap_or_default();
        let keep = ["name", "namespace", "uid", "resourceVersion", "creationTimestamp"];
        let metadata: Map<String, Value> = metadata
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| keep.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(json!({
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": metadata,
            "spec": {"replicas": replicas(paths.spec_replicas)},
            "status": status,
        }))
    }

    /// GET `/scale`.
    pub async fn get_scale(&self, namespace: Option<&str>, name: &str) -> ApiResult<Value> {
        self.meta.scale.ok_or_else(ApiError::path_not_found)?;
        let object = self.get(namespace, name).await?;
        self.to_scale(&object)
    }

    /// PUT or PATCH `/scale`: sets the object's replicas path, runs the full strategy.
    pub async fn update_scale(
        &self,
        namespace: Option<&str>,
        name: &str,
        change: ScaleChange,
        options: &WriteOptions,
    ) -> ApiResult<Written> {
        let paths = self.meta.scale.ok_or_else(ApiError::path_not_found)?;
        let change = &change;
        self.retrying(name, || async move {
            let current = self.get(namespace, name).await?;
            let scale = self.to_scale(&current)?;
            let desired = match change {
                ScaleChange::Replace(body) => body.clone(),
                ScaleChange::Patch(patch) => patch.apply(&scale)?,
            };
            // A PUT's resourceVersion is a precondition; a patch's only if the patch set one
            // (the Scale it applies to carries the current one).
            let given = meta_str(&desired, "resourceVersion").filter(|rv| !rv.is_empty());
            let precondition = match change {
                ScaleChange::Replace(_) => given.is_some(),
                ScaleChange::Patch(_) => given != meta_str(&scale, "resourceVersion"),
            };
            if precondition && given != meta_str(&current, "resourceVersion") {
                return Err(ApiError::conflict(&self.meta, name));
            }
            let replicas = match desired.pointer("/spec/replicas") {
                Some(Value::Number(n)) if n.as_i64().is_some_and(|r| (0..=i32::MAX as i64).contains(&r)) => n.clone(),
                Some(other) => {
                    return Err(ApiError::new(
                        422,
                        "Invalid",
                        format!(
                            "Scale.autoscaling \"{name}\" is invalid: spec.replicas: Invalid value: {other}: must be greater than or equal to 0"
                        ),
                    ));
                }
                None => json!(0).as_number().expect("a number").clone(),
            };
            let mut object = current.clone();
            crate::jsonpath::set(&mut object, paths.spec_replicas, Value::Number(replicas))
                .map_err(ApiError::internal)?;
            let written = self.replace(namespace, name, &current, object, Part::Main, options).await;
            match settle(written, precondition)? {
                Some(written) => Ok(Some(Written {
                    object: self.to_scale(&written.object)?,
                    ..written
                })),
                None => Ok(None),
            }
        })
        .await
    }
}
