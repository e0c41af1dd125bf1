//! Server-side apply with the real kubectl and the kube client: managedFields, conflicts and
//! --force-conflicts, removal of fields a manager stops applying, diff --server-side, the
//! status/spec split, and client-side apply on an object server-side apply created.

use crate::common;

use common::{ServerProcess, WidgetServer as _};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

fn manifest(replicas: i32, labels: &str) -> String {
    format!(
        "apiVersion: custom.example.com/v1\nkind: Widget\nmetadata:\n  name: ssa\n  labels:\n    app: demo\n{labels}spec:\n  replicas: {replicas}\n  image: nginx:1.25\n"
    )
}

fn object(k: &common::Kubectl) -> Value {
    serde_json::from_str(&k.ok(&["get", "widget", "ssa", "-o", "json", "--show-managed-fields"])).unwrap()
}

/// The entry of `manager` with `operation` (and its subresource).
fn entry<'a>(w: &'a Value, manager: &str, operation: &str) -> Option<&'a Value> {
    w["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .find(|e| e["manager"] == manager && e["operation"] == operation)
}

#[test]
fn kubectl_server_side_apply() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let k = server.kubectl("1.33");

    // Create, then update, by server-side apply.
    let out = k.ok_stdin(&["apply", "--server-side", "-f", "-"], &manifest(1, "    tier: gold\n"));
    assert!(out.contains("serverside-applied"), "{out}");
    let w = object(&k);
    let mine = entry(&w, "kubectl", "Apply").expect("kubectl's Apply entry");
    assert_eq!(mine["fieldsType"], "FieldsV1");
    assert_eq!(mine["apiVersion"], "custom.example.com/v1");
    assert_eq!(mine["fieldsV1"]["f:spec"]["f:replicas"], json!({}));
    assert_eq!(
        mine["fieldsV1"]["f:metadata"]["f:labels"],
        json!({".": {}, "f:app": {}, "f:tier": {}})
    );
    assert!(mine["time"].as_str().unwrap().ends_with('Z'));
    // The status loop's writes are its own, on the status subresource.
    common::eventually("the status loop's entry", || {
        let w = object(&k);
        entry(&w, "widget-server", "Update")
            .filter(|e| e["subresource"] == "status" && e["fieldsV1"]["f:status"].is_object())
            .map(drop)
    });
    k.ok_stdin(&["apply", "--server-side", "-f", "-"], &manifest(2, ""));
    let w = object(&k);
    assert_eq!(w["spec"]["replicas"], 2);
    assert!(
        w["metadata"]["labels"].get("tier").is_none(),
        "a label no longer applied is removed"
    );

    // A second manager with a different value: kubectl's "Apply failed" conflict.
    let conflict = k.run_with_stdin(
        &["apply", "--server-side", "--field-manager=ops", "-f", "-"],
        &manifest(5, ""),
    );
    assert_ne!(conflict.code, 0);
    assert!(
        conflict.stderr.contains(
            "Apply failed with 1 conflict: conflict with \"kubectl\" using custom.example.com/v1: .spec.replicas"
        ),
        "{}",
        conflict.stderr
    );
    assert_eq!(object(&k)["spec"]["replicas"], 2, "nothing was written");
    k.ok_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager=ops",
            "--force-conflicts",
            "-f",
            "-",
        ],
        &manifest(5, ""),
    );
    let w = object(&k);
    assert_eq!(w["spec"]["replicas"], 5);
    assert_eq!(
        entry(&w, "ops", "Apply").unwrap()["fieldsV1"]["f:spec"]["f:replicas"],
        json!({})
    );
    assert!(
        entry(&w, "kubectl", "Apply").unwrap()["fieldsV1"]["f:spec"]
            .get("f:replicas")
            .is_none()
    );

    // diff --server-side shows a change and persists nothing.
    let w = common::eventually("the status loop to catch up", || {
        let w = object(&k);
        (w["status"]["availableReplicas"] == 5).then_some(w)
    });
    let rv = w["metadata"]["resourceVersion"].clone();
    let diff = k.run_with_stdin(
        &["diff", "--server-side", "--field-manager=ops", "-f", "-"],
        &manifest(7, ""),
    );
    assert_eq!(diff.code, 1, "{}{}", diff.stdout, diff.stderr);
    assert!(
        diff.stdout.contains("-  replicas: 5") && diff.stdout.contains("+  replicas: 7"),
        "{}",
        diff.stdout
    );
    let after = object(&k);
    assert_eq!(after["metadata"]["resourceVersion"], rv, "{w:#}\n{after:#}");

    // A no-op apply writes nothing.
    k.ok_stdin(
        &["apply", "--server-side", "--field-manager=ops", "-f", "-"],
        &manifest(5, ""),
    );
    let again = object(&k);
    assert_eq!(again["metadata"]["resourceVersion"], rv, "{after:#}\n{again:#}");
}

