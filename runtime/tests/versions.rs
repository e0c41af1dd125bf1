//! A kind's storage version changes: objects written while v1alpha1 was the storage version
//! stay readable at every version once v1 is, and the migration rewrites them at v1 with
//! unchanged content while a client keeps writing, on the embedded store and on etcd. The
//! storage-version migrator's way (an unchanged update per object) rewrites them too.

use std::collections::BTreeMap;
use std::sync::Arc;

use apiary_runtime::prelude::*;
use apiary_runtime::registry::patch::Patch;
use apiary_runtime::registry::{Part, Store, WriteOptions};
use apiary_runtime::storage::{RangeRequest, Storage, WatchCache};
use apiary_runtime::testing::EtcdProcess;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The annotation v1alpha1 keeps v1's `material` in.
const MATERIAL: &str = "example.com/material";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AlphaSpec {
    /// Teeth, as text.
    pub teeth: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct V1Spec {
    pub teeth: u32,
    #[serde(default)]
    pub material: String,
}

fn to_v1(mut metadata: ObjectMeta, spec: AlphaSpec) -> (ObjectMeta, V1Spec) {
    let material = metadata.annotations.as_mut().and_then(|a| a.remove(MATERIAL));
    if metadata.annotations.as_ref().is_some_and(BTreeMap::is_empty) {
        metadata.annotations = None;
    }
    let spec = V1Spec {
        teeth: spec.teeth.parse().unwrap_or_default(),
        material: material.unwrap_or_default(),
    };
    (metadata, spec)
}

fn to_alpha(mut metadata: ObjectMeta, spec: V1Spec) -> (ObjectMeta, AlphaSpec) {
    if !spec.material.is_empty() {
        metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(MATERIAL.into(), spec.material);
    }
    (
        metadata,
        AlphaSpec {
            teeth: spec.teeth.to_string(),
        },
    )
}

/// Before: v1alpha1 stores, v1 converts to it.
mod before {
    use super::*;

    #[derive(ApiResource, Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
    #[api(group = "example.com", version = "v1alpha1", kind = "Gear", namespaced)]
    pub struct Gear {
        #[serde(default)]
        pub metadata: ObjectMeta,
        pub spec: AlphaSpec,
    }

    #[derive(ApiResource, Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
    #[api(group = "example.com", version = "v1", kind = "Gear", namespaced, storage = Gear)]
    pub struct GearV1 {
        #[serde(default)]
        pub metadata: ObjectMeta,
        pub spec: V1Spec,
    }

    impl From<GearV1> for Gear {
        fn from(g: GearV1) -> Gear {
            let (metadata, spec) = to_alpha(g.metadata, g.spec);
            Gear { metadata, spec }
        }
    }

    impl From<Gear> for GearV1 {
        fn from(g: Gear) -> GearV1 {
            let (metadata, spec) = to_v1(g.metadata, g.spec);
            GearV1 { metadata, spec }
        }
    }
}

/// After: v1 stores, v1alpha1 converts to it.
mod after {
    use super::*;

    #[derive(ApiResource, Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
    #[api(group = "example.com", version = "v1", kind = "Gear", namespaced)]
    pub struct Gear {
        #[serde(default)]
        pub metadata: ObjectMeta,
        pub spec: V1Spec,
    }

    #[derive(ApiResource, Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
    #[api(group = "example.com", version = "v1alpha1", kind = "Gear", namespaced, storage = Gear)]
    pub struct GearAlpha {
        #[serde(default)]
        pub metadata: ObjectMeta,
        pub spec: AlphaSpec,
    }

    impl From<GearAlpha> for Gear {
        fn from(g: GearAlpha) -> Gear {
            let (metadata, spec) = to_v1(g.metadata, g.spec);
            Gear { metadata, spec }
        }
    }

    impl From<Gear> for GearAlpha {
        fn from(g: Gear) -> GearAlpha {
            let (metadata, spec) = to_alpha(g.metadata, g.spec);
            GearAlpha { metadata, spec }
        }
    }
}

const N: usize = 120;

/// The stores serving v1 and v1alpha1 of Gear, `H` the storage version's type.
fn serve<H: ApiResource, O: ApiResource>(storage: &Arc<WatchCache>) -> (Arc<Store>, Arc<Store>) {
    let hub = Arc::new(Store::serving::<H>(storage.clone(), "/registry", &[]).unwrap());
    let other = Arc::new(Store::serving::<O>(storage.clone(), "/registry", std::slice::from_ref(&hub)).unwrap());
    if H::META.version == "v1" {
        (hub, other)
    } else {
        (other, hub)
    }
}

/// The stored `apiVersion` of every Gear.
async fn stored_versions(storage: &Arc<WatchCache>) -> Vec<String> {
    let page = storage
        .range(RangeRequest {
            prefix: "/registry/example.com/gears/".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    page.kvs
        .iter()
        .map(|kv| {
            serde_json::from_slice::<Value>(&kv.value).unwrap()["apiVersion"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn gear(i: usize) -> Value {
    json!({"apiVersion": "example.com/v1", "kind": "Gear", "metadata": {"name": format!("g{i:03}")},
        "spec": {"teeth": i, "material": if i.is_multiple_of(2) { "steel" } else { "" }}})
}

async fn change_storage_version_and_migrate(storage: Arc<WatchCache>) {
    let options = WriteOptions::default();
    let ns = Some("default");
    // Written while v1alpha1 is the storage version, at both versions.
    {
        let (v1, alpha) = serve::<before::Gear, before::GearV1>(&storage);
        for i in 0..N - 1 {
            v1.create(ns, gear(i), &options).await.unwrap();
        }
        let old = json!({"apiVersion": "example.com/v1alpha1", "kind": "Gear", "metadata": {"name": "old"},
            "spec": {"teeth": "7"}});
        alpha.create(ns, old, &options).await.unwrap();
    }
    assert!(
        stored_versions(&storage)
            .await
            .iter()
            .all(|v| v == "example.com/v1alpha1")
    );

    // v1 stores now: everything reads at both versions, unchanged, and reading rewrites nothing.
    let (v1, alpha) = serve::<after::Gear, after::GearAlpha>(&storage);
    for i in 0..N - 1 {
        let name = format!("g{i:03}");
        let got = v1.get(ns, &name).await.unwrap();
        assert_eq!(got["apiVersion"], "example.com/v1");
        assert_eq!(got["spec"], gear(i)["spec"], "{got}");
        let at_alpha = alpha.get(ns, &name).await.unwrap();
        assert_eq!(at_alpha["spec"]["teeth"], i.to_string());
    }
    assert_eq!(
        v1.get(ns, "old").await.unwrap()["spec"],
        json!({"teeth": 7, "material": ""})
    );
    assert!(
        stored_versions(&storage)
            .await
            .iter()
            .all(|v| v == "example.com/v1alpha1")
    );

    // The storage-version migrator's way: an unchanged update (PUT as read) and an empty
    // merge patch each rewrite their object at v1.
    let as_read = v1.get(ns, "g000").await.unwrap();
    v1.update(ns, "g000", as_read, Part::Main, &options).await.unwrap();
    let patch = Patch::decode("application/merge-patch+json", b"{}").unwrap();
    alpha.patch(ns, "g001", &patch, Part::Main, &options).await.unwrap();
    let versions = stored_versions(&storage).await;
    assert_eq!(
        versions.iter().filter(|v| *v == "example.com/v1").count(),
        2,
        "{versions:?}"
    );

    // Migration while a client writes every object at v1alpha1 (the last write wins).
    let writer = {
        let alpha = alpha.clone();
        tokio::spawn(async move {
            for i in (0..N - 1).rev() {
                let name = format!("g{i:03}");
                let patch = Patch::decode(
                    "application/merge-patch+json",
                    json!({"spec": {"teeth": (i * 10).to_string()}}).to_string().as_bytes(),
                )
                .unwrap();
                alpha
                    .patch(Some("default"), &name, &patch, Part::Main, &WriteOptions::default())
                    .await
                    .unwrap();
            }
        })
    };
    let mut pages = 0;
    let done = v1.migrate(|_| pages += 1).await.unwrap();
    writer.await.unwrap();
    assert_eq!(done.scanned, N as u64);
    assert!(done.failed.is_empty(), "{done:?}");
    assert_eq!(done.rewritten + done.current + done.gone, N as u64, "{done:?}");
    assert!(pages >= 1);
    assert!(stored_versions(&storage).await.iter().all(|v| v == "example.com/v1"));
    for i in 0..N - 1 {
        let got = v1.get(ns, &format!("g{i:03}")).await.unwrap();
        let mut want = gear(i)["spec"].clone();
        want["teeth"] = json!(i * 10);
        assert_eq!(got["spec"], want, "{got}");
    }
    // Run again: nothing left to do.
    let again = v1.migrate(|_| {}).await.unwrap();
    assert_eq!((again.scanned, again.rewritten, again.current), (N as u64, 0, N as u64));
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_version_change_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let storage = apiary_runtime::storage::embedded(&dir.path().join("data.redb")).unwrap();
    change_storage_version_and_migrate(WatchCache::new(storage, 1000)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_version_change_on_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = EtcdProcess::start(dir.path());
    change_storage_version_and_migrate(WatchCache::new(Arc::new(etcd.client().await), 1000)).await;
}

/// v1alpha1 retired: still known (objects stored at it are read and migrated), not served.
#[derive(ApiResource, Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[api(group = "example.com", version = "v1alpha1", kind = "Gear", namespaced, storage = after::Gear, served = false)]
pub struct RetiredGear {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: AlphaSpec,
}

impl From<RetiredGear> for after::Gear {
    fn from(g: RetiredGear) -> after::Gear {
        let (metadata, spec) = to_v1(g.metadata, g.spec);
        after::Gear { metadata, spec }
    }
}

impl From<after::Gear> for RetiredGear {
    fn from(g: after::Gear) -> RetiredGear {
        let (metadata, spec) = to_alpha(g.metadata, g.spec);
        RetiredGear { metadata, spec }
    }
}

#[derive(clap::Parser)]
struct Flags {
    #[command(flatten)]
    server: apiary_runtime::server::ServerOptions,
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unserved_version_has_no_routes_and_no_discovery() {
    use clap::Parser as _;
    // The server's log goes to the test's captured output (shown when it fails).
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let flags = Flags::parse_from([
        "test",
        "--storage=memory",
        "--secure-port=0",
        "--leader-elect=false",
        &format!("--cert-dir={}", certs.display()),
    ]);
    let server = apiary_runtime::server::Server::new(flags.server)
        .await
        .unwrap()
        .resource::<after::Gear>()
        .unwrap()
        .resource::<RetiredGear>()
        .unwrap();
    let client = server.client();
    let running = tokio::spawn(server.run());
    let get = |path: &str| {
        let client = client.clone();
        let request = axum::http::Request::get(path).body(Vec::new()).unwrap();
        async move { client.request::<Value>(request).await }
    };
    let group = get("/apis/example.com").await.unwrap();
    assert_eq!(
        group["versions"],
        json!([{"groupVersion": "example.com/v1", "version": "v1"}])
    );
    assert!(
        get("/apis/example.com/v1alpha1/namespaces/default/gears")
            .await
            .is_err()
    );
    assert!(get("/apis/example.com/v1/namespaces/default/gears").await.is_ok());
    running.abort();
}
