//! `etcd-recovery` (level 3): etcd's data damaged or lost.
//!
//! The guide's `etcd-disaster-recovery.sh` made safe:
//! 1. `members`, `health`, `alarms`: `etcdctl member list / endpoint health /
//!    alarm list` — the assessment; failures are information, not a stop.
//! 2. `snapshot-live`: when etcd answers, a snapshot from it (the guide's "backup
//!    from a healthy member"); tolerated: if it fails, a backup is used.
//! 3. `choose`: that live snapshot, else the newest backup (extracted), checked
//!    against the SHA-256 etcd appends and kept under a name derived from its
//!    hash, with its age against the RPO — recorded, so every later step (and
//!    a rerun) restores exactly that file.
//! 4. `trial-restore`: the snapshot restored into a scratch directory on the
//!    bastion first: one that cannot be restored stops here.
//! 5. `restore` — **asks first**, naming the snapshot, its revision and age —
//!    on the etcd node: upload, a second trial, etcd stopped, the restored
//!    data directory swapped in with the old one kept aside (never deleted),
//!    ownership, etcd started (probe class: a crash is settled by the marker
//!    the restore leaves).
//! 6. `verify-members`, `verify-health`, `verify-cluster`: the member list, every
//!    endpoint healthy, the nodes and kube-system pods (`kubectl get nodes`).

use std::collections::BTreeMap;
use std::time::Duration;

use dr_orchestrator::{CatalogError, Condition, ParamSpec, ResumeClass, RetryPolicy, WorkflowBuilder, WorkflowDef, WorkflowInfo};

use super::{a_few_times, converging, NeededBy, MINUTE_MS};
use crate::actions::etcd::{EtcdAlarmList, EtcdEndpointHealth, EtcdMemberList, EtcdSnapshotRestore, EtcdSnapshotSave};
use crate::actions::kube::health::ClusterHealth;
use crate::actions::snapshot::{ChooseSnapshot, RestoreChosen, TrialRestore};
use crate::config::Config;
use crate::params::Params;
use crate::Recovery;

pub const NAME: &str = "etcd-recovery";

pub(crate) const RECOVERY: Recovery = Recovery { info, build };

fn info() -> WorkflowInfo {
    WorkflowInfo {
        name: NAME,
        level: 3,
        description: "etcd data damaged: assess, choose a snapshot (live, else the newest backup), try it, restore it (asks first), verify",
        params: vec![ParamSpec {
            name: "use_backup",
            description: "restore the newest backup even when etcd answers (no live snapshot)",
            default: Some("false"),
        }],
    }
}

/// The node-side restore of the configured etcd (its snapshot is set at run time).
/// `workflow` names the workflow built, for its errors.
pub(crate) fn restore_params(config: &Config, workflow: &str) -> Result<EtcdSnapshotRestore, CatalogError> {
    let e = config.etcd().needed_by(workflow)?;
    config.nodes().needed_by(workflow)?;
    let node = config.node(&e.node).ok_or_else(|| CatalogError::Config {
        workflow: workflow.into(),
        detail: format!("etcd.node {:?} is not a [[nodes]] name", e.node),
    })?;
    let mut restore = EtcdSnapshotRestore::new(
        config.ssh_target(node).needed_by(workflow)?,
        "",
        e.name.clone(),
        e.initial_cluster.clone(),
        e.initial_cluster_token.clone(),
        e.initial_advertise_peer_urls.clone(),
    );
    restore.data_dir = e.data_dir.clone();
    restore.staging_dir = e.staging_dir.clone();
    Ok(restore)
}

