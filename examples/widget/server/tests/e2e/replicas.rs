//! Two widget-server replicas on one etcd behave as one API; an etcd outage, a leader lost
//! and a member frozen in a three-member etcd give Status errors, never a hang, and the server
//! recovers with no acknowledged write lost.

use crate::common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apiary_runtime::testing::{EtcdCluster, EtcdProcess};
use common::{ServerProcess, WidgetServer as _};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use widget_api::Widget;

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_are_one_api() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = EtcdProcess::start(dir.path());
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&dir_a).unwrap();
    std::fs::create_dir_all(&dir_b).unwrap();
    let a = ServerProcess::on_etcd(&dir_a, &etcd, &[]);
    let b = common::replica_of(&a.dir, &dir_b, &etcd, &[]);
    let api_a: Api<Widget> = Api::namespaced(common::kube_client(&a.kubeconfig, &a.url).await, "default");
    let api_b: Api<Widget> = Api::namespaced(common::kube_client(&a.kubeconfig, &b.url).await, "default");

    // Written on A, read and watched on B at once.
    let rv = common::list_rv(&api_b).await;
    let mut watch_b = api_b
        .watch(&WatchParams::default().timeout(30), &rv)
        .await
        .unwrap()
        .boxed();
    let created = api_a
        .create(&PostParams::default(), &common::typed_widget("shared", 1))
        .await
        .unwrap();
    assert_eq!(api_b.get("shared").await.unwrap().metadata.uid, created.metadata.uid);
    let event = tokio::time::timeout(Duration::from_secs(10), watch_b.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(event, WatchEvent::Added(w) if w.metadata.name.as_deref() == Some("shared")));

    // A conflict is detected across replicas.
    let mut stale = api_a.get("shared").await.unwrap();
    api_b
        .patch(
            "shared",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .unwrap();
    stale.spec.replicas = 3;
    let conflict = api_a
        .replace("shared", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert!(
        matches!(&conflict, kube::Error::Api(s) if s.code == 409),
        "{conflict:?}"
    );

    // Continue tokens from one replica work on the other.
    for i in 0..4 {
        api_a
            .create(&PostParams::default(), &common::typed_widget(&format!("page{i}"), 0))
            .await
            .unwrap();
    }
    let page = api_a.list(&ListParams::default().limit(2)).await.unwrap();
    let rest = api_b
        .list(
            &ListParams::default()
                .limit(10)
                .continue_token(page.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap();
    let names: Vec<String> = page
        .items
        .iter()
        .chain(&rest.items)
        .map(|w| w.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["page0", "page1", "page2", "page3", "shared"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_resumes_across_a_replica_restart_without_loss_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = EtcdProcess::start(dir.path());
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&dir_a).unwrap();
    std::fs::create_dir_all(&dir_b).unwrap();
    let a = ServerProcess::on_etcd(&dir_a, &etcd, &[]);
    let api_a: Api<Widget> = Api::namespaced(common::kube_client(&a.kubeconfig, &a.url).await, "default");
    let start = common::list_rv(&api_a).await;

    let writer = {
        let api_a = api_a.clone();
        tokio::spawn(async move {
            for i in 0..30 {
                api_a
                    .create(&PostParams::default(), &common::typed_widget(&format!("w{i:02}"), 0))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        })
    };
    let mut seen = Vec::new();
    let mut rv = start;
    // Watch through replica B, kill B part-way, resume through a new B from the last resourceVersion.
    for round in 0..2 {
        let b = common::replica_of(&a.dir, &dir_b, &etcd, &[]);
        let api_b: Api<Widget> = Api::namespaced(common::kube_client(&a.kubeconfig, &b.url).await, "default");
        let mut stream = api_b
            .watch(&WatchParams::default().timeout(30), &rv)
            .await
            .unwrap()
            .boxed();
        let target = if round == 0 { 10 } else { 30 };
        while seen.iter().filter(|n: &&String| n.starts_with('w')).count() < target {
            match tokio::time::timeout(Duration::from_secs(15), stream.try_next())
                .await
                .unwrap()
                .unwrap()
                .unwrap()
            {
                WatchEvent::Added(w) => {
                    rv = w.metadata.resource_version.clone().unwrap();
                    seen.push(w.metadata.name.unwrap());
                }
                WatchEvent::Modified(w) => rv = w.metadata.resource_version.unwrap(),
                WatchEvent::Bookmark(bm) => rv = bm.metadata.resource_version,
                other => panic!("unexpected {other:?}"),
            }
        }
        b.kill();
    }
    writer.await.unwrap();
    let expected: Vec<String> = (0..30).map(|i| format!("w{i:02}")).collect();
    assert_eq!(seen, expected, "every create exactly once, in order");
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 30);
    api_a.delete("w00", &DeleteParams::default()).await.unwrap();
}

/// Through kubectl: kube's client retries 503s by itself, which would hide the answer.
#[test]
fn etcd_outage_gives_503_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = EtcdProcess::start(dir.path());
    let server = ServerProcess::on_etcd(dir.path(), &etcd, &[]);
    let k = server.kubectl("1.33");
    k.ok_stdin(&["create", "-f", "-"], &common::widget("before", 1, ""));

    etcd.stop();
    let started = std::time::Instant::now();
    let during = k.run_with_stdin(&["create", "-f", "-"], &common::widget("during", 1, ""));
    assert_eq!(during.code, 1);
    assert!(
        during.stderr.contains("Error from server (ServiceUnavailable)"),
        "{}",
        during.stderr
    );
    let get = k.run(&["get", "widget", "before"]);
    assert!(
        get.stderr.contains("Error from server (ServiceUnavailable)"),
        "{}",
        get.stderr
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "answered within the request timeout"
    );

    etcd.restart();
    common::eventually("the server recovers", || {
        (k.run(&["get", "widget", "before"]).code == 0).then_some(())
    });
    assert!(
        k.run(&["get", "widget", "during"]).stderr.contains("not found"),
        "the failed write left nothing"
    );
    k.ok_stdin(&["create", "-f", "-"], &common::widget("after", 1, ""));
}

/// The watch cache follows each resource from start-up, as kube-apiserver's cacher does: the
/// range over the whole resource happens before the first read asks, not during it.
#[tokio::test(flavor = "multi_thread")]
async fn the_watch_cache_starts_with_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = EtcdProcess::start(dir.path());
    // No status loop: it would list the widgets itself and start the cache anyway.
    let server = ServerProcess::on_etcd(dir.path(), &etcd, &["--status-controller", "false"]);
    let c = server.client().await;
    // Ranges the server sent etcd; /metrics itself reads no storage.
    let ranges = || async {
        let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
        let text = c.request_text(request).await.unwrap();
        let count = r#"apiary_storage_request_duration_seconds_count{backend="etcd",operation="list"} "#;
        text.lines()
            .find_map(|l| l.strip_prefix(count))
            .map_or(0, |n| n.trim().parse::<u64>().unwrap())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while ranges().await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no range over the widgets before the first read"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The first list is answered from the cache it filled, without another range.
    let started = ranges().await;
    let widgets: Api<Widget> = Api::namespaced(c.clone(), "default");
    assert!(widgets.list(&ListParams::default()).await.unwrap().items.is_empty());
    assert_eq!(ranges().await, started, "the first list ranged over the widgets again");
}

/// Two replicas with a short `--etcd-compaction-interval` compact etcd's history between them
/// (through `compact_rev_key`, as kube-apiserver's compactors agree), so old revisions go.
#[tokio::test(flavor = "multi_thread")]
async fn replicas_compact_etcd_history() {
    use apiary_runtime::testing::raw_etcd;
    let dir = tempfile::tempdir().unwrap();
    let etcd = EtcdProcess::start(dir.path());
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&dir_a).unwrap();
    std::fs::create_dir_all(&dir_b).unwrap();
    let often = ["--etcd-compaction-interval", "1s"];
    let a = ServerProcess::on_etcd(&dir_a, &etcd, &often);
    let _b = common::replica_of(&a.dir, &dir_b, &etcd, &often);
    let api: Api<Widget> = Api::namespaced(a.client().await, "default");
    let created = api
        .create(&PostParams::default(), &common::typed_widget("churn", 1))
        .await
        .unwrap();
    let first: i64 = created.metadata.resource_version.unwrap().parse().unwrap();
    let mut kv = raw_etcd::kv_client::KvClient::new(raw_etcd::channel(&etcd.endpoint()).await);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        api.patch(
            "churn",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .unwrap();
        let old = raw_etcd::RangeRequest {
            revision: first,
            ..raw_etcd::prefix("/registry/")
        };
        match kv.range(old).await {
            Err(refused) if refused.message().contains("compacted") => break,
            other => assert!(
                std::time::Instant::now() < deadline,
                "etcd's history is still there after 20 s: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let key = raw_etcd::RangeRequest {
        key: b"compact_rev_key".to_vec(),
        ..Default::default()
    };
    let version = kv.range(key).await.unwrap().into_inner().kvs[0].version;
    assert!(version >= 2, "claimed once per interval: version {version}");
}

/// What a client saw of one request: when it began and ended (since the load began), its
/// status code (0: no Status) and what it was (a Widget's name, or "list").
struct Seen {
    started: Duration,
    ended: Duration,
    code: u16,
    name: String,
}

/// Requests kept under way against a server until [`Load::finish`], each answer recorded.
struct Load {
    begin: Instant,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn new() -> Load {
        Load {
            begin: Instant::now(),
            seen: Arc::default(),
            stop: Arc::default(),
            tasks: Vec::new(),
        }
    }

    /// Time since the load began.
    fn now(&self) -> Duration {
        self.begin.elapsed()
    }

    /// Run `request` every `pause` until the load finishes; it answers a name and a code.
    fn every<F, R>(&mut self, pause: Duration, mut request: F)
    where
        F: FnMut(usize) -> R + Send + 'static,
        R: Future<Output = (String, u16)> + Send,
    {
        let (begin, seen, stop) = (self.begin, self.seen.clone(), self.stop.clone());
        self.tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let started = begin.elapsed();
                let (name, code) = request(i).await;
                let ended = begin.elapsed();
                seen.lock().unwrap().push(Seen {
                    started,
                    ended,
                    code,
                    name,
                });
                i += 1;
                tokio::time::sleep(pause).await;
            }
        }));
    }

    /// Create Widget `w-<i>` every 50 ms.
    fn write(&mut self, api: &Api<Widget>) {
        let api = api.clone();
        self.every(Duration::from_millis(50), move |i| {
            let api = api.clone();
            async move {
                let name = format!("w-{i}");
                let result = api
                    .create(&PostParams::default(), &common::typed_widget(&name, 1))
                    .await;
                (name, result.as_ref().map_or_else(code, |_| 201))
            }
        });
    }

    /// List (50 to a page) every 100 ms.
    fn read(&mut self, api: &Api<Widget>) {
        let api = api.clone();
        self.every(Duration::from_millis(100), move |_| {
            let api = api.clone();
            async move {
                let result = api.list(&ListParams::default().limit(50)).await;
                ("list".into(), result.as_ref().map_or_else(code, |_| 200))
            }
        });
    }

    /// Wait (at most `within`) until a create that began after `after` is acknowledged.
    async fn a_write_after(&self, after: Duration, within: Duration, what: &str) {
        let deadline = Instant::now() + within;
        while !self
            .seen
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.code == 201 && s.started > after)
        {
            assert!(Instant::now() < deadline, "writes resume within {within:?} {what}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stop the requests; every answer came within 8 s (a request timeout of 5 s and room) as
    /// a success or a Status of a storage failure.
    async fn finish(self) -> Vec<Seen> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        let seen = std::mem::take(&mut *self.seen.lock().unwrap());
        for s in &seen {
            let took = s.ended - s.started;
            assert!(took < Duration::from_secs(8), "{} took {took:?}", s.name);
            assert!(
                matches!(s.code, 200 | 201 | 500 | 503 | 504),
                "{} got {} (0: no Status)",
                s.name,
                s.code
            );
        }
        seen
    }
}

/// The status code of a failed request (0 when it carried no Status).
fn code(e: &kube::Error) -> u16 {
    common::status_of(e).0
}

/// Every acknowledged create is listed, and at most `unanswered` Widgets are listed whose
/// create got no acknowledgement (those in flight as a fault struck).
async fn acknowledged_writes_kept(api: &Api<Widget>, seen: &[Seen], unanswered: usize) {
    let listed: BTreeSet<String> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|w| w.metadata.name)
        .collect();
    let acknowledged: BTreeSet<String> = seen.iter().filter(|s| s.code == 201).map(|s| s.name.clone()).collect();
    assert!(
        acknowledged.is_subset(&listed),
        "lost: {:?}",
        acknowledged.difference(&listed).collect::<Vec<_>>()
    );
    let applied: Vec<&String> = listed.difference(&acknowledged).collect();
    assert!(
        applied.len() <= unanswered,
        "applied without an acknowledgement: {applied:?}"
    );
}

