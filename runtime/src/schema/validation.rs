//! Enforce a structural schema on a JSON object: types, required, enum, ranges, lengths and
//! patterns, plus the unknown fields that `fieldValidation` reports.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use regex::Regex;
use serde_json::Value;

use crate::resource::FieldError;

/// A compiled structural schema.
pub struct Validator {
    root: Node,
}

/// One schema node with its keywords read once, so that checking an object looks up one field
/// name per step instead of every keyword at every node.
struct Node {
    /// A `$ref` (to ObjectMeta): checked elsewhere.
    reference: bool,
    ty: Option<String>,
    enumeration: Option<Vec<Value>>,
    /// `format` when it is `int32` or `int64`, and the range it allows.
    width: Option<(&'static str, i64, i64)>,
    /// The bound, and whether it is exclusive.
    minimum: Option<(f64, bool)>,
    maximum: Option<(f64, bool)>,
    min_length: Option<u64>,
    max_length: Option<u64>,
    pattern: Option<(String, Regex)>,
    required: Vec<String>,
    /// `None` when the schema has no `properties` (then no field is unknown).
    properties: Option<BTreeMap<String, Node>>,
    /// `additionalProperties`, when it is a schema.
    additional: Option<Box<Node>>,
    items: Option<Box<Node>>,
    min_items: Option<u64>,
    max_items: Option<u64>,
    preserve_unknown: bool,
}

impl Node {
    fn new(schema: &Value, patterns: &HashMap<String, Regex>) -> Node {
        let number = |key: &str| schema.get(key).and_then(Value::as_f64);
        let count = |key: &str| schema.get(key).and_then(Value::as_u64);
        let flag = |key: &str| schema.get(key) == Some(&Value::Bool(true));
        let child = |key: &str| schema.get(key).map(|s| Box::new(Node::new(s, patterns)));
        Node {
            reference: schema.get("$ref").is_some(),
            ty: schema.get("type").and_then(Value::as_str).map(str::to_string),
            enumeration: schema.get("enum").and_then(Value::as_array).cloned(),
            width: match schema.get("format").and_then(Value::as_str) {
                Some("int32") => Some(("int32", i64::from(i32::MIN), i64::from(i32::MAX))),
                Some("int64") => Some(("int64", i64::MIN, i64::MAX)),
                _ => None,
            },
            minimum: number("minimum").map(|n| (n, flag("exclusiveMinimum"))),
            maximum: number("maximum").map(|n| (n, flag("exclusiveMaximum"))),
            min_length: count("minLength"),
            max_length: count("maxLength"),
            pattern: schema
                .get("pattern")
                .and_then(Value::as_str)
                .and_then(|p| Some((p.to_string(), patterns.get(p)?.clone()))),
            required: schema
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).map(str::to_string).collect())
                .unwrap_or_default(),
            properties: schema
                .get("properties")
                .and_then(Value::as_object)
                .map(|p| p.iter().map(|(k, v)| (k.clone(), Node::new(v, patterns))).collect()),
            additional: schema
                .get("additionalProperties")
                .filter(|a| a.is_object())
                .map(|a| Box::new(Node::new(a, patterns))),
            items: child("items"),
            min_items: count("minItems"),
            max_items: count("maxItems"),
            preserve_unknown: flag("x-kubernetes-preserve-unknown-fields"),
        }
    }

    /// The schema of field `k` of an object: declared, or `additionalProperties`.
    fn field(&self, k: &str) -> Option<&Node> {
        self.properties
            .as_ref()
            .and_then(|p| p.get(k))
            .or(self.additional.as_deref())
    }
}

impl Validator {
    /// Compile `schema`; a pattern that is not a valid regex is an error.
    pub fn new(schema: &Value) -> Result<Self, String> {
        let mut patterns = HashMap::new();
        collect_patterns(schema, &mut patterns)?;
        Ok(Validator {
            root: Node::new(schema, &patterns),
        })
    }

    /// Every schema violation in `object`, with dotted field paths (`metadata` is checked elsewhere).
    pub fn validate(&self, object: &Value) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check(&self.root, object, &mut String::new(), &mut errors);
        errors
    }

    /// Paths of fields the schema does not declare (`spec.colour`), for fieldValidation.
    pub fn unknown_fields(&self, object: &Value) -> Vec<String> {
        let mut out = Vec::new();
        unknown(&self.root, object, &mut String::new(), &mut out);
        out
    }
}

