//! Authentication, delegated as an aggregated API server's must be: a union of, in order,
//! request-header (the aggregator's front-proxy identity), client certificates, and bearer
//! tokens reviewed by the core API (`TokenReview`). CAs and request-header settings come from
//! flags or from the `kube-system/extension-apiserver-authentication` ConfigMap, reloaded
//! when it changes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::HeaderMap;
use rustls::DistinguishedName;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls_pki_types::{CertificateDer, UnixTime};
use sha2::Digest;

use super::ttl_cache::TtlCache;
pub use super::x509::PeerCertificates;
use super::x509::Verifiers;

/// The group every authenticated user has.
pub const AUTHENTICATED: &str = "system:authenticated";
/// Most cached token reviews; the cache is pruned (then cleared) when full.
const MAX_CACHED_TOKENS: usize = 10_000;
/// Namespace and name of the ConfigMap kube-apiserver publishes for extension servers.
pub const AUTHENTICATION_CONFIGMAP: (&str, &str) = ("kube-system", "extension-apiserver-authentication");

/// Who made a request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserInfo {
    /// User name.
    pub name: String,
    /// User UID, when the authenticator knows one.
    pub uid: String,
    /// Groups, including `system:authenticated` for authenticated users.
    pub groups: Vec<String>,
    /// Extra attributes (scopes and the like), keyed lower-case.
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// An authenticated user: `system:authenticated` is added to the groups.
    pub fn authenticated(name: String, mut groups: Vec<String>) -> Self {
        if !groups.iter().any(|g| g == AUTHENTICATED) {
            groups.push(AUTHENTICATED.into());
        }
        UserInfo {
            name,
            groups,
            ..Default::default()
        }
    }

    /// The anonymous user (`--anonymous-auth`).
    pub fn anonymous() -> Self {
        UserInfo {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
            ..Default::default()
        }
    }

    /// Whether the user is in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// Request-header authentication settings (`--requestheader-*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    /// Common names the front-proxy certificate may have (empty: any signed by the CA).
    pub allowed_names: Vec<String>,
    /// Headers carrying the user name; the first present wins.
    pub username_headers: Vec<String>,
    /// Headers carrying the user's UID; the first present wins.
    pub uid_headers: Vec<String>,
    /// Headers carrying groups (repeated).
    pub group_headers: Vec<String>,
    /// Prefixes of headers carrying extras.
    pub extra_prefixes: Vec<String>,
}

impl Default for RequestHeader {
    fn default() -> Self {
        RequestHeader {
            allowed_names: Vec::new(),
            username_headers: vec!["X-Remote-User".into()],
            uid_headers: vec!["X-Remote-Uid".into()],
            group_headers: vec!["X-Remote-Group".into()],
            extra_prefixes: vec!["X-Remote-Extra-".into()],
        }
    }
}

impl RequestHeader {
    /// Whether `header` is one of the request-header headers (stripped from every request).
    fn carries_identity(&self, header: &str) -> bool {
        // Asked for every header of every request: compared in place, nothing allocated.
        self.username_headers
            .iter()
            .chain(&self.uid_headers)
            .chain(&self.group_headers)
            .any(|h| h.eq_ignore_ascii_case(header))
            || self.extra_prefixes.iter().any(|p| {
                header
                    .as_bytes()
                    .get(..p.len())
                    .is_some_and(|start| start.eq_ignore_ascii_case(p.as_bytes()))
            })
    }
}

/// What authentication trusts: the CAs (PEM) and request-header settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trust {
    /// CA bundle for client certificates (`--client-ca-file`).
    pub client_ca: Option<Vec<u8>>,
    /// CA bundle for the front proxy (`--requestheader-client-ca-file`).
    pub requestheader_ca: Option<Vec<u8>>,
    /// Request-header settings.
    pub requestheader: RequestHeader,
}

