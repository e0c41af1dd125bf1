//! `cluster up` and `cluster down`: the project's server behind a real kube-apiserver on this
//! machine ([`apiary_cluster`]), registered with its generated APIServices.

use std::path::{Path, PathBuf};

use apiary_cluster::{Binaries, Cluster, Extension, free_port};

use crate::{Mode, Parts, Project};

/// Where the cluster keeps its state, under the project's root.
pub const STATE_DIR: &str = ".apiary/cluster";

/// Where the server stores its objects in the local cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Storage {
    /// The embedded store, in `.apiary/cluster/data`.
    Embedded,
    /// The cluster's own etcd, under the prefix `/registry/<server>`.
    Etcd,
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Stop what a previous `up` left running, generate the deploy directory's manifests and
/// certificates, build the server, start the cluster and the server, register the server's
/// APIServices and wait until they are Available; the processes keep running. Returns the
/// admin kubeconfig's path.
pub fn up(project: &Project, root: &Path, deploy: &Path, storage: Storage) -> Result<PathBuf, String> {
    // Printed paths (the kubeconfig to export) read better without `xtask/..`.
    let root = &root.canonicalize().map_err(|e| format!("{}: {e}", root.display()))?;
    let dir = root.join(STATE_DIR);
    down(root)?;
    let parts = Parts {
        manifests: true,
        certs: true,
        openapi: false,
        client: false,
        go_client: false,
    };
    crate::generate(project, deploy, Path::new(""), parts, Mode::Write, &mut |_, _| {})?;
    let binary = crate::image::build(root, &project.name, &project.features, false)?;
    if !Binaries::is_cached() {
        eprintln!(
            "cluster: building Kubernetes {} and etcd {} with Go into {} (once: about 8 minutes on 2 cores)",
            apiary_cluster::KUBERNETES_RELEASE,
            apiary_cluster::ETCD_RELEASE,
            Binaries::cache_dir().display()
        );
    }
    let binaries = Binaries::ensure().map_err(text)?;
    let _ = std::fs::remove_dir_all(dir.join("data"));
    let runtime = tokio::runtime::Runtime::new().map_err(text)?;
    runtime.block_on(async {
        let cluster = Cluster::start(&binaries, &dir).await.map_err(text)?;
        let extension = Extension::from_deploy_dir(deploy).map_err(text)?;
        let flags = cluster.prepare(&extension).await.map_err(text)?;
        let storage = match storage {
            Storage::Embedded => vec![
                "--storage=embedded".to_string(),
                format!("--data-dir={}", dir.join("data").display()),
            ],
            Storage::Etcd => vec![
                "--storage=etcd".to_string(),
                format!("--etcd-servers={}", cluster.etcd_url()),
                format!("--etcd-prefix=/registry/{}", project.name),
            ],
        };
        let port = free_port().map_err(text)?;
        let server = cluster.serve(&binary, &flags, port, &storage).await.map_err(text)?;
        cluster.register(&extension, port).await.map_err(text)?;
        let kubeconfig = cluster.kubeconfig().to_path_buf();
        for name in extension.apiservices() {
            eprintln!("cluster: APIService {name} is Available (server on https://127.0.0.1:{port})");
        }
        eprintln!(
            "cluster: logs in {}; stop it all with `cargo xtask cluster down`",
            dir.join("logs").display()
        );
        let pids = cluster.detach().map_err(text)?;
        server.detach(&pids).map_err(text)?;
        Ok(kubeconfig)
    })
}

/// Stop exactly what `up` started (by recorded PID and start time); a no-op when nothing runs.
pub fn down(root: &Path) -> Result<Vec<String>, String> {
    apiary_cluster::stop_recorded(&root.join(STATE_DIR).join("pids")).map_err(text)
}
