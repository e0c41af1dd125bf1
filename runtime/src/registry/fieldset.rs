//! Field sets as structured-merge-diff sees them: the paths an object sets, read through its
//! schema (structs, granular or atomic maps, atomic lists, sets, and list-maps keyed by
//! `x-kubernetes-list-map-keys`), their `FieldsV1` encoding (`f:`, `k:`, `v:` and `.`), and
//! the merge and removal that server-side apply is built on.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use serde_json::{Map, Value, json};

/// One step of a path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Element {
    /// A struct or map field: `f:name`.
    Field(String),
    /// A list-map item by its key fields (canonical JSON object): `k:{"name":"a"}`.
    Key(String),
    /// A set item (canonical JSON value): `v:"a"`.
    Value(String),
}

/// A path from the object's root.
pub type Path = Vec<Element>;

/// A set of paths.
pub type FieldSet = BTreeSet<Path>;

/// How a node's children are merged, from its schema.
#[derive(Clone, Debug, PartialEq)]
enum Shape {
    Struct,
    Map,
    ListMap(Vec<String>),
    ListSet,
    Atomic,
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
static UNKNOWN: LazyLock<Value> = LazyLock::new(|| json!({}));
/// The schema of anything inside a schemaless (preserve-unknown-fields) object.
static SCHEMALESS: LazyLock<Value> = LazyLock::new(|| json!({"x-kubernetes-preserve-unknown-fields": true}));

/// `schema`, or the metadata schema it refers to.
fn resolve(schema: &Value) -> &Value {
    if schema.get("$ref").is_some() {
        &METADATA
    } else {
        schema
    }
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
        None if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) => Shape::Map,
        _ => Shape::Atomic,
    }
}

/// The schema of `field` inside a struct or map.
fn child<'a>(schema: &'a Value, field: &str) -> &'a Value {
    Fields::of(schema).get(field)
}

/// Where the fields of one struct or map find their schemas: read once for all its fields.
struct Fields<'a> {
    schema: &'a Value,
    properties: Option<&'a Map<String, Value>>,
}

impl<'a> Fields<'a> {
    fn of(schema: &'a Value) -> Self {
        let schema = resolve(schema);
        let properties = schema.get("properties").and_then(Value::as_object);
        Fields { schema, properties }
    }

    fn get(&self, field: &str) -> &'a Value {
        if let Some(p) = self.properties.and_then(|p| p.get(field)) {
            return resolve(p);
        }
        match self.schema.get("additionalProperties") {
            Some(a) if a.is_object() => a,
            _ if self.schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) => &SCHEMALESS,
            _ => &UNKNOWN,
        }
    }
}

fn items(schema: &Value) -> &Value {
    schema.get("items").unwrap_or(&UNKNOWN)
}

/// The key of a list-map item: its key fields as canonical JSON.
fn key_of(item: &Value, keys: &[String]) -> String {
    let mut key = Map::new();
    for k in keys {
        if let Some(v) = item.get(k) {
            key.insert(k.clone(), v.clone());
        }
    }
    Value::Object(key).to_string()
}

/// The paths `value` sets: leaves, maps and list-map items (as SMD's ToFieldSet).
pub fn paths(value: &Value, schema: &Value) -> FieldSet {
    // Collected first: building the set from a (mostly sorted) list beats inserting one by one.
    let mut out = Vec::new();
    walk(value, schema, &mut Vec::new(), &mut out);
    out.into_iter().collect()
}

fn walk(value: &Value, schema: &Value, path: &mut Path, out: &mut Vec<Path>) {
    let schema = resolve(schema);
    match (shape(schema), value) {
        (shape @ (Shape::Struct | Shape::Map), Value::Object(map)) => {
            if !path.is_empty() && (shape == Shape::Map || map.is_empty()) {
                out.push(path.clone());
            }
            let fields = Fields::of(schema);
            for (k, v) in map {
                path.push(Element::Field(k.clone()));
                walk(v, fields.get(k), path, out);
                path.pop();
            }
        }
        (Shape::ListMap(keys), Value::Array(list)) => {
            let item_schema = items(schema);
            for item in list {
                path.push(Element::Key(key_of(item, &keys)));
                out.push(path.clone());
                if let Value::Object(map) = item {
                    let fields = Fields::of(item_schema);
                    for (k, v) in map {
                        path.push(Element::Field(k.clone()));
                        walk(v, fields.get(k), path, out);
                        path.pop();
                    }
                }
                path.pop();
            }
        }
        (Shape::ListSet, Value::Array(list)) => {
            for item in list {
                path.push(Element::Value(item.to_string()));
                out.push(path.clone());
                path.pop();
            }
        }
        _ => {
            if !path.is_empty() {
                out.push(path.clone());
            }
        }
    }
}