/// etcd killed for 20 s under a writer, a reader and a watcher, then restarted with its data:
/// every request is answered within the request timeout with a Status, `/readyz` fails while
/// `/livez` does not, no write is acknowledged while etcd is down, afterwards the Widgets are
/// exactly the acknowledged creates (and perhaps one whose answer was lost as etcd went), and
/// the watch either goes on or ends cleanly, never out of order.
#[tokio::test(flavor = "multi_thread")]
async fn etcd_down_for_20_seconds_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = EtcdProcess::start(dir.path());
    let flags = ["--request-timeout", "5", "--status-controller", "false"];
    let server = ServerProcess::on_etcd(dir.path(), &etcd, &flags);
    // kube-rs retries 503s and 504s by default, which would hide every answer of the outage.
    let client = common::kube_client_without_retries(&server.kubeconfig).await;
    let api: Api<Widget> = Api::namespaced(client.clone(), "default");
    let mut load = Load::new();
    load.write(&api);
    load.read(&api);
    let rv = common::list_rv(&api).await;
    let mut watch = api
        .watch(&WatchParams::default().timeout(120), &rv)
        .await
        .unwrap()
        .boxed();
    tokio::time::sleep(Duration::from_secs(2)).await;

    etcd.stop();
    let down_from = load.now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let health = |path: &'static str| {
        let client = client.clone();
        async move {
            client
                .request_text(http::Request::get(path).body(Vec::new()).unwrap())
                .await
        }
    };
    let ready = health("/readyz").await;
    // Failed, and why is in the server's log, not told to whoever asks (as kube-apiserver).
    assert!(
        matches!(&ready, Err(kube::Error::Api(s)) if s.code == 500 && s.message.contains("[-]storage failed: reason withheld")),
        "readyz while etcd is down: {ready:?}"
    );
    assert_eq!(health("/livez").await.unwrap(), "ok");
    tokio::time::sleep(Duration::from_secs(17)).await;
    let down_until = load.now();
    etcd.restart();
    load.a_write_after(down_until, Duration::from_secs(30), "of etcd's return")
        .await;
    let seen = load.finish().await;
    for s in &seen {
        assert!(
            !(s.code == 201 && s.started > down_from && s.ended < down_until),
            "{} acknowledged while etcd was down",
            s.name
        );
    }
    assert!(
        seen.iter().any(|s| s.code >= 500),
        "requests failed while etcd was down"
    );
    // Only a create in flight as etcd went may have been applied with its answer lost.
    acknowledged_writes_kept(&api, &seen, 1).await;

    let mut last = 0u64;
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(2), watch.try_next())
        .await
        .unwrap_or(Ok(None))
    {
        let revision = match &event {
            WatchEvent::Added(w) | WatchEvent::Modified(w) | WatchEvent::Deleted(w) => {
                w.metadata.resource_version.as_deref().unwrap_or("0").parse().unwrap()
            }
            WatchEvent::Bookmark(b) => b.metadata.resource_version.parse().unwrap(),
            WatchEvent::Error(_) => break,
        };
        assert!(revision > last, "the watch went back: {revision} after {last}");
        last = revision;
    }
}

