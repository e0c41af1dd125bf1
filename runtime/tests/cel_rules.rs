//! CEL validation rules (`x-kubernetes-validations`) declared on the types with schemars and
//! enforced on every write as kube-apiserver enforces a CRD's: field- and type-level rules,
//! `fieldPath` and `reason`, `messageExpression`, a rule over a list-map, transition rules with
//! `oldSelf` (updates only), rules refused when the resource is served, and a rule that only
//! proves expensive at run time cut off by the cost budget, with kube-apiserver's words.

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

/// A rule that does not compile, on a type the derive does not see (on the resource type or
/// its fields it is a compile error: `tests/ui/bad_cel_rule.rs`).
#[derive(ApiResource, Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[api(group = "example.com", version = "v1", kind = "Broken", namespaced)]
pub struct Broken {
    #[serde(default)]
    metadata: ObjectMeta,
    spec: BrokenSpec,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct BrokenSpec {
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self.size >", "message": "x"}]))]
    size: i64,
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
    assert!(error.starts_with("Broken: spec.size: "), "{error}");
    assert!(error.contains("self.size >"), "{error}");
    let error = store::<Costly>().err().expect("an unbounded rule is refused");
    assert!(error.starts_with("Costly: spec: "), "{error}");
    assert!(error.contains("maxItems"), "{error}");
}

/// A rule kube-cel's static estimate passes (it does not count what a comprehension ranges
/// over) whose cost is quadratic in the list: every pair of tags, made and then read.
#[derive(ApiResource, Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[api(group = "example.com", version = "v1", kind = "Tagged", namespaced)]
pub struct Tagged {
    #[serde(default)]
    metadata: ObjectMeta,
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self.map(a, self.map(b, a + b)).all(pairs, pairs.size() >= 0)"},
        {"rule": "self.size() < 100000", "message": "never reached once the budget is spent"},
    ]))]
    spec: Vec<String>,
}

#[tokio::test]
async fn a_rule_that_proves_expensive_is_cut_off_with_a_422_not_a_stall() {
    let store = store::<Tagged>().expect("the static estimate lets the rule through");
    let tags = |n: usize| json!((0..n).map(|i| format!("t{i}")).collect::<Vec<_>>());
    store
        .create(Some("default"), pool("few", tags(20)), &WriteOptions::default())
        .await
        .expect("20 tags: 400 pairs, well within the budget");
    // 1,500 tags: 2.25 million pairs, past the per-rule limit of 1,000,000 steps (or 100 ms).
    let message = refused(&store, pool("many", tags(1500))).await;
    assert!(
        message.contains(
            "spec: Invalid value: \"array\": 'operation cancelled: actual cost limit exceeded': no further validation rules will be run due to call cost exceeds limit for rule: self.map(a, self.map(b, a + b)).all(pairs, pairs.size() >= 0)"
        ),
        "{message}"
    );
    assert!(
        !message.contains("never reached"),
        "no rule runs after the cut: {message}"
    );
}

/// Values as kube-apiserver hands them to rules: defaulted, list-map items correlated with
/// their old selves by key (not by position), formatted strings as CEL types, escaped
/// property names.
#[derive(ApiResource, Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[api(group = "example.com", version = "v1", kind = "Shaped", namespaced)]
pub struct Shaped {
    #[serde(default)]
    metadata: ObjectMeta,
    spec: ShapedSpec,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.x__dash__retries >= 0", "message": "x-retries must not be negative"},
    {"rule": "self.mode in ['fast', 'safe']", "message": "mode must be fast or safe"},
]))]
pub struct ShapedSpec {
    /// Defaulted by serde: the rules see the default where the body has none.
    #[serde(default = "fast")]
    mode: String,
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    ports: Vec<ImmutablePort>,
    #[schemars(extend("format" = "date-time", "x-kubernetes-validations" = [
        {"rule": "self < timestamp('2030-01-01T00:00:00Z')", "message": "must be before 2030"},
    ]))]
    until: String,
    #[serde(rename = "x-retries", default)]
    x_retries: i64,
}

