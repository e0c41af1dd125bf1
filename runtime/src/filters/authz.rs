//! Authorization: `system:masters` and the health checks are always allowed; everything else
//! is decided by the core API with a `SubjectAccessReview`, with short-lived caches of both
//! answers. `AlwaysAllow` exists for local development only.

use std::time::Duration;

use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};

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
        let decision = match api.create(&kube::api::PostParams::default(), &review).await {
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
            verb: some(&info.verb),
            group: Some(info.group.clone()),
            version: some(&info.version),
            resource: some(&info.resource),
            subresource: some(&info.subresource),
            name: some(&info.name),
            ..Default::default()
        });
    } else {
        spec.non_resource_attributes = Some(NonResourceAttributes {
            path: Some(info.path.clone()),
            verb: Some(info.verb.clone()),
        });
    }
    SubjectAccessReview {
        spec,
        ..Default::default()
    }
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
        let info = crate::endpoints::request_info::request_info("GET", "/apis/g/v1/things", false);
        let admin = UserInfo::authenticated("admin".into(), vec!["system:masters".into()]);
        assert_eq!(authorizer.authorize(&admin, &info).await, Decision::Allow);
        let bob = UserInfo::authenticated("bob".into(), vec![]);
        assert!(matches!(authorizer.authorize(&bob, &info).await, Decision::Deny(_)));
        let open = Authorizer::new(AuthorizationMode::AlwaysAllow, None, Duration::ZERO, Duration::ZERO);
        assert_eq!(open.authorize(&bob, &info).await, Decision::Allow);
    }
}
