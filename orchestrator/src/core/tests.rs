use super::*;
use crate::condition::Condition;
use crate::definition::{PlanStep, ResumeClass};
use crate::retry::RetryPolicy;
use dr_state::{RunId, SkipCause};
use proptest::prelude::*;

fn plan(specs: &[(Vec<usize>, ResumeClass, u32, bool)]) -> Plan {
    Plan {
        steps: specs
            .iter()
            .enumerate()
            .map(|(i, (deps, resume, attempts, fatal))| PlanStep {
                retry: RetryPolicy { max_attempts: *attempts, initial_backoff_ms: 100, max_backoff_ms: 1000, multiplier: 2, jitter_percent: 10 },
                timeout_ms: 5_000,
                expected_ms: 1000,
                resume: *resume,
                fatal: *fatal,
                ..PlanStep::new(&format!("step-{}", i + 1), deps.clone())
            })
            .collect(),
    }
}

fn chain(n: usize, resume: ResumeClass) -> Plan {
    plan(&(0..n).map(|i| (if i == 0 { vec![] } else { vec![i - 1] }, resume, 2, false)).collect::<Vec<_>>())
}

fn header(plan: &Plan) -> RunHeader {
    RunHeader {
        id: RunId::new_v7(1_000, 42),
        workflow: "synthetic".into(),
        definition_hash: "h".into(),
        definition_steps: vec![],
        config_digest: None,
            config_path: None,
        params: Default::default(),
        level: 1,
        target_secs: 900,
        incident_at: 1_000,
        steps: plan.steps.iter().map(|s| s.id.clone()).collect(),
    }
}

fn output(text: &str) -> StepOutput {
    StepOutput { summary: text.to_owned(), value: serde_json::json!({ "text": text }).to_string() }
}

fn op_by() -> String {
    "tester".to_owned()
}

/// Keeps a run and its full history; checks the history after every step.
struct Sim {
    plan: Plan,
    run: RunRecord,
    history: Vec<EventRecord>,
    now: Millis,
}

impl Sim {
    fn new(plan: Plan) -> Self {
        Self::with(plan, None)
    }

    fn with(plan: Plan, preapproved_by: Option<String>) -> Self {
        let t = create(header(&plan), 1_000, preapproved_by, None).unwrap();
        Sim { plan, run: t.run, history: t.events, now: 1_000 }
    }

    fn feed(&mut self, input: Input) -> Result<Transition, CoreError> {
        self.now += 7;
        let t = transition(&self.run, &self.plan, input, self.now)?;
        self.history.extend(t.events.iter().cloned());
        self.run = t.run.clone();
        Ok(t)
    }

    fn executes(t: &Transition) -> Vec<(usize, u32)> {
        t.commands
            .iter()
            .filter_map(|c| match c {
                Command::Execute { step, attempt, .. } => Some((*step, *attempt)),
                _ => None,
            })
            .collect()
    }

    fn succeed_with(&mut self, step: usize, out: StepOutput) -> Transition {
        let attempt = self.run.steps[step].attempts;
        self.feed(Input::ActionDone { step, attempt, result: Ok(out) }).unwrap()
    }

    fn succeed(&mut self, step: usize) -> Transition {
        self.succeed_with(step, output(&format!("ok {step}")))
    }

    fn fail(&mut self, step: usize, retryable: bool) -> Transition {
        let attempt = self.run.steps[step].attempts;
        self.feed(Input::ActionDone { step, attempt, result: Err((format!("boom {step}"), retryable)) }).unwrap()
    }

    fn kinds(t: &Transition) -> Vec<&'static str> {
        t.events.iter().map(|e| e.event.kind()).collect()
    }
}

#[test]
fn a_chain_runs_step_by_step_and_finish_and_next_start_share_a_transition() {
    let mut sim = Sim::new(chain(3, ResumeClass::Idempotent));
    let t = sim.feed(Input::Tick).unwrap();
    assert_eq!(Sim::executes(&t), vec![(0, 1)]);
    let t = sim.succeed(0);
    assert_eq!(Sim::kinds(&t), vec!["step-succeeded", "step-started"]);
    assert_eq!(Sim::executes(&t), vec![(1, 1)]);
    sim.succeed(1);
    let t = sim.succeed(2);
    assert_eq!(t.events.last().unwrap().event, Event::RunSucceeded);
    assert_eq!(sim.run.status, RunStatus::Succeeded);
    // The output is kept whole in the snapshot.
    assert_eq!(sim.run.steps[2].state.output(), Some(&output("ok 2")));
    assert_eq!(replay(&sim.history).unwrap(), sim.run);
}

