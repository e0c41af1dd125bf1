//! The embedded store's file, damaged: an empty file, a truncated one, zeroed pages and flipped
//! bytes each give a clear error at open or a readable store, never a panic and never a store
//! that silently starts empty. (The server-level way out, deleting a damaged object, is in
//! `examples/widget/server/tests/boundary.rs`.)

use std::path::Path;

use apiary_runtime::storage::{Engine, Storage};

/// A store file with `n` records, closed cleanly.
async fn filled(path: &Path, n: usize) {
    let engine = Engine::open(path).unwrap();
    for i in 0..n {
        let value = format!(r#"{{"metadata":{{"name":"o{i}"}},"pad":"{}"}}"#, "x".repeat(200));
        engine
            .create(&format!("/r/g/ks/ns/o{i}"), value.into_bytes())
            .await
            .unwrap();
    }
}

/// `open` of `path` neither panics nor pretends the store is empty: an error naming the file,
/// or a store that still has its records.
fn open_is_safe(path: &Path, what: &str) -> Option<Engine> {
    let opened = std::panic::catch_unwind(|| Engine::open(path));
    let opened = opened.unwrap_or_else(|_| panic!("{what}: open panicked"));
    match opened {
        Err(e) => {
            let message = e.to_string();
            assert!(message.contains(&path.display().to_string()), "{what}: {message}");
            assert!(message.contains("damaged"), "{what}: {message}");
            None
        }
        Ok(engine) => Some(engine),
    }
}

#[tokio::test]
async fn an_empty_file_is_not_an_empty_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.redb");
    std::fs::write(&path, b"").unwrap();
    let error = Engine::open(&path).err().expect("an empty file is refused");
    assert!(error.to_string().contains("0 bytes"), "{error}");
}

#[tokio::test]
async fn truncated_and_zeroed_files_are_errors_not_panics() {
    for damage in ["truncate-half", "truncate-tail", "zero-middle", "zero-start"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.redb");
        filled(&path, 200).await;
        let mut bytes = std::fs::read(&path).unwrap();
        let len = bytes.len();
        match damage {
            "truncate-half" => bytes.truncate(len / 2),
            "truncate-tail" => bytes.truncate(len - 100),
            "zero-middle" => bytes[len / 3..len / 3 + 8192].fill(0),
            _ => bytes[..4096.min(len)].fill(0),
        }
        std::fs::write(&path, &bytes).unwrap();
        if let Some(engine) = open_is_safe(&path, damage) {
            // Opened: what it serves must be the records, not an empty store.
            let count = engine
                .range(apiary_runtime::storage::RangeRequest {
                    prefix: "/r/".into(),
                    start_after: None,
                    limit: 0,
                    revision: None,
                })
                .await
                .map(|r| r.kvs.len());
            assert!(
                count.is_err() || count.as_ref().is_ok_and(|c| *c > 0),
                "{damage}: {count:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_flipped_byte_in_one_record_leaves_the_others_readable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.redb");
    filled(&path, 3).await;
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(br#""name":"o1""#.len())
        .position(|w| w == br#""name":"o1""#)
        .expect("the record is in the file");
    bytes[at] = 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let engine = open_is_safe(&path, "flipped byte").expect("one damaged value does not stop the store");
    let o0 = engine.get("/r/g/ks/ns/o0").await.unwrap().unwrap();
    assert!(serde_json::from_slice::<serde_json::Value>(&o0.value).is_ok());
    let o1 = engine.get("/r/g/ks/ns/o1").await.unwrap().unwrap();
    assert!(
        serde_json::from_slice::<serde_json::Value>(&o1.value).is_err(),
        "the damage is visible"
    );
    // The way out: delete the damaged record at its revision.
    engine.delete("/r/g/ks/ns/o1", o1.mod_revision).await.unwrap();
    assert!(engine.get("/r/g/ks/ns/o1").await.unwrap().is_none());
}