/// The value at `path` in `value`, if any.
pub fn value_at<'a>(value: &'a Value, schema: &Value, path: &[Element]) -> Option<&'a Value> {
    let Some((first, rest)) = path.split_first() else {
        return Some(value);
    };
    let schema = resolve(schema);
    match (first, value) {
        (Element::Field(f), Value::Object(map)) => value_at(map.get(f)?, child(schema, f), rest),
        (Element::Key(k), Value::Array(list)) => {
            let Shape::ListMap(keys) = shape(schema) else {
                return None;
            };
            let item = list.iter().find(|i| key_of(i, &keys) == *k)?;
            value_at(item, items(schema), rest)
        }
        (Element::Value(v), Value::Array(list)) => list.iter().find(|i| i.to_string() == *v),
        _ => None,
    }
}

/// `applied` merged into `live`: structs and granular maps field by field, list-maps item by
/// key, sets by union; everything else is replaced.
pub fn merge(live: Option<&Value>, applied: &Value, schema: &Value) -> Value {
    let schema = resolve(schema);
    match (shape(schema), live, applied) {
        (Shape::Struct | Shape::Map, Some(Value::Object(live)), Value::Object(applied)) => {
            let mut out = live.clone();
            for (k, v) in applied {
                let merged = merge(live.get(k), v, child(schema, k));
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Shape::ListMap(keys), Some(Value::Array(live)), Value::Array(applied)) => {
            let item_schema = items(schema);
            let mut out = live.clone();
            for item in applied {
                let key = key_of(item, &keys);
                match out.iter_mut().find(|i| key_of(i, &keys) == key) {
                    Some(existing) => *existing = merge(Some(existing), item, item_schema),
                    None => out.push(item.clone()),
                }
            }
            Value::Array(out)
        }
        (Shape::ListSet, Some(Value::Array(live)), Value::Array(applied)) => {
            let mut out = live.clone();
            out.extend(applied.iter().filter(|i| !live.contains(i)).cloned());
            Value::Array(out)
        }
        _ => applied.clone(),
    }
}

/// Remove the fields at `paths` from `value` (an item before its fields, which identify it);
/// containers a removal empties are removed too.
pub fn remove(value: &mut Value, schema: &Value, paths: &FieldSet) {
    for path in paths {
        remove_one(value, schema, path);
    }
}

fn remove_one(value: &mut Value, schema: &Value, path: &[Element]) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let schema = resolve(schema);
    match (first, value) {
        (Element::Field(f), Value::Object(map)) => {
            if rest.is_empty() {
                return map.remove(f).is_some();
            }
            let Some(inner) = map.get_mut(f) else { return false };
            let removed = remove_one(inner, child(schema, f), rest);
            if removed && is_empty(inner) {
                map.remove(f);
            }
            removed
        }
        (Element::Key(k), Value::Array(list)) => {
            let Shape::ListMap(keys) = shape(schema) else {
                return false;
            };
            let Some(at) = list.iter().position(|i| key_of(i, &keys) == *k) else {
                return false;
            };
            if rest.is_empty() {
                list.remove(at);
                return true;
            }
            remove_one(&mut list[at], items(schema), rest)
        }
        (Element::Value(v), Value::Array(list)) => {
            let before = list.len();
            list.retain(|i| i.to_string().as_str() != v.as_str());
            list.len() != before
        }
        _ => false,
    }
}

fn is_empty(value: &Value) -> bool {
    matches!(value, Value::Object(m) if m.is_empty()) || matches!(value, Value::Array(a) if a.is_empty())
}

