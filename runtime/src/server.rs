//! The server: flags in the genericapiserver style, storage selection, TLS with client
//! certificates, and the accept loop (HTTP/1.1 and HTTP/2).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::middleware;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::audit::{AuditLog, Policy, Rotation};
use crate::authn::{self, AnyClientCertificate, Authenticator, FlagsSet, PeerCertificates, RequestHeader, Trust};
use crate::authz::{AuthorizationMode, Authorizer};
use crate::filters::{self, Guard, InFlight, RemoteAddr};
use crate::metrics::{InstrumentedStorage, Metrics};

use crate::custom::{CustomStorage, CustomStore};
use crate::http::{Api, Watching};
use crate::registry::{Store, TypedStrategy};
use crate::resource::ApiResource;
use crate::rest::Rest;
use crate::storage::{self, Storage, WatchCache};

/// The version `/version` reports and the OpenAPI documents carry.
pub const GIT_VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"));

/// Longest TLS handshake before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the core API (TokenReview, SubjectAccessReview, ConfigMap).
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of request headers.
const MAX_HEADERS: usize = 64 * 1024;

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
    /// Seconds between the bookmarks of a watch that allows them.
    #[arg(long, default_value_t = 60)]
    pub watch_bookmark_interval: u64,
    /// Events the watch cache keeps per resource for watchers to resume from.
    #[arg(long, default_value_t = storage::cache::WINDOW)]
    pub watch_cache_size: usize,
    /// Extra names for the generated serving certificate (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub tls_sans: Vec<String>,

    /// CA that signs the front proxy's (the aggregator's) client certificate; default: from
    /// the kube-system/extension-apiserver-authentication ConfigMap when the core API is reachable.
    #[arg(long)]
    pub requestheader_client_ca_file: Option<PathBuf>,
    /// Common names the front-proxy certificate may have (comma-separated; empty: any).
    #[arg(long, value_delimiter = ',')]
    pub requestheader_allowed_names: Vec<String>,
    /// Headers naming the user in proxied requests.
    #[arg(long, value_delimiter = ',', default_value = "X-Remote-User")]
    pub requestheader_username_headers: Vec<String>,
    /// Headers naming the user's UID in proxied requests.
    #[arg(long, value_delimiter = ',', default_value = "X-Remote-Uid")]
    pub requestheader_uid_headers: Vec<String>,
    /// Headers naming the groups in proxied requests.
    #[arg(long, value_delimiter = ',', default_value = "X-Remote-Group")]
    pub requestheader_group_headers: Vec<String>,
    /// Prefixes of headers carrying extra user attributes in proxied requests.
    #[arg(long, value_delimiter = ',', default_value = "X-Remote-Extra-")]
    pub requestheader_extra_headers_prefix: Vec<String>,
    /// kubeconfig for TokenReview and the authentication ConfigMap (default: in-cluster, if in a pod).
    #[arg(long)]
    pub authentication_kubeconfig: Option<PathBuf>,
    /// How long token reviews are cached (seconds).
    #[arg(long, default_value_t = 10)]
    pub authentication_token_webhook_cache_ttl: u64,
    /// How often the authentication ConfigMap is re-read (seconds).
    #[arg(long, default_value_t = 10)]
    pub authentication_config_poll_interval: u64,
    /// Let requests without credentials in as system:anonymous (they still need authorization).
    #[arg(long)]
    pub anonymous_auth: bool,
    /// Authorization: Delegated (SubjectAccessReview) or, for local development only, AlwaysAllow.
    #[arg(long, value_enum, default_value_t = AuthorizationMode::Delegated)]
    pub authorization_mode: AuthorizationMode,
    /// kubeconfig for SubjectAccessReview (default: in-cluster, if in a pod).
    #[arg(long)]
    pub authorization_kubeconfig: Option<PathBuf>,
    /// How long allowed decisions are cached (seconds).
    #[arg(long, default_value_t = 10)]
    pub authorization_webhook_cache_authorized_ttl: u64,
    /// How long denied decisions are cached (seconds).
    #[arg(long, default_value_t = 10)]
    pub authorization_webhook_cache_unauthorized_ttl: u64,

    /// Longest time a request (other than a watch) may take (seconds).
    #[arg(long, default_value_t = 60)]
    pub request_timeout: u64,
    /// Most non-mutating requests in flight (watches excepted); more get 429.
    #[arg(long, default_value_t = 400)]
    pub max_requests_inflight: usize,
    /// Most mutating requests in flight; more get 429.
    #[arg(long, default_value_t = 200)]
    pub max_mutating_requests_inflight: usize,
    /// How long shutdown waits for in-flight requests to finish (seconds).
    #[arg(long, default_value_t = 30)]
    pub shutdown_timeout: u64,

    /// Write audit events (one JSON line each) to this file; no audit log when unset.
    #[arg(long)]
    pub audit_log_path: Option<PathBuf>,
    /// The audit.k8s.io/v1 Policy deciding what is audited (required with --audit-log-path).
    #[arg(long, requires = "audit_log_path")]
    pub audit_policy_file: Option<PathBuf>,
    /// Rotate the audit log when it reaches this many megabytes (0: never).
    #[arg(long, default_value_t = 100)]
    pub audit_log_maxsize: u64,
    /// Rotated audit logs to keep (0: all).
    #[arg(long, default_value_t = 10)]
    pub audit_log_maxbackup: usize,
    /// Days to keep rotated audit logs (0: forever).
    #[arg(long, default_value_t = 0)]
    pub audit_log_maxage: u64,

    /// Log format: text or json.
    #[arg(long, value_enum, default_value_t = crate::LogFormat::Text)]
    pub log_format: crate::LogFormat,
    /// Log verbosity as kube-apiserver's -v (0-1 info, 2-4 debug, 5+ trace); RUST_LOG overrides it.
    #[arg(short = 'v', long = "v", default_value_t = 0)]
    pub verbosity: u8,
}

