//! Presentation: JSON objects, tables and the live view. Data goes to
//! stdout; the live view and hints go to stderr.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Local, SecondsFormat, Utc};
use dr_orchestrator::definition::Plan;
use dr_orchestrator::runner::human_ms;
use dr_orchestrator::{rto, Clock, Observer, Rto};
use dr_state::{AfterFailure, Ending, Event, EventRecord, Millis, OperatorWait, RunRecord, RunStatus, RunSummary, SkipCause, StepRecord, StepState};
use serde_json::{json, Value};

pub fn rfc3339(ms: Millis) -> Value {
    match DateTime::<Utc>::from_timestamp_millis(ms) {
        Some(t) => Value::String(t.to_rfc3339_opts(SecondsFormat::Millis, true)),
        None => Value::Null,
    }
}

fn opt_time(ms: Option<Millis>) -> Value {
    ms.map_or(Value::Null, rfc3339)
}

pub fn local_time(ms: Millis) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.with_timezone(&Local).format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "?".into())
}

fn clock_time(ms: Millis) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.with_timezone(&Local).format("%H:%M:%S").to_string())
        .unwrap_or_else(|| "?".into())
}

fn rto_json(rto: &Rto) -> Value {
    json!({
        "target_secs": rto.target_secs,
        "elapsed_secs": rto.elapsed_secs,
        "projected_secs": rto.projected_secs,
        "at_risk": rto.at_risk,
    })
}

/// A step's output for JSON: its summary and its value (parsed back from the record).
fn output_json(output: &dr_state::StepOutput) -> Value {
    json!({
        "summary": output.summary,
        "value": serde_json::from_str::<Value>(&output.value).unwrap_or(Value::Null),
    })
}

fn step_json(s: &StepRecord) -> Value {
    let (error, output, skip) = match &s.state {
        StepState::BackingOff { error, .. } | StepState::Failed { error, .. } => (Some(error.as_str()), Value::Null, Value::Null),
        StepState::Succeeded { output, .. } => (None, output_json(output), Value::Null),
        StepState::Skipped { reason, cause, .. } => {
            let by = if *cause == SkipCause::Operator { "operator" } else { "condition" };
            (None, Value::Null, json!({ "reason": reason, "by": by }))
        }
        _ => (None, Value::Null, Value::Null),
    };
    json!({
        "id": s.id,
        "status": s.state.as_str(),
        "attempts": s.attempts,
        "started_at": opt_time(s.first_started_at),
        "finished_at": opt_time(s.state.finished_at()),
        "waiting_for": waiting_for(s),
        "error": error,
        "output": output,
        "skipped": skip,
        "approved": s.approval.as_ref().map(|a| json!({ "by": a.by, "at": rfc3339(a.at) })),
    })
}

/// Whether a run is stopped: recorded as running, but no process drives it
/// (its process was stopped or killed; `dr resume` continues it).
pub fn is_stopped(status: RunStatus, driven: bool) -> bool {
    status == RunStatus::Running && !driven
}

/// The `dr status --json` object. `driven`: a process drives the run now.
pub fn status_json(run: &RunRecord, rto: &Rto, driven: bool) -> Value {
    let steps: Vec<Value> = run.steps.iter().map(step_json).collect();
    let stopped = is_stopped(run.status, driven);
    json!({
        "id": run.id.to_string(),
        "workflow": run.workflow,
        "level": run.level,
        "status": run.status.as_str(),
        "driven": driven && !run.status.is_terminal(),
        "stopped_since": if stopped { rfc3339(run.updated_at) } else { Value::Null },
        "reason": run.reason,
        "ending": run.ending.as_ref().map(Ending::as_str),
        "gates_preapproved_by": run.gates_preapproved,
        "incident_at": rfc3339(run.incident_at),
        "started_at": rfc3339(run.started_at),
        "finished_at": opt_time(run.finished_at),
        "params": run.params,
        "definition_hash": run.definition_hash,
        "config_digest": run.config_digest,
        "rto": rto_json(rto),
        "steps": steps,
    })
}

fn waiting_for(s: &StepRecord) -> Value {
    match &s.state {
        StepState::AwaitingOperator(OperatorWait::Gate { prompt }) => json!({ "confirmation": prompt }),
        StepState::AwaitingOperator(OperatorWait::Interrupted { reason }) => json!({ "operator": reason }),
        StepState::Failed { tolerated: false, .. } => json!({ "operator": "out of retries" }),
        StepState::BackingOff { until, .. } => json!({ "retry_at": rfc3339(*until) }),
        _ => Value::Null,
    }
}