impl Trust {
    /// Fill what the flags left unset from the ConfigMap's data.
    pub fn or_from_configmap(&self, data: &BTreeMap<String, String>, flags_set: &FlagsSet) -> Trust {
        let list = |key: &str| -> Option<Vec<String>> {
            data.get(key)
                .and_then(|v| serde_json::from_str::<Vec<String>>(v).ok())
                .filter(|v| !v.is_empty() || key == "requestheader-allowed-names")
        };
        let mut trust = self.clone();
        if !flags_set.client_ca {
            trust.client_ca = data
                .get("client-ca-file")
                .map(|v| v.as_bytes().to_vec())
                .or(trust.client_ca);
        }
        if !flags_set.requestheader_ca {
            if let Some(ca) = data.get("requestheader-client-ca-file") {
                trust.requestheader_ca = Some(ca.as_bytes().to_vec());
            }
            let r = &mut trust.requestheader;
            if let Some(v) = list("requestheader-allowed-names") {
                r.allowed_names = v;
            }
            if let Some(v) = list("requestheader-username-headers") {
                r.username_headers = v;
            }
            if let Some(v) = list("requestheader-uid-headers") {
                r.uid_headers = v;
            }
            if let Some(v) = list("requestheader-group-headers") {
                r.group_headers = v;
            }
            if let Some(v) = list("requestheader-extra-headers-prefix") {
                r.extra_prefixes = v;
            }
        }
        trust
    }
}

/// Which trust settings came from flags (and so are not taken from the ConfigMap).
#[derive(Clone, Copy, Debug, Default)]
pub struct FlagsSet {
    /// `--client-ca-file` was given (or certificates were generated locally).
    pub client_ca: bool,
    /// `--requestheader-client-ca-file` was given.
    pub requestheader_ca: bool,
}

/// Percent-decoding of extra header keys (`X-Remote-Extra-Scopes%2Fv1`).
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reviews bearer tokens with the core API, caching answers for a TTL.
pub struct TokenReviewer {
    client: kube::Client,
    ttl: Duration,
    cache: TtlCache<[u8; 32], Option<UserInfo>>,
}

impl TokenReviewer {
    /// Review tokens through `client`, caching answers for `ttl`.
    pub fn new(client: kube::Client, ttl: Duration) -> Self {
        TokenReviewer {
            client,
            ttl,
            cache: TtlCache::new(MAX_CACHED_TOKENS),
        }
    }

    /// The token's user; `Err` when the review itself failed (the request then gets 401).
    pub async fn review(&self, token: &str) -> Result<Option<UserInfo>, String> {
        use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
        let key: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        if let Some(user) = self.cache.get(&key, |_| self.ttl) {
            return Ok(user);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: kube::Api<TokenReview> = kube::Api::all(self.client.clone());
        // Boxed with the review: the HTTP call's future is kilobytes, and every request's
        // future would otherwise carry (and move) room for it.
        let answer = Box::pin(create_with_retries(&api, &review))
            .await
            .map_err(|e| format!("TokenReview failed: {e}"))?;
        let status = answer.status.unwrap_or_default();
        let user = match (status.authenticated, status.user) {
            (Some(true), Some(u)) => Some(UserInfo {
                uid: u.uid.unwrap_or_default(),
                extra: u.extra.unwrap_or_default().into_iter().collect(),
                ..UserInfo::authenticated(u.username.unwrap_or_default(), u.groups.unwrap_or_default())
            }),
            _ => None,
        };
        self.cache.insert(key, user.clone(), self.ttl);
        Ok(user)
    }
}

/// Tries of a review whose connection failed before an answer came (a pooled connection the
/// other side had closed, a reset): as k8s.io/apiserver's webhook clients, which retry such
/// failures with a backoff, so one broken connection is not a 401 or 500 for the user.
const REVIEW_TRIES: u32 = 3;
/// The first retry's wait; doubled for each next one.
const REVIEW_RETRY_WAIT: Duration = Duration::from_millis(50);

/// POST `review` to the core API, again after a failure of the connection (never after an
/// answer, whatever its code: the core API decided).
pub(crate) async fn create_with_retries<K>(api: &kube::Api<K>, review: &K) -> Result<K, kube::Error>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut wait = REVIEW_RETRY_WAIT;
    let mut tries = 1;
    loop {
        match api.create(&kube::api::PostParams::default(), review).await {
            Err(kube::Error::HyperError(_) | kube::Error::Service(_)) if tries < REVIEW_TRIES => {
                tokio::time::sleep(wait).await;
                wait *= 2;
                tries += 1;
            }
            answer => return answer,
        }
    }
}

/// The authenticator union.
pub struct Authenticator {
    verifiers: RwLock<Arc<Verifiers>>,
    tokens: Option<TokenReviewer>,
    anonymous: bool,
    /// Every anonymous request's user, shared.
    anonymous_user: Arc<UserInfo>,
}

