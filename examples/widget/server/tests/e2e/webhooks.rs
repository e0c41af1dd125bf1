//! Admission webhooks: the cluster's Mutating- and ValidatingWebhookConfigurations
//! apply to Widgets as kube-apiserver applies them. The configurations and namespaces come
//! from the fast core-API stand-in (`real_cluster.rs` has them from the real kube-apiserver), changed while the server
//! runs; the webhooks are real HTTPS servers started by the test, which check the
//! AdmissionReviews they receive.

use crate::common;

use std::time::Duration;

use apiary_runtime::testing::webhook::{HOST, patch_response};
use apiary_runtime::testing::{AdmissionWebhook, CoreApiStandIn, refused_port};
use common::{ServerProcess, VERSIONS, WidgetServer as _};
use serde_json::{Value, json};

/// A Widget labelled for one `scenario` (each webhook selects its scenario's objects).
fn labelled(name: &str, scenario: &str, replicas: i32) -> String {
    format!(
        "apiVersion: custom.example.com/v1\nkind: Widget\nmetadata:\n  name: {name}\n  labels:\n    scenario: {scenario}\nspec:\n  replicas: {replicas}\n  image: nginx:1.25\n"
    )
}

/// A webhook entry for `scenario`'s objects, calling `client`, with `extra` fields.
fn hook(name: &str, scenario: &str, client: Value, extra: Value) -> Value {
    let mut hook = json!({
        "name": name,
        "clientConfig": client,
        "rules": [{"apiGroups": ["custom.example.com"], "apiVersions": ["v1"],
                   "operations": ["CREATE", "UPDATE", "DELETE"], "resources": ["widgets"]}],
        "objectSelector": {"matchLabels": {"scenario": scenario}},
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
    });
    for (k, v) in extra.as_object().unwrap() {
        hook[k] = v.clone();
    }
    hook
}

fn configuration(kind: &str, name: &str, hooks: Vec<Value>) -> Value {
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind, "metadata": {"name": name}, "webhooks": hooks})
}

/// The test webhook's answers, by path.
fn answer(path: &str, review: &Value) -> Value {
    let request = &review["request"];
    match path {
        "/deny" => {
            if request["object"]["spec"]["replicas"] == 13 {
                json!({"allowed": false, "status": {"code": 403, "reason": "Forbidden", "message": "13 is unlucky"}})
            } else {
                json!({"allowed": true, "warnings": ["replicas checked"]})
            }
        }
        "/mutate" => {
            let mut response =
                patch_response(json!([{"op": "add", "path": "/metadata/labels/mutated", "value": "yes"}]));
            response["warnings"] = json!(["mutated by m.example.com"]);
            response["auditAnnotations"] = json!({"checked": "yes"});
            response
        }
        "/closed" => json!({"allowed": false, "status": {"message": "this namespace is closed"}}),
        "/scale" if request["object"]["spec"]["replicas"].as_i64() > Some(10) => {
            json!({"allowed": false, "status": {"code": 422, "reason": "Invalid", "message": "at most 10 replicas"}})
        }
        _ => json!({"allowed": true}),
    }
}

/// The reviews received at `path`.
fn reviews(webhook: &AdmissionWebhook, path: &str) -> Vec<Value> {
    webhook
        .received()
        .into_iter()
        .filter(|(uri, _)| uri.split('?').next() == Some(path))
        .map(|(_, review)| review)
        .collect()
}

