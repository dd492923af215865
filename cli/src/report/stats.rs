//! `dr stats`: the guide's targets measured on the store's runs — incidents by
//! level, MTTR (mean, p90) against 2 h, downtime and availability against
//! 99.5 %, RTO met per level, drills per month with their duration (the
//! guide's "所要時間: XX分") and result, the last drill.
//!
//! What counts: an **incident** is a run of a recovery workflow (not
//! `synthetic`, not `dr-drill`), at its level; `--include-synthetic` counts
//! synthetic runs too, at the level of their `level` parameter (tests, demos).
//! Its interval is detection (`incident_at`) → the run's end (now while it is
//! open), whatever the outcome. **MTTR** is over succeeded incidents only.
//! **Downtime** is the union of the incident intervals inside the window
//! (`--since`, else the last 365 days); availability = 1 − downtime / window.
//! A **drill** is a `dr-drill` run; its duration is start → end.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::bail;
use dr_orchestrator::control::{Request, Response};
use dr_state::{Millis, RunStatus, RunSummary};
use serde::Serialize;

use crate::client::Client;

pub const MTTR_TARGET_SECS: u64 = 2 * 3600;
pub const AVAILABILITY_TARGET: f64 = 0.995;
pub const DRILL: &str = "dr-drill";
pub const SYNTHETIC: &str = "synthetic";
const DAY_MS: i64 = 86_400_000;

/// Whether a run is an incident (see the module's doc).
pub fn is_incident(s: &RunSummary, include_synthetic: bool) -> bool {
    s.workflow != DRILL && (s.workflow != SYNTHETIC || include_synthetic)
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LevelStats {
    pub level: u8,
    pub incidents: usize,
    /// Ended incidents, and how many of them succeeded within their target.
    pub ended: usize,
    pub rto_met: usize,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Drill {
    pub run: String,
    pub started_at: Millis,
    pub minutes: Option<u64>,
    pub status: &'static str,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Stats {
    pub since: Millis,
    pub until: Millis,
    pub include_synthetic: bool,
    pub incidents: usize,
    pub levels: Vec<LevelStats>,
    /// Over succeeded incidents; `None` when there are none.
    pub mttr_mean_secs: Option<f64>,
    pub mttr_p90_secs: Option<f64>,
    pub mttr_target_secs: u64,
    pub mttr_met: Option<bool>,
    pub downtime_secs: f64,
    pub availability: f64,
    pub availability_target: f64,
    pub availability_met: bool,
    /// `YYYY-MM` → the drills started that month.
    pub drills: BTreeMap<String, Vec<Drill>>,
    pub last_drill: Option<Drill>,
}

/// p90 by nearest rank (the smallest value with at least 90 % at or below it).
pub fn p90(sorted: &[f64]) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() as f64) * 0.9).ceil() as usize;
    sorted.get(rank.saturating_sub(1)).copied()
}

/// The total length of the union of intervals, clipped to `[from, to]`.
pub fn union_ms(mut intervals: Vec<(Millis, Millis)>, from: Millis, to: Millis) -> i64 {
    intervals.retain(|(a, b)| b > a);
    intervals.sort_unstable();
    let mut total = 0;
    let mut current: Option<(Millis, Millis)> = None;
    for (a, b) in intervals {
        let (a, b) = (a.max(from), b.min(to));
        if b <= a {
            continue;
        }
        current = match current {
            Some((ca, cb)) if a <= cb => Some((ca, cb.max(b))),
            Some((ca, cb)) => {
                total += cb - ca;
                Some((a, b))
            }
            None => Some((a, b)),
        };
    }
    total + current.map_or(0, |(a, b)| b - a)
}

fn drill(s: &RunSummary) -> Drill {
    Drill {
        run: s.id.to_string(),
        started_at: s.started_at,
        minutes: s.finished_at.map(|f| u64::try_from((f - s.started_at + 30_000) / 60_000).unwrap_or(0)),
        status: s.status.as_str(),
    }
}

