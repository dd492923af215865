//! SSH actions (libssh2 through the `ssh2` crate): run a command on a node
//! ([`SshCommand`]), upload and download a file with a SHA-256 check
//! ([`SshUpload`], [`SshDownload`]) and trust the new host key of a rebuilt
//! node ([`SshTrustHostKey`]).
//!
//! Owns: connecting (connect timeout, keep-alive, key file or ssh-agent),
//! **strict host-key checking** against the configured `known_hosts` (an
//! unknown or changed key is an error naming the host and the key's SHA256
//! fingerprint; only the explicit trust action changes `known_hosts`), one
//! connection per run and host ([`pool`]), and running every blocking libssh2
//! call on tokio's blocking pool ([`super::blocking`]), never on a runtime
//! thread, bounded by the attempt's cancellation and deadline.
//!
//! Refuses: accepting a host key silently, retries (the engine's), and
//! keeping more than the last 64 KiB of a command's output.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use dr_orchestrator::{ActionCtx, ActionError, RunId, TypedAction};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use ssh2::{CheckResult, KnownHostFileKind, KnownHostKeyFormat, Session};
use tokio_util::sync::CancellationToken;

use super::output::{Captured, LineRedactor, OutputLimiter, Redactor};

/// Where and as whom to connect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshTarget {
    /// Host name or address.
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    pub user: String,
    /// Private key file; ssh-agent when absent.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// The `known_hosts` file host keys are checked against (strictly).
    pub known_hosts: PathBuf,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Keep-alive interval in seconds (0: none).
    #[serde(default = "default_keepalive_secs")]
    pub keepalive_secs: u32,
}

fn default_port() -> u16 {
    22
}
fn default_connect_timeout_ms() -> u64 {
    10_000
}
fn default_keepalive_secs() -> u32 {
    15
}

impl SshTarget {
    pub fn new(host: impl Into<String>, port: u16, user: impl Into<String>, known_hosts: impl Into<PathBuf>) -> Self {
        SshTarget {
            host: host.into(),
            port,
            user: user.into(),
            key: None,
            known_hosts: known_hosts.into(),
            connect_timeout_ms: default_connect_timeout_ms(),
            keepalive_secs: default_keepalive_secs(),
        }
    }

    pub fn with_key(mut self, key: impl Into<PathBuf>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// `host:port`, as errors name it.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The name of the host in `known_hosts`: `host`, or `[host]:port` off port 22.
    pub fn known_hosts_name(&self) -> String {
        if self.port == 22 {
            self.host.clone()
        } else {
            format!("[{}]:{}", self.host, self.port)
        }
    }

    fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms.max(1))
    }
}

/// What a remote command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    pub host: String,
    pub command: String,
    pub exit_status: i32,
    pub stdout: Captured,
    pub stderr: Captured,
}

/// OpenSSH's fingerprint of a raw public key blob: `SHA256:` + unpadded base64.
pub fn fingerprint(key: &[u8]) -> String {
    format!("SHA256:{}", base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(key)))
}

/// The hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Quotes a word for a POSIX shell.
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b)) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// When the attempt must end: the step's deadline or `timeout`, whichever is
/// first, as an instant the blocking pool's polls compare with.
fn attempt_deadline(ctx: &ActionCtx, timeout: Option<Duration>) -> Instant {
    Instant::now() + ctx.timeout(timeout).unwrap_or(Duration::from_secs(24 * 3600))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

// ---------------------------------------------------------------------------
// Connections

/// One connection per run and host, reused by the run's ssh steps. A
/// connection idle for [`pool::IDLE`] is closed (runs end without telling
/// the actions), and so is one that fails.
pub mod pool {
    use super::*;

    /// How long an unused connection stays open.
    pub const IDLE: Duration = Duration::from_secs(300);

    type Key = (RunId, String, u16, String);
    type Entry = (Arc<Mutex<Session>>, Instant);

    fn connections() -> &'static Mutex<HashMap<Key, Entry>> {
        static POOL: OnceLock<Mutex<HashMap<Key, Entry>>> = OnceLock::new();
        POOL.get_or_init(Default::default)
    }

    fn key(run: RunId, target: &SshTarget) -> Key {
        (run, target.host.clone(), target.port, target.user.clone())
    }

    fn prune(map: &mut HashMap<Key, Entry>, now: Instant) {
        map.retain(|_, (_, used)| now.duration_since(*used) < IDLE);
    }

    pub(super) fn get(run: RunId, target: &SshTarget) -> Option<Arc<Mutex<Session>>> {
        let now = Instant::now();
        let mut map = lock(connections());
        prune(&mut map, now);
        map.get_mut(&key(run, target)).map(|(session, used)| {
            *used = now;
            session.clone()
        })
    }

    pub(super) fn put(run: RunId, target: &SshTarget, session: Arc<Mutex<Session>>) {
        let now = Instant::now();
        let mut map = lock(connections());
        prune(&mut map, now);
        map.insert(key(run, target), (session, now));
    }

    pub(super) fn forget(run: RunId, target: &SshTarget) {
        lock(connections()).remove(&key(run, target));
    }

    /// Closes every connection of a run (when it ends).
    pub fn close_run(run: RunId) {
        lock(connections()).retain(|(r, ..), _| *r != run);
    }

    /// How many connections are open for a run.
    pub fn open_for_run(run: RunId) -> usize {
        lock(connections()).keys().filter(|(r, ..)| *r == run).count()
    }
}

