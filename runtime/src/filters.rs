//! The handler chain's filters, as k8s.io/apiserver's: authentication, authorization,
//! max-in-flight and request timeout, each an axum middleware over shared state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use futures::{FutureExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::audit::{AuditLog, Level, Origin, Record, Stage};
use crate::authn::{Authenticator, PeerCertificates, Unauthenticated, UserInfo};
use crate::authz::{Authorizer, Decision, always_allowed};
use crate::http::error_response;
use crate::metrics::Metrics;
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

/// The request's attributes, as the outermost filter found them.
fn info_of(request: &Request) -> RequestInfo {
    request
        .extensions()
        .get::<RequestInfo>()
        .cloned()
        .unwrap_or_else(|| request_info(request.method().as_str(), request.uri().path(), is_watch(request)))
}

/// Authentication and authorization state.
pub struct Guard {
    /// Who is asking.
    pub authenticator: Arc<Authenticator>,
    /// May they.
    pub authorizer: Authorizer,
}

/// Authenticate (401); the user goes into the request's extensions (and the response's, for
/// the request log). Health checks pass without credentials.
pub async fn authenticate(State(guard): State<Arc<Guard>>, mut request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<PeerCertificates>().cloned();
    let info = info_of(&request);
    match guard
        .authenticator
        .authenticate(peer.as_ref(), request.headers_mut())
        .await
    {
        Ok(user) => {
            request.extensions_mut().insert(user.clone());
            let mut response = next.run(request).await;
            response.extensions_mut().insert(user);
            response
        }
        Err(_) if always_allowed(&info.path) => next.run(request).await,
        Err(why) => {
            if let Unauthenticated::Token(reason) = why {
                tracing::info!(path = info.path, "unauthorized: {reason}");
            }
            error_response(&ApiError::new(401, "Unauthorized", "Unauthorized"))
        }
    }
}

