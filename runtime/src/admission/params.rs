//! The params of ValidatingAdmissionPolicies (a policy's `paramKind`, a binding's `paramRef`),
//! read as kube-apiserver reads them: from an informer per params kind, started when a binding
//! first needs the kind (found by discovery), so a request looks params up in memory instead
//! of calling the core API for each binding. Like upstream's, what a request sees is the
//! informer's view: a change to a params object applies once its watch event arrives.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{ParamKind, ParamRef};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::reflector::{ObjectRef, Store};
use kube_core::{Selector, SelectorExt as _};
use serde_json::Value;

/// Params one binding may select at most.
pub const MAX_PARAMS: usize = 100;
/// Params kinds watched at most; past it, the watches start over.
const MAX_KINDS: usize = 256;
/// How long a request waits for a newly watched kind's first list.
const FIRST_LIST: Duration = Duration::from_secs(5);

/// One params kind's informer.
struct Watched {
    resource: ApiResource,
    namespaced: bool,
    store: Store<DynamicObject>,
    task: tokio::task::AbortHandle,
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The params kinds' informers, started on demand.
pub struct Params {
    client: kube::Client,
    kinds: Mutex<HashMap<String, Arc<Watched>>>,
}

impl Params {
    /// No kind watched yet; they are read through `client`.
    pub fn new(client: kube::Client) -> Params {
        Params {
            client,
            kinds: Mutex::default(),
        }
    }

    /// The params each evaluation of a binding sees: `[None]` without a `paramKind`; else the
    /// object `paramRef` names, or those its selector picks (at most [`MAX_PARAMS`]); none
    /// found: `parameterNotFoundAction` Allow admits (no evaluation), Deny refuses.
    /// `namespace` is the request's, used when the `paramRef` names none.
    pub async fn select(
        &self,
        kind: Option<&ParamKind>,
        reference: Option<&ParamRef>,
        namespace: Option<&str>,
    ) -> Result<Vec<Option<Value>>, String> {
        let Some(kind) = kind else { return Ok(vec![None]) };
        let Some(reference) = reference else {
            return Err("the policy has a paramKind but the binding no paramRef".into());
        };
        let watched = self.watched(kind).await?;
        if tokio::time::timeout(FIRST_LIST, watched.store.wait_until_ready())
            .await
            .is_err()
        {
            return Err(format!("params of kind {} are not listed yet", watched.resource.kind));
        }
        let namespace = match (watched.namespaced, reference.namespace.as_deref().or(namespace)) {
            (false, _) => None,
            (true, Some(ns)) => Some(ns),
            (true, None) => {
                return Err(
                    "cannot use a namespaced paramRef in a policy binding that matches cluster-scoped resources".into(),
                );
            }
        };
        let found: Vec<Value> = match (&reference.name, &reference.selector) {
            (Some(name), _) => {
                let mut key = ObjectRef::new_with(name, watched.resource.clone());
                if let Some(ns) = namespace {
                    key = key.within(ns);
                }
                watched
                    .store
                    .get(&key)
                    .iter()
                    .filter_map(|o| serde_json::to_value(o.as_ref()).ok())
                    .collect()
            }
            (None, selector) => {
                let selector = selector
                    .clone()
                    .map(Selector::try_from)
                    .transpose()
                    .map_err(|e| format!("paramRef selector: {e}"))?
                    .unwrap_or_default();
                let mut state = watched.store.state();
                state.retain(|o| {
                    (namespace.is_none() || o.metadata.namespace.as_deref() == namespace)
                        && selector.matches(o.metadata.labels.as_ref().unwrap_or(&Default::default()))
                });
                // The store's order is a hash's: name order, as a list would give.
                state.sort_by(|a, b| {
                    (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
                });
                state
                    .iter()
                    .take(MAX_PARAMS)
                    .filter_map(|o| serde_json::to_value(o.as_ref()).ok())
                    .collect()
            }
        };
        if !found.is_empty() {
            return Ok(found.into_iter().map(Some).collect());
        }
        match reference.parameter_not_found_action.as_deref() {
            Some("Allow") => Ok(Vec::new()),
            _ => Err("no params found for policy binding with `Deny` parameterNotFoundAction".to_string()),
        }
    }

    /// The informer of `kind`, started (after discovery) if it is not running yet.
    async fn watched(&self, kind: &ParamKind) -> Result<Arc<Watched>, String> {
        let api_version = kind.api_version.clone().unwrap_or_default();
        let kind_name = kind.kind.clone().unwrap_or_default();
        let key = format!("{api_version}/{kind_name}");
        if let Some(watched) = self.lock().get(&key) {
            return Ok(watched.clone());
        }
        let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
        let gvk = GroupVersionKind::gvk(group, version, &kind_name);
        let (resource, capabilities) = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .map_err(|e| format!("params of kind {kind_name}: {e}"))?;
        let mut kinds = self.lock();
        // Another request may have started it meanwhile.
        if let Some(watched) = kinds.get(&key) {
            return Ok(watched.clone());
        }
        if kinds.len() >= MAX_KINDS {
            kinds.clear();
        }
        let api = kube::Api::<DynamicObject>::all_with(self.client.clone(), &resource);
        let (store, task) = super::watched_with(api, resource.clone(), "ValidatingAdmissionPolicy params", |_| {});
        let watched = Arc::new(Watched {
            resource,
            namespaced: capabilities.scope == kube::discovery::Scope::Namespaced,
            store,
            task,
        });
        kinds.insert(key, watched.clone());
        Ok(watched)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Watched>>> {
        self.kinds.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
