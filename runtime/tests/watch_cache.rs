//! The watch cache: one backend watch per prefix shared by every watcher, resume within its
//! window, 410 for watchers that fall out of it, and recovery when etcd goes away and returns.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use apiary_runtime::storage::{
    Census, Engine, EventKind, EventStream, Freshness, KeyValue, RangeRequest, RangeResponse, Revision, Storage,
    StorageError, WatchCache,
};
use apiary_runtime::testing::EtcdProcess;
use async_trait::async_trait;
use futures::{Stream, StreamExt};

/// A backend that counts the watches opened, the keys and ranges read, the revision reads and
/// the censuses taken on it; its revision reads take `revision_delay` milliseconds more, its
/// censuses `census_delay`.
struct Counting {
    inner: Arc<dyn Storage>,
    watches: AtomicUsize,
    gets: AtomicUsize,
    ranges: AtomicUsize,
    revisions: AtomicUsize,
    revision_delay: AtomicU64,
    censuses: AtomicUsize,
    census_delay: AtomicU64,
}

impl Counting {
    fn new(inner: Arc<dyn Storage>) -> Arc<Counting> {
        Arc::new(Counting {
            inner,
            watches: AtomicUsize::new(0),
            gets: AtomicUsize::new(0),
            ranges: AtomicUsize::new(0),
            revisions: AtomicUsize::new(0),
            revision_delay: AtomicU64::new(0),
            censuses: AtomicUsize::new(0),
            census_delay: AtomicU64::new(0),
        })
    }
}

#[async_trait]
impl Storage for Counting {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StorageError> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get(key).await
    }
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse, StorageError> {
        self.ranges.fetch_add(1, Ordering::SeqCst);
        self.inner.range(request).await
    }
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StorageError> {
        self.inner.create(key, value).await
    }
    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<KeyValue, StorageError> {
        self.inner.update(key, value, expected).await
    }
    async fn delete(&self, key: &str, expected: Revision) -> Result<KeyValue, StorageError> {
        self.inner.delete(key, expected).await
    }
    async fn watch(&self, prefix: &str, after: Revision) -> Result<EventStream, StorageError> {
        self.watches.fetch_add(1, Ordering::SeqCst);
        self.inner.watch(prefix, after).await
    }
    async fn current_revision(&self) -> Result<Revision, StorageError> {
        self.revisions.fetch_add(1, Ordering::SeqCst);
        let delay = self.revision_delay.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        self.inner.current_revision().await
    }
    async fn census(&self, prefix: &str, after: Revision) -> Result<Option<Census>, StorageError> {
        self.censuses.fetch_add(1, Ordering::SeqCst);
        let delay = self.census_delay.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        self.inner.census(prefix, after).await
    }
    async fn count(&self, prefix: &str) -> Result<u64, StorageError> {
        self.inner.count(prefix).await
    }
    async fn ready(&self) -> Result<(), StorageError> {
        self.inner.ready().await
    }
    fn in_process(&self) -> bool {
        self.inner.in_process()
    }
}

async fn next<T, S: Stream<Item = Result<T, StorageError>> + Unpin>(s: &mut S) -> Result<T, StorageError> {
    tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("an event in time")
        .expect("the stream goes on")
}

