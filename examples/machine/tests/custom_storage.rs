//! Custom storage end to end with the real kubectl: processes computed from /proc (read-only,
//! verbs get/list/watch) and notes kept as files that other programs edit too.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use apiary::testing::{Kubectl, ServerProcess, VERSIONS, eventually};
use serde_json::Value;

fn start(dir: &Path) -> ServerProcess {
    let notes = dir.join("notes");
    ServerProcess::spawn(
        env!("CARGO_BIN_EXE_machine-server"),
        dir,
        &["--storage", "memory", "--notes-dir", notes.to_str().unwrap()],
    )
}

fn json(k: &Kubectl, args: &[&str]) -> Value {
    serde_json::from_str(&k.ok(args)).expect("kubectl printed JSON")
}

fn note(name: &str, title: &str, text: &str) -> String {
    format!(
        "apiVersion: machine.example.com/v1\nkind: Note\nmetadata:\n  name: {name}\nspec:\n  title: {title:?}\n  text: {text:?}\n"
    )
}

/// A process of our own to look at, killed on drop.
struct Sleeper(std::process::Child);

impl Sleeper {
    fn start() -> Sleeper {
        Sleeper(Command::new("sleep").arg("300").spawn().expect("sleep starts"))
    }
    fn pid(&self) -> String {
        self.0.id().to_string()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn discovery_and_openapi_offer_only_the_served_verbs() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let k = server.kubectl("1.33");
    let list = json(&k, &["get", "--raw", "/apis/machine.example.com/v1"]);
    let verbs = |name: &str| {
        list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .map(|r| r["verbs"].clone())
            .unwrap()
    };
    assert_eq!(verbs("processes"), serde_json::json!(["get", "list", "watch"]));
    assert_eq!(
        verbs("notes"),
        serde_json::json!([
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch"
        ])
    );
    let v3 = json(&k, &["get", "--raw", "/openapi/v3/apis/machine.example.com/v1"]);
    let paths = &v3["paths"];
    let one = &paths["/apis/machine.example.com/v1/processes/{name}"];
    assert!(one.get("get").is_some(), "{one}");
    for method in ["put", "patch", "delete"] {
        assert!(one.get(method).is_none(), "{method} is not served: {one}");
    }
    assert!(paths["/apis/machine.example.com/v1/processes"].get("post").is_none());
    assert!(
        paths["/apis/machine.example.com/v1/namespaces/{namespace}/notes/{name}"]
            .get("put")
            .is_some()
    );
    // kubectl explain reads the same OpenAPI.
    assert!(k.ok(&["explain", "processes.spec"]).contains("command"));
}

#[test]
fn processes_are_read_live_from_proc() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    for version in VERSIONS {
        let k = server.kubectl(version);
        let sleeper = Sleeper::start();
        let pid = sleeper.pid();
        let process = json(&k, &["get", "process", &pid, "-o", "json"]);
        assert_eq!(process["spec"]["command"], "sleep 300", "{process}");
        assert_eq!(process["metadata"]["labels"]["machine.example.com/comm"], "sleep");
        assert!(process["status"]["residentBytes"].as_i64().unwrap() > 0, "{process}");
        let table = k.ok(&["get", "proc", &pid]);
        assert!(table.starts_with("NAME") && table.contains("sleep 300"), "{table}");
        let named = k.ok(&["get", "processes", "-l", "machine.example.com/comm=sleep", "-o", "name"]);
        assert!(
            named.lines().any(|l| l == format!("process.machine.example.com/{pid}")),
            "{named}"
        );
        let missing = k.run(&["get", "process", "4194304999"]);
        assert!(
            missing.code != 0 && missing.stderr.contains("NotFound"),
            "{}",
            missing.stderr
        );

        // Read-only: writes are 405 and change nothing.
        let delete = k.run(&["delete", "process", &pid]);
        assert!(
            delete.code != 0 && delete.stderr.contains("MethodNotAllowed"),
            "{}",
            delete.stderr
        );
        let create = k.run_with_stdin(
            &["create", "-f", "-"],
            "apiVersion: machine.example.com/v1\nkind: Process\nmetadata:\n  name: \"1\"\nspec:\n  command: x\n  parent: 0\n",
        );
        assert!(create.stderr.contains("MethodNotAllowed"), "{}", create.stderr);
        k.ok(&["get", "process", &pid]);

        // A watch (by polling /proc) sees the process and then its end.
        let watch = k.lines(&[
            "get",
            "processes",
            "-w",
            "--output-watch-events",
            "-l",
            "machine.example.com/comm=sleep",
            "--no-headers",
        ]);
        let seen = watch.find(Duration::from_secs(20), |l| l.contains(&pid));
        assert!(
            seen.is_some_and(|l| l.starts_with("ADDED")),
            "the running process is listed"
        );
        drop(sleeper);
        let gone = watch.find(Duration::from_secs(20), |l| l.contains(&pid));
        assert!(gone.as_deref().is_some_and(|l| l.starts_with("DELETED")), "{gone:?}");
    }
}

