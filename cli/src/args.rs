//! Command-line arguments: what `dr --help` says.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub const EXIT_CODES: &str = "\
Exit codes (start, resume, retry, approve, skip, status --watch ID: where the run is when
dr returns, driven here or by dr serve; cancel: 0 once the run ends cancelled; status,
list, history: 0 when shown; store check: 0 sound, 6 damaged; serve: 0 after a clean stop):
  0    the run succeeded (or the command did what was asked)
  1    the run failed, or was cancelled (by another command)
  2    usage error: unknown workflow or step, bad parameter, bad argument
  3    the run is paused and waits for an operator (dr approve / skip / retry)
  4    no such run (or no store at all)
  5    the state store is busy: another dr process owns it and does not answer
  6    dr could not do it: the run's state does not allow it (a retry of a step that
       did not fail, a decision on an ended run), unreadable store, changed workflow
       definition, damaged history
  130  stopped (SIGINT/SIGTERM/SIGHUP, or the process driving it went away): the run is
       saved, continue it with dr resume";

/// dr: durable disaster recovery for a kubeadm homelab.
///
/// Every recovery runs as a checkpointed state machine: each step is recorded
/// on disk before and after it runs, so a crash of this process loses nothing
/// and `dr resume ID` continues where it stopped, while the RTO clock keeps
/// counting against the target of the failure level.
///
/// start, resume, workflows, config and assess read --config FILE (else
/// $DR_CONFIG, else /etc/dr/dr.toml); the state store is --state-dir DIR (else
/// $DR_STATE_DIR).
#[derive(Debug, Parser)]
#[command(name = "dr", version, after_long_help = EXIT_CODES, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Directory of the state store, else $DR_STATE_DIR [default: /var/lib/dr for root, else $XDG_DATA_HOME/dr]
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Configuration file (listed in the help of the commands that read it)
    #[arg(long, global = true, value_name = "FILE", hide = true)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a recovery and run it in the foreground until it ends or pauses.
    ///
    /// Reads --config FILE (else $DR_CONFIG, else /etc/dr/dr.toml; a run keeps the file it started with): the inventory, ssh, etcd, backups and targets of the workflows that reach the cluster (`synthetic` reads none).
    Start(StartArgs),
    /// Continue a run after a crash, a stop or a pause.
    ///
    /// Reads --config FILE (else $DR_CONFIG, else /etc/dr/dr.toml; a run keeps the file it started with): the inventory, ssh, etcd, backups and targets of the workflows that reach the cluster (`synthetic` reads none).
    Resume(ResumeArgs),
    /// Show a run: steps, attempts, the RTO clock (without ID: every unfinished run, else the latest)
    Status(StatusArgs),
    /// List runs, newest first
    List(ListArgs),
    /// Show the event history of a run (without ID: the latest)
    History(HistoryArgs),
    /// Cancel a run: its running step is told to stop
    Cancel(CancelArgs),
    /// Run a failed or backing-off step again now (all of them without STEP), then continue
    Retry(RetryArgs),
    /// Let a step that waits for confirmation run again, then continue
    Approve(StepArgs),
    /// Mark a step done without running it, then continue
    Skip(SkipArgs),
    /// List the workflows dr knows, or show one.
    ///
    /// Reads --config FILE (else $DR_CONFIG, else /etc/dr/dr.toml; a run keeps the file it started with): the inventory, ssh, etcd, backups and targets of the workflows that reach the cluster (`synthetic` reads none).
    Workflows(WorkflowsArgs),
    /// Check the configuration file: --config FILE, else $DR_CONFIG, else /etc/dr/dr.toml
    Config(ConfigArgs),
    /// Assess the platform (read-only checks) and name the failure level and the workflow to run; exit 0 when nothing is wrong, 1 when something is.
    ///
    /// Reads --config FILE (else $DR_CONFIG, else /etc/dr/dr.toml; a run keeps the file it started with): the inventory, ssh, etcd, backups and targets of the workflows that reach the cluster (`synthetic` reads none).
    Assess(JsonArgs),
    /// Run as the bastion's service: own the store, take up every run that was running, serve the other dr commands
    ///
    /// While `dr serve` runs, `dr start` and `dr resume` hand the run to it and follow it (Ctrl-C stops following, not the run; --detach does not follow), and status, list, history and the decisions are answered by it. At start every run that was running is taken up again (runs waiting for an operator stay waiting); SIGTERM or SIGINT stops it cleanly: running steps are told to stop and their state is saved for the next start. Under systemd (Type=notify) it sends READY=1 once runs are taken up, STATUS= with what runs and its RTO, WATCHDOG=1 from the engine's own loop, STOPPING=1.
    ///
    /// Reads --config FILE (else $DR_CONFIG, else /etc/dr/dr.toml, when it exists): the workflows' settings and [serve], [[alerts]], [escalation]. Exit 0 after a clean stop, 5 when another process owns the store (its pid is named).
    Serve(ServeArgs),
    /// Check the state store's write-ahead log (exit 0 clean, 6 damaged), or cut its damage (repair --accept-loss)
    Store(crate::store_cmd::StoreArgs),
    /// Remove the histories of finished runs that ended more than DAYS ago; their summaries stay, so dr list, dr stats and dr maturity still count them
    ///
    /// A collected run's steps, events and report are gone: write the reports you need first (dr report ID -o FILE). Unfinished runs are never touched, nor the step-duration statistics behind the projections. Works beside dr serve (it does the removal). Exit 0, also when nothing was old enough.
    Gc(crate::store_cmd::GcArgs),
    /// Print a shell completion script: bash, zsh or fish (e.g. dr completions bash > /etc/bash_completion.d/dr)
    Completions(CompletionsArgs),
    /// Write the man pages (dr.1 and one per command) into DIR (packaging)
    #[command(hide = true)]
    Man(ManArgs),
    /// The incident report of a run (the guide's template), filled from its history: md, html (with a timeline chart) or json, in ja or en; --set records the fields only an operator knows (cause, impact, lessons)
    Report(crate::report::ReportArgs),
    /// Incidents by level, MTTR (mean, p90) against 2 h, availability over 365 days against 99.5 %, RTO met per level, drills per month
    Stats(crate::report::StatsArgs),
    /// The guide's DR maturity table per level, computed from the runs: workflow, recent drill or recovery, RTO met, backups within RPO
    Maturity(JsonArgs),
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Where to write dr.1, dr-start.1, …
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Listen for Alertmanager's webhook (POST /alertmanager) and Prometheus (GET /metrics) on ADDR:PORT; overrides [serve] listen. Loopback unless [serve] token_file is set
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate dr.toml: exit 0 when valid, 2 when not (each problem as FILE:LINE:COL: KEY: message); with --connect also reach the API server, etcd, every node over ssh, the backups and terraform (exit 1 when one fails)
    Check(ConfigCheckArgs),
}

