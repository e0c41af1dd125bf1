//! An extension server's place in the cluster, from its generated deploy directory: its
//! namespace, service account and RBAC applied as generated, a token for it, and its
//! APIServices pointed at a loopback port.
//!
//! With aggregator routing off (the default), kube-apiserver resolves an APIService's Service
//! itself, and for `type: ExternalName` it dials `https://<externalName>:<APIService port>`
//! while still verifying the serving certificate for `<service>.<namespace>.svc` against the
//! APIService's `caBundle`. Endpoints cannot name a loopback address, so this is how a server
//! on this machine takes its place behind a real aggregator, with the generated certificate.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};

use crate::{Cluster, Error, Process};

/// The field manager of everything this crate applies.
const MANAGER: &str = "apiary-cluster";
/// How long a registered server has to become `Available`.
const AVAILABLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Lifetime of the server's service-account token (a local cluster's day's work, and more).
const TOKEN_SECONDS: u64 = 7 * 24 * 3600;

/// A server's deployment, as `cargo xtask generate` writes it.
#[derive(Clone, Debug)]
pub struct Extension {
    /// The Service the APIServices name (and so the serving certificate's name).
    pub service: String,
    /// Its namespace, where the server's service account lives.
    pub namespace: String,
    /// Namespace, ServiceAccount and RBAC objects, in apply order.
    setup: Vec<Value>,
    /// The APIServices, with their generated `caBundle`.
    apiservices: Vec<Value>,
    /// The serving certificate (PEM) for `<service>.<namespace>.svc`.
    pub tls_cert: PathBuf,
    /// Its key.
    pub tls_key: PathBuf,
}

/// The flags a server needs to run delegated to the cluster (add `--secure-port` and storage).
#[derive(Clone, Debug)]
pub struct ServerFlags {
    /// `--flag=value` arguments.
    pub args: Vec<String>,
    /// The kubeconfig of the server's service account.
    pub kubeconfig: PathBuf,
}

fn read_manifests(path: &Path) -> Result<Vec<Value>, Error> {
    let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).map_err(|e| Error::Manifest {
        path: path.into(),
        detail: e.to_string(),
    })?;
    Ok(docs.into_iter().filter(|d| d.is_object()).collect())
}

impl Extension {
    /// Read a deploy directory: `namespace.yaml`, `serviceaccount.yaml`, `rbac.yaml`,
    /// `apiservice.yaml` and `certs/tls.{crt,key}`.
    pub fn from_deploy_dir(dir: &Path) -> Result<Extension, Error> {
        let mut setup = Vec::new();
        for file in ["namespace.yaml", "serviceaccount.yaml", "rbac.yaml"] {
            setup.extend(read_manifests(&dir.join(file))?);
        }
        let path = dir.join("apiservice.yaml");
        let apiservices = read_manifests(&path)?;
        let service = apiservices
            .first()
            .map(|a| &a["spec"]["service"])
            .and_then(|s| Some((s["name"].as_str()?.to_string(), s["namespace"].as_str()?.to_string())));
        let Some((service, namespace)) = service else {
            return Err(Error::Manifest {
                path,
                detail: "no APIService with spec.service.name and namespace".into(),
            });
        };
        Ok(Extension {
            service,
            namespace,
            setup,
            apiservices,
            tls_cert: dir.join("certs/tls.crt"),
            tls_key: dir.join("certs/tls.key"),
        })
    }

    /// The APIServices' names (`v1.custom.example.com`, …).
    pub fn apiservices(&self) -> Vec<String> {
        self.apiservices
            .iter()
            .filter_map(|a| a["metadata"]["name"].as_str().map(String::from))
            .collect()
    }
}

/// Server-side apply `object` (its kind found by discovery) as this crate's field manager.
async fn apply(client: &kube::Client, object: &Value) -> Result<(), Error> {
    let object: DynamicObject = serde_json::from_value(object.clone()).map_err(|e| Error::Manifest {
        path: PathBuf::from("-"),
        detail: e.to_string(),
    })?;
    let types = object.types.clone().unwrap_or_default();
    let gvk = GroupVersionKind::try_from(&types).map_err(|e| Error::Manifest {
        path: PathBuf::from("-"),
        detail: e.to_string(),
    })?;
    let (resource, capabilities) = kube::discovery::pinned_kind(client, &gvk).await?;
    let api: kube::Api<DynamicObject> = match (&object.metadata.namespace, capabilities.scope) {
        (Some(ns), kube::discovery::Scope::Namespaced) => kube::Api::namespaced_with(client.clone(), ns, &resource),
        _ => kube::Api::all_with(client.clone(), &resource),
    };
    let name = object.metadata.name.clone().unwrap_or_default();
    api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&object))
        .await?;
    Ok(())
}

