//! Test support (feature `testing`): a real etcd process on free loopback ports, a real
//! server process, and the real kubectl; [`CoreApiStandIn`] stands in for kube-apiserver's
//! core API.

mod core_api;
mod etcd;
mod https;
pub mod raw_etcd;
pub mod webhook;

pub use core_api::CoreApiStandIn;
pub use etcd::{EtcdCluster, EtcdProcess};
pub use https::HttpsServer;
pub use webhook::AdmissionWebhook;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A loopback port that refuses connections for as long as the returned socket lives: bound but
/// never listening, so no other process can take it meanwhile (as a released port could be).
pub fn refused_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket.bind(([127, 0, 0, 1], 0).into()).expect("a free port");
    let port = socket.local_addr().expect("a bound port").port();
    (socket, port)
}

/// `N` distinct free loopback ports, held together until all are chosen.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: [TcpListener; N] = std::array::from_fn(|_| TcpListener::bind("127.0.0.1:0").expect("a free port"));
    listeners.map(|l| l.local_addr().expect("a bound port").port())
}

/// Where the versioned kubectl binaries are installed.
pub const KUBECTL_DIR: &str = "/usr/lib/google-cloud-sdk/bin";

/// xorshift64*: a deterministic generator for property and fuzz tests (a failing case is
/// reproduced by its seed), no dependency.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn bits(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.bits() % n as u64) as usize
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// The oldest and newest kubectl versions every end-to-end flow runs with.
pub const VERSIONS: &[&str] = &["1.27", "1.33"];

/// A running Apiary server binary; killed on drop.
pub struct ServerProcess {
    child: Child,
    /// The server's working directory (certs, data).
    pub dir: PathBuf,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The admin kubeconfig it wrote.
    pub kubeconfig: PathBuf,
}

impl ServerProcess {
    /// Start `binary` (a server's `CARGO_BIN_EXE_...`) in `dir` with extra flags on a free
    /// port, and wait until it prints where it listens.
    pub fn spawn(binary: &str, dir: &Path, args: &[&str]) -> ServerProcess {
        Self::spawn_via(&[], binary, dir, args)
    }

    /// [`ServerProcess::spawn`] with `binary` started by a launcher (`chroot ROOT`).
    pub fn spawn_via(launcher: &[&str], binary: &str, dir: &Path, args: &[&str]) -> ServerProcess {
        let mut command = match launcher.split_first() {
            Some((program, rest)) => {
                let mut command = Command::new(program);
                command.args(rest).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        let mut child = command
            .args(["--secure-port", "0"])
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the server starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        // The server's log goes through `eprintln!` from a thread this test spawned: libtest's
        // output capture is inherited by such threads, so the log is shown for a failing test
        // (and with `--nocapture`) and a green run stays quiet. A plain inherited stderr would
        // print every line of every test.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[server] {line}");
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the server prints its address");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("https://"))
            .expect("the first line names the URL")
            .trim_end_matches(';')
            .to_string();
        let kubeconfig = line
            .split("--kubeconfig ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .map(|p| dir.join(p));
        ServerProcess {
            child,
            dir: dir.to_path_buf(),
            url,
            kubeconfig: kubeconfig.unwrap_or_default(),
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A kubectl of a given version pointed at this server.
    pub fn kubectl(&self, version: &str) -> Kubectl {
        Kubectl::version(version, &self.kubeconfig, &self.dir.join(format!("home-{version}")))
    }

    /// Ask the process to stop (SIGTERM, as Kubernetes does) and wait up to `within` for it
    /// to exit; its exit status, or None if it was still running (it is then killed).
    pub fn terminate(mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Kill the process hard (SIGKILL), as a crash would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One kubectl binary with its own kubeconfig and discovery cache.
pub struct Kubectl {
    binary: String,
    kubeconfig: PathBuf,
    home: PathBuf,
    env: Vec<(String, String)>,
}

/// What a kubectl run printed.
pub struct Run {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    fn from(output: Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Kubectl {
    /// The kubectl at `binary` using `kubeconfig`, its discovery cache under `home`.
    pub fn new(binary: &Path, kubeconfig: &Path, home: &Path) -> Kubectl {
        Kubectl {
            binary: binary.display().to_string(),
            kubeconfig: kubeconfig.to_path_buf(),
            home: home.to_path_buf(),
            env: Vec::new(),
        }
    }

    /// The same kubectl with `name=value` in its environment (`KUBE_EDITOR`, …).
    pub fn with_env(mut self, name: &str, value: &str) -> Kubectl {
        self.env.push((name.into(), value.into()));
        self
    }

    /// The machine's kubectl of `version` (`1.27`, …) using `kubeconfig`.
    pub fn version(version: &str, kubeconfig: &Path, home: &Path) -> Kubectl {
        Kubectl::new(Path::new(&format!("{KUBECTL_DIR}/kubectl.{version}")), kubeconfig, home)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.binary);
        c.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", &self.home)
            .env_remove("KUBECTL_EXTERNAL_DIFF")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// Run kubectl (bounded by a 60 s timeout).
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with_stdin(args, "")
    }

    /// Run kubectl with `stdin` as its input.
    pub fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Run {
        let mut full = vec!["--request-timeout=60s"];
        full.extend_from_slice(args);
        let mut child = self
            .command(&full)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        {
            use std::io::Write;
            let mut input = child.stdin.take().expect("piped stdin");
            input.write_all(stdin.as_bytes()).expect("stdin is written");
        }
        // Drain the pipes while kubectl runs: a full pipe would block it forever.
        let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_end(&mut bytes);
                }
                bytes
            })
        };
        let stdout = drain(
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        );
        let stderr = drain(
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        );
        let deadline = Instant::now() + Duration::from_secs(90);
        let status = loop {
            if let Some(status) = child.try_wait().expect("kubectl is waited on") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("kubectl {args:?} did not finish in 90 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Run::from(Output {
            status,
            stdout: stdout.join().expect("stdout is read"),
            stderr: stderr.join().expect("stderr is read"),
        })
    }

    /// Run kubectl, insist on success, and return stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert_eq!(run.code, 0, "kubectl {args:?} failed: {}{}", run.stdout, run.stderr);
        run.stdout
    }

    /// `kubectl apply -f -` (or another stdin-reading command), insisting on success.
    pub fn ok_stdin(&self, args: &[&str], stdin: &str) -> String {
        let run = self.run_with_stdin(args, stdin);
        assert_eq!(run.code, 0, "kubectl {args:?} failed: {}{}", run.stdout, run.stderr);
        run.stdout
    }

    /// Start kubectl in the background (for `get -w`).
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl starts")
    }

    /// Start kubectl in the background and read its output line by line (for watches).
    pub fn lines(&self, args: &[&str]) -> Lines {
        let mut child = self.spawn(args);
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Lines { child, rx }
    }
}

/// The output lines of a background kubectl; killed on drop.
pub struct Lines {
    child: Child,
    rx: std::sync::mpsc::Receiver<String>,
}

impl Lines {
    /// The first line (from now) for which `wanted` holds, waiting at most `within`.
    pub fn find(&self, within: Duration, wanted: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok(line) if wanted(&line) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Retry `f` until it returns Some, for up to 10 s (status is written asynchronously).
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