/// A `dr list --json` element: the status object without steps.
/// `rfc3339` as text, formatted by hand: a list of 10,000 runs formats 40,000 of them.
fn time_text(ms: Millis) -> Option<String> {
    if !(0..=253_402_300_799_999).contains(&ms) {
        return DateTime::<Utc>::from_timestamp_millis(ms).map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true));
    }
    let (secs, millis) = (ms / 1000, ms % 1000);
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    Some(format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z", rest / 3600, rest % 3600 / 60, rest % 60))
}

/// A run's summary as `dr list --json` prints it, serialized straight from
/// the summary (a list of 10,000 runs builds no intermediate JSON values).
/// Fields in alphabetical order, as a JSON object of `serde_json` prints them.
#[derive(serde::Serialize)]
pub struct SummaryRow<'a> {
    driven: bool,
    finished_at: Option<String>,
    id: String,
    incident_at: Option<String>,
    level: u8,
    reason: &'a Option<String>,
    rto: RtoRow,
    started_at: Option<String>,
    status: &'static str,
    steps_done: u32,
    steps_total: u32,
    stopped_since: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    store: Option<&'a str>,
    workflow: &'a str,
}

#[derive(serde::Serialize)]
struct RtoRow {
    at_risk: bool,
    elapsed_secs: f64,
    projected_secs: f64,
    target_secs: u64,
}

impl<'a> SummaryRow<'a> {
    pub fn new(s: &'a RunSummary, rto: &Rto, driven: bool, store: Option<&'a str>) -> Self {
        let stopped = is_stopped(s.status, driven);
        SummaryRow {
            driven: driven && !s.status.is_terminal(),
            finished_at: s.finished_at.and_then(time_text),
            id: s.id.to_string(),
            incident_at: time_text(s.incident_at),
            level: s.level,
            reason: &s.reason,
            rto: RtoRow { at_risk: rto.at_risk, elapsed_secs: rto.elapsed_secs, projected_secs: rto.projected_secs, target_secs: rto.target_secs },
            started_at: time_text(s.started_at),
            status: s.status.as_str(),
            steps_done: s.steps_done,
            steps_total: s.steps_total,
            stopped_since: if stopped { time_text(s.updated_at) } else { None },
            store,
            workflow: &s.workflow,
        }
    }
}

/// The RTO line: how long since the incident against the target and, while
/// the run is not over, the projected total — saying plainly when nothing
/// moves it (paused for an operator, or stopped) while the clock runs on.
pub fn rto_line(rto: &Rto, status: RunStatus, incident_at: Millis, driven: bool) -> String {
    let ms = |secs: f64| human_ms((secs * 1000.0) as u64);
    let (elapsed, target) = (ms(rto.elapsed_secs), ms(rto.target_secs as f64));
    match status {
        RunStatus::Succeeded => {
            let verdict = if rto.at_risk { "MISSED TARGET" } else { "within target" };
            format!("recovered in {elapsed} of {target} target  [{verdict}]")
        }
        RunStatus::Failed | RunStatus::Cancelled => {
            format!("{} after {elapsed} ({target} target)  [NOT RECOVERED]", status.as_str())
        }
        RunStatus::Paused | RunStatus::Running => {
            let finish = clock_time(incident_at.saturating_add((rto.projected_secs * 1000.0) as i64));
            let margin = rto.target_secs as f64 - rto.projected_secs;
            let margin = if margin >= 0.0 { format!("{} to spare", ms(margin)) } else { format!("{} over", ms(-margin)) };
            let verdict = if rto.at_risk { "AT RISK" } else { "on track" };
            let projected = format!("projected {} (done ~{finish}, {margin})", ms(rto.projected_secs));
            if status == RunStatus::Paused {
                format!("paused — the clock runs, waiting for you: elapsed {elapsed} of {target} target, {projected} if it goes on now  [{verdict}]")
            } else if !driven {
                format!("stopped — the clock runs, nothing drives the run: elapsed {elapsed} of {target} target, {projected} if resumed now  [{verdict}]")
            } else {
                format!("elapsed {elapsed} of {target} target, {projected}  [{verdict}]")
            }
        }
    }
}

