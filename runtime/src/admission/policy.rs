//! ValidatingAdmissionPolicy (`admissionregistration.k8s.io/v1`, k8s.io/apiserver
//! `plugin/policy/validating`): the cluster's policies and their bindings, watched on the core
//! API, evaluated with CEL on every write they match.
//!
//! For each binding (by name) whose policy exists: the policy's `matchConstraints` and the
//! binding's `matchResources` (resource rules, exclusions, object and namespace selectors),
//! the params (`paramKind` with the binding's `paramRef`: one object by name, or every object a
//! selector picks, each evaluated), `matchConditions`, `variables`, then `validations`,
//! whose failures act as the binding's `validationActions` say (Deny: the request is refused;
//! Warn: a `Warning:` header; Audit: an audit annotation), and `auditAnnotations`. An
//! expression that fails to compile or evaluate is a failure of the policy, which its
//! `failurePolicy` decides.

use std::sync::Arc;

use k8s_openapi::api::admissionregistration::v1::{
    MatchResources, NamedRuleWithOperations, RuleWithOperations, ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding,
};
use kube::runtime::reflector::{self, Store};
use serde_json::{Value, json};

use super::cel::{self, Programs, Variables};
use super::matching::{self, Equivalent, Selection};
use super::metrics::AdmissionMetrics;
use super::namespace::Namespaces;
use super::params::Params;
use super::{Attributes, Plugin, async_trait};
use crate::cel::authz::Checks;
use crate::cel::{Budget, Failure};
use crate::filters::authz::Authorizer;
use crate::resource::ResourceMeta;
use crate::status::{ApiError, ApiResult};

/// The ValidatingAdmissionPolicy plugin.
pub struct ValidatingPolicies {
    policies: Store<ValidatingAdmissionPolicy>,
    bindings: Store<ValidatingAdmissionPolicyBinding>,
    namespaces: Arc<Namespaces>,
    params: Params,
    programs: Programs,
    /// Answers `authorizer` checks in expressions.
    authorizer: Option<Arc<Authorizer>>,
}

/// What every binding of one request shares, built when the first policy applies.
#[derive(Default)]
struct Shared {
    /// `object`, `oldObject` and `request` as CEL values, converted once for every binding.
    variables: std::sync::OnceLock<Variables>,
    namespace: std::sync::OnceLock<Option<Value>>,
    /// The request's authorizer checks, asked once for every binding.
    checks: std::sync::OnceLock<Arc<Checks>>,
}

/// What one policy decided about one request.
enum Decision {
    /// Every validation held (or the policy did not apply).
    Admit,
    /// Refused: the status code, reason and message.
    Deny(u16, &'static str, String),
}

impl ValidatingPolicies {
    /// Watch the policies and bindings through `client`; read namespaces from `namespaces`;
    /// answer expressions' `authorizer` checks with `authorizer` (unbound without one);
    /// type-check each policy as it is seen against the served `kinds` (each with its schema)
    /// it matches, warning in the log and in `metrics`.
    pub fn start(
        client: kube::Client,
        namespaces: Arc<Namespaces>,
        authorizer: Option<Arc<Authorizer>>,
        kinds: Vec<(ResourceMeta, Value)>,
        metrics: Option<Arc<AdmissionMetrics>>,
    ) -> Self {
        let checked = move |policy: &ValidatingAdmissionPolicy| {
            let name = name_of(&policy.metadata);
            let warnings = super::typecheck::warnings(policy, &kinds);
            for warning in &warnings {
                tracing::warn!("ValidatingAdmissionPolicy {name:?}: {warning}");
            }
            if let Some(metrics) = &metrics {
                metrics.type_warnings(name, warnings.len());
            }
        };
        let policies = super::watched_with(kube::Api::all(client.clone()), (), "ValidatingAdmissionPolicy", checked).0;
        ValidatingPolicies {
            policies,
            bindings: super::watched(&client, "ValidatingAdmissionPolicy"),
            namespaces,
            params: Params::new(client),
            programs: Programs::default(),
            authorizer,
        }
    }

