//! The local command action (`command.run`): runs a program on the bastion
//! (terraform/tofu, the host-setup scripts, `platform-deploy.sh`) with
//! arguments, working directory, environment (secret values marked and
//! redacted), optional standard input and a timeout (the earlier of its own
//! and the step deadline, [`ActionCtx::timeout`]). Output is streamed to
//! tracing line by line and its last 64 KiB kept (redacted) in the step's
//! [`CommandOutput`].
//!
//! The child leads its own process group. On timeout, cancellation or when
//! the attempt's future is dropped, the whole group is killed: SIGTERM, then
//! SIGKILL after a grace period (`kill_on_drop` and a drop guard cover the
//! runner dropping the future). After a normal exit the group is left
//! alone (a daemon the program started with `setsid` is not in it anyway);
//! pipes still held open by a leftover process are read for 2 s more.
//!
//! Owns: the child processes it starts. Refuses: shell interpretation (use
//! `sh -c` explicitly), retries (the engine's).

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dr_orchestrator::{ActionCtx, ActionError, TypedAction};
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::output::{Captured, LineRedactor, OutputLimiter, Redactor, REDACTED};

/// The action kind recorded in the definition.
pub const KIND: &str = "command.run";

/// Default time between SIGTERM and SIGKILL.
pub const DEFAULT_KILL_GRACE_MS: u64 = 10_000;

/// How much of the output an error message quotes.
const ERROR_TAIL_BYTES: usize = 2048;

/// How long the output pipes may stay open after the program exited (a
/// background process of its group may hold them) before they are abandoned.
const PIPE_DRAIN: Duration = Duration::from_secs(2);

/// One environment variable for the child. A `secret` value never appears in
/// the parameters, the output, errors or logs.
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
    #[serde(default)]
    pub secret: bool,
}

impl EnvVar {
    pub fn plain(name: impl Into<String>, value: impl Into<String>) -> Self {
        EnvVar { name: name.into(), value: value.into(), secret: false }
    }
    pub fn secret(name: impl Into<String>, value: impl Into<String>) -> Self {
        EnvVar { name: name.into(), value: value.into(), secret: true }
    }
}

impl std::fmt::Debug for EnvVar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value = if self.secret { REDACTED } else { self.value.as_str() };
        write!(f, "{}={value}", self.name)
    }
}

/// What to run. Deserializable from configuration; the action's parameters
/// ([`ShownCommandParams`]) and `Debug` show it with secret values replaced.
#[derive(Clone, Deserialize)]
pub struct CommandParams {
    /// A program name looked up in `PATH`, or a path.
    pub program: PathBuf,
    #[serde(default)]
    pub args: Vec<String>,
    /// Working directory (default: the orchestrator's).
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Added to (or overriding) the orchestrator's environment.
    #[serde(default)]
    pub env: Vec<EnvVar>,
    /// Written to standard input, which is then closed; without it standard
    /// input is empty (a prompt such as terraform's "yes" reads end of file).
    #[serde(default)]
    pub stdin: Option<String>,
    /// Whether `stdin` is a secret (then it is not shown in the parameters).
    #[serde(default)]
    pub stdin_secret: bool,
    /// Attempt timeout in ms (the step's deadline applies too, whichever is first).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Time between SIGTERM and SIGKILL of the process group.
    #[serde(default = "default_kill_grace_ms")]
    pub kill_grace_ms: u64,
    /// More values to redact from output and errors (tokens, webhook URLs).
    #[serde(default)]
    pub redact: Vec<String>,
    /// What the command acts on, for tracing (`bastion`, `terraform`, a node).
    #[serde(default)]
    pub target: Option<String>,
    /// Exit codes besides 0 that are an answer, not a failure (`terraform
    /// plan -detailed-exitcode` exits 2 when there are changes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ok_codes: Vec<i32>,
}

impl std::fmt::Debug for CommandParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CommandParams({:?})", ShownCommandParams::of(self))
    }
}

fn default_kill_grace_ms() -> u64 {
    DEFAULT_KILL_GRACE_MS
}

