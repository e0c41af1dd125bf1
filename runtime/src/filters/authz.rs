//! Authorization: `system:masters` and the health checks are always allowed; everything else
//! is decided by the core API with a `SubjectAccessReview`, with short-lived caches of both
//! answers. `AlwaysAllow` exists for local development only.

use std::time::Duration;

use k8s_openapi::api::authorization::v1::{
    FieldSelectorAttributes, LabelSelectorAttributes, NonResourceAttributes, ResourceAttributes, SubjectAccessReview,
    SubjectAccessReviewSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldSelectorRequirement, LabelSelectorRequirement};

use super::authn::UserInfo;
use super::ttl_cache::TtlCache;
use crate::endpoints::request_info::RequestInfo;

/// Paths every request may reach (kubelet probes carry no credentials).
pub const ALWAYS_ALLOWED_PATHS: &[&str] = &["/healthz", "/livez", "/readyz"];
/// Most cached decisions; the cache is pruned (then cleared) when full.
const MAX_CACHED: usize = 10_000;

/// `--authorization-mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthorizationMode {
    /// SubjectAccessReview to the core API (the cluster default).
    #[default]
    #[value(name = "Delegated")]
    Delegated,
    /// Allow every authenticated request: local development only.
    #[value(name = "AlwaysAllow")]
    AlwaysAllow,
}

/// An authorization decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// 403, with the reviewer's reason (may be empty).
    Deny(String),
    /// The review failed: 500, never allowed.
    Error(String),
}

/// The authorizer.
pub struct Authorizer {
    mode: AuthorizationMode,
    client: Option<kube::Client>,
    allow_ttl: Duration,
    deny_ttl: Duration,
    cache: TtlCache<String, Decision>,
}

/// Whether `path` is one of the always-allowed health checks (or below one).
pub fn always_allowed(path: &str) -> bool {
    ALWAYS_ALLOWED_PATHS
        .iter()
        .any(|p| path == *p || path.strip_prefix(p).is_some_and(|rest| rest.starts_with('/')))
}

impl Authorizer {
    /// An authorizer in `mode`, asking the core API through `client` (Delegated).
    pub fn new(mode: AuthorizationMode, client: Option<kube::Client>, allow_ttl: Duration, deny_ttl: Duration) -> Self {
        Authorizer {
            mode,
            client,
            allow_ttl,
            deny_ttl,
            cache: TtlCache::new(MAX_CACHED),
        }
    }

    /// May `user` do what `info` describes?
    pub async fn authorize(&self, user: &UserInfo, info: &RequestInfo) -> Decision {
        if user.in_group("system:masters") || always_allowed(&info.path) {
            return Decision::Allow;
        }
        if self.mode == AuthorizationMode::AlwaysAllow {
            return Decision::Allow;
        }
        let Some(client) = &self.client else {
            return Decision::Deny(
                "no SubjectAccessReview endpoint: use --authorization-kubeconfig, run in a cluster, or (locally) --authorization-mode AlwaysAllow".into(),
            );
        };
        let review = review(user, info);
        let key = serde_json::to_string(&review.spec).expect("a review serializes");
        let ttl = |d: &Decision| {
            if *d == Decision::Allow {
                self.allow_ttl
            } else {
                self.deny_ttl
            }
        };
        if let Some(decision) = self.cache.get(&key, ttl) {
            return decision;
        }
        let api: kube::Api<SubjectAccessReview> = kube::Api::all(client.clone());
        // Boxed with the review: the HTTP call's future is kilobytes, and every request's
        // future would otherwise carry (and move) room for it.
        let asked = Box::pin(async move { super::authn::create_with_retries(&api, &review).await });
        let decision = match asked.await {
            Ok(answer) => {
                let status = answer.status.unwrap_or_default();
                if status.allowed && status.denied != Some(true) {
                    Decision::Allow
                } else {
                    Decision::Deny(status.reason.unwrap_or_default())
                }
            }
            Err(e) => return Decision::Error(format!("SubjectAccessReview failed: {e}")),
        };
        self.cache
            .insert(key, decision.clone(), self.allow_ttl.max(self.deny_ttl));
        decision
    }
}

