//! OpenAPI schemas: schemars output rewritten into a Kubernetes *structural* schema.
//!
//! The rules are the apiextensions ones: every node has a `type`, no `anyOf`/`oneOf` that
//! change the shape, `metadata` is the standard ObjectMeta by reference, the root carries
//! `x-kubernetes-group-version-kind`. [`violations`] lists what is still not structural, so a
//! server refuses to start on a type it could not serve faithfully.

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use crate::resource::ResourceMeta;

/// The OpenAPI definition name of ObjectMeta.
pub const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
/// The OpenAPI definition name of ListMeta.
pub const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";

/// Where a schema lives: OpenAPI v3 components or Swagger 2.0 definitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// `#/components/schemas/...`.
    V3,
    /// `#/definitions/...`.
    V2,
}

impl Dialect {
    /// A `$ref` to a named definition.
    pub fn reference(self, name: &str) -> Value {
        match self {
            Dialect::V3 => json!({ "$ref": format!("#/components/schemas/{name}") }),
            Dialect::V2 => json!({ "$ref": format!("#/definitions/{name}") }),
        }
    }
}

/// The OpenAPI definition name of a kind, e.g. `com.example.custom.v1.Widget`.
pub fn definition_name(meta: &ResourceMeta, kind: &str) -> String {
    let mut group: Vec<&str> = meta.group.split('.').collect();
    group.reverse();
    format!("{}.{}.{}", group.join("."), meta.version, kind)
}

fn inline_schema<T: JsonSchema + ?Sized>() -> Value {
    let generator = SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .into_generator();
    generator.into_root_schema_for::<T>().to_value()
}

/// The structural v3 schema of `T`: GVK-tagged, metadata by reference to [`OBJECT_META`].
pub fn structural<T: JsonSchema + ?Sized>(meta: &ResourceMeta) -> Value {
    let mut schema = inline_schema::<T>();
    make_structural(&mut schema);
    let root = schema.as_object_mut().expect("a struct's schema is an object");
    root.insert("type".into(), json!("object"));
    let properties = root.entry("properties").or_insert_with(|| json!({}));
    let properties = properties.as_object_mut().expect("properties is an object");
    properties.insert(
        "apiVersion".into(),
        json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}),
    );
    properties.insert(
        "kind".into(),
        json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}),
    );
    properties.insert("metadata".into(), Dialect::V3.reference(OBJECT_META));
    if let Some(Value::Array(required)) = root.get_mut("required") {
        required.retain(|r| r != "metadata" && r != "apiVersion" && r != "kind");
        if required.is_empty() {
            root.remove("required");
        }
    }
    root.insert(
        "x-kubernetes-group-version-kind".into(),
        json!([{ "group": meta.group, "kind": meta.kind, "version": meta.version }]),
    );
    schema
}

/// The ObjectMeta schema from k8s-openapi, self-contained (no references).
pub fn object_meta_schema() -> Value {
    let mut schema = inline_schema::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>();
    make_structural(&mut schema);
    schema
}

/// The ListMeta schema from k8s-openapi.
pub fn list_meta_schema() -> Value {
    let mut schema = inline_schema::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta>();
    make_structural(&mut schema);
    schema
}

/// The `<Kind>List` schema referring to the item definition.
pub fn list_schema(meta: &ResourceMeta, dialect: Dialect) -> Value {
    json!({
        "description": format!("{}List is a list of {}", meta.kind, meta.kind),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": dialect.reference(LIST_META),
            "items": {"type": "array", "items": dialect.reference(&definition_name(meta, meta.kind))},
        },
        "x-kubernetes-group-version-kind": [{ "group": meta.group, "kind": meta.list_kind(), "version": meta.version }],
    })
}

/// Rewrite a v3 schema (components refs) into its Swagger 2.0 form (definitions refs, no nullable).
pub fn to_v2(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("nullable", _) => {}
                    ("$ref", Value::String(r)) => {
                        out.insert(
                            k.clone(),
                            Value::String(r.replace("#/components/schemas/", "#/definitions/")),
                        );
                    }
                    _ => {
                        out.insert(k.clone(), to_v2(v));
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(to_v2).collect()),
        other => other.clone(),
    }
}