#[tokio::test(flavor = "multi_thread")]
async fn many_watchers_share_one_backend_watch() {
    let backend = Counting::new(Arc::new(Engine::memory()));
    let cache = WatchCache::new(backend.clone(), 1000);
    let start = cache.current_revision().await.unwrap();
    let mut watchers = Vec::new();
    for _ in 0..50 {
        watchers.push(cache.changes("/r/widgets/", start).await.unwrap());
    }
    let mut keys = Vec::new();
    for i in 0..10 {
        let key = format!("/r/widgets/ns{}/w{i}", i % 3);
        cache.create(&key, vec![i]).await.unwrap();
        keys.push(key);
    }
    cache.create("/r/other/x", vec![]).await.unwrap();
    // Every watcher gets the same shared change, decoded once for all of them.
    let decodes = AtomicUsize::new(0);
    let mut firsts = Vec::new();
    for w in &mut watchers {
        for (i, key) in keys.iter().enumerate() {
            let change = next(w).await.unwrap();
            assert_eq!(&change.event.kv.key, key);
            let derived = change.derived(|e| {
                decodes.fetch_add(1, Ordering::SeqCst);
                Some(serde_json::json!(e.kv.value.to_vec()))
            });
            assert_eq!(derived.as_deref(), Some(&serde_json::json!([i])));
            if i == 0 {
                firsts.push(change);
            }
        }
    }
    assert!(firsts.windows(2).all(|w| Arc::ptr_eq(&w[0], &w[1])));
    assert_eq!(
        decodes.load(Ordering::SeqCst),
        keys.len(),
        "one decode per change, not per watcher"
    );
    assert_eq!(
        backend.watches.load(Ordering::SeqCst),
        1,
        "one backend watch for 50 watchers"
    );
    assert_eq!(cache.feeds(), 1);
    // A watcher that joins late resumes from any revision in the window, in order.
    let third = cache.get(&keys[2]).await.unwrap().unwrap().mod_revision;
    let mut late = cache.changes("/r/widgets/", third).await.unwrap();
    for key in &keys[3..] {
        assert_eq!(&next(&mut late).await.unwrap().event.kv.key, key);
    }
    assert_eq!(backend.watches.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn window_outlives_the_backends_history() {
    // The backend keeps 3 events; the cache keeps 100.
    let cache = WatchCache::new(Arc::new(Engine::memory_with_history(3)), 100);
    let start = cache.current_revision().await.unwrap();
    let _opened = cache.changes("/r/", start).await.unwrap();
    let mut revisions = Vec::new();
    for i in 0..20 {
        revisions.push(cache.create(&format!("/r/k{i:02}"), vec![]).await.unwrap().mod_revision);
    }
    assert!(matches!(
        cache.backend().watch("/r/", revisions[4]).await,
        Err(StorageError::Expired { .. })
    ));
    let mut resumed = cache.changes("/r/", revisions[4]).await.unwrap();
    for rev in &revisions[5..] {
        let event = next(&mut resumed).await.unwrap();
        assert_eq!(event.event.kv.mod_revision, *rev);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watcher_left_behind_by_the_window_gets_expired() {
    let cache = WatchCache::new(Arc::new(Engine::memory()), 5);
    let start = cache.current_revision().await.unwrap();
    let mut slow = cache.changes("/r/", start).await.unwrap();
    for i in 0..10 {
        cache.create(&format!("/r/k{i}"), vec![]).await.unwrap();
    }
    // Let the feed take all ten in, evicting the first five.
    let mut fast = cache.changes("/r/", start + 9).await.unwrap();
    assert_eq!(next(&mut fast).await.unwrap().event.kv.key, "/r/k9");
    match next(&mut slow).await {
        Err(StorageError::Expired { requested, .. }) => assert_eq!(requested, start),
        other => panic!("expected Expired, got {other:?}"),
    }
    let ended = tokio::time::timeout(Duration::from_secs(5), slow.next()).await.unwrap();
    assert!(ended.is_none(), "the stream ends after Expired");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_feed_survives_an_etcd_outage_without_loss_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = EtcdProcess::start(dir.path());
    let backend = etcd.client().await;
    let cache = WatchCache::new(Arc::new(backend), 100);
    let start = cache.current_revision().await.unwrap();
    let mut watcher = cache.changes("/r/", start).await.unwrap();
    cache.create("/r/before", vec![]).await.unwrap();
    assert_eq!(next(&mut watcher).await.unwrap().event.kv.key, "/r/before");
    etcd.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    etcd.restart();
    let mut after = None;
    for _ in 0..100 {
        if let Ok(kv) = cache.create("/r/after", vec![]).await {
            after = Some(kv);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = after.expect("etcd is back");
    let event = next(&mut watcher).await.unwrap();
    assert_eq!(
        (event.event.kv.key.as_str(), event.event.kv.mod_revision),
        ("/r/after", after.mod_revision)
    );
    // Nothing else (no replay of "/r/before").
    let extra = tokio::time::timeout(Duration::from_millis(500), watcher.next()).await;
    assert!(extra.is_err(), "no duplicate: {extra:?}");
}

/// Run `test` on a fresh etcd, stopped after it.
async fn on_etcd<F: Future<Output = ()>>(test: impl FnOnce(Arc<dyn Storage>) -> F) {
    let dir = tempfile::tempdir().unwrap();
    let etcd = EtcdProcess::start(dir.path());
    test(Arc::new(etcd.client().await)).await;
}

fn whole(prefix: &str) -> RangeRequest {
    RangeRequest {
        prefix: prefix.into(),
        ..Default::default()
    }
}

/// Lists from the cache see every write acknowledged before them, even writes made straight to
/// the backend (as another replica writes etcd), and read the backend only when they must.
async fn consistent_lists_from_the_cache(inner: Arc<dyn Storage>) {
    let backend = Counting::new(inner);
    let cache = WatchCache::new(backend.clone(), 1000);
    assert!(
        cache
            .list("/r/", &whole("/r/"), Freshness::Consistent)
            .await
            .unwrap()
            .kvs
            .is_empty()
    );
    let mut written = Vec::new();
    for i in 0..100 {
        let key = format!("/r/ns/k{i:03}");
        let kv = backend.create(&key, vec![b'1']).await.unwrap();
        let listed = cache
            .list("/r/", &whole("/r/ns/"), Freshness::Consistent)
            .await
            .unwrap();
        assert!(listed.revision >= kv.mod_revision);
        assert_eq!(
            listed.kvs.last().map(|kv| kv.key.as_str()),
            Some(key.as_str()),
            "list {i} sees the write before it"
        );
        written.push(kv);
        if i % 10 == 9 {
            let gone = written.remove(0);
            backend.delete(&gone.key, gone.mod_revision).await.unwrap();
            let listed = cache.list("/r/", &whole("/r/"), Freshness::Consistent).await.unwrap();
            assert!(
                listed.kvs.iter().all(|kv| kv.key != gone.key),
                "list {i} sees the delete"
            );
            assert_eq!(listed.kvs.len(), written.len());
        }
    }
    // Quiet now: lists come from the cache, a write elsewhere (another resource) included.
    let other = backend.create("/other/x", vec![]).await.unwrap();
    let before = backend.ranges.load(Ordering::SeqCst);
    let censuses = backend.censuses.load(Ordering::SeqCst);
    for _ in 0..20 {
        let listed = cache.list("/r/", &whole("/r/"), Freshness::Consistent).await.unwrap();
        assert_eq!(listed.kvs.len(), written.len());
        assert!(listed.revision >= other.mod_revision, "read as of the newest revision");
    }
    // One census vouched for the cache up to `other`; while the store stays there, the others
    // only read its revision.
    assert_eq!(backend.censuses.load(Ordering::SeqCst), censuses + 1);
    // Not older than a revision the cache never saw (another prefix's): the census vouches for
    // the cache, so no wait for it and no storage read (counted below).
    let listed = cache
        .list("/r/", &whole("/r/"), Freshness::NotOlderThan(other.mod_revision))
        .await
        .unwrap();
    assert!(listed.revision >= other.mod_revision);
    let page = RangeRequest {
        limit: 7,
        ..whole("/r/")
    };
    let first = cache.list("/r/", &page, Freshness::NotOlderThan(0)).await.unwrap();
    assert_eq!((first.kvs.len(), first.remaining), (7, written.len() as u64 - 7));
    assert_eq!(backend.ranges.load(Ordering::SeqCst), before, "served from the cache");
    // The next page reads at the first one's revision: from the cache while nothing under the
    // prefix changed since (a write elsewhere does not count), from the backend once something
    // did, and the same page either way.
    let next = RangeRequest {
        start_after: Some(first.kvs[6].key.clone()),
        revision: Some(first.revision),
        ..whole("/r/")
    };
    backend.create("/other/y", vec![]).await.unwrap();
    let rest = cache.list("/r/", &next, Freshness::Consistent).await.unwrap();
    assert_eq!(rest.kvs.len() + 7, written.len());
    assert_eq!(rest.revision, first.revision);
    assert_eq!(
        backend.ranges.load(Ordering::SeqCst),
        before,
        "the next page from the cache"
    );
    let added = cache.create("/r/ns/later", vec![b'1']).await.unwrap();
    cache.list("/r/", &whole("/r/"), Freshness::Consistent).await.unwrap();
    let again = cache.list("/r/", &next, Freshness::Consistent).await.unwrap();
    assert_eq!(
        again.kvs, rest.kvs,
        "the page as of its revision, without the later write"
    );
    assert!(again.kvs.iter().all(|kv| kv.mod_revision < added.mod_revision));
    assert_eq!(backend.ranges.load(Ordering::SeqCst), before + 1, "from the backend");
}

/// Writes made through the cache (this server's own, to this resource and to others, as the
/// leader lease is) let lists vouch for the cache without a census, and every list still sees
/// every write before it; one write by someone else brings the census back.
async fn own_writes_need_no_census(inner: Arc<dyn Storage>) {
    let backend = Counting::new(inner);
    let cache = WatchCache::new(backend.clone(), 1000);
    cache.list("/r/", &whole("/r/"), Freshness::Consistent).await.unwrap();
    let censuses = backend.censuses.load(Ordering::SeqCst);
    for i in 0..50 {
        let kv = cache.create(&format!("/r/k{i:03}"), vec![b'1']).await.unwrap();
        cache.create(&format!("/lease/l{i:03}"), vec![b'1']).await.unwrap();
        let listed = cache.list("/r/", &whole("/r/"), Freshness::Consistent).await.unwrap();
        assert_eq!(listed.kvs.len(), i + 1, "list {i} sees the write before it");
        assert!(listed.revision > kv.mod_revision, "read as of the newest revision");
    }
    assert_eq!(backend.censuses.load(Ordering::SeqCst), censuses, "no census");
    // Own writes elsewhere only (the lease's renewals), after the cache was vouched for past its
    // feed's last event: lists and reads are served at once, none waits out its time and falls
    // back to the backend.
    let (ranges, gets) = (
        backend.ranges.load(Ordering::SeqCst),
        backend.gets.load(Ordering::SeqCst),
    );
    for i in 0..5 {
        let lease = cache.create(&format!("/lease/m{i:03}"), vec![b'1']).await.unwrap();
        let listed = cache.list("/r/", &whole("/r/"), Freshness::Consistent).await.unwrap();
        assert_eq!(listed.kvs.len(), 50);
        assert!(listed.revision >= lease.mod_revision, "read as of the newest revision");
        assert!(cache.read("/r/", "/r/k000").await.unwrap().is_some());
    }
    assert_eq!(backend.ranges.load(Ordering::SeqCst), ranges, "lists from the cache");
    if !backend.in_process() {
        assert_eq!(backend.gets.load(Ordering::SeqCst), gets, "reads from the cache");
    }
    assert_eq!(backend.censuses.load(Ordering::SeqCst), censuses, "no census");
    // Someone else's write, elsewhere: the cache cannot know it was elsewhere without asking.
    let foreign = backend.create("/elsewhere/theirs", vec![]).await.unwrap();
    let listed = cache.list("/r/", &whole("/r/"), Freshness::Consistent).await.unwrap();
    assert!(listed.revision >= foreign.mod_revision);
    assert_eq!(backend.censuses.load(Ordering::SeqCst), censuses + 1, "a census for it");
}

#[tokio::test(flavor = "multi_thread")]
async fn own_writes_need_no_census_on_memory() {
    own_writes_need_no_census(Arc::new(Engine::memory())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn own_writes_need_no_census_on_etcd() {
    on_etcd(own_writes_need_no_census).await;
}

/// Consistent reads that arrive together after someone else's write share one census (as they
/// share the revision read): a thousand watches starting at once cost etcd a census or two, not a
/// thousand reads of the whole prefix.
async fn concurrent_reads_share_their_census(inner: Arc<dyn Storage>) {
    let backend = Counting::new(inner);
    let cache = WatchCache::new(backend.clone(), 1000);
    for i in 0..20 {
        cache.create(&format!("/r/k{i:03}"), vec![b'1']).await.unwrap();
    }
    cache.list("/r/", &whole("/r/"), Freshness::Consistent).await.unwrap();
    let foreign = backend.create("/elsewhere/theirs", vec![]).await.unwrap();
    backend.census_delay.store(50, Ordering::SeqCst);
    let censuses = backend.censuses.load(Ordering::SeqCst);
    let lists = (0..200).map(|_| {
        let cache = cache.clone();
        tokio::spawn(async move { cache.list("/r/", &whole("/r/"), Freshness::Consistent).await })
    });
    for listed in futures::future::join_all(lists).await {
        let listed = listed.unwrap().unwrap();
        assert_eq!(listed.kvs.len(), 20);
        assert!(
            listed.revision >= foreign.mod_revision,
            "read as of the newest revision"
        );
    }
    let taken = backend.censuses.load(Ordering::SeqCst) - censuses;
    assert!((1..=2).contains(&taken), "200 reads took {taken} censuses");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_reads_share_their_census_on_memory() {
    concurrent_reads_share_their_census(Arc::new(Engine::memory())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_reads_share_their_census_on_etcd() {
    on_etcd(concurrent_reads_share_their_census).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_come_from_the_cache_consistently_on_memory() {
    consistent_lists_from_the_cache(Arc::new(Engine::memory())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_come_from_the_cache_consistently_on_etcd() {
    on_etcd(consistent_lists_from_the_cache).await;
}

/// GETs from the cache see every write acknowledged before them, including writes made straight
/// to the backend (another replica's), while many run at once; concurrent GETs share their
/// revision reads; and a quiet remote store's GETs read no object from it (a store in this
/// process answers its own reads).
async fn consistent_reads_from_the_cache(inner: Arc<dyn Storage>) {
    let backend = Counting::new(inner);
    let cache = WatchCache::new(backend.clone(), 1000);
    let key = "/r/ns/counted";
    let first = backend.create(key, b"0".to_vec()).await.unwrap();
    assert_eq!(
        cache.read("/r/", key).await.unwrap().map(|kv| kv.value),
        Some(first.value)
    );
    // One writer updates the key straight on the backend, counting what was acknowledged;
    // eight readers check that each read sees at least what was acknowledged before it began.
    let acked = Arc::new(AtomicU64::new(0));
    let writer = {
        let (backend, acked) = (backend.clone(), acked.clone());
        tokio::spawn(async move {
            let mut revision = first.mod_revision;
            for n in 1..=200u64 {
                revision = backend
                    .update(key, n.to_string().into_bytes(), revision)
                    .await
                    .unwrap()
                    .mod_revision;
                acked.store(n, Ordering::SeqCst);
            }
        })
    };
    let mut readers = Vec::new();
    for _ in 0..8 {
        let (cache, acked) = (cache.clone(), acked.clone());
        readers.push(tokio::spawn(async move {
            let mut reads = 0;
            while acked.load(Ordering::SeqCst) < 200 {
                let floor = acked.load(Ordering::SeqCst);
                let kv = cache.read("/r/", key).await.unwrap().expect("the key exists");
                let seen: u64 = std::str::from_utf8(&kv.value).unwrap().parse().unwrap();
                assert!(seen >= floor, "a read saw {seen} after {floor} was acknowledged");
                reads += 1;
                // A read of a quiet memory store never waits: let the writer run.
                tokio::task::yield_now().await;
            }
            reads
        }));
    }
    writer.await.unwrap();
    for reader in readers {
        assert!(reader.await.unwrap() > 0);
    }
    // A delete is seen at once, an unknown key is absent, a key outside the feed reads the backend.
    let current = backend.get(key).await.unwrap().unwrap();
    backend.delete(key, current.mod_revision).await.unwrap();
    assert_eq!(cache.read("/r/", key).await.unwrap(), None);
    assert_eq!(cache.read("/r/", "/r/ns/never").await.unwrap(), None);
    // Quiet now: reads come from the cache, and concurrent ones share their revision reads.
    let kept = backend.create("/r/ns/kept", b"k".to_vec()).await.unwrap();
    cache.read("/r/", &kept.key).await.unwrap();
    let (gets, revisions) = (
        backend.gets.load(Ordering::SeqCst),
        backend.revisions.load(Ordering::SeqCst),
    );
    backend.revision_delay.store(100, Ordering::SeqCst);
    let reads = (0..64).map(|_| {
        let (cache, key) = (cache.clone(), kept.key.clone());
        tokio::spawn(async move { cache.read("/r/", &key).await.unwrap().unwrap().mod_revision })
    });
    for read in futures::future::join_all(reads.collect::<Vec<_>>()).await {
        assert_eq!(read.unwrap(), kept.mod_revision);
    }
    backend.revision_delay.store(0, Ordering::SeqCst);
    let (gets, shared) = (
        backend.gets.load(Ordering::SeqCst) - gets,
        backend.revisions.load(Ordering::SeqCst) - revisions,
    );
    if backend.in_process() {
        // Memory and embedded stores answer reads themselves: no revision read to share.
        assert_eq!((gets, shared), (64, 0), "read from the backend");
    } else {
        assert!(shared <= 3, "64 concurrent reads took {shared} revision reads");
        assert_eq!(gets, 0, "served from the cache");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_come_from_the_cache_consistently_on_memory() {
    consistent_reads_from_the_cache(Arc::new(Engine::memory())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_come_from_the_cache_consistently_on_etcd() {
    on_etcd(consistent_reads_from_the_cache).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cache_fills_in_what_etcd_follows_without() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = EtcdProcess::start(dir.path());
    let backend: Arc<dyn Storage> = Arc::new(etcd.client().await);
    let start = backend.current_revision().await.unwrap();
    // etcd's follow spares it a read per change: no previous values, a delete without its value.
    let mut followed = backend.follow("/r/", start).await.unwrap();
    let cache = WatchCache::new(backend.clone(), 100);
    let mut changes = cache.changes("/r/", start).await.unwrap();
    let created = cache.create("/r/k", b"one".to_vec()).await.unwrap();
    let updated = cache
        .update("/r/k", b"two".to_vec(), created.mod_revision)
        .await
        .unwrap();
    let deleted = cache.delete("/r/k", updated.mod_revision).await.unwrap();
    let mut bare = Vec::new();
    for _ in 0..3 {
        bare.push(next(&mut followed).await.unwrap());
    }
    assert!(bare.iter().all(|e| e.prev.is_none()), "{bare:?}");
    assert!(bare[2].kv.value.is_empty(), "{:?}", bare[2]);
    // The cache's changes carry them, from the values it holds, as a watch with them would.
    let (put, update, delete) = (
        next(&mut changes).await.unwrap(),
        next(&mut changes).await.unwrap(),
        next(&mut changes).await.unwrap(),
    );
    let value_at = |kv: Option<&KeyValue>| kv.map(|kv| (kv.value.clone(), kv.mod_revision));
    assert_eq!(put.event.prev, None);
    assert_eq!(value_at(update.event.prev.as_ref()), value_at(Some(&created)));
    assert_eq!(delete.event.kind, EventKind::Delete);
    assert_eq!(value_at(delete.event.prev.as_ref()), value_at(Some(&updated)));
    assert_eq!(
        value_at(Some(&delete.event.kv)),
        Some((updated.value.clone(), deleted.mod_revision))
    );
    // The same as the backend's own watch with previous values says.
    let mut watched = backend.watch("/r/", start).await.unwrap();
    for change in [&put, &update, &delete] {
        assert_eq!(next(&mut watched).await.unwrap(), change.event);
    }
}
