//! A real cluster with the Widget server registered behind its aggregator, and the scenarios
//! run against it.

pub mod admission;
pub mod availability;
pub mod controllers;
pub mod identity;
pub mod kubectl;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use apiary_cluster::{Binaries, Cluster, Extension, Process, ServerFlags, free_port};

use crate::common::Kubectl;

/// The generated deployment the cluster registers (namespace, RBAC, APIServices, certificate).
const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");
/// The server binary under test.
const SERVER: &str = env!("CARGO_BIN_EXE_widget-server");

/// Where the Widget server keeps its objects.
#[derive(Clone, Copy)]
pub enum Storage {
    /// Its embedded store, in the test's directory.
    Embedded,
    /// The cluster's etcd, under a prefix of its own.
    Etcd,
}

/// The cluster, the server behind it, and where both keep their state.
pub struct Fixture {
    pub cluster: Cluster,
    pub extension: Extension,
    flags: ServerFlags,
    server: Option<Process>,
    /// The server's loopback port (the APIServices' port).
    pub port: u16,
    storage: Vec<String>,
    dir: tempfile::TempDir,
}

fn fail(e: apiary_cluster::Error) -> ! {
    panic!("{e}")
}

impl Fixture {
    /// Build (or take from the cache) the real components, start the cluster, apply the
    /// generated deployment, start the server and wait until its APIServices are Available.
    pub async fn start(storage: Storage) -> Fixture {
        let binaries = tokio::task::block_in_place(Binaries::ensure).unwrap_or_else(|e| fail(e));
        let dir = tempfile::tempdir().unwrap();
        let cluster = Cluster::start(&binaries, &dir.path().join("cluster"))
            .await
            .unwrap_or_else(|e| fail(e));
        let extension = Extension::from_deploy_dir(Path::new(DEPLOY)).unwrap_or_else(|e| fail(e));
        let flags = cluster.prepare(&extension).await.unwrap_or_else(|e| fail(e));
        let storage = match storage {
            Storage::Embedded => vec![
                "--storage=embedded".into(),
                format!("--data-dir={}", dir.path().join("data").display()),
            ],
            Storage::Etcd => vec![
                "--storage=etcd".into(),
                format!("--etcd-servers={}", cluster.etcd_url()),
                "--etcd-prefix=/registry/widget-server".into(),
            ],
        };
        let mut fixture = Fixture {
            cluster,
            extension,
            flags,
            server: None,
            port: free_port().unwrap_or_else(|e| fail(e)),
            storage,
            dir,
        };
        fixture.start_server().await;
        let (cluster, extension) = (&fixture.cluster, &fixture.extension);
        cluster
            .register(extension, fixture.port)
            .await
            .unwrap_or_else(|e| fail(e));
        fixture
    }

    /// Start the server (again) on its port.
    pub async fn start_server(&mut self) {
        let server = self
            .cluster
            .serve(Path::new(SERVER), &self.flags, self.port, &self.storage)
            .await
            .unwrap_or_else(|e| fail(e));
        self.server = Some(server);
    }

    /// Stop the server (SIGTERM).
    pub fn stop_server(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.stop();
        }
    }

    /// The built release's kubectl (None) or the machine's of `version`, as the cluster's admin.
    pub fn kubectl(&self, version: Option<&str>) -> Kubectl {
        self.kubectl_as(self.cluster.kubeconfig(), version)
    }

    /// A kubectl with `kubeconfig` (the built release's, or the machine's `version`).
    pub fn kubectl_as(&self, kubeconfig: &Path, version: Option<&str>) -> Kubectl {
        let home = self.dir.path().join(format!("home-{}", version.unwrap_or("built")));
        match version {
            None => Kubectl::new(&self.cluster.binaries().kubectl, kubeconfig, &home),
            Some(version) => Kubectl::version(version, kubeconfig, &home),
        }
    }

    /// A kubeconfig like `kubeconfig` but pointed straight at the Widget server (not through
    /// the aggregator), trusting its generated CA.
    pub fn direct(&self, kubeconfig: &Path) -> PathBuf {
        let text = std::fs::read_to_string(kubeconfig).unwrap();
        let ca = std::path::absolute(Path::new(DEPLOY).join("certs/ca.crt")).unwrap();
        let mut out = String::new();
        for line in text.lines() {
            let trimmed = line.trim_start();
            let indent = &line[..line.len() - trimmed.len()];
            if trimmed.starts_with("server: ") {
                out += &format!("{indent}server: https://127.0.0.1:{}\n", self.port);
                // The certificate names the Service, not 127.0.0.1.
                out += &format!("{indent}tls-server-name: widget-server.widget-system.svc\n");
            } else if trimmed.starts_with("certificate-authority: ") {
                out += &format!("{indent}certificate-authority: {}\n", ca.display());
            } else {
                out += line;
                out.push('\n');
            }
        }
        let path = kubeconfig.with_extension("direct.kubeconfig");
        std::fs::write(&path, out).unwrap();
        path
    }

    /// A client of the cluster as its admin.
    pub async fn client(&self) -> kube::Client {
        self.cluster.client().await.unwrap_or_else(|e| fail(e))
    }

    /// The test's scratch directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Fixture {
    /// A failing test shows the end of every component's log (libtest shows a passing test's
    /// output only with --nocapture).
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let logs = self.cluster.dir().join("logs");
        for entry in std::fs::read_dir(&logs).into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("--- {} (last 40 lines) ---", entry.path().display());
            for line in &lines[lines.len().saturating_sub(40)..] {
                eprintln!("{line}");
            }
        }
    }
}

/// Retry `check` every 250 ms until it returns Some, for at most `within`.
pub async fn until<T, F>(what: &str, within: Duration, mut check: impl FnMut() -> F) -> T
where
    F: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
