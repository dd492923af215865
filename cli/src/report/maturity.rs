//! `dr maturity`: the guide's DR maturity table (DR成熟度評価), computed from
//! evidence for each failure level 1–4, each cell with its reason:
//! - **workflow**: the catalog has an automated recovery at this level;
//! - **exercised**: a drill (`dr-drill`, which exercises the whole plan) or a
//!   real recovery at this level succeeded within the last 35 days;
//! - **rto**: the last real recovery at this level that ended met its target
//!   (unknown when there was none);
//! - **backups**: the newest backup check any run recorded (a `backup.check`
//!   or a chosen snapshot's output) found the backup within the RPO — the same
//!   fact on every row; unknown, with the reason, when no run checked.
//!
//! Synthetic runs are no evidence.

use std::path::PathBuf;

use anyhow::bail;
use dr_orchestrator::control::{Request, Response};
use dr_state::{Millis, RunRecord, RunStatus, RunSummary};
use dr_workflows::actions::backup::BackupCheckOutput;
use dr_workflows::actions::snapshot::ChosenSnapshot;
use serde::Serialize;

use super::stats::{DRILL, SYNTHETIC};
use crate::client::Client;

pub const EXERCISE_DAYS: i64 = 35;
const DAY_MS: i64 = 86_400_000;

/// One cell: `ok` is `None` when the evidence is missing.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Cell {
    pub ok: Option<bool>,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Row {
    pub level: u8,
    pub workflow: Cell,
    pub exercised: Cell,
    pub rto: Cell,
    pub backups: Cell,
}

/// What a run recorded about the backups.
#[derive(Clone, Debug, PartialEq)]
pub struct BackupFact {
    pub run: String,
    pub at: Millis,
    pub name: String,
    pub age_secs: u64,
    pub rpo_secs: u64,
    pub within_rpo: bool,
}

/// The newest backup fact in a run's recorded outputs.
pub fn backup_fact(run: &RunRecord) -> Option<BackupFact> {
    run.steps.iter().rev().find_map(|s| {
        let output = s.state.output()?;
        let at = s.state.finished_at().unwrap_or(run.updated_at);
        if let Ok(check) = serde_json::from_str::<BackupCheckOutput>(&output.value) {
            let name = check.newest.file_name().map_or_else(|| check.newest.display().to_string(), |n| n.to_string_lossy().into_owned());
            return Some(BackupFact { run: run.id.to_string(), at, name, age_secs: check.age_secs, rpo_secs: check.rpo_secs, within_rpo: check.within_rpo });
        }
        let chosen: ChosenSnapshot = serde_json::from_str(&output.value).ok()?;
        Some(BackupFact { run: run.id.to_string(), at, name: chosen.name, age_secs: chosen.age_secs, rpo_secs: chosen.rpo_secs, within_rpo: chosen.within_rpo })
    })
}

fn ago(now: Millis, at: Millis) -> String {
    format!("{} ({} days ago)", super::when(at), (now - at).max(0) / DAY_MS)
}

/// The table. `workflows` are the catalog's (name, level); pure.
pub fn compute(workflows: &[(String, u8)], runs: &[RunSummary], backups: Option<&BackupFact>, now: Millis) -> Vec<Row> {
    let real = |s: &&RunSummary| s.workflow != SYNTHETIC && s.workflow != DRILL;
    (1..=4)
        .map(|level| {
            let names: Vec<&str> = workflows
                .iter()
                .filter(|(n, l)| *l == level && n != SYNTHETIC && n != DRILL)
                .map(|(n, _)| n.as_str())
                .collect();
            let workflow = if names.is_empty() {
                Cell { ok: Some(false), reason: format!("no automated workflow at level {level}") }
            } else {
                Cell { ok: Some(true), reason: names.join(", ") }
            };
            let exercises = runs.iter().filter(|s| s.status == RunStatus::Succeeded && (s.workflow == DRILL || (real(s) && s.level == level)));
            let last = exercises.max_by_key(|s| s.finished_at.unwrap_or(s.started_at));
            let exercised = match last {
                Some(s) if s.finished_at.unwrap_or(s.started_at) >= now - EXERCISE_DAYS * DAY_MS => Cell {
                    ok: Some(true),
                    reason: format!("{} succeeded {}", s.workflow, ago(now, s.finished_at.unwrap_or(s.started_at))),
                },
                Some(s) => Cell {
                    ok: Some(false),
                    reason: format!("none within {EXERCISE_DAYS} days; the last, {}, succeeded {}", s.workflow, ago(now, s.finished_at.unwrap_or(s.started_at))),
                },
                None => Cell { ok: Some(false), reason: format!("no drill and no recovery at level {level} has succeeded yet") },
            };
            let last_recovery = runs.iter().filter(real).filter(|s| s.level == level && s.status.is_terminal()).max_by_key(|s| s.started_at);
            let rto = match last_recovery {
                Some(s) => {
                    let actual = s.finished_at.unwrap_or(now) - s.incident_at;
                    let met = s.status == RunStatus::Succeeded && actual <= i64::try_from(s.target_secs * 1000).unwrap_or(i64::MAX);
                    Cell {
                        ok: Some(met),
                        reason: format!(
                            "{} {} {}: {} against {}",
                            s.workflow,
                            s.status.as_str(),
                            super::when(s.started_at),
                            super::duration(u64::try_from(actual.max(0)).unwrap_or(0), super::Lang::En),
                            super::duration(s.target_secs * 1000, super::Lang::En)
                        ),
                    }
                }
                None => Cell { ok: None, reason: format!("unknown: no recovery at level {level} has ended yet") },
            };
            let backups = match backups {
                Some(b) => Cell {
                    ok: Some(b.within_rpo),
                    reason: format!(
                        "{} was {} old on {} (RPO {}; run {})",
                        b.name,
                        super::duration(b.age_secs * 1000, super::Lang::En),
                        super::when(b.at),
                        super::duration(b.rpo_secs * 1000, super::Lang::En),
                        b.run.get(..8).unwrap_or(&b.run)
                    ),
                },
                None => Cell { ok: None, reason: "unknown: no run has checked the backups yet (dr start dr-drill checks them)".into() },
            };
            Row { level, workflow, exercised, rto, backups }
        })
        .collect()
}

