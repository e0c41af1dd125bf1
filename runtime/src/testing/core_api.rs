//! A stand-in for kube-apiserver's core API (TokenReview, SubjectAccessReview, the
//! authentication ConfigMap, namespaces with list and watch), which cannot run here.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::free_port;

/// A stand-in for kube-apiserver's core API, which cannot run here: over TLS it serves
/// `TokenReview`, `SubjectAccessReview` and the `kube-system/extension-apiserver-authentication`
/// ConfigMap from rules the test sets, and records the reviews it was sent.
pub struct CoreApiStandIn {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// A kubeconfig for the stand-in (for `--authentication-kubeconfig` and friends).
    pub kubeconfig: PathBuf,
    state: std::sync::Arc<std::sync::Mutex<StandInState>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

#[derive(Default)]
struct StandInState {
    tokens: std::collections::HashMap<String, (String, Vec<String>)>,
    allowed: Vec<(String, String, String)>,
    configmap: std::collections::BTreeMap<String, String>,
    down: bool,
    access_reviews: Vec<serde_json::Value>,
    token_reviews: usize,
    namespaces: Namespaces,
}

/// The stand-in's namespaces, with a revision and a change log for list-then-watch.
struct Namespaces {
    revision: u64,
    phases: std::collections::BTreeMap<String, (String, u64)>,
    log: Vec<(u64, serde_json::Value)>,
    changes: tokio::sync::broadcast::Sender<(u64, serde_json::Value)>,
}

impl Default for Namespaces {
    fn default() -> Self {
        let mut namespaces = Namespaces {
            revision: 0,
            phases: Default::default(),
            log: Vec::new(),
            changes: tokio::sync::broadcast::channel(1024).0,
        };
        for name in ["default", "kube-system"] {
            namespaces.set(name, Some("Active"));
        }
        namespaces
    }
}

impl Namespaces {
    fn object(name: &str, phase: &str, rv: u64) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "uid": format!("ns-{name}"), "resourceVersion": rv.to_string(),
                         "labels": {"kubernetes.io/metadata.name": name}},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": phase},
        })
    }

    /// Create or change (`Some(phase)`) or delete (`None`) a namespace, logging the event.
    fn set(&mut self, name: &str, phase: Option<&str>) {
        self.revision += 1;
        let rv = self.revision;
        let event = match phase {
            Some(phase) => {
                let kind = if self.phases.contains_key(name) {
                    "MODIFIED"
                } else {
                    "ADDED"
                };
                self.phases.insert(name.to_string(), (phase.to_string(), rv));
                serde_json::json!({"type": kind, "object": Self::object(name, phase, rv)})
            }
            None => {
                let Some((old, _)) = self.phases.remove(name) else {
                    return;
                };
                serde_json::json!({"type": "DELETED", "object": Self::object(name, &old, rv)})
            }
        };
        self.log.push((rv, event.clone()));
        let _ = self.changes.send((rv, event));
    }
}

