//! `dr`, the binary: parses the command line, opens the state store, calls
//! the engine, renders the result, maps it to an exit code.
//!
//! Owns: presentation (tables, JSON, the live view), exit codes, signal
//! handling, the tracing subscriber. Refuses: workflow logic and storage
//! details, which live in `dr-orchestrator`, `dr-workflows` and `dr-state`.

/// `eprintln!` that never panics: a closed or full stderr (`dr … 2>&1 | head`)
/// loses the message, not the process.
macro_rules! say {
    ($($arg:tt)*) => {{
        let mut line = format!($($arg)*);
        line.push('\n');
        crate::errout::write(line.into_bytes());
        // In order with what goes to stdout next, unless stderr is stuck.
        crate::errout::drain(std::time::Duration::from_secs(1));
    }};
}

mod args;
mod client;
mod config_cmd;
mod errout;
mod render;
mod store_cmd;
mod report;
mod when;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use dr_orchestrator::runner::{expected_durations, DriveOptions, DriveOutcome};
use dr_orchestrator::{control, Catalog, Clock, OperatorCommand, Runner, RunnerOptions, SystemClock};
use dr_state::{RunRecord, RunStatus, SledStore};
use dr_workflows::DrCatalog;

use args::{Cli, Command};

/// Exit codes (documented in `dr --help` and the README).
mod exit {
    pub const OK: u8 = 0;
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const PAUSED: u8 = 3;
    pub const NOT_FOUND: u8 = 4;
    pub const BUSY: u8 = 5;
    pub const CANNOT: u8 = 6;
    pub const INTERRUPTED: u8 = 130;
}

/// An error that carries its exit code.
#[derive(Debug)]
struct Usage(String);
impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Usage {}

/// An error the owner of the store already worded: shown as it is, with its exit code.
#[derive(Debug)]
struct Worded {
    code: u8,
    message: String,
}
impl std::fmt::Display for Worded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
impl std::error::Error for Worded {}

fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(msg.into()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon logs what it does (to the journal) unless told otherwise.
    let serving = matches!(cli.command, Command::Serve(_));
    let level = std::env::var("DR_LOG").ok().or_else(|| serving.then(|| "info".to_owned()));
    tracing_subscriber::fmt()
        .with_env_filter(log_filter(level.as_deref()))
        // Through a queue: a full or closed stderr drops log lines, it never blocks the engine.
        .with_writer(errout::make_writer)
        // Colours only for a terminal; a closed or full stderr is not an error worth dying for
        // (tracing would otherwise eprintln! about it, which panics on a broken pipe).
        .with_ansi(std::io::stderr().is_terminal())
        .log_internal_errors(false)
        .init();
    // One run per process: a single-threaded runtime (actions that block use
    // the blocking pool, the store has its own writer thread).
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            say!("dr: cannot start the async runtime: {e}");
            return ExitCode::from(exit::CANNOT);
        }
    };
    let result = runtime.block_on(run(cli));
    errout::finish(std::time::Duration::from_secs(2));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) if is_broken_pipe(&e) => ExitCode::from(141),
        Err(e) => {
            // Written directly, after the queue: the last word is never dropped.
            let _ = writeln!(std::io::stderr(), "dr: {}", error_text(&e));
            ExitCode::from(exit_code_for(&e))
        }
    }
}

/// `DR_LOG`: a bare level (`info`, `debug`) shows dr's own events at that
/// level and only warnings from libraries (sled, hyper, kube); a full filter
/// (`info,sled=debug`) is taken as written. Unset or invalid: nothing.
fn log_filter(value: Option<&str>) -> tracing_subscriber::EnvFilter {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return tracing_subscriber::EnvFilter::new("off");
    };
    let levels = ["error", "warn", "info", "debug", "trace", "off"];
    let directives = if levels.contains(&value.to_ascii_lowercase().as_str()) {
        ["dr", "dr_cli", "dr_orchestrator", "dr_workflows", "dr_state", "dr_serve"]
            .iter()
            .fold("warn".to_owned(), |acc, target| format!("{acc},{target}={value}"))
    } else {
        value.to_owned()
    };
    tracing_subscriber::EnvFilter::try_new(&directives).unwrap_or_else(|e| {
        say!("dr: DR_LOG={value:?} is not a log filter ({e}); logging nothing. Use a level (info, debug) or directives like info,sled=debug");
        tracing_subscriber::EnvFilter::new("off")
    })
}

/// An error and its causes, each said once: a cause whose text its context
/// already includes (`state store X: Permission denied`) is not repeated.
fn error_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// The reader of our output went away (`dr list | head`): end quietly.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

fn exit_code_for(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(worded) = cause.downcast_ref::<Worded>() {
            return worded.code;
        }
        if cause.downcast_ref::<Usage>().is_some() || cause.downcast_ref::<dr_orchestrator::CatalogError>().is_some() {
            return exit::USAGE;
        }
        if let Some(err) = cause.downcast_ref::<dr_state::Error>() {
            return state_code(err);
        }
        if let Some(err) = cause.downcast_ref::<dr_orchestrator::Error>() {
            return match err {
                dr_orchestrator::Error::Store(s) => state_code(s),
                dr_orchestrator::Error::Catalog(_) | dr_orchestrator::Error::UnknownStep { .. } => exit::USAGE,
                // The run's state does not allow it (retry of a step that did not fail, a decision on an ended run).
                dr_orchestrator::Error::NotApplicable { .. } => exit::CANNOT,
                _ => exit::CANNOT,
            };
        }
    }
    exit::CANNOT
}

fn state_code(e: &dr_state::Error) -> u8 {
    match e {
        dr_state::Error::NotFound { .. } | dr_state::Error::Collected { .. } => exit::NOT_FOUND,
        dr_state::Error::Ambiguous { .. } | dr_state::Error::DidYouMean { .. } => exit::USAGE,
        dr_state::Error::Busy { .. } => exit::BUSY,
        _ => exit::CANNOT,
    }
}

fn default_state_dir() -> PathBuf {
    #[allow(unsafe_code)]
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        return PathBuf::from("/var/lib/dr");
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("dr");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/dr"),
        None => PathBuf::from(".dr-state"),
    }
}

struct Env {
    runner: Runner,
    clock: Arc<dyn Clock>,
    dir: PathBuf,
}

