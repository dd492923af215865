//! The Alertmanager webhook of `dr serve`, through its HTTP listener: the
//! answers to bad requests (400, 401, 404/405, 413, 415), rule matching and
//! `$labels` substitution, the per-episode dedup (repeats, concurrent
//! notifications, a start cut short, a restart over the same journal), and
//! the real Alertmanager (`/usr/bin/prometheus-alertmanager`) posting to it.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use support::{outcomes, post_json, request, rule, wait_for, webhook, FakeStarter, ServerOptions};

const NODE_DOWN: &[(&str, &str)] = &[("alertname", "NodeDown"), ("node", "w1"), ("severity", "page")];
const T0: &str = "2030-01-01T00:00:00Z";

fn rules() -> Vec<dr_workflows::config::AlertRule> {
    vec![rule("NodeDown", &[("node", "$labels.node"), ("why", "alert-$labels.alertname")])]
}

#[tokio::test]
async fn a_firing_alert_starts_one_run_with_its_labels_and_repeats_are_duplicates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerOptions::new(dir.path(), rules()).start().await;
    let body = webhook(&[("firing", "fp1", T0, NODE_DOWN)]);

    let first = outcomes(&post_json(server.addr, "/alertmanager", None, &body).await);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].0, "started");
    let starts = server.starter.starts();
    assert_eq!(starts.len(), 1);
    assert_eq!(Some(starts[0].id.to_string()), first[0].1);
    assert_eq!(starts[0].workflow, "synthetic");
    assert_eq!(starts[0].params.get("node").map(String::as_str), Some("w1"));
    assert_eq!(starts[0].params.get("why").map(String::as_str), Some("alert-NodeDown"));
    assert_eq!(starts[0].automatic, Some(true));
    assert!(starts[0].trigger.contains("NodeDown{") && starts[0].trigger.contains("node=\"w1\""), "{}", starts[0].trigger);

    for _ in 0..3 {
        let again = outcomes(&post_json(server.addr, "/alertmanager", None, &body).await);
        assert_eq!(again, vec![("duplicate".to_owned(), first[0].1.clone())]);
    }
    assert_eq!(server.starter.starts().len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn resolved_alerts_and_alerts_without_a_rule_start_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerOptions::new(dir.path(), rules()).start().await;
    let other: &[(&str, &str)] = &[("alertname", "DiskFull")];
    let body = webhook(&[("resolved", "fp1", T0, NODE_DOWN), ("firing", "fp2", T0, other)]);
    let answer = outcomes(&post_json(server.addr, "/alertmanager", None, &body).await);
    assert_eq!(answer, vec![("resolved-ignored".to_owned(), None), ("no-rule".to_owned(), None)]);
    assert!(server.starter.starts().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn an_alert_missing_a_label_the_params_name_is_refused_and_starts_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerOptions::new(dir.path(), rules()).start().await;
    let no_node: &[(&str, &str)] = &[("alertname", "NodeDown")];
    let reply = post_json(server.addr, "/alertmanager", None, &webhook(&[("firing", "fp1", T0, no_node)])).await;
    let value: serde_json::Value = serde_json::from_str(&reply.body).expect("json");
    assert_eq!(value["outcomes"][0]["outcome"], "refused", "{reply:?}");
    let reason = value["outcomes"][0]["reason"].as_str().expect("reason");
    assert!(reason.contains("no label \"node\""), "{reason}");
    assert!(server.starter.starts().is_empty());
    // Nothing was recorded either: the journal holds no episode.
    assert!(std::fs::read_dir(dir.path()).expect("journal").next().is_none());
    server.stop().await;
}

#[tokio::test]
async fn a_new_episode_joins_the_alerts_open_run_and_starts_anew_once_it_ended() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerOptions::new(dir.path(), rules()).start().await;
    let first = outcomes(&post_json(server.addr, "/alertmanager", None, &webhook(&[("firing", "fp1", T0, NODE_DOWN)])).await);
    let run = first[0].1.clone();
    // The alert resolved and fired again (a new startsAt) while its run is open.
    let second_episode = webhook(&[("firing", "fp1", "2030-01-01T00:10:00Z", NODE_DOWN)]);
    let joined = outcomes(&post_json(server.addr, "/alertmanager", None, &second_episode).await);
    assert_eq!(joined, vec![("duplicate".to_owned(), run.clone())]);
    // The run ends; repeats of the joined episode still start nothing.
    let id = server.starter.starts()[0].id;
    server.starter.close(id);
    let repeat = outcomes(&post_json(server.addr, "/alertmanager", None, &second_episode).await);
    assert_eq!(repeat, vec![("duplicate".to_owned(), run.clone())]);
    // A third episode after the run ended starts a new run.
    let third = webhook(&[("firing", "fp1", "2030-01-01T01:00:00Z", NODE_DOWN)]);
    let started = outcomes(&post_json(server.addr, "/alertmanager", None, &third).await);
    assert_eq!(started[0].0, "started");
    assert_ne!(started[0].1, run);
    assert_eq!(server.starter.starts().len(), 2);
    server.stop().await;
}

