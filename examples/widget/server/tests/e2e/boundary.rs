//! The API server as a security boundary: every input validated, every cost
//! bounded, one parse of each request. Requests that a client library would normalise or
//! refuse to send are written by hand over real TLS.

use crate::common;

use common::{ServerProcess, WidgetServer as _, raw, status_of, typed_widget};
use kube::api::{Api, DeleteParams, PostParams};

const WIDGETS: &str = "/apis/custom.example.com/v1/namespaces/default/widgets";

/// A DELETE right after a create races the server's own status loop (which writes every new
/// Widget's status): the delete must retry, never answer 409, on the embedded store.
#[tokio::test(flavor = "multi_thread")]
async fn delete_right_after_create_never_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_in(dir.path(), &[]);
    let api: Api<widget_api::Widget> = Api::namespaced(server.client().await, "default");
    for i in 0..100 {
        let name = format!("race-{i}");
        api.create(&PostParams::default(), &typed_widget(&name, 1))
            .await
            .unwrap();
        if let Err(e) = api.delete(&name, &DeleteParams::default()).await {
            panic!("delete {i} failed: {e} ({:?})", status_of(&e));
        }
    }
    // A stale resourceVersion precondition is the client's own conflict: still 409.
    let created = api
        .create(&PostParams::default(), &typed_widget("guarded", 1))
        .await
        .unwrap();
    let stale = created.metadata.resource_version.clone().unwrap();
    common::eventually("the status loop writes the status", || {
        let now = futures::executor::block_on(api.get("guarded")).unwrap();
        (now.metadata.resource_version.as_deref() != Some(stale.as_str())).then_some(())
    });
    let error = api
        .delete(
            "guarded",
            &DeleteParams::default().preconditions(kube::api::Preconditions {
                resource_version: Some(stale),
                uid: None,
            }),
        )
        .await
        .unwrap_err();
    assert_eq!(status_of(&error), (409, "Conflict"));
}

/// A 1.5 KB JSON patch that copies `/spec` into itself 20 times would build a 1 GiB object:
/// the copies are bounded (422), the operations too (413), and the server stays well.
#[tokio::test(flavor = "multi_thread")]
async fn json_patches_cannot_amplify() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let api: Api<widget_api::Widget> = Api::namespaced(server.client().await, "default");
    api.create(&PostParams::default(), &typed_widget("amp", 1))
        .await
        .unwrap();
    let mut ops =
        vec![serde_json::json!({"op": "add", "path": "/metadata/annotations", "value": {"pad": "x".repeat(1024)}})];
    for i in 0..20 {
        ops.push(serde_json::json!({"op": "copy", "from": "/metadata/annotations", "path": format!("/metadata/annotations/c{i}")}));
    }
    let body = serde_json::to_string(&ops).unwrap();
    assert!(body.len() < 3072, "the patch is small: {} bytes", body.len());
    let path = format!("{WIDGETS}/amp");
    let response = raw(&server, "PATCH", &path, "application/json-patch+json", &body).await;
    assert_eq!(response.code, 422, "{response:?}");
    assert_eq!(response.json()["reason"], "Invalid");
    assert!(
        response.json()["message"]
            .as_str()
            .unwrap()
            .contains("accumulated size increase of copy")
    );

    let many: Vec<_> = (0..10_001)
        .map(|_| serde_json::json!({"op": "test", "path": "/spec/replicas", "value": 1}))
        .collect();
    let response = raw(
        &server,
        "PATCH",
        &path,
        "application/json-patch+json",
        &serde_json::to_string(&many).unwrap(),
    )
    .await;
    assert_eq!(response.code, 413, "{response:?}");
    assert_eq!(response.json()["reason"], "RequestEntityTooLarge");
    assert!(api.get("amp").await.unwrap().metadata.annotations.is_none());
}

