//! Calling webhooks: one pooled HTTPS client per trust (`caBundle`) and credential, so a
//! call is one round trip on a kept-alive connection; `service` references resolved as
//! `<name>.<namespace>.svc:<port>` (with optional fixed addresses for servers outside the
//! cluster, and tests); credentials from the WebhookAdmission kubeconfig of
//! `--admission-control-config-file`.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{ConfigBuilderExt, HttpsConnector};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use k8s_openapi::api::admissionregistration::v1::WebhookClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;

/// Largest webhook response read (an AdmissionReview with a patch of a large object).
pub const MAX_RESPONSE: usize = 8 << 20;
/// Idle pooled connections to webhooks are closed after this long.
pub const POOL_IDLE: Duration = Duration::from_secs(90);
/// Most idle pooled connections kept per webhook host.
pub const POOL_PER_HOST: usize = 64;
/// Most distinct clients (trust × credential) kept; more and the pool starts over.
pub const MAX_CLIENTS: usize = 256;

type HttpsClient = Client<HttpsConnector<HttpConnector<Resolver>>, Full<Bytes>>;
/// A client's trust (`caBundle`) and the kubeconfig user it presents.
type ClientKey = (Vec<u8>, Option<String>);

/// Resolves names through the system, except those given fixed addresses.
#[derive(Clone)]
struct Resolver(Arc<HashMap<String, IpAddr>>);

impl tower::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let fixed = self.0.get(name.as_str()).copied();
        Box::pin(async move {
            let addresses: Vec<SocketAddr> = match fixed {
                Some(ip) => vec![SocketAddr::new(ip, 0)],
                None => tokio::net::lookup_host((name.as_str(), 0)).await?.collect(),
            };
            Ok(addresses.into_iter())
        })
    }
}

/// A user of the WebhookAdmission kubeconfig.
#[derive(Clone, Debug, Default)]
struct User {
    token: Option<String>,
    /// PEM certificate chain and key.
    certificate: Option<(Vec<u8>, Vec<u8>)>,
}

/// Credentials for webhooks by host, as kube-apiserver finds them in the kubeconfig of
/// `--admission-control-config-file`: `host:port`, then `*.` suffixes, then the same without
/// port 443, then `*`.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    users: HashMap<String, User>,
}