    /// One binding of `policy` for the request: its decision.
    async fn judge(
        &self,
        policy: &ValidatingAdmissionPolicy,
        binding: &ValidatingAdmissionPolicyBinding,
        a: &Attributes<'_>,
        object: Option<&Value>,
        shared: &Shared,
    ) -> ApiResult<Decision> {
        let (policy_name, binding_name) = (name_of(&policy.metadata), name_of(&binding.metadata));
        let Some(spec) = &policy.spec else {
            return Ok(Decision::Admit);
        };
        let Some(binding_spec) = &binding.spec else {
            return Ok(Decision::Admit);
        };
        let owner = format!("ValidatingAdmissionPolicy {policy_name:?}");
        let Some(matched) = self
            .selects(spec.match_constraints.as_ref(), &owner, a, object, false)
            .await?
        else {
            return Ok(Decision::Admit);
        };
        if binding_spec.match_resources.is_some()
            && self
                .selects(binding_spec.match_resources.as_ref(), &owner, a, object, true)
                .await?
                .is_none()
        {
            return Ok(Decision::Admit);
        }
        // Matched at another version of the resource: the policy judges the request there.
        let converted;
        let (a, object) = match &matched {
            Some(equivalent) => {
                converted = equivalent.attributes(a);
                (&converted, equivalent.object.as_ref())
            }
            None => (a, object),
        };
        let fail_closed = spec.failure_policy.as_deref() != Some("Ignore");
        let failed = |why: String| -> ApiResult<Decision> {
            if fail_closed {
                Ok(Decision::Deny(
                    422,
                    "Invalid",
                    format!(
                        "ValidatingAdmissionPolicy '{policy_name}' with binding '{binding_name}' denied request: {why}"
                    ),
                ))
            } else {
                tracing::warn!("{owner} with binding {binding_name:?}: {why}; failurePolicy is Ignore");
                Ok(Decision::Admit)
            }
        };
        let params = match self
            .params
            .select(spec.param_kind.as_ref(), binding_spec.param_ref.as_ref(), a.namespace)
            .await
        {
            Ok(params) => params,
            Err(why) => return failed(why),
        };
        let namespace = match (a.namespace, shared.namespace.get()) {
            (None, _) => None,
            (Some(_), Some(found)) => found.clone(),
            (Some(ns), None) => {
                let found = self
                    .namespaces
                    .lookup(ns)
                    .await?
                    .and_then(|n| serde_json::to_value(n).ok());
                shared.namespace.get_or_init(|| found).clone()
            }
        };
        let converted_variables;
        let base = || Variables::new(object, a.old_object, super::webhook::request_variable(a));
        let base = match matched {
            Some(_) => {
                converted_variables = base();
                &converted_variables
            }
            None => shared.variables.get_or_init(base),
        };
        let actions: Vec<&str> = binding_spec
            .validation_actions
            .iter()
            .flatten()
            .map(String::as_str)
            .collect();
        for params in params {
            // As upstream, each evaluation of the policy (one binding, one params object) has
            // its own budget; running out is the policy's failure.
            let budget = Budget::default();
            let mut variables = base.clone();
            variables.bind("params", params.as_ref());
            variables.bind("namespaceObject", namespace.as_ref());
            if let Some(authorizer) = &self.authorizer {
                let checks = shared
                    .checks
                    .get_or_init(|| Checks::new(a.user.cloned(), authorizer.clone()));
                variables.authorize(a, checks.clone());
            }
            // Conditions: one false and the policy does not apply; else errors are failures.
            let mut errors = Vec::new();
            let mut applies = true;
            for condition in spec.match_conditions.iter().flatten() {
                match self.run(&condition.expression, &variables, &budget).await {
                    Ok(true) => {}
                    Ok(false) => applies = false,
                    Err(Failure::OutOfBudget) => return failed(Failure::OutOfBudget.to_string()),
                    Err(e) => errors.push(format!("matchCondition '{}': {e}", condition.name)),
                }
            }
            if !applies {
                continue;
            }
            if let Some(error) = errors.into_iter().next() {
                return failed(error);
            }
            // Variables that evaluate are bound; a failing one fails only the expressions that use it.
            let mut bound: Vec<(String, cel::CelValue)> = Vec::new();
            for variable in spec.variables.iter().flatten() {
                let value = self
                    .value(&variable.expression, &variables.with_variables(&bound), &budget)
                    .await;
                match value {
                    Ok(value) => bound.push((variable.name.clone(), value)),
                    Err(Failure::OutOfBudget) => return failed(Failure::OutOfBudget.to_string()),
                    Err(_) => {}
                }
            }
            let variables = variables.with_variables(&bound);
            for (index, validation) in spec.validations.iter().flatten().enumerate() {
                let message = match self.run(&validation.expression, &variables, &budget).await {
                    Ok(true) => continue,
                    Err(Failure::OutOfBudget) => return failed(Failure::OutOfBudget.to_string()),
                    Ok(false) => {
                        let from_expression = match validation.message_expression.as_deref() {
                            Some(e) => self.value(e, &variables, &budget).await.ok(),
                            None => None,
                        };
                        from_expression
                            .and_then(|v| cel::string(&v))
                            .filter(|m| !m.trim().is_empty())
                            .or_else(|| validation.message.clone())
                            .unwrap_or_else(|| format!("failed expression: {}", validation.expression))
                    }
                    Err(e) if fail_closed => {
                        format!("expression '{}' resulted in error: {e}", validation.expression)
                    }
                    Err(e) => {
                        tracing::warn!("{owner}: expression '{}' resulted in error: {e}", validation.expression);
                        continue;
                    }
                };
                if actions.contains(&"Warn") {
                    a.warn(&format!(
                        "Validation failed for ValidatingAdmissionPolicy '{policy_name}' with binding '{binding_name}': {message}"
                    ));
                }
                if let (true, Some(scope)) = (actions.contains(&"Audit"), a.scope) {
                    let failure = json!([{"message": message, "policy": policy_name, "binding": binding_name,
                                           "expressionIndex": index, "validationActions": actions}]);
                    scope.annotate(
                        "validation.policy.admission.k8s.io/validation_failure".into(),
                        failure.to_string(),
                    );
                }
                if actions.contains(&"Deny") {
                    // The reasons a validation may give (upstream validates them on the policy).
                    let (code, reason) = match validation.reason.as_deref() {
                        Some("Unauthorized") => (401, "Unauthorized"),
                        Some("Forbidden") => (403, "Forbidden"),
                        Some("RequestEntityTooLarge") => (413, "RequestEntityTooLarge"),
                        _ => (422, "Invalid"),
                    };
                    let message = format!(
                        "ValidatingAdmissionPolicy '{policy_name}' with binding '{binding_name}' denied request: {message}"
                    );
                    return Ok(Decision::Deny(code, reason, message));
                }
            }
            if let Some(scope) = a.scope {
                for annotation in spec.audit_annotations.iter().flatten() {
                    let value = self.value(&annotation.value_expression, &variables, &budget).await;
                    if let Some(value) = value.ok().as_ref().and_then(cel::string) {
                        scope.annotate(format!("{policy_name}/{}", annotation.key), value);
                    }
                }
            }
        }
        Ok(Decision::Admit)
    }

