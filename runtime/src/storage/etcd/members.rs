//! Several `--etcd-servers`: one channel balanced over the members that answer.
//!
//! tonic's balancer picks at random among endpoints whose connection is ready, and a lazy
//! connection counts as ready even when its member is down: a killed member fails a share of
//! the calls at once (connection refused), and a frozen one holds its share until the call's
//! deadline, for as long as it stays so. Like grpc-go's health-checked subchannels (which
//! kube-apiserver's etcd client has), each member here is probed on a connection of its own
//! and is in the balancer only while it answers as part of a cluster with a leader.

use std::time::Duration;

use tokio::sync::mpsc::Sender;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};

use super::client::proto::etcdserverpb::{StatusRequest, maintenance_client::MaintenanceClient};

/// How often each member is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Longest a probe may take before its member is left out.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A channel balanced over the members of `endpoints` that answer probes. Every member is in
/// at first (a dead one is left out at its first probe), so the first call need not wait.
/// The probes end when the channel (every clone) is dropped.
pub(crate) fn balanced(endpoints: Vec<Endpoint>) -> Channel {
    // Room for every member to be left out and taken back in without waiting.
    let (channel, changes) = Channel::balance_channel(2 * endpoints.len());
    for (key, endpoint) in endpoints.into_iter().enumerate() {
        // Cannot fail: the channel has room for two changes per member.
        let _ = changes.try_send(Change::Insert(key, endpoint.clone()));
        tokio::spawn(probe(key, endpoint, changes.clone()));
    }
    channel
}

/// Keep member `key` in the balancer while it answers, out while it does not.
async fn probe(key: usize, endpoint: Endpoint, changes: Sender<Change<usize, Endpoint>>) {
    let mut maintenance = MaintenanceClient::new(endpoint.connect_lazy());
    let mut member_in = true;
    loop {
        let answers = matches!(
            tokio::time::timeout(PROBE_TIMEOUT, maintenance.status(StatusRequest {})).await,
            // A member cut off from the others answers, but cannot serve a write or a
            // linearizable read: it reports no leader.
            Ok(Ok(status)) if status.get_ref().leader != 0
        );
        if answers != member_in {
            let change = if answers {
                Change::Insert(key, endpoint.clone())
            } else {
                tracing::warn!(endpoint = %endpoint.uri(), "etcd member does not answer; left out until it does");
                Change::Remove(key)
            };
            if changes.send(change).await.is_err() {
                return; // the channel is gone
            }
            member_in = answers;
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
        if changes.is_closed() {
            return;
        }
    }
}
