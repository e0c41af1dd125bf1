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
/// Most operations in one JSON patch (as kube-apiserver).
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;
/// Most bytes a JSON patch's `copy` operations may add in all (as kube-apiserver: the request
/// body limit), so a small patch that copies a value into itself cannot grow without bound.
pub const MAX_JSON_PATCH_COPY_BYTES: usize = 3 * 1024 * 1024;

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
            JSON_PATCH => {
                let patch: json_patch::Patch = serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
                if patch.0.len() > MAX_JSON_PATCH_OPERATIONS {
                    return Err(ApiError::new(
                        413,
                        "RequestEntityTooLarge",
                        format!(
                            "Request entity too large: The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {}",
                            patch.0.len()
                        ),
                    ));
                }
                Ok(Patch::Json(patch))
            }
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
            Patch::Json(p) => apply_json_patch(&mut out, p)?,
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

/// Apply `patch` to `doc` one operation at a time, counting the bytes `copy` operations add:
/// past [`MAX_JSON_PATCH_COPY_BYTES`] the patch fails before the copy is made. `doc` is a
/// scratch copy, so a failed patch needs no undo.
fn apply_json_patch(doc: &mut Value, patch: &json_patch::Patch) -> ApiResult<()> {
    let invalid = |message: String| {
        ApiError::new(
            422,
            "Invalid",
            format!("the server rejected our request due to an error in our request: {message}"),
        )
    };
    let mut copied = 0usize;
    for op in &patch.0 {
        if let json_patch::PatchOperation::Copy(copy) = op
            && let Some(from) = doc.pointer(copy.from.as_str())
        {
            copied += encoded_len(from, MAX_JSON_PATCH_COPY_BYTES - copied);
            if copied > MAX_JSON_PATCH_COPY_BYTES {
                return Err(invalid(format!(
                    "Unable to complete the copy, the accumulated size increase of copy is over the limit {MAX_JSON_PATCH_COPY_BYTES}"
                )));
            }
        }
        json_patch::patch_unsafe(doc, std::slice::from_ref(op)).map_err(|e| invalid(e.to_string()))?;
    }
    Ok(())
}

/// The length of `value` as JSON, counted without building it and cut short once it passes
/// `limit` (then some length over `limit`).
fn encoded_len(value: &Value, limit: usize) -> usize {
    struct Count {
        len: usize,
        limit: usize,
    }
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.len += buf.len();
            if self.len > self.limit {
                return Err(std::io::Error::other("over the limit"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count { len: 0, limit };
    let _ = serde_json::to_writer(&mut count, value);
    count.len
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

    #[test]
    fn json_patches_are_bounded() {
        // One add of 1 KiB, then /spec copied into itself: each copy doubles it.
        let mut ops = vec![json!({"op": "add", "path": "/spec/pad", "value": "x".repeat(1024)})];
        for i in 0..30 {
            ops.push(json!({"op": "copy", "from": "/spec", "path": format!("/spec/c{i}")}));
        }
        let patch = Patch::decode(JSON_PATCH, &serde_json::to_vec(&ops).unwrap()).unwrap();
        let error = patch.apply(&json!({"spec": {}})).unwrap_err();
        assert_eq!(error.code, 422);
        assert!(
            error.message.contains("accumulated size increase of copy"),
            "{}",
            error.message
        );
        // Copies under the limit still work.
        let small = Patch::decode(JSON_PATCH, &serde_json::to_vec(&ops[..4]).unwrap()).unwrap();
        assert_eq!(
            small.apply(&json!({"spec": {}})).unwrap()["spec"]["c2"]["c1"]["pad"]
                .as_str()
                .unwrap()
                .len(),
            1024
        );

        let many: Vec<Value> = (0..=MAX_JSON_PATCH_OPERATIONS)
            .map(|_| json!({"op": "test", "path": "/spec", "value": {}}))
            .collect();
        let error = Patch::decode(JSON_PATCH, &serde_json::to_vec(&many).unwrap()).unwrap_err();
        assert_eq!((error.code, error.reason), (413, "RequestEntityTooLarge"));
        assert!(error.message.contains("got 10001"), "{}", error.message);
    }
}
