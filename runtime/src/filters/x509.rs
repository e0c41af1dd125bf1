//! Client certificates: the verifiers built from the trusted CAs, and what a connection's chain
//! proves (a front proxy's, or a user's own), worked out on its first request and reused by
//! every later one while the CAs are the same and the chain is valid (signature checks are
//! the costliest step of a request otherwise).

use std::sync::{Arc, Mutex};

use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};

use super::authn::Trust;

/// The client's certificate chain from the TLS handshake (leaf first), per connection.
#[derive(Clone, Debug, Default)]
pub struct PeerCertificates {
    chain: Arc<Vec<CertificateDer<'static>>>,
    proven: Arc<Mutex<Option<Proven>>>,
}

/// What a chain proved, and under which verifiers until when.
#[derive(Debug)]
struct Proven {
    verifiers: Arc<Verifiers>,
    /// Unix seconds at which the first certificate of the chain expires.
    until: u64,
    proof: Proof,
}

/// What a client chain proves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Proof {
    /// It is the front proxy's (request-header CA, allowed name).
    pub(super) front_proxy: bool,
    /// A user's own certificate from the client CA: the user its CN and O values name
    /// (shared by every request on the connection).
    pub(super) client: Option<Arc<super::authn::UserInfo>>,
}

impl PeerCertificates {
    /// A connection's client chain (empty: none was sent).
    pub fn new(chain: Vec<CertificateDer<'static>>) -> Self {
        PeerCertificates {
            chain: Arc::new(chain),
            proven: Arc::default(),
        }
    }

    /// The chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// What the chain proves under `verifiers`, from the connection's memo when it still holds.
    pub(super) fn proof(&self, verifiers: &Arc<Verifiers>) -> Proof {
        if self.chain.is_empty() {
            return Proof::default();
        }
        let now = UnixTime::now().as_secs();
        let mut proven = self.proven.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = proven
            .as_ref()
            .filter(|p| Arc::ptr_eq(&p.verifiers, verifiers) && now < p.until)
        {
            return p.proof.clone();
        }
        let proof = Proof {
            front_proxy: verifiers.front_proxy(&self.chain),
            client: verifiers
                .client
                .as_ref()
                .filter(|client| verifies(client.as_ref(), &self.chain))
                .and_then(|_| self.chain.first().and_then(subject))
                .map(|(name, groups)| Arc::new(super::authn::UserInfo::authenticated(name, groups))),
        };
        *proven = Some(Proven {
            verifiers: verifiers.clone(),
            until: self.chain.iter().filter_map(not_after).min().unwrap_or(0),
            proof: proof.clone(),
        });
        proof
    }
}

/// The verifiers built from a [`Trust`].
pub(super) struct Verifiers {
    pub(super) trust: Trust,
    client: Option<Arc<dyn ClientCertVerifier>>,
    requestheader: Option<Arc<dyn ClientCertVerifier>>,
}

impl std::fmt::Debug for Verifiers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifiers")
            .field("trust", &self.trust)
            .finish_non_exhaustive()
    }
}

fn verifier(pem: &[u8], what: &str) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        roots
            .add(cert.map_err(|e| format!("{what}: {e}"))?)
            .map_err(|e| format!("{what}: {e}"))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::new(rustls::crypto::ring::default_provider()))
        .build()
        .map(|v| v as Arc<dyn ClientCertVerifier>)
        .map_err(|e| format!("{what}: {e}"))
}

impl Verifiers {
    pub(super) fn new(trust: Trust) -> Result<Self, String> {
        Ok(Verifiers {
            client: trust
                .client_ca
                .as_deref()
                .map(|p| verifier(p, "client CA"))
                .transpose()?,
            requestheader: trust
                .requestheader_ca
                .as_deref()
                .map(|p| verifier(p, "request-header CA"))
                .transpose()?,
            trust,
        })
    }

    /// Whether the client chain is the front proxy's: signed by the request-header CA and, if
    /// names are configured, with an allowed CN.
    fn front_proxy(&self, chain: &[CertificateDer<'static>]) -> bool {
        let Some(ca) = &self.requestheader else {
            return false;
        };
        if !verifies(ca.as_ref(), chain) {
            return false;
        }
        let allowed = &self.trust.requestheader.allowed_names;
        allowed.is_empty()
            || chain
                .first()
                .and_then(subject)
                .is_some_and(|(cn, _)| allowed.contains(&cn))
    }
}

/// Whether `chain` verifies against `verifier` now (signature, validity, client-auth usage).
fn verifies(verifier: &dyn ClientCertVerifier, chain: &[CertificateDer<'static>]) -> bool {
    let Some((leaf, intermediates)) = chain.split_first() else {
        return false;
    };
    verifier
        .verify_client_cert(leaf, intermediates, UnixTime::now())
        .is_ok()
}

/// A certificate's subject: CN and O values.
fn subject(cert: &CertificateDer<'_>) -> Option<(String, Vec<String>)> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = parsed.subject();
    let cn = subject.iter_common_name().next()?.as_str().ok()?.to_string();
    let orgs = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some((cn, orgs))
}

/// When a certificate stops being valid (Unix seconds).
fn not_after(cert: &CertificateDer<'_>) -> Option<u64> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    u64::try_from(parsed.validity().not_after.timestamp()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};

    fn ca() -> (String, Issuer<'static, KeyPair>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let pem = params.self_signed(&key).unwrap().pem();
        (pem, Issuer::new(params, key))
    }

    fn trusting(client_ca: &str) -> Arc<Verifiers> {
        Arc::new(
            Verifiers::new(Trust {
                client_ca: Some(client_ca.as_bytes().to_vec()),
                ..Default::default()
            })
            .unwrap(),
        )
    }

    #[test]
    fn a_connection_keeps_its_proof_while_the_trust_is_the_same() {
        let ((pem, issuer), (other_pem, _)) = (ca(), ca());
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "alice");
        params.distinguished_name.push(DnType::OrganizationName, "devs");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let leaf = params.signed_by(&key, &issuer).unwrap();
        let peer = PeerCertificates::new(vec![leaf.der().clone()]);
        let alice = Some(Arc::new(super::super::authn::UserInfo::authenticated(
            "alice".into(),
            vec!["devs".into()],
        )));
        let verifiers = trusting(&pem);
        assert_eq!(peer.proof(&verifiers).client, alice);
        let until = peer.proven.lock().unwrap().as_ref().unwrap().until;
        assert!(until > UnixTime::now().as_secs(), "valid until the certificate expires");
        assert_eq!(peer.proof(&verifiers).client, alice);
        // New trust (a changed ConfigMap): the same connection is judged again.
        assert_eq!(peer.proof(&trusting(&other_pem)), Proof::default());
        assert_eq!(PeerCertificates::default().proof(&verifiers), Proof::default());
    }
}
