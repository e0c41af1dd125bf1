//! Test harness: a real `widget-server` process on a free loopback port, and the real kubectl.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Where the versioned kubectl binaries are installed.
pub const KUBECTL_DIR: &str = "/usr/lib/google-cloud-sdk/bin";

/// The oldest and newest kubectl versions every end-to-end flow runs with.
pub const VERSIONS: &[&str] = &["1.27", "1.33"];

/// A running widget-server; killed on drop.
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
    /// Start a server in `dir` with extra flags and wait until it listens.
    pub fn start_in(dir: &Path, args: &[&str]) -> ServerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_widget-server"))
            .args(["--secure-port", "0"])
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("widget-server starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("widget-server prints its address");
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

    /// Start a server with in-memory storage in a fresh directory.
    pub fn start(dir: &Path) -> ServerProcess {
        Self::start_in(dir, &["--storage", "memory"])
    }

    /// A kubectl of a given version pointed at this server.
    pub fn kubectl(&self, version: &str) -> Kubectl {
        Kubectl {
            binary: format!("{KUBECTL_DIR}/kubectl.{version}"),
            kubeconfig: self.kubeconfig.clone(),
            home: self.dir.join(format!("home-{version}")),
        }
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
}

/// What a kubectl run printed.
pub struct Run {
    pub code: i32,
    pub stdout: String,
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
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.binary);
        c.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", &self.home)
            .env_remove("KUBECTL_EXTERNAL_DIFF");
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
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if child.try_wait().expect("kubectl is waited on").is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("kubectl {args:?} did not finish in 90 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Run::from(child.wait_with_output().expect("kubectl output"))
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

impl ServerProcess {
    /// A `kube` client for this server with the admin credentials.
    pub async fn client(&self) -> kube::Client {
        kube_client(&self.kubeconfig, &self.url).await
    }
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

/// The `(code, reason)` of a kube API error's Status (`(0, "")` for other errors).
pub fn status_of(error: &kube::Error) -> (u16, &str) {
    match error {
        kube::Error::Api(s) => (s.code, s.reason.as_str()),
        _ => (0, ""),
    }
}