    async fn run(&self, expression: &str, variables: &Variables, budget: &Budget) -> Result<bool, Failure> {
        let program = self.programs.compile(expression).map_err(Failure::Error)?;
        cel::evaluate(&program, variables, budget).await
    }

    async fn value(&self, expression: &str, variables: &Variables, budget: &Budget) -> Result<cel::CelValue, Failure> {
        let program = self.programs.compile(expression).map_err(Failure::Error)?;
        cel::value(&program, variables, budget).await
    }

    /// How `resources` (a policy's constraints or a binding's) select the request: as it is
    /// (`Some(None)`), at another version of its resource their rules name (`matchPolicy:
    /// Equivalent`, the default), or not at all (`None`). A binding's `matchResources`
    /// without `resourceRules` does not constrain resources (its selectors and exclusions
    /// still do): the policy's constraints already chose them.
    async fn selects(
        &self,
        resources: Option<&MatchResources>,
        owner: &str,
        a: &Attributes<'_>,
        object: Option<&Value>,
        binding: bool,
    ) -> ApiResult<Option<Option<Equivalent>>> {
        let Some(resources) = resources else { return Ok(None) };
        let unconstrained = binding && resources.resource_rules.as_ref().is_none_or(Vec::is_empty);
        let named = |a: &Attributes<'_>| {
            let rule_names = |rule: &NamedRuleWithOperations| {
                let names = rule.resource_names.as_deref().unwrap_or_default();
                let rule = RuleWithOperations {
                    api_groups: rule.api_groups.clone(),
                    api_versions: rule.api_versions.clone(),
                    operations: rule.operations.clone(),
                    resources: rule.resources.clone(),
                    scope: rule.scope.clone(),
                };
                matching::rule_matches(&rule, a) && (names.is_empty() || names.iter().any(|n| n == a.name))
            };
            (unconstrained || resources.resource_rules.iter().flatten().any(rule_names))
                && !resources.exclude_resource_rules.iter().flatten().any(rule_names)
        };
        let selection = Selection {
            owner: owner.to_string(),
            object_selector: resources.object_selector.as_ref(),
            namespace_selector: resources.namespace_selector.as_ref(),
        };
        if named(a) {
            return Ok(matching::selected(&selection, &self.namespaces, a, object)
                .await?
                .then_some(None));
        }
        if resources.match_policy.as_deref() == Some("Exact") {
            return Ok(None);
        }
        let Some(equivalent) = Equivalent::find(a, object, named)? else {
            return Ok(None);
        };
        let at = equivalent.attributes(a);
        let selected = matching::selected(&selection, &self.namespaces, &at, equivalent.object.as_ref()).await?;
        Ok(selected.then_some(Some(equivalent)))
    }
}

