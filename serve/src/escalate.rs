//! Escalation: which notifications a run calls for, who gets them, and the
//! loop that delivers them. It owns the notification model, the pure [`due`],
//! the level routing ([`routes_for`]) and the [`Escalator`]; the senders live
//! in `send.rs`, the durable record of what is owed and sent in
//! [`crate::outbox`]. It refuses to read the store or decide anything about a
//! run: the daemon feeds it snapshots.
//!
//! ## Flow
//! The daemon calls [`due`] on every transition and tick and [`Outbox::record`]s
//! each notification; recording is idempotent by the notification's key, which
//! depends only on the run's state (the same wait of the same step gives the
//! same key). The [`Escalator`] is woken by each new record and delivers it to
//! every route of the run's level ([`routes_for`], the configuration in force
//! when it is delivered), each route on its own: a route that fails is retried
//! with exponential backoff (1 s doubling to 5 min by default; a permanent
//! error — a 4xx, a bad URL, a missing secret file — waits the maximum at once,
//! since only an operator can fix it) without making a working route send again.
//! Deliveries go out one at a time, oldest first, each bounded by a timeout
//! (20 s HTTP, 30 s SMTP), so a dead receiver delays the others by at most that.
//!
//! ## What is guaranteed
//! - **Recorded before sent.** `record` returns once the notification is
//!   durable (fsynced file and directory); nothing is sent that was not.
//! - **Never lost once recorded.** A recorded notification stays pending for a
//!   route until that route accepted it *and* that was recorded durably; it is
//!   retried across failures, shutdowns and crashes, forever (capped backoff).
//! - **At least once; every repeat with the same identity.** A crash or
//!   shutdown between a route accepting a notification and its "sent" record
//!   makes the next process send it to that route again; so does a receiver
//!   that accepts it but answers after the timeout (or drops the connection),
//!   on each retry. Every copy carries the same identity: the same PagerDuty
//!   `dedup_key`, the same mail `Message-ID`, the same `ref:` line in the
//!   Slack text. Receivers that dedup (PagerDuty, mail clients by Message-ID)
//!   show it once; a Slack channel shows each copy.
//! - **Recorded at most once.** A key recorded before (pending or sent) is not
//!   recorded again, so a notification is never delivered anew because the
//!   daemon saw the same state twice or restarted. `Outbox::forget_run` drops a
//!   finished run's records (and so this protection: call it only for runs
//!   that will not change again).
//!
//! ## PagerDuty
//! One incident per run: every event carries `dedup_key = "dr-<run id>"`.
//! Started, waiting, at risk and failed `trigger` (the first opens the
//! incident, later ones are added to it); succeeded and cancelled `resolve`.
//! The notification's own key is in `custom_details.notification`.
//!
//! Secrets (webhook URLs, routing keys, SMTP passwords) are read from their
//! files at each send and appear in no error, log line or record.

pub mod send;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use dr_orchestrator::Rto;
use dr_state::{Millis, OperatorWait, RunId, RunRecord, RunStatus, StepRecord, StepState};
use dr_workflows::config::{Escalation, EscalationRoute};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::outbox::Outbox;

pub use send::SendError;

/// One message about a run, the same for every route it goes to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// Stable identity: the same run state gives the same key. Also the
    /// record's name in the outbox and the base of the mail `Message-ID`.
    pub key: String,
    pub run: RunId,
    pub workflow: String,
    /// The run's failure level (1-4): which routes are told.
    pub level: u8,
    pub kind: NotificationKind,
    /// One line (mail subject, PagerDuty summary).
    pub title: String,
    /// The body: what happened, the RTO, what to run next.
    pub text: String,
    /// When it was first due (ms since the Unix epoch).
    pub at_ms: Millis,
}

