//! Admission: the server's own admission steps run on every write in
//! k8s.io/apiserver's order (mutating, then the strategy, then validating), and the example's
//! WidgetPolicy step refuses denied images through kubectl with its exact message.

use crate::common;

use std::sync::{Arc, Mutex};

use apiary_runtime::admission::{Attributes, Chain, Plugin, async_trait};
use apiary_runtime::registry::{DeleteOptions, Part, Store, TypedStrategy, WriteOptions};
use apiary_runtime::status::{ApiError, ApiResult};
use apiary_runtime::storage::{self, WatchCache};
use common::{ServerProcess, VERSIONS, WidgetServer as _, widget};
use serde_json::{Value, json};

/// Records what it saw; labels objects when mutating; refuses replicas of 13 when validating.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>);

#[async_trait]
impl Plugin for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }

    async fn mutate(&self, attributes: &Attributes<'_>, object: &mut Value) -> ApiResult<()> {
        // Before the strategy's validation, after its defaults (as kube-apiserver decodes a
        // request with its defaults before admission): the color is there.
        let color = object.pointer("/spec/color").cloned().unwrap_or(Value::Null);
        self.0.lock().unwrap().push(format!(
            "mutate {} {} color={color}",
            attributes.operation.as_str(),
            attributes.subresource
        ));
        object["metadata"]["labels"] = json!({"admitted": "yes"});
        Ok(())
    }

    async fn validate(&self, attributes: &Attributes<'_>, object: &Value) -> ApiResult<()> {
        let color = object.pointer("/spec/color").cloned().unwrap_or(Value::Null);
        let old = attributes.old_object.is_some();
        self.0.lock().unwrap().push(format!(
            "validate {} color={color} old={old} dry={}",
            attributes.operation.as_str(),
            attributes.dry_run
        ));
        if object.pointer("/spec/replicas") == Some(&json!(13)) {
            return Err(ApiError::new(403, "Forbidden", "13 is unlucky"));
        }
        Ok(())
    }
}

#[tokio::test]
async fn steps_run_around_the_strategy_for_every_write() {
    let recorder = Recorder::default();
    let chain = Chain::default();
    chain.push(Arc::new(recorder.clone()));
    let store = Store::new(
        Arc::new(TypedStrategy::<widget_api::Widget>::default()),
        WatchCache::new(storage::memory(), 100),
        "/registry",
    )
    .unwrap()
    .with_admission(chain);
    let body = json!({"metadata": {"name": "w"}, "spec": {"replicas": 1, "image": "nginx"}});
    let created = store
        .create(Some("default"), body, &WriteOptions::default())
        .await
        .unwrap();
    assert_eq!(
        created.object["metadata"]["labels"]["admitted"], "yes",
        "the mutation is stored"
    );

    let mut update = created.object.clone();
    update["spec"]["replicas"] = json!(13);
    let refused = store
        .update(Some("default"), "w", update, Part::Main, &WriteOptions::default())
        .await
        .unwrap_err();
    assert_eq!((refused.code, refused.message.as_str()), (403, "13 is unlucky"));

    let status = json!({"metadata": {"name": "w"}, "status": {"availableReplicas": 1}});
    let options = WriteOptions {
        subresource: "status",
        dry_run: true,
        ..Default::default()
    };
    store
        .update(Some("default"), "w", status, Part::Status, &options)
        .await
        .unwrap();
    store
        .delete(Some("default"), "w", &DeleteOptions::default())
        .await
        .unwrap();

    let seen = recorder.0.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            "mutate CREATE  color=\"blue\"",
            "validate CREATE color=\"blue\" old=false dry=false",
            "mutate UPDATE  color=\"blue\"",
            "validate UPDATE color=\"blue\" old=true dry=false",
            "mutate UPDATE status color=\"blue\"",
            "validate UPDATE color=\"blue\" old=true dry=true",
            "validate DELETE color=\"blue\" old=true dry=false",
        ]
    );
}

