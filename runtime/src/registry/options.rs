//! What a registry call takes and gives: write, list and delete options (with delete
//! preconditions), written objects, list pages and their continue tokens, watch events.

use std::sync::Arc;

use base64::Engine as _;
use serde_json::{Value, json};

use super::object::meta_str;
use crate::admission::{Attributes, Operation, RequestScope};
use crate::resource::ResourceMeta;
use crate::schema::selector::FieldSelector;
use crate::status::{ApiError, ApiResult};
use crate::storage::Revision;

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
    /// Fields the request body gave more than once (reported by `fieldValidation`).
    pub duplicate_fields: Vec<String>,
    /// Who writes, for admission; `None` for the server's own writes.
    pub user: Option<crate::filters::authn::UserInfo>,
    /// The request's admission scope (deadline, warnings, audit annotations).
    pub scope: Arc<RequestScope>,
}

impl WriteOptions {
    /// These options, for a write by `user` within `scope`.
    pub fn by(self, user: Option<crate::filters::authn::UserInfo>, scope: &Arc<RequestScope>) -> Self {
        WriteOptions {
            user,
            scope: scope.clone(),
            ..self
        }
    }

    /// The admission attributes of this write of `name`: a create without `old`, an update
    /// of `old`; `review` is [`WriteOptions::review`]'s.
    pub fn attributes<'a>(
        &'a self,
        meta: &'a ResourceMeta,
        namespace: Option<&'a str>,
        name: &'a str,
        old: Option<&'a Value>,
        review: &'a Value,
    ) -> Attributes<'a> {
        let operation = if old.is_some() {
            Operation::Update
        } else {
            Operation::Create
        };
        Attributes {
            old_object: old,
            ..Attributes::new(operation, meta, namespace, name)
                .by(self.user.as_ref(), self.subresource, self.dry_run)
                .within(&self.scope, review)
        }
    }

    /// The options as admission webhooks receive them (`CreateOptions` or `UpdateOptions`).
    pub fn review(&self, create: bool) -> Value {
        let kind = if create { "CreateOptions" } else { "UpdateOptions" };
        let mut options = json!({"kind": kind, "apiVersion": "meta.k8s.io/v1"});
        if self.dry_run {
            options["dryRun"] = json!(["All"]);
        }
        if let Some(manager) = &self.field_manager {
            options["fieldManager"] = json!(manager);
        }
        match self.field_validation {
            FieldValidation::Ignore => options["fieldValidation"] = json!("Ignore"),
            FieldValidation::Strict => options["fieldValidation"] = json!("Strict"),
            FieldValidation::Warn => {}
        }
        options
    }

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
    /// `object` as JSON, when the write already has it (the bytes it stored, with their
    /// `resourceVersion`): the answer is those bytes, not a second encoding.
    pub json: Option<Vec<u8>>,
}

impl Written {
    /// `object`, written (created or not), with no warnings and no JSON of its own yet.
    pub fn new(object: Value, created: bool) -> Self {
        Written {
            object,
            created,
            warnings: Vec::new(),
            json: None,
        }
    }

    /// With these `Warning` header texts.
    pub fn with_warnings(mut self, warnings: Vec<String>) -> Self {
        self.warnings = warnings;
        self
    }
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
            .is_none_or(|l| crate::schema::selector::labels_match(l, object))
            && self.fields.matches(object)
    }
}

/// A list answer.
#[derive(Debug)]
pub struct Listed<T = Value> {
    /// Matching objects.
    pub items: Vec<T>,
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
    /// `ignoreStoreReadErrorWithClusterBreakingPotential`: remove the stored bytes unread.
    pub ignore_store_read_error: bool,
    /// `propagationPolicy` (or the older `orphanDependents`): `Orphan`, `Background` or
    /// `Foreground`; the garbage collector's finalizers follow it.
    pub propagation: Option<String>,
    /// Who deletes, for admission; `None` for the server's own deletes.
    pub user: Option<crate::filters::authn::UserInfo>,
    /// The request's admission scope (deadline, warnings, audit annotations).
    pub scope: Arc<RequestScope>,
}

impl DeleteOptions {
    /// These options, for a delete by `user` within `scope`.
    pub fn by(self, user: Option<crate::filters::authn::UserInfo>, scope: &Arc<RequestScope>) -> Self {
        DeleteOptions {
            user,
            scope: scope.clone(),
            ..self
        }
    }

