//! The guide's recoveries, one file per scenario, each reading like its
//! runbook top to bottom: which steps, in which order, what each may do again
//! after a crash (its resume class), where the operator confirms, what is
//! only checked. Each builds a [`WorkflowDef`] from the configuration
//! (`dr.toml`) and the run's parameters.
//!
//! Owns: the assembly of actions into workflows and the retry/timeout
//! policies of their steps. Refuses: doing anything itself — every side
//! effect is an action in `crate::actions`. A workflow asks `dr.toml` for
//! the sections it needs ([`NeededBy`]): one that is absent refuses the
//! build, naming the workflow, the section and the file.

use std::path::Path;
use std::time::Duration;

use dr_orchestrator::{CatalogError, Condition, RetryPolicy, StepHandle, StepId, WorkflowBuilder};

use crate::actions::terraform::{Terraform, TerraformVerb};
use crate::actions::decision::{Decision, DecisionRecord};
use crate::actions::http::{HttpCheckAction, HttpCheckParams};
use crate::actions::kube::argocd::ArgoApps;
use crate::actions::kube::KubeConnection;
use crate::actions::kube::health::ClusterHealth;
use crate::actions::snapshot::{ChooseSnapshot, ChosenSnapshot, TrialRestore, TrialReport};
use crate::config::{Backup, MissingSection, Verify};
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

/// A section of `dr.toml` a workflow needs, or why it cannot be built:
/// `workflow etcd-recovery needs the configuration: [etcd] in FILE, which has
/// no such section; add it (see docs/CONFIG.md)`.
pub(crate) trait NeededBy<T> {
    fn needed_by(self, workflow: &str) -> Result<T, CatalogError>;
}

impl<T> NeededBy<T> for Result<T, MissingSection> {
    fn needed_by(self, workflow: &str) -> Result<T, CatalogError> {
        self.map_err(|missing| CatalogError::Config { workflow: workflow.to_owned(), detail: missing.to_string() })
    }
}

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

/// The newest backup pinned and proven before a rebuild destroys or creates
/// anything: `CHOOSE` (its path and snapshot hash recorded, its age against
/// the RPO), `trial-restore` on the bastion, and `accept-rpo-loss`, which only
/// runs — behind a gate `--yes` does not pass — when the backup is older than
/// the RPO. Later steps depend on `accept` with `after_settled`.
pub(crate) struct PinnedBackup {
    pub choose: StepHandle<ChosenSnapshot>,
    pub trial: StepHandle<TrialReport>,
    pub accept: StepHandle<DecisionRecord>,
}

pub(crate) fn pin_backup(wf: &mut WorkflowBuilder, backup: &Backup, work: &Path, choose_id: &str, what: &str) -> PinnedBackup {
    let choose = wf
        .step(
            choose_id,
            "pin the newest backup: its path and its etcd snapshot's SHA-256 recorded, its age against the RPO",
            ChooseSnapshot::new(&backup.dir, &backup.pattern, backup.rpo_hours * 3600, work, None),
        )
        .retry(a_few_times())
        .timeout_ms(10 * MINUTE_MS)
        .expected_ms(5_000)
        .add();
    let trial = wf
        .step("trial-restore", "the pinned snapshot restored into a scratch directory on the bastion", TrialRestore::new(&choose, work))
        .after(&choose)
        .retry(a_few_times())
        .timeout_ms(10 * MINUTE_MS)
        .expected_ms(5_000)
        .add();
    let accept = wf
        .step("accept-rpo-loss", "an operator accepts restoring a backup older than the RPO", Decision { decision: "restore a backup older than the RPO".into() })
        .after(&choose)
        .after(&trial)
        .when(Condition::output_is(&choose, "/within_rpo", serde_json::json!(false)))
        .gate_always(&format!(
            "The newest backup, {{{choose_id}:/name}}, is {{{choose_id}:/age}} old: older than the RPO ({} h). \
             Everything changed after it is lost. {what} from it anyway?",
            backup.rpo_hours
        ))
        .retry(a_few_times())
        .timeout_ms(MINUTE_MS)
        .add();
    PinnedBackup { choose, trial, accept }
}

/// `terraform apply|destroy -auto-approve -input=false [-target]` in the
/// configured directory, probed by `plan -detailed-exitcode` (steps using it
/// are probe class: a crash inside never runs it blindly again).
pub(crate) fn terraform(config: &crate::config::Terraform, verb: TerraformVerb, target: Option<&str>) -> Terraform {
    Terraform::new(&config.binary, &config.dir, verb, target)
}

/// The platform's verification after a rebuild, in parallel after `after`:
/// `verify-nodes` (nodes and kube-system pods Ready), `verify-apps` (every
/// Application Synced/Healthy), `verify-ingress` (the ingress answers).
pub(crate) fn verify_platform(wf: &mut WorkflowBuilder, kube: &KubeConnection, verify: &Verify, after: &[StepId], within: Duration) {
    let kube = kube.clone();
    wf.step("verify-nodes", "nodes Ready, kube-system pods Ready (kubectl get nodes / pods -n kube-system)", ClusterHealth { connection: kube.clone(), fail_if_unhealthy: true })
        .after_each(after)
        .retry(converging(within))
        .timeout_ms(MINUTE_MS)
        .add();
    wf.step("verify-apps", "every ArgoCD Application Synced and Healthy", ArgoApps { connection: kube, namespace: "argocd".into(), require_healthy: true })
        .after_each(after)
        .retry(converging(within))
        .timeout_ms(MINUTE_MS)
        .add();
    wf.step("verify-ingress", &format!("HTTP {} answers", verify.ingress_url), HttpCheckAction::new(HttpCheckParams::new(&verify.ingress_url)))
        .after_each(after)
        .retry(converging(within))
        .timeout_ms(MINUTE_MS)
        .add();
}
