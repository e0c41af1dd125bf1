//! HTTP: the router built from the resources' route tables, content negotiation, handlers.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use futures::StreamExt;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sha2::Digest;

use crate::discovery;
use crate::openapi::{self, Documented};
use crate::patch::Patch;
use crate::registry::{DeleteOptions, FieldValidation, ListOptions, Part, WatchEvent, WriteOptions, Written};
use crate::resource::{ResourceMeta, Target};
use crate::rest::Rest;
use crate::selector::{FieldSelector, parse_labels};
use crate::status::{ApiError, ApiResult};
use crate::table::{self, IncludeObject};

/// Largest request body accepted (as kube-apiserver: 3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;
/// Longest watch, whatever `timeoutSeconds` asks.
pub const MAX_WATCH: Duration = Duration::from_secs(3600);
/// Default watch length when `timeoutSeconds` is absent.
const DEFAULT_WATCH: Duration = Duration::from_secs(1800);
/// How often a watch that allows bookmarks gets one, unless the server says.
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

const JSON: &str = "application/json";
const YAML: &str = "application/yaml";
const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";
const DISCOVERY_V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
const DISCOVERY_V2BETA1: &str = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";
const PROTO_V2: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// What the server tells watches: when it shuts down (open watches end so connections can
/// drain), and how often to send bookmarks.
#[derive(Clone, Debug)]
pub struct Watching {
    /// Becomes true at shutdown.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// How often a watch that allows bookmarks gets one.
    pub bookmark_every: Duration,
}

impl Watching {
    async fn shutdown(mut self) {
        let _ = self.shutdown.wait_for(|down| *down).await;
    }
}

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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Everything the handlers share.
pub struct Api {
    stores: Vec<Arc<dyn Rest>>,
    metas: Vec<ResourceMeta>,
    openapi_v2: Doc,
    openapi_v2_proto: Doc,
    openapi_v3_index: Doc,
    openapi_v3: HashMap<String, Doc>,
    version: Value,
}

impl Api {
    /// Build the shared state from the stores.
    pub fn new(stores: Vec<Arc<dyn Rest>>, version: Value) -> Arc<Api> {
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
        let openapi_v2_proto = Doc::from_bytes(Bytes::from(crate::openapi_proto::encode(&v2)));
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
        Arc::new(Api {
            stores,
            openapi_v2: Doc::new(&v2),
            openapi_v2_proto,
            openapi_v3_index: Doc::new(&json!({ "paths": index })),
            openapi_v3,
            metas,
            version,
        })
    }

    /// The router: discovery, OpenAPI, health, and every resource's route table.
    pub fn router(self: &Arc<Self>) -> Router {
        let mut router = Router::new()
            .route("/apis", get(apis))
            .route(
                "/version",
                get(|State(api): State<Arc<Api>>| async move { json_response(StatusCode::OK, &api.version) }),
            )
            .route("/healthz", get(|| async { "ok" }))
            .route("/livez", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
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
                    any(move |Path(params): Path<HashMap<String, String>>, request: Request| {
                        let store = store.clone();
                        async move { serve(store, target, params, request).await }
                    }),
                );
            }
        }
        router
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

async fn readyz(State(api): State<Arc<Api>>) -> Response {
    for store in &api.stores {
        if let Err(e) = store.ready().await {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("[-]storage failed: {e}\nreadyz check failed\n"),
            )
                .into_response();
        }
    }
    "ok".into_response()
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

// ---------------------------------------------------------------- negotiation

/// One media range of an Accept header.
#[derive(Debug)]
struct Media {
    essence: String,
    params: Vec<(String, String)>,
}

impl Media {
    fn param(&self, key: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
    fn is_json(&self) -> bool {
        matches!(self.essence.as_str(), JSON | "*/*" | "application/*") && self.param("as").is_none()
    }
}

fn parse_accept(accept: &str) -> Vec<Media> {
    accept
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|part| {
            let mut pieces = part.split(';');
            let essence = pieces.next().unwrap_or("").trim().to_ascii_lowercase();
            let params = pieces
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
                .collect();
            Media { essence, params }
        })
        .collect()
}

/// What a response is encoded as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    Json,
    Yaml,
    Table,
}

