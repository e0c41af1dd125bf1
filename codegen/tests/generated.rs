//! The committed output for the Widget example (`examples/widget/deploy`, written by
//! `cargo xtask generate`): valid for Kubernetes 1.27 and 1.33, typed, deterministic, with a
//! serving certificate the aggregator accepts.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use apiary_codegen::{Mode, Outcome, Parts, Project};
use base64::Engine as _;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::Value;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/widget/deploy")
}

/// The manifests (every YAML but the kustomization) and their documents.
fn manifests() -> Vec<(PathBuf, Vec<Value>)> {
    manifests_in(&deploy())
}

/// The embedded shape's manifests (one replica, a StatefulSet on a volume), generated in `out`.
fn embedded_manifests(out: &Path) -> Vec<(PathBuf, Vec<Value>)> {
    let project = Project::new(
        "widget-server",
        "widget-system",
        "registry.example.com/apiary/widget-server:0.1.0",
    )
    .embedded("2Gi")
    .resource::<widget_api::Widget>();
    let parts = Parts {
        manifests: true,
        certs: true,
        openapi: false,
        client: false,
        go_client: false,
    };
    let deploy = out.join("deploy");
    apiary_codegen::generate(
        &project,
        &deploy,
        &out.join("client"),
        parts,
        Mode::Write,
        &mut |_, _| {},
    )
    .unwrap();
    manifests_in(&deploy)
}

fn manifests_in(dir: &Path) -> Vec<(PathBuf, Vec<Value>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml") && !p.ends_with("kustomization.yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "{files:?}");
    files
        .into_iter()
        .map(|p| {
            let docs = serde_saphyr::from_multiple(&std::fs::read_to_string(&p).unwrap()).unwrap();
            (p, docs)
        })
        .collect()
}

#[test]
fn manifests_pass_kubernetes_validate_for_1_27_and_1_33() {
    let out = tempfile::tempdir().unwrap();
    let embedded = embedded_manifests(out.path())
        .into_iter()
        .filter(|(p, _)| p.ends_with("statefulset.yaml"));
    let all: Vec<_> = manifests().into_iter().chain(embedded).collect();
    for version in ["1.27.0", "1.33.0"] {
        for (path, docs) in all.clone() {
            let out = Command::new("kubernetes-validate")
                .args(["--strict", "-k", version])
                .arg(&path)
                .output()
                .expect("kubernetes-validate runs (pip install kubernetes-validate)");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success(), "{} {version}: {text}", path.display());
            assert_eq!(
                text.matches("passed for resource").count(),
                docs.len(),
                "every document of {} is validated against {version}: {text}",
                path.display()
            );
        }
    }
}

fn typed<T: serde::de::DeserializeOwned>(doc: &Value) -> T {
    serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{e}: {doc}"))
}

