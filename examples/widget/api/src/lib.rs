//! The Widget resource (`custom.example.com/v1`), the aggregation recipe's example type, and
//! its older shape [`v1alpha1::Widget`], served and deprecated, stored as v1.
//!
//! Business logic lives here as strategy hooks: color defaults to "blue", replicas above
//! [`MAX_REPLICAS`] are invalid. The server fills in status (see `widget-server`).

pub mod v1alpha1;

/// `custom.example.com/v1`, the storage version: the crate root's types.
pub mod v1 {
    pub use crate::{Condition, Phase, Widget, WidgetList, WidgetSpec, WidgetStatus};
}

use apiary_runtime::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The most replicas a Widget may ask for.
pub const MAX_REPLICAS: i32 = 100;

/// A Widget: some replicas of an image, in a color.
#[derive(ApiResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[api(
    group = "custom.example.com",
    version = "v1",
    kind = "Widget",
    namespaced,
    short_names("wd"),
    categories("all"),
    status = "WidgetStatus",
    scale(spec = ".spec.replicas", status = ".status.availableReplicas"),
    printcolumn(name = "Replicas", type = "integer", json_path = ".spec.replicas", description = "Desired replicas"),
    printcolumn(name = "Available", type = "integer", json_path = ".status.availableReplicas"),
    printcolumn(name = "Phase", type = "string", json_path = ".status.phase"),
    printcolumn(name = "Color", type = "string", json_path = ".spec.color", priority = 1),
    printcolumn(name = "Image", type = "string", json_path = ".spec.image", priority = 1),
    selectable = ".spec.color",
    selectable = ".status.phase",
    default = default_widget,
    validate = validate_widget
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

/// The desired state of a Widget.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WidgetSpec {
    /// How many replicas to run (0 to 100).
    #[schemars(range(min = 0))]
    pub replicas: i32,
    /// The container image, with a version (a CEL rule refuses `:latest`).
    #[schemars(
        length(min = 1),
        extend("x-kubernetes-validations" = [
            {"rule": "!self.endsWith(':latest')", "message": "must name a version, not :latest"}
        ])
    )]
    pub image: String,
    /// The color; "blue" when not given.
    #[serde(default)]
    pub color: String,
}

/// The lifecycle phase of a Widget.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Accepted, not running yet.
    #[default]
    Pending,
    /// Running.
    Running,
    /// Failed.
    Failed,
}

/// The observed state of a Widget.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WidgetStatus {
    /// Replicas that are up.
    #[serde(default)]
    pub available_replicas: i32,
    /// Lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// When the status was last written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<Time>,
    /// Standard conditions (`kubectl wait --for=condition=Ready`), one per type: a list-map,
    /// so server-side apply merges them by `type` and managers can own different conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// A standard status condition.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, e.g. `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// The generation the condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the status last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// Machine-readable reason.
    #[serde(default)]
    pub reason: String,
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
}

/// The `default` hook: color is "blue" unless given.
pub fn default_widget(widget: &mut Widget) {
    if widget.spec.color.is_empty() {
        widget.spec.color = "blue".to_string();
    }
}

/// The `validate` hook: at most [`MAX_REPLICAS`] replicas.
pub fn validate_widget(widget: &Widget) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if widget.spec.replicas > MAX_REPLICAS {
        errors.push(FieldError::invalid(
            "spec.replicas",
            &widget.spec.replicas,
            format!("must be less than or equal to {MAX_REPLICAS}"),
        ));
    }
    errors
}

/// A cluster-wide policy on Widgets: images no Widget may run (sample-apiserver's Fischer
/// for BanFlunder). Enforced by `widget-server`'s admission step.
#[derive(ApiResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[api(
    group = "custom.example.com",
    version = "v1",
    kind = "WidgetPolicy",
    cluster,
    short_names("wdp"),
    printcolumn(name = "Denied", type = "string", json_path = ".spec.deniedImages")
)]
pub struct WidgetPolicy {
    /// Standard object metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The policy.
    pub spec: WidgetPolicySpec,
}

/// What a WidgetPolicy denies.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WidgetPolicySpec {
    /// Images, or image prefixes ending in `*` (`registry.example.com/untrusted/*`), that no
    /// Widget may run.
    #[serde(default)]
    pub denied_images: Vec<String>,
}

impl WidgetPolicySpec {
    /// The first entry that denies `image`.
    pub fn denies(&self, image: &str) -> Option<&str> {
        self.denied_images
            .iter()
            .find(|d| match d.strip_suffix('*') {
                Some(prefix) => image.starts_with(prefix),
                None => image == d.as_str(),
            })
            .map(String::as_str)
    }
}
