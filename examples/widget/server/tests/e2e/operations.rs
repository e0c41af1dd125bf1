//! What operators see: /metrics after a kubectl session (checked by promtool), the audit log
//! under a policy, and Audit-ID.

use crate::common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{ServerProcess, WidgetServer as _, eventually, widget};
use serde_json::Value;

/// One sample: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once("=\"").unwrap();
                    (k.to_string(), v.trim_end_matches('"').to_string())
                })
                .collect();
            (name.to_string(), labels, value.parse().unwrap())
        })
        .collect()
}

/// The value of the one sample of `name` whose labels include `want`, or 0.
fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, labels, _)| n == name && want.iter().all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v)))
        .map(|(_, _, v)| v)
        .sum()
}

fn requests(samples: &[Sample], verb: &str, code: &str) -> f64 {
    value(
        samples,
        "apiserver_request_total",
        &[
            ("verb", verb),
            ("code", code),
            ("group", "custom.example.com"),
            ("version", "v1"),
            ("resource", "widgets"),
            ("scope", "namespace"),
            ("component", "apiserver"),
        ],
    )
}

#[test]
fn metrics_count_a_kubectl_session_and_pass_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let k = server.kubectl("1.33");
    k.ok_stdin(&["apply", "-f", "-"], &widget("m1", 1, ""));
    k.ok(&["get", "widget", "m1"]);
    k.ok(&["get", "widgets"]);
    {
        // A watch that sees one change (the label), then ends.
        let watch = k.lines(&["get", "widgets", "-w", "--output-watch-events", "--show-labels"]);
        assert!(watch.find(Duration::from_secs(20), |l| l.contains("m1")).is_some());
        k.ok(&["label", "widget", "m1", "tier=gold"]);
        assert!(
            watch
                .find(Duration::from_secs(20), |l| l.starts_with("MODIFIED")
                    && l.contains("tier=gold"))
                .is_some()
        );
    }
    // kubectl itself GETs (apply looks first, delete waits), so count the 404 as a difference.
    let scrape = || parse(&k.ok(&["get", "--raw", "/metrics"]));
    let before = requests(&scrape(), "GET", "404");
    assert_ne!(k.run(&["get", "widget", "missing"]).code, 0);
    assert_eq!(
        requests(&scrape(), "GET", "404") - before,
        1.0,
        "get of a missing widget"
    );
    assert_ne!(
        k.run_with_stdin(&["create", "-f", "-"], &widget("big", 101, "")).code,
        0
    );
    k.ok(&["delete", "widget", "m1"]);
    let text = k.ok(&["get", "--raw", "/metrics"]);
    let samples = parse(&text);

    assert_eq!(requests(&samples, "POST", "201"), 1.0, "create");
    assert_eq!(requests(&samples, "POST", "422"), 1.0, "invalid create");
    assert!(requests(&samples, "GET", "200") >= 1.0, "get");
    assert!(requests(&samples, "LIST", "200") >= 1.0, "list");
    assert_eq!(requests(&samples, "WATCH", "200"), 1.0, "watch");
    assert!(requests(&samples, "PATCH", "200") >= 1.0, "label is a patch");
    assert_eq!(requests(&samples, "DELETE", "200"), 1.0, "delete");
    let duration = |verb| {
        value(
            &samples,
            "apiserver_request_duration_seconds_count",
            &[("verb", verb), ("resource", "widgets")],
        )
    };
    assert_eq!(duration("POST"), 2.0, "both creates are timed");
    assert!(
        value(
            &samples,
            "apiserver_response_sizes_count",
            &[("verb", "LIST"), ("resource", "widgets")]
        ) >= 1.0
    );
    assert!(
        value(
            &samples,
            "apiserver_watch_events_total",
            &[("kind", "Widget"), ("group", "custom.example.com")]
        ) >= 1.0,
        "kubectl's watch was sent the label change"
    );
    assert_eq!(
        value(&samples, "apiserver_registered_watchers", &[("kind", "Widget")]),
        1.0,
        "kubectl's watch ended; the status controller's own (in process) remains"
    );
    assert_eq!(
        value(
            &samples,
            "apiserver_storage_objects",
            &[("resource", "widgets.custom.example.com")]
        ),
        0.0
    );
    assert!(
        value(
            &samples,
            "apiary_storage_request_duration_seconds_count",
            &[("backend", "memory"), ("operation", "create")]
        ) >= 1.0
    );
    assert!(value(&samples, "process_resident_memory_bytes", &[]) > 0.0);
    // Lists come from the watch cache: each reads the store's revision, none reads the objects
    // again, and since every write was this server's own, none needs a census.
    let storage = |samples: &[Sample], operation| {
        value(
            samples,
            "apiary_storage_request_duration_seconds_count",
            &[("backend", "memory"), ("operation", operation)],
        )
    };
    for _ in 0..3 {
        k.ok(&["get", "widgets"]);
    }
    let after = parse(&k.ok(&["get", "--raw", "/metrics"]));
    assert_eq!(storage(&after, "list"), storage(&samples, "list"), "no storage list");
    assert!(storage(&after, "revision") >= storage(&samples, "revision") + 3.0);
    assert_eq!(storage(&after, "census"), storage(&samples, "census"), "no census");
    assert!(text.contains("# TYPE apiserver_current_inflight_requests gauge"));

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian's prometheus package)");
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

const POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
rules:
# Reads are not audited.
- level: None
  verbs: ["get", "list", "watch"]
# Status writes: who and when only.
- level: Metadata
  resources:
  - group: custom.example.com
    resources: ["widgets/status"]
