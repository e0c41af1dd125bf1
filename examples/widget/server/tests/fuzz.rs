//! A fuzz harness on stable Rust: a bounded loop of generated requests (paths, query strings,
//! bodies, patches, selectors, metadata) through the real router, handlers, registry and
//! storage in-process, with the outermost filter (the one request parse). For every request:
//! no panic, an answer within a time bound, a 2xx or 4xx code (5xx only for the documented
//! 504 of a future resourceVersion), every error a `Status` with the same code, and no
//! request allocating more than a bound (a counting global allocator).
//!
//! CI runs a short, seeded run. The long run, with a summary of what it saw:
//! `APIARY_FUZZ_SECONDS=600 APIARY_FUZZ_SEED=7 cargo test --release -p widget-server --test fuzz -- --nocapture`
//! (RELIABILITY.md has its figures).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use apiary_runtime::endpoints::Api;
use apiary_runtime::filters::metrics::Metrics;
use apiary_runtime::registry::rest::Rest;
use apiary_runtime::registry::{Store, TypedStrategy};
use apiary_runtime::storage::{self, WatchCache};
use apiary_runtime::testing::Rng;
use axum::body::Body;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

/// Bytes allocated now, and the most since the last reset.
struct Counting;
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Most bytes one request may allocate beyond what was live before it (the body limit is
/// 3 MiB; decoding, validating and encoding it a few times over stays well under this).
const ALLOCATION_BOUND: usize = 64 << 20;
/// Longest a non-watch answer may take in-process.
const ANSWER_BOUND: Duration = Duration::from_secs(5);

const SEGMENTS: &[&str] = &[
    "w1",
    "a.b-c",
    "",
    ".",
    "..",
    "%2e%2e",
    "%2F",
    "a%2Fb",
    "%c0%ae",
    "%",
    "%zz",
    "%00",
    "UPPER",
    "a b",
    "%20",
    "status",
    "scale",
    "widgets",
    "namespaces",
    "default",
    "-x",
    "x-",
    "\u{e9}",
    "%E2%80%AE",
    "w1;x",
    "w1?",
];
const QUERY_KEYS: &[&str] = &[
    "watch",
    "limit",
    "continue",
    "resourceVersion",
    "resourceVersionMatch",
    "timeoutSeconds",
    "labelSelector",
    "fieldSelector",
    "dryRun",
    "fieldValidation",
    "fieldManager",
    "force",
    "pretty",
    "propagationPolicy",
    "gracePeriodSeconds",
    "allowWatchBookmarks",
    "sendInitialEvents",
    "includeObject",
    "ignoreStoreReadErrorWithClusterBreakingPotential",
];
const QUERY_VALUES: &[&str] = &[
    "",
    "0",
    "1",
    "-1",
    "true",
    "false",
    "abc",
    "1.5",
    "1e2",
    "99999999999999999999",
    "18446744073709551615",
    "All",
    "Strict",
    "Warn",
    "Ignore",
    "Exact",
    "NotOlderThan",
    "Object",
    "None",
    "Metadata",
    "Orphan",
    "%ZZ",
    "a%3Db",
    "app%3Ddemo",
    "app+in+(a,b)",
    "!app",
    "metadata.name%3Dw1",
    "spec.color!%3Dred",
    "spec.nosuch%3D1",
    "a,b,,",
    "x%2Cy%3D%3Dz",
    "eyJydiI6MSwic3RhcnQiOiJ4In0",
    "not-base64!",
];
const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/apply-patch+yaml",
    "application/strategic-merge-patch+json",
    "text/plain",
    "",
];
const ACCEPTS: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/json;as=Table;v=v1;g=meta.k8s.io",
    "application/vnd.kubernetes.protobuf",
    "*/*",
    "text/html",
    "",
];

