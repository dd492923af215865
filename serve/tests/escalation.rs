//! Escalation end to end against local sinks: level routing, recorded once
//! and sent once, a crash between send and "sent" (resent with the same
//! identity), retries after a failing receiver, mail through a real SMTP
//! server, and secrets kept out of errors, logs and the outbox.

mod escalation_support;

use std::time::Duration;

use dr_serve::escalate::{self, send, Backoff, Escalator, Notification, NotificationKind};
use dr_serve::outbox::Outbox;
use dr_state::{OperatorWait, StepState};
use dr_workflows::config::Escalation;
use escalation_support::*;
use tokio_util::sync::CancellationToken;

fn fast() -> Backoff {
    Backoff { initial: Duration::from_millis(20), max: Duration::from_millis(200) }
}

/// Starts an escalator; cancel the token to stop it.
fn start(outbox: &Outbox, escalation: &Escalation) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let token = CancellationToken::new();
    let escalator = Escalator::new(outbox.clone(), escalation.clone()).with_backoff(fast());
    let task = tokio::spawn(escalator.run(token.clone()));
    (token, task)
}

async fn stop((token, task): (CancellationToken, tokio::task::JoinHandle<()>)) {
    token.cancel();
    task.await.expect("escalator task");
}

fn record_all(outbox: &Outbox, notes: &[Notification]) -> Vec<bool> {
    notes.iter().map(|n| outbox.record(n).expect("record")).collect()
}

fn texts(requests: &[Request]) -> Vec<String> {
    requests.iter().map(|r| r.body["text"].as_str().unwrap_or_default().to_owned()).collect()
}

#[tokio::test]
async fn a_level_four_at_risk_reaches_the_level_four_routes_and_not_level_one() {
    let dir = tempfile::tempdir().unwrap();
    let (ops, oncall, pager) = (HttpSink::start().await, HttpSink::start().await, HttpSink::start().await);
    let escalation = Escalation {
        routes: vec![
            slack("ops", &[1], secret_file(dir.path(), "ops-url", &ops.url("/ops"))),
            slack("oncall", &[4], secret_file(dir.path(), "oncall-url", &oncall.url("/oncall"))),
            pagerduty("pager", &[4], secret_file(dir.path(), "pd-key", "RK4"), pager.url("/v2/enqueue")),
        ],
    };
    let outbox = Outbox::open(dir.path().join("outbox")).unwrap();
    let escalator = start(&outbox, &escalation);

    let level4 = run(4, 4, vec![StepState::Pending]);
    let notes = escalate::due(&level4, &rto(true), 1_700_000_050_000);
    assert_eq!(notes.len(), 2, "started and at risk: {notes:?}");
    assert_eq!(record_all(&outbox, &notes), [true, true]);
    // A level-1 run, so that the level-1 route is known to work.
    let level1 = run(1, 1, vec![StepState::Pending]);
    assert_eq!(record_all(&outbox, &escalate::due(&level1, &rto(false), 1_700_000_050_000)), [true]);

    let at_oncall = texts(&oncall.wait_for(2).await);
    let at_pager = pager.wait_for(2).await;
    ops.wait_for(1).await;
    eventually("the outbox to empty", || outbox.pending_count() == 0).await;
    stop(escalator).await;

    assert_eq!(at_oncall.iter().filter(|t| t.contains("RTO at risk")).count(), 1, "{at_oncall:?}");
    let risk = at_pager.iter().find(|r| r.body["payload"]["class"] == "at-risk").expect("at risk paged");
    assert_eq!(risk.body["routing_key"], "RK4");
    assert_eq!(risk.body["event_action"], "trigger");
    assert_eq!(risk.body["payload"]["severity"], "critical");
    assert_eq!(risk.body["dedup_key"], format!("dr-{}", level4.id));
    let at_ops = texts(&ops.requests());
    assert_eq!(at_ops.len(), 1, "level 1 route told of the level 4 run: {at_ops:?}");
    assert!(at_ops[0].contains(&level1.id.to_string()) && !at_ops[0].contains("at risk"), "{at_ops:?}");
    assert_eq!(oncall.requests().len(), 2, "the level-1 run reached a level-4 route");
}

