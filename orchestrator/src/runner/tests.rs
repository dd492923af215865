use super::*;
use crate::clock::SystemClock;
use crate::action::{Action, ActionOutput, BoxFuture};
use crate::definition::{CatalogError, StepDef, WorkflowInfo};
use crate::retry::RetryPolicy;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// A step action for tests: sleeps, then fails its first `fail` attempts.
struct TestAction {
    sleep_ms: u64,
    fail: u32,
    calls: Arc<AtomicU32>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Action for TestAction {
    fn kind(&self) -> &'static str {
        "test"
    }
    fn params(&self) -> serde_json::Value {
        serde_json::json!({ "sleep_ms": self.sleep_ms, "fail": self.fail })
    }
    fn run(&self, ctx: ActionCtx) -> BoxFuture<'_, Result<ActionOutput, ActionError>> {
        Box::pin(async move {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            self.log.lock().unwrap().push(format!("{} attempt-{}", ctx.step, ctx.attempt));
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(self.sleep_ms)) => {}
                () = ctx.cancel.cancelled() => return Err(ActionError::retryable("cancelled")),
            }
            if n <= self.fail {
                return Err(ActionError::retryable(format!("failure {n}")));
            }
            // The value carries what the step received from the step before it.
            let received: Vec<serde_json::Value> =
                ctx.inputs.values().map(|o| serde_json::from_str(&o.value).unwrap_or_default()).collect();
            Ok(ActionOutput::with_value(format!("{} done", ctx.step), serde_json::json!({ "call": n, "received": received })))
        })
    }
}

#[derive(Default)]
struct TestCatalog {
    log: Arc<Mutex<Vec<String>>>,
    calls: Arc<AtomicU32>,
}

impl Catalog for TestCatalog {
    fn workflows(&self) -> Vec<WorkflowInfo> {
        vec![]
    }
    fn build(&self, name: &str, params: &BTreeMap<String, String>) -> Result<WorkflowDef, CatalogError> {
        let get = |k: &str, d: u64| params.get(k).and_then(|v| v.parse().ok()).unwrap_or(d);
        let steps = get("steps", 3) as usize;
        let steps = (1..=steps)
            .map(|i| {
                let action = Arc::new(TestAction {
                    sleep_ms: get("sleep_ms", 5),
                    fail: if i as u64 == get("fail_at", 0) { get("fail", 0) as u32 } else { 0 },
                    calls: Arc::clone(&self.calls),
                    log: Arc::clone(&self.log),
                });
                StepDef {
                    depends_on: if i == 1 { vec![] } else { vec![format!("step-{}", i - 1).into()] },
                    retry: RetryPolicy { max_attempts: get("attempts", 3) as u32, initial_backoff_ms: 10, max_backoff_ms: 50, multiplier: 2, jitter_percent: 0 },
                    timeout_ms: get("timeout_ms", 10_000),
                    expected_ms: 100,
                    ..StepDef::new(format!("step-{i}"), "", action)
                }
            })
            .collect();
        let config_digest = params.get("config").cloned();
        Ok(WorkflowDef { name: name.to_owned(), level: 1, target_secs: 0, description: String::new(), steps, config_digest, config_path: None })
    }
}

fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn runner(dir: &std::path::Path, catalog: Arc<TestCatalog>) -> Runner {
    let store = Arc::new(dr_state::SledStore::open(dir).unwrap());
    Runner::new(store, catalog, Arc::new(SystemClock), RunnerOptions::default())
}

#[tokio::test]
async fn a_run_succeeds_and_its_history_replays_to_its_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Arc::new(TestCatalog::default());
    let r = runner(dir.path(), Arc::clone(&catalog));
    let run = r.create("w", params(&[("steps", "4")]), None, None).await.unwrap();
    let out = r.drive(run.id, DriveOptions::default()).await.unwrap();
    assert_eq!(out.run.status, RunStatus::Succeeded);
    assert_eq!(catalog.log.lock().unwrap().len(), 4);
    let loaded = r.load_checked(run.id).await.unwrap();
    assert_eq!(loaded, out.run);
    assert_eq!(r.store().durations("w", "step-2").unwrap().len(), 1);
    assert_eq!(loaded.target_secs, 15 * 60);
}

