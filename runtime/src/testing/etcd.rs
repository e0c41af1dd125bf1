//! Real etcd processes on free loopback ports: one member, or a cluster of several; stopped,
//! paused, restarted, snapshotted and restored as an operator (or a failure) would.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_ports;

/// A real `etcd` (Debian's etcd-server unless told another binary) with its own data
/// directory; killed on drop.
pub struct EtcdProcess {
    child: Option<Child>,
    binary: PathBuf,
    name: String,
    data_dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    /// `--initial-cluster`: this member alone, or every member of an [`EtcdCluster`].
    initial_cluster: String,
    flags: Vec<String>,
}

/// `$ETCD_BIN`, else `etcd` from the `PATH`.
fn default_binary() -> PathBuf {
    std::env::var_os("ETCD_BIN").map_or_else(|| "etcd".into(), PathBuf::from)
}

/// The member's peer URL on `port`.
fn peer_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

impl EtcdProcess {
    /// Start etcd with data under `dir` and wait until it answers.
    pub fn start(dir: &Path) -> EtcdProcess {
        Self::start_with(dir, &[])
    }

    /// Start etcd with extra flags: its TLS flags (`--cert-file=…`, `--key-file=…`,
    /// `--trusted-ca-file=…`, `--client-cert-auth=true`) make clients use https.
    pub fn start_with(dir: &Path, flags: &[String]) -> EtcdProcess {
        Self::start_binary(&default_binary(), dir, flags)
    }

    /// [`EtcdProcess::start_with`] with the etcd at `binary` (say a release built from source).
    pub fn start_binary(binary: &Path, dir: &Path, flags: &[String]) -> EtcdProcess {
        // A released port can be taken by anyone (another test's server binding port 0) before
        // etcd binds it; etcd then exits at once, and fresh ports are the remedy.
        let data_dir = dir.join("etcd");
        let fresh = !data_dir.exists();
        let mut failures = Vec::new();
        for _ in 0..5 {
            let [client_port, peer_port] = free_ports();
            let mut etcd = EtcdProcess {
                child: None,
                binary: binary.to_path_buf(),
                name: "apiary-test".into(),
                data_dir: data_dir.clone(),
                client_port,
                peer_port,
                initial_cluster: format!("apiary-test={}", peer_url(peer_port)),
                flags: flags.to_vec(),
            };
            match etcd.launch().and_then(|()| etcd.wait_healthy()) {
                Ok(()) => return etcd,
                Err(failure) => failures.push(failure),
            }
            // A new member records its peer address; the next try must not inherit this one's.
            if fresh {
                let _ = std::fs::remove_dir_all(&data_dir);
            }
        }
        panic!("etcd did not start: {failures:#?}");
    }

    /// `http://127.0.0.1:PORT` (https with TLS flags).
    pub fn endpoint(&self) -> String {
        let tls = self.flags.iter().any(|f| f.starts_with("--cert-file"));
        format!(
            "{}://127.0.0.1:{}",
            if tls { "https" } else { "http" },
            self.client_port
        )
    }

    /// The etcd storage backend on this etcd (plain endpoints; TLS setups build their own).
    pub async fn client(&self) -> crate::storage::etcd::Etcd {
        let config = crate::storage::etcd::EtcdConfig {
            endpoints: vec![self.endpoint()],
            ..Default::default()
        };
        crate::storage::etcd::Etcd::connect(&config)
            .await
            .expect("an etcd backend connects lazily")
    }

