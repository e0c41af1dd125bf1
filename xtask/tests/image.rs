//! `cargo xtask image`: the Widget server as an OCI image without a container daemon, checked
//! with skopeo and umoci (Debian's), and its unpacked root file system run as the image says
//! (chroot as user 65532; no container runtime runs here) to answer `/readyz` and kubectl.
//! The test builds in debug mode to save CI time; the command builds release by default.

use std::path::Path;
use std::process::Command;

use apiary_runtime::testing::{ServerProcess, VERSIONS};
use serde_json::Value;

fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{program} {args:?}:\n{stdout}\n{stderr}");
    stdout.into_owned()
}

#[test]
fn the_image_is_inspected_unpacked_and_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    // A target directory of its own: this build's features differ from the tests' build, and
    // sharing one directory would have them rebuild each other's dependencies.
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/new-project");
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["image", "--debug", "--out", out.to_str().unwrap()])
        .env("CARGO_TARGET_DIR", target)
        .output()
        .unwrap();
    let built = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{built}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let digest = std::fs::read_to_string(out.join("deploy/image-digest"))
        .unwrap()
        .trim()
        .to_string();
    assert!(
        built.contains(&format!("image     oci:{}:0.1.0 {digest}", out.join("image").display())),
        "{built}"
    );
    let workload = std::fs::read_to_string(out.join("deploy/deployment.yaml")).unwrap();
    assert!(
        workload.contains(&format!(
            "image: registry.example.com/apiary/widget-server:0.1.0@{digest}"
        )),
        "the workload pins the image by digest: {workload}"
    );
    assert!(out.join("deploy/Dockerfile").exists());

    let layout = format!("oci:{}:0.1.0", out.join("image").display());
    let inspected: Value = serde_json::from_str(&run("skopeo", &["inspect", &layout])).unwrap();
    assert_eq!(inspected["Digest"], digest.as_str());
    assert_eq!(inspected["Os"], "linux");
    let config: Value = serde_json::from_str(&run("skopeo", &["inspect", "--config", &layout])).unwrap();
    assert_eq!(config["config"]["User"], "65532:65532", "{config}");
    assert_eq!(config["config"]["Entrypoint"][0], "/usr/local/bin/widget-server");

    let bundle = out.join("bundle");
    let image = format!("{}:0.1.0", out.join("image").display());
    run("umoci", &["unpack", "--image", &image, bundle.to_str().unwrap()]);
    let rootfs = bundle.join("rootfs");
    for file in [
        "etc/ssl/certs/ca-certificates.crt",
        "etc/passwd",
        "lib64/ld-linux-x86-64.so.2",
    ] {
        assert!(rootfs.join(file).exists(), "the image carries {file}");
    }

    // As the image's config says: its entrypoint, as its user, inside its file system.
    let root = rootfs.to_str().unwrap();
    let launcher = ["chroot", "--userspec=65532:65532", root];
    let args = ["--storage", "memory", "--cert-dir", "/tmp/certs"];
    let mut server = ServerProcess::spawn_via(&launcher, "/usr/local/bin/widget-server", out, &args);
    // The kubeconfig it wrote names its certificates as the server sees them, inside the root.
    let written = std::fs::read_to_string(rootfs.join("tmp/certs/kubeconfig")).unwrap();
    let inside = format!("{}/", rootfs.join("tmp/certs").display());
    server.kubeconfig = out.join("kubeconfig");
    std::fs::write(&server.kubeconfig, written.replace("/tmp/certs/", &inside)).unwrap();
    let widget = "apiVersion: custom.example.com/v1\nkind: Widget\nmetadata:\n  name: boxed\n  namespace: default\nspec:\n  replicas: 1\n  image: nginx\n";
    let kubectl = server.kubectl(VERSIONS[VERSIONS.len() - 1]);
    assert_eq!(kubectl.ok(&["get", "--raw", "/readyz"]), "ok");
    kubectl.ok_stdin(&["apply", "-f", "-"], widget);
    let table = kubectl.ok(&["get", "widgets", "-n", "default"]);
    assert!(table.lines().any(|l| l.starts_with("boxed ")), "{table}");
    // Files it wrote belong to the image's user, not root.
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(rootfs.join("tmp/certs/ca.key")).unwrap());
    assert_eq!(owner, 65532);
}