#[derive(Debug, Args)]
pub struct ConfigCheckArgs {
    /// Also try each endpoint the file names and report each result with its latency
    #[arg(long)]
    pub connect: bool,
    /// Print one JSON object: valid, path, digest, errors, checks
    /// Print JSON on stdout instead of text (for scripts)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// The workflow to run (see `dr workflows`)
    pub workflow: String,
    /// A workflow parameter, KEY=VALUE; repeat for more
    #[arg(long = "param", short = 'p', value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    /// When the incident was detected; the RTO clock starts there. Forms: 2026-11-28T03:12:00+09:00 or ...Z (RFC 3339), 2026-12-02 03:12[:45] (local time; a T works too), 03:12[:45] (today, or yesterday while still ahead), today 03:12, yesterday 23:10, 10 minutes ago, 90s ago, -15m, -1h30m, now. dr says how it read it; more than a minute ahead is refused; more than 24h ago is asked about on a terminal, else needs --yes
    #[arg(long, value_name = "WHEN", allow_hyphen_values = true)]
    pub detected_at: Option<String>,
    /// Approve every gate of the run in advance (recorded in its history with your user name); without it a gated step pauses the run (exit 3) until `dr approve ID STEP`. Also accepts a --detected-at more than 24h ago
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// With dr serve running: hand the run to it and return at once, printing the run id (with --json: the run as one object); without a daemon this is refused (nothing would drive the run)
    #[arg(long)]
    pub detach: bool,
    /// Print the final status as one JSON object on stdout
    /// Print JSON on stdout instead of text (for scripts)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// Run id, a unique prefix of one, or @latest
    pub id: String,
    /// Continue even though the workflow's definition changed since the run started
    #[arg(long)]
    pub allow_definition_change: bool,
    /// With dr serve running: hand the run to it and return at once
    #[arg(long)]
    pub detach: bool,
    /// Print JSON on stdout instead of text (for scripts)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Run id, a unique prefix of one, or @latest
    pub id: Option<String>,
    /// Print JSON on stdout instead of text (for scripts)
    #[arg(long)]
    pub json: bool,
    /// Keep showing the run while another process drives it, until it ends or pauses (with --json: one object per change)
    #[arg(long)]
    pub watch: bool,
}

#[derive(Debug, Args)]
pub struct JsonArgs {
    /// Print JSON on stdout instead of text (for scripts)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only runs in this state: running, paused, succeeded, failed, cancelled, or stopped (running, but no process drives it)
    #[arg(long, value_name = "STATE", value_parser = ["running", "paused", "succeeded", "failed", "cancelled", "stopped"])]
    pub status: Option<String>,
    /// At most this many runs (the newest)
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Print a JSON array of run summaries, newest first
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Run id, a unique prefix of one, or @latest
    #[arg(default_value = "@latest")]
    pub id: String,
    /// Print JSON on stdout instead of text (for scripts)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// Run id, a unique prefix of one, or @latest
    pub id: String,
    /// Why, recorded in the history
    #[arg(long, default_value = "cancelled by the operator")]
    pub reason: String,
    /// Print JSON on stdout instead of text (for scripts)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// Run id, a unique prefix of one, or @latest
    pub id: String,
    /// The step to retry (default: every failed or backing-off step)
    pub step: Option<String>,
    /// Print JSON on stdout instead of text (for scripts)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StepArgs {
    /// Run id, a unique prefix of one, or @latest
    pub id: String,
    /// The step's id (as `dr status ID` lists them, e.g. restore-etcd)
    pub step: String,
    /// Print JSON on stdout instead of text (for scripts)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SkipArgs {
    /// Run id, a unique prefix of one, or @latest
    pub id: String,
    /// The step's id (as `dr status ID` lists them, e.g. restore-etcd)
    pub step: String,
    /// Why the step can be skipped, recorded in the history
    #[arg(long)]
    pub reason: String,
    /// Print JSON on stdout instead of text (for scripts)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct WorkflowsArgs {
    #[command(subcommand)]
    pub show: Option<WorkflowsCommand>,
    /// Print JSON on stdout instead of text (for scripts)
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum WorkflowsCommand {
    /// Show a workflow's steps and parameters
    Show {
        name: String,
        /// Parameters, as for `dr start`, to show the steps they produce
        #[arg(long = "param", short = 'p', value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// `text` (default), or `mermaid`: the step graph as a Mermaid flowchart (gates, conditions, cleanup marked)
        #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "mermaid"])]
        format: String,
    },
}