fn negotiate(headers: &HeaderMap, allow_table: bool) -> ApiResult<Output> {
    let accept = headers.get(header::ACCEPT).and_then(|a| a.to_str().ok()).unwrap_or("");
    let media = parse_accept(accept);
    if media.is_empty() {
        return Ok(Output::Json);
    }
    for m in &media {
        match (m.essence.as_str(), m.param("as")) {
            (JSON, Some("Table")) if allow_table && m.param("g") == Some("meta.k8s.io") => {
                return Ok(Output::Table);
            }
            (JSON | "*/*" | "application/*", None) => return Ok(Output::Json),
            (YAML, None) => return Ok(Output::Yaml),
            _ => {}
        }
    }
    Err(ApiError::not_acceptable(&[JSON, YAML, TABLE]))
}

fn encode(output: Output, value: &Value, pretty: bool) -> ApiResult<(Vec<u8>, &'static str)> {
    match output {
        Output::Yaml => serde_saphyr::to_string(value)
            .map(|s| (s.into_bytes(), YAML))
            .map_err(ApiError::internal),
        Output::Json | Output::Table => {
            let bytes = if pretty {
                serde_json::to_vec_pretty(value)
            } else {
                serde_json::to_vec(value)
            };
            let media = if output == Output::Table { TABLE } else { JSON };
            bytes.map(|b| (b, media)).map_err(ApiError::internal)
        }
    }
}

fn json_response(code: StatusCode, value: &Value) -> Response {
    let mut response = (code, serde_json::to_vec(value).expect("JSON values serialize")).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    response
}

/// A `Status` error response.
pub fn error_response(error: &ApiError) -> Response {
    let code = StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, &error.to_status())
}

async fn read_body(body: Body) -> ApiResult<Bytes> {
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::too_large(MAX_BODY)),
        Err(e) => Err(ApiError::bad_request(format!("error reading the request body: {e}"))),
    }
}

fn decode_object(headers: &HeaderMap, bytes: &[u8]) -> ApiResult<Value> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|c| c.to_str().ok())
        .unwrap_or(JSON);
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match media.as_str() {
        JSON | "" => serde_json::from_slice(bytes)
            .map_err(|e| ApiError::bad_request(format!("error decoding the request body as JSON: {e}"))),
        YAML | "application/x-yaml" | "text/yaml" => {
            let text = std::str::from_utf8(bytes).map_err(|_| ApiError::bad_request("the YAML body is not UTF-8"))?;
            serde_saphyr::from_str(text)
                .map_err(|e| ApiError::bad_request(format!("error decoding the request body as YAML: {e}")))
        }
        other => Err(ApiError::unsupported_media_type(other, &[JSON, YAML])),
    }
}

// ---------------------------------------------------------------- resource handlers

fn query_map(uri: &axum::http::Uri) -> HashMap<String, String> {
    uri.query()
        .map(|q| {
            q.split('&')
                .filter_map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    Some((decode_component(k)?, decode_component(v)?))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn decode_component(s: &str) -> Option<String> {
    let s = s.replace('+', " ");
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 3 <= bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn truthy(q: &HashMap<String, String>, key: &str) -> bool {
    matches!(q.get(key).map(String::as_str), Some("true" | "1" | ""))
}

fn write_options(q: &HashMap<String, String>, headers: &HeaderMap, target: Target) -> ApiResult<WriteOptions> {
    let field_manager = q.get("fieldManager").filter(|m| !m.is_empty()).cloned();
    if field_manager
        .as_ref()
        .is_some_and(|m| m.len() > 128 || m.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request(
            "fieldManager: Invalid value: must be at most 128 printable characters",
        ));
    }
    // kube-apiserver's default manager: the User-Agent's first part (`kubectl-edit/v1.33 ...`).
    let default_manager = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .unwrap_or("")
        .chars()
        .take(128)
        .collect();
    Ok(WriteOptions {
        dry_run: dry_run(q)?,
        field_validation: FieldValidation::parse(q.get("fieldValidation").map(String::as_str))?,
        field_manager,
        default_manager,
        force: truthy(q, "force"),
        subresource: match target {
            Target::Status => "status",
            Target::Scale => "scale",
            _ => "",
        },
    })
}

fn dry_run(q: &HashMap<String, String>) -> ApiResult<bool> {
    match q.get("dryRun").map(String::as_str) {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "dryRun: Unsupported value: {other:?}: supported values: \"All\""
        ))),
    }
}

