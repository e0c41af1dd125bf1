//! The generated artifacts against a running server: the OpenAPI files are what it serves,
//! and the generated client crate, built in a scratch project outside this workspace, creates,
//! scales, patches status and watches Widgets, and reads them at v1alpha1.

use crate::common;

use std::path::Path;
use std::process::Command;

use common::{ServerProcess, WidgetServer as _};

fn example(relative: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(relative)
}

#[tokio::test(flavor = "multi_thread")]
async fn openapi_files_are_what_the_server_serves() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let client = server.client().await;
    for (path, file) in [
        ("/openapi/v2", "deploy/openapi/v2.json"),
        (
            "/openapi/v3/apis/custom.example.com/v1",
            "deploy/openapi/v3/apis/custom.example.com/v1.json",
        ),
        (
            "/openapi/v3/apis/custom.example.com/v1alpha1",
            "deploy/openapi/v3/apis/custom.example.com/v1alpha1.json",
        ),
    ] {
        let request = http::Request::builder()
            .uri(path)
            .header("Accept", "application/json")
            .body(Vec::new())
            .unwrap();
        let served = client.request_text(request).await.unwrap();
        let committed = std::fs::read_to_string(example(file)).unwrap();
        assert!(
            served == committed,
            "{file} differs from {path}: run `cargo xtask generate`"
        );
    }
}

const MAIN: &str = r#"
use futures::StreamExt;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use widget_client::{Widget, WidgetApiExt, WidgetSpec, WidgetStatus};

#[tokio::main]
async fn main() {
    let kubeconfig = kube::config::Kubeconfig::read_from(std::env::var("APIARY_KUBECONFIG").unwrap()).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
    config.cluster_url = std::env::var("APIARY_URL").unwrap().parse().unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let api: Api<Widget> = Api::namespaced(client.clone(), "default");
    let mut widget = Widget {
        spec: WidgetSpec { replicas: 1, image: "nginx:1.25".into(), color: None },
        ..Default::default()
    };
    widget.metadata.name = Some("from-client".into());
    let created = api.create(&PostParams::default(), &widget).await.unwrap();
    let rv = created.metadata.resource_version.clone().unwrap();
    assert_eq!(created.spec.color.as_deref(), Some("blue"), "the server's default");

    let scale = api.scale_to("from-client", 3).await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(3));

    let status = WidgetStatus { available_replicas: Some(7), ..Default::default() };
    let patched = api.set_status("from-client", &status).await.unwrap();
    assert_eq!(patched.status.unwrap().available_replicas, Some(7));

    let mut events = api.watch(&WatchParams::default().timeout(10), &rv).await.unwrap().boxed();
    let mut saw_scale = false;
    while let Some(event) = events.next().await {
        if let WatchEvent::Modified(w) = event.unwrap() {
            if w.spec.replicas == 3 {
                saw_scale = true;
                break;
            }
        }
    }
    assert!(saw_scale, "the watch saw the scale");

    // The same object through the v1alpha1 module: 3 replicas is a medium Widget.
    let alpha: Api<widget_client::v1alpha1::Widget> = Api::namespaced(client, "default");
    let old = alpha.get("from-client").await.unwrap();
    assert_eq!(old.spec.size, widget_client::v1alpha1::WidgetSpecSize::Medium);
    println!("generated client: ok");
}
"#;

