{{ header }}
//! Typed client for {{ group_versions }}: the resource types rendered from the server's
//! OpenAPI schemas, `kube::Resource` impls (so `kube::Api<T>` works), and helpers for the
//! status and scale subresources. Enable one `k8s-openapi` version feature in your binary.

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
pub use types::*;

// Kept byte for byte as generated (`cargo xtask generate --check` compares it), so rustfmt
// leaves it alone.
#[rustfmt::skip]
mod types;
