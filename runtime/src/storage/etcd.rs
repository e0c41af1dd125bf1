//! The etcd backend (etcd v3 API via `etcd-client`): revisions are etcd's, preconditions are
//! transactions on `mod_revision`, watches are etcd watches from a revision.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, Identity,
    TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use futures::StreamExt;

use super::{
    Census, Event, EventKind, EventStream, KeyValue, RangeRequest, RangeResponse, Revision, Storage, StorageError,
    end_after_error,
};

/// Longest any one etcd request may take before it is an error (503), never a hang.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Keys one etcd range asks for at most; halved while an answer exceeds gRPC's message limit.
pub const RANGE_PAGE: usize = 1_000;

/// Why one page of a range failed.
enum Page {
    /// The answer exceeded the gRPC message limit.
    TooLarge,
    Failed(StorageError),
}

/// How to reach etcd.
#[derive(Clone, Debug, Default)]
pub struct EtcdConfig {
    /// Endpoints, e.g. `https://etcd-0:2379`.
    pub endpoints: Vec<String>,
    /// CA bundle that signs etcd's serving certificates.
    pub ca_file: Option<PathBuf>,
    /// Client certificate for etcd.
    pub cert_file: Option<PathBuf>,
    /// Client key for etcd.
    pub key_file: Option<PathBuf>,
}

/// Storage on etcd.
#[derive(Clone)]
pub struct Etcd {
    client: Client,
}

fn unavailable(e: etcd_client::Error) -> StorageError {
    StorageError::Unavailable(format!("etcd: {e}"))
}

/// Bound one etcd call: with every endpoint down, the client's balancer would wait forever.
async fn bounded<T>(call: impl std::future::Future<Output = Result<T, etcd_client::Error>>) -> Result<T, StorageError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
        Ok(result) => result.map_err(unavailable),
        Err(_) => Err(timed_out()),
    }
}

fn timed_out() -> StorageError {
    StorageError::Unavailable(format!("etcd did not answer within {REQUEST_TIMEOUT:?}"))
}

