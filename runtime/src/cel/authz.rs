//! The `authorizer` of admission CEL (k8s.io/apiserver `cel/library/authz.go`):
//! `authorizer.group(g).resource(r).subresource(s).namespace(n).name(x).check(verb)`,
//! `authorizer.path(p).check(verb)`, `authorizer.serviceAccount(ns, name)`,
//! `authorizer.requestResource` (the request's own resource), `fieldSelector`/`labelSelector`,
//! and a decision's `allowed()`, `reason()`, `errored()` and `error()`.
//!
//! An evaluation is synchronous and a check asks the server's authorizer (a SubjectAccessReview)
//! asynchronously, so a check never waits inside CEL: an evaluation runs against the answers
//! its request already has ([`Checks`]); a check without one records what it asks and fails
//! the evaluation, and the caller gets the answers (awaiting the authorizer, no worker blocked)
//! and runs the expression again. Each round adds at least one answer and a request has at most
//! [`REQUEST_CHECKS`], so an expression runs at most that many times more.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube_cel::cel::extractors::{Arguments, This};
use kube_cel::cel::objects::{Key, Map, Opaque};
use kube_cel::cel::{Context, ExecutionError, ResolveResult, Value};

use crate::endpoints::request_info::{RequestInfo, Verb};
use crate::filters::authn::UserInfo;
use crate::filters::authz::{Authorizer, Decision};

/// Checks one expression may make: upstream charges a check 350,000 of an expression's
/// 1,000,000 cost units, "to allow for only two authorization checks per expression".
pub const EXPRESSION_CHECKS: usize = 2;

/// Distinct checks one request's admission CEL may make in all (upstream: the 10,000,000 units
/// of a binding's budget at 350,000 each).
pub const REQUEST_CHECKS: usize = 28;

/// Whom a check is about: the request's user, or a service account.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Principal {
    Requester,
    ServiceAccount { namespace: String, name: String },
}

/// One authorization question.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Query {
    principal: Principal,
    verb: String,
    /// `None`: a non-resource `path` check.
    resource: Option<ResourceCheck>,
    path: String,
}

/// `authorizer.group(..).resource(..)...`: what a resource check names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct ResourceCheck {
    principal: Option<Principal>,
    group: String,
    resource: String,
    subresource: String,
    namespace: String,
    name: String,
    field_selector: String,
    label_selector: String,
}

/// `authorizer.group(g)`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct GroupCheck {
    principal: Principal,
    group: String,
}

/// `authorizer.path(p)`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PathCheck {
    principal: Principal,
    path: String,
}

/// A check's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
struct DecisionValue(Decision);

macro_rules! opaque {
    ($($type:ty => $name:literal),*) => {$(
        impl Opaque for $type {
            fn runtime_type_name(&self) -> &str {
                $name
            }
        }
    )*};
}

opaque!(
    ResourceCheck => "kubernetes.authorization.ResourceCheck",
    GroupCheck => "kubernetes.authorization.GroupCheck",
    PathCheck => "kubernetes.authorization.PathCheck",
    DecisionValue => "kubernetes.authorization.Decision"
);

/// A request's answers, shared by every expression evaluated for it.
pub struct Checks {
    user: Option<UserInfo>,
    authorizer: Arc<Authorizer>,
    answers: Mutex<HashMap<Query, Decision>>,
}

impl Checks {
    /// Checks for `user` (`None`: the server itself), answered by `authorizer`.
    pub fn new(user: Option<UserInfo>, authorizer: Arc<Authorizer>) -> Arc<Checks> {
        Arc::new(Checks {
            user,
            authorizer,
            answers: Mutex::default(),
        })
    }

    /// Ask `wanted` (concurrently) and keep the answers; `false` when that would pass
    /// [`REQUEST_CHECKS`].
    pub async fn answer(&self, wanted: Vec<Query>) -> bool {
        if self.answered() + wanted.len() > REQUEST_CHECKS {
            return false;
        }
        let asked = wanted.into_iter().map(|query| async move {
            let decision = self.decide(&query).await;
            (query, decision)
        });
        let answers = futures::future::join_all(asked).await;
        crate::storage::cache::lock(&self.answers).extend(answers);
        true
    }

    pub(crate) fn answered(&self) -> usize {
        crate::storage::cache::lock(&self.answers).len()
    }

