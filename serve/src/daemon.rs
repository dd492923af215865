//! The daemon: `dr serve` owns the store for as long as it runs.
//!
//! At start it opens the store (a second daemon, or a foreground `dr`,
//! holding it is refused at once, naming the pid), serves the control socket
//! in daemon mode (clients start, resume and decide through it), and takes
//! up every run that was running when the last owner stopped or died; runs
//! waiting for an operator stay waiting. Then it tells systemd `READY=1`.
//!
//! Its loop runs on the engine's own runtime and sends `WATCHDOG=1` only
//! while the loop turns *and* the store's writer is not stuck, so a hung
//! engine is restarted by systemd rather than kept alive by a healthy-looking
//! thread. `STATUS=` says what runs and how its RTO stands.
//!
//! With `[serve]` (or `--listen`) it serves Alertmanager's webhook and
//! `/metrics` on one HTTP listener; with `[escalation]` routes it records the
//! notifications each run calls for (on every transition, and on its loop for
//! the RTO turning at risk) in the outbox, which the escalator delivers.
//!
//! On stop (SIGTERM, SIGINT) it sends `STOPPING=1`, stops taking alerts,
//! tells every running step to stop, waits for their state to be saved, and
//! returns; the next start continues the runs (and the undelivered
//! notifications).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use dr_orchestrator::control::{self, Mode};
use dr_orchestrator::runner::DriveOptions;
use dr_orchestrator::{Catalog, Clock, CreateRequest, Observer, Runner, RunnerOptions, SystemClock};
use dr_state::{Event, EventRecord, RunId, RunRecord, RunStatus, SledStore, Store};
use dr_workflows::config::Config;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::escalate::{self, Escalator};
use crate::metrics::{Histogram, MetricsSnapshot, OpenRun};
use crate::outbox::Outbox;
use crate::sdnotify::{status_line, Notifier};
use crate::{BoxFuture, StartRequest, Starter};

