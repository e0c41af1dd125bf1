//! The peers a user would pick instead of Apiary, measured beside it in the same run, on the
//! same etcd, with the same client and objects: the recipe's Widget server written in Go on
//! k8s.io/apiserver (`benches/peer`, built here with `go build`, watch cache on). Each figure
//! is taken in turns (Apiary, the peer, Apiary, ...) so that drift weighs on both alike.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apiary_runtime::testing::{EtcdProcess, ServerProcess};
use serde_json::Value;

use crate::client::{
    Sender, WIDGETS, best_in_turns, client_tls, connect, create_all, get_rate, paired, proc_kb, send, watch_fan_out,
    with_cpu,
};
use crate::writes::{Write, write_rate};
use crate::{BINARY, TABLE, ms};

/// The Go peer's source.
const PEER_SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/peer");

/// The Go peer, stopped (SIGKILL) when dropped.
struct GoPeer {
    child: Child,
    addr: String,
}

impl Drop for GoPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Build the Go peer (Go's build cache makes a rebuild take about a second).
fn build_peer() -> PathBuf {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("widget-go-peer");
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&out)
        .arg(".")
        .current_dir(PEER_SOURCE)
        .env("GOTOOLCHAIN", "local")
        .status()
        .expect("go runs");
    assert!(status.success(), "go build of the Go peer failed");
    out
}

