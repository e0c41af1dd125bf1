//! The cluster's ValidatingAdmissionPolicies, watched from the core API (a stand-in: no
//! kube-apiserver runs here) and enforced on Widgets with CEL, driven by kubectl 1.27 and 1.33:
//! params from a ConfigMap (watched: the stand-in serves ConfigMaps only as a list and watch), each validationAction, failurePolicy with a broken expression, an
//! expensive expression cut off by the cost budget, namespaceObject, variables and
//! messageExpression, and policies and params changed while the server runs; one refusal
//! through the kube client too.

use crate::common;

use apiary_runtime::testing::CoreApiStandIn;
use common::{ServerProcess, VERSIONS, WidgetServer as _};
use serde_json::{Value, json};

fn widget(name: &str, scenario: &str, replicas: i32) -> String {
    format!(
        "apiVersion: custom.example.com/v1\nkind: Widget\nmetadata:\n  name: {name}\n  namespace: default\n  labels:\n    scenario: {scenario}\nspec:\n  replicas: {replicas}\n  image: nginx:1.25\n"
    )
}

/// A policy on Widget creates and updates of one `scenario` (by label), with `extra` fields.
fn policy(name: &str, scenario: &str, extra: Value) -> Value {
    let mut policy = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "matchConstraints": {
                "resourceRules": [{"apiGroups": ["custom.example.com"], "apiVersions": ["v1"],
                                   "operations": ["CREATE", "UPDATE"], "resources": ["widgets"]}],
                "objectSelector": {"matchLabels": {"scenario": scenario}},
            },
        },
    });
    for (k, v) in extra.as_object().unwrap() {
        policy["spec"][k] = v.clone();
    }
    policy
}

fn binding(name: &str, policy: &str, actions: &[&str], extra: Value) -> Value {
    let mut binding = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": policy, "validationActions": actions},
    });
    for (k, v) in extra.as_object().unwrap() {
        binding["spec"][k] = v.clone();
    }
    binding
}

