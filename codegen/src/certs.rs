//! Certificates in Rust (rcgen): a CA, and a serving certificate for the names the aggregator
//! dials (`<service>.<namespace>.svc` and the shorter and longer forms). Existing files are
//! reused while they still fit, so regenerating changes nothing.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

use crate::{File, Mode, Project};

/// The CA and serving pair (PEM).
pub struct ServingCerts {
    /// CA certificate (the APIService's caBundle).
    pub ca_crt: String,
    ca_key: String,
    /// Serving certificate.
    pub tls_crt: String,
    /// Serving key.
    pub tls_key: String,
}

/// The DNS names the serving certificate must carry.
pub fn service_names(project: &Project) -> Vec<String> {
    let (svc, ns) = (&project.name, &project.namespace);
    vec![
        svc.clone(),
        format!("{svc}.{ns}"),
        format!("{svc}.{ns}.svc"),
        format!("{svc}.{ns}.svc.cluster.local"),
    ]
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The certificate's DNS names, if it parses.
fn dns_names(pem: &str) -> Option<Vec<String>> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    let sans = cert.subject_alternative_name().ok()??;
    Some(
        sans.value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                _ => None,
            })
            .collect(),
    )
}

impl ServingCerts {
    /// The certificate files, relative to the deploy directory.
    pub fn files(&self) -> Vec<File> {
        [
            ("ca.crt", &self.ca_crt),
            ("ca.key", &self.ca_key),
            ("tls.crt", &self.tls_crt),
            ("tls.key", &self.tls_key),
        ]
        .into_iter()
        .map(|(name, pem)| File {
            path: PathBuf::from("certs").join(name),
            bytes: pem.as_bytes().to_vec(),
        })
        .collect()
    }
}

/// Reuse the certificates in `dir` while they fit the project; otherwise make new ones
/// (keeping the CA if there is one). In check mode nothing is made: missing files are an error.
pub fn ensure(dir: &Path, project: &Project, mode: Mode) -> Result<ServingCerts, String> {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let names = service_names(project);
    if let (Some(ca_crt), Some(ca_key), Some(tls_crt), Some(tls_key)) =
        (read("ca.crt"), read("ca.key"), read("tls.crt"), read("tls.key"))
    {
        if dns_names(&tls_crt).as_deref() == Some(names.as_slice()) {
            return Ok(ServingCerts {
                ca_crt,
                ca_key,
                tls_crt,
                tls_key,
            });
        }
        if mode == Mode::Write {
            return issue(project, &names, Some((ca_crt, ca_key)));
        }
    }
    if mode == Mode::Check {
        return Err(format!(
            "{}: certificates are missing or do not fit: run `cargo xtask generate`",
            dir.display()
        ));
    }
    issue(project, &names, None)
}

fn issue(project: &Project, names: &[String], ca: Option<(String, String)>) -> Result<ServingCerts, String> {
    let (ca_crt, ca_key, issuer) = match ca {
        Some((crt, key)) => {
            let key_pair = KeyPair::from_pem(&key).map_err(err)?;
            let issuer = Issuer::from_ca_cert_pem(&crt, key_pair).map_err(err)?;
            (crt, key, issuer)
        }
        None => {
            let key_pair = KeyPair::generate().map_err(err)?;
            let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
            params
                .distinguished_name
                .push(DnType::CommonName, format!("{}-ca", project.name));
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            params.not_before = rcgen::date_time_ymd(2025, 1, 1);
            params.not_after = rcgen::date_time_ymd(2035, 1, 1);
            let crt = params.self_signed(&key_pair).map_err(err)?.pem();
            let key = key_pair.serialize_pem();
            (crt, key, Issuer::new(params, key_pair))
        }
    };
    let key_pair = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::new(names.to_vec()).map_err(err)?;
    params.distinguished_name.push(
        DnType::CommonName,
        format!("{}.{}.svc", project.name, project.namespace),
    );
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2030, 1, 1);
    let tls_crt = params.signed_by(&key_pair, &issuer).map_err(err)?.pem();
    Ok(ServingCerts {
        ca_crt,
        ca_key,
        tls_crt,
        tls_key: key_pair.serialize_pem(),
    })
}