/// Two replicas on a three-member etcd 3.6 (`--etcd-servers` lists all three) under a writer
/// and a reader: etcd's leader killed for 10 s, then the new leader frozen (`SIGSTOP`) for 20 s.
/// Writes resume after each election; once the servers have left the dead or frozen member
/// out (a probe's interval and timeout, and an election), no request fails; no acknowledged
/// write is lost; and at no moment do both replicas lead their controllers.
#[tokio::test(flavor = "multi_thread")]
async fn a_three_member_etcd_loses_its_leader_and_a_member_freezes() {
    let binaries = apiary_cluster::Binaries::ensure().expect("etcd 3.6 builds");
    let dir = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&dir_a).unwrap();
    std::fs::create_dir_all(&dir_b).unwrap();
    let mut etcd = EtcdCluster::start(&binaries.etcd, dir.path(), 3);
    let servers = etcd.endpoints().join(",");
    let flags = ["--request-timeout", "5", "--leader-elect-retry-period", "250ms"];
    let a = ServerProcess::start_in(
        &dir_a,
        &[&["--storage", "etcd", "--etcd-servers", &servers], &flags[..]].concat(),
    );
    let b = common::replica_on(&a.dir, &dir_b, &servers, &flags);
    let client = common::kube_client_without_retries(&a.kubeconfig).await;
    let api: Api<Widget> = Api::namespaced(client.clone(), "default");
    let leaders = watch_leaders([&a, &b]).await;
    let mut load = Load::new();
    load.write(&api);
    load.read(&api);
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The killed member is restarted and waited for until it has rejoined.
    let (killed, restarted) = leader_fault(&load, &mut etcd, Fault::Killed, Duration::from_secs(10)).await;
    let (paused, resumed) = leader_fault(&load, &mut etcd, Fault::Frozen, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seen = load.finish().await;

    // A member is left out within a probe's interval and timeout (3 s) of its fault, and an
    // election takes about a second: from 6 s on, nothing may fail.
    let settled = Duration::from_secs(6);
    for (from, until, fault) in [(killed, restarted, "killed"), (paused, resumed, "frozen")] {
        let failed: Vec<_> = seen
            .iter()
            .filter(|s| s.code >= 500 && s.started > from + settled && s.started < until)
            .map(|s| (&s.name, s.code, s.started - from))
            .collect();
        assert!(failed.is_empty(), "failed with a member {fault}: {failed:?}");
    }
    // A create in flight at each fault may be applied with its answer lost.
    acknowledged_writes_kept(&api, &seen, 2).await;
    let both = leaders.await.unwrap();
    assert!(both.is_empty(), "both replicas led at once: {both:?}");
}

