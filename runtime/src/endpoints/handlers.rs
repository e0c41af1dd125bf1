//! Resource handlers: one entry point per route that dispatches on the verb to the
//! resource's [`Rest`] store and encodes the answer.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::encoded;
use super::negotiation::{Answer, MAX_BODY, Output, decode_object, encode, error_response, negotiate, read_body};
use super::params::{
    IGNORE_STORE_READ_ERROR, Query, UNSAFE_DELETE_VERB, check_query, decode_patch, delete_options, flag, list_options,
    write_options,
};
use super::request_info::Verb;
use super::request_info::{RequestInfo, request_info_of};
use super::table::{self, IncludeObject};
use super::watch::{Watching, watch};
use crate::admission::RequestScope;
use crate::filters::audit::AuditAnnotations;
use crate::filters::limits::Deadline;
use crate::registry::ScaleChange;
use crate::registry::object::meta_field;
use crate::registry::rest::Rest;
use crate::registry::{Part, Written};
use crate::resource::Target;
use crate::status::{ApiError, ApiResult};

pub(super) async fn serve(store: Arc<dyn Rest>, target: Target, request: Request) -> Response {
    // A deprecated version warns on every answer, as kube-apiserver does for CRD versions.
    let deprecation = store.meta().deprecation;
    let mut response = respond(store, target, request).await;
    if let Some(warning) = deprecation {
        add_warnings(&mut response, vec![warning.to_string()]);
    }
    response
}

async fn respond(store: Arc<dyn Rest>, target: Target, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    // A declared body over the limit is refused before a byte of it is read.
    if parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|len| len > MAX_BODY as u64)
    {
        return error_response(&ApiError::too_large(MAX_BODY));
    }
    let query = Query::of(&parts.extensions, &parts.uri);
    let q = query.0.as_ref();
    let pretty = flag(q, "pretty");
    let watching = parts.extensions.get::<Watching>().cloned();
    let scope = RequestScope::until(parts.extensions.get::<Deadline>().map(|d| d.0));
    // Boxed: the verbs' future is kilobytes, and each async layer awaiting it would hold room
    // for it (rustc keeps an awaited future's slot apart from its caller's other state).
    let result = Box::pin(handle(&store, target, &parts, q, body, watching, &scope)).await;
    let mut response = match result {
        Ok(Reply::Stream(response)) => return response,
        Ok(Reply::Object {
            code,
            value,
            output,
            warnings,
            json,
        }) => match answer(json, output, &value, pretty) {
            Ok((bytes, media)) => {
                let mut response = (code, bytes).into_response();
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
                add_warnings(&mut response, warnings);
                response
            }
            Err(e) => error_response(&e),
        },
        Err(e) => error_response(&e),
    };
    // Admission's warnings go out with refusals too, as upstream's.
    add_warnings(&mut response, scope.warnings());
    let annotations = scope.annotations();
    if !annotations.is_empty() {
        response.extensions_mut().insert(AuditAnnotations(annotations));
    }
    response
}

/// The reply's body: the write's own JSON when that is what the client asked for.
fn answer(json: Option<Vec<u8>>, output: Output, value: &Value, pretty: bool) -> ApiResult<(Vec<u8>, &'static str)> {
    match json {
        Some(bytes) if matches!(output, Output::Json) && !pretty => Ok((bytes, output.media_type())),
        _ => encode(output, value, pretty),
    }
}

/// `Warning: 299 - "..."` headers.
fn add_warnings(response: &mut Response, warnings: Vec<String>) {
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('"', "\\\""));
        if let Ok(v) = HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, v);
        }
    }
}

pub(super) enum Reply {
    Object {
        code: StatusCode,
        value: Value,
        output: Output,
        warnings: Vec<String>,
        /// `value` already encoded as JSON.
        json: Option<Vec<u8>>,
    },
    Stream(Response),
}

