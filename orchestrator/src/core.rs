//! The pure core: `(run, input, now) → (run', events, commands)`.
//!
//! No I/O, no clock reads, no randomness: the runner passes `now` in and does
//! whatever the returned [`Command`]s say. [`apply`] is the fold of one event
//! into a snapshot (used both live and to replay a history); [`transition`]
//! turns an [`Input`] into events, then keeps deciding what follows
//! (interrupted steps, conditions, gates, new steps to start, pauses, the end
//! of the main steps, cleanup steps, the end of the run) until nothing more
//! follows, so that "step I finished" and "step I+1 started" land in one
//! append (one write-ahead log record: all or nothing).
//!
//! A run has two phases. Main steps run until they are all settled, a fatal
//! step fails, or the run is cancelled; then `RunEnding` records how they
//! ended, running main steps are told to stop, and once none runs the cleanup
//! steps run (in dependency order, their failures tolerated); then the run
//! ends as its main steps did (failed, if a cleanup step failed).
//!
//! **Invariant:** a settled step (succeeded, skipped, failed-tolerated) never
//! starts again; a terminal run never changes and has no step running;
//! sequence numbers are contiguous from 0; no step starts once the run is
//! ending, unless it is a cleanup step.

use dr_state::{
    AfterFailure, Approval, Ending, Event, EventRecord, Millis, OperatorWait, RunHeader, RunRecord, RunStatus, SkipCause,
    StepId, StepOutput, StepRecord, StepState,
};

use crate::condition::render_prompt;
use crate::definition::{Plan, ResumeClass};
use crate::retry::splitmix;

/// What can happen to a run, as the runner reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Schedule whatever is ready (after creation, or when a timer fires).
    Tick,
    /// A new process takes the run up. Steps that were running belong to a
    /// dead process and are taken up according to their resume class. An
    /// operator command given with it is applied in the same append.
    Resume { by: String, operator: Option<OperatorInput> },
    /// An attempt finished. `Err((message, retryable))` when it failed.
    ActionDone { step: usize, attempt: u32, result: Result<StepOutput, (String, bool)> },
    /// A probe finished: `Ok(Some(output))` when the lost attempt took effect.
    ProbeDone { step: usize, attempt: u32, result: Result<Option<StepOutput>, String> },
    /// An operator's decision for a run this process is driving.
    Operator(OperatorInput),
    /// The driving process stops on a signal; the run stays resumable.
    /// `never_started` are attempts recorded as started whose action the
    /// process did not start (the stop came first): they are interrupted.
    Stopped { signal: String, never_started: Vec<(usize, u32)> },
    /// Continue under a changed definition or configuration (`--allow-definition-change`).
    ReplaceDefinition { definition_hash: String, definition_steps: Vec<(StepId, String)>, config_digest: Option<String> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OperatorInput {
    Approve { step: usize, by: String },
    Skip { step: usize, reason: String, by: String },
    /// Retry one step, or every failed and backing-off step.
    Retry { step: Option<usize>, by: String },
    Cancel { reason: String, by: String },
}

/// What the runner must do after persisting a transition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Execute { step: usize, attempt: u32, deadline: Option<Millis> },
    Probe { step: usize, attempt: u32 },
    /// Call back with [`Input::Tick`] at this time.
    WakeAt { at: Millis },
    /// Tell the running attempt of this step to stop.
    Cancel { step: usize },
}

/// The result of a transition: the new snapshot, the events that lead to it
/// (to be written in one append, all or nothing) and the commands to carry out after.
#[derive(Clone, Debug)]
pub struct Transition {
    pub run: RunRecord,
    pub events: Vec<EventRecord>,
    pub commands: Vec<Command>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    /// The input is not applicable (an operator command at the wrong time).
    #[error("{0}")]
    Rejected(String),
    /// An event broke an invariant: a bug, or a damaged history.
    #[error("invariant broken: {0}")]
    Invariant(String),
}

