//! Serving TLS: the certificate files (given, or generated locally), the rustls
//! configuration, and a certificate resolver that re-reads the files when they change.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;

use crate::Error;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::filters::authn::AnyClientCertificate;

use super::options::ServerOptions;

/// Where the serving certificate is, and what local generation produced.
/// A serving certificate with fewer days left than this is warned about at start.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

impl Serving {
    /// Log a warning when the serving certificate expires within [`EXPIRY_WARNING_DAYS`] (or
    /// has expired): clients will refuse it, and nothing else says so in advance.
    pub(super) fn warn_if_expiring(&self) {
        if let Some(warning) = expiry_warning(&self.cert) {
            tracing::warn!(cert = %self.cert.display(), "{warning}");
        }
    }

    /// The serving certificate's file.
    pub(super) fn cert_file(&self) -> &std::path::Path {
        &self.cert
    }
}

/// What to say of the certificate at `path` when it expires within [`EXPIRY_WARNING_DAYS`]
/// or has expired (read afresh, as the files are reloaded when they change).
pub fn expiry_warning(path: &std::path::Path) -> Option<String> {
    let pem = std::fs::read(path).ok()?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).ok()?;
    let cert = pem.parse_x509().ok()?;
    let left = cert.validity().not_after.timestamp() - jiff::Timestamp::now().as_second();
    let days = left.div_euclid(86_400);
    if left < 0 {
        Some("the serving certificate has expired: renew it".into())
    } else if days < EXPIRY_WARNING_DAYS {
        Some(format!("the serving certificate expires in {days} days: renew it"))
    } else {
        None
    }
}

pub(super) struct Serving {
    cert: PathBuf,
    key: PathBuf,
    /// The generated CA (the default client CA), when certificates were generated.
    pub(super) local_ca: Option<Vec<u8>>,
    /// The admin kubeconfig, when certificates were generated.
    pub(super) kubeconfig: Option<PathBuf>,
}

/// The serving certificate files: given by flags, or generated (once) for local use.
pub(super) fn serving_files(options: &ServerOptions, local: SocketAddr) -> Result<Serving, Error> {
    if let (Some(cert), Some(key)) = (&options.tls_cert_file, &options.tls_private_key_file) {
        return Ok(Serving {
            cert: cert.clone(),
            key: key.clone(),
            local_ca: None,
            kubeconfig: None,
        });
    }
    let mut sans = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    sans.extend(options.tls_sans.iter().cloned());
    if !local.ip().is_unspecified() && !sans.contains(&local.ip().to_string()) {
        sans.push(local.ip().to_string());
    }
    let host = if local.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        local.ip().to_string()
    };
    let host = if host.contains(':') { format!("[{host}]") } else { host };
    let certs = crate::certs::ensure_local(&options.cert_dir, &sans, &format!("https://{host}:{}", local.port()))
        .map_err(Error::Tls)?;
    Ok(Serving {
        local_ca: Some(std::fs::read(&certs.ca_cert).map_err(Error::file(&certs.ca_cert))?),
        cert: certs.serving_cert,
        key: certs.serving_key,
        kubeconfig: Some(certs.kubeconfig),
    })
}

/// TLS 1.2 and 1.3, h2 and http/1.1, the serving certificate reloaded from disk when it
/// changes, and client certificates requested (verified by authentication, not here).
pub(super) fn tls_config(serving: &Serving) -> Result<rustls::ServerConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver =
        ReloadingCert::new(serving.cert.clone(), serving.key.clone(), provider.clone()).map_err(Error::Tls)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_client_cert_verifier(Arc::new(AnyClientCertificate::new(&provider)))
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The serving certificate, re-read when its files change (checked at most once a second).
#[derive(Debug)]
struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<rustls::crypto::CryptoProvider>,
    current: std::sync::RwLock<Loaded>,
}

/// The loaded key, the files' modification time it came from, and when that was last checked.
type Loaded = (
    Arc<rustls::sign::CertifiedKey>,
    Option<std::time::SystemTime>,
    std::time::Instant,
);

impl ReloadingCert {
    fn new(cert: PathBuf, key: PathBuf, provider: Arc<rustls::crypto::CryptoProvider>) -> Result<Self, String> {
        let loaded = load_certified(&cert, &key, &provider)?;
        let stamp = modified(&cert, &key);
        Ok(ReloadingCert {
            cert,
            key,
            provider,
            current: std::sync::RwLock::new((Arc::new(loaded), stamp, std::time::Instant::now())),
        })
    }

    fn get(&self) -> Arc<rustls::sign::CertifiedKey> {
        let (key, stamp, checked) = self.current.read().unwrap_or_else(|e| e.into_inner()).clone();
        if checked.elapsed() < Duration::from_secs(1) {
            return key;
        }
        let now = modified(&self.cert, &self.key);
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        current.2 = std::time::Instant::now();
        if now != stamp {
            // A half-written pair fails to load: keep serving the old one and try again later.
            match load_certified(&self.cert, &self.key, &self.provider) {
                Ok(loaded) => {
                    tracing::info!("serving certificate reloaded from {}", self.cert.display());
                    *current = (Arc::new(loaded), now, std::time::Instant::now());
                }
                Err(e) => tracing::warn!("serving certificate not reloaded: {e}"),
            }
        }
        current.0.clone()
    }
}

impl rustls::server::ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.get())
    }
}

/// The later of the two files' modification times.
fn modified(cert: &Path, key: &Path) -> Option<std::time::SystemTime> {
    let time = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    time(cert).max(time(key))
}

fn load_certified(
    cert: &Path,
    key: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<rustls::sign::CertifiedKey, String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("serving certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| format!("serving key: {e}"))?;
    rustls::sign::CertifiedKey::from_der(chain, key, provider).map_err(|e| format!("serving certificate: {e}"))
}
