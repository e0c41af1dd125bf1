//! `metadata.managedFields`: who owns which fields. Every write records what its manager
//! changed (operation Update); server-side apply (operation Apply) merges a manager's applied
//! configuration, refuses to take fields other managers own with different values (unless
//! forced), and removes fields the manager stopped applying that nobody else owns.

use serde_json::{Map, Value, json};

use super::fieldset::{self, Element, FieldSet, Path};
use super::object::meta_field;
use super::versions::Codec;

/// `operation` of an apply entry.
pub const APPLY: &str = "Apply";
/// `operation` of any other write's entry.
pub const UPDATE: &str = "Update";

/// One `managedFields` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The field manager.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// The API version the manager wrote with.
    pub api_version: String,
    /// When the entry last changed (RFC 3339, seconds).
    pub time: String,
    /// "", "status" or "scale".
    pub subresource: String,
    /// The fields it owns.
    pub fields: FieldSet,
}

/// Who writes, and how.
#[derive(Clone, Debug)]
pub struct Writer<'a> {
    /// The field manager.
    pub manager: &'a str,
    /// "", "status" or "scale".
    pub subresource: &'a str,
    /// `group/version`.
    pub api_version: String,
    /// The resource's structural schema, compiled for field sets.
    pub schema: &'a fieldset::Schema,
    /// The kind's other versions, when it has any: managers who wrote at another version
    /// see a write as their version has it.
    pub codec: Option<&'a Codec>,
}

impl Writer<'_> {
    /// What a write from `old` (absent: a create) to `new` changed and removed as `api_version`
    /// has them; `None` at the writer's own version, or when a side does not convert.
    fn changes_at(&self, api_version: &str, old: Option<&Value>, new: &Value) -> Option<(FieldSet, FieldSet)> {
        if api_version == self.api_version {
            return None;
        }
        let (new, schema) = self.codec?.view(new, api_version)?;
        let Some(old) = old else {
            return Some((fieldset::paths(&new, &schema), FieldSet::new()));
        };
        let (old, _) = self.codec?.view(old, api_version)?;
        let removed = fieldset::paths(&old, &schema)
            .difference(&fieldset::paths(&new, &schema))
            .cloned()
            .collect();
        Some((
            owned_part(fieldset::changed(&old, &new, &schema), self.subresource),
            removed,
        ))
    }

    /// [`Writer::changes_at`] once for each other version among `entries`' managers (a
    /// conversion each), looked up per entry.
    fn changes_by_version(
        &self,
        entries: &[Entry],
        old: Option<&Value>,
        new: &Value,
    ) -> Vec<(String, Option<(FieldSet, FieldSet)>)> {
        let mut out: Vec<(String, Option<(FieldSet, FieldSet)>)> = Vec::new();
        if self.codec.is_none() {
            return out;
        }
        for e in entries {
            if e.api_version != self.api_version && !out.iter().any(|(v, _)| *v == e.api_version) {
                out.push((e.api_version.clone(), self.changes_at(&e.api_version, old, new)));
            }
        }
        out
    }

    fn owns(&self, entry: &Entry, operation: &str) -> bool {
        entry.manager == self.manager && entry.operation == operation && entry.subresource == self.subresource
    }

    fn entry(&self, operation: &str, fields: FieldSet) -> Entry {
        Entry {
            manager: self.manager.into(),
            operation: operation.into(),
            api_version: self.api_version.clone(),
            time: now(),
            subresource: self.subresource.into(),
            fields,
        }
    }
}