/// Starts a run's history; `preapproved_by` (`dr start --yes`) approves
/// every gate of the run in advance, recorded as its own event.
pub fn create(header: RunHeader, now: Millis, preapproved_by: Option<String>, hold: Option<String>) -> Result<Transition, CoreError> {
    let placeholder = RunRecord::new(&header, now);
    let first = header.steps.first().cloned();
    let mut b = Builder { run: placeholder, events: Vec::new(), commands: Vec::new(), now };
    b.push(Event::RunCreated { header: Box::new(header) })?;
    if let Some(by) = preapproved_by {
        b.push(Event::GatesPreApproved { by })?;
    } else if let (Some(prompt), Some(step)) = (hold, first) {
        // The first step is always ready first (dependencies are earlier): gating it holds the run.
        b.push(Event::StepGated { step: step.clone(), prompt: prompt.clone() })?;
        b.push(Event::RunPaused { reason: format!("step {step} waits for confirmation: {prompt}") })?;
    }
    Ok(Transition { run: b.run, events: b.events, commands: b.commands })
}

/// Rebuilds a snapshot from a whole history.
pub fn replay(events: &[EventRecord]) -> Result<RunRecord, String> {
    let first = events.first().ok_or("the history is empty")?;
    let Event::RunCreated { header } = &first.event else {
        return Err(format!("the history starts with {} instead of run-created", first.event.kind()));
    };
    let mut run = RunRecord::new(header, first.at);
    for record in events {
        apply(&mut run, record)?;
    }
    Ok(run)
}

fn step_index(run: &RunRecord, id: &StepId) -> Result<usize, String> {
    run.steps.iter().position(|s| &s.id == id).ok_or_else(|| format!("event names unknown step {id}"))
}

fn unpause(run: &mut RunRecord) {
    if run.status == RunStatus::Paused {
        run.status = RunStatus::Running;
        run.reason = None;
    }
}

/// The attempt of a running (or probing) step, when it is `attempt`.
fn is_attempt(s: &StepRecord, attempt: u32, probing: bool) -> bool {
    match s.state {
        StepState::Running { attempt: a, .. } => !probing && a == attempt,
        StepState::Probing { attempt: a, .. } => probing && a == attempt,
        _ => false,
    }
}

