//! The cluster's admission plugins (NamespaceLifecycle, MutatingAdmissionWebhook,
//! ValidatingAdmissionPolicy, ValidatingAdmissionWebhook), set up as kube-apiserver's flags set them up: on by default
//! when the server has a core API, off in local mode; `--enable-admission-plugins`,
//! `--disable-admission-plugins` (which also turns off the server's own plugins by name) and
//! `--admission-control-config-file` (webhook credentials).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::Chain;
use super::metrics::AdmissionMetrics;
use super::namespace::{NamespaceLifecycle, Namespaces};
use super::policy::ValidatingPolicies;
use super::webhook::client::{Caller, Credentials};
use super::webhook::{MutatingWebhooks, ValidatingWebhooks};
use crate::server::ServerOptions;

/// NamespaceLifecycle.
pub const NAMESPACE_LIFECYCLE: &str = "NamespaceLifecycle";
/// MutatingAdmissionWebhook.
pub const MUTATING_WEBHOOK: &str = "MutatingAdmissionWebhook";
/// ValidatingAdmissionPolicy.
pub const VALIDATING_POLICY: &str = "ValidatingAdmissionPolicy";
/// ValidatingAdmissionWebhook.
pub const VALIDATING_WEBHOOK: &str = "ValidatingAdmissionWebhook";
/// The cluster's plugins this server runs, in upstream's order.
pub const CLUSTER_PLUGINS: [&str; 4] = [
    NAMESPACE_LIFECYCLE,
    MUTATING_WEBHOOK,
    VALIDATING_POLICY,
    VALIDATING_WEBHOOK,
];
/// Upstream plugins this server does not run yet.
const NOT_YET: [&str; 1] = ["MutatingAdmissionPolicy"];
/// Connecting to and writing to the core API; its watches may stay quiet for minutes.
const CORE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a watch event (the core API ends watches before 5 minutes).
const WATCH_READ_TIMEOUT: Duration = Duration::from_secs(295);

/// `HOST=IP` pairs of `--admission-webhook-address`.
fn addresses(pairs: &[String]) -> Result<HashMap<String, IpAddr>, String> {
    pairs
        .iter()
        .map(|pair| {
            let (host, ip) = pair
                .split_once('=')
                .ok_or_else(|| format!("--admission-webhook-address {pair:?}: expected HOST=IP"))?;
            let ip = ip
                .parse()
                .map_err(|e| format!("--admission-webhook-address {pair:?}: {e}"))?;
            Ok((host.to_string(), ip))
        })
        .collect()
}

/// Check the flags' plugin names, drop the disabled ones from `chain`, and put the cluster's
/// plugins that are on first in it.
pub async fn install(
    chain: &Chain,
    options: &ServerOptions,
    metrics: Arc<AdmissionMetrics>,
    authorizer: Arc<crate::filters::authz::Authorizer>,
    kinds: Vec<(crate::resource::ResourceMeta, serde_json::Value)>,
) -> Result<(), String> {
    let (enable, disable) = (&options.enable_admission_plugins, &options.disable_admission_plugins);
    let own = chain.names();
    let known = |name: &String| {
        CLUSTER_PLUGINS.contains(&name.as_str()) || NOT_YET.contains(&name.as_str()) || own.contains(name)
    };
    if let Some(unknown) = enable.iter().chain(disable).find(|n| !known(n)) {
        let mut names: Vec<&str> = CLUSTER_PLUGINS.to_vec();
        names.extend(own.iter().map(String::as_str));
        return Err(format!(
            "admission plugin {unknown:?} is unknown; this server has {}",
            names.join(", ")
        ));
    }
    if let Some(both) = enable.iter().find(|n| disable.contains(n)) {
        return Err(format!(
            "{both} is in both --enable-admission-plugins and --disable-admission-plugins"
        ));
    }
    if let Some(later) = enable.iter().find(|n| NOT_YET.contains(&n.as_str())) {
        return Err(format!("admission plugin {later} is not supported by this server yet"));
    }
    chain.retain(|name| !disable.iter().any(|d| d == name));
    let on: Vec<&str> = CLUSTER_PLUGINS
        .into_iter()
        .filter(|p| !disable.iter().any(|d| d == p))
        .collect();
    if on.is_empty() {
        return Ok(());
    }
    let kubeconfig = options.authentication_kubeconfig.as_ref();
    let Some(mut config) = crate::filters::authn::core_config(kubeconfig).await? else {
        tracing::info!(
            "{} are off: no core API (kubeconfig or in-cluster) to read namespaces and webhooks from",
            on.join(", ")
        );
        return Ok(());
    };
    config.connect_timeout = Some(CORE_TIMEOUT);
    config.write_timeout = Some(CORE_TIMEOUT);
    config.read_timeout = Some(WATCH_READ_TIMEOUT);
    let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
    let namespaces = Namespaces::start(client.clone());
    let fixed = addresses(&options.admission_webhook_address)?;
    let caller = |plugin: &str| -> Result<Caller, String> {
        let credentials = match &options.admission_control_config_file {
            Some(path) => Credentials::load(path, plugin)?,
            None => Credentials::default(),
        };
        Ok(Caller::new(fixed.clone(), credentials))
    };
    let mut plugins: Vec<Arc<dyn super::Plugin>> = Vec::new();
    for plugin in on {
        plugins.push(match plugin {
            NAMESPACE_LIFECYCLE => Arc::new(NamespaceLifecycle::new(namespaces.clone())),
            MUTATING_WEBHOOK => Arc::new(MutatingWebhooks::start(
                client.clone(),
                namespaces.clone(),
                caller(plugin)?,
                Some(metrics.clone()),
                Some(authorizer.clone()),
            )),
            VALIDATING_POLICY => Arc::new(ValidatingPolicies::start(
                client.clone(),
                namespaces.clone(),
                Some(authorizer.clone()),
                kinds.clone(),
                Some(metrics.clone()),
            )),
            _ => Arc::new(ValidatingWebhooks::start(
                client.clone(),
                namespaces.clone(),
                caller(plugin)?,
                Some(metrics.clone()),
                Some(authorizer.clone()),
            )),
        });
    }
    chain.push_front(plugins);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_addresses_parse() {
        let parsed = addresses(&["hook.ns.svc=127.0.0.1".into()]).unwrap();
        assert_eq!(parsed["hook.ns.svc"], IpAddr::from([127, 0, 0, 1]));
        assert!(addresses(&["hook.ns.svc".into()]).is_err());
        assert!(addresses(&["hook.ns.svc=nowhere".into()]).is_err());
    }
}
