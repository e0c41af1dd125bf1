//! CEL validation rules (`x-kubernetes-validations`) as CRDs carry them, evaluated with
//! kube-rs's `kube-cel` on the `cel` crate: compiled once when the resource is served (a rule
//! that does not compile, or whose estimated cost passes Kubernetes' per-rule budget, is a
//! start-up error naming the type and field), then run on every write with `self` at the rule's
//! node and `oldSelf` on updates (transition rules run only where the old value exists).
//!
//! Rules are declared with schemars, at a field or a type:
//! `#[schemars(extend("x-kubernetes-validations" = [{"rule": "self <= 10", "message": "at most 10"}]))]`.

use kube_cel::{CompiledSchema, RootContext, ValidationError, Validator, compile_schema, estimate_rule_cost};
use serde_json::Value;

use crate::resource::{FieldError, ResourceMeta};

/// A resource's compiled rules.
pub struct Rules {
    compiled: CompiledSchema,
    root: RootContext,
}

thread_local! {
    // The registry of Kubernetes' CEL functions: built once per thread (it is not `Sync`),
    // never per request.
    static VALIDATOR: Validator = Validator::new();
}

impl Rules {
    /// Compile the rules of `schema` (a resource's structural schema); None when it has none.
    pub fn new(meta: &ResourceMeta, schema: &Value) -> Result<Option<Rules>, String> {
        if !has_rules(schema) {
            return Ok(None);
        }
        let compiled = compile_schema(schema);
        let mut problems = Vec::new();
        refused(&compiled, "", &mut problems);
        if let Some(first) = problems.first() {
            return Err(format!("{}: {first}", meta.kind));
        }
        let root = RootContext {
            api_version: meta.api_version(),
            api_group: meta.group.to_string(),
            kind: meta.kind.to_string(),
        };
        Ok(Some(Rules { compiled, root }))
    }

    /// The rules `object` breaks (`old`: the stored object of an update), as 422 field errors.
    pub fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let result =
            VALIDATOR.with(|v| v.validate_compiled_with_context(&self.compiled, object, old, Some(&self.root)));
        match result {
            Ok(()) => Vec::new(),
            Err(errors) => errors.into_vec().into_iter().map(|e| field_error(object, e)).collect(),
        }
    }
}

/// Whether any node of `schema` carries `x-kubernetes-validations`.
fn has_rules(schema: &Value) -> bool {
    match schema {
        Value::Object(map) => map.contains_key("x-kubernetes-validations") || map.values().any(has_rules),
        Value::Array(items) => items.iter().any(has_rules),
        _ => false,
    }
}

/// Rules that do not compile or cost too much, each with the field it is declared at.
fn refused(schema: &CompiledSchema, path: &str, out: &mut Vec<String>) {
    let at = if path.is_empty() { "the type" } else { path };
    for validation in &schema.validations {
        match validation {
            Err(e) => out.push(format!("{at}: {e}; fix the rule in its x-kubernetes-validations")),
            Ok(rule) => out.extend(estimate_rule_cost(&rule.rule.rule, schema).into_iter().map(|w| {
                format!(
                    "{at}: rule \"{}\" may cost more than Kubernetes allows one rule ({w:?}); bound the lists and strings it reads with maxItems/maxLength",
                    rule.rule.rule
                )
            })),
        }
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

/// One rule failure in kube-apiserver's words: the field (the rule's node, or its
/// `fieldPath`), the value's type as the "value" (`Invalid value: "object": ...`), and the
/// reason's kind of error.
fn field_error(object: &Value, e: ValidationError) -> FieldError {
    let field = e.field_path.trim_start_matches('.').to_string();
    let value = kind_of(crate::schema::jsonpath::get(object, &format!(".{field}")));
    match e.reason.as_deref() {
        Some("FieldValueForbidden") => FieldError::forbidden(field, e.message),
        Some("FieldValueRequired") => FieldError::required(field, e.message),
        // As kube-apiserver: the rule's message stands where the duplicate value would.
        Some("FieldValueDuplicate") => FieldError::duplicate(field, &e.message),
        _ => FieldError::invalid(field, &value, e.message),
    }
}

/// The CEL type name kube-apiserver puts where the value would be.
fn kind_of(value: Option<&Value>) -> String {
    match value {
        Some(Value::Object(_)) | None => "object",
        Some(Value::Array(_)) => "array",
        Some(Value::String(_)) => "string",
        Some(Value::Bool(_)) => "boolean",
        Some(Value::Number(n)) if n.is_f64() => "number",
        Some(Value::Number(_)) => "integer",
        Some(Value::Null) => "null",
    }
    .to_string()
}