/// A server being assembled: resources and storage.
pub struct Server {
    options: ServerOptions,
    storage: Arc<WatchCache>,
    metrics: Arc<Metrics>,
    /// Every served resource, in registration order.
    resources: Vec<Arc<dyn Rest>>,
    /// The key-value stores among them, for in-process controllers.
    stores: Vec<Arc<Store>>,
}

impl Server {
    /// Open the storage the options name.
    pub async fn new(options: ServerOptions) -> Result<Self, String> {
        crate::init_logging(options.log_format, options.verbosity);
        let metrics = Metrics::new();
        let storage: Arc<dyn Storage> = match options.storage {
            StorageKind::Memory => storage::memory(),
            StorageKind::Embedded => {
                storage::embedded(&options.data_dir.join("apiary.redb")).map_err(|e| e.to_string())?
            }
            StorageKind::Etcd => etcd_storage(&options).await?,
        };
        let backend = match options.storage {
            StorageKind::Memory => "memory",
            StorageKind::Embedded => "embedded",
            StorageKind::Etcd => "etcd",
        };
        let storage = Arc::new(InstrumentedStorage::new(storage, backend, metrics.clone()));
        Ok(Server {
            storage: WatchCache::new(storage, options.watch_cache_size),
            metrics,
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
        self.metrics.serve(store.meta());
        self.resources.push(store.clone());
        self.stores.push(store);
        Ok(self)
    }

    /// Serve `T` from user code instead of the key-value store.
    pub fn custom<T: ApiResource, S: CustomStorage<T>>(mut self, storage: S) -> Result<Self, String> {
        let store = CustomStore::<T, S>::new(storage)?;
        self.metrics.serve(Rest::meta(&store));
        self.resources.push(Arc::new(store));
        Ok(self)
    }

    /// The registry of `T`, for in-process controllers (e.g. to write status).
    pub fn store<T: ApiResource>(&self) -> Option<Arc<Store>> {
        self.stores.iter().find(|s| *s.meta() == T::META).cloned()
    }

    /// Bind, print how to reach the server, and serve until SIGTERM or Ctrl-C; then stop
    /// accepting, end watches, and let in-flight requests finish (within `--shutdown-timeout`).
    pub async fn run(self) -> Result<(), String> {
        let options = self.options;
        let addr = SocketAddr::new(options.bind_address, options.secure_port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("listen on {addr}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        let serving = serving_files(&options, local)?;
        let tls = tls_config(&serving)?;
        let guard = Arc::new(guard(&options, serving.local_ca.as_deref()).await?);
        let version = json!({
            "major": "1", "minor": "33", "gitVersion": GIT_VERSION,
            "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
        });
        let example = self
            .resources
            .first()
            .map_or("api-resources".to_string(), |s| format!("get {}", s.meta().plural));
        let (shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
        let audit = match &options.audit_log_path {
            Some(path) => {
                let policy = match &options.audit_policy_file {
                    Some(p) => Policy::load(p)?,
                    None => return Err("--audit-log-path needs --audit-policy-file".into()),
                };
                let rotation = Rotation {
                    max_bytes: options.audit_log_maxsize * 1024 * 1024,
                    max_backups: options.audit_log_maxbackup,
                    max_age: Duration::from_secs(options.audit_log_maxage * 24 * 3600),
                };
                Some(Arc::new(AuditLog::open(path, policy, rotation)?))
            }
            None => None,
        };
        let metrics = self.metrics.clone();
        let resources = self.resources.clone();
        let api = Api::new(self.resources, version);
        let in_flight = Arc::new(InFlight {
            reads: Semaphore::new(options.max_requests_inflight.max(1)),
            writes: Semaphore::new(options.max_mutating_requests_inflight.max(1)),
        });
        let scrape = metrics.clone();
        let router = api
            .router()
            .route(
                "/metrics",
                axum::routing::get(move || async move {
                    for r in &resources {
                        if let Some(count) = r.count().await {
                            scrape.set_objects(r.meta(), count);
                        }
                    }
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        scrape.render(),
                    )
                }),
            )
            .layer(middleware::from_fn_with_state(
                Duration::from_secs(options.request_timeout.max(1)),
                filters::timeout,
            ))
            .layer(middleware::from_fn_with_state(in_flight, filters::max_in_flight))
            .layer(middleware::from_fn_with_state(guard.clone(), filters::authorize));
        let router = match audit {
            Some(log) => router.layer(middleware::from_fn_with_state(log, filters::audit)),
            None => router,
        };
        let router = router
            .layer(middleware::from_fn_with_state(guard.clone(), filters::impersonate))
            .layer(middleware::from_fn_with_state(guard, filters::authenticate))
            .layer(middleware::from_fn_with_state(metrics, filters::instrument));
        match serving.kubeconfig {
            Some(path) => println!(
                "Serving on https://{local}; use it with: kubectl --kubeconfig {} {example}",
                path.display()
            ),
            None => println!("Serving on https://{local}"),
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let connections = hyper_util::server::graceful::GracefulShutdown::new();
        let mut stop = std::pin::pin!(shutdown_signal());
        loop {
            let (tcp, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut stop => break,
            };
            let acceptor = acceptor.clone();
            let router = router.clone();
            let watcher = connections.watcher();
            let bookmark_every = Duration::from_secs(options.watch_bookmark_interval.max(1));
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await else {
                    return;
                };
                let peer = PeerCertificates(Arc::new(
                    tls.get_ref()
                        .1
                        .peer_certificates()
                        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                        .unwrap_or_default(),
                ));
                let service = hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(peer.clone());
                    request.extensions_mut().insert(RemoteAddr(remote));
                    request.extensions_mut().insert(Watching {
                        shutdown: shutdown.clone(),
                        bookmark_every,
                    });
                    router.clone().oneshot(request.map(axum::body::Body::new))
                });
                let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder.http1().max_buf_size(MAX_HEADERS);
                builder.http2().max_header_list_size(MAX_HEADERS as u32);
                let connection = builder.serve_connection(TokioIo::new(tls), service);
                if let Err(e) = watcher.watch(connection.into_owned()).await {
                    tracing::debug!("connection ended: {e}");
                }
            });
        }
        tracing::info!("shutting down: no new connections; ending watches and draining requests");
        drop(listener);
        let _ = shutdown_tx.send(true);
        let drain = Duration::from_secs(options.shutdown_timeout);
        if tokio::time::timeout(drain, connections.shutdown()).await.is_err() {
            tracing::warn!("shutdown: connections still open after {drain:?}; closing them");
        }
        Ok(())
    }
}

/// SIGTERM (Kubernetes stopping the pod) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Authentication and authorization from the flags, the core API and its ConfigMap.
async fn guard(options: &ServerOptions, local_ca: Option<&[u8]>) -> Result<Guard, String> {
    let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let flags = Trust {
        client_ca: match &options.client_ca_file {
            Some(path) => Some(read(path)?),
            None => local_ca.map(<[u8]>::to_vec),
        },
        requestheader_ca: options.requestheader_client_ca_file.as_ref().map(read).transpose()?,
        requestheader: RequestHeader {
            allowed_names: options.requestheader_allowed_names.clone(),
            username_headers: options.requestheader_username_headers.clone(),
            uid_headers: options.requestheader_uid_headers.clone(),
            group_headers: options.requestheader_group_headers.clone(),
            extra_prefixes: options.requestheader_extra_headers_prefix.clone(),
        },
    };
    let set = FlagsSet {
        client_ca: flags.client_ca.is_some(),
        requestheader_ca: flags.requestheader_ca.is_some(),
    };
    let authn_client = authn::core_client(options.authentication_kubeconfig.as_ref(), WEBHOOK_TIMEOUT).await?;
    let mut trust = flags.clone();
    if let Some(client) = &authn_client
        && !(set.client_ca && set.requestheader_ca)
    {
        match authn::read_configmap(client).await {
            Ok(data) => trust = flags.or_from_configmap(&data, &set),
            Err(e) => tracing::warn!("authentication: {e}; using the flags only until it can be read"),
        }
    }
    let tokens = authn_client
        .clone()
        .map(|c| authn::TokenReviewer::new(c, Duration::from_secs(options.authentication_token_webhook_cache_ttl)));
    let authenticator = Arc::new(Authenticator::new(trust, tokens, options.anonymous_auth)?);
    if let Some(client) = authn_client
        && !(set.client_ca && set.requestheader_ca)
    {
        let interval = Duration::from_secs(options.authentication_config_poll_interval.max(1));
        tokio::spawn(authn::follow_configmap(
            authenticator.clone(),
            client,
            flags,
            set,
            interval,
        ));
    }
    if options.authorization_mode == AuthorizationMode::AlwaysAllow {
        tracing::warn!(
            "--authorization-mode AlwaysAllow: every authenticated request is allowed (local development only)"
        );
    }
    let authz_client = authn::core_client(options.authorization_kubeconfig.as_ref(), WEBHOOK_TIMEOUT).await?;
    let authorizer = Authorizer::new(
        options.authorization_mode,
        authz_client,
        Duration::from_secs(options.authorization_webhook_cache_authorized_ttl),
        Duration::from_secs(options.authorization_webhook_cache_unauthorized_ttl),
    );
    Ok(Guard {
        authenticator,
        authorizer,
    })
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

/// Where the serving certificate is, and what local generation produced.
struct Serving {
    cert: PathBuf,
    key: PathBuf,
    /// The generated CA (the default client CA), when certificates were generated.
    local_ca: Option<Vec<u8>>,
    /// The admin kubeconfig, when certificates were generated.
    kubeconfig: Option<PathBuf>,
}

/// The serving certificate files: given by flags, or generated (once) for local use.
fn serving_files(options: &ServerOptions, local: SocketAddr) -> Result<Serving, String> {
    if let (Some(cert), Some(key)) = (&options.tls_cert_file, &options.tls_private_key_file) {
        return Ok(Serving {
            cert: cert.clone(),
            key: key.clone(),
            local_ca: None,
            kubeconfig: None,
        });
    }
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
    let certs = crate::certs::ensure_local(&options.cert_dir, &sans, &format!("https://{host}:{}", local.port()))?;
    Ok(Serving {
        local_ca: Some(std::fs::read(&certs.ca_cert).map_err(|e| format!("{}: {e}", certs.ca_cert.display()))?),
        cert: certs.serving_cert,
        key: certs.serving_key,
        kubeconfig: Some(certs.kubeconfig),
    })
}

/// TLS 1.2 and 1.3, h2 and http/1.1, the serving certificate reloaded from disk when it
/// changes, and client certificates requested (verified by authentication, not here).
fn tls_config(serving: &Serving) -> Result<rustls::ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver = ReloadingCert::new(serving.cert.clone(), serving.key.clone(), provider.clone())?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(Arc::new(AnyClientCertificate::new(&provider)))
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The serving certificate, re-read when its files change (checked at most once a second).
#[derive(Debug)]
struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<rustls::crypto::CryptoProvider>,
    current: std::sync::RwLock<Loaded>,
}

/// The loaded key, the files' modification time it came from, and when that was last checked.
type Loaded = (
    Arc<rustls::sign::CertifiedKey>,
    Option<std::time::SystemTime>,
    std::time::Instant,
);

impl ReloadingCert {
    fn new(cert: PathBuf, key: PathBuf, provider: Arc<rustls::crypto::CryptoProvider>) -> Result<Self, String> {
        let loaded = load_certified(&cert, &key, &provider)?;
        let stamp = modified(&cert, &key);
        Ok(ReloadingCert {
            cert,
            key,
            provider,
            current: std::sync::RwLock::new((Arc::new(loaded), stamp, std::time::Instant::now())),
        })
    }

