//! Validation of `metadata`, as apimachinery's `ValidateObjectMeta`, with its messages: the
//! name (DNS subdomain), the namespace (DNS label, and only on namespaced kinds), label keys
//! and values, annotation keys and their total size, finalizer names and owner references.
//! Every write runs it before the strategy's own validation, into the same 422.

use serde::Deserialize;
use serde_json::Value;

use crate::resource::{FieldError, ResourceMeta};
use crate::status::{ApiError, ApiResult};

/// Most bytes of annotations (keys and values) on one object, as kube-apiserver.
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;
/// Longest DNS label: namespaces, label names, label values.
pub const MAX_LABEL_LEN: usize = 63;
/// Longest DNS subdomain: object names, qualified-name prefixes.
pub const MAX_SUBDOMAIN_LEN: usize = 253;

const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const QUALIFIED_MSG: &str = "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

fn too_long(max: usize) -> String {
    format!("must be no more than {max} characters")
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Why `s` is not a DNS-1123 label (a namespace).
pub fn dns_label_errors(s: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if s.len() > MAX_LABEL_LEN {
        errors.push(too_long(MAX_LABEL_LEN));
    }
    if !is_dns_label(s) {
        errors.push(LABEL_MSG.into());
    }
    errors
}

/// Why `s` is not a DNS-1123 subdomain (an object name).
pub fn dns_subdomain_errors(s: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if s.len() > MAX_SUBDOMAIN_LEN {
        errors.push(too_long(MAX_SUBDOMAIN_LEN));
    }
    if !s.split('.').all(|l| l.len() <= MAX_LABEL_LEN && is_dns_label(l)) {
        errors.push(SUBDOMAIN_MSG.into());
    }
    errors
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_qualified_part(s: &str) -> bool {
    let alnum = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    alnum(s.bytes().next())
        && alnum(s.bytes().last())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Why `s` is not a qualified name (`[prefix/]name`: label and annotation keys, finalizers).
pub fn qualified_name_errors(s: &str) -> Vec<String> {
    let parts: Vec<&str> = s.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                return vec![format!("prefix part {}", "must be non-empty")];
            }
            let prefix_errors = dns_subdomain_errors(prefix);
            if !prefix_errors.is_empty() {
                return prefix_errors.into_iter().map(|e| format!("prefix part {e}")).collect();
            }
            name
        }
        _ => return vec![QUALIFIED_MSG.into()],
    };
    let mut errors = Vec::new();
    if name.is_empty() {
        errors.push("name part must be non-empty".into());
    } else if name.len() > MAX_LABEL_LEN {
        errors.push(format!("name part {}", too_long(MAX_LABEL_LEN)));
    }
    if !name.is_empty() && !is_qualified_part(name) {
        errors.push(QUALIFIED_NAME_MSG.into());
    }
    errors
}

/// Why `s` is not a label value (empty, or up to 63 of `[-A-Za-z0-9_.]` starting and ending
/// alphanumeric).
pub fn label_value_errors(s: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if s.len() > MAX_LABEL_LEN {
        errors.push(too_long(MAX_LABEL_LEN));
    }
    if !s.is_empty() && !is_qualified_part(s) {
        errors.push(LABEL_VALUE_MSG.into());
    }
    errors
}

fn invalid_each(out: &mut Vec<FieldError>, field: &str, value: &str, errors: Vec<String>) {
    out.extend(errors.into_iter().map(|e| FieldError::invalid(field, &value, e)));
}

/// The 422 causes of an object name that is not a DNS subdomain.
pub fn name_errors(name: &str) -> Vec<FieldError> {
    let mut out = Vec::new();
    invalid_each(&mut out, "metadata.name", name, dns_subdomain_errors(name));
    out
}

/// 400 when `metadata` does not decode as `ObjectMeta` (wrong types: `generation: "x"`,
/// `uid: 5`, `metadata: []`), as kube-apiserver refuses to decode such a body.
pub fn check_types(meta: &ResourceMeta, object: &Value) -> ApiResult<()> {
    let Some(metadata) = object.get("metadata") else {
        return Ok(());
    };
    k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta::deserialize(metadata)
        .map(drop)
        .map_err(|e| {
            ApiError::bad_request(format!(
                "{kind} in version \"{version}\" cannot be handled as a {kind}: metadata: {e}",
                kind = meta.kind,
                version = meta.version
            ))
        })
}

