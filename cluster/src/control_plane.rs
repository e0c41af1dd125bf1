//! etcd, kube-apiserver and kube-controller-manager on free loopback ports.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::kubeconfig::{self, Credential};
use crate::pki::{FRONT_PROXY_CLIENT, Pki};
use crate::{Binaries, Error, Process};

/// How long each component has to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(200);
/// The Service CIDR (kube-apiserver requires one; nothing here routes to it).
const SERVICE_CIDR: &str = "10.0.0.0/24";

/// A running control plane; its processes stop when it is dropped, unless detached.
pub struct Cluster {
    dir: PathBuf,
    pki: Pki,
    binaries: Binaries,
    url: String,
    etcd_url: String,
    kubeconfig: PathBuf,
    /// In start order; stopped in reverse.
    processes: Vec<Process>,
}

/// A free loopback port (released for the component to bind: a small race other tests on the
/// machine could lose, which the caller then sees as a start failure naming the port).
pub fn free_port() -> Result<u16, Error> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(Error::io("127.0.0.1:0"))?;
    Ok(listener.local_addr().map_err(Error::io("127.0.0.1:0"))?.port())
}

/// Poll `check` until it returns Some, while `process` runs, for up to `READY_TIMEOUT`.
pub(crate) async fn ready<T, F>(process: &mut Process, what: &str, mut check: impl FnMut() -> F) -> Result<T, Error>
where
    F: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        process.check_running()?;
        if Instant::now() > deadline {
            return Err(process.start_error(format!("{what} within {} s", READY_TIMEOUT.as_secs())));
        }
        tokio::time::sleep(POLL).await;
    }
}