#[test]
fn parallel_steps_start_together() {
    let p = plan(&[
        (vec![], ResumeClass::Idempotent, 1, false),
        (vec![0], ResumeClass::Idempotent, 1, false),
        (vec![0], ResumeClass::Idempotent, 1, false),
        (vec![0], ResumeClass::Idempotent, 1, false),
    ]);
    let mut sim = Sim::new(p);
    sim.feed(Input::Tick).unwrap();
    let t = sim.succeed(0);
    assert_eq!(Sim::executes(&t), vec![(1, 1), (2, 1), (3, 1)]);
}

#[test]
fn a_failure_backs_off_then_retries_then_pauses_when_out_of_attempts() {
    let mut sim = Sim::new(chain(2, ResumeClass::Idempotent));
    sim.feed(Input::Tick).unwrap();
    let t = sim.fail(0, true);
    let wake = t.commands.iter().find_map(|c| match c {
        Command::WakeAt { at } => Some(*at),
        _ => None,
    });
    let at = wake.expect("a retry timer");
    assert_eq!(sim.run.steps[0].state, StepState::BackingOff { until: at, error: "boom 0".into() });
    // A tick before the deadline starts nothing; one after it does.
    let t = sim.feed(Input::Tick).unwrap();
    assert!(Sim::executes(&t).is_empty());
    sim.now = at;
    let t = sim.feed(Input::Tick).unwrap();
    assert_eq!(Sim::executes(&t), vec![(0, 2)]);
    sim.fail(0, true);
    assert_eq!(sim.run.status, RunStatus::Paused);
    assert!(matches!(sim.run.steps[0].state, StepState::Failed { tolerated: false, .. }));
    assert!(sim.run.reason.as_deref().unwrap().contains("boom 0"));
    // Retry gives a fresh budget and starts it now.
    let t = sim.feed(Input::Operator(OperatorInput::Retry { step: None, by: op_by() })).unwrap();
    assert_eq!(Sim::executes(&t), vec![(0, 3)]);
    assert_eq!(sim.run.status, RunStatus::Running);
}

#[test]
fn a_permanent_error_does_not_retry_and_a_fatal_step_fails_the_run() {
    let p = plan(&[(vec![], ResumeClass::Idempotent, 5, true)]);
    let mut sim = Sim::new(p);
    sim.feed(Input::Tick).unwrap();
    sim.fail(0, false);
    assert_eq!(sim.run.status, RunStatus::Failed);
    // Terminal stays terminal.
    let t = sim.feed(Input::Tick).unwrap();
    assert!(t.events.is_empty() && t.commands.is_empty());
    assert!(sim.feed(Input::Operator(OperatorInput::Retry { step: Some(0), by: op_by() })).is_err());
}

#[test]
fn a_fatal_failure_stops_its_running_siblings_before_the_run_ends() {
    let mut p = plan(&[
        (vec![], ResumeClass::Idempotent, 1, false),
        (vec![0], ResumeClass::Idempotent, 1, true),
        (vec![0], ResumeClass::Idempotent, 1, false),
    ]);
    p.steps[1].fatal = true;
    let mut sim = Sim::new(p);
    sim.feed(Input::Tick).unwrap();
    sim.succeed(0);
    let t = sim.fail(1, false);
    assert_eq!(Sim::kinds(&t), vec!["step-failed", "run-ending"]);
    assert!(t.commands.contains(&Command::Cancel { step: 2 }));
    assert_eq!(sim.run.status, RunStatus::Running, "not terminal while a step still runs");
    sim.fail(2, true);
    assert_eq!(sim.run.status, RunStatus::Failed);
    assert!(matches!(sim.run.steps[2].state, StepState::Cancelled { .. }), "{:?}", sim.run.steps[2].state);
    assert!(sim.run.steps.iter().all(|s| !s.state.is_active()));
    assert!(sim.run.reason.as_deref().unwrap().contains("step-2 failed"));
}

#[test]
fn resume_takes_up_interrupted_steps_by_class() {
    for (class, expect) in [
        (ResumeClass::Idempotent, "execute"),
        (ResumeClass::Probe, "probe"),
        (ResumeClass::Confirm, "paused"),
    ] {
        let mut sim = Sim::new(chain(2, class));
        sim.feed(Input::Tick).unwrap();
        // The process dies here; a new one resumes.
        let t = sim.feed(Input::Resume { by: "test".into(), operator: None }).unwrap();
        match expect {
            "execute" => assert_eq!(Sim::executes(&t), vec![(0, 2)], "{class:?}"),
            "probe" => {
                assert!(t.commands.contains(&Command::Probe { step: 0, attempt: 1 }), "{class:?}");
                let t = sim.feed(Input::ProbeDone { step: 0, attempt: 1, result: Ok(Some(output("found"))) }).unwrap();
                assert_eq!(sim.run.steps[0].state.output(), Some(&output("found")), "the probe's output is the step's");
                assert_eq!(Sim::executes(&t), vec![(1, 1)]);
            }
            _ => {
                assert_eq!(sim.run.status, RunStatus::Paused);
                assert!(matches!(sim.run.steps[0].state, StepState::AwaitingOperator(OperatorWait::Interrupted { .. })));
                let t = sim.feed(Input::Operator(OperatorInput::Approve { step: 0, by: op_by() })).unwrap();
                assert_eq!(Sim::executes(&t), vec![(0, 2)]);
            }
        }
        assert_eq!(replay(&sim.history).unwrap(), sim.run);
    }
}

