//! The handler chain's filters, as k8s.io/apiserver's: authentication, authorization,
//! max-in-flight and request timeout, each an axum middleware over shared state.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::authn::{Authenticator, PeerCertificates, Unauthenticated};
use crate::authz::{Authorizer, Decision, always_allowed};
use crate::http::error_response;
use crate::request_info::{RequestInfo, request_info};
use crate::status::ApiError;

/// Whether the query asks for a watch.
fn is_watch(request: &Request) -> bool {
    request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .any(|p| matches!(p, "watch=true" | "watch=1" | "watch"))
}

/// The request's attributes (also for later filters and handlers).
fn info_of(request: &Request) -> RequestInfo {
    request_info(request.method().as_str(), request.uri().path(), is_watch(request))
}

/// Authentication and authorization state.
pub struct Guard {
    /// Who is asking.
    pub authenticator: Arc<Authenticator>,
    /// May they.
    pub authorizer: Authorizer,
}

/// Authenticate (401), then authorize (403, or 500 when the review fails); the user goes into
/// the request's extensions. Health checks pass without credentials.
pub async fn guard(State(guard): State<Arc<Guard>>, mut request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<PeerCertificates>().cloned();
    let info = info_of(&request);
    let user = match guard
        .authenticator
        .authenticate(peer.as_ref(), request.headers_mut())
        .await
    {
        Ok(user) => user,
        Err(_) if always_allowed(&info.path) => return next.run(request).await,
        Err(why) => {
            if let Unauthenticated::Token(reason) = why {
                tracing::info!(path = info.path, "unauthorized: {reason}");
            }
            return error_response(&ApiError::new(401, "Unauthorized", "Unauthorized"));
        }
    };
    match guard.authorizer.authorize(&user, &info).await {
        Decision::Allow => {
            request.extensions_mut().insert(user);
            next.run(request).await
        }
        Decision::Deny(reason) => {
            let mut error = ApiError::new(403, "Forbidden", info.forbidden_message(&user.name, &reason));
            if info.is_resource {
                error.details = Some(json!({"name": info.name, "group": info.group, "kind": info.resource}));
            }
            error_response(&error)
        }
        Decision::Error(e) => {
            tracing::error!(path = info.path, user = user.name, "authorization failed: {e}");
            error_response(&ApiError::internal(e))
        }
    }
}

/// In-flight limits (`--max-requests-inflight`, `--max-mutating-requests-inflight`);
/// watches are long-running and not counted.
pub struct InFlight {
    /// Reads.
    pub reads: Semaphore,
    /// Writes.
    pub writes: Semaphore,
}

/// 429 with `Retry-After` when the request's class is at its limit.
pub async fn max_in_flight(State(limits): State<Arc<InFlight>>, request: Request, next: Next) -> Response {
    if is_watch(&request) || always_allowed(request.uri().path()) {
        return next.run(request).await;
    }
    let mutating = !matches!(request.method().as_str(), "GET" | "HEAD" | "OPTIONS");
    let limit = if mutating { &limits.writes } else { &limits.reads };
    let Ok(_permit) = limit.try_acquire() else {
        let mut response = error_response(&ApiError::new(
            429,
            "TooManyRequests",
            "Too many requests, please try again later.",
        ));
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    };
    next.run(request).await
}

/// 504 Timeout when a request (other than a watch) takes longer than `limit`.
pub async fn timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    if is_watch(&request) {
        return next.run(request).await;
    }
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => error_response(&ApiError::new(
            504,
            "Timeout",
            format!(
                "the server was unable to return a response in the time allotted ({limit:?}), but may still be processing the request"
            ),
        )),
    }
}