    async fn decide(&self, query: &Query) -> Decision {
        let server;
        let account;
        let user = match (&query.principal, &self.user) {
            (Principal::Requester, Some(user)) => user,
            // The server's own writes (its controllers) act as system:apiserver.
            (Principal::Requester, None) => {
                server = UserInfo::authenticated("system:apiserver".into(), vec!["system:masters".into()]);
                &server
            }
            (Principal::ServiceAccount { namespace, name }, _) => {
                account = UserInfo {
                    name: format!("system:serviceaccount:{namespace}:{name}"),
                    groups: vec![
                        "system:serviceaccounts".into(),
                        format!("system:serviceaccounts:{namespace}"),
                    ],
                    ..Default::default()
                };
                &account
            }
        };
        let info = match &query.resource {
            Some(r) => RequestInfo {
                is_resource: true,
                verb: Verb::named(&query.verb),
                group: r.group.clone(),
                version: "*".into(),
                namespace: r.namespace.clone(),
                resource: r.resource.clone(),
                subresource: r.subresource.clone(),
                name: r.name.clone(),
                field_selector: r.field_selector.clone(),
                label_selector: r.label_selector.clone(),
                ..Default::default()
            },
            None => RequestInfo {
                verb: Verb::named(&query.verb),
                path: query.path.clone(),
                ..Default::default()
            },
        };
        self.authorizer.authorize(user, &info).await
    }
}

/// The evaluation under way on this thread: its request's checks, what it asked that has no
/// answer yet, and how many checks it made.
struct Session {
    checks: Arc<Checks>,
    wanted: Vec<Query>,
    made: usize,
}

thread_local! {
    static SESSION: RefCell<Option<Session>> = const { RefCell::new(None) };
}

/// What one evaluation with [`Checks`] asked.
pub struct Asked {
    /// Checks without an answer yet: get them, then evaluate again.
    pub wanted: Vec<Query>,
    /// Checks the evaluation made, answered or not.
    pub made: usize,
}

/// Run `evaluate` (synchronous) with `checks` answering its authorizer calls.
pub fn with_checks<T>(checks: Option<&Arc<Checks>>, evaluate: impl FnOnce() -> T) -> (T, Asked) {
    let Some(checks) = checks else {
        return (
            evaluate(),
            Asked {
                wanted: Vec::new(),
                made: 0,
            },
        );
    };
    SESSION.with(|s| {
        *s.borrow_mut() = Some(Session {
            checks: checks.clone(),
            wanted: Vec::new(),
            made: 0,
        })
    });
    let value = evaluate();
    let session = SESSION.with(|s| s.borrow_mut().take());
    let asked = session.map_or(
        Asked {
            wanted: Vec::new(),
            made: 0,
        },
        |s| Asked {
            wanted: s.wanted,
            made: s.made,
        },
    );
    (value, asked)
}

/// The `authorizer` variable for a request on `resource` (its group, plural, subresource,
/// namespace and name): a map whose `requestResource` is that resource's check.
pub fn variable(group: &str, resource: &str, subresource: &str, namespace: &str, name: &str) -> Value {
    let request = ResourceCheck {
        principal: Some(Principal::Requester),
        group: group.into(),
        resource: resource.into(),
        subresource: subresource.into(),
        namespace: namespace.into(),
        name: name.into(),
        ..Default::default()
    };
    authorizer_value(request)
}

fn authorizer_value(request: ResourceCheck) -> Value {
    let map = HashMap::from([(
        Key::String(Arc::new("requestResource".into())),
        Value::Opaque(Arc::new(request)),
    )]);
    Value::Map(Map { map: Arc::new(map) })
}

/// Register the library's functions.
pub(super) fn register(context: &mut Context<'_>) {
    context.add_function("group", group);
    context.add_function("path", path);
    context.add_function("serviceAccount", service_account);
    context.add_function("resource", resource);
    context.add_function("subresource", |This(this): This<Value>, Arguments(args): Arguments| {
        with_resource(&this, &args, "subresource", |r, v| r.subresource = v)
    });
    context.add_function("namespace", |This(this): This<Value>, Arguments(args): Arguments| {
        with_resource(&this, &args, "namespace", |r, v| r.namespace = v)
    });
    context.add_function("name", |This(this): This<Value>, Arguments(args): Arguments| {
        with_resource(&this, &args, "name", |r, v| r.name = v)
    });
    context.add_function(
        "fieldSelector",
        |This(this): This<Value>, Arguments(args): Arguments| {
            with_resource(&this, &args, "fieldSelector", |r, v| r.field_selector = v)
        },
    );
    context.add_function(
        "labelSelector",
        |This(this): This<Value>, Arguments(args): Arguments| {
            with_resource(&this, &args, "labelSelector", |r, v| r.label_selector = v)
        },
    );
    context.add_function("check", check);
    context.add_function("allowed", |This(this): This<Value>| {
        decision(&this, "allowed", |d| Value::Bool(*d == Decision::Allow))
    });
    context.add_function("reason", |This(this): This<Value>| {
        decision(&this, "reason", |d| match d {
            Decision::Deny(reason) => Value::String(Arc::new(reason.clone())),
            _ => Value::String(Arc::new(String::new())),
        })
    });
    context.add_function("errored", |This(this): This<Value>| {
        decision(&this, "errored", |d| Value::Bool(matches!(d, Decision::Error(_))))
    });
    context.add_function("error", |This(this): This<Value>| {
        decision(&this, "error", |d| match d {
            Decision::Error(e) => Value::String(Arc::new(e.clone())),
            _ => Value::String(Arc::new(String::new())),
        })
    });
}

