//! Assembling and running the server: resources and storage, the filter chain around the
//! router, and the accept loop (HTTP/1.1 and HTTP/2) with graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::filters::audit::{AuditLog, Policy, Rotation};
use crate::filters::authn::{self, Authenticator, FlagsSet, PeerCertificates, RequestHeader, Trust};
use crate::filters::authz::{AuthorizationMode, Authorizer};
use crate::filters::metrics::{InstrumentedStorage, Metrics};
use crate::filters::{self, Guard, InFlight, RemoteAddr};

use super::connections::{Connections, fitting_limit, raise_open_file_limit};
use super::options::{ServerOptions, StorageKind};
use super::tls::{serving_files, tls_config};
use crate::Error;
use crate::admission::{Chain, Plugin, TypedAdmission, TypedPlugin};
use crate::endpoints::{Api, Watching};
use crate::registry::Store;
use crate::registry::custom::{CustomStorage, CustomStore};
use crate::registry::rest::Rest;
use crate::resource::ApiResource;
use crate::server::Leadership;
use crate::storage::{self, Storage, WatchCache};

/// The version `/version` reports and the OpenAPI documents carry.
pub const GIT_VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"));

/// Longest TLS handshake before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the core API (TokenReview, SubjectAccessReview, ConfigMap).
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of request headers.
const MAX_HEADERS: usize = 64 * 1024;
/// Most concurrent HTTP/2 streams per connection: the aggregator multiplexes many requests,
/// watches among them, over one connection (k8s.io/apiserver sets 1000 for extension servers).
const MAX_STREAMS: u32 = 1000;

/// A server being assembled: resources and storage.
pub struct Server {
    options: ServerOptions,
    storage: Arc<WatchCache>,
    metrics: Arc<Metrics>,
    /// Every served resource, in registration order.
    resources: Vec<Arc<dyn Rest>>,
    /// The key-value stores among them, for in-process controllers.
    stores: Vec<Arc<Store>>,
    /// The admission steps every store runs.
    admission: Chain,
    /// Whether this replica leads (runs the in-process controllers).
    leading: tokio::sync::watch::Sender<bool>,
    /// The full filter chain and routes, once `run` has built them, for `client`.
    loopback: tokio::sync::watch::Sender<Option<filters::FilterChain>>,
    /// The etcd backend, for its compactor (`--storage etcd`).
    etcd: Option<storage::etcd::Etcd>,
}

impl Server {
    /// Open the storage the options name.
    pub async fn new(options: ServerOptions) -> Result<Self, Error> {
        let metrics = Metrics::new();
        let mut etcd = None;
        let storage: Arc<dyn Storage> = match options.storage {
            StorageKind::Memory => storage::memory(),
            StorageKind::Embedded => storage::embedded(&options.data_dir.join("apiary.redb"))?,
            StorageKind::Etcd => Arc::new(etcd.insert(etcd_storage(&options).await?).clone()),
        };
        let backend = match options.storage {
            StorageKind::Memory => "memory",
            StorageKind::Embedded => "embedded",
            StorageKind::Etcd => "etcd",
        };
        let storage = Arc::new(InstrumentedStorage::new(storage, backend, metrics.clone()));
        let options_leader_elect = options.leader_elect;
        Ok(Server {
            storage: WatchCache::new(storage, options.watch_cache_size),
            metrics,
            options,
            resources: Vec::new(),
            stores: Vec::new(),
            admission: Chain::default(),
            // With leader election off, every replica leads.
            leading: tokio::sync::watch::channel(!options_leader_elect).0,
            loopback: tokio::sync::watch::channel(None).0,
            etcd,
        })
    }

    /// Serve `T`. Versions of one kind (types with the same group and kind) share its storage:
    /// serve each, in any order.
    pub fn resource<T: ApiResource>(mut self) -> Result<Self, Error> {
        let store = Store::serving::<T>(self.storage.clone(), &self.options.etcd_prefix, &self.stores)
            .map_err(Error::declaration::<T>)?
            .with_admission(self.admission.clone());
        let store = Arc::new(store);
        // An unserved version is known to its siblings and the migration, and has no routes.
        if T::META.served {
            self.metrics.serve(store.meta());
            self.resources.push(store.clone());
        }
        self.stores.push(store);
        Ok(self)
    }

