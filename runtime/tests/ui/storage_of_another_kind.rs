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

/// Kind `Other` cannot be stored as a `Thing`.
#[derive(ApiResource, Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[api(group = "example.com", version = "v1beta1", kind = "Other", namespaced, storage = Thing)]
pub struct Other {
    metadata: ObjectMeta,
    spec: Spec,
}

impl From<Other> for Thing {
    fn from(o: Other) -> Thing {
        Thing { metadata: o.metadata, spec: o.spec }
    }
}

impl From<Thing> for Other {
    fn from(t: Thing) -> Other {
        Other { metadata: t.metadata, spec: t.spec }
    }
}

fn main() {}