    fn get(&self) -> Arc<rustls::sign::CertifiedKey> {
        let (key, stamp, checked) = self.current.read().unwrap_or_else(|e| e.into_inner()).clone();
        if checked.elapsed() < Duration::from_secs(1) {
            return key;
        }
        let now = modified(&self.cert, &self.key);
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        current.2 = std::time::Instant::now();
        if now != stamp {
            // A half-written pair fails to load: keep serving the old one and try again later.
            match load_certified(&self.cert, &self.key, &self.provider) {
                Ok(loaded) => {
                    tracing::info!("serving certificate reloaded from {}", self.cert.display());
                    *current = (Arc::new(loaded), now, std::time::Instant::now());
                }
                Err(e) => tracing::warn!("serving certificate not reloaded: {e}"),
            }
        }
        current.0.clone()
    }
}

impl rustls::server::ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.get())
    }
}

/// The later of the two files' modification times.
fn modified(cert: &Path, key: &Path) -> Option<std::time::SystemTime> {
    let time = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    time(cert).max(time(key))
}

fn load_certified(
    cert: &Path,
    key: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<rustls::sign::CertifiedKey, String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("serving certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| format!("serving key: {e}"))?;
    rustls::sign::CertifiedKey::from_der(chain, key, provider).map_err(|e| format!("serving certificate: {e}"))
}