#[tokio::test]
async fn retries_back_off_and_exhaustion_pauses_then_retry_continues() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Arc::new(TestCatalog::default());
    let r = runner(dir.path(), Arc::clone(&catalog));
    let run = r.create("w", params(&[("steps", "2"), ("fail_at", "1"), ("fail", "3"), ("attempts", "2")]), None, None).await.unwrap();
    let out = r.drive(run.id, DriveOptions::default()).await.unwrap();
    assert_eq!(out.run.status, RunStatus::Paused);
    assert!(matches!(out.run.steps[0].state, StepState::Failed { tolerated: false, .. }));
    assert_eq!(out.run.steps[0].attempts, 2);
    assert!(out.run.reason.as_deref().unwrap().contains("failure 2"), "{:?}", out.run.reason);
    let retry = DriveOptions { resume: true, operator: Some(OperatorCommand::Retry { step: Some("step-1".into()), by: "t".into() }), ..Default::default() };
    let out = r.drive(run.id, retry).await.unwrap();
    // The third call still fails; a fresh budget of 2 means a fourth succeeds.
    assert_eq!(out.run.status, RunStatus::Succeeded, "{:?}", out.run.reason);
    assert_eq!(out.run.steps[0].attempts, 4);
}

#[tokio::test]
async fn a_step_that_outlives_its_timeout_fails_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Arc::new(TestCatalog::default());
    let r = runner(dir.path(), Arc::clone(&catalog));
    let p = params(&[("steps", "1"), ("sleep_ms", "10000"), ("timeout_ms", "50"), ("attempts", "1")]);
    let run = r.create("w", p, None, None).await.unwrap();
    let started = std::time::Instant::now();
    let out = r.drive(run.id, DriveOptions::default()).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(out.run.status, RunStatus::Paused);
    let StepState::Failed { error, .. } = &out.run.steps[0].state else { panic!("failed") };
    assert!(error.contains("timed out after 50ms"), "{error}");
}

#[tokio::test]
async fn stopping_leaves_a_resumable_run_and_resume_reruns_the_interrupted_step() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Arc::new(TestCatalog::default());
    let r = runner(dir.path(), Arc::clone(&catalog));
    let run = r.create("w", params(&[("steps", "2"), ("sleep_ms", "300")]), None, None).await.unwrap();
    let token = r.shutdown_token();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        token.cancel();
    });
    let out = r.drive(run.id, DriveOptions::default()).await.unwrap();
    assert!(out.interrupted);
    assert_eq!(out.run.status, RunStatus::Running);
    assert!(matches!(out.run.steps[0].state, StepState::Running { .. }));
    drop(r);

    let r = runner(dir.path(), Arc::clone(&catalog));
    let out = r.drive(run.id, DriveOptions { resume: true, ..Default::default() }).await.unwrap();
    assert_eq!(out.run.status, RunStatus::Succeeded);
    let log = catalog.log.lock().unwrap().clone();
    assert_eq!(log, vec!["step-1 attempt-1", "step-1 attempt-2", "step-2 attempt-1"]);
    let kinds: Vec<&str> = r.store().events(run.id).unwrap().iter().map(|e| e.event.kind()).collect();
    assert!(kinds.contains(&"process-stopped") && kinds.contains(&"step-interrupted"), "{kinds:?}");
}

/// An action that runs until its attempt is cancelled, and records that it
/// saw the cancellation (it never ends on its own).
struct UntilCancelled {
    started: Arc<tokio::sync::Notify>,
    saw_cancel: Arc<AtomicU32>,
}

impl Action for UntilCancelled {
    fn kind(&self) -> &'static str {
        "test.until-cancelled"
    }
    fn params(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    fn run(&self, ctx: ActionCtx) -> BoxFuture<'_, Result<ActionOutput, ActionError>> {
        Box::pin(async move {
            self.started.notify_one();
            ctx.cancel.cancelled().await;
            self.saw_cancel.fetch_add(1, Ordering::SeqCst);
            Err(ActionError::retryable("stopped: the attempt was cancelled"))
        })
    }
}

