//! CEL validation rules (`x-kubernetes-validations`) as CRDs carry them: compiled once when
//! the resource is served (a rule that does not compile, or whose estimated cost passes
//! Kubernetes' per-rule budget, is a start-up error naming the type and field), then run on
//! every write with `self` at the rule's node and `oldSelf` where the old value correlates
//! (properties, map values, list-map items by key, set items by value; transition rules run
//! only where it does, or with `optionalOldSelf`). Every write's rules share one cost budget
//! ([`crate::cel::Budget`]); a rule cut off ends the validation with kube-apiserver's words.
//!
//! Rules are declared with schemars, at a field or a type:
//! `#[schemars(extend("x-kubernetes-validations" = [{"rule": "self <= 10", "message": "at most 10"}]))]`.

use std::collections::HashMap;

use kube_cel::{CompiledSchema, compile_schema, estimate_rule_cost};
use serde_json::Value;

use crate::cel::{self, Budget, Failure, Format, Program, Shape};
use crate::resource::{FieldError, ResourceMeta};

/// A resource's compiled rules.
pub struct Rules {
    root: Node,
    /// `apiVersion`, `apiGroup` and `kind`, bound at the root as kube-cel binds them.
    identity: [(&'static str, cel::Value); 3],
}

/// One rule, compiled.
struct Rule {
    program: Program,
    message: Option<String>,
    message_program: Option<Program>,
    field_path: Option<String>,
    reason: Option<String>,
    transition: bool,
    optional_old_self: bool,
}

/// How a list's items correlate with the old list's.
enum ListType {
    Atomic,
    Set,
    Map(Vec<String>),
}

/// One node of the structural schema, as the rules and the CEL conversion need it.
struct Node {
    rules: Vec<Rule>,
    properties: HashMap<String, Node>,
    items: Option<Box<Node>>,
    values: Option<Box<Node>>,
    list: ListType,
    format: Format,
    /// Whether a rule sits here or below: the walk skips subtrees without.
    ruled: bool,
}

impl Shape for Node {
    fn property(&self, name: &str) -> Option<&Node> {
        self.properties.get(name).or(self.values.as_deref())
    }
    fn items(&self) -> Option<&Node> {
        self.items.as_deref()
    }
    fn format(&self) -> Format {
        self.format
    }
    fn is_map(&self) -> bool {
        self.values.is_some()
    }
}

/// Why the walk stopped early: a rule was cut off, or the budget ran out.
struct Stopped;

impl Rules {
    /// Compile the rules of `schema` (a resource's structural schema); None when it has none.
    pub fn new(meta: &ResourceMeta, schema: &Value) -> Result<Option<Rules>, String> {
        let mut problems = Vec::new();
        let root = node(schema, "", &mut problems);
        if !root.ruled && problems.is_empty() {
            return Ok(None);
        }
        refused(&compile_schema(schema), "", &mut problems);
        if let Some(first) = problems.first() {
            return Err(format!("{}: {first}", meta.kind));
        }
        let text = |s: String| cel::Value::String(std::sync::Arc::new(s));
        let identity = [
            ("apiVersion", text(meta.api_version())),
            ("apiGroup", text(meta.group.to_string())),
            ("kind", text(meta.kind.to_string())),
        ];
        Ok(Some(Rules { root, identity }))
    }

    /// The rules `object` breaks (`old`: the stored object of an update), as 422 field errors.
    pub fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let mut run = Run {
            rules: self,
            budget: Budget::default(),
            errors: Vec::new(),
        };
        let _ = run.walk(&self.root, object, old, "");
        run.errors
    }
}

/// One write's validation: its budget and the errors so far.
struct Run<'a> {
    rules: &'a Rules,
    budget: Budget,
    errors: Vec<FieldError>,
}

