//! Test harness: a real `widget-server` process on a free loopback port, and the real kubectl.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[allow(unused_imports)]
pub use apiary_runtime::testing::{KUBECTL_DIR, Kubectl, Run, ServerProcess, VERSIONS, eventually};

/// Starting widget-server processes.
pub trait WidgetServer {
    /// Start widget-server in `dir` with extra flags and wait until it listens.
    fn start_in(dir: &Path, args: &[&str]) -> ServerProcess;
    /// Start widget-server with in-memory storage in a fresh directory.
    fn start(dir: &Path) -> ServerProcess;
    /// Start widget-server in `dir` on `etcd`, with extra flags.
    fn on_etcd(dir: &Path, etcd: &apiary_runtime::testing::EtcdProcess, extra: &[&str]) -> ServerProcess;
    /// A `kube` client for this server with the admin credentials.
    async fn client(&self) -> kube::Client;
}

impl WidgetServer for ServerProcess {
    fn start_in(dir: &Path, args: &[&str]) -> ServerProcess {
        ServerProcess::spawn(env!("CARGO_BIN_EXE_widget-server"), dir, args)
    }

    fn start(dir: &Path) -> ServerProcess {
        Self::start_in(dir, &["--storage", "memory"])
    }

    fn on_etcd(dir: &Path, etcd: &apiary_runtime::testing::EtcdProcess, extra: &[&str]) -> ServerProcess {
        let endpoint = etcd.endpoint();
        Self::start_in(
            dir,
            &[&["--storage", "etcd", "--etcd-servers", &endpoint], extra].concat(),
        )
    }

    async fn client(&self) -> kube::Client {
        kube_client(&self.kubeconfig, &self.url).await
    }
}

/// Flags for a widget-server on memory storage whose core API (authentication,
/// authorization, namespaces, webhook configurations) is the stand-in at `kubeconfig`.
pub fn core_api_flags(kubeconfig: &Path) -> Vec<String> {
    let kubeconfig = kubeconfig.to_str().unwrap().to_string();
    ["--storage", "memory", "--authentication-kubeconfig"]
        .into_iter()
        .map(str::to_string)
        .chain([kubeconfig.clone(), "--authorization-kubeconfig".into(), kubeconfig])
        .collect()
}

/// Another replica of the server that ran in `first` on `etcd`, in `dir`, sharing its
/// certificates (as pods share a Secret), with `extra` flags. The first one's kubectl reaches
/// it with `--server`.
pub fn replica_of(
    first: &Path,
    dir: &Path,
    etcd: &apiary_runtime::testing::EtcdProcess,
    extra: &[&str],
) -> ServerProcess {
    replica_on(first, dir, &etcd.endpoint(), extra)
}

/// [`replica_of`] on the etcd at `etcd_servers` (comma-separated endpoints).
pub fn replica_on(first: &Path, dir: &Path, etcd_servers: &str, extra: &[&str]) -> ServerProcess {
    let certs = first.join(".apiary/certs");
    let (cert, key, ca) = (
        certs.join("apiserver.crt"),
        certs.join("apiserver.key"),
        certs.join("ca.crt"),
    );
    let mut args = vec![
        "--storage",
        "etcd",
        "--etcd-servers",
        etcd_servers,
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-private-key-file",
        key.to_str().unwrap(),
        "--client-ca-file",
        ca.to_str().unwrap(),
    ];
    args.extend(extra);
    ServerProcess::start_in(dir, &args)
}

/// A Widget manifest.
pub fn widget(name: &str, replicas: i32, extra_spec: &str) -> String {
    format!(
        "apiVersion: custom.example.com/v1\nkind: Widget\nmetadata:\n  name: {name}\n  labels:\n    app: demo\nspec:\n  replicas: {replicas}\n  image: nginx:1.25\n{extra_spec}"
    )
}

