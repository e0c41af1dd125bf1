//! Leader election: of several replicas on one etcd, one runs the status
//! controller at a time. A crashed leader (kill -9) is replaced once its lease expires; a
//! leader stopped with SIGTERM hands the lease over at once.

use crate::common;

use std::time::Duration;

use apiary_runtime::testing::EtcdProcess;
use common::{Kubectl, ServerProcess, WidgetServer as _};

/// `leader_election_master_status` of `server` (reached with `k`): Some(true) when it leads.
fn leads(k: &Kubectl, server: &ServerProcess) -> Option<bool> {
    let metrics = k.run(&["--server", &server.url, "get", "--raw", "/metrics"]).stdout;
    let line = metrics
        .lines()
        .find(|l| l.starts_with(r#"leader_election_master_status{name="widget-server"}"#))?;
    Some(line.ends_with(" 1"))
}

/// Create `name` through `server` and wait for the leader's status loop to report it.
fn status_converges(k: &Kubectl, server: &ServerProcess, name: &str) {
    let url = server.url.as_str();
    k.ok_stdin(&["--server", url, "create", "-f", "-"], &common::widget(name, 2, ""));
    common::eventually(&format!("{name}'s status is written"), || {
        let available = k.ok(&[
            "--server",
            url,
            "get",
            "widget",
            name,
            "-o",
            "jsonpath={.status.availableReplicas}",
        ]);
        (available == "2").then_some(())
    });
}

#[test]
fn one_replica_leads_and_hands_over() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = EtcdProcess::start(dir.path());
    let dirs: Vec<_> = ["a", "b", "c"].iter().map(|d| dir.path().join(d)).collect();
    for d in &dirs {
        std::fs::create_dir_all(d).unwrap();
    }
    let fast = ["--leader-elect-retry-period", "250ms"];
    let short_lease = [
        &fast[..],
        &[
            "--leader-elect-lease-duration",
            "3s",
            "--leader-elect-renew-deadline",
            "2s",
        ],
    ]
    .concat();
    let a = ServerProcess::on_etcd(&dirs[0], &etcd, &short_lease);
    let k = a.kubectl("1.33");
    common::eventually("the first replica leads", || leads(&k, &a).filter(|l| *l));
    // B's own lease, once it holds it, lasts a minute: only a release lets C take over sooner.
    let long_lease = [&fast[..], &["--leader-elect-lease-duration", "60s"]].concat();
    let b = common::replica_of(&dirs[0], &dirs[1], &etcd, &long_lease);
    common::eventually("the second replica follows", || leads(&k, &b).filter(|l| !l));
    status_converges(&k, &b, "first");
    assert_eq!(leads(&k, &a), Some(true), "one leader at a time");
    assert_eq!(leads(&k, &b), Some(false));

    // A crash: B takes over once A's 3 s lease expires.
    a.kill();
    common::eventually("the second replica leads after the crash", || {
        leads(&k, &b).filter(|l| *l)
    });
    status_converges(&k, &b, "second");

    // A shutdown: B releases its minute-long lease, and C takes over at once.
    let c = common::replica_of(&dirs[0], &dirs[2], &etcd, &long_lease);
    common::eventually("the third replica follows", || leads(&k, &c).filter(|l| !l));
    let stopped = b.terminate(Duration::from_secs(10));
    assert!(stopped.is_some_and(|s| s.success()), "{stopped:?}");
    common::eventually("the third replica leads after the release", || {
        leads(&k, &c).filter(|l| *l)
    });
    status_converges(&k, &c, "third");
}