#[tokio::test]
async fn the_same_state_recorded_twice_and_after_a_restart_is_sent_once() {
    let dir = tempfile::tempdir().unwrap();
    let sink = HttpSink::start().await;
    let escalation = Escalation { routes: vec![slack("chat", &[2], secret_file(dir.path(), "url", &sink.url("/hook")))] };
    let outbox_dir = dir.path().join("outbox");
    let outbox = Outbox::open(&outbox_dir).unwrap();
    let escalator = start(&outbox, &escalation);

    let gate = StepState::AwaitingOperator(OperatorWait::Gate { prompt: "drain node-2?".into() });
    let mut paused = run(2, 7, vec![gate]);
    paused.status = dr_state::RunStatus::Paused;
    let notes = escalate::due(&paused, &rto(false), 1_700_000_010_000);
    assert_eq!(record_all(&outbox, &notes), [true, true]);
    let later = escalate::due(&paused, &rto(false), 1_700_000_020_000);
    assert_eq!(record_all(&outbox, &later), [false, false], "a later tick of the same state is not new");
    let texts_now = texts(&sink.wait_for(2).await);
    eventually("the outbox to empty", || outbox.pending_count() == 0).await;
    stop(escalator).await;
    let approve = format!("dr approve {} step-0", paused.id);
    assert!(texts_now.iter().any(|t| t.contains(&approve)), "no approve command in {texts_now:?}");

    // A new process sees the same state: nothing is recorded or sent again.
    let outbox = Outbox::open(&outbox_dir).unwrap();
    assert_eq!(record_all(&outbox, &notes), [false, false]);
    let escalator = start(&outbox, &escalation);
    // A marker notification behind them: once it arrived, anything owed before it would have too.
    let marker = run(2, 8, vec![]);
    assert_eq!(record_all(&outbox, &escalate::due(&marker, &rto(false), 0)), [true]);
    let all = sink.wait_for(3).await;
    eventually("the outbox to empty", || outbox.pending_count() == 0).await;
    stop(escalator).await;
    assert_eq!(all.len(), 3, "{:?}", texts(&all));
    assert!(texts(&all)[2].contains(&marker.id.to_string()));
}

#[tokio::test]
async fn a_crash_between_send_and_sent_resends_once_with_the_same_dedup_key() {
    let dir = tempfile::tempdir().unwrap();
    let sink = HttpSink::start().await;
    let escalation = Escalation {
        routes: vec![pagerduty("pager", &[3], secret_file(dir.path(), "key", "RK3"), sink.url("/v2/enqueue"))],
    };
    let outbox_dir = dir.path().join("outbox");
    let outbox = Outbox::open(&outbox_dir).unwrap();
    let (_token, task) = start(&outbox, &escalation);
    sink.hold();
    let level3 = run(3, 3, vec![StepState::Pending]);
    let notes = escalate::due(&level3, &rto(false), 0);
    assert_eq!(record_all(&outbox, &notes), [true]);

    // The receiver has it; the process dies before recording "sent".
    sink.wait_for(1).await;
    task.abort();
    assert!(task.await.expect_err("aborted").is_cancelled());
    drop(outbox);
    sink.release();

    let outbox = Outbox::open(&outbox_dir).unwrap();
    assert_eq!(outbox.pending_count(), 1, "the unconfirmed notification is still owed");
    assert!(!outbox.is_delivered(&notes[0].key, "pager"));
    let escalator = start(&outbox, &escalation);
    let got = sink.wait_for(2).await;
    eventually("the outbox to empty", || outbox.pending_count() == 0).await;
    stop(escalator).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].body["dedup_key"], got[1].body["dedup_key"]);
    assert_eq!(got[0].body["dedup_key"], format!("dr-{}", level3.id));
    assert_eq!(got[0].body["payload"]["custom_details"]["notification"], notes[0].key.as_str());
    assert_eq!(got[0].body, got[1].body, "the resend is the same event");

    // Once confirmed, a third process sends it no more.
    let outbox = Outbox::open(&outbox_dir).unwrap();
    assert_eq!(outbox.pending_count(), 0);
    let escalator = start(&outbox, &escalation);
    let marker = run(3, 30, vec![]);
    record_all(&outbox, &escalate::due(&marker, &rto(false), 0));
    let got = sink.wait_for(3).await;
    eventually("the outbox to empty", || outbox.pending_count() == 0).await;
    stop(escalator).await;
    assert_eq!(got.len(), 3);
    assert_eq!(got[2].body["dedup_key"], format!("dr-{}", marker.id));
}

#[tokio::test]
async fn a_failing_route_is_retried_and_never_makes_a_working_one_resend() {
    let dir = tempfile::tempdir().unwrap();
    let (flaky, steady) = (HttpSink::start().await, HttpSink::start().await);
    flaky.fail_next(2, 500);
    let escalation = Escalation {
        routes: vec![
            slack("flaky", &[1], secret_file(dir.path(), "flaky-url", &flaky.url("/f"))),
            slack("steady", &[1], secret_file(dir.path(), "steady-url", &steady.url("/s"))),
        ],
    };
    let outbox = Outbox::open(dir.path().join("outbox")).unwrap();
    let escalator = start(&outbox, &escalation);
    let level1 = run(1, 11, vec![]);
    let notes = escalate::due(&level1, &rto(false), 0);
    record_all(&outbox, &notes);

    let tries = flaky.wait_for(3).await;
    eventually("the outbox to empty", || outbox.pending_count() == 0).await;
    stop(escalator).await;
    assert_eq!(tries.len(), 3, "two 500s, then accepted");
    assert!(tries.iter().all(|r| r.body == tries[0].body));
    assert_eq!(steady.requests().len(), 1, "the working route was sent to once");
}

