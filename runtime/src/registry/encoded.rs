//! Objects as clients receive them, encoded once per stored revision: the stored JSON with its
//! `resourceVersion` spliced into `metadata`, shared by every GET and list that reads that
//! revision (as kube-apiserver's `cachingObject` shares one serialization).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::de::IgnoredAny;
use serde_json::{Value, json};

use super::object::metadata_mut;
use crate::storage::{Derived, KeyValue, Revision};

/// Bytes of encoded objects one resource keeps; past it the cache starts over.
pub const ENCODED_CACHE_BYTES: usize = 256 << 20;

/// One object revision as clients receive it, with a slot for what readers derive from it
/// (a Table row's parts), so that too is worked out once per revision.
#[derive(Debug)]
pub struct Encoded {
    /// The JSON.
    pub json: Bytes,
    /// What a reader derived from it.
    pub derived: Derived,
}

/// One resource's encoded objects, by key, each for one revision.
#[derive(Default)]
pub struct EncodedCache {
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    by_key: HashMap<String, (Revision, Arc<Encoded>)>,
    bytes: usize,
}

impl EncodedCache {
    /// `kv` as clients receive it (`encode`d on a miss); `None` when the stored bytes are not
    /// a JSON object.
    pub fn get(&self, kv: &KeyValue, encode: impl FnOnce(&KeyValue) -> Option<Vec<u8>>) -> Option<Arc<Encoded>> {
        let entries = self.lock();
        if let Some((_, hit)) = entries.by_key.get(&kv.key).filter(|(rv, _)| *rv == kv.mod_revision) {
            return Some(hit.clone());
        }
        drop(entries);
        let encoded = Arc::new(Encoded {
            json: Bytes::from(encode(kv)?),
            derived: Derived::default(),
        });
        let size = encoded.json.len();
        let mut entries = self.lock();
        if entries.bytes + size > ENCODED_CACHE_BYTES {
            // Bounded by starting over: cheap, and the next reads fill it again.
            *entries = Entries::default();
        }
        entries.bytes += size;
        if let Some((_, old)) = entries
            .by_key
            .insert(kv.key.clone(), (kv.mod_revision, encoded.clone()))
        {
            entries.bytes -= old.json.len();
        }
        Some(encoded)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // Every update leaves the map consistent; a panic elsewhere cannot corrupt it.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The stored JSON of an object with `resourceVersion` set to `revision`; `None` when the bytes
/// are not a JSON object. The bytes are validated in full, so damage never reaches a client.
pub fn encode(stored: &[u8], revision: Revision) -> Option<Vec<u8>> {
    // serde_json checks a string's UTF-8 only where it keeps the string; skipped (IgnoredAny),
    // bytes that are not UTF-8 would reach clients, whose JSON parsers then fail on the body.
    let stored = std::str::from_utf8(stored).ok()?;
    serde_json::from_str::<IgnoredAny>(stored).ok()?;
    let stored = stored.as_bytes();
    if let Some(spliced) = splice(stored, revision) {
        return Some(spliced);
    }
    // Not in the shape we write (no metadata, or one that names a resourceVersion): decode.
    let mut object = match serde_json::from_slice::<Value>(stored).ok()? {
        object @ Value::Object(_) => object,
        _ => return None,
    };
    metadata_mut(&mut object).insert("resourceVersion".into(), json!(revision.to_string()));
    serde_json::to_vec(&object).ok()
}

/// Insert `"resourceVersion":"<revision>"` first in the top-level `metadata` object of valid
/// JSON, if there is one without a resourceVersion.
pub(crate) fn splice(json: &[u8], revision: Revision) -> Option<Vec<u8>> {
    let top = skip_ws(json, 0);
    (json.get(top) == Some(&b'{')).then_some(())?;
    let i = value_of(json, top, b"metadata")?;
    (json.get(i) == Some(&b'{') && value_of(json, i, b"resourceVersion").is_none()).then_some(())?;
    let empty = json.get(skip_ws(json, i + 1)) == Some(&b'}');
    let field = format!("\"resourceVersion\":\"{revision}\"{}", if empty { "" } else { "," });
    let mut out = Vec::with_capacity(json.len() + field.len());
    out.extend_from_slice(&json[..=i]);
    out.extend_from_slice(field.as_bytes());
    out.extend_from_slice(&json[i + 1..]);
    Some(out)
}

/// Where the value of key `wanted` (unescaped) starts in the (valid) object starting at `i`.
fn value_of(json: &[u8], mut i: usize, wanted: &[u8]) -> Option<usize> {
    i += 1;
    loop {
        i = skip_ws(json, i);
        if json.get(i) != Some(&b'"') {
            return None;
        }
        let end = skip_string(json, i);
        let value = skip_ws(json, skip_ws(json, end) + 1); // past ':'
        if &json[i + 1..end - 1] == wanted {
            return Some(value);
        }
        i = skip_ws(json, skip_value(json, value));
        if json.get(i) != Some(&b',') {
            return None;
        }
        i += 1;
    }
}

fn skip_ws(json: &[u8], mut i: usize) -> usize {
    while json.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

/// Past the string starting at `i` (its opening quote).
fn skip_string(json: &[u8], mut i: usize) -> usize {
    i += 1;
    while let Some(at) = json.get(i..).and_then(|rest| memchr::memchr2(b'"', b'\\', rest)) {
        i += at;
        if json[i] == b'"' {
            return i + 1;
        }
        i += 2;
    }
    json.len()
}

/// Past the (valid) JSON value starting at `i`.
fn skip_value(json: &[u8], mut i: usize) -> usize {
    match json.get(i) {
        Some(b'"') => skip_string(json, i),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            while let Some(&c) = json.get(i) {
                match c {
                    b'"' => {
                        i = skip_string(json, i);
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return i + 1;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            i
        }
        _ => {
            while json
                .get(i)
                .is_some_and(|c| !matches!(c, b',' | b'}' | b']') && !c.is_ascii_whitespace())
            {
                i += 1;
            }
            i
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes that are not UTF-8 inside a string are damage, not JSON: never sent to a client.
    #[test]
    fn invalid_utf8_in_a_string_is_not_encoded() {
        let stored = b"{\"metadata\":{\"name\":\"a\"},\"spec\":{\"image\":\"ngi\xffnx\"}}";
        assert_eq!(encode(stored, 1), None);
        let stored = b"{\"metadata\":{\"name\":\"a\"},\"s\xff\":1}";
        assert_eq!(encode(stored, 1), None);
    }

    fn decoded(stored: &str, rv: Revision) -> Value {
        serde_json::from_slice(&encode(stored.as_bytes(), rv).expect("encodes")).expect("valid JSON")
    }

    #[test]
    fn splices_the_resource_version_into_metadata() {
        let stored = r#"{"apiVersion":"a/v1","data":{"x":"}\"{[","y":[1,{"z":null}]},"kind":"K","metadata":{"name":"n","labels":{"a":"b"}},"spec":{"n":-1.5e3}}"#;
        let mut want: Value = serde_json::from_str(stored).unwrap();
        want["metadata"]["resourceVersion"] = json!("42");
        assert_eq!(decoded(stored, 42), want);
        assert!(splice(stored.as_bytes(), 42).is_some(), "the fast path applies");
        assert_eq!(
            decoded(r#"{"metadata":{}}"#, 7),
            json!({"metadata": {"resourceVersion": "7"}})
        );
        assert_eq!(
            decoded(" {\n \"kind\" : \"K\" ,\n \"metadata\" : { \"name\" : \"n\" } } ", 3),
            json!({"kind": "K", "metadata": {"name": "n", "resourceVersion": "3"}})
        );
    }

    #[test]
    fn falls_back_to_decoding_for_other_shapes() {
        // A stored resourceVersion is replaced, never duplicated; no metadata gets one.
        let stored = r#"{"metadata":{"name":"n","resourceVersion":"1"}}"#;
        assert!(splice(stored.as_bytes(), 9).is_none());
        assert_eq!(
            decoded(stored, 9),
            json!({"metadata": {"name": "n", "resourceVersion": "9"}})
        );
        assert_eq!(
            decoded(r#"{"kind":"K"}"#, 2),
            json!({"kind": "K", "metadata": {"resourceVersion": "2"}})
        );
        assert_eq!(
            decoded(r#"{"metad\u0061ta":{"name":"n"}}"#, 4),
            json!({"metadata": {"name": "n", "resourceVersion": "4"}})
        );
    }

    #[test]
    fn refuses_damage() {
        for stored in [
            r#"{"metadata":{"name":"n"}"#,
            "[1]",
            "",
            r#"{"metadata":{}} x"#,
            "\u{0}\u{1}",
        ] {
            assert_eq!(encode(stored.as_bytes(), 1), None, "{stored:?}");
        }
    }

    #[test]
    fn the_cache_serves_each_revision_once_and_stays_bounded() {
        let cache = EncodedCache::default();
        let kv = |rv, value: &str| KeyValue {
            key: "/k".into(),
            value: value.as_bytes().to_vec().into(),
            create_revision: 1,
            mod_revision: rv,
        };
        let get = |kv: &KeyValue| cache.get(kv, |kv| encode(&kv.value, kv.mod_revision));
        let first = get(&kv(1, r#"{"metadata":{}}"#)).unwrap();
        // Same revision: the same shared encoding, even if the stored bytes were read again.
        assert!(Arc::ptr_eq(&get(&kv(1, r#"{"metadata":{}}"#)).unwrap(), &first));
        let second = get(&kv(2, r#"{"metadata":{"name":"b"}}"#)).unwrap();
        assert_eq!(&second.json[..], br#"{"metadata":{"resourceVersion":"2","name":"b"}}"#);
        assert_eq!(cache.lock().bytes, second.json.len());
        assert!(get(&kv(3, "{")).is_none());
    }
}
