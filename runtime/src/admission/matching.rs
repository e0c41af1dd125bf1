//! Which requests an admission step applies to, as k8s.io/apiserver matches them for webhooks
//! and policies alike: resource rules (`rules/rules.go`), `objectSelector` and
//! `namespaceSelector` (`namespace/matcher.go`, `object/matcher.go`).

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::RuleWithOperations;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube_core::{Selector, SelectorExt as _};
use serde_json::{Value, json};

use super::Attributes;
use super::namespace::Namespaces;
use crate::resource::ResourceMeta;
use crate::status::{ApiError, ApiResult};

/// A step's selectors, and what to call it in an error.
pub struct Selection<'a> {
    /// `webhook "x" of "y"`, `ValidatingAdmissionPolicy "p"`.
    pub owner: String,
    pub object_selector: Option<&'a LabelSelector>,
    pub namespace_selector: Option<&'a LabelSelector>,
}

/// Whether the request's new or old object, and its namespace's labels (namespaced objects
/// only; a namespace that does not exist is 404), are selected.
pub async fn selected(
    s: &Selection<'_>,
    namespaces: &Namespaces,
    a: &Attributes<'_>,
    object: Option<&Value>,
) -> ApiResult<bool> {
    if let Some(selector) = s.object_selector.and_then(non_empty) {
        let selector = parse(s, selector, "objectSelector")?;
        let labelled = [object, a.old_object]
            .into_iter()
            .flatten()
            .any(|o| crate::schema::selector::labels_match(&selector, o));
        if !labelled {
            return Ok(false);
        }
    }
    let (Some(selector), Some(namespace)) = (s.namespace_selector.and_then(non_empty), a.namespace) else {
        return Ok(true);
    };
    let selector = parse(s, selector, "namespaceSelector")?;
    let labels = match namespaces.lookup(namespace).await? {
        Some(found) => found.metadata.labels.unwrap_or_default(),
        None => {
            return Err(ApiError {
                details: Some(json!({"name": namespace, "kind": "namespaces"})),
                ..ApiError::new(404, "NotFound", format!("namespaces \"{namespace}\" not found"))
            });
        }
    };
    Ok(selector.matches(&labels))
}

fn parse(s: &Selection<'_>, selector: &LabelSelector, field: &str) -> ApiResult<Selector> {
    Selector::try_from(selector.clone()).map_err(|e| ApiError::internal(format!("{}: invalid {field}: {e}", s.owner)))
}

/// `None` for a selector that selects everything.
fn non_empty(selector: &LabelSelector) -> Option<&LabelSelector> {
    let empty = selector.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
        && selector.match_expressions.as_ref().is_none_or(Vec::is_empty);
    (!empty).then_some(selector)
}

fn any_or(list: &Option<Vec<String>>, value: &str) -> bool {
    list.iter().flatten().any(|v| v == "*" || v == value)
}

/// k8s.io/apiserver's rule matching: `widgets` is the resource alone, `widgets/status` and
/// `widgets/*` its subresources, `*` every resource (no subresources), `*/scale` every
/// scale, `*/*` everything.
pub fn rule_matches(rule: &RuleWithOperations, a: &Attributes<'_>) -> bool {
    let scope = match rule.scope.as_deref() {
        None | Some("*") => true,
        Some("Cluster") => !a.meta.namespaced(),
        Some("Namespaced") => a.meta.namespaced(),
        Some(_) => false,
    };
    let resource = rule.resources.iter().flatten().any(|r| {
        let (resource, sub) = match r.split_once('/') {
            Some((resource, sub)) => (resource, Some(sub)),
            None => (r.as_str(), None),
        };
        let resource_ok = resource == "*" || resource == a.meta.plural;
        let sub_ok = match sub {
            None => a.subresource.is_empty(),
            Some("*") => true,
            Some(sub) => sub == a.subresource,
        };
        resource_ok && sub_ok
    });
    scope
        && resource
        && any_or(&rule.operations, a.operation.as_str())
        && any_or(&rule.api_groups, a.meta.group)
        && any_or(&rule.api_versions, a.meta.version)
}

/// A request as rules that name another version of its resource see it (admission's
/// `matchPolicy: Equivalent`, the default): that version's metadata and the request's objects
/// converted to it, so a webhook or policy written for v1 also judges v1alpha1 writes.
pub struct Equivalent {
    /// The version the rules name.
    pub meta: ResourceMeta,
    /// The new object at that version (`None` for a delete).
    pub object: Option<Value>,
    /// The old object at that version.
    pub old: Option<Value>,
}

