//! A stand-in for kube-apiserver's core API (TokenReview, SubjectAccessReview, the
//! authentication ConfigMap, namespaces, admission webhook configurations and
//! ValidatingAdmissionPolicies with their bindings with list and watch, ConfigMaps as policy
//! params), for fast tests whose rules are set by the test. `apiary-cluster` runs the real
//! kube-apiserver; where the two differ, the real one is right and this one is made to agree.

use std::path::{Path, PathBuf};

use super::https::HttpsServer;

/// A stand-in for kube-apiserver's core API: over TLS it serves
/// `TokenReview`, `SubjectAccessReview` and the `kube-system/extension-apiserver-authentication`
/// ConfigMap from rules the test sets, and records the reviews it was sent.
pub struct CoreApiStandIn {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// A kubeconfig for the stand-in (for `--authentication-kubeconfig` and friends).
    pub kubeconfig: PathBuf,
    state: std::sync::Arc<std::sync::Mutex<StandInState>>,
    _server: HttpsServer,
}

struct StandInState {
    tokens: std::collections::HashMap<String, (String, Vec<String>)>,
    allowed: Vec<(String, String, String)>,
    configmap: std::collections::BTreeMap<String, String>,
    down: bool,
    access_reviews: Vec<serde_json::Value>,
    token_reviews: usize,
    namespaces: Collection,
    mutating: Collection,
    validating: Collection,
    policies: Collection,
    bindings: Collection,
    /// ConfigMaps (policy params), keyed `namespace/name`.
    configmaps: Collection,
    /// `namespace/name` → the Lease (leader election), with its resourceVersion.
    leases: std::collections::BTreeMap<String, serde_json::Value>,
    lease_revision: u64,
}

/// A collection of the stand-in's objects (namespaces, webhook configurations), with a
/// revision and a change log for list-then-watch.
struct Collection {
    kind: &'static str,
    revision: u64,
    objects: std::collections::BTreeMap<String, serde_json::Value>,
    log: Vec<(u64, serde_json::Value)>,
    changes: tokio::sync::broadcast::Sender<(u64, serde_json::Value)>,
}

/// Which collection a route serves.
#[derive(Clone, Copy)]
enum Which {
    Namespaces,
    Mutating,
    Validating,
    Policies,
    Bindings,
    ConfigMaps,
}

impl Collection {
    fn new(kind: &'static str) -> Self {
        Collection {
            kind,
            revision: 0,
            objects: Default::default(),
            log: Vec::new(),
            changes: tokio::sync::broadcast::channel(1024).0,
        }
    }

    /// Create or replace (`Some`) or delete (`None`) an object, logging the event.
    fn set(&mut self, name: &str, object: Option<serde_json::Value>) {
        self.revision += 1;
        let rv = self.revision;
        let event = match object {
            Some(mut object) => {
                // A namespaced object keeps its own name; its key is `namespace/name`.
                if object["metadata"]["name"].is_null() {
                    object["metadata"]["name"] = serde_json::json!(name);
                }
                object["metadata"]["resourceVersion"] = serde_json::json!(rv.to_string());
                object["metadata"]["uid"] = serde_json::json!(format!("{}-{}", self.kind, name.replace('/', "-")));
                let kind = if self.objects.contains_key(name) {
                    "MODIFIED"
                } else {
                    "ADDED"
                };
                self.objects.insert(name.to_string(), object.clone());
                serde_json::json!({"type": kind, "object": object})
            }
            None => {
                let Some(mut old) = self.objects.remove(name) else {
                    return;
                };
                old["metadata"]["resourceVersion"] = serde_json::json!(rv.to_string());
                serde_json::json!({"type": "DELETED", "object": old})
            }
        };
        self.log.push((rv, event.clone()));
        let _ = self.changes.send((rv, event));
    }
}

fn namespace_object(name: &str, phase: &str, labels: &std::collections::BTreeMap<String, String>) -> serde_json::Value {
    let mut labels = labels.clone();
    labels.insert("kubernetes.io/metadata.name".into(), name.into());
    serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": labels},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": phase},
    })
}

