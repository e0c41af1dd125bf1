//! The cost limits of CEL evaluation, as kube-apiserver's `PerCallLimit` and
//! `RuntimeCELCostBudget`: one evaluation may take so many comprehension steps and so much
//! CPU time (the thread's, so a loaded machine does not cut off a cheap rule), one request (one write's schema rules, one policy binding, one webhook's match
//! conditions) so many together. The `cel` crate cannot be interrupted from outside, so the
//! steps are counted from inside: every comprehension's loop condition calls [`STEP`], which
//! charges the evaluation's meter and fails once a limit is passed. A failed step cannot be
//! absorbed by CEL's error-tolerant `||`/`&&`: the meter remembers it and every later step
//! fails too, so the evaluation unwinds at once and is reported as cut off.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kube_cel::cel::{Context, FunctionContext, ResolveResult};

use super::Failure;

/// Comprehension steps one evaluation may take.
pub const CALL_STEPS: u64 = 1_000_000;
/// CPU time one evaluation may take.
pub const CALL_TIME: Duration = Duration::from_millis(100);
/// Comprehension steps all evaluations of one request may take together.
pub const REQUEST_STEPS: u64 = 10_000_000;
/// CPU time all evaluations of one request may take together.
pub const REQUEST_TIME: Duration = Duration::from_secs(1);

/// The step counter's function name; `@` keeps it out of reach of expressions' own text.
pub(super) const STEP: &str = "@apiary_step";

/// Steps between two readings of the clock.
const CLOCK_EVERY: u64 = 16;

/// Which limit stopped an evaluation.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Limit {
    Call,
    Request,
}

/// One running evaluation's count.
#[derive(Clone, Copy)]
struct Meter {
    used: u64,
    steps: u64,
    steps_limit: Limit,
    /// The thread's CPU time at the first step (the clock is read only by evaluations that
    /// loop: one without a comprehension is bounded by its text and its data).
    started: Option<Duration>,
    /// CPU time the evaluation may take from its first step.
    time: Duration,
    deadline_limit: Limit,
    tripped: Option<Limit>,
}

thread_local! {
    static METER: Cell<Option<Meter>> = const { Cell::new(None) };
}

/// What one request may still spend on CEL.
pub struct Budget {
    steps: AtomicU64,
    nanos: AtomicU64,
    /// [`CALL_TIME`], except in tests about steps alone.
    call_time: Duration,
}

impl Default for Budget {
    fn default() -> Self {
        Budget::new(REQUEST_STEPS, REQUEST_TIME)
    }
}

impl Budget {
    /// A budget of `steps` comprehension steps and `time` of evaluation (the thread's CPU time).
    pub fn new(steps: u64, time: Duration) -> Budget {
        Budget {
            steps: AtomicU64::new(steps),
            nanos: AtomicU64::new(u64::try_from(time.as_nanos()).unwrap_or(u64::MAX)),
            call_time: CALL_TIME,
        }
    }

    /// This budget without the per-call time limit, for tests about steps alone: on a loaded
    /// machine a thread's CPU clock can run on while its CPU is taken by the host.
    #[cfg(test)]
    pub(super) fn counting_steps_only(mut self) -> Budget {
        self.call_time = Duration::MAX;
        self
    }

    /// Run one evaluation under the per-call limits and what is left of this budget.
    pub(super) fn meter<T>(&self, evaluate: impl FnOnce() -> Result<T, String>) -> Result<T, Failure> {
        let (steps_left, nanos_left) = (self.steps.load(Ordering::Relaxed), self.nanos.load(Ordering::Relaxed));
        if steps_left == 0 || nanos_left == 0 {
            return Err(Failure::OutOfBudget);
        }
        let time_left = Duration::from_nanos(nanos_left);
        let meter = Meter {
            used: 0,
            steps: steps_left.min(CALL_STEPS),
            steps_limit: if steps_left < CALL_STEPS {
                Limit::Request
            } else {
                Limit::Call
            },
            started: None,
            time: time_left.min(self.call_time),
            deadline_limit: if time_left < self.call_time {
                Limit::Request
            } else {
                Limit::Call
            },
            tripped: None,
        };
        let outer = METER.replace(Some(meter));
        let result = evaluate();
        let meter = METER.replace(outer).unwrap_or(meter);
        spend(&self.steps, meter.used);
        if let Some(started) = meter.started {
            let elapsed = cpu_now().saturating_sub(started);
            spend(
                &self.nanos,
                u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX).max(1),
            );
        }
        match meter.tripped {
            Some(Limit::Request) => {
                self.steps.store(0, Ordering::Relaxed);
                Err(Failure::OutOfBudget)
            }
            Some(Limit::Call) => Err(Failure::CallLimit),
            None => result.map_err(Failure::Error),
        }
    }
}

/// The CPU time this thread has used.
fn cpu_now() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

fn spend(left: &AtomicU64, amount: u64) {
    // Concurrent evaluations of one request (webhooks run in parallel) each take their share.
    let _ = left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(amount)));
}

/// Add the step counter to `context`.
pub(super) fn register(context: &mut Context<'static>) {
    context.add_function(STEP, step);
}

/// One comprehension step: charge it, then evaluate the loop condition it wraps.
fn step(ftx: &FunctionContext) -> ResolveResult {
    let tripped = METER.with(|cell| {
        let mut meter = cell.get()?;
        meter.used += 1;
        let started = *meter.started.get_or_insert_with(cpu_now);
        if meter.tripped.is_none() {
            if meter.used > meter.steps {
                meter.tripped = Some(meter.steps_limit);
            } else if meter.used % CLOCK_EVERY == 0 && cpu_now().saturating_sub(started) > meter.time {
                meter.tripped = Some(meter.deadline_limit);
            }
        }
        cell.set(Some(meter));
        meter.tripped
    });
    if tripped.is_some() {
        return Err(ftx.error("operation cancelled: actual cost limit exceeded"));
    }
    let condition = ftx.args.first().ok_or_else(|| ftx.error("no condition"))?;
    ftx.ptx.resolve(condition)
}
