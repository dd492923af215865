//! The control API: while a process owns a state store (sled allows one), it
//! answers the other `dr` processes on a Unix socket beside the store, so that
//! `dr status`, `dr list`, `dr history` work during a run and `dr cancel`
//! reaches the step that is running.
//!
//! Protocol: one JSON [`Request`] on one line, one JSON [`Response`] on one
//! line, then the connection closes. The socket is created with mode 0600
//! inside the state directory; only its owner may talk to it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dr_state::{EventRecord, RunId, RunRecord, RunSummary};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::runner::{DriveOptions, OperatorCommand, Runner};
use crate::rto::{self, Rto};

/// The socket's name inside the state directory.
pub const SOCKET_NAME: &str = "dr.sock";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Request {
    /// One run, or (without a query) every unfinished run.
    Status { query: Option<String> },
    List,
    History { query: String },
    Operate { query: String, command: OperatorCommand },
    /// Which runs the owner drives now (the others are stopped: nobody moves them).
    Driving,
    /// Who the owner is: its pid, and whether it is `dr serve`.
    Info,
    /// `dr serve` only: create a run and drive it there. `id`, chosen by the
    /// client, makes a request sent again (its answer lost) find its run.
    Start {
        id: Option<RunId>,
        workflow: String,
        params: BTreeMap<String, String>,
        incident_at: Option<i64>,
        preapproved_by: Option<String>,
    },
    /// `dr serve` only: take a run up again and drive it there.
    Resume { query: String, allow_definition_change: bool },
    /// `dr report ID --set FIELD=VALUE`: record a field of the incident report
    /// (any run, an ended one included); answered with the run.
    Annotate { query: String, field: String, value: String, by: String },
    /// `dr gc`: remove the histories of the finished runs that ended more
    /// than `older_than_ms` ago (their summaries stay); answered with them.
    Gc { older_than_ms: u64, dry_run: bool },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ErrorKind {
    NotFound,
    Usage,
    Cannot,
    /// The owner is a foreground `dr`, which drives only its own run: start
    /// and resume are not taken (the store is busy).
    NotDaemon,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Response {
    Runs(Vec<(RunRecord, Rto)>),
    /// Summaries that could be read, and messages for those that could not.
    List { runs: Vec<(RunSummary, Rto)>, damaged: Vec<String> },
    Events(Vec<EventRecord>),
    /// The runs the owner drives, and its pid.
    Driving { runs: Vec<RunId>, pid: u32 },
    Info { pid: u32, daemon: bool, version: String },
    /// The runs `dr gc` chose (removed unless `dry_run`), and the instant they ended before.
    Collected { runs: Vec<RunSummary>, before: i64, dry_run: bool },
    Error { kind: ErrorKind, message: String },
}

impl Response {
    fn error(e: &crate::Error) -> Self {
        let kind = match e {
            crate::Error::Store(dr_state::Error::NotFound { .. } | dr_state::Error::Collected { .. }) => ErrorKind::NotFound,
            crate::Error::Store(dr_state::Error::Ambiguous { .. } | dr_state::Error::DidYouMean { .. })
            | crate::Error::UnknownStep { .. }
            | crate::Error::Catalog(_) => ErrorKind::Usage,
            // The run's state does not allow it: exit 6, as when the store is read directly.
            _ => ErrorKind::Cannot,
        };
        Response::Error { kind, message: e.to_string() }
    }
}

/// Who serves the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A foreground `dr start`/`resume`: answers, and adopts decisions.
    Foreground,
    /// `dr serve`: also starts and resumes runs for its clients.
    Daemon,
}

/// Serves the control API until `shutdown`. A stale socket (its owner is
/// gone, since we hold the store's lock) is replaced.
pub async fn serve(runner: Runner, dir: PathBuf, shutdown: CancellationToken) -> std::io::Result<()> {
    serve_as(runner, dir, shutdown, Mode::Foreground).await
}

/// [`serve`], as `mode`. Only the user who owns the process may connect:
/// the socket is 0600 and each peer's uid is checked.
pub async fn serve_as(runner: Runner, dir: PathBuf, shutdown: CancellationToken, mode: Mode) -> std::io::Result<()> {
    let socket = Socket::bind(&dir)?;
    socket.serve(runner, shutdown, mode).await;
    Ok(())
}

/// The control socket, bound (mode 0600) and removed when dropped; bind it
/// before saying you are ready, so that a client told so finds it.
#[derive(Debug)]
pub struct Socket {
    listener: tokio::net::UnixListener,
    _cleanup: RemoveOnDrop,
}

impl Socket {
    /// Binds `dir/dr.sock`. A stale socket (its owner is gone, since we hold
    /// the store's lock) is replaced. Needs a tokio runtime.
    pub fn bind(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join(SOCKET_NAME);
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path)?;
        let cleanup = RemoveOnDrop(path.clone());
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(Socket { listener, _cleanup: cleanup })
    }

    /// Answers connections until `shutdown`, then stops listening (the
    /// socket is removed) and lets the answers under way finish, for at most
    /// [`ANSWER_GRACE`]: returns as soon as none is left, so an owner that
    /// awaits this knows a decision that came in just before the stop has
    /// been taken up (its run claimed) or refused. Answers still going after
    /// the grace go on detached.
    pub async fn serve(self, runner: Runner, shutdown: CancellationToken, mode: Mode) {
        let Socket { listener, _cleanup } = self;
        let mut answering = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(_) = answering.join_next(), if !answering.is_empty() => {}
                accepted = listener.accept() => {
                    let (stream, _) = match accepted {
                        Ok(pair) => pair,
                        Err(e) => {
                            warn!(error = %e, "control socket accept failed");
                            continue;
                        }
                    };
                    if let Err(refused) = peer_allowed(&stream) {
                        warn!(reason = %refused, "control connection refused");
                        continue;
                    }
                    let runner = runner.clone();
                    answering.spawn(async move {
                        if let Err(e) = answer(runner, stream, mode).await {
                            debug!(error = %e, "control connection ended badly");
                        }
                    });
                }
            }
        }
        drop(listener);
        drop(_cleanup);
        let _ = tokio::time::timeout(ANSWER_GRACE, async { while answering.join_next().await.is_some() {} }).await;
        answering.detach_all();
    }
}

