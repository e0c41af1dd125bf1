//! The outermost filters: the audit ID, metrics and the request log line ([`instrument`]),
//! then the audit log's stages ([`audit`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::response::Response;
use futures::FutureExt;
use serde_json::Value;

use super::access::{Impersonator, info_of};
use super::audit::{AuditAnnotations, AuditLog, Level, Origin, Record, Stage};
use super::authn::UserInfo;
use super::metrics::Metrics;
use crate::endpoints::error_response;
use crate::endpoints::params::Query;
use crate::endpoints::request_info::Verb;
use crate::status::ApiError;

/// The request's audit ID: the client's `Audit-ID` header, or a new UUID.
#[derive(Clone, Debug)]
pub struct AuditId(pub String);

/// The peer's address, per connection.
#[derive(Clone, Copy, Debug)]
pub struct RemoteAddr(pub std::net::SocketAddr);

/// Whether the request is a server-side apply patch.
fn is_apply(request: &Request) -> bool {
    request.method() == axum::http::Method::PATCH
        && request
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with(crate::registry::patch::APPLY_PATCH))
}

/// Outermost: the audit ID (honoured from the client, always returned), metrics, and one
/// log line per request (method, path, user, code, latency; never bodies).
pub async fn instrument<F: Future<Output = Response>>(
    metrics: &Arc<Metrics>,
    mut request: Request,
    next: impl FnOnce(Request) -> F,
) -> Response {
    let started = Instant::now();
    // The one parse of the query, shared with the request info and the handler.
    let query = Query::of(request.extensions(), request.uri());
    request.extensions_mut().insert(query.clone());
    let info = info_of(&request);
    let labels = metrics.labels(
        &info,
        is_apply(&request),
        query.0.get("dryRun").is_some_and(|d| d == "All"),
    );
    let audit_id = request
        .headers()
        .get("Audit-ID")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string);
    let method = request.method().clone();
    // Inner layers may answer without reading the body (401, 403, 413, 429): the slot keeps it
    // so it can be drained or the connection closed once the answer is known.
    let (mut request, body) = super::limits::hold_body(request);
    request.extensions_mut().insert(AuditId(audit_id.clone()));
    request.extensions_mut().insert(metrics.clone());
    request.extensions_mut().insert(info.clone());
    let mut response = next(request).await;
    let code = response.status().as_u16();
    let size = axum::body::HttpBody::size_hint(response.body()).exact();
    metrics.observe(&labels, code, started.elapsed(), size);
    if let Ok(v) = HeaderValue::from_str(&audit_id) {
        response.headers_mut().insert("Audit-ID", v);
    }
    body.settle(&mut response);
    // As k8s.io/apiserver's httplog: every request at -v 3 (debug), server errors always. The
    // macros evaluate their fields only when their level is on.
    let user = response
        .extensions()
        .get::<Arc<UserInfo>>()
        .map_or("", |u| u.name.as_str());
    let (path, latency_ms) = (info.path.as_str(), started.elapsed().as_secs_f64() * 1000.0);
    if code >= 500 {
        tracing::info!(target: "apiary::request", %method, path, user, code, latency_ms, audit_id, "request");
    } else {
        tracing::debug!(target: "apiary::request", %method, path, user, code, latency_ms, audit_id, "request");
    }
    if size.is_none() && info.verb != Verb::Watch {
        let (metrics, labels) = (metrics.clone(), labels.clone());
        let (parts, body) = response.into_parts();
        let body = super::limits::with_byte_count(body, move |bytes| metrics.observe_size(&labels, bytes));
        response = Response::from_parts(parts, body);
    }
    if info.verb == Verb::Watch && code == 200 {
        let running = metrics.longrunning(&labels);
        let (parts, body) = response.into_parts();
        response = Response::from_parts(parts, super::limits::with_guard(body, running));
    }
    response
}

/// Write the audit events of a request at the level its policy gives (after authentication,
/// so every event has a user; before authorization, so denials are audited too).
pub async fn audit<F: Future<Output = Response>>(
    log: &Arc<AuditLog>,
    request: Request,
    next: impl FnOnce(Request) -> F,
) -> Response {
    let info = info_of(&request);
    let Some(user) = request.extensions().get::<Arc<UserInfo>>().cloned() else {
        return next(request).await;
    };
    let (level, omit) = log.policy().decide(&user, &info);
    if level == Level::None {
        return next(request).await;
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
    let request = if level >= Level::Request && matches!(info.verb, Verb::Create | Verb::Update | Verb::Patch) {
        let (parts, body) = request.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, crate::endpoints::MAX_BODY).await else {
            return error_response(&ApiError::too_large(crate::endpoints::MAX_BODY));
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
    let response = match std::panic::AssertUnwindSafe(next(request)).catch_unwind().await {
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
    if let Some(annotations) = response.extensions().get::<AuditAnnotations>() {
        record.annotate(annotations);
    }
    if info.verb == Verb::Watch && code == 200 {
        record.respond(code, None);
        if let Some(event) = record.at(Stage::ResponseStarted) {
            log.write(&event);
        }
        let (parts, body) = response.into_parts();
        let finished = WatchDone {
            log: log.clone(),
            record,
        };
        return Response::from_parts(parts, super::limits::with_guard(body, finished));
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
