//! `/openapi/v2` as protobuf: the gnostic `openapi.v2.Document` message that kubectl 1.27 and
//! 1.28 decode for apply, diff and explain. Encoded straight from the JSON document with the
//! message's field numbers (gnostic's OpenAPIv2.proto), so no generated code is needed.

use serde_json::{Map, Value};

/// A minimal protobuf writer: varints, length-delimited fields, doubles.
#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn key(&mut self, field: u32, wire: u8) {
        self.varint(((field as u64) << 3) | wire as u64);
    }
    fn string(&mut self, field: u32, s: &str) {
        if !s.is_empty() {
            self.bytes(field, s.as_bytes());
        }
    }
    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    fn message(&mut self, field: u32, build: impl FnOnce(&mut Writer)) {
        let mut inner = Writer::default();
        build(&mut inner);
        self.bytes(field, &inner.0);
    }
    fn boolean(&mut self, field: u32, b: bool) {
        if b {
            self.key(field, 0);
            self.varint(1);
        }
    }
    fn int(&mut self, field: u32, i: u64) {
        self.key(field, 0);
        self.varint(i);
    }
    fn double(&mut self, field: u32, d: f64) {
        self.key(field, 1);
        self.0.extend_from_slice(&d.to_le_bytes());
    }
}

fn str_of<'a>(map: &'a Map<String, Value>, key: &str) -> &'a str {
    map.get(key).and_then(Value::as_str).unwrap_or("")
}

/// `Any { yaml }`: JSON is YAML.
fn any(w: &mut Writer, field: u32, value: &Value) {
    w.message(field, |a| a.string(2, &value.to_string()));
}

fn vendor_extensions(w: &mut Writer, field: u32, map: &Map<String, Value>) {
    for (k, v) in map.iter().filter(|(k, _)| k.starts_with("x-")) {
        w.message(field, |n| {
            n.string(1, k);
            any(n, 2, v);
        });
    }
}

/// Encode a Swagger 2.0 JSON document as `openapi.v2.Document`.
pub fn encode(doc: &Value) -> Vec<u8> {
    let mut w = Writer::default();
    let empty = Map::new();
    let root = doc.as_object().unwrap_or(&empty);
    w.string(1, str_of(root, "swagger"));
    if let Some(Value::Object(info)) = root.get("info") {
        w.message(2, |i| {
            i.string(1, str_of(info, "title"));
            i.string(2, str_of(info, "version"));
        });
    }
    if let Some(Value::Object(paths)) = root.get("paths") {
        w.message(8, |p| {
            for (path, item) in paths {
                p.message(2, |n| {
                    n.string(1, path);
                    n.message(2, |pi| path_item(pi, item.as_object().unwrap_or(&empty)));
                });
            }
        });
    }
    if let Some(Value::Object(defs)) = root.get("definitions") {
        w.message(9, |d| named_schemas(d, defs));
    }
    w.0
}

fn named_schemas(w: &mut Writer, map: &Map<String, Value>) {
    for (name, s) in map {
        w.message(1, |n| {
            n.string(1, name);
            n.message(2, |sw| schema(sw, s));
        });
    }
}

fn path_item(w: &mut Writer, item: &Map<String, Value>) {
    for (method, field) in [("get", 2), ("put", 3), ("post", 4), ("delete", 5), ("patch", 8)] {
        if let Some(Value::Object(op)) = item.get(method) {
            w.message(field, |o| operation(o, op));
        }
    }
    if let Some(Value::Array(params)) = item.get("parameters") {
        for p in params {
            w.message(9, |pi| parameter(pi, p));
        }
    }
}

fn strings(w: &mut Writer, field: u32, value: Option<&Value>) {
    for s in value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        w.string(field, s);
    }
}

fn operation(w: &mut Writer, op: &Map<String, Value>) {
    strings(w, 1, op.get("tags"));
    w.string(3, str_of(op, "description"));
    w.string(5, str_of(op, "operationId"));
    strings(w, 6, op.get("produces"));
    strings(w, 7, op.get("consumes"));
    if let Some(Value::Array(params)) = op.get("parameters") {
        for p in params {
            w.message(8, |pi| parameter(pi, p));
        }
    }
    if let Some(Value::Object(responses)) = op.get("responses") {
        w.message(9, |r| {
            for (code, resp) in responses {
                r.message(1, |n| {
                    n.string(1, code);
                    n.message(2, |rv| {
                        rv.message(1, |rw| {
                            rw.string(1, resp.get("description").and_then(Value::as_str).unwrap_or(""));
                            if let Some(s) = resp.get("schema") {
                                rw.message(2, |si| si.message(1, |sw| schema(sw, s)));
                            }
                        })
                    });
                });
            }
        });
    }
    strings(w, 10, op.get("schemes"));
    vendor_extensions(w, 13, op);
}

