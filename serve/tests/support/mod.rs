//! Helpers shared by the `dr-serve` integration tests: a fake `Starter` (the
//! daemon), the HTTP listener on a loopback port, a tiny HTTP/1.1 client,
//! polling with a deadline, and webhook bodies.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dr_serve::alerts::Alerts;
use dr_serve::http::{self, BearerToken, HttpState};
use dr_serve::metrics::MetricsSnapshot;
use dr_serve::{BoxFuture, StartRequest, Starter};
use dr_state::RunId;
use dr_workflows::config::AlertRule;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The daemon, faked: records every start; a started run is open until `close`.
#[derive(Default)]
pub struct FakeStarter {
    pub starts: Mutex<Vec<StartRequest>>,
    pub open: Mutex<BTreeSet<RunId>>,
    /// Refuse this many starts (then accept), as a daemon that could not start.
    pub fail_next: Mutex<u32>,
}

impl FakeStarter {
    pub fn starts(&self) -> Vec<StartRequest> {
        self.starts.lock().expect("starts").clone()
    }

    pub fn close(&self, run: RunId) {
        self.open.lock().expect("open").remove(&run);
    }
}

impl Starter for FakeStarter {
    fn start(&self, req: StartRequest) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            {
                let mut fail = self.fail_next.lock().expect("fail");
                if *fail > 0 {
                    *fail -= 1;
                    return Err("the store is busy (fake)".to_owned());
                }
            }
            // Idempotent, as the daemon's: a known id changes nothing.
            let mut starts = self.starts.lock().expect("starts");
            if !starts.iter().any(|s| s.id == req.id) {
                self.open.lock().expect("open").insert(req.id);
                starts.push(req);
            }
            Ok(())
        })
    }

    fn is_open(&self, id: RunId) -> bool {
        self.open.lock().expect("open").contains(&id)
    }

    fn open_run_like(&self, workflow: &str, params: &BTreeMap<String, String>) -> Option<RunId> {
        let open = self.open.lock().expect("open");
        self.starts.lock().expect("starts").iter().find(|s| open.contains(&s.id) && s.workflow == workflow && &s.params == params).map(|s| s.id)
    }
}

pub fn rule(alertname: &str, params: &[(&str, &str)]) -> AlertRule {
    AlertRule {
        alertname: alertname.to_owned(),
        labels: BTreeMap::new(),
        workflow: "synthetic".to_owned(),
        params: params.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        automatic: Some(true),
    }
}

/// The HTTP listener of a test daemon.
pub struct Server {
    pub addr: SocketAddr,
    pub alerts: Arc<Alerts>,
    pub starter: Arc<FakeStarter>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

pub struct ServerOptions<'a> {
    pub journal: &'a Path,
    pub rules: Vec<AlertRule>,
    pub token: Option<&'a str>,
    pub max_body_bytes: u64,
    /// Reuse a port (a restarted daemon); else a free one.
    pub port: u16,
    pub starter: Option<Arc<FakeStarter>>,
    pub metrics: MetricsSnapshot,
}

impl<'a> ServerOptions<'a> {
    pub fn new(journal: &'a Path, rules: Vec<AlertRule>) -> Self {
        ServerOptions {
            journal,
            rules,
            token: None,
            max_body_bytes: 1 << 20,
            port: 0,
            starter: None,
            metrics: MetricsSnapshot::default(),
        }
    }

    pub async fn start(self) -> Server {
        let starter = self.starter.unwrap_or_default();
        let alerts = Arc::new(Alerts::open(self.journal, self.rules, starter.clone()).expect("open alerts"));
        let token = self.token.map(|t| BearerToken::from_secret(t.as_bytes()));
        let snapshot = self.metrics;
        let metrics = Arc::new(move || snapshot.clone());
        let state = Arc::new(HttpState::new(alerts.clone(), metrics, token, self.max_body_bytes));
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(http::serve(listener, state, shutdown.clone()));
        Server { addr, alerts, starter, shutdown, task: Some(task) }
    }
}

impl Server {
    /// Stops the listener and waits until it has returned.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), task).await.expect("serve returned").expect("serve task");
        }
    }

    pub fn count(&self, outcome: &str) -> u64 {
        self.alerts.outcome_counts().get(outcome).copied().unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A response: status and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

/// One HTTP/1.1 request (`Connection: close`) with the given extra header lines.
pub async fn request(addr: SocketAddr, method: &str, path: &str, headers: &[&str], body: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for header in headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    if !headers.iter().any(|h| h.to_ascii_lowercase().starts_with("content-length:")) {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("write head");
    // The server may answer (413, 401) before reading all of a large body.
    let _ = stream.write_all(body).await;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw)).await.expect("answer in time");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = headers.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Reply { status, headers: headers.to_owned(), body: body.to_owned() }
}

pub async fn post_json(addr: SocketAddr, path: &str, token: Option<&str>, body: &str) -> Reply {
    let auth = token.map(|t| format!("Authorization: Bearer {t}"));
    let mut headers = vec!["Content-Type: application/json"];
    if let Some(auth) = &auth {
        headers.push(auth);
    }
    request(addr, "POST", path, &headers, body.as_bytes()).await
}

/// Polls `check` every 50 ms until it holds; panics naming `what` after `limit`.
pub async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A webhook notification (version 4) with one alert per `(status, fingerprint, startsAt, labels)`.
/// `(status, fingerprint, startsAt, labels)`.
pub type TestAlert<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)]);

pub fn webhook(alerts: &[TestAlert<'_>]) -> String {
    let alerts: Vec<_> = alerts
        .iter()
        .map(|(status, fingerprint, starts_at, labels)| {
            let labels: BTreeMap<_, _> = labels.iter().copied().collect();
            serde_json::json!({
                "status": status, "labels": labels, "annotations": {},
                "startsAt": starts_at, "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus/graph", "fingerprint": fingerprint,
            })
        })
        .collect();
    serde_json::json!({
        "version": "4", "groupKey": "{}:{alertname=\"NodeDown\"}", "truncatedAlerts": 0,
        "status": "firing", "receiver": "dr", "groupLabels": {}, "commonLabels": {},
        "commonAnnotations": {}, "externalURL": "http://alertmanager", "alerts": alerts,
    })
    .to_string()
}

/// The outcomes of a 200 answer, as `(outcome, run)`.
pub fn outcomes(reply: &Reply) -> Vec<(String, Option<String>)> {
    let value: serde_json::Value = serde_json::from_str(&reply.body).expect("json answer");
    // A failed start is answered 503 (Alertmanager sends again soon); anything else 200.
    let failed = value["outcomes"].as_array().is_some_and(|o| o.iter().any(|o| o["outcome"] == "start-failed"));
    assert_eq!(reply.status, if failed { 503 } else { 200 }, "{reply:?}");
    let value: serde_json::Value = serde_json::from_str(&reply.body).expect("json answer");
    value["outcomes"]
        .as_array()
        .expect("outcomes")
        .iter()
        .map(|o| (o["outcome"].as_str().expect("outcome").to_owned(), o["run"].as_str().map(str::to_owned)))
        .collect()
}