impl Equivalent {
    /// The first other version of `a`'s resource (by version priority) that `named` selects,
    /// with the objects converted; `None` when there is none. For `/scale`, the other versions
    /// with a scale subresource, the Scale unchanged (an `autoscaling/v1` Scale at every
    /// version, as upstream's equivalent-resource mapping has it).
    pub fn find(
        a: &Attributes<'_>,
        object: Option<&Value>,
        named: impl Fn(&Attributes<'_>) -> bool,
    ) -> ApiResult<Option<Equivalent>> {
        let Some(codec) = a.codec else { return Ok(None) };
        let scale = a.subresource == "scale";
        for meta in codec.others() {
            if (scale && meta.scale.is_none()) || !named(&Attributes { meta: &meta, ..*a }) {
                continue;
            }
            if scale {
                return Ok(Some(Equivalent {
                    object: object.cloned(),
                    old: a.old_object.cloned(),
                    meta,
                }));
            }
            let convert = |v: &Value| {
                codec
                    .convert(v.clone(), &meta.api_version())
                    .map_err(ApiError::bad_request)
            };
            return Ok(Some(Equivalent {
                object: object.map(convert).transpose()?,
                old: a.old_object.map(convert).transpose()?,
                meta,
            }));
        }
        Ok(None)
    }

    /// `a` at this version: the old object converted, the request's own version kept.
    pub fn attributes<'b>(&'b self, a: &Attributes<'b>) -> Attributes<'b> {
        Attributes {
            meta: &self.meta,
            old_object: self.old.as_ref(),
            request_meta: Some(a.request_meta.unwrap_or(a.meta)),
            ..*a
        }
    }

    /// `object`, changed by a step at this version, back at the request's version (`None`
    /// when the step left it as it was).
    pub fn back(&self, a: &Attributes<'_>, object: Value) -> ApiResult<Option<Value>> {
        if self.object.as_ref() == Some(&object) {
            return Ok(None);
        }
        if a.subresource == "scale" {
            return Ok(Some(object));
        }
        let codec = a
            .codec
            .ok_or_else(|| ApiError::internal("a converted request without its versions"))?;
        codec
            .convert(object, &a.meta.api_version())
            .map(Some)
            .map_err(ApiError::bad_request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::Operation;
    use crate::resource::TEST_META;

    fn rule(resources: &[&str], operations: &[&str], scope: Option<&str>) -> RuleWithOperations {
        let strings = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect());
        RuleWithOperations {
            api_groups: strings(&["g"]),
            api_versions: strings(&["*"]),
            operations: strings(operations),
            resources: strings(resources),
            scope: scope.map(str::to_string),
        }
    }

    #[test]
    fn rules_match_resources_subresources_operations_and_scope() {
        let create = Attributes::new(Operation::Create, &TEST_META, Some("ns"), "a");
        let status = create.by(None, "status", false);
        let scale = Attributes::new(Operation::Update, &TEST_META, Some("ns"), "a").by(None, "scale", false);
        for (rule, attributes, want) in [
            (rule(&["ks"], &["CREATE"], None), create, true),
            (rule(&["ks"], &["UPDATE"], None), create, false),
            (rule(&["ks"], &["*"], Some("Cluster")), create, false),
            (rule(&["ks"], &["*"], Some("Namespaced")), create, true),
            (rule(&["ks"], &["*"], None), status, false),
            (rule(&["ks/status"], &["*"], None), status, true),
            (rule(&["ks/*"], &["*"], None), status, true),
            (rule(&["*"], &["*"], None), status, false),
            (rule(&["*/scale"], &["UPDATE"], None), scale, true),
            (rule(&["*/scale"], &["UPDATE"], None), status, false),
            (rule(&["*/*"], &["*"], None), scale, true),
            (rule(&["others"], &["*"], None), create, false),
        ] {
            assert_eq!(
                rule_matches(&rule, &attributes),
                want,
                "{:?} {:?} {:?}",
                rule.resources,
                attributes.operation,
                attributes.subresource
            );
        }
        let mut other_group = rule(&["ks"], &["*"], None);
        other_group.api_groups = Some(vec!["other".into()]);
        assert!(!rule_matches(&other_group, &create));
    }
}
