//! The runner: drives runs to their end (or pause), persisting every
//! transition of the core before carrying out the commands it allows.
//!
//! Per run, [`Runner::drive`] loops: take an input (an action's result, a
//! timer, the first tick), compute the transition with the pure core, write it
//! durably (through the runner's one writer thread, `commit_loop`, which is
//! the only group commit: every transition queued meanwhile shares one
//! `append_batch`, one sync), then execute its commands: spawn actions
//! with their deadline and cancellation token, arm timers, cancel attempts.
//!
//! **Invariant:** nothing is executed that is not already durable as started.
//! **Invariant:** a broken invariant fails the run, never the process.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dr_state::{Event, EventRecord, Millis, RunHeader, RunId, RunRecord, RunStatus, StepId, StepOutput, StepState, Store};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, warn, Instrument};

use crate::clock::Clock;
use crate::core::{self, CoreError, Input, OperatorInput, Transition};
use crate::action::{ActionCtx, ActionError};
use crate::definition::{describe_changes, Catalog, Plan, WorkflowDef};
use crate::failpoint::{self, Phase};
use crate::rto::{self, Rto};
use crate::{default_target_secs, Error, Result};

/// Sees every transition once it is durable (the CLI's live view).
pub trait Observer: Send + Sync {
    fn on_transition(&self, run: &RunRecord, events: &[EventRecord]);
}

/// An operator's decision, by step id; `by` names the operator (recorded).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OperatorCommand {
    Approve { step: String, by: String },
    Skip { step: String, reason: String, by: String },
    Retry { step: Option<String>, by: String },
    Cancel { reason: String, by: String },
}

#[derive(Clone, Debug)]
pub struct RunnerOptions {
    /// Who drives runs (recorded in the history): e.g. `dr start (pid 42)`.
    pub holder: String,
    /// How long a stopping process waits for running actions to stop.
    pub stop_grace: Duration,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        RunnerOptions { holder: format!("pid {}", std::process::id()), stop_grace: Duration::from_secs(10) }
    }
}

/// How to drive one run.
#[derive(Clone, Debug, Default)]
pub struct DriveOptions {
    /// The run was started by an earlier process: take it up (new epoch).
    pub resume: bool,
    pub operator: Option<OperatorCommand>,
    pub allow_definition_change: bool,
}

/// What [`Runner::create_run`] creates.
#[derive(Clone, Debug, Default)]
pub struct CreateRequest {
    /// The run's id, when the caller chose it (and recorded it) beforehand.
    pub id: Option<RunId>,
    pub workflow: String,
    pub params: BTreeMap<String, String>,
    pub incident_at: Option<Millis>,
    /// `dr start --yes`: every gate approved in advance, by this operator.
    pub preapproved_by: Option<String>,
    /// Hold the run at a gate before its first step, with this prompt (a run
    /// an alert started that may not proceed without a person).
    pub hold: Option<String>,
}

/// How a drive ended.
#[derive(Clone, Debug)]
pub struct DriveOutcome {
    pub run: RunRecord,
    /// The process was asked to stop; the run is resumable.
    pub interrupted: bool,
}

struct CommitRequest {
    append: dr_state::Append,
    reply: tokio::sync::oneshot::Sender<Result<()>>,
}

