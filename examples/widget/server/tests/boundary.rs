//! The API server as a security boundary (issue 13): every input validated, every cost
//! bounded, one parse of each request. Requests that a client library would normalise or
//! refuse to send are written by hand over real TLS.

mod common;

use common::{ServerProcess, WidgetServer as _, raw, status_of, typed_widget};
use kube::api::{Api, DeleteParams, PostParams};

const WIDGETS: &str = "/apis/custom.example.com/v1/namespaces/default/widgets";

/// A DELETE right after a create races the server's own status loop (which writes every new
/// Widget's status): the delete must retry, never answer 409, on the embedded store.
#[tokio::test(flavor = "multi_thread")]
async fn delete_right_after_create_never_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_in(dir.path(), &[]);
    let api: Api<widget_api::Widget> = Api::namespaced(server.client().await, "default");
    for i in 0..100 {
        let name = format!("race-{i}");
        api.create(&PostParams::default(), &typed_widget(&name, 1))
            .await
            .unwrap();
        if let Err(e) = api.delete(&name, &DeleteParams::default()).await {
            panic!("delete {i} failed: {e} ({:?})", status_of(&e));
        }
    }
    // A stale resourceVersion precondition is the client's own conflict: still 409.
    let created = api
        .create(&PostParams::default(), &typed_widget("guarded", 1))
        .await
        .unwrap();
    let stale = created.metadata.resource_version.clone().unwrap();
    common::eventually("the status loop writes the status", || {
        let now = futures::executor::block_on(api.get("guarded")).unwrap();
        (now.metadata.resource_version.as_deref() != Some(stale.as_str())).then_some(())
    });
    let error = api
        .delete(
            "guarded",
            &DeleteParams::default().preconditions(kube::api::Preconditions {
                resource_version: Some(stale),
                uid: None,
            }),
        )
        .await
        .unwrap_err();
    assert_eq!(status_of(&error), (409, "Conflict"));
}

/// A 1.5 KB JSON patch that copies `/spec` into itself 20 times would build a 1 GiB object:
/// the copies are bounded (422), the operations too (413), and the server stays well.
#[tokio::test(flavor = "multi_thread")]
async fn json_patches_cannot_amplify() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let api: Api<widget_api::Widget> = Api::namespaced(server.client().await, "default");
    api.create(&PostParams::default(), &typed_widget("amp", 1))
        .await
        .unwrap();
    let mut ops =
        vec![serde_json::json!({"op": "add", "path": "/metadata/annotations", "value": {"pad": "x".repeat(1024)}})];
    for i in 0..20 {
        ops.push(serde_json::json!({"op": "copy", "from": "/metadata/annotations", "path": format!("/metadata/annotations/c{i}")}));
    }
    let body = serde_json::to_string(&ops).unwrap();
    assert!(body.len() < 3072, "the patch is small: {} bytes", body.len());
    let path = format!("{WIDGETS}/amp");
    let response = raw(&server, "PATCH", &path, "application/json-patch+json", &body).await;
    assert_eq!(response.code, 422, "{response:?}");
    assert_eq!(response.json()["reason"], "Invalid");
    assert!(
        response.json()["message"]
            .as_str()
            .unwrap()
            .contains("accumulated size increase of copy")
    );

    let many: Vec<_> = (0..10_001)
        .map(|_| serde_json::json!({"op": "test", "path": "/spec/replicas", "value": 1}))
        .collect();
    let response = raw(
        &server,
        "PATCH",
        &path,
        "application/json-patch+json",
        &serde_json::to_string(&many).unwrap(),
    )
    .await;
    assert_eq!(response.code, 413, "{response:?}");
    assert_eq!(response.json()["reason"], "RequestEntityTooLarge");
    assert!(api.get("amp").await.unwrap().metadata.annotations.is_none());
}
