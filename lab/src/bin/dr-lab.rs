//! `dr-lab`: runs the lab (see `dr_lab::lab` and `docs/LAB.md`) for the demo
//! and the operator. `up` starts a detached supervisor that owns the lab and
//! returns once every part is healthy; `status`, `fault` and `down` act on the
//! lab through its directory (pid files, `lab.json`, the lab scripts).
//! Owns argument parsing and output only.

#![allow(clippy::disallowed_methods)] // the lab's supervisor waits for its processes
#![allow(clippy::print_stdout)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use dr_lab::lab::process::{pid_alive, read_pid, terminate};
use dr_lab::lab::{self, ApiChoice, Lab, LabOptions, Pace};

#[derive(Parser, Debug)]
#[command(name = "dr-lab", about = "A simulated homelab (Kubernetes API, real etcd, sshd nodes) for dr")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start the lab in the background; prints its JSON summary once healthy.
    Up {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "fast")]
        pace: Pace,
        /// Use the recording stub instead of the simulated Kubernetes API server.
        #[arg(long)]
        stub_api: bool,
    },
    /// Show whether the platform is healthy (one line per check), the faults in effect, whether
    /// the API answers, each node's Kubernetes status and sshd, and which backup etcd's data
    /// came from.
    ///
    /// Exit status: 0 when the platform is healthy, 1 when it is not (the report is printed
    /// either way, also with --json), 2 on a usage error.
    Status {
        #[arg(long)]
        dir: PathBuf,
        /// Print the report as JSON (see docs/LAB.md, "Status").
        #[arg(long)]
        json: bool,
    },
    /// Inject a fault: pod-crash [NAMESPACE/WORKLOAD], network, argocd-down, worker-down NODE,
    /// worker-dead NODE, etcd-corrupt, control-plane-lost, host-lost.
    ///
    /// Exit status: 0 when injected, 1 when the lab could not inject it, 2 on a usage error
    /// (unknown fault, missing or unknown node).
    Fault {
        #[arg(long)]
        dir: PathBuf,
        /// The fault.
        name: String,
        /// The node of worker-down and worker-dead; NAMESPACE/WORKLOAD for pod-crash.
        node: Option<String>,
    },
    /// Stop everything the lab started.
    Down {
        #[arg(long)]
        dir: PathBuf,
    },
    /// (internal) The detached process that owns a running lab.
    #[command(hide = true)]
    Supervise {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "fast")]
        pace: Pace,
        #[arg(long)]
        stub_api: bool,
    },
}