/// The store's one writer: takes every queued transition, writes them all,
/// makes them durable with one sync, answers each. While one batch syncs the
/// next one queues up, which is what makes concurrent runs cheap.
fn commit_loop(store: Arc<dyn Store>, requests: std::sync::mpsc::Receiver<CommitRequest>, busy_since: Arc<AtomicI64>) {
    const MAX_BATCH: usize = 512;
    while let Ok(first) = requests.recv() {
        busy_since.store(wall_ms(), Ordering::SeqCst);
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match requests.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let (appends, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|r| (r.append, r.reply)).unzip();
        // What each step took, taken before the appends move into the store.
        let durations: Vec<Vec<(String, String, u64)>> = appends
            .iter()
            .map(|a| {
                a.events()
                    .iter()
                    .filter_map(|e| match &e.event {
                        Event::StepSucceeded { step, duration_ms, .. } => Some((a.run().workflow.clone(), step.to_string(), *duration_ms)),
                        _ => None,
                    })
                    .collect()
            })
            .collect();
        let results = store.append_batch(appends);
        busy_since.store(0, Ordering::SeqCst);
        // Statistics learn only from successes that are durable, before the
        // answers (a drive that returned has its durations recorded).
        for (durations, _) in durations.into_iter().zip(&results).filter(|(_, result)| result.is_ok()) {
            for (workflow, step, ms) in durations {
                if let Err(err) = store.record_duration(&workflow, &step, ms) {
                    warn!(error = %err, "cannot record a step duration; RTO projections use the estimate");
                }
            }
        }
        // Each transition is answered with its own append's result, from this
        // batch's sync only: what arrived meanwhile waits for the next batch.
        for (reply, result) in replies.into_iter().zip(results) {
            let _ = reply.send(result.map_err(Error::from));
        }
    }
}

/// A monotonic reading in ms (from 1, so 0 can mean "idle"), for the
/// writer's health only (never for a run's times).
fn wall_ms() -> i64 {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let origin = ORIGIN.get_or_init(std::time::Instant::now);
    i64::try_from(origin.elapsed().as_millis()).unwrap_or(i64::MAX).saturating_add(1)
}

struct Inner {
    store: Arc<dyn Store>,
    /// `None` only while dropping.
    committer: Option<std::sync::mpsc::Sender<CommitRequest>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// When the writer took up the batch it is writing (ms), 0 when idle.
    writer_busy_since: Arc<AtomicI64>,
    catalog: Arc<dyn Catalog>,
    clock: Arc<dyn Clock>,
    options: RunnerOptions,
    shutdown: CancellationToken,
    observer: Option<Arc<dyn Observer>>,
    /// Runs this runner is driving now, and how to reach their drivers.
    active: std::sync::Mutex<HashMap<RunId, mpsc::UnboundedSender<OperatorRequest>>>,
    /// Runs a `drive` of this runner has taken (from before their first
    /// commit to the end): one driver per run, ever.
    claims: std::sync::Mutex<BTreeSet<RunId>>,
}

/// A run claimed by one `drive`, released when it returns (however it returns).
struct Claim<'a> {
    claims: &'a std::sync::Mutex<BTreeSet<RunId>>,
    id: RunId,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.claims.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&self.id);
    }
}

/// What reaches the driver of a run from outside it.
enum DriverRequest {
    Operator(OperatorCommand),
    /// `dr report --set`: a report field, written between the driver's own transitions.
    Annotate { field: String, value: String, by: String },
}

type OperatorRequest = (DriverRequest, tokio::sync::oneshot::Sender<Result<RunRecord>>);

impl Drop for Inner {
    /// Closes the writer and waits for it, so the store is released when the
    /// last clone of the runner goes.
    fn drop(&mut self) {
        self.committer.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// Drives runs. Cheap to clone; every clone shares the store and shutdown.
#[derive(Clone)]
pub struct Runner {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").field("holder", &self.inner.options.holder).finish_non_exhaustive()
    }
}

impl Runner {
    pub fn new(store: Arc<dyn Store>, catalog: Arc<dyn Catalog>, clock: Arc<dyn Clock>, options: RunnerOptions) -> Self {
        Self::build(store, catalog, clock, options, None)
    }

    pub fn with_observer(self, observer: Arc<dyn Observer>) -> Self {
        let inner = &self.inner;
        Self::build(
            Arc::clone(&inner.store),
            Arc::clone(&inner.catalog),
            Arc::clone(&inner.clock),
            inner.options.clone(),
            Some(observer),
        )
    }

