//! A structural schema as field sets read it, compiled once per resource version: each node's
//! shape and where its children's schemas are, so that a walk over an object looks up one
//! field name per step instead of reading the JSON schema's keywords at every node.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde_json::{Value, json};

/// How a node's children are merged, from its schema.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Shape {
    Struct,
    Map,
    ListMap(Vec<String>),
    ListSet,
    Atomic,
}

/// A schema compiled for field sets (see the module doc).
#[derive(Debug)]
pub struct Schema {
    pub(super) shape: Shape,
    /// The declared fields' schemas.
    properties: BTreeMap<String, Schema>,
    /// The schema of any other field.
    rest: Rest,
    /// An array's items' schema.
    items: Option<Box<Schema>>,
}

/// What a field the schema does not declare is.
#[derive(Debug)]
enum Rest {
    /// Atomic: the schema does not describe it.
    Unknown,
    /// A granular map of anything (inside a preserve-unknown-fields object).
    Schemaless,
    /// As `additionalProperties` says.
    Declared(Box<Schema>),
}

/// The schema of `metadata` as far as ownership goes (ObjectMeta is referenced, not inlined).
static METADATA: LazyLock<Value> = LazyLock::new(|| {
    json!({"type": "object", "properties": {
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "finalizers": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
        "ownerReferences": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["uid"],
            "items": {"type": "object", "properties": {}}},
    }})
});
/// The schema of a field the schema does not describe: atomic.
static UNKNOWN: LazyLock<Schema> = LazyLock::new(|| Schema::new(&json!({})));
/// The schema of anything inside a schemaless (preserve-unknown-fields) object.
static SCHEMALESS: LazyLock<Schema> =
    LazyLock::new(|| Schema::new(&json!({"x-kubernetes-preserve-unknown-fields": true})));

impl Schema {
    /// Compile an OpenAPI v3 structural schema (a `$ref` is to ObjectMeta).
    pub fn new(schema: &Value) -> Schema {
        let schema = if schema.get("$ref").is_some() {
            &*METADATA
        } else {
            schema
        };
        let properties = schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.iter().map(|(k, v)| (k.clone(), Schema::new(v))).collect())
            .unwrap_or_default();
        let rest = match schema.get("additionalProperties") {
            Some(a) if a.is_object() => Rest::Declared(Box::new(Schema::new(a))),
            _ if preserves_unknown(schema) => Rest::Schemaless,
            _ => Rest::Unknown,
        };
        Schema {
            shape: shape(schema),
            properties,
            rest,
            items: schema.get("items").map(|i| Box::new(Schema::new(i))),
        }
    }

    /// The schema of `field` inside this struct or map.
    pub(super) fn field(&self, field: &str) -> &Schema {
        if let Some(declared) = self.properties.get(field) {
            return declared;
        }
        match &self.rest {
            Rest::Declared(schema) => schema,
            Rest::Schemaless => &SCHEMALESS,
            Rest::Unknown => &UNKNOWN,
        }
    }

    /// The schema of this array's items.
    pub(super) fn items(&self) -> &Schema {
        self.items.as_deref().unwrap_or(&UNKNOWN)
    }
}

fn preserves_unknown(schema: &Value) -> bool {
    schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
}

fn shape(schema: &Value) -> Shape {
    match schema.get("type").and_then(Value::as_str) {
        Some("object") if schema.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic") => {
            Shape::Atomic
        }
        Some("object") if schema.get("properties").is_some() => Shape::Struct,
        Some("object") => Shape::Map,
        Some("array") => match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("map") => Shape::ListMap(
                schema
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|k| k.iter().filter_map(Value::as_str).map(str::to_string).collect())
                    .unwrap_or_default(),
            ),
            Some("set") => Shape::ListSet,
            _ => Shape::Atomic,
        },
        // Schemaless (preserve-unknown-fields) objects are granular maps of anything.
        None if preserves_unknown(schema) => Shape::Map,
        _ => Shape::Atomic,
    }
}