fn open(cli_state_dir: Option<PathBuf>) -> anyhow::Result<Env> {
    match access(cli_state_dir)? {
        Access::Local(env) => Ok(env),
        Access::Remote { dir, busy } => {
            // Say which run the owner drives, and how to follow it.
            let Driving::Runs(runs) = owner_driving(&dir) else { return Err(busy.into()) };
            let Some(first) = runs.first() else { return Err(busy.into()) };
            let shown: Vec<String> = runs.iter().map(|id| render::short(*id)).collect();
            Err(anyhow::Error::new(Worded {
                code: exit::BUSY,
                message: format!(
                    "{busy}. It drives run {}: `dr status --watch {}` follows it; a decision on another run (dr retry, skip, approve, cancel) is taken up by it",
                    shown.join(", "),
                    render::short(*first)
                ),
            }))
        }
    }
}

/// The store itself, or (while another process owns it) that process's control socket.
enum Access {
    Local(Env),
    Remote { dir: PathBuf, busy: dr_state::Error },
}

fn access(cli_state_dir: Option<PathBuf>) -> anyhow::Result<Access> {
    let dir = cli_state_dir.unwrap_or_else(default_state_dir);
    if dir.exists() && !dir.is_dir() {
        return Err(not_a_directory(&dir));
    }
    // A store held by a process without a control socket is most likely a
    // reader (dr list, dr status) that lets go within moments: wait a little
    // rather than fail a start at the same moment as someone's dr list.
    let patience = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let store = loop {
        match SledStore::open(&dir) {
            Ok(store) => break store,
            Err(busy @ dr_state::Error::Busy { .. }) => {
                // A socket that takes a connection is a driver's; a stale one (its process was killed) is not.
                let driver = std::os::unix::net::UnixStream::connect(dir.join(control::SOCKET_NAME)).is_ok();
                if driver || std::time::Instant::now() >= patience {
                    return Ok(Access::Remote { dir, busy });
                }
                #[allow(clippy::disallowed_methods)] // waiting for another process to let the store go
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            Err(e) => return Err(e.into()),
        }
    };
    if let Some(warning) = store.permission_warning() {
        say!("dr: warning: {warning}");
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store: Arc<dyn dr_state::Store> = Arc::new(store);
    render::know_store(Arc::clone(&store));
    let options = RunnerOptions { holder: format!("dr (pid {})", std::process::id()), ..RunnerOptions::default() };
    let runner = Runner::new(store, Arc::new(catalog()), Arc::clone(&clock), options);
    Ok(Access::Local(Env { runner, clock, dir }))
}

/// For commands that only read: the store, or nothing when there is none
/// (a read never creates a store, nor the directories above it).
enum ReadAccess {
    Store(Access),
    Nothing(PathBuf),
}

fn read_access(cli_state_dir: Option<PathBuf>) -> anyhow::Result<ReadAccess> {
    let dir = cli_state_dir.unwrap_or_else(default_state_dir);
    if !store_present(&dir) {
        if dir.exists() && !dir.is_dir() {
            return Err(not_a_directory(&dir));
        }
        return Ok(ReadAccess::Nothing(dir));
    }
    access(Some(dir)).map(ReadAccess::Store)
}

/// The state directory of a command about an existing run: a store that is
/// not there is not created, the run is not found.
fn existing_store(cli_state_dir: Option<PathBuf>, query: &str) -> anyhow::Result<PathBuf> {
    let dir = cli_state_dir.unwrap_or_else(default_state_dir);
    if store_present(&dir) {
        return Ok(dir);
    }
    if dir.exists() && !dir.is_dir() {
        return Err(not_a_directory(&dir));
    }
    Err(anyhow::Error::new(Worded { code: exit::NOT_FOUND, message: format!("no run matches {query:?}: {}", no_store(&dir)) }))
}

fn not_a_directory(dir: &std::path::Path) -> anyhow::Error {
    usage(format!("the state directory {} is not a directory; name another with --state-dir or DR_STATE_DIR", dir.display()))
}

/// Whether `dir` holds a store (its data, or the lock of a process creating it).
fn store_present(dir: &std::path::Path) -> bool {
    dir.join("sled").exists() || dir.join("LOCK").exists()
}

/// `dr status`/`dr list` without a store: an empty answer (`[]` with --json), and why on stderr.
fn no_runs_shown(dir: &std::path::Path, json: bool) -> anyhow::Result<u8> {
    if json {
        print_json(&serde_json::Value::Array(Vec::new()))?;
    }
    say!("dr: no runs: {}", no_store(dir));
    Ok(exit::OK)
}

/// Why a store has no runs: it does not exist — and, for a user other than
/// root, whether root's store (where a service's runs are) does.
fn no_store(dir: &std::path::Path) -> String {
    let system = std::path::Path::new("/var/lib/dr");
    let mut text = format!("no store in {} (nothing has run with this state directory)", dir.display());
    if dir != system && store_present(system) {
        text.push_str("; the system's store is /var/lib/dr (root's runs, dr serve): use sudo, or --state-dir /var/lib/dr");
    }
    text
}

/// Which runs a process drives now: none when we hold the store ourselves,
/// else what its owner says — or, if it cannot say, every run (as before it
/// could: better "running" than a false "stopped").
enum Driving {
    Runs(Vec<dr_state::RunId>),
    Unknown,
}

impl Driving {
    fn nothing() -> Self {
        Driving::Runs(Vec::new())
    }

    fn drives(&self, id: dr_state::RunId) -> bool {
        match self {
            Driving::Runs(ids) => ids.contains(&id),
            Driving::Unknown => true,
        }
    }
}

/// Reads the histories of runs shown from the owner of the store (for step durations).
fn learn_histories(dir: &std::path::Path, runs: &[(RunRecord, dr_orchestrator::Rto)]) {
    for (run, _) in runs {
        let request = control::Request::History { query: run.id.to_string() };
        if let Ok(Some(control::Response::Events(events))) = control::request(dir, &request, std::time::Duration::from_secs(5)) {
            render::know_history(run.id, events);
        }
    }
}

fn owner_driving(dir: &std::path::Path) -> Driving {
    // The run ids too (once), so that short ids shown are unique in the whole store.
    static IDS: std::sync::Once = std::sync::Once::new();
    IDS.call_once(|| {
        if let Ok(Some(control::Response::List { runs, .. })) = control::request(dir, &control::Request::List, std::time::Duration::from_secs(5)) {
            render::know_ids(runs.iter().map(|(s, _)| s.id));
        }
    });
    match control::request(dir, &control::Request::Driving, std::time::Duration::from_secs(5)) {
        Ok(Some(control::Response::Driving { runs, .. })) => Driving::Runs(runs),
        _ => Driving::Unknown,
    }
}

/// Asks the owner of a busy store; its "busy" error when nobody answers.
fn ask_owner(dir: &std::path::Path, busy: dr_state::Error, request: &control::Request) -> anyhow::Result<control::Response> {
    // An owner that is just starting opens its socket a moment after taking the lock.
    let mut answer = control::request(dir, request, std::time::Duration::from_secs(30));
    for _ in 0..20 {
        if !matches!(answer, Ok(None)) {
            break;
        }
        #[allow(clippy::disallowed_methods)] // a client waiting for a server, not the engine
        std::thread::sleep(std::time::Duration::from_millis(100));
        answer = control::request(dir, request, std::time::Duration::from_secs(30));
    }
    match answer {
        Ok(Some(control::Response::Error { kind, message })) => Err(control_error(kind, message)),
        Ok(Some(response)) => Ok(response),
        Ok(None) => Err(busy.into()),
        Err(e) => Err(anyhow::Error::new(busy).context(format!("its control socket did not answer: {e}"))),
    }
}

/// A control answer's error, with the exit code its kind has.
/// The error says the run (or store) is not there (exit 4).
pub(crate) fn is_not_found(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Worded>().is_some_and(|w| w.code == exit::NOT_FOUND)
}

fn control_error(kind: control::ErrorKind, message: String) -> anyhow::Error {
    match kind {
        control::ErrorKind::NotFound => anyhow::Error::new(Worded { code: exit::NOT_FOUND, message }),
        control::ErrorKind::Usage => usage(message),
        control::ErrorKind::Cannot => anyhow!(message),
        control::ErrorKind::NotDaemon => anyhow::Error::new(Worded { code: exit::BUSY, message }),
    }
}

fn parse_params(raw: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut params = BTreeMap::new();
    for item in raw {
        let Some((key, value)) = item.split_once('=') else {
            return Err(usage(format!("--param {item:?} is not KEY=VALUE")));
        };
        if key.trim().is_empty() {
            return Err(usage(format!("--param {item:?} has an empty key")));
        }
        if params.insert(key.trim().to_owned(), value.to_owned()).is_some() {
            return Err(usage(format!("--param {} is given twice", key.trim())));
        }
    }
    Ok(params)
}

/// How old a `--detected-at` may be before dr asks (or wants `--yes`).
const DETECTED_LONG_AGO_MS: i64 = 24 * 3_600_000;

/// `--detected-at`, in any form `when::parse` reads, as ms since the epoch.
/// Says on stderr how it was read (unless `--json`); refuses a time more than
/// a minute ahead; a time more than a day old is asked about on a terminal,
/// else refused unless `--yes` accepts it.
fn detected_at(raw: &str, now_ms: i64, yes: bool, json: bool) -> anyhow::Result<i64> {
    let now = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(now_ms)
        .context("the system clock is out of range")?
        .with_timezone(&chrono::Local);
    let parsed = when::parse(raw, &now).map_err(|e| usage(format!("--detected-at: {e}")))?;
    if parsed.at_ms > now_ms.saturating_add(60_000) {
        return Err(usage(format!("--detected-at {raw:?} was read as {}: in the future; give the moment the incident was detected", parsed.description)));
    }
    let age_ms = now_ms.saturating_sub(parsed.at_ms);
    let ask = age_ms > DETECTED_LONG_AGO_MS && !yes;
    let too_old = || {
        usage(format!("--detected-at {raw:?} was read as {}: more than 24h ago; pass --yes to start the RTO clock there", parsed.description))
    };
    if ask && !std::io::stdin().is_terminal() {
        return Err(too_old());
    }
    if !json {
        say!("dr: detected at {}", parsed.description);
    }
    if ask && !confirm(&format!("--detected-at is {} ago: start the RTO clock there? [y/N] ", when::span(age_ms)))? {
        return Err(too_old());
    }
    Ok(parsed.at_ms)
}

/// Asks on stderr, reads a line from stdin: yes only for `y` or `yes`.
fn confirm(question: &str) -> anyhow::Result<bool> {
    let mut err = std::io::stderr().lock();
    write!(err, "dr: {question}")?;
    err.flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}

fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    // One write: stdout is line-buffered, and a list of 10,000 runs has many lines.
    let mut buffer = serde_json::to_vec_pretty(value)?;
    buffer.push(b'\n');
    std::io::stdout().lock().write_all(&buffer)?;
    Ok(())
}

fn print_text(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    Ok(())
}

/// `--config` (or `DR_CONFIG`), set once at start.
static CONFIG_PATH: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();

/// The catalog, reading the configuration from `--config` when a workflow needs it.
fn catalog() -> DrCatalog {
    DrCatalog::with_config(CONFIG_PATH.get().cloned().flatten())
}

/// `--flag`, else the environment variable (read here rather than by clap, whose usage
/// line would show an option set from the environment as if it were required).
fn flag_or_env(flag: Option<PathBuf>, var: &str) -> Option<PathBuf> {
    flag.or_else(|| std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from))
}

