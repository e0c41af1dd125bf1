//! Prometheus metrics under kube-apiserver's names and labels, so dashboards and alerts made
//! for it work here: requests, latencies, response sizes, in-flight and long-running requests,
//! watchers and watch events, stored objects, storage latency by backend, and the process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::endpoints::request_info::RequestInfo;
use crate::resource::ResourceMeta;
use crate::storage::{Census, EventStream, KeyValue, RangeRequest, RangeResponse, Revision, Storage, StorageError};

/// kube-apiserver's request latency buckets (seconds).
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0,
    45.0, 60.0,
];
/// Storage latency buckets (seconds).
const STORAGE_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const COMPONENT: &str = "apiserver";

/// Every metric of one server.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    durations: HistogramVec,
    sizes: HistogramVec,
    inflight: IntGaugeVec,
    longrunning: IntGaugeVec,
    watchers: IntGaugeVec,
    watch_events: IntCounterVec,
    storage: HistogramVec,
    objects: IntGaugeVec,
    /// `(group, version, resource)` of what is served: other paths are labelled "other".
    /// Few, so a scan; their labels are static, so a request's labels allocate nothing.
    served: std::sync::RwLock<Vec<(&'static str, &'static str, &'static str)>>,
}

/// The labels of one request, as kube-apiserver reports them.
#[derive(Clone)]
pub struct RequestLabels {
    verb: &'static str,
    dry_run: &'static str,
    group: &'static str,
    version: &'static str,
    resource: &'static str,
    /// A served resource's subresource, or the path of a known non-resource request.
    subresource: std::borrow::Cow<'static, str>,
    scope: &'static str,
}

/// Register `metric` in `registry` (metric names are fixed, so registering cannot fail).
pub(crate) fn registered<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

impl Metrics {
    /// A registry with every metric.
    pub fn new() -> Arc<Metrics> {
        let registry = Registry::new();
        let request_labels = [
            "verb",
            "dry_run",
            "group",
            "version",
            "resource",
            "subresource",
            "scope",
            "component",
        ];
        let counter = |name: &str, help: &str, labels: &[&str]| {
            registered(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter"),
            )
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            registered(
                &registry,
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge"),
            )
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: Vec<f64>| {
            registered(
                &registry,
                HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels).expect("valid histogram"),
            )
        };
        let mut with_code = request_labels.to_vec();
        with_code.push("code");
        let mut size_labels = request_labels.to_vec();
        size_labels.retain(|l| *l != "dry_run");
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .expect("the process collector registers once");
        Arc::new(Metrics {
            requests: counter(
                "apiserver_request_total",
                "Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code.",
                &with_code,
            ),
            durations: histogram(
                "apiserver_request_duration_seconds",
                "Response latency distribution in seconds for each verb, dry run value, group, version, resource, subresource, scope and component.",
                &request_labels,
                LATENCY_BUCKETS.to_vec(),
            ),
            sizes: histogram(
                "apiserver_response_sizes",
                "Response size distribution in bytes for each group, version, verb, resource, subresource, scope and component.",
                &size_labels,
                prometheus::exponential_buckets(1000.0, 10.0, 8).expect("valid buckets"),
            ),
            inflight: gauge(
                "apiserver_current_inflight_requests",
                "Number of requests in flight, by kind (readOnly or mutating); watches are not counted.",
                &["request_kind"],
            ),
            longrunning: gauge(
                "apiserver_longrunning_requests",
                "Gauge of all active long-running apiserver requests broken out by verb, group, version, resource, scope and component.",
                &size_labels,
            ),
            watchers: gauge(
                "apiserver_registered_watchers",
                "Number of currently registered watchers for a given resources",
                &["group", "version", "kind"],
            ),
            watch_events: counter(
                "apiserver_watch_events_total",
                "Number of events sent in watch clients",
                &["group", "version", "kind"],
            ),
            storage: histogram(
                "apiary_storage_request_duration_seconds",
                "Storage request latency in seconds by backend (memory, embedded, etcd) and operation.",
                &["backend", "operation"],
                STORAGE_BUCKETS.to_vec(),
            ),
            objects: gauge(
                "apiserver_storage_objects",
                "Number of stored objects at the time of last check split by kind.",
                &["resource"],
            ),
            served: Default::default(),
            registry,
        })
    }

    /// The registry, for metrics of other layers (admission).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Label requests for `meta` by resource (others are labelled by path, or "other").
    pub fn serve(&self, meta: &ResourceMeta) {
        let mut served = self.served.write().unwrap_or_else(|e| e.into_inner());
        let resource = (meta.group, meta.version, meta.plural);
        if !served.contains(&resource) {
            served.push(resource);
        }
    }

