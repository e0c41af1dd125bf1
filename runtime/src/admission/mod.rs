//! Admission, as k8s.io/apiserver's `admission/`: what runs on every write besides the
//! resource's own strategy, in upstream's order: every mutating step, then the strategy's
//! defaults and validation (in the registry), then every validating step.
//!
//! - [`Plugin`]: one admission step over JSON objects, with the request's [`Attributes`];
//!   [`Chain`]: the ordered steps the registry runs.
//! - [`typed`]: a [`Plugin`] written against the Rust type (`TypedPlugin<T>`), for servers'
//!   own rules (sample-apiserver's BanFlunder is the model).
//!
//! - [`scope`]: what one request's steps share (deadline, warnings, audit annotations).
//! - [`namespace`]: NamespaceLifecycle, from the core API's namespaces.
//! - [`policy`]: ValidatingAdmissionPolicies, with [`params`] (their params' informers) and
//!   [`cel`] (the CEL variables of a request).
//! - [`webhook`]: the cluster's Mutating- and ValidatingAdmissionWebhooks.
//! - [`cluster`]: which of the cluster's plugins run, from the flags.
//! - [`metrics`]: upstream's admission metrics.

pub mod cel;
pub mod cluster;
pub mod matching;
pub mod metrics;
pub mod namespace;
pub mod params;
pub mod policy;
pub mod scope;
mod typecheck;
pub mod typed;
pub mod webhook;

use std::sync::{Arc, OnceLock, RwLock, Weak};

use serde_json::Value;

use crate::filters::authn::UserInfo;
use crate::resource::ResourceMeta;
use crate::status::ApiResult;

/// The attribute that admission steps are written with (they are async trait methods).
pub use async_trait::async_trait;
pub use scope::RequestScope;
pub use typed::{TypedAdmission, TypedPlugin};

/// The admission operation, as AdmissionReview names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// POST (and an apply that creates).
    Create,
    /// PUT, PATCH, apply, and writes to `status` and `scale`.
    Update,
    /// DELETE (each object of a deletecollection too).
    Delete,
}

impl Operation {
    /// `CREATE`, `UPDATE` or `DELETE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
        }
    }
}

/// What an admission step knows of the request (k8s.io/apiserver's `admission.Attributes`).
#[derive(Clone, Copy, Debug)]
pub struct Attributes<'a> {
    /// The operation.
    pub operation: Operation,
    /// The resource written.
    pub meta: &'a ResourceMeta,
    /// `""`, `"status"` or `"scale"`.
    pub subresource: &'a str,
    /// The object's namespace (`None` for cluster-scoped resources).
    pub namespace: Option<&'a str>,
    /// The object's name.
    pub name: &'a str,
    /// Who asks; `None` for the server's own writes (its controllers).
    pub user: Option<&'a UserInfo>,
    /// `dryRun=All`: nothing will be persisted, and a step must cause no side effects.
    pub dry_run: bool,
    /// The stored object, for updates and deletes.
    pub old_object: Option<&'a Value>,
    /// The request's options as webhooks receive them (`CreateOptions`, `UpdateOptions` or
    /// `DeleteOptions`, `meta.k8s.io/v1`).
    pub options: Option<&'a Value>,
    /// The request's deadline, and where steps leave warnings and audit annotations.
    pub scope: Option<&'a RequestScope>,
    /// The kind's other versions, for steps written against another version than the request's.
    pub codec: Option<&'a crate::registry::versions::Codec>,
    /// The resource as the request named it, when a step sees the request converted to
    /// another version (`meta`): webhooks' `requestKind` and `requestResource`.
    pub request_meta: Option<&'a ResourceMeta>,
}

impl<'a> Attributes<'a> {
    /// A request without user, subresource, dry run or old object (set them after).
    pub fn new(operation: Operation, meta: &'a ResourceMeta, namespace: Option<&'a str>, name: &'a str) -> Self {
        Attributes {
            operation,
            meta,
            subresource: "",
            namespace,
            name,
            user: None,
            dry_run: false,
            old_object: None,
            options: None,
            scope: None,
            codec: None,
            request_meta: None,
        }
    }

    /// The same, with the request's `options` and `scope`.
    pub fn within(self, scope: &'a RequestScope, options: &'a Value) -> Self {
        Attributes {
            scope: Some(scope),
            options: Some(options),
            ..self
        }
    }

    /// Leave a warning for the client (when the request has a scope).
    pub fn warn(&self, text: &str) {
        if let Some(scope) = self.scope {
            scope.warn(text);
        }
    }

    /// The same, made by `user` on `subresource`, with `dry_run`.
    pub fn by(self, user: Option<&'a UserInfo>, subresource: &'a str, dry_run: bool) -> Self {
        Attributes {
            user,
            subresource,
            dry_run,
            ..self
        }
    }
}

