//! The Widget status controller: kube-rs's `Controller` on the server's in-process client
//! (`Server::client`), writing every Widget's status.
//!
//! A real server would reconcile something external here; the example reports every
//! requested replica as available, Running when there is at least one, and a Ready
//! condition for the generation it saw.

use std::sync::Arc;
use std::time::Duration;

use apiary_runtime::server::Leadership;
use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::watcher;
use serde_json::{Value, json};
use widget_api::Widget;

/// While this replica leads, run the status controller (one replica writes status at a
/// time; the others wait for the lease).
pub async fn run(client: kube::Client, mut leadership: Leadership) {
    loop {
        leadership.acquired().await;
        tracing::info!("widget status controller: started (this replica leads)");
        tokio::select! {
            () = control(client.clone()) => {}
            () = leadership.lost() => tracing::info!("widget status controller: stopped (another replica leads)"),
        }
    }
}

/// Status writes in flight at once: as kube-controller-manager's controllers (a few workers
/// each), not one per changed Widget. With kube-rs's default (no bound) a burst of creates on
/// etcd became as many concurrent status writes, which took the users' write slots.
const WORKERS: u16 = 5;

/// kube-rs's Controller over every Widget, on the server's in-process client.
async fn control(client: kube::Client) {
    let widgets: Api<Widget> = Api::all(client.clone());
    Controller::new(widgets, watcher::Config::default())
        .with_config(controller::Config::default().concurrency(WORKERS))
        .run(reconcile, error_policy, Arc::new(client))
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn error_policy(widget: Arc<Widget>, error: &kube::Error, _: Arc<kube::Client>) -> Action {
    let name = widget.metadata.name.as_deref().unwrap_or_default();
    tracing::warn!(widget = name, %error, "widget status controller: status write failed");
    Action::requeue(Duration::from_secs(5))
}

/// Write the status a Widget should have (a merge patch of `/status` as `widget-server`).
async fn reconcile(widget: Arc<Widget>, client: Arc<kube::Client>) -> Result<Action, kube::Error> {
    let object = serde_json::to_value(widget.as_ref()).map_err(kube::Error::SerdeError)?;
    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let Some(status) = desired_status(&object, &now) else {
        return Ok(Action::await_change());
    };
    let (Some(name), Some(namespace)) = (&widget.metadata.name, &widget.metadata.namespace) else {
        return Ok(Action::await_change());
    };
    let widgets: Api<Widget> = Api::namespaced(client.as_ref().clone(), namespace);
    let params = PatchParams {
        field_manager: Some("widget-server".into()),
        ..Default::default()
    };
    match widgets
        .patch_status(name, &params, &Patch::Merge(json!({"status": status})))
        .await
    {
        // Deleted meanwhile: nothing to report.
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Action::await_change()),
        other => other.map(|_| Action::await_change()),
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
