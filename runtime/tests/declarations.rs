//! Declarations the derive cannot fully check (fields of nested types) are checked against
//! the schema when the server starts, and by `apiary_runtime::check::<T>()` in a unit test.

use std::sync::Arc;

use apiary_runtime::prelude::*;
use apiary_runtime::registry::{Store, TypedStrategy};
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
    assert_eq!(apiary_runtime::check::<Good>(), Ok(()));
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
        assert_eq!(error.unwrap_err(), want);
    }
    // The server refuses them at start: every store is built through the same check.
    let store = Store::new(
        Arc::new(TypedStrategy::<NoSuchScale>::default()),
        WatchCache::new(storage::memory(), 10),
        "/registry",
    );
    assert!(store.is_err());
}