/// One admission step. Both methods default to doing nothing, so a step implements what it
/// needs; an error (403 Forbidden for a policy denial, as upstream) ends the request.
#[async_trait]
pub trait Plugin: Send + Sync + 'static {
    /// The step's name, for logs and errors.
    fn name(&self) -> &str;

    /// Whether [`mutate`](Self::mutate) may change objects now: the first step that does sees
    /// the object defaulted (as upstream's decoding defaults a request), and a chain of steps
    /// that do not spares every write the typed round trip defaulting takes.
    fn mutates(&self) -> bool {
        true
    }

    /// Whether this step asks to be called again ([`reinvoke`](Self::reinvoke)) when a later
    /// step changes the object it left (upstream's `reinvocationPolicy: IfNeeded`).
    fn reinvocable(&self) -> bool {
        false
    }

    /// Called once more, after every mutating step ran, when a later step changed the object
    /// this step left; upstream's reinvocation, which may call a step more than once in all.
    async fn reinvoke(&self, attributes: &Attributes<'_>, object: &mut Value) -> ApiResult<()> {
        let _ = (attributes, object);
        Ok(())
    }

    /// Change `object` before the strategy's validation runs (not called for deletes).
    async fn mutate(&self, attributes: &Attributes<'_>, object: &mut Value) -> ApiResult<()> {
        let _ = (attributes, object);
        Ok(())
    }

    /// Whether the step can decide now (its caches have synced); `/readyz` fails until then.
    async fn ready(&self) -> Result<(), String> {
        Ok(())
    }

    /// Accept or refuse `object` after the strategy's validation; for a delete, `object` is
    /// the stored object.
    async fn validate(&self, attributes: &Attributes<'_>, object: &Value) -> ApiResult<()> {
        let _ = (attributes, object);
        Ok(())
    }
}

/// The admission steps of a server, shared by all its stores; steps are added while the server
/// is assembled, and frozen into one immutable list when it runs ([`freeze`](Chain::freeze)).
#[derive(Clone, Default)]
pub struct Chain {
    plugins: Arc<RwLock<Vec<Arc<dyn Plugin>>>>,
    /// The frozen steps. Held strongly by the running server's [`Frozen`] alone: steps often
    /// hold stores whose chain holds them, and this way that cycle ends when the server does.
    frozen: Arc<OnceLock<Weak<Steps>>>,
    metrics: Arc<RwLock<Option<Arc<metrics::AdmissionMetrics>>>>,
}

/// A chain's steps, in order.
type Steps = [Arc<dyn Plugin>];

/// A chain's frozen steps, kept alive by the server while it runs.
pub struct Frozen(#[allow(dead_code)] Arc<Steps>);

impl Chain {
    /// Append a step; steps run in the order they were added.
    pub fn push(&self, plugin: Arc<dyn Plugin>) {
        if let Some(mut steps) = self.assembling() {
            steps.push(plugin);
        }
    }

    /// Put steps before all others, in their order (the cluster's own plugins run first, as
    /// upstream).
    pub fn push_front(&self, plugins: Vec<Arc<dyn Plugin>>) {
        if let Some(mut steps) = self.assembling() {
            steps.splice(0..0, plugins);
        }
    }

    /// The steps while the chain is assembled; `None` (logged) once it is frozen, when a
    /// change has no effect.
    fn assembling(&self) -> Option<std::sync::RwLockWriteGuard<'_, Vec<Arc<dyn Plugin>>>> {
        if self.frozen.get().is_some() {
            tracing::warn!("an admission step was added or removed after the server started: it has no effect");
            return None;
        }
        Some(self.plugins.write().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Freeze the steps: every request from now on runs this list, shared without copying or
    /// locking; the returned [`Frozen`] keeps it alive (the server holds it while it runs, and
    /// requests arriving after it is gone are refused with 503 rather than run without steps).
    pub fn freeze(&self) -> Frozen {
        if self.frozen.get().is_some() {
            return Frozen(self.steps().unwrap_or_else(|_| Arc::new([])));
        }
        let steps: Arc<Steps> = match self.assembling() {
            Some(mut steps) => std::mem::take(&mut *steps).into(),
            None => Arc::new([]),
        };
        let _ = self.frozen.set(Arc::downgrade(&steps));
        Frozen(steps)
    }

    /// The steps' names, in order.
    pub fn names(&self) -> Vec<String> {
        self.steps()
            .map(|steps| steps.iter().map(|p| p.name().to_string()).collect())
            .unwrap_or_default()
    }

    /// Keep only the steps whose name passes `keep`.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        if let Some(mut steps) = self.assembling() {
            steps.retain(|p| keep(p.name()));
        }
    }

    /// Record each phase's duration in `metrics`.
    pub fn observe(&self, metrics: Arc<metrics::AdmissionMetrics>) {
        *self.metrics.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(metrics);
    }

    fn timer(&self) -> Option<metrics::StepTimer> {
        self.metrics
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .map(metrics::StepTimer::start)
    }

    /// The steps: the frozen list, or (before the server runs, or in a test that builds a
    /// store by hand) the ones added so far.
    fn steps(&self) -> ApiResult<Arc<Steps>> {
        match self.frozen.get() {
            Some(frozen) => frozen
                .upgrade()
                .ok_or_else(|| crate::status::ApiError::unavailable("the server is shutting down")),
            None => Ok(self
                .plugins
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .cloned()
                .collect()),
        }
    }

    /// The first step that is not ready, and why.
    pub async fn ready(&self) -> Result<(), (String, String)> {
        let steps = self.steps().map_err(|e| ("admission".to_string(), e.message))?;
        for plugin in steps.iter() {
            plugin.ready().await.map_err(|e| (plugin.name().to_string(), e))?;
        }
        Ok(())
    }

    /// Every mutating step, in order; `defaults` is applied to `object` once, before the first
    /// step that [mutates](Plugin::mutates), so mutating webhooks and steps see the object
    /// with its defaults as kube-apiserver sends it.
    pub async fn mutate(
        &self,
        attributes: &Attributes<'_>,
        object: &mut Value,
        defaults: impl FnOnce(&mut Value),
    ) -> ApiResult<()> {
        let steps = self.steps()?;
        let timer = self.timer();
        let mut result = Ok(());
        let mut defaults = Some(defaults);
        // What each step asking for reinvocation left.
        let mut left: Vec<(&Arc<dyn Plugin>, Value)> = Vec::new();
        for plugin in steps.iter() {
            if plugin.mutates()
                && let Some(defaults) = defaults.take()
            {
                defaults(object);
            }
            result = plugin.mutate(attributes, object).await;
            if result.is_err() {
                break;
            }
            if plugin.reinvocable() {
                left.push((plugin, object.clone()));
            }
        }
        if result.is_ok() {
            for (plugin, left) in left {
                if left != *object {
                    result = plugin.reinvoke(attributes, object).await;
                    if result.is_err() {
                        break;
                    }
                }
            }
        }
        if let Some(timer) = timer {
            timer.done("admit", attributes.operation, result.is_err());
        }
        result
    }

    /// Every validating step, in order.
    pub async fn validate(&self, attributes: &Attributes<'_>, object: &Value) -> ApiResult<()> {
        let steps = self.steps()?;
        let timer = self.timer();
        let mut result = Ok(());
        for plugin in steps.iter() {
            result = plugin.validate(attributes, object).await;
            if result.is_err() {
                break;
            }
        }
        if let Some(timer) = timer {
            timer.done("validate", attributes.operation, result.is_err());
        }
        result
    }
}

