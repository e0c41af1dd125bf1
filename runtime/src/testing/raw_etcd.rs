//! etcd's generated gRPC clients on a plain channel, with no wrapper and no storage layer: the
//! benchmarks' physical limit for what the etcd backend does.

pub use crate::storage::etcd::proto::etcdserverpb::*;
pub use tonic::transport::Channel;

/// A connected channel to `endpoint` (`http://127.0.0.1:2379`).
pub async fn channel(endpoint: &str) -> Channel {
    Channel::from_shared(endpoint.to_string())
        .expect("an endpoint URL")
        .connect()
        .await
        .expect("etcd answers")
}

/// Put `value` at `key` if no such key exists (a create's transaction, as the backend sends it).
pub fn create(key: String, value: Vec<u8>) -> TxnRequest {
    use crate::storage::etcd::{equals, put};
    TxnRequest {
        compare: vec![equals(
            &key,
            compare::CompareTarget::Create,
            compare::TargetUnion::CreateRevision(0),
        )],
        success: vec![put(&key, value)],
        failure: Vec::new(),
    }
}

/// A range over every key that starts with `prefix`.
pub fn prefix(prefix: &str) -> RangeRequest {
    crate::storage::etcd::prefix_range(prefix)
}

/// A watch request for every key under `prefix`; with `prev_kv`, each event carries the
/// value before it.
pub fn watch(prefix: &str, prev_kv: bool) -> WatchRequest {
    let range = self::prefix(prefix);
    let create = WatchCreateRequest {
        key: range.key,
        range_end: range.range_end,
        prev_kv,
        ..Default::default()
    };
    WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(create)),
    }
}
