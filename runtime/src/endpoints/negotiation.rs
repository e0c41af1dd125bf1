//! Content negotiation: the Accept header picks JSON, YAML or a Table; request bodies are read
//! (bounded) and decoded by their Content-Type.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde_json::{Value, json};

use crate::status::{ApiError, ApiResult};

/// Largest request body accepted (as kube-apiserver: 3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

pub(super) const JSON: &str = "application/json";
const YAML: &str = "application/yaml";
pub(super) const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";
pub(super) const DISCOVERY_V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
pub(super) const DISCOVERY_V2BETA1: &str = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";
pub(super) const PROTO_V2: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

// ---------------------------------------------------------------- negotiation

/// One media range of an Accept header.
#[derive(Debug)]
pub(super) struct Media {
    pub(super) essence: String,
    params: Vec<(String, String)>,
}

impl Media {
    pub(super) fn param(&self, key: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
    pub(super) fn is_json(&self) -> bool {
        matches!(self.essence.as_str(), JSON | "*/*" | "application/*") && self.param("as").is_none()
    }
}

pub(super) fn parse_accept(accept: &str) -> Vec<Media> {
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
pub(super) enum Output {
    Json,
    Yaml,
    Table,
    /// `meta.k8s.io` `PartialObjectMetadata` (one object, or each watch event) or
    /// `PartialObjectMetadataList` (a list): what client-go's metadata client asks for (the
    /// garbage collector, the namespace controller, quota).
    Metadata {
        list: bool,
        version: MetaVersion,
        yaml: bool,
    },
}

/// The `meta.k8s.io` version of `PartialObjectMetadata` asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum MetaVersion {
    V1,
    V1beta1,
}

impl MetaVersion {
    fn api_version(self) -> &'static str {
        match self {
            MetaVersion::V1 => "meta.k8s.io/v1",
            MetaVersion::V1beta1 => "meta.k8s.io/v1beta1",
        }
    }
}

impl Output {
    /// The response's Content-Type.
    pub(super) fn media_type(self) -> &'static str {
        match self {
            Output::Json => JSON,
            Output::Yaml => YAML,
            Output::Table => TABLE,
            Output::Metadata { list, version, yaml } => match (yaml, list, version) {
                (false, false, MetaVersion::V1) => "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
                (false, true, MetaVersion::V1) => "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
                (false, false, MetaVersion::V1beta1) => {
                    "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1beta1"
                }
                (false, true, MetaVersion::V1beta1) => {
                    "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1beta1"
                }
                (true, false, MetaVersion::V1) => "application/yaml;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
                (true, true, MetaVersion::V1) => "application/yaml;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
                (true, false, MetaVersion::V1beta1) => {
                    "application/yaml;as=PartialObjectMetadata;g=meta.k8s.io;v=v1beta1"
                }
                (true, true, MetaVersion::V1beta1) => {
                    "application/yaml;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1beta1"
                }
            },
        }
    }
}

/// What kind of answer a request gets, for [`negotiate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Answer {
    /// One object (get, and every write).
    Object,
    /// A list.
    List,
    /// A watch: events of one object each.
    Watch,
}