fn no_overload(function: &str) -> ExecutionError {
    ExecutionError::function_error(function, "no such overload")
}

fn opaque<T: 'static>(value: &Value) -> Option<&T> {
    match value {
        Value::Opaque(o) => o.downcast_ref::<T>(),
        _ => None,
    }
}

/// The principal of an `authorizer` value (the map holding `requestResource`).
fn principal_of(authorizer: &Value, function: &str) -> Result<Principal, ExecutionError> {
    let Value::Map(map) = authorizer else {
        return Err(no_overload(function));
    };
    map.map
        .get(&Key::String(Arc::new("requestResource".into())))
        .and_then(opaque::<ResourceCheck>)
        .and_then(|r| r.principal.clone())
        .ok_or_else(|| no_overload(function))
}

fn string_arg(args: &[Value], index: usize, function: &str) -> Result<String, ExecutionError> {
    match args.get(index) {
        Some(Value::String(s)) => Ok(s.to_string()),
        _ => Err(no_overload(function)),
    }
}

fn group(This(this): This<Value>, Arguments(args): Arguments) -> ResolveResult {
    let principal = principal_of(&this, "group")?;
    let group = string_arg(&args, 0, "group")?;
    Ok(Value::Opaque(Arc::new(GroupCheck { principal, group })))
}

fn path(This(this): This<Value>, Arguments(args): Arguments) -> ResolveResult {
    let principal = principal_of(&this, "path")?;
    let path = string_arg(&args, 0, "path")?;
    Ok(Value::Opaque(Arc::new(PathCheck { principal, path })))
}

fn service_account(This(this): This<Value>, Arguments(args): Arguments) -> ResolveResult {
    principal_of(&this, "serviceAccount")?;
    let (namespace, name) = (
        string_arg(&args, 0, "serviceAccount")?,
        string_arg(&args, 1, "serviceAccount")?,
    );
    for part in [&namespace, &name] {
        if !crate::registry::object_meta::dns_subdomain_errors(part).is_empty() {
            return Err(ExecutionError::function_error(
                "serviceAccount",
                format!("{part:?} is not a valid service account namespace or name"),
            ));
        }
    }
    Ok(authorizer_value(ResourceCheck {
        principal: Some(Principal::ServiceAccount { namespace, name }),
        ..Default::default()
    }))
}

fn resource(This(this): This<Value>, Arguments(args): Arguments) -> ResolveResult {
    let Some(group) = opaque::<GroupCheck>(&this) else {
        return Err(no_overload("resource"));
    };
    Ok(Value::Opaque(Arc::new(ResourceCheck {
        principal: Some(group.principal.clone()),
        group: group.group.clone(),
        resource: string_arg(&args, 0, "resource")?,
        ..Default::default()
    })))
}

fn with_resource(
    this: &Value,
    args: &[Value],
    function: &str,
    set: impl FnOnce(&mut ResourceCheck, String),
) -> ResolveResult {
    let Some(check) = opaque::<ResourceCheck>(this) else {
        return Err(no_overload(function));
    };
    let mut check = check.clone();
    set(&mut check, string_arg(args, 0, function)?);
    Ok(Value::Opaque(Arc::new(check)))
}

fn check(This(this): This<Value>, Arguments(args): Arguments) -> ResolveResult {
    let verb = string_arg(&args, 0, "check")?;
    let query = if let Some(r) = opaque::<ResourceCheck>(&this) {
        let principal = r.principal.clone().ok_or_else(|| no_overload("check"))?;
        Query {
            principal,
            verb,
            resource: Some(ResourceCheck {
                principal: None,
                ..r.clone()
            }),
            path: String::new(),
        }
    } else if let Some(p) = opaque::<PathCheck>(&this) {
        Query {
            principal: p.principal.clone(),
            verb,
            resource: None,
            path: p.path.clone(),
        }
    } else {
        return Err(no_overload("check"));
    };
    SESSION.with(|s| {
        let mut session = s.borrow_mut();
        let Some(session) = session.as_mut() else {
            return Err(ExecutionError::function_error("check", "no authorizer here"));
        };
        session.made += 1;
        if let Some(decision) = crate::storage::cache::lock(&session.checks.answers).get(&query) {
            return Ok(Value::Opaque(Arc::new(DecisionValue(decision.clone()))));
        }
        if !session.wanted.contains(&query) {
            session.wanted.push(query);
        }
        Err(ExecutionError::function_error("check", "awaiting the authorizer"))
    })
}

fn decision(this: &Value, function: &str, read: impl FnOnce(&Decision) -> Value) -> ResolveResult {
    opaque::<DecisionValue>(this)
        .map(|d| read(&d.0))
        .ok_or_else(|| no_overload(function))
}
