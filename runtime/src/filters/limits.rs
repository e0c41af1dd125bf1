//! Bounds on work in progress: max-in-flight (429 with `Retry-After`) and the request
//! timeout (504); watches are long-running and exempt from both.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::response::Response;
use tokio::sync::Semaphore;

use super::access::info_of;
use super::authn::UserInfo;
use super::authz::always_allowed;
use super::metrics::Metrics;
use crate::endpoints::error_response;
use crate::endpoints::request_info::Verb;
use crate::status::ApiError;

/// In-flight limits (`--max-requests-inflight`, `--max-mutating-requests-inflight`);
/// watches are long-running and not counted.
pub struct InFlight {
    /// Reads.
    pub reads: Semaphore,
    /// Writes.
    pub writes: Semaphore,
}

/// When a request times out (in its extensions, for the steps that must finish before).
#[derive(Clone, Copy, Debug)]
pub struct Deadline(pub std::time::Instant);

/// The bounds of a request's work: the in-flight limits and the request timeout.
pub struct Bounds {
    /// `--max-requests-inflight`, `--max-mutating-requests-inflight`.
    pub in_flight: InFlight,
    /// `--request-timeout`.
    pub timeout: Duration,
}

/// Run the rest of the chain within the in-flight limits (429 with `Retry-After` when the
/// request's class is at its limit) and `timeout` (504); watches are exempt from both, health
/// checks from the in-flight limits.
pub async fn bounded<F: Future<Output = Response>>(
    bounds: &Bounds,
    mut request: Request,
    next: impl FnOnce(Request) -> F,
) -> Response {
    let (limits, timeout) = (&bounds.in_flight, bounds.timeout);
    if info_of(&request).verb == Verb::Watch {
        return next(request).await;
    }
    let mut _permit = None;
    let mut _counted = None;
    if !always_allowed(request.uri().path()) {
        let mutating = !matches!(request.method().as_str(), "GET" | "HEAD" | "OPTIONS");
        let limit = if mutating { &limits.writes } else { &limits.reads };
        _counted = request
            .extensions()
            .get::<Arc<Metrics>>()
            .map(|m| m.inflight(if mutating { "mutating" } else { "readOnly" }));
        match limit.try_acquire() {
            Ok(permit) => _permit = Some(permit),
            // As upstream's max-in-flight filter: system:masters (an administrator, or the
            // server's own loopback client its controllers use) is never refused, though it
            // takes a free slot like anyone while there is one.
            Err(_) if privileged(&request) => {}
            Err(_) => return too_many_requests(),
        }
    }
    request
        .extensions_mut()
        .insert(Deadline(std::time::Instant::now() + timeout));
    match tokio::time::timeout(timeout, next(request)).await {
        Ok(response) => response,
        Err(_) => error_response(&ApiError::new(
            504,
            "Timeout",
            format!(
                "the server was unable to return a response in the time allotted ({timeout:?}), but may still be processing the request"
            ),
        )),
    }
}

/// Whether the request's user is in `system:masters`.
fn privileged(request: &Request) -> bool {
    request
        .extensions()
        .get::<Arc<UserInfo>>()
        .is_some_and(|user| user.in_group("system:masters"))
}

/// 429 with `Retry-After: 1`, in kube-apiserver's words.
fn too_many_requests() -> Response {
    let mut response = error_response(&ApiError::new(
        429,
        "TooManyRequests",
        "Too many requests, please try again later.",
    ));
    response
        .headers_mut()
        .insert(axum::http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Most bytes of an unread request body drained after an early answer so the connection
/// can be reused (and a client still sending it reads the answer instead of a broken pipe);
/// a larger or longer body closes the connection instead.
pub const EARLY_ANSWER_DRAIN_BYTES: u64 = 2 * crate::endpoints::MAX_BODY as u64;
/// Longest time spent draining such a body.
pub const EARLY_ANSWER_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

type Slot = Arc<std::sync::Mutex<Option<Body>>>;

/// The request body as the outermost filter holds it: inner layers read it through a proxy,
/// and whatever they left unread is dealt with by [`HeldBody::settle`].
pub struct HeldBody {
    slot: Option<Slot>,
    declared: Option<u64>,
    http1: bool,
}

/// A body that reads from the held one.
struct Proxy(Slot);

impl axum::body::HttpBody for Proxy {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let mut slot = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match slot.as_mut() {
            Some(body) => std::pin::Pin::new(body).poll_frame(cx),
            None => std::task::Poll::Ready(None),
        }
    }
}

/// Keep `request`'s body in a slot; the request gets a proxy reading from it.
pub fn hold_body(request: Request) -> (Request, HeldBody) {
    let http1 = request.version() <= axum::http::Version::HTTP_11;
    // A request without a body (most GETs) has nothing to hold.
    if axum::body::HttpBody::is_end_stream(request.body()) {
        let nothing = HeldBody {
            slot: None,
            declared: None,
            http1,
        };
        return (request, nothing);
    }
    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let slot: Slot = Arc::new(std::sync::Mutex::new(Some(body)));
    let held = HeldBody {
        slot: Some(slot.clone()),
        declared,
        http1,
    };
    (Request::from_parts(parts, Body::new(Proxy(slot))), held)
}

impl HeldBody {
    /// After the answer: a body read to its end needs nothing; a small unread one is drained
    /// in the background (bounded in bytes and time); a large one closes the connection.
    pub fn settle(self, response: &mut Response) {
        let Some(body) = self
            .slot
            .and_then(|slot| slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take())
        else {
            return;
        };
        if axum::body::HttpBody::is_end_stream(&body) {
            return;
        }
        if self.declared.is_some_and(|len| len > EARLY_ANSWER_DRAIN_BYTES) {
            if self.http1 {
                response
                    .headers_mut()
                    .insert(axum::http::header::CONNECTION, HeaderValue::from_static("close"));
            }
            return;
        }
        tokio::spawn(async move {
            let limited = http_body_util::Limited::new(body, EARLY_ANSWER_DRAIN_BYTES as usize);
            let _ = tokio::time::timeout(
                EARLY_ANSWER_DRAIN_TIMEOUT,
                http_body_util::BodyExt::collect(http_body_util::BodyExt::map_frame(limited, |f| {
                    f.map_data(|_| axum::body::Bytes::new())
                })),
            )
            .await;
        });
    }
}

/// `body` with `guard` kept alive until the body is finished or abandoned (size hint and
/// trailers unchanged): in-flight and long-running counts follow the response's real end.
pub fn with_guard(body: Body, guard: impl Send + Sync + Unpin + 'static) -> Body {
    with_byte_count(body, move |_| drop(guard))
}

/// `body` counting the bytes it carries, told to `on_end` when it is finished or abandoned
/// (for the sizes of streamed answers, which have no length up front).
pub fn with_byte_count(body: Body, on_end: impl FnOnce(u64) + Send + Sync + Unpin + 'static) -> Body {
    Body::new(Counted {
        body,
        bytes: 0,
        on_end: Some(on_end),
    })
}

struct Counted<F: FnOnce(u64)> {
    body: Body,
    bytes: u64,
    on_end: Option<F>,
}

impl<F: FnOnce(u64)> Drop for Counted<F> {
    fn drop(&mut self) {
        if let Some(on_end) = self.on_end.take() {
            on_end(self.bytes);
        }
    }
}

impl<F: FnOnce(u64) + Send + Sync + Unpin + 'static> axum::body::HttpBody for Counted<F> {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.body).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.bytes += data.len() as u64;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}
