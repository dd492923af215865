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
//! On stop (SIGTERM, SIGINT) it sends `STOPPING=1`, tells every running step
//! to stop, waits for their state to be saved, and returns; the next start
//! continues the runs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dr_orchestrator::control::{self, Mode};
use dr_orchestrator::runner::DriveOptions;
use dr_orchestrator::{Catalog, Clock, Runner, RunnerOptions, SystemClock};
use dr_state::{RunId, RunRecord, RunStatus, SledStore, Store};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::sdnotify::{status_line, Notifier};

/// What `dr serve` is given.
pub struct Options {
    pub state_dir: PathBuf,
    pub catalog: Arc<dyn Catalog>,
    /// Who the runs are driven by, in their history.
    pub holder: String,
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
    #[error("{0}")]
    Setup(String),
}

/// A daemon that has opened its store and resumed its runs.
pub struct Daemon {
    runner: Runner,
    notifier: Notifier,
    serving: CancellationToken,
    socket: tokio::task::JoinHandle<()>,
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
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&options.state_dir)?);
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let runner_options = RunnerOptions { holder: options.holder.clone(), ..RunnerOptions::default() };
        let runner = Runner::new(Arc::clone(&store), options.catalog, clock, runner_options);
        let serving = CancellationToken::new();
        let socket = {
            let (runner, dir, serving) = (runner.clone(), options.state_dir.clone(), serving.clone());
            tokio::spawn(async move {
                if let Err(e) = control::serve_as(runner, dir.clone(), serving, Mode::Daemon).await {
                    warn!(error = %e, dir = %dir.display(), "no control socket: clients cannot reach dr serve");
                }
            })
        };
        let (mut resumed, mut waiting) = (0usize, 0usize);
        for id in store.open_runs()? {
            match store.load(id) {
                Ok(Some(run)) if run.status == RunStatus::Running => {
                    control::spawn_drive(&runner, id, DriveOptions { resume: true, ..DriveOptions::default() });
                    resumed += 1;
                }
                Ok(Some(_)) => waiting += 1,
                Ok(None) => warn!(run = %id, "an open run has no record"),
                Err(e) => warn!(run = %id, error = %e, "an open run cannot be read; dr status names the problem"),
            }
        }
        info!(resumed, waiting, "dr serve is ready");
        let daemon = Daemon { runner, notifier, serving, socket };
        daemon.notify(&format!("READY=1\nSTATUS={}", status_line(&format!("ready: took {resumed} run(s) up again, {waiting} wait(s) for an operator"))));
        Ok(daemon)
    }

    pub fn runner(&self) -> &Runner {
        &self.runner
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
        self.runner.shutdown_token().cancel();
        while !self.runner.driving().is_empty() {
            tokio::select! {
                _ = tick.tick() => self.beat(watchdog.is_some(), stuck_limit),
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        self.serving.cancel();
        let _ = self.socket.await;
        info!("dr serve stopped");
    }

    /// One turn of the loop: the watchdog ping (only when the engine moves) and the status line.
    fn beat(&self, watchdog: bool, stuck_limit: Duration) {
        match self.runner.health(stuck_limit) {
            Ok(()) => {
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