#[derive(Default)]
struct CancelCatalog {
    started: Arc<tokio::sync::Notify>,
    saw_cancel: Arc<AtomicU32>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Catalog for CancelCatalog {
    fn workflows(&self) -> Vec<WorkflowInfo> {
        vec![]
    }
    fn build(&self, name: &str, _params: &BTreeMap<String, String>) -> Result<WorkflowDef, CatalogError> {
        let waits = Arc::new(UntilCancelled { started: Arc::clone(&self.started), saw_cancel: Arc::clone(&self.saw_cancel) });
        let after = Arc::new(TestAction { sleep_ms: 0, fail: 0, calls: Arc::new(AtomicU32::new(0)), log: Arc::clone(&self.log) });
        let steps = vec![
            StepDef { retry: RetryPolicy::none(), timeout_ms: 0, ..StepDef::new("waits", "", waits) },
            StepDef { depends_on: vec!["waits".into()], ..StepDef::new("after", "", after) },
        ];
        Ok(WorkflowDef { name: name.to_owned(), level: 1, target_secs: 0, description: String::new(), steps, config_digest: None, config_path: None })
    }
}

#[tokio::test]
async fn cancel_reaches_a_running_step() {
    let catalog = Arc::new(CancelCatalog::default());
    let store = Arc::new(dr_state::MemStore::new());
    let r = Runner::new(store, Arc::clone(&catalog) as Arc<dyn Catalog>, Arc::new(SystemClock), RunnerOptions::default());
    let run = r.create("w", BTreeMap::new(), None, None).await.unwrap();
    let driving = r.clone();
    let drive = tokio::spawn(async move { driving.drive(run.id, DriveOptions::default()).await });
    // The attempt is running (its start is durable, the action is waiting).
    catalog.started.notified().await;
    assert_eq!(catalog.saw_cancel.load(Ordering::SeqCst), 0);
    let cancel = OperatorCommand::Cancel { reason: "test".into(), by: "t".into() };
    let decided = r.operate(run.id, cancel).await.unwrap().expect("the run is driven here");
    assert_eq!(decided.status, RunStatus::Running, "the run waits for its running step to stop");
    // Not a speed limit: an attempt the cancel never reached would hang the test instead of failing it.
    let out = tokio::time::timeout(Duration::from_secs(60), drive).await.expect("the cancel reached the attempt").unwrap().unwrap();
    assert_eq!(catalog.saw_cancel.load(Ordering::SeqCst), 1, "the attempt observed the cancellation");
    assert_eq!(out.run.status, RunStatus::Cancelled, "{:?}", out.run.reason);
    assert!(matches!(out.run.steps[0].state, StepState::Cancelled { .. }), "{:?}", out.run.steps[0].state);
    assert!(matches!(out.run.steps[1].state, StepState::Pending), "{:?}", out.run.steps[1].state);
    assert!(catalog.log.lock().unwrap().is_empty(), "nothing starts after a cancel");
    assert_eq!(r.load_checked(run.id).await.unwrap(), out.run);
    let kinds: Vec<&str> = r.store().events(run.id).unwrap().iter().map(|e| e.event.kind()).collect();
    let at = |k: &str| kinds.iter().position(|x| *x == k).unwrap_or_else(|| panic!("no {k}: {kinds:?}"));
    assert!(at("step-started") < at("cancel-requested") && at("cancel-requested") < at("step-cancelled"), "{kinds:?}");
    assert!(at("step-cancelled") < at("run-cancelled"), "{kinds:?}");
}

#[tokio::test]
async fn cancelling_an_interrupted_run_does_not_start_its_step_again() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Arc::new(TestCatalog::default());
    let r = runner(dir.path(), Arc::clone(&catalog));
    let run = r.create("w", params(&[("steps", "2"), ("sleep_ms", "60000")]), None, None).await.unwrap();
    let token = r.shutdown_token();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        token.cancel();
    });
    r.drive(run.id, DriveOptions::default()).await.unwrap();
    drop(r);
    let r = runner(dir.path(), Arc::clone(&catalog));
    let cancel = DriveOptions { resume: true, operator: Some(OperatorCommand::Cancel { reason: "test".into(), by: "t".into() }), ..Default::default() };
    let started = std::time::Instant::now();
    let out = r.drive(run.id, cancel).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(out.run.status, RunStatus::Cancelled);
    assert_eq!(catalog.log.lock().unwrap().len(), 1, "the interrupted step is not started again");
}