/// What a notification is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum NotificationKind {
    Started,
    /// A step waits for an operator; `commands` are the exact commands that
    /// move it on, the first being the usual one.
    Waiting { step: String, wait: WaitKind, commands: Vec<String> },
    /// The projection passed the target (once per run).
    AtRisk { projected_ms: u64, target_ms: u64 },
    /// The run ended; `elapsed_ms` against `target_ms` is the RTO outcome.
    Finished { status: RunStatus, elapsed_ms: u64, target_ms: u64 },
}

/// Why a step waits for an operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WaitKind {
    /// At its gate, before its first attempt.
    Gate,
    /// An attempt was lost with its process and may have taken effect.
    Interrupted,
    /// Out of retries.
    Failed,
}

impl WaitKind {
    fn as_str(self) -> &'static str {
        match self {
            WaitKind::Gate => "gate",
            WaitKind::Interrupted => "interrupted",
            WaitKind::Failed => "failed",
        }
    }
}

/// Every notification the run's current state calls for. Pure: the same
/// snapshot gives the same keys, so recording the result again and again is
/// harmless. Always "started"; one per step waiting for an operator (keyed
/// by step, kind of wait and attempt, so a later wait of the same step is a
/// new one); "at risk" when `rto` says so and the run has not ended;
/// "finished" once it has.
pub fn due(run: &RunRecord, rto: &Rto, now_ms: Millis) -> Vec<Notification> {
    let mut out = vec![started(run, rto)];
    if run.status.is_terminal() {
        out.push(finished(run, rto, now_ms));
        return out;
    }
    out.extend(run.steps.iter().filter_map(|step| waiting(run, rto, step, now_ms)));
    if rto.at_risk {
        out.push(at_risk(run, rto, now_ms));
    }
    out
}

/// The routes told about runs of `level`, in configuration order.
pub fn routes_for(level: u8, escalation: &Escalation) -> Vec<&EscalationRoute> {
    escalation.routes.iter().filter(|r| r.levels.contains(&level)).collect()
}

fn short(run: RunId) -> String {
    run.to_string().chars().take(8).collect()
}

fn secs_to_ms(secs: f64) -> u64 {
    // `as` saturates (and maps NaN to 0): a bad figure cannot panic.
    (secs * 1000.0).round().max(0.0) as u64
}

