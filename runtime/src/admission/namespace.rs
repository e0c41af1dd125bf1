//! NamespaceLifecycle, as k8s.io/apiserver's: a namespaced object may be created only in a
//! namespace the core API has, and not in one being terminated. Backed by a namespace watch
//! on the core API (list, then watch, resumed with backoff after errors and 410s) with a live
//! GET when the cache does not know the namespace. Updates, deletes and cluster-scoped objects
//! pass.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::{Value, json};

use super::{Attributes, Operation, Plugin, async_trait};
use crate::status::{ApiError, ApiResult};

/// How long a create waits for the first namespace list before it is refused.
const SYNC_WAIT: Duration = Duration::from_secs(5);

/// The core API's namespaces, as the admission steps see them: a watched cache, and a live
/// GET for names the cache does not know. Shared by NamespaceLifecycle and the webhooks'
/// `namespaceSelector`.
pub struct Namespaces {
    cache: Store<Namespace>,
    api: kube::Api<Namespace>,
}

impl Namespaces {
    /// Watch the core API's namespaces through `client` (in a task of its own).
    pub fn start(client: kube::Client) -> Arc<Self> {
        let cache = super::watched(&client, "NamespaceLifecycle");
        let api = kube::Api::<Namespace>::all(client);
        Arc::new(Namespaces { cache, api })
    }

    /// Whether the first list has arrived.
    pub async fn ready(&self) -> Result<(), String> {
        tokio::time::timeout(Duration::ZERO, self.cache.wait_until_ready())
            .await
            .map(drop)
            .map_err(|_| "the namespace watch has not listed the core API's namespaces yet".to_string())
    }

    /// The namespace from the cache, or from a live GET when the cache does not know it (yet).
    pub async fn lookup(&self, name: &str) -> ApiResult<Option<Namespace>> {
        if tokio::time::timeout(SYNC_WAIT, self.cache.wait_until_ready())
            .await
            .is_err()
        {
            return Err(ApiError::new(403, "Forbidden", "not yet ready to handle request"));
        }
        if let Some(cached) = self.cache.get(&ObjectRef::new(name)) {
            return Ok(Some((*cached).clone()));
        }
        self.api
            .get_opt(name)
            .await
            .map_err(|e| ApiError::internal(format!("looking up namespace {name:?}: {e}")))
    }
}

/// The NamespaceLifecycle admission step.
pub struct NamespaceLifecycle {
    namespaces: Arc<Namespaces>,
}

impl NamespaceLifecycle {
    /// The step, deciding from `namespaces`.
    pub fn new(namespaces: Arc<Namespaces>) -> Self {
        NamespaceLifecycle { namespaces }
    }
}

#[async_trait]
impl Plugin for NamespaceLifecycle {
    fn name(&self) -> &str {
        "NamespaceLifecycle"
    }

    fn mutates(&self) -> bool {
        false
    }

    async fn ready(&self) -> Result<(), String> {
        self.namespaces.ready().await
    }

    async fn mutate(&self, attributes: &Attributes<'_>, _object: &mut Value) -> ApiResult<()> {
        let Some(namespace) = attributes
            .namespace
            .filter(|_| attributes.operation == Operation::Create)
        else {
            return Ok(());
        };
        let found = self.namespaces.lookup(namespace).await?;
        let Some(found) = found else {
            return Err(ApiError {
                details: Some(json!({"name": namespace, "kind": "namespaces"})),
                ..ApiError::new(404, "NotFound", format!("namespaces \"{namespace}\" not found"))
            });
        };
        let terminating = found.status.and_then(|s| s.phase).as_deref() == Some("Terminating");
        if terminating {
            let mut denied = ApiError::forbidden(
                attributes.meta,
                attributes.name,
                format!("unable to create new content in namespace {namespace} because it is being terminated"),
            );
            if let Some(details) = denied.details.as_mut() {
                details["causes"] = json!([{
                    "reason": "NamespaceTerminating",
                    "message": format!("namespace {namespace} is being terminated"),
                    "field": "metadata.namespace",
                }]);
            }
            return Err(denied);
        }
        Ok(())
    }
}
