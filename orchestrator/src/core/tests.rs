use super::*;
use crate::definition::{PlanStep, ResumeClass};
use crate::retry::RetryPolicy;
use dr_state::{RunId, StepRecord};
use proptest::prelude::*;

fn plan(specs: &[(Vec<usize>, ResumeClass, u32, bool)]) -> Plan {
    Plan {
        steps: specs
            .iter()
            .enumerate()
            .map(|(i, (deps, resume, attempts, fatal))| PlanStep {
                id: format!("step-{}", i + 1),
                deps: deps.clone(),
                retry: RetryPolicy { max_attempts: *attempts, initial_backoff_ms: 100, max_backoff_ms: 1000, multiplier: 2, jitter_percent: 10 },
                timeout_ms: 5_000,
                expected_ms: 1000,
                resume: *resume,
                fatal: *fatal,
            })
            .collect(),
    }
}

fn chain(n: usize, resume: ResumeClass) -> Plan {
    plan(&(0..n).map(|i| (if i == 0 { vec![] } else { vec![i - 1] }, resume, 2, false)).collect::<Vec<_>>())
}

fn new_run(plan: &Plan) -> RunRecord {
    RunRecord {
        id: RunId::new_v7(1_000, 42),
        workflow: "synthetic".into(),
        definition_hash: "h".into(),
        definition_steps: vec![],
        params: Default::default(),
        level: 1,
        target_secs: 900,
        status: RunStatus::Running,
        reason: None,
        incident_at: 1_000,
        started_at: 1_000,
        finished_at: None,
        updated_at: 1_000,
        next_seq: 0,
        epoch: 0,
        cancel_requested: false,
        steps: plan.steps.iter().map(|s| StepRecord::new(s.id.clone())).collect(),
    }
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
        let t = create(new_run(&plan), 1_000).unwrap();
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

    fn succeed(&mut self, step: usize) -> Transition {
        let attempt = self.run.steps[step].attempts;
        self.feed(Input::ActionDone { step, attempt, result: Ok(format!("ok {step}")) }).unwrap()
    }
}

#[test]
fn a_chain_runs_step_by_step_and_finish_and_next_start_share_a_transition() {
    let mut sim = Sim::new(chain(3, ResumeClass::Idempotent));
    let t = sim.feed(Input::Tick).unwrap();
    assert_eq!(Sim::executes(&t), vec![(0, 1)]);
    let t = sim.succeed(0);
    let kinds: Vec<&str> = t.events.iter().map(|e| e.event.kind()).collect();
    assert_eq!(kinds, vec!["step-succeeded", "step-started"]);
    assert_eq!(Sim::executes(&t), vec![(1, 1)]);
    sim.succeed(1);
    let t = sim.succeed(2);
    assert_eq!(t.events.last().unwrap().event, Event::RunSucceeded);
    assert_eq!(sim.run.status, RunStatus::Succeeded);
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
    let t = sim.feed(Input::ActionDone { step: 0, attempt: 1, result: Err(("boom".into(), true)) }).unwrap();
    let wake = t.commands.iter().find_map(|c| match c {
        Command::WakeAt { at } => Some(*at),
        _ => None,
    });
    let at = wake.expect("a retry timer");
    assert_eq!(sim.run.steps[0].status, StepStatus::Waiting);
    assert_eq!(sim.run.steps[0].wait_until, Some(at));
    // A tick before the deadline starts nothing; one after it does.
    let t = sim.feed(Input::Tick).unwrap();
    assert!(Sim::executes(&t).is_empty());
    sim.now = at;
    let t = sim.feed(Input::Tick).unwrap();
    assert_eq!(Sim::executes(&t), vec![(0, 2)]);
    sim.feed(Input::ActionDone { step: 0, attempt: 2, result: Err(("boom again".into(), true)) }).unwrap();
    assert_eq!(sim.run.status, RunStatus::Paused);
    assert_eq!(sim.run.steps[0].status, StepStatus::Failed);
    assert!(sim.run.reason.as_deref().unwrap().contains("boom again"));
    // Retry gives a fresh budget and starts it now.
    let t = sim.feed(Input::Operator(OperatorInput::Retry { step: None })).unwrap();
    assert_eq!(Sim::executes(&t), vec![(0, 3)]);
    assert_eq!(sim.run.status, RunStatus::Running);
}

