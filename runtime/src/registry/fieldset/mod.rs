//! Field sets as structured-merge-diff sees them: the paths an object sets, read through its
//! schema (structs, granular or atomic maps, atomic lists, sets, and list-maps keyed by
//! `x-kubernetes-list-map-keys`), their `FieldsV1` encoding (`f:`, `k:`, `v:` and `.`), and
//! the merge and removal that server-side apply is built on.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

mod fields_v1;
mod schema;
pub use fields_v1::{fields_v1_of, from_fields_v1, to_fields_v1};
pub use schema::Schema;
use schema::Shape;

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
pub fn paths(value: &Value, schema: &Schema) -> FieldSet {
    /// Collected first: building the set from a (mostly sorted) list beats inserting one by one.
    struct Collect {
        path: Path,
        out: Vec<Path>,
    }
    impl Visit for Collect {
        fn enter(&mut self, element: Element) {
            self.path.push(element);
        }
        fn member(&mut self) {
            self.out.push(self.path.clone());
        }
        fn leave(&mut self) {
            self.path.pop();
        }
    }
    let mut collect = Collect {
        path: Vec::new(),
        out: Vec::new(),
    };
    walk(value, schema, true, &mut collect);
    collect.out.into_iter().collect()
}

/// What a walk of an object through its schema reports, depth first.
trait Visit {
    /// One step down.
    fn enter(&mut self, element: Element);
    /// The path walked so far is itself in the set.
    fn member(&mut self);
    /// One step back up.
    fn leave(&mut self);
}

/// Walk the paths `value` sets (the one place that reads structs, maps, list-maps and sets
/// from the schema for a field set).
fn walk(value: &Value, schema: &Schema, root: bool, visit: &mut impl Visit) {
    match (&schema.shape, value) {
        (shape @ (Shape::Struct | Shape::Map), Value::Object(map)) => {
            if !root && (*shape == Shape::Map || map.is_empty()) {
                visit.member();
            }
            walk_fields(map, schema, visit);
        }
        (Shape::ListMap(keys), Value::Array(list)) => {
            let items = schema.items();
            for item in list {
                visit.enter(Element::Key(key_of(item, keys)));
                visit.member();
                if let Value::Object(map) = item {
                    walk_fields(map, items, visit);
                }
                visit.leave();
            }
        }
        (Shape::ListSet, Value::Array(list)) => {
            for item in list {
                visit.enter(Element::Value(item.to_string()));
                visit.member();
                visit.leave();
            }
        }
        _ => {
            if !root {
                visit.member();
            }
        }
    }
}

/// Walk each field of a struct, map or list-map item.
fn walk_fields(map: &Map<String, Value>, schema: &Schema, visit: &mut impl Visit) {
    for (k, v) in map {
        visit.enter(Element::Field(k.clone()));
        walk(v, schema.field(k), false, visit);
        visit.leave();
    }
}

/// The value at `path` in `value`, if any.
pub fn value_at<'a>(value: &'a Value, schema: &Schema, path: &[Element]) -> Option<&'a Value> {
    let Some((first, rest)) = path.split_first() else {
        return Some(value);
    };
    match (first, value) {
        (Element::Field(f), Value::Object(map)) => value_at(map.get(f)?, schema.field(f), rest),
        (Element::Key(k), Value::Array(list)) => {
            let Shape::ListMap(keys) = &schema.shape else {
                return None;
            };
            let item = list.iter().find(|i| key_of(i, keys) == *k)?;
            value_at(item, schema.items(), rest)
        }
        (Element::Value(v), Value::Array(list)) => list.iter().find(|i| i.to_string() == *v),
        _ => None,
    }
}

/// `applied` merged into `live`: structs and granular maps field by field, list-maps item by
/// key, sets by union; everything else is replaced.
pub fn merge(live: Option<&Value>, applied: &Value, schema: &Schema) -> Value {
    match (&schema.shape, live, applied) {
        (Shape::Struct | Shape::Map, Some(Value::Object(live)), Value::Object(applied)) => {
            let mut out = live.clone();
            for (k, v) in applied {
                let merged = merge(live.get(k), v, schema.field(k));
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Shape::ListMap(keys), Some(Value::Array(live)), Value::Array(applied)) => {
            let item_schema = schema.items();
            let mut out = live.clone();
            for item in applied {
                let key = key_of(item, keys);
                match out.iter_mut().find(|i| key_of(i, keys) == key) {
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
pub fn remove(value: &mut Value, schema: &Schema, paths: &FieldSet) {
    for path in paths {
        remove_one(value, schema, path);
    }
}

fn remove_one(value: &mut Value, schema: &Schema, path: &[Element]) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    match (first, value) {
        (Element::Field(f), Value::Object(map)) => {
            if rest.is_empty() {
                return map.remove(f).is_some();
            }
            let Some(inner) = map.get_mut(f) else { return false };
            let removed = remove_one(inner, schema.field(f), rest);
            if removed && is_empty(inner) {
                map.remove(f);
            }
            removed
        }
        (Element::Key(k), Value::Array(list)) => {
            let Shape::ListMap(keys) = &schema.shape else {
                return false;
            };
            let Some(at) = list.iter().position(|i| key_of(i, keys) == *k) else {
                return false;
            };
            if rest.is_empty() {
                list.remove(at);
                return true;
            }
            remove_one(&mut list[at], schema.items(), rest)
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
pub fn changed(old: &Value, new: &Value, schema: &Schema) -> FieldSet {
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
pub(super) mod tests {
    use super::*;
    use serde_json::json;

    /// A deployment-like schema: a struct spec with an atomic list, a set and a list-map.
    pub(in crate::registry) fn schema() -> Value {
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
        let set = paths(&object, &Schema::new(&schema()));
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
        let merged = merge(Some(&live), &applied, &Schema::new(&schema()));
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
        remove(&mut object, &Schema::new(&schema()), &gone);
        assert_eq!(object, json!({"spec": {"replicas": 1}}));
    }

    #[test]
    fn changes_and_display() {
        let old = json!({"spec": {"replicas": 1, "ports": [{"name": "http", "port": 80}]}});
        let new = json!({"spec": {"replicas": 2, "ports": [{"name": "http", "port": 80}]}});
        let diff = changed(&old, &new, &Schema::new(&schema()));
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
