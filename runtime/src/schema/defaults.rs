//! Published defaults that are true. schemars writes serde's default for a `#[serde(default)]`
//! field (`"default": ""` for a `String`), but a `default = fn` hook runs after decoding and
//! may replace it (an empty color becomes "blue"), so the schema would advertise a value no
//! object ever gets. The hook is code, so it is asked: two probe objects (only what the
//! schema requires; every property) are decoded, defaulted by the hook, and compared at each
//! field the schema gives a default. Where the hook left the field alone the default stays;
//! where it changed it to the same value in both probes that value is published (the hook's
//! own default); where the probes disagree, or the type cannot be probed, it is dropped.

use serde_json::{Map, Value};

use crate::ApiResource;

/// Rewrite the `default`s of `schema` (the structural schema of `T`) to what `T`'s `default`
/// hook really produces: kept, replaced by the hook's value, or dropped (see the module).
pub fn published<T: ApiResource>(schema: &mut Value) {
    let mut at = Vec::new();
    defaulted(schema, "", &mut at);
    if at.is_empty() {
        return;
    }
    let probes = [false, true].map(|full| probe::<T>(schema, full));
    for pointer in at {
        let seen: Vec<Seen> = probes.iter().map(|p| Seen::of(p.as_ref(), &pointer)).collect();
        let Some(node) = schema_at(schema, &pointer) else {
            continue;
        };
        let known: Vec<&Seen> = seen.iter().filter(|s| **s != Seen::Absent).collect();
        match known.first() {
            None | Some(Seen::Untouched) if known.iter().all(|s| **s == Seen::Untouched) => {}
            Some(Seen::Changed(value)) if known.iter().all(|s| **s == Seen::Changed(value.clone())) => {
                node.insert("default".into(), value.clone());
            }
            _ => {
                node.remove("default");
            }
        }
    }
}

/// What one probe shows the hook did at one field.
#[derive(PartialEq)]
enum Seen {
    /// The probe gave the field a value, or it is in neither JSON (an empty list's items):
    /// this probe says nothing of it.
    Absent,
    /// The hook left the decoded default alone.
    Untouched,
    /// The hook set this value.
    Changed(Value),
    /// The hook removed the field, or the probe did not decode.
    Unknown,
}

impl Seen {
    fn of(probe: Option<&Probe>, pointer: &str) -> Seen {
        let Some(probe) = probe else { return Seen::Unknown };
        if probe.input.pointer(pointer).is_some() {
            return Seen::Absent;
        }
        match (probe.before.pointer(pointer), probe.after.pointer(pointer)) {
            (None, None) => Seen::Absent,
            (b, a) if b == a => Seen::Untouched,
            (_, Some(a)) => Seen::Changed(a.clone()),
            (_, None) => Seen::Unknown,
        }
    }
}

/// A probe object: what was sent, what decoding made of it, and what the hook then made.
struct Probe {
    input: Value,
    before: Value,
    after: Value,
}

/// A probe built from the schema; None when it does not decode as `T`.
fn probe<T: ApiResource>(schema: &Value, full: bool) -> Option<Probe> {
    let mut input = sample(schema, full)?;
    input["metadata"] = serde_json::json!({"name": "probe"});
    let before: T = serde_json::from_value(input.clone()).ok()?;
    let mut after = before.clone();
    after.apply_defaults();
    let before = serde_json::to_value(&before).ok()?;
    let after = serde_json::to_value(&after).ok()?;
    Some(Probe { input, before, after })
}

/// The JSON pointers (into an object) of every schema node with a `default`: through
/// `properties`, one array item (`/0`) and one map entry (`/probe`).
fn defaulted(schema: &Value, pointer: &str, out: &mut Vec<String>) {
    let Some(map) = schema.as_object() else { return };
    if map.contains_key("default") && !pointer.is_empty() {
        out.push(pointer.to_string());
    }
    if let Some(Value::Object(properties)) = map.get("properties") {
        for (name, property) in properties {
            let escaped = name.replace('~', "~0").replace('/', "~1");
            defaulted(property, &format!("{pointer}/{escaped}"), out);
        }
    }
    if let Some(items) = map.get("items") {
        defaulted(items, &format!("{pointer}/0"), out);
    }
    if let Some(values @ Value::Object(_)) = map.get("additionalProperties") {
        defaulted(values, &format!("{pointer}/probe"), out);
    }
}