const OBJECT_META_FIELDS: &[&str] = &[
    "annotations",
    "creationTimestamp",
    "deletionGracePeriodSeconds",
    "deletionTimestamp",
    "finalizers",
    "generateName",
    "generation",
    "labels",
    "managedFields",
    "name",
    "namespace",
    "ownerReferences",
    "resourceVersion",
    "selfLink",
    "uid",
];
const OWNER_REFERENCE_FIELDS: &[&str] = &["apiVersion", "blockOwnerDeletion", "controller", "kind", "name", "uid"];
const MANAGED_FIELDS_ENTRY_FIELDS: &[&str] = &[
    "apiVersion",
    "fieldsType",
    "fieldsV1",
    "manager",
    "operation",
    "subresource",
    "time",
];

/// Drop the fields under `metadata` that `ObjectMeta` does not have (`metadata.nameX`), as
/// kube-apiserver's typed decoding does, and return their paths for `fieldValidation`; the
/// rest of the object is checked against its schema.
pub fn prune_unknown_fields(object: &mut Value) -> Vec<String> {
    let mut out = Vec::new();
    let Some(Value::Object(m)) = object.get_mut("metadata") else {
        return out;
    };
    let mut prune = |map: &mut serde_json::Map<String, Value>, known: &[&str], at: &str| {
        map.retain(|k, _| {
            let keep = known.contains(&k.as_str());
            if !keep {
                out.push(format!("{at}.{k}"));
            }
            keep
        });
    };
    prune(m, OBJECT_META_FIELDS, "metadata");
    for (list, known) in [
        ("ownerReferences", OWNER_REFERENCE_FIELDS),
        ("managedFields", MANAGED_FIELDS_ENTRY_FIELDS),
    ] {
        if let Some(Value::Array(items)) = m.get_mut(list) {
            for (i, item) in items.iter_mut().enumerate() {
                if let Value::Object(item) = item {
                    prune(item, known, &format!("metadata.{list}[{i}]"));
                }
            }
        }
    }
    out
}

/// Every `ValidateObjectMeta` error of `object`'s metadata, in apimachinery's order.
pub fn validate(meta: &ResourceMeta, object: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    let m = object.get("metadata").unwrap_or(&Value::Null);
    let text = |field: &str| m.get(field).and_then(Value::as_str).unwrap_or_default();
    let name = text("name");
    if !name.is_empty() {
        out.extend(name_errors(name));
    }
    let namespace = text("namespace");
    if meta.namespaced() {
        if namespace.is_empty() {
            out.push(FieldError::required("metadata.namespace", ""));
        } else {
            invalid_each(&mut out, "metadata.namespace", namespace, dns_label_errors(namespace));
        }
    } else if !namespace.is_empty() {
        out.push(FieldError {
            reason: "FieldValueForbidden".into(),
            field: "metadata.namespace".into(),
            message: "Forbidden: not allowed on this type".into(),
        });
    }
    if let Some(Value::Object(labels)) = m.get("labels") {
        for (key, value) in labels {
            invalid_each(&mut out, "metadata.labels", key, qualified_name_errors(key));
            let value = value.as_str().unwrap_or_default();
            invalid_each(&mut out, "metadata.labels", value, label_value_errors(value));
        }
    }
    if let Some(Value::Object(annotations)) = m.get("annotations") {
        let mut total = 0usize;
        for (key, value) in annotations {
            invalid_each(
                &mut out,
                "metadata.annotations",
                key,
                qualified_name_errors(&key.to_ascii_lowercase()),
            );
            total += key.len() + value.as_str().map_or(0, str::len);
        }
        if total > MAX_ANNOTATIONS_BYTES {
            out.push(FieldError {
                reason: "FieldValueTooLong".into(),
                field: "metadata.annotations".into(),
                message: format!("Too long: may not be more than {MAX_ANNOTATIONS_BYTES} bytes"),
            });
        }
    }
    if let Some(Value::Array(finalizers)) = m.get("finalizers") {
        for (i, f) in finalizers.iter().enumerate() {
            let f = f.as_str().unwrap_or_default();
            invalid_each(
                &mut out,
                &format!("metadata.finalizers[{i}]"),
                f,
                qualified_name_errors(f),
            );
        }
    }
    if let Some(Value::Array(owners)) = m.get("ownerReferences") {
        validate_owners(&mut out, owners);
    }
    out
}