/// The output the Accept header asks for, first acceptable range first: a `Table` for reads;
/// `PartialObjectMetadata` for an object, `PartialObjectMetadataList` for a list, either for a
/// watch (client-go asks for the list form, the kube crate for the object form). A range this
/// server cannot produce (protobuf) is passed over for the next one, as client-go's metadata
/// client expects.
pub(super) fn negotiate(headers: &HeaderMap, allow_table: bool, answer: Answer) -> ApiResult<Output> {
    let list = answer != Answer::Object;
    let accept = headers.get(header::ACCEPT).and_then(|a| a.to_str().ok()).unwrap_or("");
    // What most clients send needs no parsing.
    if matches!(accept, "" | JSON | "*/*") {
        return Ok(Output::Json);
    }
    let media = parse_accept(accept);
    if media.is_empty() {
        return Ok(Output::Json);
    }
    for m in &media {
        let meta_group = m.param("g") == Some("meta.k8s.io");
        match (m.essence.as_str(), m.param("as")) {
            (JSON, Some("Table")) if allow_table && meta_group => {
                return Ok(Output::Table);
            }
            (JSON | YAML, Some(kind @ ("PartialObjectMetadata" | "PartialObjectMetadataList"))) if meta_group => {
                let version = match m.param("v") {
                    Some("v1") => MetaVersion::V1,
                    Some("v1beta1") => MetaVersion::V1beta1,
                    _ => continue,
                };
                if answer == Answer::Watch || (kind == "PartialObjectMetadataList") == list {
                    return Ok(Output::Metadata {
                        list,
                        version,
                        yaml: m.essence == YAML,
                    });
                }
            }
            (JSON | "*/*" | "application/*", None) => return Ok(Output::Json),
            (YAML, None) => return Ok(Output::Yaml),
            _ => {}
        }
    }
    Err(ApiError::not_acceptable(&[JSON, YAML, TABLE]))
}

/// `object` as a `PartialObjectMetadata`: its type's metadata only.
pub(super) fn partial_object_metadata(object: &Value, version: MetaVersion) -> Value {
    json!({
        "apiVersion": version.api_version(),
        "kind": "PartialObjectMetadata",
        "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

pub(super) fn encode(output: Output, value: &Value, pretty: bool) -> ApiResult<(Vec<u8>, &'static str)> {
    let converted;
    let value = match output {
        Output::Metadata {
            list: true, version, ..
        } => {
            let items: Vec<Value> = value
                .get("items")
                .and_then(Value::as_array)
                .map(|items| items.iter().map(|i| partial_object_metadata(i, version)).collect())
                .unwrap_or_default();
            converted = json!({
                "apiVersion": version.api_version(),
                "kind": "PartialObjectMetadataList",
                "metadata": value.get("metadata").cloned().unwrap_or_else(|| json!({})),
                "items": items,
            });
            &converted
        }
        Output::Metadata {
            list: false, version, ..
        } => {
            converted = partial_object_metadata(value, version);
            &converted
        }
        _ => value,
    };
    let yaml = matches!(output, Output::Yaml | Output::Metadata { yaml: true, .. });
    let bytes = if yaml {
        serde_saphyr::to_string(value)
            .map(String::into_bytes)
            .map_err(ApiError::internal)?
    } else if pretty {
        serde_json::to_vec_pretty(value).map_err(ApiError::internal)?
    } else {
        serde_json::to_vec(value).map_err(ApiError::internal)?
    };
    Ok((bytes, output.media_type()))
}

pub(super) fn json_response(code: StatusCode, value: &Value) -> Response {
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

pub(super) async fn read_body(body: Body) -> ApiResult<Bytes> {
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::too_large(MAX_BODY)),
        Err(e) => Err(ApiError::bad_request(format!("error reading the request body: {e}"))),
    }
}

/// A request body as an object, with the paths of its duplicate fields (JSON only: the YAML
/// decoder refuses duplicate keys outright).
pub(super) fn decode_object(headers: &HeaderMap, bytes: &[u8]) -> ApiResult<(Value, Vec<String>)> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|c| c.to_str().ok())
        .unwrap_or(JSON);
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match media.as_str() {
        JSON | "" => super::json_body::decode(bytes)
            .map_err(|e| ApiError::bad_request(format!("error decoding the request body as JSON: {e}"))),
        YAML | "application/x-yaml" | "text/yaml" => {
            let text = std::str::from_utf8(bytes).map_err(|_| ApiError::bad_request("the YAML body is not UTF-8"))?;
            serde_saphyr::from_str(text)
                .map(|value| (value, Vec::new()))
                .map_err(|e| ApiError::bad_request(format!("error decoding the request body as YAML: {e}")))
        }
        other => Err(ApiError::unsupported_media_type(other, &[JSON, YAML])),
    }
}
