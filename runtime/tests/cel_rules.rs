//! CEL validation rules (`x-kubernetes-validations`) declared on the types with schemars and
//! enforced on every write as kube-apiserver enforces a CRD's: field- and type-level rules,
//! `fieldPath` and `reason`, `messageExpression`, a rule over a list-map, transition rules with
//! `oldSelf` (updates only), and rules refused when the resource is served.

use std::sync::Arc;

use apiary_runtime::prelude::*;
use apiary_runtime::registry::{Part, Store, TypedStrategy, WriteOptions};
use apiary_runtime::storage::{self, WatchCache};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.minReplicas <= self.maxReplicas", "message": "must not exceed maxReplicas",
     "fieldPath": ".minReplicas", "reason": "FieldValueForbidden"},
]))]
pub struct PoolSpec {
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self <= 10", "messageExpression": "'must be at most 10, not ' + string(self)"},
    ]))]
    pub min_replicas: i32,
    pub max_replicas: i32,
    /// Immutable once set: a transition rule.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "is immutable"}]))]
    pub zone: String,
    /// A list-map keyed by `name`, every port in range.
    #[serde(default)]
    #[schemars(extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["name"],
        "x-kubernetes-validations" = [{"rule": "self.all(p, p.port > 0 && p.port < 65536)", "message": "ports must be 1-65535"}]
    ))]
    pub ports: Vec<Port>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct Port {
    pub name: String,
    pub port: i64,
}

#[derive(ApiResource, Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[api(group = "example.com", version = "v1", namespaced)]
pub struct Pool {
    #[serde(default)]
    metadata: ObjectMeta,
    spec: PoolSpec,
}

fn store<T: ApiResource>() -> Result<Store, String> {
    Store::new(
        Arc::new(TypedStrategy::<T>::default()),
        WatchCache::new(storage::memory(), 10),
        "/registry",
    )
}

fn pool(name: &str, spec: Value) -> Value {
    json!({"metadata": {"name": name}, "spec": spec})
}

async fn refused(store: &Store, body: Value) -> String {
    let error = store
        .create(Some("default"), body, &WriteOptions::default())
        .await
        .unwrap_err();
    assert_eq!(error.code, 422, "{}", error.message);
    error.message
}

#[tokio::test]
async fn rules_on_fields_types_and_lists_refuse_with_kube_apiservers_words() {
    let store = store::<Pool>().unwrap();
    let good = json!({"minReplicas": 1, "maxReplicas": 3, "zone": "a", "ports": [{"name": "http", "port": 80}]});
    store
        .create(Some("default"), pool("good", good), &WriteOptions::default())
        .await
        .unwrap();

    let message = refused(
        &store,
        pool("over", json!({"minReplicas": 12, "maxReplicas": 20, "zone": "a"})),
    )
    .await;
    assert!(
        message.contains("spec.minReplicas: Invalid value: \"integer\": must be at most 10, not 12"),
        "{message}"
    );

    let message = refused(
        &store,
        pool("crossed", json!({"minReplicas": 5, "maxReplicas": 3, "zone": "a"})),
    )
    .await;
    assert!(
        message.contains("spec.minReplicas: Forbidden: must not exceed maxReplicas"),
        "{message}"
    );

    let ports = json!([{"name": "http", "port": 80}, {"name": "bad", "port": 70000}]);
    let spec = json!({"minReplicas": 1, "maxReplicas": 3, "zone": "a", "ports": ports});
    let message = refused(&store, pool("ports", spec)).await;
    assert!(
        message.contains("spec.ports: Invalid value: \"array\": ports must be 1-65535"),
        "{message}"
    );
}

#[tokio::test]
async fn transition_rules_see_the_stored_object_on_update_only() {
    let store = store::<Pool>().unwrap();
    let spec = json!({"minReplicas": 1, "maxReplicas": 3, "zone": "a"});
    store
        .create(Some("default"), pool("p", spec), &WriteOptions::default())
        .await
        .unwrap();
    let update = |zone: &str, min: i32| {
        let body = pool("p", json!({"minReplicas": min, "maxReplicas": 3, "zone": zone}));
        let store = &store;
        async move {
            store
                .update(Some("default"), "p", body, Part::Main, &WriteOptions::default())
                .await
        }
    };
    update("a", 2).await.expect("the zone unchanged: the rule holds");
    let error = update("b", 2).await.unwrap_err();
    assert_eq!(error.code, 422);
    assert!(
        error
            .message
            .contains("spec.zone: Invalid value: \"string\": is immutable"),
        "{}",
        error.message
    );
}

/// A rule that does not compile.
#[derive(ApiResource, Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[api(group = "example.com", version = "v1", kind = "Broken", namespaced)]
pub struct Broken {
    #[serde(default)]
    metadata: ObjectMeta,
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self.size >", "message": "x"}]))]
    spec: PoolSpec,
}

/// A rule whose cost has no bound: every pair of an unbounded list's items.
#[derive(ApiResource, Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[api(group = "example.com", version = "v1", kind = "Costly", namespaced)]
pub struct Costly {
    #[serde(default)]
    metadata: ObjectMeta,
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self.all(a, self.all(b, self.all(c, a + b + c != '')))"}]))]
    spec: Vec<String>,
}

#[test]
fn rules_that_do_not_compile_or_cost_too_much_are_refused_at_start() {
    let error = store::<Broken>()
        .err()
        .expect("a rule that does not compile is refused");
    assert!(error.starts_with("Broken: spec: "), "{error}");
    assert!(error.contains("self.size >"), "{error}");
    let error = store::<Costly>().err().expect("an unbounded rule is refused");
    assert!(error.starts_with("Costly: spec: "), "{error}");
    assert!(error.contains("maxItems"), "{error}");
}
