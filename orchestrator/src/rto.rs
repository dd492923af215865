//! The RTO clock: how long the incident has lasted, how long the rest of the
//! run is expected to take, and whether that fits the target.
//!
//! Elapsed time is wall time since the incident, so time when no process was
//! running counts. The projection is elapsed + the longest chain of remaining
//! expected durations through the step graph (the critical path); a step's
//! expected duration is the median of its earlier successful runs, or its
//! declared estimate until there are some.

use dr_state::{Millis, RunRecord, RunSummary, StepState};
use serde::Serialize;

use crate::definition::Plan;

#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Rto {
    pub target_secs: u64,
    pub elapsed_secs: f64,
    pub projected_secs: f64,
    pub at_risk: bool,
}

/// The median of observed durations, or `fallback` when there are none.
pub fn expected_ms(observed: &[u64], fallback: u64) -> u64 {
    if observed.is_empty() {
        return fallback;
    }
    let mut sorted = observed.to_vec();
    sorted.sort_unstable();
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2
    }
}

/// The remaining critical path in milliseconds. `deps[i]` are the indexes
/// step `i` depends on (all smaller than `i`), `expected[i]` its expected duration.
pub fn remaining_ms(run: &RunRecord, deps: &[Vec<usize>], expected: &[u64], now: Millis) -> u64 {
    let mut finish: Vec<u64> = vec![0; run.steps.len()];
    for (i, step) in run.steps.iter().enumerate() {
        let exp = expected.get(i).copied().unwrap_or(0);
        let own = match &step.state {
            StepState::Succeeded { .. } | StepState::Skipped { .. } | StepState::Failed { tolerated: true, .. } => 0,
            // A step that stopped with its run will not run.
            StepState::Cancelled { .. } => 0,
            StepState::Running { started_at, .. } | StepState::Probing { started_at, .. } => {
                exp.saturating_sub(u64::try_from(now - started_at).unwrap_or(0))
            }
            StepState::BackingOff { until, .. } => u64::try_from(until - now).unwrap_or(0).saturating_add(exp),
            StepState::Pending | StepState::AwaitingOperator(_) | StepState::Failed { .. } => exp,
        };
        let start = deps.get(i).map_or(0, |ds| ds.iter().filter_map(|&d| finish.get(d)).copied().max().unwrap_or(0));
        finish[i] = start.saturating_add(own);
    }
    finish.into_iter().max().unwrap_or(0)
}

/// The RTO figures of a run at `now`. `plan` is `None` when the run's
/// workflow can no longer be built; the steps are then taken as a chain.
pub fn compute(run: &RunRecord, plan: Option<&Plan>, expected: &[u64], now: Millis) -> Rto {
    let end = run.finished_at.unwrap_or(now);
    let elapsed_ms = u64::try_from(end - run.incident_at).unwrap_or(0);
    let remaining = if run.status.is_terminal() {
        0
    } else {
        let deps: Vec<Vec<usize>> = match plan {
            Some(p) if p.steps.len() == run.steps.len() => p.steps.iter().map(|s| s.deps.clone()).collect(),
            _ => (0..run.steps.len()).map(|i| if i == 0 { vec![] } else { vec![i - 1] }).collect(),
        };
        remaining_ms(run, &deps, expected, now)
    };
    let projected_ms = elapsed_ms.saturating_add(remaining);
    Rto {
        target_secs: run.target_secs,
        elapsed_secs: secs(elapsed_ms),
        projected_secs: secs(projected_ms),
        at_risk: projected_ms > run.target_secs.saturating_mul(1000),
    }
}

/// RTO figures from a run's summary alone: exact for finished runs (nothing
/// remains); for open runs the projection is only the elapsed time.
pub fn from_summary(s: &RunSummary, now: Millis) -> Rto {
    let end = s.finished_at.unwrap_or(now);
    let elapsed_ms = u64::try_from(end - s.incident_at).unwrap_or(0);
    Rto {
        target_secs: s.target_secs,
        elapsed_secs: secs(elapsed_ms),
        projected_secs: secs(elapsed_ms),
        at_risk: elapsed_ms > s.target_secs.saturating_mul(1000),
    }
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use dr_state::{RunId, RunStatus};

    fn run(states: &[StepState]) -> RunRecord {
        let header = dr_state::RunHeader {
            id: RunId::new_v7(0, 0),
            workflow: "w".into(),
            definition_hash: String::new(),
            definition_steps: vec![],
            config_digest: None,
            config_path: None,
            params: Default::default(),
            level: 1,
            target_secs: 10,
            incident_at: 0,
            steps: (0..states.len()).map(|i| format!("s{i}").into()).collect(),
        };
        let mut r = RunRecord::new(&header, 0);
        for (s, st) in r.steps.iter_mut().zip(states) {
            s.state = st.clone();
        }
        r
    }

    fn done() -> StepState {
        StepState::Succeeded { at: 0, output: Default::default() }
    }

    #[test]
    fn median_falls_back_to_the_estimate() {
        assert_eq!(expected_ms(&[], 500), 500);
        assert_eq!(expected_ms(&[30, 10, 20], 500), 20);
        assert_eq!(expected_ms(&[10, 20, 30, 40], 500), 25);
    }

    #[test]
    fn the_critical_path_takes_the_longest_branch() {
        use StepState::Pending;
        let r = run(&[done(), Pending, Pending, Pending]);
        // 0 -> 1 (4s) -> 3 (1s); 0 -> 2 (2s) -> 3
        let deps = vec![vec![], vec![0], vec![0], vec![1, 2]];
        assert_eq!(remaining_ms(&r, &deps, &[1000, 4000, 2000, 1000], 0), 5000);
    }

    #[test]
    fn elapsed_counts_from_the_incident_and_risk_follows_the_projection() {
        let mut r = run(&[done(), StepState::Pending]);
        r.incident_at = 0;
        let rto = compute(&r, None, &[0, 3000], 8000);
        assert_eq!(rto.elapsed_secs, 8.0);
        assert_eq!(rto.projected_secs, 11.0);
        assert!(rto.at_risk);
        let rto = compute(&r, None, &[0, 1000], 8000);
        assert!(!rto.at_risk);
        r.status = RunStatus::Succeeded;
        r.finished_at = Some(9000);
        let rto = compute(&r, None, &[0, 3000], 20_000);
        assert_eq!(rto.elapsed_secs, 9.0);
        assert_eq!(rto.projected_secs, 9.0);
    }
}
