//! The real components, built from source with the machine's Go and cached by release.
//!
//! No registry this project can reach ships kube-apiserver, and Debian's etcd (3.4) is older
//! than kube-apiserver supports, so both are built from their Go modules: `k8s.io/kubernetes`
//! with one `replace` line per staging module (it requires them at `v0.0.0` and replaces them
//! with folders of its own repository, which a dependent module does not inherit), and
//! `go.etcd.io/etcd/server/v3` with its `etcdctl` and `etcdutl`. The `go.mod` and `go.sum` files are embedded here, written to
//! the cache directory and built there, so a project that takes this crate from git builds
//! exactly the same binaries.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

/// The Kubernetes release of kube-apiserver, kube-controller-manager and kubectl.
pub const KUBERNETES_RELEASE: &str = "v1.37.2";
/// The etcd release.
pub const ETCD_RELEASE: &str = "v3.6.16";

const KUBERNETES_GO_MOD: &str = include_str!("../go/kubernetes/go.mod");
const KUBERNETES_GO_SUM: &str = include_str!("../go/kubernetes/go.sum");
const ETCD_GO_MOD: &str = include_str!("../go/etcd/go.mod");
const ETCD_GO_SUM: &str = include_str!("../go/etcd/go.sum");

/// Paths of the built components.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// `kube-apiserver`.
    pub kube_apiserver: PathBuf,
    /// `kube-controller-manager`.
    pub kube_controller_manager: PathBuf,
    /// `kubectl` of the same release.
    pub kubectl: PathBuf,
    /// `etcd`.
    pub etcd: PathBuf,
    /// `etcdctl` of the same release (snapshots, defragmentation).
    pub etcdctl: PathBuf,
    /// `etcdutl` of the same release (restoring a snapshot).
    pub etcdutl: PathBuf,
}

/// One Go module to build: its folder in the cache, its pinned files and its commands.
struct Module {
    name: String,
    go_mod: &'static str,
    go_sum: &'static str,
    packages: &'static [(&'static str, &'static str)],
    ldflags: String,
}

impl Binaries {
    /// The cache directory: `$APIARY_CACHE_DIR`, else `$XDG_CACHE_HOME/apiary`, else
    /// `~/.cache/apiary`.
    pub fn cache_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("APIARY_CACHE_DIR") {
            return dir.into();
        }
        if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
            return PathBuf::from(dir).join("apiary");
        }
        let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
        PathBuf::from(home).join(".cache/apiary")
    }

    /// Whether every component is already built (so [`Binaries::ensure`] takes no time).
    pub fn is_cached() -> bool {
        let cache = Self::cache_dir();
        modules().iter().all(|m| m.complete(&cache.join(&m.name).join("bin")))
    }

    /// The cached binaries, built first if missing (minutes on a cold Go cache; then instant).
    /// Concurrent callers (parallel tests) wait for one build through a lock file.
    pub fn ensure() -> Result<Binaries, Error> {
        let cache = Self::cache_dir();
        let [kubernetes, etcd] = modules();
        let k8s = kubernetes.ensure(&cache)?;
        let etcd = etcd.ensure(&cache)?;
        Ok(Binaries {
            kube_apiserver: k8s.join("kube-apiserver"),
            kube_controller_manager: k8s.join("kube-controller-manager"),
            kubectl: k8s.join("kubectl"),
            etcdctl: etcd.join("etcdctl"),
            etcdutl: etcd.join("etcdutl"),
            etcd: etcd.join("etcd"),
        })
    }
}

