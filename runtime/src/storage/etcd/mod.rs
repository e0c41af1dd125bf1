//! The etcd backend (etcd's v3 gRPC API, `client.rs`): revisions are etcd's, preconditions
//! are transactions on `mod_revision`, watches are etcd watches from a revision.

mod client;
pub mod compactor;
mod members;

use async_trait::async_trait;
use futures::StreamExt;
use tonic::transport::Channel;

pub use client::{EtcdConfig, REQUEST_TIMEOUT, proto};
pub use members::{PROBE_INTERVAL, PROBE_TIMEOUT};
use proto::etcdserverpb::{
    self as pb, compare, kv_client::KvClient, maintenance_client::MaintenanceClient, request_op, response_op,
    watch_client::WatchClient, watch_request,
};
use proto::mvccpb;

use super::{
    Census, Event, EventKind, EventStream, KeyValue, RangeRequest, RangeResponse, Revision, Storage, StorageError,
    end_after_error,
};

/// Keys one etcd range asks for at most; halved while an answer exceeds gRPC's message limit.
pub const RANGE_PAGE: usize = 1_000;

/// Why one page of a range failed.
enum Page {
    /// The answer exceeded the gRPC message limit.
    TooLarge,
    Failed(StorageError),
}

/// Storage on etcd.
#[derive(Clone)]
pub struct Etcd {
    channel: Channel,
}

fn unavailable(e: tonic::Status) -> StorageError {
    StorageError::Unavailable(format!("etcd: {}", e.message()))
}

/// Bound one etcd call: with every endpoint down, the channel would wait for one forever.
async fn bounded<T>(
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, StorageError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
        Ok(result) => result.map(tonic::Response::into_inner).map_err(unavailable),
        Err(_) => Err(timed_out()),
    }
}

fn timed_out() -> StorageError {
    StorageError::Unavailable(format!("etcd did not answer within {REQUEST_TIMEOUT:?}"))
}

fn to_kv(kv: mvccpb::KeyValue) -> Result<KeyValue, StorageError> {
    Ok(KeyValue {
        key: String::from_utf8(kv.key).map_err(|e| StorageError::Internal(e.to_string()))?,
        value: kv.value.into(),
        create_revision: kv.create_revision as Revision,
        mod_revision: kv.mod_revision as Revision,
    })
}

fn revision_of(header: Option<&pb::ResponseHeader>) -> Revision {
    header.map_or(0, |h| h.revision as Revision)
}

/// The end of the key range that holds every key starting with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A range over every key under `prefix`.
pub(crate) fn prefix_range(prefix: &str) -> pb::RangeRequest {
    pb::RangeRequest {
        key: prefix.as_bytes().to_vec(),
        range_end: prefix_end(prefix),
        ..Default::default()
    }
}

/// `target(key) == value`, e.g. `mod_revision(key) == 7`.
pub(crate) fn equals(key: &str, target: compare::CompareTarget, value: compare::TargetUnion) -> pb::Compare {
    pb::Compare {
        result: compare::CompareResult::Equal as i32,
        target: target as i32,
        key: key.as_bytes().to_vec(),
        target_union: Some(value),
        range_end: Vec::new(),
    }
}

fn op(request: request_op::Request) -> pb::RequestOp {
    pb::RequestOp { request: Some(request) }
}

/// A put of `value` at `key`, as a transaction's operation.
pub(crate) fn put(key: &str, value: Vec<u8>) -> pb::RequestOp {
    op(request_op::Request::RequestPut(pb::PutRequest {
        key: key.as_bytes().to_vec(),
        value,
        ..Default::default()
    }))
}

impl Etcd {
    /// Connect (lazily: an unreachable etcd makes requests fail, not startup hang).
    pub async fn connect(config: &EtcdConfig) -> Result<Self, StorageError> {
        Ok(Etcd {
            channel: client::channel(config)?,
        })
    }

    fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channel.clone())
    }

    /// A small range (one key, a count), in one frame each way.
    async fn small_range(&self, request: pb::RangeRequest) -> Result<pb::RangeResponse, StorageError> {
        bounded(client::unary(&self.channel, "/etcdserverpb.KV/Range", &request)).await
    }

    /// A transaction, in one frame each way.
    async fn transaction(&self, request: pb::TxnRequest) -> Result<pb::TxnResponse, StorageError> {
        bounded(client::unary(&self.channel, "/etcdserverpb.KV/Txn", &request)).await
    }

    /// Compact history up to `revision` ([`compactor`] does it periodically).
    pub async fn compact(&self, revision: Revision) -> Result<(), StorageError> {
        let request = pb::CompactionRequest {
            revision: revision as i64,
            physical: false,
        };
        bounded(self.kv().compact(request)).await?;
        Ok(())
    }

    /// One etcd range of at most `limit` keys.
    async fn range_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        revision: Option<Revision>,
    ) -> Result<RangeResponse, Page> {
        let mut request = prefix_range(prefix);
        if let Some(after) = start_after {
            request.key = format!("{after}\0").into_bytes();
        }
        request.limit = limit as i64;
        request.revision = revision.unwrap_or(0) as i64;
        let response = match tokio::time::timeout(REQUEST_TIMEOUT, self.kv().range(request)).await {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(s)) if s.message().contains("compacted") => {
                return Err(Page::Failed(StorageError::Expired {
                    requested: revision.unwrap_or(0),
                    compacted: 0,
                }));
            }
            Ok(Err(s)) if s.message().contains("message length too large") => return Err(Page::TooLarge),
            Ok(Err(s)) => return Err(Page::Failed(unavailable(s))),
            Err(_) => return Err(Page::Failed(timed_out())),
        };
        let count = response.count as u64;
        let at = revision_of(response.header.as_ref());
        let kvs = response
            .kvs
            .into_iter()
            .map(to_kv)
            .collect::<Result<Vec<_>, _>>()
            .map_err(Page::Failed)?;
        Ok(RangeResponse {
            remaining: count.saturating_sub(kvs.len() as u64),
            revision: revision.unwrap_or(at),
            kvs,
        })
    }

    /// A conditional write: `compare` true → `then`, else read the key to say why not.
    async fn txn(
        &self,
        key: &str,
        compare: pb::Compare,
        then: pb::RequestOp,
    ) -> Result<(Revision, Option<KeyValue>), StorageError> {
        let read = op(request_op::Request::RequestRange(pb::RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        }));
        let request = pb::TxnRequest {
            compare: vec![compare],
            success: vec![then],
            failure: vec![read],
        };
        let response = self.transaction(request).await?;
        let revision = revision_of(response.header.as_ref());
        let mut answers = response.responses.into_iter().filter_map(|r| r.response);
        if response.succeeded {
            let deleted = answers.find_map(|r| match r {
                response_op::Response::ResponseDeleteRange(d) => d.prev_kvs.into_iter().next().map(to_kv),
                _ => None,
            });
            return Ok((revision, deleted.transpose()?));
        }
        let current = answers.find_map(|r| match r {
            response_op::Response::ResponseRange(g) => g.kvs.into_iter().next().map(to_kv),
            _ => None,
        });
        match current.transpose()? {
            Some(kv) => Err(StorageError::Conflict {
                current: kv.mod_revision,
            }),
            None => Err(StorageError::NotFound),
        }
    }

    /// A watch of `prefix` after revision `after`; with `prev_kv`, each event carries the
    /// value before it (a delete its deleted value).
    async fn watch_from(&self, prefix: &str, after: Revision, prev_kv: bool) -> Result<EventStream, StorageError> {
        let create = pb::WatchCreateRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: prefix_end(prefix),
            start_revision: after as i64 + 1,
            progress_notify: true,
            prev_kv,
            ..Default::default()
        };
        let request = pb::WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(create)),
        };
        // etcd ends a watch when the client's side of the stream ends, so it stays open (pending
        // forever) for as long as the answers are read.
        let requests = futures::stream::iter([request]).chain(futures::stream::pending());
        let mut client = WatchClient::new(self.channel.clone());
        let answers = bounded(client.watch(requests)).await?;
        let events = answers.flat_map(move |response| {
            let items: Vec<Result<Event, StorageError>> = match response {
                Err(e) => vec![Err(unavailable(e))],
                Ok(r) if r.compact_revision > 0 => vec![Err(StorageError::Expired {
                    requested: after,
                    compacted: r.compact_revision as Revision,
                })],
                Ok(r) if r.canceled => vec![Err(StorageError::Unavailable(format!(
                    "etcd watch canceled: {}",
                    r.cancel_reason
                )))],
                Ok(r) => r.events.into_iter().filter_map(event).collect(),
            };
            futures::stream::iter(items)
        });
        Ok(end_after_error(events))
    }
}