    /// Run `plugin` on every write to every resource of this server, after the steps added
    /// before it (mutating steps all run before the strategy's validation, validating ones
    /// after it).
    pub fn admission(self, plugin: impl Plugin) -> Self {
        self.admission.push(Arc::new(plugin));
        self
    }

    /// Run a typed admission step on every write to `T` (a server's own policy, as
    /// sample-apiserver's BanFlunder).
    pub fn admit<T: ApiResource>(self, admission: impl TypedAdmission<T>) -> Self {
        self.admission(TypedPlugin::<T, _>::new(admission))
    }

    /// Serve `T` from user code instead of the key-value store.
    pub fn custom<T: ApiResource, S: CustomStorage<T>>(mut self, storage: S) -> Result<Self, Error> {
        let store = CustomStore::<T, S>::new(storage)
            .map_err(Error::declaration::<T>)?
            .with_admission(self.admission.clone());
        self.metrics.serve(Rest::meta(&store));
        self.resources.push(Arc::new(store));
        Ok(self)
    }

    /// A `kube::Client` whose transport is this server's own filter chain and routes, in
    /// process (no socket, no TLS), for in-server controllers: `kube::Api<T>`, `watcher` and
    /// `Controller` as an operator uses them. It acts as `system:apiserver` in `system:masters`
    /// (k8s.io/apiserver's loopback identity), is audited as such, and cannot be reached from
    /// outside; its requests wait until the server runs.
    pub fn client(&self) -> kube::Client {
        let routes = self.loopback.subscribe();
        let user = Arc::new(crate::filters::authn::UserInfo {
            uid: uuid::Uuid::new_v4().to_string(),
            ..crate::filters::authn::UserInfo::authenticated("system:apiserver".into(), vec!["system:masters".into()])
        });
        let service = tower::service_fn(move |request: hyper::Request<kube::client::Body>| {
            let (mut routes, user) = (routes.clone(), user.clone());
            async move {
                let router = routes
                    .wait_for(Option::is_some)
                    .await
                    .map_err(|_| "the server stopped")?
                    .clone()
                    .ok_or("the server stopped")?;
                let mut request = request.map(axum::body::Body::new);
                request.extensions_mut().insert(filters::Loopback(user));
                let response = router.serve(request).await;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(response)
            }
        });
        kube::Client::new(service, "default")
    }

    /// Whether this replica leads: in-process controllers run only while it does (one replica
    /// at a time with `--leader-elect`, the default).
    pub fn leadership(&self) -> Leadership {
        Leadership::new(self.leading.subscribe())
    }

    /// The registry of `T`, for in-process controllers (e.g. to write status).
    pub fn store<T: ApiResource>(&self) -> Option<Arc<Store>> {
        self.stores.iter().find(|s| *s.meta() == T::META).cloned()
    }

    /// The objects of resource `T` as `T` (get, list, create, update, status, delete through
    /// the same strategy, admission and storage as a client's requests); an error when `T` is
    /// not served by the key-value store (not added with [`resource`](Self::resource)).
    pub fn objects<T: ApiResource>(&self) -> Result<crate::registry::Objects<T>, Error> {
        self.store::<T>()
            .and_then(crate::registry::Objects::new)
            .ok_or_else(|| Error::declaration::<T>("not served by this server's key-value store"))
    }

    /// `--migrate-storage`: rewrite each served kind's objects stored at an older version.
    async fn migrate(self) -> Result<(), Error> {
        let mut failed = 0;
        let mut seen = Vec::new();
        for store in &self.stores {
            let kind = store.meta().group_kind();
            if seen.contains(&kind) {
                continue;
            }
            seen.push(kind);
            let name = store.meta().group_resource();
            let storage = store.versions().storage().to_string();
            println!("migrating {name} to {storage}");
            let done = store
                .migrate(|done| println!("  {name}: {done}"))
                .await
                .map_err(|e| Error::Migration(format!("migrating {name}: {}", e.message)))?;
            for (key, why) in &done.failed {
                println!("  {name}: {key} not migrated: {why}");
            }
            failed += done.failed.len();
            println!("{name}: done: {done}");
        }
        match failed {
            0 => Ok(()),
            n => Err(Error::Migration(format!(
                "{n} objects could not be migrated (see above); fix them and run again"
            ))),
        }
    }

