//! A new user's first minutes, outside this workspace: `cargo xtask new` writes a project for a
//! cluster-scoped kind into a temporary directory, which then formats, builds, tests and
//! generates its deployment and client with its own `cargo xtask`, serves with its own binary,
//! and answers the real kubectl, directly and behind a real kube-apiserver (its own
//! `cargo xtask cluster up`). (The getting-started guide, `docs/getting-started.md`, shows
//! these same files: `apiary-codegen`'s `the_guide_shows_what_new_writes` keeps the two equal.)

use std::path::{Path, PathBuf};
use std::process::Command;

use apiary_runtime::testing::{Kubectl, ServerProcess, VERSIONS};

/// This checkout.
fn apiary() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

/// `cargo ARGS` in `dir` as a user would run it there: none of this workspace's settings
/// (its `.cargo/config.toml` pins a k8s-openapi version the new project must pin itself).
/// The target directory is kept under this workspace's, so later runs rebuild little.
fn cargo(dir: &Path, args: &[&str]) -> String {
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target_dir())
        .env_remove("K8S_OPENAPI_ENABLED_VERSION")
        // Nothing a project builds may need protoc (etcd's API is compiled by protox).
        .env("PROTOC", "/nonexistent/protoc")
        .env_remove("RUSTFLAGS")
        // As this workspace's own debug builds: no debug info, which would fill CI's disk.
        .env("CARGO_PROFILE_DEV_DEBUG", "false")
        .output()
        .expect("cargo runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(
        output.status.success(),
        "cargo {args:?} in {}:\n{stdout}\n{stderr}",
        dir.display()
    );
    stdout.into_owned()
}

fn target_dir() -> PathBuf {
    apiary().join("target/new-project")
}

#[test]
fn a_new_project_builds_serves_and_answers_kubectl() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("gadget");
    let new = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "new",
            project.to_str().unwrap(),
            "--group",
            "example.com",
            "--kind",
            "Gadget",
            "--cluster",
        ])
        .output()
        .unwrap();
    assert!(new.status.success(), "{}", String::from_utf8_lossy(&new.stderr));
    assert!(String::from_utf8_lossy(&new.stdout).contains("cargo run -p gadget-server"));
    let workspace = std::fs::read_to_string(project.join("Cargo.toml")).unwrap();
    assert!(workspace.contains(&format!("path = \"{}/runtime\"", apiary().display())));

    // The versions this workspace is tested with (a user's first build resolves afresh).
    std::fs::copy(apiary().join("Cargo.lock"), project.join("Cargo.lock")).unwrap();
    cargo(&project, &["fmt", "--check"]);
    cargo(&project, &["build", "--workspace"]);
    let tests = cargo(&project, &["test", "-p", "gadget-api"]);
    assert!(tests.contains("the_declaration_is_valid ... ok"), "{tests}");
    let generated = cargo(&project, &["xtask", "generate"]);
    for file in ["deploy/apiservice.yaml", "deploy/statefulset.yaml", "client/src/lib.rs"] {
        assert!(generated.contains(&format!("written   {file}")), "{generated}");
    }
    let workload = std::fs::read_to_string(project.join("deploy/statefulset.yaml")).unwrap();
    assert!(
        workload.contains("- --storage=embedded"),
        "as the binary is built (no etcd): {workload}"
    );
    cargo(&project, &["xtask", "generate", "--check"]);
    // The typed client is a crate of its own, for other projects to depend on.
    std::fs::copy(apiary().join("Cargo.lock"), project.join("client/Cargo.lock")).unwrap();
    cargo(&project.join("client"), &["build"]);

    let server = ServerProcess::spawn(
        target_dir().join("debug/gadget-server").to_str().unwrap(),
        &project,
        &[],
    );
    let kubectl = server.kubectl(VERSIONS[VERSIONS.len() - 1]);
    let gadget = "apiVersion: example.com/v1alpha1\nkind: Gadget\nmetadata:\n  name: first\nspec:\n  size: 3\n";
    assert_eq!(
        kubectl.ok_stdin(&["apply", "-f", "-"], gadget).trim(),
        "gadget.example.com/first created"
    );
    let resources = kubectl.ok(&["api-resources", "--api-group", "example.com", "--no-headers"]);
    assert!(
        resources
            .split_whitespace()
            .eq(["gadgets", "example.com/v1alpha1", "false", "Gadget"]),
        "{resources}"
    );
    let bad = "apiVersion: example.com/v1alpha1\nkind: Gadget\nmetadata:\n  name: bad\nspec:\n  size: 11\n  note: \"a\\nb\"\n";
    let refused = kubectl.run_with_stdin(&["apply", "-f", "-"], bad);
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("spec.size: Invalid value: 11"),
        "{}",
        refused.stderr
    );
    assert!(
        refused
            .stderr
            .contains("spec.note: Invalid value: \"a\\nb\": must be one line"),
        "{}",
        refused.stderr
    );
    for version in VERSIONS {
        let table = server.kubectl(version).ok(&["get", "gadgets"]);
        let header: Vec<&str> = table.lines().next().unwrap_or_default().split_whitespace().collect();
        assert_eq!(header, ["NAME", "SIZE", "READY", "AGE"], "kubectl {version}: {table}");
        assert!(table.contains("first"), "kubectl {version}: {table}");
    }
    drop(server);
    behind_a_real_cluster(&project);
}

/// Stops what `cargo xtask cluster up` left running in a project, however the test ends.
struct ClusterDown(PathBuf);

impl Drop for ClusterDown {
    fn drop(&mut self) {
        let _ = apiary_cluster::stop_recorded(&self.0.join(".apiary/cluster/pids"));
    }
}

/// The new project's own `cargo xtask cluster up` registers its server behind a real
/// kube-apiserver, whose kubeconfig reaches Gadgets through the aggregator; `down` stops it all.
fn behind_a_real_cluster(project: &Path) {
    let _down = ClusterDown(project.to_path_buf());
    let up = cargo(project, &["xtask", "cluster", "up"]);
    let kubeconfig = up
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("export KUBECONFIG="))
        .unwrap_or_else(|| panic!("the last line exports KUBECONFIG: {up}"));
    let home = project.join(".apiary/kubectl-home");
    let kubectl = Kubectl::version(VERSIONS[VERSIONS.len() - 1], Path::new(kubeconfig), &home);
    let available = kubectl.ok(&[
        "get",
        "apiservice",
        "v1alpha1.example.com",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Available\")].status}",
    ]);
    assert_eq!(available, "True");
    let gadget = "apiVersion: example.com/v1alpha1\nkind: Gadget\nmetadata:\n  name: aggregated\nspec:\n  size: 2\n";
    assert_eq!(
        kubectl.ok_stdin(&["apply", "-f", "-"], gadget).trim(),
        "gadget.example.com/aggregated created"
    );
    let stopped = cargo(project, &["xtask", "cluster", "down"]);
    assert_eq!(
        stopped.lines().collect::<Vec<_>>(),
        [
            "stopped   gadget-server",
            "stopped   kube-controller-manager",
            "stopped   kube-apiserver",
            "stopped   etcd"
        ]
    );
}