fn apiservice_resource() -> ApiResource {
    ApiResource {
        group: "apiregistration.k8s.io".into(),
        version: "v1".into(),
        api_version: "apiregistration.k8s.io/v1".into(),
        kind: "APIService".into(),
        plural: "apiservices".into(),
    }
}

/// An APIService's `Available` condition: (status, reason, message), or None before the
/// availability controller has written one.
pub async fn apiservice_condition(
    client: &kube::Client,
    name: &str,
) -> Result<Option<(String, String, String)>, Error> {
    let api: kube::Api<DynamicObject> = kube::Api::all_with(client.clone(), &apiservice_resource());
    let object = api.get(name).await?;
    let conditions = object.data["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    Ok(conditions.iter().find(|c| c["type"] == "Available").map(|c| {
        let text = |k: &str| c[k].as_str().unwrap_or_default().to_string();
        (text("status"), text("reason"), text("message"))
    }))
}

impl Cluster {
    /// Apply the server's namespace, service account and RBAC as generated, and give it a
    /// token: the flags of a server delegated to this cluster (TokenReview,
    /// SubjectAccessReview, the request-header CA from extension-apiserver-authentication,
    /// admission's namespaces and webhooks), serving the generated certificate on loopback.
    pub async fn prepare(&self, extension: &Extension) -> Result<ServerFlags, Error> {
        let client = self.client().await?;
        for object in &extension.setup {
            apply(&client, object).await?;
        }
        let kubeconfig = self
            .service_account_kubeconfig(&extension.namespace, &extension.service, TOKEN_SECONDS)
            .await?;
        let config = kubeconfig.display().to_string();
        let absolute = |p: &Path| std::path::absolute(p).map_err(Error::io(p));
        Ok(ServerFlags {
            args: vec![
                "--bind-address=127.0.0.1".into(),
                format!("--tls-cert-file={}", absolute(&extension.tls_cert)?.display()),
                format!("--tls-private-key-file={}", absolute(&extension.tls_key)?.display()),
                format!("--authentication-kubeconfig={config}"),
                format!("--authorization-kubeconfig={config}"),
                format!("--leader-elect-resource-namespace={}", extension.namespace),
            ],
            kubeconfig,
        })
    }

    /// Start a server `binary` with `flags` (from [`Cluster::prepare`]) and `extra` arguments
    /// (storage) on loopback `port`, in the cluster's directory, its log in `logs/`; waits
    /// until it accepts connections.
    pub async fn serve(
        &self,
        binary: &Path,
        flags: &ServerFlags,
        port: u16,
        extra: &[String],
    ) -> Result<Process, Error> {
        let name = binary
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut command = std::process::Command::new(binary);
        command
            .args(&flags.args)
            .arg(format!("--secure-port={port}"))
            .args(extra)
            .current_dir(self.dir());
        let mut process = Process::spawn(&name, command, &self.dir().join("logs").join(format!("{name}.log")))?;
        crate::control_plane::ready(&mut process, "the server to listen", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(drop)
        })
        .await?;
        Ok(process)
    }

    /// Point the server's APIServices at `port` on this machine (an `ExternalName` Service,
    /// the generated `caBundle`) and wait until every one is `Available`.
    pub async fn register(&self, extension: &Extension, port: u16) -> Result<(), Error> {
        let client = self.client().await?;
        let service = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": extension.service, "namespace": extension.namespace},
            "spec": {"type": "ExternalName", "externalName": "localhost"},
        });
        apply(&client, &service).await?;
        for apiservice in &extension.apiservices {
            let mut apiservice = apiservice.clone();
            apiservice["spec"]["service"]["port"] = json!(port);
            apply(&client, &apiservice).await?;
        }
        for name in extension.apiservices() {
            self.wait_apiservice(&name, true).await?;
        }
        Ok(())
    }

    /// Wait until APIService `name` is `Available` (or, with `available` false, until it is
    /// not); returns the condition's (status, reason, message).
    pub async fn wait_apiservice(&self, name: &str, available: bool) -> Result<(String, String, String), Error> {
        let client = self.client().await?;
        let want = if available { "True" } else { "False" };
        let deadline = Instant::now() + AVAILABLE_TIMEOUT;
        let mut last = None;
        loop {
            if let Some(condition) = apiservice_condition(&client, name).await? {
                if condition.0 == want {
                    return Ok(condition);
                }
                last = Some(condition);
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: format!("APIService {name} to be Available={want} (last: {last:?})"),
                    seconds: AVAILABLE_TIMEOUT.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