#[test]
fn a_stale_result_from_an_old_attempt_is_ignored() {
    let mut sim = Sim::new(chain(1, ResumeClass::Idempotent));
    sim.feed(Input::Tick).unwrap();
    sim.feed(Input::Resume { by: "t".into(), operator: None }).unwrap();
    let t = sim.feed(Input::ActionDone { step: 0, attempt: 1, result: Ok(output("late")) }).unwrap();
    assert!(t.events.is_empty());
    assert!(matches!(sim.run.steps[0].state, StepState::Running { attempt: 2, .. }));
}

#[test]
fn cancel_stops_running_steps_then_ends_the_run() {
    let mut sim = Sim::new(chain(2, ResumeClass::Idempotent));
    sim.feed(Input::Tick).unwrap();
    let t = sim.feed(Input::Operator(OperatorInput::Cancel { reason: "operator".into(), by: op_by() })).unwrap();
    assert_eq!(t.commands, vec![Command::Cancel { step: 0 }]);
    assert_eq!(sim.run.status, RunStatus::Running);
    sim.fail(0, true);
    assert_eq!(sim.run.status, RunStatus::Cancelled);
    assert!(matches!(sim.run.steps[0].state, StepState::Cancelled { .. }));
}

#[test]
fn cancel_with_resume_of_a_crashed_run_never_restarts_a_step() {
    let mut sim = Sim::new(chain(2, ResumeClass::Idempotent));
    sim.feed(Input::Tick).unwrap();
    let cancel = OperatorInput::Cancel { reason: "stop".into(), by: op_by() };
    let t = sim.feed(Input::Resume { by: "t".into(), operator: Some(cancel) }).unwrap();
    assert!(Sim::executes(&t).is_empty());
    assert_eq!(sim.run.status, RunStatus::Cancelled);
}

#[test]
fn skip_marks_a_step_done_and_the_run_goes_on() {
    let mut sim = Sim::new(chain(2, ResumeClass::Confirm));
    sim.feed(Input::Tick).unwrap();
    sim.feed(Input::Resume { by: "t".into(), operator: None }).unwrap();
    let skip = OperatorInput::Skip { step: 0, reason: "done by hand".into(), by: op_by() };
    let t = sim.feed(Input::Operator(skip)).unwrap();
    assert!(matches!(&sim.run.steps[0].state, StepState::Skipped { reason, cause: SkipCause::Operator, .. } if reason == "done by hand"));
    // An operator's skip is a decision: the step after runs.
    assert_eq!(Sim::executes(&t), vec![(1, 1)]);
    // Approving a step that does not wait is refused, and changes nothing.
    let before = sim.run.clone();
    assert!(matches!(sim.feed(Input::Operator(OperatorInput::Approve { step: 1, by: op_by() })), Err(CoreError::Rejected(_))));
    assert_eq!(sim.run, before);
}

#[test]
fn a_failed_probe_asks_the_operator() {
    let mut sim = Sim::new(chain(1, ResumeClass::Probe));
    sim.feed(Input::Tick).unwrap();
    sim.feed(Input::Resume { by: "t".into(), operator: None }).unwrap();
    sim.feed(Input::ProbeDone { step: 0, attempt: 1, result: Err("cannot read trace".into()) }).unwrap();
    assert_eq!(sim.run.status, RunStatus::Paused);
    assert!(sim.run.steps[0].state.needs_operator());
}

#[test]
fn replay_refuses_a_gap() {
    let mut sim = Sim::new(chain(2, ResumeClass::Idempotent));
    sim.feed(Input::Tick).unwrap();
    sim.succeed(0);
    let mut history = sim.history.clone();
    history.remove(2);
    assert!(replay(&history).unwrap_err().contains("gap"));
}

#[test]
fn a_stop_starts_nothing_even_when_a_backoff_has_expired() {
    let mut sim = Sim::new(chain(2, ResumeClass::Confirm));
    sim.feed(Input::Tick).unwrap();
    sim.fail(0, true);
    let StepState::BackingOff { until, .. } = sim.run.steps[0].state else { panic!("backing off") };
    sim.now = until + 1_000;
    let t = sim.feed(Input::Stopped { signal: "SIGTERM".into(), never_started: vec![] }).unwrap();
    assert_eq!(Sim::kinds(&t), vec!["process-stopped"]);
    assert!(t.commands.is_empty());
    // An attempt recorded as started but never started by the stopping process is interrupted, not left running.
    let t = sim.feed(Input::Tick).unwrap();
    assert_eq!(Sim::executes(&t), vec![(0, 2)]);
    let t = sim.feed(Input::Stopped { signal: "SIGTERM".into(), never_started: vec![(0, 2)] }).unwrap();
    assert_eq!(Sim::kinds(&t), vec!["step-interrupted", "process-stopped"]);
    // So a confirm-class step does not bother the operator on resume: it simply starts.
    let t = sim.feed(Input::Resume { by: "t".into(), operator: None }).unwrap();
    assert_eq!(sim.run.status, RunStatus::Running);
    assert_eq!(Sim::executes(&t), vec![(0, 3)]);
}

