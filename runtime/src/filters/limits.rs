//! Bounds on work in progress: max-in-flight (429 with `Retry-After`) and the request
//! timeout (504); watches are long-running and exempt from both.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tokio::sync::Semaphore;

use super::access::is_watch;
use super::authz::always_allowed;
use super::metrics::Metrics;
use crate::endpoints::error_response;
use crate::status::ApiError;

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
