//! The workflow model from outside, with the real binary and `synthetic`'s
//! parameters: step data across a SIGKILL (`pass_data`), gates (`gate_at`,
//! `dr approve`, `--yes`), tolerated failures (`tolerate_at`) and cleanup
//! steps (`cleanup`) after success, after a cancel, and after a crash inside
//! the cleanup.

use serde_json::Value;

use crate::support::{code, killed, stderr, Bastion};

/// `dr start synthetic` with a trace, 10 ms steps, 5 steps unless `extra` says otherwise.
fn start(b: &Bastion, extra: &[&str]) -> Vec<String> {
    let trace = format!("trace={}", b.trace().display());
    let mut args: Vec<String> = ["start", "synthetic", "-p", "step_ms=10", "-p", &trace].iter().map(|s| s.to_string()).collect();
    if !extra.iter().any(|e| e.starts_with("steps=")) {
        args.extend(["-p".to_owned(), "steps=5".to_owned()]);
    }
    for e in extra {
        args.push("-p".into());
        args.push((*e).to_owned());
    }
    args
}

fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn trace_lines(b: &Bastion) -> Vec<String> {
    std::fs::read_to_string(b.trace()).unwrap_or_default().lines().map(str::to_owned).collect()
}

fn tokens(b: &Bastion) -> Vec<String> {
    trace_lines(b)
        .iter()
        .map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("token=")).unwrap_or("<none>").to_owned())
        .collect()
}

fn step<'a>(status: &'a Value, id: &str) -> &'a Value {
    status["steps"].as_array().unwrap().iter().find(|s| s["id"] == id).unwrap_or_else(|| panic!("no step {id}: {status}"))
}

#[test]
fn step_data_passes_from_step_to_step_across_kills_and_the_producer_runs_once() {
    // Between steps (probe class: a lost attempt's effect is found, not redone).
    for crash_at in ["step-1:after-finish", "step-2:after-start", "step-3:before-start", "step-1:after-action", "step-4:after-action"] {
        let b = Bastion::new();
        let args = start(&b, &["pass_data=true", "resume=probe"]);
        let out = b.run_crashing(&as_strs(&args), crash_at);
        assert!(killed(&out), "{crash_at}: not killed: {}", stderr(&out));
        let out = b.run(&["resume", "@latest"]);
        assert_eq!(code(&out), Some(0), "{crash_at}: {}", stderr(&out));
        let lines = trace_lines(&b);
        let tokens = tokens(&b);
        assert_eq!(lines.len(), 5, "{crash_at}: every step ran once: {lines:?}");
        assert!(tokens[0] != "<none>" && tokens.iter().all(|t| *t == tokens[0]), "{crash_at}: one token: {lines:?}");
        assert_eq!(lines.iter().filter(|l| l.starts_with("step-1 ")).count(), 1, "{crash_at}: producer ran once");
        // The token is recorded as step data, and the last step received it.
        let status = b.status();
        assert_eq!(step(&status, "step-5")["output"]["value"]["token"], Value::String(tokens[0].clone()), "{crash_at}");
    }
}

#[test]
fn a_gate_pauses_before_the_first_attempt_and_approve_names_the_approver() {
    let b = Bastion::new();
    let args = start(&b, &["steps=3", "gate_at=2"]);
    let out = b.run(&as_strs(&args));
    assert_eq!(code(&out), Some(3), "a gate pauses the run: {}", stderr(&out));
    assert!(stderr(&out).contains("dr approve") && stderr(&out).contains("step-2"), "{}", stderr(&out));
    let status = b.status();
    assert_eq!(status["status"], "paused");
    assert_eq!(step(&status, "step-2")["status"], "gated");
    assert_eq!(step(&status, "step-2")["attempts"], 0, "no attempt before the confirmation");
    assert!(step(&status, "step-2")["waiting_for"]["confirmation"].as_str().unwrap().contains("go ahead"), "{status}");
    assert!(status["reason"].as_str().unwrap().contains("go ahead"), "the prompt is the reason: {status}");
    assert_eq!(trace_lines(&b).len(), 1);

    let out = b.dr().args(["approve", "@latest", "step-2"]).env("USER", "alice").env_remove("SUDO_USER").output().unwrap();
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let status = b.status();
    assert_eq!(status["status"], "succeeded");
    assert_eq!(step(&status, "step-2")["approved"]["by"], "alice");
    let events = b.assert_history_contiguous();
    assert!(events.iter().any(|e| e["kind"] == "step-gated"), "the gate is in the history");
    assert!(events.iter().any(|e| e["kind"] == "operator-approved" && e["by"] == "alice"), "the approver is in the history");
    assert_eq!(trace_lines(&b).len(), 3);
}