/// Connects, checks the host key strictly, authenticates. Blocking.
fn connect_blocking(target: &SshTarget) -> Result<Session, ActionError> {
    let address = target.address();
    let timeout = target.connect_timeout();
    let addrs: Vec<_> = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| ActionError::retryable(format!("cannot resolve ssh host {address}: {e}; check the inventory's address")))?
        .collect();
    let mut last_error = None;
    let mut stream = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_error = Some(e),
        }
    }
    let Some(stream) = stream else {
        let why = last_error.map_or_else(|| "no address".to_owned(), |e| e.to_string());
        return Err(ActionError::retryable(format!(
            "cannot connect to ssh on {address}: {why}; is the host up and its sshd running?"
        )));
    };
    let mut session = Session::new()
        .map_err(|e| ActionError::retryable(format!("cannot create an ssh session for {address}: {e}")))?;
    session.set_tcp_stream(stream);
    session.set_timeout(u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX));
    session
        .handshake()
        .map_err(|e| ActionError::retryable(format!("ssh handshake with {address} failed: {e}; is sshd answering there?")))?;
    check_host_key(&session, target)?;
    authenticate(&session, target)?;
    if target.keepalive_secs > 0 {
        session.set_keepalive(true, target.keepalive_secs);
    }
    Ok(session)
}

/// The host's key (raw blob, type) as presented in this session.
fn presented_key(session: &Session, target: &SshTarget) -> Result<(Vec<u8>, ssh2::HostKeyType), ActionError> {
    session
        .host_key()
        .map(|(key, kind)| (key.to_vec(), kind))
        .ok_or_else(|| ActionError::permanent(format!("ssh host {} presented no host key", target.address())))
}

fn key_type_name(kind: ssh2::HostKeyType) -> &'static str {
    match kind {
        ssh2::HostKeyType::Rsa => "ssh-rsa",
        ssh2::HostKeyType::Dss => "ssh-dss",
        ssh2::HostKeyType::Ecdsa256 => "ecdsa-sha2-nistp256",
        ssh2::HostKeyType::Ecdsa384 => "ecdsa-sha2-nistp384",
        ssh2::HostKeyType::Ecdsa521 => "ecdsa-sha2-nistp521",
        ssh2::HostKeyType::Ed25519 => "ssh-ed25519",
        ssh2::HostKeyType::Unknown => "unknown",
    }
}

fn check_host_key(session: &Session, target: &SshTarget) -> Result<(), ActionError> {
    let address = target.address();
    let (key, kind) = presented_key(session, target)?;
    let print = fingerprint(&key);
    let mut known = session
        .known_hosts()
        .map_err(|e| ActionError::permanent(format!("cannot check the host key of {address}: {e}")))?;
    let path = &target.known_hosts;
    if let Err(e) = known.read_file(path, KnownHostFileKind::OpenSSH) {
        return Err(ActionError::permanent(format!(
            "cannot read known_hosts {} to check the host key of {address} ({} {print}): {e}; \
             check the ssh.known_hosts setting",
            path.display(),
            key_type_name(kind)
        )));
    }
    match known.check_port(&target.host, target.port, &key) {
        CheckResult::Match => Ok(()),
        CheckResult::Mismatch => Err(ActionError::permanent(format!(
            "host key of {address} has CHANGED: it presents {} {print}, which does not match its entry in {}; \
             refusing to connect. If the host was re-created on purpose, run the ssh.trust-host-key action \
             (after comparing the fingerprint with the host's console); otherwise treat it as an attack",
            key_type_name(kind),
            path.display()
        ))),
        CheckResult::NotFound => Err(ActionError::permanent(format!(
            "host key of {address} is unknown: {} has no entry for {} (it presents {} {print}); \
             refusing to connect. Verify the fingerprint and run the ssh.trust-host-key action to add it",
            path.display(),
            target.known_hosts_name(),
            key_type_name(kind)
        ))),
        CheckResult::Failure => Err(ActionError::permanent(format!(
            "cannot check the host key of {address} ({} {print}) against {}",
            key_type_name(kind),
            path.display()
        ))),
    }
}

