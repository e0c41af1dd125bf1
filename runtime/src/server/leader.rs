//! Leader election for the server's in-process controllers, as client-go's `leaderelection`
//! does it for kube-controller-manager: a `coordination.k8s.io/v1` Lease that one replica
//! holds and renews. The Lease lives in the core API when the server has one (so `kubectl get
//! lease` shows the holder), else in the server's own storage (the etcd its replicas share).
//! Another replica takes over when the holder has not renewed within the lease duration (a
//! crash), or at once when the holder releases it on shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::storage::{Storage, StorageError};

/// Whether this replica leads: controllers run only while it does.
#[derive(Clone, Debug)]
pub struct Leadership(watch::Receiver<bool>);

impl Leadership {
    /// A handle following `leading`.
    pub fn new(leading: watch::Receiver<bool>) -> Leadership {
        Leadership(leading)
    }

    /// Whether this replica leads now.
    pub fn is_leader(&self) -> bool {
        *self.0.borrow()
    }

    /// Wait until this replica leads; never, once the server has stopped (a controller's
    /// `loop { acquired; work; lost }` then stays stopped instead of spinning).
    pub async fn acquired(&mut self) {
        // A stopped server's channel keeps its last value, which `wait_for` would take for
        // leadership at once, every time.
        if self.0.has_changed().is_err() || self.0.wait_for(|leads| *leads).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Wait until this replica stops leading, or the server stops.
    pub async fn lost(&mut self) {
        let _ = self.0.wait_for(|leads| !*leads).await;
    }
}

/// The timing of an election (kube-controller-manager's flags and defaults: 15 s, 10 s, 2 s).
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// How long a lease holds without renewal.
    pub lease_duration: Duration,
    /// How long the holder keeps trying to renew before it stops leading.
    pub renew_deadline: Duration,
    /// How often every replica tries to acquire or renew.
    pub retry_period: Duration,
}

/// Where the Lease is kept: read it (with a version), create it, replace it at a version.
#[async_trait]
pub trait LeaseStore: Send + Sync + 'static {
    /// The Lease and its version, if it exists.
    async fn get(&self) -> Result<Option<(Value, String)>, String>;
    /// Create it; `Ok(false)` when another replica created it first.
    async fn create(&self, lease: Value) -> Result<bool, String>;
    /// Replace it if still at `version`; `Ok(false)` when another replica wrote first.
    async fn update(&self, lease: Value, version: &str) -> Result<bool, String>;
}

/// The Lease in the core API (`coordination.k8s.io/v1`).
pub struct CoreLease {
    api: kube::Api<k8s_openapi::api::coordination::v1::Lease>,
    name: String,
}

impl CoreLease {
    /// The Lease `namespace/name` through `client`.
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> CoreLease {
        CoreLease {
            api: kube::Api::namespaced(client, namespace),
            name: name.into(),
        }
    }
}

fn conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

#[async_trait]
impl LeaseStore for CoreLease {
    async fn get(&self) -> Result<Option<(Value, String)>, String> {
        let lease = self.api.get_opt(&self.name).await.map_err(|e| e.to_string())?;
        Ok(lease.map(|l| {
            let version = l.metadata.resource_version.clone().unwrap_or_default();
            (serde_json::to_value(l).unwrap_or_default(), version)
        }))
    }

