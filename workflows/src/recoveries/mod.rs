//! The guide's recoveries, one file per scenario, each reading like its
//! runbook top to bottom: which steps, in which order, what each may do again
//! after a crash (its resume class), where the operator confirms, what is
//! only checked. Each builds a [`WorkflowDef`] from the configuration
//! (`dr.toml`) and the run's parameters.
//!
//! Owns: the assembly of actions into workflows and the retry/timeout
//! policies of their steps. Refuses: doing anything itself — every side
//! effect is an action in `crate::actions`.

use std::time::Duration;

use dr_orchestrator::RetryPolicy;

use crate::Recovery;

pub mod argocd;
pub mod complete;
pub mod control_plane;
pub mod drill;
pub mod etcd;
pub mod network;
pub mod pod;
pub mod worker_node;

/// Every recovery of the guide, in the order `dr workflows` lists them.
pub(crate) const ALL: &[Recovery] = &[pod::RECOVERY, network::RECOVERY, worker_node::RECOVERY, argocd::RECOVERY, etcd::RECOVERY, control_plane::RECOVERY, complete::RECOVERY, drill::RECOVERY];

/// A check that waits for the cluster to converge: tried every few seconds
/// for up to about `within`.
pub(crate) fn converging(within: Duration) -> RetryPolicy {
    let initial_backoff_ms = 1_000;
    let max_backoff_ms = 5_000;
    let attempts = u32::try_from(within.as_millis() / u128::from(max_backoff_ms)).unwrap_or(u32::MAX).max(3);
    RetryPolicy { max_attempts: attempts, initial_backoff_ms, max_backoff_ms, multiplier: 2, jitter_percent: 10 }
}

/// A side effect that may fail for a passing reason (an API server busy):
/// three attempts a few seconds apart.
pub(crate) fn a_few_times() -> RetryPolicy {
    RetryPolicy { max_attempts: 3, initial_backoff_ms: 2_000, max_backoff_ms: 10_000, multiplier: 2, jitter_percent: 20 }
}

pub(crate) const MINUTE_MS: u64 = 60_000;
