//! Declarations the derive cannot fully check (fields of nested types) are checked against
//! the schema when the server starts, and by `apiary_runtime::check::<T>()` in a unit test;
//! and a declared resource's objects are reachable as its type (`registry::Objects`).

use std::sync::Arc;

use apiary_runtime::prelude::*;
use apiary_runtime::registry::{DeleteOptions, ListOptions, Objects, Store, TypedStrategy, WriteOptions};
use apiary_runtime::storage::{self, WatchCache};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct GadgetSpec {
    pub size: i32,
    pub name: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct GadgetStatus {
    pub ready: i32,
}

macro_rules! gadget {
    ($name:ident, $($api:tt)*) => {
        #[derive(ApiResource, Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
        #[api(group = "example.com", version = "v1", cluster, status = "GadgetStatus", $($api)*)]
        pub struct $name {
            #[serde(default)]
            metadata: ObjectMeta,
            spec: GadgetSpec,
            status: Option<GadgetStatus>,
        }
    };
}

gadget!(
    Good,
    scale(spec = ".spec.size", status = ".status.ready"),
    selectable = ".spec.name"
);
gadget!(NoSuchScale, scale(spec = ".spec.nosuch", status = ".status.ready"));
gadget!(TextScale, scale(spec = ".spec.name", status = ".status.ready"));
gadget!(NoSuchColumn, printcolumn(name = "X", type = "string", json_path = ".status.phase"));
gadget!(NoSuchSelectable, selectable = ".spec.size.inner");

#[test]
fn paths_must_name_fields_of_the_schema() {
    apiary_runtime::check::<Good>().unwrap();
    for (error, want) in [
        (
            apiary_runtime::check::<NoSuchScale>(),
            "NoSuchScale: scale spec `.spec.nosuch` is not in the schema (known here: name, size); fix the path in #[api(...)]",
        ),
        (
            apiary_runtime::check::<TextScale>(),
            "TextScale: scale spec `.spec.name` must name an integer field",
        ),
        (
            apiary_runtime::check::<NoSuchColumn>(),
            "NoSuchColumn: printcolumn json_path `.status.phase` is not in the schema (known here: ready); fix the path in #[api(...)]",
        ),
        (
            apiary_runtime::check::<NoSuchSelectable>(),
            "NoSuchSelectable: selectable `.spec.size.inner`: the schema has no fields here; fix the path in #[api(...)]",
        ),
    ] {
        match error {
            Err(apiary_runtime::Error::Declaration { resource, message }) => {
                assert_eq!(message, want);
                assert!(resource.ends_with("s.example.com/v1"), "{resource}");
            }
            other => panic!("{other:?}"),
        }
    }
    // The server refuses them at start: every store is built through the same check.
    let store = Store::new(
        Arc::new(TypedStrategy::<NoSuchScale>::default()),
        WatchCache::new(storage::memory(), 10),
        "/registry",
    );
    assert!(store.is_err());
}

/// The typed handle writes and reads `Good` through the same store as JSON requests: create,
/// get, list, update (status ignored), update_status (the rest ignored), delete; a store of
/// another resource is not a `Good` store.
#[tokio::test]
async fn objects_are_read_and_written_as_their_type() {
    let store = Arc::new(
        Store::new(
            Arc::new(TypedStrategy::<Good>::default()),
            WatchCache::new(storage::memory(), 10),
            "/registry",
        )
        .unwrap(),
    );
    assert!(Objects::<NoSuchColumn>::new(store.clone()).is_none());
    let goods = Objects::<Good>::new(store).unwrap();
    let mut good = Good::default();
    good.metadata.name = Some("g".into());
    good.spec.size = 2;
    let written = WriteOptions::default();
    let created = goods.create(None, &good, &written).await.unwrap();
    assert!(created.metadata.resource_version.is_some());
    assert_eq!(goods.get(None, "g").await.unwrap().spec.size, 2);

    let mut changed = created.clone();
    changed.spec.size = 3;
    changed.status = Some(GadgetStatus { ready: 9 });
    let updated = goods.update(None, &changed, &written).await.unwrap();
    assert_eq!(
        (updated.spec.size, updated.status.map(|s| s.ready)),
        (3, None),
        "status ignored"
    );
    let mut status = goods.get(None, "g").await.unwrap();
    status.spec.size = 5;
    status.status = Some(GadgetStatus { ready: 3 });
    let updated = goods.update_status(None, &status, &written).await.unwrap();
    assert_eq!(
        (updated.spec.size, updated.status.map(|s| s.ready)),
        (3, Some(3)),
        "spec ignored"
    );

    let listed = goods.list(&ListOptions::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    let stale = goods.update(None, &created, &written).await.unwrap_err();
    assert_eq!(stale.code, 409, "an old resourceVersion conflicts");
    let deleted = goods.delete(None, "g", &DeleteOptions::default()).await.unwrap();
    assert_eq!(deleted.and_then(|g| g.metadata.name).as_deref(), Some("g"));
    assert_eq!(goods.get(None, "g").await.unwrap_err().code, 404);
}