/// The paths of `new` whose values differ from `old`'s (what an update changed).
pub fn changed(old: &Value, new: &Value, schema: &Value) -> FieldSet {
    paths(new, schema)
        .into_iter()
        .filter(|p| {
            let (a, b) = (value_at(old, schema, p), value_at(new, schema, p));
            // A map or list-map item changes only by appearing; its members speak for it.
            if b.is_some_and(Value::is_object) {
                a.is_none()
            } else {
                a != b
            }
        })
        .collect()
}

/// `FieldsV1` of the paths `value` sets, as `to_fields_v1(&paths(value, schema))` but in one
/// walk without building the set, keeping a path only when `keep` accepts its first field and
/// its second element (when that is a field).
pub fn fields_v1_of(value: &Value, schema: &Value, keep: impl Fn(&str, Option<&str>) -> bool) -> Value {
    let mut out = Map::new();
    let schema = resolve(schema);
    let (Shape::Struct | Shape::Map, Value::Object(map)) = (shape(schema), value) else {
        return Value::Object(out);
    };
    let fields = Fields::of(schema);
    for (k, v) in map {
        let Some(mut node) = fields_node(v, fields.get(k)) else {
            continue;
        };
        // The node itself: a leaf member `{}`, or `.` among its members.
        let member = node.is_empty() || node.contains_key(".");
        node.retain(|key, _| match key.strip_prefix("f:") {
            Some(second) => keep(k, Some(second)),
            None => key == "." || keep(k, None),
        });
        let member = member && keep(k, None);
        node.remove(".");
        if member && !node.is_empty() {
            node.insert(".".into(), Value::Object(Map::new()));
        }
        if member || !node.is_empty() {
            out.insert(prefixed("f:", k), Value::Object(node));
        }
    }
    Value::Object(out)
}

/// The `FieldsV1` node of `value` below the root; `None` when it sets nothing.
fn fields_node(value: &Value, schema: &Value) -> Option<Map<String, Value>> {
    let schema = resolve(schema);
    let mut members = Map::new();
    let member = match (shape(schema), value) {
        (shape @ (Shape::Struct | Shape::Map), Value::Object(map)) => {
            let fields = Fields::of(schema);
            for (k, v) in map {
                if let Some(node) = fields_node(v, fields.get(k)) {
                    members.insert(prefixed("f:", k), Value::Object(node));
                }
            }
            shape == Shape::Map || map.is_empty()
        }
        (Shape::ListMap(keys), Value::Array(list)) => {
            let fields = Fields::of(items(schema));
            for item in list {
                let mut node = Map::new();
                if let Value::Object(map) = item {
                    for (k, v) in map {
                        if let Some(inner) = fields_node(v, fields.get(k)) {
                            node.insert(prefixed("f:", k), Value::Object(inner));
                        }
                    }
                }
                // Items with the same key are one path: their members join.
                match members.entry(prefixed("k:", &key_of(item, &keys))) {
                    serde_json::map::Entry::Vacant(e) => {
                        e.insert(Value::Object(node));
                    }
                    serde_json::map::Entry::Occupied(mut e) => {
                        if let Value::Object(have) = e.get_mut() {
                            union(have, node);
                        }
                    }
                }
            }
            for item in members.values_mut() {
                if let Value::Object(node) = item
                    && !node.is_empty()
                {
                    node.insert(".".into(), Value::Object(Map::new()));
                }
            }
            false
        }
        (Shape::ListSet, Value::Array(list)) => {
            for item in list {
                members.insert(format!("v:{item}"), Value::Object(Map::new()));
            }
            false
        }
        _ => true,
    };
    if member && !members.is_empty() {
        members.insert(".".into(), Value::Object(Map::new()));
    }
    (member || !members.is_empty()).then_some(members)
}

