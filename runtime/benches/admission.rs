//! Admission cost: creates through the registry with no webhook, with one validating
//! webhook, and with one mutating and one validating webhook (real HTTPS webhooks on
//! loopback, configured through the core-API stand-in), next to the bare pooled HTTPS round
//! trip to the same webhook server; then CEL: creates of a type with the Widget example's
//! rules, creates under one ValidatingAdmissionPolicy, and the compiled rules alone per object.
//! Prints Markdown tables and the TLS handshakes the webhook server completed (see BENCHMARKS.md).
//!
//! cargo bench -p apiary-runtime --bench admission
//! APIARY_BENCH_OBJECTS=2000 APIARY_BENCH_CONCURRENCY=16 cargo bench -p apiary-runtime --bench admission

mod common;

use std::sync::Arc;
use std::time::Duration;

use apiary_runtime::admission::namespace::Namespaces;
use apiary_runtime::admission::policy::ValidatingPolicies;
use apiary_runtime::admission::webhook::client::{Caller, Credentials};
use apiary_runtime::admission::webhook::{MutatingWebhooks, ValidatingWebhooks};
use apiary_runtime::admission::{Chain, Plugin};
use apiary_runtime::prelude::*;
use apiary_runtime::registry::{Store, TypedStrategy, WriteOptions};
use apiary_runtime::storage::{self, WatchCache};
use apiary_runtime::testing::webhook::patch_response;
use apiary_runtime::testing::{AdmissionWebhook, CoreApiStandIn};
use common::{Item, Row, env, item, load};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

fn hook(name: &str, client: serde_json::Value) -> serde_json::Value {
    json!({
        "name": name, "clientConfig": client, "sideEffects": "None", "admissionReviewVersions": ["v1"],
        "rules": [{"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["CREATE"], "resources": ["*"]}],
    })
}

/// `Item` with the Widget example's CEL rules: an image with a version, at most 100 replicas.
#[derive(ApiResource, Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[api(group = "bench.example.com", version = "v1", kind = "RuledItem", namespaced)]
pub struct RuledItem {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: RuledSpec,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "self.replicas <= 100", "message": "at most 100"}]))]
pub struct RuledSpec {
    pub replicas: i32,
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "!self.endsWith(':latest')", "message": "not :latest"}]))]
    pub image: String,
    pub labels: std::collections::BTreeMap<String, String>,
}

async fn creates(target: &str, chain: Chain, objects: usize, concurrency: usize) -> Row {
    creates_of::<Item>(target, chain, objects, concurrency).await
}

async fn creates_of<T: ApiResource>(target: &str, chain: Chain, objects: usize, concurrency: usize) -> Row {
    let cache = WatchCache::new(storage::memory(), storage::cache::WINDOW);
    let store = Arc::new(
        Store::new(Arc::new(TypedStrategy::<T>::default()), cache, "/bench")
            .unwrap()
            .with_admission(chain),
    );
    load(target, "create", objects, concurrency, move |i| {
        let s = store.clone();
        async move {
            let mut body = item(i);
            body["kind"] = json!(T::META.kind);
            s.create(Some("default"), body, &WriteOptions::default()).await.unwrap();
        }
    })
    .await
}