fn authenticate(session: &Session, target: &SshTarget) -> Result<(), ActionError> {
    let address = target.address();
    let user = &target.user;
    match &target.key {
        Some(key) => {
            if let Err(e) = std::fs::metadata(key) {
                return Err(ActionError::permanent(format!(
                    "cannot read ssh key file {} (for {user}@{address}): {e}; check the ssh.key setting",
                    key.display()
                )));
            }
            session.userauth_pubkey_file(user, None, key, None).map_err(|e| {
                ActionError::permanent(format!(
                    "ssh authentication as {user} on {address} with key file {} failed: {e}; \
                     check that the key is the right one and its public key is in the host's authorized_keys",
                    key.display()
                ))
            })?;
        }
        None => session.userauth_agent(user).map_err(|e| {
            ActionError::permanent(format!(
                "ssh authentication as {user} on {address} through ssh-agent failed: {e}; \
                 start an agent with the key (ssh-add) or set ssh.key"
            ))
        })?,
    }
    if session.authenticated() {
        Ok(())
    } else {
        Err(ActionError::permanent(format!("ssh authentication as {user} on {address} was not accepted")))
    }
}

/// The run's connection to `target`, made (and pooled) when missing. The
/// bool says whether it came from the pool (so may be stale).
async fn session_for(ctx: &ActionCtx, target: &SshTarget) -> Result<(Arc<Mutex<Session>>, bool), ActionError> {
    if let Some(session) = pool::get(ctx.run_id, target) {
        return Ok((session, true));
    }
    let owned = target.clone();
    let what = format!("ssh connect to {}", target.address());
    let session = super::blocking(ctx, &what, move |_| connect_blocking(&owned)).await?;
    let session = Arc::new(Mutex::new(session));
    pool::put(ctx.run_id, target, session.clone());
    Ok((session, false))
}

/// Runs `job` on the run's connection; a pooled connection that fails at the
/// transport level is dropped and the job is tried once on a fresh one.
/// The job gets a token cancelled when the attempt is cancelled or its
/// deadline passes; a connection whose job was abandoned so is dropped.
async fn with_session<T: Send + 'static>(
    ctx: &ActionCtx,
    target: &SshTarget,
    what: &str,
    job: impl Fn(&Session, &CancellationToken) -> Result<T, JobError> + Send + Sync + 'static,
) -> Result<T, ActionError> {
    let run = ctx.run_id;
    let job = Arc::new(job);
    loop {
        let (session, pooled) = session_for(ctx, target).await?;
        let job2 = job.clone();
        let result = match super::blocking(ctx, what, move |cancel| Ok(job2(&lock(&session), cancel))).await {
            Ok(result) => result,
            Err(abandoned) => {
                // Cancelled or out of time mid-job: the session's state is unknown.
                pool::forget(run, target);
                return Err(abandoned);
            }
        };
        match result {
            Ok(value) => return Ok(value),
            Err(JobError::Transport(message)) => {
                pool::forget(run, target);
                if pooled {
                    tracing::debug!(host = %target.address(), %message, "pooled ssh connection failed; reconnecting");
                    continue;
                }
                return Err(ActionError::retryable(message));
            }
            Err(JobError::Action(error)) => {
                if error.retryable {
                    // Timed out or cancelled mid-stream: the session's state is unknown.
                    pool::forget(run, target);
                }
                return Err(error);
            }
        }
    }
}

/// A failure inside a job: of the connection (reconnect may help) or of the action.
enum JobError {
    Transport(String),
    Action(ActionError),
}

impl From<ActionError> for JobError {
    fn from(e: ActionError) -> Self {
        JobError::Action(e)
    }
}


// ---------------------------------------------------------------------------
// Commands

/// The options of one remote command.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub sudo: bool,
    /// The command's own timeout; the step deadline applies regardless.
    pub timeout: Option<Duration>,
    /// Secrets to redact from the captured output and the log.
    pub secrets: Vec<String>,
}

/// Runs `command` on `target` over the run's connection; returns its exit
/// status and output whatever the status (the caller decides).
pub async fn run_command(
    ctx: &ActionCtx,
    target: &SshTarget,
    command: &str,
    options: RunOptions,
) -> Result<CommandResult, ActionError> {
    let line = if options.sudo { format!("sudo -n {command}") } else { command.to_owned() };
    let address = target.address();
    let redactor = Redactor::new(&options.secrets);
    let shown = redactor.redact(&line);
    let deadline = attempt_deadline(ctx, options.timeout);
    let timeout = target.connect_timeout();
    let (line2, address2, shown2) = (line.clone(), address.clone(), shown.clone());
    with_session(ctx, target, &format!("ssh command on {address}"), move |session, cancel| {
        exec_blocking(session, &line2, &address2, &shown2, &redactor, cancel, deadline, timeout)
    })
    .await
}

