//! Watch responses: a chunked stream of `WatchEvent`s with bookmarks, initial events and a
//! bounded length; every open watch ends when the server shuts down.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use futures::StreamExt;
use serde_json::{Value, json};

use super::handlers::Reply;
use super::negotiation::{JSON, Output, TABLE, partial_object_metadata};
use super::params::flag;
use super::table::{self, IncludeObject};
use crate::registry::object::revision_of;
use crate::registry::rest::Rest;
use crate::registry::{ListOptions, WatchEvent};
use crate::resource::ResourceMeta;
use crate::status::{ApiError, ApiResult};

/// Longest watch, whatever `timeoutSeconds` asks.
pub const MAX_WATCH: Duration = Duration::from_secs(3600);
/// Default watch length when `timeoutSeconds` is absent.
const DEFAULT_WATCH: Duration = Duration::from_secs(1800);
/// How often a watch that allows bookmarks gets one, unless the server says.
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

/// What the server tells watches: when it shuts down (open watches end so connections can
/// drain), and how often to send bookmarks.
#[derive(Clone, Debug)]
pub struct Watching {
    /// Becomes true at shutdown.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// How often a watch that allows bookmarks gets one.
    pub bookmark_every: Duration,
}

impl Watching {
    async fn shutdown(mut self) {
        let _ = self.shutdown.wait_for(|down| *down).await;
    }
}

pub(super) async fn watch(
    store: &Arc<dyn Rest>,
    options: ListOptions,
    q: &HashMap<String, String>,
    output: Output,
    watching: Option<Watching>,
    metrics: Option<Arc<crate::filters::metrics::Metrics>>,
) -> ApiResult<Reply> {
    let meta = *store.meta();
    let bookmarks = flag(q, "allowWatchBookmarks");
    let send_initial = q.get("sendInitialEvents").map(|_| flag(q, "sendInitialEvents"));
    // `check_query` made sure it is a number; zero or less means the default, as upstream.
    let timeout = match q.get("timeoutSeconds").and_then(|t| t.parse::<i64>().ok()) {
        Some(t) if t > 0 => Duration::from_secs(t as u64).min(MAX_WATCH),
        _ => DEFAULT_WATCH,
    };
    let include = IncludeObject::parse(q.get("includeObject").map(String::as_str)).map_err(ApiError::bad_request)?;
    let events = store.clone().watch(options, send_initial, bookmarks).await?;
    // The store's first event is the watch's starting revision.
    let mut last_rv = 0;
    let every = watching.as_ref().map_or(BOOKMARK_EVERY, |w| w.bookmark_every);
    let ticks = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval_at(
        tokio::time::Instant::now() + every,
        every,
    ))
    .filter(move |_| futures::future::ready(bookmarks))
    .map(|_| None);
    let merged = futures::stream::select(events.map(Some), ticks);
    let deadline = async move {
        match watching {
            Some(w) => {
                tokio::select! {
                    () = tokio::time::sleep(timeout) => {},
                    () = w.shutdown() => {},
                }
            }
            None => tokio::time::sleep(timeout).await,
        }
    };
    let mut first_table = true;
    // Registered while the response body lives.
    let registered = metrics.as_ref().map(|m| m.watcher(&meta));
    let sent = metrics.as_ref().map(|m| m.watch_events(&meta));
    let lines = merged.take_until(deadline).filter_map(move |event| {
        let _ = &registered;
        if let (Some(sent), Some(WatchEvent::Object(..) | WatchEvent::Shared(..))) = (&sent, &event) {
            sent.inc();
        }
        let line = match event {
            Some(WatchEvent::Progress(rv)) => {
                last_rv = last_rv.max(rv);
                return futures::future::ready(None);
            }
            Some(WatchEvent::Shared(kind, shared)) if output == Output::Json => {
                last_rv = last_rv.max(shared.revision);
                // The change's one framed line: no serialization or copy per watcher.
                return futures::future::ready(Some((false, shared.line(kind))));
            }
            Some(WatchEvent::Shared(kind, shared)) => {
                last_rv = last_rv.max(shared.revision);
                let t = transcode(&meta, &shared.value, output, include, last_rv, &mut first_table);
                json!({"type": kind, "object": t.unwrap_or_else(|| shared.value.clone())})
            }
            Some(WatchEvent::Object(kind, object)) => {
                last_rv = last_rv.max(revision_of(&object));
                let t = transcode(&meta, &object, output, include, last_rv, &mut first_table);
                json!({"type": kind, "object": t.unwrap_or(object)})
            }
            Some(WatchEvent::Bookmark(rv, end)) => {
                last_rv = last_rv.max(rv);
                bookmark(&meta, rv, end, output)
            }
            None => bookmark(&meta, last_rv, false, output),
            Some(WatchEvent::Error(e)) => json!({"type": "ERROR", "object": e.to_status()}),
        };
        let mut bytes = serde_json::to_vec(&line).expect("events serialize");
        bytes.push(b'\n');
        futures::future::ready(Some((line["type"] == "ERROR", Bytes::from(bytes))))
    });
    // An ERROR event is the last one.
    let lines = crate::take_through(lines, |(error, _)| *error).map(|(_, bytes)| Ok::<_, Infallible>(bytes));
    let mut response = Response::new(Body::from_stream(lines));
    // Watch events are JSON lines whatever the list would have been encoded as.
    let media = match output {
        Output::Table => TABLE,
        Output::Metadata { version, .. } => Output::Metadata {
            list: true,
            version,
            yaml: false,
        }
        .media_type(),
        _ => JSON,
    };
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, private"));
    Ok(Reply::Stream(response))
}

/// The object as a watch event of `output` carries it, when that is not the object itself:
/// its metadata, or a one-row Table (with the column definitions in the first one only).
fn transcode(
    meta: &ResourceMeta,
    object: &Value,
    output: Output,
    include: IncludeObject,
    rv: u64,
    first_table: &mut bool,
) -> Option<Value> {
    match output {
        Output::Metadata { version, .. } => Some(partial_object_metadata(object, version)),
        Output::Table => {
            let list_metadata = json!({"resourceVersion": rv.to_string()});
            let t = table::table(meta, std::slice::from_ref(object), list_metadata, include, *first_table);
            *first_table = false;
            Some(t)
        }
        _ => None,
    }
}

fn bookmark(meta: &ResourceMeta, rv: u64, initial_end: bool, output: Output) -> Value {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let object = json!({"apiVersion": meta.api_version(), "kind": meta.kind, "metadata": metadata});
    let object = match output {
        Output::Metadata { version, .. } => partial_object_metadata(&object, version),
        _ => object,
    };
    json!({"type": "BOOKMARK", "object": object})
}