/// `1h 02m 03s`, `4m 05s`, `6s`.
pub fn human(ms: u64) -> String {
    let s = ms / 1000;
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    if h > 0 {
        format!("{h}h {m:02}m {s:02}s")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

fn rto_line(rto: &Rto) -> String {
    format!(
        "RTO: {} elapsed, projected {} against a target of {}{}.",
        human(secs_to_ms(rto.elapsed_secs)),
        human(secs_to_ms(rto.projected_secs)),
        human(rto.target_secs.saturating_mul(1000)),
        if rto.at_risk { " (AT RISK)" } else { "" }
    )
}

fn head(run: &RunRecord) -> String {
    let mut text = format!("Run {} of workflow {} (level {}).", run.id, run.workflow, run.level);
    if !run.params.is_empty() {
        let params: Vec<String> = run.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = write!(text, "\nParameters: {}.", params.join(" "));
    }
    text
}

fn note(run: &RunRecord, key: String, kind: NotificationKind, title: String, text: String, at_ms: Millis) -> Notification {
    Notification { key, run: run.id, workflow: run.workflow.clone(), level: run.level, kind, title, text, at_ms }
}

fn started(run: &RunRecord, rto: &Rto) -> Notification {
    let title = format!("[dr] level {} recovery started: {} ({})", run.level, run.workflow, short(run.id));
    let text = format!("{}\n{}\nFollow it: dr status {}", head(run), rto_line(rto), run.id);
    note(run, format!("{}:started", run.id), NotificationKind::Started, title, text, run.started_at)
}

fn waiting(run: &RunRecord, rto: &Rto, step: &StepRecord, now_ms: Millis) -> Option<Notification> {
    let (id, name) = (run.id, &step.id);
    let (wait, why, commands) = match &step.state {
        StepState::AwaitingOperator(OperatorWait::Gate { prompt }) => (
            WaitKind::Gate,
            format!("Step {name} waits for confirmation: {prompt}"),
            vec![format!("dr approve {id} {name}"), format!("dr cancel {id}")],
        ),
        StepState::AwaitingOperator(OperatorWait::Interrupted { reason }) => (
            WaitKind::Interrupted,
            format!("Step {name} was interrupted and may have taken effect: {reason}"),
            vec![format!("dr approve {id} {name}"), format!("dr skip {id} {name} --reason \"...\"")],
        ),
        StepState::Failed { error, tolerated: false, .. } => (
            WaitKind::Failed,
            format!("Step {name} failed after {} attempt(s): {error}", step.attempts),
            vec![format!("dr retry {id} {name}"), format!("dr skip {id} {name} --reason \"...\"")],
        ),
        _ => return None,
    };
    let meaning = match wait {
        WaitKind::Gate => ["to confirm and run it", "not to: stop the run (its cleanup steps run)"],
        WaitKind::Interrupted => ["to run it again", "when it is done: go on"],
        WaitKind::Failed => ["to try again now", "when it was done by hand: go on"],
    };
    let mut text = format!("{}\n{why}\n{}\nWhat to run:", head(run), rto_line(rto));
    for (command, meaning) in commands.iter().zip(meaning) {
        let _ = write!(text, "\n  {command}    # {meaning}");
    }
    let title = format!(
        "[dr] level {} run {} ({}) waits for an operator at {name}",
        run.level,
        run.workflow,
        short(id)
    );
    let key = format!("{id}:wait:{}:{}:{}", token(name.as_str(), 64), wait.as_str(), step.attempts);
    let kind = NotificationKind::Waiting { step: name.to_string(), wait, commands };
    Some(note(run, key, kind, title, text, now_ms))
}

fn at_risk(run: &RunRecord, rto: &Rto, now_ms: Millis) -> Notification {
    let projected_ms = secs_to_ms(rto.projected_secs);
    let target_ms = rto.target_secs.saturating_mul(1000);
    let title = format!(
        "[dr] RTO at risk: level {} run {} ({}) projected {} > target {}",
        run.level,
        run.workflow,
        short(run.id),
        human(projected_ms),
        human(target_ms)
    );
    let text = format!("{}\n{}\nFollow it: dr status {}", head(run), rto_line(rto), run.id);
    note(run, format!("{}:at-risk", run.id), NotificationKind::AtRisk { projected_ms, target_ms }, title, text, now_ms)
}

fn finished(run: &RunRecord, rto: &Rto, now_ms: Millis) -> Notification {
    let elapsed_ms = secs_to_ms(rto.elapsed_secs);
    let target_ms = rto.target_secs.saturating_mul(1000);
    let outcome = if elapsed_ms <= target_ms { "within" } else { "MISSED" };
    let title = format!(
        "[dr] level {} run {} ({}) {}: RTO {} ({} of {})",
        run.level,
        run.workflow,
        short(run.id),
        run.status.as_str(),
        outcome,
        human(elapsed_ms),
        human(target_ms)
    );
    let mut text = format!("{}\nThe run {}.", head(run), run.status.as_str());
    if let Some(reason) = &run.reason {
        let _ = write!(text, " {reason}");
    }
    let _ = write!(
        text,
        "\nRTO {outcome} target: {} elapsed against {}.\nHistory: dr history {}",
        human(elapsed_ms),
        human(target_ms),
        run.id
    );
    let kind = NotificationKind::Finished { status: run.status, elapsed_ms, target_ms };
    note(run, format!("{}:finished", run.id), kind, title, text, run.finished_at.unwrap_or(now_ms))
}

/// `s` as a key part: itself when it is short and only `[A-Za-z0-9_-]`, else a
/// cleaned prefix and a hash of the whole, so distinct inputs stay distinct.
/// Never contains `.` or `:` (the outbox's separators).
pub(crate) fn token(s: &str, max: usize) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if !s.is_empty() && s.len() <= max && s.chars().all(plain) {
        return s.to_owned();
    }
    let cleaned: String = s.chars().map(|c| if plain(c) { c } else { '_' }).take(max.saturating_sub(17)).collect();
    let hash = Sha256::digest(s.as_bytes());
    let hex: String = hash.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{cleaned}-{hex}")
}

/// Delays between attempts of one delivery: `initial`, doubling, capped at `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { initial: Duration::from_secs(1), max: Duration::from_secs(300) }
    }
}

