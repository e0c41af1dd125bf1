//! Who is asking and may they: the authentication, impersonation and authorization filters
//! over [`Guard`], which holds the authenticator and the authorizer.

use std::future::Future;
use std::sync::Arc;

use axum::extract::Request;
use axum::response::Response;
use serde_json::json;

use super::authn::{Authenticator, PeerCertificates, Unauthenticated, UserInfo};
use super::authz::{Authorizer, Decision, always_allowed};
use super::limits::{Bounds, bounded};
use crate::endpoints::error_response;
use crate::endpoints::params::Query;
use crate::endpoints::request_info::Verb;
use crate::endpoints::request_info::{RequestInfo, request_info_of};
use crate::status::ApiError;

/// The request's attributes, as the outermost filter found them (shared, not copied: every
/// filter and the handler reads the same parse).
pub(super) fn info_of(request: &Request) -> Arc<RequestInfo> {
    request
        .extensions()
        .get::<Arc<RequestInfo>>()
        .cloned()
        .unwrap_or_else(|| {
            let query = Query::of(request.extensions(), request.uri());
            Arc::new(request_info_of(
                request.method().as_str(),
                request.uri().path(),
                &query.0,
            ))
        })
}

/// Authentication and authorization state.
pub struct Guard {
    /// Who is asking.
    pub authenticator: Arc<Authenticator>,
    /// May they.
    pub authorizer: Arc<Authorizer>,
}

/// Authenticate (401), then impersonate: the user goes into the request's extensions (and
/// the authenticated one into the response's, for the request log). Health checks pass
/// without credentials.
pub async fn identify<F: Future<Output = Response>>(
    guard: &Guard,
    mut request: Request,
    next: impl FnOnce(Request) -> F,
) -> Response {
    let user = match authenticated(guard, &mut request).await {
        Ok(user) => user,
        Err(response) => return response,
    };
    if let Some(user) = &user {
        // Shared by every filter, the handler and the response's log line: one allocation.
        request.extensions_mut().insert(user.clone());
    }
    if let Err(response) = impersonated(guard, &mut request, user.as_ref()).await {
        return response;
    }
    let mut response = next(request).await;
    if let Some(user) = user {
        response.extensions_mut().insert(user);
    }
    response
}

/// Who is asking: None for a health check without credentials.
async fn authenticated(guard: &Guard, request: &mut Request) -> Result<Option<Arc<UserInfo>>, Response> {
    // The server's own in-process client: set only by `Server::client`, never from a socket.
    if let Some(Loopback(user)) = request.extensions().get::<Loopback>().cloned() {
        return Ok(Some(user));
    }
    let peer = request.extensions().get::<PeerCertificates>().cloned();
    match guard
        .authenticator
        .authenticate(peer.as_ref(), request.headers_mut())
        .await
    {
        Ok(user) => Ok(Some(user)),
        Err(_) if always_allowed(request.uri().path()) => Ok(None),
        Err(why) => {
            if let Unauthenticated::Token(reason) = why {
                tracing::info!(path = request.uri().path(), "unauthorized: {reason}");
            }
            Err(error_response(&ApiError::new(401, "Unauthorized", "Unauthorized")))
        }
    }
}

/// The identity of the server's in-process client (k8s.io/apiserver's loopback client):
/// a request extension, which no request from a connection can carry.
#[derive(Clone, Debug)]
pub struct Loopback(pub Arc<UserInfo>);

/// Authorize the authenticated user (403, or 500 when the review fails), then run the rest
/// of the chain within the request's [`Bounds`] (one layer, not three: each layer is a future
/// nested in the one outside it, moved and polled on every request).
pub async fn authorize<F: Future<Output = Response>>(
    guard: &Arc<Guard>,
    bounds: &Bounds,
    mut request: Request,
    next: impl FnOnce(Request) -> F,
) -> Response {
    let info = info_of(&request);
    match request.extensions().get::<Arc<UserInfo>>().cloned() {
        Some(user) => {
            if let Err(e) = check(guard, &user, &info).await {
                return error_response(&e);
            }
            let guard = guard.clone();
            request.extensions_mut().insert(AuthorizeMore { guard, user, info });
        }
        // Only the always-allowed health checks get here unauthenticated; anything else
        // without a user fails closed rather than skip authorization.
        None if always_allowed(&info.path) => {}
        None => return error_response(&ApiError::new(401, "Unauthorized", "Unauthorized")),
    }
    // One call site: each would hold room for the rest of the chain's future.
    bounded(bounds, request, next).await
}

