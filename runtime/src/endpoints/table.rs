//! `meta.k8s.io/v1 Table` for `kubectl get`: Name, the declared columns, Age.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::registry::encoded::Encoded;
use crate::registry::object::meta_field;
use crate::resource::ResourceMeta;
use crate::schema::jsonpath;

/// What each row carries as `object` (`includeObject`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// `PartialObjectMetadata` (the default).
    #[default]
    Metadata,
    /// The whole object.
    Object,
    /// Nothing.
    None,
}

impl IncludeObject {
    /// Parse the query parameter.
    pub fn parse(value: Option<&str>) -> Result<Self, String> {
        match value {
            None | Some("") | Some("Metadata") => Ok(IncludeObject::Metadata),
            Some("Object") => Ok(IncludeObject::Object),
            Some("None") => Ok(IncludeObject::None),
            Some(other) => Err(format!("includeObject must be Metadata, Object or None, not {other:?}")),
        }
    }
}

/// The column definitions of a resource's tables.
pub fn column_definitions(meta: &ResourceMeta) -> Value {
    let mut columns = vec![json!({
        "name": "Name", "type": "string", "format": "name", "priority": 0,
        "description": "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
    })];
    for c in meta.columns {
        columns.push(json!({
            "name": c.name, "type": c.type_, "format": c.format, "description": c.description, "priority": c.priority
        }));
    }
    columns.push(json!({
        "name": "Age", "type": "date", "format": "", "priority": 0,
        "description": "CreationTimestamp is a timestamp representing the server time when this object was created."
    }));
    Value::Array(columns)
}

/// A cell as derived once per object revision: a value, or an age to format at request time.
enum Cell {
    Value(Value),
    Age(jiff::Timestamp),
}

impl Cell {
    fn at(&self, now: jiff::Timestamp) -> Value {
        match self {
            Cell::Value(v) => v.clone(),
            Cell::Age(then) => Value::String(human_duration(now.as_second() - then.as_second())),
        }
    }
}

/// An object's cells: Name, the declared columns, Age.
fn cells(meta: &ResourceMeta, object: &Value) -> Vec<Cell> {
    let mut cells = vec![Cell::Value(meta_field(object, "name").cloned().unwrap_or(Value::Null))];
    for c in meta.columns {
        let value = jsonpath::get(object, c.json_path).cloned().unwrap_or(Value::Null);
        cells.push(match (c.type_, value.as_str().map(str::parse)) {
            ("date", Some(Ok(then))) => Cell::Age(then),
            _ => Cell::Value(value),
        });
    }
    let created = meta_field(object, "creationTimestamp").and_then(Value::as_str);
    cells.push(match created.map(str::parse) {
        Some(Ok(then)) => Cell::Age(then),
        _ => Cell::Value(json!("<unknown>")),
    });
    cells
}

/// One table row for an object.
pub fn row(meta: &ResourceMeta, object: &Value, include: IncludeObject, now: jiff::Timestamp) -> Value {
    let cells: Vec<Value> = cells(meta, object).iter().map(|c| c.at(now)).collect();
    let mut row = json!({ "cells": cells });
    match include {
        IncludeObject::None => {}
        IncludeObject::Object => row["object"] = object.clone(),
        IncludeObject::Metadata => {
            row["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": object.get("metadata").cloned().unwrap_or(Value::Null),
            })
        }
    }
    row
}

/// What a row needs of an object revision: its cells and its metadata's JSON.
struct RowParts {
    cells: Vec<Cell>,
    metadata: Vec<u8>,
}

/// One table row, as JSON, for an encoded object: its parts are derived once per revision
/// and shared by every later Table, only the ages are of `now`.
pub fn encoded_row(meta: &ResourceMeta, item: &Encoded, include: IncludeObject, now: jiff::Timestamp) -> Bytes {
    let parts = item.derived.get_or_derive(|| {
        let object: Value = serde_json::from_slice(&item.json).ok()?;
        let metadata = serde_json::to_vec(object.get("metadata").unwrap_or(&Value::Null)).ok()?;
        Some(RowParts {
            cells: cells(meta, &object),
            metadata,
        })
    });
    let Some(parts) = parts else {
        // Encodings are validated JSON; this is only reached if another reader claimed the slot.
        let object = serde_json::from_slice(&item.json).unwrap_or(Value::Null);
        return serde_json::to_vec(&row(meta, &object, include, now))
            .expect("JSON values serialize")
            .into();
    };
    let cells: Vec<Value> = parts.cells.iter().map(|c| c.at(now)).collect();
    let mut out = b"{\"cells\":".to_vec();
    serde_json::to_writer(&mut out, &cells).expect("JSON values serialize");
    match include {
        IncludeObject::None => {}
        IncludeObject::Object => {
            out.extend_from_slice(b",\"object\":");
            out.extend_from_slice(&item.json);
        }
        IncludeObject::Metadata => {
            out.extend_from_slice(
                br#","object":{"apiVersion":"meta.k8s.io/v1","kind":"PartialObjectMetadata","metadata":"#,
            );
            out.extend_from_slice(&parts.metadata);
            out.push(b'}');
        }
    }
    out.push(b'}');
    out.into()
}

