//! JSON values as CEL sees them: integers as `int` (`uint` past i64), and where a structural
//! schema shapes the value (the schema's rules), property names escaped as kube-apiserver
//! escapes them (`__dash__`, ...; maps' keys are data and stay as they are) and strings of the
//! `date-time`, `duration` and `byte` formats as timestamps, durations and bytes.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use kube_cel::cel::Value as Cel;
use kube_cel::cel::objects::{Key, Map};
use serde_json::Value;

/// A string format CEL converts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Any other string.
    #[default]
    None,
    /// `date-time`: a timestamp.
    DateTime,
    /// `duration`: a duration.
    Duration,
    /// `byte`: base64, bytes once decoded.
    Byte,
}

impl Format {
    /// The format a schema's `format` names.
    pub fn named(format: Option<&str>) -> Format {
        match format {
            Some("date-time") => Format::DateTime,
            Some("duration") => Format::Duration,
            Some("byte") => Format::Byte,
            _ => Format::None,
        }
    }
}

/// What a schema node says about converting the value at it.
pub trait Shape {
    /// The schema of property `name` (a declared property, or the map's values).
    fn property(&self, name: &str) -> Option<&Self>;
    /// The schema of a list's items.
    fn items(&self) -> Option<&Self>;
    /// The string format.
    fn format(&self) -> Format;
    /// Whether the object is a map (its keys are data, not field names).
    fn is_map(&self) -> bool;
}

/// No schema: values as they are.
enum Unshaped {}

impl Shape for Unshaped {
    fn property(&self, _: &str) -> Option<&Self> {
        match *self {}
    }
    fn items(&self) -> Option<&Self> {
        match *self {}
    }
    fn format(&self) -> Format {
        match *self {}
    }
    fn is_map(&self) -> bool {
        match *self {}
    }
}

/// A JSON value as CEL sees it with no schema: property names as they are (maps such as
/// labels are read with `['app.kubernetes.io/name']`).
pub fn to_cel(value: &Value) -> Cel {
    to_cel_shaped::<Unshaped>(value, None)
}

/// A JSON value as CEL sees it at a schema node (`None` below the schema's reach).
pub fn to_cel_shaped<S: Shape>(value: &Value, shape: Option<&S>) -> Cel {
    match value {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Cel::Int(i),
            (None, Some(u)) => Cel::UInt(u),
            _ => Cel::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => string(s, shape.map_or(Format::None, Shape::format)),
        Value::Array(items) => {
            let items_shape = shape.and_then(Shape::items);
            Cel::List(Arc::new(items.iter().map(|v| to_cel_shaped(v, items_shape)).collect()))
        }
        Value::Object(fields) => {
            let mut map = HashMap::with_capacity(fields.len());
            for (name, v) in fields {
                let key = match shape {
                    Some(s) if !s.is_map() => match escape(name) {
                        Some(key) => key,
                        // kube-apiserver leaves a property CEL cannot name out of the object.
                        None => continue,
                    },
                    _ => name.clone(),
                };
                let child = shape.and_then(|s| s.property(name));
                map.insert(Key::String(Arc::new(key)), to_cel_shaped(v, child));
            }
            Cel::Map(Map { map: Arc::new(map) })
        }
    }
}

/// A string of `format`; a value that does not parse stays a string.
fn string(s: &str, format: Format) -> Cel {
    let converted = match format {
        Format::None => None,
        Format::DateTime => chrono::DateTime::parse_from_rfc3339(s).ok().map(Cel::Timestamp),
        Format::Duration => s
            .parse::<jiff::SignedDuration>()
            .ok()
            .and_then(|d| i64::try_from(d.as_nanos()).ok())
            .map(|nanos| Cel::Duration(chrono::Duration::nanoseconds(nanos))),
        Format::Byte => base64::engine::general_purpose::STANDARD
            .decode(s)
            .ok()
            .map(|bytes| Cel::Bytes(Arc::new(bytes))),
    };
    converted.unwrap_or_else(|| Cel::String(Arc::new(s.to_string())))
}

/// CEL's reserved words, which a property name may be only escaped.
const RESERVED: &[&str] = &[
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

/// A property name as CEL names it (kube-apiserver's `cel.Escape`): reserved words as
/// `__word__`; `__`, `.`, `-` and `/` spelt out; None for a name CEL cannot hold.
pub fn escape(name: &str) -> Option<String> {
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    if RESERVED.contains(&name) {
        return Some(format!("__{name}__"));
    }
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '_' if chars.peek() == Some(&'_') => {
                chars.next();
                out.push_str("__underscores__");
            }
            '.' => out.push_str("__dot__"),
            '-' => out.push_str("__dash__"),
            '/' => out.push_str("__slash__"),
            c if c.is_ascii_alphanumeric() || c == '_' => out.push(c),
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_as_kube_apiserver_escapes_them() {
        assert_eq!(escape("replicas").as_deref(), Some("replicas"));
        assert_eq!(escape("namespace").as_deref(), Some("__namespace__"));
        assert_eq!(escape("a-b.c/d").as_deref(), Some("a__dash__b__dot__c__slash__d"));
        assert_eq!(escape("x__y").as_deref(), Some("x__underscores__y"));
        assert_eq!(escape("_x").as_deref(), Some("_x"));
        assert_eq!(escape("1x"), None);
        assert_eq!(escape("a b"), None);
        assert_eq!(escape(""), None);
    }
}
