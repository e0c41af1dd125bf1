//! The embedded store's file over a long life. Damaged: an empty file, a truncated one, zeroed
//! pages and flipped bytes each give a clear error at open or a readable store, never a panic
//! and never a store that silently starts empty. (The server-level way out, deleting a damaged
//! object, is in `examples/widget/server/tests/boundary.rs`.) Written for long: the file and
//! the event history stay bounded.

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

/// Set byte `offset` of every occurrence of `pattern` in the file at `path` to `to`.
fn flip_every(path: &Path, pattern: &[u8], offset: usize, to: u8) {
    let mut bytes = std::fs::read(path).unwrap();
    let found: Vec<usize> = bytes
        .windows(pattern.len())
        .enumerate()
        .filter(|(_, w)| *w == pattern)
        .map(|(at, _)| at)
        .collect();
    assert!(!found.is_empty(), "the record is in the file");
    for at in found {
        bytes[at + offset] = to;
    }
    std::fs::write(path, &bytes).unwrap();
}

/// A change that leaves valid JSON (another name) is caught by the record's checksum: the
/// record is unreadable, never served as some other object.
#[tokio::test]
async fn damage_that_leaves_valid_json_is_caught_by_the_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.redb");
    filled(&path, 3).await;
    flip_every(&path, br#""name":"o1""#, 9, b'7');
    let engine = open_is_safe(&path, "valid JSON").expect("one damaged value does not stop the store");
    let o1 = engine.get("/r/g/ks/ns/o1").await.unwrap().unwrap();
    assert!(
        o1.value.is_empty(),
        "served as damaged: {:?}",
        String::from_utf8_lossy(&o1.value)
    );
    let o2 = engine.get("/r/g/ks/ns/o2").await.unwrap().unwrap();
    assert!(serde_json::from_slice::<serde_json::Value>(&o2.value).is_ok());
}

/// A file written before records had checksums opens with every record, and is given them:
/// damage after that is caught.
#[tokio::test]
async fn a_file_without_checksums_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.redb");
    {
        // The earlier format: create and mod revision, then the value; no format mark.
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut kv = txn.open_table(redb::TableDefinition::<&str, &[u8]>::new("kv")).unwrap();
            for (i, name) in ["a1", "a2"].iter().enumerate() {
                let mut record = Vec::new();
                record.extend_from_slice(&(i as u64 + 1).to_le_bytes());
                record.extend_from_slice(&(i as u64 + 1).to_le_bytes());
                record.extend_from_slice(format!(r#"{{"metadata":{{"name":"{name}"}}}}"#).as_bytes());
                kv.insert(format!("/r/g/ks/ns/{name}").as_str(), record.as_slice())
                    .unwrap();
            }
            let mut meta = txn.open_table(redb::TableDefinition::<&str, u64>::new("meta")).unwrap();
            meta.insert("revision", 2).unwrap();
        }
        txn.commit().unwrap();
    }
    let engine = Engine::open(&path).unwrap();
    let a2 = engine.get("/r/g/ks/ns/a2").await.unwrap().unwrap();
    assert_eq!((a2.create_revision, a2.mod_revision), (2, 2));
    assert_eq!(&a2.value[..], br#"{"metadata":{"name":"a2"}}"#);
    drop(engine);
    flip_every(&path, br#""name":"a2""#, 9, b'7');
    let engine = Engine::open(&path).unwrap();
    assert!(engine.get("/r/g/ks/ns/a2").await.unwrap().unwrap().value.is_empty());
    assert!(!engine.get("/r/g/ks/ns/a1").await.unwrap().unwrap().value.is_empty());
}

#[tokio::test]
async fn a_flipped_byte_in_one_record_leaves_the_others_readable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.redb");
    filled(&path, 3).await;
    // redb keeps older copies of a page until it reuses them: damage every copy of the record.
    flip_every(&path, br#""name":"o1""#, 0, 0x01);
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

/// The file's size after each of 40 rounds on 100 keys of 2 KiB: each round updates every key,
/// then deletes the 20 oldest and creates 20 new ones, as controllers churn through objects.
async fn file_sizes(path: &Path) -> Vec<u64> {
    let engine = Engine::open(path).unwrap();
    let value = vec![b'x'; 2048];
    let mut held = std::collections::VecDeque::<apiary_runtime::storage::KeyValue>::new();
    let mut created = 0;
    let mut sizes = Vec::new();
    for _ in 0..40 {
        for kv in &mut held {
            *kv = engine.update(&kv.key, value.clone(), kv.mod_revision).await.unwrap();
        }
        while held.len() > 80 {
            let oldest = held.pop_front().unwrap();
            engine.delete(&oldest.key, oldest.mod_revision).await.unwrap();
        }
        while held.len() < 100 {
            let key = format!("/r/g/ks/ns/o{created}");
            held.push_back(engine.create(&key, value.clone()).await.unwrap());
            created += 1;
        }
        sizes.push(std::fs::metadata(path).unwrap().len());
    }
    sizes
}

/// The file holds the newest record of each key and no history (the engine keeps its event
/// history in memory, 10,000 events at most): under a steady stream of updates, deletes and
/// creates its size levels off once freed pages are reused.
#[tokio::test]
async fn the_file_levels_off_under_steady_writes() {
    let dir = tempfile::tempdir().unwrap();
    let sizes = file_sizes(&dir.path().join("apiary.redb")).await;
    let kib: Vec<u64> = sizes.iter().map(|s| s / 1024).collect();
    assert!(
        sizes[39] - sizes[19] <= sizes[19] / 10,
        "the file grows on: {kib:?} KiB"
    );
    if std::env::var_os("APIARY_FIGURES").is_some() {
        eprintln!("{kib:?} KiB");
    }
}
