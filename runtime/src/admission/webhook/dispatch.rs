//! Calling one webhook the way kube-apiserver's dispatchers do (`mutating/dispatcher.go`,
//! `validating/dispatcher.go`): whether it applies, the dry-run rule, the timeout cut to the
//! request's deadline, the review, and what its answer or failure means under its
//! `failurePolicy`, with metrics, warnings and audit annotations.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::super::Attributes;
use super::super::cel::{self, Programs, Variables};
use super::super::matching::Equivalent;
use super::super::metrics::{AdmissionMetrics, Rejection};
use super::super::namespace::Namespaces;
use super::client::Caller;
use super::hook::Hook;
use super::review::{self, Answer};
use crate::cel::authz::Checks;
use crate::filters::authz::Authorizer;
use crate::status::{ApiError, ApiResult};

/// The status reasons of `metav1`; a webhook's refusal keeps its reason when it is one.
const REASONS: &[&str] = &[
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "AlreadyExists",
    "Conflict",
    "Gone",
    "Invalid",
    "ServerTimeout",
    "Timeout",
    "TooManyRequests",
    "BadRequest",
    "MethodNotAllowed",
    "NotAcceptable",
    "RequestEntityTooLarge",
    "UnsupportedMediaType",
    "InternalError",
    "Expired",
    "ServiceUnavailable",
];

/// What calls one plugin's webhooks.
pub(super) struct Dispatcher<'a> {
    pub caller: &'a Caller,
    /// The webhooks' compiled `matchConditions`.
    pub programs: &'a Programs,
    pub namespaces: &'a Namespaces,
    pub metrics: Option<&'a AdmissionMetrics>,
    /// Answers `authorizer` checks in `matchConditions` (unbound without one).
    pub authorizer: Option<&'a Arc<Authorizer>>,
    /// `admit` (mutating) or `validating`, as upstream labels metrics.
    pub kind: &'static str,
    /// `mutation` or `validating`, as upstream names failed-open annotations.
    pub annotation: &'static str,
}

/// A call's outcome besides a refusal.
pub(super) enum Called {
    /// The webhook answered and allowed the request.
    Allowed(Answer),
    /// The call failed and `failurePolicy: Ignore` let the request through.
    FailedOpen,
    /// A `matchCondition` was false: the webhook was not called.
    Skipped,
}

/// A call that did not produce an answer: why, and the HTTP code it got, if any.
struct CallError(String, u16);

