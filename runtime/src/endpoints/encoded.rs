//! Answers written from objects already encoded (see [`crate::registry::encoded`]): a GET is
//! the object's shared bytes, a list is streamed item by item in bounded chunks, so a list's
//! memory is one chunk, not the whole response.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use serde_json::{Value, json};

use super::negotiation::{JSON, TABLE};
use super::table::{self, IncludeObject};
use crate::registry::Listed;
use crate::registry::encoded::Encoded;
use crate::resource::ResourceMeta;

/// Bytes gathered into one body chunk before it is written.
const CHUNK: usize = 64 * 1024;

/// A JSON answer of already-encoded bytes.
pub(super) fn object(bytes: Bytes) -> Response {
    with_type((StatusCode::OK, bytes).into_response(), JSON)
}

/// A `<Kind>List` whose items are written as they are taken, in chunks of about [`CHUNK`].
pub(super) fn list(meta: &ResourceMeta, listed: Listed<Arc<Encoded>>) -> Response {
    let head = json!({"apiVersion": meta.api_version(), "kind": meta.list_kind(), "metadata": listed.metadata});
    let items = listed.items.into_iter().map(|item| item.json.clone());
    with_type(streamed(&head, "items", items), JSON)
}

/// A `meta.k8s.io/v1 Table` of the objects, each row built from parts derived once per
/// object revision, with the ages of now.
pub(super) fn table(meta: &ResourceMeta, listed: Listed<Arc<Encoded>>, include: IncludeObject) -> Response {
    let head = json!({
        "apiVersion": "meta.k8s.io/v1", "kind": "Table", "metadata": listed.metadata,
        "columnDefinitions": table::column_definitions(meta),
    });
    let (meta, now) = (*meta, jiff::Timestamp::now());
    let rows = listed
        .items
        .into_iter()
        .map(move |item| table::encoded_row(&meta, &item, include, now));
    with_type(streamed(&head, "rows", rows), TABLE)
}

/// The JSON object `head` with one more field, an array of `items` written as they are taken.
fn streamed(head: &Value, field: &str, items: impl Iterator<Item = Bytes> + Send + 'static) -> Response {
    let head = serde_json::to_vec(head).expect("JSON values serialize");
    // `{...}` becomes `{...,"<field>":[`.
    let mut first = BytesMut::from(&head[..head.len() - 1]);
    first.extend_from_slice(format!(",\"{field}\":[").as_bytes());
    let chunks = Chunks {
        buffer: first,
        items: Box::new(items),
        started: false,
        done: false,
    };
    Body::from_stream(futures::stream::iter(chunks)).into_response()
}

fn with_type(mut response: Response, media: &'static str) -> Response {
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    response
}

/// The list body's chunks, built only as the connection asks for them.
struct Chunks {
    buffer: BytesMut,
    items: Box<dyn Iterator<Item = Bytes> + Send>,
    started: bool,
    done: bool,
}

impl Iterator for Chunks {
    type Item = Result<Bytes, Infallible>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        while self.buffer.len() < CHUNK {
            let Some(item) = self.items.next() else {
                self.buffer.extend_from_slice(b"]}");
                self.done = true;
                break;
            };
            if std::mem::replace(&mut self.started, true) {
                self.buffer.extend_from_slice(b",");
            }
            self.buffer.extend_from_slice(&item);
        }
        Some(Ok(self.buffer.split().freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Derived;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn lists_stream_as_one_valid_document() {
        for count in [0usize, 1, 2, 500] {
            let items: Vec<Arc<Encoded>> = (0..count)
                .map(|i| {
                    let json = format!(
                        "{{\"metadata\":{{\"name\":\"o{i}\"}},\"data\":\"{}\"}}",
                        "x".repeat(300)
                    );
                    Arc::new(Encoded {
                        json: json.into(),
                        derived: Derived::default(),
                    })
                })
                .collect();
            let listed = Listed {
                items,
                metadata: json!({"resourceVersion": "9"}),
                revision: 9,
            };
            let body = list(&crate::resource::TEST_META, listed)
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes();
            let value: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(value["metadata"]["resourceVersion"], "9");
            assert_eq!(
                (&value["apiVersion"], &value["kind"]),
                (&json!("g/v1"), &json!("KList"))
            );
            let names: Vec<&str> = value["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap())
                .collect();
            assert_eq!(names, (0..count).map(|i| format!("o{i}")).collect::<Vec<_>>());
        }
    }
}
