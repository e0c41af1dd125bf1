//! The wire contract below kubectl: media types, ETags, Status errors, limits, warnings.

use crate::common;

use common::{ServerProcess, WidgetServer as _};
use http::{Request, StatusCode};
use kube::Client;
use serde_json::{Value, json};

const BASE: &str = "/apis/custom.example.com/v1/namespaces/default/widgets";

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
    }
}

async fn send(client: &Client, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut request = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = client.send(request.body(body.to_vec().into()).unwrap()).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Reply { status, headers, body }
}

fn widget(name: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"apiVersion": "custom.example.com/v1", "kind": "Widget", "metadata": {"name": name}, "spec": {"replicas": 1, "image": "nginx"}})).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_and_openapi_negotiation() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let c = server.client().await;

    let api = send(&c, "GET", "/api", &[], b"").await;
    assert_eq!(api.status, 404);
    assert_eq!(api.json()["kind"], "Status");

    for (accept, content_type, api_version) in [
        (
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
            "apidiscovery.k8s.io/v2",
        ),
        (
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json",
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList",
            "apidiscovery.k8s.io/v2beta1",
        ),
        ("application/json", "application/json", "v1"),
    ] {
        let r = send(&c, "GET", "/apis", &[("accept", accept)], b"").await;
        assert_eq!(r.header("content-type"), content_type);
        assert_eq!(r.json()["apiVersion"], api_version);
    }
    let aggregated = send(
        &c,
        "GET",
        "/apis",
        &[(
            "accept",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
        )],
        b"",
    )
    .await
    .json();
    let version = &aggregated["items"][0]["versions"][0];
    assert_eq!(version["freshness"], "Current");
    let resource = &version["resources"][0];
    assert_eq!(resource["scope"], "Namespaced");
    assert_eq!(
        resource["responseKind"],
        json!({"group": "custom.example.com", "version": "v1", "kind": "Widget"})
    );
    assert_eq!(
        resource["subresources"][1]["responseKind"],
        json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})
    );

    // OpenAPI v3 index → hashed document; ETag revalidation gives 304.
    let index = send(&c, "GET", "/openapi/v3", &[], b"").await.json();
    let url = index["paths"]["apis/custom.example.com/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(url.starts_with("/openapi/v3/apis/custom.example.com/v1?hash="), "{url}");
    let doc = send(&c, "GET", &url, &[], b"").await;
    let etag = doc.header("etag").to_string();
    let doc = doc.json();
    let patch = &doc["paths"]["/apis/custom.example.com/v1/namespaces/{namespace}/widgets/{name}"]["patch"];
    assert_eq!(
        patch["x-kubernetes-group-version-kind"],
        json!({"group": "custom.example.com", "version": "v1", "kind": "Widget"})
    );
    let media: Vec<&str> = patch["requestBody"]["content"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert!(!media.contains(&"application/strategic-merge-patch+json"), "{media:?}");
    assert!(
        patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "fieldValidation")
    );
    assert_eq!(
        send(&c, "GET", &url, &[("if-none-match", &etag)], b"").await.status,
        304
    );

    // v2: JSON by default, protobuf with the dotted content type for kubectl 1.27/1.28.
    let v2 = send(&c, "GET", "/openapi/v2", &[], b"").await;
    assert_eq!(v2.json()["swagger"], "2.0");
    let proto = send(
        &c,
        "GET",
        "/openapi/v2",
        &[("accept", "application/com.github.proto-openapi.spec.v2@v1.0+protobuf")],
        b"",
    )
    .await;
    assert_eq!(
        proto.header("content-type"),
        "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
    );
    assert_eq!(&proto.body[..5], b"\x0a\x032.0", "field 1 (swagger) first");
}