/// A `kube` client for `url` with the admin credentials in `kubeconfig`.
pub async fn kube_client(kubeconfig: &Path, url: &str) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let options = kube::config::KubeConfigOptions::default();
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .unwrap();
    config.cluster_url = url.parse().unwrap();
    kube::Client::try_from(config).unwrap()
}

/// A `kube` client with the credentials in `kubeconfig` that does not retry 429, 503 and 504
/// answers itself (kube-rs's default), for tests where those answers are the point.
pub async fn kube_client_without_retries(kubeconfig: &Path) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    config.default_retry = false;
    kube::Client::try_from(config).unwrap()
}

/// A typed Widget with `replicas` of nginx.
pub fn typed_widget(name: &str, replicas: i32) -> widget_api::Widget {
    let spec = widget_api::WidgetSpec {
        replicas,
        image: "nginx:1.25".into(),
        color: String::new(),
    };
    let mut w = widget_api::Widget {
        spec,
        ..Default::default()
    };
    w.metadata.name = Some(name.into());
    w
}

/// The resourceVersion of a fresh list (where a watch that misses nothing starts).
pub async fn list_rv(api: &kube::Api<widget_api::Widget>) -> String {
    api.list(&Default::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap()
}

/// The `(code, reason)` of a kube API error's Status (`(0, "")` for other errors).
pub fn status_of(error: &kube::Error) -> (u16, &str) {
    match error {
        kube::Error::Api(s) => (s.code, s.reason.as_str()),
        _ => (0, ""),
    }
}

/// A TLS connection to the server as its admin (the generated client certificate).
pub async fn connect(server: &ServerProcess) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    connect_to(&server.url, &server.dir).await
}

/// The admin's TLS client configuration for the server whose certificates are under `dir`.
pub fn admin_tls(dir: &Path) -> rustls::ClientConfig {
    let certs = dir.join(".apiary/certs");
    tls_as(dir, &certs.join("admin.crt"), &certs.join("admin.key"))
}

/// A TLS client configuration presenting `cert` and `key` to the server whose certificates
/// (its CA) are under `dir`.
pub fn tls_as(dir: &Path, cert: &Path, key: &Path) -> rustls::ClientConfig {
    let read = |path: &Path| std::fs::read(path).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&read(&dir.join(".apiary/certs/ca.crt"))) {
        roots.add(c.unwrap()).unwrap();
    }
    let chain = CertificateDer::pem_slice_iter(&read(cert))
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(&read(key)).unwrap();
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap()
}

/// A TLS connection as the admin to the server at `url` whose certificates are under `dir`,
/// offering `alpn` protocols (none: HTTP/1.1).
pub async fn connect_alpn(
    url: &str,
    dir: &Path,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut config = admin_tls(dir);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let addr = url.trim_start_matches("https://");
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap()
}

/// A TLS connection as the admin to the server at `url` whose certificates are under `dir`.
pub async fn connect_to(url: &str, dir: &Path) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    connect_alpn(url, dir, &[]).await
}

/// Send `head` (request line and headers, without the blank line) and `body`; read to EOF.
pub async fn exchange(server: &ServerProcess, head: &str, body: &str) -> String {
    exchange_over(connect(server).await, head, body).await
}

/// [`exchange`] on a connection the caller made (as another user, say).
pub async fn exchange_over(
    mut tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    head: &str,
    body: &str,
) -> String {
    let request = format!("{head}\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n{body}");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response).into_owned()
}

/// Send `head` (no body) and read one response, without waiting for the connection to end:
/// for answers that come before a body the client has not sent.
pub async fn first_response(server: &ServerProcess, head: &str) -> RawResponse {
    let mut tls = connect(server).await;
    tls.write_all(format!("{head}\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tls.read(&mut chunk).await.unwrap_or(0);
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let parsed = RawResponse::parse(&format!("{head}\r\n\r\n"));
            let len: usize = parsed
                .header("content-length")
                .and_then(|l| l.parse().ok())
                .unwrap_or(0);
            if body.len() >= len || n == 0 {
                return RawResponse::parse(&text);
            }
        }
        if n == 0 {
            return RawResponse::parse(&text);
        }
    }
}