#[tokio::test]
async fn a_start_the_daemon_refused_is_completed_with_the_same_run_id_by_the_next_notification() {
    let dir = tempfile::tempdir().expect("tempdir");
    let starter = Arc::new(FakeStarter::default());
    *starter.fail_next.lock().expect("fail") = 1;
    let mut options = ServerOptions::new(dir.path(), rules());
    options.starter = Some(starter.clone());
    let server = options.start().await;
    let body = webhook(&[("firing", "fp1", T0, NODE_DOWN)]);
    let reply = post_json(server.addr, "/alertmanager", None, &body).await;
    let failed = outcomes(&reply);
    assert_eq!(failed[0].0, "start-failed", "{reply:?}");
    assert!(reply.body.contains("the store is busy (fake)"), "{reply:?}");
    assert!(starter.starts().is_empty());
    let completed = outcomes(&post_json(server.addr, "/alertmanager", None, &body).await);
    assert_eq!(completed, vec![("started".to_owned(), failed[0].1.clone())]);
    let again = outcomes(&post_json(server.addr, "/alertmanager", None, &body).await);
    assert_eq!(again, vec![("duplicate".to_owned(), failed[0].1.clone())]);
    assert_eq!(starter.starts().len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_notifications_of_one_alert_start_one_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerOptions::new(dir.path(), rules()).start().await;
    let body = webhook(&[("firing", "fp1", T0, NODE_DOWN)]);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (addr, body) = (server.addr, body.clone());
        tasks.spawn(async move { outcomes(&post_json(addr, "/alertmanager", None, &body).await) });
    }
    let mut started = 0;
    let mut runs = std::collections::BTreeSet::new();
    while let Some(answer) = tasks.join_next().await {
        let answer = answer.expect("task");
        started += usize::from(answer[0].0 == "started");
        runs.insert(answer[0].1.clone());
    }
    assert_eq!(started, 1);
    assert_eq!(runs.len(), 1, "every answer names the one run: {runs:?}");
    assert_eq!(server.starter.starts().len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_restarted_daemon_does_not_start_an_episode_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let body = webhook(&[("firing", "fp1", T0, NODE_DOWN)]);
    let server = ServerOptions::new(dir.path(), rules()).start().await;
    let first = outcomes(&post_json(server.addr, "/alertmanager", None, &body).await);
    assert_eq!(first[0].0, "started");
    server.stop().await;

    // A new daemon (its runs all ended meanwhile, nothing open) over the same journal.
    let server = ServerOptions::new(dir.path(), rules()).start().await;
    let again = outcomes(&post_json(server.addr, "/alertmanager", None, &body).await);
    assert_eq!(again, vec![("duplicate".to_owned(), first[0].1.clone())]);
    assert!(server.starter.starts().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn schema_errors_answer_400_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerOptions::new(dir.path(), rules()).start().await;
    let good: serde_json::Value = serde_json::from_str(&webhook(&[("firing", "fp1", T0, NODE_DOWN)])).expect("json");
    let check = |edit: fn(&mut serde_json::Value), want: &'static str| {
        let mut body = good.clone();
        edit(&mut body);
        let addr = server.addr;
        async move {
            let reply = post_json(addr, "/alertmanager", None, &body.to_string()).await;
            assert_eq!(reply.status, 400, "{want}: {reply:?}");
            assert!(reply.body.contains(want), "{want:?} not in {reply:?}");
        }
    };
    check(|v| v["version"] = "3".into(), "version \"3\", expected \"4\"").await;
    check(|v| drop(v.as_object_mut().map(|o| o.remove("groupKey"))), "missing field `groupKey`").await;
    check(|v| drop(v["alerts"][0].as_object_mut().map(|o| o.remove("startsAt"))), "missing field `startsAt`").await;
    check(|v| v["alerts"][0]["status"] = "pending".into(), "alerts[0].status \"pending\"").await;
    check(|v| v["alerts"] = "none".into(), "invalid type").await;
    let reply = post_json(server.addr, "/alertmanager", None, "{not json").await;
    assert_eq!(reply.status, 400, "{reply:?}");
    let reply = request(server.addr, "POST", "/alertmanager", &["Content-Type: text/plain"], b"{}").await;
    assert_eq!(reply.status, 415, "{reply:?}");
    assert!(server.starter.starts().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_body_over_the_limit_answers_413() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut options = ServerOptions::new(dir.path(), rules());
    options.max_body_bytes = 512;
    let server = options.start().await;
    // A padded but otherwise valid notification: refused for its size alone.
    let mut body: serde_json::Value = serde_json::from_str(&webhook(&[("firing", "fp1", T0, NODE_DOWN)])).expect("json");
    body["commonAnnotations"]["pad"] = "x".repeat(600).into();
    let reply = post_json(server.addr, "/alertmanager", None, &body.to_string()).await;
    assert_eq!(reply.status, 413, "{reply:?}");
    assert!(reply.body.contains("over 512 bytes"), "{reply:?}");
    // Without a Content-Length (chunked), the limit holds while reading.
    let mut chunked = format!("{:x}\r\n", body.to_string().len()).into_bytes();
    chunked.extend(body.to_string().bytes());
    chunked.extend(b"\r\n0\r\n\r\n");
    let headers = ["Content-Type: application/json", "Transfer-Encoding: chunked"];
    let reply = request_without_length(server.addr, &headers, &chunked).await;
    assert_eq!(reply.status, 413, "{reply:?}");
    // The same notification within the limit is accepted.
    let small = webhook(&[("firing", "fp1", T0, NODE_DOWN)]);
    assert!(small.len() <= 512, "the unpadded body is {} bytes", small.len());
    assert_eq!(outcomes(&post_json(server.addr, "/alertmanager", None, &small).await)[0].0, "started");
    server.stop().await;
}

async fn request_without_length(addr: SocketAddr, headers: &[&str], body: &[u8]) -> support::Reply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut head = format!("POST /alertmanager HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for header in headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("head");
    let _ = stream.write_all(body).await;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw)).await.expect("answer");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    support::Reply { status, headers: String::new(), body: text }
}