    /// The labels of a request; `apply` for server-side apply patches, `dry_run` for `dryRun=All`.
    pub fn labels(&self, info: &RequestInfo, apply: bool, dry_run: bool) -> RequestLabels {
        let served = info
            .is_resource
            .then(|| {
                let served = self.served.read().unwrap_or_else(|e| e.into_inner());
                served
                    .iter()
                    .find(|(g, v, r)| *g == info.group && *v == info.version && *r == info.resource)
                    .copied()
            })
            .flatten();
        use crate::endpoints::request_info::Verb;
        let verb = match &info.verb {
            Verb::Create => "POST",
            Verb::Update => "PUT",
            Verb::Patch if apply => "APPLY",
            Verb::Patch => "PATCH",
            Verb::Get => "GET",
            Verb::List => "LIST",
            Verb::Watch => "WATCH",
            Verb::Delete => "DELETE",
            Verb::DeleteCollection => "DELETECOLLECTION",
            Verb::Other(method) => match method.as_str() {
                "post" => "POST",
                "put" => "PUT",
                "head" => "HEAD",
                "options" => "OPTIONS",
                "connect" => "CONNECT",
                _ => "OTHER",
            },
        };
        let scope = if !info.namespace.is_empty() {
            "namespace"
        } else if !info.name.is_empty() {
            "resource"
        } else if info.is_resource {
            "cluster"
        } else {
            ""
        };
        let Some((group, version, resource)) = served else {
            // Unknown paths are one series, whatever a client sends.
            let known = info.path.starts_with("/apis")
                || info.path.starts_with("/openapi")
                || ["/api", "/metrics", "/version", "/healthz", "/livez", "/readyz"].contains(&info.path.as_str());
            return RequestLabels {
                verb,
                dry_run: "",
                group: "",
                version: "",
                resource: "",
                subresource: if known && !info.is_resource {
                    info.path.clone().into()
                } else {
                    "other".into()
                },
                scope: "",
            };
        };
        let subresource = match info.subresource.as_str() {
            "" => "",
            "status" => "status",
            "scale" => "scale",
            _ => "other",
        };
        RequestLabels {
            verb,
            dry_run: if dry_run { "All" } else { "" },
            group,
            version,
            resource,
            subresource: subresource.into(),
            scope,
        }
    }

    /// Record a finished request (for a watch: when its response started).
    pub fn observe(&self, l: &RequestLabels, code: u16, elapsed: Duration, size: Option<u64>) {
        // A valid status code's text needs no allocation.
        let status = axum::http::StatusCode::from_u16(code).ok();
        let other = if status.is_none() {
            code.to_string()
        } else {
            String::new()
        };
        let code = status.as_ref().map_or(other.as_str(), |s| s.as_str());
        let [verb, group, version, resource, subresource, scope, component] = l.resource_labels();
        let base = [verb, l.dry_run, group, version, resource, subresource, scope, component];
        let with_code = [
            verb,
            l.dry_run,
            group,
            version,
            resource,
            subresource,
            scope,
            component,
            code,
        ];
        self.requests.with_label_values(&with_code).inc();
        if l.verb != "WATCH" {
            self.durations.with_label_values(&base).observe(elapsed.as_secs_f64());
        }
        if let Some(size) = size {
            self.observe_size(l, size);
        }
    }

    /// The size of a GET's or LIST's answer (streamed ones: once written).
    pub fn observe_size(&self, l: &RequestLabels, size: u64) {
        if matches!(l.verb, "GET" | "LIST") {
            self.sizes.with_label_values(&l.resource_labels()).observe(size as f64);
        }
    }

    /// Count a long-running request (a watch) until the guard is dropped.
    pub fn longrunning(&self, l: &RequestLabels) -> GaugeGuard {
        GaugeGuard::new(self.longrunning.with_label_values(&l.resource_labels()))
    }

    /// Count a request in flight of a kind (readOnly or mutating) until the guard is dropped.
    pub fn inflight(&self, kind: &str) -> GaugeGuard {
        GaugeGuard::new(self.inflight.with_label_values(&[kind]))
    }

    /// Count a registered watcher of `meta` until the guard is dropped.
    pub fn watcher(&self, meta: &ResourceMeta) -> GaugeGuard {
        GaugeGuard::new(self.watchers.with_label_values(&[meta.group, meta.version, meta.kind]))
    }