async fn run(mut cli: Cli) -> anyhow::Result<u8> {
    cli.global.state_dir = flag_or_env(cli.global.state_dir.take(), "DR_STATE_DIR");
    cli.global.config = flag_or_env(cli.global.config.take(), "DR_CONFIG");
    let state_dir = cli.global.state_dir.clone();
    let _ = CONFIG_PATH.set(cli.global.config.clone());
    match cli.command {
        Command::Workflows(args) => workflows(args),
        Command::Config(args) => config_cmd::run(cli.global.config, args).await,
        Command::Assess(args) => assess(cli.global.config, args.json).await,
        Command::Serve(args) => serve(state_dir, args).await,
        Command::Store(args) => match args.command {
            store_cmd::StoreCommand::Stats { json } => store_cmd::stats(state_dir, json).await,
            _ => store_cmd::run(state_dir, args),
        },
        Command::Completions(args) => {
            let mut out = Vec::new();
            clap_complete::generate(args.shell, &mut <Cli as clap::CommandFactory>::command(), "dr", &mut out);
            std::io::stdout().lock().write_all(&out)?;
            Ok(exit::OK)
        }
        Command::Man(args) => man_pages(&args.dir),
        Command::Report(args) => report::run(state_dir, args).await,
        Command::Stats(args) => report::stats::run(state_dir, args).await,
        Command::Gc(args) => store_cmd::gc(state_dir, args).await,
        Command::Maturity(args) => report::maturity::run(state_dir, args.json).await,
        Command::Start(args) => {
            // Read (and perhaps asked about) before the store is opened: a question must not hold it.
            let incident_at = args.detected_at.as_deref().map(|raw| detected_at(raw, SystemClock.now_ms(), args.yes, args.json)).transpose()?;
            let env = match access(state_dir)? {
                Access::Local(env) => env,
                Access::Remote { dir, busy } => {
                    let preapproved_by = args.yes.then(operator_name);
                    let id = dr_state::RunId(uuid::Uuid::now_v7());
                    let request = control::Request::Start { id: Some(id), workflow: args.workflow.clone(), params: parse_params(&args.params)?, incident_at, preapproved_by };
                    return submitted(&dir, busy, &request, args.detach, args.json)
                        .await
                        .map_err(|e| if is_no_answer(&e) { e.context(format!("run {id} may have been created all the same: dr status {id}")) } else { e });
                }
            };
            if args.detach {
                return Err(no_daemon_to_detach(&env.dir));
            }
            start(env, args, incident_at).await
        }
        Command::Resume(args) => {
            let env = match access(Some(existing_store(state_dir, &args.id)?))? {
                Access::Local(env) => env,
                Access::Remote { dir, busy } => {
                    let request = control::Request::Resume { query: args.id.clone(), allow_definition_change: args.allow_definition_change };
                    return submitted(&dir, busy, &request, args.detach, args.json).await;
                }
            };
            if args.detach {
                return Err(no_daemon_to_detach(&env.dir));
            }
            if let Ok(Some(run)) = env.runner.store().resolve(&args.id).and_then(|id| env.runner.store().load(id)) {
                if run.status == RunStatus::Paused && !args.json {
                    say!("dr: run {} is paused for a decision: resume alone does not retry a failed step or pass a gate (what it needs is under Next)", render::short(run.id));
                }
            }
            let options = DriveOptions { resume: true, allow_definition_change: args.allow_definition_change, operator: None };
            drive(env, &args.id, options, args.json).await
        }
        Command::Cancel(args) => {
            let options = DriveOptions { resume: true, operator: Some(OperatorCommand::Cancel { reason: args.reason, by: operator_name() }), ..Default::default() };
            operate(state_dir, &args.id, options, args.json).await
        }
        Command::Retry(args) => {
            let options = DriveOptions { resume: true, operator: Some(OperatorCommand::Retry { step: args.step, by: operator_name() }), ..Default::default() };
            operate(state_dir, &args.id, options, args.json).await
        }
        Command::Approve(args) => {
            let options = DriveOptions { resume: true, operator: Some(OperatorCommand::Approve { step: args.step, by: operator_name() }), ..Default::default() };
            operate(state_dir, &args.id, options, args.json).await
        }
        Command::Skip(args) => {
            if args.reason.trim().is_empty() {
                return Err(usage("--reason must say why the step can be skipped"));
            }
            let options = DriveOptions {
                resume: true,
                operator: Some(OperatorCommand::Skip { step: args.step, reason: args.reason, by: operator_name() }),
                ..Default::default()
            };
            operate(state_dir, &args.id, options, args.json).await
        }
        Command::Status(args) => match read_access(state_dir)? {
            ReadAccess::Nothing(dir) => {
                if let Some(id) = &args.id {
                    return Err(anyhow::Error::new(Worded { code: exit::NOT_FOUND, message: format!("no run matches {id:?}: {}", no_store(&dir)) }));
                }
                no_runs_shown(&dir, args.json)
            }
            ReadAccess::Store(access) => {
                let client = client::Client::from(access);
                let control::Response::Runs(runs) = client.ask(control::Request::Status { query: args.id.clone() }).await? else {
                    bail!("unexpected control response")
                };
                if args.id.is_none() && !args.json && !args.watch {
                    if let Some(line) = report::stats::last_drill_line(&client).await {
                        say!("dr: {line}");
                    }
                }
                if runs.is_empty() {
                    // Nothing unfinished is an answer, not an error.
                    if args.json {
                        print_json(&serde_json::Value::Array(Vec::new()))?;
                    } else {
                        say!("dr: no unfinished runs; `dr list` shows every run, `dr status @latest` the latest");
                    }
                    return Ok(exit::OK);
                }
                if args.watch && client.is_remote() {
                    return watch(client.dir(), runs, args.id.is_some(), args.json).await;
                }
                let driving = client.driving();
                client.learn_histories(&runs).await;
                // Any state that could be shown is a success; scripts read the status field.
                show_runs(&runs, args.id.is_some(), args.json, SystemClock.now_ms(), &driving, client.dir())?;
                if !args.watch {
                    return Ok(exit::OK);
                }
                say!("dr: no process drives a run in this store, so there is nothing to follow (a stopped run continues with dr resume)");
                // --watch ID exits with where the run is (as when it follows one to its end).
                Ok(match (args.id.is_some(), runs.as_slice()) {
                    (true, [(run, _)]) => code_for_status(run.status),
                    _ => exit::OK,
                })
            }
        },
        Command::List(args) => match read_access(state_dir)? {
            ReadAccess::Nothing(dir) => no_runs_shown(&dir, args.json),
            ReadAccess::Store(access) => {
                let client = client::Client::from(access);
                let control::Response::List { runs, damaged } = client.ask(control::Request::List).await? else {
                    bail!("unexpected control response")
                };
                let driving = client.driving();
                show_list(filter_list(runs, &args, &driving), &damaged, args.json, &driving, client.dir())
            }
        },
        Command::History(args) => match read_access(state_dir)? {
            ReadAccess::Nothing(dir) => {
                Err(anyhow::Error::new(Worded { code: exit::NOT_FOUND, message: format!("no run matches {:?}: {}", args.id, no_store(&dir)) }))
            }
            ReadAccess::Store(access) => {
                let client = client::Client::from(access);
                let control::Response::Events(events) = client.ask(control::Request::History { query: args.id.clone() }).await? else {
                    bail!("unexpected control response")
                };
                show_history(&args.id, &events, args.json)
            }
        },
    }
}

