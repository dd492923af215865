//! `dr report`, `dr stats`, `dr maturity`: the operator's record, read from
//! the runs' histories.
//!
//! Owns: the incident report of one run ([`Report`], built purely from the
//! run's snapshot and history by [`build`]) and its `--set` fields (recorded
//! as `ReportFieldSet` events through [`crate::client::Client::ask`], so the
//! report stays reproducible), its renderings (`text.rs`: Markdown in Japanese
//! or English, the guide's template; `html.rs`: one self-contained page with
//! the timeline chart), the statistics (`stats.rs`) and the maturity table
//! (`maturity.rs`). Refuses: anything that changes a run beyond those fields;
//! config values (only what the history recorded, already redacted, is shown).

mod html;
pub mod maturity;
pub mod stats;
mod text;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use dr_orchestrator::control::{Request, Response};
use dr_orchestrator::rto;
use dr_state::{AfterFailure, Event, EventRecord, Millis, RunRecord, RunStatus, StepState};
use dr_workflows::actions::snapshot::{ChosenSnapshot, SnapshotSource};
use serde::Serialize;

use crate::client::Client;

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Run id, a unique prefix of one, or @latest
    #[arg(default_value = "@latest")]
    pub id: String,
    /// ja or en [default: ja when LC_ALL, else LANG, starts with ja; else en]
    #[arg(long, value_name = "LANG")]
    pub lang: Option<String>,
    /// md (Markdown, the guide's template), html (one self-contained page with a timeline chart), json
    #[arg(long, value_name = "FORMAT", default_value = "md")]
    pub format: String,
    /// Write the report to FILE instead of stdout
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Fill a field only an operator knows: cause="…", impact="…", lessons="…" (repeatable). Recorded in the run's history with your user name; the report is not printed
    #[arg(long = "set", value_name = "FIELD=TEXT")]
    pub set: Vec<String>,
    /// Confirm an item of the post-recovery checklist that dr cannot check itself (services, data, backups, alerts, logs, report, improvements, drp), with an optional note: --confirm backups="nightly job ran at 02:00". Recorded with your user name; repeatable
    #[arg(long = "confirm", value_name = "ITEM[=NOTE]")]
    pub confirm: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Only incidents and drills detected on or after this day (YYYY-MM-DD, local time) [default: 365 days ago]
    #[arg(long, value_name = "DATE")]
    pub since: Option<String>,
    /// Count synthetic runs as incidents (each at the level of its `level` parameter); for tests and demos
    #[arg(long)]
    pub include_synthetic: bool,
    /// Print JSON on stdout instead of text (for scripts)
    #[arg(long)]
    pub json: bool,
}

/// The report's language.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    Ja,
    En,
}

impl Lang {
    /// `--lang`, else `LC_ALL`, else `LANG` (`ja…` → ja), else en. A bad `--lang` is a usage error.
    pub fn choose(flag: Option<&str>) -> anyhow::Result<Lang> {
        match flag.map(str::trim) {
            Some("ja") => Ok(Lang::Ja),
            Some("en") => Ok(Lang::En),
            Some(other) => Err(crate::usage(format!("--lang {other:?}: the languages are ja and en"))),
            None => {
                let env = ["LC_ALL", "LANG"].iter().find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()));
                Ok(if env.is_some_and(|v| v.starts_with("ja")) { Lang::Ja } else { Lang::En })
            }
        }
    }
}

/// One attempt (or probe) of a step, from the history.
#[derive(Clone, Debug, Serialize)]
pub struct Attempt {
    pub step: String,
    pub attempt: u32,
    pub probe: bool,
    pub started_at: Millis,
    pub ended_at: Option<Millis>,
    /// succeeded, failed, cancelled, interrupted, stopped, lost, took-effect, not-taken-effect, running
    pub outcome: &'static str,
    pub error: Option<String>,
    /// What followed a failure: retry, paused, tolerated.
    pub then: Option<&'static str>,
    pub summary: Option<String>,
}

