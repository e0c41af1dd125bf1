//! The cluster's admission webhooks (k8s.io/apiserver `plugin/webhook`):
//! MutatingAdmissionWebhook and ValidatingAdmissionWebhook, from the
//! `admissionregistration.k8s.io/v1` configurations watched on the core API.
//!
//! - `hook`: one webhook with its defaults, and whether it applies to a request.
//! - `review`: the AdmissionReview sent and the answer expected.
//! - `dispatch`: one call, with failurePolicy, dry run, timeout, metrics and annotations.
//! - [`client`]: pooled HTTPS clients, service resolution, credentials.
//!
//! Mutating webhooks run one after another (configurations by name, webhooks in order), each
//! seeing the previous one's patch; those with `reinvocationPolicy: IfNeeded` are called once
//! more when a later webhook changed the object, and again when a later admission step did
//! (the chain's reinvocation). Validating webhooks run concurrently; the
//! first refusal in their order is the answer.

pub mod client;
mod dispatch;
mod hook;
mod review;

use std::sync::Arc;

use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use kube::runtime::reflector::Store;
use serde_json::{Value, json};

use super::metrics::AdmissionMetrics;
use super::namespace::Namespaces;
use super::{Attributes, Operation, Plugin, async_trait};
use crate::filters::authz::Authorizer;
use crate::registry::scale::scale_of;
use crate::status::{ApiError, ApiResult};
use client::Caller;
use dispatch::{Called, Dispatcher};
use hook::Hook;

/// One of the two webhook plugins: the configurations of kind `K`, watched.
pub struct Webhooks<K: kube::Resource<DynamicType = ()> + 'static> {
    configurations: Store<K>,
    namespaces: Arc<Namespaces>,
    caller: Caller,
    metrics: Option<Arc<AdmissionMetrics>>,
    programs: super::cel::Programs,
    /// Answers `authorizer` checks in `matchConditions`.
    authorizer: Option<Arc<Authorizer>>,
}

/// MutatingAdmissionWebhook.
pub type MutatingWebhooks = Webhooks<MutatingWebhookConfiguration>;
/// ValidatingAdmissionWebhook.
pub type ValidatingWebhooks = Webhooks<ValidatingWebhookConfiguration>;

impl<K> Webhooks<K>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    /// Watch the configurations through `client` (in a task of its own); call webhooks with
    /// `caller`, read namespace labels from `namespaces`, answer `matchConditions`'
    /// `authorizer` checks with `authorizer` (unbound without one).
    pub fn start(
        client: kube::Client,
        namespaces: Arc<Namespaces>,
        caller: Caller,
        metrics: Option<Arc<AdmissionMetrics>>,
        authorizer: Option<Arc<Authorizer>>,
    ) -> Self {
        let configurations = super::watched(&client, "admission webhooks");
        Webhooks {
            configurations,
            namespaces,
            caller,
            metrics,
            programs: Default::default(),
            authorizer,
        }
    }

    /// The configurations, by name (the order upstream calls them in).
    fn configurations(&self) -> Vec<Arc<K>> {
        let mut all = self.configurations.state();
        all.sort_by(|a, b| a.meta().name.cmp(&b.meta().name));
        all
    }

    async fn ready(&self) -> Result<(), String> {
        tokio::time::timeout(std::time::Duration::ZERO, self.configurations.wait_until_ready())
            .await
            .map_err(|_| format!("the {} have not been listed yet", K::plural(&())))?
            .map_err(|e| e.to_string())?;
        self.namespaces.ready().await
    }

    fn dispatcher(&self, kind: &'static str, annotation: &'static str) -> Dispatcher<'_> {
        Dispatcher {
            caller: &self.caller,
            programs: &self.programs,
            namespaces: &self.namespaces,
            metrics: self.metrics.as_deref(),
            authorizer: self.authorizer.as_ref(),
            kind,
            annotation,
        }
    }
}

/// The AdmissionRequest of `a` as admission CEL's `request` variable sees it.
pub(crate) fn request_variable(a: &Attributes<'_>) -> Value {
    let mut review = review::request(a, None, None, "", "v1");
    review["request"].take()
}