/// Like other Unix tools, end quietly when the reader of our output goes
/// away (`dr-lab status | head`) instead of panicking in `println!`.
#[allow(unsafe_code)]
fn default_sigpipe() {
    // SAFETY: restoring the default disposition of SIGPIPE at start, before
    // any thread exists, has no memory-safety preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    default_sigpipe();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    let result = match cli.command {
        Cmd::Up { dir, pace, stub_api } => up(&dir, pace, stub_api).map(|()| ExitCode::SUCCESS),
        Cmd::Status { dir, json } => status(&dir, json),
        Cmd::Fault { dir, name, node } => return fault(&dir, &name, node.as_deref()),
        Cmd::Down { dir } => down(&dir).map(|()| ExitCode::SUCCESS),
        Cmd::Supervise { dir, pace, stub_api } => supervise(&dir, pace, stub_api).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dr-lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `dr-lab fault`: 0 injected, 1 not injected, 2 a usage error.
fn fault(dir: &Path, name: &str, node: Option<&str>) -> ExitCode {
    match lab::inject_fault(&canonical(dir), name, node) {
        Ok(printed) => {
            print!("{printed}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dr-lab fault: {e}");
            ExitCode::from(if e.is_usage() { 2 } else { 1 })
        }
    }
}

fn canonical(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
}

fn supervisor_pid(dir: &Path) -> Option<i32> {
    read_pid(&dir.join("supervisor.pid")).filter(|pid| pid_alive(*pid))
}

fn up(dir: &Path, pace: Pace, stub_api: bool) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = canonical(dir);
    if let Some(pid) = supervisor_pid(&dir) {
        bail!("a lab already runs in {} (supervisor pid {pid}); run `dr-lab down --dir {}` first", dir.display(), dir.display());
    }
    for stale in ["ready", "supervisor.error", "supervisor.stop", "lab.json"] {
        let _ = std::fs::remove_file(dir.join(stale));
    }
    let log = std::fs::File::create(dir.join("supervisor.log"))?;
    let mut command = Command::new(std::env::current_exe().context("locating dr-lab")?);
    command
        .arg("supervise")
        .arg("--dir")
        .arg(&dir)
        .args(["--pace", pace.as_str()])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    if stub_api {
        command.arg("--stub-api");
    }
    let mut child = command.spawn().context("starting the lab supervisor")?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if dir.join("ready").exists() {
            let summary = std::fs::read_to_string(dir.join("lab.json"))?;
            println!("{}", summary.trim_end());
            return Ok(());
        }
        if let Some(exit) = child.try_wait()? {
            let reason = std::fs::read_to_string(dir.join("supervisor.error")).unwrap_or_default();
            let log = std::fs::read_to_string(dir.join("supervisor.log")).unwrap_or_default();
            bail!("the lab did not start ({exit}): {}{}", reason.trim(), tail(&log));
        }
        if Instant::now() > deadline {
            let _ = down(&dir);
            bail!("the lab did not become healthy within 120 s (see {})", dir.join("supervisor.log").display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(15);
    if lines.is_empty() {
        String::new()
    } else {
        format!("\n{}", lines[start..].join("\n"))
    }
}

fn supervise(dir: &Path, pace: Pace, stub_api: bool) -> Result<()> {
    let dir = canonical(dir);
    std::fs::write(dir.join("supervisor.pid"), std::process::id().to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT, signal_hook::consts::SIGHUP] {
        signal_hook::flag::register(signal, stop.clone())?;
    }
    let mut options = LabOptions::new(&dir);
    options.pace = pace;
    options.api = if stub_api { ApiChoice::Stub } else { ApiChoice::Simulated };
    let mut lab = match Lab::start(options) {
        Ok(lab) => lab,
        Err(e) => {
            let _ = std::fs::write(dir.join("supervisor.error"), format!("{e:#}\n"));
            lab::stop_processes(&dir);
            let _ = std::fs::remove_file(dir.join("supervisor.pid"));
            return Err(e);
        }
    };
    std::fs::write(dir.join("ready"), "")?;
    eprintln!("dr-lab: lab ready in {}", dir.display());
    while !stop.load(Ordering::Relaxed) && !dir.join("supervisor.stop").exists() {
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("dr-lab: stopping the lab");
    let _ = std::fs::remove_file(dir.join("ready"));
    let left = lab.stop();
    drop(lab);
    let _ = std::fs::remove_file(dir.join("supervisor.pid"));
    if !left.is_empty() {
        bail!("processes would not stop: {left:?}");
    }
    Ok(())
}

fn down(dir: &Path) -> Result<()> {
    let dir = canonical(dir);
    if let Some(pid) = supervisor_pid(&dir) {
        std::fs::write(dir.join("supervisor.stop"), "")?;
        let deadline = Instant::now() + Duration::from_secs(15);
        while pid_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        terminate(pid, Duration::from_secs(2));
    }
    let left = lab::stop_processes(&dir);
    for file in ["supervisor.pid", "supervisor.stop", "ready"] {
        let _ = std::fs::remove_file(dir.join(file));
    }
    if !left.is_empty() {
        bail!("processes would not stop: {left:?}");
    }
    eprintln!("dr-lab: lab in {} stopped", dir.display());
    Ok(())
}

/// `dr-lab status`: prints the report; 0 when the platform is healthy, else 1.
fn status(dir: &Path, as_json: bool) -> Result<ExitCode> {
    let report = lab::status::report(&canonical(dir));
    if as_json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", lab::status::render_text(&report));
    }
    Ok(if report["healthy"] == true { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
