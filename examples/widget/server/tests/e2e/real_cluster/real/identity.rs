//! Who may do what, decided by the real cluster: a user's client certificate and a service
//! account's token, with a Role in one namespace, through the aggregator (the front proxy's
//! identity headers) and straight to the server (its TokenReview and SubjectAccessReview
//! against the real kube-apiserver); impersonation, `auth can-i`, and no credentials at all.

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::Fixture;
use crate::common::widget;

/// Whether kubectl's `stderr` is kube-apiserver's refusal of `verb` on widgets for `user`.
fn forbidden(stderr: &str, user: &str, verb: &str, namespace: &str) -> bool {
    stderr.starts_with("Error from server (Forbidden): ")
        && stderr.contains(&format!(
            r#"widgets.custom.example.com is forbidden: User "{user}" cannot {verb} resource "widgets" in API group "custom.example.com" in the namespace "{namespace}""#
        ))
}

/// A Role granting widgets in team-a, bound to a user and to a service account.
fn grant(f: &Fixture) {
    let admin = f.kubectl(None);
    for ns in ["team-a", "team-b"] {
        admin.ok(&["create", "namespace", ns]);
    }
    admin.ok(&[
        "create",
        "role",
        "widget-editor",
        "-n",
        "team-a",
        "--verb=get,list,watch,create,update,patch,delete",
        "--resource=widgets.custom.example.com",
    ]);
    admin.ok(&[
        "create",
        "rolebinding",
        "alice",
        "-n",
        "team-a",
        "--role=widget-editor",
        "--user=alice",
    ]);
    admin.ok(&["create", "serviceaccount", "robot", "-n", "team-a"]);
    admin.ok(&[
        "create",
        "rolebinding",
        "robot",
        "-n",
        "team-a",
        "--role=widget-editor",
        "--serviceaccount=team-a:robot",
    ]);
}

/// Allowed in team-a, forbidden in team-b, for a certificate user and a service account,
/// through the aggregator and directly.
pub async fn real_rbac_decides(f: &Fixture) {
    grant(f);
    let alice = f.cluster.user_kubeconfig("alice", &["developers"]).unwrap();
    let robot = f
        .cluster
        .service_account_kubeconfig("team-a", "robot", 3600)
        .await
        .unwrap();
    let who = [
        ("alice", alice, "alice"),
        ("robot", robot, "system:serviceaccount:team-a:robot"),
    ];
    for (short, kubeconfig, user) in who {
        for (path, kubeconfig) in [("aggregated", kubeconfig.clone()), ("direct", f.direct(&kubeconfig))] {
            let k = f.kubectl_as(&kubeconfig, None);
            let name = format!("{short}-{path}");
            k.ok_stdin(&["create", "-n", "team-a", "-f", "-"], &widget(&name, 1, ""));
            assert_eq!(
                k.ok(&["get", "widget", &name, "-n", "team-a", "-o", "name"]).trim(),
                format!("widget.custom.example.com/{name}")
            );
            let denied = k.run(&["get", "widgets", "-n", "team-b"]);
            assert_eq!(denied.code, 1, "{path} {user}: {}", denied.stdout);
            assert!(
                forbidden(&denied.stderr, user, "list", "team-b"),
                "{path} {user}: {}",
                denied.stderr
            );
            let denied = k.run_with_stdin(&["create", "-n", "team-b", "-f", "-"], &widget(&name, 1, ""));
            assert!(
                forbidden(&denied.stderr, user, "create", "team-b"),
                "{path} {user}: {}",
                denied.stderr
            );
        }
    }
    impersonation(f);
    no_credentials(f).await;
}

/// The admin acting as alice: the aggregator forwards alice, the server decides for alice.
fn impersonation(f: &Fixture) {
    let admin = f.cluster.kubeconfig().to_path_buf();
    for (path, kubeconfig) in [("aggregated", admin.clone()), ("direct", f.direct(&admin))] {
        let k = f.kubectl_as(&kubeconfig, None);
        k.ok(&["get", "widgets", "-n", "team-a", "--as=alice"]);
        let denied = k.run(&["get", "widgets", "-n", "team-b", "--as=alice"]);
        assert!(
            forbidden(&denied.stderr, "alice", "list", "team-b"),
            "{path}: {}",
            denied.stderr
        );
    }
    let k = f.kubectl(None);
    let can = |ns: &str| {
        k.run(&[
            "auth",
            "can-i",
            "create",
            "widgets.custom.example.com",
            "-n",
            ns,
            "--as=alice",
        ])
    };
    assert_eq!(can("team-a").stdout.trim(), "yes");
    let no = can("team-b");
    assert_eq!((no.code, no.stdout.trim()), (1, "no"));
}

/// No credentials: kube-apiserver takes the request as system:anonymous and RBAC forbids it;
/// the server, without --anonymous-auth, refuses it as unauthenticated. (kube-rs, not kubectl:
/// kubectl asks for a user name when a kubeconfig has no credentials.)
async fn no_credentials(f: &Fixture) {
    let path = "/apis/custom.example.com/v1/namespaces/default/widgets";
    let deploy_ca = std::path::Path::new(super::DEPLOY).join("certs/ca.crt");
    let direct = format!("https://127.0.0.1:{}", f.port);
    for (url, ca, name, code) in [
        (f.cluster.url(), f.cluster.ca(), None, 403),
        (direct.as_str(), deploy_ca, Some("widget-server.widget-system.svc"), 401),
    ] {
        let pem = std::fs::read(ca).unwrap();
        let mut config = kube::Config::new(url.parse().unwrap());
        config.root_cert = Some(
            CertificateDer::pem_slice_iter(&pem)
                .map(|c| c.unwrap().to_vec())
                .collect(),
        );
        config.tls_server_name = name.map(String::from);
        let client = kube::Client::try_from(config).unwrap();
        let answer = client
            .request_text(http::Request::get(path).body(Vec::new()).unwrap())
            .await;
        match answer {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, code, "{url}: {status:?}");
                if code == 403 {
                    assert!(
                        status
                            .message
                            .contains(r#"User "system:anonymous" cannot list resource "widgets""#),
                        "{status:?}"
                    );
                }
            }
            other => panic!("{url}: an anonymous list got {other:?}"),
        }
    }
}