/// Whether `k` is a field of the root that the schema does not check: type and object metadata.
fn server_checked(path: &str, k: &str) -> bool {
    path.is_empty() && (k == "metadata" || k == "apiVersion" || k == "kind")
}

fn check(schema: &Node, value: &Value, path: &mut String, errors: &mut Vec<FieldError>) {
    if schema.reference {
        return;
    }
    if value.is_null() {
        // Kubernetes drops nulls of non-nullable fields on decode rather than rejecting them.
        return;
    }
    if let Some(ty) = &schema.ty {
        let ok = match ty.as_str() {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            _ => true,
        };
        if !ok {
            let got = json_type(value);
            let detail = format!("{} in body must be of type {ty}: \"{got}\"", display(path));
            errors.push(FieldError::type_invalid(display(path), got, detail));
            return;
        }
    }
    if let Some(allowed) = &schema.enumeration
        && !allowed.contains(value)
    {
        let supported: Vec<String> = allowed.iter().map(|v| v.to_string()).collect();
        errors.push(FieldError::not_supported(display(path), value, &supported));
    }
    // The width of `format` bounds integers too (a value past it would fail the typed decode).
    if let (Some((format, low, high)), true) = (schema.width, value.is_number()) {
        let inside = value.as_i64().is_some_and(|n| (low..=high).contains(&n));
        if !inside {
            errors.push(FieldError::invalid(
                display(path),
                value,
                format!("{} in body must be of type {format}: \"{value}\"", display(path)),
            ));
        }
    }
    if let Some(n) = value.as_f64() {
        for (bound, low) in [(schema.minimum, true), (schema.maximum, false)] {
            let Some((limit, exclusive)) = bound else { continue };
            if (if low { n < limit } else { n > limit }) || (exclusive && n == limit) {
                let op = match (low, exclusive) {
                    (true, true) => "greater than",
                    (true, false) => "greater than or equal to",
                    (false, true) => "less than",
                    (false, false) => "less than or equal to",
                };
                errors.push(FieldError::invalid(
                    display(path),
                    value,
                    format!("{} in body should be {op} {}", display(path), fmt_num(limit)),
                ));
            }
        }
    }
    if let Some(s) = value.as_str() {
        let len = s.chars().count() as u64;
        if let Some(min) = schema.min_length
            && len < min
        {
            errors.push(FieldError::invalid(
                display(path),
                value,
                format!("{} in body should be at least {min} chars long", display(path)),
            ));
        }
        if let Some(max) = schema.max_length
            && len > max
        {
            errors.push(FieldError::invalid(
                display(path),
                value,
                format!("{} in body may not be more than {max} chars long", display(path)),
            ));
        }
        if let Some((p, re)) = &schema.pattern
            && !re.is_match(s)
        {
            errors.push(FieldError::invalid(
                display(path),
                value,
                format!("{} in body should match '{p}'", display(path)),
            ));
        }
    }
    match value {
        Value::Object(map) => {
            for r in &schema.required {
                if map.get(r).is_none_or(Value::is_null) {
                    errors.push(FieldError::required(display(&format!("{path}.{r}")), ""));
                }
            }
            for (k, v) in map {
                if server_checked(path, k) {
                    continue;
                }
                // Unknown fields are pruned; fieldValidation decides whether to say so.
                let Some(sub) = schema.field(k) else {
                    continue;
                };
                let end = path.len();
                path.push('.');
                path.push_str(k);
                check(sub, v, path, errors);
                path.truncate(end);
            }
        }
        Value::Array(items) => {
            if let Some(min) = schema.min_items
                && (items.len() as u64) < min
            {
                errors.push(FieldError::invalid(
                    display(path),
                    value,
                    format!("{} in body should have at least {min} items", display(path)),
                ));
            }
            if let Some(max) = schema.max_items
                && (items.len() as u64) > max
            {
                errors.push(FieldError::invalid(
                    display(path),
                    value,
                    format!("{} in body should have at most {max} items", display(path)),
                ));
            }
            if let Some(sub) = &schema.items {
                let end = path.len();
                for (i, item) in items.iter().enumerate() {
                    let _ = write!(path, "[{i}]");
                    check(sub, item, path, errors);
                    path.truncate(end);
                }
            }
        }
        _ => {}
    }
}

