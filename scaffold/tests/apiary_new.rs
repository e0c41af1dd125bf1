//! The `apiary-new` binary as a newcomer runs it: a project written into a new directory, and
//! bad names refused with a message and exit code 1, nothing written.

use std::process::Command;

fn apiary_new(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_apiary-new"))
        .args(args)
        .output()
        .expect("apiary-new runs")
}

#[test]
fn writes_a_project_and_refuses_bad_names() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("gadget");
    let path = project.to_str().unwrap();
    let written = apiary_new(&[path, "--group", "example.com", "--kind", "Gadget"]);
    assert!(written.status.success(), "{written:?}");
    let stdout = String::from_utf8_lossy(&written.stdout);
    assert!(stdout.contains("cargo run -p gadget-server"), "{stdout}");
    let api = std::fs::read_to_string(project.join("api/src/lib.rs")).unwrap();
    assert!(api.contains("pub struct GadgetSpec"), "{api}");

    let elsewhere = dir.path().join("other");
    let refused = apiary_new(&[elsewhere.to_str().unwrap(), "--group", "nodot", "--kind", "Gadget"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--group \"nodot\""));
    assert!(!elsewhere.exists(), "nothing written for a refused project");
}
