//! JSON request bodies decoded in one pass that also finds duplicate fields
//! (`{"spec":{…},"spec":{…}}`), which `fieldValidation=Strict` refuses and `Warn` reports, as
//! kube-apiserver's strict decoder does. serde_json keeps the last duplicate silently.

use std::cell::RefCell;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Where a value sits: a field of its parent, or an item of it.
#[derive(Clone, Copy)]
enum Step<'a> {
    Root,
    Field(&'a str, &'a Step<'a>),
    Item(usize, &'a Step<'a>),
}

impl Step<'_> {
    fn path(&self) -> String {
        match self {
            Step::Root => String::new(),
            Step::Field(name, parent) => match parent.path() {
                p if p.is_empty() => (*name).to_string(),
                p => format!("{p}.{name}"),
            },
            Step::Item(i, parent) => format!("{}[{i}]", parent.path()),
        }
    }
}

struct Checked<'a> {
    at: Step<'a>,
    duplicates: &'a RefCell<Vec<String>>,
}

impl<'de> DeserializeSeed<'de> for Checked<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Checked<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Checked {
            at: Step::Item(items.len(), &self.at),
            duplicates: self.duplicates,
        })? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(Checked {
                at: Step::Field(&key, &self.at),
                duplicates: self.duplicates,
            })?;
            if out.contains_key(&key) {
                self.duplicates.borrow_mut().push(Step::Field(&key, &self.at).path());
            }
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// Decode `bytes` as JSON (serde_json's nesting limit applies); the value, as serde_json
/// would decode it (the last of duplicate fields wins), and the paths of duplicate fields.
pub fn decode(bytes: &[u8]) -> serde_json::Result<(Value, Vec<String>)> {
    let duplicates = RefCell::new(Vec::new());
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = Checked {
        at: Step::Root,
        duplicates: &duplicates,
    }
    .deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok((value, duplicates.into_inner()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_duplicates_and_decodes_as_serde_json() {
        let body = br#"{"spec":{"a":1},"spec":{"a":2,"b":[{"x":1,"x":2}]},"n":1.5,"z":null}"#;
        let (value, duplicates) = decode(body).unwrap();
        assert_eq!(value, serde_json::from_slice::<Value>(body).unwrap());
        assert_eq!(value["spec"], json!({"a": 2, "b": [{"x": 2}]}));
        assert_eq!(duplicates, ["spec.b[0].x", "spec"]);
        assert!(decode(br#"{"a":1} x"#).is_err());
        let deep = "[".repeat(1000) + &"]".repeat(1000);
        assert!(decode(deep.as_bytes()).is_err(), "nesting is bounded");
    }
}