impl Credentials {
    /// The credentials of `plugin` (`MutatingAdmissionWebhook`, `ValidatingAdmissionWebhook`)
    /// in the AdmissionConfiguration file at `path`; none when the file does not configure it.
    pub fn load(path: &Path, plugin: &str) -> Result<Credentials, String> {
        let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
        let yaml = |p: &Path| -> Result<Value, String> {
            serde_saphyr::from_str(&read(p)?).map_err(|e| format!("{}: {e}", p.display()))
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let relative = |p: &str| -> PathBuf {
            let p = Path::new(p);
            if p.is_absolute() { p.into() } else { base.join(p) }
        };
        let config = yaml(path)?;
        if config["kind"] != "AdmissionConfiguration" {
            return Err(format!("{}: not an AdmissionConfiguration", path.display()));
        }
        let Some(entry) = config["plugins"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == plugin)
        else {
            return Ok(Credentials::default());
        };
        let configuration = match entry["path"].as_str() {
            Some(file) => yaml(&relative(file))?,
            None => entry["configuration"].clone(),
        };
        let Some(kubeconfig) = configuration["kubeConfigFile"].as_str() else {
            return Ok(Credentials::default());
        };
        let kubeconfig = relative(kubeconfig);
        let users = yaml(&kubeconfig)?;
        let dir = kubeconfig.parent().unwrap_or(Path::new(".")).to_path_buf();
        let file = |p: &str| -> Result<Vec<u8>, String> {
            let p = Path::new(p);
            let p = if p.is_absolute() { p.into() } else { dir.join(p) };
            std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))
        };
        let data = |v: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(v)
                .map_err(|e| format!("{}: {e}", kubeconfig.display()))
        };
        let mut out = Credentials::default();
        for entry in users["users"].as_array().into_iter().flatten() {
            let (Some(name), user) = (entry["name"].as_str(), &entry["user"]) else {
                continue;
            };
            let token = match (user["token"].as_str(), user["tokenFile"].as_str()) {
                (Some(token), _) => Some(token.to_string()),
                (None, Some(path)) => Some(String::from_utf8_lossy(&file(path)?).trim().to_string()),
                (None, None) => None,
            };
            let pem = |inline: &str, path: &str| -> Result<Option<Vec<u8>>, String> {
                match (user[inline].as_str(), user[path].as_str()) {
                    (Some(d), _) => data(d).map(Some),
                    (None, Some(p)) => file(p).map(Some),
                    (None, None) => Ok(None),
                }
            };
            let certificate = match (
                pem("client-certificate-data", "client-certificate")?,
                pem("client-key-data", "client-key")?,
            ) {
                (Some(cert), Some(key)) => Some((cert, key)),
                (None, None) => None,
                _ => {
                    return Err(format!(
                        "{}: user {name:?} has a certificate or key without the other",
                        kubeconfig.display()
                    ));
                }
            };
            out.users.insert(name.to_string(), User { token, certificate });
        }
        Ok(out)
    }

    fn lookup(&self, target: &str) -> Option<(&str, &User)> {
        let find = |target: &str| {
            let steps: Vec<&str> = target.split('.').collect();
            std::iter::once(target.to_string())
                .chain((1..steps.len()).map(|i| format!("*.{}", steps[i..].join("."))))
                .find_map(|name| self.users.get_key_value(&name))
        };
        find(target)
            .or_else(|| target.strip_suffix(":443").and_then(find))
            .or_else(|| self.users.get_key_value("*"))
            .map(|(name, user)| (name.as_str(), user))
    }
}

/// Calls webhooks over pooled connections.
pub struct Caller {
    clients: Mutex<HashMap<ClientKey, HttpsClient>>,
    resolver: Resolver,
    credentials: Credentials,
}

/// Where a webhook is: its URL (with `?timeout=`), and the name credentials are found by.
fn locate(config: &WebhookClientConfig, timeout: Duration) -> Result<(String, String), String> {
    let (url, target) = match (&config.url, &config.service) {
        (Some(url), _) => {
            let uri: hyper::Uri = url.parse().map_err(|e| format!("invalid webhook URL {url:?}: {e}"))?;
            if uri.scheme_str() != Some("https") {
                return Err(format!("webhook URL {url:?} must use https"));
            }
            let target = uri.authority().map(|a| a.to_string()).unwrap_or_default();
            (url.clone(), target)
        }
        (None, Some(service)) => {
            let host = format!("{}.{}.svc", service.name, service.namespace);
            let port = service.port.unwrap_or(443);
            let path = service.path.as_deref().unwrap_or("/");
            let path = if path.starts_with('/') {
                path.to_string()
            } else {
                format!("/{path}")
            };
            (format!("https://{host}:{port}{path}"), format!("{host}:{port}"))
        }
        (None, None) => return Err("webhook clientConfig has neither url nor service".into()),
    };
    let join = if url.contains('?') { '&' } else { '?' };
    Ok((format!("{url}{join}timeout={}s", timeout.as_secs()), target))
}

impl Caller {
    /// A caller with `credentials`, resolving the names in `fixed` to their addresses.
    pub fn new(fixed: HashMap<String, IpAddr>, credentials: Credentials) -> Caller {
        Caller {
            clients: Mutex::default(),
            resolver: Resolver(Arc::new(fixed)),
            credentials,
        }
    }