impl Cluster {
    /// Start a fresh cluster with its state under `dir` (certificates are kept across starts;
    /// etcd's data and the logs are not), and wait until kube-apiserver is ready and
    /// kube-controller-manager runs its controllers.
    pub async fn start(binaries: &Binaries, dir: &Path) -> Result<Cluster, Error> {
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        let dir = std::path::absolute(dir).map_err(Error::io(dir))?;
        for stale in ["etcd", "logs"] {
            let _ = std::fs::remove_dir_all(dir.join(stale));
        }
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs).map_err(Error::io(&logs))?;
        let pki = Pki::ensure(&dir.join("pki"))?;
        let mut cluster = Cluster {
            pki,
            binaries: binaries.clone(),
            url: String::new(),
            etcd_url: String::new(),
            kubeconfig: dir.join("admin.kubeconfig"),
            processes: Vec::new(),
            dir,
        };
        cluster.start_etcd().await?;
        cluster.start_apiserver().await?;
        cluster.start_controller_manager().await?;
        Ok(cluster)
    }

    async fn start_etcd(&mut self) -> Result<(), Error> {
        let (client, peer) = (free_port()?, free_port()?);
        self.etcd_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut etcd = Command::new(&self.binaries.etcd);
        etcd.args(["--name", "apiary", "--data-dir"])
            .arg(self.dir.join("etcd"))
            .args(["--listen-client-urls", &self.etcd_url])
            .args(["--advertise-client-urls", &self.etcd_url])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("apiary={peer_url}")])
            // As kube-apiserver's own test clusters: no fsync wait on a throwaway data dir.
            .args(["--unsafe-no-fsync", "--log-level", "warn"]);
        let mut process = Process::spawn("etcd", etcd, &self.dir.join("logs/etcd.log"))?;
        let health = format!("127.0.0.1:{client}");
        ready(&mut process, "etcd to listen", || {
            let health = health.clone();
            async move { tokio::net::TcpStream::connect(health).await.ok().map(drop) }
        })
        .await?;
        self.processes.push(process);
        Ok(())
    }

    async fn start_apiserver(&mut self) -> Result<(), Error> {
        let port = free_port()?;
        self.url = format!("https://127.0.0.1:{port}");
        let p = |name: &str| self.pki.path(name).display().to_string();
        let flag = |name: &str, value: String| format!("--{name}={value}");
        let mut apiserver = Command::new(&self.binaries.kube_apiserver);
        apiserver.args([
            flag("etcd-servers", self.etcd_url.clone()),
            flag("bind-address", "127.0.0.1".into()),
            flag("advertise-address", "127.0.0.1".into()),
            flag("secure-port", port.to_string()),
            flag("cert-dir", self.dir.join("apiserver").display().to_string()),
            flag("tls-cert-file", p("apiserver.crt")),
            flag("tls-private-key-file", p("apiserver.key")),
            flag("client-ca-file", p("ca.crt")),
            flag("service-cluster-ip-range", SERVICE_CIDR.into()),
            flag("authorization-mode", "Node,RBAC".into()),
            flag("service-account-issuer", self.url.clone()),
            flag("service-account-key-file", p("sa.pub")),
            flag("service-account-signing-key-file", p("sa.key")),
            // It cannot publish 127.0.0.1 in the `kubernetes` Service's endpoints.
            flag("endpoint-reconciler-type", "none".into()),
            // The front proxy: how the aggregator proves, to extension servers, whom it
            // forwards for. kube-apiserver publishes these in
            // kube-system/extension-apiserver-authentication, where servers read them.
            flag("requestheader-client-ca-file", p("front-proxy-ca.crt")),
            flag("requestheader-allowed-names", FRONT_PROXY_CLIENT.into()),
            flag("requestheader-username-headers", "X-Remote-User".into()),
            flag("requestheader-uid-headers", "X-Remote-Uid".into()),
            flag("requestheader-group-headers", "X-Remote-Group".into()),
            flag("requestheader-extra-headers-prefix", "X-Remote-Extra-".into()),
            flag("proxy-client-cert-file", p("front-proxy-client.crt")),
            flag("proxy-client-key-file", p("front-proxy-client.key")),
            flag("v", "1".into()),
        ]);
        let mut process = Process::spawn("kube-apiserver", apiserver, &self.dir.join("logs/kube-apiserver.log"))?;
        let admin = self.pki.pair("admin");
        kubeconfig::write(
            &self.kubeconfig,
            "apiary-cluster",
            &self.url,
            &self.pki.path("ca.crt"),
            Credential::Certificate {
                cert: &admin.cert,
                key: &admin.key,
            },
        )?;
        let client = self.client().await?;
        // /readyz waits for every post-start hook: RBAC's bootstrap roles, the
        // extension-apiserver-authentication ConfigMap, the aggregator's controllers.
        ready(&mut process, "kube-apiserver's /readyz", || {
            let client = client.clone();
            async move {
                let request = http::Request::get("/readyz").body(Vec::new()).ok()?;
                client
                    .request_text(request)
                    .await
                    .ok()
                    .filter(|body| body.trim() == "ok")
                    .map(drop)
            }
        })
        .await?;
        self.processes.push(process);
        Ok(())
    }

    async fn start_controller_manager(&mut self) -> Result<(), Error> {
        let kubeconfig = self.dir.join("controller-manager.kubeconfig");
        let pair = self.pki.pair("controller-manager");
        kubeconfig::write(
            &kubeconfig,
            "kube-controller-manager",
            &self.url,
            &self.pki.path("ca.crt"),
            Credential::Certificate {
                cert: &pair.cert,
                key: &pair.key,
            },
        )?;
        let config = kubeconfig.display().to_string();
        let mut manager = Command::new(&self.binaries.kube_controller_manager);
        manager.args([
            format!("--kubeconfig={config}"),
            format!("--authentication-kubeconfig={config}"),
            format!("--authorization-kubeconfig={config}"),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", free_port()?),
            // What an aggregated API meets in a cluster: the namespace controller deletes a
            // terminating namespace's objects of every resource, the garbage collector follows
            // ownerReferences through metadata informers of every resource, and service
            // accounts get their default ones.
            "--controllers=namespace,garbagecollector,serviceaccount".into(),
            // Each controller runs as its own service account (kube-system/namespace-controller,
            // …) with a token from the TokenRequest API, as in a real cluster: extension servers
            // see those identities, not kube-controller-manager's own.
            "--use-service-account-credentials=true".into(),
            format!(
                "--service-account-private-key-file={}",
                self.pki.path("sa.key").display()
            ),
            format!("--root-ca-file={}", self.pki.path("ca.crt").display()),
            "--leader-elect=false".into(),
            "--v=1".into(),
        ]);
        let mut process = Process::spawn(
            "kube-controller-manager",
            manager,
            &self.dir.join("logs/kube-controller-manager.log"),
        )?;
        // The service-account controller's first work: the default namespace's `default`
        // account. It shows the controllers run (not merely that the process started).
        let client = self.client().await?;
        ready(&mut process, "the default ServiceAccount", || {
            let accounts: kube::Api<kube::api::DynamicObject> =
                kube::Api::namespaced_with(client.clone(), "default", &service_account());
            async move { accounts.get_opt("default").await.ok().flatten().map(drop) }
        })
        .await?;
        self.processes.push(process);
        Ok(())
    }

    /// kube-apiserver's URL (`https://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// etcd's client URL (`http://127.0.0.1:PORT`); servers may share it with their own prefix.
    pub fn etcd_url(&self) -> &str {
        &self.etcd_url
    }

    /// The cluster's state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The built components this cluster runs (its kubectl among them).
    pub fn binaries(&self) -> &Binaries {
        &self.binaries
    }

    /// A kubeconfig of the cluster's admin (a client certificate in `system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The cluster CA's certificate (PEM file): it signs kube-apiserver's serving certificate
    /// and every client certificate the cluster accepts.
    pub fn ca(&self) -> PathBuf {
        self.pki.path("ca.crt")
    }

    /// A client of the cluster as its admin.
    pub async fn client(&self) -> Result<kube::Client, Error> {
        client_for(&self.kubeconfig).await
    }

    /// A kubeconfig (written under the cluster's directory) for user `user` in `groups`, who
    /// authenticates with a client certificate from the cluster CA.
    pub fn user_kubeconfig(&self, user: &str, groups: &[&str]) -> Result<PathBuf, Error> {
        let file: String = user
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let pair = self.pki.user(&format!("user-{file}"), user, groups)?;
        let path = self.dir.join(format!("user-{file}.kubeconfig"));
        kubeconfig::write(
            &path,
            user,
            &self.url,
            &self.ca(),
            Credential::Certificate {
                cert: &pair.cert,
                key: &pair.key,
            },
        )?;
        Ok(path)
    }

    /// A kubeconfig (written under the cluster's directory) for service account `name` in
    /// `namespace`, with a token from the TokenRequest API valid for `seconds`.
    pub async fn service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
        seconds: u64,
    ) -> Result<PathBuf, Error> {
        let body = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": seconds},
        });
        let request = http::Request::post(format!("/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token"))
            .header("content-type", "application/json")
            .body(body.to_string().into_bytes())
            .map_err(|e| Error::Kube(kube::Error::HttpError(e)))?;
        let answer: serde_json::Value = self.client().await?.request(request).await?;
        let Some(token) = answer["status"]["token"].as_str().filter(|t| !t.is_empty()) else {
            return Err(Error::Answer {
                what: format!("a token for {namespace}/{name}"),
                detail: answer.to_string(),
            });
        };
        let path = self.dir.join(format!("{namespace}-{name}.kubeconfig"));
        kubeconfig::write(&path, name, &self.url, &self.ca(), Credential::Token(token))?;
        Ok(path)
    }

    /// Leave the processes running after this handle is gone (for `cargo xtask cluster up`):
    /// they are recorded in `<dir>/pids`, where [`crate::stop_recorded`] finds them.
    pub fn detach(mut self) -> Result<PathBuf, Error> {
        let pids = self.pids_file();
        for process in self.processes.drain(..) {
            process.detach(&pids)?;
        }
        Ok(pids)
    }

    /// Where detached processes are recorded.
    pub fn pids_file(&self) -> PathBuf {
        self.dir.join("pids")
    }

    /// The control plane's process of `name` (`etcd`, `kube-apiserver`,
    /// `kube-controller-manager`), to stop or kill it in a test.
    pub fn process(&mut self, name: &str) -> Option<&mut Process> {
        self.processes.iter_mut().find(|p| p.name() == name)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        while let Some(mut process) = self.processes.pop() {
            process.stop();
        }
    }
}

/// A client from a kubeconfig file.
pub async fn client_for(path: &Path) -> Result<kube::Client, Error> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

fn service_account() -> kube::api::ApiResource {
    kube::api::ApiResource {
        group: String::new(),
        version: "v1".into(),
        api_version: "v1".into(),
        kind: "ServiceAccount".into(),
        plural: "serviceaccounts".into(),
    }
}