#[async_trait]
impl Storage for Etcd {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StorageError> {
        let request = pb::RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        };
        let response = self.small_range(request).await?;
        response.kvs.into_iter().next().map(to_kv).transpose()
    }

    /// Ranges over etcd in pages at one revision, so no single answer reaches gRPC's message
    /// limit (4 MiB): a page too large is asked again at half the keys.
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse, StorageError> {
        let mut revision = request.revision;
        let mut start_after = request.start_after.clone();
        let mut kvs = Vec::new();
        let mut page = RANGE_PAGE;
        loop {
            let want = match request.limit {
                0 => page,
                limit => page.min(limit - kvs.len()),
            };
            let answer = match self
                .range_page(&request.prefix, start_after.as_deref(), want, revision)
                .await
            {
                Err(Page::TooLarge) if want > 1 => {
                    page = want / 2;
                    continue;
                }
                Err(Page::TooLarge) => {
                    return Err(StorageError::Internal(
                        "an object under this prefix is larger than etcd's answers may be".into(),
                    ));
                }
                Err(Page::Failed(e)) => return Err(e),
                Ok(answer) => answer,
            };
            // Every later page reads at the first one's revision: one consistent list.
            let at = *revision.get_or_insert(answer.revision);
            let full = request.limit > 0 && kvs.len() + answer.kvs.len() >= request.limit;
            start_after = answer.kvs.last().map(|kv| kv.key.clone()).or(start_after);
            kvs.extend(answer.kvs);
            if answer.remaining == 0 || full {
                return Ok(RangeResponse {
                    kvs,
                    remaining: answer.remaining,
                    revision: at,
                });
            }
        }
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StorageError> {
        let compare = equals(
            key,
            compare::CompareTarget::Create,
            compare::TargetUnion::CreateRevision(0),
        );
        let value = bytes::Bytes::from(value);
        match self.txn(key, compare, put(key, value.to_vec())).await {
            Ok((revision, _)) => Ok(KeyValue {
                key: key.into(),
                value,
                create_revision: revision,
                mod_revision: revision,
            }),
            Err(StorageError::Conflict { .. }) => Err(StorageError::AlreadyExists),
            Err(e) => Err(e),
        }
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<KeyValue, StorageError> {
        let compare = equals(
            key,
            compare::CompareTarget::Mod,
            compare::TargetUnion::ModRevision(expected as i64),
        );
        let value = bytes::Bytes::from(value);
        let (revision, _) = self.txn(key, compare, put(key, value.to_vec())).await?;
        // create_revision is not returned by a put; callers use mod_revision only.
        Ok(KeyValue {
            key: key.into(),
            value,
            create_revision: 0,
            mod_revision: revision,
        })
    }

    async fn delete(&self, key: &str, expected: Revision) -> Result<KeyValue, StorageError> {
        let compare = equals(
            key,
            compare::CompareTarget::Mod,
            compare::TargetUnion::ModRevision(expected as i64),
        );
        let delete = op(request_op::Request::RequestDeleteRange(pb::DeleteRangeRequest {
            key: key.as_bytes().to_vec(),
            prev_kv: true,
            ..Default::default()
        }));
        let (revision, prev) = self.txn(key, compare, delete).await?;
        let prev = prev.ok_or(StorageError::NotFound)?;
        Ok(KeyValue {
            mod_revision: revision,
            ..prev
        })
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<EventStream, StorageError> {
        self.watch_from(prefix, after, true).await
    }

    async fn follow(&self, prefix: &str, after: Revision) -> Result<EventStream, StorageError> {
        // A previous value costs etcd a read of the key at the revision before, and doubles what
        // it sends for an update; the follower has the value already.
        self.watch_from(prefix, after, false).await
    }

    async fn current_revision(&self) -> Result<Revision, StorageError> {
        let request = pb::RangeRequest {
            key: vec![0],
            count_only: true,
            ..Default::default()
        };
        let response = self.small_range(request).await?;
        Ok(revision_of(response.header.as_ref()))
    }

    /// A count-only range: etcd answers it from its index, reading no values.
    async fn count(&self, prefix: &str) -> Result<u64, StorageError> {
        let request = pb::RangeRequest {
            count_only: true,
            ..prefix_range(prefix)
        };
        let response = self.small_range(request).await?;
        Ok(response.count as u64)
    }

    /// Both questions in one transaction, so at one revision. etcd counts before it filters by
    /// revision, so the second asks for at most one key (names only) written after `after`.
    async fn census(&self, prefix: &str, after: Revision) -> Result<Option<Census>, StorageError> {
        let all = pb::RangeRequest {
            count_only: true,
            ..prefix_range(prefix)
        };
        let newer = pb::RangeRequest {
            keys_only: true,
            limit: 1,
            min_mod_revision: after as i64 + 1,
            ..prefix_range(prefix)
        };
        let request = pb::TxnRequest {
            compare: Vec::new(),
            success: vec![
                op(request_op::Request::RequestRange(all)),
                op(request_op::Request::RequestRange(newer)),
            ],
            failure: Vec::new(),
        };
        let response = self.transaction(request).await?;
        let revision = revision_of(response.header.as_ref());
        let answers: Vec<(u64, usize)> = response
            .responses
            .into_iter()
            .filter_map(|r| match r.response {
                Some(response_op::Response::ResponseRange(g)) => Some((g.count as u64, g.kvs.len())),
                _ => None,
            })
            .collect();
        let [(keys, _), (_, newer)] = answers[..] else {
            return Err(StorageError::Internal(
                "etcd answered a census with other than two ranges".into(),
            ));
        };
        Ok(Some(Census {
            keys,
            written_after: newer > 0,
            revision,
        }))
    }

    fn in_process(&self) -> bool {
        false
    }

    async fn ready(&self) -> Result<(), StorageError> {
        let mut client = MaintenanceClient::new(self.channel.clone());
        bounded(client.status(pb::StatusRequest {})).await?;
        Ok(())
    }
}

/// One etcd watch event as a storage event (a delete carries the object as it was).
fn event(e: mvccpb::Event) -> Option<Result<Event, StorageError>> {
    let kv = e.kv?;
    let kind = mvccpb::event::EventType::try_from(e.r#type).unwrap_or(mvccpb::event::EventType::Put);
    Some((|| {
        let prev = e.prev_kv.map(to_kv).transpose()?;
        let mod_revision = kv.mod_revision as Revision;
        Ok(match kind {
            mvccpb::event::EventType::Put => Event {
                kind: EventKind::Put,
                kv: to_kv(kv)?,
                prev,
            },
            mvccpb::event::EventType::Delete => {
                let mut deleted = match &prev {
                    Some(prev) => prev.clone(),
                    None => to_kv(kv)?,
                };
                deleted.mod_revision = mod_revision;
                Event {
                    kind: EventKind::Delete,
                    kv: deleted,
                    prev,
                }
            }
        })
    })())
}
