//! The same flows through the `kube` crate: `kube::Api<Widget>` works against widget-server
//! because `#[derive(ApiResource)]` implements `kube::Resource`.

use crate::common;

use std::time::Duration;

use common::{ServerProcess, WidgetServer as _};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use widget_api::Widget;

async fn eventually_status(api: &Api<Widget>, name: &str, replicas: i32) -> Widget {
    for _ in 0..100 {
        let w = api.get(name).await.unwrap();
        if w.status.as_ref().is_some_and(|s| s.available_replicas == replicas) {
            return w;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("status of {name} never reached {replicas} replicas");
}

#[tokio::test(flavor = "multi_thread")]
async fn crud_scale_status_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let api: Api<Widget> = Api::namespaced(server.client().await, "default");

    let created = api
        .create(&PostParams::default(), &common::typed_widget("one", 2))
        .await
        .unwrap();
    assert_eq!(created.spec.color, "blue", "defaulted by the validate/default hooks");
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    assert!(created.status.is_none(), "clients cannot set status on create");

    let ready = eventually_status(&api, "one", 2).await;
    assert_eq!(ready.status.as_ref().unwrap().phase, Some(widget_api::Phase::Running));

    let listed = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert!(listed.metadata.resource_version.is_some());

    // Spec changes bump generation; metadata-only changes do not.
    let patched = api
        .patch(
            "one",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"color": "green"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.generation, Some(2));
    let labelled = api
        .patch(
            "one",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(2));

    // Writes to the main resource ignore status; writes to /status ignore spec.
    let ignored = api
        .patch(
            "one",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Failed"}})),
        )
        .await
        .unwrap();
    assert_ne!(ignored.status.as_ref().unwrap().phase, Some(widget_api::Phase::Failed));
    let status_write = api
        .patch_status(
            "one",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 50}, "status": {"phase": "Failed"}})),
        )
        .await
        .unwrap();
    assert_eq!(status_write.spec.replicas, 2);
    assert_eq!(status_write.status.unwrap().phase, Some(widget_api::Phase::Failed));

    // Scale subresource.
    let scale = api.get_scale("one").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(2));
    let scaled = api
        .patch_scale(
            "one",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 6}})),
        )
        .await
        .unwrap();
    assert_eq!(scaled.spec.unwrap().replicas, Some(6));
    assert_eq!(api.get("one").await.unwrap().spec.replicas, 6);
    let too_many = api
        .patch_scale(
            "one",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 500}})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&too_many, kube::Error::Api(s) if s.code == 422),
        "{too_many:?}"
    );

    // Optimistic concurrency.
    let mut stale = api.get("one").await.unwrap();
    api.patch(
        "one",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"image": "nginx:1.26"}})),
    )
    .await
    .unwrap();
    stale.spec.replicas = 3;
    let conflict = api.replace("one", &PostParams::default(), &stale).await.unwrap_err();
    assert_eq!(common::status_of(&conflict), (409, "Conflict"), "{conflict:?}");

    // Errors are Status objects with code and reason.
    let missing = api.get("missing").await.unwrap_err();
    assert_eq!(common::status_of(&missing), (404, "NotFound"), "{missing:?}");
    let exists = api
        .create(&PostParams::default(), &common::typed_widget("one", 1))
        .await
        .unwrap_err();
    assert_eq!(common::status_of(&exists), (409, "AlreadyExists"), "{exists:?}");
    let invalid = api
        .create(&PostParams::default(), &common::typed_widget("big", 101))
        .await
        .unwrap_err();
    assert!(
        matches!(&invalid, kube::Error::Api(s) if s.code == 422 && s.message.contains("spec.replicas")),
        "{invalid:?}"
    );
    // The CEL rule on spec.image, with its reason in the Status causes.
    let mut floating = common::typed_widget("floating", 1);
    floating.spec.image = "nginx:latest".into();
    let refused = api.create(&PostParams::default(), &floating).await.unwrap_err();
    let kube::Error::Api(status) = &refused else {
        panic!("{refused:?}")
    };
    assert_eq!(status.code, 422);
    assert_eq!(
        status.message,
        r#"Widget.custom.example.com "floating" is invalid: spec.image: Invalid value: "string": must name a version, not :latest"#
    );

    // Dry run never persists.
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    api.create(&dry, &common::typed_widget("ghost", 1)).await.unwrap();
    assert!(api.get_opt("ghost").await.unwrap().is_none());

    // generateName.
    let mut generated = common::typed_widget("", 1);
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("gen-".into());
    let generated = api.create(&PostParams::default(), &generated).await.unwrap();
    assert!(
        generated.metadata.name.as_ref().unwrap().starts_with("gen-") && generated.metadata.name.unwrap().len() == 9
    );

    api.delete("one", &DeleteParams::default()).await.unwrap();
    assert!(api.get_opt("one").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_sees_changes_and_runtime_watcher_works() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let api: Api<Widget> = Api::namespaced(server.client().await, "default");
    api.create(&PostParams::default(), &common::typed_widget("first", 1))
        .await
        .unwrap();
    let rv = common::list_rv(&api).await;

    let mut stream = api
        .watch(&WatchParams::default().timeout(30), &rv)
        .await
        .unwrap()
        .boxed();
    api.create(&PostParams::default(), &common::typed_widget("second", 1))
        .await
        .unwrap();
    api.delete("first", &DeleteParams::default()).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match next_event(&mut stream).await {
            WatchEvent::Added(w) if w.metadata.name.as_deref() == Some("second") => seen.push("added second"),
            WatchEvent::Deleted(w) if w.metadata.name.as_deref() == Some("first") => seen.push("deleted first"),
            _ => {}
        }
    }
    assert_eq!(seen, ["added second", "deleted first"]);

    // kube-runtime's watcher: list + watch (and streaming lists, where the client asks for them).
    let objects = kube::runtime::watcher(api.clone(), kube::runtime::watcher::Config::default());
    let mut objects = Box::pin(kube::runtime::WatchStreamExt::applied_objects(objects));
    let first = tokio::time::timeout(Duration::from_secs(10), objects.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.metadata.name.as_deref(), Some("second"));
    let streaming = kube::runtime::watcher::Config::default().streaming_lists();
    let mut objects = Box::pin(kube::runtime::WatchStreamExt::applied_objects(kube::runtime::watcher(
        api.clone(),
        streaming,
    )));
    let first = tokio::time::timeout(Duration::from_secs(10), objects.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.metadata.name.as_deref(), Some("second"));
}