fn collect_patterns(schema: &Value, out: &mut HashMap<String, Regex>) -> Result<(), String> {
    match schema {
        Value::Object(map) => {
            if let Some(Value::String(p)) = map.get("pattern") {
                let re = Regex::new(p).map_err(|e| format!("schema pattern {p:?} is not a valid regex: {e}"))?;
                out.insert(p.clone(), re);
            }
            map.values().try_for_each(|v| collect_patterns(v, out))
        }
        Value::Array(items) => items.iter().try_for_each(|v| collect_patterns(v, out)),
        _ => Ok(()),
    }
}

fn unknown(schema: &Node, value: &Value, path: &mut String, out: &mut Vec<String>) {
    if schema.reference || schema.preserve_unknown {
        return;
    }
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if server_checked(path, k) {
                    continue;
                }
                let end = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                match schema.field(k) {
                    Some(sub) => unknown(sub, v, path, out),
                    None if schema.properties.is_some() => out.push(path.clone()),
                    None => {}
                }
                path.truncate(end);
            }
        }
        Value::Array(items) => {
            if let Some(sub) = &schema.items {
                let end = path.len();
                for (i, item) in items.iter().enumerate() {
                    let _ = write!(path, "[{i}]");
                    unknown(sub, item, path, out);
                    path.truncate(end);
                }
            }
        }
        _ => {}
    }
}

fn display(path: &str) -> String {
    path.trim_start_matches('.').to_string()
}

/// The JSON type name of `v`, as the schema's `type` and kube-apiserver's messages say it.
pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn fmt_num(n: f64) -> String {
    if n.fract() == 0.0 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["image"], "properties": {
                "replicas": {"type": "integer", "minimum": 0, "maximum": 10},
                "image": {"type": "string", "minLength": 1, "pattern": "^[a-z:/.0-9-]+$"},
                "mode": {"type": "string", "enum": ["A", "B"]},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
            }}
        }})
    }

    #[test]
    fn reports_every_violation_with_its_path() {
        let v = Validator::new(&schema()).unwrap();
        let errors = v.validate(&json!({"spec": {"replicas": 11, "image": "UPPER", "mode": "C", "labels": {"a": 1}}}));
        let fields: Vec<_> = errors.iter().map(|e| (e.field.as_str(), e.reason.as_str())).collect();
        assert_eq!(
            fields,
            vec![
                ("spec.image", "FieldValueInvalid"),
                ("spec.labels.a", "FieldValueTypeInvalid"),
                ("spec.mode", "FieldValueNotSupported"),
                ("spec.replicas", "FieldValueInvalid"),
            ]
        );
        assert!(
            errors[3].message.contains("less than or equal to 10"),
            "{}",
            errors[0].message
        );
        let missing = v.validate(&json!({"spec": {"replicas": "x"}}));
        assert_eq!(missing[0].reason, "FieldValueRequired");
        assert_eq!(missing[0].field, "spec.image");
        assert_eq!(missing[1].field, "spec.replicas");
        assert!(
            v.validate(&json!({"spec": {"image": "nginx:1.25", "replicas": 3}}))
                .is_empty()
        );
    }

    #[test]
    fn exclusive_bounds_exclude_the_bound_itself() {
        let v = Validator::new(&json!({"type": "object", "properties": {"ratio": {"type": "number",
            "minimum": 0, "exclusiveMinimum": true, "maximum": 1.5, "exclusiveMaximum": true}}}))
        .unwrap();
        let message = |ratio: Value| {
            let errors = v.validate(&json!({"ratio": ratio}));
            errors.first().map(|e| e.message.clone())
        };
        assert_eq!(
            message(json!(0)).as_deref(),
            Some("Invalid value: 0: ratio in body should be greater than 0")
        );
        assert_eq!(
            message(json!(1.5)).as_deref(),
            Some("Invalid value: 1.5: ratio in body should be less than 1.5")
        );
        assert_eq!(message(json!(0.5)), None);
    }

    #[test]
    fn finds_unknown_fields_but_not_in_maps_or_preserved_objects() {
        let v = Validator::new(&schema()).unwrap();
        let unknown = v.unknown_fields(&json!({"metadata": {"x": 1}, "spec": {"image": "a", "colour": "red",
            "labels": {"any": "thing"}, "free": {"deep": {"x": 1}}}, "extra": true}));
        assert_eq!(unknown, vec!["extra", "spec.colour"]);
    }
}
