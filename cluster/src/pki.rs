//! The cluster's certificates and keys (rcgen), as kubeadm lays them out: a cluster CA (client
//! certificates and kube-apiserver's serving certificate), a front-proxy CA and the aggregator's
//! client certificate, and the service-account signing key. Made once per cluster directory.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};

use crate::Error;

/// The common name the aggregator's client certificate has (`--requestheader-allowed-names`).
pub const FRONT_PROXY_CLIENT: &str = "front-proxy-client";

/// The directory of a cluster's certificates.
#[derive(Clone, Debug)]
pub struct Pki {
    dir: PathBuf,
}

/// A certificate and key pair in the PKI directory.
#[derive(Clone, Debug)]
pub struct Pair {
    /// PEM certificate.
    pub cert: PathBuf,
    /// PEM key.
    pub key: PathBuf,
}

impl Pki {
    /// The PKI in `dir`, made there first unless it is already complete.
    pub fn ensure(dir: &Path) -> Result<Pki, Error> {
        let pki = Pki { dir: dir.to_path_buf() };
        if pki.path("sa.pub").is_file() {
            return Ok(pki);
        }
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        let ca = pki.new_ca("ca", "kubernetes-ca")?;
        let front = pki.new_ca("front-proxy-ca", "front-proxy-ca")?;
        let sans: Vec<String> = [
            "127.0.0.1",
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "10.0.0.1",
        ]
        .map(String::from)
        .into();
        pki.issue(
            &ca,
            "apiserver",
            "kube-apiserver",
            &[],
            &sans,
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        pki.client(&ca, "admin", "kubernetes-admin", &["system:masters"])?;
        pki.client(&ca, "controller-manager", "system:kube-controller-manager", &[])?;
        pki.client(&front, "front-proxy-client", FRONT_PROXY_CLIENT, &[])?;
        let sa = KeyPair::generate()?;
        write_private(&pki.path("sa.key"), &sa.serialize_pem())?;
        // Last: its presence says the set is complete.
        std::fs::write(pki.path("sa.pub"), sa.public_key_pem()).map_err(Error::io(pki.path("sa.pub")))?;
        Ok(pki)
    }

    /// A file of the PKI.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The pair named `name` (`admin`, `apiserver`, `front-proxy-client`, …).
    pub fn pair(&self, name: &str) -> Pair {
        Pair {
            cert: self.path(&format!("{name}.crt")),
            key: self.path(&format!("{name}.key")),
        }
    }

    /// A client certificate from the cluster CA for user `user` in `groups`, as `name.crt` and
    /// `name.key` (kube-apiserver takes CN as the user name and O as the groups).
    pub fn user(&self, name: &str, user: &str, groups: &[&str]) -> Result<Pair, Error> {
        let pair = self.pair(name);
        if !pair.cert.is_file() {
            self.client(&self.pair("ca"), name, user, groups)?;
        }
        Ok(pair)
    }

    fn client(&self, ca: &Pair, name: &str, cn: &str, groups: &[&str]) -> Result<(), Error> {
        self.issue(ca, name, cn, groups, &[], ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn new_ca(&self, name: &str, cn: &str) -> Result<Pair, Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params);
        let cert = params.self_signed(&key)?;
        let pair = self.pair(name);
        std::fs::write(&pair.cert, cert.pem()).map_err(Error::io(&pair.cert))?;
        write_private(&pair.key, &key.serialize_pem())?;
        Ok(pair)
    }

    fn issue(
        &self,
        ca: &Pair,
        name: &str,
        cn: &str,
        orgs: &[&str],
        sans: &[String],
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<(), Error> {
        let read = |p: &Path| std::fs::read_to_string(p).map_err(Error::io(p));
        let ca_key = KeyPair::from_pem(&read(&ca.key)?)?;
        let issuer = Issuer::from_ca_cert_pem(&read(&ca.cert)?, ca_key)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, cn);
        for org in orgs {
            params.distinguished_name.push(DnType::OrganizationName, *org);
        }
        for san in sans {
            params.subject_alt_names.push(match san.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(san.clone().try_into()?),
            });
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![usage];
        validity(&mut params);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        let pair = self.pair(name);
        std::fs::write(&pair.cert, cert.pem()).map_err(Error::io(&pair.cert))?;
        write_private(&pair.key, &key.serialize_pem())
    }
}

/// A local cluster's certificates outlive it: from 2024 to 2035, like the runtime's local ones.
fn validity(params: &mut CertificateParams) {
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2035, 1, 1);
}

/// Write a secret readable by its owner only.
pub(crate) fn write_private(path: &Path, contents: &str) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(Error::io(path))?;
    file.write_all(contents.as_bytes()).map_err(Error::io(path))
}