fn list_options(store: &dyn Rest, q: &HashMap<String, String>, namespace: Option<String>) -> ApiResult<ListOptions> {
    let labels = q
        .get("labelSelector")
        .filter(|s| !s.is_empty())
        .map(|s| parse_labels(s))
        .transpose()?;
    let fields = q
        .get("fieldSelector")
        .map(|s| FieldSelector::parse(s, store.meta()))
        .transpose()?
        .unwrap_or_default();
    let limit = match q.get("limit").filter(|l| !l.is_empty()) {
        Some(l) => l
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?
            .max(0) as usize,
        None => 0,
    };
    Ok(ListOptions {
        namespace,
        labels,
        fields,
        limit,
        continue_token: q.get("continue").cloned(),
        resource_version: q.get("resourceVersion").cloned(),
        resource_version_match: q.get("resourceVersionMatch").cloned(),
    })
}

async fn serve(store: Arc<dyn Rest>, target: Target, params: HashMap<String, String>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let q = query_map(&parts.uri);
    let pretty = truthy(&q, "pretty");
    let watching = parts.extensions.get::<Watching>().cloned();
    let result = handle(&store, target, &params, &parts, &q, body, watching).await;
    match result {
        Ok(Reply::Stream(response)) => response,
        Ok(Reply::Object {
            code,
            value,
            output,
            warnings,
        }) => match encode(output, &value, pretty) {
            Ok((bytes, media)) => {
                let mut response = (code, bytes).into_response();
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
                for w in warnings {
                    let text = format!("299 - \"{}\"", w.replace('"', "\\\""));
                    if let Ok(v) = HeaderValue::from_str(&text) {
                        response.headers_mut().append(header::WARNING, v);
                    }
                }
                response
            }
            Err(e) => error_response(&e),
        },
        Err(e) => error_response(&e),
    }
}

enum Reply {
    Object {
        code: StatusCode,
        value: Value,
        output: Output,
        warnings: Vec<String>,
    },
    Stream(Response),
}

fn written(w: Written, output: Output) -> Reply {
    let code = if w.created { StatusCode::CREATED } else { StatusCode::OK };
    Reply::Object {
        code,
        value: w.object,
        output,
        warnings: w.warnings,
    }
}