/// What `dr serve` is given.
pub struct Options {
    pub state_dir: PathBuf,
    pub catalog: Arc<dyn Catalog>,
    /// Who the runs are driven by, in their history.
    pub holder: String,
    /// `dr.toml`, when there is one: its `[serve]`, `[[alerts]]`, `[escalation]`.
    pub config: Option<Arc<Config>>,
    /// `--listen`, which overrides `[serve] listen`.
    pub listen: Option<String>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options").field("state_dir", &self.state_dir).field("holder", &self.holder).finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store could not be opened (busy: another process owns it).
    #[error(transparent)]
    Store(#[from] dr_state::Error),
    /// The configuration does not allow it (the listen address, the token file).
    #[error("{0}")]
    Config(String),
    /// Something the daemon needs could not be set up (a socket, a directory).
    #[error("{0}")]
    Setup(String),
}

/// Opens the store. Held by a `dr` that only reads (no control socket
/// answers), it is waited for up to 10 s; held by a process that answers
/// (another `dr serve`, a foreground run) it is refused at once (busy).
async fn open_store(dir: &std::path::Path) -> Result<SledStore, Error> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match SledStore::open(dir) {
            Ok(store) => return Ok(store),
            Err(busy @ dr_state::Error::Busy { .. }) => {
                let owner_answers = std::os::unix::net::UnixStream::connect(dir.join(control::SOCKET_NAME)).is_ok();
                if owner_answers || tokio::time::Instant::now() >= deadline {
                    return Err(busy.into());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// A daemon that has opened its store and resumed its runs.
pub struct Daemon {
    runner: Runner,
    notifier: Notifier,
    serving: CancellationToken,
    socket: tokio::task::JoinHandle<()>,
    /// The HTTP listener and the escalator: stopped first, before the runs.
    services: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    watch: Arc<Watch>,
    outbox: Option<Outbox>,
    metrics: Arc<Mutex<MetricsSnapshot>>,
    started_at: f64,
    listening: Option<std::net::SocketAddr>,
}

/// Sees every durable transition: step durations for `/metrics`, and which
/// runs changed (their notifications are recorded at once).
struct Watch {
    changed: mpsc::UnboundedSender<RunId>,
    durations: Mutex<BTreeMap<String, Histogram>>,
}

impl Observer for Watch {
    fn on_transition(&self, run: &RunRecord, events: &[EventRecord]) {
        for e in events {
            if let Event::StepSucceeded { duration_ms, .. } = &e.event {
                let mut durations = self.durations.lock().unwrap_or_else(PoisonError::into_inner);
                durations.entry(run.workflow.clone()).or_default().observe(*duration_ms as f64 / 1000.0);
            }
        }
        let _ = self.changed.send(run.id);
    }
}

/// Starts the runs alerts ask for: a level-1 workflow (or one its rule marks
/// automatic) is driven at once; any other is held at a gate before its
/// first step, for `dr approve` (and people are told).
struct DaemonStarter {
    runner: Runner,
}

impl Starter for DaemonStarter {
    fn start(&self, req: StartRequest) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let runner = &self.runner;
            if runner.store().load(req.id).map_err(|e| e.to_string())?.is_some() {
                // Started before (a start cut by a crash, then re-sent): already driven or done.
                return Ok(());
            }
            if runner.shutdown_token().is_cancelled() {
                return Err(format!("dr serve (pid {}) is stopping; the alert's next notification starts the run", std::process::id()));
            }
            // The level of the run as built (a workflow's parameters may set it).
            let def = runner.catalog().build(&req.workflow, &req.params).map_err(|e| e.to_string())?;
            let level = def.level;
            let automatic = req.automatic.unwrap_or(level == 1);
            // A first step with a gate of its own holds the run already, with its own prompt
            // (holding it again would spend that gate's approval on the hold).
            let first_gated = def.steps.first().is_some_and(|s| s.gate.is_some());
            let hold = (!automatic && !first_gated).then(|| {
                format!("{} started {} (level {level}), which is not automatic: approve to start the recovery", req.trigger, req.workflow)
            });
            let held = hold.is_some();
            drop(def);
            let run = runner
                .create_run(CreateRequest { id: Some(req.id), workflow: req.workflow.clone(), params: req.params, hold, ..CreateRequest::default() })
                .await
                .map_err(|e| e.to_string())?;
            info!(run = %run.id, workflow = %run.workflow, held, trigger = %req.trigger, "run started by an alert");
            if !held {
                control::spawn_drive(runner, run.id, DriveOptions::default());
            }
            Ok(())
        })
    }

    fn is_open(&self, id: RunId) -> bool {
        matches!(self.runner.store().load(id), Ok(Some(run)) if !run.status.is_terminal())
    }

    fn open_run_like(&self, workflow: &str, params: &BTreeMap<String, String>) -> Option<RunId> {
        let store = self.runner.store();
        store.open_runs().ok()?.into_iter().find(|id| {
            matches!(store.load(*id), Ok(Some(run)) if !run.status.is_terminal() && run.workflow == workflow && &run.params == params)
        })
    }
}

fn wall_secs(clock: &dyn Clock) -> f64 {
    clock.now_ms() as f64 / 1000.0
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon").field("runner", &self.runner).finish_non_exhaustive()
    }
}