fn no_daemon_to_detach(dir: &std::path::Path) -> anyhow::Error {
    usage(format!(
        "--detach hands the run to dr serve, and no dr serve owns the store {}: start the service (systemctl start dr), or run without --detach",
        dir.display()
    ))
}

/// Whether the owner of a busy store is `dr serve`.
fn owner_is_daemon(dir: &std::path::Path) -> bool {
    matches!(control::request(dir, &control::Request::Info, std::time::Duration::from_secs(5)), Ok(Some(control::Response::Info { daemon: true, .. })))
}

/// `dr start`/`dr resume` with a store someone else owns: handed to `dr serve`
/// (then followed, unless `--detach`), else the store is busy.
async fn submitted(dir: &std::path::Path, busy: dr_state::Error, request: &control::Request, detach: bool, json: bool) -> anyhow::Result<u8> {
    if !owner_is_daemon(dir) {
        if detach {
            return Err(no_daemon_to_detach(dir));
        }
        // A foreground dr drives only its own run: the store is busy (with who drives what).
        return match open(Some(dir.to_path_buf())) {
            Ok(_) => Err(busy.into()),
            Err(e) => Err(e),
        };
    }
    let control::Response::Runs(runs) = ask_owner(dir, busy, request)? else { bail!("unexpected control response") };
    let Some((run, _)) = runs.first() else { bail!("dr serve answered without the run") };
    if json && !detach {
        // One object at the end, as without a daemon (not one per change).
        let id = run.id.to_string();
        let code = tokio::select! {
            last = follow_quietly(dir, &id) => {
                let (run, rto) = last?;
                print_json(&render::status_json(&run, &rto, false))?;
                code_for_status(run.status)
            }
            () = wait_for_signal() => exit::INTERRUPTED,
        };
        return Ok(code);
    }
    let short = render::short(run.id);
    if detach {
        if json {
            print_json(&render::status_json(run, &runs[0].1, true))?;
        } else {
            print_text(&format!("{}\n", run.id))?;
            say!("dr: run {short} ({}) is driven by dr serve; dr status --watch {short} follows it", run.workflow);
        }
        return Ok(exit::OK);
    }
    if !json {
        say!("dr: run {} ({}) is driven by dr serve; Ctrl-C stops following it, not the run", run.id, run.workflow);
    }
    tokio::select! {
        code = watch(dir, runs, true, json) => code,
        () = wait_for_signal() => {
            say!("\ndr: stopped following; run {short} goes on in dr serve: dr status --watch {short} follows it again");
            Ok(exit::INTERRUPTED)
        }
    }
}

