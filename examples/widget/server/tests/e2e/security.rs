//! Security as the aggregation layer drives it, fast: the core API (TokenReview,
//! SubjectAccessReview and the kube-system/extension-apiserver-authentication ConfigMap) is a
//! local TLS stand-in (`apiary_runtime::testing::CoreApiStandIn`) whose rules each test sets;
//! `real_cluster.rs` checks the same paths behind the real kube-apiserver. Everything else is real: widget-server over
//! TLS, certificates made with rcgen, the kube client and kubectl.

use crate::common;

use std::path::Path;
use std::time::Duration;

use apiary_runtime::testing::CoreApiStandIn;
use base64::Engine as _;
use common::{ServerProcess, WidgetServer as _};
use http::Request;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use serde_json::{Value, json};

const WIDGETS: &str = "/apis/custom.example.com/v1/namespaces/default/widgets";
const FRONT_PROXY: &str = "front-proxy-client";

/// A CA that signs client certificates.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A client certificate and key (PEM).
struct Identity {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    fn client(&self, cn: &str, orgs: &[&str], expired: bool) -> Identity {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        for o in orgs {
            params.distinguished_name.push(DnType::OrganizationName, *o);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        Identity {
            cert: params.signed_by(&key, &self.issuer).unwrap().pem(),
            key: key.serialize_pem(),
        }
    }
}

/// A kube client presenting `identity` (and/or a bearer token).
fn client(url: &str, identity: Option<&Identity>, token: Option<&str>) -> kube::Client {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut config = kube::Config::new(url.parse().unwrap());
    config.accept_invalid_certs = true;
    if let Some(id) = identity {
        config.auth_info.client_certificate_data = Some(b64(&id.cert));
        config.auth_info.client_key_data = Some(b64(&id.key).into());
    }
    if let Some(token) = token {
        config.auth_info.token = Some(token.to_string().into());
    }
    kube::Client::try_from(config).unwrap()
}

async fn send(client: &kube::Client, method: &str, path: &str, headers: &[(&str, &str)], body: Value) -> (u16, Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let body = if body.is_null() {
        Vec::new()
    } else {
        serde_json::to_vec(&body).unwrap()
    };
    let response = client.send(request.body(body.into()).unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn widget(name: &str) -> Value {
    json!({"apiVersion": "custom.example.com/v1", "kind": "Widget", "metadata": {"name": name}, "spec": {"replicas": 1, "image": "nginx"}})
}

/// The aggregator's own identity headers (as its availability checks send them).
const AGGREGATOR: &[(&str, &str)] = &[
    ("X-Remote-User", "system:kube-aggregator"),
    ("X-Remote-Group", "system:masters"),
];

/// What the aggregator sees in the default namespace.
async fn stored(url: &str, proxy: &Identity) -> Vec<String> {
    let (code, list) = send(&client(url, Some(proxy), None), "GET", WIDGETS, AGGREGATOR, Value::Null).await;
    assert_eq!(code, 200, "{list}");
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

fn write(dir: &Path, name: &str, contents: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path.to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_aggregator_and_its_users_get_in_and_nobody_else_does() {
    let dir = tempfile::tempdir().unwrap();
    let core = CoreApiStandIn::start(&dir.path().join("core"));
    core.allow("alice", "create", "widgets");
    core.allow("alice", "list", "widgets");
    core.add_token("alice-token", "alice", &["devs"]);
    let proxy_ca = Ca::new("front-proxy-ca");
    let client_ca = Ca::new("client-ca");
    let proxy = proxy_ca.client(FRONT_PROXY, &[], false);
    let args = [
        "--requestheader-client-ca-file",
        &write(dir.path(), "front-proxy-ca.crt", &proxy_ca.pem),
        "--requestheader-allowed-names",
        FRONT_PROXY,
        "--client-ca-file",
        &write(dir.path(), "client-ca.crt", &client_ca.pem),
        "--authentication-kubeconfig",
        core.kubeconfig.to_str().unwrap(),
        "--authorization-kubeconfig",
        core.kubeconfig.to_str().unwrap(),
        "--authorization-webhook-cache-authorized-ttl",
        "0",
        "--authorization-webhook-cache-unauthorized-ttl",
        "0",
        "--storage",
        "memory",
    ];
    let server = ServerProcess::start_in(dir.path(), &args);
    let url = server.url.as_str();
    let via_proxy = client(url, Some(&proxy), None);

    // The aggregator's availability check: front-proxy cert, system:masters, no review.
    let (code, _) = send(
        &via_proxy,
        "GET",
        "/apis/custom.example.com/v1",
        AGGREGATOR,
        Value::Null,
    )
    .await;
    assert_eq!(code, 200);
    assert!(core.access_reviews().is_empty(), "system:masters is not reviewed");

    // A user's request proxied by the aggregator: allowed by SubjectAccessReview.
    let alice = [
        ("X-Remote-User", "alice"),
        ("X-Remote-Group", "devs"),
        ("X-Remote-Extra-Scopes%2Fv1", "read"),
    ];
    let (code, body) = send(&via_proxy, "POST", WIDGETS, &alice, widget("from-alice")).await;
    assert_eq!(code, 201, "{body}");
    let review = core.access_reviews().pop().unwrap();
    assert_eq!(review["user"], "alice");
    assert_eq!(review["groups"], json!(["devs", "system:authenticated"]));
    assert_eq!(review["extra"], json!({"scopes/v1": ["read"]}));
    assert_eq!(
        review["resourceAttributes"],
        json!({"namespace": "default", "verb": "create", "group": "custom.example.com", "version": "v1", "resource": "widgets"})
    );

    // A list's selectors reach the review as requirements (AuthorizeWithSelectors), so the
    // cluster's authorizer can decide on them.
    let selected =
        format!("{WIDGETS}?labelSelector=app%3Ddemo,tier%20notin%20(a,b),!legacy&fieldSelector=spec.color%3Dred");
    let _ = send(&via_proxy, "GET", &selected, &alice, Value::Null).await;
    let review = core.access_reviews().pop().unwrap();
    assert_eq!(review["resourceAttributes"]["verb"], "list");
    assert_eq!(
        review["resourceAttributes"]["fieldSelector"],
        json!({"requirements": [{"key": "spec.color", "operator": "In", "values": ["red"]}]})
    );
    assert_eq!(
        review["resourceAttributes"]["labelSelector"],
        json!({"requirements": [
            {"key": "app", "operator": "In", "values": ["demo"]},
            {"key": "tier", "operator": "NotIn", "values": ["a", "b"]},
            {"key": "legacy", "operator": "DoesNotExist"},
        ]})
    );

    // Deleting a damaged object unread needs a second verb, reviewed as kube-apiserver does.
    core.allow("alice", "delete", "widgets");
    let unsafe_delete = format!("{WIDGETS}/from-alice?ignoreStoreReadErrorWithClusterBreakingPotential=true");
    let (code, status) = send(&via_proxy, "DELETE", &unsafe_delete, &alice, Value::Null).await;
    assert_eq!(code, 403, "{status}");
    let review = core.access_reviews().pop().unwrap();
    assert_eq!(review["resourceAttributes"]["verb"], "unsafe-delete-ignore-read-errors");
    assert_eq!(review["resourceAttributes"]["name"], "from-alice");

    // Denied by SubjectAccessReview: 403 with kube-apiserver's message, nothing written.
    let bob = [("X-Remote-User", "bob")];
    let (code, status) = send(&via_proxy, "POST", WIDGETS, &bob, widget("from-bob")).await;
    assert_eq!(code, 403);
    assert_eq!(status["reason"], "Forbidden");
    assert_eq!(
        status["message"],
        "widgets.custom.example.com is forbidden: User \"bob\" cannot create resource \"widgets\" in API group \"custom.example.com\" in the namespace \"default\": no rule of the stand-in allows it"
    );
    assert_eq!(
        status["details"],
        json!({"name": "", "group": "custom.example.com", "kind": "widgets"})
    );

    // Attacks, each 401 and writing nothing.
    let masters = [("X-Remote-User", "system:admin"), ("X-Remote-Group", "system:masters")];
    let no_cert = client(url, None, None);
    let evil = Ca::new("evil-ca").client(FRONT_PROXY, &[], false);
    let intruder = proxy_ca.client("intruder", &[], false);
    let expired = proxy_ca.client(FRONT_PROXY, &[], true);
    for (what, attacker) in [
        ("spoofed headers without a certificate", no_cert),
        ("a certificate from the wrong CA", client(url, Some(&evil), None)),
        (
            "a CN not in --requestheader-allowed-names",
            client(url, Some(&intruder), None),
        ),
        ("an expired front-proxy certificate", client(url, Some(&expired), None)),
    ] {
        let (code, status) = send(&attacker, "POST", WIDGETS, &masters, widget("attack")).await;
        assert_eq!((code, status["reason"].as_str()), (401, Some("Unauthorized")), "{what}");
        let (code, _) = send(&attacker, "GET", WIDGETS, &masters, Value::Null).await;
        assert_eq!(code, 401, "{what}");
    }
    // X-Remote headers on a client-certificate connection are ignored, not trusted.
    let carol = client(url, Some(&client_ca.client("carol", &["devs"], false)), None);
    let (code, status) = send(&carol, "POST", WIDGETS, &masters, widget("attack")).await;
    assert_eq!(code, 403);
    assert!(
        status["message"].as_str().unwrap().contains("User \"carol\""),
        "{status}"
    );
    assert_eq!(stored(url, &proxy).await, ["from-alice"]);

    // Bearer tokens through TokenReview.
    let (code, list) = send(
        &client(url, None, Some("alice-token")),
        "GET",
        WIDGETS,
        &[],
        Value::Null,
    )
    .await;
    assert_eq!(code, 200, "{list}");
    let (code, _) = send(&client(url, None, Some("forged")), "GET", WIDGETS, &[], Value::Null).await;
    assert_eq!(code, 401);
    // Impersonating someone needs the right to: alice has none.
    let impersonating = [("Impersonate-User", "admin"), ("Impersonate-Group", "system:masters")];
    let (code, status) = send(
        &client(url, None, Some("alice-token")),
        "POST",
        WIDGETS,
        &impersonating,
        widget("impersonated"),
    )
    .await;
    assert_eq!(code, 403);
    assert_eq!(
        status["message"],
        "users \"admin\" is forbidden: User \"alice\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope: no rule of the stand-in allows it"
    );

    // Outages fail closed: an unreviewable token is 401, an unreviewable request 500.
    core.set_down(true);
    let (code, _) = send(
        &client(url, None, Some("new-token")),
        "POST",
        WIDGETS,
        &[],
        widget("outage"),
    )
    .await;
    assert_eq!(code, 401);
    let (code, status) = send(&via_proxy, "POST", WIDGETS, &alice, widget("outage")).await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (500, Some("InternalError")),
        "{status}"
    );
    core.set_down(false);
    assert_eq!(stored(url, &proxy).await, ["from-alice"]);

    // Health checks stay open for kubelet probes.
    let (code, _) = send(&client(url, None, None), "GET", "/readyz", &[], Value::Null).await;
    assert_eq!(code, 200);
}

/// A server (memory storage) delegating authentication and authorization to `core`.
fn delegating(dir: &Path, core: &CoreApiStandIn, extra: &[&str]) -> ServerProcess {
    let kubeconfig = core.kubeconfig.to_str().unwrap();
    let mut args = vec![
        "--authentication-kubeconfig",
        kubeconfig,
        "--authorization-kubeconfig",
        kubeconfig,
        "--storage",
        "memory",
    ];
    args.extend_from_slice(extra);
    ServerProcess::start_in(dir, &args)
}

#[tokio::test(flavor = "multi_thread")]
async fn trust_comes_from_the_configmap_and_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    let core = CoreApiStandIn::start(&dir.path().join("core"));
    let proxy_ca = Ca::new("front-proxy-ca");
    let proxy = proxy_ca.client(FRONT_PROXY, &[], false);
    let data = |allowed: &str| {
        vec![
            ("requestheader-client-ca-file", proxy_ca.pem.clone()),
            ("requestheader-allowed-names", format!("[\"{allowed}\"]")),
            ("requestheader-username-headers", "[\"X-Remote-User\"]".to_string()),
            ("requestheader-group-headers", "[\"X-Remote-Group\"]".to_string()),
            (
                "requestheader-extra-headers-prefix",
                "[\"X-Remote-Extra-\"]".to_string(),
            ),
        ]
    };
    let set = |allowed: &str| {
        let d = data(allowed);
        core.set_configmap(&d.iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>());
    };
    set(FRONT_PROXY);
    let server = delegating(dir.path(), &core, &["--authentication-config-poll-interval", "1"]);
    let via_proxy = client(&server.url, Some(&proxy), None);
    let (code, _) = send(&via_proxy, "GET", WIDGETS, AGGREGATOR, Value::Null).await;
    assert_eq!(code, 200, "the front-proxy CA came from the ConfigMap");
    // The allowed names change: the old front-proxy name is refused once the change is read.
    set("another-front-proxy");
    let mut code = 0;
    for _ in 0..50 {
        code = send(&via_proxy, "GET", WIDGETS, AGGREGATOR, Value::Null).await.0;
        if code == 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(code, 401);
}

#[test]
fn kubectl_with_a_bearer_token_goes_through_token_review_and_access_review() {
    let dir = tempfile::tempdir().unwrap();
    let core = CoreApiStandIn::start(&dir.path().join("core"));
    core.add_token("alice-token", "alice", &["devs"]);
    core.add_token("bob-token", "bob", &[]);
    for verb in ["get", "list", "watch", "create", "patch"] {
        core.allow("alice", verb, "widgets");
    }
    let server = delegating(dir.path(), &core, &[]);
    // Discovery is a non-resource request: let both users read it.
    for user in ["alice", "bob"] {
        for path in [
            "/apis",
            "/apis/custom.example.com",
            "/apis/custom.example.com/v1",
            "/openapi/v3",
            "/openapi/v2",
            "/openapi/v3/apis/custom.example.com/v1",
            "/api",
            "/version",
        ] {
            core.allow(user, "get", path);
        }
    }
    let kubeconfig = |user: &str| {
        let path = dir.path().join(format!("{user}.kubeconfig"));
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: s\n  cluster:\n    server: {}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: {user}-token\ncontexts:\n- name: c\n  context:\n    cluster: s\n    user: u\n    namespace: default\ncurrent-context: c\n",
                server.url
            ),
        )
        .unwrap();
        path
    };
    let kubectl = |user: &str, args: &[&str], stdin: &str| {
        let config = kubeconfig(user);
        let mut full = vec!["--kubeconfig", config.to_str().unwrap()];
        full.extend_from_slice(args);
        server.kubectl("1.33").run_with_stdin(&full, stdin)
    };
    let manifest = common::widget("by-token", 2, "");
    let applied = kubectl("alice", &["apply", "-f", "-"], &manifest);
    assert_eq!(applied.code, 0, "{}", applied.stderr);
    let got = kubectl("alice", &["get", "widgets"], "");
    assert!(got.stdout.contains("by-token"), "{}{}", got.stdout, got.stderr);
    let denied = kubectl("bob", &["get", "widgets"], "");
    assert_ne!(denied.code, 0);
    assert!(
        denied.stderr.contains("Error from server (Forbidden)")
            && denied.stderr.contains("User \"bob\" cannot list resource \"widgets\""),
        "{}",
        denied.stderr
    );
    assert!(core.token_reviews() > 0);
}

/// Whether widget-server, started in `dir` with `args` (and memory storage), logs a line
/// containing `needle` at start (within 20 s of silence).
fn logs_at_start(dir: &std::path::Path, args: &[&std::ffi::OsStr], needle: &str) -> bool {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_widget-server"))
        .args(["--secure-port", "0", "--storage", "memory"])
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let found = (0..)
        .map_while(|_| rx.recv_timeout(std::time::Duration::from_secs(20)).ok())
        .any(|line| {
            let hit = line.contains(needle);
            seen.push(line);
            hit
        });
    let _ = child.kill();
    let _ = child.wait();
    if !found {
        eprintln!("[server] {}", seen.join("\n[server] "));
    }
    found
}

/// A server given serving certificates but nothing to authenticate anyone with says so at
/// start, instead of answering 401 to everything in silence.
#[test]
fn a_server_that_can_authenticate_nobody_says_so_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let certs =
        apiary_runtime::certs::ensure_local(&dir.path().join("serving"), &["127.0.0.1".into()], "https://127.0.0.1")
            .unwrap();
    let args = [
        "--tls-cert-file".as_ref(),
        certs.serving_cert.as_os_str(),
        "--tls-private-key-file".as_ref(),
        certs.serving_key.as_os_str(),
    ];
    assert!(logs_at_start(dir.path(), &args, "no authentication method can succeed"));
}

/// A serving certificate that expires within 30 days is warned about at start.
#[test]
fn an_expiring_serving_certificate_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("short-lived-ca");
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params.not_after = (std::time::SystemTime::now() + std::time::Duration::from_secs(10 * 86_400)).into();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let (crt, pem_key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&crt, cert.pem()).unwrap();
    std::fs::write(&pem_key, key.serialize_pem()).unwrap();
    let args = [
        "--tls-cert-file".as_ref(),
        crt.as_os_str(),
        "--tls-private-key-file".as_ref(),
        pem_key.as_os_str(),
    ];
    assert!(logs_at_start(dir.path(), &args, "the serving certificate expires in "));
    // And in /readyz's details, without failing readiness; asked as the kubelet asks.
    let server = ServerProcess::start_in(
        dir.path(),
        &[
            "--storage",
            "memory",
            "--tls-cert-file",
            crt.to_str().unwrap(),
            "--tls-private-key-file",
            pem_key.to_str().unwrap(),
        ],
    );
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let kubeconfig = dir.path().join("probe.kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: probe\n  user:\n    token: no-one\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: probe\ncurrent-context: c\n",
            server.url,
            ca_file.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(format!("{}/kubectl.1.33", common::KUBECTL_DIR))
        .args([
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "get",
            "--raw",
            "/readyz?verbose",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("[+]serving-certificate ok (warning: the serving certificate expires in ")
            && text.contains(" days: renew it)")
            && text.ends_with("readyz check passed\n"),
        "{text}"
    );
}