    /// etcd's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kill etcd (SIGKILL), keeping its data.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freeze etcd (`SIGSTOP`): its sockets stay open and nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Let a frozen etcd go on (`SIGCONT`).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.pid().expect("etcd runs").to_string();
        let status = Command::new("kill").args([signal, &pid]).status().expect("kill runs");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Start etcd again on the same ports and data, and wait until it answers.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(failure) = self.launch().and_then(|()| self.wait_healthy()) {
            panic!("etcd did not restart: {failure}");
        }
    }

    /// Save a snapshot of etcd's keyspace to `to` with `etcdctl snapshot save`.
    pub fn snapshot(&self, etcdctl: &Path, to: &Path) {
        let output = Command::new(etcdctl)
            .args(["--endpoints", &self.endpoint(), "snapshot", "save"])
            .arg(to)
            .output()
            .expect("etcdctl runs");
        assert!(output.status.success(), "etcdctl snapshot save: {output:?}");
    }

    /// Stop etcd, replace its data with `snapshot` by `etcdutl snapshot restore` (with
    /// `extra` flags such as `--bump-revision`), and start it again on the same ports: what an
    /// operator does to go back to a backup.
    pub fn restore(&mut self, etcdutl: &Path, snapshot: &Path, extra: &[&str]) {
        self.stop();
        std::fs::remove_dir_all(&self.data_dir).expect("etcd's data directory is removed");
        let output = Command::new(etcdutl)
            .args(["snapshot", "restore"])
            .arg(snapshot)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--name", &self.name, "--initial-cluster", &self.initial_cluster])
            .args(["--initial-advertise-peer-urls", &peer_url(self.peer_port)])
            .args(extra)
            .output()
            .expect("etcdutl runs");
        assert!(output.status.success(), "etcdutl snapshot restore: {output:?}");
        if let Err(failure) = self.launch().and_then(|()| self.wait_healthy()) {
            panic!("etcd did not start on the restored data: {failure}");
        }
    }

    /// Spawn etcd and wait until its client port answers; an early exit is reported with
    /// etcd's own log at once rather than after the whole wait.
    fn launch(&mut self) -> Result<(), String> {
        let client = self.endpoint();
        let peer = peer_url(self.peer_port);
        let log_path = self.data_dir.with_extension("log");
        let log = std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let child = Command::new(&self.binary)
            .args(["--name", &self.name, "--data-dir"])
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--log-level", "error", "--logger", "zap"])
            .args(&self.flags)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd starts (install Debian's etcd-server)");
        let child = self.child.insert(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", self.client_port)).is_err() {
            let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Err(format!("etcd on {client} exited ({status}): {}", log()));
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!("etcd on {client} did not listen within 60 s: {}", log()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl EtcdProcess {
    /// Wait (60 s at most) until etcd's `/health` says it serves: a member listens on its
    /// client port before it has a leader and can answer, and a loaded machine shows the gap.
    /// Plain endpoints only (a TLS member is waited for by its port alone). Not when an
    /// [`EtcdCluster`] starts, whose members are healthy only once enough of them are up; a
    /// member restarted into a running cluster is waited for until it has rejoined.
    fn wait_healthy(&self) -> Result<(), String> {
        use std::io::{Read, Write};
        if self.endpoint().starts_with("https") {
            return Ok(());
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.client_port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                if stream
                    .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                    .is_ok()
                {
                    last.clear();
                    let _ = stream.read_to_string(&mut last);
                    if last.contains(r#""health":"true""#) {
                        return Ok(());
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "etcd on {} was not healthy within 60 s: {last}",
            self.endpoint()
        ))
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Several etcd members forming one cluster on loopback, each with its own data directory
/// under `dir`; killed on drop.
pub struct EtcdCluster {
    /// The members, in the order of `--initial-cluster`.
    pub members: Vec<EtcdProcess>,
}

impl EtcdCluster {
    /// Start `size` members of the etcd at `binary` and wait until the cluster has a leader.
    pub fn start(binary: &Path, dir: &Path, size: usize) -> EtcdCluster {
        let ports: Vec<[u16; 2]> = (0..size).map(|_| free_ports()).collect();
        let name = |i: usize| format!("member-{i}");
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, [_, peer])| format!("{}={}", name(i), peer_url(*peer)))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        for (i, [client_port, peer_port]) in ports.into_iter().enumerate() {
            let mut member = EtcdProcess {
                child: None,
                binary: binary.to_path_buf(),
                name: name(i),
                data_dir: dir.join(name(i)),
                client_port,
                peer_port,
                initial_cluster: initial_cluster.clone(),
                flags: Vec::new(),
            };
            if let Err(failure) = member.launch() {
                panic!("etcd member {i} did not start: {failure}");
            }
            members.push(member);
        }
        let cluster = EtcdCluster { members };
        let deadline = Instant::now() + Duration::from_secs(60);
        while cluster.leader().is_none() {
            assert!(
                Instant::now() < deadline,
                "the etcd cluster elected no leader within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    /// Every member's client endpoint, as `--etcd-servers` lists them.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(EtcdProcess::endpoint).collect()
    }

    /// The index of the member that leads now, by asking the running members in turn
    /// (`etcdctl endpoint status`, as an operator would); `None` while there is no leader.
    pub fn leader(&self) -> Option<usize> {
        let etcdctl = self.members.first()?.binary.with_file_name("etcdctl");
        for member in self.members.iter().filter(|m| m.child.is_some()) {
            let output = Command::new(&etcdctl)
                .args(["--endpoints", &member.endpoint(), "--command-timeout", "2s"])
                .args(["endpoint", "status", "--write-out", "json"])
                .output()
                .ok()?;
            let Ok(status) = serde_json::from_slice::<serde_json::Value>(&output.stdout) else {
                continue;
            };
            let header = &status[0]["Status"];
            let leader = header["leader"].as_u64();
            if leader.is_some_and(|l| l != 0 && Some(l) == header["header"]["member_id"].as_u64()) {
                return self.members.iter().position(|m| m.endpoint() == member.endpoint());
            }
        }
        None
    }
}