/// Writes `dr.1` and `dr-COMMAND.1` for every visible command into `dir`.
fn man_pages(dir: &std::path::Path) -> anyhow::Result<u8> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let command = <Cli as clap::CommandFactory>::command();
    let mut pages = vec![("dr".to_owned(), clap_mangen::Man::new(command.clone()))];
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("dr-{}", sub.get_name());
        // "dr start" in the page, as it is typed.
        let page = sub.clone().bin_name(format!("dr {}", sub.get_name()));
        pages.push((name.clone(), clap_mangen::Man::new(page).title(name.to_uppercase())));
    }
    for (name, page) in pages {
        let mut out = Vec::new();
        page.render(&mut out)?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, out).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(exit::OK)
}

/// Whether an error is the owner not answering in time (the request may have been done).
fn is_no_answer(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.to_string().contains("did not answer"))
}

/// Polls a run the daemon drives until it ends, pauses or nobody drives it; its last state.
async fn follow_quietly(dir: &std::path::Path, id: &str) -> anyhow::Result<(RunRecord, dr_orchestrator::Rto)> {
    loop {
        let request = control::Request::Status { query: Some(id.to_owned()) };
        let answer = control::request(dir, &request, std::time::Duration::from_secs(10));
        match answer {
            Ok(Some(control::Response::Runs(mut runs))) if !runs.is_empty() => {
                let (run, rto) = runs.swap_remove(0);
                let driven = matches!(owner_driving(dir), Driving::Runs(ids) if ids.contains(&run.id));
                if run.status.is_terminal() || run.status == RunStatus::Paused || !driven {
                    return Ok((run, rto));
                }
            }
            Ok(Some(control::Response::Error { kind, message })) => return Err(control_error(kind, message)),
            _ => bail!("dr serve stopped answering while run {id} ran; dr status {id} shows where it is"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// `dr serve`: the daemon, until SIGTERM or SIGINT.
async fn serve(state_dir: Option<PathBuf>, args: args::ServeArgs) -> anyhow::Result<u8> {
    let dir = state_dir.unwrap_or_else(default_state_dir);
    if dir.exists() && !dir.is_dir() {
        return Err(not_a_directory(&dir));
    }
    // The configuration: named (--config, DR_CONFIG) it must be valid; the default is used when it exists.
    let named = CONFIG_PATH.get().cloned().flatten();
    let path = named.clone().unwrap_or_else(|| PathBuf::from(dr_workflows::config::DEFAULT_PATH));
    let config = if named.is_some() || path.exists() {
        let config = dr_workflows::config::Config::load(&path)
            .map_err(|e| usage(format!("{e}; `dr config check` shows every problem, --config names another file")))?;
        Some(Arc::new(config))
    } else {
        None
    };
    let options = dr_serve::daemon::Options {
        state_dir: dir.clone(),
        catalog: Arc::new(catalog()),
        holder: format!("dr serve (pid {})", std::process::id()),
        config,
        listen: args.listen,
    };
    let daemon = match dr_serve::daemon::Daemon::start(options).await {
        Ok(daemon) => daemon,
        Err(dr_serve::daemon::Error::Store(e)) => return Err(e.into()),
        Err(dr_serve::daemon::Error::Config(e)) => return Err(usage(format!("{e}; `dr config check` shows every problem"))),
        Err(e) => return Err(anyhow::Error::new(Worded { code: exit::CANNOT, message: e.to_string() })),
    };
    let http = daemon.listening().map_or(String::new(), |addr| format!("; Alertmanager's webhook on http://{addr}/alertmanager, metrics on http://{addr}/metrics"));
    say!("dr: serving the store {} (pid {}){http}; SIGTERM stops it, saving every run", dir.display(), std::process::id());
    let stop = tokio_util::sync::CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
                return;
            };
            let mut count = 0;
            loop {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                count += 1;
                if count == 1 {
                    stop.cancel();
                } else {
                    std::process::exit(i32::from(exit::INTERRUPTED));
                }
            }
        });
    }
    daemon.run(stop).await;
    Ok(exit::OK)
}