    /// Bind, print how to reach the server, and serve until SIGTERM or Ctrl-C; then stop
    /// accepting, end watches, and let in-flight requests finish (within `--shutdown-timeout`).
    pub async fn run(self) -> Result<(), Error> {
        if self.options.migrate_storage {
            return self.migrate().await;
        }
        let options = self.options;
        let addr = SocketAddr::new(options.bind_address, options.secure_port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Listen { addr, source })?;
        let local = listener.local_addr().map_err(|source| Error::Listen { addr, source })?;
        let serving = serving_files(&options, local)?;
        serving.warn_if_expiring();
        let tls = tls_config(&serving)?;
        let guard = Arc::new(guard(&options, serving.local_ca.as_deref()).await?);
        let admission_metrics = crate::admission::metrics::AdmissionMetrics::new(self.metrics.registry());
        self.admission.observe(admission_metrics.clone());
        let kinds = self.resources.iter().map(|r| (*r.meta(), r.schema())).collect();
        crate::admission::cluster::install(
            &self.admission,
            &options,
            admission_metrics,
            guard.authorizer.clone(),
            kinds,
        )
        .await
        .map_err(Error::Config)?;
        // From here on every request runs this list; it lives as long as `run`.
        let frozen = self.admission.freeze();
        // One after another: versions of a kind share a feed, which the first one starts.
        let stores = self.stores.clone();
        tokio::spawn(async move {
            for store in stores {
                if let Err(e) = store.start_cache().await {
                    tracing::debug!(resource = store.meta().plural, "watch cache starts on first read: {e}");
                }
            }
        });
        let (stop_electing, electing) = tokio::sync::watch::channel(false);
        if let Some(etcd) = self.etcd.clone()
            && !options.etcd_compaction_interval.is_zero()
        {
            let interval = options.etcd_compaction_interval;
            tokio::spawn(storage::etcd::compactor::run(etcd, interval, electing.clone()));
        }
        let election = elect(
            &options,
            self.storage.clone(),
            &self.metrics,
            self.leading.clone(),
            electing,
        )
        .await
        .map_err(Error::Config)?;
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
                    Some(p) => Policy::load(p).map_err(Error::Config)?,
                    None => return Err(Error::Config("--audit-log-path needs --audit-policy-file".into())),
                };
                let rotation = Rotation {
                    max_bytes: options.audit_log_maxsize * 1024 * 1024,
                    max_backups: options.audit_log_maxbackup,
                    max_age: Duration::from_secs(options.audit_log_maxage * 24 * 3600),
                };
                Some(Arc::new(
                    AuditLog::open(path, policy, rotation, self.metrics.registry()).map_err(Error::Config)?,
                ))
            }
            None => None,
        };
        let metrics = self.metrics.clone();
        let resources = self.resources.clone();
        let api = Api::for_server(
            self.resources,
            version,
            self.admission.clone(),
            Some(serving.cert_file().to_path_buf()),
        );
        let bounds = Arc::new(filters::Bounds {
            in_flight: InFlight {
                reads: Semaphore::new(options.max_requests_inflight.max(1)),
                writes: Semaphore::new(options.max_mutating_requests_inflight.max(1)),
            },
            timeout: Duration::from_secs(options.request_timeout.max(1)),
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
            // The router's own routes have this already; again for `/metrics`.
            .method_not_allowed_fallback(crate::endpoints::router::method_not_allowed);
        let audit_at_exit = audit.clone();
        let router = filters::FilterChain::from(filters::Filters {
            metrics,
            guard,
            audit,
            bounds,
            api,
            routes: router,
        });
        self.loopback.send_replace(Some(router.clone()));
        match serving.kubeconfig {
            Some(path) => println!(
                "Serving on https://{local}; use it with: kubectl --kubeconfig {} {example}",
                path.display()
            ),
            None => println!("Serving on https://{local}"),
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let open_files = raise_open_file_limit();
        let max_connections = fitting_limit(options.max_connections, open_files);
        if max_connections < options.max_connections {
            tracing::warn!("--max-connections lowered to {max_connections} to fit the open-file limit of {open_files}");
        }
        let connections = Connections::new(
            max_connections,
            Duration::from_secs(options.idle_connection_timeout.max(1)),
        );
        let header_read_timeout = Duration::from_secs(options.header_read_timeout.max(1));
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
            let Some(admitted) = connections.admit().await else {
                tracing::debug!(%remote, "connection refused: every connection is busy (--max-connections)");
                continue;
            };
            let acceptor = acceptor.clone();
            let router = router.clone();
            let bookmark_every = Duration::from_secs(options.watch_bookmark_interval.max(1));
            let mut shutdown = shutdown.clone();
            tokio::spawn(async move {
                let admitted = Arc::new(admitted);
                let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
                let tls = tokio::select! {
                    done = handshake => match done {
                        Ok(Ok(tls)) => tls,
                        _ => return,
                    },
                    () = admitted.should_close() => return,
                };
                let peer = PeerCertificates::new(
                    tls.get_ref()
                        .1
                        .peer_certificates()
                        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                        .unwrap_or_default(),
                );
                // The protocol is what TLS negotiated (ALPN), so no bytes are awaited to guess it.
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
                let slot = admitted.clone();
                let watching = Watching {
                    shutdown: shutdown.clone(),
                    bookmark_every,
                };
                let service = hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
                    let busy = slot.busy();
                    request.extensions_mut().insert(peer.clone());
                    request.extensions_mut().insert(RemoteAddr(remote));
                    request.extensions_mut().insert(watching.clone());
                    // On the heap at once: hyper moves the future it is handed a few times, and
                    // the whole chain's future is kilobytes.
                    let response = Box::pin(router.clone().serve(request.map(axum::body::Body::new)));
                    async move {
                        let response = response.await;
                        Ok::<_, std::convert::Infallible>(response.map(|body| filters::limits::with_guard(body, busy)))
                    }
                });
                let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder
                    .http1()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(header_read_timeout)
                    .max_buf_size(MAX_HEADERS);
                builder
                    .http2()
                    .max_header_list_size(MAX_HEADERS as u32)
                    .max_concurrent_streams(MAX_STREAMS);
                let builder = if h2 { builder.http2_only() } else { builder.http1_only() };
                let connection = builder.serve_connection(TokioIo::new(tls), service);
                let mut connection = std::pin::pin!(connection);
                tokio::select! {
                    ended = connection.as_mut() => {
                        if let Err(e) = ended {
                            tracing::debug!("connection ended: {e}");
                        }
                        return;
                    }
                    () = admitted.should_close() => {}
                    _ = shutdown.wait_for(|down| *down) => {}
                }
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
            });
        }
        tracing::info!("shutting down: no new connections; ending watches and draining requests");
        drop(listener);
        // Hand the lease over first, so another replica's controllers start at once.
        let _ = stop_electing.send(true);
        if let Some(election) = election {
            let _ = tokio::time::timeout(Duration::from_secs(5), election).await;
        }
        let _ = shutdown_tx.send(true);
        let drain = Duration::from_secs(options.shutdown_timeout);
        if !connections.drained(drain).await {
            tracing::warn!("shutdown: connections still open after {drain:?}; closing them");
        }
        // The last requests' audit events are in the file before the process ends.
        if let Some(audit) = audit_at_exit {
            let _ = tokio::task::spawn_blocking(move || audit.flush()).await;
        }
        // Admission steps may hold stores (and so storage) that hold the chain: with the last
        // strong hold on them gone, the data file is closed cleanly when the stores go.
        drop(frozen);
        Ok(())
    }
}

