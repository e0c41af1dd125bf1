//! Custom storage: the verbs a storage declares are checked when it is registered, and the
//! change log gives clients resourceVersions to list and watch from.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use apiary_runtime::custom::{CustomStorage, CustomStore};
use apiary_runtime::prelude::*;
use apiary_runtime::registry::{ListOptions, WatchEvent, WriteOptions};
use apiary_runtime::rest::Rest;
use apiary_runtime::status::{ApiError, ApiResult};
use async_trait::async_trait;
use futures::StreamExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct Spec {
    pub size: i32,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct State {
    pub ready: bool,
}

#[derive(ApiResource, Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[api(group = "example.com", version = "v1", kind = "Parcel", namespaced)]
pub struct Parcel {
    #[serde(default)]
    metadata: ObjectMeta,
    spec: Spec,
}

#[derive(ApiResource, Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[api(group = "example.com", version = "v1", kind = "Crate", namespaced, status = "State")]
pub struct Crate {
    #[serde(default)]
    metadata: ObjectMeta,
    spec: Spec,
    status: Option<State>,
}

/// A map that something else changes too (`outside`).
#[derive(Default)]
struct Shelf {
    boxes: Mutex<BTreeMap<String, Parcel>>,
}

impl Shelf {
    fn outside(&self, name: &str, size: Option<i32>) {
        let mut boxes = self.boxes.lock().unwrap();
        match size {
            Some(size) => {
                let mut b = Parcel {
                    spec: Spec { size },
                    ..Default::default()
                };
                b.metadata.name = Some(name.into());
                b.metadata.namespace = Some("default".into());
                boxes.insert(name.into(), b);
            }
            None => {
                boxes.remove(name);
            }
        }
    }
}

#[async_trait]
impl CustomStorage<Parcel> for std::sync::Arc<Shelf> {
    const VERBS: &'static [&'static str] = &["create", "get", "list", "watch"];

    async fn get(&self, _: Option<&str>, name: &str) -> ApiResult<Parcel> {
        let boxes = self.boxes.lock().unwrap();
        boxes
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&Parcel::META, name))
    }

    async fn list(&self, _: Option<&str>) -> ApiResult<Vec<Parcel>> {
        Ok(self.boxes.lock().unwrap().values().cloned().collect())
    }

    async fn create(&self, object: Parcel) -> ApiResult<Parcel> {
        let name = object.metadata.name.clone().unwrap();
        self.boxes.lock().unwrap().insert(name, object.clone());
        Ok(object)
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(50)
    }
}

macro_rules! verbs {
    ($name:ident, $($verb:literal),*) => {
        struct $name;
        #[async_trait]
        impl CustomStorage<Parcel> for $name {
            const VERBS: &'static [&'static str] = &[$($verb),*];
            async fn get(&self, _: Option<&str>, name: &str) -> ApiResult<Parcel> {
                Err(ApiError::not_found(&Parcel::META, name))
            }
            async fn list(&self, _: Option<&str>) -> ApiResult<Vec<Parcel>> {
                Ok(Vec::new())
            }
        }
    };
}

verbs!(PatchWithoutUpdate, "get", "list", "patch");
verbs!(Unknown, "get", "list", "frobnicate");
verbs!(NoList, "get");

struct CrateShelf;

#[async_trait]
impl CustomStorage<Crate> for CrateShelf {
    const VERBS: &'static [&'static str] = &["get", "list"];
    async fn get(&self, _: Option<&str>, name: &str) -> ApiResult<Crate> {
        Err(ApiError::not_found(&Crate::META, name))
    }
    async fn list(&self, _: Option<&str>) -> ApiResult<Vec<Crate>> {
        Ok(Vec::new())
    }
}

fn error<T, S>(refused: Result<CustomStore<T, S>, String>) -> String {
    refused.err().expect("refused")
}