/// `dr assess`: read-only checks, then the level and the workflow, with the evidence.
async fn assess(config: Option<PathBuf>, json: bool) -> anyhow::Result<u8> {
    let path = config.unwrap_or_else(|| PathBuf::from(dr_workflows::config::DEFAULT_PATH));
    let config = dr_workflows::config::Config::load(&path)
        .map_err(|e| usage(format!("{e}; `dr config check` shows every problem, --config names another file")))?;
    let assessment = dr_workflows::assess::assess(&config).await;
    let code = if assessment.level.is_some() || assessment.evidence.iter().any(|e| !e.ok) { exit::FAILED } else { exit::OK };
    if json {
        let mut value = serde_json::to_value(&assessment)?;
        value["command"] = serde_json::json!(assessment.command().map(|c| format!("{c} --config {}", path.display())));
        print_json(&value)?;
        return Ok(code);
    }
    let mut text = String::new();
    for e in &assessment.evidence {
        text.push_str(&format!("{} {:12} {}\n", if e.ok { "ok  " } else { "FAIL" }, e.check, e.detail));
    }
    text.push('\n');
    match (assessment.level, assessment.command()) {
        (Some(level), Some(command)) => {
            text.push_str(&format!("Level {level}: {}\nRun: {command} --config {}\n", assessment.reason, path.display()));
        }
        _ => text.push_str(&format!("{}\n", assessment.reason)),
    }
    print_text(&text)?;
    Ok(code)
}

fn workflows(args: args::WorkflowsArgs) -> anyhow::Result<u8> {
    let catalog = catalog();
    match args.show {
        None => {
            let infos = catalog.workflows();
            if args.json {
                print_json(&serde_json::to_value(&infos)?)?;
            } else {
                let mut text = format!("{:24}  LVL  DESCRIPTION\n", "WORKFLOW");
                for w in infos {
                    text.push_str(&format!("{:24}  {:>3}  {}\n", w.name, w.level, w.description));
                }
                print_text(&text)?;
            }
        }
        Some(args::WorkflowsCommand::Show { name, params, format }) => {
            let params = parse_params(&params)?;
            let def = catalog.build(&name, &params)?;
            if format == "mermaid" && !args.json {
                print_text(&render::mermaid(&def))?;
                return Ok(exit::OK);
            }
            let info = catalog.workflows().into_iter().find(|w| w.name == name);
            let target = dr_orchestrator::default_target_secs(def.level);
            if args.json {
                let steps: Vec<_> = def
                    .steps
                    .iter()
                    .map(|s| {
                        serde_json::json!({
                            "id": s.id, "description": s.description, "action": s.action.kind(),
                            "depends_on": s.depends_on, "resume": s.resume.as_str(), "timeout_ms": s.timeout_ms,
                            "expected_ms": s.expected_ms, "max_attempts": s.retry.max_attempts, "fatal": s.fatal,
                            "condition": s.condition.as_ref().map(dr_orchestrator::Condition::describe),
                            "gate": s.gate, "tolerate_failure": s.tolerate_failure, "cleanup": s.cleanup,
                        })
                    })
                    .collect();
                print_json(&serde_json::json!({
                    "name": def.name, "level": def.level, "target_secs": target, "description": def.description,
                    "definition_hash": def.hash(), "params": info.map(|i| i.params), "steps": steps,
                }))?;
            } else {
                let mut text = format!("{} (level {}, RTO target {}): {}\n", def.name, def.level, dr_orchestrator::runner::human_ms(target * 1000), def.description);
                if let Some(info) = info {
                    text.push_str("\nParameters:\n");
                    for p in info.params {
                        let default = p.default.map(|d| format!(" [default: {d}]")).unwrap_or_default();
                        text.push_str(&format!("  {:12} {}{default}\n", p.name, p.description));
                    }
                }
                text.push_str("\nSteps:\n");
                for s in &def.steps {
                    let deps: Vec<&str> = s.depends_on.iter().map(|d| d.as_str()).collect();
                    let deps = if deps.is_empty() { String::new() } else { format!(" after {}", deps.join(", ")) };
                    let mut traits = vec![s.resume.as_str().to_owned(), format!("{} attempts", s.retry.max_attempts)];
                    if s.cleanup {
                        traits.push("cleanup: runs however the run ends".into());
                    }
                    if s.tolerate_failure {
                        traits.push("failure tolerated".into());
                    }
                    if s.fatal {
                        traits.push("fatal".into());
                    }
                    text.push_str(&format!("  {:12} {} ({}){deps}\n", s.id.as_str(), s.action.kind(), traits.join(", ")));
                    if let Some(condition) = &s.condition {
                        text.push_str(&format!("  {:12}   only when {}\n", "", condition.describe()));
                    }
                    if let Some(gate) = &s.gate {
                        text.push_str(&format!("  {:12}   asks first: {gate}\n", ""));
                    }
                }
                print_text(&text)?;
            }
        }
    }
    Ok(exit::OK)
}

/// Who is at the keyboard, as recorded with a decision: the user behind
/// `sudo` when there is one, else the login user.
fn operator_name() -> String {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| format!("uid {}", {
            #[allow(unsafe_code)]
            // SAFETY: geteuid has no preconditions and cannot fail.
            unsafe { libc::geteuid() }
        }))
}

async fn start(env: Env, args: args::StartArgs, incident_at: Option<i64>) -> anyhow::Result<u8> {
    let params = parse_params(&args.params)?;
    // Gates are steps of the workflow: they pause the run (exit 3) unless --yes approved them in advance.
    let preapproved_by = args.yes.then(operator_name);
    let run = env.runner.create(&args.workflow, params, incident_at, preapproved_by).await?;
    if !args.json {
        say!("dr: started run {} ({}); if this process stops, continue with: dr resume {}", run.id, run.workflow, render::short(run.id));
    }
    drive_run(env, run, DriveOptions::default(), args.json).await
}

/// An operator's decision: applied here (and the run driven on) when the
/// store is free, or handed to the process that drives the run.
async fn operate(state_dir: Option<PathBuf>, query: &str, options: DriveOptions, json: bool) -> anyhow::Result<u8> {
    let cancelling = matches!(options.operator, Some(OperatorCommand::Cancel { .. }));
    // A cancel that ends the run cancelled did what was asked.
    let code = |status: RunStatus| if cancelling && status == RunStatus::Cancelled { exit::OK } else { code_for_status(status) };
    let (dir, busy) = match access(Some(existing_store(state_dir, query)?))? {
        Access::Local(env) => {
            let id = env.runner.store().resolve(query)?;
            let store = Arc::clone(env.runner.store());
            let driven = drive(env, query, options, json).await?;
            let status = store.load(id)?.map(|r| r.status);
            return Ok(match status {
                Some(status) if driven != exit::INTERRUPTED => code(status),
                _ => driven,
            });
        }
        Access::Remote { dir, busy } => (dir, busy),
    };
    let Some(command) = options.operator else { return Err(busy.into()) };
    let request = control::Request::Operate { query: query.to_owned(), command };
    let control::Response::Runs(mut runs) = ask_owner(&dir, busy, &request)? else { bail!("unexpected control response") };
    if cancelling {
        // The running step was told to stop: wait (a while) for the run to end.
        let id = runs.first().map(|(r, _)| r.id.to_string()).unwrap_or_default();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while runs.first().is_some_and(|(r, _)| !r.status.is_terminal()) && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            match control::request(&dir, &control::Request::Status { query: Some(id.clone()) }, std::time::Duration::from_secs(5)) {
                Ok(Some(control::Response::Runs(now))) => runs = now,
                // The owner finished and let the store go: read it ourselves.
                _ => {
                    if let Ok(env) = open(Some(dir.clone())) {
                        let run = env.runner.load_checked(id.parse().map_err(|e| anyhow!("bad run id {id}: {e}"))?).await?;
                        let rto = env.runner.rto(&run);
                        runs = vec![(run, rto)];
                    }
                    break;
                }
            }
        }
    }
    let driving = owner_driving(&dir);
    learn_histories(&dir, &runs);
    show_runs(&runs, true, json, SystemClock.now_ms(), &driving, &dir)?;
    Ok(runs.first().map_or(exit::OK, |(r, _)| code(r.status)))
}

