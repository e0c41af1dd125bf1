//! The filters around the router as one service: each filter awaits the next one directly,
//! so a request is one future. (As axum middleware, every layer boxed its future and a clone
//! of the services inside it on every request.)

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::response::Response;
use tower::ServiceExt;

use super::audit::AuditLog;
use super::metrics::Metrics;
use super::{Bounds, Guard, audit, authorize, identify, instrument};
use crate::endpoints::Api;

/// The handler chain: [`instrument`], [`identify`], [`audit`] (when an audit log is kept),
/// [`authorize`] (with the bounds), then the resource routes ([`Api::serve_resource`]) or
/// the router.
#[derive(Clone)]
pub struct FilterChain(Arc<Parts>);

struct Parts {
    metrics: Arc<Metrics>,
    guard: Arc<Guard>,
    audit: Option<Arc<AuditLog>>,
    bounds: Arc<Bounds>,
    api: Arc<Api>,
    routes: Router,
}

impl FilterChain {
    /// The chain around `api`'s resources and `routes` (`api`'s router and any more).
    pub fn new(
        metrics: Arc<Metrics>,
        guard: Arc<Guard>,
        audit: Option<Arc<AuditLog>>,
        bounds: Arc<Bounds>,
        api: Arc<Api>,
        routes: Router,
    ) -> FilterChain {
        FilterChain(Arc::new(Parts {
            metrics,
            guard,
            audit,
            bounds,
            api,
            routes,
        }))
    }

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

impl Parts {
    async fn authorized(&self, request: Request) -> Response {
        authorize(&self.guard, &self.bounds, request, |request| async move {
            let request = match self.api.serve_resource(request).await {
                Ok(response) => return response,
                Err(request) => request,
            };
            match self.routes.clone().oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        })
        .await
    }
}