impl Daemon {
    /// Opens the store, serves the socket, takes up every run that was running.
    pub async fn start(options: Options) -> Result<Self, Error> {
        let notifier = Notifier::from_env().map_err(|e| Error::Setup(format!("NOTIFY_SOCKET is set but unusable: {e}")))?;
        let store: Arc<dyn Store> = Arc::new(open_store(&options.state_dir).await?);
        dr_workflows::procs::init(&options.state_dir)
            .map_err(|e| Error::Setup(format!("cannot record the steps' process groups in {}: {e}", options.state_dir.display())))?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let runner_options = RunnerOptions { holder: options.holder.clone(), ..RunnerOptions::default() };
        let (changed, mut changes) = mpsc::unbounded_channel();
        let watch = Arc::new(Watch { changed, durations: Mutex::new(BTreeMap::new()) });
        let runner = Runner::new(Arc::clone(&store), options.catalog, clock, runner_options).with_observer(Arc::clone(&watch) as Arc<dyn Observer>);
        let services = CancellationToken::new();
        let mut tasks = Vec::new();
        let config = options.config.clone();

        // Escalation: the outbox, and the escalator that delivers it.
        let escalation = config.as_ref().and_then(|c| c.escalation.clone()).filter(|e| !e.routes.is_empty());
        let outbox = match &escalation {
            Some(escalation) => {
                let outbox = Outbox::open(options.state_dir.join("outbox"))
                    .map_err(|e| Error::Setup(format!("cannot open the notification outbox in {}: {e}", options.state_dir.display())))?;
                let escalator = Escalator::new(outbox.clone(), escalation.clone());
                let stop = services.clone();
                tasks.push(tokio::spawn(async move { escalator.run(stop).await }));
                Some(outbox)
            }
            None => None,
        };

        // The HTTP listener: Alertmanager's webhook and /metrics.
        let metrics = Arc::new(Mutex::new(MetricsSnapshot::default()));
        let serve_config = config.as_ref().and_then(|c| c.serve.clone());
        let listen = options.listen.clone().or_else(|| serve_config.as_ref().and_then(|s| s.listen.clone()));
        let mut listening = None;
        if let Some(listen) = listen {
            let token_file = serve_config.as_ref().and_then(|s| s.token_file.clone());
            let addr = crate::http::check_listen(&listen, token_file.is_some()).map_err(|e| Error::Config(e.to_string()))?;
            let token = token_file.as_deref().map(crate::http::BearerToken::read).transpose().map_err(|e| Error::Config(e.to_string()))?;
            let rules = config.as_ref().map(|c| c.alerts.clone()).unwrap_or_default();
            let starter: Arc<dyn Starter> = Arc::new(DaemonStarter { runner: runner.clone() });
            let alerts = crate::alerts::Alerts::open(options.state_dir.join("alerts"), rules, starter).map_err(|e| Error::Setup(e.to_string()))?;
            let source = {
                let metrics = Arc::clone(&metrics);
                move || metrics.lock().unwrap_or_else(PoisonError::into_inner).clone()
            };
            let max_body = serve_config.as_ref().map_or(1 << 20, |s| s.max_body_bytes);
            let state = Arc::new(crate::http::HttpState::new(Arc::new(alerts), Arc::new(source), token, max_body));
            let listener =
                tokio::net::TcpListener::bind(addr).await.map_err(|e| Error::Setup(format!("cannot listen on {addr}: {e}")))?;
            listening = Some(listener.local_addr().map_err(|e| Error::Setup(e.to_string()))?);
            let stop = services.clone();
            tasks.push(tokio::spawn(crate::http::serve(listener, state, stop)));
        }

        // Each durable transition: the notifications the run now calls for.
        if let Some(outbox) = outbox.clone() {
            let runner = runner.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(id) = changes.recv().await {
                    record_due(&runner, &outbox, id);
                }
            }));
        }
        let serving = CancellationToken::new();
        // Bound before READY=1: a client told the service is up finds its socket.
        let bound = control::Socket::bind(&options.state_dir)
            .map_err(|e| Error::Setup(format!("cannot serve the control socket in {}: {e}", options.state_dir.display())))?;
        let socket = {
            let (runner, serving) = (runner.clone(), serving.clone());
            tokio::spawn(async move { bound.serve(runner, serving, Mode::Daemon).await })
        };
        let mut waiting = 0usize;
        let mut drives = Vec::new();
        for id in store.open_runs()? {
            match store.load(id) {
                Ok(Some(run)) if run.status == RunStatus::Running => {
                    drives.push((id, control::spawn_drive(&runner, id, DriveOptions { resume: true, ..DriveOptions::default() })));
                }
                Ok(Some(_)) => waiting += 1,
                Ok(None) => warn!(run = %id, "an open run has no record"),
                Err(e) => warn!(run = %id, error = %e, "an open run cannot be read; dr status names the problem"),
            }
        }
        // Say how many were really taken up: a drive refused at once (a changed definition,
        // a damaged history) ends within moments; a taken-up run is claimed by then.
        let settle = tokio::time::Instant::now() + Duration::from_secs(2);
        while tokio::time::Instant::now() < settle
            && !drives.iter().all(|(id, drive)| drive.is_finished() || runner.driving().contains(id))
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut refused = Vec::new();
        for (id, drive) in drives.iter_mut() {
            if drive.is_finished() && matches!(drive.await, Ok(Err(_)) | Err(_)) {
                refused.push(*id);
            }
        }
        let resumed = drives.len() - refused.len();
        let daemon = Daemon {
            runner,
            notifier,
            serving,
            socket,
            services,
            tasks,
            watch,
            outbox,
            metrics,
            started_at: wall_secs(&SystemClock),
            listening,
        };
        daemon.reconcile_notifications();
        daemon.refresh_metrics();
        info!(resumed, waiting, listen = ?daemon.listening, "dr serve is ready");
        let cannot = if refused.is_empty() {
            String::new()
        } else {
            let ids: Vec<String> = refused.iter().map(|id| id.to_string()).collect();
            warn!(runs = ?ids, "runs that were running could not be taken up; dr resume ID says why");
            format!(", {} could NOT be taken up (dr resume ID says why: {})", refused.len(), ids.join(" "))
        };
        daemon.notify(&format!(
            "READY=1\nSTATUS={}",
            status_line(&format!("ready: took {resumed} run(s) up again, {waiting} wait(s) for an operator{cannot}"))
        ));
        Ok(daemon)
    }

    pub fn runner(&self) -> &Runner {
        &self.runner
    }

    /// Where the HTTP listener listens, when it does.
    pub fn listening(&self) -> Option<std::net::SocketAddr> {
        self.listening
    }

    /// After a crash: runs that ended while no notification could be recorded
    /// (the process died between the two) still get theirs. Only runs the
    /// outbox knows (their "started" was recorded) and that ended within a week.
    fn reconcile_notifications(&self) {
        let Some(outbox) = &self.outbox else { return };
        let week_ago = self.runner.now_ms().saturating_sub(7 * 24 * 3_600_000);
        let Ok(summaries) = self.runner.store().summaries() else { return };
        for summary in summaries.into_iter().flatten() {
            let recent = summary.finished_at.is_none_or(|at| at >= week_ago);
            if recent && outbox.knows(&format!("{}:started", summary.id)) {
                record_due(&self.runner, outbox, summary.id);
            }
        }
        if let Ok(open) = self.runner.store().open_runs() {
            for id in open {
                record_due(&self.runner, outbox, id);
            }
        }
    }

    /// The figures `/metrics` serves, taken on the loop (a scrape reads memory only).
    fn refresh_metrics(&self) {
        let store = self.runner.store();
        let mut snapshot = MetricsSnapshot { start_time_seconds: self.started_at, ..MetricsSnapshot::default() };
        if let Ok(summaries) = store.summaries() {
            for summary in summaries.into_iter().flatten() {
                *snapshot.runs.entry((summary.workflow.clone(), summary.status.as_str().to_owned())).or_default() += 1;
            }
        }
        if let Ok(open) = store.open_runs() {
            for id in open {
                if let Ok(Some(run)) = store.load(id) {
                    let rto = self.runner.rto(&run);
                    snapshot.open_runs.push(OpenRun {
                        run: run.id.to_string(),
                        workflow: run.workflow.clone(),
                        level: run.level,
                        elapsed_seconds: rto.elapsed_secs,
                        target_seconds: Some(rto.target_secs as f64),
                        projected_seconds: Some(rto.projected_secs),
                        at_risk: rto.at_risk,
                    });
                }
            }
        }
        snapshot.step_durations = self.watch.durations.lock().unwrap_or_else(PoisonError::into_inner).clone();
        snapshot.notifications_pending = self.outbox.as_ref().map_or(0, |o| o.pending_count() as u64);
        *self.metrics.lock().unwrap_or_else(PoisonError::into_inner) = snapshot;
    }

    fn notify(&self, state: &str) {
        if let Err(e) = self.notifier.send(state) {
            warn!(error = %e, "cannot notify the service manager");
        }
    }

    /// Runs until `stop` is cancelled, then stops cleanly.
    pub async fn run(self, stop: CancellationToken) {
        let watchdog = self.notifier.watchdog_interval();
        // A writer stuck longer than systemd's whole watchdog period is a hung engine.
        let stuck_limit = watchdog.map_or(Duration::from_secs(60), |half| half * 2);
        let mut tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(5)).min(Duration::from_secs(5)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => self.beat(watchdog.is_some(), stuck_limit),
            }
        }
        let driving = self.runner.driving().len();
        info!(driving, "dr serve is stopping; running steps are told to stop, their state is saved");
        self.notify(&format!("STOPPING=1\nSTATUS=stopping: saving {driving} run(s) for the next start"));
        // No new alerts while the runs stop; undelivered notifications wait in the outbox.
        self.services.cancel();
        self.runner.shutdown_token().cancel();
        while !self.runner.driving().is_empty() {
            tokio::select! {
                _ = tick.tick() => self.beat(watchdog.is_some(), stuck_limit),
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        self.serving.cancel();
        let _ = self.socket.await;
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
        info!("dr serve stopped");
    }

    /// One turn of the loop: the watchdog ping (only when the engine moves) and the status line.
    fn beat(&self, watchdog: bool, stuck_limit: Duration) {
        match self.runner.health(stuck_limit) {
            Ok(()) => {
                // Time passes for open runs: one may turn at risk without a transition.
                if let (Some(outbox), Ok(open)) = (&self.outbox, self.runner.store().open_runs()) {
                    for id in open {
                        record_due(&self.runner, outbox, id);
                    }
                }
                if self.listening.is_some() {
                    self.refresh_metrics();
                }
                let status = status_line(&self.status_text());
                if watchdog {
                    self.notify(&format!("WATCHDOG=1\nSTATUS={status}"));
                } else {
                    self.notify(&format!("STATUS={status}"));
                }
            }
            Err(stuck) => {
                warn!(problem = %stuck, "the engine is stuck; no watchdog ping");
                self.notify(&format!("STATUS={}", status_line(&format!("stuck: {stuck}"))));
            }
        }
    }

    /// What runs, for `systemctl status`: each driven run's progress and RTO.
    pub fn status_text(&self) -> String {
        let ids: Vec<RunId> = self.runner.driving();
        if ids.is_empty() {
            return "idle: no run in progress".to_owned();
        }
        let mut parts = Vec::new();
        for id in ids.iter().take(3) {
            if let Ok(Some(run)) = self.runner.store().load(*id) {
                parts.push(run_status(&run, &self.runner.rto(&run)));
            }
        }
        let more = ids.len().saturating_sub(3);
        let mut text = format!("{} run(s): {}", ids.len(), parts.join("; "));
        if more > 0 {
            text.push_str(&format!("; {more} more"));
        }
        text
    }
}

