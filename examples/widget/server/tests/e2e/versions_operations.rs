//! Widget's two versions in the cluster and in operations: the cluster's webhooks and
//! policies written for v1 judge v1alpha1 writes, `--migrate-storage` rewrites what an older
//! server stored, and the generated APIServices (one per version) build with kubectl.

use crate::common;

use std::time::Duration;

use common::versions::{ALPHA, V1, get, v1};
use common::{KUBECTL_DIR, ServerProcess, WidgetServer};
use serde_json::{Value, json};

/// A v1alpha1 Widget labelled for one admission `scenario`.
fn alpha_in(name: &str, scenario: &str, size: &str) -> String {
    format!(
        "apiVersion: custom.example.com/v1alpha1\nkind: Widget\nmetadata:\n  name: {name}\n  namespace: default\n  labels:\n    scenario: {scenario}\nspec:\n  size: {size}\n  image: nginx:1.27\n"
    )
}

/// Rules for Widgets at v1 only, selecting one scenario's objects.
fn v1_rules(scenario: &str) -> Value {
    json!({
        "rules": [{"apiGroups": ["custom.example.com"], "apiVersions": ["v1"],
                   "operations": ["CREATE"], "resources": ["widgets"]}],
        "objectSelector": {"matchLabels": {"scenario": scenario}},
    })
}

/// The cluster's webhooks and policies written for v1 judge v1alpha1 writes too, converted to
/// v1 (`matchPolicy: Equivalent`, the default); `Exact` ones do not. The core API is the
/// fast stand-in; the webhook is a real HTTPS server.
#[test]
fn cluster_admission_for_v1_sees_v1alpha1_writes_converted() {
    use apiary_runtime::testing::webhook::{HOST, patch_response};
    use apiary_runtime::testing::{AdmissionWebhook, CoreApiStandIn};

    let dir = tempfile::tempdir().unwrap();
    let core = CoreApiStandIn::start(&dir.path().join("core"));
    let webhook = AdmissionWebhook::start(&dir.path().join("webhook"), |path, _| match path {
        // A v1 field the v1alpha1 request cannot name.
        "/mutate" => patch_response(json!([{"op": "add", "path": "/spec/color", "value": "purple"}])),
        _ => json!({"allowed": true}),
    });
    let mut flags = common::core_api_flags(&core.kubeconfig);
    flags.extend(["--admission-webhook-address".to_string(), format!("{HOST}=127.0.0.1")]);
    let server = ServerProcess::start_in(dir.path(), &flags.iter().map(String::as_str).collect::<Vec<_>>());
    let hook = |name: &str, scenario: &str, path: &str, extra: Value| {
        let mut hook = v1_rules(scenario);
        hook["name"] = json!(name);
        hook["clientConfig"] = webhook.url_config(path);
        hook["sideEffects"] = json!("None");
        hook["admissionReviewVersions"] = json!(["v1"]);
        for (k, v) in extra.as_object().unwrap() {
            hook[k] = v.clone();
        }
        hook
    };
    core.set_webhook_configuration(json!({"apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration", "metadata": {"name": "m"},
        "webhooks": [hook("m.example.com", "hooks", "/mutate", json!({}))]}));
    core.set_webhook_configuration(json!({"apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration", "metadata": {"name": "v"},
        "webhooks": [hook("exact.example.com", "hooks", "/exact", json!({"matchPolicy": "Exact"}))]}));
    let mut policy = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "few"},
        "spec": {"matchConstraints": v1_rules("policy"),
                 "validations": [{"expression": "object.spec.replicas <= 3", "message": "at most 3 replicas"}]}});
    policy["spec"]["matchConstraints"]["resourceRules"] = policy["spec"]["matchConstraints"]["rules"].take();
    policy["spec"]["matchConstraints"]
        .as_object_mut()
        .unwrap()
        .remove("rules");
    core.set_policy(policy, false);
    core.set_policy(
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": "few-binding"}, "spec": {"policyName": "few", "validationActions": ["Deny"]}}),
        false,
    );
    let k = server.kubectl("1.33");

    // The policy, written for v1, refuses a large v1alpha1 Widget (5 replicas at v1).
    let refused = common::eventually("the policy is seen", || {
        let run = k.run_with_stdin(&["create", "-f", "-"], &alpha_in("large", "policy", "large"));
        (run.code != 0).then_some(run)
    });
    assert!(refused.stderr.contains("at most 3 replicas"), "{}", refused.stderr);
    k.ok_stdin(&["create", "-f", "-"], &alpha_in("small", "policy", "small"));

    // The mutating webhook sees the v1alpha1 create as v1 and sets a v1 field.
    common::eventually("the mutating webhook is seen", || {
        k.ok_stdin(&["apply", "-f", "-"], &alpha_in("probe", "hooks", "small"));
        let probe = get(&k, V1, "probe");
        (probe["spec"]["color"] == "purple").then_some(())
    });
    webhook.clear();
    k.ok_stdin(&["create", "-f", "-"], &alpha_in("hooked", "hooks", "medium"));
    let hooked = get(&k, V1, "hooked");
    assert_eq!(
        hooked["spec"],
        json!({"replicas": 3, "image": "nginx:1.27", "color": "purple"})
    );
    let at = |path: &str| -> Vec<Value> {
        let received = webhook.received().into_iter();
        received
            .filter(|(uri, _)| uri.split('?').next() == Some(path))
            .map(|(_, r)| r)
            .collect()
    };
    let mutations = at("/mutate");
    let review = mutations.first().expect("the mutating webhook is called");
    let request = &review["request"];
    assert_eq!(request["kind"]["version"], "v1");
    assert_eq!(request["requestKind"]["version"], "v1alpha1");
    assert_eq!(request["resource"]["version"], "v1");
    assert_eq!(request["requestResource"]["version"], "v1alpha1");
    assert_eq!(request["object"]["apiVersion"], "custom.example.com/v1");
    assert_eq!(request["object"]["spec"]["replicas"], 3);
    // matchPolicy Exact: the v1-only webhook is not asked about v1alpha1 writes, only v1 ones.
    assert!(at("/exact").is_empty());
    k.ok_stdin(
        &["create", "-f", "-"],
        &alpha_in("at-v1", "hooks", "small")
            .replace("v1alpha1", "v1")
            .replace("size: small", "replicas: 1"),
    );
    assert_eq!(at("/exact").len(), 1);
}

