//! What the cluster's own clients ask for (issue 16): client-go's metadata client (garbage
//! collector, namespace controller, quota) speaks `meta.k8s.io/v1` `PartialObjectMetadata(List)`
//! for get, list and watch, including watch-list; driven with client-go's exact Accept headers
//! over raw TLS, and with the kube crate's metadata API. And the slash variants of
//! non-resource paths that clients use.

mod common;

use common::{ServerProcess, WidgetServer as _, typed_widget};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};

const WIDGETS: &str = "/apis/custom.example.com/v1/namespaces/default/widgets";
/// client-go `metadata/metadata.go`: what `Get` sends.
const GET_ACCEPT: &str = "application/vnd.kubernetes.protobuf;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json";
/// What `List` and `Watch` send.
const LIST_ACCEPT: &str = "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";

async fn get(server: &ServerProcess, path: &str, accept: &str) -> common::RawResponse {
    let head = format!("GET {path} HTTP/1.1\r\nAccept: {accept}\r\nConnection: close");
    common::RawResponse::parse(&common::exchange(server, &head, "").await)
}

#[tokio::test(flavor = "multi_thread")]
async fn client_go_metadata_requests() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let api: Api<widget_api::Widget> = Api::namespaced(server.client().await, "default");
    api.create(&PostParams::default(), &typed_widget("m1", 2))
        .await
        .unwrap();

    let one = get(&server, &format!("{WIDGETS}/m1"), GET_ACCEPT).await;
    assert_eq!(one.code, 200, "{one:?}");
    assert_eq!(
        one.header("content-type"),
        Some("application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1")
    );
    let body = one.json();
    assert_eq!(
        (body["apiVersion"].as_str(), body["kind"].as_str()),
        (Some("meta.k8s.io/v1"), Some("PartialObjectMetadata"))
    );
    assert_eq!(body["metadata"]["name"], "m1");
    assert!(body.get("spec").is_none(), "metadata only: {body}");

    let list = get(&server, WIDGETS, LIST_ACCEPT).await;
    assert_eq!(list.code, 200, "{list:?}");
    let body = list.json();
    assert_eq!(body["kind"], "PartialObjectMetadataList");
    assert_eq!(body["items"][0]["kind"], "PartialObjectMetadata");
    assert!(body["metadata"]["resourceVersion"].as_str().is_some());
    assert!(body["items"][0].get("spec").is_none());

    // Watch-list, as reflectors send it: initial events, then the initial-events-end bookmark.
    let head = format!(
        "GET {WIDGETS}?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=2 HTTP/1.1\r\nAccept: {LIST_ACCEPT}\r\nConnection: close"
    );
    let watch = common::RawResponse::parse(&common::exchange(&server, &head, "").await);
    assert_eq!(watch.code, 200, "{watch:?}");
    let events: Vec<serde_json::Value> = watch
        .body
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[0]["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(events[0]["object"]["metadata"]["name"], "m1");
    let end = events
        .iter()
        .find(|e| e["type"] == "BOOKMARK")
        .expect("the initial-events-end bookmark");
    assert_eq!(end["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(
        end["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );

    // Only protobuf offered: 406, never a full object the client cannot decode.
    let proto = get(
        &server,
        WIDGETS,
        "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
    )
    .await;
    assert_eq!(proto.code, 406, "{proto:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn slash_variants_of_non_resource_paths() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    for path in ["/version/", "/version", "/apis/", "/apis"] {
        let response = get(&server, path, "application/json").await;
        assert_eq!(response.code, 200, "{path}: {response:?}");
    }
    assert_eq!(
        get(&server, "/version/", "application/json").await.json()["gitVersion"],
        get(&server, "/version", "application/json").await.json()["gitVersion"]
    );
}

/// The kube crate's metadata API, a real client that only decodes `PartialObjectMetadata`.
#[tokio::test(flavor = "multi_thread")]
async fn kube_metadata_api() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let api: Api<widget_api::Widget> = Api::namespaced(server.client().await, "default");
    api.create(&PostParams::default(), &typed_widget("k1", 1))
        .await
        .unwrap();
    let got = api.get_metadata("k1").await.unwrap();
    assert_eq!(got.metadata.name.as_deref(), Some("k1"));
    let listed = api.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    let rv = listed.metadata.resource_version.unwrap();

    let mut events = api
        .watch_metadata(&WatchParams::default().timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    api.create(&PostParams::default(), &typed_widget("k2", 1))
        .await
        .unwrap();
    loop {
        match events.try_next().await.unwrap().expect("an event before the timeout") {
            WatchEvent::Added(o) if o.metadata.name.as_deref() == Some("k2") => break,
            WatchEvent::Error(e) => panic!("{e:?}"),
            _ => {}
        }
    }
}
