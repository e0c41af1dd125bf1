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
/// Not compiled here, where the runtime that re-exports this derive is not a dependency; the
/// crate documentation of `apiary_runtime` has a whole resource and server that is compiled.
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// The keys `struct <name>` of the parser accepts: its fields, as darling names them.
    fn parser_keys(source: &str, name: &str) -> BTreeSet<String> {
        let start = source.find(&format!("struct {name} {{")).expect("the struct");
        let body = &source[start..source[start..].find("\n}").map(|end| start + end).unwrap()];
        let mut keys = BTreeSet::new();
        let mut renamed = None;
        for line in body.lines().skip(1).map(str::trim) {
            if let Some(rest) = line.strip_prefix("#[darling(rename = \"") {
                renamed = rest.split('"').next().map(str::to_string);
            } else if let Some((field, _)) = line.split_once(':').filter(|_| !line.starts_with("//")) {
                // darling's own: the type's name, visibility and generics.
                if !["ident", "vis", "generics"].contains(&field) {
                    keys.insert(renamed.take().unwrap_or_else(|| field.to_string()));
                }
            }
        }
        keys
    }

    /// The keys the reference's tables name, for the top level and inside `scale(...)` and
    /// `printcolumn(...)`.
    fn documented_keys(reference: &str) -> [BTreeSet<String>; 3] {
        let mut keys: [BTreeSet<String>; 3] = Default::default();
        let mut table = 0;
        for line in reference.lines() {
            if line.starts_with("## ") {
                table = 0;
            } else if line.starts_with("Inside `scale") {
                table = 1;
            } else if line.starts_with("Inside `printcolumn") {
                table = 2;
            } else if let Some(row) = line.strip_prefix("| `") {
                keys[table].insert(row.split('`').next().unwrap().to_string());
            }
        }
        keys
    }

    #[test]
    fn the_reference_names_every_key_the_parser_accepts() {
        let source = include_str!("resource.rs");
        let reference = include_str!("../../docs/reference/api-attributes.md");
        let [top, scale, column] = documented_keys(reference);
        assert_eq!(top, parser_keys(source, "ApiAttrs"), "docs/reference/api-attributes.md");
        assert_eq!(scale, parser_keys(source, "ScaleAttrs"), "scale(...) in the reference");
        assert_eq!(
            column,
            parser_keys(source, "PrintColumnAttrs"),
            "printcolumn(...) in the reference"
        );
    }
}