/// The newest recorded backup fact: the newest runs that may hold one are read until one does.
async fn newest_backup_fact(client: &Client, runs: &[RunSummary]) -> anyhow::Result<Option<BackupFact>> {
    let mut candidates: Vec<&RunSummary> = runs.iter().filter(|s| s.workflow != SYNTHETIC).collect();
    candidates.sort_by_key(|s| std::cmp::Reverse(s.started_at));
    for s in candidates.into_iter().take(50) {
        let found = match client.ask(Request::Status { query: Some(s.id.to_string()) }).await {
            Ok(Response::Runs(found)) => found,
            Ok(_) => bail!("unexpected control response"),
            // A listed run that is not found: `dr gc` removed its history, and its backup fact with it.
            Err(e) if crate::is_not_found(&e) => continue,
            Err(e) => return Err(e),
        };
        if let Some(fact) = found.first().and_then(|(run, _)| backup_fact(run)) {
            return Ok(Some(fact));
        }
    }
    Ok(None)
}

fn mark(cell: &Cell) -> &'static str {
    match cell.ok {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "unknown",
    }
}

pub async fn run(state_dir: Option<PathBuf>, json: bool) -> anyhow::Result<u8> {
    let now = dr_orchestrator::Clock::now_ms(&dr_orchestrator::SystemClock);
    let (runs, client) = super::stats::all_runs(state_dir).await?;
    let backups = match &client {
        Some(c) => newest_backup_fact(c, &runs).await?,
        None => None,
    };
    let workflows: Vec<(String, u8)> =
        dr_orchestrator::Catalog::workflows(&crate::catalog()).into_iter().map(|w| (w.name.to_owned(), w.level)).collect();
    let rows = compute(&workflows, &runs, backups.as_ref(), now);
    if json {
        crate::print_json(&serde_json::to_value(&rows)?)?;
        return Ok(crate::exit::OK);
    }
    let mut o = String::from("LEVEL  SCORE  WORKFLOW  EXERCISED ≤35d  RTO MET LAST  BACKUPS ≤RPO\n");
    for r in &rows {
        let cells = [&r.workflow, &r.exercised, &r.rto, &r.backups];
        let score = cells.iter().filter(|c| c.ok == Some(true)).count();
        let stars = format!("{}{}", "★".repeat(score), "☆".repeat(4 - score));
        o.push_str(&format!("{:>5}  {stars}  {:8}  {:14}  {:12}  {}\n", r.level, mark(&r.workflow), mark(&r.exercised), mark(&r.rto), mark(&r.backups)));
    }
    for r in &rows {
        o.push_str(&format!(
            "\nLevel {}:\n  workflow:  {}\n  exercised: {}\n  rto:       {}\n  backups:   {}\n",
            r.level, r.workflow.reason, r.exercised.reason, r.rto.reason, r.backups.reason
        ));
    }
    crate::print_text(&o)?;
    Ok(crate::exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(workflow: &str, level: u8, status: RunStatus, start: Millis, end: Millis) -> RunSummary {
        RunSummary {
            id: dr_state::RunId::new_v7(start, 1),
            workflow: workflow.into(),
            level,
            target_secs: 3600,
            status,
            reason: None,
            incident_at: start,
            started_at: start,
            finished_at: Some(end),
            updated_at: end,
            steps_total: 1,
            steps_done: 1,
        }
    }

    #[test]
    fn a_drill_within_35_days_exercises_every_level_and_an_old_one_does_not() {
        let now = 100 * DAY_MS;
        let workflows = vec![("worker-node-recovery".to_owned(), 2), ("synthetic".to_owned(), 1)];
        let old = [summary(DRILL, 2, RunStatus::Succeeded, 10 * DAY_MS, 10 * DAY_MS + 60_000)];
        let rows = compute(&workflows, &old, None, now);
        assert_eq!(rows[1].exercised.ok, Some(false), "{:?}", rows[1].exercised);
        assert_eq!(rows[0].workflow.ok, Some(false), "synthetic is not a recovery");
        assert_eq!(rows[1].rto.ok, None);
        let recent = [summary(DRILL, 2, RunStatus::Succeeded, 90 * DAY_MS, 90 * DAY_MS + 60_000)];
        let rows = compute(&workflows, &recent, None, now);
        assert!(rows.iter().all(|r| r.exercised.ok == Some(true)), "{rows:?}");
        let late = [summary("worker-node-recovery", 2, RunStatus::Succeeded, 90 * DAY_MS, 90 * DAY_MS + 7_200_000)];
        let rows = compute(&workflows, &late, None, now);
        assert_eq!(rows[1].rto.ok, Some(false), "2 h against a 1 h target: {:?}", rows[1].rto);
    }
}
