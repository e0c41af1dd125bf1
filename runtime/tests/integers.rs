//! Integer widths as Kubernetes publishes them: narrow and unsigned Rust integers become int32
//! or int64 with their bounds, and a value out of range is a 422 at its field, never a 400
//! decode error or a wrapped number.

use std::sync::Arc;

use apiary_runtime::prelude::*;
use apiary_runtime::registry::{Store, TypedStrategy, WriteOptions};
use apiary_runtime::storage::{self, WatchCache};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CounterSpec {
    pub small: u8,
    pub port: u16,
    pub count: u32,
    pub total: u64,
    pub delta: i32,
    pub offset: i64,
}

#[derive(ApiResource, Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[api(group = "example.com", version = "v1", namespaced)]
pub struct Counter {
    #[serde(default)]
    metadata: ObjectMeta,
    spec: CounterSpec,
}

fn store() -> Store {
    Store::new(
        Arc::new(TypedStrategy::<Counter>::default()),
        WatchCache::new(storage::memory(), 10),
        "/registry",
    )
    .unwrap()
}

#[test]
fn widths_are_published_as_kubernetes_does() {
    let schema = store().schema();
    let field = |name: &str| schema["properties"]["spec"]["properties"][name].clone();
    assert_eq!(
        field("small"),
        json!({"type": "integer", "format": "int32", "minimum": 0, "maximum": 255})
    );
    assert_eq!(
        field("port"),
        json!({"type": "integer", "format": "int32", "minimum": 0, "maximum": 65535})
    );
    assert_eq!(
        field("count"),
        json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": 4294967295u32})
    );
    assert_eq!(
        field("total"),
        json!({"type": "integer", "format": "int64", "minimum": 0})
    );
    assert_eq!(field("delta"), json!({"type": "integer", "format": "int32"}));
    assert_eq!(field("offset"), json!({"type": "integer", "format": "int64"}));
}

#[tokio::test]
async fn out_of_range_values_are_422_at_their_field() {
    let store = store();
    let spec = json!({"small": 255, "port": 65535, "count": 4294967295u32, "total": i64::MAX,
                      "delta": i32::MIN, "offset": i64::MIN});
    let created = store
        .create(
            Some("default"),
            json!({"metadata": {"name": "max"}, "spec": spec}),
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        created.object["spec"]["count"], 4294967295u32,
        "the largest u32 round-trips"
    );
    for (field, value, message) in [
        (
            "small",
            json!(256),
            "spec.small: Invalid value: 256: spec.small in body should be less than or equal to 255",
        ),
        (
            "count",
            json!(5_000_000_000u64),
            "spec.count: Invalid value: 5000000000: spec.count in body should be less than or equal to 4294967295",
        ),
        (
            "total",
            json!(-1),
            "spec.total: Invalid value: -1: spec.total in body should be greater than or equal to 0",
        ),
        (
            "delta",
            json!(3_000_000_000u64),
            "spec.delta: Invalid value: 3000000000: spec.delta in body must be of type int32: \"3000000000\"",
        ),
        (
            "offset",
            json!(u64::MAX),
            "spec.offset: Invalid value: 18446744073709551615: spec.offset in body must be of type int64: \"18446744073709551615\"",
        ),
    ] {
        let mut spec = spec.clone();
        spec[field] = value;
        let refused = store
            .create(
                Some("default"),
                json!({"metadata": {"name": field}, "spec": spec}),
                &WriteOptions::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(refused.code, 422, "{field}: {}", refused.message);
        assert!(refused.message.contains(message), "{field}: {}", refused.message);
    }
}