impl CoreApiStandIn {
    /// Start it on a free port, writing its CA and kubeconfig under `dir`.
    pub fn start(dir: &Path) -> CoreApiStandIn {
        use axum::routing::{get, post};
        std::fs::create_dir_all(dir).expect("stand-in dir");
        let ca = crate::certs::ensure_local(&dir.join("stand-in-certs"), &["127.0.0.1".into()], "https://127.0.0.1")
            .expect("stand-in certificates");
        let port = free_port();
        let url = format!("https://127.0.0.1:{port}");
        let kubeconfig = dir.join("core-api.kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: core\n  cluster:\n    server: {url}\n    certificate-authority: {}\nusers:\n- name: apiserver\n  user:\n    token: stand-in\ncontexts:\n- name: core\n  context:\n    cluster: core\n    user: apiserver\ncurrent-context: core\n",
                ca.ca_cert.display()
            ),
        )
        .expect("stand-in kubeconfig");
        let state = std::sync::Arc::new(std::sync::Mutex::new(StandInState::default()));
        let router = axum::Router::new()
            .route("/apis/authentication.k8s.io/v1/tokenreviews", post(token_review))
            .route(
                "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                post(access_review),
            )
            .route("/api/v1/namespaces", get(namespaces))
            .route("/api/v1/namespaces/{name}", get(namespace))
            .route(
                "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication",
                get(configmap),
            )
            .with_state(state.clone());
        let tls = {
            let read = |p: &Path| std::fs::read(p).expect("stand-in cert");
            let chain = CertificateDer::pem_slice_iter(&read(&ca.serving_cert))
                .collect::<Result<Vec<_>, _>>()
                .expect("stand-in chain");
            let key = PrivateKeyDer::from_pem_slice(&read(&ca.serving_key)).expect("stand-in key");
            let mut config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("protocols")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("stand-in TLS");
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config))
        };
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("stand-in runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                    .await
                    .expect("stand-in port");
                let _ = ready_tx.send(());
                loop {
                    let (tcp, _) = tokio::select! {
                        accepted = listener.accept() => match accepted { Ok(c) => c, Err(_) => continue },
                        _ = &mut stopped => return,
                    };
                    let (tls, router) = (tls.clone(), router.clone());
                    tokio::spawn(async move {
                        use tower::ServiceExt;
                        let Ok(stream) = tls.accept(tcp).await else { return };
                        let service = hyper::service::service_fn(move |r: hyper::Request<hyper::body::Incoming>| {
                            router.clone().oneshot(r.map(axum::body::Body::new))
                        });
                        let builder =
                            hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                        let _ = builder
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
        ready
            .recv_timeout(Duration::from_secs(10))
            .expect("the stand-in listens");
        CoreApiStandIn {
            url,
            kubeconfig,
            state,
            stop: Some(stop),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut StandInState) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// TokenReview authenticates `token` as `user` in `groups`.
    pub fn add_token(&self, token: &str, user: &str, groups: &[&str]) {
        self.with(|s| {
            s.tokens.insert(
                token.into(),
                (user.into(), groups.iter().map(|g| g.to_string()).collect()),
            )
        });
    }

    /// SubjectAccessReview allows `user` to `verb` `resource` (anything else is denied).
    pub fn allow(&self, user: &str, verb: &str, resource: &str) {
        self.with(|s| s.allowed.push((user.into(), verb.into(), resource.into())));
    }

    /// Create a namespace, or change its phase (`Active`, `Terminating`).
    pub fn set_namespace(&self, name: &str, phase: &str) {
        self.with(|s| s.namespaces.set(name, Some(phase)));
    }

    /// Remove a namespace (a DELETED event for its watchers).
    pub fn delete_namespace(&self, name: &str) {
        self.with(|s| s.namespaces.set(name, None));
    }

    /// The ConfigMap's data.
    pub fn set_configmap(&self, data: &[(&str, &str)]) {
        self.with(|s| s.configmap = data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
    }

    /// An outage: every review answers 500 while `down`.
    pub fn set_down(&self, down: bool) {
        self.with(|s| s.down = down);
    }

    /// The SubjectAccessReview specs received so far.
    pub fn access_reviews(&self) -> Vec<serde_json::Value> {
        self.with(|s| s.access_reviews.clone())
    }

    /// How many TokenReviews were received.
    pub fn token_reviews(&self) -> usize {
        self.with(|s| s.token_reviews)
    }
}

impl Drop for CoreApiStandIn {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

type StandIn = axum::extract::State<std::sync::Arc<std::sync::Mutex<StandInState>>>;

fn outage() -> axum::response::Response {
    use axum::response::IntoResponse;
    (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "stand-in outage").into_response()
}

async fn token_review(
    axum::extract::State(state): StandIn,
    axum::Json(review): axum::Json<serde_json::Value>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    s.token_reviews += 1;
    if s.down {
        return outage();
    }
    let token = review["spec"]["token"].as_str().unwrap_or_default();
    let status = match s.tokens.get(token) {
        Some((user, groups)) => {
            serde_json::json!({"authenticated": true, "user": {"username": user, "uid": format!("uid-{user}"), "groups": groups}})
        }
        None => serde_json::json!({"authenticated": false, "error": "invalid token"}),
    };
    let mut answer = review.clone();
    answer["status"] = status;
    axum::Json(answer).into_response()
}

async fn access_review(
    axum::extract::State(state): StandIn,
    axum::Json(review): axum::Json<serde_json::Value>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    if s.down {
        return outage();
    }
    let spec = review["spec"].clone();
    s.access_reviews.push(spec.clone());
    let user = spec["user"].as_str().unwrap_or_default();
    let (verb, resource) = match spec.get("resourceAttributes") {
        Some(r) => (
            r["verb"].as_str().unwrap_or_default(),
            r["resource"].as_str().unwrap_or_default(),
        ),
        None => (
            spec["nonResourceAttributes"]["verb"].as_str().unwrap_or_default(),
            spec["nonResourceAttributes"]["path"].as_str().unwrap_or_default(),
        ),
    };
    let allowed = s
        .allowed
        .iter()
        .any(|(u, v, r)| u == user && v == verb && r == resource);
    let status = if allowed {
        serde_json::json!({"allowed": true, "reason": "the stand-in's rules allow it"})
    } else {
        serde_json::json!({"allowed": false, "reason": "no rule of the stand-in allows it"})
    };
    let mut answer = review.clone();
    answer["status"] = status;
    axum::Json(answer).into_response()
}

async fn configmap(axum::extract::State(state): StandIn) -> axum::response::Response {
    use axum::response::IntoResponse;
    let s = state.lock().unwrap_or_else(|e| e.into_inner());
    if s.down {
        return outage();
    }
    axum::Json(serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "extension-apiserver-authentication", "namespace": "kube-system"},
        "data": s.configmap,
    }))
    .into_response()
}

/// `GET /api/v1/namespaces`: the list, or with `watch` the changes after `resourceVersion`
/// (from the log, then live), as newline-delimited watch events.
async fn namespaces(
    axum::extract::State(state): StandIn,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use futures::StreamExt;
    let s = state.lock().unwrap_or_else(|e| e.into_inner());
    if s.down {
        return outage();
    }
    let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    if !watch {
        let items: Vec<serde_json::Value> = s
            .namespaces
            .phases
            .iter()
            .map(|(name, (phase, rv))| Namespaces::object(name, phase, *rv))
            .collect();
        return axum::Json(serde_json::json!({
            "apiVersion": "v1", "kind": "NamespaceList",
            "metadata": {"resourceVersion": s.namespaces.revision.to_string()}, "items": items,
        }))
        .into_response();
    }
    let since: u64 = query.get("resourceVersion").and_then(|r| r.parse().ok()).unwrap_or(0);
    let past: Vec<serde_json::Value> = s
        .namespaces
        .log
        .iter()
        .filter(|(rv, _)| *rv > since)
        .map(|(_, e)| e.clone())
        .collect();
    let last = s.namespaces.log.last().map_or(0, |(rv, _)| *rv).max(since);
    let live = tokio_stream::wrappers::BroadcastStream::new(s.namespaces.changes.subscribe())
        .filter_map(move |e| futures::future::ready(e.ok().filter(|(rv, _)| *rv > last).map(|(_, e)| e)));
    let lines = futures::stream::iter(past).chain(live).map(|e| {
        let mut line = serde_json::to_vec(&e).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(line))
    });
    axum::response::Response::builder()
        .header("content-type", "application/json")
        .body(axum::body::Body::from_stream(lines))
        .unwrap_or_default()
}

/// `GET /api/v1/namespaces/{name}`: the namespace, or 404 as kube-apiserver says it.
async fn namespace(
    axum::extract::State(state): StandIn,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let s = state.lock().unwrap_or_else(|e| e.into_inner());
    if s.down {
        return outage();
    }
    match s.namespaces.phases.get(&name) {
        Some((phase, rv)) => axum::Json(Namespaces::object(&name, phase, *rv)).into_response(),
        None => (
            axum::http::StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({
                "apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404,
                "message": format!("namespaces \"{name}\" not found"),
                "details": {"name": name, "kind": "namespaces"},
            })),
        )
            .into_response(),
    }
}