# Everything else on widgets: both bodies.
- level: RequestResponse
  resources:
  - group: custom.example.com
    resources: ["widgets"]
"#;

fn events(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_log_follows_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let log = dir.path().join("audit/audit.log");
    let server = ServerProcess::start_in(
        dir.path(),
        &[
            "--storage",
            "memory",
            "--audit-log-path",
            log.to_str().unwrap(),
            "--audit-policy-file",
            policy.to_str().unwrap(),
        ],
    );
    let k = server.kubectl("1.33");
    k.ok(&["get", "widgets"]);
    k.ok_stdin(&["apply", "-f", "-"], &widget("a1", 2, ""));
    k.ok(&["get", "widget", "a1", "-o", "yaml"]);
    k.ok(&[
        "patch",
        "widget",
        "a1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"availableReplicas":2}}"#,
    ]);

    // Impersonation (the admin may): bob is denied, and the event names both users.
    let denied = k.run(&["--as=bob", "--as-group=devs", "delete", "widget", "a1"]);
    assert!(
        denied
            .stderr
            .contains("User \"bob\" cannot delete resource \"widgets\""),
        "{}",
        denied.stderr
    );

    // Audit-ID is honoured and returned.
    let client = server.client().await;
    let request = http::Request::builder()
        .method("DELETE")
        .uri("/apis/custom.example.com/v1/namespaces/default/widgets/a1")
        .header("Audit-ID", "audit-id-from-the-test")
        .body(Vec::new().into())
        .unwrap();
    let response = client.send(request).await.unwrap();
    assert_eq!(response.headers()["Audit-ID"], "audit-id-from-the-test");

    // Events reach the file from a writer thread: wait for the last one (the delete's response).
    let all = eventually("the delete's events", || {
        let all = events(&log);
        all.iter()
            .any(|e| e["auditID"] == "audit-id-from-the-test" && e["stage"] == "ResponseComplete")
            .then_some(all)
    });
    let as_bob = all
        .iter()
        .find(|e| e.get("impersonatedUser").is_some() && e["stage"] == "ResponseComplete")
        .expect("the impersonated delete is audited");
    assert_eq!(as_bob["user"]["username"], "apiary-admin");
    assert_eq!(
        as_bob["impersonatedUser"],
        serde_json::json!({"username": "bob", "groups": ["devs", "system:authenticated"]})
    );
    assert_eq!(as_bob["responseStatus"]["code"], 403);
    // No reads at all.
    assert!(
        all.iter()
            .all(|e| !["get", "list", "watch"].contains(&e["verb"].as_str().unwrap())),
        "{all:#?}"
    );
    // create: RequestResponse, both stages, both bodies.
    let create: Vec<&Value> = all.iter().filter(|e| e["verb"] == "create").collect();
    assert_eq!(
        create.iter().map(|e| e["stage"].as_str().unwrap()).collect::<Vec<_>>(),
        ["RequestReceived", "ResponseComplete"]
    );
    let done = create[1];
    assert_eq!(done["apiVersion"], "audit.k8s.io/v1");
    assert_eq!(done["kind"], "Event");
    assert_eq!(done["level"], "RequestResponse");
    assert_eq!(done["auditID"], create[0]["auditID"]);
    assert_eq!(done["user"]["username"], "apiary-admin");
    assert_eq!(
        done["user"]["groups"],
        serde_json::json!(["system:masters", "system:authenticated"])
    );
    assert_eq!(done["sourceIPs"], serde_json::json!(["127.0.0.1"]));
    assert!(done["userAgent"].as_str().unwrap().starts_with("kubectl"));
    assert_eq!(
        done["objectRef"],
        serde_json::json!({"resource": "widgets", "namespace": "default", "apiGroup": "custom.example.com", "apiVersion": "v1"})
    );
    assert_eq!(done["responseStatus"]["code"], 201);
    assert_eq!(done["requestObject"]["spec"]["replicas"], 2);
    assert_eq!(done["responseObject"]["metadata"]["name"], "a1");
    assert!(done["requestReceivedTimestamp"].as_str().unwrap().ends_with('Z'));
    assert!(done["stageTimestamp"].as_str().unwrap() >= done["requestReceivedTimestamp"].as_str().unwrap());
    assert!(create[0].get("responseStatus").is_none() && create[0].get("responseObject").is_none());
    // The status patch: Metadata only.
    let (controller, status): (Vec<&Value>, Vec<&Value>) = all
        .iter()
        .filter(|e| e["objectRef"]["subresource"] == "status" && e["stage"] == "ResponseComplete")
        .partition(|e| e["user"]["username"] == "system:apiserver");
    assert_eq!(status.len(), 1, "{all:#?}");
    // The status controller's writes (the in-process client) are audited as its own identity.
    assert!(
        controller.iter().any(|e| e["user"]["groups"]
            .as_array()
            .unwrap()
            .contains(&"system:masters".into())),
        "{all:#?}"
    );
    assert_eq!(
        (&status[0]["level"], &status[0]["verb"]),
        (&"Metadata".into(), &"patch".into())
    );
    assert!(status[0].get("requestObject").is_none() && status[0].get("responseObject").is_none());
    assert_eq!(status[0]["responseStatus"]["code"], 200);
    // The delete, under the test's audit ID.
    let delete = all
        .iter()
        .find(|e| e["verb"] == "delete" && e["stage"] == "ResponseComplete" && e["responseStatus"]["code"] == 200)
        .unwrap();
    assert_eq!(delete["auditID"], "audit-id-from-the-test");
    assert_eq!(delete["objectRef"]["name"], "a1");
}