/// How a step ended.
#[derive(Clone, Debug, Serialize)]
pub struct StepLine {
    pub id: String,
    pub state: &'static str,
    pub attempts: u32,
    /// Time spent in its attempts (waits for operators and backoffs not counted).
    pub busy_ms: u64,
    pub note: String,
}

/// An operator's decision.
#[derive(Clone, Debug, Serialize)]
pub struct Decision {
    pub at: Millis,
    pub by: String,
    /// approved, skipped, retry, cancel, preapproved
    pub what: &'static str,
    pub step: Option<String>,
    pub reason: Option<String>,
}

/// A field the operator filled, with who and when (the latest `--set` wins).
#[derive(Clone, Debug, Serialize)]
pub struct Field {
    pub value: String,
    pub by: String,
    pub at: Millis,
}

/// One item of the guide's post-recovery checklist, and what settles it.
#[derive(Clone, Debug, Serialize)]
pub struct ChecklistLine {
    pub id: &'static str,
    pub ja: &'static str,
    pub en: &'static str,
    /// Settled: evidence from the run, or an operator's confirmation.
    pub done: bool,
    /// What the run recorded for it (`step: summary`, or a report field).
    pub evidence: Vec<String>,
    /// `dr report ID --confirm ITEM[=NOTE]`: who, when, the note.
    pub confirmed: Option<Field>,
}

/// The backup (or live snapshot) a run restored: its age is the data lost.
#[derive(Clone, Debug, Serialize)]
pub struct Rpo {
    pub step: String,
    pub name: String,
    pub live: bool,
    pub age_secs: u64,
    pub rpo_secs: u64,
    pub within_rpo: bool,
}

/// One point of the RTO projection: at this moment, the run was expected to take this long in all.
#[derive(Clone, Debug, Serialize)]
pub struct Projection {
    pub at: Millis,
    pub projected_secs: f64,
}

/// The incident report of one run: everything its history says.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub run: String,
    pub workflow: String,
    pub level: u8,
    pub params: BTreeMap<String, String>,
    pub status: &'static str,
    pub reason: Option<String>,
    pub detected_at: Millis,
    pub started_at: Millis,
    /// When the first step started: recovery work began.
    pub work_started_at: Option<Millis>,
    /// When the main steps were over (cleanup steps may have run after).
    pub restored_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    /// The moment the report was made (the end of an open run's clock).
    pub as_of: Millis,
    pub target_secs: u64,
    /// From detection to the end (or to `as_of` while the run is open).
    pub actual_secs: u64,
    /// `Some` once the run has ended: whether it ended within the target (a failed run never meets it).
    pub rto_met: Option<bool>,
    /// target − actual: positive to spare, negative over.
    pub rto_margin_secs: i64,
    pub rpo: Option<Rpo>,
    pub steps: Vec<StepLine>,
    pub attempts: Vec<Attempt>,
    pub decisions: Vec<Decision>,
    /// The verification steps' (`verify…`) recorded summaries.
    pub verification: Vec<(String, String)>,
    pub cause: Option<Field>,
    pub impact: Option<Field>,
    pub lessons: Option<Field>,
    /// The guide's post-recovery checklist, each item with its evidence or confirmer.
    pub checklist: Vec<ChecklistLine>,
    pub projection: Vec<Projection>,
}