#[tokio::test(flavor = "multi_thread")]
async fn content_types_errors_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let c = server.client().await;

    // YAML in and out.
    let yaml = b"apiVersion: custom.example.com/v1\nkind: Widget\nmetadata:\n  name: y1\nspec:\n  replicas: 2\n  image: nginx\n";
    let created = send(
        &c,
        "POST",
        BASE,
        &[("content-type", "application/yaml"), ("accept", "application/yaml")],
        yaml,
    )
    .await;
    assert_eq!(created.status, 201);
    assert_eq!(created.header("content-type"), "application/yaml");
    let text = String::from_utf8(created.body.clone()).unwrap();
    assert!(text.contains("replicas: 2") && text.contains("color: blue"), "{text}");

    // Protobuf only → 406; an unknown body type → 415.
    let proto_only = send(
        &c,
        "GET",
        &format!("{BASE}/y1"),
        &[("accept", "application/vnd.kubernetes.protobuf")],
        b"",
    )
    .await;
    assert_eq!(
        (proto_only.status.as_u16(), proto_only.json()["reason"].as_str()),
        (406, Some("NotAcceptable"))
    );
    let proto_body = send(
        &c,
        "POST",
        BASE,
        &[("content-type", "application/vnd.kubernetes.protobuf")],
        b"\x00",
    )
    .await;
    assert_eq!(
        (proto_body.status.as_u16(), proto_body.json()["reason"].as_str()),
        (415, Some("UnsupportedMediaType"))
    );

    // Unknown fields: Warning header by default, 400 with Strict.
    let body = serde_json::to_vec(&json!({"apiVersion": "custom.example.com/v1", "kind": "Widget", "metadata": {"name": "u1"}, "spec": {"replicas": 1, "image": "x", "colour": "red"}})).unwrap();
    let warned = send(&c, "POST", BASE, &[("content-type", "application/json")], &body).await;
    assert_eq!(warned.status, 201);
    assert_eq!(warned.header("warning"), r#"299 - "unknown field \"spec.colour\"""#);
    assert!(
        warned.json()["spec"].get("colour").is_none(),
        "unknown fields are pruned"
    );
    let strict = send(
        &c,
        "POST",
        &format!("{BASE}?fieldValidation=Strict"),
        &[("content-type", "application/json")],
        &body,
    )
    .await;
    assert_eq!(strict.status, 400);
    assert_eq!(
        strict.json()["message"],
        r#"strict decoding error: unknown field "spec.colour""#
    );

    // Schema violations: all in one 422 with causes.
    let bad = serde_json::to_vec(&json!({"metadata": {"name": "Bad_Name"}, "spec": {"replicas": "many", "image": ""}}))
        .unwrap();
    let invalid = send(&c, "POST", BASE, &[("content-type", "application/json")], &bad).await;
    assert_eq!(invalid.status, 422);
    let status = invalid.json();
    let fields: Vec<&str> = status["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["metadata.name", "spec.image", "spec.replicas"]);

    // Bodies over 3 MiB → 413; a wrong kind → 400; an unsupported verb → 405.
    let huge = vec![b' '; 3 * 1024 * 1024 + 1];
    let too_large = send(&c, "POST", BASE, &[("content-type", "application/json")], &huge).await;
    assert_eq!(
        (too_large.status.as_u16(), too_large.json()["reason"].as_str()),
        (413, Some("RequestEntityTooLarge"))
    );
    assert_eq!(
        send(&c, "POST", BASE, &[("content-type", "application/json")], &widget("k1"))
            .await
            .status,
        201
    );
    let other = serde_json::to_vec(&json!({"apiVersion": "custom.example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}, "spec": {"replicas": 1, "image": "x"}})).unwrap();
    assert_eq!(
        send(&c, "POST", BASE, &[("content-type", "application/json")], &other)
            .await
            .status,
        400
    );
    let post_to_object = send(
        &c,
        "POST",
        &format!("{BASE}/k1"),
        &[("content-type", "application/json")],
        &widget("k1"),
    )
    .await;
    assert_eq!(
        (post_to_object.status.as_u16(), post_to_object.json()["reason"].as_str()),
        (405, Some("MethodNotAllowed"))
    );

    // Table with includeObject=None and =Object.
    let table_accept = [("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")];
    let none = send(&c, "GET", &format!("{BASE}?includeObject=None"), &table_accept, b"")
        .await
        .json();
    assert_eq!(none["kind"], "Table");
    assert!(none["rows"][0].get("object").is_none());
    let full = send(&c, "GET", &format!("{BASE}?includeObject=Object"), &table_accept, b"")
        .await
        .json();
    assert_eq!(full["rows"][0]["object"]["kind"], "Widget");
    let partial = send(&c, "GET", BASE, &table_accept, b"").await.json();
    assert_eq!(partial["rows"][0]["object"]["kind"], "PartialObjectMetadata");

    // Unauthenticated requests get 401 (health checks stay open).
    assert_eq!(anonymous(&server.url, "/apis").await, 401);
    assert_eq!(anonymous(&server.url, "/readyz").await, 200);
}

/// The status of a request over TLS with no client certificate.
async fn anonymous(url: &str, path: &str) -> u16 {
    let mut config = kube::Config::new(url.parse().unwrap());
    config.accept_invalid_certs = true;
    let client = Client::try_from(config).unwrap();
    let response = client
        .send(Request::builder().uri(path).body(Vec::new().into()).unwrap())
        .await
        .unwrap();
    response.status().as_u16()
}

/// A write answers with the object as stored (its stored bytes with their resourceVersion,
/// not a second encoding): the same object a GET then returns, in the media type and form the
/// client asked for; the scale subresource and other versions still answer in their own shape.
#[tokio::test(flavor = "multi_thread")]
async fn write_answers_are_the_stored_object() {
    let dir = tempfile::tempdir().unwrap();
    // No status loop: nothing but the test writes, so each answer can be held against a GET.
    let server = ServerProcess::start_in(dir.path(), &["--storage", "memory", "--status-controller", "false"]);
    let c = server.client().await;
    let json = [("content-type", "application/json")];
    let get = |name: &'static str| {
        let c = c.clone();
        async move { send(&c, "GET", &format!("{BASE}/{name}"), &[], b"").await.json() }
    };

    let created = send(&c, "POST", BASE, &json, &widget("answer")).await;
    assert_eq!(created.status, 201);
    assert_eq!(created.header("content-type"), "application/json");
    let stored = get("answer").await;
    assert_eq!(created.json(), stored);
    assert!(
        stored["metadata"]["resourceVersion"]
            .as_str()
            .is_some_and(|rv| !rv.is_empty())
    );
    assert_eq!(stored["metadata"]["managedFields"][0]["operation"], "Update");

    // Updates and patches answer with the new revision.
    let mut changed = stored.clone();
    changed["spec"]["replicas"] = json!(2);
    let put = send(
        &c,
        "PUT",
        &format!("{BASE}/answer"),
        &json,
        changed.to_string().as_bytes(),
    )
    .await;
    assert_eq!(put.status, 200);
    assert_eq!(put.json(), get("answer").await);
    assert_ne!(
        put.json()["metadata"]["resourceVersion"],
        stored["metadata"]["resourceVersion"]
    );
    let merge = [("content-type", "application/merge-patch+json")];
    let patched = send(
        &c,
        "PATCH",
        &format!("{BASE}/answer"),
        &merge,
        br#"{"spec":{"replicas":3}}"#,
    )
    .await;
    assert_eq!(patched.status, 200);
    assert_eq!(patched.json(), get("answer").await);
    assert_eq!(patched.json()["spec"]["replicas"], 3);

    // The form asked for: pretty JSON, YAML.
    let pretty = send(&c, "POST", &format!("{BASE}?pretty=true"), &json, &widget("pretty")).await;
    assert_eq!(pretty.status, 201);
    assert!(String::from_utf8_lossy(&pretty.body).contains("\n  \"metadata\""));
    assert_eq!(pretty.json(), get("pretty").await);
    let yaml = [("content-type", "application/json"), ("accept", "application/yaml")];
    let as_yaml = send(&c, "POST", BASE, &yaml, &widget("yaml")).await;
    assert_eq!(as_yaml.status, 201);
    assert_eq!(as_yaml.header("content-type"), "application/yaml");
    let from_yaml: Value = serde_saphyr::from_slice(&as_yaml.body).unwrap();
    assert_eq!(from_yaml, get("yaml").await);

    // The scale subresource answers with a Scale; another version with its own shape.
    let scale = json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
        "metadata": {"name": "answer", "namespace": "default"}, "spec": {"replicas": 4}});
    let scaled = send(
        &c,
        "PUT",
        &format!("{BASE}/answer/scale"),
        &json,
        scale.to_string().as_bytes(),
    )
    .await;
    assert_eq!(scaled.status, 200, "{}", String::from_utf8_lossy(&scaled.body));
    assert_eq!(scaled.json()["kind"], "Scale");
    assert_eq!(scaled.json()["spec"]["replicas"], 4);
    let alpha = json!({"apiVersion": "custom.example.com/v1alpha1", "kind": "Widget",
        "metadata": {"name": "alpha"}, "spec": {"size": "small", "image": "nginx"}});
    let alpha_path = "/apis/custom.example.com/v1alpha1/namespaces/default/widgets";
    let old = send(&c, "POST", alpha_path, &json, alpha.to_string().as_bytes()).await;
    assert_eq!(old.status, 201, "{}", String::from_utf8_lossy(&old.body));
    assert_eq!(old.json()["apiVersion"], "custom.example.com/v1alpha1");
    assert_eq!(old.json()["spec"]["size"], "small");
    assert_eq!(
        old.json(),
        send(&c, "GET", &format!("{alpha_path}/alpha"), &[], b"").await.json()
    );
}