/// `dr status --watch` while another process drives: redraw every second on a
/// terminal (a new block whenever something changed otherwise; with --json one
/// object per change) until every run shown has ended or paused.
async fn watch(dir: &std::path::Path, mut runs: Vec<(RunRecord, dr_orchestrator::Rto)>, single: bool, json: bool) -> anyhow::Result<u8> {
    let tty = std::io::stdout().is_terminal() && !json;
    let query: Vec<String> = runs.iter().map(|(r, _)| r.id.to_string()).collect();
    let mut last_seen: Vec<(u64, bool)> = Vec::new();
    let mut drawn = 0usize;
    let mut driving = owner_driving(dir);
    loop {
        learn_histories(dir, &runs);
        let seen: Vec<(u64, bool)> = runs.iter().map(|(r, _)| (r.next_seq, driving.drives(r.id))).collect();
        if tty {
            let mut text = String::new();
            for (run, rto) in &runs {
                text.push_str(&render::status_text(run, rto, SystemClock.now_ms(), driving.drives(run.id)));
            }
            let mut out = std::io::stdout().lock();
            if drawn > 0 {
                write!(out, "\x1b[{drawn}A\x1b[J")?;
            }
            out.write_all(text.as_bytes())?;
            out.flush()?;
            drawn = text.lines().count();
        } else if seen != last_seen && json {
            // One compact object per line and per change: a stream a script can read line by line.
            let mut lines = String::new();
            for (run, rto) in &runs {
                lines.push_str(&serde_json::to_string(&render::status_json(run, rto, driving.drives(run.id)))?);
                lines.push('\n');
            }
            print_text(&lines)?;
        } else if seen != last_seen {
            show_runs(&runs, single, false, SystemClock.now_ms(), &driving, dir)?;
        }
        last_seen = seen;
        // Nothing more will happen by itself once every run has ended, paused, or lost its driver.
        if runs.iter().all(|(r, _)| r.status.is_terminal() || r.status == RunStatus::Paused || !driving.drives(r.id)) {
            return Ok(runs.first().map_or(exit::OK, |(r, _)| if single { code_for_status(r.status) } else { exit::OK }));
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let mut next = Vec::new();
        driving = owner_driving(dir);
        for id in &query {
            let request = control::Request::Status { query: Some(id.clone()) };
            match control::request(dir, &request, std::time::Duration::from_secs(10)) {
                Ok(Some(control::Response::Runs(mut now))) => next.append(&mut now),
                // The driving process let the store go: show what it left, once.
                _ => {
                    driving = Driving::nothing();
                    let env = open(Some(dir.to_path_buf()))?;
                    let run = env.runner.store().load(id.parse().map_err(|e| anyhow!("bad run id {id}: {e}"))?)?;
                    if let Some(run) = run {
                        let rto = env.runner.rto(&run);
                        next.push((run, rto));
                    }
                }
            }
        }
        runs = next;
    }
}

async fn drive(env: Env, query: &str, options: DriveOptions, json: bool) -> anyhow::Result<u8> {
    let id = env.runner.store().resolve(query)?;
    let run = env.runner.load_checked(id).await?;
    drive_run(env, run, options, json).await
}

async fn drive_run(env: Env, run: RunRecord, options: DriveOptions, json: bool) -> anyhow::Result<u8> {
    // A step's local commands are recorded beside the store: a later dr stops what this one leaves behind.
    if let Err(e) = dr_workflows::procs::init(&env.dir) {
        say!("dr: warning: cannot record the steps' process groups in {} ({e}); a crash could leave a command running", env.dir.display());
    }
    let plan = env.runner.definition_for(&run).map(|d| d.plan()).context("cannot build the run's workflow")?;
    let expected = expected_durations(env.runner.store().as_ref(), &run, Some(&plan));
    let live = render::LiveView::new(plan, expected, Arc::clone(&env.clock), run.id);
    render::know_history(run.id, env.runner.store().events(run.id)?);
    let runner = env.runner.with_observer(Arc::clone(&live) as Arc<dyn dr_orchestrator::Observer>);
    let shutdown = runner.shutdown_token();
    // Other dr processes reach this run through the control socket while it runs.
    let serving = tokio_util::sync::CancellationToken::new();
    let mut server = {
        let (runner, dir, serving) = (runner.clone(), env.dir.clone(), serving.clone());
        Some(tokio::spawn(async move {
            if let Err(e) = control::serve(runner, dir.clone(), serving).await {
                say!("dr: warning: no control socket in {} ({e}); dr status from another shell will report the store busy", dir.display());
            }
        }))
    };
    tokio::spawn(async move {
        let mut count = 0;
        loop {
            wait_for_signal().await;
            count += 1;
            if count == 1 {
                say!("\ndr: stopping; the run is saved and can be continued with dr resume (press Ctrl-C again to quit at once)");
                shutdown.cancel();
            } else {
                std::process::exit(i32::from(exit::INTERRUPTED));
            }
        }
    });
    let ticker = live.is_tty().then(|| {
        let live = Arc::clone(&live);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                interval.tick().await;
                live.redraw();
            }
        })
    });
    let outcome = runner.drive(run.id, options).await;
    // Runs adopted from other shells (an operator's retry, skip or cancel reached this process,
    // which owns the store) are driven to their end too; a stop signal stops them, saved.
    let mut told = false;
    loop {
        while !runner.driving().is_empty() {
            if !told {
                let others: Vec<String> = runner.driving().iter().map(|id| render::short(*id)).collect();
                say!("dr: still driving {} (taken up from another shell); Ctrl-C stops it, saved for dr resume", others.join(", "));
                told = true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        // No new decisions; one that was being taken up as the socket closed is driven to its end too
        // (the server returns once the answers under way are done, i.e. such a run is claimed).
        serving.cancel();
        if let Some(server) = server.take() {
            let _ = server.await;
        }
        if runner.driving().is_empty() {
            break;
        }
    }
    // The own run may have moved on meanwhile (a decision on it came through the socket).
    let outcome = match outcome {
        Ok(DriveOutcome { run: ran, interrupted }) if !interrupted => {
            let now = runner.store().load(ran.id)?.unwrap_or(ran);
            Ok(DriveOutcome { run: now, interrupted })
        }
        other => other,
    };
    if let Some(t) = ticker {
        t.abort();
    }
    let DriveOutcome { run, interrupted } = outcome?;
    // This process no longer drives the run: an interrupted one is shown stopped, with how to continue.
    errout::drain(std::time::Duration::from_secs(1));
    report(&runner, &run, json, !live.is_tty())?;
    if interrupted {
        return Ok(exit::INTERRUPTED);
    }
    Ok(code_for_status(run.status))
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    // SIGHUP (the terminal closed, an ssh session dropped) stops the run cleanly too: it is saved as stopped.
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) =
        (signal(SignalKind::interrupt()), signal(SignalKind::terminate()), signal(SignalKind::hangup()))
    else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
        _ = hup.recv() => {}
    }
}