    fn build(
        store: Arc<dyn Store>,
        catalog: Arc<dyn Catalog>,
        clock: Arc<dyn Clock>,
        options: RunnerOptions,
        observer: Option<Arc<dyn Observer>>,
    ) -> Self {
        let (committer, requests) = std::sync::mpsc::channel();
        let writer_store = Arc::clone(&store);
        let writer_busy_since = Arc::new(AtomicI64::new(0));
        let busy = Arc::clone(&writer_busy_since);
        let spawned = std::thread::Builder::new().name("dr-commit".into()).spawn(move || commit_loop(writer_store, requests, busy));
        let writer = match spawned {
            Ok(handle) => Some(handle),
            Err(e) => {
                // Without the writer every commit fails with a clear error; nothing is lost.
                warn!(error = %e, "cannot start the commit thread");
                None
            }
        };
        Runner {
            inner: Arc::new(Inner {
                store,
                committer: Some(committer),
                writer,
                writer_busy_since,
                catalog,
                clock,
                options,
                shutdown: CancellationToken::new(),
                observer,
                active: std::sync::Mutex::new(HashMap::new()),
                claims: std::sync::Mutex::new(BTreeSet::new()),
            }),
        }
    }

    /// Cancel this token to stop every drive cleanly (SIGINT/SIGTERM).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub fn catalog(&self) -> &Arc<dyn Catalog> {
        &self.inner.catalog
    }

    pub fn now_ms(&self) -> Millis {
        self.inner.clock.now_ms()
    }

    /// Creates a run of `workflow` (its history's first event) without
    /// starting it. `preapproved_by` (`dr start --yes`) approves its gates in advance.
    pub async fn create(
        &self,
        workflow: &str,
        params: BTreeMap<String, String>,
        incident_at: Option<Millis>,
        preapproved_by: Option<String>,
    ) -> Result<RunRecord> {
        self.create_run(CreateRequest { workflow: workflow.to_owned(), params, incident_at, preapproved_by, ..CreateRequest::default() }).await
    }

    /// Creates a run as `req` says. With `req.id` the call is idempotent: a
    /// run with that id that exists already is returned as it is.
    pub async fn create_run(&self, req: CreateRequest) -> Result<RunRecord> {
        if let Some(id) = req.id {
            if let Some(run) = self.inner.store.load(id)? {
                return Ok(run);
            }
        }
        let def = self.inner.catalog.build(&req.workflow, &req.params)?;
        def.validate()?;
        let now = self.now_ms();
        let id = req.id.unwrap_or_else(|| RunId(uuid::Uuid::now_v7()));
        let header = RunHeader {
            id,
            workflow: def.name.clone(),
            definition_hash: def.hash(),
            definition_steps: def.step_hashes(),
            config_digest: def.config_digest.clone(),
            config_path: def.config_path.clone(),
            params: req.params,
            level: def.level,
            target_secs: if def.target_secs > 0 { def.target_secs } else { default_target_secs(def.level) },
            incident_at: req.incident_at.unwrap_or(now),
            steps: def.steps.iter().map(|s| s.id.clone()).collect(),
        };
        let t = core::create(header, now, req.preapproved_by, req.hold).map_err(|e| Error::Invariant { run: id, detail: e.to_string() })?;
        self.commit(&t).await?;
        Ok(t.run)
    }

    /// Whether the engine moves: `Err` (saying what is stuck) when the store's
    /// writer has been on one batch for longer than `limit`. The daemon's
    /// watchdog pings systemd only while this is `Ok` and its own loop runs.
    pub fn health(&self, limit: Duration) -> std::result::Result<(), String> {
        let since = self.inner.writer_busy_since.load(Ordering::SeqCst);
        if since > 0 {
            let stuck = wall_ms().saturating_sub(since);
            if stuck > i64::try_from(limit.as_millis()).unwrap_or(i64::MAX) {
                return Err(format!("the store's writer has been writing one batch for {} s", stuck / 1000));
            }
        }
        if self.inner.writer.as_ref().is_some_and(std::thread::JoinHandle::is_finished) {
            return Err("the store's writer thread has stopped".into());
        }
        Ok(())
    }

