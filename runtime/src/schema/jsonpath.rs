//! The JSON path subset CRDs use for printer columns, scale and selectable fields:
//! `.a.b`, `.a[0]`, `.a[*].b`, `.a[?(@.type=="Ready")].status`.

use serde_json::Value;

#[derive(Debug, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    All,
    Filter(Vec<String>, Value),
}

fn parse(path: &str) -> Option<Vec<Step>> {
    let mut steps = Vec::new();
    let mut rest = path.trim();
    rest = rest.strip_prefix('{').and_then(|r| r.strip_suffix('}')).unwrap_or(rest);
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end == 0 {
                return None;
            }
            steps.push(Step::Field(r[..end].to_string()));
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let inner = &r[..end];
            rest = &r[end + 1..];
            if inner == "*" {
                steps.push(Step::All);
            } else if let Ok(i) = inner.parse() {
                steps.push(Step::Index(i));
            } else if let Some(cond) = inner.strip_prefix("?(@.").and_then(|c| c.strip_suffix(')')) {
                let (field, value) = cond.split_once("==")?;
                let value = value.trim();
                let value = serde_json::from_str(value)
                    .or_else(|_| serde_json::from_str(&value.replace('\'', "\"")))
                    .ok()?;
                steps.push(Step::Filter(field.trim().split('.').map(String::from).collect(), value));
            } else {
                let quoted = inner.trim_matches(|c| c == '\'' || c == '"');
                steps.push(Step::Field(quoted.to_string()));
            }
        } else {
            return None;
        }
    }
    Some(steps)
}

/// Whether `path` is in the supported subset.
pub fn is_valid(path: &str) -> bool {
    parse(path).is_some()
}

/// The schema of what `path` selects in objects of `schema`: `Ok(None)` where the schema
/// stops describing (free-form objects such as `metadata`'s, preserved unknown fields), an
/// error naming the first step the schema does not have.
pub fn in_schema<'a>(schema: &'a Value, path: &str) -> Result<Option<&'a Value>, String> {
    let steps = parse(path).ok_or_else(|| format!("`{path}` is not a JSON path of the supported form"))?;
    let mut at = schema;
    let mut walked = String::new();
    for step in &steps {
        let free = at.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
            || (at.get("type").is_none_or(|t| t == "object")
                && at.get("properties").is_none()
                && at.get("additionalProperties").is_none()
                && at.get("items").is_none());
        if free {
            return Ok(None);
        }
        at = match step {
            Step::Field(name) => {
                walked.push('.');
                walked.push_str(name);
                match (at.get("properties"), at.get("additionalProperties")) {
                    (Some(properties), _) => properties.get(name.as_str()).ok_or_else(|| {
                        let known: Vec<&str> = properties
                            .as_object()
                            .into_iter()
                            .flatten()
                            .map(|(k, _)| k.as_str())
                            .collect();
                        format!("`{walked}` is not in the schema (known here: {})", known.join(", "))
                    })?,
                    (None, Some(values)) if values.is_object() => values,
                    _ => return Err(format!("`{walked}`: the schema has no fields here")),
                }
            }
            Step::Index(_) | Step::All | Step::Filter(..) => {
                walked.push_str("[]");
                at.get("items")
                    .or_else(|| at.get("additionalProperties").filter(|v| v.is_object()))
                    .ok_or_else(|| format!("`{walked}`: the schema has no list here"))?
            }
        };
    }
    Ok(Some(at))
}

/// Every value `path` selects in `value` (empty when the path is invalid or finds nothing).
pub fn select<'a>(value: &'a Value, path: &str) -> Vec<&'a Value> {
    let Some(steps) = parse(path) else {
        return Vec::new();
    };
    let mut current = vec![value];
    for step in &steps {
        let mut next = Vec::new();
        for v in current {
            match step {
                Step::Field(name) => next.extend(v.get(name.as_str())),
                Step::Index(i) => next.extend(v.get(*i)),
                Step::All => match v {
                    Value::Array(items) => next.extend(items.iter()),
                    Value::Object(map) => next.extend(map.values()),
                    _ => {}
                },
                Step::Filter(field, expected) => {
                    if let Value::Array(items) = v {
                        next.extend(items.iter().filter(|item| {
                            field.iter().try_fold(*item, |acc, f| acc.get(f.as_str())) == Some(expected)
                        }));
                    }
                }
            }
        }
        current = next;
    }
    current
}

/// The first value `path` selects.
pub fn get<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    select(value, path).into_iter().next()
}

/// Set the value at a dotted path (`.spec.replicas`), creating objects on the way.
pub fn set(value: &mut Value, path: &str, new: Value) -> Result<(), String> {
    let steps = parse(path).ok_or_else(|| format!("invalid JSON path {path:?}"))?;
    let mut current = value;
    for (i, step) in steps.iter().enumerate() {
        let Step::Field(name) = step else {
            return Err(format!("JSON path {path:?} must be a plain field path to be written"));
        };
        if current.is_null() {
            *current = Value::Object(Default::default());
        }
        let map = current
            .as_object_mut()
            .ok_or_else(|| format!("{path:?} crosses a non-object"))?;
        if i == steps.len() - 1 {
            map.insert(name.clone(), new);
            return Ok(());
        }
        current = map.entry(name.clone()).or_insert(Value::Null);
    }
    Err(format!("empty JSON path {path:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked_against_the_schema() {
        let schema = serde_json::json!({"type": "object", "properties": {
            "metadata": {"type": "object"},
            "spec": {"type": "object", "properties": {"replicas": {"type": "integer"}}},
            "status": {"type": "object", "properties": {
                "conditions": {"type": "array", "items": {"type": "object", "properties": {"status": {"type": "string"}}}}}},
        }});
        assert_eq!(
            in_schema(&schema, ".spec.replicas").unwrap().unwrap()["type"],
            "integer"
        );
        assert!(in_schema(&schema, ".metadata.namespace").unwrap().is_none());
        assert!(
            in_schema(&schema, r#".status.conditions[?(@.type=="Ready")].status"#)
                .unwrap()
                .is_some()
        );
        assert_eq!(
            in_schema(&schema, ".spec.nosuch").unwrap_err(),
            "`.spec.nosuch` is not in the schema (known here: replicas)"
        );
        assert!(in_schema(&schema, ".spec.replicas[0]").is_err());
    }
    use serde_json::json;

    #[test]
    fn selects_fields_indexes_and_filters() {
        let v = json!({"spec": {"replicas": 3}, "status": {"conditions": [
            {"type": "Progressing", "status": "False"}, {"type": "Ready", "status": "True"}]}});
        assert_eq!(get(&v, ".spec.replicas"), Some(&json!(3)));
        assert_eq!(get(&v, ".status.conditions[1].type"), Some(&json!("Ready")));
        assert_eq!(
            get(&v, r#".status.conditions[?(@.type=="Ready")].status"#),
            Some(&json!("True"))
        );
        assert_eq!(
            select(&v, ".status.conditions[*].status"),
            vec![&json!("False"), &json!("True")]
        );
        assert_eq!(get(&v, ".spec.missing"), None);
        assert!(!is_valid("spec"));
        assert!(!is_valid(".spec..x"));
    }

    #[test]
    fn sets_plain_paths() {
        let mut v = json!({"spec": {}});
        set(&mut v, ".spec.replicas", json!(5)).unwrap();
        set(&mut v, ".status.availableReplicas", json!(2)).unwrap();
        assert_eq!(v, json!({"spec": {"replicas": 5}, "status": {"availableReplicas": 2}}));
        assert!(set(&mut v, ".spec.items[0]", json!(1)).is_err());
    }
}