/// How long a stopping socket waits for the answers under way.
pub const ANSWER_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct RemoveOnDrop(PathBuf);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Only our own user (and root) may talk to the socket, whatever its mode says.
fn peer_allowed(stream: &tokio::net::UnixStream) -> Result<(), String> {
    let cred = stream.peer_cred().map_err(|e| format!("cannot read the peer's credentials: {e}"))?;
    #[allow(unsafe_code)]
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if cred.uid() == me || cred.uid() == 0 {
        Ok(())
    } else {
        Err(format!("uid {} (pid {:?}) is not the owner (uid {me})", cred.uid(), cred.pid()))
    }
}

async fn answer(runner: Runner, stream: tokio::net::UnixStream, mode: Mode) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    tokio::io::BufReader::new(read).take(1 << 20).read_line(&mut line).await?;
    let response = match serde_json::from_str::<Request>(&line) {
        Ok(request) => handle(&runner, request, mode).await,
        Err(e) => Response::Error { kind: ErrorKind::Usage, message: format!("bad control request: {e}") },
    };
    let mut bytes = serde_json::to_vec(&response).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    write.write_all(&bytes).await?;
    write.shutdown().await
}

use tokio::io::AsyncReadExt as _;

/// Answers one request, as the owner of the store in `mode` (also used
/// in-process by a CLI that holds the store itself: one code path).
pub async fn handle(runner: &Runner, request: Request, mode: Mode) -> Response {
    match handle_inner(runner, request, mode).await {
        Ok(r) => r,
        Err(e) => Response::error(&e),
    }
}