fn path(rng: &mut Rng, collection: bool) -> String {
    let base = "/apis/custom.example.com/v1";
    let shape = if collection && rng.chance(80) { 1 } else { rng.below(6) };
    let mut segs: Vec<String> = match shape {
        0 => vec!["widgets".into()],
        1 | 2 => vec![
            "namespaces".into(),
            if rng.chance(70) {
                "default".into()
            } else {
                rng.pick(SEGMENTS).to_string()
            },
            "widgets".into(),
        ],
        _ => vec![
            "namespaces".into(),
            if rng.chance(70) {
                "default".into()
            } else {
                rng.pick(SEGMENTS).to_string()
            },
            "widgets".into(),
            if rng.chance(80) {
                rng.pick(&["w1", "w2", "w3"]).to_string()
            } else {
                rng.pick(SEGMENTS).to_string()
            },
        ],
    };
    if segs.len() == 4 && rng.chance(25) {
        segs.push(rng.pick(&["status", "scale", "x", ""]).to_string());
    }
    if rng.chance(5) {
        segs.push("a".repeat(rng.below(400)));
    }
    match rng.below(20) {
        0 => format!(
            "/{}",
            rng.pick(&[
                "apis",
                "api",
                "openapi/v2",
                "openapi/v3",
                "version",
                "healthz",
                "metrics",
                "apis/custom.example.com",
                "x"
            ])
        ),
        _ => format!("{base}/{}", segs.join("/")),
    }
}

fn query(rng: &mut Rng) -> String {
    let n = if rng.chance(50) { 0 } else { 1 + rng.below(3) };
    let pairs: Vec<String> = (0..n)
        .map(|_| format!("{}={}", rng.pick(QUERY_KEYS), rng.pick(QUERY_VALUES)))
        .collect();
    if pairs.is_empty() {
        String::new()
    } else {
        format!("?{}", pairs.join("&"))
    }
}

fn scalar(rng: &mut Rng) -> Value {
    match rng.below(8) {
        0 => Value::Null,
        1 => json!(rng.chance(50)),
        2 => json!(rng.bits() as i64),
        3 => json!(-1.5),
        4 => json!("x".repeat(rng.below(100))),
        5 => json!([]),
        6 => json!({}),
        _ => json!("a b"),
    }
}

fn metadata(rng: &mut Rng) -> Value {
    let names = ["w1", "w2", "w3"];
    let mut m =
        json!({"name": if rng.chance(90) { rng.pick(&names).to_string() } else { rng.pick(SEGMENTS).to_string() }});
    for _ in 0..rng.below(4).saturating_sub(1) {
        let field = *rng.pick(&[
            "labels",
            "annotations",
            "finalizers",
            "ownerReferences",
            "generation",
            "uid",
            "creationTimestamp",
            "namespace",
            "generateName",
            "resourceVersion",
            "managedFields",
            "nameX",
            "deletionTimestamp",
        ]);
        m[field] = match (field, rng.below(3)) {
            ("labels" | "annotations", 0) => json!({ rng.pick(SEGMENTS).to_string(): rng.pick(SEGMENTS).to_string() }),
            ("labels" | "annotations", 1) => json!({"k": "v".repeat(rng.below(300))}),
            ("finalizers", _) => json!([rng.pick(&["example.com/hold", "a/b/c", "", "orphan"]).to_string()]),
            ("ownerReferences", _) => {
                json!([{"apiVersion": "v1", "kind": "K", "name": "n", "uid": if rng.chance(50) { "u" } else { "" }, "controller": rng.chance(50)}])
            }
            _ => scalar(rng),
        };
    }
    m
}

fn widget(rng: &mut Rng) -> Value {
    let mut w = json!({
        "apiVersion": "custom.example.com/v1", "kind": "Widget",
        "metadata": metadata(rng),
        "spec": {"replicas": 1, "image": "nginx", "color": "blue"},
    });
    for _ in 0..rng.below(3).saturating_sub(1) {
        let at = *rng.pick(&["spec", "status", "apiVersion", "kind", "extra", "metadata"]);
        if rng.chance(50) {
            w[at] = scalar(rng);
        } else if let Some(spec) = w.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert(
                rng.pick(&["replicas", "image", "color", "nosuch"]).to_string(),
                scalar(rng),
            );
        }
    }
    w
}

fn patch(rng: &mut Rng) -> Value {
    let ops: Vec<Value> = (0..rng.below(6))
        .map(|_| {
            let op = *rng.pick(&["add", "remove", "replace", "move", "copy", "test", "bogus"]);
            let path = *rng.pick(&["/spec/replicas", "/spec", "/metadata/labels", "/metadata/labels/a", "/metadata", "", "/x/y/z", "/spec/image"]);
            json!({"op": op, "path": path, "from": rng.pick(&["/spec", "/metadata", "/nope"]).to_string(), "value": scalar(rng)})
        })
        .collect();
    Value::Array(ops)
}

