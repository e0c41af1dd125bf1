//! A resource's strategy and what every write goes through because of it: the typed hooks
//! (defaults, validation) behind [`Strategy`], and [`Admission`]: type and namespace checks,
//! `fieldValidation`, structural-schema validation and the hooks, for the key-value store and
//! custom storage alike.

use std::marker::PhantomData;
use std::sync::Arc;

use serde_json::{Value, json};

use super::object::{meta_str, metadata_mut, set_type_meta};
use super::object_meta;
use super::options::{FieldValidation, WriteOptions};
use crate::resource::{ApiResource, FieldError, ResourceMeta};
use crate::schema::validation::Validator;
use crate::status::{ApiError, ApiResult};

/// The type-erased strategy hooks of one `ApiResource` type.
pub trait Strategy: Send + Sync + 'static {
    /// Static metadata.
    fn meta(&self) -> &ResourceMeta;
    /// The structural schema.
    fn schema(&self) -> Value;
    /// Decode into the Rust type (pruning unknown fields), default, validate (with the update
    /// hook when `old` is the stored object), encode back; `Err` when the JSON does not
    /// decode into the type (400).
    fn prepare(&self, object: &Value, old: Option<&Value>) -> Result<Prepared, String>;

    /// `object` with its defaults (the type's serde defaults and `default` hook), not
    /// validated; `None` when it does not decode (the strategy's `prepare` then says why).
    fn defaulted(&self, object: &Value) -> Option<Value> {
        self.prepare(object, None).ok().map(|prepared| prepared.object)
    }
}

/// What [`Strategy::prepare`] made of an object.
pub struct Prepared {
    /// The object, defaulted and encoded back.
    pub object: Value,
    /// The `validate` hook's errors (a 422 unless ratcheted away on update).
    pub errors: Vec<FieldError>,
}

/// What an update is judged against: the stored object, and whether it is a status write.
#[derive(Clone, Copy)]
pub struct Change<'a> {
    /// The stored object.
    pub old: &'a Value,
    /// A write to `/status`: judged on its status only.
    pub status: bool,
}

impl Change<'_> {
    /// Whether `error` of the updated object `new` still counts: a status write answers for
    /// status only (and a main write not for the status it cannot change), and an error at a
    /// field whose value did not change is ratcheted away, as CRDs do since 1.30, so an
    /// object stored before a stricter rule can still be labelled, have its status written,
    /// and lose its finalizers.
    fn counts(&self, error: &FieldError, new: &Value) -> bool {
        let field = error.field.as_str();
        let in_status = field == "status" || field.starts_with("status.") || field.starts_with("status[");
        if self.status != in_status {
            return false;
        }
        let path = format!(".{field}");
        let (before, after) = (
            crate::schema::jsonpath::get(self.old, &path),
            crate::schema::jsonpath::get(new, &path),
        );
        match (before, after) {
            (Some(before), Some(after)) => before != after,
            // Still missing: a field required since the object was stored.
            (None, None) => !(error.reason == "FieldValueRequired" && crate::schema::jsonpath::is_valid(&path)),
            _ => true,
        }
    }
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

    fn defaulted(&self, object: &Value) -> Option<Value> {
        let mut typed = T::deserialize(object).ok()?;
        typed.apply_defaults();
        serde_json::to_value(&typed).ok()
    }

    fn prepare(&self, object: &Value, old: Option<&Value>) -> Result<Prepared, String> {
        let mut typed = T::deserialize(object).map_err(|e| e.to_string())?;
        typed.apply_defaults();
        let mut errors = typed.validate();
        // A stored object that no longer decodes has no old value to compare with.
        if let Some(Ok(old)) = old.map(T::deserialize) {
            errors.extend(typed.validate_update(&old));
        }
        let mut value = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
        set_type_meta(&mut value, &T::META);
        Ok(Prepared { object: value, errors })
    }
}

