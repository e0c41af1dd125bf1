{{ header }}
//! Typed client for {{ group_versions }}: the resource types rendered from the server's
//! OpenAPI schemas, `kube::Resource` impls (so `kube::Api<T>` works), and helpers for the
//! status and scale subresources. Enable one `k8s-openapi` version feature in your binary.
#![allow(clippy::derive_partial_eq_without_eq)]

use std::borrow::Cow;

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
{{ types }}
