//! The manifests (askama templates under `templates/`): a kustomize directory deploying the
//! server behind the aggregation layer.

use std::path::PathBuf;

use askama::Template;
use base64::Engine as _;

use crate::certs::ServingCerts;
use crate::{File, GENERATED, Project, StorageShape};

/// `# <GENERATED>`.
fn header() -> String {
    format!("# {GENERATED}")
}

#[derive(Template)]
#[template(path = "namespace.yaml", escape = "none")]
struct Namespace<'a> {
    header: String,
    p: &'a Project,
}

#[derive(Template)]
#[template(path = "serviceaccount.yaml", escape = "none")]
struct ServiceAccount<'a> {
    header: String,
    p: &'a Project,
}

/// An aggregated ClusterRole: its suffix, the built-in roles it joins, and its verbs.
struct Role {
    name: &'static str,
    aggregate_to: &'static [&'static str],
    verbs: String,
}

/// One API group's resources, as a YAML flow list.
struct Group {
    name: &'static str,
    resources: String,
}

#[derive(Template)]
#[template(path = "rbac.yaml", escape = "none")]
struct Rbac<'a> {
    header: String,
    p: &'a Project,
    roles: Vec<Role>,
    groups: Vec<Group>,
}

#[derive(Template)]
#[template(path = "deployment.yaml", escape = "none")]
struct Deployment<'a> {
    header: String,
    p: &'a Project,
    /// The data volume's size: a StatefulSet on embedded storage; none: a Deployment on etcd.
    size: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "etcd.yaml", escape = "none")]
struct Etcd<'a> {
    header: String,
    p: &'a Project,
    /// Base64 PEM: etcd's serving pair, the server's client pair, the CA.
    server_crt: String,
    server_key: String,
    client_crt: String,
    client_key: String,
    ca_crt: String,
}

#[derive(Template)]
#[template(path = "service.yaml", escape = "none")]
struct Service<'a> {
    header: String,
    p: &'a Project,
}

#[derive(Template)]
#[template(path = "pdb.yaml", escape = "none")]
struct Pdb<'a> {
    header: String,
    p: &'a Project,
}

struct GroupVersion {
    group: &'static str,
    version: &'static str,
    /// `versionPriority`: higher is preferred.
    priority: usize,
}

#[derive(Template)]
#[template(path = "apiservice.yaml", escape = "none")]
struct ApiService<'a> {
    header: String,
    p: &'a Project,
    group_versions: Vec<GroupVersion>,
    ca_bundle: String,
}

#[derive(Template)]
#[template(path = "tls-secret.yaml", escape = "none")]
struct TlsSecret<'a> {
    header: String,
    p: &'a Project,
    tls_crt: String,
    tls_key: String,
    ca_crt: String,
}

#[derive(Template)]
#[template(path = "Dockerfile", escape = "none")]
struct Dockerfile<'a> {
    header: String,
    p: &'a Project,
}

#[derive(Template)]
#[template(path = "kustomization.yaml", escape = "none")]
struct Kustomization {
    header: String,
    files: Vec<&'static str>,
}