/// Histories this process has read, by run: what step durations are counted from.
static HISTORIES: Mutex<Vec<(dr_state::RunId, Vec<EventRecord>)>> = Mutex::new(Vec::new());

/// Remembers a run's history (replacing what was known of it).
pub fn know_history(id: dr_state::RunId, events: Vec<EventRecord>) {
    let mut all = HISTORIES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    all.retain(|(known, _)| *known != id);
    all.push((id, events));
}

/// Adds new events of a run whose history is known (the live view).
pub fn add_history(id: dr_state::RunId, events: &[EventRecord]) {
    let mut all = HISTORIES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, known)) = all.iter_mut().find(|(known, _)| *known == id) {
        let next = known.last().map_or(0, |e| e.seq + 1);
        known.extend(events.iter().filter(|e| e.seq >= next).cloned());
    }
}

/// Time each step spent in its attempts (ms), from the history: from each
/// start (or probe) to the event that ends it. Waits — for an operator, a
/// backoff, a gate — do not count. An attempt lost with its process ends at
/// the last event that process wrote; one still going counts until `until`.
pub fn attempt_ms(events: &[EventRecord], until: Millis) -> std::collections::BTreeMap<dr_state::StepId, u64> {
    let mut total: std::collections::BTreeMap<dr_state::StepId, u64> = std::collections::BTreeMap::new();
    let mut open: Vec<(dr_state::StepId, Millis)> = Vec::new();
    let mut last_at = events.first().map_or(until, |e| e.at);
    let close = |total: &mut std::collections::BTreeMap<dr_state::StepId, u64>, step: dr_state::StepId, from: Millis, to: Millis| {
        *total.entry(step).or_insert(0) += u64::try_from(to - from).unwrap_or(0);
    };
    for e in events {
        match &e.event {
            Event::StepStarted { step, .. } | Event::StepProbing { step, .. } => {
                open.retain(|(s, _)| s != step);
                open.push((step.clone(), e.at));
            }
            Event::StepSucceeded { step, .. }
            | Event::StepFailed { step, .. }
            | Event::StepCancelled { step, .. }
            | Event::StepInterrupted { step, .. }
            | Event::StepProbed { step, .. } => {
                if let Some(i) = open.iter().position(|(s, _)| s == step) {
                    let (step, from) = open.swap_remove(i);
                    close(&mut total, step, from, e.at);
                }
            }
            Event::ProcessStopped { .. } => open.drain(..).for_each(|(step, from)| close(&mut total, step, from, e.at)),
            Event::RunResumed { .. } => open.drain(..).for_each(|(step, from)| close(&mut total, step, from, last_at)),
            // Written with a resume, before its RunResumed (or by anyone, any time: a report field):
            // not a sign of the old process's life.
            Event::CancelRequested { .. } | Event::DefinitionReplaced { .. } | Event::ReportFieldSet { .. } => continue,
            _ => {}
        }
        last_at = e.at;
    }
    for (step, from) in open {
        close(&mut total, step, from, until);
    }
    total
}

fn step_duration(s: &StepRecord, now: Millis, attempts: Option<&std::collections::BTreeMap<dr_state::StepId, u64>>) -> String {
    let running = s.state.is_active() && s.state.finished_at().is_none();
    if let Some(ms) = attempts.and_then(|a| a.get(&s.id)) {
        return format!("{}{}", human_ms(*ms), if running { "…" } else { "" });
    }
    match (s.first_started_at, s.state.finished_at(), &s.state) {
        _ if attempts.is_some() => String::new(),
        (Some(a), Some(b), _) => human_ms(u64::try_from(b - a).unwrap_or(0)),
        (Some(a), None, state) if state.is_active() => format!("{}…", human_ms(u64::try_from(now - a).unwrap_or(0))),
        _ => String::new(),
    }
}