#[test]
fn client_side_apply_after_server_side_apply_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let k = server.kubectl("1.33");
    k.ok_stdin(&["apply", "--server-side", "-f", "-"], &manifest(1, ""));
    // Client-side apply on it: kubectl adds its annotation and patches.
    let out = k.ok_stdin(&["apply", "-f", "-"], &manifest(3, ""));
    assert!(out.contains("configured"), "{out}");
    let w = object(&k);
    assert_eq!(w["spec"]["replicas"], 3);
    let csa = entry(&w, "kubectl-client-side-apply", "Update").expect("the client-side apply's entry");
    assert_eq!(csa["fieldsV1"]["f:spec"]["f:replicas"], json!({}));
    // Back to server-side apply: kubectl migrates client-side ownership to its Apply entry
    // (a JSON patch of managedFields), then applies.
    let out = k.ok_stdin(&["apply", "--server-side", "-f", "-"], &manifest(4, ""));
    assert!(out.contains("serverside-applied"), "{out}");
    let w = object(&k);
    assert_eq!(w["spec"]["replicas"], 4);
    assert!(entry(&w, "kubectl-client-side-apply", "Update").is_none(), "{w:#}");
    assert_eq!(
        entry(&w, "kubectl", "Apply").unwrap()["fieldsV1"]["f:spec"]["f:replicas"],
        json!({})
    );
    // The upgrade is kubectl's alone: another manager still conflicts on those fields.
    let other = k.run_with_stdin(
        &["apply", "--server-side", "--field-manager=ops", "-f", "-"],
        &manifest(9, ""),
    );
    assert!(
        other.stderr.contains("Apply failed with 1 conflict"),
        "{}",
        other.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_client_apply_and_the_status_split() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let api: Api<widget_api::Widget> = Api::namespaced(server.client().await, "default");
    let applied = json!({
        "apiVersion": "custom.example.com/v1", "kind": "Widget",
        "metadata": {"name": "kc"},
        "spec": {"replicas": 2, "image": "nginx"},
        "status": {"availableReplicas": 99},
    });
    let params = PatchParams::apply("kube-test");
    let created = api.patch("kc", &params, &Patch::Apply(&applied)).await.unwrap();
    assert_eq!(created.spec.replicas, 2);
    assert_ne!(
        created.status.as_ref().map(|s| s.available_replicas),
        Some(99),
        "apply to the main resource ignores status"
    );
    // Apply to /status owns status fields only.
    let status = json!({"apiVersion": "custom.example.com/v1", "kind": "Widget", "metadata": {"name": "kc"},
        "spec": {"replicas": 50}, "status": {"availableReplicas": 7}});
    let after = api
        .patch_status(
            "kc",
            &PatchParams::apply("status-owner").force(),
            &Patch::Apply(&status),
        )
        .await
        .unwrap();
    assert_eq!(after.spec.replicas, 2, "apply to /status ignores spec");
    assert_eq!(after.status.unwrap().available_replicas, 7);
    let managed = after.metadata.managed_fields.unwrap();
    let owner = managed
        .iter()
        .find(|m| m.manager.as_deref() == Some("status-owner"))
        .unwrap();
    assert_eq!(owner.subresource.as_deref(), Some("status"));
    assert_eq!(owner.operation.as_deref(), Some("Apply"));
    // A conflict from the kube client: 409 with one cause per field.
    let conflict = api
        .patch(
            "kc",
            &PatchParams::apply("someone-else"),
            &Patch::Apply(&json!({"apiVersion": "custom.example.com/v1", "kind": "Widget",
                "metadata": {"name": "kc"}, "spec": {"replicas": 3, "image": "nginx"}})),
        )
        .await
        .unwrap_err();
    match conflict {
        kube::Error::Api(s) => {
            assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
            assert!(s.message.contains(".spec.replicas"), "{}", s.message);
        }
        other => panic!("{other:?}"),
    }
    // Apply needs a field manager.
    let request = http::Request::builder()
        .method("PATCH")
        .uri("/apis/custom.example.com/v1/namespaces/default/widgets/kc")
        .header("Content-Type", "application/apply-patch+yaml")
        .body(serde_json::to_vec(&applied).unwrap())
        .unwrap();
    let response = server.client().await.send(request.map(Into::into)).await.unwrap();
    assert_eq!(response.status(), 400);
}
