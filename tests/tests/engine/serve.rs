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
    // Once step-1 is done the engine hangs: the pings (every 0.5 s while healthy) must stop.
    // Wait for 3 s (6 intervals) without one; a healthy daemon never leaves such a gap.
    let last_ping = || systemd.messages().iter().rev().find(|(_, m)| m.lines().any(|l| l == "WATCHDOG=1")).map(|(at, _)| *at);
    wait_until(Duration::from_secs(30), "6 watchdog intervals without a ping", || last_ping().is_some_and(|at| at.elapsed() >= Duration::from_secs(3)));
    // It really is the hang: step-2 started (durably) but its action never ran.
    assert!(!bastion.trace_counts().contains_key("step-2"), "the engine did not hang: {:?}", bastion.trace_counts());
    assert!(daemon.try_wait().unwrap().is_none(), "the daemon exited instead of hanging");
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
    // --json: one object at the end, as without a daemon.
    let out = bastion.run(&["start", "synthetic", "-p", "steps=2", "-p", "step_ms=100", "--json"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let last: Value = serde_json::from_slice(&out.stdout).expect("one JSON object on stdout");
    assert_eq!(last["status"], "succeeded", "{last}");

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
    for needed in ["Type=notify", "WatchdogSec=", "Restart=on-failure", "ProtectSystem=strict", "ReadWritePaths=/var/lib/dr", "NoNewPrivileges=yes"] {
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

/// One HTTP/1.1 request over a fresh connection: (status, body).
fn http(addr: &str, method: &str, path: &str, headers: &[&str], body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The value of one sample of `/metrics` (0 when absent).
fn metric(addr: &str, sample: &str) -> f64 {
    let (status, body) = http(addr, "GET", "/metrics", &[], b"");
    assert_eq!(status, 200, "{body}");
    body.lines().find_map(|l| l.strip_prefix(sample).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
}

fn runs(bastion: &Bastion) -> Vec<Value> {
    let out = bastion.run(&["list", "--json"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

/// The real Alertmanager, posting to `webhook` with a bearer token from `token_file`; killed on drop.
struct Alertmanager {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Alertmanager {
    fn start(dir: &Path, webhook: &str, token_file: &Path) -> Self {
        assert!(Path::new(ALERTMANAGER).exists(), "{ALERTMANAGER} is missing: run scripts/setup");
        let config = dir.join("alertmanager.yml");
        std::fs::write(
            &config,
            format!(
                "route:\n  receiver: dr\n  group_by: ['alertname', 'trace']\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1s\n\
                 receivers:\n- name: dr\n  webhook_configs:\n  - url: {webhook}\n    send_resolved: true\n\
                 \x20   http_config:\n      authorization:\n        credentials_file: {}\n",
                token_file.display()
            ),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let log = dir.join("alertmanager.log");
        let child = std::process::Command::new(ALERTMANAGER)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("am-data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let am = Alertmanager { child, addr, log };
        wait_until(Duration::from_secs(30), "alertmanager ready", || {
            std::net::TcpStream::connect(&am.addr).is_ok() && http(&am.addr, "GET", "/-/ready", &[], b"").0 == 200
        });
        am
    }

    /// `POST /api/v2/alerts`: one alert with these labels, started `ago` seconds ago, ending in `ends_in` seconds.
    fn post(&self, labels: &[(&str, &str)], starts_at: &str, ends_at: &str) {
        let labels: serde_json::Map<String, Value> = labels.iter().map(|(k, v)| ((*k).to_owned(), Value::from(*v))).collect();
        let body = serde_json::json!([{ "labels": labels, "startsAt": starts_at, "endsAt": ends_at, "generatorURL": "http://prometheus.test/graph" }]);
        let (status, answer) = http(&self.addr, "POST", "/api/v2/alerts", &["Content-Type: application/json"], body.to_string().as_bytes());
        assert_eq!(status, 200, "alertmanager refused the alert: {answer}\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An RFC 3339 time `offset` seconds from now (UTC), as Alertmanager's API wants it.
fn at(offset: i64) -> String {
    let out = std::process::Command::new("date").args(["-u", "-d", &format!("{offset} seconds"), "+%Y-%m-%dT%H:%M:%S.000Z"]).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn alertmanager_firing_at_dr_serve_starts_one_run_per_alert_and_repeats_resolves_and_restarts_start_nothing() {
    let bastion = Bastion::new();
    let work = bastion.work.path();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let token_file = work.join("webhook-token");
    std::fs::write(&token_file, "a-long-webhook-token\n").unwrap();
    let trace = bastion.trace();
    std::fs::write(
        work.join("dr.toml"),
        format!(
            "[serve]\nlisten = \"{addr}\"\ntoken_file = \"webhook-token\"\n\n\
             [[alerts]]\nalertname = \"SyntheticDown\"\nworkflow = \"synthetic\"\nparams = {{ steps = \"2\", step_ms = \"50\", trace = \"$labels.trace\" }}\n\n\
             [[alerts]]\nalertname = \"BigOutage\"\nworkflow = \"synthetic\"\nparams = {{ level = \"3\", steps = \"1\", step_ms = \"10\" }}\n"
        ),
    )
    .unwrap();
    let systemd = Systemd::new();
    let config = work.join("dr.toml").display().to_string();
    let mut daemon = serve(&bastion, &systemd, 0, &[("DR_CONFIG", &config)]);
    systemd.wait_for("READY=1", 1);
    // Without the token: refused, and nothing starts.
    let (status, _) = http(&addr, "POST", "/alertmanager", &["Content-Type: application/json"], b"{}");
    assert_eq!(status, 401);
    let am = Alertmanager::start(work, &format!("http://{addr}/alertmanager"), &token_file);

    // Fired → one run, with the label in its parameters; it runs to its end (level 1: automatic).
    let trace_label = trace.display().to_string();
    let down = [("alertname", "SyntheticDown"), ("trace", trace_label.as_str())];
    let since = at(-60);
    am.post(&down, &since, &at(3600));
    wait_until(Duration::from_secs(30), "the alert's run", || runs(&bastion).len() == 1);
    let run = runs(&bastion)[0].clone();
    let id = run["id"].as_str().unwrap().to_owned();
    wait_until(Duration::from_secs(30), "the run to succeed", || status_of(&bastion, &id)["status"] == "succeeded");
    assert_eq!(status_of(&bastion, &id)["params"]["trace"], trace_label.as_str());

    // Posted again, and repeated by Alertmanager → duplicates, still one run.
    am.post(&down, &since, &at(3600));
    wait_until(Duration::from_secs(30), "three duplicate notifications", || metric(&addr, "dr_alerts_total{outcome=\"duplicate\"}") >= 3.0);
    assert_eq!(runs(&bastion).len(), 1);

    // Resolved → a resolved notification, nothing new.
    am.post(&down, &since, &at(-1));
    wait_until(Duration::from_secs(30), "the resolved notification", || metric(&addr, "dr_alerts_total{outcome=\"resolved-ignored\"}") >= 1.0);
    assert_eq!(runs(&bastion).len(), 1);
    assert_eq!(bastion.trace_counts().get("step-1"), Some(&1));

    // A level-3 workflow is not automatic: its run waits at a gate for a person.
    am.post(&[("alertname", "BigOutage")], &at(-30), &at(3600));
    wait_until(Duration::from_secs(30), "the held run", || runs(&bastion).len() == 2);
    let held = runs(&bastion).into_iter().find(|r| r["id"] != id.as_str()).unwrap();
    let held_id = held["id"].as_str().unwrap().to_owned();
    let held_status = status_of(&bastion, &held_id);
    assert_eq!(held_status["status"], "paused", "{held_status}");
    assert_eq!(held_status["steps"][0]["status"], "gated", "{held_status}");
    assert!(held_status["reason"].as_str().unwrap().contains("BigOutage"), "{held_status}");

    // The daemon dies and comes back while BigOutage still fires: its repeats start nothing.
    kill9(&mut daemon);
    let mut daemon = serve(&bastion, &systemd, 0, &[("DR_CONFIG", &config)]);
    systemd.wait_for("READY=1", 2);
    wait_until(Duration::from_secs(30), "repeats reaching the new daemon", || metric(&addr, "dr_alerts_total{outcome=\"duplicate\"}") >= 2.0);
    assert_eq!(runs(&bastion).len(), 2);
    // A person approves: the held run goes on, through the daemon.
    let out = bastion.run(&["approve", &held_id, "step-1"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    wait_until(Duration::from_secs(30), "the approved run to succeed", || status_of(&bastion, &held_id)["status"] == "succeeded");
    kill9(&mut daemon);
}

/// A Slack-compatible webhook receiver: records (path, body) of every POST, answers 200.
struct Sink {
    addr: String,
    got: Arc<Mutex<Vec<(String, String)>>>,
}

impl Sink {
    fn start() -> Self {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&got);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap_or(0);
                let path = line.split_whitespace().nth(1).unwrap_or_default().to_owned();
                let mut length = 0usize;
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
                        break;
                    }
                    if let Some((name, value)) = header.split_once(':') {
                        if name.eq_ignore_ascii_case("content-length") {
                            length = value.trim().parse().unwrap_or(0);
                        }
                    }
                }
                let mut body = vec![0u8; length];
                let _ = reader.read_exact(&mut body);
                sink.lock().unwrap().push((path, String::from_utf8_lossy(&body).into_owned()));
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
            }
        });
        Sink { addr, got }
    }

    fn bodies(&self, path: &str) -> Vec<String> {
        self.got.lock().unwrap().iter().filter(|(p, _)| p == path).map(|(_, b)| b.clone()).collect()
    }
}

#[test]
fn a_level_four_run_whose_projection_passes_its_target_sends_one_at_risk_message_on_level_fours_route_only() {
    let bastion = Bastion::new();
    let work = bastion.work.path();
    let sink = Sink::start();
    std::fs::write(work.join("l1-url"), format!("http://{}/l1", sink.addr)).unwrap();
    std::fs::write(work.join("l4-url"), format!("http://{}/l4", sink.addr)).unwrap();
    std::fs::write(
        work.join("dr.toml"),
        "[[escalation.routes]]\nname = \"oncall\"\nkind = \"slack\"\nlevels = [1]\nurl_file = \"l1-url\"\n\n\
         [[escalation.routes]]\nname = \"management\"\nkind = \"slack\"\nlevels = [4]\nurl_file = \"l4-url\"\n",
    )
    .unwrap();
    let systemd = Systemd::new();
    let config = work.join("dr.toml").display().to_string();
    // A watchdog of 1 s: the daemon's loop (which sees a projection pass its target) turns every 0.5 s.
    let mut daemon = serve(&bastion, &systemd, 1_000_000, &[("DR_CONFIG", &config)]);
    systemd.wait_for("READY=1", 1);

    // Level 4 (target 4 h), detected 3h59m45s ago: on track at first (about 4 s of steps left);
    // step 2 fails once and waits 15 s before its retry, so the projection passes 4 h mid-run.
    let level4 = bastion.run(&[
        "start", "synthetic", "--detach", "--json", "--detected-at=-3h59m45s",
        "-p", "level=4", "-p", "steps=3", "-p", "step_ms=1000", "-p", "fail_at=2", "-p", "backoff_ms=15000",
    ]);
    assert_eq!(code(&level4), Some(0), "{}", stderr(&level4));
    let level4: Value = serde_json::from_slice(&level4.stdout).unwrap();
    assert_eq!(level4["rto"]["at_risk"], false, "on track at the start: {level4}");
    let l4_id = level4["id"].as_str().unwrap().to_owned();
    // Level 1, on track all along.
    let l1_id = start_detached(&bastion, &["-p", "steps=2", "-p", "step_ms=200"]);

    wait_until(Duration::from_secs(60), "both runs to end", || {
        status_of(&bastion, &l4_id)["status"] == "succeeded" && status_of(&bastion, &l1_id)["status"] == "succeeded"
    });
    let finished = |path: &str, id: &str| sink.bodies(path).iter().filter(|b| b.contains(id) && b.contains("finished") || b.contains(id) && b.contains("succeeded")).count();
    wait_until(Duration::from_secs(30), "the finished messages", || finished("/l4", &l4_id) >= 1 && finished("/l1", &l1_id) >= 1);

    let at_risk = |path: &str| sink.bodies(path).iter().filter(|b| b.contains("RTO at risk")).count();
    assert_eq!(at_risk("/l4"), 1, "level 4's route: {:#?}", sink.bodies("/l4"));
    assert_eq!(at_risk("/l1"), 0, "level 1's route: {:#?}", sink.bodies("/l1"));
    assert!(sink.bodies("/l1").iter().all(|b| !b.contains(&l4_id)), "level 1's route heard of the level-4 run: {:#?}", sink.bodies("/l1"));
    assert!(sink.bodies("/l4").iter().all(|b| !b.contains(&l1_id)), "level 4's route heard of the level-1 run: {:#?}", sink.bodies("/l4"));
    kill9(&mut daemon);
}

/// Sends one control request on `socket` as `uid` (0: as ourselves); the answer line ("" when the
/// connection is closed on it: refused).
fn ask_socket_as(uid: u32, socket: &Path) -> String {
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_UNIX)\ns.connect({:?})\ntry:\n  s.sendall(b'\"Info\"\\n')\n  print(s.makefile().readline().strip())\nexcept OSError:\n  print('')",
        socket.display().to_string()
    );
    let mut cmd = if uid == 0 {
        std::process::Command::new("python3")
    } else {
        let mut c = std::process::Command::new("setpriv");
        // Debian's python: another user cannot run one under /root.
        c.args(["--reuid", &uid.to_string(), "--regid", &uid.to_string(), "--clear-groups", "/usr/bin/python3"]);
        c
    };
    let out = cmd.args(["-c", &script]).output().expect("python3 (and setpriv) run");
    assert!(out.status.success(), "the client failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn the_control_socket_answers_its_owner_and_refuses_another_user_even_if_its_mode_were_opened() {
    use std::os::unix::fs::PermissionsExt;
    let bastion = Bastion::new();
    let systemd = Systemd::new();
    let mut daemon = serve(&bastion, &systemd, 0, &[]);
    systemd.wait_for("READY=1", 1);
    let socket = bastion.state.path().join("dr.sock");
    assert_eq!(std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777, 0o600);
    let owner = ask_socket_as(0, &socket);
    assert!(owner.contains("\"daemon\":true"), "the owner is answered: {owner}");
    // A mistake opens the socket to everyone: the peer's uid is still checked.
    std::fs::set_permissions(bastion.state.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert_eq!(ask_socket_as(65534, &socket), "", "another user (nobody) got an answer");
    kill9(&mut daemon);
}

#[test]
fn sigterm_saves_the_runs_for_the_next_start_and_decisions_reach_runs_through_the_daemon() {
    let bastion = Bastion::new();
    let systemd = Systemd::new();
    let mut daemon = serve(&bastion, &systemd, 0, &[]);
    systemd.wait_for("READY=1", 1);
    let trace = trace_arg(&bastion.trace());
    let id = start_detached(&bastion, &["-p", "steps=4", "-p", "step_ms=1500", "-p", "resume=probe", "-p", &trace]);
    let doomed = start_detached(&bastion, &["-p", "steps=3", "-p", "step_ms=3000"]);
    wait_until(Duration::from_secs(30), "step-2 of the first run to start", || bastion.trace_counts().contains_key("step-2"));

    // A decision through the daemon: cancelling the other run ends it cancelled (exit 0).
    let out = bastion.run(&["cancel", &doomed, "--reason", "not needed"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert_eq!(status_of(&bastion, &doomed)["status"], "cancelled");

    // SIGTERM mid-step: a clean stop, the run saved (stopped), not failed.
    unsafe_kill(daemon.id(), libc::SIGTERM);
    assert_eq!(daemon.wait().unwrap().code(), Some(0));
    assert_eq!(systemd.count("STOPPING=1"), 1);
    let saved = status_of(&bastion, &id);
    assert_eq!((saved["status"].as_str(), saved["driven"].as_bool()), (Some("running"), Some(false)), "{saved}");
    let history: Vec<Value> = serde_json::from_slice(&bastion.run(&["history", &id, "--json"]).stdout).unwrap();
    assert!(history.iter().any(|e| e["kind"] == "process-stopped"), "{history:?}");

    // The next start continues it to its end; every step's side effect once.
    let mut daemon = serve(&bastion, &systemd, 0, &[]);
    systemd.wait_for("READY=1", 2);
    wait_until(Duration::from_secs(60), "the run to succeed after the restart", || status_of(&bastion, &id)["status"] == "succeeded");
    let counts = bastion.trace_counts();
    for i in 1..=4 {
        assert_eq!(counts.get(&format!("step-{i}")), Some(&1), "trace: {counts:?}");
    }
    kill9(&mut daemon);
}