#[allow(clippy::too_many_arguments)]
fn exec_blocking(
    session: &Session,
    line: &str,
    address: &str,
    shown: &str,
    redactor: &Redactor,
    cancel: &CancellationToken,
    deadline: Instant,
    timeout: Duration,
) -> Result<CommandResult, JobError> {
    session.set_blocking(true);
    session.set_timeout(u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX));
    let mut channel = session
        .channel_session()
        .map_err(|e| JobError::Transport(format!("cannot open an ssh channel to {address}: {e}")))?;
    channel
        .exec(line)
        .map_err(|e| JobError::Transport(format!("cannot start `{shown}` on {address}: {e}")))?;
    tracing::info!(host = %address, command = %shown, "ssh command started");
    let mut streams = [
        StreamTail::new("stdout", address, redactor.clone()),
        StreamTail::new("stderr", address, redactor.clone()),
    ];
    session.set_blocking(false);
    let mut buf = vec![0u8; 32 * 1024];
    let outcome = loop {
        // libssh2 sends keep-alives only when asked; it knows when one is due.
        let _ = session.keepalive_send();
        let mut progress = false;
        for (index, tail) in streams.iter_mut().enumerate() {
            let mut stream = channel.stream(if index == 0 { 0 } else { ssh2::EXTENDED_DATA_STDERR });
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        tail.push(&buf[..n]);
                        progress = true;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => {
                        session.set_blocking(true);
                        return Err(JobError::Transport(format!("reading the output of `{shown}` on {address}: {e}")));
                    }
                }
            }
        }
        if channel.eof() {
            break Ok(());
        }
        if cancel.is_cancelled() {
            break Err(ActionError::retryable(format!("`{shown}` on {address} cancelled before it finished")));
        }
        if Instant::now() >= deadline {
            break Err(ActionError::retryable(format!(
                "`{shown}` on {address} did not finish before the step's deadline; it may still run on the host"
            )));
        }
        if !progress {
            #[allow(clippy::disallowed_methods)] // reason: a blocking-pool thread polling a non-blocking libssh2 channel
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    for tail in &mut streams {
        tail.flush();
    }
    if let Err(error) = outcome {
        // Still non-blocking: closing must not wait for a command that keeps
        // running; the caller discards this connection, and sshd ends the
        // session when it drops.
        let _ = channel.close();
        drop(channel);
        return Err(JobError::Action(error));
    }
    session.set_blocking(true);
    channel
        .wait_close()
        .map_err(|e| JobError::Transport(format!("waiting for `{shown}` on {address} to end: {e}")))?;
    let exit_status = channel
        .exit_status()
        .map_err(|e| JobError::Transport(format!("no exit status of `{shown}` on {address}: {e}")))?;
    let [stdout, stderr] = streams;
    tracing::info!(host = %address, command = %shown, exit_status, "ssh command finished");
    Ok(CommandResult {
        host: address.to_owned(),
        command: shown.to_owned(),
        exit_status,
        stdout: stdout.finish(),
        stderr: stderr.finish(),
    })
}

/// A stream's bounded capture plus its line-wise log.
struct StreamTail {
    name: &'static str,
    host: String,
    limiter: OutputLimiter,
    redactor: Redactor,
    lines: LineRedactor,
    partial: Vec<u8>,
}

impl StreamTail {
    fn new(name: &'static str, host: &str, redactor: Redactor) -> Self {
        StreamTail {
            name,
            host: host.to_owned(),
            limiter: OutputLimiter::default(),
            lines: LineRedactor::new(redactor.clone()),
            redactor,
            partial: Vec::new(),
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.limiter.push(bytes);
        self.partial.extend_from_slice(bytes);
        while let Some(pos) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=pos).collect();
            self.log(&line[..line.len() - 1]);
        }
        if self.partial.len() > 8192 {
            let line = std::mem::take(&mut self.partial);
            self.log(&line);
        }
    }

    fn log(&mut self, line: &[u8]) {
        let text = self.lines.line(&String::from_utf8_lossy(line));
        tracing::info!(host = %self.host, stream = self.name, "{text}");
    }

    fn flush(&mut self) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.log(&line);
        }
    }

    fn finish(&self) -> Captured {
        self.limiter.finish(&self.redactor)
    }
}

/// Runs a command and turns a non-zero exit into an error with its output's tail.
pub async fn run_checked(
    ctx: &ActionCtx,
    target: &SshTarget,
    command: &str,
    options: RunOptions,
) -> Result<CommandResult, ActionError> {
    let result = run_command(ctx, target, command, options).await?;
    if result.exit_status != 0 {
        return Err(ActionError::retryable(format!(
            "`{}` on {} exited with status {}: {}",
            result.command,
            result.host,
            result.exit_status,
            error_tail(&result)
        )));
    }
    Ok(result)
}

