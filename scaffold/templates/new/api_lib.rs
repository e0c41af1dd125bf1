//! The {{ s.kind }} resource ({{ s.group }}/{{ s.version }}).

use apiary_runtime::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A {{ s.kind }}.
#[derive(ApiResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[api(
    group = "{{ s.group }}",
    version = "{{ s.version }}",
    kind = "{{ s.kind }}",
    {% if s.cluster %}cluster{% else %}namespaced{% endif %},
    status = "{{ s.kind }}Status",
    printcolumn(name = "Size", type = "integer", json_path = ".spec.size"),
    printcolumn(name = "Ready", type = "boolean", json_path = ".status.ready"),
    validate = validate_spec
)]
pub struct {{ s.kind }} {
    /// Standard object metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// What the user wants.
    pub spec: {{ s.kind }}Spec,
    /// What the server observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<{{ s.kind }}Status>,
}

/// The desired state of a {{ s.kind }}.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct {{ s.kind }}Spec {
    /// How big, 1 to 10 (the schema checks it).
    #[schemars(range(min = 1, max = 10))]
    pub size: i32,
    /// A free-form note without line breaks (the `validate` hook checks it).
    #[serde(default)]
    pub note: String,
}

/// The observed state of a {{ s.kind }}.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct {{ s.kind }}Status {
    /// Whether it is ready.
    #[serde(default)]
    pub ready: bool,
}

/// The `validate` hook: what the schema cannot say, on create and update (422 at the field).
pub fn validate_spec(object: &{{ s.kind }}) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if object.spec.note.contains('\n') {
        errors.push(FieldError::invalid(
            "spec.note",
            &object.spec.note,
            "must be one line",
        ));
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_declaration_is_valid() {
        // The printer-column paths exist in the schema (the server checks this at start, too).
        apiary_runtime::check::<{{ s.kind }}>().unwrap();
    }
}