/// The Kubernetes module and the etcd module.
fn modules() -> [Module; 2] {
    let minor = KUBERNETES_RELEASE
        .trim_start_matches('v')
        .split('.')
        .nth(1)
        .unwrap_or("0");
    // The version stamp kube's own build sets (hack/lib/version.sh): without it `/version`
    // and `kubectl version` say v0.0.0-master.
    let stamp = |pkg: &str| {
        format!(
            " -X {pkg}.gitVersion={KUBERNETES_RELEASE} -X {pkg}.gitMajor=1 -X {pkg}.gitMinor={minor} \
             -X {pkg}.gitTreeState=clean"
        )
    };
    [
        Module {
            name: format!("kubernetes-{KUBERNETES_RELEASE}"),
            go_mod: KUBERNETES_GO_MOD,
            go_sum: KUBERNETES_GO_SUM,
            packages: &[
                ("kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver"),
                (
                    "kube-controller-manager",
                    "k8s.io/kubernetes/cmd/kube-controller-manager",
                ),
                ("kubectl", "k8s.io/kubernetes/cmd/kubectl"),
            ],
            ldflags: format!(
                "-s -w{}{}",
                stamp("k8s.io/component-base/version"),
                stamp("k8s.io/client-go/pkg/version")
            ),
        },
        Module {
            name: format!("etcd-{ETCD_RELEASE}"),
            go_mod: ETCD_GO_MOD,
            go_sum: ETCD_GO_SUM,
            packages: &[
                ("etcd", "go.etcd.io/etcd/server/v3"),
                ("etcdctl", "go.etcd.io/etcd/etcdctl/v3"),
                ("etcdutl", "go.etcd.io/etcd/etcdutl/v3"),
            ],
            ldflags: "-s -w".into(),
        },
    ]
}

impl Module {
    /// Whether `bin` holds every command.
    fn complete(&self, bin: &Path) -> bool {
        self.packages.iter().all(|(name, _)| bin.join(name).is_file())
    }

    /// The module's `bin` folder, holding every command; built under a lock when missing.
    fn ensure(&self, cache: &Path) -> Result<PathBuf, Error> {
        let root = cache.join(&self.name);
        let bin = root.join("bin");
        let complete = |bin: &Path| self.complete(bin);
        if complete(&bin) {
            return Ok(bin);
        }
        std::fs::create_dir_all(&root).map_err(Error::io(&root))?;
        let lock_path = root.join(".lock");
        let lock = std::fs::File::create(&lock_path).map_err(Error::io(&lock_path))?;
        lock.lock().map_err(Error::io(&lock_path))?;
        if complete(&bin) {
            return Ok(bin);
        }
        let src = root.join("src");
        std::fs::create_dir_all(&src).map_err(Error::io(&src))?;
        for (file, text) in [("go.mod", self.go_mod), ("go.sum", self.go_sum)] {
            std::fs::write(src.join(file), text).map_err(Error::io(src.join(file)))?;
        }
        // Built into a fresh folder and renamed into place: an interrupted build leaves no
        // half set that `complete` would accept.
        let partial = root.join("bin.partial");
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(&partial).map_err(Error::io(&partial))?;
        let output = Command::new("go")
            .arg("build")
            .args(["-trimpath", "-ldflags", &self.ldflags, "-o"])
            .arg(&partial)
            .args(self.packages.iter().map(|(_, pkg)| pkg))
            .current_dir(&src)
            .env("CGO_ENABLED", "0")
            // The machine's Go builds these (their go.mod asks for 1.26.0); never fetch another.
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "-mod=readonly")
            .output()
            .map_err(|e| Error::Build {
                what: self.name.clone(),
                detail: format!("cannot run `go` ({e}); install Go 1.26 or later"),
            })?;
        if !output.status.success() {
            return Err(Error::Build {
                what: self.name.clone(),
                detail: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
        // `go build -o DIR` names a command after its import path's last element, skipping a
        // major-version suffix (`server` for etcd's `go.etcd.io/etcd/server/v3`): give every
        // command the name it is known by.
        for (name, pkg) in self.packages {
            let built = partial.join(command_name(pkg));
            if built != partial.join(name) {
                std::fs::rename(&built, partial.join(name)).map_err(Error::io(&built))?;
            }
        }
        let _ = std::fs::remove_dir_all(&bin);
        std::fs::rename(&partial, &bin).map_err(Error::io(&bin))?;
        Ok(bin)
    }
}

/// The file name `go build` gives the command at import path `pkg`.
fn command_name(pkg: &str) -> &str {
    let mut parts = pkg.rsplit('/');
    let last = parts.next().unwrap_or(pkg);
    let is_major = last.len() > 1 && last.starts_with('v') && last[1..].bytes().all(|b| b.is_ascii_digit());
    match parts.next() {
        Some(before) if is_major => before,
        _ => last,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_names_skip_a_major_version_suffix() {
        assert_eq!(super::command_name("go.etcd.io/etcd/server/v3"), "server");
        assert_eq!(super::command_name("k8s.io/kubernetes/cmd/kubectl"), "kubectl");
        assert_eq!(super::command_name("example.com/v"), "v");
    }
}
