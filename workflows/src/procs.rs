//! The local process groups of running steps, recorded beside the store so
//! that a later `dr` can stop what a killed one left running.
//!
//! A step's command leads its own process group (`command.rs`); the group is
//! recorded here when it starts (its pgid and the leader's start time from
//! `/proc`, so a reused pid is never taken for it) and the record removed when
//! the command ends. A SIGKILLed `dr` cannot remove it: the next attempt or
//! probe of the same step (`stop_leftovers`, called before anything is
//! started) finds the record, and if that group still runs, stops it
//! (SIGTERM, then SIGKILL) before the step runs again. Direct children also
//! get `PR_SET_PDEATHSIG` (SIGKILL), which covers the leader at once; the group
//! record covers what the leader started (terraform's providers, a shell's
//! children).
//!
//! No fsync: the records only need to survive the death of a process. After
//! a power cut no process survives to be stopped.
//!
//! The directory is `STATE_DIR/procs` ([`init`], called once the store is
//! open); without it (library use, tests of single actions) nothing is
//! recorded and only `PDEATHSIG` applies.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

static DIR: OnceLock<PathBuf> = OnceLock::new();

/// Records process groups under `state_dir/procs` (0700) from now on.
pub fn init(state_dir: &Path) -> std::io::Result<()> {
    let dir = state_dir.join("procs");
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
    let _ = DIR.set(dir);
    Ok(())
}

/// Who owns a group: a run's step, as a file-name-safe prefix.
pub fn owner(run: impl std::fmt::Display, step: &str) -> String {
    let step: String = step.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    format!("{run}.{step}")
}

/// A recorded group; the record goes when this is dropped (the command ended).
#[derive(Debug)]
pub struct Registration {
    path: Option<PathBuf>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The start time of process `pid` (clock ticks since boot), from `/proc/PID/stat`.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // Fields after the name start at 3 (state); starttime is field 22.
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// Records group `pgid` (led by process `pgid`) as `owner`'s.
pub fn register(owner: &str, pgid: i32) -> Registration {
    let Some(dir) = DIR.get() else { return Registration { path: None } };
    let Some(started) = start_time(pgid) else { return Registration { path: None } };
    let path = dir.join(format!("{owner}.{pgid}"));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| writeln!(f, "{pgid} {started}"));
    match written {
        Ok(()) => Registration { path: Some(path) },
        Err(e) => {
            tracing::warn!(error = %e, pgid, "cannot record a step's process group; a crash would leave it running");
            Registration { path: None }
        }
    }
}

/// Stops every group recorded for `owner` that still runs (a dead `dr`'s),
/// and forgets the records. Returns what it stopped, for the log.
pub async fn stop_leftovers(owner: &str) -> Vec<String> {
    let Some(dir) = DIR.get() else { return Vec::new() };
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let prefix = format!("{owner}.");
    let mut stopped = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(&prefix) {
            continue;
        }
        let recorded = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let mut fields = recorded.split_whitespace().map(str::parse::<u64>);
        if let (Some(Ok(pgid)), Some(Ok(started))) = (fields.next(), fields.next()) {
            if let Ok(pgid) = i32::try_from(pgid) {
                // The same leader (pid and start time): the group a dead dr left.
                if start_time(pgid) == Some(started) {
                    stop_group(pgid).await;
                    stopped.push(format!("process group {pgid}"));
                } else if group_alive(pgid) {
                    // The leader is gone but its group may live on (children of a killed shell).
                    stop_group(pgid).await;
                    stopped.push(format!("process group {pgid} (its leader was gone)"));
                }
            }
        }
        let _ = std::fs::remove_file(entry.path());
    }
    if !stopped.is_empty() {
        tracing::warn!(owner, ?stopped, "stopped what a killed dr left running before running the step again");
    }
    stopped
}

/// Whether a live (not zombie) process is in group `pgid` (from `/proc`: a
/// zombie nobody reaped yet would make `kill(-pgid, 0)` say yes forever).
fn group_alive(pgid: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else { return killpg(Pid::from_raw(pgid), None).is_ok() };
    entries.flatten().any(|entry| {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { return false };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { return false };
        let mut fields = rest.split_whitespace();
        // Fields 3 (state), 4 (ppid), 5 (pgrp).
        let state = fields.next();
        let pgrp = fields.nth(1).and_then(|f| f.parse::<i32>().ok());
        pgrp == Some(pgid) && state != Some("Z") && state != Some("X")
    })
}

/// SIGTERM to the group, SIGKILL after 5 s if it is still there.
async fn stop_group(pgid: i32) {
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while group_alive(pgid) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if group_alive(pgid) {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while group_alive(pgid) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_time_of_a_live_process_is_read_and_a_missing_one_is_none() {
        let me = i32::try_from(std::process::id()).expect("pid");
        assert!(start_time(me).is_some_and(|t| t > 0));
        assert_eq!(start_time(i32::MAX), None);
    }

    #[test]
    fn an_owner_is_a_plain_file_name() {
        assert_eq!(owner("0190", "step 1/x"), "0190.step_1_x");
    }
}
