//! `dr serve` from outside: the daemon under a stand-in for systemd (a real
//! datagram socket as `NOTIFY_SOCKET`, `WATCHDOG_USEC`), killed with SIGKILL
//! mid-run and started again, hung on purpose, stopped with SIGTERM; clients
//! that hand runs to it (`--detach`, following, Ctrl-C of a follower).

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{code, stderr, Bastion};

/// Stands in for systemd: receives `sd_notify` datagrams, with when they came.
struct Systemd {
    _dir: tempfile::TempDir,
    path: PathBuf,
    got: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Systemd {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&got);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                sink.lock().unwrap().push((Instant::now(), String::from_utf8_lossy(&buf[..n]).into_owned()));
            }
        });
        Systemd { _dir: dir, path, got }
    }

    fn messages(&self) -> Vec<(Instant, String)> {
        self.got.lock().unwrap().clone()
    }

    fn count(&self, prefix: &str) -> usize {
        self.messages().iter().filter(|(_, m)| m.lines().any(|l| l == prefix)).count()
    }

    fn wait_for(&self, line: &str, count: usize) {
        wait_until(Duration::from_secs(30), &format!("{count}× {line} from dr serve"), || self.count(line) >= count);
    }
}

fn wait_until(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `dr serve` under the stand-in, with a watchdog of `watchdog_usec`.
fn serve(bastion: &Bastion, systemd: &Systemd, watchdog_usec: u64, extra_env: &[(&str, &str)]) -> Child {
    let mut cmd = bastion.dr();
    cmd.arg("serve")
        .env("NOTIFY_SOCKET", &systemd.path)
        .env("WATCHDOG_USEC", watchdog_usec.to_string())
        .env_remove("DR_HANG_AT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

fn status_of(bastion: &Bastion, id: &str) -> Value {
    let out = bastion.run(&["status", id, "--json"]);
    assert_eq!(code(&out), Some(0), "status failed: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn steps_succeeded(status: &Value) -> usize {
    status["steps"].as_array().unwrap().iter().filter(|s| s["status"] == "succeeded").count()
}

fn start_detached(bastion: &Bastion, args: &[&str]) -> String {
    let mut all = vec!["start", "synthetic", "--detach", "--json"];
    all.extend_from_slice(args);
    let out = bastion.run(&all);
    assert_eq!(code(&out), Some(0), "start --detach failed: {}", stderr(&out));
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["driven"], true, "the daemon drives the run it was handed: {run}");
    run["id"].as_str().unwrap().to_owned()
}

fn kill9(child: &mut Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

fn trace_arg(path: &Path) -> String {
    format!("trace={}", path.display())
}

#[test]
fn a_daemon_killed_mid_run_takes_the_run_up_at_its_next_start_and_each_side_effect_happens_once() {
    let bastion = Bastion::new();
    let systemd = Systemd::new();
    let mut daemon = serve(&bastion, &systemd, 1_000_000, &[]);
    systemd.wait_for("READY=1", 1);

    let t0 = Instant::now();
    let trace = trace_arg(&bastion.trace());
    let id = start_detached(&bastion, &["-p", "steps=6", "-p", "step_ms=600", "-p", "resume=probe", "-p", &trace]);
    wait_until(Duration::from_secs(30), "two steps done under the first daemon", || steps_succeeded(&status_of(&bastion, &id)) >= 2);
    systemd.wait_for("WATCHDOG=1", 1);
    kill9(&mut daemon);

    // Nobody drives it now: shown stopped, not running.
    let stopped = status_of(&bastion, &id);
    assert_eq!(stopped["status"], "running");
    assert_eq!(stopped["driven"], false, "{stopped}");
    std::thread::sleep(Duration::from_millis(1500));

    let restarted_at = Instant::now();
    let mut daemon = serve(&bastion, &systemd, 1_000_000, &[]);
    systemd.wait_for("READY=1", 2);
    wait_until(Duration::from_secs(60), "the run to succeed under the second daemon", || status_of(&bastion, &id)["status"] == "succeeded");

    // Each step's side effect once: the step the kill interrupted was probed, not run twice.
    let counts = bastion.trace_counts();
    for i in 1..=6 {
        assert_eq!(counts.get(&format!("step-{i}")), Some(&1), "trace: {counts:?}");
    }
    // The RTO clock counted the time no daemon ran.
    let done = status_of(&bastion, &id);
    let elapsed = done["rto"]["elapsed_secs"].as_f64().unwrap();
    let floor = (restarted_at - t0).as_secs_f64();
    assert!(elapsed >= floor - 0.2, "RTO elapsed {elapsed}s does not count the {floor:.1}s before the restart");
    let history = bastion.run(&["history", &id, "--json"]);
    let events: Vec<Value> = serde_json::from_slice(&history.stdout).unwrap();
    assert!(
        events.iter().any(|e| e["kind"] == "run-resumed" && e.to_string().contains("dr serve")),
        "the second daemon took the run up: {events:?}"
    );
    assert!(systemd.count("WATCHDOG=1") >= 2, "watchdog pings: {:?}", systemd.messages());

    // SIGTERM: a clean stop, announced.
    unsafe_kill(daemon.id(), libc::SIGTERM);
    let status = daemon.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(systemd.count("STOPPING=1"), 1);
}

#[allow(unsafe_code)]
fn unsafe_kill(pid: u32, signal: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(i32::try_from(pid).unwrap(), signal);
    }
}

#[test]
fn a_hung_engine_stops_pinging_the_watchdog() {
    let bastion = Bastion::new();
    let systemd = Systemd::new();
    // Half a second between pings; the engine's thread blocks for good once step-2 has started.
    let mut daemon = serve(&bastion, &systemd, 1_000_000, &[("DR_HANG_AT", "step-2:after-start")]);
    systemd.wait_for("READY=1", 1);
    let trace = trace_arg(&bastion.trace());
    let id = start_detached(&bastion, &["-p", "steps=3", "-p", "step_ms=300", "-p", &trace]);
    assert!(!id.is_empty());
    wait_until(Duration::from_secs(30), "step-1 to run", || bastion.trace_counts().contains_key("step-1"));
    let pings_before = systemd.count("WATCHDOG=1");
    assert!(pings_before >= 1, "pings while healthy: {:?}", systemd.messages());
    // step-1 took 300 ms; after it the engine hangs. Give the last ping in flight time to land.
    std::thread::sleep(Duration::from_millis(1200));
    let settled = systemd.count("WATCHDOG=1");
    std::thread::sleep(Duration::from_secs(3));
    let after = systemd.count("WATCHDOG=1");
    assert_eq!(after, settled, "a hung engine kept pinging (6 intervals): {:?}", systemd.messages());
    kill9(&mut daemon);
}

#[test]
fn a_second_daemon_on_the_same_store_is_refused_at_once_naming_the_first() {
    let bastion = Bastion::new();
    let systemd = Systemd::new();
    let mut daemon = serve(&bastion, &systemd, 0, &[]);
    systemd.wait_for("READY=1", 1);
    let started = Instant::now();
    let out = bastion.run(&["serve"]);
    assert_eq!(code(&out), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains(&daemon.id().to_string()), "the owner's pid is named: {}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(10), "refused at once, not after a wait");
    kill9(&mut daemon);
}

#[test]
fn detach_without_a_daemon_is_refused_and_a_follower_stopped_with_ctrl_c_leaves_the_run_going() {
    let bastion = Bastion::new();
    let out = bastion.run(&["start", "synthetic", "--detach"]);
    assert_eq!(code(&out), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("dr serve"), "{}", stderr(&out));

    let systemd = Systemd::new();
    let mut daemon = serve(&bastion, &systemd, 0, &[]);
    systemd.wait_for("READY=1", 1);
    // A follower: same exit codes as the foreground (0 when the run succeeds).
    let out = bastion.run(&["start", "synthetic", "-p", "steps=2", "-p", "step_ms=100"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("driven by dr serve"), "{}", stderr(&out));

    // Ctrl-C of a follower stops the following, not the run.
    let trace = trace_arg(&bastion.trace());
    let follower = bastion.dr().args(["start", "synthetic", "-p", "steps=4", "-p", "step_ms=500", "-p", &trace]).stderr(Stdio::piped()).spawn().unwrap();
    wait_until(Duration::from_secs(30), "the followed run's first step", || bastion.trace_counts().contains_key("step-1"));
    unsafe_kill(follower.id(), libc::SIGINT);
    let out = follower.wait_with_output().unwrap();
    assert_eq!(code(&out), Some(130), "{}", stderr(&out));
    wait_until(Duration::from_secs(30), "the run to go on to its end", || bastion.status()["status"] == "succeeded");
    assert_eq!(bastion.trace_counts().get("step-4"), Some(&1));
    kill9(&mut daemon);
}

#[test]
fn the_systemd_units_pass_systemd_analyze_verify_without_a_warning() {
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd");
    let dir = tempfile::tempdir().unwrap();
    let mut names = Vec::new();
    for name in ["dr.service", "dr-drill.service", "dr-drill.timer"] {
        let text = std::fs::read_to_string(units.join(name)).unwrap();
        // The installed path is /usr/bin/dr; verify checks that ExecStart is executable.
        let local = text.replace("/usr/bin/dr", &crate::support::dr_bin().display().to_string());
        std::fs::write(dir.path().join(name), local).unwrap();
        names.push(format!("./{name}"));
    }
    let service = std::fs::read_to_string(units.join("dr.service")).unwrap();
    for needed in ["Type=notify", "WatchdogSec=", "Restart=on-failure", "ProtectSystem=strict", "ReadWritePaths=/var/lib/dr", "NoNewPrivileges=yes", "PrivateTmp=yes"] {
        assert!(service.contains(needed), "dr.service lacks {needed}");
    }
    let timer = std::fs::read_to_string(units.join("dr-drill.timer")).unwrap();
    assert!(timer.contains("OnCalendar=monthly") && timer.contains("Persistent=true"), "{timer}");
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&names)
        .current_dir(dir.path())
        .output()
        .expect("systemd-analyze (Debian's systemd package; scripts/setup installs it)");
    // An unknown or misspelt key is only a warning: any output is a failure here.
    assert!(out.status.success() && out.stderr.is_empty() && out.stdout.is_empty(), "systemd-analyze verify: {}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
}