impl CommandParams {
    pub fn new(program: impl Into<PathBuf>) -> Self {
        CommandParams {
            program: program.into(),
            args: Vec::new(),
            cwd: None,
            env: Vec::new(),
            stdin: None,
            stdin_secret: false,
            timeout_ms: None,
            kill_grace_ms: DEFAULT_KILL_GRACE_MS,
            redact: Vec::new(),
            target: None,
            ok_codes: Vec::new(),
        }
    }
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }
    pub fn env(mut self, var: EnvVar) -> Self {
        self.env.push(var);
        self
    }
    pub fn stdin(mut self, input: impl Into<String>) -> Self {
        self.stdin = Some(input.into());
        self
    }
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout_ms = Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        self
    }
    pub fn kill_grace(mut self, grace: Duration) -> Self {
        self.kill_grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        self
    }
    pub fn redact(mut self, secret: impl Into<String>) -> Self {
        self.redact.push(secret.into());
        self
    }
    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    /// Every value that must not be shown.
    pub fn secret_values(&self) -> Vec<String> {
        let mut values: Vec<String> = self.env.iter().filter(|e| e.secret).map(|e| e.value.clone()).collect();
        values.extend(self.redact.iter().cloned());
        if self.stdin_secret {
            values.extend(self.stdin.iter().cloned());
        }
        values
    }

    fn target_name(&self) -> String {
        self.target.clone().unwrap_or_else(|| self.program.display().to_string())
    }
}

/// What a finished command produced: the step's output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandOutput {
    /// The command line as shown (secrets redacted).
    pub command: String,
    pub exit_code: i32,
    pub duration_ms: u64,
    /// stdout and stderr interleaved as they came, the last 64 KiB, redacted.
    pub output: Captured,
}

/// A secret-free copy of [`CommandParams`]: what the definition hashes and
/// shows. Secret environment values and a secret standard input are
/// replaced, other secrets are redacted from the arguments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ShownCommandParams {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub cwd: Option<PathBuf>,
    pub env: Vec<ShownEnvVar>,
    pub stdin: Option<String>,
    pub timeout_ms: Option<u64>,
    pub kill_grace_ms: u64,
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ok_codes: Vec<i32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ShownEnvVar {
    pub name: String,
    pub value: String,
    pub secret: bool,
}

impl ShownCommandParams {
    fn of(p: &CommandParams) -> Self {
        let redactor = Redactor::new(&p.secret_values());
        ShownCommandParams {
            program: p.program.clone(),
            args: p.args.iter().map(|a| redactor.redact(a)).collect(),
            cwd: p.cwd.clone(),
            env: p
                .env
                .iter()
                .map(|e| ShownEnvVar {
                    name: e.name.clone(),
                    value: if e.secret { REDACTED.to_owned() } else { e.value.clone() },
                    secret: e.secret,
                })
                .collect(),
            stdin: p.stdin.as_ref().map(|s| if p.stdin_secret { REDACTED.to_owned() } else { redactor.redact(s) }),
            timeout_ms: p.timeout_ms,
            kill_grace_ms: p.kill_grace_ms,
            target: p.target.clone(),
            ok_codes: p.ok_codes.clone(),
        }
    }
}

/// Runs a local program; see the module documentation.
#[derive(Clone)]
pub struct CommandAction {
    params: CommandParams,
    /// `params` without its secrets, as hashed into the definition.
    shown: ShownCommandParams,
}

impl std::fmt::Debug for CommandAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CommandAction({:?})", self.shown)
    }
}

impl CommandAction {
    pub fn new(params: CommandParams) -> Self {
        let shown = ShownCommandParams::of(&params);
        CommandAction { params, shown }
    }

    /// What it runs, secrets included.
    pub fn command(&self) -> &CommandParams {
        &self.params
    }
}

impl TypedAction for CommandAction {
    const KIND: &'static str = KIND;
    type Params = ShownCommandParams;
    type Output = CommandOutput;

    fn params(&self) -> &ShownCommandParams {
        &self.shown
    }

    fn summary(&self, output: &CommandOutput) -> String {
        format!(
            "`{}` exited {} after {}",
            output.command,
            output.exit_code,
            seconds(Duration::from_millis(output.duration_ms))
        )
    }

    async fn run(&self, ctx: &ActionCtx) -> Result<CommandOutput, ActionError> {
        let timeout = ctx.timeout(self.params.timeout_ms.map(Duration::from_millis));
        run_owned(&self.params, ctx, timeout).await
    }
}