/// A Table of objects; `list_metadata` is the list's `metadata` (resourceVersion, continue).
pub fn table(
    meta: &ResourceMeta,
    objects: &[Value],
    list_metadata: Value,
    include: IncludeObject,
    with_columns: bool,
) -> Value {
    let now = jiff::Timestamp::now();
    let mut table = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_metadata,
        "rows": objects.iter().map(|o| row(meta, o, include, now)).collect::<Vec<_>>(),
    });
    if with_columns {
        table["columnDefinitions"] = column_definitions(meta);
    } else {
        table["columnDefinitions"] = Value::Array(Vec::new());
    }
    table
}

/// k8s.io/apimachinery's `duration.HumanDuration`.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    let (minutes, hours) = (seconds / 60, seconds / 3600);
    let with = |big: i64, big_unit: &str, small: i64, small_unit: &str| {
        if small == 0 {
            format!("{big}{big_unit}")
        } else {
            format!("{big}{big_unit}{small}{small_unit}")
        }
    };
    if seconds < 60 * 2 {
        format!("{seconds}s")
    } else if minutes < 10 {
        with(minutes, "m", seconds % 60, "s")
    } else if minutes < 60 * 3 {
        format!("{minutes}m")
    } else if hours < 8 {
        with(hours, "h", minutes % 60, "m")
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        with(hours / 24, "d", hours % 24, "h")
    } else if hours < 24 * 365 * 2 {
        format!("{}d", hours / 24)
    } else if hours < 24 * 365 * 8 {
        with(hours / 24 / 365, "y", (hours / 24) % 365, "d")
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{PrintColumn, TEST_META};
    use crate::storage::Derived;

    #[test]
    fn rows_from_encoded_objects_are_the_rows_of_the_objects() {
        let column = |name, type_, json_path| PrintColumn {
            name,
            type_,
            json_path,
            description: "",
            priority: 0,
            format: "",
        };
        let columns: &'static [PrintColumn] = Box::leak(Box::new([
            column("Replicas", "integer", ".spec.replicas"),
            column("Seen", "date", ".status.seen"),
            column("Note", "date", ".status.note"),
        ]));
        let meta = ResourceMeta { columns, ..TEST_META };
        let object = json!({
            "apiVersion": "g/v1", "kind": "K",
            "metadata": {"name": "a", "creationTimestamp": "2026-11-20T10:00:00Z", "resourceVersion": "7"},
            "spec": {"replicas": 3}, "status": {"seen": "2026-11-25T09:00:00Z", "note": "not a date"},
        });
        let encoded = Encoded {
            json: serde_json::to_vec(&object).unwrap().into(),
            derived: Derived::default(),
        };
        let now: jiff::Timestamp = "2026-11-25T10:00:00Z".parse().unwrap();
        for include in [IncludeObject::Metadata, IncludeObject::Object, IncludeObject::None] {
            let want = row(&meta, &object, include, now);
            assert_eq!(want["cells"], json!(["a", 3, "60m", "not a date", "5d"]));
            for _ in 0..2 {
                let got: Value = serde_json::from_slice(&encoded_row(&meta, &encoded, include, now)).unwrap();
                assert_eq!(got, want, "{include:?}");
            }
        }
        // Parts are kept; ages move with the clock.
        let later = encoded_row(
            &meta,
            &encoded,
            IncludeObject::None,
            "2026-11-25T12:00:00Z".parse().unwrap(),
        );
        let later: Value = serde_json::from_slice(&later).unwrap();
        assert_eq!(later["cells"], json!(["a", 3, "3h", "not a date", "5d2h"]));
    }

    #[test]
    fn ages_read_like_kubectl() {
        for (secs, want) in [
            (5, "5s"),
            (119, "119s"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600 + 120, "3h2m"),
            (20 * 3600, "20h"),
            (3 * 86400 + 3600, "3d1h"),
            (40 * 86400, "40d"),
            (3 * 365 * 86400 + 86400, "3y1d"),
        ] {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }
}