fn quoted(items: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    items
        .into_iter()
        .map(|i| format!("\"{}\"", i.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every manifest, in apply order, plus the kustomization listing them.
pub fn render(project: &Project, certs: &ServingCerts) -> Result<Vec<File>, String> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let metas = project.metas();
    let groups = apiary_runtime::discovery::groups(&metas);
    let read = ["get", "list", "watch"];
    let write = ["create", "update", "patch", "delete", "deletecollection"];
    let all: Vec<&str> = read.iter().chain(&write).copied().collect();
    let roles = vec![
        Role {
            name: "view",
            aggregate_to: &["view", "edit", "admin"],
            verbs: quoted(read),
        },
        Role {
            name: "edit",
            aggregate_to: &["edit", "admin"],
            verbs: quoted(&all),
        },
        Role {
            name: "admin",
            aggregate_to: &["admin"],
            verbs: quoted(&all),
        },
    ];
    let rbac_groups = groups
        .iter()
        .map(|(group, versions)| {
            let mut resources: Vec<String> = Vec::new();
            for (_, metas) in versions {
                for m in metas {
                    for r in [
                        Some(m.plural.to_string()),
                        m.status.then(|| format!("{}/status", m.plural)),
                        m.scale.map(|_| format!("{}/scale", m.plural)),
                    ]
                    .into_iter()
                    .flatten()
                    {
                        if !resources.contains(&r) {
                            resources.push(r);
                        }
                    }
                }
            }
            Group {
                name: group,
                resources: quoted(resources),
            }
        })
        .collect();
    // Versions come by priority: the first, preferred, gets the highest versionPriority.
    let group_versions = groups
        .iter()
        .flat_map(|(group, versions)| {
            let n = versions.len();
            versions.iter().enumerate().map(move |(i, (version, _))| GroupVersion {
                group,
                version,
                priority: 15 * (n - i),
            })
        })
        .collect();
    let p = project;
    let rendered: Vec<(&'static str, Result<String, askama::Error>)> = vec![
        ("namespace.yaml", Namespace { header: header(), p }.render()),
        ("serviceaccount.yaml", ServiceAccount { header: header(), p }.render()),
        (
            "rbac.yaml",
            Rbac {
                header: header(),
                p,
                roles,
                groups: rbac_groups,
            }
            .render(),
        ),
        (
            "tls-secret.yaml",
            TlsSecret {
                header: header(),
                p,
                tls_crt: b64(&certs.tls_crt),
                tls_key: b64(&certs.tls_key),
                ca_crt: b64(&certs.ca_crt),
            }
            .render(),
        ),
        match &p.storage {
            StorageShape::Embedded { size } => (
                "statefulset.yaml",
                Deployment {
                    header: header(),
                    p,
                    size: Some(size),
                }
                .render(),
            ),
            StorageShape::Etcd => (
                "deployment.yaml",
                Deployment {
                    header: header(),
                    p,
                    size: None,
                }
                .render(),
            ),
        },
        ("service.yaml", Service { header: header(), p }.render()),
        ("pdb.yaml", Pdb { header: header(), p }.render()),
        (
            "apiservice.yaml",
            ApiService {
                header: header(),
                p,
                group_versions,
                ca_bundle: b64(&certs.ca_crt),
            }
            .render(),
        ),
    ];
    let mut rendered = rendered;
    if let (true, Some(etcd)) = (p.etcd_tls(), &certs.etcd) {
        let etcd = Etcd {
            header: header(),
            p,
            server_crt: b64(&etcd.server_crt),
            server_key: b64(&etcd.server_key),
            client_crt: b64(&etcd.client_crt),
            client_key: b64(&etcd.client_key),
            ca_crt: b64(&certs.ca_crt),
        };
        rendered.push(("etcd.yaml", etcd.render()));
    }
    let mut files = Vec::new();
    let mut names = Vec::new();
    for (name, text) in rendered {
        let mut text = text.map_err(|e| format!("{name}: {e}"))?;
        text.push('\n');
        names.push(name);
        files.push(File {
            path: PathBuf::from(name),
            bytes: text.into_bytes(),
        });
    }
    let mut dockerfile = Dockerfile { header: header(), p }
        .render()
        .map_err(|e| format!("Dockerfile: {e}"))?;
    dockerfile.push('\n');
    files.push(File {
        path: PathBuf::from("Dockerfile"),
        bytes: dockerfile.into_bytes(),
    });
    let mut kustomization = Kustomization {
        header: header(),
        files: names,
    }
    .render()
    .map_err(|e| format!("kustomization.yaml: {e}"))?;
    kustomization.push('\n');
    files.push(File {
        path: PathBuf::from("kustomization.yaml"),
        bytes: kustomization.into_bytes(),
    });
    Ok(files)
}