fn shell_quote(word: &str) -> String {
    if !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c)) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// [`run_command`] for a step: what a killed `dr` left running for this
/// step is stopped first, and the new process group is recorded
/// (`crate::procs`).
pub async fn run_owned(params: &CommandParams, ctx: &ActionCtx, timeout: Option<Duration>) -> Result<CommandOutput, ActionError> {
    let owner = crate::procs::owner(ctx.run_id, ctx.step.as_str());
    crate::procs::stop_leftovers(&owner).await;
    run_inner(params, &ctx.cancel, timeout, Some(&owner)).await
}

/// Runs the command described by `params` until it exits, `cancel` fires or
/// `timeout` passes; then its process group is stopped (SIGTERM, SIGKILL
/// after the grace period), so the select here is not [`ActionCtx::guard`]'s.
pub async fn run_command(
    params: &CommandParams,
    cancel: &CancellationToken,
    timeout: Option<Duration>,
) -> Result<CommandOutput, ActionError> {
    run_inner(params, cancel, timeout, None).await
}

async fn run_inner(
    params: &CommandParams,
    cancel: &CancellationToken,
    timeout: Option<Duration>,
    owner: Option<&str>,
) -> Result<CommandOutput, ActionError> {
    let redactor = Redactor::new(&params.secret_values());
    let shown = redactor.redact(
        &std::iter::once(params.program.display().to_string())
            .chain(params.args.iter().cloned())
            .map(|w| shell_quote(&w))
            .collect::<Vec<_>>()
            .join(" "),
    );
    let place = match &params.cwd {
        Some(dir) => format!(" in {}", dir.display()),
        None => String::new(),
    };
    if let Some(dir) = &params.cwd {
        if !dir.is_dir() {
            return Err(ActionError::permanent(format!(
                "cannot run `{shown}`: working directory {} does not exist; check the configured path",
                dir.display()
            )));
        }
    }

    let mut command = tokio::process::Command::new(&params.program);
    command
        .args(&params.args)
        .stdin(if params.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    // The child dies with us (SIGKILL included); its own children are the group record's.
    let parent = std::process::id();
    #[allow(unsafe_code)]
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe calls (prctl, getppid).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent died between fork and prctl: do not run orphaned.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(std::io::Error::other("dr exited while starting the command"));
            }
            Ok(())
        });
    }
    if let Some(dir) = &params.cwd {
        command.current_dir(dir);
    }
    for var in &params.env {
        command.env(&var.name, &var.value);
    }

    let started = Instant::now();
    let mut child = command.spawn().map_err(|e| spawn_error(&e, params, &shown, &place))?;
    let pgid = child.id().and_then(|id| i32::try_from(id).ok());
    let _recorded = match (owner, pgid) {
        (Some(owner), Some(pgid)) => Some(crate::procs::register(owner, pgid)),
        _ => None,
    };
    let mut guard = GroupGuard { pgid };
    tracing::info!(pgid, target = %params.target_name(), "started `{shown}`{place}");

    if let (Some(input), Some(mut stdin)) = (params.stdin.clone(), child.stdin.take()) {
        tokio::spawn(async move {
            // A program that exits without reading its input closes the pipe: not an error.
            let _ = stdin.write_all(input.as_bytes()).await;
        });
    }
    let limiter = Arc::new(Mutex::new(OutputLimiter::default()));
    let readers = [
        child.stdout.take().map(|s| tokio::spawn(pump(s, "stdout", limiter.clone(), redactor.clone()).in_current_span())),
        child.stderr.take().map(|s| tokio::spawn(pump(s, "stderr", limiter.clone(), redactor.clone()).in_current_span())),
    ];

    let expiry = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let ending = tokio::select! {
        status = child.wait() => Ending::Exited(status),
        () = expiry => Ending::TimedOut,
        () = cancel.cancelled() => Ending::Cancelled,
    };
    let stopped = match ending {
        Ending::Exited(_) => None,
        Ending::TimedOut | Ending::Cancelled => {
            Some(terminate_group(&mut child, pgid, Duration::from_millis(params.kill_grace_ms)).await)
        }
    };
    guard.pgid = None;
    drain(readers).await;
    let duration = started.elapsed();
    let captured = match limiter.lock() {
        Ok(limiter) => limiter.finish(&redactor),
        Err(poisoned) => poisoned.into_inner().finish(&redactor),
    };
    let tail = || {
        if captured.text.is_empty() {
            "(no output)".to_owned()
        } else {
            format!("last output:\n{}", captured.tail(ERROR_TAIL_BYTES))
        }
    };
    let group = pgid.map(|g| format!("process group {g}")).unwrap_or_else(|| "process group".to_owned());
    match (ending, stopped) {
        (Ending::TimedOut, Some(how)) => Err(ActionError::retryable(format!(
            "`{shown}`{place} did not finish within {}; {group} was killed ({how}); {}",
            seconds(timeout.unwrap_or_default()),
            tail()
        ))),
        (Ending::Cancelled, Some(how)) => Err(ActionError::retryable(format!(
            "`{shown}`{place} was cancelled after {}; {group} was killed ({how}); {}",
            seconds(duration),
            tail()
        ))),
        (Ending::Exited(Err(e)), _) => {
            Err(ActionError::retryable(format!("lost track of `{shown}`{place} ({group}): {e}; {}", tail())))
        }
        (Ending::Exited(Ok(status)), _) => {
            let exit_code = exit_code(status);
            let duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
            tracing::info!(exit_code, duration_ms, "`{shown}` finished");
            if status.success() || params.ok_codes.contains(&exit_code) {
                Ok(CommandOutput { command: shown, exit_code, duration_ms, output: captured })
            } else {
                let how = match std::os::unix::process::ExitStatusExt::signal(&status) {
                    Some(signal) => format!("was killed by signal {signal}"),
                    None => format!("exited with code {exit_code}"),
                };
                Err(ActionError::retryable(format!(
                    "`{shown}`{place} {how} after {}; {}\nfix the cause shown above, then retry the step",
                    seconds(duration),
                    tail()
                )))
            }
        }
        // Timed out or cancelled always carry how the group was stopped.
        (Ending::TimedOut | Ending::Cancelled, None) => {
            Err(ActionError::retryable(format!("`{shown}`{place} was stopped; {}", tail())))
        }
    }
}

