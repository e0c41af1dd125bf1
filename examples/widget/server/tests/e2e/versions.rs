//! Widget at two versions: v1 (stored) and v1alpha1 (served, deprecated), one object seen
//! and written through both with kubectl 1.27 and 1.33 and the kube client.

use crate::common;

use std::time::Duration;

use common::versions::{ALPHA, DEPRECATED, V1, alpha, get, v1};
use common::{ServerProcess, WidgetServer, status_of};
use futures::{StreamExt, TryStreamExt};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::{Value, json};
use widget_api::v1alpha1::{self, Size, V1_SPEC};

fn kubectl_at_both_versions(version: &str) {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let k = server.kubectl(version);

    // Created at v1alpha1, read at v1: the size is replicas, the color v1's default.
    let created = k.run_with_stdin(&["apply", "-f", "-"], &alpha("w", "medium", "nginx:1.27"));
    assert_eq!(created.code, 0, "{}", created.stderr);
    assert!(
        created.stderr.contains(DEPRECATED),
        "the deprecation warning: {}",
        created.stderr
    );
    let at_v1 = get(&k, V1, "w");
    assert_eq!(at_v1["apiVersion"], "custom.example.com/v1");
    assert_eq!(
        at_v1["spec"],
        json!({"replicas": 3, "image": "nginx:1.27", "color": "blue"})
    );
    // A v1 write v1alpha1 cannot hold (2 replicas, red) is kept through a v1alpha1 update.
    k.ok_stdin(&["apply", "-f", "-"], &v1("w", 2, "red"));
    let at_alpha = get(&k, ALPHA, "w");
    assert_eq!(at_alpha["apiVersion"], "custom.example.com/v1alpha1");
    assert_eq!(at_alpha["spec"], json!({"size": "medium", "image": "nginx:1.27"}));
    assert!(at_alpha["metadata"]["annotations"][V1_SPEC].is_string(), "{at_alpha}");
    k.ok(&["label", ALPHA, "w", "touched=yes"]);
    let back = get(&k, V1, "w");
    assert_eq!(
        back["spec"],
        json!({"replicas": 2, "image": "nginx:1.27", "color": "red"})
    );
    assert_eq!(back["metadata"]["labels"]["touched"], "yes");
    assert!(back["metadata"]["annotations"].get(V1_SPEC).is_none(), "{back}");
    // A new size at v1alpha1 sets its replicas; the color stays.
    k.ok(&[
        "patch",
        ALPHA,
        "w",
        "--type=merge",
        "-p",
        r#"{"spec":{"size":"large"}}"#,
    ]);
    assert_eq!(
        get(&k, V1, "w")["spec"],
        json!({"replicas": 5, "image": "nginx:1.27", "color": "red"})
    );

    // Tables at each version with its own columns; the default is v1 (the preferred version).
    let table = k.ok(&["get", ALPHA]);
    assert!(
        table.starts_with("NAME") && table.contains("SIZE") && table.contains("large"),
        "{table}"
    );
    let table = k.ok(&["get", "widgets"]);
    assert!(table.contains("REPLICAS") && !table.contains("SIZE"), "{table}");
    // Field selectors at each version name that version's fields.
    assert!(
        k.ok(&["get", ALPHA, "--field-selector", "spec.size=large", "-o", "name"])
            .contains("/w")
    );
    assert!(
        k.ok(&["get", ALPHA, "--field-selector", "spec.size=small", "-o", "name"])
            .is_empty()
    );

    // explain reads each version's schema.
    let explained = k.ok(&[
        "explain",
        "widgets.spec",
        "--api-version",
        "custom.example.com/v1alpha1",
    ]);
    assert!(
        explained.contains("size") && !explained.contains("replicas"),
        "{explained}"
    );
    let explained = k.ok(&["explain", "widgets.spec", "--api-version", "custom.example.com/v1"]);
    assert!(
        explained.contains("replicas") && !explained.contains("size"),
        "{explained}"
    );

    // Server-side apply by two managers at two versions on one object: each version's manager
    // conflicts where the other's apply changes its fields as its own version has them.
    k.ok_stdin(
        &["apply", "--server-side", "--field-manager", "v1-owner", "-f", "-"],
        &v1("s", 2, "red"),
    );
    let refused = k.run_with_stdin(
        &["apply", "--server-side", "--field-manager", "alpha-owner", "-f", "-"],
        &alpha("s", "large", "nginx:1.27"),
    );
    assert_ne!(refused.code, 0);
    assert!(
        refused
            .stderr
            .contains(r#"conflict with "v1-owner" using custom.example.com/v1: .spec.replicas"#),
        "{}",
        refused.stderr
    );
    k.ok_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager",
            "alpha-owner",
            "--force-conflicts",
            "-f",
            "-",
        ],
        &alpha("s", "large", "nginx:1.27"),
    );
    let s = get(&k, V1, "s");
    assert_eq!(s["spec"]["replicas"], 5);
    let raw = k.ok(&["get", V1, "s", "-o", "json", "--show-managed-fields"]);
    let managed: Value = serde_json::from_str::<Value>(&raw).unwrap()["metadata"]["managedFields"].clone();
    let entry = |m: &str| {
        managed
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["manager"] == m)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(entry("alpha-owner")["apiVersion"], "custom.example.com/v1alpha1");
    assert_eq!(entry("v1-owner")["apiVersion"], "custom.example.com/v1");
    assert!(
        entry("v1-owner")["fieldsV1"]["f:spec"].get("f:replicas").is_none(),
        "{managed}"
    );
    assert!(
        entry("v1-owner")["fieldsV1"]["f:spec"].get("f:color").is_some(),
        "{managed}"
    );
    // The v1 owner re-applying its replicas now conflicts with the v1alpha1 owner's size.
    let refused = k.run_with_stdin(
        &["apply", "--server-side", "--field-manager", "v1-owner", "-f", "-"],
        &v1("s", 2, "red"),
    );
    assert!(
        refused.stderr.contains(r#"using custom.example.com/v1alpha1"#) && refused.stderr.contains(".spec.size"),
        "{}",
        refused.stderr
    );

    // Watches at each version see the other version's writes, at their own version.
    let alpha_watch = k.lines(&["get", ALPHA, "--watch", "--output-watch-events", "-o", "json"]);
    let v1_watch = k.lines(&["get", V1, "--watch", "--output-watch-events", "-o", "json"]);
    let event = |lines: &apiary_runtime::testing::Lines, name: &str| -> Value {
        let line = lines.find(Duration::from_secs(20), |l| l.contains(&format!(r#""name":"{name}""#)));
        serde_json::from_str(&line.unwrap_or_else(|| panic!("a watch event of {name}"))).unwrap()
    };
    // Both watches list first; write once each has shown its initial objects.
    event(&alpha_watch, "s");
    event(&v1_watch, "s");
    k.ok_stdin(&["apply", "-f", "-"], &v1("from-v1", 1, "green"));
    k.ok_stdin(&["apply", "-f", "-"], &alpha("from-alpha", "small", "nginx:1.27"));
    for (lines, api_version, field) in [(&alpha_watch, "v1alpha1", "size"), (&v1_watch, "v1", "replicas")] {
        for name in ["from-v1", "from-alpha"] {
            let e = event(lines, name);
            assert_eq!(e["type"], "ADDED", "{e}");
            assert_eq!(
                e["object"]["apiVersion"],
                format!("custom.example.com/{api_version}"),
                "{e}"
            );
            assert!(e["object"]["spec"].get(field).is_some(), "{e}");
        }
    }
    drop((alpha_watch, v1_watch));
    let both: Value = serde_json::from_str(&k.ok(&["get", ALPHA, "-o", "json"])).unwrap();
    assert!(
        both["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["apiVersion"] == "custom.example.com/v1alpha1" && w["spec"]["size"].is_string()),
        "{both}"
    );
}

#[test]
fn kubectl_1_27_at_both_versions() {
    kubectl_at_both_versions("1.27");
}

#[test]
fn kubectl_1_33_at_both_versions() {
    kubectl_at_both_versions("1.33");
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_client_typed_at_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let client = server.client().await;
    let alphas: Api<v1alpha1::Widget> = Api::namespaced(client.clone(), "default");
    let v1s: Api<widget_api::Widget> = Api::namespaced(client.clone(), "default");

    // A v1alpha1 watch started before any write sees the v1 writes converted.
    let rv = common::list_rv(&v1s).await;
    let mut watch = alphas
        .watch(&WatchParams::default().timeout(30), &rv)
        .await
        .unwrap()
        .boxed();
    let mut typed = common::typed_widget("typed", 4);
    typed.spec.color = "green".into();
    v1s.create(&PostParams::default(), &typed).await.unwrap();
    let seen = loop {
        match tokio::time::timeout(Duration::from_secs(20), watch.try_next()).await {
            Ok(Ok(Some(WatchEvent::Added(w)))) => break w,
            Ok(Ok(Some(_))) => continue,
            other => panic!("no ADDED event: {other:?}"),
        }
    };
    assert_eq!(seen.spec.size, Size::Large);
    assert!(seen.metadata.annotations.unwrap_or_default().contains_key(V1_SPEC));

    // Typed reads and writes at v1alpha1 keep the v1-only fields.
    let mut a = alphas.get("typed").await.unwrap();
    a.spec.image = "nginx:1.28".into();
    alphas.replace("typed", &PostParams::default(), &a).await.unwrap();
    let w = v1s.get("typed").await.unwrap();
    assert_eq!(
        (w.spec.replicas, w.spec.color.as_str(), w.spec.image.as_str()),
        (4, "green", "nginx:1.28")
    );

    // Lists and field selectors at v1alpha1.
    let mut small = v1alpha1::Widget::default();
    small.metadata.name = Some("small".into());
    small.spec.image = "nginx:1.27".into();
    alphas.create(&PostParams::default(), &small).await.unwrap();
    let large = alphas
        .list(&ListParams::default().fields("spec.size=large"))
        .await
        .unwrap();
    assert_eq!(large.items.len(), 1);
    assert_eq!(large.items[0].metadata.name.as_deref(), Some("typed"));
    assert_eq!(v1s.get("small").await.unwrap().spec.replicas, 1);

    // Server-side apply at v1alpha1 through the typed client, status at both versions.
    let applied = json!({"apiVersion": "custom.example.com/v1alpha1", "kind": "Widget",
        "metadata": {"name": "small"}, "spec": {"size": "medium", "image": "nginx:1.27"}});
    alphas
        .patch(
            "small",
            &PatchParams::apply("alpha-apply").force(),
            &Patch::Apply(&applied),
        )
        .await
        .unwrap();
    assert_eq!(v1s.get("small").await.unwrap().spec.replicas, 3);
    let status = alphas.get_status("small").await.unwrap();
    assert_eq!(status.metadata.name.as_deref(), Some("small"));

    // Validation at v1alpha1 is v1alpha1's schema.
    let bad = json!({"apiVersion": "custom.example.com/v1alpha1", "kind": "Widget",
        "metadata": {"name": "bad"}, "spec": {"size": "huge", "image": "nginx:1.27"}});
    let error = alphas
        .patch("bad", &PatchParams::apply("x"), &Patch::Apply(&bad))
        .await
        .unwrap_err();
    assert_eq!(status_of(&error).0, 422, "{error}");
    assert!(error.to_string().contains("spec.size"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_and_openapi_at_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let client = server.client().await;
    let request = |path: &str| http::Request::get(path).body(Vec::new()).unwrap();
    let group: Value = client.request(request("/apis/custom.example.com")).await.unwrap();
    assert_eq!(group["preferredVersion"]["version"], "v1");
    let versions: Vec<&str> = group["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["v1", "v1alpha1"]);
    // The storage version hash is the storage version's, the same at both versions.
    let hash = |list: &Value| {
        list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "widgets")
            .map(|r| r["storageVersionHash"].clone())
            .unwrap()
    };
    let at_v1: Value = client.request(request("/apis/custom.example.com/v1")).await.unwrap();
    let at_alpha: Value = client
        .request(request("/apis/custom.example.com/v1alpha1"))
        .await
        .unwrap();
    use base64::Engine as _;
    use sha2::Digest as _;
    let expected =
        base64::engine::general_purpose::STANDARD.encode(&sha2::Sha256::digest("custom.example.com/v1/Widget")[..8]);
    assert_eq!(hash(&at_v1), json!(expected));
    assert_eq!(hash(&at_alpha), json!(expected));
    assert!(
        at_alpha["resources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["name"] != "widgets/scale"),
        "v1alpha1 declares no scale"
    );
    // OpenAPI v3 per group-version, each with its own Widget.
    let spec = |v: &str| request(&format!("/openapi/v3/apis/custom.example.com/{v}"));
    let fields = |v: &str, doc: &Value| {
        let spec = &doc["components"]["schemas"][format!("com.example.custom.{v}.Widget")]["properties"]["spec"];
        let mut names: Vec<String> = spec["properties"].as_object().unwrap().keys().cloned().collect();
        names.sort();
        names
    };
    let alpha_spec: Value = client.request(spec("v1alpha1")).await.unwrap();
    assert_eq!(fields("v1alpha1", &alpha_spec), ["image", "size"]);
    let v1_spec: Value = client.request(spec("v1")).await.unwrap();
    assert_eq!(fields("v1", &v1_spec), ["color", "image", "replicas"]);
    // A kubectl that reads aggregated discovery finds both versions.
    let k = server.kubectl("1.33");
    let resources = k.ok(&["api-resources", "--api-group", "custom.example.com", "-o", "name"]);
    assert!(resources.contains("widgets.custom.example.com"), "{resources}");
    let versions = k.ok(&["api-versions"]);
    assert!(
        versions.contains("custom.example.com/v1\n") && versions.contains("custom.example.com/v1alpha1"),
        "{versions}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn admission_sees_every_version() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let k = server.kubectl("1.33");
    common::apply_policy(
        &k,
        "apiVersion: custom.example.com/v1\nkind: WidgetPolicy\nmetadata:\n  name: no-bad\nspec:\n  deniedImages: [\"evil:*\"]\n",
    );
    // The server's typed admission step is written against v1; a v1alpha1 write is refused too.
    let refused = k.run_with_stdin(&["apply", "-f", "-"], &alpha("evil", "small", "evil:1"));
    assert_ne!(refused.code, 0, "{}", refused.stdout);
    assert!(refused.stderr.contains("evil:*"), "{}", refused.stderr);
    assert!(k.run(&["get", ALPHA, "evil"]).stderr.contains("NotFound"));
}