#[tokio::main]
async fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let objects = env("APIARY_BENCH_OBJECTS", if quick { 50 } else { 2000 });
    let concurrency = env("APIARY_BENCH_CONCURRENCY", 16);
    let dir = tempfile::tempdir().unwrap();
    let core = CoreApiStandIn::start(&dir.path().join("core"));
    let webhook = AdmissionWebhook::start(&dir.path().join("webhook"), |path, _| match path {
        "/mutate" => patch_response(json!([{"op": "add", "path": "/metadata/labels/admitted", "value": "yes"}])),
        _ => json!({"allowed": true}),
    });
    core.set_webhook_configuration(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "bench"}, "webhooks": [hook("v.bench", webhook.url_config("/validate"))],
    }));
    core.set_webhook_configuration(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "bench"}, "webhooks": [hook("m.bench", webhook.url_config("/mutate"))],
    }));
    let kubeconfig = kube::config::Kubeconfig::read_from(&core.kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let namespaces = Namespaces::start(client.clone());
    let caller = || Caller::new(Default::default(), Credentials::default());
    let validating = Arc::new(ValidatingWebhooks::start(
        client.clone(),
        namespaces.clone(),
        caller(),
        None,
        None,
    ));
    let mutating = Arc::new(MutatingWebhooks::start(
        client.clone(),
        namespaces.clone(),
        caller(),
        None,
        None,
    ));
    core.set_policy(
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
               "metadata": {"name": "bench"},
               "spec": {"matchConstraints": {"resourceRules": [{"apiGroups": ["*"], "apiVersions": ["*"],
                                                                 "operations": ["CREATE"], "resources": ["*"]}]},
                        "validations": [{"expression": "object.spec.replicas <= 100"}]}}),
        false,
    );
    core.set_policy(
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
               "metadata": {"name": "bench"}, "spec": {"policyName": "bench", "validationActions": ["Deny"]}}),
        false,
    );
    let policies = Arc::new(ValidatingPolicies::start(client, namespaces, None, Vec::new(), None));
    while validating.ready().await.is_err() || mutating.ready().await.is_err() || policies.ready().await.is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut rows = Vec::new();
    rows.push(creates("apiary memory, no webhook", Chain::default(), objects, concurrency).await);
    let before = webhook.handshakes();
    let one = Chain::default();
    one.push(validating.clone());
    rows.push(creates("apiary memory, 1 validating webhook", one, objects, concurrency).await);
    let both = Chain::default();
    both.push(mutating);
    both.push(validating);
    rows.push(
        creates(
            "apiary memory, mutating + validating webhook",
            both,
            objects,
            concurrency,
        )
        .await,
    );
    let calls = objects * 3;
    let handshakes = webhook.handshakes() - before;

    // The physical limit: the same POST of an AdmissionReview on a pooled connection.
    let bare = Arc::new(caller());
    let config: k8s_openapi::api::admissionregistration::v1::WebhookClientConfig =
        serde_json::from_value(webhook.url_config("/validate")).unwrap();
    let review = serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u", "operation": "CREATE", "object": item(0)},
    }))
    .unwrap();
    let config = Arc::new(config);
    rows.push(
        load(
            "bare pooled HTTPS POST to the webhook",
            "round trip",
            objects,
            concurrency,
            move |_| {
                let (bare, config, review) = (bare.clone(), config.clone(), review.clone());
                async move {
                    bare.post(&config, review, Duration::from_secs(10)).await.unwrap();
                }
            },
        )
        .await,
    );
    println!("{objects} objects, {concurrency} concurrent clients\n");
    common::print_table(&mut rows);
    println!("\nTLS handshakes completed by the webhook server for {calls} webhook calls: {handshakes}");

    // CEL: the same creates with rules on the type, and under one policy.
    let mut rows = Vec::new();
    rows.push(creates("apiary memory, no rules", Chain::default(), objects, concurrency).await);
    rows.push(
        creates_of::<RuledItem>(
            "apiary memory, the example's 2 CEL rules",
            Chain::default(),
            objects,
            concurrency,
        )
        .await,
    );
    let policy = Chain::default();
    policy.push(policies);
    rows.push(
        creates(
            "apiary memory, 1 ValidatingAdmissionPolicy",
            policy,
            objects,
            concurrency,
        )
        .await,
    );
    println!();
    common::print_table(&mut rows);
    // The compiled rules alone, per object (what a create adds to its CPU time), next to
    // kube-cel's own validator on the same schema (no cost budget): the engine without our walk.
    let schema = RuledItem::openapi_schema();
    let rules = apiary_runtime::schema::cel::Rules::new(&RuledItem::META, &schema)
        .unwrap()
        .expect("RuledItem has rules");
    let object = item(0);
    let runs = objects * 20;
    let per_object = |check: &dyn Fn()| {
        let started = std::time::Instant::now();
        for _ in 0..runs {
            check();
        }
        started.elapsed().as_secs_f64() * 1e6 / runs as f64
    };
    let ours = per_object(&|| assert!(rules.validate(&object, None).is_empty()));
    let compiled = kube_cel::compile_schema(&schema);
    let validator = kube_cel::Validator::new();
    let kube_cel_alone = per_object(&|| assert!(validator.validate_compiled(&compiled, &object, None).is_ok()));
    println!(
        "\nThe example's 2 CEL rules, compiled, on one ~400-byte object ({runs} runs): {ours:.1} µs per object; kube-cel's validator on the same schema: {kube_cel_alone:.1} µs"
    );
    // A comprehension, where every step is charged: 100 items, with and without the meter.
    let xs = apiary_runtime::cel::to_cel(&json!((0..100).collect::<Vec<i64>>()));
    let expression = "xs.all(x, x >= 0 && x < 1000)";
    let metered = apiary_runtime::cel::Program::compile(expression).unwrap();
    let plain = kube_cel::cel::Program::compile(expression).unwrap();
    let mut context = kube_cel::cel::Context::default();
    context.add_variable_from_value("xs", xs.clone());
    let with_steps = per_object(&|| {
        let budget = apiary_runtime::cel::Budget::default();
        assert_eq!(
            apiary_runtime::cel::run_bool(&metered, &[("xs", &xs)], &budget),
            Ok(true)
        );
    });
    let without = per_object(&|| assert_eq!(plain.execute(&context).unwrap(), kube_cel::cel::Value::Bool(true)));
    println!(
        "`{expression}` over 100 items: {with_steps:.1} µs with every step charged; {without:.1} µs by the bare `cel` crate"
    );
}