/// Folds one event into a snapshot.
pub fn apply(run: &mut RunRecord, record: &EventRecord) -> Result<(), String> {
    if record.seq != run.next_seq {
        return Err(format!("event {} follows event {}: the history has a gap", record.seq, run.next_seq.wrapping_sub(1)));
    }
    if let Event::ReportFieldSet { .. } = record.event {
        // The operator's part of the report: on any run, ended or not, and nothing else changes
        // (not even `updated_at`, which freezes a stopped run's clocks).
        run.next_seq += 1;
        return Ok(());
    }
    if run.status.is_terminal() {
        return Err(format!("event {} ({}) after the run ended {}", record.seq, record.event.kind(), run.status.as_str()));
    }
    let at = record.at;
    let kind = record.event.kind();
    let expect = |ok: bool, what: &str| if ok { Ok(()) } else { Err(format!("{kind} at event {}: {what}", record.seq)) };
    match &record.event {
        Event::RunCreated { header } => {
            expect(record.seq == 0, "run-created must be the first event")?;
            *run = RunRecord::new(header, at);
        }
        Event::GatesPreApproved { by } => run.gates_preapproved = Some(by.clone()),
        Event::RunResumed { epoch, .. } => {
            expect(*epoch > run.epoch, "epochs only grow")?;
            run.epoch = *epoch;
        }
        Event::DefinitionReplaced { definition_hash, definition_steps, config_digest } => {
            run.definition_hash = definition_hash.clone();
            run.definition_steps = definition_steps.clone();
            run.config_digest = config_digest.clone();
        }
        Event::StepStarted { step, attempt, epoch, deadline } => {
            let i = step_index(run, step)?;
            let s = &mut run.steps[i];
            expect(!s.state.is_settled(), "a settled step never runs again")?;
            expect(matches!(s.state, StepState::Pending | StepState::BackingOff { .. }), "only a pending or backing-off step starts")?;
            expect(*attempt == s.attempts + 1, "attempts are numbered one after another")?;
            s.state = StepState::Running { attempt: *attempt, epoch: *epoch, started_at: at, deadline: *deadline };
            s.attempts = *attempt;
            s.first_started_at.get_or_insert(at);
        }
        Event::StepSucceeded { step, attempt, output, .. } => {
            let i = step_index(run, step)?;
            let s = &mut run.steps[i];
            expect(is_attempt(s, *attempt, false), "only the running attempt finishes")?;
            s.state = StepState::Succeeded { at, output: output.clone() };
        }
        Event::StepFailed { step, attempt, error, then } => {
            let i = step_index(run, step)?;
            let s = &mut run.steps[i];
            expect(is_attempt(s, *attempt, false), "only the running attempt fails")?;
            s.failures += 1;
            s.state = match then {
                AfterFailure::RetryAt(until) => StepState::BackingOff { until: *until, error: error.clone() },
                AfterFailure::Pause => StepState::Failed { at, error: error.clone(), tolerated: false },
                AfterFailure::Tolerate => StepState::Failed { at, error: error.clone(), tolerated: true },
            };
        }
        Event::StepInterrupted { step, attempt } => {
            let i = step_index(run, step)?;
            let s = &mut run.steps[i];
            expect(is_attempt(s, *attempt, false), "only a running step is interrupted")?;
            s.state = StepState::Pending;
        }
        Event::StepProbing { step, attempt, epoch } => {
            let i = step_index(run, step)?;
            let s = &mut run.steps[i];
            expect(is_attempt(s, *attempt, false) || is_attempt(s, *attempt, true), "only a running or probing step is probed")?;
            s.state = StepState::Probing { attempt: *attempt, epoch: *epoch, started_at: at };
        }
        Event::StepProbed { step, attempt, output } => {
            let i = step_index(run, step)?;
            let s = &mut run.steps[i];
            expect(is_attempt(s, *attempt, true), "only a probing step gets a probe result")?;
            s.state = match output {
                Some(output) => StepState::Succeeded { at, output: output.clone() },
                None => StepState::Pending,
            };
        }
        Event::StepAwaitingOperator { step, reason } => {
            let i = step_index(run, step)?;
            let s = &mut run.steps[i];
            expect(!s.state.is_settled(), "a settled step needs no decision")?;
            s.state = StepState::AwaitingOperator(OperatorWait::Interrupted { reason: reason.clone() });
        }
        Event::StepGated { step, prompt } => {
            let i = step_index(run, step)?;
            let s = &mut run.steps[i];
            expect(s.state == StepState::Pending && s.approval.is_none(), "only a pending step not yet approved waits at its gate")?;
            s.state = StepState::AwaitingOperator(OperatorWait::Gate { prompt: prompt.clone() });
        }
        Event::StepSkipped { step, reason } => {
            let i = step_index(run, step)?;
            let s = &mut run.steps[i];
            expect(s.state == StepState::Pending, "only a pending step is skipped by its condition")?;
            s.state = StepState::Skipped { at, reason: reason.clone(), cause: SkipCause::Condition };
        }
        Event::StepCancelled { step, attempt } => {
            let i = step_index(run, step)?;
            let s = &mut run.steps[i];
            expect(is_attempt(s, *attempt, false) || is_attempt(s, *attempt, true), "only a running step is cancelled")?;
            s.state = StepState::Cancelled { at };
        }
        Event::OperatorApproved { step, by } => {
            let i = step_index(run, step)?;
            let s = &mut run.steps[i];
            expect(s.state.needs_operator(), "only a step awaiting a decision is approved")?;
            if matches!(s.state, StepState::AwaitingOperator(OperatorWait::Gate { .. })) {
                s.approval = Some(Approval { by: by.clone(), at });
            }
            s.state = StepState::Pending;
            s.failures = 0;
            unpause(run);
        }
        Event::OperatorSkipped { step, reason, .. } => {
            let i = step_index(run, step)?;
            let s = &mut run.steps[i];
            expect(!s.state.is_settled() && !s.state.is_active(), "only a step that is not running or settled is skipped")?;
            s.state = StepState::Skipped { at, reason: reason.clone(), cause: SkipCause::Operator };
            unpause(run);
        }
        Event::RetryRequested { step, .. } => {
            let i = step_index(run, step)?;
            let s = &mut run.steps[i];
            expect(
                matches!(s.state, StepState::Failed { tolerated: false, .. } | StepState::BackingOff { .. }),
                "only a failed or backing-off step is retried",
            )?;
            s.state = StepState::Pending;
            s.failures = 0;
            unpause(run);
        }
        Event::CancelRequested { reason, .. } => {
            if run.ending.is_none() {
                run.ending = Some(Ending::Cancelled { reason: reason.clone() });
            }
            unpause(run);
        }
        Event::ProcessStopped { .. } => {}
        Event::RunEnding { ending } => {
            expect(run.ending.is_none(), "a run ends once")?;
            run.ending = Some(ending.clone());
            unpause(run);
        }
        Event::RunPaused { reason } => {
            expect(run.status == RunStatus::Running, "only a running run pauses")?;
            run.status = RunStatus::Paused;
            run.reason = Some(reason.clone());
        }
        Event::RunSucceeded => {
            expect(run.steps.iter().all(|s| s.state.is_settled()), "a run succeeds only when every step is settled")?;
            end_run(run, RunStatus::Succeeded, None, at).map_err(|what| format!("{kind} at event {}: {what}", record.seq))?;
        }
        Event::RunFailed { reason } => {
            end_run(run, RunStatus::Failed, Some(reason.clone()), at).map_err(|what| format!("{kind} at event {}: {what}", record.seq))?;
        }
        Event::RunCancelled { reason } => {
            end_run(run, RunStatus::Cancelled, Some(reason.clone()), at).map_err(|what| format!("{kind} at event {}: {what}", record.seq))?;
        }
        Event::ReportFieldSet { .. } => {}
    }
    run.next_seq += 1;
    run.updated_at = at;
    Ok(())
}

