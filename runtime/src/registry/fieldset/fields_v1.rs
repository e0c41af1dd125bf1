//! `FieldsV1`, the encoding of field sets in `managedFields`: a trie of `f:` (field), `k:`
//! (list-map key) and `v:` (set value) members, `.` marking a node that is itself in the set
//! and has members.

use serde_json::{Map, Value};

use super::{Element, FieldSet, Path, Schema, Visit, walk};

/// `FieldsV1` of the paths `value` sets, as `to_fields_v1(&paths(value, schema))` but in one
/// walk without building the set, keeping a path only when `keep` accepts its first field and
/// its second element (when that is a field).
pub fn fields_v1_of(value: &Value, schema: &Schema, keep: impl Fn(&str, Option<&str>) -> bool) -> Value {
    /// A trie node being built: its member name, members so far, and whether it is in the set.
    struct Node {
        name: String,
        members: Map<String, Value>,
        member: bool,
        kept: bool,
    }
    struct Build<K> {
        stack: Vec<Node>,
        first: String,
        keep: K,
    }
    impl<K: Fn(&str, Option<&str>) -> bool> Visit for Build<K> {
        fn enter(&mut self, element: Element) {
            // Whether paths through here are kept is settled by the first two elements.
            let kept = match (self.stack.len(), &element) {
                (1, Element::Field(f)) => {
                    self.first.clone_from(f);
                    true
                }
                (2, Element::Field(f)) => (self.keep)(&self.first, Some(f)),
                (2, _) => (self.keep)(&self.first, None),
                _ => self.stack.last().is_some_and(|n| n.kept),
            };
            self.stack.push(Node {
                name: key(&element),
                members: Map::new(),
                member: false,
                kept,
            });
        }
        fn member(&mut self) {
            let top = self.stack.len();
            let keep = top != 2 || (self.keep)(&self.first, None);
            if let Some(node) = self.stack.last_mut() {
                node.member |= node.kept && keep;
            }
        }
        fn leave(&mut self) {
            let Some(mut node) = self.stack.pop() else { return };
            if node.member && !node.members.is_empty() {
                node.members.insert(".".into(), Value::Object(Map::new()));
            }
            let Some(parent) = self.stack.last_mut() else { return };
            if !node.member && node.members.is_empty() {
                return;
            }
            // Items with the same key or value are one path: their members join.
            match parent.members.entry(node.name) {
                serde_json::map::Entry::Vacant(e) => {
                    e.insert(Value::Object(node.members));
                }
                serde_json::map::Entry::Occupied(mut e) => {
                    if let Value::Object(have) = e.get_mut() {
                        union(have, node.members);
                    }
                }
            }
        }
    }
    let root = Node {
        name: String::new(),
        members: Map::new(),
        member: false,
        kept: true,
    };
    let mut build = Build {
        stack: vec![root],
        first: String::new(),
        keep,
    };
    walk(value, schema, true, &mut build);
    Value::Object(build.stack.pop().map(|n| n.members).unwrap_or_default())
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

/// An element's `FieldsV1` member name.
fn key(element: &Element) -> String {
    match element {
        Element::Field(f) => prefixed("f:", f),
        Element::Key(k) => prefixed("k:", k),
        Element::Value(v) => prefixed("v:", v),
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