#[test]
fn start_yes_preapproves_gates_and_records_it() {
    let b = Bastion::new();
    let mut args = start(&b, &["gate_at=3"]);
    args.push("--yes".into());
    let out = b.dr().args(as_strs(&args)).env("SUDO_USER", "bob").output().unwrap();
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let events = b.assert_history_contiguous();
    assert!(events.iter().any(|e| e["kind"] == "gates-preapproved" && e["by"] == "bob"), "{events:?}");
    assert!(events.iter().any(|e| e["kind"] == "step-gated" && e["step"] == "step-3"));
    let status = b.status();
    assert_eq!(step(&status, "step-3")["approved"]["by"], "bob (dr start --yes)");
}

#[test]
fn a_tolerated_failure_is_recorded_and_the_run_goes_on() {
    let b = Bastion::new();
    let args = start(&b, &["fail_at=2", "fail_times=99", "attempts=2", "backoff_ms=1", "tolerate_at=2"]);
    let out = b.run(&as_strs(&args));
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let status = b.status();
    assert_eq!(step(&status, "step-2")["status"], "failed-tolerated");
    assert!(step(&status, "step-2")["error"].as_str().unwrap().contains("synthetic failure"));
    assert_eq!(step(&status, "step-5")["status"], "succeeded");
}

#[test]
fn cleanup_runs_last_after_success() {
    let b = Bastion::new();
    let args = start(&b, &["cleanup=true"]);
    let out = b.run(&as_strs(&args));
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let lines = trace_lines(&b);
    assert_eq!(lines.len(), 6, "{lines:?}");
    assert_eq!(lines.last().unwrap(), "cleanup attempt-1");
}

#[test]
fn cleanup_runs_when_a_paused_run_is_cancelled() {
    let b = Bastion::new();
    let args = start(&b, &["cleanup=true", "fail_at=2", "fail_times=99", "attempts=2", "backoff_ms=1"]);
    let out = b.run(&as_strs(&args));
    assert_eq!(code(&out), Some(3), "exhausted retries pause: {}", stderr(&out));
    assert!(!trace_lines(&b).iter().any(|l| l.starts_with("cleanup")), "no cleanup while paused");
    // No process drives the paused run: dr cancel runs its cleanup itself.
    let out = b.run(&["cancel", "@latest", "--reason", "giving up"]);
    assert_eq!(code(&out), Some(0), "the run ended cancelled, as asked: {}", stderr(&out));
    let status = b.status();
    assert_eq!(status["status"], "cancelled");
    assert_eq!(step(&status, "cleanup")["status"], "succeeded", "a cancelled run shows its cleanup's outcome");
    assert_eq!(trace_lines(&b).iter().filter(|l| l.starts_with("cleanup")).count(), 1);
    assert!(!trace_lines(&b).iter().any(|l| l.starts_with("step-3")), "no main step after the cancel");
}

#[test]
fn a_crash_inside_the_cleanup_resumes_the_cleanup() {
    for crash_at in ["cleanup:after-start", "cleanup:after-action"] {
        let b = Bastion::new();
        let args = start(&b, &["cleanup=true"]);
        let out = b.run_crashing(&as_strs(&args), crash_at);
        assert!(killed(&out), "{crash_at}: {}", stderr(&out));
        let status = b.status();
        assert_eq!(status["status"], "running");
        assert_eq!(status["ending"], "succeeded");
        let out = b.run(&["resume", "@latest"]);
        assert_eq!(code(&out), Some(0), "{crash_at}: {}", stderr(&out));
        let status = b.status();
        assert_eq!(status["status"], "succeeded");
        assert_eq!(step(&status, "cleanup")["status"], "succeeded");
        let cleanups = trace_lines(&b).iter().filter(|l| l.starts_with("cleanup")).count();
        assert!((1..=2).contains(&cleanups), "{crash_at}: cleanup ran {cleanups} times");
        assert_eq!(trace_lines(&b).iter().filter(|l| l.starts_with("step-")).count(), 5, "{crash_at}: main steps not rerun");
    }
}