fn step_note(s: &StepRecord, now: Millis) -> String {
    match &s.state {
        StepState::AwaitingOperator(OperatorWait::Gate { prompt }) => format!("confirm: {prompt}"),
        StepState::AwaitingOperator(OperatorWait::Interrupted { reason }) => format!("needs operator: {reason}"),
        StepState::BackingOff { until, error } => format!("retry in {}: {error}", human_ms(u64::try_from(until - now).unwrap_or(0))),
        StepState::Failed { error, tolerated: true, .. } => format!("failed (tolerated): {error}"),
        StepState::Failed { error, .. } => error.clone(),
        StepState::Skipped { reason, cause: SkipCause::Operator, .. } => format!("skipped by the operator: {reason}"),
        StepState::Skipped { reason, .. } => format!("skipped: {reason}"),
        StepState::Probing { .. } => "probing whether the interrupted attempt took effect".into(),
        StepState::Succeeded { output, .. } => {
            let approved = s.approval.as_ref().map(|a| format!(" (approved by {})", a.by)).unwrap_or_default();
            format!("{}{approved}", output.summary.lines().next().unwrap_or_default())
        }
        _ => String::new(),
    }
}

fn icon(state: &StepState) -> &'static str {
    match state {
        StepState::Pending => " ",
        StepState::Running { .. } | StepState::Probing { .. } => ">",
        StepState::BackingOff { .. } | StepState::AwaitingOperator(_) => "~",
        StepState::Succeeded { .. } => "+",
        StepState::Failed { tolerated: true, .. } => "x",
        StepState::Failed { .. } => "!",
        StepState::Skipped { .. } | StepState::Cancelled { .. } => "-",
    }
}

