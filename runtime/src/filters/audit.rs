//! The audit log: `audit.k8s.io/v1` policies and events, one JSON line per stage, written to
//! a file rotated by size, count and age (`--audit-log-*`, `audit_file.rs`), as kube-apiserver
//! writes it.

use std::path::Path;
use std::time::SystemTime;

use prometheus::{IntCounterVec, Opts, Registry};
use serde::Deserialize;
use serde_json::{Value, json};

use super::audit_file::AuditFile;
pub use super::audit_file::Rotation;
use super::authn::UserInfo;
use crate::endpoints::request_info::RequestInfo;

/// How much of a request is recorded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum Level {
    /// Nothing.
    #[default]
    None,
    /// Who, what, when and the response code.
    Metadata,
    /// Metadata and the request body.
    Request,
    /// Metadata and both bodies.
    RequestResponse,
}

/// The stages of a request an event is written at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum Stage {
    /// As soon as the request is authenticated.
    RequestReceived,
    /// When a long-running response (a watch) starts.
    ResponseStarted,
    /// When the response is complete.
    ResponseComplete,
    /// When a handler panicked.
    Panic,
}

/// An `audit.k8s.io/v1` Policy.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// First match wins; no match is level None.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Stages never written.
    #[serde(default)]
    pub omit_stages: Vec<Stage>,
}

/// One policy rule; empty lists match everything.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// The level of matching requests.
    pub level: Level,
    /// User names.
    #[serde(default)]
    pub users: Vec<String>,
    /// Groups (any).
    #[serde(default)]
    pub user_groups: Vec<String>,
    /// Kubernetes verbs.
    #[serde(default)]
    pub verbs: Vec<String>,
    /// Resources by group (resource requests only).
    #[serde(default)]
    pub resources: Vec<GroupResources>,
    /// Namespaces ("" for cluster-scoped requests).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Non-resource paths, exact or ending in `*` (non-resource requests only).
    #[serde(default, rename = "nonResourceURLs")]
    pub non_resource_urls: Vec<String>,
    /// Stages not written for matching requests.
    #[serde(default)]
    pub omit_stages: Vec<Stage>,
}

/// Resources of one group in a rule.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupResources {
    /// API group ("" is the core group).
    #[serde(default)]
    pub group: String,
    /// Resources, `resource/subresource`, `*/subresource` or `*`; empty is all.
    #[serde(default)]
    pub resources: Vec<String>,
    /// Object names; empty is all.
    #[serde(default)]
    pub resource_names: Vec<String>,
}

fn any_or(list: &[String], value: &str) -> bool {
    list.is_empty() || list.iter().any(|v| v == value)
}

impl Rule {
    fn matches(&self, user: &UserInfo, info: &RequestInfo) -> bool {
        if !any_or(&self.users, &user.name)
            || !(self.user_groups.is_empty() || user.groups.iter().any(|g| self.user_groups.contains(g)))
            || !any_or(&self.verbs, info.verb.as_str())
        {
            return false;
        }
        if info.is_resource {
            if !self.non_resource_urls.is_empty() && self.resources.is_empty() {
                return false;
            }
            let resource = if info.subresource.is_empty() {
                info.resource.clone()
            } else {
                format!("{}/{}", info.resource, info.subresource)
            };
            let star = format!("*/{}", info.subresource);
            let resources_match = self.resources.is_empty()
                || self.resources.iter().any(|g| {
                    g.group == info.group
                        && (g.resources.is_empty()
                            || g.resources
                                .iter()
                                .any(|r| *r == resource || r == "*" || (!info.subresource.is_empty() && *r == star)))
                        && any_or(&g.resource_names, &info.name)
                });
            resources_match && any_or(&self.namespaces, &info.namespace)
        } else {
            if !self.resources.is_empty() || !self.namespaces.is_empty() {
                return false;
            }
            self.non_resource_urls.is_empty()
                || self.non_resource_urls.iter().any(|u| match u.strip_suffix('*') {
                    Some(prefix) => info.path.starts_with(prefix),
                    None => *u == info.path,
                })
        }
    }
}

