//! etcd's generated gRPC clients on a plain channel, with no wrapper and no storage layer: the
//! benchmarks' physical limit for what the etcd backend does.

pub use crate::storage::etcd::proto::etcdserverpb::*;
use tonic::transport::Channel;

/// A connected channel to `endpoint` (`http://127.0.0.1:2379`).
pub async fn channel(endpoint: &str) -> Channel {
    Channel::from_shared(endpoint.to_string())
        .expect("an endpoint URL")
        .connect()
        .await
        .expect("etcd answers")
}

/// Put `value` at `key` if no such key exists (a create's transaction).
pub fn create(key: String, value: Vec<u8>) -> TxnRequest {
    let put = PutRequest {
        key: key.clone().into_bytes(),
        value,
        ..Default::default()
    };
    TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Create as i32,
            key: key.into_bytes(),
            target_union: Some(compare::TargetUnion::CreateRevision(0)),
            range_end: Vec::new(),
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(put)),
        }],
        failure: Vec::new(),
    }
}

/// A range over every key that starts with `prefix` (which ends in `/`).
pub fn prefix(prefix: &str) -> RangeRequest {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    RangeRequest {
        key: prefix.as_bytes().to_vec(),
        range_end: end,
        ..Default::default()
    }
}

/// A watch request for every key under `prefix`.
pub fn watch(prefix: &str) -> WatchRequest {
    let range = self::prefix(prefix);
    let create = WatchCreateRequest {
        key: range.key,
        range_end: range.range_end,
        ..Default::default()
    };
    WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(create)),
    }
}
