//! Power cuts, proven with the real binary on a file system that forgets
//! what was not fsynced (`dr-lazyfs`, the technique of Jepsen's LazyFS):
//! `dr`'s state directory lives on the FUSE mount, the power is cut at a
//! random moment (during the store's open and its checkpoints, between and
//! inside steps), the `dr` process is SIGKILLed, the file system is mounted
//! again from what was durable, and every transition `dr` had
//! **acknowledged** before the cut must still be there:
//! - every event line the live view printed (it prints a transition only
//!   once the store said it is durable), by sequence number, kind, step and
//!   attempt;
//! - every step whose action ran (its trace line, written outside the mount
//!   so that it survives the cut): the action runs only after its
//!   `step-started` is durable, so that event must be there.
//!
//! Then `dr resume` must finish the run. The same cuts on a file system
//! that ignores fsync (every one, or only those of sled's `db` file, or only
//! those of the write-ahead log) must make the checker see a loss: proof
//! that it can.
//! Randomness is seeded and printed; replay with DR_TEST_SEED=N, soak with
//! DR_POWERCUT_ITERATIONS=N (default 16).

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{dr_bin, lazyfs_bin};

/// Which fsyncs the file system ignores (answers "done" and does nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lie {
    /// None: an honest disk.
    Never,
    /// Every fsync and fdatasync.
    Always,
    /// Those of files with this name only (`wal`: the write-ahead log; `db`: sled's data).
    Of(&'static str),
}

/// A disk (a backing directory) and, while the power is on, `dr-lazyfs`
/// serving it at a mount point.
struct Disk {
    root: tempfile::TempDir,
    lie: Lie,
    fs: Option<(Child, ChildStdin, BufReader<ChildStdout>)>,
    /// Syncs this disk saw (done, ignored), over all its mounts.
    syncs: (u64, u64),
}

impl Disk {
    /// A new disk holding an empty state directory (0700, as a package would
    /// install /var/lib/dr), powered on.
    fn new(lie: Lie) -> Disk {
        Disk::with_state_dir(lie, true)
    }

    /// A new disk, powered on, with or without a state directory (without: dr creates it).
    fn with_state_dir(lie: Lie, state_dir: bool) -> Disk {
        let root = tempfile::tempdir().unwrap();
        for d in ["backing", "mnt", "work"] {
            std::fs::create_dir(root.path().join(d)).unwrap();
        }
        if state_dir {
            // Written to the backing directory before the mount: durable from the start.
            std::fs::DirBuilder::new().mode(0o700).create(root.path().join("backing/state")).unwrap();
        }
        let mut disk = Disk { root, lie, fs: None, syncs: (0, 0) };
        disk.power_on();
        disk
    }

    fn backing(&self) -> PathBuf {
        self.root.path().join("backing")
    }

    fn mnt(&self) -> PathBuf {
        self.root.path().join("mnt")
    }

    fn state(&self) -> PathBuf {
        self.mnt().join("state")
    }

    /// Outside the mount: survives every cut.
    fn work(&self) -> PathBuf {
        self.root.path().join("work")
    }

    fn power_on(&mut self) {
        assert!(self.fs.is_none());
        let mut cmd = Command::new(lazyfs_bin());
        cmd.arg(self.backing()).arg(self.mnt());
        match self.lie {
            Lie::Never => {}
            Lie::Always => {
                cmd.arg("--ignore-fsync");
            }
            Lie::Of(name) => {
                cmd.args(["--ignore-fsync-of", name]);
            }
        }
        let log = File::create(self.work().join("lazyfs.stderr")).unwrap();
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(log).spawn().expect("start dr-lazyfs");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        if !line.starts_with("mounted") {
            let _ = child.wait();
            let err = std::fs::read_to_string(self.work().join("lazyfs.stderr")).unwrap_or_default();
            // The rule: a test fails, never skips, when what it needs is missing.
            panic!("dr-lazyfs did not mount (FUSE needs /dev/fuse and root, or fusermount3: scripts/setup installs fuse3): {line}{err}");
        }
        self.fs = Some((child, stdin, stdout));
    }

    /// Cuts the power: what was not fsynced is gone, the mount answers nothing more.
    fn cut(&mut self) {
        self.off("cut");
    }