#[test]
fn a_permanent_error_does_not_retry_and_a_fatal_step_fails_the_run() {
    let p = plan(&[(vec![], ResumeClass::Idempotent, 5, true)]);
    let mut sim = Sim::new(p);
    sim.feed(Input::Tick).unwrap();
    sim.feed(Input::ActionDone { step: 0, attempt: 1, result: Err(("bad config".into(), false)) }).unwrap();
    assert_eq!(sim.run.status, RunStatus::Failed);
    // Terminal stays terminal.
    let t = sim.feed(Input::Tick).unwrap();
    assert!(t.events.is_empty() && t.commands.is_empty());
    assert!(sim.feed(Input::Operator(OperatorInput::Retry { step: Some(0) })).is_err());
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
                let t = sim.feed(Input::ProbeDone { step: 0, attempt: 1, result: Ok(true) }).unwrap();
                assert_eq!(sim.run.steps[0].status, StepStatus::Succeeded);
                assert_eq!(Sim::executes(&t), vec![(1, 1)]);
            }
            _ => {
                assert_eq!(sim.run.status, RunStatus::Paused);
                assert!(sim.run.steps[0].awaiting_operator);
                let t = sim.feed(Input::Operator(OperatorInput::Approve { step: 0 })).unwrap();
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
    let t = sim.feed(Input::ActionDone { step: 0, attempt: 1, result: Ok("late".into()) }).unwrap();
    assert!(t.events.is_empty());
    assert_eq!(sim.run.steps[0].status, StepStatus::Running);
}

#[test]
fn cancel_stops_running_steps_then_ends_the_run() {
    let mut sim = Sim::new(chain(2, ResumeClass::Idempotent));
    sim.feed(Input::Tick).unwrap();
    let t = sim.feed(Input::Operator(OperatorInput::Cancel { reason: "operator".into() })).unwrap();
    assert_eq!(t.commands, vec![Command::Cancel { step: 0 }]);
    assert_eq!(sim.run.status, RunStatus::Running);
    sim.feed(Input::ActionDone { step: 0, attempt: 1, result: Err(("cancelled".into(), true)) }).unwrap();
    assert_eq!(sim.run.status, RunStatus::Cancelled);
    assert_eq!(sim.run.steps[0].status, StepStatus::Failed);
}

#[test]
fn cancel_with_resume_of_a_crashed_run_never_restarts_a_step() {
    let mut sim = Sim::new(chain(2, ResumeClass::Idempotent));
    sim.feed(Input::Tick).unwrap();
    let t = sim
        .feed(Input::Resume { by: "t".into(), operator: Some(OperatorInput::Cancel { reason: "stop".into() }) })
        .unwrap();
    assert!(Sim::executes(&t).is_empty());
    assert_eq!(sim.run.status, RunStatus::Cancelled);
}

#[test]
fn skip_marks_a_step_done_and_the_run_goes_on() {
    let mut sim = Sim::new(chain(2, ResumeClass::Confirm));
    sim.feed(Input::Tick).unwrap();
    sim.feed(Input::Resume { by: "t".into(), operator: None }).unwrap();
    let t = sim.feed(Input::Operator(OperatorInput::Skip { step: 0, reason: "done by hand".into() })).unwrap();
    assert_eq!(sim.run.steps[0].status, StepStatus::Skipped);
    assert_eq!(sim.run.steps[0].skip_reason.as_deref(), Some("done by hand"));
    assert_eq!(Sim::executes(&t), vec![(1, 1)]);
    // Approving a step that does not wait is refused, and changes nothing.
    let before = sim.run.clone();
    assert!(matches!(sim.feed(Input::Operator(OperatorInput::Approve { step: 1 })), Err(CoreError::Rejected(_))));
    assert_eq!(sim.run, before);
}