/// The statistics of `runs` over `[since, now]`. Pure.
pub fn compute(runs: &[RunSummary], since: Millis, now: Millis, include_synthetic: bool) -> Stats {
    let incidents: Vec<&RunSummary> = runs.iter().filter(|s| is_incident(s, include_synthetic) && s.incident_at >= since).collect();
    let levels = (1..=4)
        .map(|level| {
            let at: Vec<&&RunSummary> = incidents.iter().filter(|s| s.level == level).collect();
            let ended: Vec<&&&RunSummary> = at.iter().filter(|s| s.status.is_terminal()).collect();
            let met = ended
                .iter()
                .filter(|s| s.status == RunStatus::Succeeded)
                .filter(|s| s.finished_at.is_some_and(|f| f - s.incident_at <= i64::try_from(s.target_secs * 1000).unwrap_or(i64::MAX)))
                .count();
            LevelStats { level, incidents: at.len(), ended: ended.len(), rto_met: met }
        })
        .collect();
    let mut repair: Vec<f64> = incidents
        .iter()
        .filter(|s| s.status == RunStatus::Succeeded)
        .filter_map(|s| s.finished_at.map(|f| (f - s.incident_at).max(0) as f64 / 1000.0))
        .collect();
    repair.sort_by(f64::total_cmp);
    let mttr_mean_secs = (!repair.is_empty()).then(|| repair.iter().sum::<f64>() / repair.len() as f64);
    let mttr_p90_secs = p90(&repair);
    let intervals = incidents.iter().map(|s| (s.incident_at, s.finished_at.unwrap_or(now))).collect();
    let window = (now - since).max(1);
    let downtime = union_ms(intervals, since, now);
    let availability = 1.0 - downtime as f64 / window as f64;
    let mut drills: BTreeMap<String, Vec<Drill>> = BTreeMap::new();
    let mut all_drills: Vec<&RunSummary> = runs.iter().filter(|s| s.workflow == DRILL).collect();
    all_drills.sort_by_key(|s| s.started_at);
    for s in all_drills.iter().filter(|s| s.started_at >= since) {
        let month = super::when(s.started_at).get(..7).unwrap_or_default().to_owned();
        drills.entry(month).or_default().push(drill(s));
    }
    Stats {
        since,
        until: now,
        include_synthetic,
        incidents: incidents.len(),
        levels,
        mttr_mean_secs,
        mttr_p90_secs,
        mttr_target_secs: MTTR_TARGET_SECS,
        mttr_met: mttr_mean_secs.map(|m| m <= MTTR_TARGET_SECS as f64),
        downtime_secs: downtime as f64 / 1000.0,
        availability,
        availability_target: AVAILABILITY_TARGET,
        availability_met: availability >= AVAILABILITY_TARGET,
        drills,
        last_drill: all_drills.last().map(|s| drill(s)),
    }
}

/// `--since YYYY-MM-DD` as local midnight.
fn parse_since(raw: &str) -> anyhow::Result<Millis> {
    let date = chrono::NaiveDate::parse_from_str(raw.trim(), "%Y-%m-%d")
        .map_err(|e| crate::usage(format!("--since {raw:?}: {e}; give a day as YYYY-MM-DD")))?;
    let midnight = date.and_hms_opt(0, 0, 0).ok_or_else(|| crate::usage(format!("--since {raw:?} is not a day")))?;
    midnight
        .and_local_timezone(chrono::Local)
        .earliest()
        .map(|t| t.timestamp_millis())
        .ok_or_else(|| crate::usage(format!("--since {raw:?}: midnight does not exist in the local time zone")))
}

/// Every run's summary, through whichever backend holds the store.
pub async fn summaries(client: &Client) -> anyhow::Result<Vec<RunSummary>> {
    let Response::List { runs, damaged } = client.ask(Request::List).await? else { bail!("unexpected control response") };
    for d in damaged {
        say!("dr: skipping a damaged run record: {d}");
    }
    Ok(runs.into_iter().map(|(s, _)| s).collect())
}

