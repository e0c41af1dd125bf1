//! Object semantics shared by every store: type meta, metadata access, names and
//! generateName, the status/spec split, timestamps.

use serde_json::{Map, Value, json};

use crate::resource::{FieldError, ResourceMeta};
use crate::status::{ApiError, ApiResult};

pub(crate) fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Set `apiVersion` and `kind` on an encoded object.
pub fn set_type_meta(value: &mut Value, meta: &ResourceMeta) {
    if let Value::Object(map) = value {
        map.insert("apiVersion".into(), json!(meta.api_version()));
        map.insert("kind".into(), json!(meta.kind));
    }
}

/// `metadata.<field>` of `object`, looked up without `Value::pointer`'s allocations (it
/// unescapes each token into a new string), which showed in profiles of per-watcher paths.
pub(crate) fn meta_field<'a>(object: &'a Value, field: &str) -> Option<&'a Value> {
    object.get("metadata")?.get(field)
}

/// The `metadata.generation` a change of `current`'s spec gives it (1 when it had none).
pub(crate) fn next_generation(current: &Value) -> i64 {
    meta_field(current, "generation").and_then(Value::as_i64).unwrap_or(0) + 1
}

/// `metadata.resourceVersion` as a number; 0 when absent or not a number.
pub(crate) fn revision_of(object: &Value) -> u64 {
    meta_str(object, "resourceVersion")
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// `metadata.<field>` of `object` when it is a string.
pub(crate) fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    meta_field(object, field)?.as_str()
}

pub(crate) fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    object["metadata"].as_object_mut().expect("metadata is an object")
}

/// Make `into`'s status what `from`'s is (absent included): the status/spec split.
pub(super) fn copy_status(from: &Value, into: &mut Value) {
    match (from.get("status"), into) {
        (Some(status), into) => into["status"] = status.clone(),
        (None, Value::Object(map)) => {
            map.remove("status");
        }
        (None, _) => {}
    }
}

/// The fields that make up "spec" for `metadata.generation`: all but metadata and status.
pub(super) fn spec_part(object: &Value) -> Value {
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

pub(crate) fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4().as_bytes()[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}
