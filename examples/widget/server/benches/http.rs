//! The Widget server end to end over HTTPS, next to the physical limits, in one run: GETs
//! against a bare hyper+rustls endpoint returning the same bytes (anonymous, and with the admin
//! client certificate), lists against serde_json serializing the same objects, and on etcd
//! GETs, lists and creates against the raw etcd client on the same etcd. Prints a Markdown
//! table of the ratios (see BENCHMARKS.md).
//!
//! cargo bench -p widget-server --bench http
//! APIARY_BENCH_OBJECTS=10000 APIARY_BENCH_SECONDS=3 cargo bench -p widget-server --bench http

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use apiary_runtime::testing::{EtcdProcess, ServerProcess};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};

const BINARY: &str = env!("CARGO_BIN_EXE_widget-server");
const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";
const CONNECTIONS: usize = 16;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn pem_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// TLS to a server whose certificates are under `dir`, with the admin certificate or none.
fn client_tls(dir: &Path, admin: bool) -> Arc<rustls::ClientConfig> {
    let certs = dir.join(".apiary/certs");
    let mut roots = rustls::RootCertStore::empty();
    for c in pem_certs(&certs.join("ca.crt")) {
        roots.add(c).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(if admin {
        let key = PrivateKeyDer::from_pem_file(certs.join("admin.key")).unwrap();
        builder
            .with_client_auth_cert(pem_certs(&certs.join("admin.crt")), key)
            .unwrap()
    } else {
        builder.with_no_client_auth()
    })
}

type Sender = SendRequest<Full<Bytes>>;

async fn connect(addr: &str, tls: &Arc<rustls::ClientConfig>) -> Sender {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

async fn send(sender: &mut Sender, method: &str, path: &str, accept: &str, body: Option<&Value>) -> (u16, Bytes) {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1")
        .header("accept", accept)
        .header("content-type", "application/json")
        .body(Full::new(body.map(|b| Bytes::from(b.to_string())).unwrap_or_default()))
        .unwrap();
    sender.ready().await.unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    (status, response.into_body().collect().await.unwrap().to_bytes())
}

/// Requests per second of `path` from `CONNECTIONS` connections for `seconds`.
async fn get_rate(addr: &str, tls: &Arc<rustls::ClientConfig>, path: &str, seconds: f64) -> f64 {
    let done = Arc::new(AtomicUsize::new(0));
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut sender = connect(addr, tls).await;
        let (done, path) = (done.clone(), path.to_string());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                let (status, _) = send(&mut sender, "GET", &path, "application/json", None).await;
                assert_eq!(status, 200);
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let started = Instant::now();
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// A bare HTTPS endpoint answering every request with `body`, on the server's certificate
/// (asking for client certificates when `client_ca` is given, as the server does).
async fn bare_endpoint(dir: &Path, body: Bytes, client_ca: bool) -> String {
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
            let (acceptor, body) = (acceptor.clone(), body.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else { return };
                let service = hyper::service::service_fn(move |_request| {
                    let body = body.clone();
                    async move {
                        let mut response = hyper::Response::new(Full::new(body));
                        response
                            .headers_mut()
                            .insert("content-type", http::HeaderValue::from_static("application/json"));
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A widget of about 1.3 KB as stored (with its managedFields).
fn widget(i: usize) -> Value {
    json!({
        "apiVersion": "custom.example.com/v1", "kind": "Widget",
        "metadata": {"name": format!("w-{i:06}"), "labels": {"app": "bench", "tier": "backend"},
                     "annotations": {"description": "x".repeat(300)}},
        "spec": {"replicas": 3, "image": "registry.example.com/team/app:1.2.3", "color": "blue"},
    })
}

/// Create `count` widgets from `CONNECTIONS` connections; creates per second.
async fn create_all(addr: &str, tls: &Arc<rustls::ClientConfig>, count: usize) -> f64 {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut sender = connect(addr, tls).await;
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return;
                }
                let path = "/apis/custom.example.com/v1/namespaces/default/widgets";
                let (status, body) = send(&mut sender, "POST", path, "application/json", Some(&widget(i))).await;
                assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    count as f64 / started.elapsed().as_secs_f64()
}

/// The best of `reps` timings of `f`.
async fn best<F: std::future::Future<Output = ()>>(reps: usize, mut f: impl FnMut() -> F) -> Duration {
    let mut best = Duration::MAX;
    for _ in 0..reps {
        let t = Instant::now();
        f().await;
        best = best.min(t.elapsed());
    }
    best
}

fn proc_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap()
}

struct Lists {
    json: Duration,
    table: Duration,
    serde: Duration,
    bytes: usize,
    rss_growth: u64,
}

/// Time full lists of the widgets (JSON and Table), serde_json on the same objects, and the
/// server's peak RSS growth during one list.
async fn lists(server: &ServerProcess, tls: &Arc<rustls::ClientConfig>, count: usize) -> Lists {
    let addr = server.url.trim_start_matches("https://").to_string();
    let mut sender = connect(&addr, tls).await;
    let path = "/apis/custom.example.com/v1/namespaces/default/widgets";
    let (status, body) = send(&mut sender, "GET", path, "application/json", None).await;
    assert_eq!(status, 200);
    let items: Value = serde_json::from_slice::<Value>(&body).unwrap()["items"].take();
    assert_eq!(items.as_array().unwrap().len(), count);
    let pid = server.pid();
    // Reset the peak (VmHWM) so it measures this list alone.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let before = proc_kb(pid, "VmRSS:");
    let (status, _) = send(&mut sender, "GET", path, "application/json", None).await;
    assert_eq!(status, 200);
    let rss_growth = proc_kb(pid, "VmHWM:").saturating_sub(before) * 1024;
    let sender = tokio::sync::Mutex::new(sender);
    let json = best(5, || async {
        let (status, _) = send(&mut *sender.lock().await, "GET", path, "application/json", None).await;
        assert_eq!(status, 200);
    })
    .await;
    let table = best(5, || async {
        let (status, _) = send(&mut *sender.lock().await, "GET", path, TABLE, None).await;
        assert_eq!(status, 200);
    })
    .await;
    let serde = best(5, || async {
        std::hint::black_box(serde_json::to_vec(&items).unwrap());
    })
    .await;
    Lists {
        json,
        table,
        serde,
        bytes: body.len(),
        rss_growth,
    }
}

/// `CONNECTIONS`-way HTTP/2 connections carrying `count` watches of namespace `watch`; each
/// watcher records, for every event, the time since the writer sent that object's create
/// (its `a-sent` annotation, in nanoseconds since the Unix epoch).
async fn watch_fan_out(
    addr: &str,
    tls: &Arc<rustls::ClientConfig>,
    count: usize,
    rate: usize,
    seconds: f64,
) -> (f64, Vec<Duration>, usize) {
    let mut h2 = (**tls).clone();
    h2.alpn_protocols = vec![b"h2".to_vec()];
    let h2 = Arc::new(h2);
    let per_connection = 20;
    let writes = (rate as f64 * seconds) as usize;
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let ready = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for c in 0..count.div_ceil(per_connection) {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let stream = tokio_rustls::TlsConnector::from(h2.clone())
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap();
        let (sender, connection) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        for _ in 0..per_connection.min(count - c * per_connection) {
            let (mut sender, latencies, ready) = (sender.clone(), latencies.clone(), ready.clone());
            tasks.push(tokio::spawn(async move {
                let request = http::Request::builder()
                    .uri("/apis/custom.example.com/v1/namespaces/watch/widgets?watch=1&timeoutSeconds=600")
                    .header("host", "127.0.0.1")
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                sender.ready().await.unwrap();
                let mut body = sender.send_request(request).await.unwrap().into_body();
                ready.fetch_add(1, Ordering::SeqCst);
                let (mut buffer, mut mine, mut seen) = (Vec::new(), Vec::new(), 0);
                let deadline = tokio::time::sleep(Duration::from_secs_f64(seconds + 15.0));
                tokio::pin!(deadline);
                while seen < writes {
                    let frame = tokio::select! {
                        f = body.frame() => f,
                        () = &mut deadline => None,
                    };
                    let Some(Ok(frame)) = frame else { break };
                    let Ok(data) = frame.into_data() else { continue };
                    buffer.extend_from_slice(&data);
                    while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buffer.drain(..=end).collect();
                        let at = line.windows(10).position(|w| w == b"\"a-sent\":\"");
                        if let Some(sent) = at.and_then(|at| {
                            let rest = &line[at + 10..];
                            std::str::from_utf8(&rest[..rest.iter().position(|b| *b == b'"')?])
                                .ok()?
                                .parse::<u128>()
                                .ok()
                        }) {
                            let now = std::time::SystemTime::UNIX_EPOCH.elapsed().unwrap().as_nanos();
                            mine.push(Duration::from_nanos(now.saturating_sub(sent) as u64));
                            seen += 1;
                        }
                    }
                }
                latencies.lock().unwrap().extend(mine);
            }));
        }
    }
    while ready.load(Ordering::SeqCst) < count {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The writer: `rate` creates a second from 8 connections, for `seconds`.
    let written = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (addr, tls, written) = (addr.to_string(), tls.clone(), written.clone());
            tokio::spawn(async move {
                let mut sender = connect(&addr, &tls).await;
                let mut tick = tokio::time::interval(Duration::from_secs_f64(8.0 / rate as f64));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                let mut i = w;
                while i < writes {
                    tick.tick().await;
                    let sent = std::time::SystemTime::UNIX_EPOCH
                        .elapsed()
                        .unwrap()
                        .as_nanos()
                        .to_string();
                    let mut object = widget(i);
                    object["metadata"]["annotations"]["a-sent"] = json!(sent);
                    let path = "/apis/custom.example.com/v1/namespaces/watch/widgets";
                    let (status, _) = send(&mut sender, "POST", path, "application/json", Some(&object)).await;
                    assert_eq!(status, 201);
                    written.fetch_add(1, Ordering::Relaxed);
                    i += 8;
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let write_rate = written.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    for t in tasks {
        t.await.unwrap();
    }
    let mut latencies = std::mem::take(&mut *latencies.lock().unwrap());
    let missing = (count * writes).saturating_sub(latencies.len());
    latencies.sort();
    (write_rate, latencies, missing)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let count = env("APIARY_BENCH_OBJECTS", if quick { 200 } else { 10_000 });
    let seconds = env("APIARY_BENCH_SECONDS", if quick { 1 } else { 3 }) as f64;
    let mut rows = Vec::new();
    let mut row = |path: &str, apiary: String, reference: String, ratio: f64| {
        rows.push(format!("| {path} | {apiary} | {reference} | {ratio:.2} |"));
    };

    // Memory storage.
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--storage",
        "memory",
        "--anonymous-auth",
        "--authorization-mode",
        "AlwaysAllow",
    ];
    let server = ServerProcess::spawn(
        BINARY,
        dir.path(),
        &[&args[..], &["--status-controller", "false"]].concat(),
    );
    let addr = server.url.trim_start_matches("https://").to_string();
    let (anonymous, admin) = (client_tls(dir.path(), false), client_tls(dir.path(), true));
    let creates = create_all(&addr, &admin, count).await;
    let one = "/apis/custom.example.com/v1/namespaces/default/widgets/w-000001";
    let (_, object) = send(
        &mut connect(&addr, &anonymous).await,
        "GET",
        one,
        "application/json",
        None,
    )
    .await;
    let bare = bare_endpoint(dir.path(), object.clone(), false).await;
    let bare_mtls = bare_endpoint(dir.path(), object.clone(), true).await;
    let (got, limit) = (
        get_rate(&addr, &anonymous, one, seconds).await,
        get_rate(&bare, &anonymous, one, seconds).await,
    );
    row(
        "GET one object, 16 conns, memory, anonymous",
        format!("{got:.0}/s"),
        format!("bare endpoint: {limit:.0}/s"),
        got / limit,
    );
    let (got, limit) = (
        get_rate(&addr, &admin, one, seconds).await,
        get_rate(&bare_mtls, &admin, one, seconds).await,
    );
    row(
        "same, admin client certificate",
        format!("{got:.0}/s"),
        format!("bare endpoint, client certs: {limit:.0}/s"),
        got / limit,
    );
    let listed = lists(&server, &admin, count).await;
    let mb = listed.bytes as f64 / 1e6;
    row(
        &format!("LIST {count} ({mb:.1} MB), memory"),
        ms(listed.json),
        format!("serde_json: {}", ms(listed.serde)),
        listed.json.as_secs_f64() / listed.serde.as_secs_f64(),
    );
    row(
        &format!("LIST {count} as Table, memory"),
        ms(listed.table),
        format!("serde_json: {}", ms(listed.serde)),
        listed.table.as_secs_f64() / listed.serde.as_secs_f64(),
    );
    let growth = listed.rss_growth as f64 / 1e6;
    row(
        "peak RSS growth during that list",
        format!("{growth:.1} MB"),
        format!("the list: {mb:.1} MB"),
        growth / mb,
    );
    row(
        "creates, 16 conns, memory",
        format!("{creates:.0}/s"),
        "".into(),
        f64::NAN,
    );
    let (watchers, rate) = (env("APIARY_BENCH_WATCHERS", if quick { 100 } else { 1_000 }), 200);
    let (kept, latencies, missing) = watch_fan_out(&addr, &admin, watchers, rate, seconds.max(5.0)).await;
    let at = |q: f64| {
        latencies
            .get(((latencies.len().max(1) - 1) as f64 * q) as usize)
            .copied()
            .unwrap_or_default()
    };
    row(
        &format!("{watchers} watchers, creates offered at {rate}/s, memory"),
        format!(
            "writes kept {kept:.0}/s; delivery p50 {}, p99 {}, {missing} not delivered",
            ms(at(0.5)),
            ms(at(0.99))
        ),
        format!("offered: {rate}/s"),
        kept / rate as f64,
    );
    drop(server);

    // Embedded (redb): lists and creates (each create is durable before it is acknowledged).
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::spawn(
        BINARY,
        dir.path(),
        &["--storage", "embedded", "--status-controller", "false"],
    );
    let addr = server.url.trim_start_matches("https://").to_string();
    let admin = client_tls(dir.path(), true);
    let creates = create_all(&addr, &admin, count).await;
    row(
        "creates, 16 conns, embedded",
        format!("{creates:.0}/s"),
        "".into(),
        f64::NAN,
    );
    let listed = lists(&server, &admin, count).await;
    row(
        &format!("LIST {count}, embedded"),
        ms(listed.json),
        format!("serde_json: {}", ms(listed.serde)),
        listed.json.as_secs_f64() / listed.serde.as_secs_f64(),
    );
    drop(server);

    // etcd.
    let etcd_dir = tempfile::tempdir().unwrap();
    let etcd = EtcdProcess::start(etcd_dir.path());
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--storage",
        "etcd",
        "--etcd-servers",
        &etcd.endpoint(),
        "--status-controller",
        "false",
    ];
    let server = ServerProcess::spawn(BINARY, dir.path(), &args);
    let addr = server.url.trim_start_matches("https://").to_string();
    let admin = client_tls(dir.path(), true);
    let creates = create_all(&addr, &admin, count).await;
    let raw = raw_etcd(&etcd.endpoint(), count, object.len(), seconds).await;
    row(
        "creates over HTTPS on etcd, 16 conns",
        format!("{creates:.0}/s"),
        format!("raw put-if-absent: {:.0}/s", raw.creates),
        creates / raw.creates,
    );
    let got = get_rate(&addr, &admin, one, seconds).await;
    row(
        "GET on etcd, 16 conns",
        format!("{got:.0}/s"),
        format!("raw get: {:.0}/s", raw.gets),
        got / raw.gets,
    );
    let listed = lists(&server, &admin, count).await;
    row(
        &format!("LIST {count} on etcd"),
        ms(listed.json),
        format!("serde_json: {}", ms(listed.serde)),
        listed.json.as_secs_f64() / listed.serde.as_secs_f64(),
    );
    row(
        &format!("LIST {count} on etcd, against the raw range"),
        ms(listed.json),
        format!("raw paged range: {}", ms(raw.range)),
        listed.json.as_secs_f64() / raw.range.as_secs_f64(),
    );

    println!(
        "{count} widgets of ~{} bytes; {CONNECTIONS} connections; best of 5 for lists\n",
        object.len()
    );
    println!("| path | Apiary | reference (same run) | ratio |\n|---|---|---|---|");
    for r in rows {
        println!("{}", r.replace("| NaN |", "| |"));
    }
}

struct Raw {
    creates: f64,
    gets: f64,
    range: Duration,
}

/// The raw etcd client on the same etcd: put-if-absent of `count` new keys of `size` bytes,
/// gets of one key, and a paged range over them (1,000 keys a page: one answer would pass
/// gRPC's 4 MiB limit).
async fn raw_etcd(endpoint: &str, count: usize, size: usize, seconds: f64) -> Raw {
    use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
    let client = etcd_client::Client::connect([endpoint], None).await.unwrap();
    let value = vec![b'x'; size];
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let (mut client, next, value) = (client.clone(), next.clone(), value.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return;
                }
                let key = format!("/raw/{i:06}");
                let txn = Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key, value.clone(), None)]);
                assert!(client.txn(txn).await.unwrap().succeeded());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let creates = count as f64 / started.elapsed().as_secs_f64();
    let done = Arc::new(AtomicUsize::new(0));
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (mut client, done) = (client.clone(), done.clone());
            tokio::spawn(async move {
                while Instant::now() < until {
                    assert_eq!(client.get("/raw/000001", None).await.unwrap().kvs().len(), 1);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let gets = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    let mut client = client.clone();
    let range = best(5, || {
        let mut client = client.clone();
        async move {
            let (mut start, mut total) = ("/raw/".to_string(), 0);
            loop {
                let options = GetOptions::new().with_range("/raw0").with_limit(1_000);
                let answer = client.get(start.clone(), Some(options)).await.unwrap();
                total += answer.kvs().len();
                let Some(last) = answer.kvs().last() else { break };
                start = format!("{}\0", last.key_str().unwrap());
                if !answer.more() {
                    break;
                }
            }
            assert_eq!(total, count);
        }
    })
    .await;
    let _ = client.status().await;
    Raw { creates, gets, range }
}