fn load(runner: &Runner, id: RunId) -> crate::Result<RunRecord> {
    runner.store().load(id)?.ok_or_else(|| dr_state::Error::NotFound { query: id.to_string() }.into())
}

async fn handle_inner(runner: &Runner, request: Request, mode: Mode) -> crate::Result<Response> {
    let store = runner.store();
    let not_daemon = || Response::Error {
        kind: ErrorKind::NotDaemon,
        message: format!("the store is held by a foreground dr (pid {}), which drives only its own runs", std::process::id()),
    };
    Ok(match request {
        Request::Info => Response::Info { pid: std::process::id(), daemon: mode == Mode::Daemon, version: env!("CARGO_PKG_VERSION").to_owned() },
        Request::Start { .. } | Request::Resume { .. } if mode != Mode::Daemon => not_daemon(),
        Request::Start { .. } if runner.shutdown_token().is_cancelled() => Response::Error {
            kind: ErrorKind::Cannot,
            message: format!("dr serve (pid {}) is stopping; start the run once it is back", std::process::id()),
        },
        Request::Start { id, workflow, params, incident_at, preapproved_by } => {
            if let Some(id) = id {
                if store.load(id)?.is_some() {
                    // The same request again (its answer was lost): the run it made.
                    let run = load(runner, id)?;
                    let rto = runner.rto(&run);
                    return Ok(Response::Runs(vec![(run, rto)]));
                }
            }
            let run = runner
                .create_run(crate::CreateRequest { id, workflow, params, incident_at, preapproved_by, ..crate::CreateRequest::default() })
                .await?;
            spawn_drive(runner, run.id, DriveOptions::default());
            let rto = runner.rto(&run);
            Response::Runs(vec![(run, rto)])
        }
        Request::Resume { query, allow_definition_change } => {
            let id = store.resolve(&query)?;
            let before = runner.load_checked(id).await?;
            if !runner.driving().contains(&id) && !before.status.is_terminal() {
                if runner.shutdown_token().is_cancelled() {
                    return Err(stopping(id, &before));
                }
                let mut drive = spawn_drive(runner, id, DriveOptions { resume: true, allow_definition_change, operator: None });
                // Answer once the resume is recorded, or with why it was refused (a changed
                // definition, a damaged history), as a decision is.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
                loop {
                    tokio::select! {
                        finished = &mut drive => {
                            match finished {
                                Ok(outcome) => { outcome?; }
                                Err(e) => return Err(crate::Error::Internal(format!("driving run {id} stopped: {e}"))),
                            }
                            break;
                        }
                        () = tokio::time::sleep(Duration::from_millis(20)) => {
                            if load(runner, id)?.next_seq > before.next_seq || tokio::time::Instant::now() >= deadline {
                                break;
                            }
                        }
                    }
                }
            }
            let run = load(runner, id)?;
            let rto = runner.rto(&run);
            Response::Runs(vec![(run, rto)])
        }
        Request::Status { query } => {
            // Without a query: every unfinished run (none is an answer, not an error).
            let ids = match query {
                Some(q) => vec![store.resolve(&q)?],
                None => store.open_runs()?,
            };
            let mut runs = Vec::new();
            for id in ids {
                let run = load(runner, id)?;
                let rto = runner.rto(&run);
                runs.push((run, rto));
            }
            Response::Runs(runs)
        }
        Request::List => {
            let now = runner.now_ms();
            let mut runs = Vec::new();
            let mut damaged = Vec::new();
            for summary in store.summaries()? {
                match summary {
                    Ok(s) if s.status.is_terminal() => {
                        let rto = rto::from_summary(&s, now);
                        runs.push((s, rto));
                    }
                    Ok(s) => {
                        let rto = load(runner, s.id).map(|r| runner.rto(&r)).unwrap_or_else(|_| rto::from_summary(&s, now));
                        runs.push((s, rto));
                    }
                    Err(e) => damaged.push(e.to_string()),
                }
            }
            Response::List { runs, damaged }
        }
        Request::History { query } => Response::Events(store.events(store.resolve(&query)?)?),
        Request::Driving => Response::Driving { runs: runner.driving(), pid: std::process::id() },
        Request::Annotate { query, field, value, by } => {
            let id = store.resolve(&query)?;
            let run = runner.annotate(id, &field, &value, &by).await?;
            let rto = runner.rto(&run);
            Response::Runs(vec![(run, rto)])
        }
        Request::Gc { older_than_ms, dry_run } => {
            let now = runner.now_ms();
            let before = now.saturating_sub(i64::try_from(older_than_ms).unwrap_or(i64::MAX));
            let runs = store.gc(before, now, dry_run)?;
            Response::Collected { runs, before, dry_run }
        }
        Request::Operate { query, command } => {
            let id = store.resolve(&query)?;
            match runner.operate(id, command.clone()).await? {
                Some(run) => {
                    let rto = runner.rto(&run);
                    Response::Runs(vec![(run, rto)])
                }
                // Not driven here: the store is ours, so this process takes the run up and
                // drives it from the decision on (as `dr resume` would), beside its own.
                None => Response::Runs(vec![adopt(runner, id, command).await?]),
            }
        }
    })
}

