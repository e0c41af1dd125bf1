//! `labelSelector` and `fieldSelector` query parameters: parsers onto kube-core's selector AST.

use std::collections::{BTreeMap, BTreeSet};

use kube_core::{Expression, Selector, SelectorExt};
use serde_json::Value;

use super::jsonpath;
use crate::registry::object::meta_field;
use crate::resource::ResourceMeta;
use crate::status::ApiError;

/// Longest selector string accepted.
const MAX_SELECTOR: usize = 4096;

/// Parse a label selector (`a=b,c!=d,e in (f,g),h notin (i),j,!k`).
pub fn parse_labels(input: &str) -> Result<Selector, ApiError> {
    if input.len() > MAX_SELECTOR {
        return Err(ApiError::bad_request("label selector is too long"));
    }
    let bad = |why: &str| {
        ApiError::bad_request(format!(
            "unable to parse requirement: {why} in label selector {input:?}"
        ))
    };
    let mut exprs = Vec::new();
    for part in split_top_level(input) {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let expr = if let Some(key) = part.strip_prefix('!') {
            Expression::DoesNotExist(label_key(key.trim()).map_err(|e| bad(&e))?)
        } else if let Some((key, values)) = split_set(part, " notin ") {
            Expression::NotIn(label_key(key).map_err(|e| bad(&e))?, values.map_err(|e| bad(&e))?)
        } else if let Some((key, values)) = split_set(part, " in ") {
            Expression::In(label_key(key).map_err(|e| bad(&e))?, values.map_err(|e| bad(&e))?)
        } else if let Some((key, value)) = part.split_once("!=") {
            Expression::NotEqual(
                label_key(key).map_err(|e| bad(&e))?,
                label_value(value).map_err(|e| bad(&e))?,
            )
        } else if let Some((key, value)) = part.split_once("==").or_else(|| part.split_once('=')) {
            Expression::Equal(
                label_key(key).map_err(|e| bad(&e))?,
                label_value(value).map_err(|e| bad(&e))?,
            )
        } else {
            Expression::Exists(label_key(part).map_err(|e| bad(&e))?)
        };
        exprs.push(expr);
    }
    Ok(Selector::from_iter(exprs))
}

/// Split on commas outside parentheses.
fn split_top_level(input: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0i32, 0, Vec::new());
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&input[start..]);
    out
}

type SetParse<'a> = (&'a str, Result<BTreeSet<String>, String>);

fn split_set<'a>(part: &'a str, op: &str) -> Option<SetParse<'a>> {
    let (key, rest) = part.split_once(op)?;
    let values = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| "expected a parenthesized set of values".to_string())
        .and_then(|inner| inner.split(',').map(label_value).collect());
    Some((key, values))
}

fn label_key(key: &str) -> Result<String, String> {
    let key = key.trim();
    let name = key.rsplit('/').next().unwrap_or(key);
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if valid {
        Ok(key.to_string())
    } else {
        Err(format!("invalid label key {key:?}"))
    }
}

fn label_value(value: &str) -> Result<String, String> {
    let value = value.trim();
    let valid = value.len() <= 63 && value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if valid {
        Ok(value.to_string())
    } else {
        Err(format!("invalid label value {value:?}"))
    }
}

/// A parsed field selector: `field=value` / `field!=value` terms over supported fields.
#[derive(Clone, Debug, Default)]
pub struct FieldSelector {
    terms: Vec<(String, bool, String)>,
}

impl FieldSelector {
    /// Parse `metadata.name=x,spec.color!=red` for a resource's selectable fields.
    pub fn parse(input: &str, meta: &ResourceMeta) -> Result<Self, ApiError> {
        if input.len() > MAX_SELECTOR {
            return Err(ApiError::bad_request("field selector is too long"));
        }
        let mut terms = Vec::new();
        for part in input.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{input}'; can't understand '{part}'"
                )));
            };
            let field = field.trim();
            let supported = field == "metadata.name"
                || (field == "metadata.namespace" && meta.namespaced())
                || meta
                    .selectable_fields
                    .iter()
                    .any(|s| s.trim_start_matches('.') == field);
            if !supported {
                return Err(ApiError::bad_request(format!("field label not supported: {field}")));
            }
            terms.push((field.to_string(), equal, value.trim().to_string()));
        }
        Ok(FieldSelector { terms })
    }

    /// Whether the selector has no terms.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The name asked for by `metadata.name=x`, if any (lets a list read one key).
    pub fn exact_name(&self) -> Option<&str> {
        self.terms
            .iter()
            .find(|(f, eq, _)| f == "metadata.name" && *eq)
            .map(|(_, _, v)| v.as_str())
    }

    /// Whether an object matches every term.
    pub fn matches(&self, object: &Value) -> bool {
        self.terms.iter().all(|(field, equal, expected)| {
            let actual = match jsonpath::get(object, &format!(".{field}")) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (actual == *expected) == *equal
        })
    }
}

/// Whether an object's labels match a label selector.
pub fn labels_match(selector: &Selector, object: &Value) -> bool {
    selector.matches(&labels_of(object))
}

/// An object's labels.
pub fn labels_of(object: &Value) -> BTreeMap<String, String> {
    meta_field(object, "labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors_parse_and_match() {
        let obj = json!({"metadata": {"labels": {"tier": "gold", "env": "prod"}}});
        for (sel, want) in [
            ("tier=gold", true),
            ("tier==gold,env=prod", true),
            ("tier!=gold", false),
            ("tier in (gold, silver)", true),
            ("tier notin (gold)", false),
            ("env", true),
            ("!env", false),
            ("!missing,env in (prod),tier", true),
            ("", true),
        ] {
            assert_eq!(labels_match(&parse_labels(sel).unwrap(), &obj), want, "{sel}");
        }
        assert!(parse_labels("tier in gold").is_err());
        assert!(parse_labels("bad key=x").is_err());
    }

    #[test]
    fn field_selectors_check_supported_fields() {
        const META: ResourceMeta = crate::resource::TEST_META;
        let obj = json!({"metadata": {"name": "a", "namespace": "ns"}, "spec": {"color": "red"}});
        let sel = FieldSelector::parse("metadata.name=a,spec.color!=blue", &META).unwrap();
        assert!(sel.matches(&obj));
        assert_eq!(sel.exact_name(), Some("a"));
        assert!(
            !FieldSelector::parse("metadata.namespace=other", &META)
                .unwrap()
                .matches(&obj)
        );
        let err = FieldSelector::parse("spec.size=1", &META).unwrap_err();
        assert_eq!(
            (err.code, err.message.as_str()),
            (400, "field label not supported: spec.size")
        );
    }
}