impl Backoff {
    /// The delay after the `failures`-th failure in a row (1-based).
    pub fn delay(&self, failures: u32) -> Duration {
        let factor = 1u32.checked_shl(failures.saturating_sub(1)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// The delivery loop: sends what the outbox holds to the routes of its level.
pub struct Escalator {
    outbox: Outbox,
    escalation: Escalation,
    backoff: Backoff,
}

/// A delivery that failed: how often in a row, and when to try again.
struct Retry {
    failures: u32,
    next: Instant,
}

impl Escalator {
    /// Delivers `outbox`'s notifications to the routes of `escalation`.
    pub fn new(outbox: Outbox, escalation: Escalation) -> Self {
        Escalator { outbox, escalation, backoff: Backoff::default() }
    }

    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Runs until `shutdown`: sends every pending delivery, retries failures
    /// with backoff, wakes at once when something is recorded. A send cut by
    /// the shutdown is not marked sent, so the next process sends it again.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut retries: HashMap<(String, String), Retry> = HashMap::new();
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let mut next_wake: Option<Instant> = None;
            let pending = self.outbox.pending();
            // Forgotten or finished notifications need no retry state.
            retries.retain(|(key, _), _| pending.iter().any(|n| &n.key == key));
            for note in pending {
                let routes = routes_for(note.level, &self.escalation);
                for route in routes {
                    if self.outbox.is_delivered(&note.key, &route.name) {
                        continue;
                    }
                    let id = (note.key.clone(), route.name.clone());
                    if let Some(retry) = retries.get(&id) {
                        if retry.next > Instant::now() {
                            next_wake = Some(next_wake.map_or(retry.next, |w| w.min(retry.next)));
                            continue;
                        }
                    }
                    let sent = tokio::select! {
                        () = shutdown.cancelled() => return,
                        sent = send::deliver(route, &note) => sent,
                    };
                    let result = match sent {
                        Ok(()) => self.mark(Mark::Delivered(note.key.clone(), route.name.clone())).await,
                        Err(e) => Err((e.to_string(), e.is_retryable())),
                    };
                    match result {
                        Ok(()) => {
                            retries.remove(&id);
                            tracing::info!(route = %route.name, notification = %note.key, "notification delivered");
                        }
                        Err((msg, retryable)) => {
                            let failures = retries.get(&id).map_or(0, |r| r.failures).saturating_add(1);
                            let delay = if retryable { self.backoff.delay(failures) } else { self.backoff.max };
                            let next = Instant::now() + delay;
                            tracing::warn!(
                                route = %route.name,
                                notification = %note.key,
                                failures,
                                retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                                "notification not delivered: {msg}"
                            );
                            retries.insert(id, Retry { failures, next });
                            next_wake = Some(next_wake.map_or(next, |w| w.min(next)));
                        }
                    }
                }
                if self.routes_done(&note) {
                    if let Err((msg, _)) = self.mark(Mark::Sent(note.key.clone())).await {
                        tracing::warn!(notification = %note.key, "notification delivered but not closed: {msg}");
                        let next = Instant::now() + self.backoff.initial;
                        next_wake = Some(next_wake.map_or(next, |w| w.min(next)));
                    }
                }
            }
            let sleep = async {
                match next_wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.outbox.woken() => {}
                () = sleep => {}
            }
        }
    }

    fn routes_done(&self, note: &Notification) -> bool {
        routes_for(note.level, &self.escalation).iter().all(|r| self.outbox.is_delivered(&note.key, &r.name))
    }

    /// Records a delivery (or a notification's end) durably, off the runtime threads.
    async fn mark(&self, mark: Mark) -> Result<(), (String, bool)> {
        let outbox = self.outbox.clone();
        let done = tokio::task::spawn_blocking(move || match &mark {
            Mark::Delivered(key, route) => outbox.mark_delivered(key, route),
            Mark::Sent(key) => outbox.mark_sent(key),
        })
        .await;
        match done {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err((format!("cannot record it in the outbox: {e}"), true)),
            Err(_) => Err(("the outbox task failed".to_owned(), true)),
        }
    }
}

enum Mark {
    Delivered(String, String),
    Sent(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use dr_state::{RunHeader, StepOutput};

    fn run(states: Vec<StepState>) -> RunRecord {
        let header = RunHeader {
            id: RunId::new_v7(1_700_000_000_000, 42),
            workflow: "etcd-recovery".into(),
            definition_hash: String::new(),
            definition_steps: vec![],
            config_digest: None,
            config_path: None,
            params: [("node".to_owned(), "cp1".to_owned())].into_iter().collect(),
            level: 4,
            target_secs: 3600,
            incident_at: 1_700_000_000_000,
            steps: (0..states.len()).map(|i| format!("s{i}").into()).collect(),
        };
        let mut r = RunRecord::new(&header, 1_700_000_001_000);
        for (s, st) in r.steps.iter_mut().zip(states) {
            s.state = st;
        }
        r
    }

    fn rto(at_risk: bool) -> Rto {
        Rto { target_secs: 3600, elapsed_secs: 600.0, projected_secs: if at_risk { 4000.0 } else { 1200.0 }, at_risk }
    }

    fn keys(notes: &[Notification]) -> Vec<String> {
        notes.iter().map(|n| n.key.split_once(':').map_or(String::new(), |(_, k)| k.to_owned())).collect()
    }

    fn gate() -> StepState {
        StepState::AwaitingOperator(OperatorWait::Gate { prompt: "restore etcd from snapshot abc?".into() })
    }

    #[test]
    fn a_running_run_is_only_started_and_the_keys_are_stable() {
        let r = run(vec![StepState::Pending]);
        let first = due(&r, &rto(false), 5);
        assert_eq!(keys(&first), ["started"]);
        let again = due(&r, &rto(false), 99_999);
        assert_eq!(first.iter().map(|n| &n.key).collect::<Vec<_>>(), again.iter().map(|n| &n.key).collect::<Vec<_>>());
        assert_eq!(first[0].at_ms, r.started_at, "started is dated by the run, not the tick");
        assert!(first[0].key.starts_with(&r.id.to_string()));
        assert_eq!(first[0].level, 4);
    }

    #[test]
    fn a_gate_asks_for_the_exact_approve_command() {
        let mut r = run(vec![StepState::Pending, gate()]);
        r.status = RunStatus::Paused;
        let notes = due(&r, &rto(false), 5);
        assert_eq!(keys(&notes), ["started", "wait:s1:gate:0"]);
        let approve = format!("dr approve {} s1", r.id);
        match &notes[1].kind {
            NotificationKind::Waiting { step, wait, commands } => {
                assert_eq!(step, "s1");
                assert_eq!(*wait, WaitKind::Gate);
                assert_eq!(commands[0], approve);
            }
            other => panic!("not a wait: {other:?}"),
        }
        assert!(notes[1].text.contains(&approve), "{}", notes[1].text);
        assert!(notes[1].text.contains("restore etcd from snapshot abc?"));
    }

    #[test]
    fn each_wait_of_a_step_is_its_own_notification() {
        let interrupted = StepState::AwaitingOperator(OperatorWait::Interrupted { reason: "process died".into() });
        let mut r = run(vec![interrupted]);
        r.steps[0].attempts = 1;
        let first = due(&r, &rto(false), 5);
        assert_eq!(keys(&first), ["started", "wait:s0:interrupted:1"]);
        assert!(first[1].text.contains(&format!("dr skip {} s0 --reason", r.id)));
        r.steps[0].state = StepState::Failed { at: 9, error: "exit 1".into(), tolerated: false };
        r.steps[0].attempts = 3;
        let second = due(&r, &rto(false), 5);
        assert_eq!(keys(&second), ["started", "wait:s0:failed:3"]);
        assert!(second[1].text.contains(&format!("dr retry {} s0", r.id)));
        r.steps[0].state = StepState::Failed { at: 9, error: "exit 1".into(), tolerated: true };
        assert_eq!(keys(&due(&r, &rto(false), 5)), ["started"], "a tolerated failure waits for nobody");
    }

    #[test]
    fn at_risk_is_due_once_while_the_run_is_open() {
        let r = run(vec![StepState::Pending]);
        let notes = due(&r, &rto(true), 5);
        assert_eq!(keys(&notes), ["started", "at-risk"]);
        assert_eq!(notes[1].kind, NotificationKind::AtRisk { projected_ms: 4_000_000, target_ms: 3_600_000 });
        assert_eq!(keys(&due(&r, &rto(true), 10_000)), ["started", "at-risk"]);
    }

    #[test]
    fn a_finished_run_reports_its_rto_outcome_and_no_more_waits_or_risk() {
        let output = StepOutput::default();
        let mut r = run(vec![StepState::Succeeded { at: 7, output }, gate()]);
        r.status = RunStatus::Failed;
        r.reason = Some("step s1 failed".into());
        r.finished_at = Some(1_700_000_900_000);
        let mut figures = rto(true);
        figures.elapsed_secs = 4000.0;
        let notes = due(&r, &figures, 5);
        assert_eq!(keys(&notes), ["started", "finished"]);
        assert_eq!(
            notes[1].kind,
            NotificationKind::Finished { status: RunStatus::Failed, elapsed_ms: 4_000_000, target_ms: 3_600_000 }
        );
        assert!(notes[1].title.contains("MISSED"), "{}", notes[1].title);
        assert!(notes[1].text.contains("step s1 failed"));
        assert_eq!(notes[1].at_ms, 1_700_000_900_000);
    }

    #[test]
    fn odd_step_names_make_distinct_plain_keys() {
        let a = token("etcd.restore", 64);
        let b = token("etcd:restore", 64);
        assert_ne!(a, b);
        for t in [&a, &b] {
            assert!(t.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'), "{t}");
        }
        assert_eq!(token("drain", 64), "drain");
        assert!(token(&"x".repeat(300), 64).len() <= 64);
    }

    #[test]
    fn routes_are_chosen_by_level() {
        let route = |name: &str, levels: Vec<u8>| EscalationRoute {
            name: name.into(),
            kind: dr_workflows::config::RouteKind::Slack,
            levels,
            url_file: None,
            routing_key_file: None,
            events_url: None,
            smtp: None,
            tls: None,
            from: None,
            to: vec![],
            username: None,
            password_file: None,
        };
        let esc = Escalation { routes: vec![route("ops", vec![1, 2]), route("pager", vec![4]), route("all", vec![1, 2, 3, 4])] };
        let names = |level| routes_for(level, &esc).iter().map(|r| r.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(4), ["pager", "all"]);
        assert_eq!(names(1), ["ops", "all"]);
        assert!(names(5).is_empty());
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let b = Backoff::default();
        let secs: Vec<u64> = [1, 2, 3, 9, 10, 1000].iter().map(|&f| b.delay(f).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 256, 300, 300]);
    }

    #[test]
    fn durations_read_like_a_clock() {
        assert_eq!(human(6_000), "6s");
        assert_eq!(human(245_000), "4m 05s");
        assert_eq!(human(3_723_000), "1h 02m 03s");
    }
}
