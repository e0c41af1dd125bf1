//! Admission (issue 14, first part): the server's own admission steps run on every write in
//! k8s.io/apiserver's order (mutating, then the strategy, then validating), and the example's
//! WidgetPolicy step refuses denied images through kubectl with its exact message.

mod common;

use std::sync::{Arc, Mutex};

use apiary_runtime::admission::{Attributes, Chain, Operation, Plugin, async_trait};
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
        // Before the strategy: its default color is not there yet.
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
            "mutate CREATE  color=null",
            "validate CREATE color=\"blue\" old=false dry=false",
            "mutate UPDATE  color=\"blue\"",
            "validate UPDATE color=\"blue\" old=true dry=false",
            "mutate UPDATE status color=\"blue\"",
            "validate UPDATE color=\"blue\" old=true dry=true",
            "validate DELETE color=\"blue\" old=true dry=false",
        ]
    );
    assert!(Operation::Delete.as_str() == "DELETE");
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
        k.ok_stdin(&["apply", "-f", "-"], &policy);
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