    /// Loads a run and checks its snapshot against its history.
    pub async fn load_checked(&self, id: RunId) -> Result<RunRecord> {
        let store = Arc::clone(&self.inner.store);
        let (run, events) = blocking(move || Ok((store.load(id)?, store.events(id)?))).await?;
        let run = run.ok_or_else(|| dr_state::Error::NotFound { query: id.to_string() })?;
        let replayed = core::replay(&events).map_err(|detail| Error::HistoryMismatch { run: id, detail })?;
        if replayed != run {
            return Err(Error::HistoryMismatch {
                run: id,
                detail: format!(
                    "the snapshot is at event {} ({}), the history replays to event {} ({})",
                    run.next_seq,
                    run.status.as_str(),
                    replayed.next_seq,
                    replayed.status.as_str()
                ),
            });
        }
        Ok(run)
    }

    /// The definition a run would continue with now, if its workflow still builds.
    pub fn definition_for(&self, run: &RunRecord) -> Result<WorkflowDef> {
        Ok(self.inner.catalog.build_for_run(&run.workflow, &run.params, run.config_path.as_deref())?)
    }

    /// The RTO figures of a run now, with learned step durations.
    pub fn rto(&self, run: &RunRecord) -> Rto {
        let plan = self.definition_for(run).ok().map(|d| d.plan());
        let expected = expected_durations(self.inner.store.as_ref(), run, plan.as_ref());
        rto::compute(run, plan.as_ref(), &expected, self.now_ms())
    }