/// A terminal status, once no step runs.
fn end_run(run: &mut RunRecord, status: RunStatus, reason: Option<String>, at: Millis) -> Result<(), &'static str> {
    if run.steps.iter().any(|s| s.state.is_active()) {
        return Err("a run ends only when no step runs");
    }
    run.status = status;
    run.reason = reason;
    run.finished_at = Some(at);
    Ok(())
}

/// The last `max` bytes of `text`, cut at a character boundary.
pub fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

struct Builder {
    run: RunRecord,
    events: Vec<EventRecord>,
    commands: Vec<Command>,
    now: Millis,
}

impl Builder {
    fn push(&mut self, event: Event) -> Result<(), CoreError> {
        let record = EventRecord { seq: self.run.next_seq, at: self.now, event };
        apply(&mut self.run, &record).map_err(CoreError::Invariant)?;
        self.events.push(record);
        Ok(())
    }

    /// Runs [`decide`] until it has nothing more to say.
    fn settle(&mut self, plan: &Plan, allow_start: bool) -> Result<(), CoreError> {
        for _ in 0..100_000 {
            let (events, commands) = decide(&self.run, plan, self.now, allow_start);
            self.commands.extend(commands);
            if events.is_empty() {
                return Ok(());
            }
            for e in events {
                self.push(e)?;
            }
        }
        Err(CoreError::Invariant("the run did not settle".into()))
    }
}

fn check_step(run: &RunRecord, plan: &Plan, step: usize) -> Result<(), CoreError> {
    if step >= run.steps.len() || step >= plan.steps.len() {
        return Err(CoreError::Rejected(format!("step index {step} is out of range")));
    }
    Ok(())
}

fn operator_events(run: &RunRecord, plan: &Plan, op: &OperatorInput) -> Result<Vec<Event>, CoreError> {
    let reject = |msg: String| Err(CoreError::Rejected(msg));
    if run.status.is_terminal() {
        return reject(format!("the run already ended ({})", run.status.as_str()));
    }
    match op {
        OperatorInput::Approve { step, by } => {
            check_step(run, plan, *step)?;
            let s = &run.steps[*step];
            if !s.state.needs_operator() {
                return reject(format!("step {} {}, not awaiting approval", s.id, state_phrase(&s.state)));
            }
            Ok(vec![Event::OperatorApproved { step: s.id.clone(), by: by.clone() }])
        }
        OperatorInput::Skip { step, reason, by } => {
            check_step(run, plan, *step)?;
            let s = &run.steps[*step];
            if s.state.is_settled() {
                return reject(format!("step {} {} already", s.id, state_phrase(&s.state)));
            }
            if s.state.is_active() {
                return reject(format!("step {} is running; wait for it or cancel the run", s.id));
            }
            Ok(vec![Event::OperatorSkipped { step: s.id.clone(), reason: reason.clone(), by: by.clone() }])
        }
        OperatorInput::Retry { step, by } => {
            let retryable =
                |s: &StepRecord| matches!(s.state, StepState::Failed { tolerated: false, .. } | StepState::BackingOff { .. });
            match step {
                Some(i) => {
                    check_step(run, plan, *i)?;
                    let s = &run.steps[*i];
                    if !retryable(s) {
                        let hint = if s.state.needs_operator() { "; use dr approve or dr skip" } else { "" };
                        return reject(format!("step {} {}, neither failed nor backing off{hint}", s.id, state_phrase(&s.state)));
                    }
                    Ok(vec![Event::RetryRequested { step: s.id.clone(), by: by.clone() }])
                }
                None => {
                    let events: Vec<Event> = run
                        .steps
                        .iter()
                        .filter(|s| retryable(s))
                        .map(|s| Event::RetryRequested { step: s.id.clone(), by: by.clone() })
                        .collect();
                    if events.is_empty() {
                        return reject("no step is failed or backing off".into());
                    }
                    Ok(events)
                }
            }
        }
        OperatorInput::Cancel { reason, by } => {
            if run.ending.is_some() {
                return Ok(Vec::new());
            }
            Ok(vec![Event::CancelRequested { reason: reason.clone(), by: by.clone() }])
        }
    }
}