#[test]
fn widget_policies_deny_images_through_kubectl() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    for (i, version) in VERSIONS.iter().enumerate() {
        let k = server.kubectl(version);
        let policy = format!(
            "apiVersion: custom.example.com/v1\nkind: WidgetPolicy\nmetadata:\n  name: no-evil-{i}\nspec:\n  deniedImages: [\"evil.example.com/*\", \"nginx:1.0\"]\n"
        );
        common::apply_policy(&k, &policy);
        let denied = k.run_with_stdin(
            &["apply", "-f", "-"],
            &widget(&format!("bad-{i}"), 1, "").replace("nginx:1.25", "evil.example.com/miner"),
        );
        assert_ne!(denied.code, 0);
        let expected = format!(
            "widgets.custom.example.com \"bad-{i}\" is forbidden: image \"evil.example.com/miner\" is denied by WidgetPolicy \"no-evil-0\" (deniedImages: \"evil.example.com/*\")"
        );
        assert!(denied.stderr.contains(&expected), "{version}: {}", denied.stderr);
        assert!(
            denied.stderr.contains("Error from server (Forbidden)"),
            "{}",
            denied.stderr
        );
        k.ok_stdin(&["apply", "-f", "-"], &widget(&format!("good-{i}"), 1, ""));
        let changed = k.run(&[
            "patch",
            "widget",
            &format!("good-{i}"),
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"image":"nginx:1.0"}}"#,
        ]);
        assert_ne!(changed.code, 0, "an update to a denied image is refused too");
        assert!(
            changed.stderr.contains("is denied by WidgetPolicy"),
            "{}",
            changed.stderr
        );
        k.ok(&["label", "widget", &format!("good-{i}"), "checked=yes"]);
    }
}

/// A widget-server whose core API (authentication, authorization, namespaces) is `core`.
fn with_core_api(dir: &std::path::Path, core: &apiary_runtime::testing::CoreApiStandIn) -> ServerProcess {
    let flags = common::core_api_flags(&core.kubeconfig);
    ServerProcess::start_in(dir, &flags.iter().map(String::as_str).collect::<Vec<_>>())
}

/// NamespaceLifecycle against the core API (the stand-in, since kube-apiserver cannot run
/// here; it serves namespaces with list and watch): creates need a namespace that exists and
/// is not terminating; a namespace changing while the server runs takes effect.
#[tokio::test(flavor = "multi_thread")]
async fn namespace_lifecycle_follows_the_core_api() {
    use apiary_runtime::testing::CoreApiStandIn;
    use kube::api::{Api, PostParams};
    let dir = tempfile::tempdir().unwrap();
    let core = CoreApiStandIn::start(&dir.path().join("core"));
    let server = with_core_api(dir.path(), &core);
    for version in VERSIONS {
        let missing = server
            .kubectl(version)
            .run_with_stdin(&["create", "-n", "missing", "-f", "-"], &widget("w", 1, ""));
        assert_ne!(missing.code, 0);
        assert!(
            missing.stderr.contains(
                "Error from server (NotFound): error when creating \"STDIN\": namespaces \"missing\" not found"
            ),
            "{version}: {}",
            missing.stderr
        );
    }
    let client = server.client().await;
    let team: Api<widget_api::Widget> = Api::namespaced(client.clone(), "team");
    let pp = PostParams::default();
    core.set_namespace("team", "Active");
    team.create(&pp, &common::typed_widget("first", 1))
        .await
        .expect("a namespace created while running is seen");

    core.set_namespace("team", "Terminating");
    let refused = common::eventually("the namespace is seen terminating", || {
        let created = futures::executor::block_on(team.create(&pp, &common::typed_widget("late", 1)));
        match created {
            Err(kube::Error::Api(s)) if s.code == 403 => Some(s),
            Ok(_) => {
                let _ = futures::executor::block_on(team.delete("late", &Default::default()));
                None
            }
            Err(_) => None,
        }
    });
    assert_eq!(refused.reason, "Forbidden");
    assert_eq!(
        refused.message,
        "widgets.custom.example.com \"late\" is forbidden: unable to create new content in namespace team because it is being terminated"
    );
    let cause = &refused.details.unwrap().causes[0];
    assert_eq!(
        (cause.reason.as_str(), cause.field.as_str()),
        ("NamespaceTerminating", "metadata.namespace")
    );
    // Updates and deletes still pass in a terminating namespace.
    // The status controller writes too: a replace that loses the race is retried, as clients do.
    for attempt in 0.. {
        let mut first = team.get("first").await.unwrap();
        first.spec.replicas = 2;
        match team.replace("first", &pp, &first).await {
            Ok(_) => break,
            Err(kube::Error::Api(s)) if s.code == 409 && attempt < 5 => continue,
            Err(e) => panic!("the update passes in a terminating namespace: {e}"),
        }
    }
    team.delete("first", &Default::default()).await.unwrap();

    core.delete_namespace("team");
    common::eventually("the deleted namespace is gone", || {
        match futures::executor::block_on(team.create(&pp, &common::typed_widget("after", 1))) {
            Err(kube::Error::Api(s)) if s.code == 404 => Some(()),
            _ => None,
        }
    });
}

