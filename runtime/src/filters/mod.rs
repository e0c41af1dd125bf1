//! The handler chain's filters, as k8s.io/apiserver's `server/filters/`: each an async
//! function of the request and the rest of the chain, run outermost first by [`FilterChain`]
//! as [`instrument`] (audit ID, metrics, log line), [`identify`] (authentication,
//! impersonation), [`audit`](fn@audit), [`authorize`] (authorization, then the in-flight
//! limits and the timeout, [`limits::bounded`]).
//!
//! - [`access`]: the authentication, impersonation and authorization filters; the decisions
//!   themselves are [`authn`] (request-header, client certificates, TokenReview), with [`x509`] for certificate chains, and [`authz`]
//!   (SubjectAccessReview), with [`ttl_cache`] for both.
//! - [`observe`]: metrics and the request log ([`metrics`]), the audit log ([`audit`](mod@audit)).
//! - [`limits`]: max-in-flight and the request timeout.

pub mod access;
pub mod audit;
mod audit_file;
pub mod authn;
pub mod authz;
pub mod chain;
pub mod limits;
pub mod metrics;
pub mod observe;
pub mod ttl_cache;
pub mod x509;

pub use access::{AuthorizeMore, Guard, Impersonator, Loopback, authorize, identify};
pub use chain::{FilterChain, Filters};
pub use limits::{Bounds, InFlight};
pub use observe::{AuditId, RemoteAddr, audit, instrument};