#[tokio::test]
async fn a_changed_definition_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Arc::new(TestCatalog::default());
    let r = runner(dir.path(), Arc::clone(&catalog));
    let run = r.create("w", params(&[("steps", "2"), ("fail_at", "1"), ("fail", "9"), ("attempts", "1")]), None, None).await.unwrap();
    let out = r.drive(run.id, DriveOptions::default()).await.unwrap();
    assert_eq!(out.run.status, RunStatus::Paused);
    // Pretend the binary changed: the run was pinned to another definition.
    let mut tampered = out.run.clone();
    tampered.definition_hash = "0000".into();
    tampered.definition_steps[1].1 = "different".into();
    let mut events = r.store().events(run.id).unwrap();
    if let Event::RunCreated { header } = &mut events[0].event {
        header.definition_hash = "0000".into();
        header.definition_steps[1].1 = "different".into();
    }
    drop(r);
    let store = Arc::new(dr_state::MemStore::new());
    store.append(&tampered, &events).unwrap();
    let r = Runner::new(store, catalog, Arc::new(SystemClock), RunnerOptions::default());
    let err = r.drive(run.id, DriveOptions { resume: true, ..Default::default() }).await.unwrap_err();
    assert!(matches!(err, Error::DefinitionChanged { .. }), "{err}");
    assert!(err.to_string().contains("step step-2 changed"), "{err}");
    let allowed = DriveOptions { resume: true, allow_definition_change: true, ..Default::default() };
    let out = r.drive(run.id, allowed).await.unwrap();
    assert_eq!(out.run.status, RunStatus::Paused);
    assert_ne!(out.run.definition_hash, "0000");
}

#[tokio::test]
async fn many_runs_at_once_share_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Arc::new(TestCatalog::default());
    let store = Arc::new(dr_state::SledStore::open(dir.path()).unwrap());
    let r = Runner::new(Arc::clone(&store) as Arc<dyn Store>, catalog, Arc::new(SystemClock), RunnerOptions::default());
    let mut ids = Vec::new();
    for _ in 0..50 {
        ids.push(r.create("w", params(&[("steps", "5"), ("sleep_ms", "0")]), None, None).await.unwrap().id);
    }
    let before = store.sync_stats().syncs;
    let handles: Vec<_> = ids.iter().map(|&id| {
        let r = r.clone();
        tokio::spawn(async move { r.drive(id, DriveOptions::default()).await })
    }).collect();
    for h in handles {
        assert_eq!(h.await.unwrap().unwrap().run.status, RunStatus::Succeeded);
    }
    let syncs = store.sync_stats().syncs - before;
    // 50 runs × (1 start + 5 step transitions) = 300 durable transitions.
    assert!(syncs < 300, "group commit should share syncs, got {syncs}");
}

#[tokio::test]
async fn a_step_receives_its_dependency_s_recorded_output_after_a_stop_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Arc::new(TestCatalog::default());
    let r = runner(dir.path(), Arc::clone(&catalog));
    let run = r.create("w", params(&[("steps", "2"), ("sleep_ms", "300")]), None, None).await.unwrap();
    let token = r.shutdown_token();
    tokio::spawn(async move {
        // Step 1 (300 ms) has finished, step 2 is running.
        tokio::time::sleep(Duration::from_millis(450)).await;
        token.cancel();
    });
    let out = r.drive(run.id, DriveOptions::default()).await.unwrap();
    assert!(out.interrupted);
    let produced = out.run.steps[0].state.output().expect("step-1 succeeded").value.clone();
    drop(r);
    let r = runner(dir.path(), Arc::clone(&catalog));
    let out = r.drive(run.id, DriveOptions { resume: true, ..Default::default() }).await.unwrap();
    assert_eq!(out.run.status, RunStatus::Succeeded);
    let log = catalog.log.lock().unwrap().clone();
    assert_eq!(log.iter().filter(|l| l.starts_with("step-1")).count(), 1, "the producer ran once: {log:?}");
    let consumed: serde_json::Value = serde_json::from_str(&out.run.steps[1].state.output().unwrap().value).unwrap();
    let produced: serde_json::Value = serde_json::from_str(&produced).unwrap();
    assert_eq!(consumed["received"], serde_json::json!([produced]), "step-2 got step-1's recorded output");
}