fn fast() -> String {
    "fast".into()
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.port == oldSelf.port", "message": "a port's number is immutable"},
]))]
pub struct ImmutablePort {
    name: String,
    port: i64,
}

#[tokio::test]
async fn rules_see_values_as_kube_apiserver_hands_them_over() {
    let store = store::<Shaped>().unwrap();
    let shaped = |ports: Value, until: &str| json!({"metadata": {"name": "s"}, "spec": {"ports": ports, "until": until, "x-retries": 1}});
    let ports = json!([{"name": "http", "port": 80}, {"name": "https", "port": 443}]);
    store
        .create(
            Some("default"),
            shaped(ports, "2029-06-01T00:00:00Z"),
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    let update = |body: Value| {
        let store = &store;
        async move {
            store
                .update(Some("default"), "s", body, Part::Main, &WriteOptions::default())
                .await
        }
    };
    // Reordered, and a new port: each item meets its old self by name; the new one has none.
    let reordered =
        json!([{"name": "metrics", "port": 9090}, {"name": "https", "port": 443}, {"name": "http", "port": 80}]);
    update(shaped(reordered, "2029-06-01T00:00:00Z"))
        .await
        .expect("list-map items correlate by key, not position");
    let changed =
        json!([{"name": "metrics", "port": 9090}, {"name": "https", "port": 8443}, {"name": "http", "port": 80}]);
    let error = update(shaped(changed.clone(), "2029-06-01T00:00:00Z"))
        .await
        .unwrap_err();
    assert!(
        error
            .message
            .contains("spec.ports[1]: Invalid value: \"object\": a port's number is immutable"),
        "{}",
        error.message
    );
    // A date-time string is a timestamp to CEL.
    let error = update(shaped(changed, "2031-01-01T00:00:00Z")).await.unwrap_err();
    assert!(
        error
            .message
            .contains("spec.until: Invalid value: \"string\": must be before 2030"),
        "{}",
        error.message
    );
    // An escaped property name (x-retries) is read as CEL names it.
    let body = json!({"metadata": {"name": "r"}, "spec": {"until": "2029-01-01T00:00:00Z", "x-retries": -1}});
    let message = refused(&store, body).await;
    assert!(
        message.contains("spec: Invalid value: \"object\": x-retries must not be negative"),
        "{message}"
    );
    assert!(
        !message.contains("mode"),
        "the body has no mode; its default is fast: {message}"
    );
    let body = json!({"metadata": {"name": "m"}, "spec": {"until": "2029-01-01T00:00:00Z", "mode": "slow"}});
    let message = refused(&store, body).await;
    assert!(
        message.contains("spec: Invalid value: \"object\": mode must be fast or safe"),
        "{message}"
    );
}

/// Rules at the resource's root see `metadata.name` and `generateName` only, as upstream.
#[derive(ApiResource, Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[api(group = "example.com", version = "v1", kind = "Named", namespaced)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.metadata.name.startsWith('n-')", "message": "names start with n-"},
    {"rule": "!has(self.metadata.labels) && !has(self.metadata.namespace)", "message": "the root sees only name and generateName"},
]))]
pub struct Named {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<i64>,
}

#[tokio::test]
async fn rules_at_the_root_see_only_the_name_of_the_metadata() {
    let store = store::<Named>().unwrap();
    let body = |name: &str| json!({"metadata": {"name": name, "labels": {"team": "a"}}, "spec": 1});
    store
        .create(Some("default"), body("n-1"), &WriteOptions::default())
        .await
        .expect("labels and namespace are not the root rules' to see");
    let message = refused(&store, body("m-1")).await;
    assert!(
        message.contains("Invalid value: \"object\": names start with n-"),
        "{message}"
    );
    assert!(!message.contains("only name"), "{message}");
}
