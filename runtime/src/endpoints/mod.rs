//! The HTTP layer, as k8s.io/apiserver's `endpoints/`: what turns a request into a call on a
//! resource's store and its answer back into bytes.
//!
//! - [`router`]: the router built from the resources' route tables, plus discovery, OpenAPI,
//!   health and version routes, over the shared [`Api`] state.
//! - [`request_info`]: what a request asks for, in authorization terms (verb, resource, name).
//! - [`handlers`]: one entry point per resource route, dispatching on the verb to [`Rest`](crate::registry::rest::Rest).
//! - [`params`]: query parameters and option bodies parsed into the registry's options.
//! - [`negotiation`]: Accept and Content-Type: JSON, YAML, Table; bounded body reads;
//!   [`json_body`]: JSON bodies decoded with their duplicate fields found.
//! - [`encoded`]: GETs and streamed lists written from objects encoded once per revision.
//! - [`watch`]: chunked watch streams with bookmarks and initial events.
//! - [`discovery`], [`openapi`] and [`openapi_proto`]: the documents clients read first.
//! - [`table`]: `meta.k8s.io/v1 Table` for `kubectl get`.

pub mod discovery;
pub mod encoded;
pub mod handlers;
pub mod json_body;
pub mod negotiation;
pub mod openapi;
pub mod openapi_proto;
pub mod params;
pub mod request_info;
pub mod router;
pub mod table;
pub mod watch;

pub use negotiation::{MAX_BODY, error_response};
pub use router::Api;
pub use watch::{MAX_WATCH, Watching};
