//! CEL as the server evaluates it, shared by the schema's rules (`schema::cel`) and admission
//! (`admission::cel`): expressions parsed once and instrumented so that every comprehension
//! step is charged to a [`Budget`] (the `cel` crate has no cost limits of its own), Kubernetes'
//! CEL libraries from kube-cel, and JSON values as CEL sees them.
//!
//! | file | what |
//! |---|---|
//! | `program.rs` | parse, instrument, cache by text |
//! | `budget.rs` | the per-call and per-request limits, charged from inside the evaluation |
//! | `values.rs` | JSON to CEL, guided by a schema where there is one |
//! | `authz.rs` | the `authorizer` of admission CEL, its checks answered between evaluations |

pub mod authz;
mod budget;
mod program;
mod values;

use kube_cel::KubeCelExt as _;
use kube_cel::cel::Context;

pub use budget::{Budget, CALL_STEPS, CALL_TIME, REQUEST_STEPS, REQUEST_TIME};
pub use kube_cel::cel::Value;
pub use program::{Program, Programs};
pub use values::{Format, Shape, escape, to_cel, to_cel_shaped};

thread_local! {
    // Kubernetes' CEL functions and the budget's step counter, registered once per thread (a
    // context is not `Sync`), never per request.
    static FUNCTIONS: Context<'static> = {
        let mut context = Context::default().with_all();
        budget::register(&mut context);
        authz::register(&mut context);
        context
    };
}

/// Why an expression has no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The evaluation failed (no such key, no such overload, ...): CEL's message.
    Error(String),
    /// This one evaluation passed the per-call limit and was cut off.
    CallLimit,
    /// The request's budget ran out, in this evaluation or before it.
    OutOfBudget,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Error(message) => f.write_str(message),
            // kube-apiserver's (cel-go's) words, which clients and tests match on.
            Failure::CallLimit => f.write_str("operation cancelled: actual cost limit exceeded"),
            Failure::OutOfBudget => f.write_str(
                "validation failed due to running out of cost budget, no further validation rules will be run",
            ),
        }
    }
}

/// Run `program` with `bindings` as its variables, charged to `budget`.
pub fn run(program: &Program, bindings: &[(&str, &Value)], budget: &Budget) -> Result<Value, Failure> {
    // The thread's functions are registered before the meter starts: their one-time setup is
    // not the expression's cost.
    FUNCTIONS.with(|functions| {
        budget.meter(|| {
            let mut context = functions.new_inner_scope();
            for (name, value) in bindings {
                context.add_variable_from_value(*name, (*value).clone());
            }
            context.resolve(program.expr()).map_err(|e| e.to_string())
        })
    })
}

/// Run `program`: its boolean, or why there is none.
pub fn run_bool(program: &Program, bindings: &[(&str, &Value)], budget: &Budget) -> Result<bool, Failure> {
    boolean(run(program, bindings, budget)?)
}

/// An expression's result as the boolean a rule or condition must give.
pub fn boolean(value: Value) -> Result<bool, Failure> {
    match value {
        Value::Bool(b) => Ok(b),
        other => Err(Failure::Error(format!("expected a boolean, got {:?}", other.type_of()))),
    }
}

/// A string result (`messageExpression`, `valueExpression`); None for anything else.
pub fn string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn numbers(n: i64) -> Value {
        Value::List(Arc::new((0..n).map(Value::Int).collect()))
    }

    fn run_on(expression: &str, xs: &Value, budget: &Budget) -> Result<bool, Failure> {
        run_bool(&Program::compile(expression).unwrap(), &[("xs", xs)], budget)
    }

    #[test]
    fn an_evaluation_past_the_per_call_limit_is_cut_off() {
        let xs = numbers(2000);
        let budget = Budget::default();
        assert_eq!(run_on("xs.all(a, a >= 0)", &xs, &budget), Ok(true));
        // 4,000,000 steps: cut off at the step limit or the call's time, whichever comes first.
        let quadratic = "xs.all(a, xs.all(b, a + b >= 0))";
        assert_eq!(run_on(quadratic, &xs, &budget), Err(Failure::CallLimit));
        // CEL's `||` would absorb the error into `true`; the meter still reports the cut.
        assert_eq!(
            run_on(&format!("{quadratic} || true"), &xs, &budget),
            Err(Failure::CallLimit)
        );
        // The request's budget is charged, not spent: other evaluations still run.
        assert_eq!(run_on("xs.exists(a, a == 1999)", &xs, &budget), Ok(true));
        assert_eq!(
            Failure::CallLimit.to_string(),
            "operation cancelled: actual cost limit exceeded"
        );
    }

    #[test]
    fn a_request_runs_out_of_budget_across_evaluations() {
        let xs = numbers(1000);
        let budget = Budget::new(2500, Duration::from_secs(60)).counting_steps_only();
        assert_eq!(run_on("xs.all(a, a >= 0)", &xs, &budget), Ok(true));
        assert_eq!(run_on("xs.map(a, a * 2).size() == 1000", &xs, &budget), Ok(true));
        // About 500 steps left: the third pass over the list runs out.
        assert_eq!(run_on("xs.all(a, a >= 0)", &xs, &budget), Err(Failure::OutOfBudget));
        // And nothing runs after that, not even a rule without a comprehension.
        assert_eq!(run_on("true", &xs, &budget), Err(Failure::OutOfBudget));
        let time = Budget::new(u64::MAX, Duration::from_millis(30));
        let slow = "xs.all(a, xs.all(b, xs.all(c, true)))";
        assert_eq!(
            run_on(slow, &xs, &time),
            Err(Failure::OutOfBudget),
            "the request's time"
        );
    }

    #[test]
    fn every_macro_is_charged_and_message_literals_are_refused() {
        let xs = numbers(10);
        for expression in [
            "xs.all(a, a < 10)",
            "xs.exists(a, a == 9)",
            "xs.exists_one(a, a == 9)",
            "xs.map(a, a).size() == 10",
            "xs.filter(a, a > 4).size() == 5",
        ] {
            let budget = Budget::new(10, Duration::from_secs(60));
            assert_eq!(run_on(expression, &xs, &budget), Ok(true), "{expression}");
            assert_eq!(
                run_on(expression, &xs, &budget),
                Err(Failure::OutOfBudget),
                "{expression} took its 10 steps"
            );
        }
        assert!(Program::compile("google.protobuf.Duration{seconds: 1}").is_err());
    }
}