#[test]
fn webhooks_apply_as_kube_apiserver_applies_them() {
    let dir = tempfile::tempdir().unwrap();
    let core = CoreApiStandIn::start(&dir.path().join("core"));
    let webhook = AdmissionWebhook::start(&dir.path().join("webhook"), answer);
    let slow = AdmissionWebhook::start(&dir.path().join("slow"), |_, _| json!({"allowed": true}));
    slow.set_delay(Duration::from_secs(3));
    let (_closed, closed_port) = refused_port();
    let down = json!({"url": format!("https://127.0.0.1:{closed_port}/down"), "caBundle": ""});
    let address = format!("{HOST}=127.0.0.1");
    let (audit_flags, audit) = common::metadata_audit(dir.path());
    let mut flags = common::core_api_flags(&core.kubeconfig);
    flags.extend(["--admission-webhook-address".to_string(), address.clone()]);
    flags.extend(audit_flags);
    let server = ServerProcess::start_in(dir.path(), &flags.iter().map(String::as_str).collect::<Vec<_>>());
    core.set_namespace_labels("blue", "Active", &[("team", "blue")]);
    core.set_webhook_configuration(configuration(
        "MutatingWebhookConfiguration",
        "mutators",
        vec![hook(
            "m.example.com",
            "mutate",
            webhook.service_config("/mutate"),
            json!({"reinvocationPolicy": "IfNeeded"}),
        )],
    ));
    // A Scale carries no labels (upstream's neither), so an objectSelector never matches it.
    let mut scale_rule = hook("scale.example.com", "sub", webhook.url_config("/scale"), json!({}));
    scale_rule["rules"][0]["resources"] = json!(["*/scale"]);
    scale_rule["rules"][0]["operations"] = json!(["UPDATE"]);
    scale_rule.as_object_mut().unwrap().remove("objectSelector");
    let mut status_rule = hook("status.example.com", "sub", webhook.url_config("/status"), json!({}));
    status_rule["rules"][0]["resources"] = json!(["widgets/status"]);
    core.set_webhook_configuration(configuration(
        "ValidatingWebhookConfiguration",
        "validators",
        vec![
            hook("v.example.com", "deny", webhook.service_config("/deny"), json!({})),
            hook(
                "record.example.com",
                "mutate",
                webhook.url_config("/record"),
                json!({"admissionReviewVersions": ["v1beta1"]}),
            ),
            hook("fail.example.com", "fail", down.clone(), json!({})),
            hook("ignore.example.com", "ignore", down, json!({"failurePolicy": "Ignore"})),
            hook(
                "slow.example.com",
                "slow",
                slow.url_config("/slow"),
                json!({"timeoutSeconds": 1}),
            ),
            hook(
                "sidefx.example.com",
                "sidefx",
                webhook.url_config("/sidefx"),
                json!({"sideEffects": "Some"}),
            ),
            hook(
                "closed.example.com",
                "ns",
                webhook.url_config("/closed"),
                json!({"namespaceSelector": {"matchLabels": {"team": "blue"}}}),
            ),
            scale_rule,
            status_rule,
        ],
    ));

    let k = server.kubectl("1.33");
    common::eventually("the webhook configurations are seen", || {
        let run = k.run_with_stdin(
            &["create", "--dry-run=server", "-f", "-"],
            &labelled("probe", "deny", 13),
        );
        run.stderr.contains("denied the request").then_some(())
    });

    for version in VERSIONS {
        let k = server.kubectl(version);
        let v = version.replace('.', "-");

        // A validating webhook's refusal, in upstream's words; its warnings when it allows.
        let denied = k.run_with_stdin(&["create", "-f", "-"], &labelled(&format!("d-{v}"), "deny", 13));
        assert!(
            denied.stderr.contains(
                "Error from server (Forbidden): error when creating \"STDIN\": admission webhook \"v.example.com\" denied the request: 13 is unlucky"
            ),
            "{version}: {}",
            denied.stderr
        );
        let allowed = k.run_with_stdin(&["create", "-f", "-"], &labelled(&format!("d-{v}"), "deny", 1));
        assert_eq!(allowed.code, 0, "{version}: {}", allowed.stderr);
        assert!(
            allowed.stderr.contains("Warning: replicas checked"),
            "{}",
            allowed.stderr
        );

        // A mutating webhook's label is stored; its warning is shown; the validating webhook
        // (v1beta1 only) sees the mutated object.
        let mutated = k.run_with_stdin(&["apply", "-f", "-"], &labelled(&format!("m-{v}"), "mutate", 1));
        assert_eq!(mutated.code, 0, "{version}: {}", mutated.stderr);
        assert!(
            mutated.stderr.contains("Warning: mutated by m.example.com"),
            "{}",
            mutated.stderr
        );
        let label = k.ok(&[
            "get",
            "widget",
            &format!("m-{v}"),
            "-o",
            "jsonpath={.metadata.labels.mutated}",
        ]);
        assert_eq!(label, "yes");
        // The mutating webhook saw the object with its defaults, as kube-apiserver sends it
        // (the manifest gives no color; the Widget's defaults make it blue).
        let mutating = reviews(&webhook, "/mutate");
        let sent = &mutating.last().expect("the mutating webhook was called")["request"]["object"];
        assert_eq!(sent["spec"]["color"], "blue", "{sent}");
        let recorded = reviews(&webhook, "/record");
        let last = recorded.last().unwrap_or_else(|| {
            panic!(
                "the validating webhook was called: {:?}",
                webhook.received().iter().map(|r| r.0.clone()).collect::<Vec<_>>()
            )
        });
        assert_eq!(last["apiVersion"], "admission.k8s.io/v1beta1");
        assert_eq!(last["request"]["object"]["metadata"]["labels"]["mutated"], "yes");

        // failurePolicy with the webhook down: Fail refuses with a 500, Ignore lets it in.
        let failed = k.run_with_stdin(&["create", "-f", "-"], &labelled(&format!("f-{v}"), "fail", 1));
        assert!(
            failed.stderr.contains(
                "Error from server (InternalError): error when creating \"STDIN\": Internal error occurred: failed calling webhook \"fail.example.com\": failed to call webhook: Post \"https://127.0.0.1:"
            ) && failed.stderr.contains("refused"),
            "{version}: {}",
            failed.stderr
        );
        k.ok_stdin(&["create", "-f", "-"], &labelled(&format!("i-{v}"), "ignore", 1));

        // A webhook slower than its timeoutSeconds fails the call.
        let timed_out = k.run_with_stdin(&["create", "-f", "-"], &labelled(&format!("t-{v}"), "slow", 1));
        assert!(
            timed_out.stderr.contains("failed calling webhook \"slow.example.com\"")
                && timed_out
                    .stderr
                    .contains("/slow?timeout=1s\": context deadline exceeded"),
            "{version}: {}",
            timed_out.stderr
        );

        // A dry run refused by a webhook with side effects; the real create goes on.
        let dry = k.run_with_stdin(
            &["create", "--dry-run=server", "-f", "-"],
            &labelled(&format!("s-{v}"), "sidefx", 1),
        );
        assert!(
            dry.stderr.contains(
                "Error from server (BadRequest): error when creating \"STDIN\": admission webhook \"sidefx.example.com\" does not support dry run"
            ),
            "{version}: {}",
            dry.stderr
        );
        k.ok_stdin(&["create", "-f", "-"], &labelled(&format!("s-{v}"), "sidefx", 1));

        // namespaceSelector: the webhook is called in the blue namespace only.
        k.ok_stdin(&["create", "-f", "-"], &labelled(&format!("n-{v}"), "ns", 1));
        let closed = k.run_with_stdin(
            &["create", "-n", "blue", "-f", "-"],
            &labelled(&format!("n-{v}"), "ns", 1),
        );
        assert!(
            closed
                .stderr
                .contains("admission webhook \"closed.example.com\" denied the request: this namespace is closed"),
            "{version}: {}",
            closed.stderr
        );

        // The scale subresource is sent as an autoscaling/v1 Scale.
        k.ok_stdin(&["create", "-f", "-"], &labelled(&format!("c-{v}"), "sub", 1));
        let scaled = k.run(&["scale", "widget", &format!("c-{v}"), "--replicas=11"]);
        assert!(
            scaled
                .stderr
                .contains("admission webhook \"scale.example.com\" denied the request: at most 10 replicas"),
            "{version}: {}",
            scaled.stderr
        );
        k.ok(&["scale", "widget", &format!("c-{v}"), "--replicas=3"]);
        k.ok(&[
            "patch",
            "widget",
            &format!("c-{v}"),
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"availableReplicas":2}}"#,
        ]);
    }

    // The kube client goes through the same chain.
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let widgets: kube::Api<widget_api::Widget> = kube::Api::namespaced(server.client().await, "default");
        let mut unlucky = common::typed_widget("kube-13", 13);
        unlucky.metadata.labels = Some([("scenario".to_string(), "deny".to_string())].into());
        match widgets.create(&Default::default(), &unlucky).await {
            Err(kube::Error::Api(s)) => assert_eq!(
                (s.code, s.reason.as_str(), s.message.as_str()),
                (
                    403,
                    "Forbidden",
                    "admission webhook \"v.example.com\" denied the request: 13 is unlucky"
                )
            ),
            other => panic!("the webhook refuses the kube client's create: {other:?}"),
        }
    });

    // Server-side apply goes through the same chain.
    let applied = k.run_with_stdin(&["apply", "--server-side", "-f", "-"], &labelled("ssa", "mutate", 1));
    assert_eq!(applied.code, 0, "{}", applied.stderr);
    assert_eq!(
        k.ok(&["get", "widget", "ssa", "-o", "jsonpath={.metadata.labels.mutated}"]),
        "yes"
    );

    // Every field of the review, as the webhook received it.
    let created = reviews(&webhook, "/deny")
        .into_iter()
        .find(|r| r["request"]["name"] == "d-1-33" && r["request"]["object"]["spec"]["replicas"] == 1)
        .expect("the create of d-1-33 was reviewed");
    let request = &created["request"];
    assert_eq!(created["apiVersion"], "admission.k8s.io/v1");
    assert!(!request["uid"].as_str().unwrap().is_empty());
    let gvk = json!({"group": "custom.example.com", "version": "v1", "kind": "Widget"});
    let gvr = json!({"group": "custom.example.com", "version": "v1", "resource": "widgets"});
    assert_eq!((&request["kind"], &request["requestKind"]), (&gvk, &gvk));
    assert_eq!((&request["resource"], &request["requestResource"]), (&gvr, &gvr));
    assert_eq!(
        (&request["namespace"], &request["operation"], &request["dryRun"]),
        (&json!("default"), &json!("CREATE"), &json!(false))
    );
    assert!(request["userInfo"]["username"].is_string(), "{request}");
    assert!(request["oldObject"].is_null());
    assert_eq!(request["options"]["kind"], "CreateOptions");
    assert_eq!(request["options"]["fieldManager"], "kubectl-create");

    let scale = reviews(&webhook, "/scale")
        .into_iter()
        .find(|r| r["request"]["subResource"] == "scale")
        .expect("a scale was reviewed");
    let request = &scale["request"];
    assert_eq!(
        request["kind"],
        json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})
    );
    assert_eq!(request["requestSubResource"], "scale");
    assert_eq!(
        (&request["object"]["kind"], &request["oldObject"]["kind"]),
        (&json!("Scale"), &json!("Scale"))
    );
    let status = reviews(&webhook, "/status")
        .into_iter()
        .find(|r| r["request"]["subResource"] == "status" && r["request"]["object"]["status"]["availableReplicas"] == 2)
        .expect("a status write was reviewed");
    assert_eq!(status["request"]["kind"]["kind"], "Widget");

    // A delete is reviewed with the old object only.
    k.ok(&["delete", "widget", "d-1-33"]);
    let deleted = reviews(&webhook, "/deny")
        .into_iter()
        .find(|r| r["request"]["operation"] == "DELETE")
        .expect("the delete was reviewed");
    assert!(deleted["request"]["object"].is_null());
    assert_eq!(deleted["request"]["oldObject"]["metadata"]["name"], "d-1-33");
    assert_eq!(deleted["request"]["options"]["kind"], "DeleteOptions");

    // Connections are pooled: far fewer handshakes than calls.
    let calls = webhook.received().len();
    assert!(calls > 20, "{calls} calls");
    assert!(
        webhook.handshakes() <= 4,
        "{} handshakes for {calls} calls",
        webhook.handshakes()
    );

    // Upstream's metrics, and the webhook's audit annotations.
    let metrics = k.ok(&["get", "--raw", "/metrics"]);
    for line in [
        r#"apiserver_admission_webhook_rejection_count{error_type="no_error",name="v.example.com",operation="CREATE",rejection_code="403",type="validating"}"#,
        r#"apiserver_admission_webhook_rejection_count{error_type="calling_webhook_error",name="fail.example.com",operation="CREATE",rejection_code="500",type="validating"}"#,
        r#"apiserver_admission_webhook_admission_duration_seconds_count{name="m.example.com",operation="CREATE",rejected="false",type="admit"}"#,
        r#"apiserver_admission_step_admission_duration_seconds_count{operation="CREATE",rejected="true",type="validate"}"#,
    ] {
        assert!(metrics.contains(line), "{line} missing");
    }
    // Events reach the file from a writer thread, so wait for them.
    let (log, annotated) = common::eventually("the webhook's audit annotation is in the audit log", || {
        let log = std::fs::read_to_string(&audit).unwrap_or_default();
        let annotated = log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| e["stage"] == "ResponseComplete" && e["annotations"]["m.example.com/checked"] == "yes");
        annotated.map(|a| (log, a))
    });
    assert!(annotated["annotations"]["mutation.webhook.admission.k8s.io/round_0_index_0"].is_string());
    let failed_open = log.contains("failed-open.validating.webhook.admission.k8s.io/round_0_index_3");
    assert!(failed_open, "the Ignore failure is annotated");

    // With a core API, leader election holds a coordination.k8s.io/v1 Lease there.
    let lease = core
        .lease("default", "widget-server")
        .expect("the server holds a Lease");
    assert!(
        lease["spec"]["holderIdentity"].as_str().is_some_and(|h| !h.is_empty()),
        "{lease}"
    );
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 15);

    // A configuration removed while running stops applying.
    core.delete_webhook_configuration("ValidatingWebhookConfiguration", "validators");
    common::eventually("the removed configuration stops applying", || {
        let run = k.run_with_stdin(&["create", "-f", "-"], &labelled("late", "deny", 13));
        (run.code == 0).then_some(())
    });
}

