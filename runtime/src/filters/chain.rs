//! The filters around the router as one service: each filter awaits the next one directly,
//! so a request is one future. (As axum middleware, every layer boxed its future and a clone
//! of the services inside it on every request.)

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::response::Response;

use super::audit::AuditLog;
use super::metrics::Metrics;
use super::{Bounds, Guard, audit, authorize, identify, instrument};
use crate::endpoints::Api;

/// The handler chain: [`instrument`], [`identify`], [`audit()`] (when an audit log is kept),
/// [`authorize`] (with the bounds), then [`Api::dispatch`].
#[derive(Clone)]
pub struct FilterChain(Arc<Filters>);

/// What the chain's filters and routes use.
pub struct Filters {
    /// Request metrics.
    pub metrics: Arc<Metrics>,
    /// Authentication and authorization.
    pub guard: Arc<Guard>,
    /// The audit log, when one is kept.
    pub audit: Option<Arc<AuditLog>>,
    /// In-flight limits and the request timeout.
    pub bounds: Arc<Bounds>,
    /// The resources.
    pub api: Arc<Api>,
    /// `api`'s router and any more routes.
    pub routes: Router,
}

impl From<Filters> for FilterChain {
    fn from(filters: Filters) -> FilterChain {
        FilterChain(Arc::new(filters))
    }
}

impl FilterChain {
    /// Answer one request.
    pub async fn serve(self, request: Request) -> Response {
        let parts = &*self.0;
        instrument(&parts.metrics, request, |request| {
            identify(&parts.guard, request, |request| async move {
                match &parts.audit {
                    Some(log) => audit(log, request, |request| parts.authorized(request)).await,
                    None => parts.authorized(request).await,
                }
            })
        })
        .await
    }
}

impl Filters {
    async fn authorized(&self, request: Request) -> Response {
        authorize(&self.guard, &self.bounds, request, |request| {
            self.api.dispatch(&self.routes, request)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use tokio::sync::Semaphore;

    use super::*;
    use crate::filters::authn::{Authenticator, Trust};
    use crate::filters::authz::{AuthorizationMode, Authorizer};
    use crate::filters::limits::InFlight;

    /// A request's future is moved whole (into hyper's slot, and into its box): it must stay
    /// small, so the heavy awaits (the verbs, network reviews, watches) are boxed where they
    /// are awaited. (A future's size is its type's: no request needs to run.)
    #[test]
    fn a_request_future_stays_small() {
        let guard = Guard {
            authenticator: Arc::new(Authenticator::new(Trust::default(), None, true).unwrap()),
            authorizer: Arc::new(Authorizer::new(
                AuthorizationMode::AlwaysAllow,
                None,
                Duration::ZERO,
                Duration::ZERO,
            )),
        };
        let bounds = Bounds {
            in_flight: InFlight {
                reads: Semaphore::new(1),
                writes: Semaphore::new(1),
            },
            timeout: Duration::from_secs(1),
        };
        let api = Api::new(Vec::new(), serde_json::json!({}));
        let chain = FilterChain::from(Filters {
            metrics: Metrics::new(),
            guard: Arc::new(guard),
            audit: None,
            bounds: Arc::new(bounds),
            api,
            routes: Router::new(),
        });
        let size = std::mem::size_of_val(&chain.serve(Request::new(Body::empty())));
        // 6 KB now; 11 KB with the verbs' future unboxed.
        assert!(size <= 8 * 1024, "a request's future is {size} bytes");
    }
}