/// `--migrate-storage` on the embedded store: a Widget an older server stored at v1alpha1 (put
/// into the data file directly, as that server would have) is rewritten at v1, once; the
/// server then reads it at both versions.
#[test]
fn migrate_storage_rewrites_what_an_older_server_stored() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = ["--data-dir", data.to_str().unwrap()];
    let server = ServerProcess::start_in(dir.path(), &args);
    server
        .kubectl("1.33")
        .ok_stdin(&["apply", "-f", "-"], &v1("current", 4, "red"));
    server.terminate(Duration::from_secs(30)).expect("the server stops");
    let old = json!({"apiVersion": "custom.example.com/v1alpha1", "kind": "Widget",
        "metadata": {"name": "old", "namespace": "default", "uid": "8e3d1f5c-0000-4000-8000-000000000001",
                     "creationTimestamp": "2026-01-01T00:00:00Z", "generation": 1},
        "spec": {"size": "large", "image": "nginx:1.20"}});
    {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let storage = apiary_runtime::storage::embedded(&data.join("apiary.redb")).unwrap();
            storage
                .create(
                    "/registry/custom.example.com/widgets/default/old",
                    serde_json::to_vec(&old).unwrap(),
                )
                .await
                .unwrap();
        });
    }
    let migrate = |what: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_widget-server"))
            .args(["--migrate-storage", "--data-dir", data.to_str().unwrap()])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{what}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let first = migrate("first run");
    assert!(
        first.contains(
            "widgets.custom.example.com: done: 2 scanned, 1 rewritten, 1 already current, 0 deleted meanwhile, 0 failed"
        ),
        "{first}"
    );
    assert_eq!(
        first.matches("migrating widgets.custom.example.com").count(),
        1,
        "one pass per kind: {first}"
    );
    let again = migrate("second run");
    assert!(
        again.contains("widgets.custom.example.com: done: 2 scanned, 0 rewritten, 2 already current"),
        "{again}"
    );

    let server = ServerProcess::start_in(dir.path(), &args);
    let k = server.kubectl("1.33");
    assert_eq!(
        get(&k, V1, "old")["spec"],
        json!({"replicas": 5, "image": "nginx:1.20", "color": "blue"})
    );
    assert_eq!(
        get(&k, ALPHA, "old")["spec"],
        json!({"size": "large", "image": "nginx:1.20"})
    );
    assert_eq!(get(&k, V1, "current")["spec"]["color"], "red");
}

/// The generated deploy directory builds with kubectl 1.27's and 1.33's kustomize into one
/// APIService per served version, the preferred with the higher versionPriority
/// (`real_cluster.rs` registers them with a real kube-apiserver; `codegen/tests/generated.rs`
/// parses every manifest as its Kubernetes type).
#[test]
fn generated_apiservices_build_with_kubectl_kustomize() {
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    for version in common::VERSIONS {
        let out = std::process::Command::new(format!("{KUBECTL_DIR}/kubectl.{version}"))
            .args(["kustomize", deploy.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl {version}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let mut services: Vec<(String, i64)> = text
            .split("\n---\n")
            .filter_map(|doc| serde_saphyr::from_str::<Value>(doc).ok())
            .filter(|doc| doc["kind"] == "APIService")
            .map(|doc| {
                let name = doc["metadata"]["name"].as_str().unwrap().to_string();
                (name, doc["spec"]["versionPriority"].as_i64().unwrap())
            })
            .collect();
        services.sort_by_key(|(_, priority)| -priority);
        let names: Vec<&str> = services.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["v1.custom.example.com", "v1alpha1.custom.example.com"],
            "kubectl {version}"
        );
        assert!(services[0].1 > services[1].1);
    }
}
