//! Patch bodies: RFC 6902 JSON patch and RFC 7396 merge patch (both from the `json-patch` crate).

use serde_json::Value;

use crate::status::{ApiError, ApiResult};

/// `application/json-patch+json`.
pub const JSON_PATCH: &str = "application/json-patch+json";
/// `application/merge-patch+json`.
pub const MERGE_PATCH: &str = "application/merge-patch+json";
/// `application/strategic-merge-patch+json` (not served: needs merge keys).
pub const STRATEGIC_MERGE_PATCH: &str = "application/strategic-merge-patch+json";
/// `application/apply-patch+yaml` (server-side apply).
pub const APPLY_PATCH: &str = "application/apply-patch+yaml";
/// The patch types this server accepts.
pub const ACCEPTED: &[&str] = &[JSON_PATCH, MERGE_PATCH, APPLY_PATCH];

/// A decoded patch.
#[derive(Clone, Debug)]
pub enum Patch {
    /// RFC 6902.
    Json(json_patch::Patch),
    /// RFC 7396.
    Merge(Value),
    /// Server-side apply: a partial object (YAML or JSON) stating the manager's intent.
    Apply(Value),
}

impl Patch {
    /// Decode a patch body by its content type; unsupported types are 415.
    pub fn decode(content_type: &str, body: &[u8]) -> ApiResult<Self> {
        let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match media.as_str() {
            JSON_PATCH => serde_json::from_slice(body)
                .map(Patch::Json)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}"))),
            MERGE_PATCH => {
                let value: Value = serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
                if !value.is_object() {
                    return Err(ApiError::bad_request("a merge patch must be a JSON object"));
                }
                Ok(Patch::Merge(value))
            }
            APPLY_PATCH => {
                let text =
                    std::str::from_utf8(body).map_err(|_| ApiError::bad_request("the apply patch is not UTF-8"))?;
                let value: Value = serde_saphyr::from_str(text)
                    .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
                if !value.is_object() {
                    return Err(ApiError::bad_request("an apply patch must be an object"));
                }
                Ok(Patch::Apply(value))
            }
            _ => Err(ApiError::unsupported_media_type(&media, ACCEPTED)),
        }
    }

    /// The patched copy of `object`.
    pub fn apply(&self, object: &Value) -> ApiResult<Value> {
        let mut out = object.clone();
        match self {
            Patch::Json(p) => json_patch::patch(&mut out, p).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
            })?,
            Patch::Merge(p) => json_patch::merge(&mut out, p),
            // Only registries that track field ownership can apply.
            Patch::Apply(_) => {
                return Err(ApiError::unsupported_media_type(
                    APPLY_PATCH,
                    &[JSON_PATCH, MERGE_PATCH],
                ));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_by_content_type() {
        let obj = json!({"spec": {"replicas": 1, "color": "red"}});
        let merge = Patch::decode(
            "application/merge-patch+json; charset=utf-8",
            br#"{"spec":{"replicas":5,"color":null}}"#,
        )
        .unwrap();
        assert_eq!(merge.apply(&obj).unwrap(), json!({"spec": {"replicas": 5}}));
        let json = Patch::decode(JSON_PATCH, br#"[{"op":"replace","path":"/spec/replicas","value":2}]"#).unwrap();
        assert_eq!(json.apply(&obj).unwrap()["spec"]["replicas"], 2);
        let failed = Patch::decode(JSON_PATCH, br#"[{"op":"test","path":"/spec/replicas","value":9}]"#).unwrap();
        assert_eq!(failed.apply(&obj).unwrap_err().code, 422);
        assert_eq!(Patch::decode(STRATEGIC_MERGE_PATCH, b"{}").unwrap_err().code, 415);
        assert_eq!(Patch::decode(MERGE_PATCH, b"[1]").unwrap_err().code, 400);
    }
}
