//! etcd's history is compacted as kube-apiserver compacts it: every replica runs the
//! compactor, they agree through `compact_rev_key`, and etcd is compacted once per interval up
//! to the revision of the interval before (a real etcd on loopback ports).

use apiary_runtime::storage::etcd::compactor::{Round, compact_once};
use apiary_runtime::storage::{RangeRequest, Storage, StorageError};
use apiary_runtime::testing::EtcdProcess;

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
