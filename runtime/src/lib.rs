//! Apiary's runtime: serve `#[derive(ApiResource)]` types as a Kubernetes aggregated API server.
//!
//! Layers, as in k8s.io/apiserver: HTTP handlers ([`http`]) decode requests and negotiate
//! content; the registry ([`registry`]) applies a resource's strategy (defaults, validation,
//! status/spec split) and object semantics; storage ([`storage`]) is a revisioned key-value
//! store shaped like etcd.

pub mod audit;
pub mod authn;
pub mod authz;
pub mod certs;
pub mod custom;
pub mod discovery;
pub mod fieldset;
pub mod filters;
pub mod http;
pub mod jsonpath;
pub mod managed;
pub mod metrics;
pub mod openapi;
pub mod openapi_proto;
pub mod patch;
pub mod registry;
pub mod request_info;
pub mod resource;
pub mod rest;
pub mod schema;
pub mod selector;
pub mod server;
pub mod status;
pub mod storage;
pub mod table;
#[cfg(feature = "testing")]
pub mod testing;
pub mod ttl_cache;
pub mod validation;

pub use apiary_macros::ApiResource;
pub use resource::{ApiResource, FieldError, List, PrintColumn, ResourceMeta, Route, ScalePaths, Scope, Target};

/// What an API types crate needs in scope.
pub mod prelude {
    pub use crate::{ApiResource, FieldError};
    pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
}

/// Used by the derive's generated code; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use k8s_openapi;
    pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    pub use kube_core;

    /// The deep-copy contract: objects are cloned between storage, watchers and handlers.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` must implement `Clone`: ApiResource types are deep-copied by the runtime",
        label = "add `Clone` to this type's `#[derive(...)]`"
    )]
    pub trait DeepCopy {}
    impl<T: Clone> DeepCopy for T {}

    /// Fails to compile, naming the fix, when `T` is not `Clone`.
    pub const fn assert_deep_copy<T: DeepCopy>() {}
}

/// Items of `stream` up to and including the first for which `last` holds; then it ends
/// at once (unlike `scan`/`take_while`, which wait for one more item to decide).
pub fn take_through<S: futures::Stream + Send + 'static>(
    stream: S,
    last: impl Fn(&S::Item) -> bool + Send + 'static,
) -> impl futures::Stream<Item = S::Item> + Send + 'static
where
    S::Item: Send,
{
    use futures::StreamExt;
    futures::stream::unfold((Box::pin(stream), false, last), |(mut stream, done, last)| async move {
        if done {
            return None;
        }
        let item = stream.next().await?;
        let done = last(&item);
        Some((item, (stream, done, last)))
    })
}

/// Log to stderr through `tracing` at `-v` verbosity (`RUST_LOG` overrides), as text or JSON.
pub fn init_logging(format: LogFormat, verbosity: u8) {
    let level = match verbosity {
        0 | 1 => "info",
        2..=4 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// `--log-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}