/// One parse of the path feeds authorization, audit, handler and storage key: an encoded
/// `/` cannot reach another namespace's key, an empty namespace is no namespace, and names
/// and namespaces are validated as upstream does.
#[tokio::test(flavor = "multi_thread")]
async fn paths_are_parsed_once_and_validated() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let base = "/apis/custom.example.com/v1";
    let encoded = raw(&server, "GET", &format!("{base}/namespaces/a/widgets/b%2Fz"), "", "").await;
    assert_eq!(encoded.code, 400, "{encoded:?}");
    assert_eq!(
        encoded.json()["message"],
        "invalid resource name \"b/z\": [may not contain '/']"
    );
    for path in [
        format!("{base}/namespaces/a%2Fb/widgets"),
        format!("{base}/namespaces/a/widgets/%2e%2e"),
        format!("{base}/namespaces/a/widgets/%c0%ae"),
    ] {
        let response = raw(&server, "GET", &path, "", "").await;
        assert_eq!(
            (response.code, response.json()["kind"].as_str()),
            (400, Some("Status")),
            "{path}: {response:?}"
        );
    }

    let body = |ns: &str| {
        format!(
            r#"{{"apiVersion":"custom.example.com/v1","kind":"Widget","metadata":{{"name":"w","namespace":"{ns}"}},"spec":{{"replicas":1,"image":"nginx"}}}}"#
        )
    };
    let empty = raw(
        &server,
        "POST",
        &format!("{base}/namespaces//widgets"),
        "application/json",
        &body(""),
    )
    .await;
    assert_eq!(empty.code, 404, "{empty:?}");
    for ns in ["UPPER".to_string(), "n".repeat(300)] {
        let response = raw(
            &server,
            "POST",
            &format!("{base}/namespaces/{ns}/widgets"),
            "application/json",
            &body(&ns),
        )
        .await;
        assert_eq!(response.code, 422, "{response:?}");
        assert_eq!(response.json()["details"]["causes"][0]["field"], "metadata.namespace");
    }
    let all = raw(&server, "GET", &format!("{base}/widgets"), "", "").await;
    assert_eq!(all.json()["items"], serde_json::json!([]), "nothing was stored");
}

/// `metadata` is validated as apimachinery's `ValidateObjectMeta` (422 with its causes) and
/// must decode as `ObjectMeta` (400).
#[tokio::test(flavor = "multi_thread")]
async fn metadata_is_validated() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let post = |metadata: serde_json::Value| {
        let body = serde_json::json!({"apiVersion": "custom.example.com/v1", "kind": "Widget", "metadata": metadata, "spec": {"replicas": 1, "image": "nginx"}});
        let server = &server;
        async move { raw(server, "POST", WIDGETS, "application/json", &body.to_string()).await }
    };
    use serde_json::json;
    let invalid = [
        (json!({"name": "l1", "labels": {"a b": "x"}}), "metadata.labels"),
        (
            json!({"name": "l2", "labels": {"k": "v".repeat(64)}}),
            "metadata.labels",
        ),
        (
            json!({"name": "a1", "annotations": {"big": "x".repeat(300 * 1024)}}),
            "metadata.annotations",
        ),
        (
            json!({"name": "a2", "annotations": {"a b": "x"}}),
            "metadata.annotations",
        ),
        (json!({"name": "f1", "finalizers": ["a/b/c"]}), "metadata.finalizers[0]"),
        (
            json!({"name": "o1", "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "p"}]}),
            "metadata.ownerReferences[0].uid",
        ),
    ];
    for (metadata, field) in invalid {
        let response = post(metadata.clone()).await;
        assert_eq!(response.code, 422, "{metadata}: {response:?}");
        assert_eq!(response.json()["details"]["causes"][0]["field"], field, "{metadata}");
    }
    for metadata in [
        json!({"name": "t1", "generation": "x"}),
        json!({"name": "t2", "creationTimestamp": 5}),
        json!({"name": "t3", "uid": 5}),
        json!([]),
    ] {
        let response = post(metadata.clone()).await;
        assert_eq!(
            (response.code, response.json()["reason"].as_str()),
            (400, Some("BadRequest")),
            "{metadata}: {response:?}"
        );
    }
    let ok = post(json!({"name": "fine", "labels": {"example.com/tier": "gold"}, "annotations": {"note": "any text at all"}, "finalizers": ["example.com/hold"]})).await;
    assert_eq!(ok.code, 201, "{ok:?}");
}

/// Every query parameter upstream checks is checked here (400), instead of being ignored:
/// a watch with a malformed `timeoutSeconds` used to stream for 30 minutes.
#[tokio::test(flavor = "multi_thread")]
async fn query_parameters_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let bounded = |path: String| {
        let server = &server;
        async move {
            tokio::time::timeout(std::time::Duration::from_secs(10), raw(server, "GET", &path, "", ""))
                .await
                .unwrap_or_else(|_| panic!("{path} did not answer at once"))
        }
    };
    for query in [
        "watch=true&timeoutSeconds=abc",
        "watch=true&timeoutSeconds=1.5",
        "watch=true&timeoutSeconds=1e2",
        "watch=true&timeoutSeconds=99999999999999999999",
        "limit=abc",
        "limit=1.5",
        "resourceVersion=abc",
        "resourceVersion=-1",
        "resourceVersionMatch=Bogus&resourceVersion=1",
        "watch=1&resourceVersion=x",
    ] {
        let response = bounded(format!("{WIDGETS}?{query}")).await;
        assert_eq!(
            (response.code, response.json()["reason"].as_str()),
            (400, Some("BadRequest")),
            "{query}: {response:?}"
        );
    }
    for query in ["gracePeriodSeconds=soon", "propagationPolicy=Bogus", "dryRun=Some"] {
        let response = raw(&server, "DELETE", &format!("{WIDGETS}/x?{query}"), "", "").await;
        assert_eq!(response.code, 400, "{query}: {response:?}");
    }
    // A revision the store has not reached: 504, as kube-apiserver, for either match.
    for query in [
        "resourceVersion=18446744073709551615&resourceVersionMatch=Exact",
        "resourceVersion=18446744073709551615",
    ] {
        let response = bounded(format!("{WIDGETS}?{query}")).await;
        assert_eq!(response.code, 504, "{query}: {response:?}");
        assert!(
            response.json()["message"]
                .as_str()
                .unwrap()
                .starts_with("Too large resource version")
        );
    }
    // A watch with a valid short timeout ends by itself.
    let ended = bounded(format!("{WIDGETS}?watch=true&timeoutSeconds=1")).await;
    assert_eq!(ended.code, 200);
}

