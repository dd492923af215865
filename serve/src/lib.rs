//! `dr serve`, the bastion service: the long-running owner of the store.
//!
//! - `journal.rs`: small durable records beside the store (one file each,
//!   written atomically and fsynced): the Alertmanager dedup state and the
//!   notification outbox.
//! - `escalate.rs` (+ `escalate/send.rs`): which notifications a run calls
//!   for (`due`), the routes per level, the senders (Slack webhook,
//!   PagerDuty Events v2, SMTP) and the `Escalator` delivery loop.
//! - `outbox.rs`: the durable record of notifications owed and sent.
//! - `daemon.rs`: the daemon: opens the store, serves the control socket in
//!   daemon mode, takes up every run that was running, pings systemd's
//!   watchdog from its own loop, stops cleanly on SIGTERM.
//! - `sdnotify.rs`: systemd's notify protocol (`READY=1`, `WATCHDOG=1`, ...).
//! - `alerts.rs`: Alertmanager's webhook payload, the `[[alerts]]` rules and
//!   the durable per-episode dedup that lets one alert start at most one run.
//! - `http.rs`: the HTTP listener (`POST /alertmanager`, `GET /metrics`,
//!   `GET /healthz`, nothing else), its bearer token and listen-address rule.
//! - `metrics.rs`: the `MetricsSnapshot` the daemon fills and its Prometheus
//!   text rendering.
//!
//! `dr-cli`'s `serve` command parses the arguments and the signals and runs it.

pub mod alerts;
pub mod daemon;
pub mod escalate;
pub mod http;
pub mod journal;
pub mod metrics;
pub mod outbox;
pub mod sdnotify;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use dr_state::RunId;

/// A run the service is asked to start (by an alert).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartRequest {
    /// Chosen by the caller and recorded (in the alert's dedup record) before
    /// the run is started, so that a start cut by a crash is completed, not doubled.
    pub id: RunId,
    pub workflow: String,
    pub params: BTreeMap<String, String>,
    /// Whether the run may proceed without a person; `None`: the rule did not
    /// say (a level-1 workflow does, any other waits for `dr approve`).
    pub automatic: Option<bool>,
    /// Why the run starts, for people: e.g. `alert KubePodCrashLooping{namespace="demo"}`.
    pub trigger: String,
}

/// A boxed future, for the object-safe traits the daemon implements.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the HTTP listener needs from the daemon to start runs.
pub trait Starter: Send + Sync + 'static {
    /// Starts run `req.id`. Idempotent: when a run with that id exists
    /// already, nothing changes and the answer is `Ok`. The error is a
    /// message for the operator (no secret in it).
    fn start(&self, req: StartRequest) -> BoxFuture<'_, Result<(), String>>;

    /// Whether run `id` exists and has not ended.
    fn is_open(&self, id: RunId) -> bool;

    /// An open run of `workflow` with exactly these parameters, if any: an
    /// alert that would start the same recovery joins it (five crash-looping
    /// pods of one namespace are one pod recovery). None by default.
    fn open_run_like(&self, _workflow: &str, _params: &BTreeMap<String, String>) -> Option<RunId> {
        None
    }
}