/// The schema node an object pointer from [`defaulted`] leads to.
fn schema_at<'s>(schema: &'s mut Value, pointer: &str) -> Option<&'s mut Map<String, Value>> {
    let mut node = schema;
    for segment in pointer.split('/').skip(1) {
        let map = node.as_object_mut()?;
        node = if segment == "0" && map.contains_key("items") {
            map.get_mut("items")?
        } else if segment == "probe" && map.get("additionalProperties").is_some_and(Value::is_object) {
            map.get_mut("additionalProperties")?
        } else {
            let name = segment.replace("~1", "/").replace("~0", "~");
            map.get_mut("properties")?.get_mut(&name)?
        };
    }
    node.as_object_mut()
}

/// A value the schema accepts, with fields that have a default left out so decoding fills
/// them in. Not `full`: only what is required, with zero values; `full`: every property with
/// other values (so a hook deciding on them shows it), one list item and map entry, and
/// defaulted lists and objects too, to reach the defaults inside them.
fn sample(schema: &Value, full: bool) -> Option<Value> {
    let map = schema.as_object()?;
    if let Some(Value::Array(values)) = map.get("enum") {
        return values.first().cloned();
    }
    if map.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        return Some(Value::from(0));
    }
    let bound = |key| map.get(key).and_then(Value::as_f64);
    match map.get("type").and_then(Value::as_str) {
        Some("object") => {
            let required: Vec<&str> = map
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut object = Map::new();
            if let Some(Value::Object(properties)) = map.get("properties") {
                for (name, property) in properties {
                    let wanted = full || required.contains(&name.as_str());
                    let container = matches!(property.get("type").and_then(Value::as_str), Some("object" | "array"));
                    if wanted && (property.get("default").is_none() || full && container) {
                        object.extend(sample(property, full).map(|v| (name.clone(), v)));
                    }
                }
            }
            if let (true, Some(values)) = (full, map.get("additionalProperties")) {
                object.extend(sample(values, full).map(|v| ("probe".to_string(), v)));
            }
            Some(Value::Object(object))
        }
        Some("array") => {
            let least = bound("minItems").unwrap_or(0.0) as usize;
            let wanted = if full { least.max(1) } else { least };
            let item = map.get("items").and_then(|i| sample(i, full));
            Some(Value::Array(item.into_iter().cycle().take(wanted).collect()))
        }
        Some("string") => Some(Value::from(match map.get("format").and_then(Value::as_str) {
            Some("date-time") => "1970-01-01T00:00:00Z".to_string(),
            Some("date") => "1970-01-01".to_string(),
            _ => {
                let least = bound("minLength").unwrap_or(0.0).max(if full { 1.0 } else { 0.0 });
                "x".repeat(least.min(bound("maxLength").unwrap_or(least)) as usize)
            }
        })),
        Some(number @ ("integer" | "number")) => {
            let least = bound("minimum").unwrap_or(0.0).max(if full { 1.0 } else { f64::MIN });
            let value = bound("maximum").map_or(least, |most| least.min(most));
            Some(if number == "integer" {
                Value::from(value as i64)
            } else {
                Value::from(value)
            })
        }
        Some("boolean") => Some(Value::Bool(full)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn samples_follow_the_schema() {
        let schema = json!({"type": "object", "required": ["a"], "properties": {
            "a": {"type": "string", "minLength": 3},
            "b": {"type": "integer", "minimum": 5},
            "c": {"type": "array", "items": {"type": "string", "enum": ["One", "Two"]}},
            "d": {"type": "string", "default": ""},
            "e": {"type": "object", "additionalProperties": {"type": "boolean"}},
        }});
        assert_eq!(sample(&schema, false), Some(json!({"a": "xxx"})));
        assert_eq!(
            sample(&schema, true),
            Some(json!({"a": "xxx", "b": 5, "c": ["One"], "e": {"probe": true}}))
        );
        let mut found = Vec::new();
        defaulted(
            &json!({"properties": {"s": {"items": {"properties": {"x/y": {"default": 1}}}}}}),
            "",
            &mut found,
        );
        assert_eq!(found, ["/s/0/x~1y"]);
    }
}