/// Every webhook of `configurations`, in order, read by `hook`.
fn hooks_of<'a, K: kube::Resource, W: 'a>(
    configurations: &'a [Arc<K>],
    webhooks: impl Fn(&'a K) -> &'a Option<Vec<W>>,
    hook: impl Fn(&'a str, &'a W) -> Hook<'a>,
) -> Vec<Hook<'a>> {
    configurations
        .iter()
        .flat_map(|c| {
            let name = c.meta().name.as_deref().unwrap_or_default();
            let hook = &hook;
            webhooks(c).iter().flatten().map(move |w| hook(name, w))
        })
        .collect()
}

/// A pass of the mutating webhooks: the first, or the reinvocation of those with
/// `reinvocationPolicy: IfNeeded` after a later admission step changed the object.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Round {
    First,
    Reinvocation,
}

impl MutatingWebhooks {
    /// Run the mutating webhooks that apply, patching `view` (the object, or its Scale).
    async fn run(&self, a: &Attributes<'_>, view: &mut Value, round: Round) -> ApiResult<()> {
        let configurations = self.configurations();
        let hooks = hooks_of(&configurations, |c| &c.webhooks, Hook::mutating);
        if hooks.is_empty() {
            return Ok(());
        }
        let dispatcher = self.dispatcher("admit", "mutation");
        if round == Round::Reinvocation {
            for (index, hook) in hooks.iter().enumerate().filter(|(_, h)| h.reinvoke) {
                self.invoke(&dispatcher, hook, a, view, (1, index)).await?;
            }
            return Ok(());
        }
        let deleting = a.operation == Operation::Delete;
        // The object as each reinvocable webhook left it.
        let mut reinvocable: Vec<(usize, Value)> = Vec::new();
        for (index, hook) in hooks.iter().enumerate() {
            if self.invoke(&dispatcher, hook, a, view, (0, index)).await? && hook.reinvoke && !deleting {
                reinvocable.push((index, view.clone()));
            }
        }
        for (index, left) in reinvocable {
            if left != *view {
                self.invoke(&dispatcher, &hooks[index], a, view, (1, index)).await?;
            }
        }
        Ok(())
    }

    /// Call `hook` if it applies: to the request as it is, or converted to the version its
    /// rules name (the patched object converted back); whether it was called.
    async fn invoke(
        &self,
        dispatcher: &Dispatcher<'_>,
        hook: &Hook<'_>,
        a: &Attributes<'_>,
        view: &mut Value,
        at: (usize, usize),
    ) -> ApiResult<bool> {
        let object = (a.operation != Operation::Delete).then_some(&*view);
        if dispatcher.applies(hook, a, object).await? {
            self.call(dispatcher, hook, a, view, at).await?;
            return Ok(true);
        }
        let Some(equivalent) = dispatcher.equivalent(hook, a, object).await? else {
            return Ok(false);
        };
        let mut converted = equivalent.object.clone().unwrap_or_default();
        self.call(dispatcher, hook, &equivalent.attributes(a), &mut converted, at)
            .await?;
        if a.operation != Operation::Delete
            && let Some(back) = equivalent.back(a, converted)?
        {
            *view = back;
        }
        Ok(true)
    }

    async fn call(
        &self,
        dispatcher: &Dispatcher<'_>,
        hook: &Hook<'_>,
        a: &Attributes<'_>,
        view: &mut Value,
        at: (usize, usize),
    ) -> ApiResult<()> {
        let object = (a.operation != Operation::Delete).then_some(&*view);
        let Called::Allowed(answer) = dispatcher.call(hook, a, object, at).await? else {
            return Ok(());
        };
        let mutated = answer.patch.is_some();
        if let Some(patch) = answer.patch {
            json_patch::patch(view, &patch).map_err(|e| {
                ApiError::internal(format!("applying the patch of admission webhook {:?}: {e}", hook.name))
            })?;
        }
        if let Some(scope) = a.scope {
            scope.annotate(
                format!("mutation.webhook.admission.k8s.io/round_{}_index_{}", at.0, at.1),
                json!({"configuration": hook.configuration, "webhook": hook.name, "mutated": mutated}).to_string(),
            );
        }
        Ok(())
    }
}