/// `into` with the members of `other` too (a node is a member if it is one in either).
fn union(into: &mut Map<String, Value>, other: Map<String, Value>) {
    let member = |m: &Map<String, Value>| m.is_empty() || m.contains_key(".");
    let was = member(into) || member(&other);
    for (k, v) in other {
        match (into.get_mut(&k), v) {
            (Some(Value::Object(have)), Value::Object(more)) => union(have, more),
            (None, v) => {
                into.insert(k, v);
            }
            _ => {}
        }
    }
    into.remove(".");
    if was && !into.is_empty() {
        into.insert(".".into(), Value::Object(Map::new()));
    }
}

/// A `FieldsV1` member's name: `kind` (`f:`, `k:` or `v:`) and its text (no `format!`: this
/// runs for every field of every write).
fn prefixed(kind: &str, text: &str) -> String {
    let mut key = String::with_capacity(kind.len() + text.len());
    key.push_str(kind);
    key.push_str(text);
    key
}

/// `FieldsV1` JSON for a set: a trie of `f:`/`k:`/`v:` members, `.` marking a node that is
/// itself in the set and has members.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    // In the set's order a path comes right before the paths under it, so each trie node is
    // one run of paths sharing an element, and the run's first path is the node itself if
    // the set holds it.
    fn node(paths: &[&Path], depth: usize) -> Map<String, Value> {
        let mut out = Map::new();
        let mut rest = paths;
        while let Some((first, _)) = rest.split_first() {
            let element = &first[depth];
            let run = rest.iter().take_while(|p| &p[depth] == element).count();
            let (group, tail) = rest.split_at(run);
            let (is_member, deeper) = match group.split_first() {
                Some((p, deeper)) if p.len() == depth + 1 => (true, deeper),
                _ => (false, group),
            };
            let mut inner = node(deeper, depth + 1);
            if is_member && !inner.is_empty() {
                inner.insert(".".into(), Value::Object(Map::new()));
            }
            out.insert(key(element), Value::Object(inner));
            rest = tail;
        }
        out
    }
    fn key(element: &Element) -> String {
        match element {
            Element::Field(f) => prefixed("f:", f),
            Element::Key(k) => prefixed("k:", k),
            Element::Value(v) => prefixed("v:", v),
        }
    }
    // The empty path (the object itself) has no place in the trie.
    let paths: Vec<&Path> = set.iter().filter(|p| !p.is_empty()).collect();
    Value::Object(node(&paths, 0))
}

fn parse_key(key: &str) -> Option<Element> {
    let (kind, rest) = key.split_at_checked(2)?;
    Some(match kind {
        "f:" => Element::Field(rest.into()),
        "k:" => Element::Key(serde_json::from_str::<Value>(rest).ok()?.to_string()),
        "v:" => Element::Value(serde_json::from_str::<Value>(rest).ok()?.to_string()),
        _ => return None,
    })
}

/// Decode `FieldsV1`; `None` when it is not well-formed.
pub fn from_fields_v1(fields: &Value) -> Option<FieldSet> {
    fn read(node: &Map<String, Value>, path: &mut Path, out: &mut FieldSet) -> Option<()> {
        for (key, child) in node {
            if key == "." {
                out.insert(path.clone());
                continue;
            }
            path.push(parse_key(key)?);
            let inner = child.as_object()?;
            if inner.is_empty() {
                out.insert(path.clone());
            } else {
                read(inner, path, out)?;
            }
            path.pop();
        }
        Some(())
    }
    let mut out = FieldSet::new();
    read(fields.as_object()?, &mut Vec::new(), &mut out)?;
    Some(out)
}