#[test]
fn manifests_parse_as_kubernetes_types() {
    let ca = std::fs::read(deploy().join("certs/ca.crt")).unwrap();
    let mut kinds = Vec::new();
    let mut services = Vec::new();
    for (_, docs) in manifests() {
        for doc in docs {
            let kind = doc["kind"].as_str().unwrap().to_string();
            match kind.as_str() {
                "Namespace" => drop(typed::<Namespace>(&doc)),
                "ServiceAccount" => drop(typed::<ServiceAccount>(&doc)),
                "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(&doc)),
                "RoleBinding" => {
                    let binding: RoleBinding = typed(&doc);
                    let namespace = match binding.role_ref.name.as_str() {
                        "extension-apiserver-authentication-reader" => "kube-system",
                        "widget-server:leader-election" => "widget-system",
                        other => panic!("unexpected RoleBinding to {other}"),
                    };
                    assert_eq!(binding.metadata.namespace.as_deref(), Some(namespace));
                }
                "Role" => {
                    // Leader election: the server's own Lease only, besides creating it.
                    let role: Role = typed(&doc);
                    let rules = role.rules.unwrap();
                    assert!(
                        rules
                            .iter()
                            .any(|r| r.resources.as_deref() == Some(&["leases".to_string()][..])
                                && r.resource_names.as_deref() == Some(&["widget-server".to_string()][..])
                                && r.verbs == ["get", "update"])
                    );
                }
                "ClusterRole" => {
                    let role: ClusterRole = typed(&doc);
                    if role.metadata.name.as_deref() == Some("widget-server:admission") {
                        // What admission reads of the core API: namespaces, webhook configurations.
                        let rules = role.rules.unwrap();
                        assert!(
                            rules
                                .iter()
                                .any(|r| r.resources.as_deref() == Some(&["namespaces".to_string()][..])
                                    && r.verbs == ["get", "list", "watch"])
                        );
                        continue;
                    }
                    let labels = role.metadata.labels.unwrap();
                    assert!(
                        labels
                            .keys()
                            .any(|k| k.starts_with("rbac.authorization.k8s.io/aggregate-to-"))
                    );
                }
                "StatefulSet" => {
                    // The generated one-member etcd the Deployment's --etcd-servers names.
                    let set: StatefulSet = typed(&doc);
                    assert_eq!(set.metadata.name.as_deref(), Some("etcd"));
                    let pod = set.spec.unwrap().template.spec.unwrap();
                    let args = pod.containers[0].command.clone().unwrap();
                    assert!(args.contains(&"--advertise-client-urls=https://etcd.widget-system.svc:2379".to_string()));
                    assert!(args.contains(&"--client-cert-auth=true".to_string()), "mutual TLS");
                }
                "Deployment" => {
                    let d: Deployment = typed(&doc);
                    let spec = d.spec.unwrap();
                    assert_eq!(spec.replicas, Some(2));
                    let pod = spec.template.spec.unwrap();
                    assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));
                    let c = &pod.containers[0];
                    assert_eq!(
                        c.liveness_probe
                            .as_ref()
                            .unwrap()
                            .http_get
                            .as_ref()
                            .unwrap()
                            .path
                            .as_deref(),
                        Some("/livez")
                    );
                    assert_eq!(
                        c.readiness_probe
                            .as_ref()
                            .unwrap()
                            .http_get
                            .as_ref()
                            .unwrap()
                            .path
                            .as_deref(),
                        Some("/readyz")
                    );
                    assert_eq!(
                        c.security_context.as_ref().unwrap().read_only_root_filesystem,
                        Some(true)
                    );
                    assert!(c.resources.as_ref().unwrap().requests.is_some());
                    assert!(
                        c.args
                            .as_ref()
                            .unwrap()
                            .iter()
                            .any(|a| a.starts_with("--etcd-servers="))
                    );
                }
                "Service" => drop(typed::<Service>(&doc)),
                "PodDisruptionBudget" => drop(typed::<PodDisruptionBudget>(&doc)),
                "Secret" => {
                    let s: Secret = typed(&doc);
                    assert_eq!(s.type_.as_deref(), Some("kubernetes.io/tls"));
                    assert_eq!(s.data.unwrap()["ca.crt"].0, ca);
                }
                "APIService" => {
                    let a: APIService = typed(&doc);
                    let spec = a.spec.unwrap();
                    assert_eq!(
                        a.metadata.name,
                        Some(format!(
                            "{}.custom.example.com",
                            spec.version.as_deref().unwrap_or_default()
                        ))
                    );
                    services.push((spec.version.clone().unwrap_or_default(), spec.version_priority));
                    assert_eq!(spec.ca_bundle.unwrap().0, ca, "caBundle is the generated CA");
                    assert_ne!(spec.insecure_skip_tls_verify, Some(true));
                    assert!(spec.group_priority_minimum > 0 && spec.version_priority > 0);
                }
                other => panic!("unexpected kind {other}"),
            }
            kinds.push(kind);
        }
    }
    kinds.sort();
    kinds.dedup();
    assert_eq!(kinds.len(), 12, "{kinds:?}");
    // One APIService per served version, the preferred (by Kubernetes version order) first.
    services.sort_by_key(|(_, priority)| -priority);
    let versions: Vec<&str> = services.iter().map(|(v, _)| v.as_str()).collect();
    assert_eq!(versions, ["v1", "v1alpha1"], "{services:?}");
    assert!(services[0].1 > services[1].1);
}

