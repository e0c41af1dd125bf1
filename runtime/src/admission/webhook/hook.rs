//! One webhook of a configuration, read the way kube-apiserver reads it (defaults filled in),
//! and whether it applies to a request: rules, scope, `objectSelector`, `namespaceSelector`
//! (`webhook.go` `ShouldCallHook`, `rules/rules.go`).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MutatingWebhook, RuleWithOperations, ValidatingWebhook, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube_core::Selector;
use serde_json::Value;

use super::super::Attributes;
use crate::status::{ApiError, ApiResult};

/// `timeoutSeconds` when unset.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The bounds of `timeoutSeconds`.
const TIMEOUT_RANGE: (u64, u64) = (1, 30);

/// A webhook of a Mutating- or ValidatingWebhookConfiguration, defaults applied.
pub(super) struct Hook<'a> {
    /// The webhook's name (`v.example.com`).
    pub name: &'a str,
    /// The configuration that holds it.
    pub configuration: &'a str,
    pub rules: &'a [RuleWithOperations],
    pub namespace_selector: Option<&'a LabelSelector>,
    pub object_selector: Option<&'a LabelSelector>,
    /// `failurePolicy: Fail` (the default) rather than `Ignore`.
    pub fail_closed: bool,
    /// `sideEffects` is `None` or `NoneOnDryRun`: the webhook may be called for a dry run.
    pub dry_run_safe: bool,
    pub timeout: Duration,
    pub review_versions: &'a [String],
    pub client: &'a WebhookClientConfig,
    /// `reinvocationPolicy: IfNeeded` (mutating webhooks only).
    pub reinvoke: bool,
    /// CEL `matchConditions`: the webhook is called only when all hold.
    pub match_conditions: &'a [MatchCondition],
}

/// The webhook `$w` (mutating or validating: the fields are the same) of `$configuration`.
macro_rules! hook_of {
    ($configuration:expr, $w:expr, $reinvoke:expr) => {{
        let w = $w;
        let seconds = w
            .timeout_seconds
            .map_or(DEFAULT_TIMEOUT.as_secs(), |s| s.max(0) as u64)
            .clamp(TIMEOUT_RANGE.0, TIMEOUT_RANGE.1);
        Hook {
            name: &w.name,
            configuration: $configuration,
            rules: w.rules.as_deref().unwrap_or_default(),
            namespace_selector: w.namespace_selector.as_ref(),
            object_selector: w.object_selector.as_ref(),
            fail_closed: w.failure_policy.as_deref() != Some("Ignore"),
            dry_run_safe: matches!(w.side_effects.as_str(), "None" | "NoneOnDryRun"),
            timeout: Duration::from_secs(seconds),
            review_versions: &w.admission_review_versions,
            client: &w.client_config,
            reinvoke: $reinvoke,
            match_conditions: w.match_conditions.as_deref().unwrap_or_default(),
        }
    }};
}

impl<'a> Hook<'a> {
    /// A mutating webhook of `configuration`.
    pub fn mutating(configuration: &'a str, w: &'a MutatingWebhook) -> Hook<'a> {
        hook_of!(configuration, w, w.reinvocation_policy.as_deref() == Some("IfNeeded"))
    }

    /// A validating webhook of `configuration`.
    pub fn validating(configuration: &'a str, w: &'a ValidatingWebhook) -> Hook<'a> {
        hook_of!(configuration, w, false)
    }

    /// Whether a rule names this request. `matchPolicy: Equivalent` would also match the
    /// same resource at another served version; each kind is served at one version, so
    /// both policies match the same requests.
    pub fn rules_match(&self, a: &Attributes<'_>) -> bool {
        self.rules.iter().any(|rule| rule_matches(rule, a))
    }

    /// Whether `objectSelector` matches the new or the old object's labels.
    pub fn object_matches(&self, object: Option<&Value>, old: Option<&Value>) -> ApiResult<bool> {
        let Some(selector) = self.object_selector.and_then(non_empty) else {
            return Ok(true);
        };
        let selector = self.selector(selector, "objectSelector")?;
        Ok([object, old]
            .into_iter()
            .flatten()
            .any(|o| crate::schema::selector::labels_match(&selector, o)))
    }

    /// The `namespaceSelector` to check, when one must be (namespaced objects only).
    pub fn namespace_selector(&self, a: &Attributes<'_>) -> ApiResult<Option<Selector>> {
        match (a.namespace, self.namespace_selector.and_then(non_empty)) {
            (Some(_), Some(selector)) => self.selector(selector, "namespaceSelector").map(Some),
            _ => Ok(None),
        }
    }

    fn selector(&self, selector: &LabelSelector, field: &str) -> ApiResult<Selector> {
        Selector::try_from(selector.clone()).map_err(|e| {
            ApiError::internal(format!(
                "webhook {:?} of {:?}: invalid {field}: {e}",
                self.name, self.configuration
            ))
        })
    }
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
fn rule_matches(rule: &RuleWithOperations, a: &Attributes<'_>) -> bool {
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
