//! The server, as k8s.io/apiserver's `server/`: [`options`] (the flags), [`run`] (resources,
//! storage, the filter chain around the router, the accept loop and graceful shutdown),
//! [`connections`] (the connection limit, idle and header timeouts, the open-file limit) and
//! [`tls`] (serving certificates, reloaded when their files change).

pub mod connections;
pub mod leader;
pub mod options;
pub mod run;
pub mod tls;

pub use leader::Leadership;
pub use options::{ServerOptions, StorageKind};
pub use run::{GIT_VERSION, Server};
