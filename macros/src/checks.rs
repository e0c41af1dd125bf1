//! What the derive checks beyond the grammar: names and paths, and the kube-rs spellings
//! users bring along, each answered with the right form.

use darling::util::SpannedValue;
use darling::{FromMeta, ast::NestedMeta};
use syn::LitStr;

/// `key("a", "b")`: a list of string literals.
#[derive(Default)]
pub struct StrList(pub Vec<LitStr>);

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

    fn from_string(value: &str) -> darling::Result<Self> {
        Err(Self::string_form(value))
    }
}

impl StrList {
    /// `short_names = "x"` is kube-rs's spelling; say the list form.
    fn string_form(value: &str) -> darling::Error {
        darling::Error::custom(format!(
            "write a list in parentheses, e.g. `short_names(\"{value}\")` or `categories(\"{value}\")`"
        ))
    }
}

/// `namespaced` or `cluster`: a word; kube-rs's `namespaced = false` gets the right form.
#[derive(Default)]
pub struct Scope(pub bool);

impl FromMeta for Scope {
    fn from_word() -> darling::Result<Self> {
        Ok(Scope(true))
    }

    fn from_bool(value: bool) -> darling::Result<Self> {
        Err(darling::Error::custom(if value {
            "write the word alone: `namespaced` or `cluster`"
        } else {
            "`namespaced = false` is kube-rs's spelling: write `cluster` for a cluster-scoped resource (or `namespaced`)"
        }))
    }
}

/// A type named as a string (`status = "WidgetStatus"`); a bare path gets the string form.
pub struct TypeName(pub String);

impl FromMeta for TypeName {
    fn from_string(value: &str) -> darling::Result<Self> {
        Ok(TypeName(value.to_string()))
    }

    fn from_expr(expr: &syn::Expr) -> darling::Result<Self> {
        match expr {
            syn::Expr::Lit(lit) => Self::from_value(&lit.lit),
            syn::Expr::Path(path) => {
                let name = quote::quote!(#path).to_string().replace(' ', "");
                Err(
                    darling::Error::custom(format!("write the type as a string: `status = \"{name}\"`"))
                        .with_span(expr),
                )
            }
            other => Err(darling::Error::unexpected_expr_type(other)),
        }
    }
}

impl std::ops::Deref for TypeName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

pub fn is_dns_label_like(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

pub fn check_lower(value: &SpannedValue<String>, key: &str, errors: &mut darling::error::Accumulator) -> String {
    if value.is_empty() || !value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        errors.push(
            darling::Error::custom(format!("`{key}` must be lowercase letters and digits, e.g. `widgets`"))
                .with_span(&value.span()),
        );
    }
    value.to_string()
}

/// A JSON path as CRDs take them: `.a.b`, `.a[0].b`, `.a[?(@.type=="Ready")].status`.
pub fn check_path(
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

/// A Kubernetes API version: `v1`, `v2beta1`, `v1alpha3`.
pub fn is_api_version(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('v') else { return false };
    let digits = |t: &str| !t.is_empty() && !t.starts_with('0') && t.chars().all(|c| c.is_ascii_digit());
    let (major, level) = match rest.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    digits(major)
        && (level.is_empty()
            || ["alpha", "beta"]
                .iter()
                .any(|l| level.strip_prefix(l).is_some_and(digits)))
}

/// A kind: UpperCamelCase letters and digits (`Widget`, `WidgetPolicy`).
pub fn is_kind(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_uppercase()) && s.chars().all(|c| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_kinds_follow_kubernetes() {
        for good in ["v1", "v2", "v1beta1", "v10alpha2"] {
            assert!(is_api_version(good), "{good}");
        }
        for bad in ["1", "v0", "v01", "1alpha", "v1alpha", "v1gamma1", "v1beta0", "V1"] {
            assert!(!is_api_version(bad), "{bad}");
        }
        assert!(is_kind("WidgetPolicy") && !is_kind("widget") && !is_kind("Widget-Policy"));
    }
}