#[tokio::test]
async fn a_changed_configuration_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Arc::new(TestCatalog::default());
    let r = runner(dir.path(), Arc::clone(&catalog));
    let pinned = params(&[("steps", "1"), ("fail_at", "1"), ("fail", "9"), ("attempts", "1"), ("config", "aaaa")]);
    let run = r.create("w", pinned, None, None).await.unwrap();
    assert_eq!(run.config_digest.as_deref(), Some("aaaa"));
    r.drive(run.id, DriveOptions::default()).await.unwrap();
    drop(r);
    // The same workflow now builds from another configuration (TestCatalog reads the digest from a parameter).
    let mut events = dr_state::SledStore::open(dir.path()).unwrap().events(run.id).unwrap();
    let mut snapshot = dr_state::SledStore::open(dir.path()).map(|_| ()).ok();
    let _ = snapshot.take();
    if let Event::RunCreated { header } = &mut events[0].event {
        header.config_digest = Some("bbbb".into());
    }
    let replayed = crate::core::replay(&events).unwrap();
    let store = Arc::new(dr_state::MemStore::new());
    store.append(&replayed, &events).unwrap();
    let r = Runner::new(store, catalog, Arc::new(SystemClock), RunnerOptions::default());
    let err = r.drive(run.id, DriveOptions { resume: true, ..Default::default() }).await.unwrap_err();
    assert!(matches!(err, Error::ConfigChanged { .. }), "{err}");
    assert!(err.to_string().contains("bbbb then, aaaa now"), "{err}");
    let allowed = DriveOptions { resume: true, allow_definition_change: true, ..Default::default() };
    let out = r.drive(run.id, allowed).await.unwrap();
    assert_eq!(out.run.config_digest.as_deref(), Some("aaaa"));
}

/// An action with a bug: it panics.
struct Panicking;

impl Action for Panicking {
    fn kind(&self) -> &'static str {
        "test.panic"
    }
    fn params(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    fn run(&self, _ctx: ActionCtx) -> BoxFuture<'_, Result<ActionOutput, ActionError>> {
        Box::pin(async { panic!("index out of bounds") })
    }
}

struct PanicCatalog;

impl Catalog for PanicCatalog {
    fn workflows(&self) -> Vec<WorkflowInfo> {
        vec![]
    }
    fn build(&self, name: &str, _params: &BTreeMap<String, String>) -> Result<WorkflowDef, CatalogError> {
        let step = StepDef { retry: RetryPolicy::none(), ..StepDef::new("boom", "", Arc::new(Panicking)) };
        Ok(WorkflowDef { name: name.to_owned(), level: 1, target_secs: 0, description: String::new(), steps: vec![step], config_digest: None, config_path: None })
    }
}

#[tokio::test]
async fn a_panicking_action_fails_its_step_instead_of_hanging_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(dr_state::SledStore::open(dir.path()).unwrap());
    let r = Runner::new(store, Arc::new(PanicCatalog), Arc::new(SystemClock), RunnerOptions::default());
    let run = r.create("w", BTreeMap::new(), None, None).await.unwrap();
    let out = tokio::time::timeout(Duration::from_secs(10), r.drive(run.id, DriveOptions::default())).await.expect("no hang").unwrap();
    assert_eq!(out.run.status, RunStatus::Paused);
    let StepState::Failed { error, .. } = &out.run.steps[0].state else { panic!("failed: {:?}", out.run.steps[0].state) };
    assert!(error.contains("panicked") && error.contains("index out of bounds"), "{error}");
}