    fn off(&mut self, how: &str) {
        let (mut child, mut stdin, mut stdout) = self.fs.take().expect("the power is on");
        writeln!(stdin, "{how}").unwrap();
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let status = child.wait().unwrap();
        assert!(status.success() && !line.is_empty(), "dr-lazyfs {how}: {status:?} {line}");
        let count = |key: &str| line.split_whitespace().find_map(|w| w.strip_prefix(key)).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        self.syncs.0 += count("file_syncs=") + count("dir_syncs=");
        self.syncs.1 += count("ignored_syncs=");
    }

    fn dr(&self) -> Command {
        let mut c = Command::new(dr_bin());
        c.env("DR_STATE_DIR", self.state()).env_remove("DR_CRASH_AT").env_remove("DR_FAULT_SYNC").stdin(Stdio::null());
        c
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        // End of input is a cut: the mount goes away before the directories do.
        if let Some((mut child, stdin, _)) = self.fs.take() {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

/// What one `dr` process acknowledged: the events its live view printed.
#[derive(Debug, Default)]
struct Acked {
    run: Option<String>,
    /// (seq, the line's text)
    events: Vec<(u64, String)>,
}

/// Reads the acknowledgements from what `dr start`/`dr resume` wrote on stderr:
/// `dr: started run ID (...)` and the live view's `  SEQ  YYYY-MM-DD HH:MM:SS  TEXT`.
fn acked(stderr: &str) -> Acked {
    let mut acked = Acked::default();
    for line in stderr.lines() {
        if let Some(rest) = line.strip_prefix("dr: started run ") {
            acked.run = rest.split_whitespace().next().map(str::to_owned);
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(seq), Some(date), Some(time)) = (words.next(), words.next(), words.next()) else { continue };
        let is_date = date.len() == 10 && date.as_bytes()[4] == b'-' && time.len() == 8 && time.as_bytes()[2] == b':';
        if let (Ok(seq), true) = (seq.parse::<u64>(), is_date) {
            acked.events.push((seq, words.collect::<Vec<_>>().join(" ")));
        }
    }
    acked
}

/// The trace lines: (step, attempt) of every action that ran.
fn trace(path: &Path) -> Vec<(String, u64)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let step = w.next()?.to_owned();
            let attempt = w.next()?.strip_prefix("attempt-")?.parse().ok()?;
            Some((step, attempt))
        })
        .collect()
}