impl Reply {
    /// A 200 with `value`, encoded as `output` says.
    fn ok(value: Value, output: Output) -> Self {
        Self::Object {
            code: StatusCode::OK,
            value,
            output,
            warnings: Vec::new(),
            json: None,
        }
    }
}

fn written(w: Written, output: Output) -> Reply {
    let code = if w.created { StatusCode::CREATED } else { StatusCode::OK };
    Reply::Object {
        code,
        value: w.object,
        output,
        warnings: w.warnings,
        json: w.json,
    }
}

async fn handle(
    store: &Arc<dyn Rest>,
    target: Target,
    parts: &axum::http::request::Parts,
    q: &HashMap<String, String>,
    body: Body,
    watching: Option<Watching>,
    scope: &Arc<RequestScope>,
) -> ApiResult<Reply> {
    let (method, headers) = (&parts.method, &parts.headers);
    let meta = *store.meta();
    // The one parse of the path that authorization and audit saw (the outermost filter
    // put it in the extensions): namespace and name come from it, never from the router.
    let info = parts
        .extensions
        .get::<std::sync::Arc<RequestInfo>>()
        .cloned()
        .unwrap_or_else(|| std::sync::Arc::new(request_info_of(method.as_str(), parts.uri.path(), q)));
    info.check_path_segments()?;
    check_query(q)?;
    let namespace = match target {
        Target::AllNamespaces => None,
        _ if meta.namespaced() => Some(info.namespace.clone()).filter(|ns| !ns.is_empty()),
        _ => None,
    };
    let ns = namespace.as_deref();
    // Who writes, for admission (the impersonated user when impersonating).
    // (Copied for writes only: a read does not need it.)
    let user = || {
        let user = parts
            .extensions
            .get::<std::sync::Arc<crate::filters::authn::UserInfo>>();
        user.map(|u| crate::filters::authn::UserInfo::clone(u))
    };
    let name = info.name.as_str();
    let needs_namespace = meta.namespaced() && target != Target::AllNamespaces;
    let needs_name = !matches!(target, Target::Collection | Target::AllNamespaces);
    if (needs_namespace && ns.is_none()) || (needs_name && name.is_empty()) {
        return Err(ApiError::path_not_found());
    }
    let is_list = matches!(target, Target::Collection | Target::AllNamespaces);
    let verb = info.verb.as_str();
    let served = matches!(target, Target::Status | Target::Scale) || meta.serves(verb);
    if !served {
        return Err(ApiError::method_not_allowed(&meta, verb));
    }
    let answer = match (is_list && *method == Method::GET, info.verb == Verb::Watch) {
        (true, true) => Answer::Watch,
        (true, false) => Answer::List,
        _ => Answer::Object,
    };
    let output = negotiate(headers, *method == Method::GET, answer)?;
    let single = |value: Value| -> ApiResult<Reply> {
        let value = if output == Output::Table {
            let include =
                IncludeObject::parse(q.get("includeObject").map(String::as_str)).map_err(ApiError::bad_request)?;
            let rv = meta_field(&value, "resourceVersion").cloned().unwrap_or(Value::Null);
            table::table(&meta, &[value], json!({"resourceVersion": rv}), include, true)
        } else {
            value
        };
        Ok(Reply::ok(value, output))
    };
    match (target, method.as_str()) {
        (_, "GET") if is_list => {
            let options = list_options(store.as_ref(), q, namespace.clone())?;
            if info.verb == Verb::Watch {
                let metrics = parts.extensions.get::<Arc<crate::filters::metrics::Metrics>>().cloned();
                // Boxed: a watch's future is large, and every request's would carry room for it.
                return Box::pin(watch(store, options, q, output, watching, metrics)).await;
            }
            if matches!(output, Output::Json | Output::Table)
                && !flag(q, "pretty")
                && let Some(listed) = store.list_encoded(&options).await?
            {
                return Ok(Reply::Stream(if output == Output::Table {
                    let include = IncludeObject::parse(q.get("includeObject").map(String::as_str))
                        .map_err(ApiError::bad_request)?;
                    encoded::table(&meta, listed, include)
                } else {
                    encoded::list(&meta, listed)
                }));
            }
            let listed = store.list(&options).await?;
            let value = if output == Output::Table {
                let include =
                    IncludeObject::parse(q.get("includeObject").map(String::as_str)).map_err(ApiError::bad_request)?;
                table::table(&meta, &listed.items, listed.metadata, include, true)
            } else {
                meta.list_of(listed.metadata, listed.items)
            };
            Ok(Reply::ok(value, output))
        }
        (Target::Collection, "POST") => {
            let mut options = write_options(q, headers, target)?.by(user(), scope);
            let (object, duplicates) = decode_object(headers, &read_body(body).await?)?;
            options.duplicate_fields = duplicates;
            Ok(written(store.create(ns, object, &options).await?, output))
        }
        (Target::Collection, "DELETE") => {
            let delete = delete_options(q, &read_body(body).await?)?.by(user(), scope);
            if delete.ignore_store_read_error {
                return Err(ApiError::bad_request(format!(
                    "{IGNORE_STORE_READ_ERROR}: Invalid value: true: not allowed for deletecollection"
                )));
            }
            let listed = store.list(&list_options(store.as_ref(), q, namespace.clone())?).await?;
            let mut deleted = Vec::new();
            for item in listed.items {
                let item_name = meta_field(&item, "name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let item_ns = meta_field(&item, "namespace")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                match store.delete(item_ns.as_deref(), &item_name, &delete).await {
                    Ok(obj) => deleted.push(obj),
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(Reply::ok(meta.list_of(json!({}), deleted), output))
        }
        (Target::Object | Target::Status, "GET") => {
            if output == Output::Json
                && !flag(q, "pretty")
                && let Some(bytes) = store.get_encoded(ns, name).await?
            {
                return Ok(Reply::Stream(encoded::object(bytes)));
            }
            single(store.get(ns, name).await?)
        }
        (Target::Object | Target::Status, "PUT") => {
            let part = if target == Target::Status {
                Part::Status
            } else {
                Part::Main
            };
            let mut options = write_options(q, headers, target)?.by(user(), scope);
            let (object, duplicates) = decode_object(headers, &read_body(body).await?)?;
            options.duplicate_fields = duplicates;
            Ok(written(store.update(ns, name, object, part, &options).await?, output))
        }
        (Target::Object | Target::Status, "PATCH") => {
            let part = if target == Target::Status {
                Part::Status
            } else {
                Part::Main
            };
            let options = write_options(q, headers, target)?.by(user(), scope);
            let patch = decode_patch(headers, &read_body(body).await?)?;
            Ok(written(store.patch(ns, name, &patch, part, &options).await?, output))
        }
        (Target::Object, "DELETE") => {
            let delete = delete_options(q, &read_body(body).await?)?.by(user(), scope);
            if delete.ignore_store_read_error {
                let more = parts.extensions.get::<crate::filters::AuthorizeMore>();
                match more {
                    Some(more) => more.verb(UNSAFE_DELETE_VERB).await?,
                    None => {
                        return Err(ApiError::new(
                            403,
                            "Forbidden",
                            format!("{IGNORE_STORE_READ_ERROR} needs an authorized user"),
                        ));
                    }
                }
            }
            // The deleted object, or (finalizers pending) the object marked for deletion.
            let object = store.delete(ns, name, &delete).await?;
            Ok(Reply::ok(object, output))
        }
        (Target::Scale, "GET") => single(store.get_scale(ns, name).await?),
        (Target::Scale, "PUT") => {
            let options = write_options(q, headers, target)?.by(user(), scope);
            let (scale, _) = decode_object(headers, &read_body(body).await?)?;
            Ok(written(
                store
                    .update_scale(ns, name, ScaleChange::Replace(scale), &options)
                    .await?,
                output,
            ))
        }
        (Target::Scale, "PATCH") => {
            let options = write_options(q, headers, target)?.by(user(), scope);
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
