//! `custom.example.com/v1alpha1` Widget: the older shape, served and deprecated, stored as
//! [`v1::Widget`](crate::Widget).
//!
//! v1alpha1 says how big a Widget is (`small`, `medium`, `large`) where v1 counts replicas and
//! has a color. What v1alpha1 cannot hold travels in the [`V1_SPEC`] annotation, so an update
//! at v1alpha1 keeps a v1 writer's exact replicas and color unless it changes the size.

use std::collections::BTreeMap;

use apiary_runtime::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::WidgetStatus;

/// The annotation that keeps the v1 fields v1alpha1 has no place for.
pub const V1_SPEC: &str = "custom.example.com/v1-spec";

/// A Widget as v1alpha1 has it.
#[derive(ApiResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[api(
    group = "custom.example.com",
    version = "v1alpha1",
    kind = "Widget",
    namespaced,
    short_names("wd"),
    categories("all"),
    status = "WidgetStatus",
    printcolumn(name = "Size", type = "string", json_path = ".spec.size", description = "How big"),
    printcolumn(name = "Available", type = "integer", json_path = ".status.availableReplicas"),
    printcolumn(name = "Phase", type = "string", json_path = ".status.phase"),
    selectable = ".spec.size",
    selectable = ".status.phase",
    storage = crate::Widget,
    deprecated = "custom.example.com/v1alpha1 Widget is deprecated; use custom.example.com/v1 Widget"
)]
pub struct Widget {
    /// Standard object metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// What the user wants.
    pub spec: WidgetSpec,
    /// What the server observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<WidgetStatus>,
}

/// The desired state of a v1alpha1 Widget.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WidgetSpec {
    /// How big: small (1 replica), medium (3) or large (5).
    pub size: Size,
    /// The container image.
    #[schemars(length(min = 1))]
    pub image: String,
}

/// A Widget's size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Size {
    /// One replica.
    #[default]
    Small,
    /// Three replicas.
    Medium,
    /// Five replicas.
    Large,
}

impl Size {
    /// The replicas a size stands for.
    pub fn replicas(self) -> i32 {
        match self {
            Size::Small => 1,
            Size::Medium => 3,
            Size::Large => 5,
        }
    }

    /// The size that holds `replicas`.
    pub fn of(replicas: i32) -> Size {
        match replicas {
            ..=1 => Size::Small,
            2..=3 => Size::Medium,
            _ => Size::Large,
        }
    }
}

/// The v1 fields v1alpha1 cannot hold, as kept in [`V1_SPEC`].
#[derive(Serialize, Deserialize)]
struct Kept {
    replicas: i32,
    color: String,
}

impl From<Widget> for crate::Widget {
    fn from(w: Widget) -> Self {
        let mut metadata = w.metadata;
        let kept: Option<Kept> = metadata
            .annotations
            .as_mut()
            .and_then(|a| a.remove(V1_SPEC))
            .and_then(|json| serde_json::from_str(&json).ok());
        if metadata.annotations.as_ref().is_some_and(BTreeMap::is_empty) {
            metadata.annotations = None;
        }
        // The exact replicas stand while the size still holds them; a new size sets its own.
        let (replicas, color) = match kept {
            Some(k) if Size::of(k.replicas) == w.spec.size => (k.replicas, k.color),
            Some(k) => (w.spec.size.replicas(), k.color),
            None => (w.spec.size.replicas(), "blue".to_string()),
        };
        crate::Widget {
            metadata,
            spec: crate::WidgetSpec {
                replicas,
                image: w.spec.image,
                color,
            },
            status: w.status,
        }
    }
}

impl From<crate::Widget> for Widget {
    fn from(w: crate::Widget) -> Self {
        let mut metadata = w.metadata;
        let size = Size::of(w.spec.replicas);
        if w.spec.replicas != size.replicas() || w.spec.color != "blue" {
            let kept = Kept {
                replicas: w.spec.replicas,
                color: w.spec.color,
            };
            if let Ok(json) = serde_json::to_string(&kept) {
                metadata
                    .annotations
                    .get_or_insert_with(BTreeMap::new)
                    .insert(V1_SPEC.to_string(), json);
            }
        }
        Widget {
            metadata,
            spec: WidgetSpec {
                size,
                image: w.spec.image,
            },
            status: w.status,
        }
    }
}