/// Applies an input, then everything that follows from it.
pub fn transition(run: &RunRecord, plan: &Plan, input: Input, now: Millis) -> Result<Transition, CoreError> {
    if run.steps.len() != plan.steps.len() {
        return Err(CoreError::Invariant(format!(
            "the run has {} steps but its definition has {}",
            run.steps.len(),
            plan.steps.len()
        )));
    }
    let mut b = Builder { run: run.clone(), events: Vec::new(), commands: Vec::new(), now };
    if b.run.status.is_terminal() {
        if let Input::Operator(op) | Input::Resume { operator: Some(op), .. } = &input {
            operator_events(&b.run, plan, op)?;
        }
        return Ok(Transition { run: b.run, events: b.events, commands: b.commands });
    }
    match input {
        Input::Tick => {}
        Input::Resume { by, operator } => {
            // A cancel goes first, so that steps the dead process left running are cancelled, not rerun.
            if let Some(op @ OperatorInput::Cancel { .. }) = &operator {
                for e in operator_events(&b.run, plan, op)? {
                    b.push(e)?;
                }
            }
            let epoch = b.run.epoch + 1;
            b.push(Event::RunResumed { epoch, by })?;
            b.settle(plan, false)?;
            if let Some(op) = operator.filter(|op| !matches!(op, OperatorInput::Cancel { .. })) {
                for e in operator_events(&b.run, plan, &op)? {
                    b.push(e)?;
                }
            }
        }
        Input::ReplaceDefinition { definition_hash, definition_steps, config_digest } => {
            b.push(Event::DefinitionReplaced { definition_hash, definition_steps, config_digest })?;
        }
        Input::ActionDone { step, attempt, result } => {
            check_step(&b.run, plan, step)?;
            let s = &b.run.steps[step];
            if let StepState::Running { attempt: current, started_at, .. } = s.state {
                if current == attempt {
                    let id = s.id.clone();
                    let stopping = b.run.ending.is_some() && !plan.steps[step].cleanup;
                    let event = match result {
                        Ok(output) => {
                            let duration_ms = u64::try_from(now - started_at).unwrap_or(0);
                            Event::StepSucceeded { step: id, attempt, duration_ms, output }
                        }
                        Err(_) if stopping => Event::StepCancelled { step: id, attempt },
                        Err((error, retryable)) => {
                            let p = &plan.steps[step];
                            let seed = jitter_seed(&b.run, step, attempt);
                            let delay = if retryable { p.retry.delay_ms(s.failures + 1, seed) } else { None };
                            let then = match delay {
                                Some(d) => AfterFailure::RetryAt(now.saturating_add(i64::try_from(d).unwrap_or(i64::MAX))),
                                None if p.tolerate_failure || p.cleanup => AfterFailure::Tolerate,
                                None => AfterFailure::Pause,
                            };
                            Event::StepFailed { step: id, attempt, error, then }
                        }
                    };
                    b.push(event)?;
                }
            }
        }
        Input::ProbeDone { step, attempt, result } => {
            check_step(&b.run, plan, step)?;
            let s = &b.run.steps[step];
            if is_attempt(s, attempt, true) {
                let id = s.id.clone();
                let event = match result {
                    Ok(output) => Event::StepProbed { step: id, attempt, output },
                    Err(error) => Event::StepAwaitingOperator {
                        step: id,
                        reason: format!("attempt {attempt} was interrupted and its probe failed ({error}); approve to run it again or skip it"),
                    },
                };
                b.push(event)?;
            }
        }
        Input::Operator(op) => {
            for e in operator_events(&b.run, plan, &op)? {
                b.push(e)?;
            }
        }
        Input::Stopped { signal, never_started } => {
            for (step, attempt) in never_started {
                check_step(&b.run, plan, step)?;
                let s = &b.run.steps[step];
                if is_attempt(s, attempt, false) {
                    let id = s.id.clone();
                    b.push(Event::StepInterrupted { step: id, attempt })?;
                }
            }
            b.push(Event::ProcessStopped { signal })?;
            // A stopping process starts nothing.
            return Ok(Transition { run: b.run, events: b.events, commands: b.commands });
        }
    }
    b.settle(plan, true)?;
    Ok(Transition { run: b.run, events: b.events, commands: b.commands })
}

