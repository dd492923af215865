//! The store under damage, I/O errors and loose permissions, through the real
//! binary: a damaged write-ahead log is refused and left byte for byte as it
//! was (`dr store check` names it, `dr store repair --accept-loss` cuts it and
//! lists the loss); EIO at the Nth log sync of a resume fails it with exit 6,
//! keeps the log, and the next resume finishes with every step run once; the
//! state directory and its files are private whatever the umask.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support::{code, dr_bin, killed, stderr, Bastion};

const RECORD_MAGIC: u32 = 0xD7A1_0C5E;
const FILE_HEADER: usize = 8;
const RECORD_HEADER: usize = 20;

/// Where each record of a log starts (read with the documented format, not the store's code).
fn record_offsets(wal: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut at = FILE_HEADER;
    while at + RECORD_HEADER <= wal.len() {
        let magic = u32::from_le_bytes(wal[at..at + 4].try_into().unwrap());
        assert_eq!(magic, RECORD_MAGIC, "record at {at}");
        let len = u32::from_le_bytes(wal[at + 12..at + 16].try_into().unwrap()) as usize;
        offsets.push(at);
        at += RECORD_HEADER + len;
    }
    assert_eq!(at, wal.len(), "whole records only");
    offsets
}

fn start_args(b: &Bastion, steps: u32) -> Vec<String> {
    let trace = b.trace().to_string_lossy().into_owned();
    ["start", "synthetic", "-p", &format!("steps={steps}"), "-p", "step_ms=1", "-p", &format!("trace={trace}"), "-p", "resume=idempotent"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// A run killed at step 9 of 10: its log holds every transition so far (no checkpoint).
fn killed_run(b: &Bastion) -> Vec<u8> {
    let args = start_args(b, 10);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = b.run_crashing(&args, "step-9:after-start");
    assert!(killed(&out), "{}", stderr(&out));
    std::fs::read(b.state.path().join("wal")).unwrap()
}

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn a_damaged_log_is_refused_left_unchanged_checked_and_repaired_with_the_loss_listed() {
    for damage in ["one byte flipped in record 3", "eight zero bytes inserted in record 3"] {
        let b = Bastion::new();
        let mut wal = killed_run(&b);
        let offsets = record_offsets(&wal);
        assert!(offsets.len() >= 8, "{damage}: the killed run left {} records", offsets.len());
        let at = offsets[2];
        if damage.starts_with("one byte") {
            wal[at + RECORD_HEADER + 5] ^= 0x20;
        } else {
            wal.splice(at + 6..at + 6, [0u8; 8]);
        }
        let wal_path = b.state.path().join("wal");
        std::fs::write(&wal_path, &wal).unwrap();

        // Every command that opens the store refuses, and changes nothing.
        for args in [&["status", "@latest"][..], &["list"], &["resume", "@latest"]] {
            let out = b.run(args);
            assert_eq!(code(&out), Some(6), "{damage}: dr {args:?}: {}", stderr(&out));
            let message = stderr(&out);
            assert!(message.contains(&format!("byte {at}")) && message.contains(&wal_path.display().to_string()), "{damage}: {message}");
            assert!(message.contains("dr store repair --accept-loss"), "{message}");
            assert_eq!(std::fs::read(&wal_path).unwrap(), wal, "{damage}: dr {args:?} left the log byte for byte");
        }
        let run_id = {
            let out = b.run(&["store", "check", "--json"]);
            assert_eq!(code(&out), Some(6), "{damage}: {}", stderr(&out));
            let report = json(&out);
            assert_eq!(report["status"], "damaged");
            assert_eq!(report["damage"]["offset"].as_u64(), Some(at as u64), "{report}");
            assert_eq!(report["records"].as_u64(), Some(2));
            let runs = report["damage"]["runs"].as_array().unwrap();
            assert_eq!(runs.len(), 1, "{report}");
            runs[0]["run"].as_str().unwrap().to_owned()
        };
        let out = b.run(&["store", "check"]);
        assert_eq!(code(&out), Some(6));
        assert!(String::from_utf8_lossy(&out.stdout).contains(&run_id));
        assert_eq!(std::fs::read(&wal_path).unwrap(), wal, "{damage}: check changed nothing");

        // Repair needs the operator to accept the loss.
        let out = b.run(&["store", "repair"]);
        assert_eq!(code(&out), Some(2), "{}", stderr(&out));
        assert_eq!(std::fs::read(&wal_path).unwrap(), wal);
        let out = b.run(&["store", "repair", "--accept-loss", "--json"]);
        assert_eq!(code(&out), Some(0), "{}", stderr(&out));
        let report = json(&out);
        assert_eq!(report["cut_at"].as_u64(), Some(at as u64));
        let lost = report["lost"].as_array().unwrap();
        assert_eq!(lost.len(), 1, "{report}");
        assert_eq!(lost[0]["run"], run_id.as_str());
        let events: Vec<u64> = lost[0]["events"].as_array().unwrap().iter().map(|e| e.as_u64().unwrap()).collect();
        // The history now ends where the lost events begin.
        let history = b.assert_history_contiguous();
        assert!(events.first().unwrap() >= &(history.len() as u64), "lost {events:?}, history has {}", history.len());
        assert!(events.windows(2).all(|w| w[1] == w[0] + 1), "{events:?}");
        // And the run goes on from there.
        let out = b.run(&["resume", "@latest"]);
        assert_eq!(code(&out), Some(0), "{damage}: {}", stderr(&out));
        assert_eq!(b.status()["status"], "succeeded");
    }
}

#[test]
fn eio_at_a_log_sync_of_a_resume_fails_it_keeps_the_log_and_the_next_resume_runs_every_step_once() {
    for nth in 1..=3 {
        let b = Bastion::new();
        let args = start_args(&b, 5);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert!(killed(&b.run_crashing(&args, "step-2:after-start")));
        // The killed process never checkpointed: its records are in the log, and stay
        // there through the resume (a replayed log is emptied only by a checkpoint).
        let before = json(&b.run(&["store", "check", "--json"]))["records"].as_u64().unwrap();
        assert!(before > 0);
        let out = b.dr().args(["resume", "@latest"]).env("DR_FAULT_SYNC", nth.to_string()).output().unwrap();
        assert_eq!(code(&out), Some(6), "EIO at sync {nth}: {}", stderr(&out));
        assert!(stderr(&out).contains("dr resume"), "the next command is named: {}", stderr(&out));
        // The log kept every record: the replayed ones, and those written since the open
        // (the acknowledged ones and the failed one).
        let check = b.run(&["store", "check", "--json"]);
        assert_eq!(code(&check), Some(0), "{}", stderr(&check));
        let report = json(&check);
        assert_eq!(report["records"].as_u64(), Some(before + nth), "EIO at sync {nth}: {report}");
        let out = b.run(&["resume", "@latest"]);
        assert_eq!(code(&out), Some(0), "EIO at sync {nth}, then resume: {}", stderr(&out));
        assert_eq!(b.status()["status"], "succeeded");
        b.assert_history_contiguous();
        let counts = b.trace_counts();
        assert_eq!(counts.len(), 5, "{counts:?}");
        assert!(counts.values().all(|&n| n == 1), "EIO at sync {nth}: every step once: {counts:?}");
    }
}

fn modes(dir: &Path, out: &mut Vec<(String, u32, bool)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = std::fs::symlink_metadata(entry.path()).unwrap();
        out.push((entry.path().display().to_string(), meta.permissions().mode() & 0o777, meta.is_dir()));
        if meta.is_dir() {
            modes(&entry.path(), out);
        }
    }
}

#[test]
fn the_state_directory_is_0700_and_its_files_0600_under_umask_000() {
    let b = Bastion::new();
    let state = b.state.path().join("new").join("state");
    let script = "umask 000; exec \"$0\" start synthetic -p steps=2 -p step_ms=1";
    let out = std::process::Command::new("sh")
        .args(["-c", script])
        .arg(dr_bin())
        .env("DR_STATE_DIR", &state)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::metadata(&state).unwrap().permissions().mode() & 0o777, 0o700);
    let mut found = Vec::new();
    modes(&state, &mut found);
    assert!(found.iter().any(|(p, _, _)| p.ends_with("/wal")) && found.iter().any(|(p, _, _)| p.ends_with("/LOCK")), "{found:?}");
    assert!(found.iter().any(|(p, _, _)| p.contains("/sled/")), "{found:?}");
    for (path, mode, is_dir) in &found {
        let want = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(*mode, want, "{path} has mode {mode:o}");
    }
}