    /// Drives a run until it ends, pauses for an operator, or the process is
    /// told to stop.
    /// A run is driven by one `drive` at a time: a second one, while the first
    /// is taking the run up or driving it, is refused (a decision reaches the
    /// driver through [`Runner::operate`] instead).
    pub async fn drive(&self, id: RunId, options: DriveOptions) -> Result<DriveOutcome> {
        if !self.inner.claims.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id) {
            return Err(Error::NotApplicable {
                run: id,
                status: "running",
                detail: "this process is taking it up or driving it already; try again in a moment (a decision then reaches its driver)".into(),
            });
        }
        let _claim = Claim { claims: &self.inner.claims, id };
        let span = info_span!("run", dr.run_id = %id);
        self.drive_inner(id, options).instrument(span).await
    }

    async fn drive_inner(&self, id: RunId, options: DriveOptions) -> Result<DriveOutcome> {
        let mut run = self.load_checked(id).await?;
        let def = self.definition_for(&run)?;
        let plan = def.plan();
        let operator = match &options.operator {
            Some(cmd) => Some(to_operator_input(&run, cmd)?),
            None => None,
        };
        if run.status.is_terminal() {
            if let Some(op) = operator {
                core::transition(&run, &plan, Input::Operator(op), self.now_ms()).map_err(|e| reject(&run, e))?;
            }
            return Ok(DriveOutcome { run, interrupted: false });
        }
        let hash = def.hash();
        if hash != run.definition_hash || def.config_digest != run.config_digest {
            if !options.allow_definition_change {
                if hash == run.definition_hash {
                    return Err(Error::ConfigChanged {
                        run: id,
                        pinned: run.config_digest.clone().unwrap_or_else(|| "none".into()),
                        now: def.config_digest.clone().unwrap_or_else(|| "none".into()),
                    });
                }
                let changes = describe_changes(&run.definition_steps, &def.step_hashes());
                return Err(Error::DefinitionChanged { run: id, workflow: run.workflow.clone(), changes });
            }
            let changes = describe_changes(&run.definition_steps, &def.step_hashes());
            let same_steps = run.steps.iter().map(|s| s.id.as_str()).eq(def.steps.iter().map(|s| s.id.as_str()));
            if !same_steps {
                return Err(Error::NotApplicable {
                    run: id,
                    status: run.status.as_str(),
                    detail: format!("its workflow's steps were added or removed ({changes}); it cannot continue under the new definition"),
                });
            }
            let input = Input::ReplaceDefinition {
                definition_hash: hash,
                definition_steps: def.step_hashes(),
                config_digest: def.config_digest.clone(),
            };
            let t = core::transition(&run, &plan, input, self.now_ms()).map_err(|e| reject(&run, e))?;
            self.commit(&t).await?;
            run = t.run;
        }
        let input = if options.resume {
            Input::Resume { by: self.inner.options.holder.clone(), operator }
        } else {
            operator.map_or(Input::Tick, Input::Operator)
        };
        let t = core::transition(&run, &plan, input, self.now_ms()).map_err(|e| reject(&run, e))?;
        self.commit(&t).await?;
        run = t.run;
        info!(workflow = %run.workflow, status = run.status.as_str(), "driving run");
        let mut driver = Driver {
            runner: self.clone(),
            def: Arc::new(def),
            plan,
            inflight: HashMap::new(),
            never_started: Vec::new(),
            wake: BTreeSet::new(),
            tx: mpsc::unbounded_channel().0,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        driver.tx = tx;
        let (ops_tx, ops_rx) = mpsc::unbounded_channel();
        self.lock_active().insert(id, ops_tx);
        let outcome = driver.run_loop(run, t.commands, rx, ops_rx).await;
        self.lock_active().remove(&id);
        self.inner.catalog.release(id);
        outcome
    }

    fn lock_active(&self) -> std::sync::MutexGuard<'_, HashMap<RunId, mpsc::UnboundedSender<OperatorRequest>>> {
        self.inner.active.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// True while this runner drives the run.
    pub fn is_driving(&self, id: RunId) -> bool {
        self.lock_active().contains_key(&id)
    }

    /// The runs this runner drives now, or is taking up.
    pub fn driving(&self) -> Vec<RunId> {
        self.inner.claims.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().copied().collect()
    }

    /// Hands an operator's decision to the driver of a run this runner is
    /// driving now (a cancel reaches the running step). Returns the run once
    /// the decision is durable; `None` when this runner does not drive it.
    pub async fn operate(&self, id: RunId, command: OperatorCommand) -> Result<Option<RunRecord>> {
        let sender = self.lock_active().get(&id).cloned();
        let Some(sender) = sender else { return Ok(None) };
        let (reply, answer) = tokio::sync::oneshot::channel();
        if sender.send((DriverRequest::Operator(command), reply)).is_err() {
            return Ok(None);
        }
        match answer.await {
            Ok(result) => result.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Records an operator-filled field of the incident report (`cause`,
    /// `impact`, `lessons`) on a run in any state, ended ones included.
    /// A run driven here gets it from its driver, between two of its own
    /// transitions; any other run is claimed (so no drive starts meanwhile),
    /// checked against its history, and written. Returns the run after.
    pub async fn annotate(&self, id: RunId, field: &str, value: &str, by: &str) -> Result<RunRecord> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let sender = self.lock_active().get(&id).cloned();
            if let Some(sender) = sender {
                let (reply, answer) = tokio::sync::oneshot::channel();
                let request = DriverRequest::Annotate { field: field.to_owned(), value: value.to_owned(), by: by.to_owned() };
                if sender.send((request, reply)).is_ok() {
                    if let Ok(result) = answer.await {
                        return result;
                    }
                }
            } else if self.inner.claims.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id) {
                let _claim = Claim { claims: &self.inner.claims, id };
                let run = self.load_checked(id).await?;
                let t = core::annotate(&run, field, value, by, self.now_ms()).map_err(|e| reject(&run, e))?;
                self.commit(&t).await?;
                return Ok(t.run);
            }
            // Being taken up, or its driver just stopped: try again in a moment.
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Internal(format!("run {id} was being taken up for 20 s; the report field was not recorded, try again")));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Writes a transition durably; crash points fire around it.
    async fn commit(&self, t: &Transition) -> Result<()> {
        if t.events.is_empty() {
            return Ok(());
        }
        for e in &t.events {
            if let Event::StepStarted { step, .. } = &e.event {
                failpoint::hit(step.as_str(), Phase::BeforeStart);
            }
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        // Encoded here, on the caller's thread; the writer only writes.
        let request = CommitRequest { append: dr_state::Append::new(t.run.clone(), t.events.clone()), reply };
        let gone = || Error::Internal("the commit thread stopped; the transition was not written".into());
        self.inner.committer.as_ref().ok_or_else(gone)?.send(request).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())??;
        for e in &t.events {
            match &e.event {
                Event::StepStarted { step, .. } => failpoint::hit(step.as_str(), Phase::AfterStart),
                Event::StepSucceeded { step, .. } => failpoint::hit(step.as_str(), Phase::AfterFinish),
                _ => {}
            }
        }
        if let Some(observer) = &self.inner.observer {
            observer.on_transition(&t.run, &t.events);
        }
        Ok(())
    }
}

/// Expected duration of each step: the median of its earlier successful
/// runs, or the definition's estimate.
pub fn expected_durations(store: &dyn Store, run: &RunRecord, plan: Option<&Plan>) -> Vec<u64> {
    run.steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let fallback = plan.and_then(|p| p.steps.get(i)).map_or(0, |p| p.expected_ms);
            let observed = store.durations(&run.workflow, s.id.as_str()).unwrap_or_default();
            rto::expected_ms(&observed, fallback)
        })
        .collect()
}