#[test]
fn the_generated_client_builds_on_its_own_and_drives_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server_dir = dir.path().join("server");
    std::fs::create_dir_all(&server_dir).unwrap();
    let server = ServerProcess::start(&server_dir);
    let scratch = dir.path().join("scratch");
    std::fs::create_dir_all(scratch.join("src")).unwrap();
    std::fs::write(
        scratch.join("Cargo.toml"),
        format!(
            r#"[package]
name = "scratch"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
widget-client = {{ path = "{}" }}
kube = {{ version = "5", default-features = false, features = ["client", "rustls-tls", "ring"] }}
k8s-openapi = {{ version = "0.29", default-features = false, features = ["v1_33"] }}
tokio = {{ version = "1", features = ["rt-multi-thread", "macros"] }}
futures = "0.3"

[workspace]
"#,
            example("client").canonicalize().unwrap().display()
        ),
    )
    .unwrap();
    std::fs::write(scratch.join("src/main.rs"), MAIN).unwrap();
    // Pin the same versions as this workspace, so the build needs no network.
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..");
    std::fs::copy(workspace.join("Cargo.lock"), scratch.join("Cargo.lock")).unwrap();
    let target = workspace.join("target/scratch-client");
    let out = Command::new(env!("CARGO"))
        .args(["run", "--quiet", "--offline"])
        .current_dir(&scratch)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("K8S_OPENAPI_ENABLED_VERSION")
        // As this workspace's own debug builds: no debug info, which would fill CI's disk.
        .env("CARGO_PROFILE_DEV_DEBUG", "false")
        .env("APIARY_URL", &server.url)
        .env("APIARY_KUBECONFIG", &server.kubeconfig)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("generated client: ok"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The generated client as a workspace member's path dependency: its date-time fields are
/// k8s-openapi `Time`s read from what the server's status loop writes.
#[tokio::test(flavor = "multi_thread")]
async fn the_generated_client_is_a_workspace_dependency() {
    use widget_client::{Widget, WidgetSpec, WidgetStatusPhase};
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let api: kube::Api<Widget> = kube::Api::namespaced(server.client().await, "default");
    let mut widget = Widget {
        spec: WidgetSpec {
            replicas: 1,
            image: "nginx:1.25".into(),
            color: None,
        },
        ..Default::default()
    };
    widget.metadata.name = Some("member".into());
    api.create(&Default::default(), &widget).await.unwrap();
    let status = common::eventually("the status loop wrote the status", || {
        let got = futures::executor::block_on(api.get("member")).ok()?;
        got.status.filter(|s| s.last_updated.is_some())
    });
    let written: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time = status.last_updated.unwrap();
    assert!(written.0 > jiff::Timestamp::UNIX_EPOCH);
    assert!(status.phase.is_some_and(|p| p != WidgetStatusPhase::Failed));
}

/// The container args of `workload` (a generated YAML file), its `index`th document.
fn container_args(workload: &std::path::Path, index: usize, key: &str) -> Vec<String> {
    let text = std::fs::read_to_string(workload).unwrap();
    let document = text.split("\n---\n").nth(index).unwrap();
    let manifest: serde_json::Value = serde_saphyr::from_str(document).unwrap();
    manifest["spec"]["template"]["spec"]["containers"][0][key]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// The generated manifests and the server's flags never disagree: the server starts with
/// exactly the container args the generated workload gives it (the in-cluster paths and
/// addresses mapped to this machine: the certificates as the Secrets mount them, a local etcd
/// started with the generated etcd's TLS flags, or a data directory; a free port) and answers
/// `/readyz`.
#[test]
fn the_generated_container_args_start_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let certs = example("deploy/certs").canonicalize().unwrap();
    let file = |name: &str| certs.join(name).display().to_string();
    // The Secrets' keys (tls.crt, tls.key, ca.crt) are these files.
    let mounted = |arg: String| {
        arg.replace("/etc/etcd/tls/tls.", &file("etcd-server."))
            .replace("/var/run/apiary/etcd/tls.", &file("etcd-client."))
            .replace("/etc/etcd/tls/ca.crt", &file("ca.crt"))
            .replace("/var/run/apiary/etcd/ca.crt", &file("ca.crt"))
            .replace("/var/run/apiary/tls", certs.to_str().unwrap())
    };
    let etcd_tls: Vec<String> = container_args(&example("deploy/etcd.yaml"), 3, "command")
        .into_iter()
        .filter(|a| {
            ["--cert-file", "--key-file", "--trusted-ca-file", "--client-cert-auth"]
                .iter()
                .any(|f| a.starts_with(f))
        })
        .map(mounted)
        .collect();
    assert_eq!(etcd_tls.len(), 4, "the generated etcd serves mutual TLS: {etcd_tls:?}");
    let etcd = apiary_runtime::testing::EtcdProcess::start_with(dir.path(), &etcd_tls);
    let embedded = dir.path().join("embedded");
    let project = apiary_codegen::Project::new("widget-server", "widget-system", "widget-server:test")
        .embedded("1Gi")
        .resource::<widget_api::Widget>();
    let parts = apiary_codegen::Parts {
        manifests: true,
        certs: true,
        openapi: false,
        client: false,
        go_client: false,
    };
    apiary_codegen::generate(
        &project,
        &embedded,
        &dir.path().join("client"),
        parts,
        apiary_codegen::Mode::Write,
        &mut |_, _| {},
    )
    .unwrap();
    let data = dir.path().join("data");
    for (workload, local) in [
        (
            example("deploy/deployment.yaml"),
            format!("--etcd-servers={}", etcd.endpoint()),
        ),
        (
            embedded.join("statefulset.yaml"),
            format!("--data-dir={}", data.display()),
        ),
    ] {
        let args: Vec<String> = container_args(&workload, 0, "args")
            .into_iter()
            .filter(|a| !a.starts_with("--secure-port="))
            .map(|a| match a.split_once('=') {
                Some(("--bind-address", _)) => "--bind-address=127.0.0.1".to_string(),
                Some(("--etcd-servers" | "--data-dir", _)) => local.clone(),
                _ => mounted(a),
            })
            .collect();
        let run = dir.path().join(workload.file_stem().unwrap());
        std::fs::create_dir_all(&run).unwrap();
        let server = ServerProcess::start_in(&run, &args.iter().map(String::as_str).collect::<Vec<_>>());
        // As the kubelet probes it: no credentials that could succeed.
        let kubeconfig = run.join("probe.kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {}\n    tls-server-name: widget-server.widget-system.svc\nusers:\n- name: probe\n  user:\n    token: no-one\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: probe\ncurrent-context: c\n",
                server.url,
                certs.join("ca.crt").display()
            ),
        )
        .unwrap();
        let out = Command::new(format!("{}/kubectl.1.33", common::KUBECTL_DIR))
            .args(["--kubeconfig", kubeconfig.to_str().unwrap(), "get", "--raw", "/readyz"])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "ok",
            "{}: {}",
            workload.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
