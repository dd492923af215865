//! Local sinks for the escalation tests: an HTTP server that records what is
//! POSTed to it (standing in for Slack and PagerDuty; it can fail or hold its
//! answers), a real SMTP server (Debian's python3-aiosmtpd writing a
//! Maildir), log capture, and the configuration and run builders.

#![allow(dead_code)]
#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::collections::VecDeque;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dr_orchestrator::Rto;
use dr_state::{RunHeader, RunId, RunRecord};
use dr_workflows::config::{EscalationRoute, RouteKind, SmtpTls};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How long any awaited condition may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// One request the sink got.
#[derive(Clone, Debug)]
pub struct Request {
    pub path: String,
    pub body: serde_json::Value,
}

struct SinkState {
    requests: Mutex<Vec<Request>>,
    count: watch::Sender<usize>,
    /// Statuses to answer, in order; 200 once empty.
    script: Mutex<VecDeque<u16>>,
    /// While false, requests are recorded but not answered.
    open: watch::Sender<bool>,
}

/// An HTTP server on loopback recording every request's path and JSON body.
pub struct HttpSink {
    pub addr: SocketAddr,
    state: Arc<SinkState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpSink {
    pub async fn start() -> HttpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
        let addr = listener.local_addr().expect("sink addr");
        let state = Arc::new(SinkState {
            requests: Mutex::new(Vec::new()),
            count: watch::channel(0).0,
            script: Mutex::new(VecDeque::new()),
            open: watch::channel(true).0,
        });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, shared.clone()));
            }
        });
        HttpSink { addr, state, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The next `n` requests are answered with `status`.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.state.script.lock().unwrap().extend(std::iter::repeat_n(status, n));
    }

    /// Requests are recorded but not answered until [`HttpSink::release`].
    pub fn hold(&self) {
        self.state.open.send_replace(false);
    }

    pub fn release(&self) {
        self.state.open.send_replace(true);
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Waits until the sink has got at least `n` requests.
    pub async fn wait_for(&self, n: usize) -> Vec<Request> {
        let mut rx = self.state.count.subscribe();
        let waited = tokio::time::timeout(PATIENCE, rx.wait_for(|&c| c >= n)).await;
        assert!(waited.is_ok(), "sink got {} requests, not {n}: {:?}", self.requests().len(), self.requests());
        self.requests()
    }
}

async fn serve(mut stream: TcpStream, state: Arc<SinkState>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
    let length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = serde_json::from_slice(&buf[head_end..head_end + length]).unwrap_or(serde_json::Value::Null);
    let status = state.script.lock().unwrap().pop_front().unwrap_or(200);
    state.requests.lock().unwrap().push(Request { path, body });
    state.count.send_modify(|c| *c += 1);
    let mut open = state.open.subscribe();
    let _ = open.wait_for(|&o| o).await;
    let answer = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// A real SMTP server (aiosmtpd) on loopback, writing each message into a Maildir.
pub struct SmtpServer {
    child: Child,
    pub port: u16,
    pub maildir: PathBuf,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SmtpServer {
    pub async fn start(dir: &Path) -> SmtpServer {
        let python = "/usr/bin/python3";
        let has = Command::new(python).args(["-c", "import aiosmtpd"]).stderr(Stdio::null()).status();
        assert!(
            matches!(has, Ok(s) if s.success()),
            "{python} cannot import aiosmtpd: install Debian's python3-aiosmtpd (run scripts/setup)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
        // Mailbox creates the Maildir itself (only when the path does not exist).
        let maildir = dir.join("maildir");
        let child = Command::new(python)
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start aiosmtpd");
        let server = SmtpServer { child, port, maildir };
        eventually("aiosmtpd to listen", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()).await;
        server
    }

    /// Every message delivered so far, as text.
    pub fn mails(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.maildir.join("new")) else { return Vec::new() };
        let mut mails: Vec<String> =
            entries.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok()).collect();
        mails.sort();
        mails
    }

    pub async fn wait_for(&self, n: usize) -> Vec<String> {
        eventually(&format!("{n} mails"), || self.mails().len() >= n).await;
        self.mails()
    }
}

/// Waits (polling every 20 ms) until `cond` holds; fails the test after [`PATIENCE`].
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Everything logged through it, for assertions on log text.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Captures this thread's events (every level) until the guard drops.
    pub fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || logs.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::io::Write::write(&mut *self.0.lock().unwrap(), buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn route(name: &str, kind: RouteKind, levels: &[u8]) -> EscalationRoute {
    EscalationRoute {
        name: name.into(),
        kind,
        levels: levels.to_vec(),
        url_file: None,
        routing_key_file: None,
        events_url: None,
        smtp: None,
        tls: None,
        from: None,
        to: vec![],
        username: None,
        password_file: None,
    }
}

/// Writes `secret` to `dir/name` (0600) and returns the path.
pub fn secret_file(dir: &Path, name: &str, secret: &str) -> PathBuf {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).expect("secret file");
    writeln!(f, "{secret}").expect("write secret");
    path
}

pub fn slack(name: &str, levels: &[u8], url_file: PathBuf) -> EscalationRoute {
    EscalationRoute { url_file: Some(url_file), ..route(name, RouteKind::Slack, levels) }
}

pub fn pagerduty(name: &str, levels: &[u8], key_file: PathBuf, events_url: String) -> EscalationRoute {
    EscalationRoute {
        routing_key_file: Some(key_file),
        events_url: Some(events_url),
        ..route(name, RouteKind::Pagerduty, levels)
    }
}

pub fn email(name: &str, levels: &[u8], port: u16) -> EscalationRoute {
    EscalationRoute {
        smtp: Some(format!("127.0.0.1:{port}")),
        tls: Some(SmtpTls::None),
        from: Some("dr <dr@bastion.example.org>".into()),
        to: vec!["oncall@example.org".into()],
        ..route(name, RouteKind::Email, levels)
    }
}

/// A running run of `level` with one step per state given.
pub fn run(level: u8, seed: u128, states: Vec<dr_state::StepState>) -> RunRecord {
    let header = RunHeader {
        id: RunId::new_v7(1_700_000_000_000, seed),
        workflow: "synthetic".into(),
        definition_hash: String::new(),
        definition_steps: vec![],
        config_digest: None,
        config_path: None,
        params: Default::default(),
        level,
        target_secs: 60,
        incident_at: 1_700_000_000_000,
        steps: (0..states.len()).map(|i| format!("step-{i}").into()).collect(),
    };
    let mut r = RunRecord::new(&header, 1_700_000_001_000);
    for (s, st) in r.steps.iter_mut().zip(states) {
        s.state = st;
    }
    r
}

pub fn rto(at_risk: bool) -> Rto {
    Rto { target_secs: 60, elapsed_secs: 30.0, projected_secs: if at_risk { 90.0 } else { 45.0 }, at_risk }
}

/// Every file's bytes under `dir`, recursively.
pub fn all_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("read file");
                out.push((path, bytes));
            }
        }
    }
    out
}
