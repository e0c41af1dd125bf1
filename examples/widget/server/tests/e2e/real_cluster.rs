//! The Widget server behind a real kube-apiserver and kube-controller-manager (built from
//! source by apiary-cluster), registered with its generated APIServices: the aggregator's
//! availability check, kubectl through the aggregator, real authentication and RBAC, the
//! cluster's admission objects, and the namespace and garbage-collector controllers.

use crate::common;
mod real;

use common::flows::flows_against;
use real::{Fixture, Storage};

#[tokio::test(flavor = "multi_thread")]
async fn widget_server_on_embedded_storage_behind_a_real_kube_apiserver() {
    let mut f = Fixture::start(Storage::Embedded).await;
    let built = f.kubectl(None);
    tokio::task::block_in_place(|| flows_against(&built));
    real::kubectl::every_version(&f);
    real::kubectl::both_versions(&f);
    real::kubectl::more_verbs(&f).await;
    real::availability::follows_the_server(&mut f).await;
    real::identity::real_rbac_decides(&f).await;
    real::admission::cluster_objects_apply(&f).await;
    real::admission::authorizer_in_policies(&f).await;
    let took = real::controllers::namespace_deletion(&f, "doomed", 100).await;
    // Shown with --nocapture: the figure the docs quote.
    eprintln!("a namespace of 100 Widgets went in {took:?}");
    real::controllers::garbage_collection(&f).await;
    real::kubectl::watch_and_apply(&f).await;
    // The generated Go clientset and informers through the aggregator (the server's own
    // status logic runs here, so the reconciler test runs only in `go_client`).
    let admin = f.cluster.kubeconfig().to_path_buf();
    tokio::task::block_in_place(|| crate::go_client::go_tests("TestClientset", &["TestClientset"], &admin));
}

#[tokio::test(flavor = "multi_thread")]
async fn widget_server_on_etcd_behind_a_real_kube_apiserver() {
    let mut f = Fixture::start(Storage::Etcd).await;
    let built = f.kubectl(None);
    tokio::task::block_in_place(|| flows_against(&built));
    real::availability::follows_the_server(&mut f).await;
    let took = real::controllers::namespace_deletion(&f, "doomed", 100).await;
    eprintln!("a namespace of 100 Widgets on etcd went in {took:?}");
    real::controllers::garbage_collection(&f).await;
}