/// Why a request is not authenticated.
#[derive(Debug, PartialEq, Eq)]
pub enum Unauthenticated {
    /// No credentials, or none that verify.
    Missing,
    /// A bearer token the core API did not accept, or could not review.
    Token(String),
}

impl Authenticator {
    /// An authenticator trusting `trust`, reviewing tokens with `tokens` if given.
    pub fn new(trust: Trust, tokens: Option<TokenReviewer>, anonymous: bool) -> Result<Self, String> {
        Ok(Authenticator {
            verifiers: RwLock::new(Arc::new(Verifiers::new(trust)?)),
            tokens,
            anonymous,
            anonymous_user: Arc::new(UserInfo::anonymous()),
        })
    }

    /// The trust in force.
    pub fn trust(&self) -> Trust {
        self.verifiers.read().unwrap_or_else(|e| e.into_inner()).trust.clone()
    }

    /// Replace the trust (a changed ConfigMap); a bad CA keeps the old one.
    pub fn set_trust(&self, trust: Trust) -> Result<bool, String> {
        if self.trust() == trust {
            return Ok(false);
        }
        let verifiers = Arc::new(Verifiers::new(trust)?);
        *self.verifiers.write().unwrap_or_else(|e| e.into_inner()) = verifiers;
        Ok(true)
    }

    /// Who sent a request with these headers over a connection with this client chain.
    /// Request-header identity headers are removed from `headers` whatever the outcome.
    pub async fn authenticate(
        &self,
        peer: Option<&PeerCertificates>,
        headers: &mut HeaderMap,
    ) -> Result<Arc<UserInfo>, Unauthenticated> {
        let verifiers = self.verifiers.read().unwrap_or_else(|e| e.into_inner()).clone();
        let requestheader = &verifiers.trust.requestheader;
        // What the client chain proves, worked out once per connection.
        let proof = peer.map(|p| p.proof(&verifiers)).unwrap_or_default();
        let from_proxy = proof.front_proxy.then(|| proxied_user(requestheader, headers));
        let names: Vec<_> = headers
            .keys()
            .filter(|k| requestheader.carries_identity(k.as_str()))
            .cloned()
            .collect();
        for name in names {
            headers.remove(name);
        }
        if let Some(Some(user)) = from_proxy {
            return Ok(Arc::new(user));
        }
        if let Some(user) = proof.client {
            return Ok(user);
        }
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        if let Some(token) = bearer {
            let Some(reviewer) = &self.tokens else {
                return Err(Unauthenticated::Token("no token reviewer is configured".into()));
            };
            return match reviewer.review(token).await {
                Ok(Some(user)) => Ok(Arc::new(user)),
                Ok(None) => Err(Unauthenticated::Token("invalid bearer token".into())),
                Err(e) => Err(Unauthenticated::Token(e)),
            };
        }
        if self.anonymous {
            return Ok(self.anonymous_user.clone());
        }
        Err(Unauthenticated::Missing)
    }
}

/// Every value of a (repeatable) header, as text.
pub(crate) fn header_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect()
}

/// The user the front proxy names in the request headers, if it names one.
fn proxied_user(config: &RequestHeader, headers: &HeaderMap) -> Option<UserInfo> {
    let values = |name: &str| header_values(headers, name);
    let name = config
        .username_headers
        .iter()
        .find_map(|h| values(h).into_iter().find(|v| !v.is_empty()))?;
    let groups = config.group_headers.iter().flat_map(|h| values(h)).collect();
    let mut user = UserInfo::authenticated(name, groups);
    if let Some(uid) = config
        .uid_headers
        .iter()
        .find_map(|h| values(h).into_iter().find(|v| !v.is_empty()))
    {
        user.uid = uid;
    }
    for (header, value) in headers {
        let lower = header.as_str().to_ascii_lowercase();
        for prefix in &config.extra_prefixes {
            if let Some(key) = lower.strip_prefix(&prefix.to_ascii_lowercase())
                && let Ok(v) = value.to_str()
            {
                user.extra.entry(unescape(key)).or_default().push(v.to_string());
            }
        }
    }
    Some(user)
}

