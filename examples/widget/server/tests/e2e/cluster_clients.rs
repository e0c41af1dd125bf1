//! What the cluster's own clients ask for: client-go's metadata client (garbage
//! collector, namespace controller, quota) speaks `meta.k8s.io/v1` `PartialObjectMetadata(List)`
//! for get, list and watch, including watch-list; driven with client-go's exact Accept headers
//! over raw TLS, and with the kube crate's metadata API. And the slash variants of
//! non-resource paths that clients use.

use crate::common;

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
    for path in [
        "/version/",
        "/version",
        "/apis/",
        "/apis",
        "/healthz/",
        "/livez/",
        "/readyz/",
    ] {
        let response = get(&server, path, "application/json").await;
        assert_eq!(response.code, 200, "{path}: {response:?}");
    }
    assert_eq!(
        get(&server, "/version/", "application/json").await.json()["gitVersion"],
        get(&server, "/version", "application/json").await.json()["gitVersion"]
    );
}

/// The kube crate's metadata API, a real client that only decodes `PartialObjectMetadata`, on
/// every storage backend (memory, embedded, a real etcd).
#[tokio::test(flavor = "multi_thread")]
async fn kube_metadata_api() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = apiary_runtime::testing::EtcdProcess::start(dir.path());
    let endpoint = etcd.endpoint();
    let backends: [&[&str]; 3] = [
        &["--storage", "memory"],
        &["--storage", "embedded"],
        &["--storage", "etcd", "--etcd-servers", &endpoint],
    ];
    for args in backends {
        let dir = tempfile::tempdir().unwrap();
        let server = ServerProcess::start_in(dir.path(), args);
        let api: Api<widget_api::Widget> = Api::namespaced(server.client().await, "default");
        api.create(&PostParams::default(), &typed_widget("k1", 1))
            .await
            .unwrap();
        let got = api.get_metadata("k1").await.unwrap();
        assert_eq!(got.metadata.name.as_deref(), Some("k1"), "{args:?}");
        let listed = api.list_metadata(&ListParams::default()).await.unwrap();
        assert_eq!(listed.items.len(), 1, "{args:?}");
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
                WatchEvent::Error(e) => panic!("{args:?}: {e:?}"),
                _ => {}
            }
        }
    }
}
/// The owner's uid, for an ownerReference.
fn owned_by(mut widget: widget_api::Widget, owner: &widget_api::Widget) -> widget_api::Widget {
    widget.metadata.owner_references = Some(vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        api_version: "custom.example.com/v1".into(),
        kind: "Widget".into(),
        name: owner.metadata.name.clone().unwrap(),
        uid: owner.metadata.uid.clone().unwrap(),
        block_owner_deletion: Some(true),
        controller: None,
    }]);
    widget
}

/// What kube-controller-manager's garbage collector does with an owner being deleted, through
/// the metadata API only: for `foregroundDeletion`, delete the dependents and then drop the
/// finalizer; for `orphan`, remove the dependents' ownerReferences and then drop the finalizer.
async fn collect_garbage(api: &Api<widget_api::Widget>, owner: &kube::core::PartialObjectMeta<widget_api::Widget>) {
    use kube::api::{DeleteParams, Patch, PatchParams};
    let uid = owner.metadata.uid.clone().unwrap();
    let finalizers = owner.metadata.finalizers.clone().unwrap_or_default();
    let dependents: Vec<String> = api
        .list_metadata(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|o| o.metadata.owner_references.iter().flatten().any(|r| r.uid == uid))
        .filter_map(|o| o.metadata.name)
        .collect();
    let which = if finalizers.iter().any(|f| f == "foregroundDeletion") {
        "foregroundDeletion"
    } else if finalizers.iter().any(|f| f == "orphan") {
        "orphan"
    } else {
        return;
    };
    for name in &dependents {
        if which == "foregroundDeletion" {
            api.delete(name, &DeleteParams::background()).await.unwrap();
        } else {
            let drop_owners = serde_json::json!({"metadata": {"ownerReferences": null}});
            api.patch_metadata(name, &PatchParams::default(), &Patch::Merge(&drop_owners))
                .await
                .unwrap();
        }
    }
    let rest: Vec<&String> = finalizers.iter().filter(|f| *f != which).collect();
    let keep = serde_json::json!({"metadata": {"finalizers": rest}});
    let name = owner.metadata.name.clone().unwrap();
    api.patch_metadata(&name, &PatchParams::default(), &Patch::Merge(&keep))
        .await
        .unwrap();
}