#[test]
fn a_state_directory_others_can_read_is_reported_and_one_they_can_write_is_refused() {
    let b = Bastion::new();
    assert_eq!(code(&b.run(&["start", "synthetic", "-p", "steps=1", "-p", "step_ms=1"])), Some(0));
    std::fs::set_permissions(b.state.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = b.run(&["list"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let warning = stderr(&out);
    assert!(warning.contains("0755") && warning.contains(&format!("chmod 700 {}", b.state.path().display())), "{warning}");

    std::fs::set_permissions(b.state.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let wal = std::fs::read(b.state.path().join("wal")).unwrap();
    let out = b.run(&["start", "synthetic", "-p", "steps=1", "-p", "step_ms=1"]);
    assert_eq!(code(&out), Some(6), "{}", stderr(&out));
    assert!(stderr(&out).contains("writable by others") && stderr(&out).contains("0777"), "{}", stderr(&out));
    assert_eq!(std::fs::read(b.state.path().join("wal")).unwrap(), wal);
    // Reading the log's health is still allowed, with the warning.
    let out = b.run(&["store", "check"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("others can write"), "{}", stderr(&out));
}

#[test]
fn store_stats_counts_the_runs_by_status_and_the_bytes_they_take() {
    let b = Bastion::new();
    let none = b.run(&["store", "stats"]);
    assert_eq!(code(&none), Some(4), "no store: {}", stderr(&none));
    for steps in ["3", "4"] {
        let out = b.run(&["start", "synthetic", "-p", &format!("steps={steps}"), "-p", "step_ms=1"]);
        assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    }
    let out = b.run(&["start", "synthetic", "-p", "steps=2", "-p", "step_ms=1", "-p", "fail_at=1", "-p", "attempts=1"]);
    assert_eq!(code(&out), Some(3), "a run paused for an operator: {}", stderr(&out));
    let out = b.run(&["store", "stats", "--json"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["runs"], 3);
    assert_eq!(v["by_status"]["succeeded"], 2, "{v}");
    assert_eq!(v["by_status"]["paused"], 1, "{v}");
    let on_disk = v["bytes_on_disk"].as_u64().unwrap();
    assert!(on_disk > 0 && v["bytes_on_disk_per_run"].as_u64().unwrap() == on_disk / 3, "{v}");
}

/// `dr gc`: runs that finished days ago (made by the real binary under
/// libfaketime's shifted clock) lose their history; their summaries stay for
/// `dr list` and `dr stats`; a recent run and an open one are untouched.
#[test]
fn gc_removes_the_histories_of_old_finished_runs_and_keeps_what_listings_and_stats_need() {
    let faketime = Path::new("/usr/bin/faketime");
    assert!(faketime.exists(), "this test needs faketime (Debian package faketime; scripts/setup installs it)");
    let b = Bastion::new();
    let id_of = |out: &std::process::Output| json(out)["id"].as_str().unwrap().to_owned();
    let old = {
        let mut c = Command::new(faketime);
        c.arg("-f").arg("-10d").arg(dr_bin()).args(["start", "synthetic", "-p", "steps=3", "-p", "step_ms=1", "--json"]);
        c.env("DR_STATE_DIR", b.state.path()).env_remove("DR_CRASH_AT").stdin(Stdio::null());
        let out = c.output().unwrap();
        assert_eq!(code(&out), Some(0), "{}", stderr(&out));
        id_of(&out)
    };
    let recent = b.run(&["start", "synthetic", "-p", "steps=3", "-p", "step_ms=1", "--json"]);
    assert_eq!(code(&recent), Some(0), "{}", stderr(&recent));
    let recent = id_of(&recent);
    let paused = b.run(&["start", "synthetic", "-p", "steps=2", "-p", "step_ms=1", "-p", "fail_at=1", "-p", "attempts=1", "--json"]);
    assert_eq!(code(&paused), Some(3), "{}", stderr(&paused));

    let dry = b.run(&["gc", "--older-than", "7", "--dry-run", "--json"]);
    assert_eq!(code(&dry), Some(0), "{}", stderr(&dry));
    let v = json(&dry);
    assert_eq!((v["count"].as_u64(), v["dry_run"].as_bool()), (Some(1), Some(true)), "{v}");
    assert_eq!(v["runs"][0]["id"], old.as_str());
    assert_eq!(code(&b.run(&["history", &old])), Some(0), "a dry run removes nothing");

    let gc = b.run(&["gc", "--older-than", "7"]);
    assert_eq!(code(&gc), Some(0), "{}", stderr(&gc));
    let text = String::from_utf8_lossy(&gc.stdout);
    assert!(text.contains("Removed the histories of 1 finished run") && text.contains(&old), "{text}");

    for cmd in [["history", old.as_str()], ["status", old.as_str()], ["report", old.as_str()]] {
        let out = b.run(&cmd);
        assert_eq!(code(&out), Some(4), "{cmd:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("removed by `dr gc`"), "{cmd:?} says why: {}", stderr(&out));
    }
    assert_eq!(code(&b.run(&["history", &recent])), Some(0));
    let list = json(&b.run(&["list", "--json"]));
    assert_eq!(list.as_array().map(Vec::len), Some(3), "the collected run is still listed: {list}");
    let again = json(&b.run(&["gc", "--older-than", "7", "--json"]));
    assert_eq!(again["count"], 0, "nothing is collected twice: {again}");
    let bad = b.run(&["gc", "--older-than", "0"]);
    assert_eq!(code(&bad), Some(2), "{}", stderr(&bad));
}
