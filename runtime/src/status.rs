//! Errors as Kubernetes `meta.k8s.io/v1 Status` objects, with the codes and messages clients expect.

use serde_json::{Value, json};

use crate::resource::{FieldError, ResourceMeta};
use crate::storage::StorageError;

/// An API error: an HTTP code, a Status reason, a message and optional details.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// Status `reason`, e.g. `NotFound`.
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
    /// Status `details`, if any.
    pub details: Option<Value>,
}

/// Result of an API operation.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// An error with no details.
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 404 NotFound for an object.
    pub fn not_found(meta: &ResourceMeta, name: &str) -> Self {
        ApiError {
            details: Some(json!({"name": name, "group": meta.group, "kind": meta.plural})),
            ..Self::new(
                404,
                "NotFound",
                format!("{} \"{name}\" not found", meta.group_resource()),
            )
        }
    }

    /// 404 NotFound for a path nothing serves.
    pub fn path_not_found() -> Self {
        Self::new(404, "NotFound", "the server could not find the requested resource")
    }

    /// 409 AlreadyExists.
    pub fn already_exists(meta: &ResourceMeta, name: &str) -> Self {
        ApiError {
            details: Some(json!({"name": name, "group": meta.group, "kind": meta.plural})),
            ..Self::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", meta.group_resource()),
            )
        }
    }

    /// 409 Conflict on a stale resourceVersion.
    pub fn conflict(meta: &ResourceMeta, name: &str) -> Self {
        ApiError {
            details: Some(json!({"name": name, "group": meta.group, "kind": meta.plural})),
            ..Self::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    meta.group_resource()
                ),
            )
        }
    }

    /// 422 Invalid with one cause per field error.
    pub fn invalid(meta: &ResourceMeta, name: &str, errors: &[FieldError]) -> Self {
        let summary = match errors {
            [one] => one.to_string(),
            many => format!(
                "[{}]",
                many.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            ),
        };
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| json!({"reason": e.reason, "message": e.message, "field": e.field}))
            .collect();
        ApiError {
            details: Some(json!({"name": name, "group": meta.group, "kind": meta.kind, "causes": causes})),
            ..Self::new(
                422,
                "Invalid",
                format!("{} \"{name}\" is invalid: {summary}", meta.group_kind()),
            )
        }
    }

    /// 403 Forbidden for an admission denial, as kube-apiserver words it:
    /// `widgets.g "name" is forbidden: <reason>` (`widgets.g is forbidden: …` without a name).
    pub fn forbidden(meta: &ResourceMeta, name: &str, reason: impl std::fmt::Display) -> Self {
        let message = match name {
            "" => format!("{} is forbidden: {reason}", meta.group_resource()),
            name => format!("{} \"{name}\" is forbidden: {reason}", meta.group_resource()),
        };
        ApiError {
            details: Some(json!({"name": name, "group": meta.group, "kind": meta.plural})),
            ..Self::new(403, "Forbidden", message)
        }
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(meta: &ResourceMeta, verb: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!(
                "{verb} is not supported on resources of kind \"{}\"",
                meta.group_resource()
            ),
        )
    }

    /// 406 NotAcceptable.
    pub fn not_acceptable(accepted: &[&str]) -> Self {
        Self::new(
            406,
            "NotAcceptable",
            format!("only the following media types are accepted: {}", accepted.join(", ")),
        )
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(got: &str, accepted: &[&str]) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                accepted.join(", ")
            ) + &if got.is_empty() {
                String::new()
            } else {
                format!(" (got {got})")
            },
        )
    }

    /// 410 Expired for a resourceVersion older than the store keeps.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 413 RequestEntityTooLarge.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }

    /// 500 InternalError.
    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(500, "InternalError", format!("Internal error occurred: {message}"))
    }

    /// 503 ServiceUnavailable.
    pub fn unavailable(message: impl std::fmt::Display) -> Self {
        Self::new(503, "ServiceUnavailable", message.to_string())
    }

    /// Map a storage error for an object named `name`.
    pub fn from_storage(meta: &ResourceMeta, name: &str, e: StorageError) -> Self {
        match e {
            StorageError::NotFound => Self::not_found(meta, name),
            StorageError::AlreadyExists => Self::already_exists(meta, name),
            StorageError::Conflict { .. } => Self::conflict(meta, name),
            StorageError::Expired { requested, compacted } => {
                Self::expired(format!("too old resource version: {requested} ({compacted})"))
            }
            StorageError::Unavailable(m) => Self::unavailable(m),
            StorageError::Internal(m) => Self::internal(m),
        }
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

/// A `Success` Status, e.g. for a delete that returns no object.
pub fn success(details: Value) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}
