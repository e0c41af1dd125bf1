{{ header }}
//! Typed client for {{ group_versions }}: the resource types rendered from the server's
//! OpenAPI schemas, a module per API version, `kube::Resource` impls (so `kube::Api<T>`
//! works), and helpers for the status and scale subresources. The crate root has each
//! group's preferred version. Enable one `k8s-openapi` version feature in your binary.

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
{%- for v in preferred %}
pub use {{ v }}::*;
{%- endfor %}

// The modules are kept byte for byte as generated (`cargo xtask generate --check` compares
// them), so rustfmt leaves them alone.
{%- for v in modules %}
#[rustfmt::skip]
pub mod {{ v }};
{%- endfor %}
