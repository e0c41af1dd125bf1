//! What the benchmarks share: the object they write, the load driver and its table rows.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use apiary_runtime::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A small object, about the size of a typical custom resource.
#[derive(ApiResource, Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[api(group = "bench.example.com", version = "v1", kind = "Item", namespaced)]
pub struct Item {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: ItemSpec,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct ItemSpec {
    pub replicas: i32,
    pub image: String,
    pub labels: std::collections::BTreeMap<String, String>,
}

pub fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

pub fn item(i: usize) -> Value {
    json!({
        "apiVersion": "bench.example.com/v1", "kind": "Item",
        "metadata": {"name": format!("item-{i:06}"), "labels": {"app": "bench"}},
        "spec": {"replicas": 3, "image": "registry.example.com/team/app:1.2.3",
                 "labels": {"tier": "backend", "owner": "team-a", "index": i.to_string()}},
    })
}

/// Throughput and latency percentiles of one operation.
pub struct Row {
    pub target: String,
    pub op: String,
    pub ops: usize,
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
}

impl Row {
    pub fn markdown(&mut self) -> String {
        self.latencies.sort();
        let at = |q: f64| {
            let i = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
            self.latencies.get(i).copied().unwrap_or_default()
        };
        let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1000.0);
        format!(
            "| {} | {} | {} | {:.0} | {} | {} | {} |",
            self.target,
            self.op,
            self.ops,
            self.ops as f64 / self.elapsed.as_secs_f64(),
            ms(at(0.5)),
            ms(at(0.99)),
            ms(at(1.0)),
        )
    }
}

/// Run `total` calls of `op(i)` from `concurrency` tasks; each call's latency is recorded.
pub async fn load<F, Fut>(target: &str, name: &str, total: usize, concurrency: usize, op: F) -> Row
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (op, next) = (op.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= total {
                        return latencies;
                    }
                    let t = Instant::now();
                    op(i).await;
                    latencies.push(t.elapsed());
                }
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("a load task"));
    }
    Row {
        target: target.to_string(),
        op: name.to_string(),
        ops: total,
        elapsed: started.elapsed(),
        latencies,
    }
}

/// Print the rows as a Markdown table.
pub fn print_table(rows: &mut [Row]) {
    println!("| target | operation | ops | ops/s | p50 ms | p99 ms | max ms |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for row in rows {
        println!("{}", row.markdown());
    }
}