/// A TLS client-certificate verifier that takes any certificate whose holder proves its key,
/// leaving the chain to [`Authenticator`]: a certificate from an unknown CA, or expired, then
/// gets 401 like any unauthenticated request, as from kube-apiserver, not a TLS failure.
#[derive(Debug)]
pub struct AnyClientCertificate {
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl AnyClientCertificate {
    /// For the given crypto provider.
    pub fn new(provider: &rustls::crypto::CryptoProvider) -> Self {
        AnyClientCertificate {
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ClientCertVerifier for AnyClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A client for the core API: from a kubeconfig file, else in-cluster when running in a pod,
/// else none. Calls are bounded by `timeout`.
pub async fn core_client(kubeconfig: Option<&PathBuf>, timeout: Duration) -> Result<Option<kube::Client>, String> {
    let Some(mut config) = core_config(kubeconfig).await? else {
        return Ok(None);
    };
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    kube::Client::try_from(config).map(Some).map_err(|e| e.to_string())
}

/// The core API's client configuration: from `kubeconfig`, else in-cluster, else none.
pub async fn core_config(kubeconfig: Option<&PathBuf>) -> Result<Option<kube::Config>, String> {
    match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path).map_err(|e| format!("{}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map(Some)
                .map_err(|e| format!("{}: {e}", path.display()))
        }
        None if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => kube::Config::incluster()
            .map(Some)
            .map_err(|e| format!("in-cluster config: {e}")),
        None => Ok(None),
    }
}

/// Read the authentication ConfigMap's data.
pub async fn read_configmap(client: &kube::Client) -> Result<BTreeMap<String, String>, String> {
    use k8s_openapi::api::core::v1::ConfigMap;
    let (namespace, name) = AUTHENTICATION_CONFIGMAP;
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), namespace);
    let map = api.get(name).await.map_err(|e| format!("{namespace}/{name}: {e}"))?;
    Ok(map.data.unwrap_or_default())
}

/// Keep the authenticator's trust in line with the ConfigMap, polling every `interval`.
pub async fn follow_configmap(
    authenticator: Arc<Authenticator>,
    client: kube::Client,
    flags: Trust,
    set: FlagsSet,
    interval: Duration,
) {
    loop {
        tokio::time::sleep(interval).await;
        match read_configmap(&client).await {
            Ok(data) => match authenticator.set_trust(flags.or_from_configmap(&data, &set)) {
                Ok(true) => tracing::info!("authentication: reloaded kube-system/extension-apiserver-authentication"),
                Ok(false) => {}
                Err(e) => tracing::warn!("authentication: kept the previous trust: {e}"),
            },
            Err(e) => tracing::warn!("authentication: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_header_keys_are_lower_case_and_unescaped() {
        let mut headers = HeaderMap::new();
        headers.insert("X-Remote-User", "alice".parse().unwrap());
        headers.append("X-Remote-Group", "devs".parse().unwrap());
        headers.append("X-Remote-Group", "ops".parse().unwrap());
        headers.insert("X-Remote-Extra-Scopes%2Fv1", "read".parse().unwrap());
        headers.insert("X-Remote-Uid", "uid-1".parse().unwrap());
        let user = proxied_user(&RequestHeader::default(), &headers).unwrap();
        assert_eq!((user.name.as_str(), user.uid.as_str()), ("alice", "uid-1"));
        assert_eq!(user.groups, ["devs", "ops", AUTHENTICATED]);
        assert_eq!(user.extra["scopes/v1"], ["read"]);
        assert!(proxied_user(&RequestHeader::default(), &HeaderMap::new()).is_none());
    }

    #[test]
    fn configmap_fills_what_flags_leave_unset() {
        let data: BTreeMap<String, String> = [
            ("client-ca-file", "CLIENT"),
            ("requestheader-client-ca-file", "PROXY"),
            ("requestheader-allowed-names", r#"["front-proxy-client"]"#),
            ("requestheader-username-headers", r#"["X-Remote-User"]"#),
            ("requestheader-group-headers", r#"["X-Remote-Group"]"#),
            ("requestheader-extra-headers-prefix", r#"["X-Remote-Extra-"]"#),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let flags = Trust {
            client_ca: Some(b"FLAG".to_vec()),
            ..Default::default()
        };
        let set = FlagsSet {
            client_ca: true,
            requestheader_ca: false,
        };
        let trust = flags.or_from_configmap(&data, &set);
        assert_eq!(trust.client_ca.as_deref(), Some(&b"FLAG"[..]));
        assert_eq!(trust.requestheader_ca.as_deref(), Some(&b"PROXY"[..]));
        assert_eq!(trust.requestheader.allowed_names, ["front-proxy-client"]);
    }
}