fn body(rng: &mut Rng, content_type: &str) -> Vec<u8> {
    let value = match content_type {
        "application/json-patch+json" => patch(rng),
        "application/merge-patch+json" => json!({"spec": {"replicas": scalar(rng)}, "metadata": metadata(rng)}),
        _ => widget(rng),
    };
    let mut bytes = match rng.below(40) {
        0 => b"{".to_vec(),
        1 => "[".repeat(rng.below(2000)).into_bytes(),
        2 => b"{\"spec\":1,\"spec\":{}}".to_vec(),
        3 => vec![0xff, 0xfe, 0x00],
        4 => Vec::new(),
        _ if content_type.contains("yaml") => serde_saphyr::to_string(&value).unwrap_or_default().into_bytes(),
        _ => serde_json::to_vec(&value).unwrap(),
    };
    if rng.chance(5) && !bytes.is_empty() {
        let at = rng.below(bytes.len());
        bytes[at] ^= 1 << rng.below(8);
    }
    bytes
}

/// One generated request.
fn request(rng: &mut Rng) -> (String, String, axum::http::Request<Body>) {
    let method = match rng.below(100) {
        0..30 => "GET",
        30..55 => "POST",
        55..70 => "PUT",
        70..90 => "PATCH",
        90..98 => "DELETE",
        98 => "HEAD",
        _ => "OPTIONS",
    };
    let uri = format!("{}{}", path(rng, method == "POST"), query(rng));
    let content_type = match (method, rng.below(10)) {
        (_, 0) => *rng.pick(CONTENT_TYPES),
        ("PATCH", n) if n < 5 => "application/merge-patch+json",
        ("PATCH", n) if n < 8 => "application/json-patch+json",
        ("PATCH", _) => "application/apply-patch+yaml",
        _ => "application/json",
    };
    let body = if matches!(method, "POST" | "PUT" | "PATCH" | "DELETE") {
        body(rng, content_type)
    } else {
        Vec::new()
    };
    let mut builder = axum::http::Request::builder().method(method).uri(&uri);
    if !content_type.is_empty() {
        builder = builder.header("content-type", content_type);
    }
    let accept = if rng.chance(70) {
        "application/json"
    } else {
        *rng.pick(ACCEPTS)
    };
    if !accept.is_empty() {
        builder = builder.header("accept", accept);
    }
    let request = builder
        .body(Body::from(body))
        .unwrap_or_else(|_| axum::http::Request::new(Body::empty()));
    (method.to_string(), uri, request)
}

fn api() -> Arc<Api> {
    let cache = WatchCache::new(storage::memory(), 1000);
    let store = Store::new(
        Arc::new(TypedStrategy::<widget_api::Widget>::default()),
        cache,
        "/registry",
    )
    .unwrap();
    let stores: Vec<Arc<dyn Rest>> = vec![Arc::new(store)];
    Api::new(stores, json!({"gitVersion": "v0.0.0"}))
}

/// The outermost filter (it parses the query and the request info once for all), then the
/// resources dispatched as the server dispatches them.
fn router() -> axum::Router {
    let api = api();
    let (metrics, routes) = (Metrics::new(), api.router());
    axum::Router::new().fallback(move |request: axum::extract::Request| {
        let (metrics, api, routes) = (metrics.clone(), api.clone(), routes.clone());
        async move {
            apiary_runtime::filters::instrument(&metrics, request, |r| async move { api.dispatch(&routes, r).await })
                .await
        }
    })
}

