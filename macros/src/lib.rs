//! `#[derive(ApiResource)]`: turns one annotated Rust type into a Kubernetes API resource.
//!
//! The derive is re-exported by `apiary-runtime`; depend on that crate, not on this one.
//! It parses `#[api(...)]` (see [`macro@ApiResource`]), checks it against the type, and emits
//! small impls that call into `apiary_runtime`: `kube::Resource`, `apiary_runtime::ApiResource`
//! (static metadata plus the strategy hooks) and the `<Kind>List` alias.

mod checks;
mod resource;
mod rules;

use proc_macro::TokenStream;

/// Derive `kube::Resource` and `apiary_runtime::ApiResource` for a type with `metadata: ObjectMeta`.
///
/// ```ignore
/// #[derive(ApiResource, Clone, Debug, Serialize, Deserialize, JsonSchema)]
/// #[api(group = "custom.example.com", version = "v1", kind = "Widget", namespaced,
///       status = "WidgetStatus", scale(spec = ".spec.replicas", status = ".status.availableReplicas"))]
/// pub struct Widget { metadata: ObjectMeta, spec: WidgetSpec, status: Option<WidgetStatus> }
/// ```
///
/// Keys of `#[api(...)]`:
/// - `group`, `version` (required); `kind` (default: the type's name);
///   `plural`, `singular` (default: derived from the kind); `short_names("w", ..)`, `categories("all", ..)`;
/// - `namespaced` or `cluster` (one is required);
/// - `status = "Type"`: enables the status subresource; the type needs `status: Option<Type>`;
/// - `scale(spec = ".spec.x", status = ".status.y", selector = ".status.z")`: the scale subresource;
/// - `printcolumn(name = "..", type = "integer|number|string|boolean|date", json_path = ".spec.x",
///   description = "..", priority = 0, format = "..")`, repeated: `kubectl get` columns;
/// - `selectable = ".spec.x"`, repeated: fields usable in field selectors;
/// - `default = path::to::fn` (`fn(&mut Self)`), `validate = path::to::fn`
///   (`fn(&Self) -> Vec<apiary_runtime::FieldError>`, on create and update),
///   `validate_update = path::to::fn` (`fn(new: &Self, old: &Self) -> Vec<FieldError>`, on update);
/// - `storage = OtherVersion`, `deprecated` or `deprecated = ".."`, `served = false`: versions;
/// - `crate = "path"`: the runtime's path when the dependency is renamed or re-exported
///   (default `::apiary_runtime`), as serde's `#[serde(crate = "..")]`.
#[proc_macro_derive(ApiResource, attributes(api))]
pub fn derive_api_resource(input: TokenStream) -> TokenStream {
    resource::derive(proc_macro2::TokenStream::from(input)).into()
}