/// The review kube-apiserver's webhook authorizer would send for this request.
fn review(user: &UserInfo, info: &RequestInfo) -> SubjectAccessReview {
    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let mut spec = SubjectAccessReviewSpec {
        user: Some(user.name.clone()),
        uid: some(&user.uid),
        groups: Some(user.groups.clone()),
        extra: (!user.extra.is_empty()).then(|| user.extra.clone().into_iter().collect()),
        ..Default::default()
    };
    if info.is_resource {
        spec.resource_attributes = Some(ResourceAttributes {
            namespace: some(&info.namespace),
            verb: some(info.verb.as_str()),
            group: Some(info.group.clone()),
            version: some(&info.version),
            resource: some(&info.resource),
            subresource: some(&info.subresource),
            name: some(&info.name),
            field_selector: field_selector_attributes(&info.field_selector),
            label_selector: label_selector_attributes(&info.label_selector),
        });
    } else {
        spec.non_resource_attributes = Some(NonResourceAttributes {
            path: Some(info.path.clone()),
            verb: Some(info.verb.to_string()),
        });
    }
    SubjectAccessReview {
        spec,
        ..Default::default()
    }
}

/// A list's `fieldSelector` as SubjectAccessReview requirements (kube-apiserver sends the
/// parsed requirements, so an authorizer can allow "list widgets with spec.color=red");
/// `None` when there is none or it does not parse (the handler refuses it then).
fn field_selector_attributes(raw: &str) -> Option<FieldSelectorAttributes> {
    if raw.is_empty() {
        return None;
    }
    let requirements = raw
        .split(',')
        .map(|term| {
            let (key, operator, value) = if let Some((k, v)) = term.split_once("!=") {
                (k, "NotIn", v)
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (k, "In", v)
            } else {
                return None;
            };
            Some(FieldSelectorRequirement {
                key: key.trim().to_string(),
                operator: operator.into(),
                values: Some(vec![value.trim().to_string()]),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(FieldSelectorAttributes {
        requirements: Some(requirements),
        raw_selector: None,
    })
}

/// A list's `labelSelector` as SubjectAccessReview requirements.
fn label_selector_attributes(raw: &str) -> Option<LabelSelectorAttributes> {
    if raw.is_empty() {
        return None;
    }
    let selector = crate::schema::selector::parse_labels(raw).ok()?;
    let requirement = |key: String, operator: &str, values: Vec<String>| LabelSelectorRequirement {
        key,
        operator: operator.into(),
        values: (!values.is_empty()).then_some(values),
    };
    let requirements = selector
        .into_iter()
        .map(|e| match e {
            kube_core::Expression::In(k, v) => requirement(k, "In", v.into_iter().collect()),
            kube_core::Expression::NotIn(k, v) => requirement(k, "NotIn", v.into_iter().collect()),
            kube_core::Expression::Equal(k, v) => requirement(k, "In", vec![v]),
            kube_core::Expression::NotEqual(k, v) => requirement(k, "NotIn", vec![v]),
            kube_core::Expression::Exists(k) => requirement(k, "Exists", vec![]),
            kube_core::Expression::DoesNotExist(k) => requirement(k, "DoesNotExist", vec![]),
        })
        .collect();
    Some(LabelSelectorAttributes {
        requirements: Some(requirements),
        raw_selector: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_checks_only() {
        assert!(always_allowed("/healthz") && always_allowed("/readyz/etcd") && always_allowed("/livez"));
        assert!(!always_allowed("/healthzx") && !always_allowed("/apis") && !always_allowed("/metrics"));
    }

    #[tokio::test]
    async fn masters_pass_and_no_reviewer_denies() {
        let authorizer = Authorizer::new(AuthorizationMode::Delegated, None, Duration::ZERO, Duration::ZERO);
        let info = crate::endpoints::request_info::request_info("GET", "/apis/g/v1/things", None);
        let admin = UserInfo::authenticated("admin".into(), vec!["system:masters".into()]);
        assert_eq!(authorizer.authorize(&admin, &info).await, Decision::Allow);
        let bob = UserInfo::authenticated("bob".into(), vec![]);
        assert!(matches!(authorizer.authorize(&bob, &info).await, Decision::Deny(_)));
        let open = Authorizer::new(AuthorizationMode::AlwaysAllow, None, Duration::ZERO, Duration::ZERO);
        assert_eq!(open.authorize(&bob, &info).await, Decision::Allow);
    }
}