    /// The count of events sent to watchers of `meta`, looked up once per watch: each event
    /// then costs one atomic increment, not a hash of the labels under a lock.
    pub fn watch_events(&self, meta: &ResourceMeta) -> prometheus::IntCounter {
        self.watch_events
            .with_label_values(&[meta.group, meta.version, meta.kind])
    }

    /// The number of stored objects of `meta`.
    pub fn set_objects(&self, meta: &ResourceMeta, count: u64) {
        self.objects
            .with_label_values(&[&meta.group_resource()])
            .set(count as i64);
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&self.registry.gather(), &mut out)
            .expect("metrics encode");
        out
    }
}

impl RequestLabels {
    /// verb, group, version, resource, subresource, scope, component.
    fn resource_labels(&self) -> [&str; 7] {
        [
            self.verb,
            self.group,
            self.version,
            self.resource,
            &self.subresource,
            self.scope,
            COMPONENT,
        ]
    }
}

/// Decrements its gauge when dropped.
pub struct GaugeGuard(IntGauge);

impl GaugeGuard {
    fn new(gauge: IntGauge) -> Self {
        gauge.inc();
        GaugeGuard(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A storage backend whose every call is timed into `apiary_storage_request_duration_seconds`.
pub struct InstrumentedStorage {
    inner: Arc<dyn Storage>,
    /// One histogram per [`Operation`], looked up once: a call then hashes no labels.
    timers: [Histogram; Operation::ALL.len()],
}

/// A storage operation, timed under its `operation` label.
#[derive(Clone, Copy)]
enum Operation {
    Get,
    List,
    Create,
    Update,
    Delete,
    Watch,
    Revision,
    Census,
    Count,
}

impl Operation {
    /// Every operation, each at its own index.
    const ALL: [Operation; 9] = [
        Operation::Get,
        Operation::List,
        Operation::Create,
        Operation::Update,
        Operation::Delete,
        Operation::Watch,
        Operation::Revision,
        Operation::Census,
        Operation::Count,
    ];

    fn label(self) -> &'static str {
        match self {
            Operation::Get => "get",
            Operation::List => "list",
            Operation::Create => "create",
            Operation::Update => "update",
            Operation::Delete => "delete",
            Operation::Watch => "watch",
            Operation::Revision => "revision",
            Operation::Census => "census",
            Operation::Count => "count",
        }
    }
}

impl InstrumentedStorage {
    /// Time `inner`'s calls under the label `backend`.
    pub fn new(inner: Arc<dyn Storage>, backend: &'static str, metrics: Arc<Metrics>) -> Self {
        InstrumentedStorage {
            inner,
            timers: Operation::ALL.map(|op| metrics.storage.with_label_values(&[backend, op.label()])),
        }
    }

    async fn timed<T>(&self, operation: Operation, call: impl std::future::Future<Output = T>) -> T {
        let started = Instant::now();
        let result = call.await;
        self.timers[operation as usize].observe(started.elapsed().as_secs_f64());
        result
    }
}

#[async_trait]
impl Storage for InstrumentedStorage {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StorageError> {
        self.timed(Operation::Get, self.inner.get(key)).await
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse, StorageError> {
        self.timed(Operation::List, self.inner.range(request)).await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StorageError> {
        self.timed(Operation::Create, self.inner.create(key, value)).await
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<KeyValue, StorageError> {
        self.timed(Operation::Update, self.inner.update(key, value, expected))
            .await
    }

    async fn delete(&self, key: &str, expected: Revision) -> Result<KeyValue, StorageError> {
        self.timed(Operation::Delete, self.inner.delete(key, expected)).await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<EventStream, StorageError> {
        self.timed(Operation::Watch, self.inner.watch(prefix, after)).await
    }

    async fn follow(&self, prefix: &str, after: Revision) -> Result<EventStream, StorageError> {
        self.timed(Operation::Watch, self.inner.follow(prefix, after)).await
    }

    async fn current_revision(&self) -> Result<Revision, StorageError> {
        self.timed(Operation::Revision, self.inner.current_revision()).await
    }

    async fn census(&self, prefix: &str, after: Revision) -> Result<Option<Census>, StorageError> {
        self.timed(Operation::Census, self.inner.census(prefix, after)).await
    }

    async fn count(&self, prefix: &str) -> Result<u64, StorageError> {
        self.timed(Operation::Count, self.inner.count(prefix)).await
    }

    async fn ready(&self) -> Result<(), StorageError> {
        self.inner.ready().await
    }

    fn in_process(&self) -> bool {
        self.inner.in_process()
    }
}
