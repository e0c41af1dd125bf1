//! kube-controller-manager's controllers on Widgets: the namespace controller empties a
//! deleted namespace through the server's API before the namespace can go, and the garbage
//! collector follows ownerReferences between Widgets and core objects both ways.

use std::time::{Duration, Instant};

use super::{Fixture, until};
use crate::common::{Kubectl, widget};

/// How long a namespace or a dependent may take to go: the garbage collector finds a newly
/// registered API on its next rediscovery (every 30 s), then works through its queues.
const CONTROLLER_TIMEOUT: Duration = Duration::from_secs(150);

/// `object` is gone (kubectl says NotFound); otherwise None.
fn gone(k: &Kubectl, args: &[&str]) -> Option<()> {
    let run = k.run(&[&["get"], args].concat());
    (run.code == 1 && run.stderr.contains("(NotFound)")).then_some(())
}

/// A namespace holding `count` Widgets is deleted: the namespace controller deletes them
/// through the server (deletecollection, then lists until none are left) and the namespace
/// goes. Returns how long that took.
pub async fn namespace_deletion(f: &Fixture, namespace: &str, count: usize) -> Duration {
    let k = f.kubectl(None);
    k.ok(&["create", "namespace", namespace]);
    let manifests: Vec<String> = (0..count).map(|i| widget(&format!("w{i:03}"), 1, "")).collect();
    k.ok_stdin(&["create", "-n", namespace, "-f", "-"], &manifests.join("---\n"));
    let listed = k.ok(&["get", "widgets", "-n", namespace, "-o", "name"]);
    assert_eq!(listed.lines().count(), count);
    let started = Instant::now();
    k.ok(&["delete", "namespace", namespace, "--wait=false"]);
    // Creating in a terminating namespace is refused (NamespaceLifecycle), unless the server's
    // namespace informer has not seen the deletion yet: then the controller deletes it too.
    let late = k.run_with_stdin(&["create", "-n", namespace, "-f", "-"], &widget("late", 1, ""));
    assert!(
        late.code == 0 || late.stderr.contains("because it is being terminated"),
        "{}",
        late.stderr
    );
    let deadline = Instant::now() + CONTROLLER_TIMEOUT;
    while gone(&k, &["namespace", namespace]).is_none() {
        if Instant::now() > deadline {
            panic!(
                "namespace {namespace} is still there after {CONTROLLER_TIMEOUT:?}:\n{}",
                k.run(&["get", "namespace", namespace, "-o", "yaml"]).stdout
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let took = started.elapsed();
    let left = k.ok(&["get", "widgets", "-n", namespace, "-o", "name"]);
    assert_eq!(left, "", "the namespace went, and its Widgets with it");
    took
}

fn uid(k: &Kubectl, resource: &str, name: &str) -> String {
    k.ok(&["get", resource, name, "-o", "jsonpath={.metadata.uid}"])
}

/// An ownerReferences block naming `kind` `name` of `api_version`.
fn owned_by(api_version: &str, kind: &str, name: &str, uid: &str, block: bool) -> String {
    format!(
        "  ownerReferences:\n  - apiVersion: {api_version}\n    kind: {kind}\n    name: {name}\n    uid: {uid}\n    blockOwnerDeletion: {block}\n"
    )
}

/// Widgets owned by ConfigMaps go with them (background and foreground deletion), and a
/// ConfigMap owned by a Widget goes with the Widget.
pub async fn garbage_collection(f: &Fixture) {
    let k = f.kubectl(None);
    for (owner, cascade) in [("owner-background", "background"), ("owner-foreground", "foreground")] {
        k.ok(&["create", "configmap", owner]);
        let reference = owned_by(
            "v1",
            "ConfigMap",
            owner,
            &uid(&k, "configmap", owner),
            cascade == "foreground",
        );
        let dependent = format!("{owner}-widget");
        let manifest = widget(&dependent, 1, "").replace("  labels:\n", &format!("{reference}  labels:\n"));
        k.ok_stdin(&["create", "-f", "-"], &manifest);
        k.ok(&[
            "delete",
            "configmap",
            owner,
            &format!("--cascade={cascade}"),
            "--wait=false",
        ]);
        until(
            &format!("the {cascade} garbage collection of widget {dependent}"),
            CONTROLLER_TIMEOUT,
            || std::future::ready(gone(&k, &["widget", &dependent])),
        )
        .await;
        until(&format!("configmap {owner} to go"), CONTROLLER_TIMEOUT, || {
            std::future::ready(gone(&k, &["configmap", owner]))
        })
        .await;
    }

    k.ok_stdin(&["create", "-f", "-"], &widget("owner-widget", 1, ""));
    let reference = owned_by(
        "custom.example.com/v1",
        "Widget",
        "owner-widget",
        &uid(&k, "widget", "owner-widget"),
        false,
    );
    let configmap =
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: owned-by-widget\n{reference}data:\n  a: b\n");
    k.ok_stdin(&["create", "-f", "-"], &configmap);
    k.ok(&["delete", "widget", "owner-widget"]);
    until(
        "the ConfigMap owned by a Widget to be collected",
        CONTROLLER_TIMEOUT,
        || std::future::ready(gone(&k, &["configmap", "owned-by-widget"])),
    )
    .await;
}