impl Dispatcher<'_> {
    /// Whether `hook` applies to the request (rules, objectSelector, namespaceSelector).
    pub async fn applies(&self, hook: &Hook<'_>, a: &Attributes<'_>, object: Option<&Value>) -> ApiResult<bool> {
        if !hook.rules_match(a) {
            return Ok(false);
        }
        super::super::matching::selected(&hook.selection(), self.namespaces, a, object).await
    }

    /// The request as `hook` sees it when its rules name another version of the resource
    /// (and select it there): `matchPolicy: Equivalent`.
    pub async fn equivalent(
        &self,
        hook: &Hook<'_>,
        a: &Attributes<'_>,
        object: Option<&Value>,
    ) -> ApiResult<Option<Equivalent>> {
        if !hook.equivalent {
            return Ok(None);
        }
        let Some(found) = Equivalent::find(a, object, |a| hook.rules_match(a))? else {
            return Ok(None);
        };
        let selected = super::super::matching::selected(
            &hook.selection(),
            self.namespaces,
            &found.attributes(a),
            found.object.as_ref(),
        )
        .await?;
        Ok(selected.then_some(found))
    }

    /// Call `hook` (the `index`th webhook of `round`) about `object` (`None` for a delete).
    pub async fn call(
        &self,
        hook: &Hook<'_>,
        a: &Attributes<'_>,
        object: Option<&Value>,
        (round, index): (usize, usize),
    ) -> ApiResult<Called> {
        if a.dry_run && !hook.dry_run_safe {
            return Err(ApiError::bad_request(format!(
                "admission webhook {:?} does not support dry run",
                hook.name
            )));
        }
        let started = Instant::now();
        let outcome = match self.conditions(hook, a, object).await {
            Ok(false) => return Ok(Called::Skipped),
            Ok(true) => self.exchange(hook, a, object).await,
            Err(why) => Err(CallError(format!("failed to evaluate match condition: {why}"), 0)),
        };
        let answer = match outcome {
            Ok(answer) => answer,
            Err(CallError(why, code)) => {
                let message = format!("failed calling webhook {:?}: {why}", hook.name);
                if !hook.fail_closed {
                    tracing::warn!("{message}; failurePolicy is Ignore, so the request goes on");
                    if let Some(scope) = a.scope {
                        scope.annotate(
                            format!(
                                "failed-open.{}.webhook.admission.k8s.io/round_{round}_index_{index}",
                                self.annotation
                            ),
                            hook.name.to_string(),
                        );
                    }
                    self.observe(hook, a, started, code, None);
                    return Ok(Called::FailedOpen);
                }
                tracing::warn!("{message}");
                self.observe(hook, a, started, code, Some((Rejection::CallingWebhook, 500)));
                return Err(ApiError::internal(message));
            }
        };
        for warning in &answer.warnings {
            a.warn(warning);
        }
        if let Some(scope) = a.scope {
            for (key, value) in &answer.audit_annotations {
                scope.annotate(format!("{}/{key}", hook.name), value.clone());
            }
        }
        if !answer.allowed {
            let denied = refusal(hook.name, answer.status.as_ref());
            self.observe(hook, a, started, 200, Some((Rejection::Denied, denied.code)));
            return Err(denied);
        }
        self.observe(hook, a, started, 200, None);
        Ok(Called::Allowed(answer))
    }

    /// Whether every `matchCondition` of `hook` holds (upstream's matcher: one false skips the
    /// webhook whatever else failed; else any error is the call's failure).
    async fn conditions(&self, hook: &Hook<'_>, a: &Attributes<'_>, object: Option<&Value>) -> Result<bool, String> {
        if hook.match_conditions.is_empty() {
            return Ok(true);
        }
        let mut variables = Variables::new(object, a.old_object, super::request_variable(a));
        if let Some(authorizer) = self.authorizer {
            variables.authorize(a, Checks::new(a.user.cloned(), authorizer.clone()));
        }
        let budget = crate::cel::Budget::default();
        let mut errors = Vec::new();
        for condition in hook.match_conditions {
            let holds = match self.programs.compile(&condition.expression) {
                Ok(program) => cel::evaluate(&program, &variables, &budget).await,
                Err(e) => Err(crate::cel::Failure::Error(e)),
            };
            match holds {
                Ok(true) => {}
                Ok(false) => return Ok(false),
                Err(e) => errors.push(format!("{}: {e}", condition.name)),
            }
        }
        match errors.is_empty() {
            true => Ok(true),
            false => Err(errors.join("; ")),
        }
    }

    /// Send the review and read the answer.
    async fn exchange(&self, hook: &Hook<'_>, a: &Attributes<'_>, object: Option<&Value>) -> Result<Answer, CallError> {
        let fail = |why: String| CallError(why, 0);
        let version = review::version(hook.review_versions).map_err(fail)?;
        let uid = uuid::Uuid::new_v4().to_string();
        let body = review::request(a, object, a.old_object, &uid, version);
        let body = serde_json::to_vec(&body).map_err(|e| fail(e.to_string()))?;
        let mut timeout = hook.timeout;
        if let Some(deadline) = a.scope.and_then(|s| s.deadline()) {
            // Upstream rounds the time left up to whole seconds.
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(fail("the request's deadline has passed".into()));
            }
            timeout = timeout.min(Duration::from_secs(left.as_secs() + u64::from(left.subsec_nanos() > 0)));
        }
        let (code, bytes) = self
            .caller
            .post(hook.client, body, timeout)
            .await
            .map_err(|e| fail(format!("failed to call webhook: {e}")))?;
        if !(200..300).contains(&code) {
            return Err(CallError(
                format!("failed to call webhook: the server responded with the status code {code}"),
                code,
            ));
        }
        review::answer(&bytes, version, &uid, self.kind == "admit")
            .map_err(|e| CallError(format!("received invalid webhook response: {e}"), code))
    }

    fn observe(
        &self,
        hook: &Hook<'_>,
        a: &Attributes<'_>,
        started: Instant,
        code: u16,
        rejection: Option<(Rejection, u16)>,
    ) {
        if let Some(metrics) = self.metrics {
            metrics.webhook(hook.name, self.kind, a.operation, started, code, rejection);
        }
    }
}

/// A webhook's refusal as the client sees it (upstream's `ToStatusErr`).
fn refusal(name: &str, status: Option<&Value>) -> ApiError {
    let empty = Value::Null;
    let status = status.unwrap_or(&empty);
    let text = |key: &str| status[key].as_str().filter(|s| !s.is_empty());
    let denied = format!("admission webhook {name:?} denied the request");
    let message = match (text("message"), text("reason")) {
        (Some(message), _) => format!("{denied}: {message}"),
        (None, Some(reason)) => format!("{denied}: {reason}"),
        (None, None) => format!("{denied} without explanation"),
    };
    let code = status["code"]
        .as_u64()
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| *c >= 400)
        .unwrap_or(400);
    let reason = text("reason")
        .and_then(|r| REASONS.iter().find(|known| **known == r))
        .copied()
        .unwrap_or("");
    ApiError {
        details: status.get("details").filter(|d| d.is_object()).cloned(),
        ..ApiError::new(code, reason, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn refusals_read_as_upstream_writes_them() {
        let e = refusal(
            "v.example.com",
            Some(&json!({"code": 403, "reason": "Forbidden", "message": "no"})),
        );
        assert_eq!((e.code, e.reason), (403, "Forbidden"));
        assert_eq!(e.message, r#"admission webhook "v.example.com" denied the request: no"#);
        let e = refusal("v", Some(&json!({"code": 200, "reason": "Custom"})));
        assert_eq!((e.code, e.reason), (400, ""));
        assert_eq!(e.message, r#"admission webhook "v" denied the request: Custom"#);
        let e = refusal("v", None);
        assert_eq!(
            e.message,
            r#"admission webhook "v" denied the request without explanation"#
        );
    }
}