impl Run<'_> {
    fn walk(&mut self, node: &Node, value: &Value, old: Option<&Value>, path: &str) -> Result<(), Stopped> {
        if !node.ruled {
            return Ok(());
        }
        if !node.rules.is_empty() {
            self.check(node, value, old, path)?;
        }
        let join = |name: &str| {
            if path.is_empty() {
                name.to_string()
            } else {
                format!("{path}.{name}")
            }
        };
        match value {
            Value::Object(fields) => {
                for (name, child) in fields {
                    // Skipped before its path is formatted: most fields carry no rules.
                    let Some(schema) = node.property(name).filter(|s| s.ruled) else {
                        continue;
                    };
                    let old_child = old.and_then(|o| o.get(name));
                    self.walk(schema, child, old_child, &join(name))?;
                }
            }
            Value::Array(items) => {
                let Some(schema) = node.items().filter(|s| s.ruled) else {
                    return Ok(());
                };
                let old_items = old.and_then(Value::as_array);
                for (i, item) in items.iter().enumerate() {
                    let old_item = old_items.and_then(|olds| correlate(&node.list, item, olds));
                    self.walk(schema, item, old_item, &format!("{path}[{i}]"))?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Run the rules at `node` on `value`.
    fn check(&mut self, node: &Node, value: &Value, old: Option<&Value>, path: &str) -> Result<(), Stopped> {
        let (budget, errors) = (&self.budget, &mut self.errors);
        let root = path.is_empty();
        let this = as_seen(cel::to_cel_shaped(value, Some(node)), root);
        let before = old.map(|o| as_seen(cel::to_cel_shaped(o, Some(node)), root));
        let null = cel::Value::Null;
        let mut bindings: Vec<(&str, &cel::Value)> = vec![("self", &this)];
        if root {
            bindings.extend(self.rules.identity.iter().map(|(name, v)| (*name, v)));
        }
        // kube-apiserver puts the node's type where the value would be.
        let type_name = super::validation::json_type(value);
        for rule in &node.rules {
            let mut bindings = bindings.clone();
            match (&before, rule.transition) {
                (Some(before), _) => bindings.push(("oldSelf", before)),
                (None, true) if rule.optional_old_self => bindings.push(("oldSelf", &null)),
                (None, true) => continue,
                (None, false) => {}
            }
            let at = match &rule.field_path {
                Some(relative) => format!("{path}{relative}").trim_start_matches('.').to_string(),
                None => path.to_string(),
            };
            let message = match cel::run_bool(&rule.program, &bindings, budget) {
                Ok(true) => continue,
                Ok(false) => rule
                    .message_program
                    .as_ref()
                    .and_then(|p| cel::run(p, &bindings, budget).ok())
                    .as_ref()
                    .and_then(cel::string)
                    .filter(|m| !m.trim().is_empty())
                    .or_else(|| rule.message.clone())
                    .unwrap_or_else(|| format!("failed rule: {}", rule.program.source())),
                Err(Failure::Error(e)) => {
                    errors.push(FieldError::invalid(
                        path,
                        &type_name,
                        format!("{e} evaluating rule: {}", rule.program.source()),
                    ));
                    continue;
                }
                // kube-apiserver's words, and as there, no further rule runs.
                Err(cut @ Failure::CallLimit) => {
                    errors.push(FieldError::invalid(
                        path,
                        &type_name,
                        format!(
                            "'{cut}': no further validation rules will be run due to call cost exceeds limit for rule: {}",
                            rule.program.source()
                        ),
                    ));
                    return Err(Stopped);
                }
                Err(out @ Failure::OutOfBudget) => {
                    errors.push(FieldError::invalid(path, &type_name, out));
                    return Err(Stopped);
                }
            };
            errors.push(match rule.reason.as_deref() {
                Some("FieldValueForbidden") => FieldError::forbidden(at, message),
                Some("FieldValueRequired") => FieldError::required(at, message),
                // As kube-apiserver: the rule's message stands where the duplicate value would.
                Some("FieldValueDuplicate") => FieldError::duplicate(at, &message),
                _ => FieldError::invalid(at, &type_name, message),
            });
        }
        Ok(())
    }
}

/// The object as a rule at the type sees it: kube-apiserver gives the resource's root rules
/// only `metadata.name` and `metadata.generateName` (the rest of the metadata is the API
/// server's to judge, and may change without the object changing).
fn as_seen(value: cel::Value, root: bool) -> cel::Value {
    use kube_cel::cel::objects::Key;
    if !root {
        return value;
    }
    let cel::Value::Map(mut object) = value else {
        return value;
    };
    let fields = std::sync::Arc::make_mut(&mut object.map);
    let metadata = Key::String(std::sync::Arc::new("metadata".to_string()));
    if let Some(cel::Value::Map(meta)) = fields.get(&metadata) {
        let kept: HashMap<Key, cel::Value> = ["name", "generateName"]
            .into_iter()
            .filter_map(|name| {
                let key = Key::String(std::sync::Arc::new(name.to_string()));
                meta.map.get(&key).map(|v| (key, v.clone()))
            })
            .collect();
        fields.insert(
            metadata,
            cel::Value::Map(kube_cel::cel::objects::Map {
                map: std::sync::Arc::new(kept),
            }),
        );
    }
    cel::Value::Map(object)
}

/// The old list's item that `item` is the new version of, where the list's type says.
fn correlate<'a>(list: &ListType, item: &Value, olds: &'a [Value]) -> Option<&'a Value> {
    match list {
        ListType::Atomic => None,
        ListType::Set => olds.iter().find(|old| *old == item),
        ListType::Map(keys) => olds.iter().find(|old| keys.iter().all(|k| old.get(k) == item.get(k))),
    }
}

/// Build the node for `schema` at `path`, compiling its rules; problems go to `problems`.
fn node(schema: &Value, path: &str, problems: &mut Vec<String>) -> Node {
    let at = if path.is_empty() { "the type" } else { path };
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
    let mut rules = Vec::new();
    for rule in schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let source = text(rule, "rule").unwrap_or_default();
        let compiled = Program::compile(&source).map_err(|e| format!("rule \"{source}\": {e}"));
        let message_program = text(rule, "messageExpression")
            .map(|m| Program::compile(&m).map_err(|e| format!("messageExpression \"{m}\": {e}")))
            .transpose();
        match (compiled, message_program) {
            (Ok(program), Ok(message_program)) => rules.push(Rule {
                transition: program.reads("oldSelf"),
                program,
                message: text(rule, "message"),
                message_program,
                field_path: text(rule, "fieldPath"),
                reason: text(rule, "reason"),
                optional_old_self: rule.get("optionalOldSelf").and_then(Value::as_bool) == Some(true),
            }),
            (Err(e), _) | (_, Err(e)) => {
                problems.push(format!("{at}: {e}; fix the rule in its x-kubernetes-validations"))
            }
        }
    }
    let child = |key: &str, suffix: &str, problems: &mut Vec<String>| {
        schema
            .get(key)
            .filter(|s| s.is_object())
            .map(|s| Box::new(node(s, &format!("{path}{suffix}"), problems)))
    };
    let items = child("items", "[*]", problems);
    let values = child("additionalProperties", "[*]", problems);
    let properties: HashMap<String, Node> = schema
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(name, s)| {
            let next = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            (name.clone(), node(s, &next, problems))
        })
        .collect();
    let list = match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => ListType::Set,
        Some("map") => ListType::Map(
            schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect(),
        ),
        _ => ListType::Atomic,
    };
    let ruled = !rules.is_empty()
        || properties.values().any(|n| n.ruled)
        || items.as_ref().is_some_and(|n| n.ruled)
        || values.as_ref().is_some_and(|n| n.ruled);
    Node {
        rules,
        properties,
        items,
        values,
        list,
        format: Format::named(schema.get("format").and_then(Value::as_str)),
        ruled,
    }
}

/// Rules whose estimated cost passes Kubernetes' per-rule budget, each with its field
/// (kube-cel's static estimate; the run-time budget catches what it cannot see).
fn refused(schema: &CompiledSchema, path: &str, out: &mut Vec<String>) {
    let at = if path.is_empty() { "the type" } else { path };
    for rule in schema.validations.iter().flatten() {
        out.extend(estimate_rule_cost(&rule.rule.rule, schema).into_iter().map(|w| {
            format!(
                "{at}: rule \"{}\" may cost more than Kubernetes allows one rule ({w:?}); bound the lists and strings it reads with maxItems/maxLength",
                rule.rule.rule
            )
        }));
    }
    for (name, property) in &schema.properties {
        let next = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        refused(property, &next, out);
    }
    if let Some(items) = &schema.items {
        refused(items, &format!("{path}[*]"), out);
    }
    if let Some(values) = &schema.additional_properties {
        refused(values, &format!("{path}[*]"), out);
    }
}