impl Policy {
    /// Read a policy file (YAML or JSON).
    pub fn load(path: &Path) -> Result<Policy, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let value: Value = serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        match (value["apiVersion"].as_str(), value["kind"].as_str()) {
            (Some("audit.k8s.io/v1"), Some("Policy")) => {}
            _ => return Err(format!("{}: not an audit.k8s.io/v1 Policy", path.display())),
        }
        serde_json::from_value(value).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The level of a request and the stages to leave out.
    pub fn decide(&self, user: &UserInfo, info: &RequestInfo) -> (Level, Vec<Stage>) {
        match self.rules.iter().find(|r| r.matches(user, info)) {
            Some(rule) => {
                let mut omit = self.omit_stages.clone();
                omit.extend(&rule.omit_stages);
                (rule.level, omit)
            }
            None => (Level::None, Vec::new()),
        }
    }
}

/// The audit log: a policy, and a file of events written by a thread of its own.
pub struct AuditLog {
    policy: Policy,
    file: AuditFile,
}

fn timestamp(at: SystemTime) -> String {
    jiff::Timestamp::try_from(at)
        .unwrap_or_default()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

impl AuditLog {
    /// Open (append to) the log at `path` with `policy`; events it has to drop are counted in
    /// `registry`'s `apiserver_audit_error_total{plugin="log"}`.
    pub fn open(path: &Path, policy: Policy, rotation: Rotation, registry: &Registry) -> Result<AuditLog, String> {
        let errors = IntCounterVec::new(
            Opts::new(
                "apiserver_audit_error_total",
                "Counter of audit events that failed to be audited properly. Plugin identifies the plugin affected by the error.",
            ),
            &["plugin"],
        )
        .expect("a valid counter");
        let errors = crate::filters::metrics::registered(registry, errors);
        Ok(AuditLog {
            policy,
            file: AuditFile::open(path, rotation, errors.with_label_values(&["log"]))?,
        })
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Queue one event line for the file; never waits.
    pub fn write(&self, event: &Value) {
        let mut line = serde_json::to_vec(event).expect("events serialize");
        line.push(b'\n');
        self.file.write(line);
    }

    /// Wait (blocking the calling thread) until every event written before is in the file: at
    /// shutdown, and in tests.
    pub fn flush(&self) {
        self.file.flush();
    }
}

/// `authentication.k8s.io/v1 UserInfo` JSON.
fn user_json(user: &UserInfo) -> Value {
    let mut u = json!({"username": user.name, "groups": user.groups});
    if !user.uid.is_empty() {
        u["uid"] = json!(user.uid);
    }
    if !user.extra.is_empty() {
        u["extra"] = json!(user.extra);
    }
    u
}

/// Where a request came from, for its audit events.
pub struct Origin<'a> {
    /// The request's audit ID.
    pub audit_id: &'a str,
    /// Path and query.
    pub uri: &'a str,
    /// X-Forwarded-For entries, then the peer's address.
    pub source_ips: Vec<String>,
    /// The `User-Agent` header.
    pub user_agent: Option<&'a str>,
}

/// Audit annotations a handler adds to its response (admission webhooks' `auditAnnotations`),
/// for the ResponseComplete event.
#[derive(Clone, Debug, Default)]
pub struct AuditAnnotations(pub Vec<(String, String)>);

/// One request's audit record, written stage by stage.
pub struct Record {
    /// The event so far (without stage and stage time).
    pub event: Value,
    /// The level.
    pub level: Level,
    omit: Vec<Stage>,
}

impl Record {
    /// Start the record of a request.
    pub fn new(level: Level, omit: Vec<Stage>, origin: Origin<'_>, user: &UserInfo, info: &RequestInfo) -> Record {
        let Origin {
            audit_id,
            uri,
            source_ips,
            user_agent,
        } = origin;
        let mut event = json!({
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": format!("{level:?}"),
            "auditID": audit_id,
            "requestURI": uri,
            "verb": info.verb.as_str(),
            "user": user_json(user),
            "sourceIPs": source_ips,
            "requestReceivedTimestamp": timestamp(SystemTime::now()),
        });
        if let Some(agent) = user_agent {
            event["userAgent"] = json!(agent);
        }
        if info.is_resource {
            let mut object = json!({"resource": info.resource, "apiGroup": info.group, "apiVersion": info.version});
            for (key, value) in [
                ("namespace", &info.namespace),
                ("name", &info.name),
                ("subresource", &info.subresource),
            ] {
                if !value.is_empty() {
                    object[key] = json!(value);
                }
            }
            event["objectRef"] = object;
        }
        Record { event, level, omit }
    }

    /// Record the user the request acted as (`impersonatedUser`).
    pub fn impersonated(&mut self, user: &UserInfo) {
        self.event["impersonatedUser"] = user_json(user);
    }

    /// The event at `stage`, unless the policy omits that stage.
    pub fn at(&self, stage: Stage) -> Option<Value> {
        if self.omit.contains(&stage) {
            return None;
        }
        let mut event = self.event.clone();
        event["stage"] = json!(stage);
        event["stageTimestamp"] = json!(timestamp(SystemTime::now()));
        Some(event)
    }

    /// Record audit annotations (`annotations`).
    pub fn annotate(&mut self, annotations: &AuditAnnotations) {
        for (key, value) in &annotations.0 {
            self.event["annotations"][key] = json!(value);
        }
    }

    /// Record the response's status (code, and the Status fields of a failure).
    pub fn respond(&mut self, code: u16, body: Option<&Value>) {
        let mut status = json!({"metadata": {}, "code": code});
        if let Some(b) = body.filter(|b| b["kind"] == "Status") {
            for key in ["status", "message", "reason"] {
                if let Some(v) = b.get(key) {
                    status[key] = v.clone();
                }
            }
        }
        self.event["responseStatus"] = status;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::request_info::request_info;
    use std::fs::File;
    use std::time::Duration;

    fn policy(yaml: &str) -> Policy {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, yaml).unwrap();
        Policy::load(&path).unwrap()
    }

    #[test]
    fn first_matching_rule_wins() {
        let p = policy(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: None\n  verbs: [get, list, watch]\n- level: RequestResponse\n  resources:\n  - group: custom.example.com\n    resources: [widgets, '*/scale']\n- level: None\n  nonResourceURLs: ['/healthz*']\n- level: Metadata\n",
        );
        let alice = UserInfo::authenticated("alice".into(), vec![]);
        let decide = |m: &str, path: &str| p.decide(&alice, &request_info(m, path, None));
        assert_eq!(
            decide("GET", "/apis/custom.example.com/v1/namespaces/d/widgets/w").0,
            Level::None
        );
        let (level, omit) = decide("POST", "/apis/custom.example.com/v1/namespaces/d/widgets");
        assert_eq!((level, omit), (Level::RequestResponse, vec![Stage::RequestReceived]));
        assert_eq!(
            decide("PUT", "/apis/custom.example.com/v1/namespaces/d/widgets/w/scale").0,
            Level::RequestResponse
        );
        assert_eq!(
            decide("PUT", "/apis/custom.example.com/v1/namespaces/d/widgets/w/status").0,
            Level::Metadata
        );
        assert_eq!(decide("POST", "/healthz/x").0, Level::None);
        assert_eq!(decide("POST", "/apis/other.io/v1/things").0, Level::Metadata);
    }

    #[test]
    fn rotation_drops_backups_older_than_max_age() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let stale = dir.path().join("audit-2020-01-01T00-00-00.000.log");
        std::fs::write(&stale, "old\n").unwrap();
        let week_ago = SystemTime::now() - Duration::from_secs(7 * 24 * 3600);
        File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(week_ago)
            .unwrap();
        let rotation = Rotation {
            max_bytes: 100,
            max_backups: 0,
            max_age: Duration::from_secs(24 * 3600),
        };
        let log = AuditLog::open(&path, Policy::default(), rotation, &Registry::new()).unwrap();
        for i in 0..5 {
            log.write(&json!({"n": i, "pad": "x".repeat(40)}));
        }
        log.flush();
        assert!(!stale.exists(), "a backup older than --audit-log-maxage is deleted");
        let backups = std::fs::read_dir(dir.path()).unwrap().count() - 1;
        assert!(backups >= 1, "fresh backups stay");
    }

    #[test]
    fn rotation_keeps_max_backups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let rotation = Rotation {
            max_bytes: 200,
            max_backups: 2,
            max_age: Duration::ZERO,
        };
        let log = AuditLog::open(&path, Policy::default(), rotation, &Registry::new()).unwrap();
        for i in 0..40 {
            log.write(&json!({"n": i, "pad": "x".repeat(40)}));
            // Rotated names carry the time to the millisecond.
            log.flush();
            std::thread::sleep(Duration::from_millis(2));
        }
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 3, "the live file and two backups: {names:?}");
        assert!(std::fs::metadata(&path).unwrap().len() <= 200);
        let last = std::fs::read_to_string(&path).unwrap();
        assert!(
            last.contains("\"n\":39"),
            "the newest event is in the live file: {last}"
        );
    }
}
