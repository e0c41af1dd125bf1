//! The server: flags in the genericapiserver style, storage selection, TLS with client
//! certificates, and the accept loop (HTTP/1.1 and HTTP/2).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::custom::{CustomStorage, CustomStore};
use crate::http::{Api, error_response};
use crate::registry::{Store, TypedStrategy};
use crate::resource::ApiResource;
use crate::rest::Rest;
use crate::status::ApiError;
use crate::storage::{self, Storage, WatchCache};

/// Longest TLS handshake before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which storage backend to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StorageKind {
    /// In memory; lost on exit.
    Memory,
    /// One redb file under `--data-dir`; survives restarts.
    Embedded,
    /// etcd at `--etcd-servers`: for clusters and more than one replica.
    Etcd,
}

/// Command-line flags shared by every Apiary server.
#[derive(Clone, Debug, clap::Args)]
pub struct ServerOptions {
    /// Port to serve HTTPS on.
    #[arg(long, default_value_t = 8443)]
    pub secure_port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_address: IpAddr,
    /// Where generated certificates and the admin kubeconfig live (used unless --tls-cert-file is given).
    #[arg(long, default_value = ".apiary/certs")]
    pub cert_dir: PathBuf,
    /// Serving certificate (PEM); with --tls-private-key-file, replaces the generated one.
    #[arg(long, requires = "tls_private_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// Serving key (PEM).
    #[arg(long, requires = "tls_cert_file")]
    pub tls_private_key_file: Option<PathBuf>,
    /// CA that signs client certificates (CN = user, O = groups); default: the generated CA.
    #[arg(long)]
    pub client_ca_file: Option<PathBuf>,
    /// Storage backend.
    #[arg(long, value_enum, default_value_t = StorageKind::Embedded)]
    pub storage: StorageKind,
    /// Directory of the embedded store.
    #[arg(long, default_value = ".apiary/data")]
    pub data_dir: PathBuf,
    /// Key prefix of every object in storage.
    #[arg(long, default_value = "/registry")]
    pub etcd_prefix: String,
    /// etcd endpoints (comma-separated), with `--storage etcd`.
    #[arg(long, value_delimiter = ',')]
    pub etcd_servers: Vec<String>,
    /// CA bundle for etcd's serving certificates.
    #[arg(long)]
    pub etcd_cafile: Option<PathBuf>,
    /// Client certificate for etcd.
    #[arg(long, requires = "etcd_keyfile")]
    pub etcd_certfile: Option<PathBuf>,
    /// Client key for etcd.
    #[arg(long, requires = "etcd_certfile")]
    pub etcd_keyfile: Option<PathBuf>,
    /// Events the watch cache keeps per resource for watchers to resume from.
    #[arg(long, default_value_t = storage::cache::WINDOW)]
    pub watch_cache_size: usize,
    /// Extra names for the generated serving certificate (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub tls_sans: Vec<String>,
}

/// Who made a request, from a verified client certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    /// The user name (certificate CN).
    pub name: String,
    /// Groups (certificate O), plus `system:authenticated`.
    pub groups: Vec<String>,
}

/// A server being assembled: resources and storage.
pub struct Server {
    options: ServerOptions,
    storage: Arc<WatchCache>,
    /// Every served resource, in registration order.
    resources: Vec<Arc<dyn Rest>>,
    /// The key-value stores among them, for in-process controllers.
    stores: Vec<Arc<Store>>,
}

impl Server {
    /// Open the storage the options name.
    pub async fn new(options: ServerOptions) -> Result<Self, String> {
        let storage: Arc<dyn Storage> = match options.storage {
            StorageKind::Memory => storage::memory(),
            StorageKind::Embedded => {
                storage::embedded(&options.data_dir.join("apiary.redb")).map_err(|e| e.to_string())?
            }
            StorageKind::Etcd => etcd_storage(&options).await?,
        };
        Ok(Server {
            storage: WatchCache::new(storage, options.watch_cache_size),
            options,
            resources: Vec::new(),
            stores: Vec::new(),
        })
    }

    /// Serve `T`.
    pub fn resource<T: ApiResource>(mut self) -> Result<Self, String> {
        let store = Store::new(
            Arc::new(TypedStrategy::<T>::default()),
            self.storage.clone(),
            &self.options.etcd_prefix,
        )?;
        let store = Arc::new(store);
        self.resources.push(store.clone());
        self.stores.push(store);
        Ok(self)
    }

    /// Serve `T` from user code instead of the key-value store.
    pub fn custom<T: ApiResource, S: CustomStorage<T>>(mut self, storage: S) -> Result<Self, String> {
        self.resources.push(Arc::new(CustomStore::<T, S>::new(storage)?));
        Ok(self)
    }