/// The fields of the incident report an operator fills (`dr report --set`).
pub const REPORT_FIELDS: [&str; 3] = ["cause", "impact", "lessons"];

/// Whether `field` is one an operator may set: a [`REPORT_FIELDS`] one, or
/// `check:ITEM`, a checklist item confirmed (the items are the catalog's;
/// here only the form is checked: lower-case letters and dashes).
pub fn is_report_field(field: &str) -> bool {
    REPORT_FIELDS.contains(&field)
        || field.strip_prefix("check:").is_some_and(|item| !item.is_empty() && item.len() <= 40 && item.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'))
}

/// Records an operator-filled report field on a run in any state: one event,
/// nothing else changes, no command follows.
pub fn annotate(run: &RunRecord, field: &str, value: &str, by: &str, now: Millis) -> Result<Transition, CoreError> {
    if !is_report_field(field) {
        return Err(CoreError::Rejected(format!(
            "unknown report field {field:?}; the fields are {} and check:ITEM",
            REPORT_FIELDS.join(", ")
        )));
    }
    let mut b = Builder { run: run.clone(), events: Vec::new(), commands: Vec::new(), now };
    b.push(Event::ReportFieldSet { field: field.to_owned(), value: value.to_owned(), by: by.to_owned() })?;
    Ok(Transition { run: b.run, events: b.events, commands: b.commands })
}

/// Ends a run whose engine hit a broken invariant: the run fails, the process
/// goes on. Steps still running are recorded as cancelled (their results will
/// not be taken).
pub fn fail_run(run: &RunRecord, reason: String, now: Millis) -> Result<Transition, CoreError> {
    let mut b = Builder { run: run.clone(), events: Vec::new(), commands: Vec::new(), now };
    if !b.run.status.is_terminal() {
        let active: Vec<(StepId, u32)> = b
            .run
            .steps
            .iter()
            .filter_map(|s| match s.state {
                StepState::Running { attempt, .. } | StepState::Probing { attempt, .. } => Some((s.id.clone(), attempt)),
                _ => None,
            })
            .collect();
        for (step, attempt) in active {
            b.push(Event::StepCancelled { step, attempt })?;
        }
        b.push(Event::RunFailed { reason })?;
    }
    Ok(Transition { run: b.run, events: b.events, commands: b.commands })
}

fn jitter_seed(run: &RunRecord, step: usize, attempt: u32) -> u64 {
    let id = run.id.0.as_u128();
    splitmix((id as u64) ^ ((id >> 64) as u64) ^ ((step as u64) << 32) ^ u64::from(attempt))
}

/// Why a pending step whose dependencies have settled must not run, if so.
/// A step skipped by its condition takes the steps that need it along (not
/// those that depend on it for ordering only); one an operator skipped (done
/// by hand) does not.
fn skip_reason(run: &RunRecord, plan: &Plan, i: usize) -> Option<String> {
    match &plan.steps[i].condition {
        Some(condition) => {
            let (holds, seen) = condition.evaluate(run);
            (!holds).then(|| format!("its condition ({}) is false: {seen}", condition.describe()))
        }
        None => plan.steps[i]
            .deps
            .iter()
            .filter(|d| !plan.steps[i].ordering_only.contains(d))
            .find(|&&d| matches!(run.steps[d].state, StepState::Skipped { cause: SkipCause::Condition, .. }))
            .map(|&d| format!("it needs {}, which was skipped", run.steps[d].id)),
    }
}

/// Conditions, gates, starts and timers for the steps of one phase.
fn schedule(run: &RunRecord, plan: &Plan, now: Millis, allow_start: bool, cleanup: bool, out: &mut (Vec<Event>, Vec<Command>)) {
    let (events, commands) = out;
    for (i, s) in run.steps.iter().enumerate() {
        let p = &plan.steps[i];
        if p.cleanup != cleanup {
            continue;
        }
        let deps_settled = p.deps.iter().all(|&d| run.steps[d].state.is_settled());
        let start = match &s.state {
            StepState::Pending if deps_settled => {
                if let Some(reason) = skip_reason(run, plan, i) {
                    events.push(Event::StepSkipped { step: s.id.clone(), reason });
                    continue;
                }
                if let (Some(template), None) = (&p.gate, &s.approval) {
                    let prompt = render_prompt(template, run);
                    events.push(Event::StepGated { step: s.id.clone(), prompt });
                    if let Some(by) = run.gates_preapproved.as_ref().filter(|_| !p.gate_always) {
                        events.push(Event::OperatorApproved { step: s.id.clone(), by: format!("{by} (dr start --yes)") });
                    }
                    continue;
                }
                true
            }
            StepState::BackingOff { until, .. } if *until > now => {
                commands.push(Command::WakeAt { at: *until });
                false
            }
            StepState::BackingOff { .. } => deps_settled,
            _ => false,
        };
        if start && allow_start {
            let attempt = s.attempts + 1;
            let deadline = (p.timeout_ms > 0).then(|| now.saturating_add(i64::try_from(p.timeout_ms).unwrap_or(i64::MAX)));
            events.push(Event::StepStarted { step: s.id.clone(), attempt, epoch: run.epoch, deadline });
            commands.push(Command::Execute { step: i, attempt, deadline });
        }
    }
}

/// The event that ends the run once its cleanup steps are over.
fn final_event(run: &RunRecord, plan: &Plan, ending: &Ending) -> Event {
    let cleanup_failures: Vec<String> = run
        .steps
        .iter()
        .zip(&plan.steps)
        .filter(|(_, p)| p.cleanup)
        .filter_map(|(s, _)| match &s.state {
            StepState::Failed { error, .. } => Some(format!("cleanup step {} failed: {error}", s.id)),
            _ => None,
        })
        .collect();
    let cleanup = cleanup_failures.join("; ");
    match ending {
        Ending::Succeeded if cleanup.is_empty() => Event::RunSucceeded,
        Ending::Succeeded => Event::RunFailed { reason: cleanup },
        Ending::Failed { reason } if cleanup.is_empty() => Event::RunFailed { reason: reason.clone() },
        Ending::Failed { reason } => Event::RunFailed { reason: format!("{reason}; {cleanup}") },
        Ending::Cancelled { reason } if cleanup.is_empty() => Event::RunCancelled { reason: reason.clone() },
        Ending::Cancelled { reason } => Event::RunCancelled { reason: format!("{reason}; {cleanup}") },
    }
}

/// One round of "what follows": the events to record now and the commands
/// that go with them. Called until it returns no event.
fn decide(run: &RunRecord, plan: &Plan, now: Millis, allow_start: bool) -> (Vec<Event>, Vec<Command>) {
    let mut out = (Vec::new(), Vec::new());
    if run.status.is_terminal() {
        return out;
    }
    let (events, commands) = &mut out;
    // 1. Steps left running by a process that is gone.
    for (i, s) in run.steps.iter().enumerate() {
        let (attempt, epoch) = match s.state {
            StepState::Running { attempt, epoch, .. } | StepState::Probing { attempt, epoch, .. } => (attempt, epoch),
            _ => continue,
        };
        if epoch >= run.epoch {
            continue;
        }
        let step = s.id.clone();
        if run.ending.is_some() && !plan.steps[i].cleanup {
            events.push(Event::StepCancelled { step, attempt });
            continue;
        }
        match plan.steps[i].resume {
            ResumeClass::Idempotent if matches!(s.state, StepState::Running { .. }) => {
                events.push(Event::StepInterrupted { step, attempt })
            }
            ResumeClass::Idempotent | ResumeClass::Probe => {
                events.push(Event::StepProbing { step, attempt, epoch: run.epoch });
                commands.push(Command::Probe { step: i, attempt });
            }
            ResumeClass::Confirm => events.push(Event::StepAwaitingOperator {
                step,
                reason: format!("attempt {attempt} was interrupted and may or may not have taken effect; approve to run it again or skip it"),
            }),
        }
    }
    if !events.is_empty() {
        return out;
    }
    let active = |cleanup: bool| -> Vec<usize> {
        run.steps
            .iter()
            .enumerate()
            .filter(|(i, s)| s.state.is_active() && plan.steps[*i].cleanup == cleanup)
            .map(|(i, _)| i)
            .collect()
    };
    let needs_operator = |cleanup: bool| {
        run.steps.iter().zip(&plan.steps).find(|(s, p)| p.cleanup == cleanup && s.state.needs_operator()).map(|(s, _)| s)
    };
    let pause_for = |s: &StepRecord| match &s.state {
        StepState::AwaitingOperator(OperatorWait::Gate { prompt }) => format!("step {} waits for confirmation: {prompt}", s.id),
        StepState::AwaitingOperator(OperatorWait::Interrupted { reason }) => format!("step {} needs an operator: {reason}", s.id),
        StepState::Failed { error, .. } => {
            format!("step {} failed after {} attempt{}: {error}", s.id, s.attempts, if s.attempts == 1 { "" } else { "s" })
        }
        other => format!("step {} {}", s.id, state_phrase(other)),
    };
    let has_cleanup = plan.steps.iter().any(|p| p.cleanup);
    match &run.ending {
        None => {
            let running = active(false);
            // 2. A fatal step out of retries ends the main steps.
            let fatal = run.steps.iter().zip(&plan.steps).find(|(s, p)| p.fatal && matches!(s.state, StepState::Failed { tolerated: false, .. }));
            if let Some((s, _)) = fatal {
                let error = match &s.state {
                    StepState::Failed { error, .. } => error.clone(),
                    _ => String::new(),
                };
                let reason = format!("step {} failed: {error}", s.id);
                if running.is_empty() && !has_cleanup {
                    events.push(Event::RunFailed { reason });
                } else {
                    events.push(Event::RunEnding { ending: Ending::Failed { reason } });
                }
                return out;
            }
            // 3. A step needs an operator: the run pauses, nothing new starts.
            if let Some(s) = needs_operator(false) {
                if run.status == RunStatus::Running {
                    events.push(Event::RunPaused { reason: pause_for(s) });
                }
                return out;
            }
            if run.status != RunStatus::Running {
                return out;
            }
            // 4. Every main step settled: the main steps are over.
            let main_settled = run.steps.iter().zip(&plan.steps).filter(|(_, p)| !p.cleanup).all(|(s, _)| s.state.is_settled());
            if main_settled {
                if has_cleanup {
                    events.push(Event::RunEnding { ending: Ending::Succeeded });
                } else {
                    events.push(Event::RunSucceeded);
                }
                return out;
            }
            // 5. Decide, start and wake the main steps.
            schedule(run, plan, now, allow_start, false, &mut out);
        }
        Some(ending) => {
            // 6. Main steps still running are told to stop; the run waits for them.
            let running = active(false);
            if !running.is_empty() {
                commands.extend(running.into_iter().map(|step| Command::Cancel { step }));
                return out;
            }
            // 7. Cleanup steps: an interrupted one may need an operator.
            if let Some(s) = needs_operator(true) {
                if run.status == RunStatus::Running {
                    events.push(Event::RunPaused { reason: pause_for(s) });
                }
                return out;
            }
            if run.status != RunStatus::Running {
                return out;
            }
            let cleanup_over = run.steps.iter().zip(&plan.steps).filter(|(_, p)| p.cleanup).all(|(s, _)| s.state.is_settled());
            if cleanup_over && active(true).is_empty() {
                events.push(final_event(run, plan, ending));
                return out;
            }
            schedule(run, plan, now, allow_start, true, &mut out);
        }
    }
    out
}

#[cfg(test)]
mod tests;

/// A step's state as a verb phrase: "has succeeded", "is pending".
fn state_phrase(state: &StepState) -> String {
    match state {
        StepState::Succeeded { .. } => "has succeeded".into(),
        StepState::Failed { tolerated: true, .. } => "has failed (tolerated)".into(),
        StepState::Failed { .. } => "has failed".into(),
        StepState::Skipped { .. } => "was skipped".into(),
        StepState::Cancelled { .. } => "was cancelled".into(),
        other => format!("is {}", other.as_str().replace('-', " ")),
    }
}