impl StandInState {
    fn collection(&mut self, which: Which) -> &mut Collection {
        match which {
            Which::Namespaces => &mut self.namespaces,
            Which::Mutating => &mut self.mutating,
            Which::Validating => &mut self.validating,
            Which::Policies => &mut self.policies,
            Which::Bindings => &mut self.bindings,
            Which::ConfigMaps => &mut self.configmaps,
        }
    }
}

impl Default for StandInState {
    fn default() -> Self {
        let mut state = StandInState {
            tokens: Default::default(),
            allowed: Vec::new(),
            configmap: Default::default(),
            down: false,
            access_reviews: Vec::new(),
            token_reviews: 0,
            namespaces: Collection::new("Namespace"),
            mutating: Collection::new("MutatingWebhookConfiguration"),
            validating: Collection::new("ValidatingWebhookConfiguration"),
            policies: Collection::new("ValidatingAdmissionPolicy"),
            bindings: Collection::new("ValidatingAdmissionPolicyBinding"),
            configmaps: Collection::new("ConfigMap"),
            leases: Default::default(),
            lease_revision: 0,
        };
        for name in ["default", "kube-system"] {
            state
                .namespaces
                .set(name, Some(namespace_object(name, "Active", &Default::default())));
        }
        state
    }
}

impl CoreApiStandIn {
    /// A `kube` client for the stand-in, as admission plugins and informers use one.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("the stand-in's kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("the stand-in's kubeconfig is usable");
        kube::Client::try_from(config).expect("a client for the stand-in")
    }

    /// Wait (up to 10 s) until every step of `chain` is ready (its watches of the stand-in's
    /// objects have listed); panics naming the step that is not.
    pub async fn until_ready(&self, chain: &crate::admission::Chain) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match chain.ready().await {
                Ok(()) => return,
                Err((step, why)) if std::time::Instant::now() > deadline => panic!("{step} is not ready: {why}"),
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
    }

    /// Start it on a free port, writing its CA and kubeconfig under `dir`.
    pub fn start(dir: &Path) -> CoreApiStandIn {
        use axum::routing::{get, post};
        std::fs::create_dir_all(dir).expect("stand-in dir");
        let state = std::sync::Arc::new(std::sync::Mutex::new(StandInState::default()));
        let router = axum::Router::new()
            .route("/apis/authentication.k8s.io/v1/tokenreviews", post(token_review))
            .route(
                "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                post(access_review),
            )
            .route(
                "/api/v1/namespaces",
                get(|state, query| list_or_watch(state, query, Which::Namespaces)),
            )
            .route("/api/v1/namespaces/{name}", get(namespace))
            .route(
                "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
                get(|state, query| list_or_watch(state, query, Which::Mutating)),
            )
            .route(
                "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
                get(|state, query| list_or_watch(state, query, Which::Validating)),
            )
            .route(
                "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies",
                get(|state, query| list_or_watch(state, query, Which::Policies)),
            )
            .route(
                "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings",
                get(|state, query| list_or_watch(state, query, Which::Bindings)),
            )
            .route(
                "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication",
                get(configmap),
            )
            .route(
                "/api/v1/configmaps",
                get(|state, query| list_or_watch(state, query, Which::ConfigMaps)),
            )
            .route("/api/v1", get(core_resources))
            .route(
                "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases",
                post(create_lease),
            )
            .route(
                "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}",
                get(get_lease).put(replace_lease),
            )
            .with_state(state.clone());
        let server = HttpsServer::start(&dir.join("stand-in-certs"), &[], router);
        let url = format!("https://127.0.0.1:{}", server.port);
        let kubeconfig = dir.join("core-api.kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: core\n  cluster:\n    server: {url}\n    certificate-authority: {}\nusers:\n- name: apiserver\n  user:\n    token: stand-in\ncontexts:\n- name: core\n  context:\n    cluster: core\n    user: apiserver\ncurrent-context: core\n",
                server.ca_file.display()
            ),
        )
        .expect("stand-in kubeconfig");
        CoreApiStandIn {
            url,
            kubeconfig,
            state,
            _server: server,
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
        self.set_namespace_labels(name, phase, &[]);
    }

    /// Create or change a namespace with `labels` (besides `kubernetes.io/metadata.name`).
    pub fn set_namespace_labels(&self, name: &str, phase: &str, labels: &[(&str, &str)]) {
        let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.with(|s| s.namespaces.set(name, Some(namespace_object(name, phase, &labels))));
    }

    /// Remove a namespace (a DELETED event for its watchers).
    pub fn delete_namespace(&self, name: &str) {
        self.with(|s| s.namespaces.set(name, None));
    }

    /// Create or replace an `admissionregistration.k8s.io/v1` Mutating- or
    /// ValidatingWebhookConfiguration (by its `kind`), as its watchers see it.
    pub fn set_webhook_configuration(&self, configuration: serde_json::Value) {
        let which = match configuration["kind"].as_str() {
            Some("MutatingWebhookConfiguration") => Which::Mutating,
            Some("ValidatingWebhookConfiguration") => Which::Validating,
            other => panic!("not a webhook configuration: {other:?}"),
        };
        let name = configuration["metadata"]["name"].as_str().expect("a name").to_string();
        self.with(|s| s.collection(which).set(&name, Some(configuration)));
    }

    /// Remove a webhook configuration of `kind`.
    pub fn delete_webhook_configuration(&self, kind: &str, name: &str) {
        let which = if kind == "MutatingWebhookConfiguration" {
            Which::Mutating
        } else {
            Which::Validating
        };
        self.with(|s| s.collection(which).set(name, None));
    }

    /// Create or replace a ValidatingAdmissionPolicy or ValidatingAdmissionPolicyBinding (by
    /// its `kind`), as its watchers see it; `delete` removes it.
    pub fn set_policy(&self, object: serde_json::Value, delete: bool) {
        let which = match object["kind"].as_str() {
            Some("ValidatingAdmissionPolicy") => Which::Policies,
            Some("ValidatingAdmissionPolicyBinding") => Which::Bindings,
            other => panic!("not a policy or binding: {other:?}"),
        };
        let name = object["metadata"]["name"].as_str().expect("a name").to_string();
        self.with(|s| s.collection(which).set(&name, (!delete).then_some(object)));
    }

    /// Create or replace (or with `None` delete) the ConfigMap `namespace/name` (policy params).
    pub fn set_param_configmap(&self, namespace: &str, name: &str, data: Option<&[(&str, &str)]>) {
        let object = data.map(|data| {
            let data: std::collections::BTreeMap<&str, &str> = data.iter().copied().collect();
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": namespace}, "data": data})
        });
        self.with(|s| s.configmaps.set(&format!("{namespace}/{name}"), object));
    }

    /// The ConfigMap's data.
    pub fn set_configmap(&self, data: &[(&str, &str)]) {
        self.with(|s| s.configmap = data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
    }

    /// An outage: every review answers 500 while `down`.
    pub fn set_down(&self, down: bool) {
        self.with(|s| s.down = down);
    }

    /// The Lease `namespace/name` (leader election), if one was written.
    pub fn lease(&self, namespace: &str, name: &str) -> Option<serde_json::Value> {
        self.with(|s| s.leases.get(&format!("{namespace}/{name}")).cloned())
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

/// `GET /api/v1`: the core resources the stand-in serves (what discovery of a params kind reads).
async fn core_resources() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1",
        "resources": [
            {"name": "configmaps", "singularName": "configmap", "namespaced": true, "kind": "ConfigMap", "verbs": ["get", "list", "watch"]},
            {"name": "namespaces", "singularName": "namespace", "namespaced": false, "kind": "Namespace", "verbs": ["get", "list", "watch"]},
        ],
    }))
}

