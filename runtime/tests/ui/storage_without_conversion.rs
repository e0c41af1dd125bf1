use apiary_runtime::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct Spec {
    pub replicas: i32,
}

#[derive(ApiResource, Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[api(group = "example.com", version = "v1", kind = "Thing", namespaced)]
pub struct Thing {
    metadata: ObjectMeta,
    spec: Spec,
}

/// An older version stored as `Thing`, without the conversions.
#[derive(ApiResource, Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[api(group = "example.com", version = "v1beta1", kind = "Thing", namespaced, storage = Thing)]
pub struct ThingBeta {
    metadata: ObjectMeta,
    spec: Spec,
}

fn main() {}