/// Builds the report of `run` from its history. `expected` are the steps'
/// expected durations for the projection (the definition's estimates), `deps`
/// their dependencies (`None`: taken as a chain). Pure: `now` is passed in.
pub fn build(run: &RunRecord, events: &[EventRecord], deps: Option<&[Vec<usize>]>, expected: &[u64], now: Millis) -> Report {
    let mut attempts: Vec<Attempt> = Vec::new();
    let mut decisions = Vec::new();
    let mut fields: BTreeMap<String, Field> = BTreeMap::new();
    let mut projection = Vec::new();
    let mut restored_at = None;
    let mut last_at = events.first().map_or(run.started_at, |e| e.at);
    let mut snapshot: Option<RunRecord> = None;
    let chain: Vec<Vec<usize>> = (0..run.steps.len()).map(|i| if i == 0 { vec![] } else { vec![i - 1] }).collect();
    let deps = deps.filter(|d| d.len() == run.steps.len()).unwrap_or(&chain);
    let close = |attempts: &mut Vec<Attempt>, step: &str, attempt: u32, probe: bool, at: Millis| -> Option<usize> {
        let i = attempts.iter().rposition(|a| a.step == step && a.attempt == attempt && a.probe == probe && a.ended_at.is_none())?;
        attempts[i].ended_at = Some(at);
        Some(i)
    };
    for e in events {
        let at = e.at;
        match &e.event {
            Event::StepStarted { step, attempt, .. } | Event::StepProbing { step, attempt, .. } => {
                let probe = matches!(e.event, Event::StepProbing { .. });
                // A probe follows a lost attempt: that attempt ended when its process was last heard of.
                if probe {
                    if let Some(i) = close(&mut attempts, step.as_str(), *attempt, false, last_at) {
                        attempts[i].outcome = "lost";
                    }
                }
                attempts.push(Attempt {
                    step: step.to_string(),
                    attempt: *attempt,
                    probe,
                    started_at: at,
                    ended_at: None,
                    outcome: "running",
                    error: None,
                    then: None,
                    summary: None,
                });
            }
            Event::StepSucceeded { step, attempt, output, .. } => {
                if let Some(i) = close(&mut attempts, step.as_str(), *attempt, false, at) {
                    attempts[i].outcome = "succeeded";
                    attempts[i].summary = Some(output.summary.clone());
                }
            }
            Event::StepFailed { step, attempt, error, then } => {
                if let Some(i) = close(&mut attempts, step.as_str(), *attempt, false, at) {
                    attempts[i].outcome = "failed";
                    attempts[i].error = Some(error.clone());
                    attempts[i].then = Some(match then {
                        AfterFailure::RetryAt(_) => "retry",
                        AfterFailure::Pause => "paused",
                        AfterFailure::Tolerate => "tolerated",
                    });
                }
            }
            Event::StepCancelled { step, attempt } => {
                let probe = attempts.iter().rev().find(|a| a.step == step.as_str() && a.ended_at.is_none()).is_some_and(|a| a.probe);
                if let Some(i) = close(&mut attempts, step.as_str(), *attempt, probe, at) {
                    attempts[i].outcome = "cancelled";
                }
            }
            Event::StepInterrupted { step, attempt } => {
                if let Some(i) = close(&mut attempts, step.as_str(), *attempt, false, at) {
                    attempts[i].outcome = "interrupted";
                }
            }
            Event::StepProbed { step, attempt, output } => {
                if let Some(i) = close(&mut attempts, step.as_str(), *attempt, true, at) {
                    attempts[i].outcome = if output.is_some() { "took-effect" } else { "not-taken-effect" };
                    attempts[i].summary = output.as_ref().map(|o| o.summary.clone());
                }
            }
            Event::ProcessStopped { .. } => {
                for a in attempts.iter_mut().filter(|a| a.ended_at.is_none()) {
                    a.ended_at = Some(at);
                    a.outcome = "stopped";
                }
            }
            Event::RunResumed { .. } => {
                for a in attempts.iter_mut().filter(|a| a.ended_at.is_none()) {
                    a.ended_at = Some(last_at);
                    a.outcome = "lost";
                }
            }
            Event::GatesPreApproved { by } => {
                decisions.push(Decision { at, by: by.clone(), what: "preapproved", step: None, reason: None });
            }
            Event::OperatorApproved { step, by } => {
                decisions.push(Decision { at, by: by.clone(), what: "approved", step: Some(step.to_string()), reason: None });
            }
            Event::OperatorSkipped { step, reason, by } => decisions.push(Decision {
                at,
                by: by.clone(),
                what: "skipped",
                step: Some(step.to_string()),
                reason: Some(reason.clone()),
            }),
            Event::RetryRequested { step, by } => {
                decisions.push(Decision { at, by: by.clone(), what: "retry", step: Some(step.to_string()), reason: None });
            }
            Event::CancelRequested { reason, by } => {
                decisions.push(Decision { at, by: by.clone(), what: "cancel", step: None, reason: Some(reason.clone()) });
            }
            Event::RunEnding { .. } => restored_at = restored_at.or(Some(at)),
            Event::RunSucceeded | Event::RunFailed { .. } | Event::RunCancelled { .. } => restored_at = restored_at.or(Some(at)),
            Event::ReportFieldSet { field, value, by } => {
                fields.insert(field.clone(), Field { value: value.clone(), by: by.clone(), at });
            }
            _ => {}
        }
        if !matches!(e.event, Event::ReportFieldSet { .. } | Event::CancelRequested { .. } | Event::DefinitionReplaced { .. }) {
            last_at = at;
        }
        // The projection as it stood after this event (the run's own fold of its history).
        let folded = match (&mut snapshot, &e.event) {
            (_, Event::RunCreated { header }) => {
                let mut fresh = RunRecord::new(header, at);
                dr_orchestrator::core::apply(&mut fresh, e).ok().map(|()| fresh)
            }
            (Some(run), _) => dr_orchestrator::core::apply(run, e).ok().map(|()| run.clone()),
            (None, _) => None,
        };
        if let Some(now_run) = &folded {
            if !matches!(e.event, Event::ReportFieldSet { .. }) {
                let remaining = if now_run.status.is_terminal() { 0 } else { rto::remaining_ms(now_run, deps, expected, at) };
                let elapsed_ms = u64::try_from(now_run.finished_at.unwrap_or(at) - now_run.incident_at).unwrap_or(0);
                projection.push(Projection { at, projected_secs: elapsed_ms.saturating_add(remaining) as f64 / 1000.0 });
            }
        }
        snapshot = folded;
    }
    let end = run.finished_at.unwrap_or(now);
    let actual_ms = end.saturating_sub(run.incident_at).max(0);
    let actual_secs = u64::try_from(actual_ms / 1000).unwrap_or(0);
    let target_ms = i64::try_from(run.target_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let rto_met = run.status.is_terminal().then(|| run.status == RunStatus::Succeeded && actual_ms <= target_ms);
    let busy = crate::render::attempt_ms(events, end);
    let steps = run
        .steps
        .iter()
        .map(|s| StepLine {
            id: s.id.to_string(),
            state: s.state.as_str(),
            attempts: s.attempts,
            busy_ms: busy.get(&s.id).copied().unwrap_or(0),
            note: match &s.state {
                StepState::Succeeded { output, .. } => output.summary.clone(),
                StepState::Failed { error, .. } => error.clone(),
                StepState::Skipped { reason, .. } => reason.clone(),
                StepState::BackingOff { error, .. } => error.clone(),
                StepState::AwaitingOperator(dr_state::OperatorWait::Gate { prompt }) => prompt.clone(),
                StepState::AwaitingOperator(dr_state::OperatorWait::Interrupted { reason }) => reason.clone(),
                _ => String::new(),
            },
        })
        .collect();
    let verification = run
        .steps
        .iter()
        .filter(|s| s.id.as_str().starts_with("verify"))
        .filter_map(|s| s.state.output().map(|o| (s.id.to_string(), o.summary.clone())))
        .collect();
    let rpo = run.steps.iter().find_map(|s| {
        let output = s.state.output()?;
        let chosen: ChosenSnapshot = serde_json::from_str(&output.value).ok()?;
        Some(Rpo {
            step: s.id.to_string(),
            name: chosen.name,
            live: chosen.source == SnapshotSource::Live,
            age_secs: chosen.age_secs,
            rpo_secs: chosen.rpo_secs,
            within_rpo: chosen.within_rpo,
        })
    });
    let checklist = checklist(run, &fields);
    Report {
        run: run.id.to_string(),
        workflow: run.workflow.clone(),
        level: run.level,
        params: run.params.clone(),
        status: run.status.as_str(),
        reason: run.reason.clone(),
        detected_at: run.incident_at,
        started_at: run.started_at,
        work_started_at: attempts.first().map(|a| a.started_at),
        restored_at,
        finished_at: run.finished_at,
        as_of: now,
        target_secs: run.target_secs,
        actual_secs,
        rto_met,
        rto_margin_secs: (target_ms - actual_ms) / 1000,
        rpo,
        steps,
        attempts,
        decisions,
        verification,
        cause: fields.remove("cause"),
        impact: fields.remove("impact"),
        lessons: fields.remove("lessons"),
        checklist,
        projection,
    }
}

/// Each checklist item: settled by the steps that check it (when they
/// succeeded), by the report field it asks for, or by a confirmation.
fn checklist(run: &RunRecord, fields: &BTreeMap<String, Field>) -> Vec<ChecklistLine> {
    use dr_workflows::checklist::{field_of, Check, ITEMS};
    ITEMS
        .iter()
        .map(|item| {
            let evidence: Vec<String> = match item.check {
                Check::Steps(ids) => run
                    .steps
                    .iter()
                    .filter(|s| ids.contains(&s.id.as_str()) && matches!(s.state, StepState::Succeeded { .. }))
                    .filter_map(|s| s.state.output().map(|o| format!("{}: {}", s.id, o.summary)))
                    .collect(),
                Check::Field(name) => fields.get(name).map(|f| format!("{name}: {}", f.value)).into_iter().collect(),
                Check::Confirm => Vec::new(),
            };
            let confirmed = fields.get(&field_of(item.id)).cloned();
            ChecklistLine { id: item.id, ja: item.ja, en: item.en, done: !evidence.is_empty() || confirmed.is_some(), evidence, confirmed }
        })
        .collect()
}

/// `--set FIELD=TEXT` pairs, checked: a known field, a non-empty text.
fn parse_sets(raw: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let fields = dr_orchestrator::core::REPORT_FIELDS;
    raw.iter()
        .map(|item| {
            let Some((field, value)) = item.split_once('=') else {
                return Err(crate::usage(format!("--set {item:?} is not FIELD=TEXT; the fields are {}", fields.join(", "))));
            };
            let field = field.trim();
            if !fields.contains(&field) {
                return Err(crate::usage(format!("--set: unknown field {field:?}; the fields are {}", fields.join(", "))));
            }
            if value.trim().is_empty() {
                return Err(crate::usage(format!("--set {field}= is empty: say what it is")));
            }
            Ok((field.to_owned(), value.trim().to_owned()))
        })
        .collect()
}

/// `--confirm ITEM[=NOTE]`: a checklist item by its id, as its report field.
fn parse_confirms(raw: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let ids: Vec<&str> = dr_workflows::checklist::ITEMS.iter().map(|i| i.id).collect();
    raw.iter()
        .map(|item| {
            let (id, note) = match item.split_once('=') {
                Some((id, note)) => (id.trim(), note.trim()),
                None => (item.trim(), ""),
            };
            if dr_workflows::checklist::item(id).is_none() {
                return Err(crate::usage(format!("--confirm: unknown checklist item {id:?}; the items are {}", ids.join(", "))));
            }
            let note = if note.is_empty() { "confirmed" } else { note };
            Ok((dr_workflows::checklist::field_of(id), note.to_owned()))
        })
        .collect()
}

/// `dr report`: checks the arguments, then records `--set` fields, or renders the report.
pub async fn run(state_dir: Option<PathBuf>, args: ReportArgs) -> anyhow::Result<u8> {
    let lang = Lang::choose(args.lang.as_deref())?;
    if !["md", "html", "json"].contains(&args.format.as_str()) {
        return Err(crate::usage(format!("--format {:?}: the formats are md, html and json", args.format)));
    }
    let mut sets = parse_sets(&args.set)?;
    sets.extend(parse_confirms(&args.confirm)?);
    if !sets.is_empty() {
        let client = Client::from(crate::access(Some(crate::existing_store(state_dir, &args.id)?))?);
        for (field, value) in sets {
            let request = Request::Annotate { query: args.id.clone(), field: field.clone(), value, by: crate::operator_name() };
            let Response::Runs(runs) = client.ask(request).await? else { bail!("unexpected control response") };
            if let Some((run, _)) = runs.first() {
                match field.strip_prefix("check:") {
                    Some(item) => say!("dr: recorded the checklist item {item} as confirmed for run {}", crate::render::short(run.id)),
                    None => say!("dr: recorded the report's {field} for run {}", crate::render::short(run.id)),
                }
            }
        }
        return Ok(crate::exit::OK);
    }
    let client = match crate::read_access(state_dir)? {
        crate::ReadAccess::Store(access) => Client::from(access),
        crate::ReadAccess::Nothing(dir) => {
            return Err(anyhow::Error::new(crate::Worded {
                code: crate::exit::NOT_FOUND,
                message: format!("no run matches {:?}: {}", args.id, crate::no_store(&dir)),
            }))
        }
    };
    let Response::Runs(runs) = client.ask(Request::Status { query: Some(args.id.clone()) }).await? else {
        bail!("unexpected control response")
    };
    let Some((run, _)) = runs.into_iter().next() else { bail!("the store answered without the run") };
    let Response::Events(events) = client.ask(Request::History { query: run.id.to_string() }).await? else {
        bail!("unexpected control response")
    };
    // The projection uses the definition's estimates (reproducible), when the workflow still builds.
    let plan = dr_orchestrator::Catalog::build_for_run(&crate::catalog(), &run.workflow, &run.params, run.config_path.as_deref())
        .ok()
        .map(|d| d.plan());
    let deps: Option<Vec<Vec<usize>>> = plan.as_ref().map(|p| p.steps.iter().map(|s| s.deps.clone()).collect());
    let expected: Vec<u64> = plan.as_ref().map(|p| p.steps.iter().map(|s| s.expected_ms).collect()).unwrap_or_default();
    let now = dr_orchestrator::Clock::now_ms(&dr_orchestrator::SystemClock);
    let report = build(&run, &events, deps.as_deref(), &expected, now);
    let rendered = match args.format.as_str() {
        "json" => {
            let mut text = serde_json::to_string_pretty(&json(&report, lang))?;
            text.push('\n');
            text
        }
        "html" => html::render(&report, lang),
        _ => text::markdown(&report, lang),
    };
    match &args.output {
        Some(path) => {
            std::fs::write(path, rendered.as_bytes()).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
            say!("dr: wrote the report of run {} to {}", crate::render::short(run.id), path.display());
        }
        None => crate::print_text(&rendered)?,
    }
    Ok(crate::exit::OK)
}

/// The report as JSON: its fields, times also as RFC 3339.
fn json(report: &Report, lang: Lang) -> serde_json::Value {
    let mut value = serde_json::to_value(report).unwrap_or(serde_json::Value::Null);
    if let serde_json::Value::Object(obj) = &mut value {
        obj.insert("lang".into(), serde_json::json!(lang));
        for key in ["detected_at", "started_at", "work_started_at", "restored_at", "finished_at", "as_of"] {
            if let Some(ms) = obj.get(key).and_then(serde_json::Value::as_i64) {
                obj.insert(format!("{key}_rfc3339"), crate::render::rfc3339(ms));
            }
        }
    }
    value
}

/// `1時間02分03秒` / `1h02m03s`, `2分03秒` / `2m03s`, `4.2秒` / `4.2s`.
pub fn duration(ms: u64, lang: Lang) -> String {
    let secs = ms / 1000;
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    match lang {
        Lang::En if secs >= 3600 => format!("{h}h{m:02}m{s:02}s"),
        Lang::En if secs >= 60 => format!("{m}m{s:02}s"),
        Lang::En => format!("{:.1}s", ms as f64 / 1000.0),
        Lang::Ja if secs >= 3600 => format!("{h}時間{m:02}分{s:02}秒"),
        Lang::Ja if secs >= 60 => format!("{m}分{s:02}秒"),
        Lang::Ja => format!("{:.1}秒", ms as f64 / 1000.0),
    }
}

/// `YYYY-MM-DD HH:MM:SS` in local time (the guide's form, with seconds).
pub fn when(ms: Millis) -> String {
    crate::render::local_time(ms)
}

/// The local time zone's offset, said once per report (`+09:00`).
pub fn zone(ms: Millis) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(|t| t.with_timezone(&chrono::Local).format("%:z").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checklist_item_is_settled_by_its_verification_steps_else_it_stays_open() {
        let header = dr_state::RunHeader {
            id: dr_state::RunId(uuid::Uuid::now_v7()),
            workflow: "etcd-recovery".into(),
            definition_hash: "h".into(),
            definition_steps: vec![],
            config_digest: None,
            config_path: None,
            params: BTreeMap::new(),
            level: 3,
            target_secs: 7200,
            incident_at: 0,
            steps: vec!["verify".into(), "trial-restore".into()],
        };
        let mut run = RunRecord::new(&header, 0);
        run.steps[0].state = StepState::Succeeded { at: 5, output: dr_state::StepOutput { summary: "every pod Running and Ready".into(), value: "null".into() } };
        let lines = checklist(&run, &BTreeMap::new());
        let services = lines.iter().find(|l| l.id == "services").unwrap();
        assert!(services.done);
        assert_eq!(services.evidence, ["verify: every pod Running and Ready"]);
        // trial-restore has not succeeded: data integrity is open until it does or someone confirms it.
        let data = lines.iter().find(|l| l.id == "data").unwrap();
        assert!(!data.done && data.evidence.is_empty());
        let mut fields = BTreeMap::new();
        fields.insert("check:data".to_owned(), Field { value: "row counts compared".into(), by: "alice".into(), at: 9 });
        let data = checklist(&run, &fields).into_iter().find(|l| l.id == "data").unwrap();
        assert!(data.done);
        assert_eq!(data.confirmed.map(|c| c.by), Some("alice".to_owned()));
    }

    #[test]
    fn durations_read_as_people_read_them_in_both_languages() {
        assert_eq!(duration(4_200, Lang::En), "4.2s");
        assert_eq!(duration(123_000, Lang::En), "2m03s");
        assert_eq!(duration(3_723_000, Lang::Ja), "1時間02分03秒");
        assert_eq!(duration(59_000, Lang::Ja), "59.0秒");
    }

    #[test]
    fn set_accepts_only_the_known_fields_with_text() {
        assert_eq!(parse_sets(&["cause=disk full".into()]).unwrap(), vec![("cause".to_owned(), "disk full".to_owned())]);
        let err = parse_sets(&["blame=me".into()]).unwrap_err().to_string();
        assert!(err.contains("cause, impact, lessons"), "{err}");
        assert!(parse_sets(&["cause".into()]).is_err());
        assert!(parse_sets(&["impact= ".into()]).is_err());
    }

    #[test]
    fn a_bad_language_is_refused_saying_which_are_known() {
        assert_eq!(Lang::choose(Some("ja")).unwrap(), Lang::Ja);
        let err = Lang::choose(Some("fr")).unwrap_err().to_string();
        assert!(err.contains("ja and en"), "{err}");
    }
}
