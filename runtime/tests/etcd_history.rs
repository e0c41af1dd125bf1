//! etcd's history, on real etcd processes on loopback ports. It is compacted as
//! kube-apiserver compacts it: every replica runs the compactor, they agree through
//! `compact_rev_key`, and etcd is compacted once per interval up to the revision of the
//! interval before. And when an operator restores etcd from an older snapshot, the watch cache
//! starts over from the restored keys instead of serving a mix of two histories.

use std::sync::Arc;
use std::time::Duration;

use apiary_cluster::Binaries;
use apiary_runtime::storage::etcd::compactor::{Round, compact_once};
use apiary_runtime::storage::{Freshness, RangeRequest, Storage, StorageError, WatchCache};
use apiary_runtime::testing::EtcdProcess;
use futures::StreamExt;

async fn write(etcd: &impl Storage, from: usize, to: usize) {
    for i in from..to {
        etcd.create(&format!("/registry/things/k{i}"), b"{}".to_vec())
            .await
            .unwrap();
    }
}

async fn range_at(etcd: &impl Storage, revision: u64) -> Result<usize, StorageError> {
    let request = RangeRequest {
        prefix: "/registry/things/".into(),
        revision: Some(revision),
        ..Default::default()
    };
    etcd.range(request).await.map(|r| r.kvs.len())
}

#[tokio::test]
async fn two_replicas_compact_once_per_interval_to_the_revision_before() {
    let dir = tempfile::tempdir().unwrap();
    let process = EtcdProcess::start(dir.path());
    let (a, b) = (process.client().await, process.client().await);
    write(&a, 0, 5).await;

    // First interval: A claims it (nothing to compact to yet); B loses and learns the version.
    let (a1, compacted) = compact_once(&a, Round::default()).await.unwrap();
    assert_eq!((a1.version, compacted), (1, None));
    let (b1, compacted) = compact_once(&b, Round::default()).await.unwrap();
    assert_eq!((b1.version, compacted), (1, None));
    let first = a1.revision;
    assert_eq!(range_at(&a, first - 1).await, Ok(5), "nothing compacted yet");

    // Second interval: B claims it and compacts to what it saw an interval ago; A, a moment
    // later, finds the interval claimed.
    write(&a, 5, 10).await;
    let (b2, compacted) = compact_once(&b, b1).await.unwrap();
    assert_eq!((b2.version, compacted), (2, Some(b1.revision)));
    let (a2, compacted) = compact_once(&a, a1).await.unwrap();
    assert_eq!((a2.version, compacted), (2, None));

    // History before the compacted revision is gone (410 for clients); from it on it is kept.
    let before = range_at(&a, b1.revision - 1).await;
    assert!(matches!(before, Err(StorageError::Expired { .. })), "{before:?}");
    assert_eq!(range_at(&a, b1.revision).await, Ok(5));
    assert_eq!(range_at(&a, b2.revision).await, Ok(10));
}

#[tokio::test]
async fn a_compaction_someone_else_made_further_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let process = EtcdProcess::start(dir.path());
    let etcd = process.client().await;
    write(&etcd, 0, 3).await;
    let (round, _) = compact_once(&etcd, Round::default()).await.unwrap();
    write(&etcd, 3, 6).await;
    // An operator compacted past the revision this compactor would compact to.
    let now = etcd.current_revision().await.unwrap();
    etcd.compact(now).await.unwrap();
    let (next, compacted) = compact_once(&etcd, round).await.unwrap();
    assert_eq!((next.version, compacted), (2, None));
}

/// The keys under `/registry/things/` in a consistent list through `cache`.
async fn listed(cache: &WatchCache) -> Vec<String> {
    let request = RangeRequest {
        prefix: "/registry/things/".into(),
        ..Default::default()
    };
    let listed = cache
        .list("/registry/things/", &request, Freshness::Consistent)
        .await
        .unwrap();
    listed.kvs.into_iter().map(|kv| kv.key).collect()
}