/// A path as kube-apiserver prints it in conflicts: `.spec.ports[name="http"].port`.
pub fn display(path: &[Element]) -> String {
    let mut out = String::new();
    for element in path {
        match element {
            Element::Field(f) => {
                out.push('.');
                out.push_str(f);
            }
            Element::Key(k) => {
                let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
                let parts: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
                out.push_str(&format!("[{}]", parts.join(",")));
            }
            Element::Value(v) => out.push_str(&format!("[={v}]")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deployment-like schema: a struct spec with an atomic list, a set and a list-map.
    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "metadata": {"$ref": "#/components/schemas/ObjectMeta"},
            "spec": {"type": "object", "properties": {
                "replicas": {"type": "integer"},
                "args": {"type": "array", "items": {"type": "string"}},
                "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
                "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                    "items": {"type": "object", "properties": {"name": {"type": "string"}, "port": {"type": "integer"}}}},
                "settings": {"type": "object", "additionalProperties": {"type": "string"}},
            }},
        }})
    }

    fn f(name: &str) -> Element {
        Element::Field(name.into())
    }

    #[test]
    fn paths_follow_the_schema() {
        let object = json!({"metadata": {"labels": {"app": "a"}}, "spec": {
            "replicas": 2, "args": ["x", "y"], "tags": ["t"], "ports": [{"name": "http", "port": 80}], "settings": {"k": "v"}}});
        let set = paths(&object, &schema());
        let http = Element::Key(r#"{"name":"http"}"#.into());
        let expected: FieldSet = [
            vec![f("metadata"), f("labels")],
            vec![f("metadata"), f("labels"), f("app")],
            vec![f("spec"), f("replicas")],
            vec![f("spec"), f("args")],
            vec![f("spec"), f("tags"), Element::Value("\"t\"".into())],
            vec![f("spec"), f("ports"), http.clone()],
            vec![f("spec"), f("ports"), http.clone(), f("name")],
            vec![f("spec"), f("ports"), http, f("port")],
            vec![f("spec"), f("settings")],
            vec![f("spec"), f("settings"), f("k")],
        ]
        .into_iter()
        .collect();
        assert_eq!(set, expected);
        // FieldsV1 as kube-apiserver writes it, and back.
        let v1 = to_fields_v1(&set);
        assert_eq!(
            v1,
            json!({"f:metadata": {"f:labels": {".": {}, "f:app": {}}}, "f:spec": {
                "f:args": {}, "f:ports": {"k:{\"name\":\"http\"}": {".": {}, "f:name": {}, "f:port": {}}},
                "f:replicas": {}, "f:settings": {".": {}, "f:k": {}}, "f:tags": {"v:\"t\"": {}}}})
        );
        assert_eq!(from_fields_v1(&v1), Some(set));
        assert_eq!(from_fields_v1(&json!({"x:bad": {}})), None);
    }

    #[test]
    fn merge_by_list_type() {
        let live = json!({"spec": {"replicas": 1, "args": ["a"], "tags": ["t1"],
            "ports": [{"name": "http", "port": 80}, {"name": "metrics", "port": 9090}]}});
        let applied = json!({"spec": {"args": ["b"], "tags": ["t2"], "ports": [{"name": "http", "port": 8080}]}});
        let merged = merge(Some(&live), &applied, &schema());
        assert_eq!(
            merged,
            json!({"spec": {"replicas": 1, "args": ["b"], "tags": ["t1", "t2"],
                "ports": [{"name": "http", "port": 8080}, {"name": "metrics", "port": 9090}]}})
        );
    }

    #[test]
    fn removal_prunes_what_it_empties() {
        let mut object = json!({"spec": {"replicas": 1, "settings": {"k": "v"},
            "ports": [{"name": "http", "port": 80}]}});
        let http = Element::Key(r#"{"name":"http"}"#.into());
        let gone: FieldSet = [
            vec![f("spec"), f("settings"), f("k")],
            vec![f("spec"), f("ports"), http.clone()],
            vec![f("spec"), f("ports"), http.clone(), f("port")],
            vec![f("spec"), f("ports"), http, f("name")],
        ]
        .into_iter()
        .collect();
        remove(&mut object, &schema(), &gone);
        assert_eq!(object, json!({"spec": {"replicas": 1}}));
    }

    #[test]
    fn changes_and_display() {
        let old = json!({"spec": {"replicas": 1, "ports": [{"name": "http", "port": 80}]}});
        let new = json!({"spec": {"replicas": 2, "ports": [{"name": "http", "port": 80}]}});
        let diff = changed(&old, &new, &schema());
        assert_eq!(diff, [vec![f("spec"), f("replicas")]].into_iter().collect());
        let path = vec![
            f("spec"),
            f("ports"),
            Element::Key(r#"{"name":"http"}"#.into()),
            f("port"),
        ];
        assert_eq!(display(&path), r#".spec.ports[name="http"].port"#);
    }
}
