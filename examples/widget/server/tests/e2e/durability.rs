//! The embedded store keeps every acknowledged write across a clean restart and a `kill -9`.

use crate::common;

use common::{ServerProcess, WidgetServer as _, widget};

#[test]
fn embedded_store_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_in(dir.path(), &["--storage", "embedded"]);
    let k = server.kubectl("1.33");
    for i in 0..20 {
        k.ok_stdin(&["create", "-f", "-"], &widget(&format!("w{i:02}"), i % 5, ""));
    }
    k.ok(&["delete", "widget", "w07"]);
    let before = k.ok(&[
        "get",
        "widgets",
        "-o",
        "custom-columns=NAME:.metadata.name,RV:.metadata.resourceVersion,UID:.metadata.uid",
    ]);
    server.kill();

    let server = ServerProcess::start_in(dir.path(), &["--storage", "embedded"]);
    let k = server.kubectl("1.33");
    let after = k.ok(&[
        "get",
        "widgets",
        "-o",
        "custom-columns=NAME:.metadata.name,RV:.metadata.resourceVersion,UID:.metadata.uid",
    ]);
    // The status loop may have written a newer status since; names and uids must all be there.
    let ids = |s: &str| {
        s.lines()
            .map(|l| {
                let f: Vec<_> = l.split_whitespace().collect();
                format!("{} {}", f[0], f[2])
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&before), ids(&after));
    assert_eq!(after.lines().count(), 20, "19 widgets and the header");
    assert!(!after.contains("w07"));

    // New writes get revisions after every old one.
    let max_old = after
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap())
        .max()
        .unwrap();
    k.ok_stdin(&["create", "-f", "-"], &widget("fresh", 1, ""));
    let rv: u64 = k
        .ok(&["get", "widget", "fresh", "-o", "jsonpath={.metadata.resourceVersion}"])
        .parse()
        .unwrap();
    assert!(rv > max_old, "{rv} > {max_old}");
}
