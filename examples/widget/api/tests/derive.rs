//! What `#[derive(ApiResource)]` emits for Widget and for a cluster-scoped type without
//! subresources: metadata, route table, structural schemas, and the kube client side.

use apiary_runtime::prelude::*;
use apiary_runtime::schema::{self, violations};
use apiary_runtime::{Scope, Target};
use kube::Resource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use widget_api::{Widget, WidgetList};

/// A cluster-scoped resource with no status, scale or columns, and irregular plural.
#[derive(ApiResource, Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[api(group = "infra.example.com", version = "v1alpha1", cluster, categories("infra"))]
pub struct Policy {
    #[serde(default)]
    metadata: ObjectMeta,
    spec: PolicySpec,
}

/// A policy.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicySpec {
    /// Rules by name.
    rules: std::collections::BTreeMap<String, String>,
    /// Free-form settings.
    #[serde(default)]
    settings: Option<Value>,
    /// Name pattern.
    #[schemars(regex(pattern = r"^[a-z]+$"), length(max = 20))]
    owner: String,
    /// Optional list.
    #[serde(default)]
    tags: Vec<String>,
}

#[test]
fn widget_metadata() {
    let m = Widget::META;
    assert_eq!(
        (m.group, m.version, m.kind, m.plural, m.singular),
        ("custom.example.com", "v1", "Widget", "widgets", "widget")
    );
    assert_eq!(m.scope, Scope::Namespaced);
    assert_eq!(m.short_names, ["wd"]);
    assert_eq!(m.categories, ["all"]);
    assert!(m.status);
    let scale = m.scale.unwrap();
    assert_eq!(
        (scale.spec_replicas, scale.status_replicas, scale.label_selector),
        (".spec.replicas", ".status.availableReplicas", None)
    );
    let columns: Vec<_> = m
        .columns
        .iter()
        .map(|c| (c.name, c.type_, c.json_path, c.priority))
        .collect();
    assert_eq!(
        columns,
        [
            ("Replicas", "integer", ".spec.replicas", 0),
            ("Available", "integer", ".status.availableReplicas", 0),
            ("Phase", "string", ".status.phase", 0),
            ("Color", "string", ".spec.color", 1),
            ("Image", "string", ".spec.image", 1),
        ]
    );
    assert_eq!(m.selectable_fields, [".spec.color", ".status.phase"]);
    let routes: Vec<_> = m
        .routes()
        .into_iter()
        .map(|r| (r.path, r.target, r.verbs.to_vec()))
        .collect();
    let base = "/apis/custom.example.com/v1";
    assert_eq!(
        routes,
        [
            (
                format!("{base}/namespaces/{{namespace}}/widgets"),
                Target::Collection,
                vec!["create", "deletecollection", "list", "watch"]
            ),
            (
                format!("{base}/namespaces/{{namespace}}/widgets/{{name}}"),
                Target::Object,
                vec!["delete", "get", "patch", "update"]
            ),
            (format!("{base}/widgets"), Target::AllNamespaces, vec!["list", "watch"]),
            (
                format!("{base}/namespaces/{{namespace}}/widgets/{{name}}/status"),
                Target::Status,
                vec!["get", "patch", "update"]
            ),
            (
                format!("{base}/namespaces/{{namespace}}/widgets/{{name}}/scale"),
                Target::Scale,
                vec!["get", "patch", "update"]
            ),
        ]
    );
}

#[test]
fn cluster_metadata_and_plural() {
    let m = Policy::META;
    assert_eq!((m.plural, m.singular, m.kind), ("policies", "policy", "Policy"));
    assert_eq!(m.scope, Scope::Cluster);
    assert!(!m.status && m.scale.is_none() && m.columns.is_empty());
    let routes: Vec<_> = m.routes().into_iter().map(|r| r.path).collect();
    assert_eq!(
        routes,
        [
            "/apis/infra.example.com/v1alpha1/policies",
            "/apis/infra.example.com/v1alpha1/policies/{name}"
        ]
    );
}

/// Every node typed, no anyOf/oneOf/allOf, GVK at the root, metadata by reference.
fn assert_structural(schema: &Value, group: &str, version: &str, kind: &str) {
    assert_eq!(violations(schema), Vec::<String>::new());
    assert_eq!(schema["type"], "object");
    assert_eq!(
        schema["x-kubernetes-group-version-kind"],
        json!([{"group": group, "kind": kind, "version": version}])
    );
    assert_eq!(
        schema["properties"]["metadata"],
        json!({"$ref": format!("#/components/schemas/{}", schema::OBJECT_META)})
    );
    assert_eq!(schema["properties"]["apiVersion"]["type"], "string");
    let text = schema.to_string();
    for forbidden in [
        "\"anyOf\"",
        "\"oneOf\"",
        "\"allOf\"",
        "\"$schema\"",
        "\"additionalProperties\":false",
        "\"uniqueItems\"",
    ] {
        assert!(!text.contains(forbidden), "{forbidden} in {text}");
    }
}