#[tokio::test]
async fn a_missing_or_wrong_token_answers_401_without_echoing_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut options = ServerOptions::new(dir.path(), rules());
    options.token = Some("the-right-token");
    let server = options.start().await;
    let body = webhook(&[("firing", "fp1", T0, NODE_DOWN)]);
    for token in [None, Some("the-wrong-token"), Some(""), Some("the-right-token-plus")] {
        let reply = post_json(server.addr, "/alertmanager", token, &body).await;
        assert_eq!(reply.status, 401, "{token:?}: {reply:?}");
        assert!(reply.headers.to_ascii_lowercase().contains("www-authenticate: bearer"), "{reply:?}");
        assert!(!reply.body.contains("token-"), "the answer echoes a token: {reply:?}");
    }
    let basic = ["Content-Type: application/json", "Authorization: Basic dGhlLXJpZ2h0LXRva2Vu"];
    assert_eq!(request(server.addr, "POST", "/alertmanager", &basic, body.as_bytes()).await.status, 401);
    assert!(server.starter.starts().is_empty());
    let reply = post_json(server.addr, "/alertmanager", Some("the-right-token"), &body).await;
    assert_eq!(outcomes(&reply)[0].0, "started");
    // The scheme is case-insensitive.
    let lower = ["Content-Type: application/json", "Authorization: bearer the-right-token"];
    let reply = request(server.addr, "POST", "/alertmanager", &lower, body.as_bytes()).await;
    assert_eq!(outcomes(&reply)[0].0, "duplicate");
    server.stop().await;
}

#[tokio::test]
async fn only_the_webhook_metrics_and_health_are_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerOptions::new(dir.path(), rules()).start().await;
    for path in ["/", "/runs", "/api/v1/runs", "/control", "/operate", "/alertmanager/x", "/metrics/"] {
        for method in ["GET", "POST"] {
            let reply = request(server.addr, method, path, &[], b"").await;
            assert_eq!(reply.status, 404, "{method} {path}: {reply:?}");
        }
    }
    for (method, path, allow) in
        [("GET", "/alertmanager", "POST"), ("PUT", "/alertmanager", "POST"), ("POST", "/metrics", "GET"), ("DELETE", "/healthz", "GET")]
    {
        let reply = request(server.addr, method, path, &[], b"").await;
        assert_eq!(reply.status, 405, "{method} {path}: {reply:?}");
        assert!(reply.headers.to_ascii_lowercase().contains(&format!("allow: {}", allow.to_ascii_lowercase())), "{reply:?}");
    }
    let health = request(server.addr, "GET", "/healthz", &[], b"").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    server.stop().await;
}

