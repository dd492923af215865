//! Crash safety of `dr`, proven with the real binary: it is killed (SIGKILL,
//! through the `failpoints` feature or from outside) at every phase of
//! several steps, resumed with `dr resume`, and the run must finish with
//! every step's effect applied the right number of times, a history without
//! gaps, and an RTO clock that counted the time the process was dead.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::{code, killed, stderr, Bastion};

fn start_args<'a>(trace: &'a str, resume: &'a str) -> Vec<String> {
    ["start", "synthetic", "-p", "steps=5", "-p", "step_ms=10", "-p", &format!("trace={trace}"), "-p", &format!("resume={resume}")]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

const PHASES: [&str; 4] = ["before-start", "after-start", "after-action", "after-finish"];
const STEPS: [&str; 3] = ["step-1", "step-3", "step-5"];

fn crash_and_resume(resume_class: &str, step: &str, phase: &str) -> Bastion {
    let b = Bastion::new();
    let trace = b.trace().to_string_lossy().into_owned();
    let args = start_args(&trace, resume_class);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = b.run_crashing(&args, &format!("{step}:{phase}"));
    assert!(killed(&out), "{resume_class} {step}:{phase}: dr was not killed: {:?} {}", out.status, String::from_utf8_lossy(&out.stderr));
    let out = b.run(&["resume", "@latest"]);
    assert_eq!(code(&out), Some(0), "{resume_class} {step}:{phase}: resume: {}", String::from_utf8_lossy(&out.stderr));
    let status = b.status();
    assert_eq!(status["status"], "succeeded");
    b.assert_history_contiguous();
    b
}

#[test]
fn idempotent_steps_survive_a_crash_at_every_phase() {
    for step in STEPS {
        for phase in PHASES {
            let b = crash_and_resume("idempotent", step, phase);
            let counts = b.trace_counts();
            assert_eq!(counts.len(), 5, "{step}:{phase}: every step ran: {counts:?}");
            let crashed: usize = step[5..].parse().unwrap();
            for (name, n) in &counts {
                let i: usize = name[5..].parse().unwrap();
                // Exactly: a step runs twice only when its action ran and its finish was not
                // yet durable — the crashed one after its action, or (before-start shares its
                // transaction with the previous step's finish) the one before it. After-start
                // and after-finish lose no action: every step once.
                let repeats = (phase == "after-action" && i == crashed) || (phase == "before-start" && i + 1 == crashed);
                let expected = if repeats { 2 } else { 1 };
                assert_eq!(*n, expected, "{step}:{phase}: {name} ran {n} times: {counts:?}");
            }
        }
    }
}

#[test]
fn probe_steps_take_effect_exactly_once_whatever_the_crash() {
    for step in STEPS {
        for phase in PHASES {
            let b = crash_and_resume("probe", step, phase);
            let counts = b.trace_counts();
            assert_eq!(counts.len(), 5, "{step}:{phase}: {counts:?}");
            assert!(counts.values().all(|&n| n == 1), "{step}:{phase}: {counts:?}");
        }
    }
}

