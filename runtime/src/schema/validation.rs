//! Enforce a structural schema on a JSON object: types, required, enum, ranges, lengths and
//! patterns, plus the unknown fields that `fieldValidation` reports.

use std::collections::HashMap;
use std::fmt::Write as _;

use regex::Regex;
use serde_json::Value;

use crate::resource::FieldError;

/// A compiled structural schema.
pub struct Validator {
    schema: Value,
    patterns: HashMap<String, Regex>,
}

impl Validator {
    /// Compile `schema`; a pattern that is not a valid regex is reported and never matches.
    pub fn new(schema: Value) -> Result<Self, String> {
        let mut patterns = HashMap::new();
        collect_patterns(&schema, &mut patterns)?;
        Ok(Validator { schema, patterns })
    }

    /// Every schema violation in `object`, with dotted field paths (`metadata` is checked elsewhere).
    pub fn validate(&self, object: &Value) -> Vec<FieldError> {
        let mut errors = Vec::new();
        self.check(&self.schema, object, &mut String::new(), &mut errors);
        errors
    }

    /// Paths of fields the schema does not declare (`spec.colour`), for fieldValidation.
    pub fn unknown_fields(&self, object: &Value) -> Vec<String> {
        let mut out = Vec::new();
        unknown(&self.schema, object, &mut String::new(), &mut out);
        out
    }

    fn check(&self, schema: &Value, value: &Value, path: &mut String, errors: &mut Vec<FieldError>) {
        if schema.get("$ref").is_some() {
            return;
        }
        if value.is_null() {
            // Kubernetes drops nulls of non-nullable fields on decode rather than rejecting them.
            return;
        }
        if let Some(Value::String(ty)) = schema.get("type") {
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
        if let Some(Value::Array(allowed)) = schema.get("enum")
            && !allowed.contains(value)
        {
            let supported: Vec<String> = allowed.iter().map(|v| v.to_string()).collect();
            errors.push(FieldError::not_supported(display(path), value, &supported));
        }
        // The width of `format` bounds integers too (a value past it would fail the typed decode).
        let width = match schema.get("format").and_then(Value::as_str) {
            Some("int32") => Some((i64::from(i32::MIN), i64::from(i32::MAX))),
            Some("int64") => Some((i64::MIN, i64::MAX)),
            _ => None,
        };
        if let (Some((low, high)), true) = (width, value.is_number()) {
            let inside = value.as_i64().is_some_and(|n| (low..=high).contains(&n));
            if !inside {
                let format = schema["format"].as_str().unwrap_or_default();
                errors.push(FieldError::invalid(
                    display(path),
                    value,
                    format!("{} in body must be of type {format}: \"{value}\"", display(path)),
                ));
            }
        }
        if let Some(n) = value.as_f64() {
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
                let exclusive = schema.get("exclusiveMinimum") == Some(&Value::Bool(true));
                if n < min || (exclusive && n == min) {
                    let op = if exclusive {
                        "greater than"
                    } else {
                        "greater than or equal to"
                    };
                    errors.push(FieldError::invalid(
                        display(path),
                        value,
                        format!("{} in body should be {op} {}", display(path), fmt_num(min)),
                    ));
                }
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
                let exclusive = schema.get("exclusiveMaximum") == Some(&Value::Bool(true));
                if n > max || (exclusive && n == max) {
                    let op = if exclusive {
                        "less than"
                    } else {
                        "less than or equal to"
                    };
                    errors.push(FieldError::invalid(
                        display(path),
                        value,
                        format!("{} in body should be {op} {}", display(path), fmt_num(max)),
                    ));
                }
            }
        }
        if let Some(s) = value.as_str() {
            let len = s.chars().count() as u64;
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && len < min
            {
                errors.push(FieldError::invalid(
                    display(path),
                    value,
                    format!("{} in body should be at least {min} chars long", display(path)),
                ));
            }
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && len > max
            {
                errors.push(FieldError::invalid(
                    display(path),
                    value,
                    format!("{} in body may not be more than {max} chars long", display(path)),
                ));
            }
            if let Some(Value::String(p)) = schema.get("pattern")
                && let Some(re) = self.patterns.get(p)
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
                if let Some(Value::Array(required)) = schema.get("required") {
                    for r in required.iter().filter_map(Value::as_str) {
                        if map.get(r).is_none_or(Value::is_null) {
                            errors.push(FieldError::required(display(&format!("{path}.{r}")), ""));
                        }
                    }
                }
                let props = schema.get("properties").and_then(Value::as_object);
                for (k, v) in map {
                    if path.is_empty() && (k == "metadata" || k == "apiVersion" || k == "kind") {
                        continue;
                    }
                    // Unknown fields are pruned; fieldValidation decides whether to say so.
                    let Some(sub) = props
                        .and_then(|p| p.get(k))
                        .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object()))
                    else {
                        continue;
                    };
                    let end = path.len();
                    path.push('.');
                    path.push_str(k);
                    self.check(sub, v, path, errors);
                    path.truncate(end);
                }
            }
            Value::Array(items) => {
                if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                    && (items.len() as u64) < min
                {
                    errors.push(FieldError::invalid(
                        display(path),
                        value,
                        format!("{} in body should have at least {min} items", display(path)),
                    ));
                }
                if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                    && (items.len() as u64) > max
                {
                    errors.push(FieldError::invalid(
                        display(path),
                        value,
                        format!("{} in body should have at most {max} items", display(path)),
                    ));
                }
                if let Some(sub) = schema.get("items") {
                    let end = path.len();
                    for (i, item) in items.iter().enumerate() {
                        let _ = write!(path, "[{i}]");
                        self.check(sub, item, path, errors);
                        path.truncate(end);
                    }
                }
            }
            _ => {}
        }
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

fn unknown(schema: &Value, value: &Value, path: &mut String, out: &mut Vec<String>) {
    if schema.get("$ref").is_some() || schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, v) in map {
                if path.is_empty() && (k == "metadata" || k == "apiVersion" || k == "kind") {
                    continue;
                }
                let end = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                match (props.and_then(|p| p.get(k)), additional) {
                    (Some(sub), _) | (None, Some(sub)) => unknown(sub, v, path, out),
                    (None, None) if props.is_some() => out.push(path.clone()),
                    _ => {}
                }
                path.truncate(end);
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
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
        let v = Validator::new(schema()).unwrap();
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
    fn finds_unknown_fields_but_not_in_maps_or_preserved_objects() {
        let v = Validator::new(schema()).unwrap();
        let unknown = v.unknown_fields(&json!({"metadata": {"x": 1}, "spec": {"image": "a", "colour": "red",
            "labels": {"any": "thing"}, "free": {"deep": {"x": 1}}}, "extra": true}));
        assert_eq!(unknown, vec!["extra", "spec.colour"]);
    }
}
