//! The physical limits measured next to the server: a bare hyper+rustls endpoint and the raw
//! etcd client.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use apiary_runtime::testing::raw_etcd::Channel;
use apiary_runtime::testing::raw_etcd::kv_client::KvClient;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

use super::CONNECTIONS;
use super::client::{Measured, each_name, pem_certs, provider, rate};

/// The argument that makes this benchmark's binary a bare endpoint (see [`bare_endpoint`]).
pub(crate) const BARE: &str = "bare-endpoint";

/// A bare endpoint in a process of its own, killed when dropped.
pub(crate) struct Bare {
    /// `host:port`.
    pub(crate) addr: String,
    child: std::process::Child,
}

impl Bare {
    /// The endpoint's process.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a bare endpoint answers.
pub(crate) enum Answer {
    /// Every request with this body.
    Fixed(Bytes),
    /// Every request by storing its body with a put-if-absent on etcd at this client URL (a new
    /// key each time), then echoing it with 201: HTTPS and one etcd transaction, no API server.
    EtcdCreate(String),
}

/// A bare HTTPS endpoint answering as `answer` says, on the server's certificate (asking for
/// client certificates when `client_ca` is given, as the server does). It runs in a process of
/// its own, as the server does: in the load generator's process it would share its threads and
/// skip the switches between processes the server pays for.
pub(crate) fn bare_endpoint(dir: &Path, answer: &Answer, client_ca: bool) -> Bare {
    use std::io::BufRead;
    let what = match answer {
        Answer::Fixed(body) => {
            let file = dir.join(if client_ca { "bare-body-mtls" } else { "bare-body" });
            std::fs::write(&file, body).unwrap();
            format!("file={}", file.display())
        }
        Answer::EtcdCreate(endpoint) => format!("etcd={endpoint}"),
    };
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([BARE, &dir.display().to_string(), &what])
        .arg(if client_ca { "mtls" } else { "anonymous" })
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    Bare {
        addr: line.trim().to_string(),
        child,
    }
}

/// Serve [`bare_endpoint`] in this process:
/// `bare-endpoint <dir> <file=BODY FILE|etcd=URL> <mtls|anonymous>`; prints the address, then
/// serves until killed.
pub(crate) async fn serve_bare(args: &[String]) {
    let usage = || panic!("usage: {BARE} <dir> <file=BODY FILE|etcd=URL> <mtls|anonymous>");
    let [dir, what, mode] = args else { usage() };
    let answer = match what.split_once('=') {
        Some(("file", body)) => Answer::Fixed(Bytes::from(std::fs::read(body).unwrap())),
        Some(("etcd", endpoint)) => Answer::EtcdCreate(endpoint.to_string()),
        _ => usage(),
    };
    let addr = listen_bare(Path::new(dir), answer, mode == "mtls").await;
    println!("{addr}");
    std::future::pending::<()>().await;
}

/// What the bare endpoint's connections share.
#[derive(Clone)]
enum Serving {
    Fixed(Bytes),
    EtcdCreate(KvClient<Channel>, Arc<AtomicUsize>),
}

impl Serving {
    async fn answer(self, request: hyper::Request<hyper::body::Incoming>) -> hyper::Response<Full<Bytes>> {
        let (status, body) = match self {
            Self::Fixed(body) => (http::StatusCode::OK, body),
            Self::EtcdCreate(mut client, next) => {
                let body = request.into_body().collect().await.unwrap().to_bytes();
                let key = format!("/bare/{:06}", next.fetch_add(1, Ordering::Relaxed));
                let txn = apiary_runtime::testing::raw_etcd::create(key, body.to_vec());
                assert!(client.txn(txn).await.unwrap().into_inner().succeeded);
                (http::StatusCode::CREATED, body)
            }
        };
        let mut response = hyper::Response::new(Full::new(body));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert("content-type", http::HeaderValue::from_static("application/json"));
        response
    }
}

async fn listen_bare(dir: &Path, answer: Answer, client_ca: bool) -> String {
    let serving = match answer {
        Answer::Fixed(body) => Serving::Fixed(body),
        Answer::EtcdCreate(endpoint) => {
            let channel = apiary_runtime::testing::raw_etcd::channel(&endpoint).await;
            Serving::EtcdCreate(KvClient::new(channel), Arc::default())
        }
    };
    let certs = dir.join(".apiary/certs");
    let key = PrivateKeyDer::from_pem_file(certs.join("apiserver.key")).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if client_ca {
        let mut roots = rustls::RootCertStore::empty();
        for c in pem_certs(&certs.join("ca.crt")) {
            roots.add(c).unwrap();
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .allow_unauthenticated()
            .build()
            .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder
        .with_single_cert(pem_certs(&certs.join("apiserver.crt")), key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let (acceptor, serving) = (acceptor.clone(), serving.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else { return };
                let service = hyper::service::service_fn(move |request| {
                    let serving = serving.clone();
                    async move { Ok::<_, std::convert::Infallible>(serving.answer(request).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// Gets of one key written by [`raw_creates`] per second, with the raw etcd client.
pub(crate) async fn raw_gets(endpoint: &str, seconds: f64) -> Measured {
    use apiary_runtime::testing::raw_etcd as raw;
    let client = raw::kv_client::KvClient::new(raw::channel(endpoint).await);
    rate(vec![client; CONNECTIONS], seconds, None, |mut client| async move {
        let get = raw::RangeRequest {
            key: b"/raw/000001".to_vec(),
            ..Default::default()
        };
        assert_eq!(client.range(get).await.unwrap().into_inner().kvs.len(), 1);
        client
    })
    .await
}

/// Put-if-absent of the new keys `{prefix}{i:06}` for each `i` of `keys`, values of `size`
/// bytes, from `CONNECTIONS` tasks on one channel (as the server's); puts per second.
pub(crate) async fn raw_creates(endpoint: &str, prefix: &'static str, keys: Range<usize>, size: usize) -> f64 {
    use apiary_runtime::testing::raw_etcd as raw;
    let client = raw::kv_client::KvClient::new(raw::channel(endpoint).await);
    let value = vec![b'x'; size];
    each_name(vec![client; CONNECTIONS], keys, move |mut client, i| {
        let txn = raw::create(format!("{prefix}{i:06}"), value.clone());
        async move {
            assert!(client.txn(txn).await.unwrap().into_inner().succeeded);
            client
        }
    })
    .await
}

/// A watch on every key under `prefix`, with previous values, that reads and drops its events:
/// what such a watch costs etcd per write. The server's watch cache asked for previous values
/// until it filled them in itself (`Storage::follow`). Abort the task to end it.
pub(crate) async fn raw_watch(endpoint: &str, prefix: &str) -> tokio::task::JoinHandle<()> {
    use apiary_runtime::testing::raw_etcd as raw;
    use futures::StreamExt;
    // etcd ends a watch when the client's side of the stream ends.
    let requests = futures::stream::iter([raw::watch(prefix, true)]).chain(futures::stream::pending());
    let mut stream = raw::watch_client::WatchClient::new(raw::channel(endpoint).await)
        .watch(requests)
        .await
        .unwrap()
        .into_inner();
    tokio::spawn(async move { while let Ok(Some(_)) = stream.message().await {} })
}

/// How many times etcd at `endpoint` has synced its WAL (`etcd_disk_wal_fsync_duration_seconds`'s
/// count on its `/metrics`): each sync commits the batch of writes pending then.
pub(crate) async fn wal_syncs(endpoint: &str) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(endpoint.trim_start_matches("http://"))
        .await
        .unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    let line = answer
        .lines()
        .find(|l| l.starts_with("etcd_disk_wal_fsync_duration_seconds_count "))
        .expect("etcd reports its WAL syncs");
    line.split(' ').nth(1).unwrap().parse().unwrap()
}

/// A paged range of the `count` keys under `prefix` on `client`, 1,000 keys a page (one answer
/// would pass gRPC's 4 MiB): the raw client's list.
pub(crate) async fn raw_range(mut client: KvClient<Channel>, prefix: &str, count: usize) {
    use apiary_runtime::testing::raw_etcd as raw;
    let (mut start, mut total) = (prefix.as_bytes().to_vec(), 0);
    loop {
        let page = raw::RangeRequest {
            key: start.clone(),
            limit: 1_000,
            ..raw::prefix(prefix)
        };
        let answer = client.range(page).await.unwrap().into_inner();
        total += answer.kvs.len();
        let Some(last) = answer.kvs.last() else { break };
        start = [last.key.as_slice(), b"\0"].concat();
        if !answer.more {
            break;
        }
    }
    assert_eq!(total, count);
}
