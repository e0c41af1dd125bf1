//! The cluster's admission objects, created in the real kube-apiserver, applied by the server:
//! a ValidatingAdmissionPolicy with its binding, a Mutating- and a ValidatingWebhookConfiguration
//! calling a real HTTPS webhook, and NamespaceLifecycle against the cluster's namespaces.

use std::time::Duration;

use apiary_runtime::testing::AdmissionWebhook;
use apiary_runtime::testing::webhook::patch_response;
use serde_json::{Value, json};

use super::{Fixture, until};

/// A Widget for the admission scenarios, labelled so that only their webhooks select it.
fn widget(name: &str, replicas: i32) -> String {
    format!(
        "apiVersion: custom.example.com/v1\nkind: Widget\nmetadata:\n  name: {name}\n  labels:\n    scenario: real\nspec:\n  replicas: {replicas}\n  image: nginx:1.25\n"
    )
}

/// The webhook's answers: /deny refuses 13 replicas, /mutate adds a label.
fn answer(path: &str, review: &Value) -> Value {
    match path {
        "/deny" if review["request"]["object"]["spec"]["replicas"] == 13 => {
            json!({"allowed": false, "status": {"code": 403, "reason": "Forbidden", "message": "13 is unlucky"}})
        }
        "/mutate" => patch_response(json!([{"op": "add", "path": "/metadata/labels/mutated", "value": "yes"}])),
        _ => json!({"allowed": true}),
    }
}

fn hook(name: &str, client: Value) -> Value {
    json!({
        "name": name,
        "clientConfig": client,
        "rules": [{"apiGroups": ["custom.example.com"], "apiVersions": ["v1"],
                   "operations": ["CREATE", "UPDATE"], "resources": ["widgets"]}],
        "objectSelector": {"matchLabels": {"scenario": "real"}},
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
    })
}

/// Run `create` until its stderr contains `expected` (the server's informers see a new
/// configuration within moments, not at once); the last run's stderr.
async fn refused_with(f: &Fixture, manifest: &str, expected: &str) -> String {
    let k = f.kubectl(None);
    until(expected, Duration::from_secs(30), || {
        let run = k.run_with_stdin(&["create", "-f", "-"], manifest);
        if run.code == 0 {
            let name = manifest.lines().find_map(|l| l.trim().strip_prefix("name: ")).unwrap();
            k.ok(&["delete", "widget", name]);
        }
        std::future::ready(run.stderr.contains(expected).then_some(run.stderr))
    })
    .await
}