/// A collection's list, or with `watch` its changes after `resourceVersion` (from the log,
/// then live), as newline-delimited watch events.
async fn list_or_watch(
    axum::extract::State(state): StandIn,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
    which: Which,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use futures::StreamExt;
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    if s.down {
        return outage();
    }
    let collection = s.collection(which);
    let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    if !watch {
        let items: Vec<serde_json::Value> = collection.objects.values().cloned().collect();
        let api_version = match which {
            Which::Namespaces | Which::ConfigMaps => "v1",
            _ => "admissionregistration.k8s.io/v1",
        };
        return axum::Json(serde_json::json!({
            "apiVersion": api_version, "kind": format!("{}List", collection.kind),
            "metadata": {"resourceVersion": collection.revision.to_string()}, "items": items,
        }))
        .into_response();
    }
    let since: u64 = query.get("resourceVersion").and_then(|r| r.parse().ok()).unwrap_or(0);
    let past: Vec<serde_json::Value> = collection
        .log
        .iter()
        .filter(|(rv, _)| *rv > since)
        .map(|(_, e)| e.clone())
        .collect();
    let last = collection.log.last().map_or(0, |(rv, _)| *rv).max(since);
    let live = tokio_stream::wrappers::BroadcastStream::new(collection.changes.subscribe())
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
    match s.namespaces.objects.get(&name) {
        Some(namespace) => axum::Json(namespace.clone()).into_response(),
        None => status(404, "NotFound", format!("namespaces \"{name}\" not found")),
    }
}

