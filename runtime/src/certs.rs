//! Local certificates (rcgen): a CA, a serving certificate and an admin client certificate,
//! plus a kubeconfig that uses them. Generated once into a directory and reused after.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// Paths of the generated files in a cert directory.
#[derive(Clone, Debug)]
pub struct LocalCerts {
    /// `ca.crt`: signs the serving and client certificates.
    pub ca_cert: PathBuf,
    /// `apiserver.crt`.
    pub serving_cert: PathBuf,
    /// `apiserver.key`.
    pub serving_key: PathBuf,
    /// `admin.crt` (CN=apiary-admin, O=system:masters).
    pub admin_cert: PathBuf,
    /// `admin.key`.
    pub admin_key: PathBuf,
    /// `kubeconfig` pointing at the server with the admin certificate.
    pub kubeconfig: PathBuf,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn write_private(path: &Path, contents: &str) -> Result<(), String> {
    std::fs::write(path, contents).map_err(|e| format!("{}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    }
    Ok(())
}

fn leaf_params(
    cn: &str,
    org: Option<&str>,
    sans: &[String],
    usage: ExtendedKeyUsagePurpose,
) -> Result<CertificateParams, String> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    if let Some(org) = org {
        dn.push(DnType::OrganizationName, org);
    }
    params.distinguished_name = dn;
    for san in sans {
        params.subject_alt_names.push(match san.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(san.clone().try_into().map_err(err)?),
        });
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![usage];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2035, 1, 1);
    Ok(params)
}

/// Generate (or reuse) a CA, a serving cert for `sans` and an admin client cert in `dir`,
/// and write a kubeconfig for `server_url`.
pub fn ensure_local(dir: &Path, sans: &[String], server_url: &str) -> Result<LocalCerts, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let certs = LocalCerts {
        ca_cert: dir.join("ca.crt"),
        serving_cert: dir.join("apiserver.crt"),
        serving_key: dir.join("apiserver.key"),
        admin_cert: dir.join("admin.crt"),
        admin_key: dir.join("admin.key"),
        kubeconfig: dir.join("kubeconfig"),
    };
    let ca_key_path = dir.join("ca.key");
    let all_exist = [
        &certs.ca_cert,
        &ca_key_path,
        &certs.serving_cert,
        &certs.serving_key,
        &certs.admin_cert,
        &certs.admin_key,
    ]
    .iter()
    .all(|p| p.exists());
    if !all_exist {
        let ca_key = KeyPair::generate().map_err(err)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        ca.distinguished_name.push(DnType::CommonName, "apiary-local-ca");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca.not_before = rcgen::date_time_ymd(2024, 1, 1);
        ca.not_after = rcgen::date_time_ymd(2035, 1, 1);
        let ca_cert = ca.self_signed(&ca_key).map_err(err)?;
        let issuer = Issuer::new(ca, &ca_key);

        let serving_key = KeyPair::generate().map_err(err)?;
        let serving = leaf_params("apiary-apiserver", None, sans, ExtendedKeyUsagePurpose::ServerAuth)?
            .signed_by(&serving_key, &issuer)
            .map_err(err)?;
        let admin_key = KeyPair::generate().map_err(err)?;
        let admin = leaf_params(
            "apiary-admin",
            Some("system:masters"),
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?
        .signed_by(&admin_key, &issuer)
        .map_err(err)?;

        std::fs::write(&certs.ca_cert, ca_cert.pem()).map_err(err)?;
        write_private(&ca_key_path, &ca_key.serialize_pem())?;
        std::fs::write(&certs.serving_cert, serving.pem()).map_err(err)?;
        write_private(&certs.serving_key, &serving_key.serialize_pem())?;
        std::fs::write(&certs.admin_cert, admin.pem()).map_err(err)?;
        write_private(&certs.admin_key, &admin_key.serialize_pem())?;
    }
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: apiary\n  cluster:\n    server: {server_url}\n    certificate-authority: {ca}\nusers:\n- name: apiary-admin\n  user:\n    client-certificate: {cert}\n    client-key: {key}\ncontexts:\n- name: apiary\n  context:\n    cluster: apiary\n    user: apiary-admin\n    namespace: default\ncurrent-context: apiary\n",
        ca = absolute(&certs.ca_cert).display(),
        cert = absolute(&certs.admin_cert).display(),
        key = absolute(&certs.admin_key).display(),
    );
    write_private(&certs.kubeconfig, &kubeconfig)?;
    Ok(certs)
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