/// Run generated requests for `budget` (or `max` requests); the classes of answers seen.
async fn fuzz(seed: u64, budget: Duration, max: usize) -> BTreeMap<String, usize> {
    let router = router();
    let mut rng = Rng(seed.max(1));
    let mut classes = BTreeMap::new();
    let started = Instant::now();
    let mut runs = 0;
    while runs < max && started.elapsed() < budget {
        runs += 1;
        let (method, uri, request) = request(&mut rng);
        let base = CURRENT.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let answered = tokio::time::timeout(ANSWER_BOUND, tokio::spawn(router.clone().oneshot(request))).await;
        let response = match answered {
            Err(_) => panic!("no answer within {ANSWER_BOUND:?}: {method} {uri}"),
            Ok(Err(e)) => panic!("the request panicked: {method} {uri}: {e}"),
            Ok(Ok(Ok(response))) => response,
        };
        let code = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or("").to_string());
        // Whether it is a watch, as the server reads the query (first value wins).
        let q = apiary_runtime::endpoints::params::query_map(uri.split_once('?').map(|(_, q)| q));
        let watch = code == 200 && apiary_runtime::endpoints::params::flag(&q, "watch");
        let bytes = if watch {
            // A watch streams; its head is the answer.
            Vec::new()
        } else {
            tokio::time::timeout(ANSWER_BOUND, response.into_body().collect())
                .await
                .unwrap_or_else(|_| panic!("the body did not end: {method} {uri}"))
                .map(|b| b.to_bytes().to_vec())
                .unwrap_or_default()
        };
        let grown = PEAK.load(Ordering::Relaxed).saturating_sub(base);
        assert!(grown < ALLOCATION_BOUND, "{method} {uri} allocated {grown} bytes");
        let status: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let reason = status["reason"].as_str().unwrap_or("").to_string();
        match code {
            200..=299 => {}
            // A HEAD answer has no body by definition.
            400..=499 if method == "HEAD" => {}
            400..=499 => {
                assert_eq!(
                    status["kind"],
                    "Status",
                    "{method} {uri} -> {code} {content_type:?}: {}",
                    String::from_utf8_lossy(&bytes)
                );
                assert_eq!(status["code"], code, "{method} {uri}");
            }
            504 if method == "HEAD" => {}
            504 if status["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("Too large resource version")) => {}
            _ => panic!("{method} {uri} -> {code}: {}", String::from_utf8_lossy(&bytes)),
        }
        *classes.entry(format!("{code} {reason}")).or_insert(0) += 1;
    }
    classes
}

/// The server dispatches resource routes without the router (`Api::serve_resource`): every
/// path it serves that way must get the router's answer, for generated paths of every shape.
#[tokio::test(flavor = "current_thread")]
async fn resource_routes_are_matched_as_the_router_matches() {
    let api = api();
    let router = api.router();
    let get = |uri: &str| axum::http::Request::get(uri).body(Body::empty()).unwrap();
    let answer = |response: axum::response::Response| async move {
        let code = response.status();
        (code, response.into_body().collect().await.unwrap().to_bytes())
    };
    let widget = json!({"apiVersion": "custom.example.com/v1", "kind": "Widget",
        "metadata": {"name": "w1", "namespace": "default"}, "spec": {"replicas": 1, "image": "nginx:1"}});
    let create = axum::http::Request::post("/apis/custom.example.com/v1/namespaces/default/widgets")
        .header("content-type", "application/json")
        .body(Body::from(widget.to_string()))
        .unwrap();
    assert_eq!(router.clone().oneshot(create).await.unwrap().status(), 201);
    let mut rng = Rng(11);
    let (mut direct, mut handed_back) = (BTreeMap::new(), 0);
    for _ in 0..3000 {
        let collection = rng.chance(50);
        let uri = path(&mut rng, collection);
        let Ok(uri) = uri.parse::<axum::http::Uri>() else {
            continue;
        };
        let uri = uri.to_string();
        match api.serve_resource(get(&uri)).await {
            Ok(response) => {
                let served = answer(response).await;
                let routed = answer(router.clone().oneshot(get(&uri)).await.unwrap()).await;
                assert_eq!(served, routed, "GET {uri}");
                *direct.entry(served.0.as_u16()).or_insert(0) += 1;
            }
            Err(_) => handed_back += 1,
        }
    }
    // Both ways are taken, and the direct one answers found, not found and refused paths.
    assert!(handed_back > 100, "{handed_back} handed back");
    for code in [200, 400, 404] {
        assert!(direct.get(&code).is_some_and(|n| *n > 10), "{direct:?}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn generated_requests_get_statuses_within_bounds() {
    let seconds: u64 = std::env::var("APIARY_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let seed: u64 = std::env::var("APIARY_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let (budget, max) = if seconds > 0 {
        (Duration::from_secs(seconds), usize::MAX)
    } else {
        (Duration::from_secs(60), 20_000)
    };
    let started = Instant::now();
    let classes = fuzz(seed, budget, max).await;
    let total: usize = classes.values().sum();
    assert!(
        classes.keys().any(|c| c.starts_with('2')),
        "some requests succeed: {classes:?}"
    );
    assert!(
        classes.len() >= 8,
        "the generator reaches many kinds of answer: {classes:?}"
    );
    if seconds > 0 {
        println!("seed {seed}: {total} requests in {:?}, no finding", started.elapsed());
        for (class, count) in &classes {
            println!("{count:>9}  {class}");
        }
    }
}