/// `/readyz` fails until NamespaceLifecycle has listed the core API's namespaces (an outage
/// of the core API at start), then passes.
#[test]
fn readyz_waits_for_the_namespace_watch() {
    use apiary_runtime::testing::CoreApiStandIn;
    let dir = tempfile::tempdir().unwrap();
    let core = CoreApiStandIn::start(&dir.path().join("core"));
    core.set_down(true);
    let server = with_core_api(dir.path(), &core);
    let k = server.kubectl("1.33");
    let down = k.run(&["get", "--raw", "/readyz"]);
    assert_ne!(down.code, 0, "not ready while the namespaces cannot be listed");
    assert!(
        format!("{}{}", down.stdout, down.stderr).contains("admission NamespaceLifecycle failed: reason withheld"),
        "{}{}",
        down.stdout,
        down.stderr
    );
    core.set_down(false);
    common::eventually("/readyz passes once the namespaces are listed", || {
        (k.run(&["get", "--raw", "/readyz"]).code == 0).then_some(())
    });
}

/// Sets `spec.color` to red: a Rust step after the cluster's webhooks that changes the object.
struct Repaint;

#[async_trait]
impl Plugin for Repaint {
    fn name(&self) -> &str {
        "repaint"
    }

    async fn mutate(&self, _: &Attributes<'_>, object: &mut Value) -> ApiResult<()> {
        if object.pointer("/metadata/labels/repaint").is_some() {
            object["spec"]["color"] = json!("red");
        }
        Ok(())
    }
}

/// A mutating webhook with `reinvocationPolicy: IfNeeded` is called once more when a later
/// admission step (here the server's own Rust step) changed the object after it, and sees that
/// change; when nothing changed after it, it is called once.
#[tokio::test(flavor = "multi_thread")]
async fn an_ifneeded_webhook_sees_what_later_steps_changed() {
    use apiary_runtime::admission::namespace::Namespaces;
    use apiary_runtime::admission::webhook::MutatingWebhooks;
    use apiary_runtime::admission::webhook::client::{Caller, Credentials};
    use apiary_runtime::testing::{AdmissionWebhook, CoreApiStandIn};

    let dir = tempfile::tempdir().unwrap();
    let core = CoreApiStandIn::start(&dir.path().join("core"));
    let webhook = AdmissionWebhook::start(&dir.path().join("webhook"), |_, review| {
        match review["request"]["object"]["metadata"]["labels"]["hooked"].is_null() {
            true => apiary_runtime::testing::webhook::patch_response(
                json!([{"op": "add", "path": "/metadata/labels/hooked", "value": "yes"}]),
            ),
            false => json!({"allowed": true}),
        }
    });
    core.set_webhook_configuration(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "again"},
        "webhooks": [{
            "name": "again.example.com", "clientConfig": webhook.url_config("/again"),
            "rules": [{"apiGroups": ["custom.example.com"], "apiVersions": ["v1"],
                       "operations": ["CREATE"], "resources": ["widgets"]}],
            "sideEffects": "None", "admissionReviewVersions": ["v1"], "reinvocationPolicy": "IfNeeded",
        }],
    }));
    let client = core.client().await;
    let hooks = MutatingWebhooks::start(
        client.clone(),
        Namespaces::start(client),
        Caller::new(Default::default(), Credentials::default()),
        None,
        None,
    );
    let chain = Chain::default();
    chain.push(Arc::new(hooks));
    chain.push(Arc::new(Repaint));
    let store = Store::new(
        Arc::new(TypedStrategy::<widget_api::Widget>::default()),
        WatchCache::new(storage::memory(), 100),
        "/registry",
    )
    .unwrap()
    .with_admission(chain.clone());
    core.until_ready(&chain).await;
    let create = |name: &str, labels: Value| {
        let body = json!({"metadata": {"name": name, "labels": labels}, "spec": {"replicas": 1, "image": "nginx"}});
        let store = &store;
        async move {
            store
                .create(Some("default"), body, &WriteOptions::default())
                .await
                .unwrap()
        }
    };

    let created = create("repainted", json!({"repaint": "yes"})).await;
    assert_eq!(created.object["spec"]["color"], "red");
    assert_eq!(created.object["metadata"]["labels"]["hooked"], "yes");
    let calls = webhook.received();
    assert_eq!(calls.len(), 2, "called again after the repaint: {calls:?}");
    assert_eq!(
        calls[0].1["request"]["object"]["spec"]["color"], "blue",
        "defaulted first"
    );
    assert_eq!(
        calls[1].1["request"]["object"]["spec"]["color"], "red",
        "the repaint seen"
    );

    webhook.clear();
    create("left-alone", json!({})).await;
    assert_eq!(webhook.received().len(), 1, "nothing changed after it");
}
