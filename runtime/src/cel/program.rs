//! Expressions parsed once, with a step charged to the budget at every comprehension
//! iteration (each `all`, `exists`, `exists_one`, `map` and `filter` is a comprehension once
//! parsed), and cached by their text.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube_cel::cel::common::ast::{CallExpr, EntryExpr, Expr, IdedExpr};
use kube_cel::cel::parser::Parser;

use super::budget::STEP;

/// Compiled expressions a cache keeps at most; then it starts over.
const CACHED: usize = 4096;

/// A parsed and instrumented expression.
#[derive(Debug)]
pub struct Program {
    source: String,
    expr: IdedExpr,
}

impl Program {
    /// Parse `source`, or say why it does not compile.
    pub fn compile(source: &str) -> Result<Program, String> {
        let expr = Parser::default().parse(source).map_err(|e| e.to_string())?;
        Program::from_parsed(source, &expr)
    }

    /// The expression kube-cel (or anyone) already parsed from `source`, instrumented.
    pub fn from_parsed(source: &str, expr: &IdedExpr) -> Result<Program, String> {
        let mut expr = expr.clone();
        instrument(&mut expr)?;
        Ok(Program {
            source: source.to_string(),
            expr,
        })
    }

    /// Whether the expression reads variable `name` (`oldSelf`: a transition rule).
    pub fn reads(&self, name: &str) -> bool {
        self.expr.references().has_variable(name)
    }

    /// The text it was compiled from.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub(super) fn expr(&self) -> &IdedExpr {
        &self.expr
    }
}

/// Wrap every comprehension's loop condition in a call to the step counter, which charges the
/// step and then evaluates the condition. Refuse what the interpreter would panic on (message
/// literals, unset nodes) here, once, instead of at every evaluation.
fn instrument(e: &mut IdedExpr) -> Result<(), String> {
    match &mut e.expr {
        Expr::Call(call) => {
            if let Some(target) = &mut call.target {
                instrument(target)?;
            }
            call.args.iter_mut().try_for_each(instrument)
        }
        Expr::Comprehension(c) => {
            for part in [
                &mut c.iter_range,
                &mut c.accu_init,
                &mut c.loop_cond,
                &mut c.loop_step,
                &mut c.result,
            ] {
                instrument(part)?;
            }
            let condition = std::mem::take(&mut c.loop_cond);
            c.loop_cond = IdedExpr {
                id: condition.id,
                expr: Expr::Call(CallExpr {
                    func_name: STEP.to_string(),
                    target: None,
                    args: vec![condition],
                }),
            };
            Ok(())
        }
        Expr::List(list) => list.elements.iter_mut().try_for_each(instrument),
        Expr::Map(map) => map.entries.iter_mut().try_for_each(|entry| match &mut entry.expr {
            EntryExpr::MapEntry(entry) => {
                instrument(&mut entry.key)?;
                instrument(&mut entry.value)
            }
            EntryExpr::StructField(_) => Err("message literals are not supported".to_string()),
        }),
        Expr::Select(select) => instrument(&mut select.operand),
        Expr::Struct(s) => Err(format!("message literals ({}{{...}}) are not supported", s.type_name)),
        Expr::Unspecified => Err("incomplete expression".to_string()),
        Expr::Ident(_) | Expr::Literal(_) => Ok(()),
    }
}

/// Expressions compiled once per text and shared.
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
