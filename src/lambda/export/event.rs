//! The events the export function accepts (the state machine's steps and direct invokes),
//! and the deadline it works to.

use super::*;

/// What an invocation asks for. Unknown fields are an error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Invocation {
    /// Take a new baseline.
    #[serde(default)]
    pub full: bool,
    /// Plan only; write nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Free-form label set by the schedule's input (e.g. "schedule").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// Set by earlier versions when the function re-invoked itself to continue a bundle; now
    /// a direct run like any other (it resumes the bundle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuation: Option<Continuation>,
}

/// One step of an export run driven by the state machine (`statemachine/export.asl.json`).
/// `execution` is the execution's name: the run's name (and lease owner) in every step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case", deny_unknown_fields)]
pub enum StepEvent {
    /// Plan the bundle (or resume it) and write the shard list; `input` is the execution's
    /// input (the schedule's, or a manual start's: `{"full": true}`, `{"dry_run": true}`).
    Plan {
        execution: String,
        #[serde(default)]
        input: Value,
    },
    /// Ship one shard until it is done or the deadline comes.
    Shard {
        execution: String,
        sequence: u64,
        shard: usize,
    },
    /// Seal and commit the bundle, then notify.
    Commit { execution: String, sequence: u64 },
    /// The run failed (`error`: the state machine's `{"Error", "Cause"}`): release the lease
    /// and notify. The checkpoint stays; the next run resumes the bundle.
    Failed {
        execution: String,
        #[serde(default)]
        error: Value,
    },
}

/// What the function was invoked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Step(StepEvent),
    /// A direct invoke: the whole export in this invocation, up to its deadline.
    Direct(Invocation),
}

/// The kinds of event the function serves (`FERRY_STEPS`).
pub const STEP_NAMES: [&str; 5] = ["plan", "shard", "commit", "failed", "direct"];

impl Event {
    /// Its name in `FERRY_STEPS`.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Step(StepEvent::Plan { .. }) => "plan",
            Event::Step(StepEvent::Shard { .. }) => "shard",
            Event::Step(StepEvent::Commit { .. }) => "commit",
            Event::Step(StepEvent::Failed { .. }) => "failed",
            Event::Direct(_) => "direct",
        }
    }
}

/// The lease owner of the run an execution drives.
pub fn run_owner(execution: &str) -> String {
    format!("sfn-{execution}")
}

/// A bundle being continued by a later invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Continuation {
    pub sequence: u64,
    pub hop: u32,
}

/// A state machine step (an object with `step`), or a direct invoke (see [`parse_invocation`]).
pub fn parse_any(event: Value) -> Result<Event> {
    if let Value::Object(m) = &event
        && m.contains_key("step")
    {
        return serde_json::from_value(event).map(Event::Step).map_err(|e| {
            Error::config(
                "event",
                format!("{e} (steps: plan {{execution, input}}, shard {{execution, sequence, shard}}, commit {{execution, sequence}}, failed {{execution, error}})"),
            )
        });
    }
    parse_event(event).map(Event::Direct)
}

/// Accept the EventBridge Scheduler input (SAM `ScheduleV2`: our JSON as is), the classic
/// EventBridge envelope (SAM `Schedule`: our JSON, if any, in `detail`) and manual invokes.
pub fn parse_event(event: Value) -> Result<Invocation> {
    let bad = |e: serde_json::Error| {
        Error::config(
            "event",
            format!("{e} (accepted fields: full, dry_run, trigger, continuation)"),
        )
    };
    let payload = match event {
        Value::Object(ref m) if m.contains_key("detail-type") && m.contains_key("source") => {
            match m.get("detail") {
                Some(Value::Object(d)) if !d.is_empty() => Value::Object(d.clone()),
                _ => Value::Object(Default::default()),
            }
        }
        Value::Null => Value::Object(Default::default()),
        other => other,
    };
    serde_json::from_value(payload).map_err(bad)
}

/// The working deadline: the invocation's deadline less the margin, or the run budget, whichever
/// comes first. A deadline already in the past (local emulators send a fake one) is ignored.
pub fn working_deadline(
    invocation_deadline: Option<SystemTime>,
    margin: Duration,
    budget: Option<Duration>,
) -> Option<Instant> {
    let now = Instant::now();
    let from_lambda = invocation_deadline.and_then(|d| match d.duration_since(SystemTime::now()) {
        Ok(left) if left > margin => Some(now + (left - margin)),
        Ok(left) => {
            warn!(
                left_ms = left.as_millis() as u64,
                "less time left than the margin: one unit of work only"
            );
            Some(now)
        }
        Err(_) => {
            warn!("the invocation deadline is in the past (local emulator?): ignoring it");
            None
        }
    });
    let from_budget = budget.map(|b| now + b);
    match (from_lambda, from_budget) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Lambda error classes: the function's errors carry one of these as `errorType`.
pub(crate) fn diagnostic(e: &Error) -> Diagnostic {
    Diagnostic {
        error_type: if e.is_retryable() {
            "Retryable"
        } else {
            "Fatal"
        }
        .to_string(),
        error_message: crate::lambda::describe(e),
    }
}
