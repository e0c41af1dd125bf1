//! The cluster's admission webhooks written for one version of a kind judge writes to its other
//! versions (`matchPolicy: Equivalent`, the default), the scale subresource included: a Scale is
//! an `autoscaling/v1` Scale at every version, so it is sent unchanged, named at the webhook's
//! version. The configurations come from the core-API stand-in; the webhook is a real HTTPS
//! server.

use std::sync::Arc;

use apiary_runtime::admission::Chain;
use apiary_runtime::admission::namespace::Namespaces;
use apiary_runtime::admission::webhook::MutatingWebhooks;
use apiary_runtime::admission::webhook::client::{Caller, Credentials};
use apiary_runtime::prelude::*;
use apiary_runtime::registry::scale::ScaleChange;
use apiary_runtime::registry::{Store, WriteOptions};
use apiary_runtime::storage::{self, WatchCache};
use apiary_runtime::testing::webhook::patch_response;
use apiary_runtime::testing::{AdmissionWebhook, CoreApiStandIn};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct DialSpec {
    pub replicas: i32,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct DialStatus {
    #[serde(default)]
    pub replicas: i32,
}

/// v1, stored.
#[derive(ApiResource, Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[api(
    group = "example.com",
    version = "v1",
    kind = "Dial",
    namespaced,
    status = "DialStatus",
    scale(spec = ".spec.replicas", status = ".status.replicas")
)]
pub struct Dial {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: DialSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<DialStatus>,
}

/// v1beta1, the same shape, converted to v1.
#[derive(ApiResource, Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[api(group = "example.com", version = "v1beta1", kind = "Dial", namespaced, status = "DialStatus",
      scale(spec = ".spec.replicas", status = ".status.replicas"), storage = Dial)]
pub struct DialBeta {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: DialSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<DialStatus>,
}

impl From<DialBeta> for Dial {
    fn from(d: DialBeta) -> Dial {
        Dial {
            metadata: d.metadata,
            spec: d.spec,
            status: d.status,
        }
    }
}

impl From<Dial> for DialBeta {
    fn from(d: Dial) -> DialBeta {
        DialBeta {
            metadata: d.metadata,
            spec: d.spec,
            status: d.status,
        }
    }
}

/// A mutating webhook for `dials/scale` at v1 only is called for a scale of the v1beta1 Dial,
/// sees the Scale named at v1 (the request's version as `requestResource`), and its patch of the
/// replicas is stored.
#[tokio::test(flavor = "multi_thread")]
async fn a_scale_webhook_for_one_version_judges_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let core = CoreApiStandIn::start(&dir.path().join("core"));
    let webhook = AdmissionWebhook::start(&dir.path().join("webhook"), |_, _| {
        patch_response(json!([{"op": "replace", "path": "/spec/replicas", "value": 7}]))
    });
    core.set_webhook_configuration(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "scale"},
        "webhooks": [{
            "name": "scale.example.com", "clientConfig": webhook.url_config("/scale"),
            "rules": [{"apiGroups": ["example.com"], "apiVersions": ["v1"],
                       "operations": ["UPDATE"], "resources": ["dials/scale"]}],
            "sideEffects": "None", "admissionReviewVersions": ["v1"],
        }],
    }));
    let client = core.client().await;
    let chain = Chain::default();
    chain.push(Arc::new(MutatingWebhooks::start(
        client.clone(),
        Namespaces::start(client),
        Caller::new(Default::default(), Credentials::default()),
        None,
        None,
    )));
    let storage = WatchCache::new(storage::memory(), 100);
    let v1 = Arc::new(Store::serving::<Dial>(storage.clone(), "/registry", &[]).unwrap());
    let beta = Store::serving::<DialBeta>(storage, "/registry", std::slice::from_ref(&v1))
        .unwrap()
        .with_admission(chain.clone());
    core.until_ready(&chain).await;
    let dial = json!({"metadata": {"name": "d"}, "spec": {"replicas": 1}});
    beta.create(Some("default"), dial, &WriteOptions::default())
        .await
        .unwrap();

    let scale = json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                       "metadata": {"name": "d", "namespace": "default"}, "spec": {"replicas": 3}});
    let options = WriteOptions {
        subresource: "scale",
        ..Default::default()
    };
    let scaled = beta
        .update_scale(Some("default"), "d", ScaleChange::Replace(scale), &options)
        .await
        .unwrap();
    assert_eq!(
        scaled.object["spec"]["replicas"], 7,
        "the webhook's patch: {}",
        scaled.object
    );
    let reviews = webhook.received();
    assert_eq!(reviews.len(), 1, "{reviews:?}");
    let request: &Value = &reviews[0].1["request"];
    assert_eq!(
        request["resource"],
        json!({"group": "example.com", "version": "v1", "resource": "dials"})
    );
    assert_eq!(request["subResource"], "scale");
    assert_eq!(request["requestResource"]["version"], "v1beta1");
    assert_eq!(request["object"]["kind"], "Scale");
    assert_eq!(request["object"]["spec"]["replicas"], 3);
}