fn reject(run: &RunRecord, e: CoreError) -> Error {
    match e {
        CoreError::Rejected(detail) => Error::NotApplicable { run: run.id, status: run.status.as_str(), detail },
        CoreError::Invariant(detail) => Error::Invariant { run: run.id, detail },
    }
}

fn to_operator_input(run: &RunRecord, cmd: &OperatorCommand) -> Result<OperatorInput> {
    let index = |step: &str| {
        run.steps.iter().position(|s| s.id == step).ok_or_else(|| Error::UnknownStep {
            run: run.id,
            step: step.to_owned(),
            known: run.steps.iter().map(|s| s.id.as_str()).collect::<Vec<_>>().join(", "),
        })
    };
    Ok(match cmd {
        OperatorCommand::Approve { step, by } => OperatorInput::Approve { step: index(step)?, by: by.clone() },
        OperatorCommand::Skip { step, reason, by } => {
            OperatorInput::Skip { step: index(step)?, reason: reason.clone(), by: by.clone() }
        }
        OperatorCommand::Retry { step, by } => {
            OperatorInput::Retry { step: step.as_deref().map(index).transpose()?, by: by.clone() }
        }
        OperatorCommand::Cancel { reason, by } => OperatorInput::Cancel { reason: reason.clone(), by: by.clone() },
    })
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Internal(format!("store task failed: {e}")))?
}

struct InFlight {
    attempt: u32,
    cancel: CancellationToken,
    handle: JoinHandle<()>,
}

struct Driver {
    runner: Runner,
    def: Arc<WorkflowDef>,
    plan: Plan,
    inflight: HashMap<usize, InFlight>,
    /// Attempts recorded as started that this process did not start because
    /// it was stopping: the stop records them as interrupted.
    never_started: Vec<(usize, u32)>,
    wake: BTreeSet<Millis>,
    tx: mpsc::UnboundedSender<Input>,
}