/// Whether the serving certificate in `certs` verifies, against the CA there, for `name`.
fn verifies(certs: &Path, leaf: &str, name: &str) -> bool {
    let read = |file: &str| std::fs::read(certs.join(file)).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(&read("ca.crt")).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .unwrap();
    let leaf = CertificateDer::from_pem_slice(&read(leaf)).unwrap();
    use rustls::client::danger::ServerCertVerifier as _;
    verifier
        .verify_server_cert(
            &leaf,
            &[],
            &ServerName::try_from(name.to_string()).unwrap(),
            &[],
            UnixTime::now(),
        )
        .is_ok()
}

#[test]
fn the_serving_certificate_verifies_for_the_service_name() {
    let read = |name: &str| std::fs::read(deploy().join("certs").join(name)).unwrap();
    let certs = deploy().join("certs");
    assert!(verifies(&certs, "tls.crt", "widget-server.widget-system.svc"));
    assert!(verifies(
        &certs,
        "tls.crt",
        "widget-server.widget-system.svc.cluster.local"
    ));
    assert!(!verifies(&certs, "tls.crt", "other.widget-system.svc"));
    // The Secret carries the same pair.
    let secret = std::fs::read_to_string(deploy().join("tls-secret.yaml")).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(read("tls.crt"));
    assert!(secret.contains(&b64));
}

#[test]
fn generation_is_deterministic_and_reuses_certificates() {
    let out = tempfile::tempdir().unwrap();
    let certs = out.path().join("deploy/certs");
    std::fs::create_dir_all(&certs).unwrap();
    let etcd = [
        "etcd-server.crt",
        "etcd-server.key",
        "etcd-client.crt",
        "etcd-client.key",
    ];
    for name in ["ca.crt", "ca.key", "tls.crt", "tls.key"].into_iter().chain(etcd) {
        std::fs::copy(deploy().join("certs").join(name), certs.join(name)).unwrap();
    }
    let project = Project::new(
        "widget-server",
        "widget-system",
        "registry.example.com/apiary/widget-server:0.1.0",
    )
    .resource::<widget_api::Widget>()
    .resource::<widget_api::v1alpha1::Widget>()
    .resource::<widget_api::WidgetPolicy>();
    let mut written = Vec::new();
    for _ in 0..2 {
        apiary_codegen::generate(
            &project,
            &out.path().join("deploy"),
            &out.path().join("client"),
            Parts::all(),
            Mode::Write,
            &mut |path, outcome| written.push((path.to_path_buf(), outcome.clone())),
        )
        .unwrap();
    }
    let (first, second) = written.split_at(written.len() / 2);
    assert!(second.iter().all(|(_, o)| *o == Outcome::Unchanged), "{second:?}");
    for (path, _) in first {
        let relative = path.strip_prefix(out.path()).unwrap();
        let committed = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/widget")
            .join(relative);
        assert_eq!(
            std::fs::read(path).unwrap(),
            std::fs::read(&committed).unwrap(),
            "{} is byte-identical to the committed one",
            relative.display()
        );
    }
    // Files say they are generated, and how to regenerate them.
    let deployment = std::fs::read_to_string(out.path().join("deploy/deployment.yaml")).unwrap();
    assert!(deployment.starts_with("# Generated by apiary-codegen") && deployment.contains("cargo xtask generate"));
}

