//! CEL over an admission request, as kube-apiserver's admission CEL sees it: `object`,
//! `oldObject` (null where there is none) and `request` (the AdmissionRequest without its
//! objects), with Kubernetes' CEL libraries from kube-cel. Expressions are compiled once per
//! text and shared. Webhook `matchConditions` and ValidatingAdmissionPolicies use it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube_cel::KubeCelExt as _;
use kube_cel::cel::objects::{Key, Map};
use kube_cel::cel::{self, Context, Program};

/// A CEL value.
pub use kube_cel::cel::Value as CelValue;
use serde_json::Value;

/// Compiled expressions kept at most; then the cache starts over.
const CACHED: usize = 4096;

thread_local! {
    // Kubernetes' CEL functions, registered once per thread (a context is not `Sync`).
    static FUNCTIONS: Context<'static> = Context::default().with_all();
}

/// Expressions compiled once per text.
#[derive(Default)]
pub struct Programs {
    compiled: Mutex<HashMap<String, Arc<Program>>>,
}

impl Programs {
    /// The compiled `expression`, or why it does not compile.
    pub fn compile(&self, expression: &str) -> Result<Arc<Program>, String> {
        if let Some(program) = self.lock().get(expression) {
            return Ok(program.clone());
        }
        let program = Arc::new(Program::compile(expression).map_err(|e| format!("compilation failed: {e}"))?);
        let mut compiled = self.lock();
        if compiled.len() >= CACHED {
            compiled.clear();
        }
        compiled.insert(expression.to_string(), program.clone());
        Ok(program)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Program>>> {
        self.compiled.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The variables of one request.
pub struct Variables(Vec<(&'static str, cel::Value)>);

impl Variables {
    /// `object` and `oldObject` (null when absent) and `request` (its objects left out).
    pub fn new(object: Option<&Value>, old: Option<&Value>, request: &Value) -> Variables {
        let mut request = request.clone();
        if let Value::Object(map) = &mut request {
            map.remove("object");
            map.remove("oldObject");
        }
        Variables(vec![
            ("object", object.map_or(cel::Value::Null, to_cel)),
            ("oldObject", old.map_or(cel::Value::Null, to_cel)),
            ("request", to_cel(&request)),
        ])
    }
}

impl Variables {
    /// Bind `name` to `value` (null when absent): `params`, `namespaceObject`.
    pub fn bind(&mut self, name: &'static str, value: Option<&Value>) {
        self.0.push((name, value.map_or(cel::Value::Null, to_cel)));
    }

    /// These variables with `variables` bound to the policy variables computed so far.
    pub fn with_variables(&self, computed: &[(String, cel::Value)]) -> Variables {
        let map: HashMap<Key, cel::Value> = computed
            .iter()
            .map(|(k, v)| (Key::String(Arc::new(k.clone())), v.clone()))
            .collect();
        let mut all = self.0.clone();
        all.push(("variables", cel::Value::Map(Map { map: Arc::new(map) })));
        Variables(all)
    }
}

/// Run `program` over `variables`: its value, or why there is none.
pub fn value(program: &Program, variables: &Variables) -> Result<cel::Value, String> {
    FUNCTIONS.with(|functions| {
        let mut context = functions.new_inner_scope();
        for (name, value) in &variables.0 {
            context.add_variable_from_value(*name, value.clone());
        }
        program.execute(&context).map_err(|e| e.to_string())
    })
}

/// Run `program` over `variables`: its boolean, or why there is none.
pub fn evaluate(program: &Program, variables: &Variables) -> Result<bool, String> {
    match value(program, variables)? {
        cel::Value::Bool(b) => Ok(b),
        other => Err(format!("expected a boolean, got {:?}", other.type_of())),
    }
}

/// A string result (`messageExpression`, `valueExpression`); None for anything else.
pub fn string(value: &cel::Value) -> Option<String> {
    match value {
        cel::Value::String(s) => Some(s.to_string()),
        _ => None,
    }
}

/// A JSON value as CEL sees it: integers as `int` (`uint` past i64), property names as they
/// are (maps such as labels are read with `['app.kubernetes.io/name']`).
fn to_cel(value: &Value) -> cel::Value {
    match value {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => cel::Value::Int(i),
            (None, Some(u)) => cel::Value::UInt(u),
            _ => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(items) => cel::Value::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(fields) => {
            let map: HashMap<Key, cel::Value> = fields
                .iter()
                .map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v)))
                .collect();
            cel::Value::Map(Map { map: Arc::new(map) })
        }
    }
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
        let variables = Variables::new(Some(&object), None, &request);
        let run = |e: &str| evaluate(&programs.compile(e).unwrap(), &variables);
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
