//! What a structural schema's node is, as the typed clients of every language see it: one
//! reading of OpenAPI shared by the Rust and the Go renderer, so they cannot disagree.

use serde_json::Value;

/// The client-side type of one schema node.
pub(crate) enum Shape<'a> {
    /// A `$ref` to `ObjectMeta`.
    ObjectMeta,
    /// Any JSON: a `$ref` to another definition, preserved unknown fields, or no type.
    Json,
    /// An int-or-string carrying a quantity pattern (`resource.Quantity`).
    Quantity,
    /// Any other int-or-string.
    IntOrString,
    /// A string with these allowed values.
    Enum(&'a [Value]),
    /// A `date-time` string (`metav1.Time`).
    Time,
    /// Any other string.
    String,
    /// An integer of format `int32`.
    Int32,
    /// Any other integer (published as `int64`).
    Int64,
    /// A floating-point number.
    Number,
    /// A boolean.
    Bool,
    /// An array of `items`.
    Array(&'a Value),
    /// An object with named properties: a type of its own.
    Struct,
    /// An object of `additionalProperties` (`None`: any JSON values).
    Map(Option<&'a Value>),
}

/// The shape of `schema`.
pub(crate) fn shape(schema: &Value) -> Shape<'_> {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        return match r.rsplit('.').next() {
            Some("ObjectMeta") => Shape::ObjectMeta,
            _ => Shape::Json,
        };
    }
    let flag = |name: &str| schema.get(name) == Some(&Value::Bool(true));
    if flag("x-kubernetes-preserve-unknown-fields") && schema.get("properties").is_none() {
        return Shape::Json;
    }
    if flag("x-kubernetes-int-or-string") {
        // A Quantity is an int-or-string with the quantity pattern.
        let quantity = schema
            .get("pattern")
            .and_then(Value::as_str)
            .is_some_and(|p| p.contains("[0-9]"));
        return if quantity { Shape::Quantity } else { Shape::IntOrString };
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("string") => match (schema.get("enum").and_then(Value::as_array), schema.get("format")) {
            (Some(values), _) => Shape::Enum(values),
            (None, Some(Value::String(f))) if f == "date-time" => Shape::Time,
            (None, _) => Shape::String,
        },
        Some("integer") => match schema.get("format").and_then(Value::as_str) {
            Some("int32") => Shape::Int32,
            _ => Shape::Int64,
        },
        Some("number") => Shape::Number,
        Some("boolean") => Shape::Bool,
        Some("array") => Shape::Array(schema.get("items").unwrap_or(&Value::Null)),
        Some("object") if schema.get("properties").is_some() => Shape::Struct,
        Some("object") => Shape::Map(schema.get("additionalProperties").filter(|inner| inner.is_object())),
        _ => Shape::Json,
    }
}

/// A schema's properties, in the order they are published (sorted by name).
pub(crate) fn properties(schema: &Value) -> impl Iterator<Item = (&String, &Value)> {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
}

/// Whether `key` may be left out of an object of `schema` (not required, or nullable).
pub(crate) fn optional(schema: &Value, key: &str, field: &Value) -> bool {
    let required = schema
        .get("required")
        .and_then(Value::as_array)
        .is_some_and(|r| r.iter().any(|k| k == key));
    !required || field.get("nullable") == Some(&Value::Bool(true))
}

/// `s` in PascalCase (`not-ready` → `NotReady`), starting with a letter.
pub(crate) fn pascal(s: &str) -> String {
    let mut out = String::new();
    let mut upper = true;
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            if upper {
                out.extend(c.to_uppercase());
            } else {
                out.push(c);
            }
            upper = false;
        } else {
            upper = true;
        }
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, 'V');
    }
    out
}