fn code_for_status(status: RunStatus) -> u8 {
    match status {
        RunStatus::Succeeded => exit::OK,
        RunStatus::Failed | RunStatus::Cancelled => exit::FAILED,
        RunStatus::Paused => exit::PAUSED,
        RunStatus::Running => exit::INTERRUPTED,
    }
}

fn report(runner: &Runner, run: &RunRecord, json: bool, print_table: bool) -> anyhow::Result<()> {
    let rto = runner.rto(run);
    if json {
        return print_json(&render::status_json(run, &rto, false));
    }
    if print_table {
        print_text(&render::status_text(run, &rto, runner.now_ms(), false))?;
    }
    print_hints(run, false);
    Ok(())
}

/// What to do next. `driven` says another process is driving the runs shown,
/// so a running one needs nothing.
fn print_hints(run: &RunRecord, driven: bool) {
    if driven && run.status == RunStatus::Running {
        return;
    }
    let hints = render::next_steps(run);
    if !hints.is_empty() {
        say!("\nNext:");
        for h in hints {
            say!("  {h}");
        }
    }
}

/// Shows runs with their RTO figures: one object for a query, an array otherwise.
fn show_runs(runs: &[(RunRecord, dr_orchestrator::Rto)], single: bool, json: bool, now: i64, driving: &Driving, store: &std::path::Path) -> anyhow::Result<()> {
    if json {
        let values: Vec<_> = runs
            .iter()
            .map(|(r, rto)| {
                let mut v = render::status_json(r, rto, driving.drives(r.id));
                v["store"] = serde_json::json!(store.display().to_string());
                v
            })
            .collect();
        return match (single, values.first()) {
            (true, Some(one)) => print_json(one),
            _ => print_json(&serde_json::Value::Array(values)),
        };
    }
    for (i, (run, rto)) in runs.iter().enumerate() {
        if i > 0 {
            print_text("\n")?;
        }
        print_text(&render::status_text(run, rto, now, driving.drives(run.id)))?;
        print_hints(run, driving.drives(run.id));
    }
    say!("dr: store {}", store.display());
    Ok(())
}

/// `dr list --status S --limit N`: rows are oldest first; the newest N are kept.
fn filter_list(rows: Vec<(dr_state::RunSummary, dr_orchestrator::Rto)>, args: &args::ListArgs, driving: &Driving) -> Vec<(dr_state::RunSummary, dr_orchestrator::Rto)> {
    let mut rows: Vec<_> = rows
        .into_iter()
        .filter(|(s, _)| match args.status.as_deref() {
            None => true,
            Some("stopped") => render::is_stopped(s.status, driving.drives(s.id)),
            Some("running") => s.status == RunStatus::Running && driving.drives(s.id),
            Some(state) => s.status.as_str() == state,
        })
        .collect();
    if let Some(limit) = args.limit {
        let drop = rows.len().saturating_sub(limit);
        rows.drain(..drop);
    }
    rows
}

fn show_list(rows: Vec<(dr_state::RunSummary, dr_orchestrator::Rto)>, damaged: &[String], json: bool, driving: &Driving, store: &std::path::Path) -> anyhow::Result<u8> {
    for d in damaged {
        say!("dr: skipping a damaged run record: {d}");
    }
    if json {
        let store = store.display().to_string();
        let values: Vec<render::SummaryRow> =
            rows.iter().rev().map(|(s, rto)| render::SummaryRow::new(s, rto, driving.drives(s.id), Some(&store))).collect();
        let mut buffer = Vec::with_capacity(values.len() * 640 + 16);
        serde_json::to_writer_pretty(&mut buffer, &values)?;
        buffer.push(b'\n');
        std::io::stdout().lock().write_all(&buffer)?;
    } else if rows.is_empty() {
        say!("dr: no runs yet in {}; start one with: dr start WORKFLOW (see dr workflows)", store.display());
    } else {
        let driven: Vec<dr_state::RunId> = rows.iter().map(|(s, _)| s.id).filter(|id| driving.drives(*id)).collect();
        print_text(&render::list_text(&rows, &driven))?;
        say!("dr: store {}", store.display());
    }
    Ok(if damaged.is_empty() { exit::OK } else { exit::CANNOT })
}

fn show_history(query: &str, events: &[dr_state::EventRecord], json: bool) -> anyhow::Result<u8> {
    if events.is_empty() {
        bail!(anyhow!(dr_state::Error::NotFound { query: query.to_owned() }));
    }
    if json {
        print_json(&serde_json::Value::Array(events.iter().map(render::event_json).collect()))?;
    } else {
        let mut text = String::new();
        for e in events {
            text.push_str(&render::event_line(e));
            text.push('\n');
        }
        print_text(&text)?;
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::error_text;

    #[test]
    fn each_cause_of_an_error_is_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "Permission denied (os error 13)");
        let e = anyhow::Error::new(dr_state::Error::NotWritable { path: "/var/lib/dr".into(), source: io });
        let text = error_text(&e);
        assert_eq!(text.matches("Permission denied (os error 13)").count(), 1, "{text}");
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_text(&e), "outer: inner");
    }
}
