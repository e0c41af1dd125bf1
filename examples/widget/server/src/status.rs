//! The Widget status loop: watches Widgets in-process and writes their status.
//!
//! A real server would reconcile something external here; the example reports every
//! requested replica as available, Running when there is at least one, and a Ready
//! condition for the generation it saw.

use std::sync::Arc;
use std::time::Duration;

use apiary_runtime::registry::{ListOptions, Part, Store, WatchEvent, WriteOptions};
use apiary_runtime::server::Leadership;
use futures::StreamExt;
use serde_json::{Value, json};

/// Longest pause between attempts to restart a failed watch.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// While this replica leads, watch Widgets and write status for each change (one replica
/// writes status at a time; the others wait for the lease).
pub async fn run(store: Arc<Store>, mut leadership: Leadership) {
    loop {
        leadership.acquired().await;
        tracing::info!("widget status loop: started (this replica leads)");
        tokio::select! {
            () = follow(&store) => {}
            () = leadership.lost() => tracing::info!("widget status loop: stopped (another replica leads)"),
        }
    }
}

/// Watch Widgets forever, writing status for each change; restart the watch when it ends,
/// backing off while storage is unavailable.
async fn follow(store: &Arc<Store>) {
    let mut backoff = Duration::from_millis(250);
    loop {
        match store.watch(ListOptions::default(), Some(true), false).await {
            Ok(events) => {
                backoff = Duration::from_millis(250);
                let mut events = Box::pin(events);
                while let Some(event) = events.next().await {
                    if let WatchEvent::Object("ADDED" | "MODIFIED", object) = event {
                        reconcile(store, &object).await;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "widget status loop: watch failed");
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        tokio::time::sleep(backoff).await;
    }
}

/// The status a Widget should have; `None` when it already has it.
pub fn desired_status(object: &Value, now: &str) -> Option<Value> {
    let replicas = object.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0);
    let generation = object
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let phase = if replicas > 0 { "Running" } else { "Pending" };
    let current = object.get("status");
    let same = current.is_some_and(|s| {
        s.get("availableReplicas").and_then(Value::as_i64) == Some(replicas)
            && s.get("phase").and_then(Value::as_str) == Some(phase)
            && s.pointer("/conditions/0/observedGeneration").and_then(Value::as_i64) == Some(generation)
    });
    if same || object.pointer("/metadata/deletionTimestamp").is_some() {
        return None;
    }
    let ready = if replicas > 0 { "True" } else { "False" };
    Some(json!({
        "availableReplicas": replicas,
        "phase": phase,
        "lastUpdated": now,
        "conditions": [{
            "type": "Ready", "status": ready, "observedGeneration": generation,
            "lastTransitionTime": now, "reason": phase, "message": format!("{replicas} of {replicas} replicas available"),
        }],
    }))
}

async fn reconcile(store: &Store, object: &Value) {
    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let Some(status) = desired_status(object, &now) else {
        return;
    };
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let namespace = object.pointer("/metadata/namespace").and_then(Value::as_str);
    let mut updated = object.clone();
    updated["status"] = status;
    let options = WriteOptions {
        field_manager: Some("widget-server".into()),
        subresource: "status",
        ..Default::default()
    };
    // A conflict means a newer version exists; its own watch event brings it here again.
    if let Err(e) = store.update(namespace, name, updated, Part::Status, &options).await
        && e.code != 409
        && e.code != 404
    {
        tracing::warn!(widget = name, error = %e, "widget status loop: status write failed");
    }
}