// ---- conditions, gates, tolerated failures, cleanup ----

/// check -> (ok: step-2 when check's /ready is true) and (recreate: step-3 when false) -> join: step-4 after 2 and 3, when either succeeded.
fn branch_plan() -> Plan {
    let mut p = plan(&[
        (vec![], ResumeClass::Idempotent, 1, false),
        (vec![0], ResumeClass::Idempotent, 1, false),
        (vec![0], ResumeClass::Idempotent, 1, false),
        (vec![1, 2], ResumeClass::Idempotent, 1, false),
        (vec![3], ResumeClass::Idempotent, 1, false),
    ]);
    let ready = |v: bool| Condition::OutputIs { step: "step-1".into(), pointer: "/ready".into(), value: serde_json::json!(v) };
    p.steps[1].condition = Some(ready(true));
    p.steps[2].condition = Some(ready(false));
    p.steps[3].condition = Some(Condition::Any(vec![Condition::Succeeded("step-2".into()), Condition::Succeeded("step-3".into())]));
    p
}

#[test]
fn a_false_condition_skips_the_step_with_its_reason_and_a_branch_joins() {
    let mut sim = Sim::new(branch_plan());
    sim.feed(Input::Tick).unwrap();
    let t = sim.succeed_with(0, StepOutput { summary: "not ready".into(), value: r#"{"ready":false}"#.into() });
    assert_eq!(Sim::kinds(&t), vec!["step-succeeded", "step-skipped", "step-started"]);
    assert_eq!(Sim::executes(&t), vec![(2, 1)], "only the branch whose condition holds runs");
    let StepState::Skipped { reason, cause: SkipCause::Condition, .. } = &sim.run.steps[1].state else { panic!("skipped") };
    assert!(reason.contains("step-1 /ready is false, wanted true"), "{reason}");
    // The join runs because one branch succeeded; the step after it runs too.
    let t = sim.succeed(2);
    assert_eq!(Sim::executes(&t), vec![(3, 1)]);
    sim.succeed(3);
    sim.succeed(4);
    assert_eq!(sim.run.status, RunStatus::Succeeded);
    assert_eq!(replay(&sim.history).unwrap(), sim.run);
}

#[test]
fn a_skip_propagates_to_the_steps_that_need_the_skipped_step() {
    let mut p = chain(3, ResumeClass::Idempotent);
    p.steps[1].condition = Some(Condition::Failed("step-1".into()));
    let mut sim = Sim::new(p);
    sim.feed(Input::Tick).unwrap();
    let t = sim.succeed(0);
    assert_eq!(Sim::kinds(&t), vec!["step-succeeded", "step-skipped", "step-skipped", "run-succeeded"]);
    let StepState::Skipped { reason, .. } = &sim.run.steps[2].state else { panic!("skipped") };
    assert_eq!(reason, "it needs step-2, which was skipped");
}

#[test]
fn an_ordering_only_dependency_that_was_skipped_does_not_skip_the_step_after_it() {
    // step-2 (live snapshot) only when step-1 has /ready true; step-3 (choose) after step-2 whatever it came to.
    let mut p = chain(3, ResumeClass::Idempotent);
    p.steps[1].condition = Some(Condition::OutputIs { step: "step-1".into(), pointer: "/ready".into(), value: serde_json::json!(true) });
    p.steps[2].ordering_only = vec![1];
    let mut sim = Sim::new(p);
    sim.feed(Input::Tick).unwrap();
    let t = sim.succeed_with(0, StepOutput { summary: "down".into(), value: r#"{"ready":false}"#.into() });
    assert_eq!(Sim::kinds(&t), vec!["step-succeeded", "step-skipped", "step-started"]);
    assert_eq!(Sim::executes(&t), vec![(2, 1)], "the step after a skipped ordering-only dependency runs");
}

#[test]
fn a_gate_pauses_before_the_first_attempt_and_approval_names_the_approver() {
    let mut p = chain(2, ResumeClass::Idempotent);
    p.steps[1].gate = Some("Restore {step-1:/text}?".into());
    let mut sim = Sim::new(p);
    sim.feed(Input::Tick).unwrap();
    let t = sim.succeed_with(0, output("snapshot-42"));
    assert_eq!(Sim::kinds(&t), vec!["step-succeeded", "step-gated", "run-paused"]);
    assert!(Sim::executes(&t).is_empty());
    assert_eq!(sim.run.steps[1].attempts, 0, "no attempt before the confirmation");
    assert_eq!(sim.run.steps[1].state, StepState::AwaitingOperator(OperatorWait::Gate { prompt: "Restore snapshot-42?".into() }));
    assert!(sim.run.reason.as_deref().unwrap().contains("Restore snapshot-42?"));
    let t = sim.feed(Input::Operator(OperatorInput::Approve { step: 1, by: "alice".into() })).unwrap();
    assert_eq!(Sim::executes(&t), vec![(1, 1)]);
    assert_eq!(sim.run.steps[1].approval.as_ref().map(|a| a.by.as_str()), Some("alice"));
    assert!(sim.history.iter().any(|e| matches!(&e.event, Event::OperatorApproved { by, .. } if by == "alice")));
    // A retry after a failure does not ask again.
    sim.fail(1, true);
    let StepState::BackingOff { until, .. } = sim.run.steps[1].state else { panic!("backing off") };
    sim.now = until;
    let t = sim.feed(Input::Tick).unwrap();
    assert_eq!(Sim::executes(&t), vec![(1, 2)]);
}

#[test]
fn preapproved_gates_are_recorded_and_do_not_pause() {
    let mut p = chain(2, ResumeClass::Idempotent);
    p.steps[1].gate = Some("Go?".into());
    let mut sim = Sim::with(p, Some("bob".into()));
    assert!(sim.history.iter().any(|e| e.event == Event::GatesPreApproved { by: "bob".into() }));
    sim.feed(Input::Tick).unwrap();
    let t = sim.succeed(0);
    assert_eq!(Sim::kinds(&t), vec!["step-succeeded", "step-gated", "operator-approved", "step-started"]);
    assert_eq!(sim.run.steps[1].approval.as_ref().map(|a| a.by.as_str()), Some("bob (dr start --yes)"));
}

#[test]
fn a_gate_that_always_asks_is_not_approved_by_yes() {
    let mut p = chain(2, ResumeClass::Idempotent);
    p.steps[1].gate = Some("Accept losing a day of changes?".into());
    p.steps[1].gate_always = true;
    let mut sim = Sim::with(p, Some("bob".into()));
    sim.feed(Input::Tick).unwrap();
    let t = sim.succeed(0);
    assert_eq!(Sim::kinds(&t), vec!["step-succeeded", "step-gated", "run-paused"]);
    sim.feed(Input::Operator(OperatorInput::Approve { step: 1, by: "alice".into() })).unwrap();
    assert_eq!(sim.run.steps[1].approval.as_ref().map(|a| a.by.as_str()), Some("alice"));
}

#[test]
fn a_tolerated_failure_is_recorded_and_dependents_branch_on_it() {
    let mut p = plan(&[
        (vec![], ResumeClass::Idempotent, 1, false),
        (vec![0], ResumeClass::Idempotent, 1, false),
        (vec![0], ResumeClass::Idempotent, 1, false),
    ]);
    p.steps[0].tolerate_failure = true;
    p.steps[1].condition = Some(Condition::Failed("step-1".into()));
    p.steps[2].condition = Some(Condition::Succeeded("step-1".into()));
    let mut sim = Sim::new(p);
    sim.feed(Input::Tick).unwrap();
    let t = sim.fail(0, false);
    assert!(matches!(sim.run.steps[0].state, StepState::Failed { tolerated: true, .. }));
    assert_eq!(Sim::executes(&t), vec![(1, 1)]);
    assert!(matches!(sim.run.steps[2].state, StepState::Skipped { .. }));
    sim.succeed(1);
    assert_eq!(sim.run.status, RunStatus::Succeeded);
}

fn with_cleanup(n: usize) -> Plan {
    let mut p = chain(n + 2, ResumeClass::Idempotent);
    // The last two steps are cleanup steps: cleanup-1 then cleanup-2.
    p.steps[n].deps = vec![];
    for s in &mut p.steps[n..] {
        s.cleanup = true;
    }
    p
}

#[test]
fn cleanup_runs_after_success_in_dependency_order() {
    let mut sim = Sim::new(with_cleanup(2));
    let t = sim.feed(Input::Tick).unwrap();
    assert_eq!(Sim::executes(&t), vec![(0, 1)], "cleanup steps wait for the end");
    sim.succeed(0);
    let t = sim.succeed(1);
    assert_eq!(Sim::kinds(&t), vec!["step-succeeded", "run-ending", "step-started"]);
    assert_eq!(Sim::executes(&t), vec![(2, 1)]);
    let t = sim.succeed(2);
    assert_eq!(Sim::executes(&t), vec![(3, 1)]);
    sim.succeed(3);
    assert_eq!(sim.run.status, RunStatus::Succeeded);
}

#[test]
fn cleanup_runs_after_a_cancel_of_a_paused_run_and_a_failed_cleanup_fails_the_run() {
    let mut sim = Sim::new(with_cleanup(2));
    sim.feed(Input::Tick).unwrap();
    sim.fail(0, false);
    assert_eq!(sim.run.status, RunStatus::Paused);
    let t = sim.feed(Input::Operator(OperatorInput::Cancel { reason: "give up".into(), by: op_by() })).unwrap();
    assert_eq!(Sim::executes(&t), vec![(2, 1)]);
    assert_eq!(sim.run.ending, Some(Ending::Cancelled { reason: "give up".into() }));
    // A failing cleanup step is tolerated: the cleanup goes on, and the run's reason names the failure.
    let t = sim.fail(2, false);
    assert_eq!(Sim::executes(&t), vec![(3, 1)]);
    sim.succeed(3);
    assert_eq!(sim.run.status, RunStatus::Cancelled);
    let reason = sim.run.reason.clone().unwrap();
    assert!(reason.contains("give up") && reason.contains("cleanup step step-3 failed"), "{reason}");
    assert_eq!(replay(&sim.history).unwrap(), sim.run);
}

#[test]
fn a_crash_inside_cleanup_resumes_the_cleanup() {
    let mut sim = Sim::new(with_cleanup(1));
    sim.feed(Input::Tick).unwrap();
    sim.succeed(0);
    assert!(matches!(sim.run.steps[1].state, StepState::Running { attempt: 1, .. }));
    // The process dies inside cleanup-1; a new one takes it up.
    sim.feed(Input::Resume { by: "t".into(), operator: None }).unwrap();
    let t = sim.feed(Input::Tick).unwrap();
    let executes = Sim::executes(&t);
    assert!(executes == vec![(1, 2)] || matches!(sim.run.steps[1].state, StepState::Running { attempt: 2, .. }), "{executes:?}");
    sim.succeed(1);
    sim.succeed(2);
    assert_eq!(sim.run.status, RunStatus::Succeeded);
    assert!(matches!(sim.run.ending, Some(Ending::Succeeded)));
}

// ---- properties ----

#[derive(Clone, Debug)]
enum Op {
    Tick,
    Resume,
    Done { step: usize, current: bool, ok: bool, retryable: bool, ready: bool },
    Probed { step: usize, result: Option<bool> },
    Approve(usize),
    Skip(usize),
    Retry(Option<usize>),
    Cancel,
    Stop { never_started: bool },
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Tick),
        1 => Just(Op::Resume),
        8 => (0..8usize, prop::bool::weighted(0.9), prop::bool::weighted(0.7), any::<bool>(), any::<bool>())
            .prop_map(|(step, current, ok, retryable, ready)| Op::Done { step, current, ok, retryable, ready }),
        2 => (0..8usize, prop::option::of(any::<bool>())).prop_map(|(step, result)| Op::Probed { step, result }),
        1 => (0..8usize).prop_map(Op::Approve),
        1 => (0..8usize).prop_map(Op::Skip),
        1 => prop::option::of(0..8usize).prop_map(Op::Retry),
        1 => Just(Op::Cancel),
        1 => any::<bool>().prop_map(|never_started| Op::Stop { never_started }),
        2 => (0..3000u16).prop_map(Op::Advance),
    ]
}

/// Random graphs with every kind of step: conditions on a dependency's
/// output or outcome, gates, tolerated failures, fatal steps, cleanup steps.
fn plan_strategy() -> impl Strategy<Value = Plan> {
    (1..8usize)
        .prop_flat_map(|n| {
            prop::collection::vec(
                (
                    any::<u8>(),
                    prop_oneof![Just(ResumeClass::Idempotent), Just(ResumeClass::Probe), Just(ResumeClass::Confirm)],
                    1..4u32,
                    prop::bool::weighted(0.15),
                    0..6u8,
                ),
                n,
            )
        })
        .prop_map(|specs| {
            let n = specs.len();
            let cleanup_from = if n > 2 && specs[0].0 % 3 == 0 { n - 1 } else { n };
            let mut p = plan(&specs.iter().map(|(_, class, attempts, fatal, _)| (vec![], *class, *attempts, *fatal)).collect::<Vec<_>>());
            for (i, (mask, _, _, _, kind)) in specs.iter().enumerate() {
                let cleanup = i >= cleanup_from;
                let lo = if cleanup { cleanup_from } else { 0 };
                let deps: Vec<usize> = (lo..i).filter(|d| mask & (1 << (d % 8)) != 0).collect();
                let step = &mut p.steps[i];
                step.cleanup = cleanup;
                match (kind, deps.first()) {
                    (1, Some(&d)) => {
                        step.condition = Some(Condition::OutputIs { step: format!("step-{}", d + 1).into(), pointer: "/ready".into(), value: serde_json::json!(true) })
                    }
                    (2, Some(&d)) => step.condition = Some(Condition::Failed(format!("step-{}", d + 1).into())),
                    (3, _) => step.gate = Some("go?".into()),
                    (4, _) => step.tolerate_failure = true,
                    _ => {}
                }
                step.deps = deps;
            }
            p
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 768, ..ProptestConfig::default() })]

    #[test]
    fn random_inputs_keep_every_invariant(p in plan_strategy(), ops in prop::collection::vec(op(), 1..100)) {
        let n = p.steps.len();
        let cleanup: Vec<bool> = p.steps.iter().map(|s| s.cleanup).collect();
        let mut sim = Sim::new(p);
        sim.feed(Input::Tick).unwrap();
        let mut settled_once = vec![false; n];
        let mut was_terminal = false;
        // Per step: the highest attempt started, and whether it waits for an operator after an interruption.
        let mut last_attempt = vec![0u32; n];
        let mut interrupted = vec![false; n];
        for op in ops {
            let before = sim.run.clone();
            let stop = matches!(op, Op::Stop { .. });
            let input = match op {
                Op::Tick => Input::Tick,
                Op::Resume => Input::Resume { by: "prop".into(), operator: None },
                Op::Done { step, current, ok, retryable, ready } => {
                    let step = step % n;
                    let attempt = if current { sim.run.steps[step].attempts } else { sim.run.steps[step].attempts + 1 };
                    let result = if ok {
                        Ok(StepOutput { summary: "ok".into(), value: serde_json::json!({ "ready": ready }).to_string() })
                    } else {
                        Err(("err".to_owned(), retryable))
                    };
                    Input::ActionDone { step, attempt, result }
                }
                Op::Probed { step, result } => {
                    let step = step % n;
                    let result = match result {
                        Some(true) => Ok(Some(output("probed"))),
                        Some(false) => Ok(None),
                        None => Err("probe error".to_owned()),
                    };
                    Input::ProbeDone { step, attempt: sim.run.steps[step].attempts, result }
                }
                Op::Approve(s) => Input::Operator(OperatorInput::Approve { step: s % n, by: op_by() }),
                Op::Skip(s) => Input::Operator(OperatorInput::Skip { step: s % n, reason: "prop".into(), by: op_by() }),
                Op::Retry(s) => Input::Operator(OperatorInput::Retry { step: s.map(|s| s % n), by: op_by() }),
                Op::Cancel => Input::Operator(OperatorInput::Cancel { reason: "prop".into(), by: op_by() }),
                Op::Stop { never_started } => {
                    let running: Vec<(usize, u32)> = sim.run.steps.iter().enumerate()
                        .filter_map(|(i, s)| match s.state { StepState::Running { attempt, .. } if never_started => Some((i, attempt)), _ => None })
                        .collect();
                    Input::Stopped { signal: "SIGTERM".into(), never_started: running }
                }
                Op::Advance(ms) => { sim.now += i64::from(ms); Input::Tick }
            };
            match sim.feed(input) {
                Ok(t) => {
                    // Sequence numbers continue without a gap.
                    for (k, e) in t.events.iter().enumerate() {
                        prop_assert_eq!(e.seq, before.next_seq + k as u64);
                    }
                    // Every Execute is backed by a StepStarted in the same transaction.
                    for (step, attempt) in Sim::executes(&t) {
                        let id = &sim.run.steps[step].id;
                        let started = t.events.iter().any(|e| matches!(&e.event, Event::StepStarted { step: s, attempt: a, .. } if s == id && *a == attempt));
                        prop_assert!(started, "execute without a durable start");
                    }
                    for (step, attempt) in Sim::executes(&t) {
                        // A step runs only once every step it needs is settled.
                        for &d in &sim.plan.steps[step].deps {
                            prop_assert!(sim.run.steps[d].state.is_settled(), "step {} ran before its dependency {} was done", step, d);
                        }
                        // Attempt numbers only grow.
                        prop_assert!(attempt > last_attempt[step], "step {} attempt {} after attempt {}", step, attempt, last_attempt[step]);
                        last_attempt[step] = attempt;
                        // An attempt an interruption left to the operator runs again only on a decision.
                        let id = &sim.run.steps[step].id;
                        let decided = t.events.iter().any(|e| matches!(&e.event,
                            Event::OperatorApproved { step: s, .. } | Event::RetryRequested { step: s, .. } if s == id));
                        prop_assert!(!interrupted[step] || decided, "step {} ran again after an interruption without an approval", step);
                    }
                    for (i, s) in sim.run.steps.iter().enumerate() {
                        interrupted[i] = matches!(s.state, StepState::AwaitingOperator(OperatorWait::Interrupted { .. }));
                    }
                    // A stop starts nothing.
                    if stop {
                        prop_assert!(!t.events.iter().any(|e| matches!(e.event, Event::StepStarted { .. })), "a stop started a step");
                    }
                    // Once the run is ending, only cleanup steps start.
                    for e in &t.events {
                        if let Event::StepStarted { step, .. } = &e.event {
                            let i = sim.run.steps.iter().position(|s| &s.id == step).unwrap();
                            let ending_before_start = t.events.iter().take_while(|x| x.seq < e.seq).any(|x| matches!(x.event, Event::RunEnding { .. } | Event::CancelRequested { .. })) || before.ending.is_some();
                            prop_assert!(cleanup[i] || !ending_before_start, "main step {} started while the run was ending", step);
                            // A gated step starts only once approved.
                        }
                    }
                    // A terminal run stays terminal and unchanged.
                    if was_terminal {
                        prop_assert!(t.events.is_empty());
                        prop_assert_eq!(&sim.run, &before);
                    }
                }
                Err(CoreError::Rejected(_)) => prop_assert_eq!(&sim.run, &before, "a rejected input changes nothing"),
                Err(CoreError::Invariant(e)) => prop_assert!(false, "invariant broken: {}", e),
            }
            for (i, (s, p)) in sim.run.steps.iter().zip(&sim.plan.steps).enumerate() {
                // A settled step never changes again.
                if settled_once[i] {
                    prop_assert!(s.state.is_settled(), "step {} went from settled to {:?}", s.id, s.state);
                }
                settled_once[i] |= s.state.is_settled();
                // A gated step never ran without an approval.
                if p.gate.is_some() && s.attempts > 0 {
                    prop_assert!(s.approval.is_some(), "gated step {} ran without approval", s.id);
                }
            }
            was_terminal |= sim.run.status.is_terminal();
            if sim.run.status.is_terminal() {
                prop_assert!(sim.run.steps.iter().all(|s| !s.state.is_active()), "a terminal run with a running step");
            }
            if sim.run.status == RunStatus::Succeeded {
                prop_assert!(sim.run.steps.iter().all(|s| s.state.is_settled()));
            }
        }
        // The snapshot is the fold of its history.
        prop_assert_eq!(replay(&sim.history).unwrap(), sim.run.clone());
    }
}

#[test]
fn a_held_run_starts_nothing_until_its_first_step_is_approved() {
    let plan = chain(2, ResumeClass::Idempotent);
    let t = create(header(&plan), 1_000, None, Some("alert X fired; start the recovery?".into())).unwrap();
    assert_eq!(Sim::kinds(&t), vec!["run-created", "step-gated", "run-paused"]);
    let mut sim = Sim { plan, run: t.run, history: t.events, now: 1_000 };
    assert_eq!(sim.run.status, RunStatus::Paused);
    // A tick (a driver taking it up) starts nothing while the gate waits.
    let t = sim.feed(Input::Tick).unwrap();
    assert!(Sim::executes(&t).is_empty());
    assert_eq!(sim.run.status, RunStatus::Paused);
    let t = sim.feed(Input::Operator(OperatorInput::Approve { step: 0, by: op_by() })).unwrap();
    assert_eq!(Sim::executes(&t), vec![(0, 1)]);
    assert_eq!(sim.run.steps[0].approval.as_ref().map(|a| a.by.as_str()), Some("tester"));
    assert_eq!(replay(&sim.history).unwrap(), sim.run);
}

#[test]
fn a_report_field_is_recorded_on_a_running_or_ended_run_and_changes_nothing_else() {
    let mut sim = Sim::new(chain(1, ResumeClass::Idempotent));
    sim.feed(Input::Tick).unwrap();
    let before = sim.run.clone();
    let t = annotate(&sim.run, "cause", "disk full", "tester", sim.now + 5).unwrap();
    assert!(t.commands.is_empty());
    assert_eq!(Sim::kinds(&t), vec!["report-field-set"]);
    // Only the event count moves: not the status, not updated_at (a stopped run's frozen clock).
    assert_eq!(RunRecord { next_seq: before.next_seq, ..t.run.clone() }, before);
    assert_eq!(t.run.next_seq, before.next_seq + 1);
    sim.history.extend(t.events);
    sim.run = t.run;
    sim.succeed(0);
    assert_eq!(sim.run.status, RunStatus::Succeeded);
    // An ended run takes it too, and the history still replays to the snapshot.
    let t = annotate(&sim.run, "lessons", "watch the disk", "tester", sim.now + 9).unwrap();
    sim.history.extend(t.events);
    assert_eq!(replay(&sim.history).unwrap(), t.run);
    assert_eq!(t.run.finished_at, sim.run.finished_at);
    // Only the known fields.
    assert!(matches!(annotate(&sim.run, "blame", "x", "tester", 0), Err(CoreError::Rejected(m)) if m.contains("cause, impact, lessons")));
}