/// Authorize the authenticated user (403, or 500 when the review fails).
pub async fn authorize(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let info = info_of(&request);
    let Some(user) = request.extensions().get::<UserInfo>().cloned() else {
        // Only the always-allowed health checks get here unauthenticated.
        return next.run(request).await;
    };
    match guard.authorizer.authorize(&user, &info).await {
        Decision::Allow => next.run(request).await,
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

/// The authenticated user who is impersonating the request's user.
#[derive(Clone, Debug)]
pub struct Impersonator(pub UserInfo);

/// `Impersonate-User`/`-Group`/`-Uid`/`-Extra-*`: act as another user when allowed to
/// `impersonate` each part (users, groups, uids, userextras), as kube-apiserver does.
pub async fn impersonate(State(guard): State<Arc<Guard>>, mut request: Request, next: Next) -> Response {
    let headers = request.headers();
    let values = |name: &str| crate::authn::header_values(headers, name);
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
        return next.run(request).await;
    }
    let Some(user) = request.extensions().get::<UserInfo>().cloned() else {
        return error_response(&ApiError::new(401, "Unauthorized", "Unauthorized"));
    };
    let Some(name) = name else {
        return error_response(&ApiError::bad_request(
            "requested impersonation of groups, uid or extras without impersonating a user",
        ));
    };
    // Each part is authorized as `impersonate` on its own resource.
    let check = |group: &str, resource: &str, subresource: &str, name: &str| RequestInfo {
        is_resource: true,
        verb: "impersonate".into(),
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
        match guard.authorizer.authorize(&user, check).await {
            Decision::Allow => {}
            Decision::Deny(reason) => {
                return error_response(&ApiError::new(
                    403,
                    "Forbidden",
                    check.forbidden_message(&user.name, &reason),
                ));
            }
            Decision::Error(e) => return error_response(&ApiError::internal(e)),
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
    request.extensions_mut().insert(impersonated);
    request.extensions_mut().insert(Impersonator(user));
    next.run(request).await
}

/// The request's audit ID: the client's `Audit-ID` header, or a new UUID.
#[derive(Clone, Debug)]
pub struct AuditId(pub String);

/// The peer's address, per connection.
#[derive(Clone, Copy, Debug)]
pub struct RemoteAddr(pub std::net::SocketAddr);

/// A body that runs `guard`'s drop when the body is finished or abandoned.
fn on_drop(body: Body, guard: impl Send + Sync + 'static) -> Body {
    Body::from_stream(body.into_data_stream().map(move |chunk| {
        let _ = &guard;
        chunk
    }))
}

/// Whether the request is a server-side apply patch.
fn is_apply(request: &Request) -> bool {
    request.method() == axum::http::Method::PATCH
        && request
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with(crate::patch::APPLY_PATCH))
}

/// Outermost: the audit ID (honoured from the client, always returned), metrics, and one
/// log line per request (method, path, user, code, latency; never bodies).
pub async fn instrument(State(metrics): State<Arc<Metrics>>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let info = info_of(&request);
    let labels = metrics.labels(
        &info,
        is_apply(&request),
        request.uri().query().is_some_and(|q| q.contains("dryRun=All")),
    );
    let audit_id = request
        .headers()
        .get("Audit-ID")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string);
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    request.extensions_mut().insert(AuditId(audit_id.clone()));
    request.extensions_mut().insert(metrics.clone());
    request.extensions_mut().insert(info.clone());
    let mut response = next.run(request).await;
    let code = response.status().as_u16();
    let size = axum::body::HttpBody::size_hint(response.body()).exact();
    metrics.observe(&labels, code, started.elapsed(), size);
    if let Ok(v) = HeaderValue::from_str(&audit_id) {
        response.headers_mut().insert("Audit-ID", v);
    }
    let user = response
        .extensions()
        .get::<UserInfo>()
        .map(|u| u.name.clone())
        .unwrap_or_default();
    tracing::info!(
        target: "apiary::request",
        %method, path, user, code, latency_ms = started.elapsed().as_secs_f64() * 1000.0, audit_id,
        "request"
    );
    if info.verb == "watch" && code == 200 {
        let running = metrics.longrunning(&labels);
        let (parts, body) = response.into_parts();
        response = Response::from_parts(parts, on_drop(body, running));
    }
    response
}

/// Write the audit events of a request at the level its policy gives (after authentication,
/// so every event has a user; before authorization, so denials are audited too).
pub async fn audit(State(log): State<Arc<AuditLog>>, request: Request, next: Next) -> Response {
    let info = info_of(&request);
    let Some(user) = request.extensions().get::<UserInfo>().cloned() else {
        return next.run(request).await;
    };
    let (level, omit) = log.policy().decide(&user, &info);
    if level == Level::None {
        return next.run(request).await;
    }
    let audit_id = request
        .extensions()
        .get::<AuditId>()
        .map(|a| a.0.clone())
        .unwrap_or_default();
    let uri = request
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let mut source_ips: Vec<String> = request
        .headers()
        .get("X-Forwarded-For")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if let Some(RemoteAddr(addr)) = request.extensions().get::<RemoteAddr>() {
        source_ips.push(addr.ip().to_string());
    }
    let agent = request
        .headers()
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let origin = Origin {
        audit_id: &audit_id,
        uri: &uri,
        source_ips,
        user_agent: agent.as_deref(),
    };
    let impersonator = request.extensions().get::<Impersonator>().map(|i| i.0.clone());
    let mut record = Record::new(level, omit, origin, impersonator.as_ref().unwrap_or(&user), &info);
    if impersonator.is_some() {
        record.impersonated(&user);
    }
    let request = if level >= Level::Request && matches!(info.verb.as_str(), "create" | "update" | "patch") {
        let (parts, body) = request.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, crate::http::MAX_BODY).await else {
            return error_response(&ApiError::too_large(crate::http::MAX_BODY));
        };
        if let Ok(object) = serde_json::from_slice::<Value>(&bytes) {
            record.event["requestObject"] = object;
        }
        Request::from_parts(parts, Body::from(bytes))
    } else {
        request
    };
    if let Some(event) = record.at(Stage::RequestReceived) {
        log.write(&event);
    }
    let response = match std::panic::AssertUnwindSafe(next.run(request)).catch_unwind().await {
        Ok(response) => response,
        Err(_) => {
            record.respond(500, None);
            if let Some(event) = record.at(Stage::Panic) {
                log.write(&event);
            }
            return error_response(&ApiError::internal("the request handler panicked"));
        }
    };
    let code = response.status().as_u16();
    if info.verb == "watch" && code == 200 {
        record.respond(code, None);
        if let Some(event) = record.at(Stage::ResponseStarted) {
            log.write(&event);
        }
        let (parts, body) = response.into_parts();
        let finished = WatchDone { log, record };
        return Response::from_parts(parts, on_drop(body, finished));
    }
    // The body is read only when the event needs it: the object at RequestResponse, the
    // Status of a failure otherwise; a Metadata event of a large list parses nothing.
    if level < Level::RequestResponse && code < 400 {
        record.respond(code, None);
        if let Some(event) = record.at(Stage::ResponseComplete) {
            log.write(&event);
        }
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let object = serde_json::from_slice::<Value>(&bytes).ok();
    record.respond(code, object.as_ref());
    if level == Level::RequestResponse
        && let Some(object) = object
    {
        record.event["responseObject"] = object;
    }
    if let Some(event) = record.at(Stage::ResponseComplete) {
        log.write(&event);
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// Writes a watch's ResponseComplete event when its body ends.
struct WatchDone {
    log: Arc<AuditLog>,
    record: Record,
}

impl Drop for WatchDone {
    fn drop(&mut self) {
        if let Some(event) = self.record.at(Stage::ResponseComplete) {
            self.log.write(&event);
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
    let metrics = request.extensions().get::<Arc<Metrics>>().cloned();
    if is_watch(&request) || always_allowed(request.uri().path()) {
        return next.run(request).await;
    }
    let mutating = !matches!(request.method().as_str(), "GET" | "HEAD" | "OPTIONS");
    let limit = if mutating { &limits.writes } else { &limits.reads };
    let _counted = metrics.map(|m| m.inflight(if mutating { "mutating" } else { "readOnly" }));
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
