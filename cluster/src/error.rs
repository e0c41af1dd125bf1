//! The crate's error: what failed, with its source.

use std::path::PathBuf;

/// Why a cluster could not be built, started, or given a server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// `go build` of a component failed (or Go is not installed).
    #[error("building {what} with Go failed: {detail}")]
    Build {
        /// The component.
        what: String,
        /// Go's output, or why Go could not run.
        detail: String,
    },
    /// A process exited, or did not become ready in time.
    #[error("{what} did not start: {detail}\n--- last lines of {} ---\n{log}", log_path.display())]
    Start {
        /// The component.
        what: String,
        /// What happened.
        detail: String,
        /// Its log file.
        log_path: PathBuf,
        /// The end of its log.
        log: String,
    },
    /// A condition was not met in time.
    #[error("timed out after {seconds} s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        seconds: u64,
    },
    /// A certificate or key could not be made.
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// A request to kube-apiserver failed.
    #[error("kube-apiserver: {0}")]
    Kube(#[from] kube::Error),
    /// A kubeconfig could not be read.
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// kube-apiserver answered, but not with what was asked for.
    #[error("kube-apiserver gave no {what}: {detail}")]
    Answer {
        /// What was asked for.
        what: String,
        /// Its answer.
        detail: String,
    },
    /// A deploy directory's manifest is not what the generator writes.
    #[error("{}: {detail}", path.display())]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}