fn error_tail(result: &CommandResult) -> String {
    let stderr = result.stderr.tail(2048);
    let text = if stderr.trim().is_empty() { result.stdout.tail(2048) } else { stderr };
    let text = text.trim();
    if text.is_empty() {
        "no output".to_owned()
    } else {
        text.to_owned()
    }
}

// ---------------------------------------------------------------------------
// Files

/// What a transfer moved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub host: String,
    pub local: PathBuf,
    pub remote: String,
    pub bytes: u64,
    pub sha256: String,
}

const CAT_FAILED: &str = "dr-cat-failed";

/// A remote file's SHA-256, or why it could not be computed (the file is
/// missing or unreadable, `sha256sum` failed).
enum RemoteSha256 {
    Digest(String),
    Unreadable(ActionError),
}

/// The remote file's hex SHA-256 (`cat FILE | sha256sum`, which works where
/// only the node's `cat` knows its paths).
pub async fn remote_sha256(ctx: &ActionCtx, target: &SshTarget, remote: &str, sudo: bool) -> Result<String, ActionError> {
    match try_remote_sha256(ctx, target, remote, sudo).await? {
        RemoteSha256::Digest(digest) => Ok(digest),
        RemoteSha256::Unreadable(error) => Err(error),
    }
}

async fn try_remote_sha256(ctx: &ActionCtx, target: &SshTarget, remote: &str, sudo: bool) -> Result<RemoteSha256, ActionError> {
    let cat = if sudo { "sudo -n cat" } else { "cat" };
    // POSIX sh has no pipefail: a failing cat says so on stderr.
    let command = format!("{{ {cat} -- {} || echo {CAT_FAILED} >&2; }} | sha256sum", shell_quote(remote));
    let result = run_command(ctx, target, &command, RunOptions::default()).await?;
    let digest = result.stdout.text.split_whitespace().next().unwrap_or("").to_owned();
    if result.exit_status != 0 || digest.len() != 64 || result.stderr.text.contains(CAT_FAILED) {
        return Ok(RemoteSha256::Unreadable(ActionError::retryable(format!(
            "cannot compute the sha256 of {remote} on {}: {}",
            target.address(),
            error_tail(&result)
        ))));
    }
    Ok(RemoteSha256::Digest(digest))
}

/// Uploads `local` to `remote` (scp) and checks the remote SHA-256.
pub async fn upload(
    ctx: &ActionCtx,
    target: &SshTarget,
    local: &Path,
    remote: &str,
    mode: i32,
) -> Result<Transfer, ActionError> {
    let address = target.address();
    let deadline = attempt_deadline(ctx, None);
    let local_owned = local.to_path_buf();
    let local_sha = super::blocking(ctx, "hashing the local file", move |_| {
        sha256_file(&local_owned).map_err(|e| {
            ActionError::permanent(format!("cannot read {} to upload it: {e}", local_owned.display()))
        })
    })
    .await?;
    let size = std::fs::metadata(local)
        .map_err(|e| ActionError::permanent(format!("cannot read {} to upload it: {e}", local.display())))?
        .len();
    let (local2, remote2, address2) = (local.to_path_buf(), remote.to_owned(), address.clone());
    with_session(ctx, target, &format!("upload to {address}"), move |session, cancel| {
        session.set_blocking(true);
        let mut file = std::fs::File::open(&local2)
            .map_err(|e| ActionError::permanent(format!("cannot open {}: {e}", local2.display())))?;
        let mut channel = session.scp_send(Path::new(&remote2), mode, size, None).map_err(|e| {
            JobError::Action(ActionError::retryable(format!("cannot start the upload to {address2}:{remote2}: {e}")))
        })?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if cancel.is_cancelled() || Instant::now() >= deadline {
                return Err(ActionError::retryable(format!("upload to {address2}:{remote2} stopped by its deadline or a cancel")).into());
            }
            let n = file
                .read(&mut buf)
                .map_err(|e| ActionError::permanent(format!("cannot read {}: {e}", local2.display())))?;
            if n == 0 {
                break;
            }
            channel
                .write_all(&buf[..n])
                .map_err(|e| ActionError::retryable(format!("upload to {address2}:{remote2} failed: {e}")))?;
        }
        let finish = |e: ssh2::Error| ActionError::retryable(format!("upload to {address2}:{remote2} did not complete: {e}"));
        channel.send_eof().map_err(finish)?;
        channel.wait_eof().map_err(finish)?;
        channel.close().map_err(finish)?;
        channel.wait_close().map_err(finish)?;
        Ok(())
    })
    .await?;
    let remote_sha = remote_sha256(ctx, target, remote, false).await?;
    if remote_sha != local_sha {
        return Err(ActionError::retryable(format!(
            "upload of {} to {address}:{remote} is corrupt: local sha256 {local_sha}, remote {remote_sha}",
            local.display()
        )));
    }
    tracing::info!(host = %address, remote, bytes = size, sha256 = %local_sha, "uploaded");
    Ok(Transfer { host: address, local: local.to_path_buf(), remote: remote.to_owned(), bytes: size, sha256: local_sha })
}