    /// The admission attributes of the delete of `current`; `review` is
    /// [`DeleteOptions::review`]'s.
    pub fn attributes<'a>(
        &'a self,
        meta: &'a ResourceMeta,
        namespace: Option<&'a str>,
        name: &'a str,
        current: &'a Value,
        review: &'a Value,
    ) -> Attributes<'a> {
        Attributes {
            old_object: Some(current),
            ..Attributes::new(Operation::Delete, meta, namespace, name)
                .by(self.user.as_ref(), "", self.dry_run)
                .within(&self.scope, review)
        }
    }

    /// The options as admission webhooks receive them (`DeleteOptions`).
    pub fn review(&self) -> Value {
        let mut options = json!({"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/v1"});
        if self.dry_run {
            options["dryRun"] = json!(["All"]);
        }
        if let Some(policy) = &self.propagation {
            options["propagationPolicy"] = json!(policy);
        }
        if let Some(uid) = &self.uid {
            options["preconditions"]["uid"] = json!(uid);
        }
        if let Some(rv) = &self.resource_version {
            options["preconditions"]["resourceVersion"] = json!(rv);
        }
        options
    }

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
    /// ADDED, MODIFIED or DELETED with an object shared by every watcher of its change.
    Shared(&'static str, Arc<SharedObject>),
    /// A BOOKMARK at a revision; `initial_events_end` marks the end of sendInitialEvents.
    Bookmark(Revision, bool),
    /// Nothing to send: every change up to this revision was considered (later bookmarks may use it).
    Progress(Revision),
    /// An ERROR with a Status (e.g. 410 Expired); the stream ends after it.
    Error(ApiError),
}

impl WatchEvent {
    /// The object an ADDED, MODIFIED or DELETED event carries.
    pub fn object(&self) -> Option<&Value> {
        match self {
            WatchEvent::Object(_, object) => Some(object),
            WatchEvent::Shared(_, shared) => Some(&shared.value),
            _ => None,
        }
    }
}

/// An object decoded and encoded once for every watcher that receives it.
#[derive(Debug)]
pub struct SharedObject {
    /// The object.
    pub value: Value,
    /// The object as the JSON clients receive.
    pub json: bytes::Bytes,
    /// Its `metadata.resourceVersion` as a number (0 when absent), read once for every watcher.
    pub revision: u64,
    /// Its JSON watch event line as ADDED, MODIFIED and DELETED, each framed when first sent.
    lines: [std::sync::OnceLock<bytes::Bytes>; 3],
}

impl SharedObject {
    /// `value`, whose client JSON is `json`.
    pub fn new(value: Value, json: bytes::Bytes) -> Self {
        Self {
            revision: super::object::revision_of(&value),
            value,
            json,
            lines: Default::default(),
        }
    }

    /// The JSON watch event line `{"type":KIND,"object":…}` and a newline. Every watcher of a
    /// change shares one copy: a thousand watchers would otherwise each copy the object.
    pub fn line(&self, kind: &'static str) -> bytes::Bytes {
        let slot = match kind {
            "ADDED" => 0,
            "MODIFIED" => 1,
            "DELETED" => 2,
            _ => return self.frame(kind),
        };
        self.lines[slot].get_or_init(|| self.frame(kind)).clone()
    }

    fn frame(&self, kind: &str) -> bytes::Bytes {
        let mut line = Vec::with_capacity(self.json.len() + 40);
        line.extend_from_slice(b"{\"type\":\"");
        line.extend_from_slice(kind.as_bytes());
        line.extend_from_slice(b"\",\"object\":");
        line.extend_from_slice(&self.json);
        line.extend_from_slice(b"}\n");
        line.into()
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct ContinueToken {
    pub(crate) rv: Revision,
    pub(crate) start: String,
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

#[cfg(test)]
mod tests {
    use super::SharedObject;

    #[test]
    fn a_shared_object_frames_each_event_type_once() {
        let object = serde_json::json!({"metadata": {"resourceVersion": "7"}});
        let shared = SharedObject::new(object.clone(), serde_json::to_vec(&object).unwrap().into());
        assert_eq!(shared.revision, 7);
        let added = shared.line("ADDED");
        assert_eq!(
            &added[..],
            b"{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"resourceVersion\":\"7\"}}}\n"
        );
        let line: serde_json::Value = serde_json::from_slice(&shared.line("DELETED")).unwrap();
        assert_eq!(line, serde_json::json!({"type": "DELETED", "object": object}));
        // Every later watcher gets the same bytes, not a copy.
        assert_eq!(shared.line("ADDED").as_ptr(), added.as_ptr());
        assert_ne!(shared.line("MODIFIED").as_ptr(), added.as_ptr());
    }
}
