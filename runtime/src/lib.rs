//! Apiary's runtime: serve `#[derive(ApiResource)]` types as a Kubernetes aggregated API server.
//!
//! # Start here
//!
//! One annotated type is a resource (the derive's keys: `docs/reference/api-attributes.md`), and
//! a [`Server`](server::Server) serves it with every verb, watch, status, tables, apply,
//! discovery and OpenAPI; its flags ([`ServerOptions`](server::ServerOptions)) are
//! kube-apiserver's where they exist:
//!
//! ```no_run
//! use apiary_runtime::prelude::*;
//! use apiary_runtime::server::{Server, ServerOptions};
//! use clap::Parser;
//! use schemars::JsonSchema;
//! use serde::{Deserialize, Serialize};
//!
//! /// A Gadget.
//! #[derive(ApiResource, Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
//! #[api(group = "example.com", version = "v1alpha1", kind = "Gadget", namespaced,
//!       status = "GadgetStatus", validate = one_line)]
//! pub struct Gadget {
//!     #[serde(default)]
//!     pub metadata: ObjectMeta,
//!     pub spec: GadgetSpec,
//!     #[serde(default, skip_serializing_if = "Option::is_none")]
//!     pub status: Option<GadgetStatus>,
//! }
//!
//! #[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
//! pub struct GadgetSpec {
//!     pub note: String,
//! }
//!
//! #[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
//! pub struct GadgetStatus {
//!     pub ready: bool,
//! }
//!
//! /// Checks the schema cannot express: a 422 naming the field.
//! fn one_line(gadget: &Gadget) -> Vec<FieldError> {
//!     match gadget.spec.note.contains('\n') {
//!         true => vec![FieldError::invalid("spec.note", &gadget.spec.note, "must be one line")],
//!         false => Vec::new(),
//!     }
//! }
//!
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     server: ServerOptions,
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), apiary_runtime::Error> {
//!     let cli = Cli::parse();
//!     cli.server.init_logging();
//!     Server::new(cli.server).await?.resource::<Gadget>()?.run().await
//! }
//! ```
//!
//! `cargo apiary-new` writes such a project with its tests, and `cargo xtask generate` its
//! manifests, certificates and typed client.
//!
//! # Layers
//!
//! The layers, in the order a request meets them (as k8s.io/apiserver's `pkg/`):
//!
//! | module | layer |
//! |---|---|
//! | [`server`] | flags, TLS, the accept loop; assembles everything below |
//! | [`filters`] | the handler chain: metrics and logs, audit, authentication, impersonation, authorization, in-flight limits, timeout |
//! | [`endpoints`] | the router, request info, handlers, content negotiation, watch, discovery, OpenAPI, tables |
//! | [`admission`] | the steps every write goes through besides its strategy: mutating, then (the strategy), then validating |
//! | [`registry`] | object semantics with a resource's strategy: the generic store, patch and apply, scale, custom storage |
//! | [`schema`] | structural schemas and what is evaluated against objects: validation, JSON paths, selectors |
//! | [`storage`] | a revisioned key-value store shaped like etcd (memory, embedded redb, etcd) behind the watch cache |
//!
//! Beside them: [`cel`] (CEL with cost limits, for the schema's rules and admission),
//! [`resource`] (the contract with the derive), [`status`] (errors as `Status`
//! objects, shared by every layer) and [`certs`] (local certificates).

pub mod admission;
pub mod cel;
pub mod certs;
pub mod endpoints;
mod error;
pub mod filters;
pub mod registry;
pub mod resource;
pub mod schema;
pub mod server;
pub mod status;
pub mod storage;
#[cfg(feature = "testing")]
pub mod testing;

// The paths these modules had before the layers were folders; kept so users' code builds.
pub use endpoints::{discovery, openapi};
pub use registry::{custom, rest};

pub use apiary_macros::ApiResource;
pub use error::Error;
pub use resource::{ApiResource, FieldError, List, PrintColumn, ResourceMeta, Route, ScalePaths, Scope, Target};

// The crates a project's types and controllers use with the runtime, at the versions it was
// built with, so they cannot drift (`apiary_runtime::schemars::JsonSchema`, ...).
pub use k8s_openapi;
pub use kube;
pub use schemars;
pub use serde;
pub use serde_json;

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
    pub use serde_json;

    /// The deep-copy contract: objects are cloned between storage, watchers and handlers.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` must implement `Clone`: ApiResource types are deep-copied by the runtime",
        label = "add `Clone` to this type's `#[derive(...)]`"
    )]
    pub trait DeepCopy {}
    impl<T: Clone> DeepCopy for T {}

    /// Fails to compile, naming the fix, when `T` is not `Clone`.
    pub const fn assert_deep_copy<T: DeepCopy>() {}

    const fn same(a: &str, b: &str) -> bool {
        let (a, b) = (a.as_bytes(), b.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        let mut i = 0;
        while i < a.len() {
            if a[i] != b[i] {
                return false;
            }
            i += 1;
        }
        true
    }

    /// Fails to compile when `storage` cannot store `version`: another group, kind or scope,
    /// the same version, or a version stored as yet another (a kind has one storage version).
    pub const fn check_storage_version(version: &crate::ResourceMeta, storage: &crate::ResourceMeta) {
        assert!(
            same(version.group, storage.group) && same(version.kind, storage.kind),
            "`storage = ...` must name another version of the same kind: the group and kind differ"
        );
        assert!(
            version.namespaced() == storage.namespaced(),
            "`storage = ...` names a version of another scope: every version of a kind is namespaced, or none"
        );
        assert!(
            !same(version.version, storage.version),
            "`storage = ...` names a type of the same version: give each version its own `version = \"...\"`"
        );
        assert!(
            same(storage.version, storage.storage_version),
            "`storage = ...` names a version that is itself stored as another: name the storage version (a kind has one)"
        );
    }
}

/// Check `T`'s declaration against its schema as the server will at start (structural schema,
/// scale/selectable/printcolumn paths naming real fields): for a unit test in the crate that
/// declares `T`.
pub fn check<T: ApiResource>() -> Result<(), Error> {
    registry::Admission::new(std::sync::Arc::new(registry::TypedStrategy::<T>::default()))
        .map(drop)
        .map_err(Error::declaration::<T>)
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
        0..=2 => "info",
        3 | 4 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour only on a terminal: a log file or a pipe gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