enum Ending {
    Exited(std::io::Result<ExitStatus>),
    TimedOut,
    Cancelled,
}

/// The exit code, or 128 + the signal like a shell reports it.
fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| std::os::unix::process::ExitStatusExt::signal(&status).map(|s| 128 + s))
        .unwrap_or(-1)
}

fn spawn_error(error: &std::io::Error, params: &CommandParams, shown: &str, place: &str) -> ActionError {
    let program = params.program.display();
    match error.kind() {
        std::io::ErrorKind::NotFound => {
            let path_hint = if params.program.components().count() > 1 {
                "check the configured path".to_owned()
            } else {
                let path = params
                    .env
                    .iter()
                    .rev()
                    .find(|e| e.name == "PATH")
                    .map(|e| e.value.clone())
                    .or_else(|| std::env::var("PATH").ok())
                    .unwrap_or_default();
                format!("it is not in PATH ({path}); install it or configure its full path")
            };
            ActionError::permanent(format!("cannot run `{shown}`{place}: program {program} not found; {path_hint}"))
        }
        std::io::ErrorKind::PermissionDenied => ActionError::permanent(format!(
            "cannot run `{shown}`{place}: permission denied for {program}; make it executable (chmod +x)"
        )),
        _ => ActionError::retryable(format!("cannot start `{shown}`{place}: {error}")),
    }
}

/// Copies a pipe into the limiter and logs it line by line (redacted).
async fn pump<R: AsyncRead + Unpin>(
    mut pipe: R,
    stream: &'static str,
    limiter: Arc<Mutex<OutputLimiter>>,
    redactor: Redactor,
) {
    const MAX_LINE: usize = 8 * 1024;
    let mut lines = LineRedactor::new(redactor);
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 8 * 1024];
    let emit = |line: &[u8], lines: &mut LineRedactor| {
        let text = String::from_utf8_lossy(line);
        let text = text.strip_suffix('\r').unwrap_or(&text);
        tracing::info!(stream, "{}", lines.line(text));
    };
    loop {
        let n = match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let bytes = &chunk[..n];
        match limiter.lock() {
            Ok(mut l) => l.push(bytes),
            Err(poisoned) => poisoned.into_inner().push(bytes),
        }
        pending.extend_from_slice(bytes);
        while let Some(newline) = pending.iter().position(|&b| b == b'\n') {
            emit(&pending[..newline], &mut lines);
            pending.drain(..=newline);
        }
        if pending.len() > MAX_LINE {
            emit(&pending, &mut lines);
            pending.clear();
        }
    }
    if !pending.is_empty() {
        emit(&pending, &mut lines);
    }
}

