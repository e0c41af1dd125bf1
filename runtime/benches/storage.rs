//! Storage load benchmark: create, get, list and watch through the registry (admission, JSON,
//! storage, watch cache) on each backend, next to the raw etcd client doing the same key-value
//! operations at the same concurrency. Prints a Markdown table (see BENCHMARKS.md).
//!
//! cargo bench -p apiary-runtime --bench storage            # needs Debian's etcd-server
//! APIARY_BENCH_OBJECTS=2000 APIARY_BENCH_CONCURRENCY=16 cargo bench -p apiary-runtime --bench storage

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use apiary_runtime::registry::{ListOptions, Store, TypedStrategy, WatchEvent, WriteOptions};
use apiary_runtime::storage::{self, Storage, WatchCache};
use apiary_runtime::testing::{EtcdProcess, raw_etcd as raw};
use common::{Item, Row, env, item, load};
use futures::StreamExt;
use serde_json::json;

/// Watchers that each receive every event in the watch test.
const WATCHERS: usize = 8;
/// Lists in the list test (each of every object).
const LISTS: usize = 40;

/// The watch row: every watcher's delivery latencies, over the writer's time.
async fn watch_row(
    target: &str,
    events: usize,
    started: Instant,
    receivers: Vec<tokio::task::JoinHandle<Vec<Duration>>>,
) -> Row {
    let mut latencies = Vec::new();
    for r in receivers {
        latencies.extend(r.await.unwrap());
    }
    Row {
        target: target.to_string(),
        op: format!("watch, {WATCHERS} watchers (events)"),
        ops: events * WATCHERS,
        elapsed: started.elapsed(),
        latencies,
    }
}

/// Create, get, list and watch through the registry on `storage`.
async fn registry(target: &str, storage: Arc<dyn Storage>, objects: usize, concurrency: usize) -> Vec<Row> {
    let cache = WatchCache::new(storage, storage::cache::WINDOW);
    let store = Arc::new(Store::new(Arc::new(TypedStrategy::<Item>::default()), cache, "/bench").unwrap());
    let mut rows = Vec::new();
    let s = store.clone();
    rows.push(
        load(target, "create", objects, concurrency, move |i| {
            let s = s.clone();
            async move {
                s.create(Some("default"), item(i), &WriteOptions::default())
                    .await
                    .unwrap();
            }
        })
        .await,
    );
    let s = store.clone();
    rows.push(
        load(target, "get", objects * 4, concurrency, move |i| {
            let s = s.clone();
            async move {
                s.get(Some("default"), &format!("item-{:06}", (i * 7919) % objects))
                    .await
                    .unwrap();
            }
        })
        .await,
    );
    let s = store.clone();
    rows.push(
        load(target, &format!("list of {objects}"), LISTS, concurrency, move |_| {
            let s = s.clone();
            async move {
                let listed = s.list(&ListOptions::default()).await.unwrap();
                assert_eq!(listed.items.len(), objects);
            }
        })
        .await,
    );
    // Watch: WATCHERS watchers, one writer; latency is create-acknowledged → event received.
    let start = store.list(&ListOptions::default()).await.unwrap().revision;
    let mut watchers = Vec::new();
    for _ in 0..WATCHERS {
        let options = ListOptions {
            resource_version: Some(start.to_string()),
            ..Default::default()
        };
        watchers.push(Box::pin(store.watch(options, None, false).await.unwrap()));
    }
    let events = objects / 2;
    let acked = Arc::new(std::sync::Mutex::new(vec![None::<Instant>; events]));
    let receivers: Vec<_> = watchers
        .into_iter()
        .map(|mut w| {
            let acked = acked.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while latencies.len() < events {
                    let event = w.next().await;
                    match event.as_ref().and_then(WatchEvent::object) {
                        Some(o) => {
                            let name = o["metadata"]["name"].as_str().unwrap();
                            let i: usize = name.trim_start_matches("watched-").parse().unwrap();
                            // An event may arrive before its create returns: count that as 0.
                            let at = acked.lock().unwrap()[i];
                            latencies.push(at.map_or(Duration::ZERO, |t| t.elapsed()));
                        }
                        None if matches!(event, Some(WatchEvent::Progress(_) | WatchEvent::Bookmark(..))) => {}
                        None => panic!("watch ended: {event:?}"),
                    }
                }
                latencies
            })
        })
        .collect();
    let started = Instant::now();
    for i in 0..events {
        let mut body = item(i);
        body["metadata"]["name"] = json!(format!("watched-{i}"));
        store
            .create(Some("default"), body, &WriteOptions::default())
            .await
            .unwrap();
        acked.lock().unwrap()[i] = Some(Instant::now());
    }
    rows.push(watch_row(target, events, started, receivers).await);
    rows
}

