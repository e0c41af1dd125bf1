//! The `AdmissionReview` a webhook is sent and what its answer must be
//! (k8s.io/apiserver `request/admissionreview.go`): v1, or v1beta1 for a webhook that lists
//! only it; the answer in the same version, for the same `uid`.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::super::Attributes;
use crate::filters::authn::UserInfo;
use crate::resource::ResourceMeta;

/// The AdmissionReview versions this server speaks, most preferred first.
const VERSIONS: [&str; 2] = ["v1", "v1beta1"];

/// The version to speak with a webhook that accepts `accepted`.
pub(super) fn version(accepted: &[String]) -> Result<&'static str, String> {
    VERSIONS
        .into_iter()
        .find(|v| accepted.iter().any(|a| a == v))
        .ok_or_else(|| format!("webhook does not accept known AdmissionReview versions {VERSIONS:?}"))
}

fn user(user: Option<&UserInfo>) -> Value {
    // The server's own writes (its controllers) are its loopback user, as upstream's.
    let Some(user) = user else {
        return json!({"username": "system:apiserver", "groups": ["system:authenticated", "system:masters"]});
    };
    let mut out = json!({"username": user.name, "groups": user.groups});
    if !user.uid.is_empty() {
        out["uid"] = json!(user.uid);
    }
    if !user.extra.is_empty() {
        out["extra"] = json!(user.extra);
    }
    out
}

/// The review of the request `a` about `object` (the new object; `None` for a delete) and
/// `old` (for updates and deletes), as `uid`, in `version`.
pub(super) fn request(
    a: &Attributes<'_>,
    object: Option<&Value>,
    old: Option<&Value>,
    uid: &str,
    version: &str,
) -> Value {
    let kind = |meta: &ResourceMeta| {
        if a.subresource == "scale" {
            json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})
        } else {
            json!({"group": meta.group, "version": meta.version, "kind": meta.kind})
        }
    };
    let resource = |meta: &ResourceMeta| json!({"group": meta.group, "version": meta.version, "resource": meta.plural});
    // A request converted for the webhook (matchPolicy Equivalent) keeps its own version here.
    let requested = a.request_meta.unwrap_or(a.meta);
    let mut request = Map::new();
    request.insert("uid".into(), json!(uid));
    request.insert("kind".into(), kind(a.meta));
    request.insert("resource".into(), resource(a.meta));
    request.insert("requestKind".into(), kind(requested));
    request.insert("requestResource".into(), resource(requested));
    if !a.subresource.is_empty() {
        request.insert("subResource".into(), json!(a.subresource));
        request.insert("requestSubResource".into(), json!(a.subresource));
    }
    if !a.name.is_empty() {
        request.insert("name".into(), json!(a.name));
    }
    if let Some(namespace) = a.namespace {
        request.insert("namespace".into(), json!(namespace));
    }
    request.insert("operation".into(), json!(a.operation.as_str()));
    request.insert("userInfo".into(), user(a.user));
    if let Some(object) = object {
        request.insert("object".into(), object.clone());
    }
    if let Some(old) = old {
        request.insert("oldObject".into(), old.clone());
    }
    request.insert("dryRun".into(), json!(a.dry_run));
    if let Some(options) = a.options {
        request.insert("options".into(), options.clone());
    }
    json!({
        "apiVersion": format!("admission.k8s.io/{version}"),
        "kind": "AdmissionReview",
        "request": request,
    })
}

/// A webhook's answer.
#[derive(Debug, Default)]
pub(super) struct Answer {
    pub allowed: bool,
    /// `response.status` of a refusal.
    pub status: Option<Value>,
    /// The JSON patch of a mutating webhook.
    pub patch: Option<json_patch::Patch>,
    pub warnings: Vec<String>,
    pub audit_annotations: Vec<(String, String)>,
}

