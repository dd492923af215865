//! Process and port helpers of the lab: free loopback ports, pid files,
//! liveness (zombies count as dead), graceful termination by pid, and running
//! a command with its stderr folded into the error. Owns no process itself.

use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A TCP port that is free on `addr` right now.
pub fn free_port(addr: Ipv4Addr) -> Result<u16> {
    let listener = TcpListener::bind((addr, 0)).with_context(|| format!("binding {addr}:0"))?;
    Ok(listener.local_addr()?.port())
}

/// The pid stored in a pid file, if the file holds one.
pub fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether `pid` names a live (non-zombie) process.
pub fn pid_alive(pid: i32) -> bool {
    if pid <= 0 || kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the parenthesised command name.
        Ok(stat) => !matches!(stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().chars().next()), Some(Some('Z' | 'X'))),
        Err(_) => false,
    }
}

/// SIGTERM, wait up to `grace`, then SIGKILL. Returns whether the process is gone.
pub fn terminate(pid: i32, grace: Duration) -> bool {
    if !pid_alive(pid) {
        return true;
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !pid_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if !pid_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Terminates the process named by a pid file and removes the file.
pub fn terminate_pid_file(path: &Path) -> bool {
    let gone = match read_pid(path) {
        Some(pid) => terminate(pid, Duration::from_secs(5)),
        None => true,
    };
    if gone {
        let _ = std::fs::remove_file(path);
    }
    gone
}

/// Runs a command to completion; a non-zero exit is an error carrying stderr.
pub fn run(command: &mut Command) -> Result<Output> {
    let output = command
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{:?} failed ({}): {}{}",
            command,
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            String::from_utf8_lossy(&output.stdout).trim()
        );
    }
    Ok(output)
}

/// Waits until `probe` holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut probe: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if probe() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}