async fn handle(
    store: &Arc<dyn Rest>,
    target: Target,
    params: &HashMap<String, String>,
    parts: &axum::http::request::Parts,
    q: &HashMap<String, String>,
    body: Body,
    watching: Option<Watching>,
) -> ApiResult<Reply> {
    let (method, headers) = (&parts.method, &parts.headers);
    let meta = *store.meta();
    let namespace = params.get("namespace").cloned();
    let ns = namespace.as_deref();
    let name = params.get("name").map(String::as_str).unwrap_or("");
    let is_list = matches!(target, Target::Collection | Target::AllNamespaces);
    let info = parts
        .extensions
        .get::<crate::request_info::RequestInfo>()
        .cloned()
        .unwrap_or_else(|| crate::request_info::request_info(method.as_str(), parts.uri.path(), truthy(q, "watch")));
    let verb = info.verb.as_str();
    let served = matches!(target, Target::Status | Target::Scale) || meta.serves(verb);
    if !served {
        return Err(ApiError::method_not_allowed(&meta, verb));
    }
    let output = negotiate(headers, *method == Method::GET)?;
    let single = |value: Value| -> ApiResult<Reply> {
        let value = if output == Output::Table {
            let include =
                IncludeObject::parse(q.get("includeObject").map(String::as_str)).map_err(ApiError::bad_request)?;
            let rv = value
                .pointer("/metadata/resourceVersion")
                .cloned()
                .unwrap_or(Value::Null);
            table::table(&meta, &[value], json!({"resourceVersion": rv}), include, true)
        } else {
            value
        };
        Ok(Reply::Object {
            code: StatusCode::OK,
            value,
            output,
            warnings: Vec::new(),
        })
    };
    match (target, method.as_str()) {
        (_, "GET") if is_list => {
            let options = list_options(store.as_ref(), q, namespace.clone())?;
            if truthy(q, "watch") {
                let metrics = parts.extensions.get::<Arc<crate::metrics::Metrics>>().cloned();
                return watch(store, options, q, output, watching, metrics).await;
            }
            let listed = store.list(&options).await?;
            let value = if output == Output::Table {
                let include =
                    IncludeObject::parse(q.get("includeObject").map(String::as_str)).map_err(ApiError::bad_request)?;
                table::table(&meta, &listed.items, listed.metadata, include, true)
            } else {
                json!({"apiVersion": meta.api_version(), "kind": format!("{}List", meta.kind), "metadata": listed.metadata, "items": listed.items})
            };
            Ok(Reply::Object {
                code: StatusCode::OK,
                value,
                output,
                warnings: Vec::new(),
            })
        }
        (Target::Collection, "POST") => {
            let options = write_options(q, headers, target)?;
            let object = decode_object(headers, &read_body(body).await?)?;
            Ok(written(store.create(ns, object, &options).await?, output))
        }
        (Target::Collection, "DELETE") => {
            let delete = delete_options(q, &read_body(body).await?)?;
            let listed = store.list(&list_options(store.as_ref(), q, namespace.clone())?).await?;
            let mut deleted = Vec::new();
            for item in listed.items {
                let item_name = item
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let item_ns = item
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                match store.delete(item_ns.as_deref(), &item_name, &delete).await {
                    Ok(obj) => deleted.push(obj),
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            let value = json!({"apiVersion": meta.api_version(), "kind": format!("{}List", meta.kind), "metadata": {}, "items": deleted});
            Ok(Reply::Object {
                code: StatusCode::OK,
                value,
                output,
                warnings: Vec::new(),
            })
        }
        (Target::Object | Target::Status, "GET") => single(store.get(ns, name).await?),
        (Target::Object | Target::Status, "PUT") => {
            let part = if target == Target::Status {
                Part::Status
            } else {
                Part::Main
            };
            let options = write_options(q, headers, target)?;
            let object = decode_object(headers, &read_body(body).await?)?;
            Ok(written(store.update(ns, name, object, part, &options).await?, output))
        }
        (Target::Object | Target::Status, "PATCH") => {
            let part = if target == Target::Status {
                Part::Status
            } else {
                Part::Main
            };
            let options = write_options(q, headers, target)?;
            let patch = decode_patch(headers, &read_body(body).await?)?;
            Ok(written(store.patch(ns, name, &patch, part, &options).await?, output))
        }
        (Target::Object, "DELETE") => {
            let delete = delete_options(q, &read_body(body).await?)?;
            // The deleted object, or (finalizers pending) the object marked for deletion.
            let object = store.delete(ns, name, &delete).await?;
            Ok(Reply::Object {
                code: StatusCode::OK,
                value: object,
                output,
                warnings: Vec::new(),
            })
        }
        (Target::Scale, "GET") => single(store.get_scale(ns, name).await?),
        (Target::Scale, "PUT") => {
            let options = write_options(q, headers, target)?;
            let scale = decode_object(headers, &read_body(body).await?)?;
            Ok(written(
                store
                    .update_scale(ns, name, ScaleChange::Replace(scale), &options)
                    .await?,
                output,
            ))
        }
        (Target::Scale, "PATCH") => {
            let options = write_options(q, headers, target)?;
            let patch = decode_patch(headers, &read_body(body).await?)?;
            Ok(written(
                store
                    .update_scale(ns, name, ScaleChange::Patch(patch), &options)
                    .await?,
                output,
            ))
        }
        _ => Err(ApiError::method_not_allowed(&meta, verb)),
    }
}

pub use crate::registry::ScaleChange;

fn decode_patch(headers: &HeaderMap, body: &[u8]) -> ApiResult<Patch> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|c| c.to_str().ok())
        .unwrap_or("");
    Patch::decode(content_type, body)
}