/// Downloads `remote` to `local` (scp, via a temporary file renamed into
/// place once its SHA-256 matches the remote one).
pub async fn download(ctx: &ActionCtx, target: &SshTarget, remote: &str, local: &Path) -> Result<Transfer, ActionError> {
    let address = target.address();
    let deadline = attempt_deadline(ctx, None);
    let remote_sha = remote_sha256(ctx, target, remote, false).await?;
    let partial = local.with_extension("dr-partial");
    let (partial2, remote2, address2) = (partial.clone(), remote.to_owned(), address.clone());
    let bytes = with_session(ctx, target, &format!("download from {address}"), move |session, cancel| {
        session.set_blocking(true);
        let (mut channel, stat) = session.scp_recv(Path::new(&remote2)).map_err(|e| {
            JobError::Action(ActionError::retryable(format!("cannot download {address2}:{remote2}: {e}")))
        })?;
        let mut file = std::fs::File::create(&partial2)
            .map_err(|e| ActionError::permanent(format!("cannot create {}: {e}", partial2.display())))?;
        let mut left = stat.size();
        let mut buf = vec![0u8; 64 * 1024];
        while left > 0 {
            if cancel.is_cancelled() || Instant::now() >= deadline {
                return Err(ActionError::retryable(format!("download of {address2}:{remote2} stopped by its deadline or a cancel")).into());
            }
            let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            let n = channel
                .read(&mut buf[..want])
                .map_err(|e| ActionError::retryable(format!("download of {address2}:{remote2} failed: {e}")))?;
            if n == 0 {
                return Err(ActionError::retryable(format!("download of {address2}:{remote2} ended early")).into());
            }
            file.write_all(&buf[..n])
                .map_err(|e| ActionError::permanent(format!("cannot write {}: {e}", partial2.display())))?;
            left -= n as u64;
        }
        file.sync_all().map_err(|e| ActionError::permanent(format!("cannot sync {}: {e}", partial2.display())))?;
        let _ = channel.send_eof();
        let _ = channel.wait_eof();
        let _ = channel.close();
        let _ = channel.wait_close();
        Ok(stat.size())
    })
    .await?;
    let local_sha = sha256_file(&partial)
        .map_err(|e| ActionError::permanent(format!("cannot read {}: {e}", partial.display())))?;
    if local_sha != remote_sha {
        let _ = std::fs::remove_file(&partial);
        return Err(ActionError::retryable(format!(
            "download of {address}:{remote} is corrupt: remote sha256 {remote_sha}, local {local_sha}"
        )));
    }
    std::fs::rename(&partial, local).map_err(|e| {
        ActionError::permanent(format!("cannot move {} to {}: {e}", partial.display(), local.display()))
    })?;
    tracing::info!(host = %address, remote, bytes, sha256 = %local_sha, "downloaded");
    Ok(Transfer { host: address, local: local.to_path_buf(), remote: remote.to_owned(), bytes, sha256: local_sha })
}

// ---------------------------------------------------------------------------
// Host keys

/// What the trust action did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedKey {
    pub host: String,
    pub known_hosts_name: String,
    pub key_type: String,
    pub fingerprint: String,
    /// The fingerprint of the entry it replaced, if there was one.
    pub replaced: Option<String>,
}

/// Reads `target`'s host key and writes it to `known_hosts` in place of any
/// entry for the host. No authentication: only the key exchange happens.
pub async fn trust_host_key(ctx: &ActionCtx, target: &SshTarget) -> Result<TrustedKey, ActionError> {
    let owned = target.clone();
    super::blocking(ctx, &format!("reading the host key of {}", target.address()), move |_| trust_blocking(&owned)).await
}