/// The store's runs, or none when there is no store.
pub async fn all_runs(state_dir: Option<PathBuf>) -> anyhow::Result<(Vec<RunSummary>, Option<Client>)> {
    match crate::read_access(state_dir)? {
        crate::ReadAccess::Nothing(_) => Ok((Vec::new(), None)),
        crate::ReadAccess::Store(access) => {
            let client = Client::from(access);
            Ok((summaries(&client).await?, Some(client)))
        }
    }
}

/// `dr status` without an ID: one line about the last drill.
pub async fn last_drill_line(client: &Client) -> Option<String> {
    let runs = summaries(client).await.ok()?;
    let last = runs.iter().filter(|s| s.workflow == DRILL).max_by_key(|s| s.started_at);
    Some(match last {
        Some(s) => format!("last drill: {} ({}, run {})", super::when(s.started_at), s.status.as_str(), crate::render::short(s.id)),
        None => "last drill: none recorded (dr start dr-drill runs the monthly drill)".to_owned(),
    })
}

fn pct(x: f64) -> String {
    format!("{:.3} %", x * 100.0)
}

fn secs_text(secs: Option<f64>) -> String {
    secs.map_or_else(|| "—".to_owned(), |s| super::duration((s * 1000.0) as u64, super::Lang::En))
}

pub async fn run(state_dir: Option<PathBuf>, args: super::StatsArgs) -> anyhow::Result<u8> {
    let now = dr_orchestrator::Clock::now_ms(&dr_orchestrator::SystemClock);
    let since = match &args.since {
        Some(raw) => parse_since(raw)?,
        None => now - 365 * DAY_MS,
    };
    let (runs, _) = all_runs(state_dir).await?;
    let stats = compute(&runs, since, now, args.include_synthetic);
    if args.json {
        crate::print_json(&serde_json::to_value(&stats)?)?;
        return Ok(crate::exit::OK);
    }
    let mut o = format!("Since {} ({} incidents", super::when(since), stats.incidents);
    o.push_str(if args.include_synthetic { ", synthetic runs included)\n" } else { ")\n" });
    o.push_str("LEVEL  INCIDENTS  RTO MET\n");
    for l in &stats.levels {
        o.push_str(&format!("{:>5}  {:>9}  {}/{}\n", l.level, l.incidents, l.rto_met, l.ended));
    }
    let verdict = |met: Option<bool>| match met {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "no data",
    };
    o.push_str(&format!(
        "MTTR: mean {}, p90 {} (target {}: {})\n",
        secs_text(stats.mttr_mean_secs),
        secs_text(stats.mttr_p90_secs),
        secs_text(Some(MTTR_TARGET_SECS as f64)),
        verdict(stats.mttr_met)
    ));
    o.push_str(&format!(
        "Availability: {} (downtime {}; target {}: {})\n",
        pct(stats.availability),
        secs_text(Some(stats.downtime_secs)),
        pct(AVAILABILITY_TARGET),
        verdict(Some(stats.availability_met))
    ));
    o.push_str("Drills:\n");
    if stats.drills.is_empty() {
        o.push_str("  none in the period\n");
    }
    for (month, drills) in &stats.drills {
        for d in drills {
            let minutes = d.minutes.map_or_else(|| "running".to_owned(), |m| format!("所要時間: {m}分"));
            o.push_str(&format!("  {month}  {}  {minutes}  {}\n", super::when(d.started_at), d.status));
        }
    }
    o.push_str(&format!(
        "Last drill: {}\n",
        stats.last_drill.as_ref().map_or_else(|| "none".to_owned(), |d| format!("{} ({})", super::when(d.started_at), d.status))
    ));
    crate::print_text(&o)?;
    Ok(crate::exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_union_of_intervals_counts_overlaps_once_and_clips_to_the_window() {
        assert_eq!(union_ms(vec![(0, 10), (5, 20), (30, 40)], 0, 100), 30);
        assert_eq!(union_ms(vec![(0, 10), (5, 20)], 8, 15), 7);
        assert_eq!(union_ms(vec![], 0, 100), 0);
    }

    #[test]
    fn p90_takes_the_nearest_rank() {
        let ten: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(p90(&ten), Some(9.0));
        assert_eq!(p90(&[5.0]), Some(5.0));
        assert_eq!(p90(&[]), None);
    }
}
