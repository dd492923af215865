//! The pure core: `(run, input, now) → (run', events, commands)`.
//!
//! No I/O, no clock reads, no randomness: the runner passes `now` in and does
//! whatever the returned [`Command`]s say. [`apply`] is the fold of one event
//! into a snapshot (used both live and to replay a history); [`transition`]
//! turns an [`Input`] into events, then keeps deciding what follows
//! (interrupted steps, new steps to start, pauses, the end of the run) until
//! nothing more follows, so that "step I finished" and "step I+1 started" land
//! in one transaction.
//!
//! **Invariant:** a finished (succeeded or skipped) step never starts again;
//! a terminal run never changes; sequence numbers are contiguous from 0.

use dr_state::{Event, EventRecord, Millis, RunRecord, RunStatus, StepStatus};

use crate::definition::{Plan, ResumeClass};
use crate::retry::splitmix;

/// What can happen to a run, as the runner reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Schedule whatever is ready (after creation, or when a timer fires).
    Tick,
    /// A new process takes the run up. Steps that were running belong to a
    /// dead process and are taken up according to their resume class. An
    /// operator command given with it is applied in the same transaction.
    Resume { by: String, operator: Option<OperatorInput> },
    /// An attempt finished. `Err((message, retryable))` when it failed.
    ActionDone { step: usize, attempt: u32, result: Result<String, (String, bool)> },
    /// A probe finished: `Ok(true)` when the lost attempt took effect.
    ProbeDone { step: usize, attempt: u32, result: Result<bool, String> },
    /// An operator's decision for a run this process is driving.
    Operator(OperatorInput),
    /// The driving process stops on a signal; the run stays resumable.
    Stopped { signal: String },
    /// Continue under a changed definition (`--allow-definition-change`).
    ReplaceDefinition { definition_hash: String, definition_steps: Vec<(String, String)> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OperatorInput {
    Approve { step: usize },
    Skip { step: usize, reason: String },
    /// Retry one step, or every failed and backing-off step.
    Retry { step: Option<usize> },
    Cancel { reason: String },
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
/// (to be written in one transaction) and the commands to carry out after.
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

/// Starts a run's history.
pub fn create(initial: RunRecord, now: Millis) -> Result<Transition, CoreError> {
    let mut run = initial.clone();
    run.next_seq = 0;
    let record = EventRecord { seq: 0, at: now, event: Event::RunCreated { initial: Box::new(run.clone()) } };
    apply(&mut run, &record).map_err(CoreError::Invariant)?;
    Ok(Transition { run, events: vec![record], commands: Vec::new() })
}

/// Rebuilds a snapshot from a whole history.
pub fn replay(events: &[EventRecord]) -> Result<RunRecord, String> {
    let first = events.first().ok_or("the history is empty")?;
    let Event::RunCreated { initial } = &first.event else {
        return Err(format!("the history starts with {} instead of run-created", first.event.kind()));
    };
    let mut run = (**initial).clone();
    run.next_seq = 0;
    for record in events {
        apply(&mut run, record)?;
    }
    Ok(run)
}

fn step_index(run: &RunRecord, id: &str) -> Result<usize, String> {
    run.steps.iter().position(|s| s.id == id).ok_or_else(|| format!("event names unknown step {id}"))
}

fn unpause(run: &mut RunRecord) {
    if run.status == RunStatus::Paused {
        run.status = RunStatus::Running;
        run.reason = None;
    }
}

/// Folds one event into a snapshot.
pub fn apply(run: &mut RunRecord, record: &EventRecord) -> Result<(), String> {
    if record.seq != run.next_seq {
        return Err(format!("event {} follows event {}: the history has a gap", record.seq, run.next_seq.wrapping_sub(1)));
    }
    if run.status.is_terminal() {
        return Err(format!("event {} ({}) after the run ended {}", record.seq, record.event.kind(), run.status.as_str()));
    }
    let at = record.at;
    let kind = record.event.kind();
    let expect = |ok: bool, what: &str| if ok { Ok(()) } else { Err(format!("{kind} at event {}: {what}", record.seq)) };
    match &record.event {
        Event::RunCreated { initial } => {
            expect(record.seq == 0, "run-created must be the first event")?;
            *run = (**initial).clone();
            run.next_seq = 0;
        }
        Event::RunResumed { epoch, .. } => {
            expect(*epoch > run.epoch, "epochs only grow")?;
            run.epoch = *epoch;
        }
        Event::DefinitionReplaced { definition_hash, definition_steps } => {
            run.definition_hash = definition_hash.clone();
            run.definition_steps = definition_steps.clone();
        }
        Event::StepStarted { step, attempt, epoch, deadline } => {
            let i = step_index(run, step)?;
            let s = &mut run.steps[i];
            expect(!s.status.is_done(), "a finished step never runs again")?;
            expect(matches!(s.status, StepStatus::Pending | StepStatus::Waiting) && !s.awaiting_operator, "only a pending or backing-off step starts")?;
            expect(*attempt == s.attempts + 1, "attempts are numbered one after another")?;
            s.status = StepStatus::Running;
            s.attempts = *attempt;
            s.attempt_epoch = *epoch;
            s.attempt_started_at = Some(at);
            s.started_at.get_or_insert(at);
            s.attempt_deadline = *deadline;
            s.wait_until = None;
            s.probing = false;
        }
        Event::StepSucceeded { step, attempt, output, .. } => {
            let i = step_index(run, step)?;
            let s = &mut run.steps[i];
            expect(s.status == StepStatus::Running && s.attempts == *attempt, "only the running attempt finishes")?;
            s.status = StepStatus::Succeeded;
            s.finished_at = Some(at);
            s.output = output.as_deref().map(|o| tail(o, SNAPSHOT_OUTPUT_BYTES));
            s.attempt_deadline = None;
            s.probing = false;
        }
        Event::StepFailed { step, attempt, error, retry_at } => {
            let i = step_index(run, step)?;
            let s = &mut run.steps[i];
            expect(s.status == StepStatus::Running && s.attempts == *attempt, "only the running attempt fails")?;
            s.failures += 1;
            s.last_error = Some(error.clone());
            s.attempt_deadline = None;
            match retry_at {
                Some(t) => {
                    s.status = StepStatus::Waiting;
                    s.wait_until = Some(*t);
                }
                None => s.status = StepStatus::Failed,
            }
        }
        Event::StepInterrupted { step, attempt } => {
            let i = step_index(run, step)?;
            let s = &mut run.steps[i];
            expect(s.status == StepStatus::Running && s.attempts == *attempt, "only a running step is interrupted")?;
            s.status = StepStatus::Pending;
            s.attempt_deadline = None;
            s.probing = false;
        }
        Event::StepProbing { step, attempt, epoch } => {
            let i = step_index(run, step)?;
            let s = &mut run.steps[i];
            expect(s.status == StepStatus::Running && s.attempts == *attempt, "only a running step is probed")?;
            s.probing = true;
            s.attempt_epoch = *epoch;
        }
        Event::StepProbed { step, attempt, took_effect, detail } => {
            let i = step_index(run, step)?;
            let s = &mut run.steps[i];
            expect(s.status == StepStatus::Running && s.probing && s.attempts == *attempt, "only a probing step gets a probe result")?;
            s.probing = false;
            if *took_effect {
                s.status = StepStatus::Succeeded;
                s.finished_at = Some(at);
                s.output = Some(detail.clone());
            } else {
                s.status = StepStatus::Pending;
            }
        }
        Event::StepAwaitingOperator { step, reason } => {
            let i = step_index(run, step)?;
            let s = &mut run.steps[i];
            expect(!s.status.is_done(), "a finished step needs no decision")?;
            s.status = StepStatus::Waiting;
            s.awaiting_operator = true;
            s.probing = false;
            s.attempt_deadline = None;
            s.last_error = Some(reason.clone());
        }
        Event::StepCancelled { step, .. } => {
            let i = step_index(run, step)?;
            let s = &mut run.steps[i];
            expect(s.status == StepStatus::Running, "only a running step is cancelled")?;
            s.status = StepStatus::Failed;
            s.probing = false;
            s.attempt_deadline = None;
            s.last_error = Some("cancelled".to_owned());
        }
        Event::OperatorApproved { step } => {
            let i = step_index(run, step)?;
            let s = &mut run.steps[i];
            expect(s.awaiting_operator || s.status == StepStatus::Failed, "only a step awaiting a decision is approved")?;
            s.status = StepStatus::Pending;
            s.awaiting_operator = false;
            s.failures = 0;
            unpause(run);
        }
        Event::OperatorSkipped { step, reason } => {
            let i = step_index(run, step)?;
            let s = &mut run.steps[i];
            expect(!s.status.is_done() && s.status != StepStatus::Running, "only a step that is not running or done is skipped")?;
            s.status = StepStatus::Skipped;
            s.awaiting_operator = false;
            s.wait_until = None;
            s.skip_reason = Some(reason.clone());
            s.finished_at = Some(at);
            unpause(run);
        }
        Event::RetryRequested { step } => {
            let i = step_index(run, step)?;
            let s = &mut run.steps[i];
            expect(s.status == StepStatus::Failed || (s.status == StepStatus::Waiting && !s.awaiting_operator), "only a failed or backing-off step is retried")?;
            s.status = StepStatus::Pending;
            s.failures = 0;
            s.wait_until = None;
            unpause(run);
        }
        Event::CancelRequested { reason } => {
            run.cancel_requested = true;
            run.reason = Some(reason.clone());
        }
        Event::ProcessStopped { .. } => {}
        Event::RunPaused { reason } => {
            expect(run.status == RunStatus::Running, "only a running run pauses")?;
            run.status = RunStatus::Paused;
            run.reason = Some(reason.clone());
        }
        Event::RunSucceeded => {
            expect(run.steps.iter().all(|s| s.status.is_done()), "a run succeeds only when every step is done")?;
            run.status = RunStatus::Succeeded;
            run.reason = None;
            run.finished_at = Some(at);
        }
        Event::RunFailed { reason } => {
            run.status = RunStatus::Failed;
            run.reason = Some(reason.clone());
            run.finished_at = Some(at);
        }
        Event::RunCancelled { reason } => {
            run.status = RunStatus::Cancelled;
            run.reason = Some(reason.clone());
            run.finished_at = Some(at);
        }
    }
    run.next_seq += 1;
    run.updated_at = at;
    Ok(())
}

/// How much of a step's output the snapshot keeps (the event keeps all of it).
pub const SNAPSHOT_OUTPUT_BYTES: usize = 2048;

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
        OperatorInput::Approve { step } => {
            check_step(run, plan, *step)?;
            let s = &run.steps[*step];
            if !(s.awaiting_operator || s.status == StepStatus::Failed) {
                return reject(format!("step {} is {}, not awaiting approval", s.id, s.status.as_str()));
            }
            Ok(vec![Event::OperatorApproved { step: s.id.clone() }])
        }
        OperatorInput::Skip { step, reason } => {
            check_step(run, plan, *step)?;
            let s = &run.steps[*step];
            if s.status.is_done() {
                return reject(format!("step {} is already {}", s.id, s.status.as_str()));
            }
            if s.status == StepStatus::Running {
                return reject(format!("step {} is running; wait for it or cancel the run", s.id));
            }
            Ok(vec![Event::OperatorSkipped { step: s.id.clone(), reason: reason.clone() }])
        }
        OperatorInput::Retry { step } => {
            let retryable = |s: &dr_state::StepRecord| {
                s.status == StepStatus::Failed || (s.status == StepStatus::Waiting && !s.awaiting_operator)
            };
            match step {
                Some(i) => {
                    check_step(run, plan, *i)?;
                    let s = &run.steps[*i];
                    if !retryable(s) {
                        let hint = if s.awaiting_operator { "; use dr approve or dr skip" } else { "" };
                        return reject(format!("step {} is {}, neither failed nor backing off{hint}", s.id, s.status.as_str()));
                    }
                    Ok(vec![Event::RetryRequested { step: s.id.clone() }])
                }
                None => {
                    let events: Vec<Event> = run
                        .steps
                        .iter()
                        .filter(|s| retryable(s))
                        .map(|s| Event::RetryRequested { step: s.id.clone() })
                        .collect();
                    if events.is_empty() {
                        return reject("no step is failed or backing off".into());
                    }
                    Ok(events)
                }
            }
        }
        OperatorInput::Cancel { reason } => {
            if run.cancel_requested {
                return Ok(Vec::new());
            }
            Ok(vec![Event::CancelRequested { reason: reason.clone() }])
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
        Input::ReplaceDefinition { definition_hash, definition_steps } => {
            b.push(Event::DefinitionReplaced { definition_hash, definition_steps })?;
        }
        Input::ActionDone { step, attempt, result } => {
            check_step(&b.run, plan, step)?;
            let s = &b.run.steps[step];
            let current = s.status == StepStatus::Running && s.attempts == attempt && !s.probing;
            if current {
                let id = s.id.clone();
                let event = match result {
                    Ok(output) => {
                        let started = s.attempt_started_at.unwrap_or(now);
                        let duration_ms = u64::try_from(now - started).unwrap_or(0);
                        Event::StepSucceeded { step: id, attempt, duration_ms, output: Some(output) }
                    }
                    Err(_) if b.run.cancel_requested => Event::StepCancelled { step: id, attempt },
                    Err((error, retryable)) => {
                        let policy = &plan.steps[step].retry;
                        let seed = jitter_seed(&b.run, step, attempt);
                        let retry_at = if retryable {
                            policy.delay_ms(s.failures + 1, seed).map(|d| now.saturating_add(i64::try_from(d).unwrap_or(i64::MAX)))
                        } else {
                            None
                        };
                        Event::StepFailed { step: id, attempt, error, retry_at }
                    }
                };
                b.push(event)?;
            }
        }
        Input::ProbeDone { step, attempt, result } => {
            check_step(&b.run, plan, step)?;
            let s = &b.run.steps[step];
            if s.status == StepStatus::Running && s.probing && s.attempts == attempt {
                let id = s.id.clone();
                let event = match result {
                    Ok(took_effect) => {
                        let detail = if took_effect {
                            format!("probe: attempt {attempt} had taken effect")
                        } else {
                            format!("probe: attempt {attempt} had not taken effect; running again")
                        };
                        Event::StepProbed { step: id, attempt, took_effect, detail }
                    }
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
        Input::Stopped { signal } => b.push(Event::ProcessStopped { signal })?,
    }
    b.settle(plan, true)?;
    Ok(Transition { run: b.run, events: b.events, commands: b.commands })
}

/// Ends a run whose engine hit a broken invariant: the run fails, the process goes on.
pub fn fail_run(run: &RunRecord, reason: String, now: Millis) -> Result<Transition, CoreError> {
    let mut b = Builder { run: run.clone(), events: Vec::new(), commands: Vec::new(), now };
    if !b.run.status.is_terminal() {
        b.push(Event::RunFailed { reason })?;
    }
    Ok(Transition { run: b.run, events: b.events, commands: b.commands })
}

fn jitter_seed(run: &RunRecord, step: usize, attempt: u32) -> u64 {
    let id = run.id.0.as_u128();
    splitmix((id as u64) ^ ((id >> 64) as u64) ^ ((step as u64) << 32) ^ u64::from(attempt))
}

/// One round of "what follows": the events to record now and the commands
/// that go with them. Called until it returns no event.
fn decide(run: &RunRecord, plan: &Plan, now: Millis, allow_start: bool) -> (Vec<Event>, Vec<Command>) {
    let mut events = Vec::new();
    let mut commands = Vec::new();
    if run.status.is_terminal() {
        return (events, commands);
    }
    // 1. Steps left running by a process that is gone.
    for (i, s) in run.steps.iter().enumerate() {
        if s.status != StepStatus::Running || s.attempt_epoch >= run.epoch {
            continue;
        }
        let attempt = s.attempts;
        let step = s.id.clone();
        if run.cancel_requested {
            events.push(Event::StepCancelled { step, attempt });
            continue;
        }
        match plan.steps[i].resume {
            ResumeClass::Idempotent => events.push(Event::StepInterrupted { step, attempt }),
            ResumeClass::Probe => {
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
        return (events, commands);
    }
    let in_flight: Vec<usize> =
        run.steps.iter().enumerate().filter(|(_, s)| s.status == StepStatus::Running).map(|(i, _)| i).collect();
    // 2. Cancellation: stop what runs, end when nothing does.
    if run.cancel_requested {
        if in_flight.is_empty() {
            let reason = run.reason.clone().unwrap_or_else(|| "cancelled by the operator".into());
            events.push(Event::RunCancelled { reason });
        } else {
            commands.extend(in_flight.iter().map(|&step| Command::Cancel { step }));
        }
        return (events, commands);
    }
    // 3. A fatal step out of retries fails the run.
    if let Some((i, s)) = run.steps.iter().enumerate().find(|(i, s)| s.status == StepStatus::Failed && plan.steps[*i].fatal) {
        let _ = i;
        let error = s.last_error.clone().unwrap_or_default();
        events.push(Event::RunFailed { reason: format!("step {} failed: {error}", s.id) });
        commands.extend(in_flight.iter().map(|&step| Command::Cancel { step }));
        return (events, commands);
    }
    // 4. A step needs an operator: the run pauses, nothing new starts.
    if let Some(s) = run.steps.iter().find(|s| s.status == StepStatus::Failed || s.awaiting_operator) {
        if run.status == RunStatus::Running {
            let reason = if s.awaiting_operator {
                format!("step {} needs an operator: {}", s.id, s.last_error.clone().unwrap_or_default())
            } else {
                format!(
                    "step {} failed after {} attempts: {}",
                    s.id,
                    s.attempts,
                    s.last_error.clone().unwrap_or_default()
                )
            };
            events.push(Event::RunPaused { reason });
        }
        return (events, commands);
    }
    if run.status != RunStatus::Running {
        return (events, commands);
    }
    // 5. Everything done.
    if run.steps.iter().all(|s| s.status.is_done()) {
        events.push(Event::RunSucceeded);
        return (events, commands);
    }
    if !allow_start {
        return (events, commands);
    }
    // 6. Start what is ready; wake up for what waits.
    for (i, s) in run.steps.iter().enumerate() {
        let deps_done = plan.steps[i].deps.iter().all(|&d| run.steps[d].status.is_done());
        let ready = match s.status {
            StepStatus::Pending => deps_done,
            StepStatus::Waiting if !s.awaiting_operator => match s.wait_until {
                Some(t) if t > now => {
                    commands.push(Command::WakeAt { at: t });
                    false
                }
                _ => deps_done,
            },
            _ => false,
        };
        if ready {
            let attempt = s.attempts + 1;
            let timeout = plan.steps[i].timeout_ms;
            let deadline = (timeout > 0).then(|| now.saturating_add(i64::try_from(timeout).unwrap_or(i64::MAX)));
            events.push(Event::StepStarted { step: s.id.clone(), attempt, epoch: run.epoch, deadline });
            commands.push(Command::Execute { step: i, attempt, deadline });
        }
    }
    (events, commands)
}

#[cfg(test)]
mod tests;