/// What every write goes through, whatever stores it: type and namespace checks,
/// `fieldValidation`, schema validation and the strategy's defaults and validation.
pub struct Admission {
    pub(super) meta: ResourceMeta,
    strategy: Arc<dyn Strategy>,
    validator: Validator,
    rules: Option<crate::schema::cel::Rules>,
    schema: Value,
    /// The schema compiled for managedFields' field sets.
    pub(super) fields: Arc<super::fieldset::Schema>,
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
        check_paths(&meta, &schema)?;
        let validator = Validator::new(&schema)?;
        let rules = crate::schema::cel::Rules::new(&meta, &schema)?;
        Ok(Admission {
            meta,
            strategy,
            validator,
            rules,
            fields: Arc::new(super::fieldset::Schema::new(&schema)),
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
        object_meta::check_types(&self.meta, body)?;
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
        let mut unknown = object_meta::prune_unknown_fields(body);
        if options.field_validation == FieldValidation::Ignore {
            return Ok(Vec::new());
        }
        unknown.extend(self.validator.unknown_fields(body));
        let problems: Vec<String> = unknown
            .iter()
            .map(|f| format!("unknown field \"{f}\""))
            .chain(
                options
                    .duplicate_fields
                    .iter()
                    .map(|f| format!("duplicate field \"{f}\"")),
            )
            .collect();
        match options.field_validation {
            FieldValidation::Ignore => Ok(Vec::new()),
            FieldValidation::Warn => Ok(problems),
            FieldValidation::Strict if problems.is_empty() => Ok(Vec::new()),
            FieldValidation::Strict => Err(ApiError::bad_request(format!(
                "strict decoding error: {}",
                problems.join(", ")
            ))),
        }
    }

    /// Apply the type's defaults to `object` in place, keeping its metadata as sent (the type
    /// may not model every field of it); an object that does not decode is left as it is.
    pub fn default(&self, object: &mut Value) {
        let Some(mut defaulted) = self.strategy.defaulted(object) else {
            return;
        };
        if let Some(metadata) = object.get_mut("metadata") {
            defaulted["metadata"] = metadata.take();
        }
        set_type_meta(&mut defaulted, &self.meta);
        *object = defaulted;
    }

    /// Schema, type and hook validation of a create, all errors in one 422.
    pub fn prepare(&self, object: Value, name: &str) -> ApiResult<Value> {
        self.judge(object, name, None)
    }

    /// The same for an update of `change.old`: see [`Change`] for what is ratcheted.
    pub fn prepare_update(&self, object: Value, name: &str, change: Change<'_>) -> ApiResult<Value> {
        self.judge(object, name, Some(change))
    }

    fn judge(&self, mut object: Value, name: &str, change: Option<Change<'_>>) -> ApiResult<Value> {
        let mut errors = object_meta::validate(&self.meta, &object);
        errors.extend(self.validator.validate(&object));
        let prepared = self.strategy.prepare(&object, change.map(|c| c.old));
        // The hook still runs when the schema found errors, so one 422 lists everything.
        let mut prepared = match prepared {
            Ok(Prepared { object, errors: more }) => {
                let more: Vec<_> = more
                    .into_iter()
                    .filter(|m| !errors.iter().any(|e| e.field == m.field))
                    .collect();
                errors.extend(more);
                Some(object)
            }
            Err(_) if !errors.is_empty() => None,
            Err(m) => return Err(ApiError::bad_request(format!("error decoding {}: {m}", self.meta.kind))),
        };
        if let Some(rules) = &self.rules {
            // As kube-apiserver, rules see the object defaulted (serde's and the hook's
            // defaults, what the schema publishes), with the metadata as sent.
            let mut prepared = prepared.as_mut();
            if let (Some(p), Some(metadata)) = (prepared.as_deref_mut(), object.get("metadata")) {
                p["metadata"] = metadata.clone();
            }
            let judged = prepared.map_or(&object, |p| &*p);
            errors.extend(rules.validate(judged, change.as_ref().map(|c| c.old)));
        }
        if let Some(change) = change {
            errors.retain(|e| change.counts(e, &object));
        }
        if !errors.is_empty() {
            return Err(ApiError::invalid(&self.meta, name, &errors));
        }
        let Some(mut prepared) = prepared else {
            return Err(ApiError::bad_request(format!("error decoding {}", self.meta.kind)));
        };
        // The typed round trip may drop metadata fields the Rust type does not model.
        if let Some(metadata) = object.get_mut("metadata") {
            prepared["metadata"] = metadata.take();
        }
        Ok(prepared)
    }
}

/// The scale, selectable and printer-column paths of `meta` must name fields of its schema
/// (the derive checks their form; only the schema knows the nested types' fields), and scale
/// replicas must be integers: else `kubectl scale` would say "scaled" and change nothing.
pub(crate) fn check_paths(meta: &crate::resource::ResourceMeta, schema: &Value) -> Result<(), String> {
    use crate::schema::jsonpath::in_schema;
    let kind = meta.kind;
    // (what, path, whether it must be an integer)
    let mut paths: Vec<(&str, &str, bool)> = Vec::new();
    if let Some(scale) = meta.scale {
        paths.push(("scale spec", scale.spec_replicas, true));
        paths.push(("scale status", scale.status_replicas, true));
        paths.extend(scale.label_selector.map(|p| ("scale selector", p, false)));
    }
    paths.extend(meta.selectable_fields.iter().map(|p| ("selectable", *p, false)));
    paths.extend(
        meta.columns
            .iter()
            .map(|c| ("printcolumn json_path", c.json_path, false)),
    );
    for (what, path, integer) in paths {
        let found = in_schema(schema, path).map_err(|e| format!("{kind}: {what} {e}; fix the path in #[api(...)]"))?;
        let is_integer = found.is_none_or(|s| s.get("type").is_none_or(|t| t == "integer"));
        if integer && !is_integer {
            return Err(format!("{kind}: {what} `{path}` must name an integer field"));
        }
    }
    Ok(())
}
