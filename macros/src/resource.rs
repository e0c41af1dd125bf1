//! `#[derive(ApiResource)]` in three stages: parse `#[api(...)]` (darling) → a checked
//! [`Model`] → emitted impls. Every check reports at the user's span and says how to fix it.

use darling::util::SpannedValue;
use darling::{FromDeriveInput, FromMeta, ast::NestedMeta};
use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::{Data, DeriveInput, Fields, LitStr, Type};

use crate::checks::{Scope, StrList, TypeName, check_lower, check_path, is_api_version, is_dns_label_like, is_kind};

// ---------------------------------------------------------------- parse

/// `#[api(...)]` as written; mirrors the attribute grammar one key a field.
#[derive(FromDeriveInput)]
#[darling(attributes(api))]
struct ApiAttrs {
    ident: syn::Ident,
    vis: syn::Visibility,
    generics: syn::Generics,
    group: Option<SpannedValue<String>>,
    version: Option<SpannedValue<String>>,
    kind: Option<SpannedValue<String>>,
    plural: Option<SpannedValue<String>>,
    singular: Option<SpannedValue<String>>,
    #[darling(default)]
    short_names: StrList,
    #[darling(default)]
    categories: StrList,
    #[darling(default)]
    namespaced: Scope,
    #[darling(default)]
    cluster: SpannedValue<Scope>,
    /// kube-rs's `scope = "Cluster"`: answered with the right form.
    scope: Option<SpannedValue<String>>,
    status: Option<SpannedValue<TypeName>>,
    scale: Option<SpannedValue<ScaleAttrs>>,
    #[darling(multiple)]
    printcolumn: Vec<SpannedValue<Column>>,
    #[darling(multiple)]
    selectable: Vec<SpannedValue<String>>,
    default: Option<syn::Path>,
    validate: Option<syn::Path>,
    validate_update: Option<syn::Path>,
    /// Another version of this kind, which stores it (this one converts with `From`/`TryFrom`).
    storage: Option<syn::Path>,
    /// `deprecated` or `deprecated = "warning"`.
    deprecated: Option<Deprecated>,
    /// `served = false`: known (stored objects are read and migrated), not served.
    #[darling(default = || true)]
    served: bool,
    /// `crate = "path"`: where the runtime is when the dependency is renamed or re-exported
    /// (as serde's `#[serde(crate = "...")]`); `::apiary_runtime` otherwise.
    #[darling(rename = "crate")]
    runtime: Option<syn::Path>,
}

/// `deprecated` (the default warning) or `deprecated = "..."`.
struct Deprecated(Option<String>);

impl FromMeta for Deprecated {
    fn from_word() -> darling::Result<Self> {
        Ok(Deprecated(None))
    }

    fn from_string(value: &str) -> darling::Result<Self> {
        Ok(Deprecated(Some(value.to_string())))
    }
}

/// `scale(spec = "...", status = "...", selector = "...")`.
#[derive(FromMeta)]
struct ScaleAttrs {
    spec: SpannedValue<String>,
    status: SpannedValue<String>,
    selector: Option<SpannedValue<String>>,
}

/// `printcolumn(...)`; kube-rs's JSON string form gets the right form.
struct Column(PrintColumnAttrs);

impl FromMeta for Column {
    fn from_list(items: &[NestedMeta]) -> darling::Result<Self> {
        PrintColumnAttrs::from_list(items).map(Column)
    }

    fn from_string(_: &str) -> darling::Result<Self> {
        Err(darling::Error::custom(
            "write the column as keys, not JSON: `printcolumn(name = \"Replicas\", type = \"integer\", json_path = \".spec.replicas\")`",
        ))
    }
}

/// `printcolumn(name = "...", type = "...", json_path = "...", ...)`.
#[derive(FromMeta)]
struct PrintColumnAttrs {
    name: String,
    #[darling(rename = "type")]
    type_: SpannedValue<String>,
    json_path: SpannedValue<String>,
    description: Option<String>,
    #[darling(default)]
    priority: i32,
    format: Option<SpannedValue<String>>,
}

