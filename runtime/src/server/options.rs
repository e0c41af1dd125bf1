//! The server's flags, in the genericapiserver style (`--secure-port`, `--storage`, the
//! delegated authentication and authorization flags, limits, audit and logging).

use std::net::IpAddr;
use std::path::PathBuf;

use crate::filters::authz::AuthorizationMode;

use crate::storage::{self};

/// Which storage backend to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StorageKind {
    /// In memory; lost on exit.
    Memory,
    /// One redb file under `--data-dir`; survives restarts.
    Embedded,
    /// etcd at `--etcd-servers`: for clusters and more than one replica.
    Etcd,
}

/// Command-line flags shared by every Apiary server.
#[derive(Clone, Debug, clap::Args)]
pub struct ServerOptions {
    /// Port to serve HTTPS on.
    #[arg(long, default_value_t = 8443)]
    pub secure_port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_address: IpAddr,
    /// Where generated certificates and the admin kubeconfig live (used unless --tls-cert-file is given).
    #[arg(long, default_value = ".apiary/certs")]
    pub cert_dir: PathBuf,
    /// Serving certificate (PEM); with --tls-private-key-file, replaces the generated one.
    #[arg(long, requires = "tls_private_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// Serving key (PEM).
    #[arg(long, requires = "tls_cert_file")]
    pub tls_private_key_file: Option<PathBuf>,
    /// CA that signs client certificates (CN = user, O = groups); default: the generated CA.
    #[arg(long)]
    pub client_ca_file: Option<PathBuf>,
    /// Storage backend.
    #[arg(long, value_enum, default_value_t = StorageKind::Embedded)]
    pub storage: StorageKind,
    /// Directory of the embedded store.
    #[arg(long, default_value = ".apiary/data")]
    pub data_dir: PathBuf,
    /// Key prefix of every object in storage.
    #[arg(long, default_value = "/registry")]
    pub etcd_prefix: String,
    /// Rewrite every object stored at an older version of its kind at the storage version,
    /// print progress and a summary, and exit instead of serving (safe while other replicas
    /// serve; run it again to finish an interrupted run).
    #[arg(long)]
    pub migrate_storage: bool,
    /// etcd endpoints (comma-separated), with `--storage etcd`.
    #[arg(long, value_delimiter = ',')]
    pub etcd_servers: Vec<String>,
    /// CA bundle for etcd's serving certificates.
    #[arg(long)]
    pub etcd_cafile: Option<PathBuf>,
    /// Client certificate for etcd.
    #[arg(long, requires = "etcd_keyfile")]
    pub etcd_certfile: Option<PathBuf>,
    /// Client key for etcd.
    #[arg(long, requires = "etcd_certfile")]
    pub etcd_keyfile: Option<PathBuf>,
    /// How often etcd's history is compacted (`5m`, `1h`, …; `0`: never, for operators who
    /// compact etcd themselves). Every replica runs the compactor; they agree through etcd's
    /// `compact_rev_key` (as kube-apiserver's do), so etcd is compacted once per interval,
    /// keeping one interval of history for watches to resume from.
    #[arg(long, default_value = "5m", value_parser = crate::server::leader::parse_duration)]
    pub etcd_compaction_interval: std::time::Duration,
    /// Seconds between the bookmarks of a watch that allows them.
    #[arg(long, default_value_t = 60)]
    pub watch_bookmark_interval: u64,
    /// Events the watch cache keeps per resource for watchers to resume from.
    #[arg(long, default_value_t = storage::cache::WINDOW)]
    pub watch_cache_size: usize,
    /// Extra names for the generated serving certificate (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub tls_sans: Vec<String>,

    /// CA that signs the front proxy's (the aggregator's) client certificate; default: from
    /// the kube-system/extension-apiserver-authentication ConfigMap when the core API is reachable.
    #[arg(long)]
    pub requestheader_client_ca_file: Option<PathBuf>,
    /// Common names the front-proxy certificate may have (comma-separated; empty: any).
    #[arg(long, value_delimiter = ',')]
    pub requestheader_allowed_names: Vec<String>,
    /// Headers naming the user in proxied requests.
    #[arg(long, value_delimiter = ',', default_value = "X-Remote-User")]
    pub requestheader_username_headers: Vec<String>,
    /// Headers naming the user's UID in proxied requests.
    #[arg(long, value_delimiter = ',', default_value = "X-Remote-Uid")]
    pub requestheader_uid_headers: Vec<String>,
    /// Headers naming the groups in proxied requests.
    #[arg(long, value_delimiter = ',', default_value = "X-Remote-Group")]
    pub requestheader_group_headers: Vec<String>,
    /// Prefixes of headers carrying extra user attributes in proxied requests.
    #[arg(long, value_delimiter = ',', default_value = "X-Remote-Extra-")]
    pub requestheader_extra_headers_prefix: Vec<String>,
    /// kubeconfig for TokenReview and the authentication ConfigMap (default: in-cluster, if in a pod).
    #[arg(long)]
    pub authentication_kubeconfig: Option<PathBuf>,
    /// How long token reviews are cached (seconds).
    #[arg(long, default_value_t = 10)]
    pub authentication_token_webhook_cache_ttl: u64,
    /// How often the authentication ConfigMap is re-read (seconds).
    #[arg(long, default_value_t = 10)]
    pub authentication_config_poll_interval: u64,
    /// Let requests without credentials in as system:anonymous (they still need authorization).
    #[arg(long)]
    pub anonymous_auth: bool,
    /// Authorization: Delegated (SubjectAccessReview) or, for local development only, AlwaysAllow.
    #[arg(long, value_enum, default_value_t = AuthorizationMode::Delegated)]
    pub authorization_mode: AuthorizationMode,
    /// kubeconfig for SubjectAccessReview (default: in-cluster, if in a pod).
    #[arg(long)]
    pub authorization_kubeconfig: Option<PathBuf>,
    /// How long allowed decisions are cached (seconds).
    #[arg(long, default_value_t = 10)]
    pub authorization_webhook_cache_authorized_ttl: u64,
    /// How long denied decisions are cached (seconds).
    #[arg(long, default_value_t = 10)]
    pub authorization_webhook_cache_unauthorized_ttl: u64,

