//! Type-checking of a ValidatingAdmissionPolicy's expressions against the schemas of the kinds
//! it matches on this server, when the policy is seen (upstream writes such warnings into the
//! policy's `status.typeChecking`, which kube-apiserver owns; here they go to the log and the
//! `apiary_admission_policy_type_warnings` gauge).
//!
//! What is checked is what a typo breaks: every field path read from `object` or `oldObject`
//! (`object.spec.replicas`, `has(object.spec.color)`) must exist in the schema, down to where the
//! schema stops knowing (a map's values, preserved unknown fields, `metadata`).

use k8s_openapi::api::admissionregistration::v1::{NamedRuleWithOperations, ValidatingAdmissionPolicy};
use kube_cel::cel::common::ast::{EntryExpr, Expr, IdedExpr};
use kube_cel::cel::parser::Parser;
use serde_json::Value;

use crate::resource::ResourceMeta;

/// A served kind and its structural schema.
pub type Kind = (ResourceMeta, Value);

/// The warnings for `policy`'s expressions on each kind of `kinds` its `matchConstraints`
/// name, as `group/version, Kind=K: undefined field 'f' in 'expression'`.
pub fn warnings(policy: &ValidatingAdmissionPolicy, kinds: &[Kind]) -> Vec<String> {
    let Some(spec) = &policy.spec else { return Vec::new() };
    let rules = spec
        .match_constraints
        .as_ref()
        .and_then(|m| m.resource_rules.as_deref())
        .unwrap_or_default();
    let mut expressions: Vec<&str> = Vec::new();
    for validation in spec.validations.iter().flatten() {
        expressions.push(&validation.expression);
        expressions.extend(validation.message_expression.as_deref());
    }
    expressions.extend(spec.match_conditions.iter().flatten().map(|c| c.expression.as_str()));
    expressions.extend(spec.variables.iter().flatten().map(|v| v.expression.as_str()));
    expressions.extend(
        spec.audit_annotations
            .iter()
            .flatten()
            .map(|a| a.value_expression.as_str()),
    );
    let mut found = Vec::new();
    for (meta, schema) in kinds.iter().filter(|(meta, _)| rules.iter().any(|r| names(r, meta))) {
        for expression in &expressions {
            // One that does not parse fails when it runs, with the parser's message.
            let Ok(parsed) = Parser::default().parse(expression) else {
                continue;
            };
            let mut undefined = Vec::new();
            visit(&parsed, &mut |e| {
                if let Some(field) = undefined_field(e, schema)
                    && !undefined.contains(&field)
                {
                    undefined.push(field);
                }
            });
            found.extend(undefined.into_iter().map(|field| {
                format!(
                    "{}, Kind={}: undefined field '{field}' in '{expression}'",
                    meta.api_version(),
                    meta.kind
                )
            }));
        }
    }
    found
}

/// Whether `rule` names `meta`'s resource (any operation, scope or subresource).
fn names(rule: &NamedRuleWithOperations, meta: &ResourceMeta) -> bool {
    let any = |list: &Option<Vec<String>>, value: &str| list.iter().flatten().any(|v| v == "*" || v == value);
    let resource = rule.resources.iter().flatten().any(|r| {
        let resource = r.split('/').next().unwrap_or_default();
        resource == "*" || resource == meta.plural
    });
    resource && any(&rule.api_groups, meta.group) && any(&rule.api_versions, meta.version)
}

/// Every node of `e`, outermost first.
fn visit(e: &IdedExpr, f: &mut impl FnMut(&IdedExpr)) {
    f(e);
    match &e.expr {
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                visit(target, f);
            }
            call.args.iter().for_each(|a| visit(a, f));
        }
        Expr::Comprehension(c) => {
            for part in [&c.iter_range, &c.accu_init, &c.loop_cond, &c.loop_step, &c.result] {
                visit(part, f);
            }
        }
        Expr::List(list) => list.elements.iter().for_each(|x| visit(x, f)),
        Expr::Map(map) => {
            for entry in &map.entries {
                if let EntryExpr::MapEntry(entry) = &entry.expr {
                    visit(&entry.key, f);
                    visit(&entry.value, f);
                }
            }
        }
        Expr::Select(select) => visit(&select.operand, f),
        Expr::Struct(_) | Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

/// The first field of the path `e` selects from `object` or `oldObject` that `schema` does
/// not have (`None` for any other expression, and where the schema stops knowing).
fn undefined_field(e: &IdedExpr, schema: &Value) -> Option<String> {
    let mut path = Vec::new();
    let mut at = e;
    while let Expr::Select(select) = &at.expr {
        path.push(select.field.as_str());
        at = &select.operand;
    }
    let Expr::Ident(root) = &at.expr else { return None };
    if path.is_empty() || !matches!(root.as_str(), "object" | "oldObject") {
        return None;
    }
    path.reverse();
    let mut node = schema;
    for field in path {
        if field == "metadata" && std::ptr::eq(node, schema) {
            // ObjectMeta: not in a structural schema's properties beyond its type.
            return None;
        }
        if node.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
            || node
                .get("additionalProperties")
                .is_some_and(|a| a != &Value::Bool(false))
        {
            return None;
        }
        match node.get("properties").and_then(|p| p.get(field)) {
            Some(next) => node = next,
            None if node.get("properties").is_some() || node.get("type") != Some(&Value::from("object")) => {
                return Some(field.to_string());
            }
            None => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn typos_in_field_paths_are_found() {
        let schema = json!({"type": "object", "properties": {
            "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
            "spec": {"type": "object", "properties": {
                "replicas": {"type": "integer"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "items": {"type": "array", "items": {"type": "object", "properties": {"n": {"type": "integer"}}}},
            }},
        }});
        let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {
                "matchConstraints": {"resourceRules": [{"apiGroups": ["g"], "apiVersions": ["*"],
                                                        "operations": ["CREATE"], "resources": ["ks"]}]},
                "validations": [
                    {"expression": "object.spec.replicas > 1 && has(object.spec.replikas)"},
                    {"expression": "object.spec.labels.anything == 'x' && object.metadata.name != ''",
                     "messageExpression": "'at ' + string(oldObject.spek.replicas)"},
                    {"expression": "object.spec.items.all(i, i.m > 0) && params.whatever"},
                ],
                "variables": [{"name": "v", "expression": "object.spec.replicas.nope"}],
            },
        }))
        .unwrap();
        let kinds = [(crate::resource::TEST_META, schema)];
        assert_eq!(
            warnings(&policy, &kinds),
            [
                "g/v1, Kind=K: undefined field 'replikas' in 'object.spec.replicas > 1 && has(object.spec.replikas)'",
                "g/v1, Kind=K: undefined field 'spek' in ''at ' + string(oldObject.spek.replicas)'",
                "g/v1, Kind=K: undefined field 'nope' in 'object.spec.replicas.nope'",
            ]
        );
        let elsewhere = [(
            ResourceMeta {
                plural: "others",
                ..crate::resource::TEST_META
            },
            json!({}),
        )];
        assert!(
            warnings(&policy, &elsewhere).is_empty(),
            "a kind the policy does not match"
        );
    }
}