/// Answers are `Status` objects with the right code, at once: a declared body over 3 MiB is
/// 413 before it is sent (and the connection is closed), wrong methods on plain routes 405.
#[tokio::test(flavor = "multi_thread")]
async fn errors_are_statuses_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    // A small excess is drained after the answer (the connection stays usable); a large one
    // closes the connection. Either way the answer comes before any of the body.
    for (length, close) in [(4u64 << 20, None), (1u64 << 30, Some("close"))] {
        let head = format!("POST {WIDGETS} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {length}");
        let response = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            common::first_response(&server, &head),
        )
        .await
        .expect("413 comes before the body");
        assert_eq!(
            (response.code, response.json()["reason"].as_str()),
            (413, Some("RequestEntityTooLarge")),
            "{response:?}"
        );
        assert_eq!(response.header("connection"), close, "{length}: {response:?}");
    }
    for (method, path) in [
        ("POST", "/openapi/v2"),
        ("DELETE", "/version"),
        ("PUT", "/metrics"),
        ("POST", "/apis"),
    ] {
        let response = raw(&server, method, path, "", "").await;
        assert_eq!(
            (response.code, response.json()["kind"].as_str()),
            (405, Some("Status")),
            "{method} {path}: {response:?}"
        );
    }
}

/// Whether the server closed `tls` within `within` (EOF or a reset), reading what it sends.
async fn closed_within(
    tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    within: std::time::Duration,
) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, tls.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Idle connections, slowloris clients and connection floods are bounded by the server's own
/// limits (`--idle-connection-timeout`, `--header-read-timeout`, `--max-connections`), and
/// normal requests still get through.
#[tokio::test(flavor = "multi_thread")]
async fn slow_and_idle_clients_are_bounded() {
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let idle = ServerProcess::start_in(
        dir.path(),
        &[
            "--storage",
            "memory",
            "--idle-connection-timeout",
            "2",
            "--header-read-timeout",
            "60",
        ],
    );
    let mut quiet = Vec::new();
    for _ in 0..5 {
        quiet.push(common::connect(&idle).await);
    }
    for tls in &mut quiet {
        assert!(
            closed_within(tls, Duration::from_secs(8)).await,
            "an idle connection is closed"
        );
    }
    drop(idle);

    let dir = tempfile::tempdir().unwrap();
    let slow = ServerProcess::start_in(
        dir.path(),
        &[
            "--storage",
            "memory",
            "--idle-connection-timeout",
            "60",
            "--header-read-timeout",
            "2",
        ],
    );
    let mut loris = common::connect(&slow).await;
    loris.write_all(b"GET /version HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let started = std::time::Instant::now();
    let dripping = async {
        for byte in b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter().cycle() {
            if loris.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let stopped = tokio::time::timeout(Duration::from_secs(15), dripping).await;
    assert!(stopped.is_ok(), "a slowloris client is cut off");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    drop(slow);

    let dir = tempfile::tempdir().unwrap();
    let capped = ServerProcess::start_in(dir.path(), &["--storage", "memory", "--max-connections", "10"]);
    let mut flood = Vec::new();
    for _ in 0..30 {
        if let Ok(Ok(tls)) = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::spawn({
                let url = capped.url.clone();
                let dir = capped.dir.clone();
                async move { common::connect_to(&url, &dir).await }
            }),
        )
        .await
        {
            flood.push(tls);
        }
    }
    // Shedding the idle ones makes room: every newcomer gets in (so the bound below is not
    // met merely because connections failed).
    assert_eq!(
        flood.len(),
        30,
        "each new connection is admitted by closing an idle one"
    );
    let response = raw(&capped, "GET", WIDGETS, "", "").await;
    assert_eq!(response.code, 200, "a normal request gets a connection: {response:?}");
    let mut open = 0;
    for tls in &mut flood {
        if !closed_within(tls, Duration::from_millis(300)).await {
            open += 1;
        }
    }
    assert!(
        open <= 10,
        "{open} of 30 idle connections are still open with --max-connections 10"
    );
}

/// `fieldValidation=Strict` refuses unknown fields under `metadata` and duplicate fields;
/// `Warn` reports them as warnings, as kube-apiserver's strict decoder does.
#[tokio::test(flavor = "multi_thread")]
async fn strict_field_validation_covers_metadata_and_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let unknown = r#"{"apiVersion":"custom.example.com/v1","kind":"Widget","metadata":{"name":"u","nameX":"y"},"spec":{"replicas":1,"image":"nginx"}}"#;
    let duplicate = r#"{"apiVersion":"custom.example.com/v1","kind":"Widget","metadata":{"name":"d"},"spec":{"replicas":1,"image":"a"},"spec":{"replicas":2,"image":"b"}}"#;
    for (body, problem) in [
        (unknown, "unknown field \"metadata.nameX\""),
        (duplicate, "duplicate field \"spec\""),
    ] {
        let strict = raw(
            &server,
            "POST",
            &format!("{WIDGETS}?fieldValidation=Strict"),
            "application/json",
            body,
        )
        .await;
        assert_eq!(strict.code, 400, "{strict:?}");
        assert!(
            strict.json()["message"].as_str().unwrap().contains(problem),
            "{strict:?}"
        );
        let warn = raw(
            &server,
            "POST",
            &format!("{WIDGETS}?fieldValidation=Warn"),
            "application/json",
            body,
        )
        .await;
        assert_eq!(warn.code, 201, "{warn:?}");
        assert!(
            warn.header("warning")
                .unwrap_or_default()
                .contains(&problem.replace('"', "\\\"")),
            "{warn:?}"
        );
    }
    // The last duplicate wins, as in kube-apiserver's lenient decoding.
    let stored = raw(&server, "GET", &format!("{WIDGETS}/d"), "", "").await;
    assert_eq!(stored.json()["spec"]["image"], "b");
    // Unknown metadata fields are dropped, never stored.
    let pruned = raw(&server, "GET", &format!("{WIDGETS}/u"), "", "").await;
    assert!(pruned.json()["metadata"].get("nameX").is_none(), "{pruned:?}");
}

/// One damaged object in the data file: the list names its key (500) instead of failing
/// anonymously, the other objects stay readable, and it can be deleted without being read
/// (`ignoreStoreReadErrorWithClusterBreakingPotential`, as kube-apiserver).
#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_object_is_named_and_can_be_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_in(dir.path(), &[]);
    let api: Api<widget_api::Widget> = Api::namespaced(server.client().await, "default");
    let mut victim = typed_widget("victim", 1);
    victim.spec.image = "victim-image-marker".into();
    api.create(&PostParams::default(), &victim).await.unwrap();
    api.create(&PostParams::default(), &typed_widget("bystander", 1))
        .await
        .unwrap();
    assert!(server.terminate(std::time::Duration::from_secs(10)).is_some());

    let file = dir.path().join(".apiary/data/apiary.redb");
    let mut bytes = std::fs::read(&file).unwrap();
    let marker = b"victim-image-marker";
    // Copy-on-write leaves older copies of the record in free pages: damage every copy.
    let copies: Vec<usize> = bytes
        .windows(marker.len())
        .enumerate()
        .filter(|(_, w)| *w == marker)
        .map(|(i, _)| i)
        .collect();
    assert!(!copies.is_empty(), "the record is in the file");
    for at in copies {
        bytes[at] = 0x01;
    }
    std::fs::write(&file, &bytes).unwrap();

    let server = ServerProcess::start_in(dir.path(), &[]);
    damaged_victim_is_named_and_deletable(&server).await;
}

