//! Schemas and what is evaluated against objects: the structural OpenAPI schema from
//! schemars ([`structural`](mod@structural)), its enforcement ([`validation`]), the JSON paths of printer
//! columns, scale and selectable fields ([`jsonpath`]), and label and field selectors
//! ([`selector`]).

pub mod cel;
pub mod defaults;
pub mod jsonpath;
pub mod selector;
pub mod structural;
pub mod validation;

pub use structural::*;
