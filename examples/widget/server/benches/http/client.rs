//! The load side: TLS clients (anonymous or the admin's certificate), requests, creates,
//! timed lists with the server's peak memory, and the watch fan-out.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use apiary_runtime::testing::ServerProcess;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};

use super::{CONNECTIONS, TABLE};

/// The crypto provider every TLS side of the benchmark uses.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM file.
pub(crate) fn pem_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// TLS to a server whose certificates are under `dir`, with the admin certificate or none.
pub(crate) fn client_tls(dir: &Path, admin: bool) -> Arc<rustls::ClientConfig> {
    let certs = dir.join(".apiary/certs");
    let pair = admin.then(|| (certs.join("admin.crt"), certs.join("admin.key")));
    tls_trusting(
        &certs.join("ca.crt"),
        pair.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
    )
}

/// TLS trusting the CA in `ca`, presenting the client certificate and key `pair` if given.
pub(crate) fn tls_trusting(ca: &Path, pair: Option<(&Path, &Path)>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in pem_certs(ca) {
        roots.add(c).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match pair {
        Some((cert, key)) => builder
            .with_client_auth_cert(pem_certs(cert), PrivateKeyDer::from_pem_file(key).unwrap())
            .unwrap(),
        None => builder.with_no_client_auth(),
    })
}

/// An HTTP/1.1 connection's request sender.
pub(crate) type Sender = SendRequest<Full<Bytes>>;

/// A TLS (HTTP/1.1) connection to `addr`.
pub(crate) async fn connect(addr: &str, tls: &Arc<rustls::ClientConfig>) -> Sender {
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

/// One request; its status and body.
pub(crate) async fn send(
    sender: &mut Sender,
    method: &str,
    path: &str,
    accept: &str,
    body: Option<&Value>,
) -> (u16, Bytes) {
    let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    send_as(sender, method, path, accept, "application/json", body).await
}

/// One request with a body of `content_type`; its status and body.
pub(crate) async fn send_as(
    sender: &mut Sender,
    method: &str,
    path: &str,
    accept: &str,
    content_type: &str,
    body: Bytes,
) -> (u16, Bytes) {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1")
        .header("accept", accept)
        .header("content-type", content_type)
        .body(Full::new(body))
        .unwrap();
    sender.ready().await.unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    (status, response.into_body().collect().await.unwrap().to_bytes())
}

/// Operations before a rate is counted.
const WARM_UP: Duration = Duration::from_millis(500);

/// The collection every bench widget is created in and listed from.
pub(crate) const WIDGETS: &str = "/apis/custom.example.com/v1/namespaces/default/widgets";

/// A measured rate and what it cost the process serving it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Measured {
    /// Operations per second, after the warm-up.
    pub(crate) per_second: f64,
    /// The serving process's CPU time (user and system) per operation, warm-up included, in
    /// microseconds; NaN when not measured.
    pub(crate) cpu_us: f64,
}

/// `work`'s result, and the CPU time each of `pids` spent while it ran, in microseconds.
pub(crate) async fn with_cpu<T>(pids: &[u32], work: impl Future<Output = T>) -> (T, Vec<f64>) {
    let before: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect();
    let result = work.await;
    let spent = pids
        .iter()
        .zip(before)
        .map(|(p, b)| (cpu_ticks(*p) - b) as f64 / TICKS * 1e6)
        .collect();
    (result, spent)
}

/// A process's CPU time so far (user and system), in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name (which may hold spaces): utime and stime are the
    // 12th and 13th of them.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Clock ticks per second of `/proc/PID/stat` (USER_HZ, 100 on Linux).
const TICKS: f64 = 100.0;