/// The same on etcd, where the damage is a value that is not an object: the list names it,
/// and it can be deleted without being read.
#[tokio::test(flavor = "multi_thread")]
async fn an_undecodable_value_in_etcd_is_named_and_can_be_deleted() {
    use apiary_runtime::testing::{EtcdProcess, raw_etcd};
    let dir = tempfile::tempdir().unwrap();
    let etcd = EtcdProcess::start(dir.path());
    let server = ServerProcess::on_etcd(dir.path(), &etcd, &["--status-controller", "false"]);
    let api: Api<widget_api::Widget> = Api::namespaced(server.client().await, "default");
    for name in ["victim", "bystander"] {
        api.create(&PostParams::default(), &typed_widget(name, 1))
            .await
            .unwrap();
    }
    let mut kv = raw_etcd::kv_client::KvClient::new(raw_etcd::channel(&etcd.endpoint()).await);
    let keys = kv.range(raw_etcd::prefix("/registry/")).await.unwrap().into_inner().kvs;
    let victim = keys
        .into_iter()
        .find(|k| k.key.ends_with(b"/default/victim"))
        .expect("the victim's key");
    let put = raw_etcd::PutRequest {
        key: victim.key,
        value: b"\xff\x00 not an object".to_vec(),
        ..Default::default()
    };
    kv.put(put).await.unwrap();
    damaged_victim_is_named_and_deletable(&server).await;
}