fn validate_owners(out: &mut Vec<FieldError>, owners: &[Value]) {
    let mut controllers = 0;
    for (i, owner) in owners.iter().enumerate() {
        let field = |f: &str| format!("metadata.ownerReferences[{i}].{f}");
        let text = |f: &str| owner.get(f).and_then(Value::as_str).unwrap_or_default();
        let version = text("apiVersion").rsplit('/').next().unwrap_or_default();
        for (f, empty, what) in [
            ("apiVersion", version.is_empty(), "version must not be empty"),
            ("kind", text("kind").is_empty(), "kind must not be empty"),
            ("name", text("name").is_empty(), "name must not be empty"),
            ("uid", text("uid").is_empty(), "uid must not be empty"),
        ] {
            if empty {
                out.push(FieldError::invalid(field(f), &text(f), what));
            }
        }
        if owner.get("controller").and_then(Value::as_bool) == Some(true) {
            controllers += 1;
        }
    }
    if controllers > 1 {
        out.push(FieldError::invalid(
            "metadata.ownerReferences",
            &owners,
            "Only one reference can have Controller set to true",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const META: ResourceMeta = crate::resource::TEST_META;

    fn fields(object: Value) -> Vec<String> {
        validate(&META, &object).into_iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn names_labels_annotations_finalizers_owners() {
        assert!(fields(json!({"metadata": {"name": "a.b-c", "namespace": "ns", "labels": {"example.com/a_b": "V.1", "e": ""}, "annotations": {"Example.com/X": "any text"}, "finalizers": ["example.com/hold", "orphan"]}})).is_empty());
        let errors = fields(json!({"metadata": {
            "name": "Bad_Name", "namespace": "UPPER",
            "labels": {"a b": "x", "k": "v".repeat(64)},
            "finalizers": ["a/b/c"],
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "", "controller": true}, {"apiVersion": "g/v1", "kind": "K", "name": "n", "uid": "u", "controller": true}],
        }}));
        let want = [
            "metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain",
            "metadata.namespace: Invalid value: \"UPPER\": a lowercase RFC 1123 label",
            "metadata.labels: Invalid value: \"a b\": name part must consist of",
            "metadata.labels: Invalid value: \"vvvv",
            "metadata.finalizers[0]: Invalid value: \"a/b/c\": a qualified name must consist",
            "metadata.ownerReferences[0].uid: Invalid value: \"\": uid must not be empty",
            "metadata.ownerReferences: Invalid value: [",
        ];
        assert_eq!(errors.len(), want.len(), "{errors:#?}");
        for (e, w) in errors.iter().zip(want) {
            assert!(e.starts_with(w), "{e} does not start with {w}");
        }
        let long = fields(json!({"metadata": {"name": "a", "namespace": "n".repeat(64)}}));
        assert!(long[0].ends_with("must be no more than 63 characters"), "{long:?}");
        let big = fields(
            json!({"metadata": {"name": "a", "namespace": "ns", "annotations": {"a": "x".repeat(MAX_ANNOTATIONS_BYTES)}}}),
        );
        assert_eq!(
            big,
            ["metadata.annotations: Too long: may not be more than 262144 bytes"]
        );
        assert_eq!(
            fields(json!({"metadata": {"name": "a"}})),
            ["metadata.namespace: Required value"]
        );
    }

    #[test]
    fn unknown_metadata_fields() {
        let mut object = json!({"metadata": {"name": "a", "nameX": 1, "ownerReferences": [{"uid": "u", "extra": 1}], "managedFields": [{"manager": "m", "fieldsV1": {"f:x": {}}}]}});
        assert_eq!(
            prune_unknown_fields(&mut object),
            ["metadata.nameX", "metadata.ownerReferences[0].extra"]
        );
        assert_eq!(
            object,
            json!({"metadata": {"name": "a", "ownerReferences": [{"uid": "u"}], "managedFields": [{"manager": "m", "fieldsV1": {"f:x": {}}}]}})
        );
    }

    #[test]
    fn wrong_types_do_not_decode() {
        for metadata in [
            json!({"generation": "x"}),
            json!({"creationTimestamp": 5}),
            json!({"uid": 5}),
            json!([]),
        ] {
            let error = check_types(&META, &json!({"metadata": metadata})).unwrap_err();
            assert_eq!(error.code, 400, "{metadata}");
        }
        assert!(check_types(&META, &json!({"metadata": {"name": "a", "generation": 2}})).is_ok());
    }
}