/// `ParametersItem { parameter: Parameter { body_parameter | non_body_parameter } }`.
fn parameter(w: &mut Writer, p: &Value) {
    let empty = Map::new();
    let p = p.as_object().unwrap_or(&empty);
    let required = p.get("required").and_then(Value::as_bool).unwrap_or(false);
    w.message(1, |param| match str_of(p, "in") {
        "body" => param.message(1, |b| {
            b.string(1, str_of(p, "description"));
            b.string(2, str_of(p, "name"));
            b.string(3, "body");
            b.boolean(4, required);
            if let Some(s) = p.get("schema") {
                b.message(5, |sw| schema(sw, s));
            }
        }),
        location => param.message(2, |nb| {
            // query = 3, path = 4 (header and formData are not used by this server).
            let (field, type_field, unique_field) = if location == "path" { (4, 5, 19) } else { (3, 6, 20) };
            nb.message(field, |q| {
                q.boolean(1, required);
                q.string(2, location);
                q.string(3, str_of(p, "description"));
                q.string(4, str_of(p, "name"));
                q.string(type_field, str_of(p, "type"));
                q.boolean(
                    unique_field,
                    p.get("uniqueItems").and_then(Value::as_bool).unwrap_or(false),
                );
            });
        }),
    });
}

fn schema(w: &mut Writer, s: &Value) {
    let empty = Map::new();
    let s = s.as_object().unwrap_or(&empty);
    w.string(1, str_of(s, "$ref"));
    w.string(2, str_of(s, "format"));
    w.string(3, str_of(s, "title"));
    w.string(4, str_of(s, "description"));
    if let Some(d) = s.get("default") {
        any(w, 5, d);
    }
    for (key, field) in [("multipleOf", 6), ("maximum", 7), ("minimum", 9)] {
        if let Some(n) = s.get(key).and_then(Value::as_f64) {
            w.double(field, n);
        }
    }
    w.boolean(8, s.get("exclusiveMaximum").and_then(Value::as_bool).unwrap_or(false));
    w.boolean(10, s.get("exclusiveMinimum").and_then(Value::as_bool).unwrap_or(false));
    for (key, field) in [
        ("maxLength", 11),
        ("minLength", 12),
        ("maxItems", 14),
        ("minItems", 15),
        ("maxProperties", 17),
        ("minProperties", 18),
    ] {
        if let Some(n) = s.get(key).and_then(Value::as_u64) {
            w.int(field, n);
        }
    }
    w.string(13, str_of(s, "pattern"));
    strings(w, 19, s.get("required"));
    for e in s.get("enum").and_then(Value::as_array).into_iter().flatten() {
        any(w, 20, e);
    }
    match s.get("additionalProperties") {
        Some(Value::Bool(b)) => w.message(21, |a| a.boolean(2, *b)),
        Some(sub @ Value::Object(_)) => w.message(21, |a| a.message(1, |sw| schema(sw, sub))),
        _ => {}
    }
    if let Some(Value::String(t)) = s.get("type") {
        w.message(22, |ti| ti.string(1, t));
    }
    if let Some(items) = s.get("items") {
        w.message(23, |ii| ii.message(1, |sw| schema(sw, items)));
    }
    for sub in s.get("allOf").and_then(Value::as_array).into_iter().flatten() {
        w.message(24, |sw| schema(sw, sub));
    }
    if let Some(Value::Object(props)) = s.get("properties") {
        w.message(25, |p| named_schemas(p, props));
    }
    vendor_extensions(w, 31, s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encodes_fields_with_gnostic_numbers() {
        let doc = json!({"swagger": "2.0", "info": {"title": "T", "version": "v"}});
        // swagger=1 "2.0"; info=2 { title=1 "T", version=2 "v" }
        assert_eq!(
            encode(&doc),
            vec![0x0a, 3, b'2', b'.', b'0', 0x12, 6, 0x0a, 1, b'T', 0x12, 1, b'v']
        );
        let mut w = Writer::default();
        schema(
            &mut w,
            &json!({"type": "integer", "minimum": 0.0, "x-kubernetes-list-type": "atomic"}),
        );
        let bytes = w.0;
        assert_eq!(
            &bytes[..9],
            &[0x49, 0, 0, 0, 0, 0, 0, 0, 0],
            "minimum is a double at field 9"
        );
        assert!(bytes.windows(2).any(|p| p == [0xb2, 0x01]), "type is field 22");
        assert!(
            bytes.windows(2).any(|p| p == [0xfa, 0x01]),
            "vendor extensions are field 31"
        );
    }
}