    /// The registry of `T`, for in-process controllers (e.g. to write status).
    pub fn store<T: ApiResource>(&self) -> Option<Arc<Store>> {
        self.stores.iter().find(|s| *s.meta() == T::META).cloned()
    }

    /// Bind, print how to reach the server, and serve until the process ends.
    pub async fn run(self) -> Result<(), String> {
        let addr = SocketAddr::new(self.options.bind_address, self.options.secure_port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("listen on {addr}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        let (tls, kubeconfig) = tls_config(&self.options, local)?;
        let version = json!({
            "major": "1", "minor": "33", "gitVersion": concat!("v", env!("CARGO_PKG_VERSION")),
            "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
        });
        let example = self
            .resources
            .first()
            .map_or("api-resources".to_string(), |s| format!("get {}", s.meta().plural));
        let api = Api::new(self.resources, version);
        let router = api.router().layer(middleware::from_fn(authenticate));
        match kubeconfig {
            Some(path) => println!(
                "Serving on https://{local}; use it with: kubectl --kubeconfig {} {example}",
                path.display()
            ),
            None => println!("Serving on https://{local}"),
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        loop {
            let (tcp, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let router = router.clone();
            tokio::spawn(async move {
                let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await else {
                    return;
                };
                let user = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(user_from_cert);
                let service = hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
                    if let Some(user) = &user {
                        request.extensions_mut().insert(user.clone());
                    }
                    router.clone().oneshot(request.map(axum::body::Body::new))
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                if let Err(e) = builder.serve_connection(TokioIo::new(tls), service).await {
                    tracing::debug!("connection ended: {e}");
                }
            });
        }
    }
}

#[cfg(feature = "etcd")]
async fn etcd_storage(options: &ServerOptions) -> Result<Arc<dyn Storage>, String> {
    let config = storage::etcd::EtcdConfig {
        endpoints: options.etcd_servers.clone(),
        ca_file: options.etcd_cafile.clone(),
        cert_file: options.etcd_certfile.clone(),
        key_file: options.etcd_keyfile.clone(),
    };
    Ok(Arc::new(
        storage::etcd::Etcd::connect(&config).await.map_err(|e| e.to_string())?,
    ))
}

#[cfg(not(feature = "etcd"))]
async fn etcd_storage(_: &ServerOptions) -> Result<Arc<dyn Storage>, String> {
    Err("this server was built without etcd support: rebuild it with `--features etcd`".into())
}

/// The rustls config and, when certificates were generated, the admin kubeconfig's path.
fn tls_config(options: &ServerOptions, local: SocketAddr) -> Result<(rustls::ServerConfig, Option<PathBuf>), String> {
    let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let (cert, key, client_ca, kubeconfig) = match (&options.tls_cert_file, &options.tls_private_key_file) {
        (Some(cert), Some(key)) => (read(cert)?, read(key)?, None, None),
        _ => {
            let mut sans = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
            sans.extend(options.tls_sans.iter().cloned());
            if !local.ip().is_unspecified() && !sans.contains(&local.ip().to_string()) {
                sans.push(local.ip().to_string());
            }
            let host = if local.ip().is_unspecified() {
                "127.0.0.1".to_string()
            } else {
                local.ip().to_string()
            };
            let host = if host.contains(':') { format!("[{host}]") } else { host };
            let certs =
                crate::certs::ensure_local(&options.cert_dir, &sans, &format!("https://{host}:{}", local.port()))?;
            (
                read(&certs.serving_cert)?,
                read(&certs.serving_key)?,
                Some(read(&certs.ca_cert)?),
                Some(certs.kubeconfig),
            )
        }
    };
    let client_ca = match &options.client_ca_file {
        Some(path) => Some(read(path)?),
        None => client_ca,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("serving certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| format!("serving key: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&ca) {
                roots
                    .add(c.map_err(|e| format!("client CA: {e}"))?)
                    .map_err(|e| format!("client CA: {e}"))?;
            }
            // Unauthenticated connections are allowed at the TLS layer and get 401 above it.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| e.to_string())?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("serving certificate: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((config, kubeconfig))
}

fn user_from_cert(cert: &CertificateDer<'_>) -> Option<UserInfo> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = parsed.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?.to_string();
    let mut groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    groups.push("system:authenticated".into());
    Some(UserInfo { name, groups })
}

/// Health checks and /version are open; everything else needs an authenticated user.
async fn authenticate(request: Request, next: Next) -> Response {
    let open = matches!(request.uri().path(), "/healthz" | "/livez" | "/readyz" | "/version");
    if !open && request.extensions().get::<UserInfo>().is_none() {
        return error_response(&ApiError::new(401, "Unauthorized", "Unauthorized"));
    }
    next.run(request).await
}
