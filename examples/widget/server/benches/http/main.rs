//! The Widget server end to end over HTTPS, next to the physical limits, in one run: GETs
//! against a bare hyper+rustls endpoint returning the same bytes (anonymous, and with the admin
//! client certificate), lists against serde_json serializing the same objects, and on etcd
//! GETs, lists and creates against the raw etcd client on the same etcd; creates also against a
//! bare HTTPS endpoint whose every POST is one put-if-absent (HTTPS in front of etcd, with no
//! API server), with and without a watch open on its keys, and the CPU time each side costs
//! etcd, the load generator and the serving process. Prints a Markdown table of the ratios
//! (see BENCHMARKS.md). Then the same client against the peer a user would pick instead: the
//! recipe's server in Go on k8s.io/apiserver, on the same etcd (`peers.rs`), and the Widget as
//! a CRD on a real kube-apiserver next to Apiary through that kube-apiserver's aggregator
//! (`crd.rs`).
//!
//! cargo bench -p widget-server --bench http
//! APIARY_BENCH_OBJECTS=10000 APIARY_BENCH_SECONDS=3 cargo bench -p widget-server --bench http
//! APIARY_BENCH_ONLY=etcd cargo bench -p widget-server --bench http
//! APIARY_BENCH_ONLY=peers cargo bench -p widget-server --bench http   (needs Go 1.26)

mod client;
mod crd;
mod peers;
mod references;
mod writes;

use std::time::Duration;

use apiary_runtime::testing::raw_etcd::{self, kv_client::KvClient};
use apiary_runtime::testing::{EtcdProcess, ServerProcess};
use client::{
    WIDGETS, alpha_widget, best_in_turns, client_tls, connect, create_all, create_each, get_rate, list_times, lists,
    paired, send, watch_fan_out, widget, with_cpu,
};
use references::{Answer, bare_endpoint, raw_creates, raw_range, raw_watch, wal_syncs};

const BINARY: &str = env!("CARGO_BIN_EXE_widget-server");
pub(crate) const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";
pub(crate) const CONNECTIONS: usize = 16;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Whether the run includes `section` (`APIARY_BENCH_ONLY=etcd,memory`; all when unset).
fn section(name: &str) -> bool {
    std::env::var("APIARY_BENCH_ONLY").map_or(true, |only| only.split(',').any(|s| s.trim() == name))
}

/// One side of the etcd create comparison: its creates, the time they took, etcd's WAL syncs,
/// and the CPU time of etcd, of this process (the load generator, and the watcher where a side
/// has one) and of the process serving them (none for the raw client).
#[derive(Clone, Copy, Default)]
struct Side {
    creates: usize,
    seconds: f64,
    syncs: f64,
    etcd_us: f64,
    client_us: f64,
    serving_us: f64,
}

impl Side {
    /// Count one turn of `creates` done at `rate` per second, with the CPU time `spent` by
    /// etcd, this process and then (if measured) the serving process, and etcd's WAL `syncs`.
    fn add(&mut self, creates: usize, (rate, spent): (f64, Vec<f64>), syncs: f64) {
        self.creates += creates;
        self.syncs += syncs;
        self.seconds += creates as f64 / rate;
        self.etcd_us += spent[0];
        self.client_us += spent[1];
        self.serving_us += spent.get(2).copied().unwrap_or_default();
    }

    /// Creates per second over all its turns.
    fn rate(&self) -> f64 {
        self.creates as f64 / self.seconds
    }

    /// Creates per WAL sync of etcd: the size of its batches.
    fn batch(&self) -> f64 {
        self.creates as f64 / self.syncs
    }

    /// etcd's CPU time per create.
    fn etcd_us(&self) -> f64 {
        self.etcd_us / self.creates as f64
    }

    /// The serving process's CPU time per create.
    fn serving_us(&self) -> f64 {
        self.serving_us / self.creates as f64
    }