fn delete_options(q: &HashMap<String, String>, body: &[u8]) -> ApiResult<DeleteOptions> {
    let mut options = DeleteOptions {
        dry_run: dry_run(q)?,
        ..Default::default()
    };
    let mut policy = q.get("propagationPolicy").cloned();
    if !body.iter().all(u8::is_ascii_whitespace) {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?;
        if let Some(p) = value.get("propagationPolicy").and_then(Value::as_str) {
            policy = Some(p.to_string());
        }
        if value
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|d| d.iter().any(|v| v == "All"))
        {
            options.dry_run = true;
        }
        options.uid = value
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string);
        options.resource_version = value
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    match policy.as_deref() {
        None | Some("" | "Orphan" | "Background" | "Foreground") => Ok(options),
        Some(other) => Err(ApiError::bad_request(format!(
            "propagationPolicy: Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
        ))),
    }
}

async fn watch(
    store: &Arc<dyn Rest>,
    options: ListOptions,
    q: &HashMap<String, String>,
    output: Output,
    watching: Option<Watching>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
) -> ApiResult<Reply> {
    let meta = *store.meta();
    let bookmarks = truthy(q, "allowWatchBookmarks");
    let send_initial = q.get("sendInitialEvents").map(|v| v == "true");
    let timeout = match q.get("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()) {
        Some(t) => Duration::from_secs(t).min(MAX_WATCH),
        None => DEFAULT_WATCH,
    };
    let include = IncludeObject::parse(q.get("includeObject").map(String::as_str)).map_err(ApiError::bad_request)?;
    let events = store.clone().watch(options, send_initial, bookmarks).await?;
    // The store's first event is the watch's starting revision.
    let mut last_rv = 0;
    let every = watching.as_ref().map_or(BOOKMARK_EVERY, |w| w.bookmark_every);
    let ticks = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval_at(
        tokio::time::Instant::now() + every,
        every,
    ))
    .filter(move |_| futures::future::ready(bookmarks))
    .map(|_| None);
    let merged = futures::stream::select(events.map(Some), ticks);
    let deadline = async move {
        match watching {
            Some(w) => {
                tokio::select! {
                    () = tokio::time::sleep(timeout) => {},
                    () = w.shutdown() => {},
                }
            }
            None => tokio::time::sleep(timeout).await,
        }
    };
    let mut first_table = true;
    // Registered while the response body lives.
    let registered = metrics.as_ref().map(|m| m.watcher(&meta));
    let lines = merged.take_until(deadline).filter_map(move |event| {
        let _ = &registered;
        if let (Some(m), Some(WatchEvent::Object(..))) = (&metrics, &event) {
            m.watch_event(&meta);
        }
        let line = match event {
            Some(WatchEvent::Progress(rv)) => {
                last_rv = last_rv.max(rv);
                return futures::future::ready(None);
            }
            Some(WatchEvent::Object(kind, object)) => {
                if let Some(rv) = object
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .and_then(|r| r.parse().ok())
                {
                    last_rv = last_rv.max(rv);
                }
                let object = if output == Output::Table {
                    let t = table::table(
                        &meta,
                        std::slice::from_ref(&object),
                        json!({"resourceVersion": last_rv.to_string()}),
                        include,
                        first_table,
                    );
                    first_table = false;
                    t
                } else {
                    object
                };
                json!({"type": kind, "object": object})
            }
            Some(WatchEvent::Bookmark(rv, end)) => {
                last_rv = last_rv.max(rv);
                bookmark(&meta, rv, end)
            }
            None => bookmark(&meta, last_rv, false),
            Some(WatchEvent::Error(e)) => json!({"type": "ERROR", "object": e.to_status()}),
        };
        let mut bytes = serde_json::to_vec(&line).expect("events serialize");
        bytes.push(b'\n');
        futures::future::ready(Some((line["type"] == "ERROR", Bytes::from(bytes))))
    });
    // An ERROR event is the last one.
    let lines = crate::take_through(lines, |(error, _)| *error).map(|(_, bytes)| Ok::<_, Infallible>(bytes));
    let mut response = Response::new(Body::from_stream(lines));
    let media = if output == Output::Table { TABLE } else { JSON };
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, private"));
    Ok(Reply::Stream(response))
}

fn bookmark(meta: &ResourceMeta, rv: u64, initial_end: bool) -> Value {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"type": "BOOKMARK", "object": {"apiVersion": meta.api_version(), "kind": meta.kind, "metadata": metadata}})
}