    /// Longest time a request (other than a watch) may take (seconds).
    #[arg(long, default_value_t = 60)]
    pub request_timeout: u64,
    /// Most non-mutating requests in flight (watches excepted); more get 429.
    #[arg(long, default_value_t = 400)]
    pub max_requests_inflight: usize,
    /// Most mutating requests in flight; more get 429.
    #[arg(long, default_value_t = 200)]
    pub max_mutating_requests_inflight: usize,
    /// How long shutdown waits for in-flight requests to finish (seconds).
    #[arg(long, default_value_t = 30)]
    pub shutdown_timeout: u64,
    /// Admission plugins to turn on besides the default ones (`NamespaceLifecycle`,
    /// `MutatingAdmissionWebhook`, `ValidatingAdmissionPolicy`, `ValidatingAdmissionWebhook` and
    /// the server's own, all on by default; the cluster's need a core API and are off in local
    /// mode).
    #[arg(long, value_delimiter = ',')]
    pub enable_admission_plugins: Vec<String>,
    /// Admission plugins to leave off: the cluster's, or the server's own by name.
    #[arg(long, value_delimiter = ',')]
    pub disable_admission_plugins: Vec<String>,
    /// An `apiserver.config.k8s.io/v1 AdmissionConfiguration` whose WebhookAdmission
    /// configuration names a kubeconfig with the credentials to present to webhooks.
    #[arg(long)]
    pub admission_control_config_file: Option<PathBuf>,
    /// `HOST=IP`: reach the admission webhook host HOST (`<service>.<namespace>.svc`, or a
    /// URL's host) at IP instead of through DNS, e.g. for a server run outside the cluster.
    /// Repeatable. The webhook's certificate is still checked for HOST.
    #[arg(long)]
    pub admission_webhook_address: Vec<String>,
    /// Most open client connections; at the limit the one idle longest is closed to make room,
    /// and with none idle the new one is refused. Lowered to fit the open-file limit.
    #[arg(long, default_value_t = 10_000)]
    pub max_connections: usize,
    /// Close a connection with no request in flight after this long (seconds).
    #[arg(long, default_value_t = 90)]
    pub idle_connection_timeout: u64,
    /// Close an HTTP/1 connection whose request headers take longer than this (seconds).
    #[arg(long, default_value_t = 32)]
    pub header_read_timeout: u64,

    /// Elect one replica (a `coordination.k8s.io/v1` Lease) to run the server's in-process
    /// controllers; `--leader-elect=false` runs them in every replica.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// How long a lease holds without renewal (`15s`, `500ms`, ...).
    #[arg(long, default_value = "15s", value_parser = crate::server::leader::parse_duration)]
    pub leader_elect_lease_duration: std::time::Duration,
    /// How long the leader keeps trying to renew before it stops leading.
    #[arg(long, default_value = "10s", value_parser = crate::server::leader::parse_duration)]
    pub leader_elect_renew_deadline: std::time::Duration,
    /// How often replicas try to acquire or renew the lease.
    #[arg(long, default_value = "2s", value_parser = crate::server::leader::parse_duration)]
    pub leader_elect_retry_period: std::time::Duration,
    /// The Lease's name (default: the server binary's name).
    #[arg(long)]
    pub leader_elect_resource_name: Option<String>,
    /// The Lease's namespace: the pod's, from `POD_NAMESPACE`, which the generated workload
    /// sets; `default` when neither is given.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub leader_elect_resource_namespace: String,

    /// Write audit events (one JSON line each) to this file; no audit log when unset.
    #[arg(long)]
    pub audit_log_path: Option<PathBuf>,
    /// The audit.k8s.io/v1 Policy deciding what is audited (required with --audit-log-path).
    #[arg(long, requires = "audit_log_path")]
    pub audit_policy_file: Option<PathBuf>,
    /// Rotate the audit log when it reaches this many megabytes (0: never).
    #[arg(long, default_value_t = 100)]
    pub audit_log_maxsize: u64,
    /// Rotated audit logs to keep (0: all).
    #[arg(long, default_value_t = 10)]
    pub audit_log_maxbackup: usize,
    /// Days to keep rotated audit logs (0: forever).
    #[arg(long, default_value_t = 0)]
    pub audit_log_maxage: u64,

    /// Log format: text or json.
    #[arg(long, value_enum, default_value_t = crate::LogFormat::Text)]
    pub log_format: crate::LogFormat,
    /// Log verbosity as kube-apiserver's -v (0-2 info, 3-4 debug with a line per request, 5+ trace); RUST_LOG overrides it.
    #[arg(short = 'v', long = "v", default_value_t = 0)]
    pub verbosity: u8,
}

impl ServerOptions {
    /// Log to stderr as `--log-format` and `-v` say (`RUST_LOG` overrides), through a global
    /// `tracing` subscriber. For a binary that has no logging of its own: the library never
    /// installs one itself, so an application keeps its own (JSON to a collector,
    /// OpenTelemetry) by not calling this.
    pub fn init_logging(&self) {
        crate::init_logging(self.log_format, self.verbosity);
    }
}