/// Watch every `K` of the core API through `client` into a store (list, then watch, resumed
/// with backoff, in a task of its own); `who` names the watcher in its log lines.
pub(crate) fn watched<K>(client: &kube::Client, who: &'static str) -> kube::runtime::reflector::Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    watched_with(kube::Api::<K>::all(client.clone()), (), who, |_: &K| {}).0
}

/// [`watched`] for a kind known at run time (`dyntype`), with the task's handle to stop it;
/// `seen` is called with every object as it is listed, added or changed.
pub(crate) fn watched_with<K>(
    api: kube::Api<K>,
    dyntype: K::DynamicType,
    who: &'static str,
    seen: impl Fn(&K) + Send + 'static,
) -> (kube::runtime::reflector::Store<K>, tokio::task::AbortHandle)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Clone + Eq + std::hash::Hash + Send + Sync,
{
    use futures::StreamExt as _;
    use kube::runtime::WatchStreamExt as _;
    let plural = K::plural(&dyntype).to_string();
    let writer = kube::runtime::reflector::store::Writer::new(dyntype);
    let store = writer.as_reader();
    let feed = kube::runtime::reflector::reflector(writer, kube::runtime::watcher(api, Default::default()))
        .default_backoff()
        .for_each(move |event| {
            match event {
                Err(e) => tracing::warn!("{who}: watching {plural}: {e}"),
                Ok(kube::runtime::watcher::Event::Apply(k) | kube::runtime::watcher::Event::InitApply(k)) => seen(&k),
                Ok(_) => {}
            }
            futures::future::ready(())
        });
    (store, tokio::spawn(feed).abort_handle())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A step that holds what it was given, as steps hold stores.
    struct Holding(#[allow(dead_code)] Arc<()>);

    #[async_trait]
    impl Plugin for Holding {
        fn name(&self) -> &str {
            "holding"
        }
    }

    /// Frozen, the steps live exactly as long as the server's hold on them: a request after
    /// that is refused (never run without its steps), and what the steps held is released
    /// with no clearing by hand.
    #[tokio::test]
    async fn frozen_steps_live_as_long_as_the_server_holds_them() {
        let held = Arc::new(());
        let chain = Chain::default();
        chain.push(Arc::new(Holding(held.clone())));
        let frozen = chain.freeze();
        assert_eq!(chain.names(), ["holding"]);
        let a = Attributes::new(Operation::Create, &crate::resource::TEST_META, None, "x");
        let mut object = serde_json::json!({});
        chain.mutate(&a, &mut object, |_| {}).await.unwrap();
        chain.push(Arc::new(Holding(held.clone())));
        assert_eq!(chain.names(), ["holding"], "added after the freeze: no effect");
        drop(frozen);
        assert_eq!(Arc::strong_count(&held), 1, "the steps are gone");
        let refused = chain.validate(&a, &object).await.unwrap_err();
        assert_eq!((refused.code, refused.reason), (503, "ServiceUnavailable"));
    }
}