/// Start the Go peer on `etcd` with the serving certificate and client CA of the Apiary server
/// in `dir`, and wait until it is ready.
async fn start_peer(binary: &Path, dir: &Path, etcd: &str) -> GoPeer {
    let port = apiary_cluster::free_port().expect("a free port");
    let certs = dir.join(".apiary/certs");
    let log = std::fs::File::create(dir.join("go-peer.log")).unwrap();
    let child = Command::new(binary)
        .arg(format!("--etcd-servers={etcd}"))
        .arg(format!("--secure-port={port}"))
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--tls-cert-file={}", certs.join("apiserver.crt").display()))
        .arg(format!(
            "--tls-private-key-file={}",
            certs.join("apiserver.key").display()
        ))
        .arg(format!("--client-ca-file={}", certs.join("ca.crt").display()))
        .arg(format!("--cert-dir={}", dir.join("go-peer-certs").display()))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("the Go peer starts");
    let peer = GoPeer {
        child,
        addr: format!("127.0.0.1:{port}"),
    };
    let admin = client_tls(dir, true);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if tokio::net::TcpStream::connect(&peer.addr).await.is_ok() {
            let (status, _) = send(&mut connect(&peer.addr, &admin).await, "GET", "/readyz", "*/*", None).await;
            if status == 200 {
                return peer;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the Go peer is not ready after 60 s: see {}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every page of the widgets, `limit` at a time.
async fn paged(sender: &mut Sender, limit: usize) {
    let mut token = String::new();
    loop {
        let path = format!("{WIDGETS}?limit={limit}&continue={token}");
        let (status, body) = send(sender, "GET", &path, "application/json", None).await;
        assert_eq!(status, 200);
        let page: Value = serde_json::from_slice(&body).unwrap();
        match page["metadata"]["continue"].as_str() {
            Some(next) if !next.is_empty() => token = next.to_string(),
            _ => return,
        }
    }
}

/// How long after `started` the server at `addr` first answers a full list of `n` widgets.
async fn first_list(addr: &str, tls: &Arc<rustls::ClientConfig>, n: usize, started: Instant) -> Duration {
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            let (status, body) = send(&mut connect(addr, tls).await, "GET", WIDGETS, "application/json", None).await;
            if status == 200 {
                let listed: Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(listed["items"].as_array().map(Vec::len), Some(n));
                return started.elapsed();
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no list within 120 s of starting"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Peak RSS growth of `pid` during one full list.
async fn list_peak(sender: &mut Sender, pid: u32) -> f64 {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let before = proc_kb(pid, "VmRSS:");
    let (status, _) = send(sender, "GET", WIDGETS, "application/json", None).await;
    assert_eq!(status, 200);
    proc_kb(pid, "VmHWM:").saturating_sub(before) as f64 / 1024.0
}

/// What a row is given: what, Apiary's figure, the peer's, Apiary's ÷ the peer's, the goal.
pub(crate) type Row<'r> = &'r mut dyn FnMut(&str, String, String, f64, &str);

/// Apiary and the Go peer as the measurements reach them.
struct Sides {
    ours: String,
    theirs: String,
    pid: u32,
    peer_pid: u32,
    admin: Arc<rustls::ClientConfig>,
}

impl Sides {
    /// Both addresses with their serving process.
    fn both(&self) -> [(&str, u32); 2] {
        [(&self.ours, self.pid), (&self.theirs, self.peer_pid)]
    }
}

/// Apiary and the Go peer on one etcd: `count` creates each, then GETs, writes, watches,
/// lists, a restart and memory.
pub(crate) async fn go_peer_rows(count: usize, seconds: f64, row: Row<'_>) {
    let peer_binary = build_peer();
    let etcd_dir = tempfile::tempdir().unwrap();
    // etcd 3.6, as the real cluster runs: k8s.io/apiserver's watch cache serves a watch without
    // a resourceVersion only once etcd reports progress on request, which etcd 3.4.23 (Debian's,
    // the other sections') does not do right (the peer's watches then end in "Too large
    // resource version" while other keys of the same etcd are written).
    let etcd36 = tokio::task::block_in_place(apiary_cluster::Binaries::ensure)
        .expect("etcd 3.6 is built")
        .etcd;
    let etcd = EtcdProcess::start_binary(&etcd36, etcd_dir.path(), &[]);
    let endpoint = etcd.endpoint();
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--storage",
        "etcd",
        "--etcd-servers",
        &endpoint,
        "--status-controller",
        "false",
    ];
    let server = ServerProcess::spawn(BINARY, dir.path(), &args);
    let peer = start_peer(&peer_binary, dir.path(), &endpoint).await;
    let sides = Sides {
        ours: server.url.trim_start_matches("https://").to_string(),
        theirs: peer.addr.clone(),
        pid: server.pid(),
        peer_pid: peer.child.id(),
        admin: client_tls(dir.path(), true),
    };
    let n = creates(&sides, etcd.pid().expect("etcd runs"), count, row).await;
    reads_and_writes(&sides, n, seconds, row).await;
    watches(&sides, seconds, row).await;
    lists(&sides, n, row).await;

    // Startup: from starting the process to its first full list of the n objects answered.
    drop((server, peer));
    let started = Instant::now();
    let server = ServerProcess::spawn(BINARY, dir.path(), &args);
    let ours = server.url.trim_start_matches("https://").to_string();
    let ours_ready = first_list(&ours, &sides.admin, n, started).await;
    let started = Instant::now();
    let peer = start_peer(&peer_binary, dir.path(), &endpoint).await;
    let theirs_ready = first_list(&peer.addr, &sides.admin, n, started).await;
    row(
        &format!("startup to the first LIST of {n} answered"),
        ms(ours_ready),
        format!("Go peer: {}", ms(theirs_ready)),
        ours_ready.as_secs_f64() / theirs_ready.as_secs_f64(),
        "≤ 0.1",
    );
    let restarted = Sides {
        ours,
        theirs: peer.addr.clone(),
        pid: server.pid(),
        peer_pid: peer.child.id(),
        ..sides
    };
    memory(&restarted, n, row).await;
}

/// Creates in four turns (Apiary, peer, peer, Apiary), with the serving process's CPU time;
/// how many objects each side holds after them.
async fn creates(sides: &Sides, etcd_pid: u32, count: usize, row: Row<'_>) -> usize {
    let quarter = count / 4;
    let me = std::process::id();
    let (mut ours, mut theirs) = ((0.0, 0.0), (0.0, 0.0));
    for (turn, first) in [(0, true), (1, false), (2, false), (3, true)] {
        let names = turn * quarter..(turn + 1) * quarter;
        for side in [first, !first] {
            let (target, serving) = sides.both()[usize::from(!side)];
            let created = create_all(target, &sides.admin, names.clone());
            let (rate, cpu) = with_cpu(&[etcd_pid, me, serving], created).await;
            let totals = if side { &mut ours } else { &mut theirs };
            totals.0 += quarter as f64 / rate;
            totals.1 += cpu[2];
        }
    }
    // Each side created every quarter: both hold n objects now.
    let n = 4 * quarter;
    row(
        "creates on etcd, 16 conns",
        format!("{:.0}/s", n as f64 / ours.0),
        format!("Go peer: {:.0}/s", n as f64 / theirs.0),
        theirs.0 / ours.0,
        "≥ 1.5",
    );
    row(
        "serving process's CPU time per create",
        format!("{:.0} µs", ours.1 / n as f64),
        format!("Go peer: {:.0} µs", theirs.1 / n as f64),
        ours.1 / theirs.1,
        "≤ 0.5",
    );
    n
}

/// GETs of one object, then updates, status updates and applies over the `n` objects.
async fn reads_and_writes(sides: &Sides, n: usize, seconds: f64, row: Row<'_>) {
    let (admin, [(ours, pid), (theirs, peer_pid)]) = (&sides.admin, sides.both());
    let one = format!("{WIDGETS}/w-000001");
    let (got, peer_got) = paired(
        || get_rate(ours, admin, &one, seconds, pid),
        || get_rate(theirs, admin, &one, seconds, peer_pid),
    )
    .await;
    row(
        "GET one object, 16 conns, HTTP/1.1",
        format!("{:.0}/s", got.per_second),
        format!("Go peer: {:.0}/s", peer_got.per_second),
        got.per_second / peer_got.per_second,
        "≥ 2",
    );
    row(
        "serving process's CPU time per GET",
        format!("{:.1} µs", got.cpu_us),
        format!("Go peer: {:.1} µs", peer_got.cpu_us),
        got.cpu_us / peer_got.cpu_us,
        "",
    );
    for write in [Write::Update, Write::Status, Write::Apply] {
        let (got, peer_got) = paired(
            || write_rate(ours, admin, n, write, seconds, pid),
            || write_rate(theirs, admin, n, write, seconds, peer_pid),
        )
        .await;
        row(
            &format!("{}, 16 conns", write.name()),
            format!("{:.0}/s ({:.0} µs CPU each)", got.per_second, got.cpu_us),
            format!(
                "Go peer: {:.0}/s ({:.0} µs CPU each)",
                peer_got.per_second, peer_got.cpu_us
            ),
            got.per_second / peer_got.per_second,
            "≥ 1.5",
        );
    }
}

/// Watch delivery: every watcher gets every create, offered at a fixed rate.
async fn watches(sides: &Sides, seconds: f64, row: Row<'_>) {
    let quick = !std::env::args().any(|a| a == "--bench");
    let watchers = crate::env("APIARY_BENCH_WATCHERS", if quick { 100 } else { 1_000 });
    let offered = 200;
    let mut delivery = Vec::new();
    for (target, serving) in sides.both() {
        let (kept, latencies, missing, cpu_us) =
            watch_fan_out(target, &sides.admin, watchers, offered, seconds.max(5.0), serving).await;
        let at = |q: f64| {
            let i = ((latencies.len().max(1) - 1) as f64 * q) as usize;
            latencies.get(i).copied().unwrap_or_default()
        };
        delivery.push((kept, at(0.5), at(0.99), missing, cpu_us));
    }
    let [
        (kept, p50, p99, missing, cpu),
        (peer_kept, peer_p50, peer_p99, peer_missing, peer_cpu),
    ] = delivery[..]
    else {
        unreachable!("two sides")
    };
    row(
        &format!("{watchers} watchers, creates offered at {offered}/s: writes kept"),
        format!("{kept:.0}/s, {missing} not delivered"),
        format!("Go peer: {peer_kept:.0}/s, {peer_missing} not delivered"),
        kept / peer_kept,
        "≥ 1",
    );
    row(
        "watch delivery p50 / p99",
        format!("{} / {}", ms(p50), ms(p99)),
        format!("Go peer: {} / {}", ms(peer_p50), ms(peer_p99)),
        p99.as_secs_f64() / peer_p99.as_secs_f64(),
        "≤ 0.5",
    );
    row(
        "serving process's CPU time per watch event delivered",
        format!("{cpu:.1} µs"),
        format!("Go peer: {peer_cpu:.1} µs"),
        cpu / peer_cpu,
        "",
    );
}

/// Full lists (JSON and Table) and a paged one, in turns.
async fn lists(sides: &Sides, n: usize, row: Row<'_>) {
    let ours = tokio::sync::Mutex::new(connect(&sides.ours, &sides.admin).await);
    let theirs = tokio::sync::Mutex::new(connect(&sides.theirs, &sides.admin).await);
    for (what, accept) in [("JSON", "application/json"), ("Table", TABLE)] {
        let (a, b) = best_in_turns(
            5,
            || async {
                let (status, _) = send(&mut *ours.lock().await, "GET", WIDGETS, accept, None).await;
                assert_eq!(status, 200);
            },
            || async {
                let (status, _) = send(&mut *theirs.lock().await, "GET", WIDGETS, accept, None).await;
                assert_eq!(status, 200);
            },
        )
        .await;
        row(
            &format!("LIST {n} on etcd, {what}"),
            ms(a),
            format!("Go peer: {}", ms(b)),
            a.as_secs_f64() / b.as_secs_f64(),
            "≤ 0.5",
        );
    }
    let (a, b) = best_in_turns(
        3,
        || async { paged(&mut *ours.lock().await, 500).await },
        || async { paged(&mut *theirs.lock().await, 500).await },
    )
    .await;
    row(
        &format!("LIST {n} in pages of 500"),
        ms(a),
        format!("Go peer: {}", ms(b)),
        a.as_secs_f64() / b.as_secs_f64(),
        "≤ 0.5",
    );
}

/// RSS at rest with every object, then the peak growth during one full list.
async fn memory(sides: &Sides, n: usize, row: Row<'_>) {
    let [(ours, pid), (theirs, peer_pid)] = sides.both();
    let (rest, peer_rest) = (
        proc_kb(pid, "VmRSS:") as f64 / 1024.0,
        proc_kb(peer_pid, "VmRSS:") as f64 / 1024.0,
    );
    row(
        &format!("RSS at rest with {n} objects (after a restart)"),
        format!("{rest:.0} MB"),
        format!("Go peer: {peer_rest:.0} MB"),
        rest / peer_rest,
        "≤ 0.25",
    );
    let peak = list_peak(&mut connect(ours, &sides.admin).await, pid).await;
    let peer_peak = list_peak(&mut connect(theirs, &sides.admin).await, peer_pid).await;
    row(
        &format!("peak RSS growth during a LIST of {n}"),
        format!("{peak:.1} MB"),
        format!("Go peer: {peer_peak:.1} MB"),
        peak / peer_peak,
        "",
    );
}