/// The same key-value operations with etcd's raw gRPC client.
async fn raw_etcd(endpoint: &str, objects: usize, concurrency: usize) -> Vec<Row> {
    use raw::{kv_client::KvClient, watch_client::WatchClient};
    let channel = raw::channel(endpoint).await;
    let value = |i: usize| serde_json::to_vec(&item(i)).unwrap();
    let target = "raw etcd gRPC";
    let mut rows = Vec::new();
    let c = KvClient::new(channel.clone());
    rows.push(
        load(target, "create", objects, concurrency, move |i| {
            let mut c = c.clone();
            async move {
                let key = format!("/raw/items/default/item-{i:06}");
                assert!(c.txn(raw::create(key, value(i))).await.unwrap().into_inner().succeeded);
            }
        })
        .await,
    );
    let c = KvClient::new(channel.clone());
    rows.push(
        load(target, "get", objects * 4, concurrency, move |i| {
            let mut c = c.clone();
            async move {
                let key = format!("/raw/items/default/item-{:06}", (i * 7919) % objects);
                let get = raw::RangeRequest {
                    key: key.into_bytes(),
                    ..Default::default()
                };
                assert_eq!(c.range(get).await.unwrap().into_inner().kvs.len(), 1);
            }
        })
        .await,
    );
    let c = KvClient::new(channel.clone());
    rows.push(
        load(target, &format!("list of {objects}"), LISTS, concurrency, move |_| {
            let mut c = c.clone();
            async move {
                let r = c.range(raw::prefix("/raw/items/")).await.unwrap().into_inner();
                assert_eq!(r.kvs.len(), objects);
            }
        })
        .await,
    );
    let events = objects / 2;
    let acked = Arc::new(std::sync::Mutex::new(vec![None::<Instant>; events]));
    let mut receivers = Vec::new();
    for _ in 0..WATCHERS {
        let requests = futures::stream::iter([raw::watch("/raw/watched/", false)]).chain(futures::stream::pending());
        let mut stream = WatchClient::new(channel.clone())
            .watch(requests)
            .await
            .unwrap()
            .into_inner();
        let acked = acked.clone();
        receivers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while latencies.len() < events {
                let response = stream.message().await.unwrap().expect("the watch goes on");
                for e in response.events {
                    let key = String::from_utf8(e.kv.unwrap().key).unwrap();
                    let i: usize = key.trim_start_matches("/raw/watched/").parse().unwrap();
                    let at = acked.lock().unwrap()[i];
                    latencies.push(at.map_or(Duration::ZERO, |t| t.elapsed()));
                }
            }
            latencies
        }));
    }
    let started = Instant::now();
    let mut c = KvClient::new(channel.clone());
    for i in 0..events {
        let put = raw::PutRequest {
            key: format!("/raw/watched/{i}").into_bytes(),
            value: value(i),
            ..Default::default()
        };
        c.put(put).await.unwrap();
        acked.lock().unwrap()[i] = Some(Instant::now());
    }
    rows.push(watch_row(target, events, started, receivers).await);
    rows
}

#[tokio::main]
async fn main() {
    // `cargo test --benches` runs this with `--bench` absent: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let objects = env("APIARY_BENCH_OBJECTS", if quick { 50 } else { 2000 });
    let concurrency = env("APIARY_BENCH_CONCURRENCY", 16);
    let dir = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    rows.extend(registry("apiary memory", storage::memory(), objects, concurrency).await);
    let embedded = storage::embedded(&dir.path().join("bench.redb")).unwrap();
    rows.extend(registry("apiary embedded (redb)", embedded, objects, concurrency).await);
    let etcd = EtcdProcess::start(dir.path());
    // Let etcd elect itself and warm up before anything is measured on it.
    let mut warm = raw::kv_client::KvClient::new(raw::channel(&etcd.endpoint()).await);
    for i in 0..200 {
        let put = raw::PutRequest {
            key: format!("/warm/{i}").into_bytes(),
            value: b"x".to_vec(),
            ..Default::default()
        };
        warm.put(put).await.unwrap();
    }
    let backend = etcd.client().await;
    rows.extend(registry("apiary etcd", Arc::new(backend), objects, concurrency).await);
    rows.extend(raw_etcd(&etcd.endpoint(), objects, concurrency).await);
    println!("{objects} objects, {concurrency} concurrent clients, {WATCHERS} watchers\n");
    common::print_table(&mut rows);
}