/// Records the notifications run `id` calls for now (each key once, ever).
fn record_due(runner: &Runner, outbox: &Outbox, id: RunId) {
    let run = match runner.store().load(id) {
        Ok(Some(run)) => run,
        Ok(None) => return,
        Err(e) => {
            warn!(run = %id, error = %e, "cannot read a run to notify about it");
            return;
        }
    };
    let rto = runner.rto(&run);
    for note in escalate::due(&run, &rto, runner.now_ms()) {
        if let Err(e) = outbox.record(&note) {
            warn!(run = %id, notification = %note.key, error = %e, "cannot record a notification; it is recorded at the next change or tick");
        }
    }
}

/// `pod-recovery 0195…: 2/3 steps, RTO 1m05s of 30m (on track)`.
fn run_status(run: &RunRecord, rto: &dr_orchestrator::Rto) -> String {
    let done = run.steps.iter().filter(|s| s.state.is_settled()).count();
    let id = run.id.to_string();
    let verdict = if rto.at_risk { "AT RISK" } else { "on track" };
    format!(
        "{} {}: {done}/{} steps, RTO {} of {} ({verdict}, projected {})",
        run.workflow,
        &id[..id.len().min(8)],
        run.steps.len(),
        span(rto.elapsed_secs),
        span(rto.target_secs as f64),
        span(rto.projected_secs)
    )
}

fn span(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}
