//! One webhook of a configuration, read the way kube-apiserver reads it (defaults filled in),
//! and whether it applies to a request: rules, scope, `objectSelector`, `namespaceSelector`
//! (`webhook.go` `ShouldCallHook`, `rules/rules.go`).

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MutatingWebhook, RuleWithOperations, ValidatingWebhook, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::super::Attributes;
use super::super::matching::{self, Selection};

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
    /// `matchPolicy: Equivalent` (the default): rules naming another version of the
    /// request's resource match too, and the webhook sees the request at that version.
    pub equivalent: bool,
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
            equivalent: w.match_policy.as_deref() != Some("Exact"),
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

    /// Whether a rule names this request as it is (see [`Dispatcher::equivalent`] for
    /// `matchPolicy: Equivalent`).
    ///
    /// [`Dispatcher::equivalent`]: super::dispatch::Dispatcher::equivalent
    pub fn rules_match(&self, a: &Attributes<'_>) -> bool {
        self.rules.iter().any(|rule| matching::rule_matches(rule, a))
    }

    /// What selects the requests this webhook sees, for [`matching::selected`].
    pub fn selection(&self) -> Selection<'a> {
        Selection {
            owner: format!("webhook {:?} of {:?}", self.name, self.configuration),
            object_selector: self.object_selector,
            namespace_selector: self.namespace_selector,
        }
    }
}