/// The next event of a watch, within 10 s.
async fn next_event(
    stream: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<Widget>>> + Unpin),
) -> WatchEvent<Widget> {
    tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await
        .expect("an event in time")
        .unwrap()
        .expect("the watch goes on")
}

/// On etcd the watch cache follows etcd without previous values and fills them in itself: a
/// selector watch still sees an object leave its selection, and a deletion, with the object.
#[tokio::test(flavor = "multi_thread")]
async fn a_selector_watch_on_etcd_sees_objects_leave_and_go() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = apiary_runtime::testing::EtcdProcess::start(dir.path());
    // No status controller: its status writes would be events of their own.
    let server = ServerProcess::on_etcd(dir.path(), &etcd, &["--status-controller", "false"]);
    let api: Api<Widget> = Api::namespaced(server.client().await, "default");
    for name in ["leaves", "goes"] {
        let mut widget = common::typed_widget(name, 1);
        widget.metadata.labels = Some([("team".to_string(), "a".to_string())].into());
        api.create(&PostParams::default(), &widget).await.unwrap();
    }
    let rv = common::list_rv(&api).await;
    let watch = WatchParams::default().labels("team=a").timeout(30);
    let mut stream = api.watch(&watch, &rv).await.unwrap().boxed();
    let relabel = json!({"metadata": {"labels": {"team": "b"}}});
    api.patch("leaves", &PatchParams::default(), &Patch::Merge(&relabel))
        .await
        .unwrap();
    api.delete("goes", &DeleteParams::default()).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match next_event(&mut stream).await {
            WatchEvent::Deleted(w) => seen.push((
                w.metadata.name.unwrap_or_default(),
                w.metadata.labels.unwrap_or_default().get("team").cloned(),
                w.spec.image,
            )),
            other => panic!("only deletions are expected: {other:?}"),
        }
    }
    let image = common::typed_widget("x", 1).spec.image;
    assert_eq!(
        seen,
        [
            ("leaves".to_string(), Some("b".to_string()), image.clone()),
            ("goes".to_string(), Some("a".to_string()), image)
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_resource_versions_and_continue_tokens_are_410() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let api: Api<Widget> = Api::namespaced(server.client().await, "default");
    for i in 0..3 {
        api.create(&PostParams::default(), &common::typed_widget(&format!("w{i}"), 1))
            .await
            .unwrap();
    }
    let page = api.list(&ListParams::default().limit(1)).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.metadata.remaining_item_count, Some(2));
    let token = page.metadata.continue_.clone().unwrap();
    let next = api
        .list(&ListParams::default().limit(1).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(next.items[0].metadata.name.as_deref(), Some("w1"));

    // A list at an exact past revision sees the store as it was: revision 1 is the first create.
    let past = api
        .list(&ListParams::default().at("1").matching(kube::api::VersionMatch::Exact))
        .await
        .unwrap();
    assert_eq!(
        past.items
            .iter()
            .map(|w| w.metadata.name.clone().unwrap())
            .collect::<Vec<_>>(),
        ["w0"]
    );
    assert_eq!(past.metadata.resource_version.as_deref(), Some("1"));
    let restarted_dir = dir.path().join("restart");
    std::fs::create_dir_all(&restarted_dir).unwrap();
    let embedded = ServerProcess::start_in(&restarted_dir, &["--storage", "embedded"]);
    let eapi: Api<Widget> = Api::namespaced(embedded.client().await, "default");
    for i in 0..3 {
        eapi.create(&PostParams::default(), &common::typed_widget(&format!("w{i}"), 1))
            .await
            .unwrap();
    }
    let page = eapi.list(&ListParams::default().limit(1)).await.unwrap();
    let token = page.metadata.continue_.unwrap();
    let rv = page.metadata.resource_version.unwrap();
    // One more write, so the token's revision is history, not the newest revision.
    eapi.create(&PostParams::default(), &common::typed_widget("w3", 1))
        .await
        .unwrap();
    drop(eapi);
    embedded.kill();
    // After a restart the embedded store has no history before its newest revision.
    let embedded = ServerProcess::start_in(&restarted_dir, &["--storage", "embedded"]);
    let eapi: Api<Widget> = Api::namespaced(embedded.client().await, "default");
    let expired = eapi
        .list(&ListParams::default().limit(1).continue_token(&token))
        .await
        .unwrap_err();
    assert_eq!(common::status_of(&expired), (410, "Expired"), "{expired:?}");
    let old = format!("{}", rv.parse::<u64>().unwrap() - 2);
    let mut watch = eapi
        .watch(&WatchParams::default().timeout(5), &old)
        .await
        .unwrap()
        .boxed();
    let event = tokio::time::timeout(Duration::from_secs(10), watch.try_next())
        .await
        .unwrap();
    match event {
        Ok(Some(WatchEvent::Error(e))) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 410),
        other => panic!("expected 410 Expired, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bookmarks_advance_past_changes_a_selective_watch_does_not_see() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_in(dir.path(), &["--storage", "memory", "--watch-bookmark-interval", "1"]);
    let api: Api<Widget> = Api::namespaced(server.client().await, "default");
    let rv = common::list_rv(&api).await;
    let mut params = WatchParams::default().labels("app=nothing-matches").timeout(20);
    params.bookmarks = true;
    let mut watch = api.watch(&params, &rv).await.unwrap().boxed();
    let mut last = 0u64;
    for i in 0..3 {
        let w = api
            .create(&PostParams::default(), &common::typed_widget(&format!("unseen-{i}"), 1))
            .await
            .unwrap();
        last = w.metadata.resource_version.unwrap().parse().unwrap();
    }
    // The watch sees none of them, but its bookmarks move past them, so a client that
    // reconnects from the bookmark does not replay (or 410 on) what it never wanted.
    let bookmarked = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(event) = watch.try_next().await.unwrap() {
            match event {
                WatchEvent::Bookmark(b) => {
                    let at: u64 = b.metadata.resource_version.parse().unwrap();
                    if at >= last {
                        return at;
                    }
                }
                other => panic!("a selective watch got {other:?}"),
            }
        }
        panic!("the watch ended without a bookmark past {last}");
    })
    .await
    .expect("a bookmark in time");
    assert!(bookmarked >= last);
}
