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

/// Stored as `Thing`.
#[derive(ApiResource, Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[api(group = "example.com", version = "v1beta1", kind = "Thing", namespaced, storage = Thing)]
pub struct ThingBeta {
    metadata: ObjectMeta,
    spec: Spec,
}

/// Stored as `ThingBeta`, which is itself stored as `Thing`: two storage versions.
#[derive(ApiResource, Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[api(group = "example.com", version = "v1alpha1", kind = "Thing", namespaced, storage = ThingBeta)]
pub struct ThingAlpha {
    metadata: ObjectMeta,
    spec: Spec,
}

macro_rules! both_ways {
    ($a:ident, $b:ident) => {
        impl From<$a> for $b {
            fn from(x: $a) -> $b {
                $b { metadata: x.metadata, spec: x.spec }
            }
        }
        impl From<$b> for $a {
            fn from(x: $b) -> $a {
                $a { metadata: x.metadata, spec: x.spec }
            }
        }
    };
}
both_ways!(ThingBeta, Thing);
both_ways!(ThingAlpha, ThingBeta);

fn main() {}