/// An entry's time: now, to the second.
fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The entries of `object`; `None` when absent or malformed.
pub fn decode(object: &Value) -> Option<Vec<Entry>> {
    let list = meta_field(object, "managedFields")?.as_array()?;
    list.iter()
        .map(|e| {
            let text = |k: &str| e.get(k).and_then(Value::as_str).map(str::to_string);
            if e.get("fieldsType").and_then(Value::as_str) != Some("FieldsV1") {
                return None;
            }
            Some(Entry {
                manager: text("manager")?,
                operation: text("operation").filter(|o| o == APPLY || o == UPDATE)?,
                api_version: text("apiVersion").unwrap_or_default(),
                time: text("time").unwrap_or_default(),
                subresource: text("subresource").unwrap_or_default(),
                fields: fieldset::from_fields_v1(e.get("fieldsV1")?)?,
            })
        })
        .collect()
}

/// Entries as `metadata.managedFields`.
pub fn encode(entries: &[Entry]) -> Value {
    Value::Array(encoded(entries))
}

/// Each entry as its `managedFields` JSON.
fn encoded(entries: &[Entry]) -> Vec<Value> {
    entries
        .iter()
        .map(|e| {
            let fields = fieldset::to_fields_v1(&e.fields);
            entry_value(
                &e.manager,
                &e.operation,
                &e.api_version,
                &e.time,
                &e.subresource,
                fields,
            )
        })
        .collect()
}

/// One `managedFields` entry.
fn entry_value(
    manager: &str,
    operation: &str,
    api_version: &str,
    time: &str,
    subresource: &str,
    fields: Value,
) -> Value {
    // Built by hand: `json!` would serialize `fields` into a copy of itself.
    let text = |s: &str| Value::String(s.to_string());
    let mut v = Map::new();
    v.insert("manager".into(), text(manager));
    v.insert("operation".into(), text(operation));
    v.insert("apiVersion".into(), text(api_version));
    v.insert("time".into(), text(time));
    v.insert("fieldsType".into(), text("FieldsV1"));
    v.insert("fieldsV1".into(), fields);
    if !subresource.is_empty() {
        v.insert("subresource".into(), text(subresource));
    }
    Value::Object(v)
}

/// Fields nobody owns: type and server-set metadata, and the part a subresource does not write.
fn owned_part(set: FieldSet, subresource: &str) -> FieldSet {
    set.into_iter()
        .filter(|p| match p.as_slice() {
            [Element::Field(first), rest @ ..] => {
                let second = match rest.first() {
                    Some(Element::Field(f)) => Some(f.as_str()),
                    _ => None,
                };
                owned(subresource, first, second)
            }
            _ => subresource != "status",
        })
        .collect()
}

/// Whether a write to `subresource` owns a path by its first field and its second element
/// (when that is a field): see [`owned_part`].
fn owned(subresource: &str, first: &str, second: Option<&str>) -> bool {
    const SERVER: &[&str] = &[
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "selfLink",
        "generateName",
    ];
    match (first, second) {
        ("apiVersion" | "kind", _) => false,
        ("metadata", Some(f)) => !SERVER.contains(&f),
        ("status", _) => subresource == "status",
        _ => subresource != "status",
    }
}

/// Record the create of `object` by `writer` in its managedFields: as [`track_update`] with
/// no old object and no entries, but in one walk of the object, without a field set.
pub fn track_create(object: &mut Value, writer: &Writer<'_>) {
    let fields = fieldset::fields_v1_of(object, writer.schema, |first, second| {
        owned(writer.subresource, first, second)
    });
    let entries = match fields.as_object() {
        Some(f) if f.is_empty() => Vec::new(),
        _ => {
            let time = now();
            vec![entry_value(
                writer.manager,
                UPDATE,
                &writer.api_version,
                &time,
                writer.subresource,
                fields,
            )]
        }
    };
    set_encoded(object, entries);
}