/// New certificates: keys readable by their owner only, validity counted from today (10 years
/// for the CA, 1 year for the serving certificate), rotation that keeps the CA unless asked,
/// and a serving certificate close to expiry re-issued by `generate` (not by `--check`).
#[test]
fn certificates_are_private_current_and_rotate() {
    use std::os::unix::fs::PermissionsExt;
    let out = tempfile::tempdir().unwrap();
    let project = Project::new(
        "widget-server",
        "widget-system",
        "registry.example.com/apiary/widget-server:0.1.0",
    )
    .resource::<widget_api::Widget>();
    let (deploy, client) = (out.path().join("deploy"), out.path().join("client"));
    let generate = |mode| apiary_codegen::generate(&project, &deploy, &client, Parts::all(), mode, &mut |_, _| {});
    generate(Mode::Write).unwrap();
    let certs = deploy.join("certs");
    let read = |name: &str| std::fs::read_to_string(certs.join(name)).unwrap();
    for key in ["ca.key", "tls.key", "etcd-server.key", "etcd-client.key"] {
        let mode = std::fs::metadata(certs.join(key)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }
    assert!(read(".gitignore").lines().any(|l| l == "*.key"));
    let days = |name: &str| apiary_codegen::certs::seconds_left(&read(name)).unwrap() / 86_400;
    assert!((3640..=3651).contains(&days("ca.crt")), "{}", days("ca.crt"));
    assert!((360..=366).contains(&days("tls.crt")), "{}", days("tls.crt"));

    let (ca, tls) = (read("ca.crt"), read("tls.crt"));
    apiary_codegen::rotate_certs(&project, &deploy, false).unwrap();
    assert_eq!(read("ca.crt"), ca, "rotation keeps the CA");
    assert_ne!(read("tls.crt"), tls);
    assert!(verifies(&certs, "tls.crt", "widget-server.widget-system.svc"));
    apiary_codegen::rotate_certs(&project, &deploy, true).unwrap();
    assert_ne!(read("ca.crt"), ca, "--rotate-ca replaces it");
    assert!(verifies(&certs, "tls.crt", "widget-server.widget-system.svc"));
    // The generated etcd's certificate follows the new CA too.
    assert!(verifies(&certs, "etcd-server.crt", "etcd.widget-system.svc"));
    // The Secret and the APIService follow after the next generate.
    generate(Mode::Write).unwrap();
    let secret = std::fs::read_to_string(deploy.join("tls-secret.yaml")).unwrap();
    assert!(secret.contains(&base64::engine::general_purpose::STANDARD.encode(read("tls.crt"))));

    // A serving certificate with 10 days left: --check leaves it, generate renews it.
    let ca_key = rcgen::KeyPair::from_pem(&read("ca.key")).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&read("ca.crt"), ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(apiary_codegen::certs::service_names(&project)).unwrap();
    let soon = std::time::SystemTime::now() + std::time::Duration::from_secs(10 * 86_400);
    params.not_after = soon.into();
    let expiring = params.signed_by(&key, &issuer).unwrap().pem();
    std::fs::write(certs.join("tls.crt"), &expiring).unwrap();
    std::fs::write(certs.join("tls.key"), key.serialize_pem()).unwrap();
    let checked = apiary_codegen::certs::ensure(&certs, &project, Mode::Check).unwrap();
    assert_eq!(checked.tls_crt, expiring, "--check does not fail because of dates");
    generate(Mode::Write).unwrap();
    assert!(days("tls.crt") > 300, "generate renewed the expiring certificate");
    assert_eq!(read("ca.crt"), checked.ca_crt, "keeping the CA");
}

/// The embedded shape: one replica in a StatefulSet whose volume holds the data directory.
#[test]
fn the_embedded_shape_is_a_statefulset_on_a_volume() {
    let out = tempfile::tempdir().unwrap();
    let files = embedded_manifests(out.path());
    assert!(
        files
            .iter()
            .all(|(p, _)| !p.ends_with("deployment.yaml") && !p.ends_with("etcd.yaml"))
    );
    let (_, docs) = files.iter().find(|(p, _)| p.ends_with("statefulset.yaml")).unwrap();
    let set: StatefulSet = typed(&docs[0]);
    let spec = set.spec.unwrap();
    assert_eq!(spec.replicas, Some(1));
    let claim = &spec.volume_claim_templates.unwrap()[0];
    assert_eq!(claim.metadata.name.as_deref(), Some("data"));
    let container = &spec.template.spec.unwrap().containers[0];
    let args = container.args.clone().unwrap();
    assert!(
        args.contains(&"--storage=embedded".to_string()) && args.contains(&"--data-dir=/var/lib/apiary".to_string())
    );
    let mounts = container.volume_mounts.clone().unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m.name == "data" && m.mount_path == "/var/lib/apiary")
    );
}
