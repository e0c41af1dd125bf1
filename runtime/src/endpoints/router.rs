//! The router, built from data: discovery, OpenAPI, health and version routes, then every
//! resource's route table, over the shared [`Api`] state.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::{Value, json};
use sha2::Digest;

use super::discovery;
use super::handlers::serve;
use super::negotiation::{
    DISCOVERY_V2, DISCOVERY_V2BETA1, JSON, PROTO_V2, error_response, json_response, parse_accept,
};
use super::openapi::{self, Documented};
use crate::admission::Chain;
use crate::registry::rest::Rest;
use crate::resource::ResourceMeta;
use crate::status::{ApiError, ApiResult};

/// A prepared document with its ETag.
struct Doc {
    body: Bytes,
    etag: String,
}

impl Doc {
    fn new(value: &Value) -> Doc {
        let body = Bytes::from(serde_json::to_vec(value).expect("documents serialize"));
        Doc::from_bytes(body)
    }

    fn from_bytes(body: Bytes) -> Doc {
        let etag = format!("\"{}\"", hex(&sha2::Sha256::digest(&body)[..16]));
        Doc { body, etag }
    }
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Everything the handlers share.
pub struct Api {
    stores: Vec<Arc<dyn Rest>>,
    /// Every resource route, matched as the router matches it.
    resource_routes: matchit::Router<(Arc<dyn Rest>, crate::resource::Target)>,
    metas: Vec<ResourceMeta>,
    openapi_v2: Doc,
    openapi_v2_proto: Doc,
    openapi_v3_index: Doc,
    openapi_v3: HashMap<String, Doc>,
    version: Value,
    /// The admission steps, whose readiness `/readyz` reports.
    admission: Chain,
    /// The serving certificate, whose coming expiry `/readyz?verbose` reports.
    serving_cert: Option<std::path::PathBuf>,
}

impl Api {
    /// Build the shared state from the stores.
    pub fn new(stores: Vec<Arc<dyn Rest>>, version: Value) -> Arc<Api> {
        Self::with_admission(stores, version, Chain::default())
    }

    /// The same, with the admission steps whose readiness `/readyz` includes.
    pub fn with_admission(stores: Vec<Arc<dyn Rest>>, version: Value, admission: Chain) -> Arc<Api> {
        Self::for_server(stores, version, admission, None)
    }

    /// The same, with the serving certificate whose expiry `/readyz?verbose` reports.
    pub fn for_server(
        stores: Vec<Arc<dyn Rest>>,
        version: Value,
        admission: Chain,
        serving_cert: Option<std::path::PathBuf>,
    ) -> Arc<Api> {
        let metas: Vec<ResourceMeta> = stores.iter().map(|s| *s.meta()).collect();
        let documented: Vec<Documented> = stores
            .iter()
            .map(|s| Documented {
                meta: *s.meta(),
                schema: s.schema(),
            })
            .collect();
        let git = version
            .get("gitVersion")
            .and_then(Value::as_str)
            .unwrap_or("v0.0.0")
            .to_string();
        let v2 = openapi::v2_document(&documented, "Apiary", &git);
        let openapi_v2_proto = Doc::from_bytes(Bytes::from(super::openapi_proto::encode(&v2)));
        let mut openapi_v3 = HashMap::new();
        let mut index = serde_json::Map::new();
        for (group, versions) in discovery::groups(&metas) {
            for (version, _) in versions {
                let doc =
                    Doc::new(&openapi::v3_document(&documented, group, version).expect("the group-version is served"));
                let key = format!("apis/{group}/{version}");
                index.insert(
                    key.clone(),
                    json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={}", doc.etag.trim_matches('"'))}),
                );
                openapi_v3.insert(key, doc);
            }
        }
        let mut resource_routes = matchit::Router::new();
        for store in &stores {
            for route in store.meta().routes() {
                resource_routes
                    .insert(route.path, (store.clone(), route.target))
                    .expect("resource routes are distinct");
            }
        }
        Arc::new(Api {
            resource_routes,
            stores,
            openapi_v2: Doc::new(&v2),
            openapi_v2_proto,
            openapi_v3_index: Doc::new(&json!({ "paths": index })),
            openapi_v3,
            metas,
            version,
            admission,
            serving_cert,
        })
    }

    /// Serve `request` if its path is a resource route (matched by the same route table and
    /// matcher as [`Api::router`], without the router's boxed services and path parameters);
    /// else hand it back. HEAD is handed back: the router answers it without a body.
    pub async fn serve_resource(&self, request: Request) -> Result<Response, Request> {
        if request.method() == axum::http::Method::HEAD {
            return Err(request);
        }
        let Ok(matched) = self.resource_routes.at(request.uri().path()) else {
            return Err(request);
        };
        let (store, target) = matched.value.clone();
        Ok(serve(store, target, request).await)
    }

    /// Serve `request` from a resource route ([`Api::serve_resource`]), else from `routes`
    /// (this API's [`Api::router`] and any more).
    pub async fn dispatch(&self, routes: &Router, request: Request) -> Response {
        match self.serve_resource(request).await {
            Ok(response) => response,
            Err(request) => match tower::ServiceExt::oneshot(routes.clone(), request).await {
                Ok(response) => response,
                Err(never) => match never {},
            },
        }
    }