    fn client(&self, ca: &[u8], user: Option<(&str, &User)>) -> Result<HttpsClient, String> {
        let key = (ca.to_vec(), user.map(|(name, _)| name.to_string()));
        let clients = || self.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = clients().get(&key) {
            return Ok(client.clone());
        }
        // Built without the lock: the system's roots are read from disk, and other calls must
        // not wait on that.
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = if ca.is_empty() {
            builder
                .with_native_roots()
                .map_err(|e| format!("loading the system's roots: {e}"))?
        } else {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca) {
                let cert = cert.map_err(|e| format!("invalid caBundle: {e}"))?;
                roots.add(cert).map_err(|e| format!("invalid caBundle: {e}"))?;
            }
            builder.with_root_certificates(roots)
        };
        let tls = match user.and_then(|(_, u)| u.certificate.as_ref()) {
            Some((chain, key)) => {
                let chain = CertificateDer::pem_slice_iter(chain)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("invalid client certificate: {e}"))?;
                let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("invalid client key: {e}"))?;
                builder.with_client_auth_cert(chain, key).map_err(|e| e.to_string())?
            }
            None => builder.with_no_client_auth(),
        };
        let mut http = HttpConnector::new_with_resolver(self.resolver.clone());
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_all_versions()
            .wrap_connector(http);
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(POOL_PER_HOST)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(https);
        let mut clients = clients();
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        // Another call may have built one meanwhile: keep the first, so connections pool.
        Ok(clients.entry(key).or_insert(client).clone())
    }

    /// POST `body` to the webhook within `timeout`: its status code and body, or why the
    /// call failed (in upstream's words: `Post "<url>": ...`).
    pub async fn post(
        &self,
        config: &WebhookClientConfig,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<(u16, Bytes), String> {
        let (url, target) = locate(config, timeout)?;
        let user = self.credentials.lookup(&target);
        let ca = config.ca_bundle.as_ref().map(|b| b.0.as_slice()).unwrap_or_default();
        let client = self.client(ca, user)?;
        let mut request = hyper::Request::post(&url)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::ACCEPT, "application/json");
        if let Some(token) = user.and_then(|(_, u)| u.token.as_deref()) {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("Post {url:?}: {e}"))?;
        let call = async {
            let response = client.request(request).await.map_err(|e| {
                let mut why = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(inner) = source {
                    why = format!("{why}: {inner}");
                    source = inner.source();
                }
                why
            })?;
            let code = response.status().as_u16();
            let bytes = Limited::new(response.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| format!("reading the response: {e}"))?
                .to_bytes();
            Ok::<_, String>((code, bytes))
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(why)) => Err(format!("Post {url:?}: {why}")),
            Err(_) => Err(format!("Post {url:?}: context deadline exceeded")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_found_as_kube_apiserver_finds_them() {
        let users = ["hook.ns.svc:8443", "*.ns.svc", "*.example.com", "*"];
        let credentials = Credentials {
            users: users.iter().map(|u| (u.to_string(), User::default())).collect(),
        };
        for (target, want) in [
            ("hook.ns.svc:8443", "hook.ns.svc:8443"),
            ("other.ns.svc:443", "*.ns.svc"),
            ("a.b.example.com:443", "*.example.com"),
            ("hook.elsewhere.svc:443", "*"),
        ] {
            assert_eq!(credentials.lookup(target).map(|(n, _)| n), Some(want), "{target}");
        }
    }

    #[test]
    fn services_and_urls_are_located_with_the_timeout() {
        let service = WebhookClientConfig {
            service: Some(k8s_openapi::api::admissionregistration::v1::ServiceReference {
                name: "hook".into(),
                namespace: "ns".into(),
                path: Some("validate".into()),
                port: None,
            }),
            ..Default::default()
        };
        assert_eq!(
            locate(&service, Duration::from_secs(7)).unwrap(),
            (
                "https://hook.ns.svc:443/validate?timeout=7s".to_string(),
                "hook.ns.svc:443".to_string()
            )
        );
        let url = WebhookClientConfig {
            url: Some("https://x.example.com:9443/v?a=b".into()),
            ..Default::default()
        };
        assert_eq!(
            locate(&url, Duration::from_secs(1)).unwrap().0,
            "https://x.example.com:9443/v?a=b&timeout=1s"
        );
        let plain = WebhookClientConfig {
            url: Some("http://x".into()),
            ..Default::default()
        };
        assert!(locate(&plain, Duration::from_secs(1)).is_err());
    }
}
