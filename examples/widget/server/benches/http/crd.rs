//! The other peer a user would pick: the Widget as a CRD served by a real kube-apiserver
//! (built by apiary-cluster), next to Apiary reached through the same kube-apiserver's
//! aggregator. The CRD is made from the same Rust type (its structural schema, status and
//! scale subresources, printer columns), in a group of its own (`crd.example.com`) so that
//! both are served by one kube-apiserver at once; the same client, objects and turns.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use apiary_cluster::{Binaries, Cluster, Extension, free_port};
use apiary_runtime::ApiResource;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use widget_api::Widget;

use crate::client::{best_in_turns, connect, create_each, get_rate, paired, send, tls_trusting, widget};
use crate::{BINARY, TABLE, ms};

/// The CRD's group (Apiary serves `custom.example.com` behind the same kube-apiserver).
const GROUP: &str = "crd.example.com";
/// The CRD's collection, where its widgets are created and listed.
const CRD_WIDGETS: &str = "/apis/crd.example.com/v1/namespaces/default/widgets";
const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");

/// The Widget's CRD: the Rust type's schema with `metadata` left to kube-apiserver.
fn widget_crd() -> Value {
    let mut schema = Widget::openapi_schema();
    let object = schema.as_object_mut().expect("an object schema");
    object.retain(|key, _| !key.starts_with("x-kubernetes-group-version-kind"));
    object["properties"]["metadata"] = json!({"type": "object"});
    let meta = Widget::META;
    let scale = meta.scale.expect("the Widget has a scale subresource");
    let columns: Vec<Value> = meta
        .columns
        .iter()
        .map(|c| json!({"name": c.name, "type": c.type_, "jsonPath": c.json_path, "priority": c.priority}))
        .collect();
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{}.{GROUP}", meta.plural)},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"plural": meta.plural, "singular": meta.singular, "kind": meta.kind, "listKind": format!("{}List", meta.kind)},
            "versions": [{
                "name": meta.version, "served": true, "storage": true,
                "schema": {"openAPIV3Schema": schema},
                "subresources": {"status": {}, "scale": {
                    "specReplicasPath": scale.spec_replicas, "statusReplicasPath": scale.status_replicas}},
                "additionalPrinterColumns": columns,
            }],
        },
    })
}

/// The bench's widget `i` in the CRD's group.
fn crd_widget(i: usize) -> Value {
    let mut w = widget(i);
    w["apiVersion"] = json!(format!("{GROUP}/v1"));
    w
}

/// A TLS client of the cluster's admin (a `system:masters` client certificate).
fn admin_tls(cluster: &Cluster) -> Arc<rustls::ClientConfig> {
    let pki = cluster.ca().parent().expect("the PKI folder").to_path_buf();
    let (cert, key) = (pki.join("admin.crt"), pki.join("admin.key"));
    tls_trusting(&cluster.ca(), Some((&cert, &key)))
}

/// The harness fails loudly on a cluster error.
fn fail(e: apiary_cluster::Error) -> ! {
    panic!("{e}")
}

/// A real cluster with the Widget server registered behind its aggregator (on the cluster's
/// etcd) and the Widget CRD created; the server's process is in the cluster's keeping.
async fn cluster_with_both(dir: &Path) -> (Cluster, apiary_cluster::Process) {
    let binaries = tokio::task::block_in_place(Binaries::ensure).unwrap_or_else(|e| fail(e));
    let cluster = Cluster::start(&binaries, &dir.join("cluster"))
        .await
        .unwrap_or_else(|e| fail(e));
    let extension = Extension::from_deploy_dir(Path::new(DEPLOY)).unwrap_or_else(|e| fail(e));
    let flags = cluster.prepare(&extension).await.unwrap_or_else(|e| fail(e));
    let port = free_port().unwrap_or_else(|e| fail(e));
    let storage = [
        "--storage=etcd".to_string(),
        format!("--etcd-servers={}", cluster.etcd_url()),
        "--etcd-prefix=/registry/widget-server".into(),
        "--status-controller=false".into(),
    ];
    let server = cluster
        .serve(Path::new(BINARY), &flags, port, &storage)
        .await
        .unwrap_or_else(|e| fail(e));
    cluster.register(&extension, port).await.unwrap_or_else(|e| fail(e));
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(cluster.client().await.unwrap_or_else(|e| fail(e)));
    let crd = serde_json::from_value(widget_crd()).unwrap();
    crds.create(&PostParams::default(), &crd)
        .await
        .expect("the CRD is created");
    (cluster, server)
}

