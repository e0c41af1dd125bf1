//! Answers written from objects already encoded (see [`crate::registry::encoded`]): a GET is
//! the object's shared bytes, a list is streamed item by item in bounded chunks, so a list's
//! memory is one chunk, not the whole response.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use serde_json::json;

use super::negotiation::JSON;
use crate::registry::Listed;

/// Bytes gathered into one body chunk before it is written.
const CHUNK: usize = 64 * 1024;

/// A JSON answer of already-encoded bytes.
pub(super) fn object(bytes: Bytes) -> Response {
    with_json_type((StatusCode::OK, bytes).into_response())
}

/// A `<Kind>List` whose items are written as they are taken, in chunks of about [`CHUNK`].
pub(super) fn list(api_version: &str, kind: &str, listed: Listed<Bytes>) -> Response {
    let head = json!({"apiVersion": api_version, "kind": format!("{kind}List"), "metadata": listed.metadata});
    let head = serde_json::to_vec(&head).expect("JSON values serialize");
    // `{...,"metadata":{...}}` becomes `{...,"metadata":{...},"items":[`.
    let mut first = BytesMut::from(&head[..head.len() - 1]);
    first.extend_from_slice(b",\"items\":[");
    let chunks = Chunks {
        buffer: first,
        items: listed.items.into_iter(),
        started: false,
        done: false,
    };
    with_json_type(Body::from_stream(futures::stream::iter(chunks)).into_response())
}

fn with_json_type(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    response
}

/// The list body's chunks, built only as the connection asks for them.
struct Chunks {
    buffer: BytesMut,
    items: std::vec::IntoIter<Bytes>,
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
    use http_body_util::BodyExt;
    use serde_json::Value;

    #[tokio::test]
    async fn lists_stream_as_one_valid_document() {
        for count in [0usize, 1, 2, 500] {
            let items: Vec<Bytes> = (0..count)
                .map(|i| {
                    Bytes::from(format!(
                        "{{\"metadata\":{{\"name\":\"o{i}\"}},\"data\":\"{}\"}}",
                        "x".repeat(300)
                    ))
                })
                .collect();
            let listed = Listed {
                items,
                metadata: json!({"resourceVersion": "9"}),
                revision: 9,
            };
            let body = list("g/v1", "Widget", listed)
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes();
            let value: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(value["metadata"]["resourceVersion"], "9");
            assert_eq!(value["kind"], "WidgetList");
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