#[tokio::test]
async fn a_run_is_driven_by_one_drive_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Arc::new(TestCatalog::default());
    let r = runner(dir.path(), Arc::clone(&catalog));
    let run = r.create("w", params(&[("steps", "1"), ("sleep_ms", "300")]), None, None).await.unwrap();
    let first = {
        let r = r.clone();
        tokio::spawn(async move { r.drive(run.id, DriveOptions::default()).await })
    };
    // While the first drive holds the run, a second (a resume, an adopted decision) is refused.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(r.driving(), vec![run.id]);
    let second = r.drive(run.id, DriveOptions { resume: true, ..Default::default() }).await;
    assert!(matches!(second, Err(Error::NotApplicable { .. })), "{second:?}");
    let out = first.await.unwrap().unwrap();
    assert_eq!(out.run.status, RunStatus::Succeeded);
    assert_eq!(catalog.log.lock().unwrap().clone(), vec!["step-1 attempt-1"], "the step ran once");
    assert!(r.driving().is_empty(), "the claim is released");
}

#[tokio::test]
async fn a_report_field_reaches_a_driven_run_through_its_driver_and_an_ended_run_directly() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Arc::new(TestCatalog::default());
    let r = runner(dir.path(), Arc::clone(&catalog));
    let run = r.create("w", params(&[("steps", "2"), ("sleep_ms", "300")]), None, None).await.unwrap();
    let driving = r.clone();
    let drive = tokio::spawn(async move { driving.drive(run.id, DriveOptions::default()).await });
    // While the first step runs: written by the driver, between its own transitions.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(r.is_driving(run.id));
    r.annotate(run.id, "cause", "a test", "t").await.unwrap();
    let out = drive.await.unwrap().unwrap();
    assert_eq!(out.run.status, RunStatus::Succeeded);
    // Once ended: written directly; the history still replays to the snapshot.
    let after = r.annotate(run.id, "lessons", "none", "t").await.unwrap();
    assert_eq!(after.status, RunStatus::Succeeded);
    assert_eq!(r.load_checked(run.id).await.unwrap(), after);
    let kinds: Vec<&str> = r.store().events(run.id).unwrap().iter().map(|e| e.event.kind()).filter(|k| *k == "report-field-set").collect();
    assert_eq!(kinds.len(), 2);
    assert!(matches!(r.annotate(run.id, "blame", "x", "t").await, Err(Error::NotApplicable { .. })));
}

/// A store whose `append_batch` stands for a slow sync: every batch it is
/// handed is recorded (the workflow names of its runs, in order) and then
/// blocks until the test releases it, as failed (the sync returned EIO: every
/// append of the batch fails, nothing is applied) or as durable (applied to
/// the in-memory store). With `auto`, batches are not held: a batch fails when
/// `fail_if` says so, else it is applied at once.
#[derive(Default)]
struct GatedStore {
    mem: dr_state::MemStore,
    gate: Mutex<Gate>,
    changed: std::sync::Condvar,
}

#[derive(Default)]
struct Gate {
    batches: Vec<Vec<String>>,
    /// How many batches (in order) the test let finish.
    released: usize,
    failing: BTreeSet<usize>,
    auto: bool,
    fail_if: Option<fn(&[dr_state::Append]) -> bool>,
}