async fn check(guard: &Guard, user: &UserInfo, info: &RequestInfo) -> Result<(), ApiError> {
    match guard.authorizer.authorize(user, info).await {
        Decision::Allow => Ok(()),
        Decision::Deny(reason) => {
            let mut error = ApiError::new(403, "Forbidden", info.forbidden_message(&user.name, &reason));
            if info.is_resource {
                error.details = Some(json!({"name": info.name, "group": info.group, "kind": info.resource}));
            }
            Err(error)
        }
        Decision::Error(e) => {
            tracing::error!(path = info.path, user = user.name, "authorization failed: {e}");
            Err(ApiError::internal(e))
        }
    }
}

/// For handlers whose request turns out to need another verb on the same resource (a delete
/// that ignores read errors): the authorized request, to authorize that verb too.
#[derive(Clone)]
pub struct AuthorizeMore {
    guard: Arc<Guard>,
    user: Arc<UserInfo>,
    info: Arc<RequestInfo>,
}

impl AuthorizeMore {
    /// 403 (or 500) unless the user may also `verb` what the request names.
    pub async fn verb(&self, verb: &str) -> Result<(), ApiError> {
        let info = RequestInfo {
            verb: Verb::named(verb),
            ..RequestInfo::clone(&self.info)
        };
        check(&self.guard, &self.user, &info).await
    }
}

/// The authenticated user who is impersonating the request's user.
#[derive(Clone, Debug)]
pub struct Impersonator(pub UserInfo);

/// `Impersonate-User`/`-Group`/`-Uid`/`-Extra-*`: act as another user when `user` may
/// `impersonate` each part (users, groups, uids, userextras), as kube-apiserver does.
async fn impersonated(guard: &Guard, request: &mut Request, user: Option<&Arc<UserInfo>>) -> Result<(), Response> {
    let headers = request.headers();
    if !headers.keys().any(|k| k.as_str().starts_with("impersonate-")) {
        return Ok(());
    }
    let values = |name: &str| super::authn::header_values(headers, name);
    let name = values("Impersonate-User").into_iter().next();
    let groups = values("Impersonate-Group");
    let uid = values("Impersonate-Uid").into_iter().next();
    let mut extra = std::collections::BTreeMap::<String, Vec<String>>::new();
    for (header, value) in headers {
        if let (Some(key), Ok(v)) = (header.as_str().strip_prefix("impersonate-extra-"), value.to_str()) {
            extra.entry(key.to_string()).or_default().push(v.to_string());
        }
    }
    if name.is_none() && groups.is_empty() && uid.is_none() && extra.is_empty() {
        return Ok(());
    }
    let Some(user) = user else {
        return Err(error_response(&ApiError::new(401, "Unauthorized", "Unauthorized")));
    };
    let Some(name) = name else {
        return Err(error_response(&ApiError::bad_request(
            "requested impersonation of groups, uid or extras without impersonating a user",
        )));
    };
    // Each part is authorized as `impersonate` on its own resource.
    let check = |group: &str, resource: &str, subresource: &str, name: &str| RequestInfo {
        is_resource: true,
        verb: Verb::named("impersonate"),
        group: group.into(),
        resource: resource.into(),
        subresource: subresource.into(),
        name: name.into(),
        ..Default::default()
    };
    let mut checks = vec![check("", "users", "", &name)];
    checks.extend(groups.iter().map(|g| check("", "groups", "", g)));
    checks.extend(uid.iter().map(|u| check("authentication.k8s.io", "uids", "", u)));
    for (key, values) in &extra {
        checks.extend(
            values
                .iter()
                .map(|v| check("authentication.k8s.io", "userextras", key, v)),
        );
    }
    for check in &checks {
        match guard.authorizer.authorize(user, check).await {
            Decision::Allow => {}
            Decision::Deny(reason) => {
                return Err(error_response(&ApiError::new(
                    403,
                    "Forbidden",
                    check.forbidden_message(&user.name, &reason),
                )));
            }
            Decision::Error(e) => return Err(error_response(&ApiError::internal(e))),
        }
    }
    let mut impersonated = if name == "system:anonymous" {
        UserInfo {
            name,
            groups,
            ..Default::default()
        }
    } else {
        UserInfo::authenticated(name, groups)
    };
    impersonated.uid = uid.unwrap_or_default();
    impersonated.extra = extra;
    let names: Vec<_> = request
        .headers()
        .keys()
        .filter(|k| k.as_str().starts_with("impersonate-"))
        .cloned()
        .collect();
    for header in names {
        request.headers_mut().remove(header);
    }
    request.extensions_mut().insert(Arc::new(impersonated));
    request.extensions_mut().insert(Impersonator(UserInfo::clone(user)));
    Ok(())
}
