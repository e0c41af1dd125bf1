//! Test harness: a real `widget-server` process on a free loopback port, and the real kubectl.
#![allow(dead_code)]

use std::path::Path;

#[allow(unused_imports)]
pub use apiary_runtime::testing::{KUBECTL_DIR, Kubectl, Run, ServerProcess, VERSIONS, eventually};

/// Starting widget-server processes.
pub trait WidgetServer {
    /// Start widget-server in `dir` with extra flags and wait until it listens.
    fn start_in(dir: &Path, args: &[&str]) -> ServerProcess;
    /// Start widget-server with in-memory storage in a fresh directory.
    fn start(dir: &Path) -> ServerProcess;
    /// A `kube` client for this server with the admin credentials.
    async fn client(&self) -> kube::Client;
}

impl WidgetServer for ServerProcess {
    fn start_in(dir: &Path, args: &[&str]) -> ServerProcess {
        ServerProcess::spawn(env!("CARGO_BIN_EXE_widget-server"), dir, args)
    }

    fn start(dir: &Path) -> ServerProcess {
        Self::start_in(dir, &["--storage", "memory"])
    }

    async fn client(&self) -> kube::Client {
        kube_client(&self.kubeconfig, &self.url).await
    }
}

/// A Widget manifest.
pub fn widget(name: &str, replicas: i32, extra_spec: &str) -> String {
    format!(
        "apiVersion: custom.example.com/v1\nkind: Widget\nmetadata:\n  name: {name}\n  labels:\n    app: demo\nspec:\n  replicas: {replicas}\n  image: nginx:1.25\n{extra_spec}"
    )
}

/// A `kube` client for `url` with the admin credentials in `kubeconfig`.
pub async fn kube_client(kubeconfig: &Path, url: &str) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let options = kube::config::KubeConfigOptions::default();
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .unwrap();
    config.cluster_url = url.parse().unwrap();
    kube::Client::try_from(config).unwrap()
}

/// A typed Widget with `replicas` of nginx.
pub fn typed_widget(name: &str, replicas: i32) -> widget_api::Widget {
    let spec = widget_api::WidgetSpec {
        replicas,
        image: "nginx:1.25".into(),
        color: String::new(),
    };
    let mut w = widget_api::Widget {
        spec,
        ..Default::default()
    };
    w.metadata.name = Some(name.into());
    w
}

/// The resourceVersion of a fresh list (where a watch that misses nothing starts).
pub async fn list_rv(api: &kube::Api<widget_api::Widget>) -> String {
    api.list(&Default::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap()
}

/// The `(code, reason)` of a kube API error's Status (`(0, "")` for other errors).
pub fn status_of(error: &kube::Error) -> (u16, &str) {
    match error {
        kube::Error::Api(s) => (s.code, s.reason.as_str()),
        _ => (0, ""),
    }
}