fn to_kv(kv: &etcd_client::KeyValue) -> Result<KeyValue, StorageError> {
    Ok(KeyValue {
        key: String::from_utf8(kv.key().to_vec()).map_err(|e| StorageError::Internal(e.to_string()))?,
        value: kv.value().to_vec(),
        create_revision: kv.create_revision() as Revision,
        mod_revision: kv.mod_revision() as Revision,
    })
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

impl Etcd {
    /// Connect (lazily: an unreachable etcd makes requests fail, not startup hang).
    pub async fn connect(config: &EtcdConfig) -> Result<Self, StorageError> {
        if config.endpoints.is_empty() {
            return Err(StorageError::Internal(
                "--etcd-servers is required with --storage etcd".into(),
            ));
        }
        let mut options = ConnectOptions::new()
            .with_timeout(REQUEST_TIMEOUT)
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if config.ca_file.is_some() || config.cert_file.is_some() {
            let read =
                |p: &PathBuf| std::fs::read(p).map_err(|e| StorageError::Internal(format!("{}: {e}", p.display())));
            let mut tls = TlsOptions::new();
            if let Some(ca) = &config.ca_file {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            if let (Some(cert), Some(key)) = (&config.cert_file, &config.key_file) {
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            options = options.with_tls(tls);
        }
        let client = bounded(Client::connect(config.endpoints.clone(), Some(options))).await?;
        Ok(Etcd { client })
    }

    /// Compact history up to `revision` (tests and operators; kube-apiserver does this periodically).
    pub async fn compact(&self, revision: Revision) -> Result<(), StorageError> {
        bounded(self.client.clone().compact(revision as i64, None)).await?;
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
        let start = match start_after {
            Some(after) => format!("{after}\0"),
            None => prefix.to_string(),
        };
        let mut options = GetOptions::new()
            .with_range(prefix_end(prefix))
            .with_limit(limit as i64);
        if let Some(revision) = revision {
            options = options.with_revision(revision as i64);
        }
        let mut client = self.client.clone();
        let response = match tokio::time::timeout(REQUEST_TIMEOUT, client.get(start, Some(options))).await {
            Ok(Ok(r)) => r,
            Ok(Err(etcd_client::Error::GRpcStatus(s))) if s.message().contains("compacted") => {
                return Err(Page::Failed(StorageError::Expired {
                    requested: revision.unwrap_or(0),
                    compacted: 0,
                }));
            }
            Ok(Err(etcd_client::Error::GRpcStatus(s))) if s.message().contains("message length too large") => {
                return Err(Page::TooLarge);
            }
            Ok(Err(e)) => return Err(Page::Failed(unavailable(e))),
            Err(_) => return Err(Page::Failed(timed_out())),
        };
        let kvs = response
            .kvs()
            .iter()
            .map(to_kv)
            .collect::<Result<Vec<_>, _>>()
            .map_err(Page::Failed)?;
        Ok(RangeResponse {
            remaining: (response.count() as u64).saturating_sub(kvs.len() as u64),
            revision: revision.unwrap_or_else(|| response.header().map_or(0, |h| h.revision() as Revision)),
            kvs,
        })
    }

    /// A conditional write: `compare` true → `then`, else read the key to say why not.
    async fn txn(
        &self,
        key: &str,
        compare: Compare,
        then: TxnOp,
    ) -> Result<(Revision, Option<KeyValue>), StorageError> {
        let txn = Txn::new()
            .when([compare])
            .and_then([then])
            .or_else([TxnOp::get(key, None)]);
        let response = bounded(self.client.clone().txn(txn)).await?;
        let revision = response.header().map_or(0, |h| h.revision() as Revision);
        if response.succeeded() {
            let deleted = response.op_responses().into_iter().find_map(|op| match op {
                TxnOpResponse::Delete(d) => d.prev_kvs().first().map(to_kv),
                _ => None,
            });
            return Ok((revision, deleted.transpose()?));
        }
        let current = response.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(g) => g.kvs().first().map(to_kv),
            _ => None,
        });
        match current.transpose()? {
            Some(kv) => Err(StorageError::Conflict {
                current: kv.mod_revision,
            }),
            None => Err(StorageError::NotFound),
        }
    }
}

#[async_trait]
impl Storage for Etcd {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StorageError> {
        let response = bounded(self.client.clone().get(key, None)).await?;
        response.kvs().first().map(to_kv).transpose()
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
        let compare = Compare::create_revision(key, CompareOp::Equal, 0);
        match self.txn(key, compare, TxnOp::put(key, value.clone(), None)).await {
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
        let compare = Compare::mod_revision(key, CompareOp::Equal, expected as i64);
        let (revision, _) = self.txn(key, compare, TxnOp::put(key, value.clone(), None)).await?;
        // create_revision is not returned by a put; callers use mod_revision only.
        Ok(KeyValue {
            key: key.into(),
            value,
            create_revision: 0,
            mod_revision: revision,
        })
    }

    async fn delete(&self, key: &str, expected: Revision) -> Result<KeyValue, StorageError> {
        let compare = Compare::mod_revision(key, CompareOp::Equal, expected as i64);
        let op = TxnOp::delete(key, Some(DeleteOptions::new().with_prev_key()));
        let (revision, prev) = self.txn(key, compare, op).await?;
        let prev = prev.ok_or(StorageError::NotFound)?;
        Ok(KeyValue {
            mod_revision: revision,
            ..prev
        })
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<EventStream, StorageError> {
        let options = WatchOptions::new()
            .with_range(prefix_end(prefix))
            .with_start_revision(after as i64 + 1)
            .with_prev_key()
            .with_progress_notify();
        let stream = bounded(self.client.clone().watch(prefix, Some(options))).await?;
        let events = stream.flat_map(move |response| {
            let items: Vec<Result<Event, StorageError>> = match response {
                Err(e) => vec![Err(unavailable(e))],
                Ok(r) if r.compact_revision() > 0 => vec![Err(StorageError::Expired {
                    requested: after,
                    compacted: r.compact_revision() as Revision,
                })],
                Ok(r) if r.canceled() => vec![Err(StorageError::Unavailable(format!(
                    "etcd watch canceled: {}",
                    r.cancel_reason()
                )))],
                Ok(r) => r
                    .events()
                    .iter()
                    .filter_map(|e| {
                        let kv = e.kv()?;
                        Some((|| {
                            let prev = e.prev_kv().map(to_kv).transpose()?;
                            Ok(match e.event_type() {
                                EventType::Put => Event {
                                    kind: EventKind::Put,
                                    kv: to_kv(kv)?,
                                    prev,
                                },
                                EventType::Delete => {
                                    let mut deleted = prev.clone().unwrap_or(to_kv(kv)?);
                                    deleted.mod_revision = kv.mod_revision() as Revision;
                                    Event {
                                        kind: EventKind::Delete,
                                        kv: deleted,
                                        prev,
                                    }
                                }
                            })
                        })())
                    })
                    .collect(),
            };
            futures::stream::iter(items)
        });
        Ok(end_after_error(events))
    }

    async fn current_revision(&self) -> Result<Revision, StorageError> {
        let response = bounded(self.client.clone().get("\0", Some(GetOptions::new().with_count_only()))).await?;
        Ok(response.header().map_or(0, |h| h.revision() as Revision))
    }

    /// A count-only range: etcd answers it from its index, reading no values.
    async fn count(&self, prefix: &str) -> Result<u64, StorageError> {
        let options = GetOptions::new().with_range(prefix_end(prefix)).with_count_only();
        let response = bounded(self.client.clone().get(prefix, Some(options))).await?;
        Ok(response.count() as u64)
    }

    /// Both questions in one transaction, so at one revision. etcd counts before it filters by
    /// revision, so the second asks for at most one key (names only) written after `after`.
    async fn census(&self, prefix: &str, after: Revision) -> Result<Option<Census>, StorageError> {
        let all = GetOptions::new().with_range(prefix_end(prefix)).with_count_only();
        let newer = GetOptions::new()
            .with_range(prefix_end(prefix))
            .with_keys_only()
            .with_limit(1)
            .with_min_mod_revision(after as i64 + 1);
        let txn = Txn::new().and_then([TxnOp::get(prefix, Some(all)), TxnOp::get(prefix, Some(newer))]);
        let response = bounded(self.client.clone().txn(txn)).await?;
        let revision = response.header().map_or(0, |h| h.revision() as Revision);
        let answers: Vec<(u64, usize)> = response
            .op_responses()
            .into_iter()
            .filter_map(|op| match op {
                TxnOpResponse::Get(g) => Some((g.count() as u64, g.kvs().len())),
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

    async fn ready(&self) -> Result<(), StorageError> {
        bounded(self.client.clone().status()).await?;
        Ok(())
    }
}