/// The human status view. `driven`: a process drives the run now; a run
/// recorded as running that nobody drives is shown as stopped, its clocks
/// frozen at its last event.
pub fn status_text(run: &RunRecord, rto: &Rto, now: Millis, driven: bool) -> String {
    let stopped = is_stopped(run.status, driven);
    let now = if stopped { run.updated_at } else { now };
    let mut out = String::new();
    let done = run.steps.iter().filter(|s| s.state.is_settled()).count();
    let _ = writeln!(out, "Run       {}", run.id);
    let _ = writeln!(out, "Workflow  {} (level {})", run.workflow, run.level);
    let reason = run.reason.as_deref().map(|r| format!(" — {r}")).unwrap_or_default();
    let ending = match (&run.ending, run.status.is_terminal()) {
        (Some(ending), false) => format!(" — ending ({}), cleaning up", ending.as_str()),
        _ => String::new(),
    };
    if stopped {
        let _ = writeln!(
            out,
            "Status    stopped ({done}/{} steps done) — nothing drives it since {}; continue with: dr resume {}",
            run.steps.len(),
            local_time(run.updated_at),
            short(run.id)
        );
    } else {
        let _ = writeln!(out, "Status    {} ({done}/{} steps done){reason}{ending}", run.status.as_str(), run.steps.len());
    }
    let finished = run.finished_at.map(local_time).unwrap_or_else(|| "—".into());
    let _ = writeln!(out, "Incident  {}   started {}   finished {finished}", local_time(run.incident_at), local_time(run.started_at));
    let _ = writeln!(out, "RTO       {}", rto_line(rto, run.status, run.incident_at, driven));
    let _ = writeln!(out);
    let width = run.steps.iter().map(|s| s.id.as_str().len()).max().unwrap_or(4).max(4);
    // Durations count the attempts (from the history, when this process read it), not the waits.
    let attempts = HISTORIES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .find(|(id, _)| *id == run.id)
        .map(|(_, events)| attempt_ms(events, now));
    let _ = writeln!(out, "  {:width$}  {:14}  {:>8}  {:>9}  NOTE", "STEP", "STATUS", "ATTEMPTS", "DURATION");
    for s in &run.steps {
        // A step shown running in a stopped run is not running: its process is gone.
        let interrupted = stopped && matches!(s.state, StepState::Running { .. } | StepState::Probing { .. });
        let (icon, state, note) = if interrupted {
            ("~", "interrupted", "its process stopped; dr resume decides by its resume class".to_owned())
        } else {
            (icon(&s.state), s.state.as_str(), step_note(s, now))
        };
        let line = format!("{} {:width$}  {:14}  {:>8}  {:>9}  {}", icon, s.id.as_str(), state, s.attempts, step_duration(s, now, attempts.as_ref()), note);
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

/// What the operator can do next, for a run that is not moving by itself.
pub fn next_steps(run: &RunRecord) -> Vec<String> {
    let short = short(run.id);
    let mut hints = Vec::new();
    match run.status {
        RunStatus::Paused => {
            for s in &run.steps {
                if let StepState::AwaitingOperator(OperatorWait::Gate { .. }) = s.state {
                    hints.push(format!("dr approve {short} {}    # confirmed: run it", s.id));
                    hints.push(format!("dr cancel {short}    # do not: stop the run (its cleanup steps run)", ));
                } else if let StepState::AwaitingOperator(OperatorWait::Interrupted { .. }) = s.state {
                    hints.push(format!("dr approve {short} {}    # run it again", s.id));
                    hints.push(format!("dr skip {short} {} --reason \"...\"    # it is done, go on", s.id));
                } else if let StepState::Failed { tolerated: false, .. } = s.state {
                    hints.push(format!("dr retry {short} {}    # try again now", s.id));
                    hints.push(format!("dr skip {short} {} --reason \"...\"    # done by hand, go on", s.id));
                }
            }
        }
        RunStatus::Running => hints.push(format!("dr resume {short}")),
        _ => {}
    }
    hints
}

/// Every run id of the store this process reads (sorted): what a short id
/// must tell apart.
static KNOWN_IDS: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// The store whose ids `short` reads the first time it needs them (a
/// command that prints no short id never reads the ids of 10,000 runs).
static ID_SOURCE: Mutex<Option<std::sync::Arc<dyn dr_state::Store>>> = Mutex::new(None);

/// Adds run ids to those a short id must tell apart.
pub fn know_ids(ids: impl IntoIterator<Item = dr_state::RunId>) {
    let mut known = KNOWN_IDS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    known.extend(ids.into_iter().map(|id| id.to_string()));
    known.sort();
    known.dedup();
}

/// The store's run ids are to be told apart too, read when first needed.
pub fn know_store(store: std::sync::Arc<dyn dr_state::Store>) {
    *ID_SOURCE.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(store);
}

/// The shortest prefix of `id` (at least 8 characters) that no other run of
/// the store shares — the same in `dr list`, the hints and every message, and
/// always accepted back as an ID.
pub fn short(id: dr_state::RunId) -> String {
    let source = ID_SOURCE.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    if let Some(store) = source {
        if let Ok(ids) = store.run_ids() {
            know_ids(ids);
        }
    }
    let full = id.to_string();
    let mut known = KNOWN_IDS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let i = match known.binary_search(&full) {
        Ok(i) => i,
        Err(i) => {
            known.insert(i, full);
            i
        }
    };
    let lo = i.saturating_sub(1);
    let hi = (i + 2).min(known.len());
    short_ids(&known[lo..hi]).swap_remove(i - lo)
}

/// Shortest prefix (at least 8 characters) that tells each id apart from its
/// neighbours, for ids sorted ascending.
pub fn short_ids(ids: &[String]) -> Vec<String> {
    let common = |a: &str, b: &str| a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    (0..ids.len())
        .map(|i| {
            let mut len = 8;
            if i > 0 {
                len = len.max(common(&ids[i], &ids[i - 1]) + 1);
            }
            if i + 1 < ids.len() {
                len = len.max(common(&ids[i], &ids[i + 1]) + 1);
            }
            ids[i].chars().take(len).collect()
        })
        .collect()
}

/// The `dr list` table, newest first. `driving`: the runs a process drives now.
pub fn list_text(rows: &[(RunSummary, Rto)], driving: &[dr_state::RunId]) -> String {
    let shorts: Vec<String> = rows.iter().map(|(s, _)| short(s.id)).collect();
    let idw = shorts.iter().map(String::len).max().unwrap_or(2).max(2);
    let ww = rows.iter().map(|(s, _)| s.workflow.len()).max().unwrap_or(8).max(8);
    let mut out = format!("{:idw$}  {:ww$}  LVL  {:9}  STEPS  {:19}  {:>9}  RTO\n", "ID", "WORKFLOW", "STATUS", "STARTED", "ELAPSED");
    for (i, (s, rto)) in rows.iter().enumerate().rev() {
        let verdict = match (s.status, rto.at_risk) {
            (RunStatus::Failed | RunStatus::Cancelled, _) => "not recovered",
            (_, false) => "ok",
            (RunStatus::Succeeded, true) => "missed",
            (_, true) => "AT RISK",
        };
        let status = if is_stopped(s.status, driving.contains(&s.id)) { "stopped" } else { s.status.as_str() };
        let _ = writeln!(
            out,
            "{:idw$}  {:ww$}  {:>3}  {:9}  {:>5}  {:19}  {:>9}  {verdict}",
            shorts[i],
            s.workflow,
            s.level,
            status,
            format!("{}/{}", s.steps_done, s.steps_total),
            local_time(s.started_at),
            human_ms((rto.elapsed_secs * 1000.0) as u64),
        );
    }
    out
}

/// A workflow's step graph as a Mermaid flowchart: one node per step (its
/// action and resume class), an edge per dependency labelled with the
/// condition it carries; gates as hexagons, cleanup steps dashed, tolerated
/// failures marked.
pub fn mermaid(def: &dr_orchestrator::WorkflowDef) -> String {
    let node_id = |id: &str| format!("s_{}", id.replace(|c: char| !c.is_ascii_alphanumeric(), "_"));
    let quote = |text: &str| text.replace('"', "#quot;");
    let mut out = format!("---\ntitle: {} (level {})\n---\nflowchart TD\n", def.name, def.level);
    for s in &def.steps {
        let mut label = format!("{}<br/><small>{} · {}</small>", s.id, s.action.kind(), s.resume.as_str());
        if s.tolerate_failure {
            label.push_str("<br/><small>failure tolerated</small>");
        }
        let label = quote(&label);
        let shape = match (&s.gate, s.cleanup) {
            (Some(_), _) => format!("{{{{\"{label}<br/><small>asks first</small>\"}}}}"),
            (None, true) => format!("[/\"{label}<br/><small>cleanup</small>\"/]"),
            (None, false) => format!("[\"{label}\"]"),
        };
        let _ = writeln!(out, "    {}{shape}", node_id(s.id.as_str()));
    }
    for s in &def.steps {
        let when = s.condition.as_ref().map(|c| format!("|\"{}\"|", quote(&c.describe()))).unwrap_or_default();
        for dep in &s.depends_on {
            let _ = writeln!(out, "    {} -->{when} {}", node_id(dep.as_str()), node_id(s.id.as_str()));
        }
    }
    let cleanup: Vec<String> = def.steps.iter().filter(|s| s.cleanup).map(|s| node_id(s.id.as_str())).collect();
    if !cleanup.is_empty() {
        let _ = writeln!(out, "    classDef cleanup stroke-dasharray: 5 5\n    class {} cleanup", cleanup.join(","));
    }
    out
}

/// One history event as JSON: `seq`, `at`, `kind`, then its fields.
pub fn event_json(e: &EventRecord) -> Value {
    let mut obj = serde_json::Map::new();
    obj.insert("seq".into(), json!(e.seq));
    obj.insert("at".into(), rfc3339(e.at));
    obj.insert("kind".into(), json!(e.event.kind()));
    match &e.event {
        Event::RunCreated { header } => {
            obj.insert("workflow".into(), json!(header.workflow));
            obj.insert("level".into(), json!(header.level));
            obj.insert("params".into(), json!(header.params));
            obj.insert("definition_hash".into(), json!(header.definition_hash));
            obj.insert("config_digest".into(), json!(header.config_digest));
            obj.insert("steps".into(), json!(header.steps));
        }
        Event::StepSucceeded { step, attempt, duration_ms, output } => {
            obj.insert("step".into(), json!(step));
            obj.insert("attempt".into(), json!(attempt));
            obj.insert("duration_ms".into(), json!(duration_ms));
            obj.insert("output".into(), output_json(output));
        }
        Event::StepProbed { step, attempt, output } => {
            obj.insert("step".into(), json!(step));
            obj.insert("attempt".into(), json!(attempt));
            obj.insert("took_effect".into(), json!(output.is_some()));
            obj.insert("output".into(), output.as_ref().map_or(Value::Null, output_json));
        }
        other => {
            if let Ok(Value::Object(outer)) = serde_json::to_value(other) {
                for (_, inner) in outer {
                    if let Value::Object(fields) = inner {
                        for (k, v) in fields {
                            let v = if k.ends_with("_at") || k == "deadline" { v.as_i64().map_or(v, rfc3339) } else { v };
                            obj.insert(k, v);
                        }
                    }
                }
            }
        }
    }
    Value::Object(obj)
}

/// One history event as a line.
pub fn event_line(e: &EventRecord) -> String {
    let t = local_time(e.at);
    let detail = match &e.event {
        Event::RunCreated { header } => format!("run created: {} (level {}) {:?}", header.workflow, header.level, header.params),
        Event::GatesPreApproved { by } => format!("every gate approved in advance by {by} (dr start --yes)"),
        Event::RunResumed { epoch, by } => format!("taken up by {by} (incarnation {epoch})"),
        Event::DefinitionReplaced { definition_hash, .. } => format!("continuing under changed definition {definition_hash}"),
        Event::StepStarted { step, attempt, .. } => format!("{step} started (attempt {attempt})"),
        Event::StepSucceeded { step, attempt, duration_ms, output } => {
            let summary = output.summary.lines().next().unwrap_or_default();
            format!("{step} succeeded in {} (attempt {attempt}): {summary}", human_ms(*duration_ms))
        }
        Event::StepFailed { step, attempt, error, then } => match then {
            AfterFailure::RetryAt(t) => format!("{step} attempt {attempt} failed: {error}; retry at {}", clock_time(*t)),
            AfterFailure::Pause => format!("{step} attempt {attempt} failed: {error}; no attempt left"),
            AfterFailure::Tolerate => format!("{step} attempt {attempt} failed: {error}; no attempt left, tolerated: the run goes on"),
        },
        Event::StepInterrupted { step, attempt } => format!("{step} attempt {attempt} was interrupted; it runs again"),
        Event::StepProbing { step, attempt, .. } => format!("{step}: probing whether attempt {attempt} took effect"),
        Event::StepProbed { step, attempt, output: Some(_) } => format!("{step}: probe: attempt {attempt} had taken effect"),
        Event::StepProbed { step, attempt, output: None } => format!("{step}: probe: attempt {attempt} had not taken effect; it runs again"),
        Event::StepAwaitingOperator { step, reason } => format!("{step} waits for an operator: {reason}"),
        Event::StepGated { step, prompt } => format!("{step} waits for confirmation: {prompt}"),
        Event::StepSkipped { step, reason } => format!("{step} skipped: {reason}"),
        Event::StepCancelled { step, attempt } => format!("{step} attempt {attempt} cancelled"),
        Event::OperatorApproved { step, by } => format!("{by} approved {step}"),
        Event::OperatorSkipped { step, reason, by } => format!("{by} skipped {step}: {reason}"),
        Event::RetryRequested { step, by } => format!("{by} asked to retry {step}"),
        Event::CancelRequested { reason, by } => format!("{by} asked to cancel: {reason}"),
        Event::ProcessStopped { signal } => format!("process stopped ({signal}); the run is resumable"),
        Event::RunEnding { ending } => match ending {
            Ending::Succeeded => "every main step done; cleanup steps run".into(),
            Ending::Failed { reason } => format!("main steps failed ({reason}); cleanup steps run"),
            Ending::Cancelled { reason } => format!("cancelled ({reason}); cleanup steps run"),
        },
        Event::RunPaused { reason } => format!("run paused: {reason}"),
        Event::RunSucceeded => "run succeeded".into(),
        Event::RunFailed { reason } => format!("run failed: {reason}"),
        Event::RunCancelled { reason } => format!("run cancelled: {reason}"),
        Event::ReportFieldSet { field, value, by } => format!("{by} set the report's {field}: {value}"),
    };
    format!("{:>4}  {t}  {detail}", e.seq)
}

/// The live view of a run while `dr start`/`dr resume` drive it: a redrawn
/// block on a terminal, one line per event otherwise (both on stderr).
pub struct LiveView {
    state: Mutex<LiveState>,
    tty: bool,
    plan: Plan,
    expected: Vec<u64>,
    clock: Arc<dyn Clock>,
    /// The run this view shows (the process may drive others it adopted).
    run_id: dr_state::RunId,
}

struct LiveState {
    run: Option<RunRecord>,
    lines_drawn: usize,
}

impl LiveView {
    pub fn new(plan: Plan, expected: Vec<u64>, clock: Arc<dyn Clock>, run_id: dr_state::RunId) -> Arc<Self> {
        Arc::new(LiveView {
            run_id,
            state: Mutex::new(LiveState { run: None, lines_drawn: 0 }),
            tty: std::io::stderr().is_terminal() && std::env::var_os("TERM").is_some_and(|t| t != "dumb"),
            plan,
            expected,
            clock,
        })
    }

    pub fn is_tty(&self) -> bool {
        self.tty
    }

    /// Redraws the block (terminal only): called on every transition and every second.
    pub fn redraw(&self) {
        if !self.tty {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(run) = state.run.clone() else { return };
        let now = self.clock.now_ms();
        let rto = rto::compute(&run, Some(&self.plan), &self.expected, now);
        let mut text = status_text(&run, &rto, now, true);
        // Keep the block within the terminal: show at most 20 steps around the active ones.
        let lines: Vec<&str> = text.lines().collect();
        if lines.len() > 28 {
            let first_active = run.steps.iter().position(|s| !s.state.is_settled()).unwrap_or(0);
            let start = first_active.saturating_sub(5).min(run.steps.len().saturating_sub(20));
            let head = &lines[..7];
            let body: Vec<&str> = lines[7..].iter().skip(start).take(20).copied().collect();
            text = format!("{}\n{}\n  … {} steps in all\n", head.join("\n"), body.join("\n"), run.steps.len());
        }
        let mut block = String::new();
        if state.lines_drawn > 0 {
            let _ = write!(block, "\x1b[{}A\x1b[J", state.lines_drawn);
        }
        block.push_str(&text);
        crate::errout::write(block.into_bytes());
        state.lines_drawn = text.lines().count();
    }
}

impl Observer for LiveView {
    fn on_transition(&self, run: &RunRecord, events: &[EventRecord]) {
        if run.id != self.run_id {
            // A run adopted from another shell (dr retry/cancel/…): its own terminal follows it.
            return;
        }
        add_history(run.id, events);
        {
            let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            state.run = Some(run.clone());
        }
        if self.tty {
            self.redraw();
        } else {
            let mut lines = String::new();
            for e in events {
                if matches!(e.event, Event::RunCreated { .. }) {
                    continue;
                }
                let _ = writeln!(lines, "{}", event_line(e));
            }
            if !lines.is_empty() {
                crate::errout::write(lines.into_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seq: u64, at: Millis, event: Event) -> EventRecord {
        EventRecord { seq, at, event }
    }

    #[test]
    fn attempt_time_counts_attempts_not_waits_nor_a_crash_outage() {
        let s = |id: &str| dr_state::StepId::from(id);
        let started = |seq, t, step: &str, attempt| at(seq, t, Event::StepStarted { step: s(step), attempt, epoch: 1, deadline: None });
        let events = vec![
            // step-1: 200 ms, a 5 s backoff, then 300 ms.
            started(1, 0, "step-1", 1),
            at(2, 200, Event::StepFailed { step: s("step-1"), attempt: 1, error: "x".into(), then: dr_state::AfterFailure::RetryAt(5_200) }),
            started(3, 5_200, "step-1", 2),
            at(4, 5_500, Event::StepSucceeded { step: s("step-1"), attempt: 2, duration_ms: 300, output: dr_state::StepOutput::default() }),
            // step-2 runs 1 s, then its process is SIGKILLed (no event); four hours later a cancel comes with the resume.
            started(5, 6_000, "step-2", 1),
            at(6, 7_000, Event::GatesPreApproved { by: "someone".into() }),
            at(7, 14_407_000, Event::CancelRequested { reason: "late".into(), by: "op".into() }),
            at(8, 14_407_000, Event::RunResumed { epoch: 2, by: "dr".into() }),
            // step-3 is still running at `until`.
            started(9, 14_408_000, "step-3", 1),
        ];
        let ms = attempt_ms(&events, 14_408_250);
        assert_eq!(ms[&s("step-1")], 500, "the backoff does not count");
        assert_eq!(ms[&s("step-2")], 1_000, "the attempt ends at the dead process's last event, not at the resume");
        assert_eq!(ms[&s("step-3")], 250, "a running attempt counts until now");
    }

    #[test]
    fn list_times_are_formatted_as_chrono_would() {
        for ms in [0, 1, 951_782_400_000, 1_795_000_000_123, 4_102_444_799_999, 253_402_300_799_999] {
            assert_eq!(time_text(ms), rfc3339(ms).as_str().map(str::to_owned), "{ms}");
        }
        assert_eq!(time_text(-1), rfc3339(-1).as_str().map(str::to_owned));
    }

    #[test]
    fn short_ids_tell_neighbours_apart() {
        let ids = vec!["0193aaaa-0001".to_owned(), "0193aaaa-0002".to_owned(), "0194bbbb-0000".to_owned()];
        assert_eq!(short_ids(&ids), vec!["0193aaaa-0001", "0193aaaa-0002", "0194bbbb"]);
    }
}