    /// The CPU time per create of all three processes: what the machine's cores spent on it.
    fn total_us(&self) -> f64 {
        (self.etcd_us + self.client_us + self.serving_us) / self.creates as f64
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(references::BARE) {
        return references::serve_bare(&args[1..]).await;
    }
    let quick = !std::env::args().any(|a| a == "--bench");
    let count = env("APIARY_BENCH_OBJECTS", if quick { 200 } else { 10_000 });
    let seconds = env("APIARY_BENCH_SECONDS", if quick { 1 } else { 3 }) as f64;
    let mut rows = Vec::new();
    let mut row = |path: &str, apiary: String, reference: String, ratio: f64| {
        rows.push(format!("| {path} | {apiary} | {reference} | {ratio:.2} |"));
    };

    // Memory storage (its GET gives every section the object to compare sizes with).
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
    let creates = create_all(&addr, &admin, 0..count).await;
    let one = "/apis/custom.example.com/v1/namespaces/default/widgets/w-000001";
    let (_, object) = send(
        &mut connect(&addr, &anonymous).await,
        "GET",
        one,
        "application/json",
        None,
    )
    .await;
    if section("memory") {
        let bare = bare_endpoint(dir.path(), &Answer::Fixed(object.clone()), false);
        let bare_mtls = bare_endpoint(dir.path(), &Answer::Fixed(object.clone()), true);
        let pid = server.pid();
        let (got, limit) = paired(
            || get_rate(&addr, &anonymous, one, seconds, pid),
            || get_rate(&bare.addr, &anonymous, one, seconds, bare.pid()),
        )
        .await;
        row(
            "GET one object, 16 conns, memory, anonymous",
            format!("{:.0}/s", got.per_second),
            format!("bare endpoint: {:.0}/s", limit.per_second),
            got.per_second / limit.per_second,
        );
        row(
            "CPU time per GET of the process serving it",
            format!("{:.1} µs", got.cpu_us),
            format!("bare endpoint: {:.1} µs", limit.cpu_us),
            got.cpu_us / limit.cpu_us,
        );
        let (got, limit) = paired(
            || get_rate(&addr, &admin, one, seconds, pid),
            || get_rate(&bare_mtls.addr, &admin, one, seconds, bare_mtls.pid()),
        )
        .await;
        row(
            "same, admin client certificate",
            format!("{:.0}/s", got.per_second),
            format!("bare endpoint, client certs: {:.0}/s", limit.per_second),
            got.per_second / limit.per_second,
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
        // Versions: the same v1 objects read at v1alpha1 (converted), and v1alpha1 creates.
        let alpha_one = one.replace("/v1/", "/v1alpha1/");
        let (alpha, stored) = paired(
            || get_rate(&addr, &anonymous, &alpha_one, seconds, pid),
            || get_rate(&addr, &anonymous, one, seconds, pid),
        )
        .await;
        row(
            "GET one object at v1alpha1 (converted once per revision), memory",
            format!("{:.0}/s", alpha.per_second),
            format!("at v1, as stored: {:.0}/s", stored.per_second),
            alpha.per_second / stored.per_second,
        );
        let collection = "/namespaces/default/widgets";
        let (first, again) = list_times(&addr, &admin, &format!("/apis/custom.example.com/v1alpha1{collection}")).await;
        let (_, at_v1) = list_times(&addr, &admin, &format!("/apis/custom.example.com/v1{collection}")).await;
        row(
            &format!("LIST {count} at v1alpha1, first (every item converted), memory"),
            ms(first),
            format!("at v1: {}", ms(at_v1)),
            first.as_secs_f64() / at_v1.as_secs_f64(),
        );
        row(
            "same, again (conversions kept)",
            ms(again),
            format!("at v1: {}", ms(at_v1)),
            again.as_secs_f64() / at_v1.as_secs_f64(),
        );
        let alpha_creates = create_each(
            &addr,
            &admin,
            0..count,
            "/apis/custom.example.com/v1alpha1/namespaces/default/widgets",
            alpha_widget,
        )
        .await;
        row(
            "creates at v1alpha1 (converted to v1 to store), 16 conns, memory",
            format!("{alpha_creates:.0}/s"),
            format!("at v1: {creates:.0}/s"),
            alpha_creates / creates,
        );
        let (watchers, rate) = (env("APIARY_BENCH_WATCHERS", if quick { 100 } else { 1_000 }), 200);
        let (kept, latencies, missing, cpu_us) =
            watch_fan_out(&addr, &admin, watchers, rate, seconds.max(5.0), server.pid()).await;
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
        row(
            "CPU time of the server per watch event delivered",
            format!("{cpu_us:.1} µs"),
            String::new(),
            f64::NAN,
        );
    }
    drop(server);

    // Embedded (redb): lists and creates (each create is durable before it is acknowledged).
    if section("embedded") {
        let dir = tempfile::tempdir().unwrap();
        let server = ServerProcess::spawn(
            BINARY,
            dir.path(),
            &["--storage", "embedded", "--status-controller", "false"],
        );
        let addr = server.url.trim_start_matches("https://").to_string();
        let admin = client_tls(dir.path(), true);
        let creates = create_all(&addr, &admin, 0..count).await;
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
    }

    // etcd.
    if section("etcd") {
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
        let endpoint = etcd.endpoint();
        // A new etcd writes slower for a while (its WAL and database grow), so it is warmed
        // first, and the sides take turns (order below) so that what still drifts during the
        // run weighs on all alike. Each side's half is timed with the CPU time etcd, this
        // process and the serving process spent on it.
        let (size, half) = (object.len(), count / 2);
        // The bare endpoint answers each POST with one put-if-absent of its body: what HTTPS in
        // front of etcd costs with no API server at all, on the same cores.
        let bare = bare_endpoint(dir.path(), &Answer::EtcdCreate(endpoint.clone()), true);
        let (etcd_pid, me) = (etcd.pid().expect("etcd runs"), std::process::id());
        let (ours_pids, bare_pids, raw_pids) =
            ([etcd_pid, me, server.pid()], [etcd_pid, me, bare.pid()], [etcd_pid, me]);
        // raw, watched (the raw client with a watch with previous values open on its keys),
        // bare, bare watched (the bare endpoint with such a watch open on its keys: the least a
        // server that keeps a watch cache adds), ours; in this order for the first half, the
        // reverse for the second.
        let mut sides = [Side::default(); 5];
        raw_creates(&endpoint, "/warm-up/", 0..count, size).await;
        for (turn, names) in [0..half, half..count].into_iter().enumerate() {
            let order = if turn == 0 { [0, 1, 2, 3, 4] } else { [4, 3, 2, 1, 0] };
            for side in order {
                let n = names.clone();
                let syncs = wal_syncs(&endpoint).await;
                let watch = match side {
                    1 => Some(raw_watch(&endpoint, "/watched/").await),
                    3 => Some(raw_watch(&endpoint, "/bare/").await),
                    _ => None,
                };
                let measured = match side {
                    0 => with_cpu(&raw_pids, raw_creates(&endpoint, "/raw/", n, size)).await,
                    1 => with_cpu(&raw_pids, raw_creates(&endpoint, "/watched/", n, size)).await,
                    2 | 3 => with_cpu(&bare_pids, create_each(&bare.addr, &admin, n, "/bare", widget)).await,
                    _ => with_cpu(&ours_pids, create_all(&addr, &admin, n)).await,
                };
                if let Some(watch) = watch {
                    watch.abort();
                }
                sides[side].add(names.len(), measured, wal_syncs(&endpoint).await - syncs);
            }
        }
        let [raw, watched, bare_side, bare_watched, ours] = sides;
        // A per-create figure of the four reference sides: "raw: …; watched: …; bare: …; …".
        let references = |figure: fn(&Side) -> f64, decimals: usize, unit: &str| {
            [
                ("raw", raw),
                ("watched", watched),
                ("bare", bare_side),
                ("bare watched", bare_watched),
            ]
            .iter()
            .map(|(name, side)| format!("{name}: {:.*}{unit}", decimals, figure(side)))
            .collect::<Vec<_>>()
            .join("; ")
        };
        row(
            "creates over HTTPS on etcd, 16 conns",
            format!("{:.0}/s", ours.rate()),
            format!("raw put-if-absent: {:.0}/s", raw.rate()),
            ours.rate() / raw.rate(),
        );
        row(
            "bare HTTPS endpoint doing only the put-if-absent, 16 conns",
            format!("{:.0}/s", bare_side.rate()),
            format!("raw put-if-absent: {:.0}/s", raw.rate()),
            bare_side.rate() / raw.rate(),
        );
        row(
            "that bare endpoint, a watch open on its keys",
            format!("{:.0}/s", bare_watched.rate()),
            format!("raw put-if-absent: {:.0}/s", raw.rate()),
            bare_watched.rate() / raw.rate(),
        );
        row(
            "creates over HTTPS on etcd, against that bare endpoint",
            format!("{:.0}/s", ours.rate()),
            format!("bare endpoint: {:.0}/s", bare_side.rate()),
            ours.rate() / bare_side.rate(),
        );
        row(
            "raw put-if-absent, a watch with previous values open on its keys",
            format!("{:.0}/s", watched.rate()),
            format!("raw put-if-absent: {:.0}/s", raw.rate()),
            watched.rate() / raw.rate(),
        );
        row(
            "etcd's CPU time per create, server in front",
            format!("{:.0} µs", ours.etcd_us()),
            references(Side::etcd_us, 0, " µs"),
            ours.etcd_us() / raw.etcd_us(),
        );
        row(
            "creates per etcd WAL sync (its batches), server in front",
            format!("{:.1}", ours.batch()),
            references(Side::batch, 1, ""),
            ours.batch() / raw.batch(),
        );
        row(
            "the server's CPU time per create",
            format!("{:.0} µs", ours.serving_us()),
            format!("bare endpoint: {:.0} µs", bare_side.serving_us()),
            ours.serving_us() / bare_side.serving_us(),
        );
        row(
            "CPU time per create of etcd, load generator and server together",
            format!("{:.0} µs", ours.total_us()),
            references(Side::total_us, 0, " µs"),
            ours.total_us() / raw.total_us(),
        );
        let (got, raw_gets) = paired(
            || get_rate(&addr, &admin, one, seconds, server.pid()),
            || references::raw_gets(&endpoint, seconds),
        )
        .await;
        row(
            "GET on etcd, 16 conns",
            format!("{:.0}/s", got.per_second),
            format!("raw get: {:.0}/s", raw_gets.per_second),
            got.per_second / raw_gets.per_second,
        );
        let listed = lists(&server, &admin, count).await;
        // The list is timed again, in turns with the raw range: etcd's background work after
        // the creates (its database commits) then weighs on both alike. Both rows use that time.
        let sender = tokio::sync::Mutex::new(connect(&addr, &admin).await);
        let range_client = KvClient::new(raw_etcd::channel(&endpoint).await);
        let (listed_in_turns, raw_range) = best_in_turns(
            5,
            || async {
                let (status, _) = send(&mut *sender.lock().await, "GET", WIDGETS, "application/json", None).await;
                assert_eq!(status, 200);
            },
            || raw_range(range_client.clone(), "/raw/", count),
        )
        .await;
        row(
            &format!("LIST {count} on etcd"),
            ms(listed_in_turns),
            format!("serde_json: {}", ms(listed.serde)),
            listed_in_turns.as_secs_f64() / listed.serde.as_secs_f64(),
        );
        row(
            &format!("LIST {count} on etcd, against the raw range (in turns)"),
            ms(listed_in_turns),
            format!("raw paged range: {}", ms(raw_range)),
            listed_in_turns.as_secs_f64() / raw_range.as_secs_f64(),
        );
    }

    // The peers, on an etcd of their own.
    let mut peer_rows = Vec::new();
    if section("peers") {
        let mut row = |path: &str, apiary: String, peer: String, ratio: f64, goal: &str| {
            peer_rows.push(format!("| {path} | {apiary} | {peer} | {ratio:.2} | {goal} |"));
        };
        peers::go_peer_rows(count, seconds, &mut row).await;
        crd::crd_rows(count, seconds, &mut row).await;
    }

    println!(
        "{count} widgets of ~{} bytes; {CONNECTIONS} connections; best of 5 for lists\n",
        object.len()
    );
    println!("| path | Apiary | reference (same run) | ratio |\n|---|---|---|---|");
    for r in rows {
        println!("{}", r.replace("| NaN |", "| |"));
    }
    if !peer_rows.is_empty() {
        println!(
            "\n| against the peers (Go on k8s.io/apiserver, a CRD) | Apiary | peer | Apiary ÷ peer | goal |\n|---|---|---|---|---|"
        );
        for r in peer_rows {
            println!("{r}");
        }
    }
}