fn trust_blocking(target: &SshTarget) -> Result<TrustedKey, ActionError> {
    let address = target.address();
    let timeout = target.connect_timeout();
    let addr = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| ActionError::retryable(format!("cannot resolve ssh host {address}: {e}")))?
        .next()
        .ok_or_else(|| ActionError::retryable(format!("ssh host {address} has no address")))?;
    let stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| {
        ActionError::retryable(format!("cannot connect to ssh on {address} to read its host key: {e}; is the host up?"))
    })?;
    let mut session = Session::new().map_err(|e| ActionError::retryable(format!("cannot create an ssh session: {e}")))?;
    session.set_tcp_stream(stream);
    session.set_timeout(u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX));
    session
        .handshake()
        .map_err(|e| ActionError::retryable(format!("ssh handshake with {address} failed: {e}")))?;
    let (key, kind) = presented_key(&session, target)?;
    let print = fingerprint(&key);
    let name = target.known_hosts_name();
    let path = &target.known_hosts;
    // Steps trusting several rebuilt hosts run at once: their read-modify-write
    // of the one known_hosts file must not interleave (a lost entry, or two
    // writers renaming the same temporary file).
    static KNOWN_HOSTS_EDIT: Mutex<()> = Mutex::new(());
    let _editing = lock(&KNOWN_HOSTS_EDIT);
    let mut known = session
        .known_hosts()
        .map_err(|e| ActionError::permanent(format!("cannot edit known hosts: {e}")))?;
    if path.exists() {
        known.read_file(path, KnownHostFileKind::OpenSSH).map_err(|e| {
            ActionError::permanent(format!("cannot read known_hosts {}: {e}", path.display()))
        })?;
    }
    let mut replaced = None;
    let hosts = known
        .hosts()
        .map_err(|e| ActionError::permanent(format!("cannot list known_hosts {}: {e}", path.display())))?;
    for host in hosts {
        if host.name() == Some(name.as_str()) {
            if let Ok(blob) = base64::engine::general_purpose::STANDARD.decode(host.key()) {
                replaced = Some(fingerprint(&blob));
            }
            known
                .remove(&host)
                .map_err(|e| ActionError::permanent(format!("cannot remove the old entry of {name}: {e}")))?;
        }
    }
    known
        .add(&name, &key, "", KnownHostKeyFormat::from(kind))
        .map_err(|e| ActionError::permanent(format!("cannot add the host key of {name}: {e}")))?;
    // Written beside and renamed, so a crash never leaves a half-written file.
    let temp = path.with_extension("dr-new");
    known
        .write_file(&temp, KnownHostFileKind::OpenSSH)
        .map_err(|e| ActionError::permanent(format!("cannot write {}: {e}", temp.display())))?;
    if let Ok(meta) = std::fs::metadata(path) {
        let _ = std::fs::set_permissions(&temp, meta.permissions());
    }
    std::fs::rename(&temp, path)
        .map_err(|e| ActionError::permanent(format!("cannot replace {}: {e}", path.display())))?;
    tracing::warn!(host = %address, fingerprint = %print, replaced = ?replaced, "trusted a new ssh host key");
    Ok(TrustedKey {
        host: address,
        known_hosts_name: name,
        key_type: key_type_name(kind).to_owned(),
        fingerprint: print,
        replaced,
    })
}

// ---------------------------------------------------------------------------
// Actions

/// `ssh.command`: runs a command on a host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshCommand {
    pub target: SshTarget,
    pub command: String,
    #[serde(default)]
    pub sudo: bool,
    /// The command's own timeout; the step's deadline applies regardless.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// For probe-class steps: a command (run with the same `sudo`) that
    /// exits 0 when a lost attempt took effect (`test -e /etc/kubernetes/admin.conf`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<String>,
}

impl SshCommand {
    /// `command` on `target`, with sudo, no probe.
    pub fn sudo(target: SshTarget, command: impl Into<String>) -> Self {
        SshCommand { target, command: command.into(), sudo: true, timeout_ms: None, probe: None }
    }

    /// With a probe command (exit 0: the lost attempt took effect).
    pub fn probed_by(mut self, probe: impl Into<String>) -> Self {
        self.probe = Some(probe.into());
        self
    }
}

impl TypedAction for SshCommand {
    const KIND: &'static str = "ssh.command";
    type Params = Self;
    type Output = CommandResult;

    fn params(&self) -> &Self {
        self
    }

    fn summary(&self, result: &CommandResult) -> String {
        format!("`{}` on {} exited {}", result.command, result.host, result.exit_status)
    }

    async fn run(&self, ctx: &ActionCtx) -> Result<CommandResult, ActionError> {
        let options = RunOptions { sudo: self.sudo, timeout: self.timeout_ms.map(Duration::from_millis), secrets: Vec::new() };
        run_checked(ctx, &self.target, &self.command, options).await
    }

    /// Took effect when the probe command exits 0 (its result is the output);
    /// without a probe command it cannot tell, so the step runs again.
    async fn probe(&self, ctx: &ActionCtx) -> Result<Option<CommandResult>, ActionError> {
        let Some(probe) = &self.probe else { return Ok(None) };
        let options = RunOptions { sudo: self.sudo, timeout: self.timeout_ms.map(Duration::from_millis), secrets: Vec::new() };
        let result = run_command(ctx, &self.target, probe, options).await?;
        Ok((result.exit_status == 0).then_some(result))
    }
}