/// Foreground and orphan deletion as kube-apiserver records them (the `foregroundDeletion` and
/// `orphan` finalizers with a deletionTimestamp), and a garbage collector that sees them with
/// kube's metadata-only watcher and finishes the job.
#[tokio::test(flavor = "multi_thread")]
async fn garbage_collection_with_the_metadata_watcher() {
    use kube::api::{DeleteParams, PropagationPolicy};
    use kube::runtime::{WatchStreamExt, watcher};
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let api: Api<widget_api::Widget> = Api::namespaced(server.client().await, "default");
    let pp = PostParams::default();
    let owner = api.create(&pp, &typed_widget("owner", 1)).await.unwrap();
    api.create(&pp, &owned_by(typed_widget("dep", 1), &owner))
        .await
        .unwrap();
    let parent = api.create(&pp, &typed_widget("parent", 1)).await.unwrap();
    api.create(&pp, &owned_by(typed_widget("orphan", 1), &parent))
        .await
        .unwrap();

    let collector = {
        let api = api.clone();
        tokio::spawn(async move {
            // kube's metadata-only watcher: `Api<PartialObjectMeta<K>>` asks for PartialObjectMetadata.
            let metadata_only: Api<kube::core::PartialObjectMeta<widget_api::Widget>> =
                Api::namespaced(api.clone().into_client(), "default");
            let events = watcher(metadata_only, watcher::Config::default()).applied_objects();
            let mut events = std::pin::pin!(events);
            while let Some(object) = events.try_next().await.unwrap() {
                if object.metadata.deletion_timestamp.is_some() {
                    collect_garbage(&api, &object).await;
                }
            }
        })
    };

    let foreground = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        ..Default::default()
    };
    let marked = api
        .delete("owner", &foreground)
        .await
        .unwrap()
        .left()
        .expect("kept until its dependents are gone");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert!(
        marked
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == "foregroundDeletion")
    );
    let orphaning = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Orphan),
        ..Default::default()
    };
    let marked = api.delete("parent", &orphaning).await.unwrap().left().unwrap();
    assert!(marked.metadata.finalizers.iter().flatten().any(|f| f == "orphan"));

    let names = || async {
        let mut names: Vec<String> = api
            .list_metadata(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|o| o.metadata.name)
            .collect();
        names.sort();
        names
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while names().await != ["orphan"] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still there: {:?}",
            names().await
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let orphan = api.get_metadata("orphan").await.unwrap();
    assert!(
        orphan.metadata.owner_references.unwrap_or_default().is_empty(),
        "orphaned, not deleted"
    );
    collector.abort();
}

/// The namespace controller's part: find every namespaced resource that serves
/// deletecollection in discovery, delete the namespace's objects, and wait for the ones with
/// finalizers to drain (here: a finalizer removed by its owner through the metadata API).
#[tokio::test(flavor = "multi_thread")]
async fn namespace_deletion_drains_widgets() {
    use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};
    use kube::discovery::{Discovery, Scope, verbs};
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let client = server.client().await;
    let widgets: Api<widget_api::Widget> = Api::namespaced(client.clone(), "doomed");
    for name in ["a", "b"] {
        widgets
            .create(&PostParams::default(), &typed_widget(name, 1))
            .await
            .unwrap();
    }
    let mut held = typed_widget("held", 1);
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    widgets.create(&PostParams::default(), &held).await.unwrap();

    let discovery = Discovery::new(client.clone())
        .filter(&["custom.example.com"])
        .run()
        .await
        .unwrap();
    let mut deleted = 0;
    for group in discovery.groups() {
        for (resource, caps) in group.recommended_resources() {
            if caps.scope != Scope::Namespaced || !caps.supports_operation(verbs::DELETE_COLLECTION) {
                continue;
            }
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "doomed", &resource);
            api.delete_collection(&DeleteParams::background(), &ListParams::default())
                .await
                .unwrap();
            deleted += 1;
        }
    }
    assert_eq!(deleted, 1, "widgets are found in discovery");
    let left = widgets.list_metadata(&ListParams::default()).await.unwrap().items;
    assert_eq!(left.len(), 1, "only the object with a finalizer waits");
    assert!(left[0].metadata.deletion_timestamp.is_some());
    let release = serde_json::json!({"metadata": {"finalizers": null}});
    widgets
        .patch_metadata("held", &PatchParams::default(), &Patch::Merge(&release))
        .await
        .unwrap();
    assert!(
        widgets
            .list_metadata(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

/// The aggregator multiplexes many watches over one HTTP/2 connection: 300 at once must all be
/// served (hyper's default of 200 streams would leave 100 waiting forever).
#[tokio::test(flavor = "multi_thread")]
async fn three_hundred_watches_on_one_http2_connection() {
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let tls = common::connect_alpn(&server.url, &server.dir, &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
    let (sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    let url = format!("{}{WIDGETS}?watch=1&timeoutSeconds=60", server.url);
    let opened = futures::future::join_all((0..300).map(|_| {
        let mut sender = sender.clone();
        let request = http::Request::get(&url).body(Empty::<bytes::Bytes>::new()).unwrap();
        async move { sender.send_request(request).await }
    }));
    let responses = tokio::time::timeout(std::time::Duration::from_secs(20), opened)
        .await
        .expect("every watch is answered while the others stay open");
    let ok = responses
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|r| r.status() == 200))
        .count();
    assert_eq!(ok, 300);
}
