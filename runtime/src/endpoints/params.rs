//! Query parameters and option bodies, parsed into the registry's options: write, list,
//! delete and patch.

use std::collections::HashMap;

use axum::http::{HeaderMap, header};
use serde_json::Value;

use super::request_info::percent_decode;
use crate::registry::patch::Patch;
use crate::registry::rest::Rest;
use crate::registry::{DeleteOptions, FieldValidation, ListOptions, WriteOptions};
use crate::resource::Target;
use crate::schema::selector::{FieldSelector, parse_labels};
use crate::status::{ApiError, ApiResult};

/// Query parameters that must be integers (as kube-apiserver's conversion of them into
/// `int64`): anything else is a 400, never silently ignored.
const INTEGER_PARAMS: &[&str] = &["limit", "timeoutSeconds", "gracePeriodSeconds"];
/// The delete option that removes a damaged object without reading it.
pub const IGNORE_STORE_READ_ERROR: &str = "ignoreStoreReadErrorWithClusterBreakingPotential";
/// The extra verb that option needs, as kube-apiserver.
pub const UNSAFE_DELETE_VERB: &str = "unsafe-delete-ignore-read-errors";

/// The query's parameters, each percent-decoded once; a repeated parameter keeps its first
/// value (as Go's `url.Values.Get`), the same for every layer that reads the query. Pairs
/// that do not decode are dropped.
pub fn query_map(query: Option<&str>) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if let (Some(k), Some(v)) = (percent_decode(k, true), percent_decode(v, true)) {
            map.entry(k.into_owned()).or_insert_with(|| v.into_owned());
        }
    }
    map
}

/// The request's query, parsed once by the outermost filter and shared through the request's
/// extensions with the request info and the handler.
#[derive(Clone, Debug, Default)]
pub struct Query(pub std::sync::Arc<HashMap<String, String>>);

impl Query {
    /// The parsed query of `parts`: the shared one when a filter parsed it, else parsed now.
    pub fn of(extensions: &axum::http::Extensions, uri: &axum::http::Uri) -> Query {
        extensions
            .get::<Query>()
            .cloned()
            .unwrap_or_else(|| Query(std::sync::Arc::new(query_map(uri.query()))))
    }
}

/// A boolean parameter as kube-apiserver reads it: absent is false; present, it is true
/// unless it is `0` or `false` in any case (`?watch`, `?watch=1`, `?watch=yes` all watch).
pub fn flag(q: &HashMap<String, String>, key: &str) -> bool {
    q.get(key).is_some_and(|v| v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// 400 for a parameter that does not parse as its type: integers, `resourceVersion` (a
/// decimal revision) and `resourceVersionMatch`.
pub fn check_query(q: &HashMap<String, String>) -> ApiResult<()> {
    for key in INTEGER_PARAMS {
        // An empty value counts as absent: some clients send `limit=`.
        if let Some(v) = q.get(*key).filter(|v| !v.is_empty())
            && v.parse::<i64>().is_err()
        {
            return Err(ApiError::bad_request(format!(
                "invalid {key} {v:?}: must be a whole number that fits in 64 bits"
            )));
        }
    }
    if let Some(rv) = q.get("resourceVersion").filter(|rv| !rv.is_empty())
        && rv.parse::<u64>().is_err()
    {
        return Err(ApiError::bad_request(format!("invalid resource version: {rv:?}")));
    }
    match q.get("resourceVersionMatch").map(String::as_str) {
        None | Some("" | "NotOlderThan" | "Exact") => Ok(()),
        Some(other) => Err(ApiError::bad_request(format!(
            "resourceVersionMatch: Unsupported value: {other:?}: supported values: \"Exact\", \"NotOlderThan\""
        ))),
    }
}

pub(super) fn write_options(
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    target: Target,
) -> ApiResult<WriteOptions> {
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
        force: flag(q, "force"),
        subresource: match target {
            Target::Status => "status",
            Target::Scale => "scale",
            _ => "",
        },
        duplicate_fields: Vec::new(),
        ..Default::default()
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

pub(super) fn list_options(
    store: &dyn Rest,
    q: &HashMap<String, String>,
    namespace: Option<String>,
) -> ApiResult<ListOptions> {
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

pub(super) fn decode_patch(headers: &HeaderMap, body: &[u8]) -> ApiResult<Patch> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|c| c.to_str().ok())
        .unwrap_or("");
    Patch::decode(content_type, body)
}

pub(super) fn delete_options(q: &HashMap<String, String>, body: &[u8]) -> ApiResult<DeleteOptions> {
    let mut options = DeleteOptions {
        dry_run: dry_run(q)?,
        ignore_store_read_error: flag(q, IGNORE_STORE_READ_ERROR),
        ..Default::default()
    };
    let mut policy = q.get("propagationPolicy").cloned();
    if !body.iter().all(u8::is_ascii_whitespace) {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?;
        if let Some(p) = value.get("propagationPolicy").and_then(Value::as_str) {
            policy = Some(p.to_string());
        } else if let Some(orphan) = value.get("orphanDependents").and_then(Value::as_bool) {
            policy = Some(if orphan { "Orphan" } else { "Background" }.to_string());
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
        options.ignore_store_read_error |= value.get(IGNORE_STORE_READ_ERROR) == Some(&Value::Bool(true));
    }
    if options.ignore_store_read_error
        && (options.dry_run || options.uid.is_some() || options.resource_version.is_some())
    {
        return Err(ApiError::bad_request(format!(
            "{IGNORE_STORE_READ_ERROR}: Invalid value: true: may not be combined with dryRun or preconditions"
        )));
    }
    match policy.as_deref() {
        None | Some("") => Ok(options),
        Some(p @ ("Orphan" | "Background" | "Foreground")) => Ok(DeleteOptions {
            propagation: Some(p.to_string()),
            ..options
        }),
        Some(other) => Err(ApiError::bad_request(format!(
            "propagationPolicy: Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
        ))),
    }
}