/// Apiary through the aggregator against the CRD on the same kube-apiserver.
pub(crate) async fn crd_rows(count: usize, seconds: f64, row: crate::peers::Row<'_>) {
    let dir = tempfile::tempdir().unwrap();
    let (mut cluster, _server) = cluster_with_both(dir.path()).await;
    let admin = admin_tls(&cluster);
    let addr = cluster.url().trim_start_matches("https://").to_string();
    let ours = "/apis/custom.example.com/v1/namespaces/default/widgets";
    let theirs = CRD_WIDGETS;
    // Established takes a moment: wait until the CRD's collection answers.
    let mut probe = connect(&addr, &admin).await;
    let mut waited = 0;
    while send(&mut probe, "GET", theirs, "application/json", None).await.0 != 200 {
        waited += 1;
        assert!(waited < 300, "the CRD's collection does not answer after 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let half = count / 2;
    let (mut ours_s, mut theirs_s) = (0.0, 0.0);
    for (turn, first) in [(0, true), (1, false)] {
        let names = turn * half..(turn + 1) * half;
        for side in [first, !first] {
            if side {
                ours_s += half as f64 / create_each(&addr, &admin, names.clone(), ours, widget).await;
            } else {
                theirs_s += half as f64 / create_each(&addr, &admin, names.clone(), theirs, crd_widget).await;
            }
        }
    }
    let n = 2 * half;
    row(
        "through kube-apiserver: creates, 16 conns",
        format!("{:.0}/s", n as f64 / ours_s),
        format!("CRD: {:.0}/s", n as f64 / theirs_s),
        theirs_s / ours_s,
        "",
    );
    let (one, crd_one) = (format!("{ours}/w-000001"), format!("{theirs}/w-000001"));
    // kube-apiserver serves both (and proxies Apiary's): the rates are reported, not its CPU.
    let pid = cluster
        .process("kube-apiserver")
        .map(|p| p.pid())
        .expect("kube-apiserver runs");
    let (got, crd_got) = paired(
        || get_rate(&addr, &admin, &one, seconds, pid),
        || get_rate(&addr, &admin, &crd_one, seconds, pid),
    )
    .await;
    row(
        "through kube-apiserver: GET one object, 16 conns",
        format!("{:.0}/s", got.per_second),
        format!("CRD: {:.0}/s", crd_got.per_second),
        got.per_second / crd_got.per_second,
        "≥ 1",
    );
    let ours_conn = tokio::sync::Mutex::new(connect(&addr, &admin).await);
    let theirs_conn = tokio::sync::Mutex::new(connect(&addr, &admin).await);
    for (what, accept) in [("JSON", "application/json"), ("Table", TABLE)] {
        let (a, b) = best_in_turns(
            5,
            || async {
                let (status, _) = send(&mut *ours_conn.lock().await, "GET", ours, accept, None).await;
                assert_eq!(status, 200);
            },
            || async {
                let (status, _) = send(&mut *theirs_conn.lock().await, "GET", theirs, accept, None).await;
                assert_eq!(status, 200);
            },
        )
        .await;
        row(
            &format!("through kube-apiserver: LIST {n}, {what}"),
            ms(a),
            format!("CRD: {}", ms(b)),
            a.as_secs_f64() / b.as_secs_f64(),
            "≤ 1",
        );
    }
}