/// Waits for the pipe readers; gives up on pipes that a leftover process
/// still holds open.
async fn drain(readers: [Option<tokio::task::JoinHandle<()>>; 2]) {
    let until = Instant::now() + PIPE_DRAIN;
    for reader in readers.into_iter().flatten() {
        let abort = reader.abort_handle();
        if tokio::time::timeout_at(until, reader).await.is_err() {
            tracing::warn!("a process of the command's group still holds its output open; no longer reading it");
            abort.abort();
        }
    }
}

/// SIGTERM to the group; SIGKILL to whatever is left after `grace`. Returns
/// how the group was stopped.
async fn terminate_group(child: &mut tokio::process::Child, pgid: Option<i32>, grace: Duration) -> String {
    let Some(pgid) = pgid else {
        let _ = child.kill().await;
        return "SIGKILL".to_owned();
    };
    signal_group(pgid, Signal::SIGTERM);
    let until = Instant::now() + grace;
    let mut leader_done = false;
    loop {
        if !leader_done {
            leader_done = tokio::time::timeout(Duration::from_millis(50), child.wait()).await.is_ok();
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if leader_done && !group_alive(pgid) {
            return "SIGTERM".to_owned();
        }
        if Instant::now() >= until {
            signal_group(pgid, Signal::SIGKILL);
            if !leader_done {
                let _ = child.wait().await;
            }
            return format!("SIGTERM, then SIGKILL after {}", seconds(grace));
        }
    }
}

fn signal_group(pgid: i32, signal: Signal) {
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pgid, %signal, "cannot signal the process group: {e}"),
    }
}

/// Whether a process other than a zombie is still in group `pgid`.
pub fn group_alive(pgid: i32) -> bool {
    if matches!(killpg(Pid::from_raw(pgid), None), Err(Errno::ESRCH)) {
        return false;
    }
    // Zombies (dead, not yet reaped by their new parent) still count for
    // kill(2); /proc tells them apart.
    let Ok(entries) = std::fs::read_dir("/proc") else { return true };
    entries.flatten().any(|entry| {
        let is_pid = entry.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
        is_pid && live_member(&entry.path(), pgid)
    })
}

fn live_member(proc_dir: &Path, pgid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(proc_dir.join("stat")) else { return false };
    // "pid (comm) state ppid pgrp ..."; comm may hold spaces and parentheses.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { return false };
    let mut fields = rest.split_whitespace();
    let state = fields.next().unwrap_or("Z");
    let group = fields.nth(1).and_then(|g| g.parse::<i32>().ok());
    group == Some(pgid) && state != "Z" && state != "X"
}

/// Kills the group when the attempt's future is dropped mid-run.
struct GroupGuard {
    pgid: Option<i32>,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            signal_group(pgid, Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_never_show_secret_values() {
        let params = CommandParams::new("terraform")
            .args(["apply", "-var=token=abc123"])
            .env(EnvVar::secret("TF_VAR_password", "hunter2"))
            .env(EnvVar::plain("TF_IN_AUTOMATION", "1"))
            .redact("abc123");
        let action = CommandAction::new(params);
        let shown = serde_json::to_string(action.params()).unwrap();
        assert!(!shown.contains("hunter2") && !shown.contains("abc123"), "{shown}");
        assert!(shown.contains("TF_IN_AUTOMATION") && shown.contains("TF_VAR_password"), "{shown}");
        assert!(!format!("{action:?}").contains("hunter2"));
    }

    #[test]
    fn words_are_quoted_only_when_needed() {
        assert_eq!(shell_quote("-target=libvirt_domain.k8s-worker-1"), "-target=libvirt_domain.k8s-worker-1");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