#[test]
fn a_failed_probe_asks_the_operator() {
    let mut sim = Sim::new(chain(1, ResumeClass::Probe));
    sim.feed(Input::Tick).unwrap();
    sim.feed(Input::Resume { by: "t".into(), operator: None }).unwrap();
    sim.feed(Input::ProbeDone { step: 0, attempt: 1, result: Err("cannot read trace".into()) }).unwrap();
    assert_eq!(sim.run.status, RunStatus::Paused);
    assert!(sim.run.steps[0].awaiting_operator);
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

// ---- properties ----

#[derive(Clone, Debug)]
enum Op {
    Tick,
    Resume,
    Done { step: usize, current: bool, ok: bool, retryable: bool },
    Probed { step: usize, result: Option<bool> },
    Approve(usize),
    Skip(usize),
    Retry(Option<usize>),
    Cancel,
    Stop,
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Tick),
        1 => Just(Op::Resume),
        8 => (0..6usize, prop::bool::weighted(0.9), prop::bool::weighted(0.7), any::<bool>())
            .prop_map(|(step, current, ok, retryable)| Op::Done { step, current, ok, retryable }),
        2 => (0..6usize, prop::option::of(any::<bool>())).prop_map(|(step, result)| Op::Probed { step, result }),
        1 => (0..6usize).prop_map(Op::Approve),
        1 => (0..6usize).prop_map(Op::Skip),
        1 => prop::option::of(0..6usize).prop_map(Op::Retry),
        1 => Just(Op::Cancel),
        1 => Just(Op::Stop),
        2 => (0..3000u16).prop_map(Op::Advance),
    ]
}

fn plan_strategy() -> impl Strategy<Value = Plan> {
    (1..6usize)
        .prop_flat_map(|n| {
            prop::collection::vec(
                (
                    any::<u8>(),
                    prop_oneof![Just(ResumeClass::Idempotent), Just(ResumeClass::Probe), Just(ResumeClass::Confirm)],
                    1..4u32,
                    prop::bool::weighted(0.2),
                ),
                n,
            )
        })
        .prop_map(|specs| {
            let specs: Vec<(Vec<usize>, ResumeClass, u32, bool)> = specs
                .into_iter()
                .enumerate()
                .map(|(i, (mask, class, attempts, fatal))| {
                    let deps = (0..i).filter(|d| mask & (1 << (d % 8)) != 0).collect();
                    (deps, class, attempts, fatal)
                })
                .collect();
            plan(&specs)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_inputs_keep_every_invariant(p in plan_strategy(), ops in prop::collection::vec(op(), 1..80)) {
        let n = p.steps.len();
        let mut sim = Sim::new(p);
        sim.feed(Input::Tick).unwrap();
        let mut done_once = vec![false; n];
        let mut was_terminal = false;
        for op in ops {
            let before = sim.run.clone();
            let input = match op {
                Op::Tick => Input::Tick,
                Op::Resume => Input::Resume { by: "prop".into(), operator: None },
                Op::Done { step, current, ok, retryable } => {
                    let step = step % n;
                    let attempt = if current { sim.run.steps[step].attempts } else { sim.run.steps[step].attempts + 1 };
                    let result = if ok { Ok("ok".to_owned()) } else { Err(("err".to_owned(), retryable)) };
                    Input::ActionDone { step, attempt, result }
                }
                Op::Probed { step, result } => {
                    let step = step % n;
                    Input::ProbeDone { step, attempt: sim.run.steps[step].attempts, result: result.ok_or_else(|| "probe error".to_owned()) }
                }
                Op::Approve(s) => Input::Operator(OperatorInput::Approve { step: s % n }),
                Op::Skip(s) => Input::Operator(OperatorInput::Skip { step: s % n, reason: "prop".into() }),
                Op::Retry(s) => Input::Operator(OperatorInput::Retry { step: s.map(|s| s % n) }),
                Op::Cancel => Input::Operator(OperatorInput::Cancel { reason: "prop".into() }),
                Op::Stop => Input::Stopped { signal: "SIGTERM".into() },
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
                    // A terminal run stays terminal and unchanged.
                    if was_terminal {
                        prop_assert!(t.events.is_empty());
                        prop_assert_eq!(&sim.run, &before);
                    }
                }
                Err(CoreError::Rejected(_)) => prop_assert_eq!(&sim.run, &before, "a rejected input changes nothing"),
                Err(CoreError::Invariant(e)) => prop_assert!(false, "invariant broken: {}", e),
            }
            // A finished step never starts again.
            for (i, s) in sim.run.steps.iter().enumerate() {
                if done_once[i] {
                    prop_assert!(s.status.is_done(), "step {} went from done to {:?}", s.id, s.status);
                }
                done_once[i] |= s.status.is_done();
            }
            was_terminal |= sim.run.status.is_terminal();
            if sim.run.status == RunStatus::Succeeded {
                prop_assert!(sim.run.steps.iter().all(|s| s.status.is_done()));
            }
        }
        // The snapshot is the fold of its history.
        prop_assert_eq!(replay(&sim.history).unwrap(), sim.run.clone());
    }
}