// ---- the real Alertmanager ----

const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";
const TOKEN: &str = "am-bearer-token-for-the-test";

/// A real Alertmanager on loopback, killed on drop.
struct Alertmanager {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Alertmanager {
    fn start(dir: &Path, webhook_port: u16) -> Alertmanager {
        assert!(Path::new(ALERTMANAGER).exists(), "{ALERTMANAGER} is missing: run scripts/setup");
        let token_file = dir.join("token");
        std::fs::write(&token_file, TOKEN).expect("token file");
        let config = dir.join("alertmanager.yml");
        std::fs::write(
            &config,
            format!(
                "route:\n  receiver: dr\n  group_by: ['alertname', 'node']\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1s\n\
                 receivers:\n- name: dr\n  webhook_configs:\n  - url: http://127.0.0.1:{webhook_port}/alertmanager\n    send_resolved: true\n\
                 \x20   http_config:\n      authorization:\n        credentials_file: {}\n",
                token_file.display()
            ),
        )
        .expect("config");
        let addr = free_port();
        let log = dir.join("alertmanager.log");
        let child = Command::new(ALERTMANAGER)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .arg("--log.level=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start alertmanager");
        Alertmanager { child, addr, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn ready(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("alertmanager exited ({status}):\n{}", self.log());
            }
            if tokio::net::TcpStream::connect(self.addr).await.is_ok()
                && request(self.addr, "GET", "/-/ready", &[], b"").await.status == 200
            {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "alertmanager not ready:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `POST /api/v2/alerts` with one alert.
    async fn post(&self, labels: &[(&str, &str)], starts_at: &str, ends_at: &str) {
        let labels: std::collections::BTreeMap<_, _> = labels.iter().copied().collect();
        let body = serde_json::json!([{
            "labels": labels, "annotations": {"summary": "test"},
            "startsAt": starts_at, "endsAt": ends_at, "generatorURL": "http://prometheus.test/graph",
        }]);
        let reply = request(self.addr, "POST", "/api/v2/alerts", &["Content-Type: application/json"], body.to_string().as_bytes()).await;
        assert_eq!(reply.status, 200, "alertmanager refused the alert: {reply:?}");
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

fn rfc3339(offset_seconds: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(offset_seconds)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_alertmanager_starts_one_run_per_firing_alert_and_nothing_on_repeats_resolves_or_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = dir.path().join("alerts");
    let mut options = ServerOptions::new(&journal, rules());
    options.token = Some(TOKEN);
    let server = options.start().await;
    let port = server.addr.port();
    let mut am = Alertmanager::start(dir.path(), port);
    am.ready().await;
    let limit = Duration::from_secs(30);

    // Fired → exactly one start, with the params substituted.
    let w1: &[(&str, &str)] = &[("alertname", "NodeDown"), ("node", "w1")];
    let w1_start = rfc3339(-60);
    am.post(w1, &w1_start, &rfc3339(3600)).await;
    let starter = server.starter.clone();
    wait_for("the first start", limit, || async { !starter.starts().is_empty() }).await;
    let first = starter.starts()[0].clone();
    assert_eq!(first.params.get("node").map(String::as_str), Some("w1"));
    assert_eq!(first.params.get("why").map(String::as_str), Some("alert-NodeDown"));

    // Posted again, and re-sent by the repeat interval → the webhook is called
    // again (duplicates seen), still one start.
    am.post(w1, &w1_start, &rfc3339(3600)).await;
    wait_for("three repeated notifications", limit, || async { server.count("duplicate") >= 3 }).await;
    assert_eq!(starter.starts().len(), 1, "{:?}", starter.starts());

    // Resolved (endsAt in the past) → a resolved notification, nothing new.
    am.post(w1, &w1_start, &rfc3339(-1)).await;
    wait_for("the resolved notification", limit, || async { server.count("resolved-ignored") >= 1 }).await;
    assert_eq!(starter.starts().len(), 1);

    // A different alert → its own run.
    let w2: &[(&str, &str)] = &[("alertname", "NodeDown"), ("node", "w2")];
    let w2_start = rfc3339(-30);
    am.post(w2, &w2_start, &rfc3339(3600)).await;
    wait_for("the second start", limit, || async { starter.starts().len() == 2 }).await;
    let second = starter.starts()[1].clone();
    assert_eq!(second.params.get("node").map(String::as_str), Some("w2"));
    assert_ne!(second.id, first.id);
    let duplicates = server.count("duplicate");
    wait_for("repeats of the second alert", limit, || async { server.count("duplicate") >= duplicates + 2 }).await;
    assert_eq!(starter.starts().len(), 2);

    // The daemon restarts (same port, same journal, a fresh process state
    // where no run is open) while w2 still fires: repeats start nothing.
    server.stop().await;
    let mut options = ServerOptions::new(&journal, rules());
    options.token = Some(TOKEN);
    options.port = port;
    let restarted = options.start().await;
    wait_for("repeats reaching the restarted daemon", limit, || async { restarted.count("duplicate") >= 2 }).await;
    assert!(restarted.starter.starts().is_empty(), "{:?}", restarted.starter.starts());
    assert_eq!(restarted.count("started"), 0);
    assert_eq!(restarted.count("start-failed") + restarted.count("refused") + restarted.count("no-rule"), 0);
    // Alertmanager delivered with the token: no 401 in its log.
    let log = am.log();
    assert!(!log.contains("401"), "alertmanager saw a 401:\n{log}");
    restarted.stop().await;
}

#[tokio::test]
async fn a_journal_that_cannot_be_written_answers_500_and_starts_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = dir.path().join("alerts");
    let server = ServerOptions::new(&journal, rules()).start().await;
    // The journal directory disappears under the daemon (a broken disk, say).
    std::fs::remove_dir_all(&journal).expect("remove journal");
    let reply = post_json(server.addr, "/alertmanager", None, &webhook(&[("firing", "fp1", T0, NODE_DOWN)])).await;
    assert_eq!(reply.status, 500, "{reply:?}");
    assert!(reply.body.contains("alert journal"), "{reply:?}");
    assert!(server.starter.starts().is_empty(), "a run started without its dedup record");
    server.stop().await;
}

#[tokio::test]
async fn stopping_closes_idle_keep_alive_connections_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerOptions::new(dir.path(), rules()).start().await;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.expect("connect");
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: dr\r\n\r\n").await.expect("request");
    let mut buf = [0u8; 256];
    let n = stream.read(&mut buf).await.expect("answer");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&buf[..n]));
    // The connection stays open (keep-alive); stopping must not wait for the client.
    let stopping = tokio::time::Instant::now();
    server.stop().await;
    assert!(stopping.elapsed() < Duration::from_secs(3), "stop took {:?}", stopping.elapsed());
    let n = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await.expect("closed").unwrap_or(0);
    assert_eq!(n, 0, "the idle connection was not closed");
}

#[tokio::test]
async fn alerts_that_would_start_the_same_recovery_join_its_open_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerOptions::new(dir.path(), rules()).start().await;
    // Two alerts (two fingerprints) for one node: the same workflow with the same parameters.
    let first = outcomes(&post_json(server.addr, "/alertmanager", None, &webhook(&[("firing", "fp1", T0, NODE_DOWN)])).await);
    assert_eq!(first[0].0, "started");
    let other: &[(&str, &str)] = &[("alertname", "NodeDown"), ("node", "w1"), ("severity", "ticket")];
    let second = outcomes(&post_json(server.addr, "/alertmanager", None, &webhook(&[("firing", "fp2", T0, other)])).await);
    assert_eq!(second, vec![("duplicate".to_owned(), first[0].1.clone())], "one recovery for one node");
    assert_eq!(server.starter.starts().len(), 1);
    // Another node: its own run.
    let w2: &[(&str, &str)] = &[("alertname", "NodeDown"), ("node", "w2")];
    let third = outcomes(&post_json(server.addr, "/alertmanager", None, &webhook(&[("firing", "fp3", T0, w2)])).await);
    assert_eq!(third[0].0, "started");
    // Once the first run ended, the same recovery starts again for a new alert.
    server.starter.close(server.starter.starts()[0].id);
    let later = outcomes(&post_json(server.addr, "/alertmanager", None, &webhook(&[("firing", "fp4", T0, NODE_DOWN)])).await);
    assert_eq!(later[0].0, "started");
    assert_eq!(server.starter.starts().len(), 3);
    server.stop().await;
}