#[test]
fn inconsistent_storage_is_refused_with_the_fix() {
    assert!(error(CustomStore::<Parcel, _>::new(PatchWithoutUpdate)).contains("must serve \"update\""));
    assert!(error(CustomStore::<Parcel, _>::new(Unknown)).contains("unknown verb \"frobnicate\""));
    assert!(error(CustomStore::<Parcel, _>::new(NoList)).contains("must serve \"list\""));
    assert!(error(CustomStore::<Crate, _>::new(CrateShelf)).contains("remove `status = ...`"));
}

#[tokio::test]
async fn list_then_watch_misses_no_change_made_in_between() {
    let shelf = std::sync::Arc::new(Shelf::default());
    shelf.outside("a", Some(1));
    let store = std::sync::Arc::new(CustomStore::<Parcel, _>::new(shelf.clone()).unwrap());
    let listed = store.list(&ListOptions::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    let rv = listed.metadata["resourceVersion"].as_str().unwrap().to_string();
    // Changes between the list and the watch, made behind the server's back.
    shelf.outside("a", None);
    shelf.outside("b", Some(2));
    let created = store
        .create(
            Some("default"),
            json!({"metadata": {"name": "c"}, "spec": {"size": 3}}),
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    let options = ListOptions {
        namespace: Some("default".into()),
        resource_version: Some(rv.clone()),
        ..Default::default()
    };
    let mut watch = store.clone().watch(options, None, false).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .unwrap()
            .unwrap()
        {
            WatchEvent::Object(kind, o) => {
                let rv: u64 = o["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
                seen.push((kind, o["metadata"]["name"].as_str().unwrap().to_string(), rv));
            }
            WatchEvent::Progress(_) => {}
            other => panic!("{other:?}"),
        }
    }
    let names: Vec<(&str, &str)> = seen.iter().map(|(k, n, _)| (*k, n.as_str())).collect();
    // The outside changes are found on the next poll, so "c" may come first; every change
    // comes exactly once, with a revision after the list's.
    for want in [("DELETED", "a"), ("ADDED", "b"), ("ADDED", "c")] {
        assert_eq!(names.iter().filter(|n| **n == want).count(), 1, "{names:?}");
    }
    let listed_at: u64 = rv.parse().unwrap();
    assert!(seen.iter().all(|(_, _, rv)| *rv > listed_at), "{seen:?}");
    assert_eq!(created.object["metadata"]["name"], "c");
}

/// Refuses parcels of size 13, and labels the others: admission runs for custom storage too.
struct Thirteen;

#[async_trait]
impl apiary_runtime::admission::Plugin for Thirteen {
    fn name(&self) -> &str {
        "Thirteen"
    }

    async fn mutate(
        &self,
        _: &apiary_runtime::admission::Attributes<'_>,
        object: &mut serde_json::Value,
    ) -> ApiResult<()> {
        object["metadata"]["labels"] = json!({"admitted": "yes"});
        Ok(())
    }

    async fn validate(
        &self,
        a: &apiary_runtime::admission::Attributes<'_>,
        object: &serde_json::Value,
    ) -> ApiResult<()> {
        if object.pointer("/spec/size") == Some(&json!(13)) {
            return Err(ApiError::new(
                403,
                "Forbidden",
                format!("{} of 13", a.operation.as_str()),
            ));
        }
        Ok(())
    }
}

#[tokio::test]
async fn custom_storage_runs_the_admission_chain() {
    let chain = apiary_runtime::admission::Chain::default();
    chain.push(std::sync::Arc::new(Thirteen));
    let shelf = std::sync::Arc::new(Shelf::default());
    let store = CustomStore::<Parcel, _>::new(shelf.clone())
        .unwrap()
        .with_admission(chain);
    let refused = store
        .create(
            Some("default"),
            json!({"metadata": {"name": "bad"}, "spec": {"size": 13}}),
            &WriteOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!((refused.code, refused.message.as_str()), (403, "CREATE of 13"));
    assert!(shelf.boxes.lock().unwrap().is_empty(), "nothing was stored");
    let created = store
        .create(
            Some("default"),
            json!({"metadata": {"name": "good"}, "spec": {"size": 1}}),
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(created.object["metadata"]["labels"]["admitted"], "yes");
}