    /// The router: discovery, OpenAPI, health, and every resource's route table.
    pub fn router(self: &Arc<Self>) -> Router {
        let version = get(|State(api): State<Arc<Api>>| async move { json_response(StatusCode::OK, &api.version) });
        // kube-apiserver answers these with a trailing slash too (kr8s asks for `/version/`).
        let mut router = Router::new()
            .route("/apis", get(apis))
            .route("/apis/", get(apis))
            .route("/version", version.clone())
            .route("/version/", version)
            .route("/healthz", get(|| async { "ok" }))
            .route("/healthz/", get(|| async { "ok" }))
            .route("/livez", get(|| async { "ok" }))
            .route("/livez/", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .route("/readyz/", get(readyz))
            .route("/openapi/v2", get(openapi_v2))
            .route(
                "/openapi/v3",
                get(|State(api): State<Arc<Api>>, headers: HeaderMap| async move {
                    doc_response(&headers, &api.openapi_v3_index, JSON)
                }),
            )
            .route("/openapi/v3/apis/{group}/{version}", get(openapi_v3));
        for (group, versions) in discovery::groups(&self.metas) {
            router = router.route(
                &format!("/apis/{group}"),
                get(move |State(api): State<Arc<Api>>| async move {
                    respond_value(discovery::group(&api.metas, group).ok_or_else(ApiError::path_not_found))
                }),
            );
            for (version, _) in versions {
                router = router.route(
                    &format!("/apis/{group}/{version}"),
                    get(move |State(api): State<Arc<Api>>| async move {
                        respond_value(
                            discovery::resource_list(&api.metas, group, version).ok_or_else(ApiError::path_not_found),
                        )
                    }),
                );
            }
        }
        for store in &self.stores {
            for route in store.meta().routes() {
                let store = store.clone();
                let target = route.target;
                router = router.route(
                    &route.path,
                    any(move |request: Request| {
                        let store = store.clone();
                        async move { serve(store, target, request).await }
                    }),
                );
            }
        }
        router
            .method_not_allowed_fallback(method_not_allowed)
            .fallback(|| async { error_response(&ApiError::path_not_found()) })
            .with_state(self.clone())
    }
}

fn respond_value(value: ApiResult<Value>) -> Response {
    match value {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => error_response(&e),
    }
}

/// `/readyz`: storage and admission must be ready; `?verbose` lists each check as
/// kube-apiserver does, with a coming expiry of the serving certificate (which does not fail
/// readiness: taking every replica out of the Service would not renew it).
async fn readyz(State(api): State<Arc<Api>>, axum::extract::RawQuery(query): axum::extract::RawQuery) -> Response {
    // As kube-apiserver's health checks: the reason is logged, not told to whoever asks
    // (`/readyz` needs no credentials, and an error can name endpoints and files).
    let failed = |check: String, reason: String| {
        tracing::warn!("readyz: {check} failed: {reason}");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("[-]{check} failed: reason withheld\nreadyz check failed\n"),
        )
            .into_response()
    };
    for store in &api.stores {
        if let Err(e) = store.ready().await {
            return failed("storage".into(), e.to_string());
        }
    }
    if let Err((step, e)) = api.admission.ready().await {
        return failed(format!("admission {step}"), e.to_string());
    }
    let verbose = query
        .as_deref()
        .is_some_and(|q| q.split('&').any(|p| p == "verbose" || p.starts_with("verbose=")));
    if !verbose {
        return "ok".into_response();
    }
    let certificate = match api.serving_cert.as_deref().and_then(crate::server::tls::expiry_warning) {
        Some(warning) => format!("[+]serving-certificate ok (warning: {warning})"),
        None => "[+]serving-certificate ok".into(),
    };
    format!("[+]ping ok\n[+]storage ok\n[+]admission ok\n{certificate}\nreadyz check passed\n").into_response()
}

async fn apis(State(api): State<Arc<Api>>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|a| a.to_str().ok()).unwrap_or("");
    for media in parse_accept(accept) {
        if media.param("g") == Some("apidiscovery.k8s.io") && media.param("as") == Some("APIGroupDiscoveryList") {
            match media.param("v") {
                Some("v2") => {
                    return doc_response(
                        &headers,
                        &Doc::new(&discovery::aggregated(&api.metas, "v2")),
                        DISCOVERY_V2,
                    );
                }
                Some("v2beta1") => {
                    return doc_response(
                        &headers,
                        &Doc::new(&discovery::aggregated(&api.metas, "v2beta1")),
                        DISCOVERY_V2BETA1,
                    );
                }
                _ => continue,
            }
        }
        if media.is_json() {
            break;
        }
    }
    json_response(StatusCode::OK, &discovery::group_list(&api.metas))
}

async fn openapi_v2(State(api): State<Arc<Api>>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|a| a.to_str().ok()).unwrap_or("");
    for media in parse_accept(accept) {
        if media.essence.contains("protobuf") {
            return doc_response(&headers, &api.openapi_v2_proto, PROTO_V2);
        }
        if media.is_json() {
            break;
        }
    }
    doc_response(&headers, &api.openapi_v2, JSON)
}

async fn openapi_v3(
    State(api): State<Arc<Api>>,
    Path((group, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    match api.openapi_v3.get(&format!("apis/{group}/{version}")) {
        Some(doc) => doc_response(&headers, doc, JSON),
        None => error_response(&ApiError::path_not_found()),
    }
}

fn doc_response(headers: &HeaderMap, doc: &Doc, content_type: &str) -> Response {
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == doc.etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        doc.body.clone().into_response()
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_str(&doc.etag).expect("etag is ascii"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).expect("static media type"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, private"));
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept"));
    response
}

/// 405 as a `Status`, for a method a non-resource route does not serve.
pub async fn method_not_allowed() -> Response {
    error_response(&ApiError::new(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
    ))
}
