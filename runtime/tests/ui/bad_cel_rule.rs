use apiary_runtime::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct Spec {
    pub replicas: i32,
}

/// A type-level rule that parses and a field's messageExpression that does not.
#[derive(ApiResource, Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[api(group = "example.com", version = "v1", kind = "Pool", namespaced)]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "has(self.spec)"}]))]
pub struct Pool {
    metadata: ObjectMeta,
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self.replicas >= 0", "messageExpression": "'not ' + string(self.replicas"},
    ]))]
    spec: Spec,
}

fn main() {}