/// With the Widget `victim` damaged in storage: a list fails naming its key (500) and the way
/// out, `bystander` and GETs of others are served, the victim's GET fails, a dry-run of the
/// unsafe delete is refused, the delete itself succeeds and the list is whole again.
async fn damaged_victim_is_named_and_deletable(server: &ServerProcess) {
    let list = raw(server, "GET", WIDGETS, "", "").await;
    assert_eq!(list.code, 500, "{list:?}");
    let message = list.json()["message"].as_str().unwrap().to_string();
    assert!(message.contains("widgets/default/victim"), "{message}");
    assert!(
        message.contains("ignoreStoreReadErrorWithClusterBreakingPotential"),
        "{message}"
    );
    assert_eq!(
        raw(server, "GET", &format!("{WIDGETS}/bystander"), "", "").await.code,
        200
    );
    assert_eq!(raw(server, "GET", &format!("{WIDGETS}/victim"), "", "").await.code, 500);
    let refused = raw(
        server,
        "DELETE",
        &format!("{WIDGETS}/victim?ignoreStoreReadErrorWithClusterBreakingPotential=true&dryRun=All"),
        "",
        "",
    )
    .await;
    assert_eq!(refused.code, 400, "{refused:?}");
    let deleted = raw(
        server,
        "DELETE",
        &format!("{WIDGETS}/victim?ignoreStoreReadErrorWithClusterBreakingPotential=true"),
        "",
        "",
    )
    .await;
    assert_eq!(deleted.code, 200, "{deleted:?}");
    let list = raw(server, "GET", WIDGETS, "", "").await;
    assert_eq!(list.code, 200, "{list:?}");
    let names: Vec<_> = list.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].clone())
        .collect();
    assert_eq!(names, [serde_json::json!("bystander")]);
}