/// Applies an operator's decision to a run this process does not drive, by
/// driving it here from that decision on. Answers once the decision is
/// recorded (or refused: the refusal is the answer), with the run then.
async fn adopt(runner: &Runner, id: RunId, command: OperatorCommand) -> crate::Result<(RunRecord, Rto)> {
    let before = load(runner, id)?;
    if runner.shutdown_token().is_cancelled() {
        return Err(stopping(id, &before));
    }
    let before = before.next_seq;
    let options = DriveOptions { resume: true, operator: Some(command), ..DriveOptions::default() };
    let mut drive = spawn_drive(runner, id, options);
    // Within the asking client's patience (30 s).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        tokio::select! {
            finished = &mut drive => {
                let run = match finished {
                    Ok(outcome) => outcome?.run,
                    Err(e) => return Err(crate::Error::Internal(format!("driving run {id} stopped: {e}"))),
                };
                let rto = runner.rto(&run);
                return Ok((run, rto));
            }
            () = tokio::time::sleep(Duration::from_millis(20)) => {
                let run = load(runner, id)?;
                if run.next_seq > before {
                    let rto = runner.rto(&run);
                    return Ok((run, rto));
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(crate::Error::Internal(format!(
                        "the decision on run {id} was handed over but is not recorded after 20 s; dr status {id} shows when it is"
                    )));
                }
            }
        }
    }
}

fn stopping(id: RunId, run: &RunRecord) -> crate::Error {
    crate::Error::NotApplicable {
        run: id,
        status: run.status.as_str(),
        detail: format!("the process that owns the store (pid {}) is stopping; try again once it has", std::process::id()),
    }
}

/// Drives run `id` in the background (a run taken up for another `dr`).
pub fn spawn_drive(runner: &Runner, id: RunId, options: DriveOptions) -> tokio::task::JoinHandle<crate::Result<crate::runner::DriveOutcome>> {
    let driver = runner.clone();
    tokio::spawn(async move {
        let outcome = driver.drive(id, options).await;
        if let Err(e) = &outcome {
            warn!(run = %id, error = %e, "driving a run taken up for another dr failed");
        }
        outcome
    })
}

/// Asks the process that owns the store in `dir`. `None` when nobody answers
/// (no socket, or a stale one).
pub fn request(dir: &Path, request: &Request, timeout: Duration) -> std::io::Result<Option<Response>> {
    let path = dir.join(SOCKET_NAME);
    let mut stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => return Ok(None),
        Err(e) => return Err(e),
    };
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut bytes = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    stream.write_all(&bytes)?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    serde_json::from_str(&line).map(Some).map_err(|e| std::io::Error::other(format!("bad control response: {e}")))
}
