//! The generated Go client (`examples/widget/client-go`, k8s.io/code-generator's clientset,
//! informers, listers and apply configurations) against a running Widget server: the Go tests
//! in `tests/go` (clientset, informer, lister, apply, and a controller-runtime reconciler),
//! after `go vet` of both modules. The real-cluster suite runs the clientset test through the aggregator too.

use std::path::Path;
use std::process::Command;

use crate::common;
use common::{ServerProcess, WidgetServer as _};

/// The Go test module.
const GO_TESTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/go");
/// The generated Go client module.
const GO_CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../client-go");

/// Run `go args` in the module `dir` with `kubeconfig`; its output, or a panic with it.
fn go(dir: &str, args: &[&str], kubeconfig: &Path) -> String {
    let out = Command::new("go")
        .args(args)
        .current_dir(dir)
        .env("WIDGET_KUBECONFIG", kubeconfig)
        // The machine's Go (the module asks for 1.26.0): never fetch another toolchain.
        .env("GOTOOLCHAIN", "local")
        .output()
        .expect("go runs");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "go {}:\n{output}", args.join(" "));
    output
}

/// Run the Go tests named by `pattern` verbosely; panic unless each of `tests` passed (a
/// skipped test, say without a kubeconfig, is a failure here).
pub fn go_tests(pattern: &str, tests: &[&str], kubeconfig: &Path) {
    let output = go(GO_TESTS, &["test", "-count=1", "-v", "-run", pattern, "."], kubeconfig);
    for test in tests {
        assert!(
            output.contains(&format!("--- PASS: {test} ")),
            "{test} did not pass:\n{output}"
        );
    }
}

#[test]
fn the_generated_go_client_drives_the_server() {
    let dir = tempfile::tempdir().unwrap();
    // The Go reconciler writes the status here, so the example's own status logic is off.
    let server = ServerProcess::start_in(dir.path(), &["--status-controller", "false"]);
    for module in [GO_CLIENT, GO_TESTS] {
        go(module, &["vet", "./..."], &server.kubeconfig);
    }
    go_tests(".", &["TestClientset", "TestReconciler"], &server.kubeconfig);
}