fn name_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}

#[async_trait]
impl Plugin for ValidatingPolicies {
    fn name(&self) -> &str {
        "ValidatingAdmissionPolicy"
    }

    fn mutates(&self) -> bool {
        false
    }

    async fn ready(&self) -> Result<(), String> {
        let listed = |what: &str, ready: bool| match ready {
            true => Ok(()),
            false => Err(format!("the {what} have not been listed yet")),
        };
        let now = std::time::Duration::ZERO;
        let policies = tokio::time::timeout(now, self.policies.wait_until_ready()).await;
        listed("validatingadmissionpolicies", matches!(policies, Ok(Ok(()))))?;
        let bindings = tokio::time::timeout(now, self.bindings.wait_until_ready()).await;
        listed("validatingadmissionpolicybindings", matches!(bindings, Ok(Ok(()))))?;
        self.namespaces.ready().await
    }

    async fn validate(&self, a: &Attributes<'_>, object: &Value) -> ApiResult<()> {
        let mut bindings = self.bindings.state();
        if bindings.is_empty() {
            return Ok(());
        }
        bindings.sort_by(|x, y| x.metadata.name.cmp(&y.metadata.name));
        let object = (a.operation != super::Operation::Delete).then_some(object);
        let shared = Shared::default();
        for binding in bindings {
            let Some(policy_name) = binding.spec.as_ref().and_then(|s| s.policy_name.as_deref()) else {
                continue;
            };
            let Some(policy) = self.policies.get(&reflector::ObjectRef::new(policy_name)) else {
                continue;
            };
            if let Decision::Deny(code, reason, message) = self.judge(&policy, &binding, a, object, &shared).await? {
                // As upstream's dispatcher: admission's Forbidden wording, the policy's reason
                // and code, and the denial again as the one cause.
                let mut denied = ApiError::forbidden(a.meta, a.name, &message);
                denied.code = code;
                denied.reason = reason;
                if let Some(details) = denied.details.as_mut() {
                    details["causes"] = serde_json::json!([{"message": message}]);
                }
                return Err(denied);
            }
        }
        Ok(())
    }
}