/// Rewrite schemars' output in place into Kubernetes' structural dialect.
pub fn make_structural(schema: &mut Value) {
    let Value::Object(map) = schema else { return };
    for key in [
        "$schema",
        "title",
        "$defs",
        "definitions",
        "examples",
        "uniqueItems",
        "$id",
    ] {
        map.remove(key);
    }
    if map.get("additionalProperties") == Some(&Value::Bool(false)) {
        map.remove("additionalProperties");
    }
    if map.get("additionalProperties") == Some(&Value::Bool(true)) {
        map.remove("additionalProperties");
        map.insert("x-kubernetes-preserve-unknown-fields".into(), Value::Bool(true));
    }
    if map.get("default") == Some(&Value::Null) {
        map.remove("default");
    }
    if let Some(c) = map.remove("const") {
        map.insert("enum".into(), json!([c]));
    }
    // `type: [T, "null"]` → `type: T, nullable: true`.
    if let Some(Value::Array(types)) = map.get("type").cloned() {
        let non_null: Vec<_> = types.iter().filter(|t| *t != "null").cloned().collect();
        if non_null.len() < types.len() {
            map.insert("nullable".into(), Value::Bool(true));
        }
        if non_null.len() == 1 {
            map.insert("type".into(), non_null[0].clone());
        }
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(variants)) = map.get(key).cloned() {
            let (nulls, rest): (Vec<_>, Vec<_>) = variants.into_iter().partition(is_null_schema);
            if !nulls.is_empty() {
                map.insert("nullable".into(), Value::Bool(true));
            }
            if rest.len() == 1 {
                // `Option<T>`: hoist T.
                map.remove(key);
                if let Value::Object(inner) = &rest[0] {
                    for (k, v) in inner {
                        map.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
            } else if let Some(values) = enum_values(&rest) {
                // Unit enum variants with doc comments: one `enum` of strings.
                map.remove(key);
                map.insert("type".into(), json!("string"));
                map.insert("enum".into(), Value::Array(values));
            } else if rest.is_empty() {
                map.remove(key);
            } else {
                map.insert(key.into(), Value::Array(rest));
            }
        }
    }
    // Rust's narrow and unsigned integers are not OpenAPI formats: Kubernetes publishes int32
    // or int64 with the bounds (a u32 is an int64 up to 4294967295, as upstream's uint32
    // fields), so an out-of-range value is a 422 at its field, and clients reading the
    // schema get a type that holds every accepted value.
    if let Some(Value::String(f)) = map.get("format") {
        let bounds: Option<(&str, i64, i64)> = match f.as_str() {
            "int8" => Some(("int32", i8::MIN.into(), i8::MAX.into())),
            "int16" => Some(("int32", i16::MIN.into(), i16::MAX.into())),
            "uint8" => Some(("int32", 0, u8::MAX.into())),
            "uint16" => Some(("int32", 0, u16::MAX.into())),
            "uint32" => Some(("int64", 0, u32::MAX.into())),
            "uint64" | "uint" => Some(("int64", 0, i64::MAX)),
            _ => None,
        };
        if let Some((format, min, max)) = bounds {
            map.insert("format".into(), json!(format));
            let tighter = |key: &str, bound: i64, keep: fn(i64, i64) -> i64| {
                map.get(key)
                    .and_then(Value::as_i64)
                    .map_or(bound, |given| keep(given, bound))
            };
            let (min, max) = (tighter("minimum", min, i64::max), tighter("maximum", max, i64::min));
            map.insert("minimum".into(), json!(min));
            if max != i64::MAX {
                map.insert("maximum".into(), json!(max));
            }
        }
    }
    if map.get("nullable") == Some(&Value::Bool(true))
        && let Some(Value::Array(values)) = map.get_mut("enum")
    {
        values.retain(|v| !v.is_null());
    }
    // Recurse only into schema-valued keywords: a property may be called `title` or `default`.
    if let Some(Value::Object(props)) = map.get_mut("properties") {
        props.values_mut().for_each(make_structural);
    }
    for key in ["additionalProperties", "items", "not"] {
        if let Some(child) = map.get_mut(key) {
            match child {
                Value::Array(items) => items.iter_mut().for_each(make_structural),
                child => make_structural(child),
            }
        }
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(Value::Array(items)) = map.get_mut(key) {
            items.iter_mut().for_each(make_structural);
        }
    }
    if !map.contains_key("type") && map.contains_key("properties") {
        map.insert("type".into(), json!("object"));
    }
    if !map.contains_key("type") && map.contains_key("enum") {
        map.insert("type".into(), json!("string"));
    }
    // Any JSON (`serde_json::Value`): Kubernetes keeps it as is.
    let shaped = [
        "type",
        "$ref",
        "anyOf",
        "oneOf",
        "allOf",
        "items",
        "additionalProperties",
    ];
    if !shaped.iter().any(|k| map.contains_key(*k)) {
        map.insert("x-kubernetes-preserve-unknown-fields".into(), Value::Bool(true));
    }
}

fn is_null_schema(v: &Value) -> bool {
    v.get("type") == Some(&json!("null"))
        || v.get("enum") == Some(&json!([null]))
        || v.get("const") == Some(&Value::Null)
}

fn enum_values(variants: &[Value]) -> Option<Vec<Value>> {
    let mut out = Vec::new();
    for v in variants {
        if let Some(Value::Array(values)) = v.get("enum") {
            out.extend(values.iter().cloned());
        } else if let Some(c) = v.get("const") {
            out.push(c.clone());
        } else {
            return None;
        }
    }
    out.iter().all(Value::is_string).then_some(out)
}

/// Where a schema breaks the structural rules, as `path: problem` lines (empty when structural).
pub fn violations(schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk_violations(schema, "", &mut out);
    out
}

fn walk_violations(schema: &Value, path: &str, out: &mut Vec<String>) {
    let Value::Object(map) = schema else { return };
    if map.contains_key("$ref") {
        return;
    }
    let preserve = map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if !map.contains_key("type") && !preserve && map.get("x-kubernetes-int-or-string") != Some(&Value::Bool(true)) {
        out.push(format!("{}: no type", display(path)));
    }
    for key in [
        "anyOf",
        "oneOf",
        "allOf",
        "not",
        "$defs",
        "definitions",
        "additionalItems",
        "uniqueItems",
    ] {
        if map.contains_key(key) {
            out.push(format!(
                "{}: `{key}` is not allowed in a structural schema; use a struct or a unit enum",
                display(path)
            ));
        }
    }
    if map.contains_key("properties") && map.get("additionalProperties").is_some_and(|a| a.is_object()) {
        out.push(format!("{}: both properties and additionalProperties", display(path)));
    }
    if let Some(Value::Object(props)) = map.get("properties") {
        for (name, sub) in props {
            walk_violations(sub, &format!("{path}.{name}"), out);
        }
    }
    if let Some(items) = map.get("items") {
        walk_violations(items, &format!("{path}[*]"), out);
    }
    if let Some(additional @ Value::Object(_)) = map.get("additionalProperties") {
        walk_violations(additional, &format!("{path}[*]"), out);
    }
}

fn display(path: &str) -> &str {
    if path.is_empty() {
        "<root>"
    } else {
        path.trim_start_matches('.')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_properties_named_like_keywords_and_hoists_options() {
        let mut schema = json!({
            "type": "object",
            "title": "Root",
            "properties": {
                "title": {"type": "string", "title": "x"},
                "default": {"anyOf": [{"type": "integer", "format": "uint32"}, {"type": "null"}]},
                "any": {},
                "mode": {"oneOf": [{"const": "A", "description": "a"}, {"enum": ["B"]}]},
                "strict": {"type": "object", "additionalProperties": false, "properties": {"a": {"type": ["string", "null"]}}}
            }
        });
        make_structural(&mut schema);
        assert_eq!(
            schema,
            json!({
                "type": "object",
                "properties": {
                    "title": {"type": "string"},
                    "default": {"type": "integer", "format": "int64", "minimum": 0, "maximum": 4294967295u32, "nullable": true},
                    "any": {"x-kubernetes-preserve-unknown-fields": true},
                    "mode": {"type": "string", "enum": ["A", "B"]},
                    "strict": {"type": "object", "properties": {"a": {"type": "string", "nullable": true}}}
                }
            })
        );
        assert!(violations(&schema).is_empty());
        assert_eq!(
            violations(
                &json!({"properties": {"x": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}, "type": "object"})
            )
            .len(),
            2
        );
    }
}
