//! A real Kubernetes control plane on this machine, with Apiary servers behind its aggregator:
//! envtest for aggregated API servers.
//!
//! [`Binaries::ensure`] builds etcd 3.6 and kube-apiserver, kube-controller-manager and kubectl
//! of one Kubernetes release from source with the machine's Go (the modules are pinned by the
//! `go.mod` files embedded in this crate) and caches them by release outside any `target/`.
//! [`Cluster::start`] runs them on free loopback ports: etcd, kube-apiserver (RBAC, client
//! certificates, service-account tokens, the front proxy, the aggregator) and
//! kube-controller-manager (the namespace, garbage-collector and service-account controllers).
//! [`Extension`] reads a server's generated deploy directory (namespace, service account, RBAC,
//! APIServices, serving certificate); [`Cluster::prepare`] applies it and gives the server the
//! flags of a delegated server, and [`Cluster::register`] points its APIServices at the server's
//! loopback port (an `ExternalName` Service, the real `caBundle`) and waits until every one is
//! `Available`.
//!
//! ```no_run
//! # async fn run() -> Result<(), apiary_cluster::Error> {
//! use std::path::Path;
//!
//! use apiary_cluster::{Binaries, Cluster, Extension, free_port};
//!
//! let binaries = Binaries::ensure()?; // built once, then cached
//! let cluster = Cluster::start(&binaries, Path::new(".apiary/cluster")).await?;
//! let extension = Extension::from_deploy_dir(Path::new("deploy"))?;
//! let flags = cluster.prepare(&extension).await?; // namespace, RBAC, token, the server's flags
//! let port = free_port()?;
//! let storage = ["--storage=embedded".to_string()];
//! let _server = cluster.serve(Path::new("target/debug/my-server"), &flags, port, &storage).await?;
//! cluster.register(&extension, port).await?; // APIServices Available
//! let client = cluster.client().await?; // kube::Client as the cluster's admin
//! # let _ = client; Ok(()) }
//! ```

mod aggregate;
mod binaries;
mod control_plane;
mod error;
mod kubeconfig;
mod pki;
mod process;

pub use aggregate::{Extension, ServerFlags, apiservice_condition};
pub use binaries::{Binaries, ETCD_RELEASE, KUBERNETES_RELEASE};
pub use control_plane::{Cluster, free_port};
pub use error::Error;
pub use process::{Process, stop_recorded};