/// Six keys written through a watch cache, a snapshot taken after the third, a watcher at the
/// newest revision; then etcd restored from the snapshot with `restore_flags` and one key
/// written. The watcher must end with `Expired` (its client re-lists) and a consistent list
/// must show the restored keys and the new one: nothing of the history the restore undid.
async fn the_cache_starts_over_after_a_restore(restore_flags: &[&str]) {
    let binaries = Binaries::ensure().expect("etcd 3.6 builds");
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = EtcdProcess::start_binary(&binaries.etcd, dir.path(), &[]);
    let cache = WatchCache::new(Arc::new(etcd.client().await), 1000);
    write(&*cache, 0, 3).await;
    let snapshot = dir.path().join("backup.db");
    etcd.snapshot(&binaries.etcdctl, &snapshot);
    write(&*cache, 3, 6).await;
    assert_eq!(listed(&cache).await.len(), 6);
    let newest = cache.current_revision().await.unwrap();
    let mut watcher = cache.changes("/registry/things/", newest).await.unwrap();

    etcd.restore(&binaries.etcdutl, &snapshot, restore_flags);
    let mut written = None;
    for _ in 0..100 {
        if let Ok(kv) = cache.create("/registry/things/after", b"{}".to_vec()).await {
            written = Some(kv);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(written.is_some(), "etcd answers within 10 s of its restore");

    let ended = tokio::time::timeout(Duration::from_secs(30), watcher.next()).await;
    assert!(
        matches!(ended, Ok(Some(Err(StorageError::Expired { .. })))),
        "the watcher of the undone history ends with Expired: {ended:?}"
    );
    let keys = ["after", "k0", "k1", "k2"].map(|k| format!("/registry/things/{k}"));
    assert_eq!(listed(&cache).await, keys, "the restored keys and the new one, no more");
}

/// A plain restore takes etcd's revision back to the snapshot's: the cache notices the store
/// behind what it received.
#[tokio::test(flavor = "multi_thread")]
async fn the_cache_starts_over_when_etcd_is_restored_to_an_older_revision() {
    the_cache_starts_over_after_a_restore(&[]).await;
}

/// The restore etcd documents for Kubernetes: revisions bumped past every one served before and
/// marked compacted, so that watches from before end as compacted.
#[tokio::test(flavor = "multi_thread")]
async fn the_cache_starts_over_when_etcd_is_restored_with_bumped_revisions() {
    the_cache_starts_over_after_a_restore(&["--bump-revision", "1000000", "--mark-compacted"]).await;
}

/// Rounds of updates in [`database_sizes`].
const ROUNDS: usize = 40;

/// etcd's database size (`dbSize`, the pages its file holds) after each of 40 rounds of 200
/// updates of 2 KiB values to 200 keys (a round every 250 ms at most, its updates 20 at a
/// time), with the compactor running every second or not at all.
async fn database_sizes(compactor: bool) -> Vec<i64> {
    use apiary_runtime::testing::raw_etcd;
    let binaries = Binaries::ensure().expect("etcd 3.6 builds");
    let dir = tempfile::tempdir().unwrap();
    let process = EtcdProcess::start_binary(&binaries.etcd, dir.path(), &[]);
    let etcd = process.client().await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    if compactor {
        let interval = Duration::from_secs(1);
        tokio::spawn(apiary_runtime::storage::etcd::compactor::run(
            etcd.clone(),
            interval,
            stopped,
        ));
    }
    let mut maintenance =
        raw_etcd::maintenance_client::MaintenanceClient::new(raw_etcd::channel(&process.endpoint()).await);
    let value = vec![b'x'; 2048];
    let keys: Vec<String> = (0..200).map(|i| format!("/registry/things/k{i}")).collect();
    let mut held = Vec::new();
    for key in &keys {
        held.push(etcd.create(key, value.clone()).await.unwrap().mod_revision);
    }
    let mut sizes = Vec::new();
    for _ in 0..ROUNDS {
        let round = tokio::time::sleep(Duration::from_millis(250));
        for (batch, revisions) in keys.chunks(20).zip(held.chunks_mut(20)) {
            let updates = batch
                .iter()
                .zip(revisions.to_vec())
                .map(|(key, revision)| etcd.update(key, value.clone(), revision));
            for (revision, written) in revisions.iter_mut().zip(futures::future::join_all(updates).await) {
                *revision = written.unwrap().mod_revision;
            }
        }
        let status = maintenance
            .status(raw_etcd::StatusRequest {})
            .await
            .unwrap()
            .into_inner();
        sizes.push(status.db_size);
        round.await;
    }
    let _ = stop.send(true);
    sizes
}

/// Without compaction every update stays in etcd's history and its database grows with the
/// writes; with the compactor the history is freed each interval, the pages are reused, and
/// the size levels off.
#[tokio::test(flavor = "multi_thread")]
async fn the_compactor_keeps_etcds_database_from_growing() {
    let (kept, compacted) = (database_sizes(false).await, database_sizes(true).await);
    let mib = |sizes: &[i64]| {
        sizes
            .iter()
            .map(|s| format!("{:.1}", *s as f64 / 1048576.0))
            .collect::<Vec<_>>()
    };
    let figures = format!(
        "without compaction {:?} MiB, with {:?} MiB",
        mib(&kept),
        mib(&compacted)
    );
    let growth = |sizes: &[i64]| sizes[ROUNDS - 1] - sizes[ROUNDS / 2];
    assert!(
        growth(&kept) > 4 << 20,
        "without compaction the database grows: {figures}"
    );
    assert!(
        growth(&compacted) < growth(&kept) / 8,
        "with the compactor the size levels off: {figures}"
    );
    if std::env::var_os("APIARY_FIGURES").is_some() {
        eprintln!("{figures}");
    }
}
