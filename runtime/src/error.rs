//! The library's error for building and running a server; answers to clients are
//! [`ApiError`](crate::status::ApiError)s and storage failures [`StorageError`]s.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::storage::StorageError;

/// Why a server could not be assembled, started or kept serving: what a `main` returns with `?`.
///
/// Each variant keeps what caused it: the I/O error with the file's path, the storage's error,
/// or the message of a check (a declaration, a flag) that has no underlying error. Its `Debug`
/// is the message and its causes, so that a `main` returning it prints a readable line.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file the flags name (or the server writes) could not be read or written.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The serving address could not be listened on.
    #[error("listen on {addr}: {source}")]
    Listen {
        /// `--bind-address` and `--secure-port`.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The storage could not be opened or reached.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The serving certificate, its key, or the TLS set-up.
    #[error("TLS: {0}")]
    Tls(String),
    /// A resource declared in a way it cannot be served: its schema, its paths (scale,
    /// selectable fields, printer columns), its versions, or a kind served twice.
    #[error("{message}")]
    Declaration {
        /// The resource, as `plural.group/version`.
        resource: String,
        /// What is wrong with it, naming the kind.
        message: String,
    },
    /// Flags, or files they name, that do not make a configuration: an audit log without a
    /// policy, a policy or admission configuration that does not parse, a kubeconfig that
    /// cannot be used.
    #[error("{0}")]
    Config(String),
    /// `--migrate-storage` could not finish.
    #[error("{0}")]
    Migration(String),
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")?;
        // The message already names the first cause; the rest follow, as anyhow prints them.
        let mut cause = std::error::Error::source(self).and_then(std::error::Error::source);
        while let Some(next) = cause {
            write!(f, ": {next}")?;
            cause = next.source();
        }
        Ok(())
    }
}

impl Error {
    /// `source` reading or writing `path`.
    pub(crate) fn file(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::File { path, source }
    }

    /// `message` about `T`'s declaration.
    pub(crate) fn declaration<T: crate::ApiResource>(message: impl Into<String>) -> Error {
        let meta = &T::META;
        Error::Declaration {
            resource: format!("{}.{}/{}", meta.plural, meta.group, meta.version),
            message: message.into(),
        }
    }
}
