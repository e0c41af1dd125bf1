//! kubectl and kube-rs through the aggregator: the machine's oldest and newest kubectl, both
//! Widget versions, a long watch and server-side apply.

use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams, WatchEvent, WatchParams};
use serde_json::json;

use super::Fixture;
use crate::common::flows::smoke;
use crate::common::versions::{ALPHA, DEPRECATED, alpha, get};
use crate::common::{VERSIONS, widget};

/// kubectl 1.27 and 1.33 discover, create, list and explain Widgets through the aggregator
/// (discovery and OpenAPI merged by kube-apiserver).
pub fn every_version(f: &Fixture) {
    for version in VERSIONS {
        let k = f.kubectl(Some(version));
        let name = format!("v{}", version.replace('.', "-"));
        smoke(&k, version, &name);
        k.ok(&["delete", "widget", &name]);
    }
}

/// The deprecated v1alpha1 through the aggregator: its own APIService, the deprecation
/// warning passed through, conversion to and from the stored v1.
pub fn both_versions(f: &Fixture) {
    let k = f.kubectl(None);
    let versions = k.ok(&["api-versions"]);
    for v in ["custom.example.com/v1", "custom.example.com/v1alpha1"] {
        assert!(versions.lines().any(|l| l == v), "{versions}");
    }
    let created = k.run_with_stdin(&["apply", "-f", "-"], &alpha("old", "small", "nginx:1.25"));
    assert_eq!(created.code, 0, "{}", created.stderr);
    assert!(created.stderr.contains(DEPRECATED), "{}", created.stderr);
    let v1 = get(&k, "widgets.v1.custom.example.com", "old");
    assert_eq!(v1["apiVersion"], "custom.example.com/v1");
    let old = get(&k, ALPHA, "old");
    assert_eq!(
        (old["spec"]["size"].as_str(), old["spec"]["image"].as_str()),
        (Some("small"), Some("nginx:1.25"))
    );
    // explain reads each version's schema from the OpenAPI v3 documents the aggregator merged.
    let explain = k.ok(&["explain", "widgets.spec", "--api-version=custom.example.com/v1alpha1"]);
    assert!(explain.contains("size") && !explain.contains("replicas"), "{explain}");
    let explain = k.ok(&["explain", "widgets.spec", "--api-version=custom.example.com/v1"]);
    assert!(explain.contains("replicas") && !explain.contains("size"), "{explain}");
    k.ok(&["delete", "widget", "old"]);
}

/// What the recipe's flows leave out, through the aggregator: `apply --server-side`, `edit`,
/// and reads of the status and scale subresources.
pub async fn more_verbs(f: &Fixture) {
    let k = f.kubectl(None);
    assert_eq!(
        k.ok_stdin(&["apply", "--server-side", "-f", "-"], &widget("ssa", 1, ""))
            .trim(),
        "widget.custom.example.com/ssa serverside-applied"
    );
    // kubectl runs KUBE_EDITOR on a file holding the object, and sends what it left there.
    let editor = k.with_env("KUBE_EDITOR", "sed -i 's/replicas: 1$/replicas: 3/'");
    assert_eq!(
        editor.ok(&["edit", "widget", "ssa"]).trim(),
        "widget.custom.example.com/ssa edited"
    );
    let k = f.kubectl(None);
    let scale = k.ok(&[
        "get",
        "widget",
        "ssa",
        "--subresource=scale",
        "-o",
        "jsonpath={.kind} {.spec.replicas}",
    ]);
    assert_eq!(scale, "Scale 3");
    let status = super::until(
        "the status controller to report 3 replicas",
        Duration::from_secs(30),
        || {
            let status = k.ok(&[
                "get",
                "widget",
                "ssa",
                "--subresource=status",
                "-o",
                "jsonpath={.status.availableReplicas}",
            ]);
            std::future::ready((status == "3").then_some(status))
        },
    )
    .await;
    assert_eq!(status, "3");
    k.ok(&["delete", "widget", "ssa"]);
}

fn widgets(client: kube::Client, namespace: &str) -> Api<DynamicObject> {
    let resource = kube::api::ApiResource {
        group: "custom.example.com".into(),
        version: "v1".into(),
        api_version: "custom.example.com/v1".into(),
        kind: "Widget".into(),
        plural: "widgets".into(),
    };
    Api::namespaced_with(client, namespace, &resource)
}

/// kube-rs through the aggregator: a watch that stays open while idle still delivers a later
/// change, and server-side apply records its manager.
pub async fn watch_and_apply(f: &Fixture) {
    let api = widgets(f.client().await, "default");
    let applied = json!({
        "apiVersion": "custom.example.com/v1", "kind": "Widget",
        "metadata": {"name": "applied"}, "spec": {"replicas": 2, "image": "nginx:1.25"},
    });
    let params = PatchParams::apply("real-cluster-test");
    let object = api.patch("applied", &params, &Patch::Apply(&applied)).await.unwrap();
    let managers: Vec<_> = object
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(managers.contains(&"real-cluster-test".to_string()), "{managers:?}");
    let version = object.metadata.resource_version.clone().unwrap();
    let mut events = api
        .watch(&WatchParams::default().timeout(300), &version)
        .await
        .unwrap()
        .boxed();
    // Idle longer than any keep-alive or proxy timeout on the path would allow a dead stream.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let mut changed = applied.clone();
    changed["spec"]["replicas"] = json!(6);
    api.patch("applied", &params, &Patch::Apply(&changed)).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(event) = events.next().await {
            match event.unwrap() {
                WatchEvent::Modified(w) if w.data["spec"]["replicas"] == 6 => return w,
                WatchEvent::Error(e) => panic!("the watch failed: {e:?}"),
                _ => {}
            }
        }
        panic!("the watch ended before the change");
    })
    .await
    .expect("the watch delivers the change within 30 s");
    assert_eq!(seen.metadata.name.as_deref(), Some("applied"));
    api.delete("applied", &Default::default()).await.unwrap();
}