/// A policy, two webhooks and namespace lifecycle, each refusing or changing a Widget.
pub async fn cluster_objects_apply(f: &Fixture) {
    let k = f.kubectl(None);
    let policy = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "widget-limit"},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"apiGroups": ["custom.example.com"], "apiVersions": ["*"],
                                                    "operations": ["CREATE", "UPDATE"], "resources": ["widgets"]}]},
            "validations": [{"expression": "object.spec.replicas <= 50", "message": "at most 50 replicas"}],
        },
    });
    let binding = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": "widget-limit"},
        "spec": {"policyName": "widget-limit", "validationActions": ["Deny"]},
    });
    for object in [policy, binding] {
        k.ok_stdin(&["apply", "-f", "-"], &object.to_string());
    }
    let refused = refused_with(f, &widget("huge", 60), "at most 50 replicas").await;
    // Word for word what kubectl prints for kube-apiserver's own refusal of a ConfigMap by a
    // policy (`The configmaps "big" is invalid: : ValidatingAdmissionPolicy …`).
    assert!(
        refused.contains(r#"The widgets "huge" is invalid: : ValidatingAdmissionPolicy 'widget-limit' with binding 'widget-limit' denied request: at most 50 replicas"#),
        "{refused}"
    );

    let webhook = AdmissionWebhook::start(&f.dir().join("webhook"), answer);
    for (kind, name, path) in [
        ("ValidatingWebhookConfiguration", "deny.example.com", "/deny"),
        ("MutatingWebhookConfiguration", "mutate.example.com", "/mutate"),
    ] {
        let configuration = json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": kind, "metadata": {"name": name},
            "webhooks": [hook(name, webhook.url_config(path))],
        });
        k.ok_stdin(&["apply", "-f", "-"], &configuration.to_string());
    }
    let refused = refused_with(f, &widget("unlucky", 13), "13 is unlucky").await;
    assert!(
        refused.contains(r#"admission webhook "deny.example.com" denied the request: 13 is unlucky"#),
        "{refused}"
    );
    let label = until(
        "the mutating webhook to label a new Widget",
        Duration::from_secs(30),
        || {
            k.ok_stdin(&["apply", "-f", "-"], &widget("lucky", 2));
            let label = k.ok(&["get", "widget", "lucky", "-o", "jsonpath={.metadata.labels.mutated}"]);
            if label.is_empty() {
                k.ok(&["delete", "widget", "lucky"]);
            }
            std::future::ready((!label.is_empty()).then_some(label))
        },
    )
    .await;
    assert_eq!(label, "yes");
    let reviewed = webhook.received();
    assert!(
        reviewed
            .iter()
            .any(|(_, r)| r["request"]["userInfo"]["username"] == "kubernetes-admin"),
        "the webhook sees the user the aggregator forwarded: {reviewed:?}"
    );
    for (kind, name) in [
        ("validatingwebhookconfiguration", "deny.example.com"),
        ("mutatingwebhookconfiguration", "mutate.example.com"),
        ("validatingadmissionpolicybinding", "widget-limit"),
        ("validatingadmissionpolicy", "widget-limit"),
    ] {
        k.ok(&["delete", kind, name]);
    }
    k.ok(&["delete", "widget", "lucky"]);

    let missing = k.run_with_stdin(
        &["create", "-n", "nowhere", "-f", "-"],
        &crate::common::widget("lost", 1, ""),
    );
    assert!(
        missing
            .stderr
            .contains(r#"Error from server (NotFound): error when creating "STDIN": namespaces "nowhere" not found"#),
        "{}",
        missing.stderr
    );
}

/// `authorizer` in a policy, answered by the cluster's RBAC through SubjectAccessReviews: only
/// users who may `approve` widgets may ask for five replicas or more. Alice (impersonated) may
/// create widgets; she is refused until a RoleBinding lets her approve them.
pub async fn authorizer_in_policies(f: &Fixture) {
    let k = f.kubectl(None);
    let policy = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "widget-approvers"},
        "spec": {
            "matchConstraints": {"resourceRules": [{"apiGroups": ["custom.example.com"], "apiVersions": ["v1"],
                                                    "operations": ["CREATE"], "resources": ["widgets"]}]},
            "validations": [{
                "expression": "object.spec.replicas < 5 || authorizer.group('custom.example.com').resource('widgets').namespace(object.metadata.namespace).check('approve').allowed()",
                "messageExpression": "'only approvers may ask for ' + string(object.spec.replicas) + ' replicas'",
            }],
        },
    });
    let binding = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": "widget-approvers"},
        "spec": {"policyName": "widget-approvers", "validationActions": ["Deny"]},
    });
    for object in [policy, binding] {
        k.ok_stdin(&["apply", "-f", "-"], &object.to_string());
    }
    k.ok(&[
        "create",
        "role",
        "widget-maker",
        "--verb=create,get,delete",
        "--resource=widgets.custom.example.com",
    ]);
    k.ok(&[
        "create",
        "rolebinding",
        "widget-maker",
        "--role=widget-maker",
        "--user=alice",
    ]);
    let as_alice = |args: &[&str], stdin: &str| {
        let mut full = vec!["--as", "alice"];
        full.extend_from_slice(args);
        k.run_with_stdin(&full, stdin)
    };
    let refused = until("the policy refuses alice", Duration::from_secs(30), || {
        let run = as_alice(&["create", "-f", "-"], &widget("approved", 6));
        if run.code == 0 {
            k.ok(&["delete", "widget", "approved"]);
        }
        std::future::ready(run.stderr.contains("only approvers").then_some(run.stderr))
    })
    .await;
    assert!(
        refused.contains(
            "ValidatingAdmissionPolicy 'widget-approvers' with binding 'widget-approvers' denied request: only approvers may ask for 6 replicas"
        ),
        "{refused}"
    );
    let small = as_alice(&["create", "-f", "-"], &widget("unapproved", 2));
    assert_eq!(small.code, 0, "{}", small.stderr);

    k.ok(&[
        "create",
        "role",
        "widget-approver",
        "--verb=approve",
        "--resource=widgets.custom.example.com",
    ]);
    k.ok(&[
        "create",
        "rolebinding",
        "widget-approver",
        "--role=widget-approver",
        "--user=alice",
    ]);
    // Within the server's cache of denials (10 s by default), then allowed.
    until("alice may approve", Duration::from_secs(30), || {
        let run = as_alice(&["create", "-f", "-"], &widget("approved", 6));
        std::future::ready((run.code == 0).then_some(()))
    })
    .await;
    for (kind, name) in [
        ("widget", "approved"),
        ("widget", "unapproved"),
        ("validatingadmissionpolicybinding", "widget-approvers"),
        ("validatingadmissionpolicy", "widget-approvers"),
        ("rolebinding", "widget-maker"),
        ("rolebinding", "widget-approver"),
        ("role", "widget-maker"),
        ("role", "widget-approver"),
    ] {
        k.ok(&["delete", kind, name]);
    }
}