/// Where an acknowledged transition is missing after the cut.
fn check(disk: &Disk, run: &str, acked: &[(u64, String)], ran: &[(String, u64)]) -> Result<Vec<Value>, String> {
    let out = disk.dr().args(["history", run, "--json"]).output().unwrap();
    if !out.status.success() {
        return Err(format!("dr history {run} failed after the cut: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    let history: Vec<Value> = serde_json::from_slice(&out.stdout).map_err(|e| format!("history --json: {e}"))?;
    for (seq, text) in acked {
        let Some(e) = history.iter().find(|e| e["seq"].as_u64() == Some(*seq)) else {
            return Err(format!("acknowledged event {seq} ({text}) is lost: the history has {} events", history.len()));
        };
        // `step-3 started (attempt 1)`, `step-3 succeeded in 12ms (attempt 1): …`
        let mut words = text.split_whitespace();
        if let (Some(step), Some(verb)) = (words.next(), words.next()) {
            if step.starts_with("step-") && (verb == "started" || verb == "succeeded") {
                let attempt = text.split("(attempt ").nth(1).and_then(|a| a.split(')').next()).and_then(|a| a.parse::<u64>().ok());
                let same = e["step"] == step && e["kind"] == format!("step-{verb}") && e["attempt"].as_u64() == attempt;
                if !same {
                    return Err(format!("acknowledged event {seq} ({text}) is now {e}"));
                }
            }
        }
    }
    for (step, attempt) in ran {
        let started = history.iter().any(|e| e["kind"] == "step-started" && e["step"] == step.as_str() && e["attempt"].as_u64() == Some(*attempt));
        if !started {
            return Err(format!("{step} attempt {attempt} ran (its trace line is there) but its step-started event is lost"));
        }
    }
    Ok(history)
}

/// A tiny deterministic generator, seeded from the clock (or DR_TEST_SEED) and printed.
fn rng(what: &str) -> (u64, impl FnMut(u64) -> u64) {
    let seed = std::env::var("DR_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("{what}: DR_TEST_SEED={seed}");
    let mut state = seed | 1;
    (seed, move |bound| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % bound.max(1)
    })
}

const STEPS: u64 = 20;

#[derive(Debug, Default)]
struct Tally {
    iterations: u64,
    cuts: u64,
    /// Cuts that came before `dr` acknowledged anything.
    cuts_before_any_ack: u64,
    /// Cuts after the run's end was acknowledged (during or after the closing checkpoint).
    cuts_after_the_end: u64,
    acked_events: u64,
    /// Losses found (ignore-fsync mode): (iteration, what).
    losses: Vec<(u64, String)>,
}

/// One iteration: up to `max_cuts` rounds of "run dr (start, then resume),
/// cut the power at a random moment, SIGKILL dr, power on, check", then a
/// final resume that must finish the run. Returns the first loss found.
fn iteration(disk: &mut Disk, next: &mut impl FnMut(u64) -> u64, cuts: (u64, u64), tally: &mut Tally) -> Result<(), String> {
    let trace_path = disk.work().join("trace");
    let step_ms = [0, 5, 20][next(3) as usize];
    let start: Vec<String> = ["start", "synthetic", "-p", &format!("steps={STEPS}"), "-p", &format!("step_ms={step_ms}"), "-p", &format!("trace={}", trace_path.display())]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut run: Option<String> = None;
    let mut acked_all: Vec<(u64, String)> = Vec::new();
    let cuts = cuts.0 + next(cuts.1 - cuts.0 + 1);
    for round in 0..cuts {
        let args = match &run {
            Some(id) => vec!["resume".to_owned(), id.clone()],
            None => start.clone(),
        };
        let stderr_path = disk.work().join(format!("dr.{round}.stderr"));
        let mut child = disk.dr().args(&args).stdout(Stdio::null()).stderr(File::create(&stderr_path).unwrap()).spawn().unwrap();
        // A step takes step_ms and a few ms after the store's open: cut within what is left to run.
        let left = STEPS.saturating_sub(trace(&trace_path).len() as u64).max(1);
        let delay = next(150 + left * (step_ms + 10));
        std::thread::sleep(Duration::from_millis(delay));
        disk.cut();
        tally.cuts += 1;
        let _ = child.kill(); // SIGKILL: the machine is off
        child.wait().unwrap();
        let acked = acked(&std::fs::read_to_string(&stderr_path).unwrap());
        if run.is_none() {
            run = acked.run.clone();
        }
        if acked.events.iter().any(|(_, text)| text.starts_with("run succeeded")) {
            tally.cuts_after_the_end += 1;
        }
        acked_all.extend(acked.events);
        let ran = trace(&trace_path);
        disk.power_on();
        let Some(id) = run.clone().or_else(|| (!ran.is_empty()).then(|| "@latest".to_owned())) else {
            // Cut before dr said anything: nothing was promised. Start again.
            tally.cuts_before_any_ack += 1;
            continue;
        };
        if run.is_none() {
            // run-created is acknowledged with the `started run` line.
            acked_all.push((0, "run created".into()));
        }
        let context = format!("round {round}, cut after {delay} ms (step_ms={step_ms})");
        check(disk, &id, &acked_all, &ran).map_err(|e| format!("{context}: {e}"))?;
        run = Some(id);
    }
    tally.acked_events += acked_all.len() as u64;
    let Some(id) = run else {
        // Never acknowledged anything: run it once, uncut.
        let out = disk.dr().args(&start).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        return Ok(());
    };
    let out = disk.dr().args(["resume", &id]).output().unwrap();
    if out.status.code() != Some(0) {
        return Err(format!("dr resume after the cuts exited {:?}: {}", out.status.code(), String::from_utf8_lossy(&out.stderr)));
    }
    let history = check(disk, &id, &acked_all, &trace(&trace_path))?;
    for (i, e) in history.iter().enumerate() {
        if e["seq"].as_u64() != Some(i as u64) {
            return Err(format!("the history has a gap at {i}: {e}"));
        }
    }
    if history.last().map(|e| e["kind"].clone()) != Some(Value::from("run-succeeded")) {
        return Err(format!("the run did not succeed: {:?}", history.last()));
    }
    let steps: BTreeSet<String> = trace(&trace_path).into_iter().map(|(s, _)| s).collect();
    if steps.len() as u64 != STEPS {
        return Err(format!("not every step ran: {steps:?}"));
    }
    Ok(())
}

/// `iterations` disks, each with between `cuts.0` and `cuts.1` power cuts.
fn cut_randomly(lie: Lie, iterations: u64, cuts: (u64, u64), stop_at_first_loss: bool) -> Tally {
    let what = format!("power cuts ({lie:?} lies about fsync)");
    let honest = lie == Lie::Never;
    let (seed, mut next) = rng(&what);
    let began = Instant::now();
    let mut tally = Tally::default();
    for i in 0..iterations {
        let mut disk = Disk::new(lie);
        tally.iterations += 1;
        let result = iteration(&mut disk, &mut next, cuts, &mut tally);
        disk.off("stop");
        if let Err(loss) = result {
            if honest {
                let kept = disk.root.path().to_path_buf();
                std::mem::forget(disk);
                panic!("{what}: iteration {i}: {loss}\n(replay: DR_TEST_SEED={seed}; files kept in {})", kept.display());
            }
            tally.losses.push((i, loss));
            if stop_at_first_loss {
                break;
            }
        }
        match lie {
            Lie::Never => assert!(disk.syncs.0 > 0 && disk.syncs.1 == 0, "{:?}", disk.syncs),
            Lie::Always => assert!(disk.syncs.0 == 0 && disk.syncs.1 > 0, "{:?}", disk.syncs),
            Lie::Of(_) => assert!(disk.syncs.0 > 0 && disk.syncs.1 > 0, "{:?}", disk.syncs),
        }
    }
    eprintln!("{what}: {tally:?} in {:.1} s (DR_TEST_SEED={seed})", began.elapsed().as_secs_f64());
    tally
}

#[test]
fn powercut_loses_no_acknowledged_transition() {
    // DR_POWERCUT_ITERATIONS=N for a longer soak.
    let iterations = std::env::var("DR_POWERCUT_ITERATIONS").ok().and_then(|n| n.parse().ok()).unwrap_or(16);
    let tally = cut_randomly(Lie::Never, iterations, (1, 3), false);
    assert!(tally.cuts >= iterations);
    assert!(tally.cuts > tally.cuts_before_any_ack, "every cut came before dr acknowledged anything: {tally:?}");
}

/// Proof that the checker sees a missing fsync: on a disk that ignores
/// every fsync, whatever dr acknowledged is gone after a cut.
#[test]
fn powercut_checker_sees_the_loss_when_no_fsync_is_done() {
    let tally = cut_randomly(Lie::Always, 16, (1, 1), true);
    assert!(!tally.losses.is_empty(), "fsync did nothing, yet the checker found every acknowledged transition: {tally:?}");
    eprintln!("the checker saw: {:?}", tally.losses[0]);
}

/// One forgotten fsync: the write-ahead log's records are acknowledged but
/// never durable.
#[test]
fn powercut_checker_sees_the_loss_when_the_log_is_not_synced() {
    let tally = cut_randomly(Lie::Of("wal"), 16, (1, 2), true);
    assert!(!tally.losses.is_empty(), "the log was never synced, yet the checker found every acknowledged transition: {tally:?}");
    eprintln!("the checker saw: {:?}", tally.losses[0]);
}

/// One forgotten fsync at checkpoints: sled's data file is not synced, yet the
/// log is emptied; what the log held before the checkpoint is gone after the
/// next cut.
#[test]
fn powercut_checker_sees_the_loss_when_a_checkpoint_does_not_sync() {
    let tally = cut_randomly(Lie::Of("db"), 16, (2, 3), true);
    assert!(!tally.losses.is_empty(), "sled's data was never synced, yet the checker found every acknowledged transition: {tally:?}");
    eprintln!("the checker saw: {:?}", tally.losses[0]);
}

/// Found by this test bed: when dr created its state directory itself,
/// nothing fsynced the directory that holds it (the checkpoints fsync it and
/// everything below, never its parent), so a whole run acknowledged with
/// exit 0 was gone after a power cut: under POSIX a new directory's entry is
/// durable only once its parent is fsynced. `prepare_dir` now fsyncs the
/// parent of every directory it creates. No randomness involved.
#[test]
fn powercut_a_state_directory_dr_creates_survives_a_cut() {
    let mut disk = Disk::with_state_dir(Lie::Never, false);
    let out = disk.dr().args(["start", "synthetic", "-p", "steps=3", "-p", "step_ms=0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let run = acked(&String::from_utf8_lossy(&out.stderr)).run.expect("dr said which run it started");
    disk.cut();
    disk.power_on();
    let out = disk.dr().args(["history", &run, "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "run {run} finished (exit 0) before the power cut and is gone after it: dr created its state directory {} and never \
         fsynced {} (its parent); after the cut: {}",
        disk.state().display(),
        disk.mnt().display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}
