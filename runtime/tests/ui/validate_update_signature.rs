use apiary_runtime::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct Spec {
    pub replicas: i32,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct State {
    pub ready: i32,
}

#[derive(ApiResource, Clone, Serialize, Deserialize, JsonSchema)]
#[api(group = "example.com", version = "v1", namespaced, validate_update = compare)]
pub struct Thing {
    metadata: ObjectMeta,
    spec: Spec,
}

/// Misses the old object.
fn compare(_: &Thing) -> Vec<FieldError> { Vec::new() }

fn main() {}