/// Record a non-apply write of `new` (over `old`, absent for a create) by `writer`: it owns
/// what it changed, and nobody owns what it removed.
pub fn track_update(entries: Vec<Entry>, old: Option<&Value>, new: &Value, writer: &Writer<'_>) -> Vec<Entry> {
    let now = fieldset::paths(new, writer.schema);
    let (changed, removed) = match old {
        // A create sets everything it has.
        None => (now, FieldSet::new()),
        Some(old) => {
            let removed = fieldset::paths(old, writer.schema).difference(&now).cloned().collect();
            (fieldset::changed(old, new, writer.schema), removed)
        }
    };
    let changed = owned_part(changed, writer.subresource);
    if changed.is_empty() && removed.is_empty() {
        return entries;
    }
    // The writer's entry keeps its place (a new one goes last), so order is stable.
    let by_version = writer.changes_by_version(&entries, old, new);
    let mut out = Vec::new();
    let mut mine = None;
    for mut e in entries {
        if writer.owns(&e, UPDATE) {
            e.fields.retain(|p| !removed.contains(p));
            mine = Some(out.len());
            e.fields.extend(changed.iter().cloned());
            out.push(e);
            continue;
        }
        // Another version's manager loses what the write changed as its version has it.
        let theirs = by_version
            .iter()
            .find(|(v, _)| *v == e.api_version)
            .and_then(|(_, c)| c.as_ref());
        let (changed, removed) = theirs.map_or((&changed, &removed), |(c, r)| (c, r));
        e.fields.retain(|p| !removed.contains(p) && !changed.contains(p));
        out.push(e);
    }
    match mine {
        Some(i) => {
            let fields = std::mem::take(&mut out[i].fields);
            out[i] = writer.entry(UPDATE, fields);
        }
        None if !changed.is_empty() => out.push(writer.entry(UPDATE, changed)),
        None => {}
    }
    out.retain(|e| !e.fields.is_empty());
    out
}

/// A field another manager owns with a different value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The owner.
    pub manager: String,
    /// The API version it wrote with.
    pub api_version: String,
    /// The field.
    pub path: Path,
}

impl Conflict {
    /// `conflict with "manager" using v1`.
    pub fn who(&self) -> String {
        format!("conflict with \"{}\" using {}", self.manager, self.api_version)
    }
}

/// The message of a failed apply, as kube-apiserver words it.
pub fn conflicts_message(conflicts: &[Conflict]) -> String {
    let mut by_owner: Vec<(String, Vec<String>)> = Vec::new();
    for c in conflicts {
        let path = fieldset::display(&c.path);
        let who = c.who();
        match by_owner.iter_mut().find(|(w, _)| *w == who) {
            Some((_, paths)) => paths.push(path),
            None => by_owner.push((who, vec![path])),
        }
    }
    let parts: Vec<String> = by_owner
        .into_iter()
        .map(|(who, paths)| match paths.as_slice() {
            [one] => format!("{who}: {one}"),
            many => format!(
                "{}s{}:\n{}",
                &who[..8],
                &who[8..],
                many.iter().map(|p| format!("- {p}")).collect::<Vec<_>>().join("\n")
            ),
        })
        .collect();
    let n = conflicts.len();
    format!(
        "Apply failed with {n} conflict{}: {}",
        if n == 1 { "" } else { "s" },
        parts.join("\n")
    )
}

