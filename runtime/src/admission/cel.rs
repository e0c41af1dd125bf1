//! CEL over an admission request, as kube-apiserver's admission CEL sees it: `object`,
//! `oldObject` (null where there is none) and `request` (the AdmissionRequest without its
//! objects), run by the server's CEL ([`crate::cel`]: Kubernetes' libraries, cost limits).
//! Webhook `matchConditions` and ValidatingAdmissionPolicies use it.

use std::collections::HashMap;
use std::sync::Arc;

use kube_cel::cel::objects::{Key, Map};
use serde_json::Value;

use crate::cel::{self as engine, Budget, Failure, Program, to_cel};
pub use crate::cel::{Programs, Value as CelValue, string};

/// The variables of one request.
#[derive(Clone)]
pub struct Variables(Vec<(&'static str, CelValue)>);

impl Variables {
    /// `object` and `oldObject` (null when absent) and `request` (its objects left out).
    pub fn new(object: Option<&Value>, old: Option<&Value>, mut request: Value) -> Variables {
        if let Value::Object(map) = &mut request {
            map.remove("object");
            map.remove("oldObject");
        }
        Variables(vec![
            ("object", object.map_or(CelValue::Null, to_cel)),
            ("oldObject", old.map_or(CelValue::Null, to_cel)),
            ("request", to_cel(&request)),
        ])
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
        Variables(all)
    }

    fn bindings(&self) -> Vec<(&str, &CelValue)> {
        self.0.iter().map(|(name, value)| (*name, value)).collect()
    }
}

/// Run `program` over `variables`, charged to `budget`: its value, or why there is none.
pub fn value(program: &Program, variables: &Variables, budget: &Budget) -> Result<CelValue, Failure> {
    engine::run(program, &variables.bindings(), budget)
}

/// Run `program` over `variables`, charged to `budget`: its boolean, or why there is none.
pub fn evaluate(program: &Program, variables: &Variables, budget: &Budget) -> Result<bool, Failure> {
    engine::run_bool(program, &variables.bindings(), budget)
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
        let run = |e: &str| evaluate(&programs.compile(e).unwrap(), &variables, &budget);
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
}
