//! CEL over an admission request, as kube-apiserver's admission CEL sees it: `object`,
//! `oldObject` (null where there is none) and `request` (the AdmissionRequest without its
//! objects), run by the server's CEL ([`crate::cel`]: Kubernetes' libraries, cost limits).
//! Webhook `matchConditions` and ValidatingAdmissionPolicies use it, with `authorizer` bound
//! where the server has one (its checks answered between evaluations: [`crate::cel::authz`]).

use std::collections::HashMap;
use std::sync::Arc;

use kube_cel::cel::objects::{Key, Map};
use serde_json::Value;

use crate::cel::authz::{self, Checks, EXPRESSION_CHECKS};
use crate::cel::{self as engine, Budget, Failure, Program, to_cel};
pub use crate::cel::{Programs, Value as CelValue, string};

/// The variables of one request, and the authorization checks its expressions made.
#[derive(Clone)]
pub struct Variables(Vec<(&'static str, CelValue)>, Option<Arc<Checks>>);

impl Variables {
    /// `object` and `oldObject` (null when absent) and `request` (its objects left out).
    pub fn new(object: Option<&Value>, old: Option<&Value>, mut request: Value) -> Variables {
        if let Value::Object(map) = &mut request {
            map.remove("object");
            map.remove("oldObject");
        }
        Variables(
            vec![
                ("object", object.map_or(CelValue::Null, to_cel)),
                ("oldObject", old.map_or(CelValue::Null, to_cel)),
                ("request", to_cel(&request)),
            ],
            None,
        )
    }

    /// Bind `authorizer` for the request `a`, its checks kept in `checks` (shared by every
    /// expression of the request, so each question is asked once).
    pub fn authorize(&mut self, a: &super::Attributes<'_>, checks: Arc<Checks>) {
        let subresource = a.subresource;
        let variable = authz::variable(
            a.meta.group,
            a.meta.plural,
            subresource,
            a.namespace.unwrap_or_default(),
            a.name,
        );
        self.0.push(("authorizer", variable));
        self.1 = Some(checks);
    }
}

impl Variables {
    /// Bind `name` to `value` (null when absent): `params`, `namespaceObject`.
    pub fn bind(&mut self, name: &'static str, value: Option<&Value>) {
        self.0.push((name, value.map_or(CelValue::Null, to_cel)));
    }

    /// These variables with `variables` bound to the policy variables computed so far.
    pub fn with_variables(&self, computed: &[(String, CelValue)]) -> Variables {
        let map: HashMap<Key, CelValue> = computed
            .iter()
            .map(|(k, v)| (Key::String(Arc::new(k.clone())), v.clone()))
            .collect();
        let mut all = self.0.clone();
        all.push(("variables", CelValue::Map(Map { map: Arc::new(map) })));
        Variables(all, self.1.clone())
    }

    fn bindings(&self) -> Vec<(&str, &CelValue)> {
        self.0.iter().map(|(name, value)| (*name, value)).collect()
    }
}

/// Run `program` over `variables`, charged to `budget`: its value, or why there is none. An
/// expression whose authorizer checks have no answer yet is run again once they have one
/// (each run is charged to the budget).
pub async fn value(program: &Program, variables: &Variables, budget: &Budget) -> Result<CelValue, Failure> {
    loop {
        let bindings = variables.bindings();
        let (result, asked) = authz::with_checks(variables.1.as_ref(), || engine::run(program, &bindings, budget));
        if asked.made > EXPRESSION_CHECKS {
            // Upstream's cost of a check leaves room for two per expression.
            return Err(Failure::CallLimit);
        }
        let Some(checks) = variables.1.as_ref().filter(|_| !asked.wanted.is_empty()) else {
            return result;
        };
        if !checks.answer(asked.wanted).await {
            return Err(Failure::OutOfBudget);
        }
    }
}

/// Run `program` over `variables`, charged to `budget`: its boolean, or why there is none.
pub async fn evaluate(program: &Program, variables: &Variables, budget: &Budget) -> Result<bool, Failure> {
    engine::boolean(value(program, variables, budget).await?)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn expressions_see_the_request_and_kubernetes_functions() {
        let programs = Programs::default();
        let object = json!({"metadata": {"labels": {"app.kubernetes.io/name": "w"}}, "spec": {"replicas": 3}});
        let request = json!({"operation": "CREATE", "userInfo": {"username": "alice"}, "object": {}});
        let variables = Variables::new(Some(&object), None, request);
        let budget = Budget::default();
        let run = |e: &str| futures::executor::block_on(evaluate(&programs.compile(e).unwrap(), &variables, &budget));
        assert_eq!(run("object.spec.replicas > 2"), Ok(true));
        assert_eq!(run("object.metadata.labels['app.kubernetes.io/name'] == 'w'"), Ok(true));
        assert_eq!(run("oldObject == null && request.operation == 'CREATE'"), Ok(true));
        assert_eq!(
            run("!has(request.object)"),
            Ok(true),
            "the objects are variables of their own"
        );
        assert_eq!(run("request.userInfo.username.startsWith('al')"), Ok(true));
        assert_eq!(
            run("'a,b'.split(',').size() == 2"),
            Ok(true),
            "kube-cel's string library"
        );
        assert!(run("object.spec.replicas").is_err(), "not a boolean");
        assert!(run("object.nosuch.x").is_err());
        assert!(programs.compile("object.spec >").is_err());
    }

    /// `authorizer` answered by the server's authorizer: each check asked once per request
    /// between evaluations (no evaluation waits), its decision read by `allowed`, `reason`,
    /// `errored`; at most two checks an expression, as upstream's cost allows.
    #[tokio::test]
    async fn the_authorizer_answers_between_evaluations() {
        use crate::admission::{Attributes, Operation};
        use crate::filters::authn::UserInfo;
        use crate::filters::authz::{AuthorizationMode, Authorizer};
        use std::time::Duration;

        let programs = Programs::default();
        let user = UserInfo::authenticated("alice".into(), vec![]);
        let a = Attributes::new(Operation::Create, &crate::resource::TEST_META, Some("default"), "w");
        let with = |mode: AuthorizationMode| {
            let authorizer = Arc::new(Authorizer::new(mode, None, Duration::ZERO, Duration::ZERO));
            let mut variables = Variables::new(Some(&serde_json::json!({})), None, serde_json::json!({}));
            let checks = Checks::new(Some(user.clone()), authorizer);
            variables.authorize(&a, checks.clone());
            (variables, checks)
        };
        let budget = Budget::default();
        let (allowing, checks) = with(AuthorizationMode::AlwaysAllow);
        for expression in [
            "authorizer.group('g').resource('ks').namespace('default').check('approve').allowed()",
            "authorizer.requestResource.check('update').allowed() && authorizer.path('/healthz').check('get').allowed()",
            "authorizer.serviceAccount('default', 'builder').group('').resource('pods').check('list').reason() == ''",
            "!authorizer.group('g').resource('ks').subresource('status').name('w').check('patch').errored()",
        ] {
            let program = programs.compile(expression).unwrap();
            assert_eq!(evaluate(&program, &allowing, &budget).await, Ok(true), "{expression}");
        }
        assert_eq!(checks.answered(), 5, "each question asked once");
        let three = "authorizer.group('g').resource('a').check('get').allowed() && \
                     authorizer.group('g').resource('b').check('get').allowed() && \
                     authorizer.group('g').resource('c').check('get').allowed()";
        let program = programs.compile(three).unwrap();
        assert_eq!(evaluate(&program, &allowing, &budget).await, Err(Failure::CallLimit));

        // Delegated without a SubjectAccessReview endpoint: denied, with the reason.
        let (denying, _) = with(AuthorizationMode::Delegated);
        let denied = "!authorizer.group('g').resource('ks').check('approve').allowed() && \
                      authorizer.group('g').resource('ks').check('approve').reason().contains('no SubjectAccessReview')";
        let program = programs.compile(denied).unwrap();
        assert_eq!(evaluate(&program, &denying, &budget).await, Ok(true));
        // Without an authorizer bound, the variable does not exist.
        let unbound = Variables::new(None, None, serde_json::json!({}));
        let program = programs
            .compile("authorizer.group('g').resource('ks').check('get').allowed()")
            .unwrap();
        assert!(evaluate(&program, &unbound, &budget).await.is_err());
    }
}
