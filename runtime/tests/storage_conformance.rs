//! One storage conformance suite, run against the memory, embedded (redb) and etcd backends.
//! The etcd tests start a real etcd (Debian's etcd-server) on free loopback ports.

use std::sync::Arc;
use std::time::Duration;

use apiary_runtime::storage::etcd::Etcd;
use apiary_runtime::storage::{self, Engine, EventKind, RangeRequest, Revision, Storage, StorageError};
use apiary_runtime::testing::EtcdProcess;
use futures::StreamExt;

fn keys(kvs: &[apiary_runtime::storage::KeyValue]) -> Vec<&str> {
    kvs.iter().map(|kv| kv.key.as_str()).collect()
}

async fn range(
    s: &dyn Storage,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
    revision: Option<Revision>,
) -> storage::RangeResponse {
    s.range(RangeRequest {
        prefix: prefix.into(),
        start_after: after.map(String::from),
        limit,
        revision,
    })
    .await
    .unwrap()
}

/// A real etcd in `dir` and a client of it.
async fn etcd(dir: &std::path::Path) -> (EtcdProcess, Etcd) {
    let etcd = EtcdProcess::start(dir);
    let client = etcd.client().await;
    (etcd, client)
}

/// Everything but compaction, which each backend triggers its own way.
async fn conformance(s: Arc<dyn Storage>) {
    let start = s.current_revision().await.unwrap();

    // Create, get, AlreadyExists.
    let a = s.create("/t/p/a", b"1".to_vec()).await.unwrap();
    assert!(a.mod_revision > start);
    assert_eq!(a.create_revision, a.mod_revision);
    assert_eq!(s.get("/t/p/a").await.unwrap().unwrap().value[..], b"1"[..]);
    assert_eq!(
        s.create("/t/p/a", b"x".to_vec()).await.unwrap_err(),
        StorageError::AlreadyExists
    );
    assert_eq!(s.get("/t/p/none").await.unwrap(), None);

    // Update preconditions.
    let a2 = s.update("/t/p/a", b"2".to_vec(), a.mod_revision).await.unwrap();
    assert!(a2.mod_revision > a.mod_revision);
    assert_eq!(
        s.update("/t/p/a", b"3".to_vec(), a.mod_revision).await.unwrap_err(),
        StorageError::Conflict {
            current: a2.mod_revision
        }
    );
    assert_eq!(
        s.update("/t/p/none", b"3".to_vec(), 1).await.unwrap_err(),
        StorageError::NotFound
    );
    assert_eq!(
        s.get("/t/p/a").await.unwrap().unwrap().create_revision,
        a.create_revision
    );

    // Ranges: prefix, order, pagination, remaining.
    for k in ["d", "b", "c"] {
        s.create(&format!("/t/p/{k}"), k.as_bytes().to_vec()).await.unwrap();
    }
    s.create("/t/q/x", b"q".to_vec()).await.unwrap();
    s.create("/t/pp", b"pp".to_vec()).await.unwrap();
    let all = range(&*s, "/t/p/", None, 0, None).await;
    assert_eq!(s.count("/t/p/").await.unwrap(), all.kvs.len() as u64);
    assert_eq!(s.count("/t/none/").await.unwrap(), 0);
    let census = s
        .census("/t/p/", all.revision)
        .await
        .unwrap()
        .expect("every backend counts");
    assert_eq!((census.keys, census.written_after), (all.kvs.len() as u64, false));
    let census = s.census("/t/p/", 0).await.unwrap().unwrap();
    assert!(census.written_after && census.revision >= all.revision);
    assert_eq!(keys(&all.kvs), ["/t/p/a", "/t/p/b", "/t/p/c", "/t/p/d"]);
    assert_eq!(all.remaining, 0);
    let page1 = range(&*s, "/t/p/", None, 3, None).await;
    assert_eq!(
        (keys(&page1.kvs), page1.remaining),
        (vec!["/t/p/a", "/t/p/b", "/t/p/c"], 1)
    );
    let page2 = range(&*s, "/t/p/", Some("/t/p/c"), 3, Some(page1.revision)).await;
    assert_eq!((keys(&page2.kvs), page2.remaining), (vec!["/t/p/d"], 0));

    // Reads at a past revision see the past.
    let before = s.current_revision().await.unwrap();
    let b = s.get("/t/p/b").await.unwrap().unwrap();
    s.update("/t/p/b", b"B".to_vec(), b.mod_revision).await.unwrap();
    let c = s.get("/t/p/c").await.unwrap().unwrap();
    s.delete("/t/p/c", c.mod_revision).await.unwrap();
    s.create("/t/p/e", b"e".to_vec()).await.unwrap();
    let past = range(&*s, "/t/p/", None, 0, Some(before)).await;
    assert_eq!(keys(&past.kvs), ["/t/p/a", "/t/p/b", "/t/p/c", "/t/p/d"]);
    assert_eq!(past.kvs[1].value[..], b"b"[..]);
    assert_eq!(past.revision, before);
    let now = range(&*s, "/t/p/", None, 0, None).await;
    assert_eq!(keys(&now.kvs), ["/t/p/a", "/t/p/b", "/t/p/d", "/t/p/e"]);

    // Delete preconditions and the deleted value.
    let d = s.get("/t/p/d").await.unwrap().unwrap();
    assert!(matches!(
        s.delete("/t/p/d", d.mod_revision - 1).await.unwrap_err(),
        StorageError::Conflict { .. }
    ));
    let deleted = s.delete("/t/p/d", d.mod_revision).await.unwrap();
    assert_eq!(deleted.value[..], b"d"[..]);
    assert!(deleted.mod_revision > d.mod_revision, "a deletion has its own revision");
    assert_eq!(
        s.delete("/t/p/d", d.mod_revision).await.unwrap_err(),
        StorageError::NotFound
    );

    // Watch from a revision: the backlog in order, then live events; other prefixes excluded.
    let mut watch = s.watch("/t/p/", before).await.unwrap();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("an event in time")
            .unwrap()
            .unwrap()
    };
    let e1 = next().await;
    assert_eq!(
        (e1.kind, e1.kv.key.as_str(), &e1.kv.value[..]),
        (EventKind::Put, "/t/p/b", &b"B"[..])
    );
    assert_eq!(e1.prev.as_ref().unwrap().value[..], b"b"[..]);
    let e2 = next().await;
    assert_eq!((e2.kind, e2.kv.key.as_str()), (EventKind::Delete, "/t/p/c"));
    assert_eq!(e2.prev.as_ref().unwrap().value[..], b"c"[..]);
    assert_eq!(next().await.kv.key, "/t/p/e");
    assert_eq!(next().await.kind, EventKind::Delete);
    s.create("/t/q/ignored", b"-".to_vec()).await.unwrap();
    let live = s.create("/t/p/live", b"l".to_vec()).await.unwrap();
    let e = next().await;
    assert_eq!(
        (e.kv.key.as_str(), e.kv.mod_revision, e.prev),
        ("/t/p/live", live.mod_revision, None)
    );

    // Concurrency: of many writers with the same precondition, exactly one wins.
    let base = s.get("/t/p/live").await.unwrap().unwrap().mod_revision;
    let writers = (0..16).map(|i| {
        let s = s.clone();
        tokio::spawn(async move { s.update("/t/p/live", vec![i], base).await })
    });
    let results = futures::future::join_all(writers).await;
    let wins = results.iter().filter(|r| r.as_ref().unwrap().is_ok()).count();
    assert_eq!(wins, 1, "{results:?}");
    assert!(
        results
            .iter()
            .all(|r| matches!(r.as_ref().unwrap(), Ok(_) | Err(StorageError::Conflict { .. })))
    );

    // Revisions only grow.
    assert!(s.current_revision().await.unwrap() > live.mod_revision);
    s.ready().await.unwrap();
}

