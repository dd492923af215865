//! The `dr` command as an operator and a script meet it: exit codes, errors
//! that say what to do, JSON shapes, stopping on a signal, a busy store.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{code, stderr, Bastion};

#[test]
fn usage_errors_exit_2_and_say_what_is_expected() {
    let b = Bastion::new();
    let out = b.run(&["start", "no-such-workflow"]);
    assert_eq!(code(&out), Some(2));
    assert!(stderr(&out).contains("known workflows: synthetic"), "{}", stderr(&out));

    let out = b.run(&["start", "synthetic", "-p", "steps=lots"]);
    assert_eq!(code(&out), Some(2));
    assert!(stderr(&out).contains("steps") && stderr(&out).contains("1 to 10000"), "{}", stderr(&out));

    let out = b.run(&["start", "synthetic", "-p", "steps"]);
    assert_eq!(code(&out), Some(2));
    assert!(stderr(&out).contains("KEY=VALUE"), "{}", stderr(&out));

    let out = b.run(&["start", "synthetic", "--detected-at", "yesterday"]);
    assert_eq!(code(&out), Some(2));
    assert!(stderr(&out).contains("accepted forms") && stderr(&out).contains("RFC 3339"), "{}", stderr(&out));

    let out = b.run(&["frobnicate"]);
    assert_eq!(code(&out), Some(2));
}