// ---------------------------------------------------------------- model

/// What the derive emits, after every check passed.
struct Model {
    ident: syn::Ident,
    vis: syn::Visibility,
    group: String,
    version: String,
    kind: String,
    plural: String,
    singular: String,
    short_names: Vec<String>,
    categories: Vec<String>,
    namespaced: bool,
    status: bool,
    scale: Option<(String, String, Option<String>)>,
    columns: Vec<PrintColumnAttrs>,
    selectable: Vec<String>,
    default: Option<syn::Path>,
    validate: Option<syn::Path>,
    validate_update: Option<syn::Path>,
    storage: Option<syn::Path>,
    deprecation: Option<String>,
    served: bool,
    metadata_span: Span,
    /// The path every emitted item is reached through.
    runtime: syn::Path,
}

const COLUMN_TYPES: &[&str] = &["integer", "number", "string", "boolean", "date"];
const COLUMN_FORMATS: &[&str] = &[
    "int32",
    "int64",
    "float",
    "double",
    "byte",
    "date",
    "date-time",
    "password",
    "name",
];

fn model(input: &DeriveInput, attrs: ApiAttrs) -> darling::Result<Model> {
    let mut errors = darling::Error::accumulator();
    errors.handle(crate::rules::check(input));

    let fields = match &input.data {
        Data::Struct(s) => match &s.fields {
            Fields::Named(named) => Some(&named.named),
            _ => None,
        },
        _ => None,
    };
    let Some(fields) = fields else {
        errors.finish()?;
        return Err(darling::Error::custom(
            "ApiResource needs a struct with named fields: `struct Widget { metadata: ObjectMeta, spec: WidgetSpec, .. }`",
        )
        .with_span(&attrs.ident));
    };
    if !attrs.generics.params.is_empty() {
        errors.push(
            darling::Error::custom(
                "ApiResource types cannot be generic: one type is one API resource; remove the type parameters",
            )
            .with_span(&attrs.generics),
        );
    }
    let field = |name: &str| fields.iter().find(|f| f.ident.as_ref().is_some_and(|i| i == name));

    let metadata_span = match field("metadata") {
        Some(f) => syn::spanned::Spanned::span(&f.ty),
        None => {
            errors.push(
                darling::Error::custom("ApiResource needs a field `metadata: ObjectMeta` (k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta)")
                    .with_span(&attrs.ident),
            );
            Span::call_site()
        }
    };

    let mut required = |key: &str, value: &Option<SpannedValue<String>>, example: &str| match value {
        Some(v) => v.to_string(),
        None => {
            errors.push(
                darling::Error::custom(format!(
                    "`#[api(...)]` needs `{key} = \"...\"`, e.g. `{key} = \"{example}\"`"
                ))
                .with_span(&attrs.ident),
            );
            String::new()
        }
    };
    let group = required("group", &attrs.group, "custom.example.com");
    let version = required("version", &attrs.version, "v1");
    for (key, value) in [("group", &attrs.group), ("version", &attrs.version)] {
        let Some(value) = value else { continue };
        if !is_dns_label_like(value) {
            errors.push(
                darling::Error::custom(format!(
                    "`{key}` must be lowercase letters, digits, '-' and '.', e.g. `{}`",
                    if key == "group" { "custom.example.com" } else { "v1" }
                ))
                .with_span(&value.span()),
            );
        }
    }

    if let Some(v) = &attrs.version
        && is_dns_label_like(v)
        && !is_api_version(v)
    {
        errors.push(
            darling::Error::custom(format!(
                "`version = \"{}\"` is not a Kubernetes API version: write `v1`, `v2beta1` or `v1alpha1`",
                v.as_str()
            ))
            .with_span(&v.span()),
        );
    }
    let kind = attrs
        .kind
        .as_ref()
        .map_or_else(|| attrs.ident.to_string(), |k| k.to_string());
    if !is_kind(&kind) {
        let error = darling::Error::custom(format!(
            "kind `{kind}` must be UpperCamelCase letters and digits, e.g. `Widget` or `WidgetPolicy`"
        ));
        errors.push(match &attrs.kind {
            Some(k) => error.with_span(&k.span()),
            None => error.with_span(&attrs.ident),
        });
    }
    let plural = match &attrs.plural {
        Some(p) => check_lower(p, "plural", &mut errors),
        None => pluralize(&kind.to_lowercase()),
    };
    let singular = match &attrs.singular {
        Some(s) => check_lower(s, "singular", &mut errors),
        None => kind.to_lowercase(),
    };

    if let Some(scope) = &attrs.scope {
        let word = if scope.eq_ignore_ascii_case("cluster") {
            "cluster"
        } else {
            "namespaced"
        };
        errors.push(
            darling::Error::custom(format!(
                "`scope = \"{}\"` is kube-rs's spelling: write the word `{word}` in `#[api(...)]`",
                scope.as_str()
            ))
            .with_span(&scope.span()),
        );
    }
    match (attrs.namespaced.0, attrs.cluster.0) {
        (true, true) => errors.push(
            darling::Error::custom("a resource is either `namespaced` or `cluster`, not both; remove one")
                .with_span(&attrs.cluster.span()),
        ),
        (false, false) if attrs.scope.is_none() => errors.push(
            darling::Error::custom(
                "`#[api(...)]` needs a scope: `namespaced` (objects live in a namespace) or `cluster` (cluster-scoped; kube-rs's default)",
            )
            .with_span(&attrs.ident),
        ),
        _ => {}
    }
    let namespaced = !attrs.cluster.0;

    // The status subresource: the attribute and the field must agree.
    let status_field = field("status");
    if let Some(status) = &attrs.status {
        match status_field {
            None => errors.push(
                darling::Error::custom(format!(
                    "`status = \"{}\"` needs a field `status: Option<{}>` on this struct",
                    &status.0, &status.0
                ))
                .with_span(&status.span()),
            ),
            Some(f) => match syn::parse_str::<Type>(status) {
                Err(_) => errors.push(
                    darling::Error::custom("`status` must name a type, e.g. `status = \"WidgetStatus\"`")
                        .with_span(&status.span()),
                ),
                Ok(declared) => {
                    let actual = option_inner(&f.ty).unwrap_or(&f.ty);
                    if !same_type(actual, &declared) {
                        errors.push(
                            darling::Error::custom(format!(
                                "`status = \"{}\"` does not match the field `status: {}`; make them name the same type",
                                &status.0,
                                quote!(#actual).to_string().replace(' ', "")
                            ))
                            .with_span(&status.span()),
                        );
                    } else if option_inner(&f.ty).is_none() {
                        errors.push(
                            darling::Error::custom(format!(
                                "the status field must be optional so clients can create objects without it: `status: Option<{}>`",
                                &status.0
                            ))
                            .with_span(&f.ty),
                        );
                    }
                }
            },
        }
    }

    let scale = attrs.scale.as_ref().map(|scale| {
        if attrs.status.is_none() {
            errors.push(
                darling::Error::custom("`scale(...)` needs the status subresource: add `status = \"YourStatusType\"`")
                    .with_span(&scale.span()),
            );
        }
        check_path(&scale.spec, &[".spec."], "scale spec", ".spec.replicas", &mut errors);
        check_path(
            &scale.status,
            &[".status."],
            "scale status",
            ".status.replicas",
            &mut errors,
        );
        if let Some(selector) = &scale.selector {
            check_path(
                selector,
                &[".status.", ".spec."],
                "scale selector",
                ".status.selector",
                &mut errors,
            );
        }
        (
            scale.spec.to_string(),
            scale.status.to_string(),
            scale.selector.as_ref().map(|s| s.to_string()),
        )
    });

    let columns: Vec<PrintColumnAttrs> = attrs
        .printcolumn
        .into_iter()
        .map(|column| {
            let column = column.into_inner().0;
            if !COLUMN_TYPES.contains(&column.type_.as_str()) {
                errors.push(
                    darling::Error::custom(format!("printcolumn type must be one of {}", COLUMN_TYPES.join(", ")))
                        .with_span(&column.type_.span()),
                );
            }
            if let Some(format) = &column.format
                && !COLUMN_FORMATS.contains(&format.as_str())
            {
                errors.push(
                    darling::Error::custom(format!(
                        "printcolumn format must be one of {}",
                        COLUMN_FORMATS.join(", ")
                    ))
                    .with_span(&format.span()),
                );
            }
            check_path(
                &column.json_path,
                &["."],
                "printcolumn json_path",
                ".status.conditions[0].status",
                &mut errors,
            );
            if !namespaced && column.json_path.starts_with(".metadata.namespace") {
                errors.push(
                    darling::Error::custom(
                        "a `cluster` resource has no namespace: remove this column or make the resource `namespaced`",
                    )
                    .with_span(&column.json_path.span()),
                );
            }
            column
        })
        .collect();

    let selectable = attrs
        .selectable
        .iter()
        .map(|path| {
            check_path(path, &[".spec.", ".status.", ".metadata."], "selectable", ".spec.color", &mut errors);
            if !namespaced && path.starts_with(".metadata.namespace") {
                errors.push(
                    darling::Error::custom("a `cluster` resource has no namespace to select on: remove it or make the resource `namespaced`")
                        .with_span(&path.span()),
                );
            }
            path.to_string()
        })
        .collect();

    let deprecation = attrs.deprecated.map(|d| {
        d.0.unwrap_or_else(|| {
            let api_version = if group.is_empty() {
                version.clone()
            } else {
                format!("{group}/{version}")
            };
            format!("{api_version} {kind} is deprecated")
        })
    });

    errors.finish()?;
    Ok(Model {
        ident: attrs.ident,
        vis: attrs.vis,
        group,
        version,
        kind,
        plural,
        singular,
        short_names: attrs.short_names.0.iter().map(LitStr::value).collect(),
        categories: attrs.categories.0.iter().map(LitStr::value).collect(),
        namespaced,
        status: attrs.status.is_some(),
        scale,
        columns,
        selectable,
        default: attrs.default,
        validate: attrs.validate,
        validate_update: attrs.validate_update,
        storage: attrs.storage,
        deprecation,
        served: attrs.served,
        metadata_span,
        runtime: attrs.runtime.unwrap_or_else(|| syn::parse_quote!(::apiary_runtime)),
    })
}

fn option_inner(ty: &Type) -> Option<&Type> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != "Option" {
        return None;
    }
    match &last.arguments {
        syn::PathArguments::AngleBracketed(args) => match args.args.first()? {
            syn::GenericArgument::Type(t) => Some(t),
            _ => None,
        },
        _ => None,
    }
}