/// What befalls etcd's leader.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Killed (`SIGKILL`), then restarted with its data.
    Killed,
    /// Frozen (`SIGSTOP`), then let go on (`SIGCONT`).
    Frozen,
}

/// Strike etcd's current leader with `fault` for `lasting` under `load` (a write must be
/// acknowledged after it within 15 s), then undo it: when the fault began and ended.
async fn leader_fault(load: &Load, etcd: &mut EtcdCluster, fault: Fault, lasting: Duration) -> (Duration, Duration) {
    let leader = etcd.leader().expect("etcd has a leader");
    let member = &mut etcd.members[leader];
    match fault {
        Fault::Killed => member.stop(),
        Fault::Frozen => member.pause(),
    }
    let from = load.now();
    load.a_write_after(
        from,
        Duration::from_secs(15),
        &format!("after etcd's leader was {fault:?}"),
    )
    .await;
    tokio::time::sleep(lasting.saturating_sub(load.now() - from)).await;
    let until = load.now();
    match fault {
        Fault::Killed => etcd.members[leader].restart(),
        Fault::Frozen => etcd.members[leader].resume(),
    }
    (from, until)
}

/// Sample both replicas' `leader_election_master_status` every 200 ms for 60 s: the samples in
/// which both reported leading.
async fn watch_leaders(servers: [&ServerProcess; 2]) -> tokio::task::JoinHandle<Vec<Duration>> {
    let mut clients = Vec::new();
    for server in servers {
        // A replica shares the first one's credentials (and writes no kubeconfig).
        clients.push(common::kube_client(&servers[0].kubeconfig, &server.url).await);
    }
    tokio::spawn(async move {
        let begin = Instant::now();
        let mut both = Vec::new();
        while begin.elapsed() < Duration::from_secs(60) {
            let mut leading = 0;
            for client in &clients {
                let metrics = client
                    .request_text(http::Request::get("/metrics").body(Vec::new()).unwrap())
                    .await
                    .unwrap_or_default();
                leading += usize::from(metrics.contains("leader_election_master_status{name=\"widget-server\"} 1"));
            }
            if leading > 1 {
                both.push(begin.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        both
    })
}