impl Driver {
    async fn run_loop(
        &mut self,
        mut run: RunRecord,
        mut commands: Vec<core::Command>,
        mut rx: mpsc::UnboundedReceiver<Input>,
        mut operators: mpsc::UnboundedReceiver<OperatorRequest>,
    ) -> Result<DriveOutcome> {
        let shutdown = self.runner.inner.shutdown.clone();
        loop {
            self.execute(&run, std::mem::take(&mut commands));
            let settled = run.status.is_terminal() || run.status == RunStatus::Paused;
            if settled && self.inflight.is_empty() {
                return Ok(DriveOutcome { run, interrupted: false });
            }
            if self.inflight.is_empty() && self.wake.is_empty() {
                let detail = "the run is running but nothing is running or scheduled".to_owned();
                let t = core::fail_run(&run, detail, self.runner.now_ms()).map_err(|e| reject(&run, e))?;
                self.runner.commit(&t).await?;
                return Ok(DriveOutcome { run: t.run, interrupted: false });
            }
            let now = self.runner.now_ms();
            let sleep_for = self.wake.first().map(|&at| Duration::from_millis(u64::try_from(at - now).unwrap_or(0)));
            let input = tokio::select! {
                biased;
                () = shutdown.cancelled() => return self.stop(run).await,
                Some((request, reply)) = operators.recv() => {
                    let now = self.runner.now_ms();
                    let decided = match &request {
                        DriverRequest::Operator(command) => to_operator_input(&run, command)
                            .and_then(|op| core::transition(&run, &self.plan, Input::Operator(op), now).map_err(|e| reject(&run, e))),
                        DriverRequest::Annotate { field, value, by } => {
                            core::annotate(&run, field, value, by, now).map_err(|e| reject(&run, e))
                        }
                    };
                    match decided {
                        Ok(t) => {
                            self.runner.commit(&t).await?;
                            run = t.run;
                            commands = t.commands;
                            let _ = reply.send(Ok(run.clone()));
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    }
                    continue;
                }
                Some(input) = rx.recv() => input,
                () = sleep_opt(sleep_for) => {
                    let now = self.runner.now_ms();
                    self.wake.retain(|&at| at > now);
                    Input::Tick
                }
            };
            if let Input::ActionDone { step, attempt, .. } | Input::ProbeDone { step, attempt, .. } = &input {
                if self.inflight.get(step).is_some_and(|f| f.attempt == *attempt) {
                    self.inflight.remove(step);
                }
            }
            let now = self.runner.now_ms();
            let t = match core::transition(&run, &self.plan, input, now) {
                Ok(t) => t,
                Err(e) => {
                    warn!(error = %e, "run failed on a broken invariant");
                    for f in self.inflight.values() {
                        f.cancel.cancel();
                    }
                    core::fail_run(&run, format!("internal error: {e}"), now).map_err(|e| reject(&run, e))?
                }
            };
            if let Err(e) = self.runner.commit(&t).await {
                for f in self.inflight.values() {
                    f.cancel.cancel();
                }
                return Err(e);
            }
            run = t.run;
            commands = t.commands;
        }
    }

    /// The process stops: tell running actions to stop, wait for them a
    /// while, record the stop. Their steps stay "running" and are taken up by
    /// the next process according to their resume class.
    async fn stop(&mut self, run: RunRecord) -> Result<DriveOutcome> {
        for f in self.inflight.values() {
            f.cancel.cancel();
        }
        let grace = self.runner.inner.options.stop_grace;
        for (_, f) in self.inflight.drain() {
            let _ = tokio::time::timeout(grace, f.handle).await;
        }
        let input = Input::Stopped { signal: "stop requested".into(), never_started: std::mem::take(&mut self.never_started) };
        let t = core::transition(&run, &self.plan, input, self.runner.now_ms()).map_err(|e| reject(&run, e))?;
        self.runner.commit(&t).await?;
        Ok(DriveOutcome { run: t.run, interrupted: true })
    }

    fn execute(&mut self, run: &RunRecord, commands: Vec<core::Command>) {
        let stopping = self.runner.inner.shutdown.is_cancelled();
        for command in commands {
            match command {
                // The stop came while the start was being written: do not start it.
                core::Command::Execute { step, attempt, .. } if stopping => self.never_started.push((step, attempt)),
                core::Command::Execute { step, attempt, deadline } => self.spawn(run, step, attempt, deadline, false),
                core::Command::Probe { step, attempt } => {
                    let timeout = self.plan.steps[step].timeout_ms;
                    let deadline = (timeout > 0).then(|| self.runner.now_ms().saturating_add(i64::try_from(timeout).unwrap_or(i64::MAX)));
                    self.spawn(run, step, attempt, deadline, true)
                }
                core::Command::WakeAt { at } => {
                    self.wake.insert(at);
                }
                core::Command::Cancel { step } => {
                    if let Some(f) = self.inflight.get(&step) {
                        f.cancel.cancel();
                    }
                }
            }
        }
    }

    fn spawn(&mut self, run: &RunRecord, step: usize, attempt: u32, deadline: Option<Millis>, probe: bool) {
        let cancel = self.runner.inner.shutdown.child_token();
        let step_def = &self.def.steps[step];
        let inputs: BTreeMap<StepId, StepOutput> = self.plan.steps[step]
            .deps
            .iter()
            .filter_map(|&d| match &run.steps[d].state {
                StepState::Succeeded { output, .. } => Some((run.steps[d].id.clone(), output.clone())),
                _ => None,
            })
            .collect();
        let ctx = ActionCtx {
            run_id: run.id,
            workflow: run.workflow.clone(),
            step: step_def.id.clone(),
            attempt,
            cancel: cancel.clone(),
            deadline,
            inputs: Arc::new(inputs),
            clock: Arc::clone(&self.runner.inner.clock),
        };
        let def = Arc::clone(&self.def);
        let clock = Arc::clone(&self.runner.inner.clock);
        let tx = self.tx.clone();
        let timeout_ms = step_def.timeout_ms;
        let span = info_span!("step", dr.step = %step_def.id, dr.attempt = attempt, dr.probe = probe);
        let token = cancel.clone();
        let handle = tokio::spawn(
            async move {
                let action = Arc::clone(&def.steps[step].action);
                let step_id = ctx.step.clone();
                let limit = deadline.map(|d| Duration::from_millis(u64::try_from(d - clock.now_ms()).unwrap_or(0)));
                let timed_out = || ActionError::retryable(format!("timed out after {}", crate::runner::human_ms(timeout_ms)));
                if probe {
                    let work = isolated("the probe", async move { action.probe(ctx).await });
                    let result = match limit {
                        Some(limit) => tokio::time::timeout(limit, work).await.unwrap_or_else(|_| Err(timed_out())),
                        None => work.await,
                    };
                    token.cancel();
                    let result = result
                        .and_then(|found| found.map(|o| o.into_record(&step_id)).transpose())
                        .map_err(|e| e.message);
                    let _ = tx.send(Input::ProbeDone { step, attempt, result });
                } else {
                    info!("step attempt started");
                    let work = isolated("the action", async move { action.run(ctx).await });
                    let result = match limit {
                        Some(limit) => tokio::time::timeout(limit, work).await.unwrap_or_else(|_| Err(timed_out())),
                        None => work.await,
                    };
                    token.cancel();
                    match &result {
                        Ok(_) => info!("step attempt succeeded"),
                        Err(e) => warn!(error = %e.message, retryable = e.retryable, "step attempt failed"),
                    }
                    failpoint::hit(step_id.as_str(), Phase::AfterAction);
                    let result = result.and_then(|o| o.into_record(&step_id)).map_err(|e| (e.message, e.retryable));
                    let _ = tx.send(Input::ActionDone { step, attempt, result });
                }
            }
            .instrument(span),
        );
        self.inflight.insert(step, InFlight { attempt, cancel, handle });
    }
}

/// Runs an action's future in a task of its own, so that a panic in it (a
/// bug) fails the attempt — recorded, retried or paused like any failure —
/// instead of silently losing it and leaving the run waiting forever. The task
/// is aborted when this future is dropped (timeout, stop).
async fn isolated<T: Send + 'static>(
    what: &'static str,
    work: impl std::future::Future<Output = Result<T, ActionError>> + Send + 'static,
) -> Result<T, ActionError> {
    struct AbortOnDrop<T>(JoinHandle<T>);
    impl<T> Drop for AbortOnDrop<T> {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let mut task = AbortOnDrop(tokio::spawn(work));
    match (&mut task.0).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".to_owned());
            warn!(panic = %message, "{what} panicked");
            Err(ActionError::permanent(format!("{what} panicked (a bug in dr; please report it): {message}")))
        }
        Err(e) => Err(ActionError::retryable(format!("{what} was stopped before it finished: {e}"))),
    }
}

async fn sleep_opt(duration: Option<Duration>) {
    match duration {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// `1.5s`, `2m03s`, `1h02m`: durations as an operator reads them.
pub fn human_ms(ms: u64) -> String {
    let secs = ms / 1000;
    if ms < 1000 {
        format!("{ms}ms")
    } else if secs < 60 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60)
    }
}

#[cfg(test)]
mod tests;