/// A response read off the wire: status code, headers (lower-case names) and the body
/// (de-chunked).
#[derive(Debug)]
pub struct RawResponse {
    /// The status code.
    pub code: u16,
    /// Header lines as `(name, value)`, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl RawResponse {
    /// Parse what [`exchange`] read.
    pub fn parse(raw: &str) -> RawResponse {
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
        let mut lines = head.split("\r\n");
        let code = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let chunked = headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
        let body = if chunked { dechunk(body) } else { body.to_string() };
        RawResponse { code, headers, body }
    }

    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_default()
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

/// One request over a fresh admin TLS connection (`Connection: close`), parsed.
pub async fn raw(server: &ServerProcess, method: &str, path: &str, content_type: &str, body: &str) -> RawResponse {
    let head = if body.is_empty() && content_type.is_empty() {
        format!("{method} {path} HTTP/1.1")
    } else {
        format!(
            "{method} {path} HTTP/1.1\r\nContent-Type: {content_type}\r\nContent-Length: {}",
            body.len()
        )
    };
    RawResponse::parse(&exchange(server, &head, body).await)
}

/// Flags that audit every request at `Metadata` level into a log under `dir`, and that log.
pub fn metadata_audit(dir: &Path) -> ([String; 4], std::path::PathBuf) {
    let policy = dir.join("audit-policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n",
    )
    .unwrap();
    let log = dir.join("audit.log");
    let flags = [
        "--audit-log-path".to_string(),
        log.display().to_string(),
        "--audit-policy-file".to_string(),
        policy.display().to_string(),
    ];
    (flags, log)
}

pub mod flows;

/// Manifests and reads of Widget at its two versions (v1 stored, v1alpha1 deprecated).
pub mod versions {
    use serde_json::Value;

    use super::Kubectl;

    /// Widgets at v1, for kubectl.
    pub const V1: &str = "widgets.v1.custom.example.com";
    /// Widgets at v1alpha1, for kubectl.
    pub const ALPHA: &str = "widgets.v1alpha1.custom.example.com";
    /// The v1alpha1 deprecation warning.
    pub const DEPRECATED: &str = "custom.example.com/v1alpha1 Widget is deprecated; use custom.example.com/v1 Widget";

    /// A v1alpha1 Widget manifest.
    pub fn alpha(name: &str, size: &str, image: &str) -> String {
        format!(
            "apiVersion: custom.example.com/v1alpha1\nkind: Widget\nmetadata:\n  name: {name}\nspec:\n  size: {size}\n  image: {image}\n"
        )
    }

    /// A v1 Widget manifest of nginx:1.27.
    pub fn v1(name: &str, replicas: i32, color: &str) -> String {
        format!(
            "apiVersion: custom.example.com/v1\nkind: Widget\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  image: nginx:1.27\n  color: {color}\n"
        )
    }

    /// `kubectl get resource name -o json`.
    pub fn get(k: &Kubectl, resource: &str, name: &str) -> Value {
        serde_json::from_str(&k.ok(&["get", resource, name, "-o", "json"])).unwrap()
    }
}

/// Apply a WidgetPolicy and wait until the admission step can see it: the step reads the watch
/// cache (as an informer-fed plugin does), which has a write within milliseconds, not at once.
pub fn apply_policy(k: &Kubectl, yaml: &str) {
    k.ok_stdin(&["apply", "-f", "-"], yaml);
    let name = yaml
        .lines()
        .find_map(|l| l.trim().strip_prefix("name: "))
        .expect("the policy has a name");
    eventually("the watch cache holds the policy", || {
        let cached = k.run(&[
            "get",
            "--raw",
            "/apis/custom.example.com/v1/widgetpolicies?resourceVersion=0",
        ]);
        cached.stdout.contains(&format!("\"name\":\"{name}\"")).then_some(())
    });
}