/// Answers for the second test, by path.
fn checked_answer(path: &str, review: &Value) -> Value {
    let object = &review["request"]["object"];
    match path {
        // Reinvoked when a later webhook changed the object: says whether it saw b's label.
        "/a" => {
            let saw = object["metadata"]["labels"]["b"] == "yes";
            patch_response(json!([{"op": "add", "path": "/metadata/annotations",
                                    "value": {"a-saw-b": saw.to_string()}}]))
        }
        "/b" => patch_response(json!([{"op": "add", "path": "/metadata/labels/b", "value": "yes"}])),
        "/bad-patch" => patch_response(json!([{"op": "replace", "path": "/spec/replicas", "value": "many"}])),
        "/wrong-uid" => json!({"uid": "not-the-request", "allowed": true}),
        "/cel" => json!({"allowed": false, "status": {"code": 403, "message": "big widgets go through review"}}),
        _ => json!({"allowed": true}),
    }
}

/// What kube-apiserver checks of an answer, and what it presents to the webhook: IfNeeded
/// reinvocation, a patch validated against the schema, a wrong uid, CEL matchConditions
/// (false, true, and failing under each failurePolicy), the WebhookAdmission kubeconfig's
/// token; the plugin flags.
#[test]
fn webhook_answers_are_checked_and_credentials_presented() {
    let dir = tempfile::tempdir().unwrap();
    let core = CoreApiStandIn::start(&dir.path().join("core"));
    let webhook = AdmissionWebhook::start(&dir.path().join("webhook"), checked_answer);
    let users = dir.path().join("webhook-users.kubeconfig");
    std::fs::write(
        &users,
        format!(
            "apiVersion: v1\nkind: Config\nusers:\n- name: \"{HOST}:{}\"\n  user:\n    token: hook-token\n- name: \"*\"\n  user:\n    token: anyone\n",
            webhook.port()
        ),
    )
    .unwrap();
    let admission_config = dir.path().join("admission.yaml");
    std::fs::write(
        &admission_config,
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n- name: MutatingAdmissionWebhook\n  configuration:\n    apiVersion: apiserver.config.k8s.io/v1\n    kind: WebhookAdmissionConfiguration\n    kubeConfigFile: {}\n",
            users.display()
        ),
    )
    .unwrap();
    let mut core_flags = common::core_api_flags(&core.kubeconfig);
    core_flags.extend(["--admission-webhook-address".to_string(), format!("{HOST}=127.0.0.1")]);
    let mut flags: Vec<&str> = core_flags.iter().map(String::as_str).collect();
    flags.extend(["--admission-control-config-file", admission_config.to_str().unwrap()]);
    let server = ServerProcess::start_in(dir.path(), &flags);
    let mutating = |name: &str, scenario: &str, path: &str, extra: Value| {
        hook(name, scenario, webhook.service_config(path), extra)
    };
    core.set_webhook_configuration(configuration(
        "MutatingWebhookConfiguration",
        "checks",
        vec![
            mutating(
                "a.example.com",
                "reinvoke",
                "/a",
                json!({"reinvocationPolicy": "IfNeeded"}),
            ),
            mutating("b.example.com", "reinvoke", "/b", json!({})),
            mutating("bad-patch.example.com", "schema", "/bad-patch", json!({})),
            mutating("wrong-uid.example.com", "uid", "/wrong-uid", json!({})),
            mutating(
                "cel.example.com",
                "cel",
                "/cel",
                json!({"matchConditions": [
                    {"name": "big", "expression": "object.spec.replicas > 5"},
                    {"name": "by-people", "expression": "!request.userInfo.username.startsWith('system:')"},
                ]}),
            ),
            mutating(
                "cel-broken.example.com",
                "cel-broken",
                "/cel",
                json!({"matchConditions": [{"name": "typo", "expression": "object.spec.replicaz > 5"}]}),
            ),
            mutating(
                "cel-ignored.example.com",
                "cel-ignored",
                "/cel",
                json!({"failurePolicy": "Ignore", "matchConditions": [{"name": "typo", "expression": "object.spec.replicaz > 5"}]}),
            ),
        ],
    ));
    let k = server.kubectl("1.27");
    common::eventually("the configuration is seen", || {
        let run = k.run_with_stdin(&["create", "--dry-run=server", "-f", "-"], &labelled("probe", "uid", 1));
        (run.code != 0).then_some(())
    });

    k.ok_stdin(&["create", "-f", "-"], &labelled("r", "reinvoke", 1));
    let saw = k.ok(&["get", "widget", "r", "-o", "jsonpath={.metadata.annotations.a-saw-b}"]);
    assert_eq!(
        saw, "true",
        "a.example.com was called again after b.example.com changed the object"
    );
    assert_eq!(reviews(&webhook, "/a").len(), 2);
    assert_eq!(reviews(&webhook, "/b").len(), 1);

    let invalid = k.run_with_stdin(&["create", "-f", "-"], &labelled("s", "schema", 1));
    assert!(
        invalid
            .stderr
            .contains("The Widget \"s\" is invalid: spec.replicas: Invalid value: \"string\""),
        "a patched object is validated against the schema: {}",
        invalid.stderr
    );
    let uid = k.run_with_stdin(&["create", "-f", "-"], &labelled("u", "uid", 1));
    assert!(
        uid.stderr.contains("failed calling webhook \"wrong-uid.example.com\": received invalid webhook response: expected response.uid="),
        "{}",
        uid.stderr
    );
    // matchConditions: the webhook is called only when all hold; an expression that fails
    // is the call's failure, so failurePolicy decides.
    k.ok_stdin(&["create", "-f", "-"], &labelled("small", "cel", 1));
    assert!(
        reviews(&webhook, "/cel").is_empty(),
        "a false condition skips the webhook"
    );
    let big = k.run_with_stdin(&["create", "-f", "-"], &labelled("big", "cel", 9));
    assert!(
        big.stderr
            .contains("admission webhook \"cel.example.com\" denied the request: big widgets go through review"),
        "{}",
        big.stderr
    );
    assert_eq!(reviews(&webhook, "/cel").len(), 1, "every condition held: called");
    let broken = k.run_with_stdin(&["create", "-f", "-"], &labelled("broken", "cel-broken", 1));
    assert!(
        broken.stderr.contains(
            "Internal error occurred: failed calling webhook \"cel-broken.example.com\": failed to evaluate match condition: typo: "
        ),
        "{}",
        broken.stderr
    );
    k.ok_stdin(&["create", "-f", "-"], &labelled("ignored", "cel-ignored", 1));
    assert_eq!(
        reviews(&webhook, "/cel").len(),
        1,
        "neither failing condition called it"
    );
    let tokens = webhook.authorizations();
    assert!(!tokens.is_empty());
    assert!(
        tokens.iter().all(|t| t.as_deref() == Some("Bearer hook-token")),
        "the kubeconfig user named by host:port is presented: {tokens:?}"
    );
    drop(server);

    // The plugins by name: turned off, the webhooks are not called; unknown names stop the start.
    let mut off: Vec<&str> = core_flags.iter().map(String::as_str).collect();
    off.extend(["--disable-admission-plugins", "MutatingAdmissionWebhook,WidgetPolicy"]);
    std::fs::create_dir_all(dir.path().join("off")).unwrap();
    let server = ServerProcess::start_in(&dir.path().join("off"), &off);
    let before = webhook.received().len();
    let k = server.kubectl("1.33");
    // Ready means every admission plugin that is on has listed what it watches.
    common::eventually("the server is ready", || {
        (k.run(&["get", "--raw", "/readyz"]).code == 0).then_some(())
    });
    k.ok_stdin(&["create", "-f", "-"], &labelled("u", "uid", 1));
    let policy = "apiVersion: custom.example.com/v1\nkind: WidgetPolicy\nmetadata:\n  name: p\nspec:\n  deniedImages: [\"nginx:1.25\"]\n";
    common::apply_policy(&k, policy);
    k.ok_stdin(&["create", "-f", "-"], &labelled("p", "none", 1));
    assert_eq!(webhook.received().len(), before, "no webhook was called");
    drop(server);
    for (flag, value, message) in [
        (
            "--enable-admission-plugins",
            "Bogus",
            "admission plugin \"Bogus\" is unknown",
        ),
        (
            "--enable-admission-plugins",
            "MutatingAdmissionPolicy",
            "is not supported by this server yet",
        ),
    ] {
        // A server that wrongly starts would run forever: its exit is awaited for 20 s at most.
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_widget-server"))
            .args(["--storage", "memory", "--secure-port", "0", flag, value])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("{value}: the server started instead of refusing the flag");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(!status.success() && stderr.contains(message), "{value}: {stderr}");
    }
}
