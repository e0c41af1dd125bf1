//! The aggregation recipe's Step 8 and Verification, driven through the real kubectl against a
//! real widget-server over TLS with client certificates. Every step asserts kubectl's output.

use crate::common;

use common::flows::{flows_against, smoke};
use common::{Kubectl, ServerProcess, VERSIONS, WidgetServer as _};

fn flows(version: &str) {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    flows_against(&server.kubectl(version));
}

#[test]
fn kubectl_1_27_flows() {
    flows(VERSIONS[0]);
}

#[test]
fn kubectl_1_33_flows() {
    flows(VERSIONS[1]);
}

#[test]
fn kubectl_1_33_flows_on_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = apiary_runtime::testing::EtcdProcess::start(dir.path());
    let server = ServerProcess::on_etcd(dir.path(), &etcd, &[]);
    flows_against(&server.kubectl(VERSIONS[1]));
}

#[test]
fn kubectl_1_27_flows_on_embedded_storage() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_in(dir.path(), &["--storage", "embedded"]);
    flows_against(&server.kubectl(VERSIONS[0]));
}

/// Every installed kubectl (1.27 … 1.33) can discover, create, list and explain Widgets.
#[test]
fn every_installed_kubectl_version_works() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    for minor in 27..=33 {
        let version = format!("1.{minor}");
        if !std::path::Path::new(&format!("{}/kubectl.{version}", common::KUBECTL_DIR)).exists() {
            continue;
        }
        let k: Kubectl = server.kubectl(&version);
        smoke(&k, &version, &format!("v{minor}"));
    }
}
