//! A real HTTPS admission webhook for tests: it answers each AdmissionReview with what the
//! test's function says, records every review it received, and can be slowed down or made
//! to fail. Its certificate names `webhook.default.svc`, as a webhook Service's would.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::IntoResponse;
use base64::Engine as _;
use serde_json::{Value, json};

use super::https::HttpsServer;

/// The service host the webhook's certificate names.
pub const HOST: &str = "webhook.default.svc";

/// How the test webhook answers: from the request path and the AdmissionReview received,
/// the `response` fields (the request's `uid` is echoed unless they give one).
pub type Review = Arc<dyn Fn(&str, &Value) -> Value + Send + Sync>;

#[derive(Default)]
struct Behaviour {
    received: Vec<(String, Value)>,
    authorizations: Vec<Option<String>>,
    delay: Duration,
}

/// A running test webhook (see the module doc); it stops when dropped.
pub struct AdmissionWebhook {
    server: HttpsServer,
    behaviour: Arc<Mutex<Behaviour>>,
}

impl AdmissionWebhook {
    /// Start it on a loopback port with certificates made in `dir`, answering with `review`.
    pub fn start(dir: &Path, review: impl Fn(&str, &Value) -> Value + Send + Sync + 'static) -> AdmissionWebhook {
        let behaviour = Arc::new(Mutex::new(Behaviour::default()));
        let review: Review = Arc::new(review);
        let state = behaviour.clone();
        let router = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let (state, review) = (state.clone(), review.clone());
                async move {
                    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
                        return (axum::http::StatusCode::BAD_REQUEST, "not JSON").into_response();
                    };
                    let path = uri.path().to_string();
                    let delay = {
                        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                        let target = uri.path_and_query().map_or(path.clone(), |p| p.to_string());
                        s.received.push((target, request.clone()));
                        let authorization = headers.get("authorization").and_then(|v| v.to_str().ok());
                        s.authorizations.push(authorization.map(str::to_string));
                        s.delay
                    };
                    tokio::time::sleep(delay).await;
                    let mut response = review(&path, &request);
                    if response.get("uid").is_none() {
                        response["uid"] = request["request"]["uid"].clone();
                    }
                    let answer = json!({
                        "apiVersion": request["apiVersion"],
                        "kind": "AdmissionReview",
                        "response": response,
                    });
                    (axum::http::StatusCode::OK, axum::Json(answer)).into_response()
                }
            },
        );
        AdmissionWebhook {
            server: HttpsServer::start(dir, &[HOST], router),
            behaviour,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Behaviour) -> T) -> T {
        f(&mut self.behaviour.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The requests received so far: the URI (path and query) and the AdmissionReview.
    pub fn received(&self) -> Vec<(String, Value)> {
        self.with(|b| b.received.clone())
    }

    /// The `Authorization` header of each request received so far.
    pub fn authorizations(&self) -> Vec<Option<String>> {
        self.with(|b| b.authorizations.clone())
    }

    /// Forget the requests received so far.
    pub fn clear(&self) {
        self.with(|b| b.received.clear());
    }

    /// Answer only after `delay` from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.with(|b| b.delay = delay);
    }

    /// How many TLS handshakes it completed (a pooled caller makes few).
    pub fn handshakes(&self) -> usize {
        self.server.handshakes()
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// A `clientConfig` reaching it as the Service `webhook` in `default` at `path` (the
    /// server must map [`HOST`] to 127.0.0.1 with `--admission-webhook-address`).
    pub fn service_config(&self, path: &str) -> Value {
        json!({
            "service": {"name": "webhook", "namespace": "default", "port": self.server.port, "path": path},
            "caBundle": base64::engine::general_purpose::STANDARD.encode(&self.server.ca_pem),
        })
    }

    /// A `clientConfig` reaching it by URL at `path`.
    pub fn url_config(&self, path: &str) -> Value {
        json!({
            "url": format!("https://127.0.0.1:{}{path}", self.server.port),
            "caBundle": base64::engine::general_purpose::STANDARD.encode(&self.server.ca_pem),
        })
    }
}

/// The `response` of a JSON patch answer allowing the request.
pub fn patch_response(ops: Value) -> Value {
    json!({
        "allowed": true,
        "patchType": "JSONPatch",
        "patch": base64::engine::general_purpose::STANDARD.encode(ops.to_string()),
    })
}
