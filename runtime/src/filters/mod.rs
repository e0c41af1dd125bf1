//! The handler chain's filters, as k8s.io/apiserver's `server/filters/`: each an axum
//! middleware over shared state, wrapped around the router outermost first as
//! [`instrument`] (audit ID, metrics, log line), [`audit`](fn@audit), [`authenticate`], [`impersonate`],
//! [`authorize`], [`max_in_flight`], [`timeout`].
//!
//! - [`access`]: the authentication, impersonation and authorization filters; the decisions
//!   themselves are [`authn`] (request-header, client certificates, TokenReview), with [`x509`] for certificate chains, and [`authz`]
//!   (SubjectAccessReview), with [`ttl_cache`] for both.
//! - [`observe`]: metrics and the request log ([`metrics`]), the audit log ([`audit`](mod@audit)).
//! - [`limits`]: max-in-flight and the request timeout.

pub mod access;
pub mod audit;
pub mod authn;
pub mod authz;
pub mod limits;
pub mod metrics;
pub mod observe;
pub mod ttl_cache;
pub mod x509;

pub use access::{AuthorizeMore, Guard, Impersonator, Loopback, authenticate, authorize, impersonate};
pub use limits::{InFlight, max_in_flight, timeout};
pub use observe::{AuditId, RemoteAddr, audit, instrument};