impl GatedStore {
    fn automatic(fail_if: fn(&[dr_state::Append]) -> bool) -> Self {
        let store = GatedStore::default();
        store.lock().auto = true;
        store.lock().fail_if = Some(fail_if);
        store
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Gate> {
        self.gate.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Blocks until the store was handed `n` batches (the writer is a thread
    /// of its own, so blocking the test's runtime does not stop it).
    fn wait_for_batches(&self, n: usize) -> Vec<Vec<String>> {
        let (gate, timeout) = self
            .changed
            .wait_timeout_while(self.lock(), Duration::from_secs(30), |g| g.batches.len() < n)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        assert!(!timeout.timed_out(), "the writer never handed over batch {n}; batches so far: {:?}", gate.batches);
        gate.batches.clone()
    }

    /// Lets the oldest held batch finish: its sync fails or succeeds.
    fn release(&self, fail: bool) {
        let mut gate = self.lock();
        let n = gate.released;
        if fail {
            gate.failing.insert(n);
        }
        gate.released += 1;
        self.changed.notify_all();
    }

    fn stored_workflows(&self) -> BTreeSet<String> {
        self.mem.summaries().unwrap().into_iter().map(|s| s.unwrap().workflow).collect()
    }
}

impl Store for GatedStore {
    fn append(&self, run: &RunRecord, events: &[EventRecord]) -> dr_state::Result<()> {
        self.append_batch(vec![dr_state::Append::new(run.clone(), events.to_vec())]).pop().unwrap()
    }

    fn append_batch(&self, items: Vec<dr_state::Append>) -> Vec<dr_state::Result<()>> {
        let mut gate = self.lock();
        let n = gate.batches.len();
        gate.batches.push(items.iter().map(|a| a.run().workflow.clone()).collect());
        if gate.auto {
            if gate.fail_if.is_some_and(|f| f(&items)) {
                gate.failing.insert(n);
            }
            gate.released = n + 1;
        }
        self.changed.notify_all();
        // The sync: until the test says how it ended.
        let gate = self
            .changed
            .wait_while(gate, |g| g.released <= n)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if gate.failing.contains(&n) {
            let eio = || dr_state::Error::Poisoned { path: "gated".into(), cause: format!("fdatasync of batch {n} failed: EIO (injected)") };
            return items.iter().map(|_| Err(eio())).collect();
        }
        drop(gate);
        items.iter().map(|a| self.mem.append(a.run(), a.events())).collect()
    }

    fn load(&self, id: RunId) -> dr_state::Result<Option<RunRecord>> {
        self.mem.load(id)
    }
    fn events(&self, id: RunId) -> dr_state::Result<Vec<EventRecord>> {
        self.mem.events(id)
    }
    fn summaries(&self) -> dr_state::Result<Vec<dr_state::Result<dr_state::RunSummary>>> {
        self.mem.summaries()
    }
    fn open_runs(&self) -> dr_state::Result<Vec<RunId>> {
        self.mem.open_runs()
    }
    fn run_ids(&self) -> dr_state::Result<Vec<RunId>> {
        self.mem.run_ids()
    }
    fn record_duration(&self, workflow: &str, step: &str, millis: u64) -> dr_state::Result<()> {
        self.mem.record_duration(workflow, step, millis)
    }
    fn durations(&self, workflow: &str, step: &str) -> dr_state::Result<Vec<u64>> {
        self.mem.durations(workflow, step)
    }

    fn gc(&self, finished_before: i64, now: i64, dry_run: bool) -> dr_state::Result<Vec<dr_state::RunSummary>> {
        self.mem.gc(finished_before, now, dry_run)
    }
}

/// Polls a future once: `None` if it is still pending. A commit hands its
/// transition to the writer on its first poll, so after this the transition
/// is queued (or being written).
async fn poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match std::pin::Pin::new(&mut *f).poll(cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

#[tokio::test]
async fn group_commit_answers_each_transition_with_its_own_batch_s_sync() {
    let store = Arc::new(GatedStore::default());
    let r = Runner::new(Arc::clone(&store) as Arc<dyn Store>, Arc::new(TestCatalog::default()), Arc::new(SystemClock), RunnerOptions::default());
    let p = params(&[("steps", "1")]);
    // Each run's creation is one transition; the workflow name tells them apart in the batches.
    let mut a = Box::pin(r.create("a", p.clone(), None, None));
    assert!(poll_once(&mut a).await.is_none(), "a is not durable before its sync");
    assert_eq!(store.wait_for_batches(1), vec![vec!["a"]]);

    // b and c arrive while batch 0 (a alone) syncs.
    let mut b = Box::pin(r.create("b", p.clone(), None, None));
    let mut c = Box::pin(r.create("c", p.clone(), None, None));
    assert!(poll_once(&mut b).await.is_none());
    assert!(poll_once(&mut c).await.is_none());

    // Batch 0 succeeds: a is acknowledged, b and c are not (that sync did not cover them).
    store.release(false);
    let a = a.await.expect("a's batch was synced");
    assert_eq!(a.workflow, "a");
    let batches = store.wait_for_batches(2);
    assert_eq!(batches[1], vec!["b", "c"], "what arrived during a sync goes into the next batch");
    assert!(poll_once(&mut b).await.is_none(), "b is not acknowledged while its own batch syncs");
    assert!(poll_once(&mut c).await.is_none(), "c is not acknowledged while its own batch syncs");

    // d arrives while batch 1 syncs; batch 1's sync fails.
    let mut d = Box::pin(r.create("d", p.clone(), None, None));
    assert!(poll_once(&mut d).await.is_none());
    store.release(true);
    let batches = store.wait_for_batches(3);
    assert_eq!(batches[2], vec!["d"], "a failed batch is not written again with the next one: {batches:?}");
    assert!(poll_once(&mut d).await.is_none(), "d is not acknowledged by batch 1's (failed) sync");

    // Batch 2 succeeds; b and c, whose sync failed, are still never answered "durable".
    store.release(false);
    let d = d.await.expect("d's batch was synced");
    assert_eq!(d.workflow, "d");
    for (name, result) in [("b", b.await), ("c", c.await)] {
        let err = result.expect_err("a transition whose sync failed must not be acknowledged");
        assert!(matches!(err, Error::Store(dr_state::Error::Poisoned { .. })), "{name}: {err}");
    }
    assert_eq!(store.stored_workflows(), BTreeSet::from(["a".to_owned(), "d".to_owned()]));
    assert_eq!(store.wait_for_batches(3).len(), 3, "nothing was written again");
}

#[tokio::test]
async fn a_run_whose_step_result_was_not_synced_stops_with_an_error_and_starts_nothing_after_it() {
    // The first batch that records a step's success fails; every other batch is durable.
    fn step_succeeded(items: &[dr_state::Append]) -> bool {
        static FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        items.iter().any(|a| a.run().workflow == "doomed" && a.events().iter().any(|e| matches!(e.event, Event::StepSucceeded { .. })))
            && !FAILED.swap(true, Ordering::SeqCst)
    }
    let store = Arc::new(GatedStore::automatic(step_succeeded));
    let catalog = Arc::new(TestCatalog::default());
    let r = Runner::new(Arc::clone(&store) as Arc<dyn Store>, Arc::clone(&catalog) as Arc<dyn Catalog>, Arc::new(SystemClock), RunnerOptions::default());
    let doomed = r.create("doomed", params(&[("steps", "2"), ("sleep_ms", "0")]), None, None).await.unwrap();
    let other = r.create("other", params(&[("steps", "2"), ("sleep_ms", "0")]), None, None).await.unwrap();
    // One after the other, so that the failing batch holds only the doomed run's transition.
    // Not a speed limit: a waiter left unanswered would hang the test instead of failing it.
    let first = tokio::time::timeout(Duration::from_secs(60), r.drive(doomed.id, DriveOptions::default())).await.expect("answered");
    let err = first.expect_err("the run's step result was never durable");
    assert!(matches!(err, Error::Store(dr_state::Error::Poisoned { .. })), "{err}");
    let second = tokio::time::timeout(Duration::from_secs(60), r.drive(other.id, DriveOptions::default())).await.expect("answered");
    assert_eq!(second.unwrap().run.status, RunStatus::Succeeded, "later batches were durable");
    let stored = store.load(doomed.id).unwrap().unwrap();
    assert!(matches!(stored.steps[0].state, StepState::Running { .. }), "{:?}", stored.steps[0].state);
    assert!(matches!(stored.steps[1].state, StepState::Pending), "{:?}", stored.steps[1].state);
    let log = catalog.log.lock().unwrap().clone();
    assert_eq!(log.iter().filter(|l| l.starts_with("step-2")).count(), 1, "only the other run's step-2 ran: {log:?}");
    assert!(store.durations("doomed", "step-1").unwrap().is_empty(), "no duration from a success that was never durable");
}