#[tokio::test]
async fn mail_goes_through_a_real_smtp_server_with_the_key_as_message_id() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start(dir.path()).await;
    let escalation = Escalation { routes: vec![email("mail", &[4], smtp.port)] };
    let outbox = Outbox::open(dir.path().join("outbox")).unwrap();
    let escalator = start(&outbox, &escalation);
    let interrupted = StepState::AwaitingOperator(OperatorWait::Interrupted { reason: "dr was killed".into() });
    let mut paused = run(4, 44, vec![interrupted]);
    paused.status = dr_state::RunStatus::Paused;
    paused.steps[0].attempts = 1;
    let notes = escalate::due(&paused, &rto(false), 0);
    assert!(matches!(notes[1].kind, NotificationKind::Waiting { .. }));
    record_all(&outbox, &notes);

    // Unfolded headers, quoted-printable soft breaks joined.
    let mails: Vec<String> = smtp.wait_for(2).await.iter().map(|m| m.replace("=\n", "").replace("\n ", " ")).collect();
    eventually("the outbox to empty", || outbox.pending_count() == 0).await;
    stop(escalator).await;
    let waiting_id = send::message_id(&notes[1].key, "bastion.example.org");
    let started_id = send::message_id(&notes[0].key, "bastion.example.org");
    let mail = mails.iter().find(|m| m.contains(&format!("Message-ID: {waiting_id}"))).expect("waiting mail");
    assert!(mail.contains(&format!("In-Reply-To: {started_id}")), "{mail}");
    assert!(mail.contains("X-RcptTo: oncall@example.org"), "{mail}");
    assert!(mail.contains("waits for an operator at step-0"), "{mail}");
    assert!(mail.contains(&format!("dr approve {} step-0", paused.id)), "{mail}");
    assert!(mail.contains(&format!("dr skip {} step-0 --reason", paused.id)), "{mail}");
    assert!(mails.iter().any(|m| m.contains(&format!("Message-ID: {started_id}"))), "{mails:?}");
}

#[tokio::test]
async fn secrets_never_reach_errors_logs_or_the_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let logs = Logs::default();
    let _capture = logs.capture();
    let hook = HttpSink::start().await;
    hook.fail_next(10_000, 500);
    let hook_secret = "T000-HOOK-SECRET";
    let key_secret = "RK-ROUTING-SECRET";
    let pw_secret = "PW-SMTP-SECRET";
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut mail = email("mail", &[2], closed);
    mail.username = Some("dr".into());
    mail.password_file = Some(secret_file(dir.path(), "pw", pw_secret));
    let escalation = Escalation {
        routes: vec![
            slack("hook", &[2], secret_file(dir.path(), "hook-url", &hook.url(&format!("/services/{hook_secret}")))),
            pagerduty(
                "pager",
                &[2],
                secret_file(dir.path(), "pd-key", key_secret),
                format!("http://127.0.0.1:{closed}/v2/enqueue?token={key_secret}"),
            ),
            slack("bad-url", &[2], secret_file(dir.path(), "bad-url", &format!("not a url {hook_secret}"))),
            mail,
        ],
    };
    let secrets = [hook_secret, key_secret, pw_secret];
    let level2 = run(2, 22, vec![]);
    let note = escalate::due(&level2, &rto(false), 0).remove(0);

    // Each sender's own error.
    for route in &escalation.routes {
        let error = send::deliver(route, &note).await.expect_err("nothing accepts it");
        assert_eq!(error.is_retryable(), route.name != "bad-url", "{error}");
        let text = format!("{error} / {error:?}");
        assert!(text.contains(&route.name), "{text}");
        for secret in secrets {
            assert!(!text.contains(secret), "route {}: {secret} in {text}", route.name);
        }
    }
    assert_eq!(hook.requests()[0].path, format!("/services/{hook_secret}"), "the URL is read from its file");

    // The escalator's logs and the outbox, after a few rounds of retries.
    let outbox = Outbox::open(dir.path().join("outbox")).unwrap();
    let escalator = start(&outbox, &escalation);
    outbox.record(&note).unwrap();
    hook.wait_for(3).await;
    eventually("each route to fail twice", || {
        let text = logs.text();
        escalation.routes.iter().all(|r| text.matches(&format!("route {}:", r.name)).count() >= 2)
    })
    .await;
    stop(escalator).await;
    let text = logs.text();
    assert!(text.contains("HTTP 500"), "{text}");
    for secret in secrets {
        assert!(!text.contains(secret), "{secret} logged: {text}");
        for (path, bytes) in all_bytes(&dir.path().join("outbox")) {
            assert!(!String::from_utf8_lossy(&bytes).contains(secret), "{secret} in {}", path.display());
        }
    }
    assert_eq!(outbox.pending_count(), 1, "still owed");
}