/// Server-side apply of `applied` by `writer` over `live` (absent: a create): the merged
/// object and its entries, or the conflicts (ignored, and taken over, when `force`).
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    entries: Vec<Entry>,
    writer: &Writer<'_>,
    force: bool,
) -> Result<(Value, Vec<Entry>), Vec<Conflict>> {
    let schema = writer.schema;
    let applied_set = owned_part(fieldset::paths(applied, schema), writer.subresource);
    let empty = json!({});
    let live_value = live.unwrap_or(&empty);
    let mut conflicts = Vec::new();
    let mut merged = fieldset::merge(live, applied, schema);
    let by_version = writer.changes_by_version(&entries, live, &merged);
    for e in entries.iter().filter(|e| !writer.owns(e, APPLY)) {
        // A manager of another version conflicts where the apply changes its fields as its
        // version has them (structured-merge-diff's per-version comparison).
        let theirs = by_version
            .iter()
            .find(|(v, _)| *v == e.api_version)
            .and_then(|(_, c)| c.as_ref());
        if let Some((changed, _)) = theirs {
            conflicts.extend(changed.intersection(&e.fields).map(|path| Conflict {
                manager: e.manager.clone(),
                api_version: e.api_version.clone(),
                path: path.clone(),
            }));
            continue;
        }
        for path in applied_set.intersection(&e.fields) {
            let ours = fieldset::value_at(applied, schema, path);
            // Containers (maps, list items) conflict through their members only.
            if ours.is_some_and(Value::is_object) {
                continue;
            }
            if ours != fieldset::value_at(live_value, schema, path) {
                conflicts.push(Conflict {
                    manager: e.manager.clone(),
                    api_version: e.api_version.clone(),
                    path: path.clone(),
                });
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    let mut previous = FieldSet::new();
    let mut position = None;
    let mut out = Vec::new();
    for mut e in entries {
        if writer.owns(&e, APPLY) {
            previous = std::mem::take(&mut e.fields);
            position = Some(out.len());
            out.push(e);
            continue;
        }
        // Forced: the applier takes the conflicting fields over.
        e.fields
            .retain(|p| !conflicts.iter().any(|c| c.path == *p && c.manager == e.manager));
        out.push(e);
    }
    let owned_by_others: FieldSet = out.iter().flat_map(|e| e.fields.iter().cloned()).collect();
    let dropped: FieldSet = previous
        .difference(&applied_set)
        .filter(|p| !owned_by_others.contains(*p))
        .cloned()
        .collect();
    fieldset::remove(&mut merged, schema, &dropped);
    // The applier's entry keeps its place (a new one goes last), so order is stable.
    let mine = writer.entry(APPLY, applied_set);
    match position {
        Some(i) => out[i] = mine,
        None => out.push(mine),
    }
    out.retain(|e| !e.fields.is_empty());
    Ok((merged, out))
}

/// Put `entries` into `object`'s metadata (removing the key when there are none).
pub fn set(object: &mut Value, entries: &[Entry]) {
    set_encoded(object, encoded(entries));
}

/// `metadata.managedFields` as these encoded entries (none: removed).
fn set_encoded(object: &mut Value, entries: Vec<Value>) {
    if let Some(Value::Object(meta)) = object.get_mut("metadata") {
        if entries.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(entries));
        }
    } else if let Value::Object(map) = object {
        let mut meta = Map::new();
        if !entries.is_empty() {
            meta.insert("managedFields".into(), Value::Array(entries));
        }
        map.insert("metadata".into(), Value::Object(meta));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resource whose spec has a list-map of ports, an atomic list, a set, a map and a
    /// scalar; and status.
    fn schema() -> fieldset::Schema {
        let mut schema = fieldset::tests::schema();
        schema["properties"]["status"] = json!({"type": "object", "properties": {"ready": {"type": "integer"}}});
        fieldset::Schema::new(&schema)
    }

    pub(super) fn writer<'a>(manager: &'a str, subresource: &'a str, schema: &'a fieldset::Schema) -> Writer<'a> {
        Writer {
            manager,
            subresource,
            api_version: "g/v1".into(),
            schema,
            codec: None,
        }
    }

    fn owner(entries: &[Entry], manager: &str) -> Vec<String> {
        entries
            .iter()
            .filter(|e| e.manager == manager)
            .flat_map(|e| e.fields.iter().map(|p| fieldset::display(p)))
            .collect()
    }

    /// A create's entry built in one walk equals the entry the field-set route builds, for
    /// every list type, empty and schemaless parts, server-set metadata and each subresource.
    #[test]
    fn a_create_records_what_the_field_set_route_records() {
        let s = fieldset::Schema::new(&json!({"type": "object", "properties": {
            "apiVersion": {"type": "string"}, "kind": {"type": "string"},
            "metadata": {"$ref": "#/components/schemas/ObjectMeta"},
            "spec": {"type": "object", "properties": {
                "replicas": {"type": "integer"},
                "args": {"type": "array", "items": {"type": "string"}},
                "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
                "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name", "protocol"],
                    "items": {"type": "object", "properties": {"name": {"type": "string"}, "protocol": {"type": "string"},
                        "port": {"type": "integer"}, "extra": {"type": "object", "properties": {"a": {"type": "string"}}}}}},
                "settings": {"type": "object", "additionalProperties": {"type": "string"}},
                "template": {"type": "object", "properties": {"inner": {"type": "object", "properties": {"x": {"type": "integer"}}}}},
                "selector": {"type": "object", "x-kubernetes-map-type": "atomic", "properties": {"k": {"type": "string"}}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            }},
            "status": {"type": "object", "properties": {"ready": {"type": "integer"}}},
            "members": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
        }}));
        let objects = [
            json!({}),
            json!({"apiVersion": "g/v1", "kind": "K", "metadata": {"name": "a", "uid": "u", "generation": 1}}),
            json!({"apiVersion": "g/v1", "kind": "K", "metadata": {}, "spec": {}}),
            json!({"metadata": {"name": "a", "labels": {"app": "x"}, "annotations": {},
                    "finalizers": ["f1", "f2", "f1"], "ownerReferences": [{"uid": "1", "name": "o"}],
                    "managedFields": [{"manager": "m"}]},
                "spec": {"replicas": 1, "args": ["a", "b"], "tags": ["t", 1, {"o": true}, "t"],
                    "ports": [{"name": "http", "protocol": "TCP", "port": 80, "extra": {}},
                              {"name": "http", "protocol": "TCP", "extra": {"a": "b"}},
                              {"name": "dns", "protocol": "UDP"}, {"port": 9}, "not an object"],
                    "settings": {}, "template": {"inner": {}}, "selector": {"k": "v"},
                    "free": {"deep": {"er": [1, 2]}, "e": {}}, "unknown": {"z": 1}},
                "status": {"ready": 2}, "members": ["a"], "other": [1], "nothing": null}),
            json!({"metadata": {"name": "only-server-fields", "namespace": "n"}, "status": {}}),
        ];
        let keep_time = |mut v: Value| {
            if let Some(Value::Array(list)) = v.pointer_mut("/metadata/managedFields") {
                for e in list {
                    e["time"] = json!("t");
                }
            }
            v
        };
        for object in objects {
            for subresource in ["", "status", "scale"] {
                let w = writer("m", subresource, &s);
                let mut by_walk = object.clone();
                track_create(&mut by_walk, &w);
                let mut by_set = object.clone();
                let entries = track_update(Vec::new(), None, &object, &w);
                set(&mut by_set, &entries);
                assert_eq!(keep_time(by_walk), keep_time(by_set), "{object} at {subresource:?}");
            }
        }
    }

    #[test]
    fn two_managers_share_a_list_map() {
        let s = schema();
        let a = json!({"spec": {"ports": [{"name": "http", "port": 80}]}});
        let (live, entries) = apply(None, &a, vec![], &writer("alice", "", &s), false).unwrap();
        let b = json!({"spec": {"ports": [{"name": "metrics", "port": 9090}]}});
        let (live, entries) = apply(Some(&live), &b, entries, &writer("bob", "", &s), false).unwrap();
        assert_eq!(
            live["spec"]["ports"],
            json!([{"name": "http", "port": 80}, {"name": "metrics", "port": 9090}])
        );
        assert!(owner(&entries, "alice").contains(&r#".spec.ports[name="http"].port"#.to_string()));
        assert!(owner(&entries, "bob").contains(&r#".spec.ports[name="metrics"].port"#.to_string()));
        // Alice stops applying her port: it goes; Bob's stays.
        let (live, entries) = apply(
            Some(&live),
            &json!({"spec": {"replicas": 1}}),
            entries,
            &writer("alice", "", &s),
            false,
        )
        .unwrap();
        assert_eq!(live["spec"]["ports"], json!([{"name": "metrics", "port": 9090}]));
        assert_eq!(owner(&entries, "alice"), [".spec.replicas"]);
    }

    #[test]
    fn a_conflict_and_its_forced_resolution() {
        let s = schema();
        let (live, entries) = apply(
            None,
            &json!({"spec": {"replicas": 1}}),
            vec![],
            &writer("alice", "", &s),
            false,
        )
        .unwrap();
        // The same value is shared ownership, not a conflict.
        let (live, entries) = apply(
            Some(&live),
            &json!({"spec": {"replicas": 1}}),
            entries,
            &writer("bob", "", &s),
            false,
        )
        .unwrap();
        assert_eq!(owner(&entries, "alice"), owner(&entries, "bob"));
        let conflicts = apply(
            Some(&live),
            &json!({"spec": {"replicas": 5}}),
            entries.clone(),
            &writer("carol", "", &s),
            false,
        )
        .unwrap_err();
        assert_eq!(conflicts.len(), 2, "{conflicts:?}");
        assert_eq!(
            conflicts_message(&conflicts[..1]),
            "Apply failed with 1 conflict: conflict with \"alice\" using g/v1: .spec.replicas"
        );
        let (live, entries) = apply(
            Some(&live),
            &json!({"spec": {"replicas": 5}}),
            entries,
            &writer("carol", "", &s),
            true,
        )
        .unwrap();
        assert_eq!(live["spec"]["replicas"], 5);
        assert!(owner(&entries, "alice").is_empty() && owner(&entries, "bob").is_empty());
        assert_eq!(owner(&entries, "carol"), [".spec.replicas"]);
    }

    #[test]
    fn a_removed_field_stays_while_another_manager_owns_it() {
        let s = schema();
        let (live, entries) = apply(
            None,
            &json!({"spec": {"replicas": 1, "args": ["a"]}}),
            vec![],
            &writer("alice", "", &s),
            false,
        )
        .unwrap();
        let (live, entries) = apply(
            Some(&live),
            &json!({"spec": {"args": ["a"]}}),
            entries,
            &writer("bob", "", &s),
            false,
        )
        .unwrap();
        // Atomic list: Bob owns args as a whole, the same value as Alice's.
        let (live, _) = apply(
            Some(&live),
            &json!({"spec": {"replicas": 1}}),
            entries,
            &writer("alice", "", &s),
            false,
        )
        .unwrap();
        assert_eq!(live["spec"], json!({"replicas": 1, "args": ["a"]}));
    }

    #[test]
    fn updates_take_what_they_change_and_status_is_split() {
        let s = schema();
        let old = json!({"spec": {"replicas": 1}});
        let (live, entries) = apply(None, &old, vec![], &writer("alice", "", &s), false).unwrap();
        let new = json!({"spec": {"replicas": 3}, "status": {"ready": 2}});
        let entries = track_update(entries, Some(&live), &new, &writer("kubectl-edit", "", &s));
        assert!(owner(&entries, "alice").is_empty());
        assert_eq!(
            owner(&entries, "kubectl-edit"),
            [".spec.replicas"],
            "status is not the main resource's"
        );
        let entries = track_update(entries, Some(&live), &new, &writer("controller", "status", &s));
        let status: Vec<_> = entries.iter().filter(|e| e.subresource == "status").collect();
        assert_eq!(status.len(), 1);
        assert_eq!(owner(&entries, "controller"), [".status.ready"]);
        // Round trip through managedFields JSON.
        let mut object = new.clone();
        set(&mut object, &entries);
        assert_eq!(decode(&object).unwrap(), entries);
        assert_eq!(object["metadata"]["managedFields"][1]["subresource"], "status");
    }
}