/// Read a webhook's answer to the review `uid` sent in `version`.
pub(super) fn answer(body: &[u8], version: &str, uid: &str, mutating: bool) -> Result<Answer, String> {
    let review: Value = serde_json::from_slice(body).map_err(|e| format!("the response is not JSON: {e}"))?;
    let want = format!("admission.k8s.io/{version}");
    let strict = version == "v1";
    if strict && (review["apiVersion"] != want.as_str() || review["kind"] != "AdmissionReview") {
        return Err(format!(
            "expected webhook response of {want}, Kind=AdmissionReview, got {}, Kind={}",
            review["apiVersion"].as_str().unwrap_or_default(),
            review["kind"].as_str().unwrap_or_default()
        ));
    }
    let response = review
        .get("response")
        .filter(|r| r.is_object())
        .ok_or("webhook response was absent")?;
    let got = response["uid"].as_str().unwrap_or_default();
    if strict && got != uid {
        return Err(format!("expected response.uid={uid:?}, got {got:?}"));
    }
    let patch = match response.get("patch").and_then(Value::as_str).filter(|p| !p.is_empty()) {
        None => None,
        // v1beta1 answers were never checked (upstream): a validating webhook's patch is
        // ignored, and any patch is taken as a JSONPatch whatever its type says.
        Some(_) if !mutating && !strict => None,
        Some(_) if !mutating => return Err("validating webhook may not return response.patch".into()),
        Some(encoded) => {
            match response.get("patchType").and_then(Value::as_str) {
                _ if !strict => {}
                Some("JSONPatch") => {}
                None => return Err("webhook returned response.patch but not response.patchType".into()),
                Some(other) => return Err(format!("webhook returned invalid response.patchType of {other:?}")),
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|e| format!("response.patch is not base64: {e}"))?;
            Some(serde_json::from_slice(&bytes).map_err(|e| format!("response.patch is not a JSON patch: {e}"))?)
        }
    };
    let strings = |key: &str| -> Vec<String> {
        response[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|w| w.as_str().map(str::to_string))
            .collect()
    };
    let audit_annotations = response["auditAnnotations"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect();
    Ok(Answer {
        allowed: response["allowed"].as_bool().unwrap_or(false),
        status: response.get("status").filter(|s| s.is_object()).cloned(),
        patch,
        warnings: strings("warnings"),
        audit_annotations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_checked_as_upstream_checks_them() {
        let ok = |response: Value| {
            serde_json::to_vec(
                &json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}),
            )
            .unwrap()
        };
        let allowed = answer(&ok(json!({"uid": "u", "allowed": true})), "v1", "u", false).unwrap();
        assert!(allowed.allowed);
        let wrong_uid = answer(&ok(json!({"uid": "x", "allowed": true})), "v1", "u", false).unwrap_err();
        assert_eq!(wrong_uid, r#"expected response.uid="u", got "x""#);
        let patch = base64::engine::general_purpose::STANDARD.encode(br#"[{"op":"add","path":"/a","value":1}]"#);
        let untyped = answer(
            &ok(json!({"uid": "u", "allowed": true, "patch": patch})),
            "v1",
            "u",
            true,
        )
        .unwrap_err();
        assert!(untyped.contains("not response.patchType"), "{untyped}");
        let validating = answer(
            &ok(json!({"uid": "u", "allowed": true, "patch": patch, "patchType": "JSONPatch"})),
            "v1",
            "u",
            false,
        )
        .unwrap_err();
        assert!(validating.contains("may not return"), "{validating}");
        let mutating = answer(
            &ok(
                json!({"uid": "u", "allowed": true, "patch": patch, "patchType": "JSONPatch",
                       "warnings": ["w"], "auditAnnotations": {"k": "v"}}),
            ),
            "v1",
            "u",
            true,
        )
        .unwrap();
        assert_eq!(mutating.patch.unwrap().0.len(), 1);
        assert_eq!(mutating.warnings, ["w"]);
        assert_eq!(mutating.audit_annotations, [("k".to_string(), "v".to_string())]);
        let beta =
            br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {"allowed": true}}"#;
        assert!(answer(beta, "v1beta1", "u", false).unwrap().allowed);
        // v1beta1, as upstream: no uid check, a validating webhook's patch ignored, any patch
        // type read as a JSONPatch.
        let patch = base64::engine::general_purpose::STANDARD.encode(r#"[{"op":"add","path":"/a","value":1}]"#);
        let unchecked = json!({"response": {"uid": "other", "allowed": true, "patch": patch, "patchType": "Merge"}});
        let unchecked = serde_json::to_vec(&unchecked).unwrap();
        assert!(answer(&unchecked, "v1beta1", "u", false).unwrap().patch.is_none());
        assert_eq!(
            answer(&unchecked, "v1beta1", "u", true).unwrap().patch.unwrap().0.len(),
            1
        );
        assert!(answer(&unchecked, "v1", "u", true).is_err());
        assert!(answer(beta, "v1", "u", false).is_err());
        assert_eq!(version(&["v1beta1".into()]).unwrap(), "v1beta1");
        assert!(version(&["v2".into()]).is_err());
    }
}
