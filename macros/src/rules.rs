//! CEL rules the derive can see, parsed at compile time: `x-kubernetes-validations` in
//! `#[schemars(extend(...))]` on the resource type and on its fields. A `rule` or
//! `messageExpression` that does not parse is an error at its own text. Rules on other types
//! (a spec struct's fields) are out of the derive's sight: the server refuses them when the
//! resource is served, and a project's `check::<T>()` test does at `cargo test`.

use proc_macro2::{Delimiter, TokenStream, TokenTree};
use syn::{DeriveInput, LitStr};

/// The extension whose rules are checked.
const VALIDATIONS: &str = "x-kubernetes-validations";
/// The keys of a rule that hold CEL.
const CEL_KEYS: [&str; 2] = ["rule", "messageExpression"];

/// Check every rule on `input` and its fields.
pub fn check(input: &DeriveInput) -> darling::Result<()> {
    let mut errors = darling::Error::accumulator();
    let field_attrs = match &input.data {
        syn::Data::Struct(s) => s.fields.iter().flat_map(|f| f.attrs.iter()).collect(),
        _ => Vec::new(),
    };
    for attr in input.attrs.iter().chain(field_attrs) {
        if !attr.path().is_ident("schemars") {
            continue;
        }
        if let syn::Meta::List(list) = &attr.meta {
            scan(list.tokens.clone(), false, &mut |lit| {
                errors.handle(parse(lit));
            });
        }
    }
    errors.finish()
}

/// Walk `tokens`, calling `found` with each CEL string inside the validations' list.
fn scan(tokens: TokenStream, inside: bool, found: &mut dyn FnMut(&LitStr)) {
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    for (i, token) in tokens.iter().enumerate() {
        match token {
            TokenTree::Group(group) => {
                // `"x-kubernetes-validations" = [...]`: what follows is the list of rules.
                let opens_rules = group.delimiter() == Delimiter::Bracket
                    && i >= 2
                    && matches!(&tokens[i - 1], TokenTree::Punct(p) if p.as_char() == '=')
                    && string(&tokens[i - 2]).is_some_and(|s| s.value() == VALIDATIONS);
                scan(group.stream(), inside || opens_rules, found);
            }
            // `"rule": "<cel>"` inside the list.
            TokenTree::Literal(_) if inside && i >= 2 => {
                let is_key = string(&tokens[i - 2]).is_some_and(|k| CEL_KEYS.contains(&k.value().as_str()));
                let after_colon = matches!(&tokens[i - 1], TokenTree::Punct(p) if p.as_char() == ':');
                if let (true, true, Some(value)) = (is_key, after_colon, string(token)) {
                    found(&value);
                }
            }
            _ => {}
        }
    }
}

fn string(token: &TokenTree) -> Option<LitStr> {
    syn::parse2::<LitStr>(TokenStream::from(token.clone())).ok()
}

/// Parse one expression as the server will; the parser's message at the literal on failure.
fn parse(lit: &LitStr) -> darling::Result<()> {
    cel::parser::Parser::new().parse(&lit.value()).map(|_| ()).map_err(|e| {
        darling::Error::custom(format!(
            "this CEL expression does not compile, and the server would refuse to start; fix it:\n{}",
            e.to_string().trim()
        ))
        .with_span(&lit.span())
    })
}