/// Two types are the same when their last path segments match (`a::B` names `B`).
fn same_type(a: &Type, b: &Type) -> bool {
    match (a, b) {
        (Type::Path(a), Type::Path(b)) => {
            let (a, b) = (a.path.segments.last(), b.path.segments.last());
            a.zip(b).is_some_and(|(a, b)| a.ident == b.ident)
        }
        _ => quote!(#a).to_string() == quote!(#b).to_string(),
    }
}

/// Kubernetes' plural guess (`UnsafeGuessKindToResource`): s/x/z/ch/sh → es, consonant+y → ies.
fn pluralize(singular: &str) -> String {
    if singular.ends_with('s')
        || singular.ends_with('x')
        || singular.ends_with('z')
        || singular.ends_with("ch")
        || singular.ends_with("sh")
    {
        return format!("{singular}es");
    }
    if let Some(stem) = singular.strip_suffix('y')
        && !stem.ends_with(['a', 'e', 'i', 'o', 'u'])
    {
        return format!("{stem}ies");
    }
    format!("{singular}s")
}

// ---------------------------------------------------------------- emit

fn emit(m: &Model) -> TokenStream {
    let Model {
        ident,
        vis,
        group,
        version,
        kind,
        plural,
        singular,
        ..
    } = m;
    let rt = &m.runtime;
    let api_version = if group.is_empty() {
        version.clone()
    } else {
        format!("{group}/{version}")
    };
    let scope_ty = if m.namespaced {
        quote!(#rt::__private::k8s_openapi::NamespaceResourceScope)
    } else {
        quote!(#rt::__private::k8s_openapi::ClusterResourceScope)
    };
    let scope = if m.namespaced {
        quote!(#rt::Scope::Namespaced)
    } else {
        quote!(#rt::Scope::Cluster)
    };
    let short_names = &m.short_names;
    let categories = &m.categories;
    let status = m.status;
    let scale = match &m.scale {
        Some((spec, status, selector)) => {
            let selector = match selector {
                Some(s) => quote!(Some(#s)),
                None => quote!(None),
            };
            quote!(Some(#rt::ScalePaths { spec_replicas: #spec, status_replicas: #status, label_selector: #selector }))
        }
        None => quote!(None),
    };
    let columns = m.columns.iter().map(|c| {
        let (name, ty, path, priority) = (&c.name, c.type_.as_str(), c.json_path.as_str(), c.priority);
        let description = c.description.clone().unwrap_or_default();
        let format = c.format.as_ref().map(|f| f.to_string()).unwrap_or_default();
        quote!(#rt::PrintColumn { name: #name, type_: #ty, json_path: #path, description: #description, priority: #priority, format: #format })
    });
    let selectable = &m.selectable;
    // The hooks are typed through fn pointers spanned at the user's path, so a hook with
    // the wrong signature (a `default` taking `&Self`, which could change nothing) fails there.
    let defaults = m.default.as_ref().map(|path| {
        let span = syn::spanned::Spanned::span(path);
        quote_spanned!(span=> fn apply_defaults(&mut self) {
            let hook: fn(&mut Self) = #path;
            hook(self)
        }
        fn openapi_schema() -> #rt::__private::serde_json::Value {
            let mut schema = #rt::schema::structural::<Self>(&<Self as #rt::ApiResource>::META);
            #rt::schema::defaults::published::<Self>(&mut schema);
            schema
        })
    });
    let validate = m.validate.as_ref().map(|path| {
        let span = syn::spanned::Spanned::span(path);
        quote_spanned!(span=> fn validate(&self) -> ::std::vec::Vec<#rt::FieldError> {
            let hook: fn(&Self) -> ::std::vec::Vec<#rt::FieldError> = #path;
            hook(self)
        })
    });
    let validate_update = m.validate_update.as_ref().map(|path| {
        let span = syn::spanned::Spanned::span(path);
        quote_spanned!(span=> fn validate_update(&self, old: &Self) -> ::std::vec::Vec<#rt::FieldError> {
            let hook: fn(&Self, &Self) -> ::std::vec::Vec<#rt::FieldError> = #path;
            hook(self, old)
        })
    });
    let served = m.served;
    let deprecation = match &m.deprecation {
        Some(text) => quote!(Some(#text)),
        None => quote!(None),
    };
    // A version stored as another converts through `From`/`TryFrom` both ways; the checks are
    // spanned at the `storage = ...` path, so a missing conversion or a mismatched kind fails there.
    let (storage_version, conversions, storage_checks) = match &m.storage {
        Some(path) => {
            let span = syn::spanned::Spanned::span(path);
            (
                quote!(<#path as #rt::ApiResource>::META.version),
                quote_spanned!(span=>
                    fn to_storage(object: #rt::__private::serde_json::Value) -> ::std::result::Result<#rt::__private::serde_json::Value, ::std::string::String> {
                        #rt::registry::versions::to_storage::<Self, #path>(object)
                    }
                    fn from_storage(object: #rt::__private::serde_json::Value) -> ::std::result::Result<#rt::__private::serde_json::Value, ::std::string::String> {
                        #rt::registry::versions::from_storage::<Self, #path>(object)
                    }
                ),
                quote_spanned!(span=>
                    const _: () = #rt::__private::check_storage_version(&<#ident as #rt::ApiResource>::META, &<#path as #rt::ApiResource>::META);
                ),
            )
        }
        None => (quote!(#version), quote!(), quote!()),
    };
    let list = format_ident!("{}List", ident, span = ident.span());
    let list_doc = format!("A list of [`{ident}`] (`{kind}List`, {api_version}).");
    // The deep-copy contract: the runtime clones objects between storage, watch fan-out and
    // handlers, so `Clone` is checked here with an error that names the fix.
    let deep_copy = quote::quote_spanned!(ident.span()=>
        const _: fn() = || { #rt::__private::assert_deep_copy::<#ident>(); };
    );
    let metadata_check = quote::quote_spanned!(m.metadata_span=>
        const _: fn(&#ident) -> &#rt::__private::ObjectMeta = |o| &o.metadata;
    );

    quote! {
        #deep_copy
        #metadata_check
        #storage_checks

        impl #rt::__private::kube_core::Resource for #ident {
            type DynamicType = ();
            type Scope = #scope_ty;
            fn kind(_: &()) -> ::std::borrow::Cow<'_, str> { #kind.into() }
            fn group(_: &()) -> ::std::borrow::Cow<'_, str> { #group.into() }
            fn version(_: &()) -> ::std::borrow::Cow<'_, str> { #version.into() }
            fn api_version(_: &()) -> ::std::borrow::Cow<'_, str> { #api_version.into() }
            fn plural(_: &()) -> ::std::borrow::Cow<'_, str> { #plural.into() }
            fn meta(&self) -> &#rt::__private::ObjectMeta { &self.metadata }
            fn meta_mut(&mut self) -> &mut #rt::__private::ObjectMeta { &mut self.metadata }
        }

        impl #rt::ApiResource for #ident {
            const META: #rt::ResourceMeta = #rt::ResourceMeta {
                group: #group,
                version: #version,
                kind: #kind,
                plural: #plural,
                singular: #singular,
                scope: #scope,
                short_names: &[#(#short_names),*],
                categories: &[#(#categories),*],
                status: #status,
                scale: #scale,
                columns: &[#(#columns),*],
                selectable_fields: &[#(#selectable),*],
                verbs: #rt::resource::RESOURCE_VERBS,
                storage_version: #storage_version,
                deprecation: #deprecation,
                served: #served,
            };
            #defaults
            #conversions
            #validate
            #validate_update
        }

        #[doc = #list_doc]
        #vis type #list = #rt::List<#ident>;
    }
}

/// Entry point: parse, model, emit; any error becomes `compile_error!` at its span.
pub fn derive(input: TokenStream) -> TokenStream {
    let input: DeriveInput = match syn::parse2(input) {
        Ok(input) => input,
        Err(e) => return e.to_compile_error(),
    };
    ApiAttrs::from_derive_input(&input)
        .and_then(|attrs| model(&input, attrs))
        .map(|m| emit(&m))
        .unwrap_or_else(|e| e.write_errors())
}

#[cfg(test)]
mod tests {
    use super::pluralize;

    #[test]
    fn plurals_follow_kubernetes_rules() {
        for (singular, plural) in [
            ("widget", "widgets"),
            ("policy", "policies"),
            ("gateway", "gateways"),
            ("ingress", "ingresses"),
            ("box", "boxes"),
            ("patch", "patches"),
            ("mesh", "meshes"),
            ("quiz", "quizes"),
        ] {
            assert_eq!(pluralize(singular), plural, "{singular}");
        }
    }
}
