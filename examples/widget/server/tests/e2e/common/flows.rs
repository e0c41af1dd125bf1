//! The aggregation recipe's Step 8 and Verification through the real kubectl: every step asserts
//! kubectl's output. Run against a server directly and through a real kube-apiserver.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Kubectl, eventually, widget};

/// Words of `s` joined by single spaces (kubectl's column widths vary).
pub fn words(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// kubectl's deletion line without the namespace that newer kubectl (1.37 here) adds
/// (`… deleted from default namespace`).
pub fn deleted(out: &str) -> &str {
    let line = out.trim();
    line.split_once(" from ").map_or(line, |(head, _)| head)
}

/// The row of `table` whose first column is `name`.
pub fn row(table: &str, name: &str) -> Option<String> {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .map(words)
}

/// What every kubectl `version` must do: discover Widgets, create one named `name`, list it
/// and explain a field from the OpenAPI documents.
pub fn smoke(k: &Kubectl, version: &str, name: &str) {
    assert!(
        words(&k.ok(&["api-resources"])).contains("widgets wd custom.example.com/v1 true Widget"),
        "{version}"
    );
    assert_eq!(
        k.ok_stdin(&["apply", "-f", "-"], &widget(name, 1, "")).trim(),
        format!("widget.custom.example.com/{name} created"),
        "{version}"
    );
    assert!(row(&k.ok(&["get", "widgets"]), name).is_some(), "{version}");
    assert!(
        k.ok(&["explain", "widgets.spec.image"])
            .contains("The container image, with a version"),
        "{version}"
    );
}

/// The whole recipe against a running server (used for every storage backend).
pub fn flows_against(k: &Kubectl) {
    // Discovery.
    let resources = k.ok(&["api-resources", "--api-group=custom.example.com"]);
    assert!(
        words(&resources).contains("widgets wd custom.example.com/v1 true Widget"),
        "{resources}"
    );
    assert!(k.ok(&["api-versions"]).lines().any(|l| l == "custom.example.com/v1"));

    // Apply: create, unchanged, configured.
    let manifest = widget("my-widget", 3, "");
    assert_eq!(
        k.ok_stdin(&["apply", "-f", "-"], &manifest).trim(),
        "widget.custom.example.com/my-widget created"
    );
    assert_eq!(
        k.ok_stdin(&["apply", "-f", "-"], &manifest).trim(),
        "widget.custom.example.com/my-widget unchanged"
    );
    let manifest = widget("my-widget", 4, "");
    assert_eq!(
        k.ok_stdin(&["apply", "-f", "-"], &manifest).trim(),
        "widget.custom.example.com/my-widget configured"
    );

    // get: table with declared columns, filled in by the server's status loop.
    let table = eventually("status in the table", || {
        let out = k.ok(&["get", "widgets"]);
        row(&out, "my-widget")
            .filter(|r| r.starts_with("my-widget 4 4 Running"))
            .map(|_| out)
    });
    assert_eq!(
        words(table.lines().next().unwrap()),
        "NAME REPLICAS AVAILABLE PHASE AGE"
    );
    let wide = k.ok(&["get", "widgets", "-o", "wide"]);
    assert_eq!(
        words(wide.lines().next().unwrap()),
        "NAME REPLICAS AVAILABLE PHASE COLOR IMAGE AGE"
    );
    assert!(row(&wide, "my-widget").unwrap().contains("blue nginx:1.25"), "{wide}");

    // -o yaml shows the default color; -o jsonpath the server-written status.
    let yaml = k.ok(&["get", "widget", "my-widget", "-o", "yaml"]);
    assert!(yaml.contains("kind: Widget") && yaml.contains("color: blue"), "{yaml}");
    let status: Value =
        serde_json::from_str(&k.ok(&["get", "widget", "my-widget", "-o", "jsonpath={.status}"])).unwrap();
    assert_eq!(status["availableReplicas"], 4);
    assert_eq!(status["phase"], "Running");
    assert!(
        status["lastUpdated"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{status}"
    );

    // -A, --show-labels, --chunk-size.
    let all = k.ok(&["get", "widgets", "-A"]);
    assert_eq!(
        words(all.lines().next().unwrap()),
        "NAMESPACE NAME REPLICAS AVAILABLE PHASE AGE"
    );
    assert!(
        row(&all, "default").unwrap().starts_with("default my-widget 4"),
        "{all}"
    );
    let labels = k.ok(&["get", "widgets", "--show-labels"]);
    assert!(row(&labels, "my-widget").unwrap().ends_with("app=demo"), "{labels}");
    for name in ["w-a", "w-b"] {
        k.ok_stdin(&["create", "-f", "-"], &widget(name, 1, ""));
    }
    let chunked = k.ok(&["get", "widgets", "--chunk-size=1", "-o", "name"]);
    assert_eq!(
        chunked.lines().collect::<Vec<_>>(),
        [
            "widget.custom.example.com/my-widget",
            "widget.custom.example.com/w-a",
            "widget.custom.example.com/w-b"
        ]
    );

    // The recipe's raw paths.
    let list: Value = serde_json::from_str(&k.ok(&["get", "--raw", "/apis/custom.example.com/v1"])).unwrap();
    assert_eq!(list["kind"], "APIResourceList");
    let names: Vec<&str> = list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, ["widgets", "widgets/status", "widgets/scale", "widgetpolicies"]);
    let raw: Value =
        serde_json::from_str(&k.ok(&["get", "--raw", "/apis/custom.example.com/v1/namespaces/default/widgets"]))
            .unwrap();
    assert_eq!(raw["kind"], "WidgetList");
    assert_eq!(raw["items"].as_array().unwrap().len(), 3);

    // explain reads the OpenAPI documents.
    let explain = k.ok(&["explain", "widget.spec"]);
    assert!(words(&explain).contains("replicas <integer> -required-"), "{explain}");
    assert!(explain.contains("The color; \"blue\" when not given."), "{explain}");

    // scale through the scale subresource.
    assert_eq!(
        k.ok(&["scale", "widget", "my-widget", "--replicas=5"]).trim(),
        "widget.custom.example.com/my-widget scaled"
    );
    assert_eq!(
        k.ok(&["get", "widget", "my-widget", "-o", "jsonpath={.spec.replicas}"]),
        "5"
    );
    eventually("status follows scale", || {
        (k.ok(&[
            "get",
            "widget",
            "my-widget",
            "-o",
            "jsonpath={.status.availableReplicas}",
        ]) == "5")
            .then_some(())
    });

    // label, and select by it.
    assert_eq!(
        k.ok(&["label", "widget", "my-widget", "tier=gold"]).trim(),
        "widget.custom.example.com/my-widget labeled"
    );
    assert_eq!(
        k.ok(&["get", "widgets", "-l", "tier=gold", "-o", "name"]).trim(),
        "widget.custom.example.com/my-widget"
    );
    assert_eq!(
        k.ok(&["get", "widgets", "--field-selector", "metadata.name=w-a", "-o", "name"])
            .trim(),
        "widget.custom.example.com/w-a"
    );

    // diff shows a change and persists nothing (dryRun=All).
    let changed = widget("my-widget", 7, "");
    let diff = k.run_with_stdin(&["diff", "-f", "-"], &changed);
    assert_eq!(
        diff.code, 1,
        "diff exits 1 on differences: {}{}",
        diff.stdout, diff.stderr
    );
    assert!(
        diff.stdout.lines().any(|l| words(l) == "- replicas: 5")
            && diff.stdout.lines().any(|l| words(l) == "+ replicas: 7"),
        "{}",
        diff.stdout
    );
    assert_eq!(
        k.ok(&["get", "widget", "my-widget", "-o", "jsonpath={.spec.replicas}"]),
        "5"
    );

    // wait for the Ready condition of the current generation.
    let waited = k.ok(&["wait", "--for=condition=Ready", "widget/my-widget", "--timeout=20s"]);
    assert_eq!(waited.trim(), "widget.custom.example.com/my-widget condition met");

    // get -w sees a change made by another client.
    let mut watcher = k.spawn(&["get", "widgets", "-w", "--request-timeout=30s"]);
    let stdout = watcher.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen_initial = false;
    let mut patched = false;
    let mut saw_change = false;
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            if line.starts_with("w-b") {
                seen_initial = true;
            }
            if patched && words(&line).starts_with("w-a 9") {
                saw_change = true;
                break;
            }
        }
        if seen_initial && !patched {
            k.ok(&[
                "patch",
                "widget",
                "w-a",
                "--type=merge",
                "-p",
                r#"{"spec":{"replicas":9}}"#,
            ]);
            patched = true;
        }
    }
    let _ = watcher.kill();
    let _ = watcher.wait();
    assert!(saw_change, "kubectl get -w did not show the patched widget");

    // Errors: not found, invalid, conflict, strategic merge patch.
    let missing = k.run(&["get", "widget", "nope"]);
    assert_eq!(missing.code, 1);
    assert!(
        missing
            .stderr
            .contains(r#"Error from server (NotFound): widgets.custom.example.com "nope" not found"#),
        "{}",
        missing.stderr
    );
    let invalid = k.run_with_stdin(&["apply", "-f", "-"], &widget("too-big", 101, ""));
    assert_eq!(invalid.code, 1);
    assert!(
        invalid.stderr.contains(
            r#"The Widget "too-big" is invalid: spec.replicas: Invalid value: 101: must be less than or equal to 100"#
        ),
        "{}",
        invalid.stderr
    );
    // A CEL rule on the type (x-kubernetes-validations), in kube-apiserver's words.
    let floating = widget("floating", 1, "").replace("nginx:1.25", "nginx:latest");
    let refused = k.run_with_stdin(&["apply", "-f", "-"], &floating);
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains(
            r#"The Widget "floating" is invalid: spec.image: Invalid value: "string": must name a version, not :latest"#
        ),
        "{}",
        refused.stderr
    );
    let document = k.ok(&["get", "--raw", "/openapi/v3/apis/custom.example.com/v1"]);
    assert!(document.contains(r#""x-kubernetes-validations":[{"message":"must name a version, not :latest","rule":"!self.endsWith(':latest')"}]"#), "the rule is published");
    let stale = widget("w-a", 2, "").replace("  name: w-a\n", "  name: w-a\n  resourceVersion: \"1\"\n");
    let conflict = k.run_with_stdin(&["replace", "-f", "-"], &stale);
    assert_eq!(conflict.code, 1);
    assert!(
        conflict.stderr.contains("Error from server (Conflict)")
            && conflict.stderr.contains("the object has been modified"),
        "{}",
        conflict.stderr
    );
    let smp = k.run(&["patch", "widget", "w-a", "-p", r#"{"spec":{"replicas":1}}"#]);
    assert_eq!(smp.code, 1);
    assert!(
        smp.stderr
            .contains("application/strategic-merge-patch+json is not supported"),
        "{}",
        smp.stderr
    );
    let strict = k.run_with_stdin(&["apply", "-f", "-"], &widget("typo", 1, "  colour: red\n"));
    assert_eq!(strict.code, 1);
    assert!(
        strict.stderr.contains(r#"unknown field "spec.colour""#),
        "{}",
        strict.stderr
    );

    // delete without and with a finalizer.
    assert_eq!(
        deleted(&k.ok(&["delete", "widget", "w-b"])),
        r#"widget.custom.example.com "w-b" deleted"#
    );
    assert!(k.run(&["get", "widget", "w-b"]).stderr.contains("not found"));
    k.ok_stdin(
        &["apply", "-f", "-"],
        &widget("held", 1, "").replace("  labels:\n", "  finalizers: [example.com/hold]\n  labels:\n"),
    );
    assert_eq!(
        deleted(&k.ok(&["delete", "widget", "held", "--wait=false"])),
        r#"widget.custom.example.com "held" deleted"#
    );
    assert!(
        !k.ok(&["get", "widget", "held", "-o", "jsonpath={.metadata.deletionTimestamp}"])
            .is_empty()
    );
    k.ok(&[
        "patch",
        "widget",
        "held",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    assert!(
        k.run(&["get", "widget", "held"])
            .stderr
            .contains(r#"widgets.custom.example.com "held" not found"#)
    );
}