#[test]
fn detected_at_reads_a_relative_time_and_says_how_it_read_it() {
    let b = Bastion::new();
    let out = b.run(&["start", "synthetic", "-p", "steps=1", "-p", "step_ms=1", "--detected-at", "10 minutes ago", "--json"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("detected at"), "--json says nothing on stderr about it: {}", stderr(&out));
    let v = b.status();
    // The run took milliseconds: its RTO clock ran from ten minutes before it started.
    let elapsed = v["rto"]["elapsed_secs"].as_f64().expect("elapsed_secs");
    assert!((540.0..=660.0).contains(&elapsed), "elapsed {elapsed} s, not ~600: {v}");
    assert!(v["incident_at"].as_str() < v["started_at"].as_str(), "{v}");

    // Without --json it says how it read the time; a leading '-' is a value, not an option.
    let out = b.run(&["start", "synthetic", "-p", "steps=1", "-p", "step_ms=1", "--detected-at", "-15m"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("dr: detected at ") && stderr(&out).contains("(relative; 15 min ago)"), "{}", stderr(&out));
}

#[test]
fn detected_at_refuses_the_future_and_wants_yes_for_a_time_days_ago() {
    let b = Bastion::new();
    let out = b.run(&["start", "synthetic", "-p", "steps=1", "-p", "step_ms=1", "--detected-at", "-2d", "--json"]);
    assert_eq!(code(&out), Some(2), "stdin is not a terminal: refused, not asked; {}", stderr(&out));
    assert!(stderr(&out).contains("--yes") && stderr(&out).contains("2d ago"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("[y/N]"), "{}", stderr(&out));
    assert!(b.run(&["list", "--json"]).stdout.starts_with(b"[]"), "no run was created");

    let out = b.run(&["start", "synthetic", "-p", "steps=1", "-p", "step_ms=1", "--detected-at", "-2d", "--yes", "--json"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let elapsed = b.status()["rto"]["elapsed_secs"].as_f64().expect("elapsed_secs");
    assert!((2.0 * 86_400.0 - 60.0..=2.0 * 86_400.0 + 60.0).contains(&elapsed), "elapsed {elapsed} s, not two days");

    let out = b.run(&["start", "synthetic", "--detected-at", "2999-01-01T00:00:00Z"]);
    assert_eq!(code(&out), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("in the future"), "{}", stderr(&out));

    let out = b.run(&["start", "synthetic", "--detected-at", "yesterday-ish garbage"]);
    assert_eq!(code(&out), Some(2), "{}", stderr(&out));
    for form in ["RFC 3339", "03:12", "yesterday 23:10", "10 minutes ago", "-15m", "now"] {
        assert!(stderr(&out).contains(form), "the refusal lacks {form}: {}", stderr(&out));
    }
    assert_eq!(stderr(&out).lines().count(), 1, "one line: {}", stderr(&out));
}

#[test]
fn an_unknown_run_exits_4_and_help_documents_exit_codes() {
    let b = Bastion::new();
    // No run at all: an answer, not an error.
    let out = b.run(&["status"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("no runs: no store in"), "{}", stderr(&out));
    let out = b.run(&["status", "--json"]);
    assert_eq!(code(&out), Some(0));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(), serde_json::json!([]));
    let out = b.run(&["status", "0000dead"]);
    assert_eq!(code(&out), Some(4));
    assert_eq!(stderr(&out).matches("no run matches").count(), 1, "worded once: {}", stderr(&out));
    // With a store (a finished run in it), an unknown id points at dr list.
    assert_eq!(code(&b.run(&["start", "synthetic", "-p", "steps=1", "-p", "step_ms=1"])), Some(0));
    let out = b.run(&["status"]);
    assert!(stderr(&out).contains("no unfinished runs"), "{}", stderr(&out));
    let out = b.run(&["status", "0000dead"]);
    assert_eq!(code(&out), Some(4));
    assert!(stderr(&out).contains("dr list"), "{}", stderr(&out));
    assert_eq!(stderr(&out).matches("no run matches").count(), 1, "worded once: {}", stderr(&out));
    let out = b.run(&["resume", "0000dead"]);
    assert_eq!(code(&out), Some(4));
    let out = b.run(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in ["130", "paused", "busy", "no such run"] {
        assert!(help.contains(needle), "--help lacks {needle}: {help}");
    }
}

#[test]
fn start_json_prints_the_status_object_and_list_json_the_summaries() {
    let b = Bastion::new();
    let out = b.run(&["start", "synthetic", "-p", "steps=3", "-p", "step_ms=5", "-p", "level=2", "--json", "--detected-at", "2026-01-01T00:00:00+09:00", "--yes"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object on stdout");
    for key in ["id", "workflow", "level", "status", "incident_at", "started_at", "finished_at", "rto", "steps"] {
        assert!(v.get(key).is_some(), "missing {key}: {v}");
    }
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["level"], 2);
    assert_eq!(v["incident_at"], "2025-12-31T15:00:00.000Z");
    assert_eq!(v["rto"]["target_secs"], 3600);
    assert_eq!(v["rto"]["at_risk"], true, "an incident in January is far past a 1 h target");
    assert_eq!(v["steps"].as_array().unwrap().len(), 3);
    for step in v["steps"].as_array().unwrap() {
        assert_eq!(step["status"], "succeeded");
        assert_eq!(step["attempts"], 1);
        assert!(step["started_at"].is_string() && step["finished_at"].is_string());
    }

    let out = b.run(&["list", "--json"]);
    assert_eq!(code(&out), Some(0));
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], v["id"]);
    assert!(list[0].get("steps").is_none());
    assert_eq!(list[0]["rto"]["target_secs"], 3600);

    // A unique prefix works wherever an id does.
    let prefix = &v["id"].as_str().unwrap()[..20];
    let out = b.run(&["status", prefix, "--json"]);
    assert_eq!(code(&out), Some(0));
    let again: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["id"], v["id"]);
}

#[test]
fn a_failing_step_pauses_the_run_with_exit_3_and_retry_continues_it() {
    let b = Bastion::new();
    let out = b.run(&["start", "synthetic", "-p", "steps=3", "-p", "step_ms=1", "-p", "fail_at=2", "-p", "fail_times=3", "-p", "backoff_ms=5", "--json"]);
    assert_eq!(code(&out), Some(3), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "paused");
    assert_eq!(v["steps"][1]["status"], "failed");
    assert_eq!(v["steps"][1]["attempts"], 3);
    assert!(v["steps"][1]["error"].as_str().unwrap().contains("synthetic failure"));
    assert_eq!(v["steps"][1]["waiting_for"]["operator"], "out of retries");
    // Resume alone does not retry: it says what the run needs.
    let out = b.run(&["resume", "@latest"]);
    assert_eq!(code(&out), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("resume alone does not retry") && stderr(&out).contains("dr retry"), "{}", stderr(&out));
    let out = b.run(&["retry", "@latest", "step-2", "--json"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["steps"][1]["attempts"], 4);
    // Operating on a finished run is refused with a reason.
    let out = b.run(&["retry", "@latest", "step-2"]);
    assert_eq!(code(&out), Some(6), "the run's state does not allow it");
    assert!(stderr(&out).contains("already ended"), "{}", stderr(&out));
}

fn wait_for_run(b: &Bastion) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        // The store is locked while the other process runs: read the history file-free way.
        if std::fs::read_to_string(b.state.path().join("LOCK")).is_ok_and(|t| !t.trim().is_empty()) {
            std::thread::sleep(Duration::from_millis(300));
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("dr did not start");
}

#[test]
fn a_store_held_by_a_silent_process_exits_5_naming_its_pid() {
    let b = Bastion::new();
    // Hold the store's lock the way a dr process does, but answer no socket.
    std::fs::create_dir_all(b.state.path()).unwrap();
    let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(b.state.path().join("LOCK")).unwrap();
    lock.try_lock().unwrap();
    std::fs::write(b.state.path().join("LOCK"), format!("{}\n", std::process::id())).unwrap();
    for args in [&["list"][..], &["status"], &["start", "synthetic"]] {
        let out = b.run(args);
        assert_eq!(code(&out), Some(5), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(&format!("pid {}", std::process::id())), "{}", stderr(&out));
    }
}

#[test]
fn while_a_run_is_driven_other_commands_reach_it_and_sigint_stops_it_with_130() {
    let b = Bastion::new();
    let child = b
        .dr()
        .args(["start", "synthetic", "-p", "steps=2", "-p", "step_ms=1500"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_run(&b);
    // The store is the other process's; status, list and history go through its socket.
    let status = b.status();
    assert_eq!(status["status"], "running");
    assert_eq!(status["driven"], true, "the owner says it drives the run: {status}");
    assert_eq!(status["stopped_since"], Value::Null);
    assert_eq!(status["steps"][0]["status"], "running");
    let out = b.run(&["list", "--json"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["id"], status["id"]);
    assert_eq!(list[0]["driven"], true);
    let out = b.run(&["history", "@latest", "--json"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    // A watch from another shell, following the run when its driver stops.
    let mut watcher = b.dr().args(["status", "@latest", "--watch", "--json"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut watched = std::io::BufReader::new(watcher.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut watched, &mut first).unwrap();
    let first: Value = serde_json::from_str(&first).expect("the watch's first line");
    assert_eq!(first["driven"], true);

    // SIGINT: the process records the stop and exits 130.
    #[allow(unsafe_code)]
    // SAFETY: kill(2) on a child we spawned.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), Some(130), "{}", stderr(&out));
    assert!(stderr(&out).contains("dr resume"), "{}", stderr(&out));

    // Nobody drives it now: shown as stopped everywhere, with how to continue.
    let status = b.status();
    assert_eq!(status["status"], "running", "the record keeps its state");
    assert_eq!(status["driven"], false, "{status}");
    assert!(status["stopped_since"].is_string(), "{status}");
    let out = b.run(&["status", "@latest"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Status    stopped") && text.contains("nothing drives it since") && text.contains("dr resume"), "{text}");
    assert!(text.contains("interrupted") && !text.contains("> step-1"), "no step shown as running: {text}");
    assert!(text.contains("stopped — the clock runs"), "the RTO line says so: {text}");
    let out = b.run(&["list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().nth(1).is_some_and(|l| l.contains("stopped")), "{text}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut watched, &mut rest).unwrap();
    let watched = watcher.wait_with_output().unwrap();
    let last: Value = rest.lines().last().map(|l| serde_json::from_str(l).unwrap()).expect("the watch printed the stop");
    assert_eq!(last["driven"], false, "the watch ends showing the run stopped: {last}");
    assert_eq!(code(&watched), Some(130), "a watch that ends on a stopped run exits 130: {}", stderr(&watched));
    let events = b.assert_history_contiguous();
    assert_eq!(events.last().unwrap()["kind"], "process-stopped");

    let out = b.run(&["resume", "@latest", "--json"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "succeeded");
}

#[test]
fn cancel_from_another_shell_reaches_the_running_step() {
    let b = Bastion::new();
    let child = b
        .dr()
        .args(["start", "synthetic", "-p", "steps=2", "-p", "step_ms=600000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_run(&b);
    let began = Instant::now();
    let out = b.run(&["cancel", "@latest", "--reason", "wrong host", "--json"]);
    assert_eq!(code(&out), Some(0), "the run ended cancelled, as asked: {}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "cancelled");
    assert_eq!(v["steps"][0]["status"], "cancelled", "the stopped step does not stay running in a cancelled run");
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), Some(1));
    assert!(began.elapsed() < Duration::from_secs(20), "the ten-minute step was stopped, not waited for");
}

#[test]
fn cancel_ends_a_paused_run_and_history_tells_the_story() {
    let b = Bastion::new();
    let out = b.run(&["start", "synthetic", "-p", "steps=2", "-p", "step_ms=1", "-p", "fail_at=1", "-p", "fail_times=9", "-p", "attempts=1"]);
    assert_eq!(code(&out), Some(3));
    // Paused: the RTO line says the clock runs while it waits for a person, not "on track" alone.
    let text = String::from_utf8_lossy(&b.run(&["status", "@latest"]).stdout).into_owned();
    assert!(text.contains("RTO       paused — the clock runs, waiting for you"), "{text}");
    let out = b.run(&["cancel", "@latest", "--reason", "rebuilding instead"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    // Cancelled is not recovered, whatever the clock says.
    let text = String::from_utf8_lossy(&b.run(&["status", "@latest"]).stdout).into_owned();
    assert!(text.contains("[NOT RECOVERED]") && !text.contains("within target"), "{text}");
    let text = String::from_utf8_lossy(&b.run(&["list"]).stdout).into_owned();
    assert!(text.lines().nth(1).is_some_and(|l| l.contains("cancelled") && l.ends_with("not recovered")), "{text}");
    let status = b.status();
    assert_eq!(status["status"], "cancelled");
    assert_eq!(status["reason"], "rebuilding instead");
    let out = b.run(&["history", "@latest"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("asked to cancel: rebuilding instead"), "{text}");
    assert!(text.contains("run cancelled"), "{text}");
}

#[test]
fn workflows_lists_and_shows_the_catalog() {
    let b = Bastion::new();
    let out = b.run(&["workflows", "--json"]);
    assert_eq!(code(&out), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v.as_array().unwrap().iter().any(|w| w["name"] == "synthetic"));
    let out = b.run(&["workflows", "show", "synthetic", "-p", "steps=3", "-p", "parallel=true", "--json"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["steps"][2]["depends_on"][0], "step-1");
}

#[test]
fn a_state_dir_that_cannot_be_created_is_named() {
    let out = std::process::Command::new(crate::support::dr_bin())
        .args(["start", "synthetic", "-p", "steps=1"])
        .env("DR_STATE_DIR", "/proc/dr-cannot-live-here")
        .output()
        .unwrap();
    assert_eq!(code(&out), Some(6), "{}", stderr(&out));
    assert!(stderr(&out).contains("/proc/dr-cannot-live-here"), "{}", stderr(&out));
    // A file is not a state directory, and says so.
    let out = std::process::Command::new(crate::support::dr_bin()).args(["--state-dir", "/etc/passwd", "list"]).output().unwrap();
    assert_eq!(code(&out), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("/etc/passwd is not a directory"), "{}", stderr(&out));
}

#[test]
fn commands_that_only_read_never_create_a_store_and_every_listing_names_its_store() {
    let tmp = tempfile::tempdir().unwrap();
    let deep = tmp.path().join("not/yet/there");
    let dr = |args: &[&str]| std::process::Command::new(crate::support::dr_bin()).args(args).env("DR_STATE_DIR", &deep).stdin(Stdio::null()).output().unwrap();
    for (args, want) in [
        (vec!["list"], 0),
        (vec!["list", "--json"], 0),
        (vec!["status"], 0),
        (vec!["status", "--json"], 0),
        (vec!["status", "@latest"], 4),
        (vec!["history", "@latest"], 4),
        (vec!["resume", "@latest"], 4),
        (vec!["cancel", "@latest", "--reason", "x"], 4),
        (vec!["retry", "@latest", "step-1"], 4),
    ] {
        let out = dr(&args);
        assert_eq!(code(&out), Some(want), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("no store in") && stderr(&out).contains("not/yet/there"), "{args:?} names the missing store: {}", stderr(&out));
        assert!(!tmp.path().join("not").exists(), "{args:?} created a directory");
    }
    assert_eq!(String::from_utf8_lossy(&dr(&["list", "--json"]).stdout).trim(), "[]");

    // Once a run exists, status and list name the store, in text and JSON.
    let b = Bastion::new();
    assert_eq!(code(&b.run(&["start", "synthetic", "-p", "steps=1", "-p", "step_ms=1"])), Some(0));
    let store = b.state.path().display().to_string();
    assert_eq!(b.status()["store"], store.as_str());
    let list: Value = serde_json::from_slice(&b.run(&["list", "--json"]).stdout).unwrap();
    assert_eq!(list[0]["store"], store.as_str());
    assert!(stderr(&b.run(&["list"])).contains(&format!("dr: store {store}")));
}

#[test]
fn status_watch_follows_a_run_another_process_drives_until_it_ends() {
    let b = Bastion::new();
    let child = b
        .dr()
        .args(["start", "synthetic", "-p", "steps=3", "-p", "step_ms=700"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_run(&b);
    let out = b.run(&["status", "@latest", "--watch", "--json"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let objects: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert!(objects.len() >= 2, "a change makes a new line: {objects:?}");
    assert_eq!(objects.last().unwrap()["status"], "succeeded");
    assert!(objects.iter().any(|o| o["status"] == "running"));
    let done: Vec<usize> = objects
        .iter()
        .map(|o| o["steps"].as_array().unwrap().iter().filter(|s| s["status"] == "succeeded").count())
        .collect();
    assert!(done.windows(2).all(|w| w[0] <= w[1]), "progress only grows: {done:?}");
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(0));
}

#[test]
fn workflows_show_lists_gates_conditions_and_cleanup_and_draws_the_graph() {
    let b = Bastion::new();
    let args = ["workflows", "show", "synthetic", "-p", "steps=3", "-p", "gate_at=2", "-p", "tolerate_at=3", "-p", "cleanup=true"];
    let out = b.run(&args);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("asks first: synthetic step 2: go ahead?"), "{text}");
    assert!(text.contains("failure tolerated") && text.contains("cleanup: runs however the run ends"), "{text}");

    let mut json_args = args.to_vec();
    json_args.push("--json");
    let v: Value = serde_json::from_slice(&b.run(&json_args).stdout).unwrap();
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 4);
    assert!(steps[1]["gate"].as_str().unwrap().contains("go ahead"));
    assert_eq!(steps[2]["tolerate_failure"], true);
    assert_eq!(steps[3]["cleanup"], true);
    assert_eq!(steps[1]["depends_on"], serde_json::json!(["step-1"]));

    let mut mermaid = args.to_vec();
    mermaid.extend(["--format", "mermaid"]);
    let out = b.run(&mermaid);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let graph = String::from_utf8_lossy(&out.stdout);
    assert!(graph.contains("flowchart TD"), "{graph}");
    assert!(graph.contains("s_step_2{{"), "a gate is a hexagon: {graph}");
    assert!(graph.contains("s_step_1 --> s_step_2") && graph.contains("s_step_2 --> s_step_3"), "{graph}");
    assert!(graph.contains("class s_cleanup cleanup"), "{graph}");
    let out = b.run(&["workflows", "show", "synthetic", "--format", "dot"]);
    assert_eq!(code(&out), Some(2), "an unknown format is a usage error");
}

#[test]
fn a_reader_that_goes_away_never_hangs_the_run_even_with_logs_on() {
    for level in ["info", "debug"] {
        let b = Bastion::new();
        let mut child = b
            .dr()
            .args(["start", "synthetic", "-p", "steps=3", "-p", "step_ms=50"])
            .env("DR_LOG", level)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader reads one line, then goes away (`| head -1`).
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        drop(stderr);
        drop(child.stdout.take());
        let began = Instant::now();
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            assert!(began.elapsed() < Duration::from_secs(10), "DR_LOG={level}: dr hangs once its reader is gone");
            std::thread::sleep(Duration::from_millis(50));
        }
        let status = b.status();
        assert_eq!(status["status"], "succeeded", "DR_LOG={level}: the run was saved and finished: {status}");
    }
}

#[test]
fn a_hangup_stops_the_run_like_sigterm_and_resume_continues_it() {
    let b = Bastion::new();
    let child = b
        .dr()
        .args(["start", "synthetic", "-p", "steps=2", "-p", "step_ms=1500"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_run(&b);
    // The terminal closed (an ssh session dropped): SIGHUP.
    #[allow(unsafe_code)]
    // SAFETY: kill(2) on a child we spawned.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGHUP);
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), Some(130), "stopped cleanly, not killed: {:?} {}", out.status, stderr(&out));
    let events = b.assert_history_contiguous();
    assert_eq!(events.last().unwrap()["kind"], "process-stopped", "the stop is recorded");
    let out = b.run(&["resume", "@latest", "--json"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "succeeded");
}

#[test]
fn decisions_on_paused_runs_succeed_while_another_run_executes() {
    let b = Bastion::new();
    // Two paused runs: a step that fails once (a retry succeeds), and one to cancel.
    let once = ["start", "synthetic", "-p", "steps=2", "-p", "step_ms=1", "-p", "fail_at=1", "-p", "fail_times=1", "-p", "attempts=1", "--json"];
    let out = b.run(&once);
    assert_eq!(code(&out), Some(3), "{}", stderr(&out));
    let to_retry = serde_json::from_slice::<Value>(&out.stdout).unwrap()["id"].as_str().unwrap().to_owned();
    let out = b.run(&once);
    assert_eq!(code(&out), Some(3), "{}", stderr(&out));
    let to_cancel = serde_json::from_slice::<Value>(&out.stdout).unwrap()["id"].as_str().unwrap().to_owned();
    // A long run owns the store now.
    let child = b.dr().args(["start", "synthetic", "-p", "steps=2", "-p", "step_ms=4000"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while b.run(&["list", "--json"]).stdout.is_empty() || serde_json::from_slice::<Vec<Value>>(&b.run(&["list", "--json"]).stdout).unwrap().len() < 3 {
        assert!(Instant::now() < deadline, "the third run did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = b.run(&["retry", &to_retry, "step-1", "--json"]);
    assert_eq!(code(&out), Some(0), "the owner took the retried run up and finished it: {}", stderr(&out));
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap()["status"], "succeeded");
    let out = b.run(&["cancel", &to_cancel, "--reason", "not needed", "--json"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap()["status"], "cancelled");
    // A decision the run's state does not allow exits 6 through the owner too (as without one).
    let out = b.run(&["cancel", &to_retry, "--reason", "too late"]);
    assert_eq!(code(&out), Some(6), "{}", stderr(&out));
    assert!(stderr(&out).contains("already ended") && !stderr(&out).contains("Ctrl-C"), "{}", stderr(&out));
    // A second start says which run holds the store and how to follow it, not "use another --state-dir".
    let out = b.run(&["start", "synthetic", "-p", "steps=1"]);
    assert_eq!(code(&out), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("It drives run") && stderr(&out).contains("dr status --watch"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("another --state-dir"), "{}", stderr(&out));
    // The long run went on undisturbed.
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert_eq!(b.status()["status"], "succeeded");
}

#[test]
fn exit_codes_follow_the_table_command_by_command() {
    let b = Bastion::new();
    let paused = ["start", "synthetic", "-p", "steps=2", "-p", "step_ms=1", "-p", "fail_at=1", "-p", "fail_times=9", "-p", "attempts=1"];
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["start", "nope"], 2, "unknown workflow"),
        (vec!["start", "synthetic", "-p", "steps=2", "-p", "step_ms=1"], 0, "a run that succeeds"),
        (vec!["retry", "@latest", "step-1"], 6, "retry of a step that did not fail"),
        (vec!["cancel", "@latest", "--reason", "x"], 6, "cancel of an ended run"),
        (vec!["resume", "@latest"], 0, "resume of a succeeded run reports it"),
        (paused.to_vec(), 3, "a run that pauses"),
        (vec!["status", "@latest"], 0, "status shows it"),
        (vec!["approve", "@latest", "step-9"], 2, "an unknown step"),
        (vec!["retry", "@latest", "step-1"], 3, "a retry that fails again pauses again"),
        (vec!["skip", "@latest", "step-1", "--reason", "done by hand"], 0, "skip: the run goes on and succeeds"),
        (paused.to_vec(), 3, "another paused run"),
        (vec!["cancel", "@latest", "--reason", "x"], 0, "cancel: the run ends cancelled, as asked"),
        (vec!["status", "@latest", "--watch"], 1, "--watch of a cancelled run"),
        (vec!["history", "@latest"], 0, "history"),
        (vec!["list"], 0, "list"),
        (vec!["status", "0000dead"], 4, "no such run"),
        (vec!["resume", "0000dead"], 4, "no such run"),
        (vec!["status", "latest"], 2, "@latest typed without its @"),
    ];
    for (args, want, what) in cases {
        let out = b.run(&args);
        assert_eq!(code(&out), Some(want), "{what}: dr {}: {}", args.join(" "), stderr(&out));
    }
    assert!(stderr(&b.run(&["history", "latest"])).contains("did you mean @latest?"));
}

#[test]
fn a_watch_whose_reader_goes_away_ends_quietly() {
    let b = Bastion::new();
    let child = b.dr().args(["start", "synthetic", "-p", "steps=3", "-p", "step_ms=1500"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_for_run(&b);
    // `dr status @latest --watch 2>&1 | head -3`: both of dr's streams go to a reader that leaves.
    let script = format!("{} status @latest --watch 2>&1 | head -3 >/dev/null; echo \"${{PIPESTATUS[0]}}\" >&2", crate::support::dr_bin().display());
    let began = Instant::now();
    let out = std::process::Command::new("bash").args(["-c", &script]).env("DR_STATE_DIR", b.state.path()).env("DR_LOG", "debug").output().unwrap();
    let code_of_dr: i32 = String::from_utf8_lossy(&out.stderr).trim().parse().expect("the pipeline's first status");
    assert!(code_of_dr == 141 || code_of_dr == 0, "dr ended with {code_of_dr} (101 is a panic)");
    assert!(began.elapsed() < Duration::from_secs(10), "the watch ended");
    assert_eq!(code(&child.wait_with_output().unwrap()), Some(0), "the driven run was not disturbed");
}

#[test]
fn the_small_things_a_tired_operator_meets() {
    let b = Bastion::new();
    // A near-miss parameter is named.
    let out = b.run(&["start", "synthetic", "-p", "step-ms=5"]);
    assert_eq!(code(&out), Some(2));
    assert!(stderr(&out).contains("did you mean step_ms?"), "{}", stderr(&out));
    // list filters; history defaults to the latest run.
    assert_eq!(code(&b.run(&["start", "synthetic", "-p", "steps=1", "-p", "step_ms=1"])), Some(0));
    assert_eq!(code(&b.run(&["start", "synthetic", "-p", "steps=1", "-p", "step_ms=1", "-p", "fail_at=1", "-p", "fail_times=9", "-p", "attempts=1"])), Some(3));
    assert_eq!(code(&b.run(&["start", "synthetic", "-p", "steps=1", "-p", "step_ms=1"])), Some(0));
    let list = |args: &[&str]| -> Vec<Value> {
        let mut all = vec!["list", "--json"];
        all.extend_from_slice(args);
        serde_json::from_slice(&b.run(&all).stdout).unwrap()
    };
    assert_eq!(list(&[]).len(), 3);
    let paused = list(&["--status", "paused"]);
    assert_eq!(paused.len(), 1);
    assert_eq!(paused[0]["status"], "paused");
    let newest = list(&["--limit", "1"]);
    assert_eq!(newest.len(), 1);
    assert_eq!(newest[0]["id"], list(&[])[0]["id"], "the newest");
    assert_eq!(list(&["--status", "succeeded", "--limit", "5"]).len(), 2);
    let out = b.run(&["history"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("run succeeded"));
    // --config is offered where it is read, not on commands that never read it.
    assert!(!String::from_utf8_lossy(&b.run(&["status", "--help"]).stdout).contains("--config"));
    assert!(String::from_utf8_lossy(&b.run(&["start", "--help"]).stdout).contains("--config FILE"));
    // DR_STATE_DIR set (as here) does not make --state-dir look required in the usage line.
    let out = b.run(&["resume"]);
    assert_eq!(code(&out), Some(2));
    assert!(stderr(&out).contains("Usage: dr resume <ID>"), "{}", stderr(&out));
    // Help: --json says what it does everywhere; env values are not shown (empty or secret).
    for sub in ["start", "resume", "status", "list", "history", "cancel", "retry", "approve", "skip", "assess", "workflows"] {
        let help = String::from_utf8_lossy(&b.run(&[sub, "--help"]).stdout).into_owned();
        // Short help puts the text on the option's line, long help on the next.
        let lines: Vec<&str> = help.lines().collect();
        let at = lines.iter().position(|l| l.trim_start().starts_with("--json")).unwrap_or_else(|| panic!("dr {sub} has --json: {help}"));
        let documented = lines[at].split_whitespace().count() > 2 || lines.get(at + 1).is_some_and(|l| l.split_whitespace().count() > 2 && !l.trim_start().starts_with('-'));
        assert!(documented, "dr {sub} --help documents --json: {help}");
        assert!(!help.contains("DR_CONFIG=]") && !help.contains("DR_STATE_DIR=/"), "dr {sub} --help shows an env value: {help}");
    }
}

#[test]
fn a_full_stderr_that_nobody_reads_never_stops_the_run() {
    let b = Bastion::new();
    // Debug logs of a 300-step run fill a pipe's 64 KiB many times over; nobody reads it.
    let mut child = b
        .dr()
        .args(["start", "synthetic", "-p", "steps=300", "-p", "step_ms=1"])
        .env("DR_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let began = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(began.elapsed() < Duration::from_secs(60), "dr blocked on a full stderr");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    let mut dropped = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut dropped).unwrap();
    assert!(dropped.len() >= 60_000, "the pipe was full: {} bytes", dropped.len());
    assert_eq!(b.status()["status"], "succeeded");
}

#[test]
fn the_short_ids_shown_are_unique_and_the_same_everywhere() {
    let b = Bastion::new();
    for _ in 0..6 {
        assert_eq!(code(&b.run(&["start", "synthetic", "-p", "steps=1", "-p", "step_ms=1"])), Some(0));
    }
    let out = b.run(&["start", "synthetic", "-p", "steps=1", "-p", "step_ms=1", "-p", "fail_at=1", "-p", "fail_times=9", "-p", "attempts=1"]);
    assert_eq!(code(&out), Some(3));
    let hinted = stderr(&out).lines().find_map(|l| l.trim().strip_prefix("dr retry ")).map(|rest| rest.split(' ').next().unwrap().to_owned()).expect("a retry hint");
    let listed: Vec<String> =
        String::from_utf8_lossy(&b.run(&["list"]).stdout).lines().skip(1).map(|l| l.split_whitespace().next().unwrap().to_owned()).collect();
    assert_eq!(listed.len(), 7);
    let distinct: std::collections::BTreeSet<&String> = listed.iter().collect();
    assert_eq!(distinct.len(), 7, "unique: {listed:?}");
    assert_eq!(listed[0], hinted, "the hint names the run as dr list does");
    for short in &listed {
        assert!(short.len() >= 8 && short.len() < 36, "{short}");
        assert_eq!(code(&b.run(&["status", short])), Some(0), "{short} resolves to one run");
    }
}

#[test]
fn step_durations_count_the_attempts_not_the_waits() {
    let b = Bastion::new();
    let duration_of = |step: &str| -> String {
        let text = String::from_utf8_lossy(&b.run(&["status", "@latest"]).stdout).into_owned();
        let line = text.lines().find(|l| l.split_whitespace().nth(1) == Some(step)).unwrap_or_else(|| panic!("{step} in {text}")).to_owned();
        line.split_whitespace().nth(4).unwrap().to_owned()
    };
    // Three attempts of 200 ms with 1.5 s backoffs between them: about 600 ms of work.
    let out = b.run(&["start", "synthetic", "-p", "steps=1", "-p", "step_ms=200", "-p", "fail_at=1", "-p", "fail_times=2", "-p", "attempts=3", "-p", "backoff_ms=1500"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let d = duration_of("step-1");
    assert!(d.ends_with("ms"), "about 600 ms, not the 3.6 s with the backoffs: {d}");
    // A step that paused for an operator for over a second, then was skipped: its one short attempt.
    let out = b.run(&["start", "synthetic", "-p", "steps=2", "-p", "step_ms=100", "-p", "fail_at=1", "-p", "fail_times=9", "-p", "attempts=1"]);
    assert_eq!(code(&out), Some(3));
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(code(&b.run(&["skip", "@latest", "step-1", "--reason", "done by hand"])), Some(0));
    let d = duration_of("step-1");
    assert!(d.ends_with("ms"), "the pause does not count: {d}");
}

#[test]
fn the_readme_exit_code_table_matches_help() {
    let readme = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let table: Vec<String> = readme
        .lines()
        .skip_while(|l| !l.starts_with("### Exit codes"))
        .filter_map(|l| l.strip_prefix("| ").and_then(|r| r.split(' ').next()).filter(|c| c.chars().all(|ch| ch.is_ascii_digit())).map(str::to_owned))
        .collect();
    let help = String::from_utf8_lossy(&Bastion::new().run(&["--help"]).stdout).into_owned();
    let listed: Vec<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Exit codes"))
        .filter_map(|l| l.split_whitespace().next().filter(|c| !c.is_empty() && c.chars().all(|ch| ch.is_ascii_digit())).map(str::to_owned))
        .collect();
    assert!(!table.is_empty(), "the README has an exit-code table");
    assert_eq!(table, listed, "README's codes and --help's codes");
}
