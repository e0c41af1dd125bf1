//! kubeconfig files for the cluster's users: the admin, kube-controller-manager, a server's
//! service account, test users.

use std::path::Path;

use crate::Error;
use crate::pki::write_private;

/// How a kubeconfig's user proves who it is.
pub enum Credential<'a> {
    /// A client certificate and key (files).
    Certificate {
        /// PEM certificate.
        cert: &'a Path,
        /// PEM key.
        key: &'a Path,
    },
    /// A bearer token (a service account's).
    Token(&'a str),
}

/// Write a kubeconfig at `path` for `server` (https URL) trusting `ca` (a PEM file), with one
/// context named `name`. Paths are written absolute, so the file works from any directory.
pub fn write(path: &Path, name: &str, server: &str, ca: &Path, credential: Credential<'_>) -> Result<(), Error> {
    let absolute = |p: &Path| std::path::absolute(p).map_err(Error::io(p));
    let user = match credential {
        Credential::Certificate { cert, key } => format!(
            "    client-certificate: {}\n    client-key: {}\n",
            absolute(cert)?.display(),
            absolute(key)?.display()
        ),
        // JSON string syntax is YAML too: a token needs no escaping rules of its own.
        Credential::Token(token) => format!("    token: {}\n", serde_json::Value::from(token)),
    };
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: {server}\n    \
         certificate-authority: {ca}\nusers:\n- name: {name}\n  user:\n{user}contexts:\n- name: {name}\n  \
         context:\n    cluster: {name}\n    user: {name}\ncurrent-context: {name}\n",
        ca = absolute(ca)?.display(),
    );
    write_private(path, &text)
}