#[test]
fn notes_live_in_files_that_others_edit_too() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let k = server.kubectl("1.33");
    let file = dir.path().join("notes/default/hello.json");

    // Create through kubectl: the file appears.
    assert!(
        k.ok_stdin(&["apply", "-f", "-"], &note("hello", "Hello", "first"))
            .contains("created")
    );
    let stored: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(stored["spec"]["text"], "first");
    let table = k.ok(&["get", "notes"]);
    assert!(table.contains("hello") && table.contains("Hello"), "{table}");

    // Another program edits the file: kubectl sees it, with a new resourceVersion.
    let before = json(&k, &["get", "note", "hello", "-o", "json"]);
    let mut edited = stored.clone();
    edited["spec"]["text"] = "edited outside".into();
    std::fs::write(&file, serde_json::to_vec(&edited).unwrap()).unwrap();
    let after = json(&k, &["get", "note", "hello", "-o", "json"]);
    assert_eq!(after["spec"]["text"], "edited outside");
    assert_ne!(
        after["metadata"]["resourceVersion"],
        before["metadata"]["resourceVersion"]
    );
    assert_eq!(after["metadata"]["uid"], before["metadata"]["uid"]);

    // A replace from the stale copy is a conflict and leaves the file alone.
    let stale = serde_json::to_string(&before).unwrap();
    let conflict = k.run_with_stdin(&["replace", "-f", "-"], &stale);
    assert!(
        conflict.code != 0 && conflict.stderr.contains("Conflict"),
        "{}",
        conflict.stderr
    );
    let now: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(now["spec"]["text"], "edited outside");

    // apply (a merge patch) and patch update the file.
    assert!(
        k.ok_stdin(&["apply", "-f", "-"], &note("hello", "Hello", "second"))
            .contains("configured")
    );
    k.ok(&[
        "patch",
        "note",
        "hello",
        "--type=merge",
        "-p",
        r#"{"spec":{"title":"Hi"}}"#,
    ]);
    let now: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(
        (&now["spec"]["title"], &now["spec"]["text"]),
        (&"Hi".into(), &"second".into())
    );

    // Validation and dry run write nothing.
    let long = "x".repeat(201);
    let invalid = k.run_with_stdin(&["apply", "-f", "-"], &note("bad", &long, ""));
    assert!(
        invalid.code != 0 && invalid.stderr.contains("Invalid value"),
        "{}",
        invalid.stderr
    );
    k.ok_stdin(&["apply", "--dry-run=server", "-f", "-"], &note("ghost", "Ghost", ""));
    assert!(!dir.path().join("notes/default/bad.json").exists());
    assert!(!dir.path().join("notes/default/ghost.json").exists());

    // A watch sees a file another program writes.
    let watch = k.lines(&["get", "notes", "-w", "--output-watch-events", "--no-headers"]);
    assert!(watch.find(Duration::from_secs(20), |l| l.contains("hello")).is_some());
    let outside = serde_json::json!({"metadata": {}, "spec": {"title": "From outside"}});
    std::fs::write(
        dir.path().join("notes/default/outside.json"),
        serde_json::to_vec(&outside).unwrap(),
    )
    .unwrap();
    let added = watch.find(Duration::from_secs(20), |l| l.contains("outside"));
    assert!(added.as_deref().is_some_and(|l| l.starts_with("ADDED")), "{added:?}");

    // Delete one, then the rest: the files go.
    k.ok(&["delete", "note", "hello"]);
    assert!(!file.exists());
    k.ok(&["delete", "notes", "--all"]);
    eventually("the notes directory to empty", || {
        (std::fs::read_dir(dir.path().join("notes/default")).unwrap().count() == 0).then_some(())
    });
    assert!(k.ok(&["get", "notes"]).is_empty());
}
