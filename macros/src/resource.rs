//! `#[derive(ApiResource)]` in three stages: parse `#[api(...)]` (darling) → a checked
//! [`Model`] → emitted impls. Every check reports at the user's span and says how to fix it.

use darling::util::{Flag, SpannedValue};
use darling::{FromDeriveInput, FromMeta, ast::NestedMeta};
use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote};
use syn::{Data, DeriveInput, Fields, LitStr, Type};

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
    kind: Option<String>,
    plural: Option<SpannedValue<String>>,
    singular: Option<SpannedValue<String>>,
    #[darling(default)]
    short_names: StrList,
    #[darling(default)]
    categories: StrList,
    namespaced: Flag,
    cluster: Flag,
    status: Option<SpannedValue<String>>,
    scale: Option<SpannedValue<ScaleAttrs>>,
    #[darling(multiple)]
    printcolumn: Vec<SpannedValue<PrintColumnAttrs>>,
    #[darling(multiple)]
    selectable: Vec<SpannedValue<String>>,
    default: Option<syn::Path>,
    validate: Option<syn::Path>,
}

/// `scale(spec = "...", status = "...", selector = "...")`.
#[derive(FromMeta)]
struct ScaleAttrs {
    spec: SpannedValue<String>,
    status: SpannedValue<String>,
    selector: Option<SpannedValue<String>>,
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

/// `key("a", "b")`: a list of string literals.
#[derive(Default)]
struct StrList(Vec<LitStr>);

impl FromMeta for StrList {
    fn from_list(items: &[NestedMeta]) -> darling::Result<Self> {
        items
            .iter()
            .map(|item| match item {
                NestedMeta::Lit(syn::Lit::Str(s)) => Ok(s.clone()),
                other => {
                    Err(darling::Error::custom("expected a string literal, e.g. (\"w\", \"wd\")").with_span(other))
                }
            })
            .collect::<darling::Result<_>>()
            .map(StrList)
    }
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
    metadata_span: Span,
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

    let kind = attrs.kind.clone().unwrap_or_else(|| attrs.ident.to_string());
    let plural = match &attrs.plural {
        Some(p) => check_lower(p, "plural", &mut errors),
        None => pluralize(&kind.to_lowercase()),
    };
    let singular = match &attrs.singular {
        Some(s) => check_lower(s, "singular", &mut errors),
        None => kind.to_lowercase(),
    };

    if attrs.namespaced.is_present() && attrs.cluster.is_present() {
        errors.push(
            darling::Error::custom("a resource is either `namespaced` or `cluster`, not both; remove one")
                .with_span(&attrs.cluster.span()),
        );
    }
    let namespaced = !attrs.cluster.is_present();

    // The status subresource: the attribute and the field must agree.
    let status_field = field("status");
    if let Some(status) = &attrs.status {
        match status_field {
            None => errors.push(
                darling::Error::custom(format!(
                    "`status = \"{}\"` needs a field `status: Option<{}>` on this struct",
                    status.as_str(),
                    status.as_str()
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
                                status.as_str(),
                                quote!(#actual).to_string().replace(' ', "")
                            ))
                            .with_span(&status.span()),
                        );
                    } else if option_inner(&f.ty).is_none() {
                        errors.push(
                            darling::Error::custom(format!(
                                "the status field must be optional so clients can create objects without it: `status: Option<{}>`",
                                status.as_str()
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
            let column = column.into_inner();
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
        metadata_span,
    })
}

fn is_dns_label_like(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

fn check_lower(value: &SpannedValue<String>, key: &str, errors: &mut darling::error::Accumulator) -> String {
    if value.is_empty() || !value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        errors.push(
            darling::Error::custom(format!("`{key}` must be lowercase letters and digits, e.g. `widgets`"))
                .with_span(&value.span()),
        );
    }
    value.to_string()
}

/// A JSON path as CRDs take them: `.a.b`, `.a[0].b`, `.a[?(@.type=="Ready")].status`.
fn check_path(
    path: &SpannedValue<String>,
    prefixes: &[&str],
    what: &str,
    example: &str,
    errors: &mut darling::error::Accumulator,
) {
    let ok_prefix = prefixes.iter().any(|p| path.starts_with(p));
    let mut depth = 0i32;
    let mut last_dot = false;
    let mut ok_chars = true;
    for c in path.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            '.' if depth == 0 && last_dot => ok_chars = false,
            '.' if depth == 0 => {}
            c if depth == 0 && !(c.is_ascii_alphanumeric() || c == '_' || c == '-') => ok_chars = false,
            _ => {}
        }
        if depth < 0 {
            ok_chars = false;
        }
        last_dot = c == '.' && depth == 0;
    }
    if !ok_prefix || !ok_chars || depth != 0 || last_dot || path.len() <= 1 {
        errors.push(
            darling::Error::custom(format!(
                "{what} must be a JSON path starting with {}, e.g. `{example}`",
                prefixes
                    .iter()
                    .map(|p| format!("`{p}`"))
                    .collect::<Vec<_>>()
                    .join(" or "),
            ))
            .with_span(&path.span()),
        );
    }
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
    let rt = quote!(::apiary_runtime);
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
    let defaults = m
        .default
        .as_ref()
        .map(|path| quote!(fn apply_defaults(&mut self) { #path(self) }));
    let validate = m
        .validate
        .as_ref()
        .map(|path| quote!(fn validate(&self) -> ::std::vec::Vec<#rt::FieldError> { #path(self) }));
    let list = format_ident!("{}List", kind.as_str(), span = ident.span());
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
            };
            #defaults
            #validate
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