/// The Scale view of the old object, for a write to `scale` (webhooks see Scales there).
fn scale_views(a: &Attributes<'_>) -> ApiResult<Option<Value>> {
    match (a.subresource, a.old_object) {
        ("scale", Some(old)) => scale_of(a.meta, old).map(Some),
        _ => Ok(None),
    }
}

#[async_trait]
impl Plugin for MutatingWebhooks {
    fn name(&self) -> &str {
        "MutatingAdmissionWebhook"
    }

    fn mutates(&self) -> bool {
        !self.configurations.state().is_empty()
    }

    fn reinvocable(&self) -> bool {
        self.configurations.state().iter().any(|c| {
            c.webhooks
                .iter()
                .flatten()
                .any(|w| w.reinvocation_policy.as_deref() == Some("IfNeeded"))
        })
    }

    async fn reinvoke(&self, a: &Attributes<'_>, object: &mut Value) -> ApiResult<()> {
        self.on_view(a, object, Round::Reinvocation).await
    }

    async fn ready(&self) -> Result<(), String> {
        Webhooks::ready(self).await
    }

    async fn mutate(&self, a: &Attributes<'_>, object: &mut Value) -> ApiResult<()> {
        self.on_view(a, object, Round::First).await
    }

    /// Deletes are not mutated, but mutating webhooks are still asked (and may refuse).
    async fn validate(&self, a: &Attributes<'_>, object: &Value) -> ApiResult<()> {
        if a.operation != Operation::Delete {
            return Ok(());
        }
        self.run(a, &mut object.clone(), Round::First).await
    }
}

impl MutatingWebhooks {
    /// Run the webhooks of `round` on the object, or on its Scale for `scale` (its replicas
    /// written back).
    async fn on_view(&self, a: &Attributes<'_>, object: &mut Value, round: Round) -> ApiResult<()> {
        if a.subresource != "scale" {
            return self.run(a, object, round).await;
        }
        let old = scale_views(a)?;
        let a = &Attributes {
            old_object: old.as_ref(),
            ..*a
        };
        let mut scale = scale_of(a.meta, object)?;
        self.run(a, &mut scale, round).await?;
        if let (Some(paths), Some(replicas)) = (a.meta.scale, scale.pointer("/spec/replicas")) {
            crate::schema::jsonpath::set(object, paths.spec_replicas, replicas.clone()).map_err(ApiError::internal)?;
        }
        Ok(())
    }
}

#[async_trait]
impl Plugin for ValidatingWebhooks {
    fn name(&self) -> &str {
        "ValidatingAdmissionWebhook"
    }

    fn mutates(&self) -> bool {
        false
    }

    async fn ready(&self) -> Result<(), String> {
        Webhooks::ready(self).await
    }

    async fn validate(&self, a: &Attributes<'_>, object: &Value) -> ApiResult<()> {
        let configurations = self.configurations();
        let hooks = hooks_of(&configurations, |c| &c.webhooks, Hook::validating);
        if hooks.is_empty() {
            return Ok(());
        }
        let (old, view);
        let a = if a.subresource == "scale" {
            old = scale_views(a)?;
            &Attributes {
                old_object: old.as_ref(),
                ..*a
            }
        } else {
            a
        };
        let object = match (a.operation, a.subresource) {
            (Operation::Delete, _) => None,
            (_, "scale") => {
                view = scale_of(a.meta, object)?;
                Some(&view)
            }
            _ => Some(object),
        };
        let dispatcher = self.dispatcher("validating", "validating");
        let calls = hooks.iter().enumerate().map(|(index, hook)| {
            let dispatcher = &dispatcher;
            async move {
                if dispatcher.applies(hook, a, object).await? {
                    dispatcher.call(hook, a, object, (0, index)).await?;
                } else if let Some(equivalent) = dispatcher.equivalent(hook, a, object).await? {
                    let converted = &equivalent.attributes(a);
                    dispatcher
                        .call(hook, converted, equivalent.object.as_ref(), (0, index))
                        .await?;
                }
                Ok::<_, ApiError>(())
            }
        });
        futures::future::join_all(calls).await.into_iter().collect()
    }
}