/// After compaction past `old`, reads and watches at `old` are Expired.
async fn expired_at(s: &dyn Storage, old: Revision) {
    let range = s
        .range(RangeRequest {
            prefix: "/t/".into(),
            revision: Some(old),
            ..Default::default()
        })
        .await;
    assert!(matches!(range, Err(StorageError::Expired { .. })), "{range:?}");
    match s.watch("/t/", old).await {
        Err(StorageError::Expired { .. }) => {}
        Ok(mut stream) => {
            let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .unwrap();
            assert!(matches!(first, Some(Err(StorageError::Expired { .. }))), "{first:?}");
            assert!(stream.next().await.is_none(), "the stream ends after the error");
        }
        Err(e) => panic!("expected Expired, got {e:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_backend() {
    conformance(storage::memory()).await;
    let small = Engine::memory_with_history(3);
    let first = small.create("/t/a", vec![]).await.unwrap().mod_revision;
    for i in 0..5 {
        small.create(&format!("/t/n{i}"), vec![]).await.unwrap();
    }
    expired_at(&small, first).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_cache_in_front_of_memory() {
    let cache = storage::WatchCache::new(storage::memory(), 100);
    // Start the shared feed first, so the suite's watches are served from the cache's window.
    let _feed = cache
        .changes("/t/p/", cache.current_revision().await.unwrap())
        .await
        .unwrap();
    conformance(cache).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_backend() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let s = storage::embedded(&path).unwrap();
    conformance(s.clone()).await;
    let old = s.current_revision().await.unwrap() - 3;
    let last = s.get("/t/p/live").await.unwrap().unwrap();
    drop(s);
    // Reopened: every acknowledged write is there; history before now is compacted.
    let reopened = storage::embedded(&path).unwrap();
    assert_eq!(reopened.get("/t/p/live").await.unwrap().unwrap(), last);
    assert_eq!(
        keys(&range(&*reopened, "/t/p/", None, 0, None).await.kvs),
        ["/t/p/a", "/t/p/b", "/t/p/e", "/t/p/live"]
    );
    expired_at(&*reopened, old).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_backend() {
    let dir = tempfile::tempdir().unwrap();
    let (_etcd, s) = etcd(dir.path()).await;
    conformance(Arc::new(s.clone())).await;
    let old = s.current_revision().await.unwrap() - 3;
    s.compact(old + 2).await.unwrap();
    expired_at(&s, old).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_outage_fails_fast_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let (mut etcd, s) = etcd(dir.path()).await;
    let kv = s.create("/t/a", b"1".to_vec()).await.unwrap();
    etcd.stop();
    let started = std::time::Instant::now();
    let during = s.get("/t/a").await;
    assert!(matches!(during, Err(StorageError::Unavailable(_))), "{during:?}");
    assert!(started.elapsed() < apiary_runtime::storage::etcd::REQUEST_TIMEOUT + Duration::from_secs(5));
    let started = std::time::Instant::now();
    let listed = s
        .range(RangeRequest {
            prefix: "/t/".into(),
            ..Default::default()
        })
        .await;
    assert!(matches!(listed, Err(StorageError::Unavailable(_))), "{listed:?}");
    assert!(started.elapsed() < apiary_runtime::storage::etcd::REQUEST_TIMEOUT + Duration::from_secs(5));
    etcd.restart();
    let mut after = None;
    for _ in 0..100 {
        if let Ok(v) = s.get("/t/a").await {
            after = v;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(after.expect("etcd is back with the acknowledged write"), kv);
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_lists_past_the_grpc_message_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (_etcd, s) = etcd(dir.path()).await;
    // 1,100 values of 10 KB: 11 MB, well past the 4 MiB an etcd answer may carry.
    let value = vec![b'x'; 10_000];
    let writes = futures::stream::iter(0..1_100)
        .map(|i| {
            let (s, value) = (s.clone(), value.clone());
            async move { s.create(&format!("/big/k{i:05}"), value).await }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    assert!(writes.iter().all(Result::is_ok));
    let at = s.current_revision().await.unwrap();
    s.create("/big/k99999", b"later".to_vec()).await.unwrap();

    let all = range(&s, "/big/", None, 0, Some(at)).await;
    assert_eq!(all.kvs.len(), 1_100);
    assert_eq!((all.remaining, all.revision), (0, at));
    assert!(all.kvs.windows(2).all(|w| w[0].key < w[1].key));
    assert_eq!(range(&s, "/big/", None, 0, None).await.kvs.len(), 1_101);

    // A limit larger than one page: exactly that many, the rest counted, at one revision.
    let first = range(&s, "/big/", None, 700, Some(at)).await;
    assert_eq!((first.kvs.len(), first.remaining), (700, 400));
    let rest = range(&s, "/big/", Some(&first.kvs[699].key), 0, Some(at)).await;
    assert_eq!((rest.kvs.len(), rest.remaining), (400, 0));
    assert_eq!(rest.kvs[0].key, "/big/k00700");
}