#[test]
fn widget_schema_is_structural() {
    let s = Widget::openapi_schema();
    assert_structural(&s, "custom.example.com", "v1", "Widget");
    let spec = &s["properties"]["spec"];
    assert_eq!(spec["required"], json!(["replicas", "image"]));
    assert_eq!(
        spec["properties"]["replicas"],
        json!({"type": "integer", "format": "int32", "minimum": 0, "description": "How many replicas to run (0 to 100)."})
    );
    assert_eq!(spec["properties"]["image"]["minLength"], 1);
    let status = &s["properties"]["status"];
    assert_eq!(status["nullable"], true, "Option<WidgetStatus> is nullable");
    assert_eq!(
        status["properties"]["phase"]["enum"],
        json!(["Pending", "Running", "Failed"])
    );
    assert_eq!(status["properties"]["phase"]["type"], "string");
    assert_eq!(status["properties"]["lastUpdated"]["format"], "date-time");
    // List semantics declared with schemars' `extend` reach the schema (and server-side apply).
    let conditions = &status["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
    assert_eq!(s["required"], json!(["spec"]));
    // The v2 form refers to definitions and has no nullable.
    let v2 = schema::to_v2(&s);
    assert_eq!(
        v2["properties"]["metadata"]["$ref"],
        format!("#/definitions/{}", schema::OBJECT_META)
    );
    assert!(!v2.to_string().contains("nullable"));
}

#[test]
fn cluster_schema_is_structural() {
    let s = Policy::openapi_schema();
    assert_structural(&s, "infra.example.com", "v1alpha1", "Policy");
    let spec = &s["properties"]["spec"]["properties"];
    assert_eq!(
        spec["rules"],
        json!({"type": "object", "additionalProperties": {"type": "string"}, "description": "Rules by name."})
    );
    assert_eq!(
        spec["settings"]["x-kubernetes-preserve-unknown-fields"], true,
        "{}",
        spec["settings"]
    );
    assert_eq!(spec["owner"]["pattern"], "^[a-z]+$");
    assert_eq!(spec["owner"]["maxLength"], 20);
    assert_eq!(spec["tags"]["items"]["type"], "string");
}

#[test]
fn kube_client_side_compiles_and_builds_paths() {
    assert_eq!(Widget::plural(&()), "widgets");
    assert_eq!(Widget::api_version(&()), "custom.example.com/v1");
    assert_eq!(Widget::kind(&()), "Widget");
    assert_eq!(
        Widget::url_path(&(), Some("default")),
        "/apis/custom.example.com/v1/namespaces/default/widgets"
    );
    assert_eq!(Policy::url_path(&(), None), "/apis/infra.example.com/v1alpha1/policies");
    let request = kube::core::Request::new(Widget::url_path(&(), Some("ns1")));
    let get = request.get_subresource("scale", "w1").unwrap();
    assert_eq!(
        get.uri().path(),
        "/apis/custom.example.com/v1/namespaces/ns1/widgets/w1/scale"
    );

    let mut w = Widget::default();
    w.metadata.name = Some("w1".into());
    assert_eq!(w.meta().name.as_deref(), Some("w1"));
    // kube::Api<Widget> is usable (it needs a Client only to send).
    fn typed_api(client: kube::Client) -> kube::Api<Widget> {
        kube::Api::namespaced(client, "default")
    }
    let _ = typed_api;
}

#[test]
fn list_type_has_kind_and_api_version() {
    let list = WidgetList::new(Default::default(), vec![Widget::default()]);
    let json = serde_json::to_value(&list).unwrap();
    assert_eq!(
        (json["kind"].as_str(), json["apiVersion"].as_str()),
        (Some("WidgetList"), Some("custom.example.com/v1"))
    );
    let back: WidgetList = serde_json::from_value(json).unwrap();
    assert_eq!(back.items.len(), 1);
}

/// What the server checks at start (paths naming real fields of nested types), in a unit test.
#[test]
fn declarations_match_the_schema() {
    apiary_runtime::check::<widget_api::Widget>().unwrap();
    apiary_runtime::check::<widget_api::WidgetPolicy>().unwrap();
}