fn build(config: &Config, values: &BTreeMap<String, String>) -> Result<WorkflowDef, CatalogError> {
    let info = info();
    let p = Params::new(&info, values)?;
    let use_backup = p.flag("use_backup")?;
    let etcd = config.etcd_connection().needed_by(NAME)?;
    let etcd_node = config.etcd().needed_by(NAME)?.node.clone();
    let backup = config.backup().needed_by(NAME)?;
    let kube = config.kube_connection().needed_by(NAME)?;
    let restore = restore_params(config, NAME)?;
    let work = backup.work_dir.join("etcd-recovery");
    let assess = RetryPolicy { max_attempts: 2, initial_backoff_ms: 1_000, max_backoff_ms: 1_000, multiplier: 1, jitter_percent: 0 };
    let mut wf = WorkflowBuilder::new(NAME, info.level, info.description);

    let members = wf
        .step("members", "etcdctl member list (assessment)", EtcdMemberList { etcd: etcd.clone() })
        .retry(assess.clone())
        .timeout_ms(MINUTE_MS)
        .tolerate_failure()
        .add();
    let health = wf
        .step("health", "etcdctl endpoint health (assessment)", EtcdEndpointHealth { etcd: etcd.clone() })
        .after(&members)
        .retry(assess.clone())
        .timeout_ms(MINUTE_MS)
        .tolerate_failure()
        .add();
    let alarms = wf
        .step("alarms", "etcdctl alarm list (assessment)", EtcdAlarmList { etcd: etcd.clone() })
        .after(&health)
        .retry(assess)
        .timeout_ms(MINUTE_MS)
        .tolerate_failure()
        .add();
    let live = (!use_backup).then(|| {
        wf.step(
            "snapshot-live",
            "a snapshot from the answering etcd (the guide's backup from a healthy member)",
            EtcdSnapshotSave { etcd: etcd.clone(), path: work.join("live-snapshot.db") },
        )
        .after(&health)
        .after(&alarms)
        .when(Condition::succeeded(&health))
        .retry(a_few_times())
        .timeout_ms(10 * MINUTE_MS)
        .tolerate_failure()
        .add()
    });
    let mut choose = wf
        .step(
            "choose",
            "the live snapshot, else the newest backup: checked, kept by its hash, its age against the RPO",
            ChooseSnapshot::new(&backup.dir, &backup.pattern, backup.rpo_hours * 3600, &work, live.as_ref()),
        )
        .after(&alarms)
        .retry(a_few_times())
        .timeout_ms(10 * MINUTE_MS)
        .expected_ms(5_000);
    if let Some(live) = &live {
        // Whatever the live snapshot came to: skipped or failed, a backup is used.
        choose = choose.after_settled(live);
    }
    let choose = choose.add();
    let trial = wf
        .step("trial-restore", "the snapshot restored into a scratch directory on the bastion", TrialRestore::new(&choose, &work))
        .after(&choose)
        .retry(a_few_times())
        .timeout_ms(10 * MINUTE_MS)
        .expected_ms(5_000)
        .add();
    let restore = wf
        .step(
            "restore",
            &format!("restore etcd on {etcd_node} (old data directory kept), restart it"),
            RestoreChosen::new(restore, &choose),
        )
        .after(&choose)
        .after(&trial)
        .gate(&format!(
            "Restore etcd on {node} from the {{choose:/source}} snapshot {{choose:/name}} ({{choose:/age}} old; \
             within the RPO: {{choose:/within_rpo}}; revision {{trial-restore:/revision}}, {{trial-restore:/total_keys}} keys)? \
             Changes made after it are lost. etcd is stopped; its data directory is kept aside.",
            node = etcd_node
        ))
        .resume(ResumeClass::Probe)
        .retry(a_few_times())
        .timeout_ms(20 * MINUTE_MS)
        .expected_ms(30_000)
        .add();
    let verify_members = wf
        .step("verify-members", "etcdctl member list answers", EtcdMemberList { etcd: etcd.clone() })
        .after(&restore)
        .retry(converging(Duration::from_secs(120)))
        .timeout_ms(MINUTE_MS)
        .add();
    let verify_health = wf
        .step("verify-health", "every etcd endpoint healthy", EtcdEndpointHealth { etcd })
        .after(&verify_members)
        .retry(converging(Duration::from_secs(120)))
        .timeout_ms(MINUTE_MS)
        .add();
    wf.step(
        "verify-cluster",
        "nodes Ready and kube-system pods Ready (kubectl get nodes)",
        ClusterHealth { connection: kube, fail_if_unhealthy: true },
    )
    .after(&verify_health)
    .retry(converging(Duration::from_secs(300)))
    .timeout_ms(MINUTE_MS)
    .add();
    Ok(wf.build())
}