fn status(code: u16, reason: &str, message: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    let body = serde_json::json!({
        "apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": reason, "code": code, "message": message,
    });
    (
        axum::http::StatusCode::from_u16(code).unwrap_or_default(),
        axum::Json(body),
    )
        .into_response()
}

/// `GET .../leases/{name}`.
async fn get_lease(
    axum::extract::State(state): StandIn,
    axum::extract::Path((namespace, name)): axum::extract::Path<(String, String)>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let s = state.lock().unwrap_or_else(|e| e.into_inner());
    if s.down {
        return outage();
    }
    match s.leases.get(&format!("{namespace}/{name}")) {
        Some(lease) => axum::Json(lease.clone()).into_response(),
        None => status(
            404,
            "NotFound",
            format!("leases.coordination.k8s.io \"{name}\" not found"),
        ),
    }
}

/// Store a Lease at the next resourceVersion.
fn put_lease(s: &mut StandInState, namespace: &str, mut lease: serde_json::Value) -> axum::response::Response {
    use axum::response::IntoResponse;
    s.lease_revision += 1;
    lease["metadata"]["namespace"] = serde_json::json!(namespace);
    lease["metadata"]["resourceVersion"] = serde_json::json!(s.lease_revision.to_string());
    let name = lease["metadata"]["name"].as_str().unwrap_or_default().to_string();
    s.leases.insert(format!("{namespace}/{name}"), lease.clone());
    axum::Json(lease).into_response()
}

/// `POST .../leases`: 409 when it exists.
async fn create_lease(
    axum::extract::State(state): StandIn,
    axum::extract::Path(namespace): axum::extract::Path<String>,
    axum::Json(lease): axum::Json<serde_json::Value>,
) -> axum::response::Response {
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    if s.down {
        return outage();
    }
    let name = lease["metadata"]["name"].as_str().unwrap_or_default().to_string();
    if s.leases.contains_key(&format!("{namespace}/{name}")) {
        return status(
            409,
            "AlreadyExists",
            format!("leases.coordination.k8s.io \"{name}\" already exists"),
        );
    }
    put_lease(&mut s, &namespace, lease)
}

/// `PUT .../leases/{name}`: 409 unless its resourceVersion is current.
async fn replace_lease(
    axum::extract::State(state): StandIn,
    axum::extract::Path((namespace, name)): axum::extract::Path<(String, String)>,
    axum::Json(lease): axum::Json<serde_json::Value>,
) -> axum::response::Response {
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    if s.down {
        return outage();
    }
    let current = s
        .leases
        .get(&format!("{namespace}/{name}"))
        .map(|l| l["metadata"]["resourceVersion"].clone());
    match current {
        None => status(
            404,
            "NotFound",
            format!("leases.coordination.k8s.io \"{name}\" not found"),
        ),
        Some(rv) if rv != lease["metadata"]["resourceVersion"] => status(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on leases.coordination.k8s.io \"{name}\": the object has been modified"
            ),
        ),
        Some(_) => put_lease(&mut s, &namespace, lease),
    }
}