/// `ssh.upload`: copies a local file to a host, checked by SHA-256.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshUpload {
    pub target: SshTarget,
    pub local: PathBuf,
    pub remote: String,
    #[serde(default = "default_mode")]
    pub mode: i32,
}

fn default_mode() -> i32 {
    0o600
}

impl TypedAction for SshUpload {
    const KIND: &'static str = "ssh.upload";
    type Params = Self;
    type Output = Transfer;

    fn params(&self) -> &Self {
        self
    }

    fn summary(&self, t: &Transfer) -> String {
        format!("uploaded {} bytes to {}:{} (sha256 {})", t.bytes, t.host, t.remote, t.sha256)
    }

    async fn run(&self, ctx: &ActionCtx) -> Result<Transfer, ActionError> {
        upload(ctx, &self.target, &self.local, &self.remote, self.mode).await
    }

    /// Done when the remote file exists with the local file's SHA-256.
    async fn probe(&self, ctx: &ActionCtx) -> Result<Option<Transfer>, ActionError> {
        let read = |e: std::io::Error| ActionError::permanent(format!("cannot read {}: {e}", self.local.display()));
        let local = sha256_file(&self.local).map_err(read)?;
        let bytes = std::fs::metadata(&self.local).map_err(read)?.len();
        Ok(match try_remote_sha256(ctx, &self.target, &self.remote, false).await? {
            RemoteSha256::Digest(remote) if remote == local => Some(Transfer {
                host: self.target.address(),
                local: self.local.clone(),
                remote: self.remote.clone(),
                bytes,
                sha256: local,
            }),
            RemoteSha256::Digest(_) | RemoteSha256::Unreadable(_) => None,
        })
    }
}

/// `ssh.download`: copies a file from a host, checked by SHA-256.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshDownload {
    pub target: SshTarget,
    pub remote: String,
    pub local: PathBuf,
}

impl TypedAction for SshDownload {
    const KIND: &'static str = "ssh.download";
    type Params = Self;
    type Output = Transfer;

    fn params(&self) -> &Self {
        self
    }

    fn summary(&self, t: &Transfer) -> String {
        format!("downloaded {} bytes from {}:{} (sha256 {})", t.bytes, t.host, t.remote, t.sha256)
    }

    async fn run(&self, ctx: &ActionCtx) -> Result<Transfer, ActionError> {
        download(ctx, &self.target, &self.remote, &self.local).await
    }
}

/// `ssh.trust-host-key`: trusts the key a (re-created) host presents now,
/// replacing its `known_hosts` entry; the fingerprint goes into the output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshTrustHostKey {
    pub target: SshTarget,
}

impl TypedAction for SshTrustHostKey {
    const KIND: &'static str = "ssh.trust-host-key";
    type Params = Self;
    type Output = TrustedKey;

    fn params(&self) -> &Self {
        self
    }

    fn summary(&self, trusted: &TrustedKey) -> String {
        let replacing = trusted.replaced.as_ref().map(|old| format!(" (replacing {old})")).unwrap_or_default();
        format!("trusted {} key {} of {}{replacing}", trusted.key_type, trusted.fingerprint, trusted.known_hosts_name)
    }

    async fn run(&self, ctx: &ActionCtx) -> Result<TrustedKey, ActionError> {
        // A pooled connection to the old host must not be reused.
        pool::forget(ctx.run_id, &self.target);
        trust_host_key(ctx, &self.target).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_and_names() {
        assert_eq!(shell_quote("/tmp/a.db"), "/tmp/a.db");
        assert_eq!(shell_quote("a b'c"), r"'a b'\''c'");
        assert_eq!(shell_quote(""), "''");
        let t = SshTarget::new("10.0.0.1", 22, "root", "/k");
        assert_eq!(t.known_hosts_name(), "10.0.0.1");
        let t = SshTarget::new("127.0.0.10", 2222, "root", "/k");
        assert_eq!(t.known_hosts_name(), "[127.0.0.10]:2222");
    }

    #[test]
    fn fingerprints_are_openssh_style() {
        // sha256("") base64 without padding.
        assert_eq!(fingerprint(b""), "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU");
    }

    #[test]
    fn params_round_trip_with_defaults() {
        let json = serde_json::json!({"target": {"host": "h", "user": "u", "known_hosts": "/kh"}, "command": "true"});
        let c: SshCommand = serde_json::from_value(json).unwrap();
        assert_eq!(c.target.port, 22);
        assert!(!c.sudo);
        assert_eq!(serde_json::to_value(c.params()).unwrap()["target"]["host"], "h");
    }
}