/// Start leader election (unless off), telling `leading` whether this replica leads: on the
/// core API's Lease when there is a core API, else on a Lease in etcd; a server on memory or
/// embedded storage without a core API is the only one using its data, and leads.
async fn elect(
    options: &ServerOptions,
    storage: Arc<WatchCache>,
    metrics: &Metrics,
    leading: tokio::sync::watch::Sender<bool>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Option<tokio::task::JoinHandle<()>>, String> {
    use crate::server::leader::{CoreLease, Elector, LeaseStore, StoredLease, Timing, identity};
    if !options.leader_elect {
        return Ok(None);
    }
    let name = options.leader_elect_resource_name.clone().unwrap_or_else(|| {
        std::env::args()
            .next()
            .and_then(|a| Some(std::path::Path::new(&a).file_name()?.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "apiary".into())
    });
    let namespace = &options.leader_elect_resource_namespace;
    let core = authn::core_client(options.authentication_kubeconfig.as_ref(), WEBHOOK_TIMEOUT).await?;
    let store: Box<dyn LeaseStore> = match core {
        Some(core) => Box::new(CoreLease::new(core, namespace, &name)),
        None if options.storage == StorageKind::Etcd => {
            Box::new(StoredLease::new(storage, &options.etcd_prefix, namespace, &name))
        }
        // Memory and embedded storage belong to this process alone: no other replica to elect.
        None => {
            leading.send_replace(true);
            return Ok(None);
        }
    };
    let timing = Timing {
        lease_duration: options.leader_elect_lease_duration,
        renew_deadline: options.leader_elect_renew_deadline,
        retry_period: options.leader_elect_retry_period,
    };
    let gauge = prometheus::IntGaugeVec::new(
        prometheus::Opts::new(
            "leader_election_master_status",
            "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 indicates master. 'name' is the string used to identify the lease.",
        ),
        &["name"],
    )
    .map(|g| crate::filters::metrics::registered(metrics.registry(), g))
    .map_err(|e| e.to_string())?;
    let elector = Elector::new(store, identity(), timing, leading);
    let on_change = move |leads: bool| gauge.with_label_values(&[&name]).set(i64::from(leads));
    Ok(Some(tokio::spawn(elector.run(stop, on_change))))
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
async fn guard(options: &ServerOptions, local_ca: Option<&[u8]>) -> Result<Guard, Error> {
    let read = |p: &PathBuf| std::fs::read(p).map_err(Error::file(p));
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
    let authn_client = authn::core_client(options.authentication_kubeconfig.as_ref(), WEBHOOK_TIMEOUT)
        .await
        .map_err(Error::Config)?;
    let mut trust = flags.clone();
    if let Some(client) = &authn_client
        && !(set.client_ca && set.requestheader_ca)
    {
        match authn::read_configmap(client).await {
            Ok(data) => trust = flags.or_from_configmap(&data, &set),
            Err(e) => tracing::warn!("authentication: {e}; using the flags only until it can be read"),
        }
    }
    if authn_client.is_none() && !set.client_ca && !set.requestheader_ca && !options.anonymous_auth {
        tracing::warn!(
            "no authentication method can succeed: no --client-ca-file, no --requestheader-client-ca-file and no core API \
             (--authentication-kubeconfig or in-cluster) for tokens and the extension-apiserver-authentication ConfigMap; \
             every request but the health checks will get 401"
        );
    }
    let tokens = authn_client
        .clone()
        .map(|c| authn::TokenReviewer::new(c, Duration::from_secs(options.authentication_token_webhook_cache_ttl)));
    let authenticator = Arc::new(Authenticator::new(trust, tokens, options.anonymous_auth).map_err(Error::Tls)?);
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
    let authz_client = authn::core_client(options.authorization_kubeconfig.as_ref(), WEBHOOK_TIMEOUT)
        .await
        .map_err(Error::Config)?;
    let authorizer = Arc::new(Authorizer::new(
        options.authorization_mode,
        authz_client,
        Duration::from_secs(options.authorization_webhook_cache_authorized_ttl),
        Duration::from_secs(options.authorization_webhook_cache_unauthorized_ttl),
    ));
    Ok(Guard {
        authenticator,
        authorizer,
    })
}

async fn etcd_storage(options: &ServerOptions) -> Result<storage::etcd::Etcd, Error> {
    let config = storage::etcd::EtcdConfig {
        endpoints: options.etcd_servers.clone(),
        ca_file: options.etcd_cafile.clone(),
        cert_file: options.etcd_certfile.clone(),
        key_file: options.etcd_keyfile.clone(),
    };
    Ok(storage::etcd::Etcd::connect(&config).await?)
}