#[test]
fn confirm_steps_pause_for_the_operator_after_a_crash() {
    let b = Bastion::new();
    let trace = b.trace().to_string_lossy().into_owned();
    let args = start_args(&trace, "confirm");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert!(killed(&b.run_crashing(&args, "step-2:after-action")));
    let out = b.run(&["resume", "@latest"]);
    assert_eq!(code(&out), Some(3), "paused for an operator: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("dr approve"), "the next command is suggested");
    let status = b.status();
    assert_eq!(status["status"], "paused");
    assert!(status["steps"][1]["waiting_for"]["operator"].as_str().unwrap().contains("interrupted"), "{status}");
    let out = b.run(&["approve", "@latest", "step-2"]);
    assert_eq!(code(&out), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(b.trace_counts()["step-2"], 2, "approve ran the step again");

    // And skip: the step is marked done without running again.
    let b = Bastion::new();
    let trace = b.trace().to_string_lossy().into_owned();
    let args = start_args(&trace, "confirm");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert!(killed(&b.run_crashing(&args, "step-4:after-action")));
    assert_eq!(code(&b.run(&["resume", "@latest"])), Some(3));
    let out = b.run(&["skip", "@latest", "step-4", "--reason", "checked by hand"]);
    assert_eq!(code(&out), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let status = b.status();
    assert_eq!(status["steps"][3]["status"], "skipped");
    assert_eq!(status["steps"][3]["skipped"]["reason"], "checked by hand");
    assert_eq!(status["steps"][3]["skipped"]["by"], "operator");
    assert_eq!(b.trace_counts()["step-4"], 1);
    b.assert_history_contiguous();
}

#[test]
fn the_rto_clock_counts_the_time_the_process_was_dead() {
    let b = Bastion::new();
    let trace = b.trace().to_string_lossy().into_owned();
    let args = start_args(&trace, "idempotent");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let began = Instant::now();
    assert!(killed(&b.run_crashing(&args, "step-2:after-start")));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(code(&b.run(&["resume", "@latest"])), Some(0));
    let wall = began.elapsed().as_secs_f64();
    let status = b.status();
    let elapsed = status["rto"]["elapsed_secs"].as_f64().unwrap();
    assert!(elapsed >= 1.5, "elapsed {elapsed}s must include the 1.5 s the process was dead");
    assert!(elapsed <= wall + 0.5, "elapsed {elapsed}s cannot exceed the wall time {wall}s");
    assert_eq!(status["rto"]["target_secs"], 900);
}

/// A tiny deterministic generator, seeded from the clock and printed, so a
/// failing sequence can be replayed with DR_TEST_SEED.
fn rng() -> impl FnMut(u64) -> u64 {
    let seed = std::env::var("DR_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("random kill seed: DR_TEST_SEED={seed}");
    let mut state = seed | 1;
    move |bound| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % bound.max(1)
    }
}

fn kill_randomly(resume_class: &str) {
    let mut next = rng();
    let b = Bastion::new();
    let trace = b.trace().to_string_lossy().into_owned();
    let steps = 12;
    let first: Vec<String> = [
        "start", "synthetic", "-p", &format!("steps={steps}"), "-p", "step_ms=25", "-p", "parallel=false",
        "-p", &format!("trace={trace}"), "-p", &format!("resume={resume_class}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut kills = 0;
    let mut args = first.clone();
    for round in 0..30 {
        let mut child = b.dr().args(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(20 + next(200)));
        let finished = child.try_wait().unwrap();
        if let Some(status) = finished {
            assert_eq!(status.code(), Some(0), "round {round}: dr exited {status:?}");
            break;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        // Killed before its run was even created: nothing to resume, start again.
        let created = code(&b.run(&["status", "@latest", "--json"])) != Some(4);
        args = if created { vec!["resume".into(), "@latest".into()] } else { first.clone() };
    }
    let out = b.run(&["resume", "@latest"]);
    assert_eq!(code(&out), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(b.status()["status"], "succeeded");
    b.assert_history_contiguous();
    let counts = b.trace_counts();
    assert_eq!(counts.len(), steps, "{counts:?}");
    let total: usize = counts.values().sum();
    match resume_class {
        "probe" => assert!(counts.values().all(|&n| n == 1), "probe: {counts:?} after {kills} kills"),
        // A chain has one action in flight at a time: a kill loses at most that one.
        _ => assert!(total <= steps + kills, "at most one repeat per kill: {counts:?} after {kills} kills"),
    }
    assert!(kills > 0 || total == steps);
}

#[test]
fn random_kills_lose_nothing_idempotent() {
    kill_randomly("idempotent");
}

#[test]
fn random_kills_lose_nothing_probe() {
    kill_randomly("probe");
}

/// Whether process `pid` runs (exists and is not a zombie).
fn process_runs(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| s.lines().any(|l| l.starts_with("State:") && !l.contains("zombie")))
        .unwrap_or(false)
}

#[test]
fn a_child_of_a_sigkilled_dr_is_gone_before_its_step_runs_again() {
    let b = Bastion::new();
    let w = b.work.path().display().to_string();
    // First attempt: a grandchild in the command's process group that outlives its shell.
    // Second attempt: says whether that grandchild still ran when the step ran again.
    let script = format!(
        "if [ -e {w}/marker ]; then \
           s=$(awk '/^State:/{{print $2}}' /proc/$(cat {w}/pidfile)/status 2>/dev/null); \
           if [ -n \"$s\" ] && [ \"$s\" != Z ]; then echo alive >> {w}/log; else echo gone >> {w}/log; fi; exit 0; \
         fi; touch {w}/marker; sleep 1000 & echo $! > {w}/pidfile; wait"
    );
    let command = format!("command={script}");
    let mut first = b.dr().args(["start", "synthetic", "-p", "steps=1", "-p", "step_ms=10", "-p", &command]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let pidfile = b.work.path().join("pidfile");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::read_to_string(&pidfile).map_or(true, |p| p.trim().is_empty()) {
        assert!(std::time::Instant::now() < deadline, "the command never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let grandchild = std::fs::read_to_string(&pidfile).unwrap().trim().to_owned();
    first.kill().unwrap();
    first.wait().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    // PDEATHSIG took the shell; its child lives on in the group: something for the resume to stop.
    assert!(process_runs(&grandchild), "the grandchild died with dr: the test would prove nothing");

    let out = b.run(&["resume", "@latest"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let log = std::fs::read_to_string(b.work.path().join("log")).unwrap();
    assert_eq!(log.trim(), "gone", "the step ran again while the dead dr's command still ran");
    assert!(!process_runs(&grandchild));
}
