//! Periodic compaction of etcd's history, as kube-apiserver's compactor does it
//! (k8s.io/apiserver `storage/etcd3/compact.go`): without it every write adds a revision that
//! etcd keeps until its database reaches its quota and it refuses all writes.
//!
//! Every replica (and every kube-apiserver sharing the etcd) runs the loop; they agree through
//! one key, `compact_rev_key`, outside every prefix. Each interval a replica tries a
//! compare-and-swap on the key's version (the number of times it was written): the winner writes
//! the revision it saw an interval ago and compacts etcd up to it; the others learn the key's new
//! version and try again next interval. So etcd is compacted once per interval whatever the
//! number of servers, and always keeps at least one interval of history for watches to resume.

use std::time::Duration;

use super::proto::etcdserverpb::{self as pb, compare, request_op, response_op};
use super::{Etcd, equals, put};
use crate::storage::{Revision, StorageError};

/// The key every compactor of one etcd agrees through (kube-apiserver's own name, so they
/// coordinate with it too when they share an etcd).
pub const COMPACT_REV_KEY: &str = "compact_rev_key";

/// What one compactor remembers between intervals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Round {
    /// The version of `compact_rev_key` last seen (0: never written).
    pub version: i64,
    /// etcd's revision at the last attempt: what the next winner compacts to.
    pub revision: Revision,
}

/// One attempt: claim this interval through `compact_rev_key`, and if claimed, compact etcd up
/// to the revision of the previous round. Returns the round to remember, and the revision
/// compacted to when this replica compacted.
pub async fn compact_once(etcd: &Etcd, last: Round) -> Result<(Round, Option<Revision>), StorageError> {
    let claim = pb::TxnRequest {
        compare: vec![equals(
            COMPACT_REV_KEY,
            compare::CompareTarget::Version,
            compare::TargetUnion::Version(last.version),
        )],
        success: vec![put(COMPACT_REV_KEY, last.revision.to_string().into_bytes())],
        failure: vec![pb::RequestOp {
            request: Some(request_op::Request::RequestRange(pb::RangeRequest {
                key: COMPACT_REV_KEY.as_bytes().to_vec(),
                ..Default::default()
            })),
        }],
    };
    let answer = etcd.transaction(claim).await?;
    let now = answer.header.as_ref().map_or(0, |h| h.revision as Revision);
    if !answer.succeeded {
        // Another compactor claimed this interval: remember the version it left.
        let version = answer
            .responses
            .into_iter()
            .find_map(|r| match r.response {
                Some(response_op::Response::ResponseRange(range)) => range.kvs.into_iter().next(),
                _ => None,
            })
            .map_or(0, |kv| kv.version);
        return Ok((Round { version, revision: now }, None));
    }
    let next = Round {
        version: last.version + 1,
        revision: now,
    };
    // The first round only claims: there is no previous revision to compact to yet.
    if last.revision == 0 {
        return Ok((next, None));
    }
    match etcd.compact(last.revision).await {
        Ok(()) => Ok((next, Some(last.revision))),
        // Someone (an operator, etcd's own auto-compaction) compacted further already.
        Err(StorageError::Unavailable(e)) if e.contains("compacted") => Ok((next, None)),
        Err(e) => Err(e),
    }
}

/// Compact every `interval` until `stop` turns true. Failures are logged and retried at the
/// next interval (an etcd outage must not end compaction for good).
pub async fn run(etcd: Etcd, interval: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut round = Round::default();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        match compact_once(&etcd, round).await {
            Ok((next, compacted)) => {
                round = next;
                if let Some(revision) = compacted {
                    tracing::info!(revision, "etcd compacted");
                }
            }
            Err(e) => tracing::warn!("etcd compaction failed, retrying in {interval:?}: {e}"),
        }
    }
}