    async fn create(&self, mut lease: Value) -> Result<bool, String> {
        lease["metadata"] = json!({"name": self.name});
        let lease = serde_json::from_value(lease).map_err(|e| e.to_string())?;
        match self.api.create(&Default::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(e) if conflict(&e) => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn update(&self, mut lease: Value, version: &str) -> Result<bool, String> {
        lease["metadata"] = json!({"name": self.name, "resourceVersion": version});
        let lease = serde_json::from_value(lease).map_err(|e| e.to_string())?;
        match self.api.replace(&self.name, &Default::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(e) if conflict(&e) => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The Lease in the server's own storage, under `<prefix>/coordination.k8s.io/leases/`.
pub struct StoredLease {
    storage: Arc<dyn Storage>,
    key: String,
}

impl StoredLease {
    /// The Lease `namespace/name` in `storage` under `prefix`.
    pub fn new(storage: Arc<dyn Storage>, prefix: &str, namespace: &str, name: &str) -> StoredLease {
        let key = format!(
            "{}/coordination.k8s.io/leases/{namespace}/{name}",
            prefix.trim_end_matches('/')
        );
        StoredLease { storage, key }
    }
}

#[async_trait]
impl LeaseStore for StoredLease {
    async fn get(&self) -> Result<Option<(Value, String)>, String> {
        let Some(kv) = self.storage.get(&self.key).await.map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let lease = serde_json::from_slice(&kv.value).map_err(|e| e.to_string())?;
        Ok(Some((lease, kv.mod_revision.to_string())))
    }

    async fn create(&self, lease: Value) -> Result<bool, String> {
        match self.storage.create(&self.key, lease.to_string().into_bytes()).await {
            Ok(_) => Ok(true),
            Err(StorageError::AlreadyExists) => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn update(&self, lease: Value, version: &str) -> Result<bool, String> {
        let expected = version.parse().map_err(|e| format!("lease version {version:?}: {e}"))?;
        match self
            .storage
            .update(&self.key, lease.to_string().into_bytes(), expected)
            .await
        {
            Ok(_) => Ok(true),
            Err(StorageError::Conflict { .. } | StorageError::NotFound) => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// RFC 3339 with microseconds, as a Lease's `MicroTime`s are written.
fn micro_now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// One replica's side of the election.
pub struct Elector {
    store: Box<dyn LeaseStore>,
    identity: String,
    timing: Timing,
    leading: watch::Sender<bool>,
    /// The record last read, and when it was first seen (this replica's clock, as client-go:
    /// clocks of different replicas are never compared).
    observed: Option<(Value, Instant)>,
}

impl Elector {
    /// An elector for `identity` over `store`, telling `leading` whether it leads.
    pub fn new(store: Box<dyn LeaseStore>, identity: String, timing: Timing, leading: watch::Sender<bool>) -> Elector {
        Elector {
            store,
            identity,
            timing,
            leading,
            observed: None,
        }
    }

    fn spec(&self, acquired: &str, transitions: i64, duration: Duration) -> Value {
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": duration.as_secs().max(1),
                "acquireTime": acquired,
                "renewTime": micro_now(),
                "leaseTransitions": transitions,
            },
        })
    }

    /// One attempt to acquire or renew the lease; whether this replica holds it after.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, String> {
        let Some((record, version)) = self.store.get().await? else {
            let lease = self.spec(&micro_now(), 0, self.timing.lease_duration);
            return self.store.create(lease).await;
        };
        let spec = &record["spec"];
        let changed = self.observed.as_ref().is_none_or(|(seen, _)| seen["spec"] != *spec);
        if changed {
            self.observed = Some((record.clone(), Instant::now()));
        }
        let holder = spec["holderIdentity"].as_str().unwrap_or_default();
        let duration = Duration::from_secs(spec["leaseDurationSeconds"].as_u64().unwrap_or(0));
        let seen_at = self.observed.as_ref().map_or_else(Instant::now, |(_, at)| *at);
        if !holder.is_empty() && holder != self.identity && seen_at.elapsed() < duration {
            return Ok(false);
        }
        let transitions = spec["leaseTransitions"].as_i64().unwrap_or(0);
        let lease = if holder == self.identity {
            let acquired = spec["acquireTime"].as_str().unwrap_or_default().to_string();
            self.spec(&acquired, transitions, self.timing.lease_duration)
        } else {
            self.spec(&micro_now(), transitions + 1, self.timing.lease_duration)
        };
        self.store.update(lease, &version).await
    }

    fn set_leading(&self, leads: bool) {
        if *self.leading.borrow() != leads {
            if leads {
                tracing::info!(identity = %self.identity, "leader election: acquired the lease");
            } else {
                tracing::warn!(identity = %self.identity, "leader election: lost the lease");
            }
            self.leading.send_replace(leads);
        }
    }

    /// Run the election until `stop` says so, then release the lease if held (so another
    /// replica takes over at once).
    pub async fn run(mut self, mut stop: watch::Receiver<bool>, on_change: impl Fn(bool) + Send + 'static) {
        let mut last_renewal = Instant::now();
        loop {
            let attempt = self.try_acquire_or_renew().await;
            match &attempt {
                Ok(true) => last_renewal = Instant::now(),
                Ok(false) => {}
                Err(e) => tracing::warn!("leader election: {e}"),
            }
            let leads = match attempt {
                Ok(held) => held,
                // A holder that cannot reach the store keeps leading until the renew deadline.
                Err(_) => *self.leading.borrow() && last_renewal.elapsed() < self.timing.renew_deadline,
            };
            self.set_leading(leads);
            on_change(leads);
            tokio::select! {
                _ = tokio::time::sleep(self.timing.retry_period) => {}
                _ = stop.wait_for(|stopped| *stopped) => break,
            }
        }
        if *self.leading.borrow() {
            self.set_leading(false);
            on_change(false);
            if let Err(e) = self.release().await {
                tracing::warn!("leader election: releasing the lease: {e}");
            }
        }
    }

    /// Give the lease up: no holder, and a duration of 1 s (client-go's release).
    async fn release(&mut self) -> Result<(), String> {
        let Some((record, version)) = self.store.get().await? else {
            return Ok(());
        };
        if record["spec"]["holderIdentity"] != self.identity.as_str() {
            return Ok(());
        }
        let mut lease = self.spec(
            &micro_now(),
            record["spec"]["leaseTransitions"].as_i64().unwrap_or(0),
            Duration::from_secs(1),
        );
        lease["spec"]["holderIdentity"] = json!("");
        self.store.update(lease, &version).await.map(drop)
    }
}

/// This replica's identity: the host name and a random suffix (client-go's convention).
pub fn identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "apiary".into());
    format!("{host}_{}", uuid::Uuid::new_v4())
}

/// Parse a Go-style duration (`15s`, `500ms`, `2m`, `1h`; `0` alone needs no unit).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("invalid duration {text:?}"))?;
    let millis = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("invalid duration {text:?}: use ms, s, m or h")),
    };
    Ok(Duration::from_millis(number * millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A controller waiting to lead once the server has stopped waits for good: it neither
    /// starts again nor spins between started and stopped.
    #[tokio::test]
    async fn a_stopped_server_is_never_led_again() {
        let (leading, receiver) = watch::channel(true);
        let mut leadership = Leadership::new(receiver);
        leadership.acquired().await;
        drop(leading);
        leadership.lost().await;
        let again = tokio::time::timeout(Duration::from_millis(100), leadership.acquired()).await;
        assert!(again.is_err(), "acquired after the server stopped");
    }

    fn timing() -> Timing {
        Timing {
            // Leases count whole seconds.
            lease_duration: Duration::from_secs(1),
            renew_deadline: Duration::from_millis(500),
            retry_period: Duration::from_millis(50),
        }
    }

    fn elector(storage: &Arc<dyn Storage>, name: &str) -> (Elector, Leadership) {
        let store = StoredLease::new(storage.clone(), "/registry", "default", "test");
        let (leading, follows) = watch::channel(false);
        (
            Elector::new(Box::new(store), name.into(), timing(), leading),
            Leadership(follows),
        )
    }

    #[tokio::test]
    async fn one_leads_another_takes_over_on_expiry_and_at_once_on_release() {
        let storage = crate::storage::memory();
        let (mut a, _) = elector(&storage, "a");
        let (mut b, _) = elector(&storage, "b");
        assert!(a.try_acquire_or_renew().await.unwrap());
        assert!(!b.try_acquire_or_renew().await.unwrap(), "a holds it");
        assert!(a.try_acquire_or_renew().await.unwrap(), "a renews");
        // a stops renewing: b waits a lease duration from when it saw a's last renewal.
        assert!(!b.try_acquire_or_renew().await.unwrap());
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(b.try_acquire_or_renew().await.unwrap(), "b takes over after expiry");
        let (record, _) = StoredLease::new(storage.clone(), "/registry", "default", "test")
            .get()
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record["spec"]["holderIdentity"], "b");
        assert_eq!(record["spec"]["leaseTransitions"], 1);
        assert!(!a.try_acquire_or_renew().await.unwrap(), "a sees b's renewal");
        b.leading.send_replace(true);
        b.release().await.unwrap();
        assert!(
            a.try_acquire_or_renew().await.unwrap(),
            "a takes over at once after the release"
        );
    }

    #[test]
    fn durations_parse_as_go_writes_them() {
        assert_eq!(parse_duration("15s").unwrap(), Duration::from_secs(15));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("15").is_err());
        assert!(parse_duration("s").is_err());
    }
}