#[test]
fn policies_validate_widgets_as_kube_apiserver_does() {
    let dir = tempfile::tempdir().unwrap();
    let core = CoreApiStandIn::start(&dir.path().join("core"));
    let (audit_flags, audit) = common::metadata_audit(dir.path());
    let mut flags = common::core_api_flags(&core.kubeconfig);
    flags.extend(audit_flags);
    let server = ServerProcess::start_in(dir.path(), &flags.iter().map(String::as_str).collect::<Vec<_>>());

    // Params from a ConfigMap; variables and messageExpression.
    core.set_param_configmap("default", "limits", Some(&[("maxReplicas", "5")]));
    core.set_policy(
        policy(
            "max-replicas",
            "limits",
            json!({
                "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
                "variables": [{"name": "most", "expression": "int(params.data.maxReplicas)"}],
                "validations": [{
                    "expression": "object.spec.replicas <= variables.most",
                    "messageExpression": "'replicas must be at most ' + string(variables.most) + ', not ' + string(object.spec.replicas)",
                }],
            }),
        ),
        false,
    );
    core.set_policy(
        binding(
            "max-replicas-binding",
            "max-replicas",
            &["Deny"],
            json!({"paramRef": {"name": "limits", "namespace": "default", "parameterNotFoundAction": "Deny"}}),
        ),
        false,
    );
    let k = server.kubectl(VERSIONS[0]);
    common::eventually("the policy is seen", || {
        let run = k.run_with_stdin(
            &["create", "--dry-run=server", "-f", "-"],
            &widget("probe", "limits", 9),
        );
        (run.code != 0).then_some(())
    });
    for version in VERSIONS {
        let k = server.kubectl(version);
        let refused = k.run_with_stdin(&["create", "-f", "-"], &widget(&format!("big-{version}"), "limits", 9));
        assert_ne!(refused.code, 0);
        assert!(
            refused.stderr.contains(
                "ValidatingAdmissionPolicy 'max-replicas' with binding 'max-replicas-binding' denied request: replicas must be at most 5, not 9"
            ),
            "kubectl {version}: {}",
            refused.stderr
        );
        k.ok_stdin(
            &["create", "-f", "-"],
            &widget(&format!("small-{version}"), "limits", 3),
        );
    }
    // Params changed while the server runs: seen once the params informer has the change.
    core.set_param_configmap("default", "limits", Some(&[("maxReplicas", "10")]));
    common::eventually("the changed params are seen", || {
        let run = k.run_with_stdin(&["create", "-f", "-"], &widget("now-fine", "limits", 9));
        (run.code == 0).then_some(())
    });
    // No params: parameterNotFoundAction Deny.
    core.set_param_configmap("default", "limits", None);
    let missing = common::eventually("the deleted params are seen", || {
        let run = k.run_with_stdin(&["create", "-f", "-"], &widget("no-params", "limits", 1));
        (run.code != 0).then_some(run)
    });
    assert!(
        missing
            .stderr
            .contains("denied request: no params found for policy binding with `Deny` parameterNotFoundAction"),
        "{}",
        missing.stderr
    );

    // Warn and Audit: the write goes through with a warning.
    core.set_policy(
        policy(
            "odd",
            "warn",
            json!({
                "validations": [{"expression": "object.spec.replicas % 2 == 0", "message": "prefer an even number of replicas", "reason": "Forbidden"}],
                "auditAnnotations": [{"key": "replicas", "valueExpression": "string(object.spec.replicas)"}],
            }),
        ),
        false,
    );
    core.set_policy(binding("odd-binding", "odd", &["Warn", "Audit"], json!({})), false);
    let warned = common::eventually("the warning policy is seen", || {
        let run = k.run_with_stdin(&["create", "--dry-run=server", "-f", "-"], &widget("w", "warn", 3));
        run.stderr.contains("Warning:").then_some(run)
    });
    assert_eq!(warned.code, 0);
    assert!(
        warned.stderr.contains(
            "Warning: Validation failed for ValidatingAdmissionPolicy 'odd' with binding 'odd-binding': prefer an even number of replicas"
        ),
        "{}",
        warned.stderr
    );
    // Audit: the failure and the policy's auditAnnotations in the request's audit event.
    // (The event is written as the response completes: it may land just after kubectl returns.)
    let audited = common::eventually("the policy's audit annotation is in the audit log", || {
        std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| e["stage"] == "ResponseComplete" && e["annotations"]["odd/replicas"] == "3")
    });
    let failure: Value = serde_json::from_str(
        audited["annotations"]["validation.policy.admission.k8s.io/validation_failure"]
            .as_str()
            .expect("the Audit action's annotation"),
    )
    .unwrap();
    assert_eq!(
        failure,
        json!([{"message": "prefer an even number of replicas", "policy": "odd", "binding": "odd-binding",
                "expressionIndex": 0, "validationActions": ["Warn", "Audit"]}])
    );
    // Deny with a reason: its status code.
    core.set_policy(binding("odd-binding", "odd", &["Deny"], json!({})), false);
    let forbidden = common::eventually("the binding change is seen", || {
        let run = k.run_with_stdin(&["create", "-f", "-"], &widget("w", "warn", 3));
        (run.code != 0).then_some(run)
    });
    assert!(
        forbidden.stderr.contains("Error from server (Forbidden)")
            && forbidden.stderr.contains("ValidatingAdmissionPolicy 'odd' with binding 'odd-binding' denied request: prefer an even number of replicas"),
        "{}",
        forbidden.stderr
    );

    // The same refusal through the kube client: the Status's code, reason and message.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let error = runtime.block_on(async {
        let api: kube::Api<widget_api::Widget> = kube::Api::namespaced(server.client().await, "default");
        let mut odd = common::typed_widget("odd-kube", 3);
        odd.metadata.labels = Some([("scenario".to_string(), "warn".to_string())].into());
        api.create(&Default::default(), &odd).await.unwrap_err()
    });
    let kube::Error::Api(status) = &error else {
        panic!("{error}")
    };
    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"), "{error}");
    assert_eq!(
        status.message,
        r#"widgets.custom.example.com "odd-kube" is forbidden: ValidatingAdmissionPolicy 'odd' with binding 'odd-binding' denied request: prefer an even number of replicas"#
    );

    // A broken expression: failurePolicy decides.
    let broken = |name: &str, scenario: &str, failure: &str| {
        policy(
            name,
            scenario,
            json!({"failurePolicy": failure, "validations": [{"expression": "object.spec.replicaz > 1"}]}),
        )
    };
    core.set_policy(broken("broken-fail", "broken", "Fail"), false);
    core.set_policy(
        binding("broken-fail-binding", "broken-fail", &["Deny"], json!({})),
        false,
    );
    core.set_policy(broken("broken-ignore", "ignored", "Ignore"), false);
    core.set_policy(
        binding("broken-ignore-binding", "broken-ignore", &["Deny"], json!({})),
        false,
    );
    let failed = common::eventually("the broken policy is seen", || {
        let run = k.run_with_stdin(&["create", "-f", "-"], &widget("b", "broken", 1));
        (run.code != 0).then_some(run)
    });
    assert!(
        failed.stderr.contains(
            "ValidatingAdmissionPolicy 'broken-fail' with binding 'broken-fail-binding' denied request: expression 'object.spec.replicaz > 1' resulted in error"
        ),
        "{}",
        failed.stderr
    );
    k.ok_stdin(&["create", "-f", "-"], &widget("i", "ignored", 1));

    // An expression that proves expensive is cut off by the cost budget instead of holding a
    // server thread: every pair of the names in an annotation, 2,000 names making 4,000,000
    // pairs, past the per-expression limit. failurePolicy Fail refuses.
    core.set_policy(
        policy(
            "pairs",
            "pairs",
            json!({
                "variables": [{"name": "names", "expression": "object.metadata.annotations['names'].split(',')"}],
                "validations": [{"expression": "variables.names.all(a, variables.names.all(b, a == b || a != b))"}],
            }),
        ),
        false,
    );
    core.set_policy(binding("pairs-binding", "pairs", &["Deny"], json!({})), false);
    let named = |name: &str, n: usize| {
        let names: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
        widget(name, "pairs", 1).replace(
            "  labels:\n",
            &format!("  annotations:\n    names: \"{}\"\n  labels:\n", names.join(",")),
        )
    };
    let cut = common::eventually("the expensive policy is seen", || {
        let run = k.run_with_stdin(&["create", "-f", "-"], &named("pairs-many", 2000));
        (run.code != 0).then_some(run)
    });
    assert!(
        cut.stderr.contains(
            "ValidatingAdmissionPolicy 'pairs' with binding 'pairs-binding' denied request: expression 'variables.names.all(a, variables.names.all(b, a == b || a != b))' resulted in error: operation cancelled: actual cost limit exceeded"
        ),
        "{}",
        cut.stderr
    );
    k.ok_stdin(&["create", "-f", "-"], &named("pairs-few", 30));

    // namespaceObject: the namespace's labels from the core API.
    core.set_namespace_labels("default", "Active", &[("env", "frozen")]);
    core.set_policy(
        policy(
            "frozen",
            "frozen",
            json!({"validations": [{"expression": "!has(namespaceObject.metadata.labels) || namespaceObject.metadata.labels['env'] != 'frozen'", "message": "the namespace is frozen"}]}),
        ),
        false,
    );
    core.set_policy(binding("frozen-binding", "frozen", &["Deny"], json!({})), false);
    let frozen = common::eventually("the namespace policy applies", || {
        let run = k.run_with_stdin(&["create", "-f", "-"], &widget("f", "frozen", 1));
        (run.code != 0).then_some(run)
    });
    assert!(
        frozen.stderr.contains("denied request: the namespace is frozen"),
        "{}",
        frozen.stderr
    );
    // A binding's matchResources without resourceRules leaves resources to the policy; its
    // namespaceSelector still decides.
    let only_in = |env: &str| json!({"matchResources": {"namespaceSelector": {"matchLabels": {"env": env}}}});
    core.set_policy(binding("frozen-binding", "frozen", &["Deny"], only_in("thawed")), false);
    common::eventually("the selector's binding is seen", || {
        let run = k.run_with_stdin(&["create", "--dry-run=server", "-f", "-"], &widget("f", "frozen", 1));
        (run.code == 0).then_some(())
    });
    core.set_policy(binding("frozen-binding", "frozen", &["Deny"], only_in("frozen")), false);
    let selected = common::eventually("the binding selects the namespace", || {
        let run = k.run_with_stdin(&["create", "-f", "-"], &widget("f", "frozen", 1));
        (run.code != 0).then_some(run)
    });
    assert!(
        selected.stderr.contains("denied request: the namespace is frozen"),
        "{}",
        selected.stderr
    );
    // Deleting the binding lifts the policy.
    core.set_policy(binding("frozen-binding", "frozen", &["Deny"], json!({})), true);
    common::eventually("the binding is gone", || {
        let run = k.run_with_stdin(&["create", "-f", "-"], &widget("f", "frozen", 1));
        (run.code == 0).then_some(())
    });

    // A typo in a field path is reported when the policy is seen, before any request: in the
    // log and in the gauge of the policy's type-check warnings; the fixed policy has none.
    let typo = |expression: &str| policy("typo", "typo", json!({"validations": [{"expression": expression}]}));
    let warnings = || {
        let metrics = k.ok(&["get", "--raw", "/metrics"]);
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(r#"apiary_admission_policy_type_warnings{policy="typo"} "#))
            .map(str::to_string)
    };
    core.set_policy(typo("object.spec.replikas < 10 && object.spec.image != ''"), false);
    common::eventually("the typo is reported", || {
        (warnings().as_deref() == Some("1")).then_some(())
    });
    core.set_policy(typo("object.spec.replicas < 10 && object.spec.image != ''"), false);
    common::eventually("the fixed policy has no warning", || {
        (warnings().as_deref() == Some("0")).then_some(())
    });
}