/// Operations per second of one loop of `op` per client for `seconds`, counted from the end of
/// a warm-up, the same for every endpoint measured: the first requests on a connection (and a
/// process's first busy second) run slower than the rest. `op` hands its client back. With
/// `pid`, also that process's CPU time per operation.
pub(crate) async fn rate<C, F, Fut>(clients: Vec<C>, seconds: f64, pid: Option<u32>, op: F) -> Measured
where
    C: Send + 'static,
    F: Fn(C) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = C> + Send,
{
    let (done, all) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let ticks = pid.map(cpu_ticks);
    let counted_from = Instant::now() + WARM_UP;
    let until = counted_from + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for client in clients {
        let (done, all, op) = (done.clone(), all.clone(), op.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = client;
            loop {
                let sent = Instant::now();
                if sent >= until {
                    break;
                }
                client = op(client).await;
                all.fetch_add(1, Ordering::Relaxed);
                if sent >= counted_from {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let cpu_us = match (pid, ticks) {
        (Some(pid), Some(before)) => {
            (cpu_ticks(pid) - before) as f64 / TICKS * 1e6 / all.load(Ordering::Relaxed).max(1) as f64
        }
        _ => f64::NAN,
    };
    Measured {
        per_second: done.load(Ordering::Relaxed) as f64 / seconds,
        cpu_us,
    }
}

/// Repetitions of each side of a compared pair of rates.
const PAIRED: usize = 3;

/// Two rates measured in turns (`a`, `b`, `a`, `b`, ...), so drift on a shared machine falls
/// on both alike; the median of each (rate and CPU cost apart).
pub(crate) async fn paired<FA, FB>(a: impl Fn() -> FA, b: impl Fn() -> FB) -> (Measured, Measured)
where
    FA: std::future::Future<Output = Measured>,
    FB: std::future::Future<Output = Measured>,
{
    let (mut first, mut second) = (Vec::new(), Vec::new());
    for _ in 0..PAIRED {
        first.push(a().await);
        second.push(b().await);
    }
    let median = |v: &[Measured], field: fn(&Measured) -> f64| {
        let mut values: Vec<f64> = v.iter().map(field).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let of = |v: &[Measured]| Measured {
        per_second: median(v, |m| m.per_second),
        cpu_us: median(v, |m| m.cpu_us),
    };
    (of(&first), of(&second))
}

/// GETs of `path` per second over `CONNECTIONS` connections for `seconds`, and the CPU time
/// each cost process `pid` (the server, or the bare endpoint).
pub(crate) async fn get_rate(
    addr: &str,
    tls: &Arc<rustls::ClientConfig>,
    path: &str,
    seconds: f64,
    pid: u32,
) -> Measured {
    let mut senders = Vec::new();
    for _ in 0..CONNECTIONS {
        senders.push(connect(addr, tls).await);
    }
    let path = Arc::new(path.to_string());
    rate(senders, seconds, Some(pid), move |mut sender| {
        let path = path.clone();
        async move {
            let (status, _) = send(&mut sender, "GET", &path, "application/json", None).await;
            assert_eq!(status, 200);
            sender
        }
    })
    .await
}

/// A widget of about 1.3 KB as stored (with its managedFields).
pub(crate) fn widget(i: usize) -> Value {
    json!({
        "apiVersion": "custom.example.com/v1", "kind": "Widget",
        "metadata": {"name": format!("w-{i:06}"), "labels": {"app": "bench", "tier": "backend"},
                     "annotations": {"description": "x".repeat(300)}},
        "spec": {"replicas": 3, "image": "registry.example.com/team/app:1.2.3", "color": "blue"},
    })
}

/// Create widgets `names` (`w-000000`...) from `CONNECTIONS` connections; creates per second.
pub(crate) async fn create_all(addr: &str, tls: &Arc<rustls::ClientConfig>, names: Range<usize>) -> f64 {
    create_each(addr, tls, names, WIDGETS, widget).await
}

/// A v1alpha1 Widget (`a-000000`...), as the deprecated version's clients write them.
pub(crate) fn alpha_widget(i: usize) -> Value {
    json!({
        "apiVersion": "custom.example.com/v1alpha1", "kind": "Widget",
        "metadata": {"name": format!("a-{i:06}"), "labels": {"app": "bench", "tier": "backend"},
                     "annotations": {"description": "x".repeat(300)}},
        "spec": {"size": "medium", "image": "registry.example.com/team/app:1.2.3"},
    })
}

/// POST `body(i)` for each `i` of `names` to `path` over `CONNECTIONS` connections; creates a
/// second.
pub(crate) async fn create_each(
    addr: &str,
    tls: &Arc<rustls::ClientConfig>,
    names: Range<usize>,
    path: &'static str,
    body: fn(usize) -> Value,
) -> f64 {
    let mut senders = Vec::new();
    for _ in 0..CONNECTIONS {
        senders.push(connect(addr, tls).await);
    }
    each_name(senders, names, move |mut sender, i| async move {
        let (status, answer) = send(&mut sender, "POST", path, "application/json", Some(&body(i))).await;
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&answer));
        sender
    })
    .await
}

/// `op` for each of `names`, from one task per client, each taking the next name until none is
/// left; operations per second.
pub(crate) async fn each_name<C, F, Fut>(clients: Vec<C>, names: Range<usize>, op: F) -> f64
where
    C: Send + 'static,
    F: Fn(C, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = C> + Send,
{
    let (count, end) = (names.len(), names.end);
    let next = Arc::new(AtomicUsize::new(names.start));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in clients {
        let (next, op) = (next.clone(), op.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = client;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return;
                }
                client = op(client, i).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    count as f64 / started.elapsed().as_secs_f64()
}

/// One list of `path` (e.g. the first at a version, converting every item), then the best
/// of five more.
pub(crate) async fn list_times(addr: &str, tls: &Arc<rustls::ClientConfig>, path: &str) -> (Duration, Duration) {
    let sender = tokio::sync::Mutex::new(connect(addr, tls).await);
    let once = || async {
        let (status, _) = send(&mut *sender.lock().await, "GET", path, "application/json", None).await;
        assert_eq!(status, 200);
    };
    let first = best(1, once).await;
    (first, best(5, once).await)
}

/// The best of `reps` timings of `f`.
pub(crate) async fn best<F: std::future::Future<Output = ()>>(reps: usize, mut f: impl FnMut() -> F) -> Duration {
    let mut best = Duration::MAX;
    for _ in 0..reps {
        let t = Instant::now();
        f().await;
        best = best.min(t.elapsed());
    }
    best
}

/// The best of `reps` timings each of `a` and `b`, taken in turns (a, b, a, b...) so that what
/// drifts during the run (etcd's background work, the machine) weighs on both alike.
pub(crate) async fn best_in_turns<FA, FB>(
    reps: usize,
    mut a: impl FnMut() -> FA,
    mut b: impl FnMut() -> FB,
) -> (Duration, Duration)
where
    FA: std::future::Future<Output = ()>,
    FB: std::future::Future<Output = ()>,
{
    let (mut first, mut second) = (Duration::MAX, Duration::MAX);
    for _ in 0..reps {
        first = first.min(best(1, &mut a).await);
        second = second.min(best(1, &mut b).await);
    }
    (first, second)
}

/// A `kB` field of a process's `/proc/PID/status`.
pub(crate) fn proc_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap()
}

/// Best list times, the list's size and the server's peak RSS growth during one.
pub(crate) struct Lists {
    pub(crate) json: Duration,
    pub(crate) table: Duration,
    pub(crate) serde: Duration,
    pub(crate) bytes: usize,
    pub(crate) rss_growth: u64,
}

/// Time full lists of the widgets (JSON and Table), serde_json on the same objects, and the
/// server's peak RSS growth during one list.
pub(crate) async fn lists(server: &ServerProcess, tls: &Arc<rustls::ClientConfig>, count: usize) -> Lists {
    let addr = server.url.trim_start_matches("https://").to_string();
    let mut sender = connect(&addr, tls).await;
    let path = WIDGETS;
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
pub(crate) async fn watch_fan_out(
    addr: &str,
    tls: &Arc<rustls::ClientConfig>,
    count: usize,
    rate: usize,
    seconds: f64,
    pid: u32,
) -> (f64, Vec<Duration>, usize, f64) {
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
                let response = sender.send_request(request).await.unwrap();
                assert_eq!(response.status(), 200, "the watch is refused");
                let mut body = response.into_body();
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
                    // 1,000 watchers read 200 events a second each: a byte-by-byte search here
                    // took more CPU than the server's fan-out, on the same two cores.
                    let mut start = 0;
                    while let Some(end) = memchr::memchr(b'\n', &buffer[start..]) {
                        let line = &buffer[start..start + end];
                        start += end + 1;
                        if let Some(sent) = sent_at(line) {
                            let now = std::time::SystemTime::UNIX_EPOCH.elapsed().unwrap().as_nanos();
                            mine.push(Duration::from_nanos(now.saturating_sub(sent) as u64));
                            seen += 1;
                        }
                    }
                    buffer.drain(..start);
                }
                latencies.lock().unwrap().extend(mine);
            }));
        }
    }
    while ready.load(Ordering::SeqCst) < count {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The writer: `rate` creates a second from 8 connections, for `seconds`; the server's CPU
    // time is counted until every watcher has its events.
    let (write_rate, spent) = with_cpu(&[pid], async {
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
        write_rate
    })
    .await;
    let mut latencies = std::mem::take(&mut *latencies.lock().unwrap());
    // The server's CPU time per event delivered (its creates included: a small share).
    let cpu_us = spent[0] / latencies.len().max(1) as f64;
    let missing = (count * writes).saturating_sub(latencies.len());
    latencies.sort();
    (write_rate, latencies, missing, cpu_us)
}

/// The `a-sent` annotation (nanoseconds since the Unix epoch) in one watch event's line.
fn sent_at(line: &[u8]) -> Option<u128> {
    const KEY: &[u8] = b"\"a-sent\":\"";
    // Built once: `memmem::find` builds a searcher for every call.
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(KEY));
    let rest = &line[FINDER.find(line)? + KEY.len()..];
    std::str::from_utf8(&rest[..memchr::memchr(b'"', rest)?])
        .ok()?
        .parse()
        .ok()
}
