//! Validation ratchets as CRDs do since 1.30: an object stored before a stricter rule shipped
//! can still be labelled, have its status written and lose its finalizers; only a change to
//! the invalid field itself must satisfy the rule. A status write answers for status only.

use std::sync::Arc;

use apiary_runtime::prelude::*;
use apiary_runtime::registry::{DeleteOptions, Part, Store, TypedStrategy, WriteOptions};
use apiary_runtime::storage::{self, WatchCache};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct CrateSpec {
    pub size: i32,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct CrateStatus {
    pub packed: i32,
}

#[derive(ApiResource, Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[api(group = "example.com", version = "v1", namespaced, status = "CrateStatus", validate = at_most_ten,
      validate_update = never_shrinks)]
pub struct Crate {
    #[serde(default)]
    metadata: ObjectMeta,
    spec: CrateSpec,
    status: Option<CrateStatus>,
}

/// A transition rule: the update hook sees the stored object.
fn never_shrinks(new: &Crate, old: &Crate) -> Vec<FieldError> {
    if new.spec.size < old.spec.size {
        return vec![FieldError::invalid(
            "spec.size",
            &new.spec.size,
            format!("may not shrink (was {})", old.spec.size),
        )];
    }
    Vec::new()
}

/// The stricter rule, shipped after objects with larger sizes were stored.
fn at_most_ten(c: &Crate) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if c.spec.size > 10 {
        errors.push(FieldError::invalid("spec.size", &c.spec.size, "must be at most 10"));
    }
    if c.status.as_ref().is_some_and(|s| s.packed < 0) {
        errors.push(FieldError::invalid(
            "status.packed",
            &c.status.as_ref().unwrap().packed,
            "must not be negative",
        ));
    }
    errors
}

#[tokio::test]
async fn objects_stored_before_a_stricter_rule_can_still_be_changed_around_it() {
    let memory = storage::memory();
    let store = Store::new(
        Arc::new(TypedStrategy::<Crate>::default()),
        WatchCache::new(memory.clone(), 100),
        "/registry",
    )
    .unwrap();
    // Stored under the old rules.
    let old = json!({"apiVersion": "example.com/v1", "kind": "Crate",
                     "metadata": {"name": "big", "namespace": "default", "uid": "u1",
                                  "creationTimestamp": "2026-01-01T00:00:00Z", "generation": 1,
                                  "finalizers": ["example.com/keep"]},
                     "spec": {"size": 50}});
    memory
        .create("/registry/example.com/crates/default/big", old.to_string().into_bytes())
        .await
        .unwrap();
    let options = WriteOptions::default();
    let current = || async { store.get(Some("default"), "big").await.unwrap() };

    let mut labelled = current().await;
    labelled["metadata"]["labels"] = json!({"team": "a"});
    store
        .update(Some("default"), "big", labelled, Part::Main, &options)
        .await
        .expect("a label on an object the new rule would refuse");

    let status_write = WriteOptions {
        subresource: "status",
        ..Default::default()
    };
    let mut status = current().await;
    status["status"] = json!({"packed": 3});
    store
        .update(Some("default"), "big", status.clone(), Part::Status, &status_write)
        .await
        .expect("a status write is judged on status only");
    let mut status = current().await;
    status["status"] = json!({"packed": -1});
    let refused = store
        .update(Some("default"), "big", status, Part::Status, &status_write)
        .await
        .unwrap_err();
    assert_eq!(refused.code, 422);
    assert!(refused.message.contains("status.packed"), "{}", refused.message);

    let mut grown = current().await;
    grown["spec"]["size"] = json!(60);
    let refused = store
        .update(Some("default"), "big", grown, Part::Main, &options)
        .await
        .unwrap_err();
    assert_eq!(refused.code, 422, "changing the invalid field must meet the rule");
    assert!(
        refused
            .message
            .contains("spec.size: Invalid value: 60: must be at most 10"),
        "{}",
        refused.message
    );

    // Deleting: the object waits for its finalizer, which can then be removed.
    store
        .delete(Some("default"), "big", &DeleteOptions::default())
        .await
        .unwrap();
    let mut finalized = current().await;
    finalized["metadata"]["finalizers"] = json!([]);
    store
        .update(Some("default"), "big", finalized, Part::Main, &options)
        .await
        .expect("the finalizer can be removed");
    assert_eq!(store.get(Some("default"), "big").await.unwrap_err().code, 404);
}

#[tokio::test]
async fn the_update_hook_sees_the_stored_object() {
    let store = Store::new(
        Arc::new(TypedStrategy::<Crate>::default()),
        WatchCache::new(storage::memory(), 100),
        "/registry",
    )
    .unwrap();
    let options = WriteOptions::default();
    let body = json!({"metadata": {"name": "c"}, "spec": {"size": 5}});
    let created = store.create(Some("default"), body, &options).await.unwrap();
    let mut smaller = created.object.clone();
    smaller["spec"]["size"] = json!(4);
    let refused = store
        .update(Some("default"), "c", smaller, Part::Main, &options)
        .await
        .unwrap_err();
    assert_eq!(refused.code, 422);
    assert!(
        refused
            .message
            .contains("spec.size: Invalid value: 4: may not shrink (was 5)"),
        "{}",
        refused.message
    );
    let mut larger = created.object;
    larger["spec"]["size"] = json!(6);
    store
        .update(Some("default"), "c", larger, Part::Main, &options)
        .await
        .unwrap();
}
