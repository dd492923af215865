//! `dr-drill`: the guide's monthly DR drill (`dr-drill.sh`), made safe and
//! recorded.
//!
//! 1. `backups`: the newest backup against the RPO (with its `.sha256`).
//! 2. `choose-backup`, `trial-restore`: the newest backup's etcd snapshot
//!    restored into a scratch directory on the bastion (never into the cluster).
//! 3. `test-resources`: the backup's `test-resources.yaml` applied into the
//!    `dr-test` namespace, with ArgoCD's instance labels stripped (so ArgoCD
//!    neither adopts nor prunes them); `test-ready`: its pods Ready.
//! 4. `other-worker-ready`: the worker that takes the load is Ready;
//!    `drain-check`: the drilled worker's pods fit on the other nodes (their
//!    requests against what each has left) and no PodDisruptionBudget covering
//!    them allows zero disruptions — if not, the drain is skipped and the
//!    problems are the drill's findings; `drain`: `kubectl drain` of the
//!    drilled worker through the Eviction API (PodDisruptionBudgets respected),
//!    with a deadline; `moved`: every pod Running and Ready again, on the others.
//! 5. `record`: which checks passed and which did not (tolerated failures are
//!    the drill's findings), kept in the run with each step's duration.
//!
//! Cleanup, however the drill ends (also after `dr cancel`): `uncordon` the
//! drilled worker, `remove-test-resources` (the objects and `dr-test`).

use std::collections::BTreeMap;
use std::time::Duration;

use dr_orchestrator::{CatalogError, Condition, ParamSpec, WorkflowBuilder, WorkflowDef, WorkflowInfo};

use super::{a_few_times, converging, NeededBy, MINUTE_MS};
use crate::actions::backup::{BackupCheckAction, BackupCheckParams};
use crate::actions::decision::Record;
use crate::actions::kube::capacity::DrainCheck;
use crate::actions::kube::manifests::{ApplyManifests, DeleteManifests, ManifestsParams};
use crate::actions::kube::nodes::{Drain, NodeWaitReady, Uncordon};
use crate::actions::kube::pods::UnhealthyPods;
use crate::actions::snapshot::{ChooseSnapshot, TrialRestore};
use crate::config::{Config, Role};
use crate::params::Params;
use crate::Recovery;

pub const NAME: &str = "dr-drill";

pub(crate) const RECOVERY: Recovery = Recovery { info, build };

fn info() -> WorkflowInfo {
    WorkflowInfo {
        name: NAME,
        level: 2,
        description: "the monthly DR drill: backups checked and trial-restored, test resources in dr-test, a worker drained and its pods moved; cleanup always uncordons and removes dr-test",
        params: vec![
            ParamSpec { name: "node", description: "the worker to drain (default: the first worker of dr.toml)", default: None },
            ParamSpec { name: "namespace", description: "where the test resources go", default: Some("dr-test") },
            ParamSpec { name: "resources", description: "the test resources file (default: BACKUP_DIR/test-resources.yaml)", default: None },
        ],
    }
}

fn build(config: &Config, values: &BTreeMap<String, String>) -> Result<WorkflowDef, CatalogError> {
    let info = info();
    let p = Params::new(&info, values)?;
    let backup = config.backup().needed_by(NAME)?;
    let workers: Vec<&str> = config.nodes().needed_by(NAME)?.iter().filter(|n| n.role == Role::Worker).map(|n| n.name.as_str()).collect();
    let node = p.string("node").map(str::to_owned).or_else(|| workers.first().map(|w| (*w).to_owned())).ok_or_else(|| {
        CatalogError::Config { workflow: NAME.into(), detail: "dr.toml has no worker to drill with".into() }
    })?;
    if !workers.contains(&node.as_str()) {
        return Err(CatalogError::BadParam {
            workflow: NAME.into(),
            param: "node".into(),
            value: node,
            expected: format!("a worker of dr.toml: {}", workers.join(", ")),
        });
    }
    let Some(other) = workers.iter().find(|w| **w != node).map(|w| (*w).to_owned()) else {
        return Err(CatalogError::Config { workflow: NAME.into(), detail: "the drill needs a second worker to take the drained one's pods".into() });
    };
    let namespace = p.string("namespace").unwrap_or("dr-test").to_owned();
    let resources = p.string("resources").map(Into::into).unwrap_or_else(|| backup.dir.join("test-resources.yaml"));
    let kube = config.kube_connection().needed_by(NAME)?;
    let work = backup.work_dir.join("dr-drill");
    let manifests = ManifestsParams { connection: kube.clone(), file: resources, namespace: namespace.clone() };
    let mut wf = WorkflowBuilder::new(NAME, info.level, info.description);

    let mut backup_params = BackupCheckParams::new(&backup.dir);
    backup_params.pattern = backup.pattern.clone();
    backup_params.rpo_secs = backup.rpo_hours * 3600;
    let backups = wf
        .step("backups", "the newest backup within the RPO, its .sha256 checked", BackupCheckAction::new(backup_params))
        .retry(a_few_times())
        .timeout_ms(10 * MINUTE_MS)
        .tolerate_failure()
        .add();
    let choose = wf
        .step(
            "choose-backup",
            "the newest backup's etcd snapshot, extracted and checked",
            ChooseSnapshot::new(&backup.dir, &backup.pattern, backup.rpo_hours * 3600, &work, None),
        )
        .after(&backups)
        .retry(a_few_times())
        .timeout_ms(10 * MINUTE_MS)
        .tolerate_failure()
        .add();
    let trial = wf
        .step("trial-restore", "the snapshot restored into a scratch directory on the bastion (not the cluster)", TrialRestore::new(&choose, &work))
        .after(&choose)
        .retry(a_few_times())
        .timeout_ms(10 * MINUTE_MS)
        .tolerate_failure()
        .add();
    let apply = wf
        .step("test-resources", &format!("the test resources applied into {namespace}, ArgoCD's labels stripped"), ApplyManifests { params: manifests.clone() })
        .after_settled(&trial)
        .retry(a_few_times())
        .timeout_ms(5 * MINUTE_MS)
        .tolerate_failure()
        .add();
    let ready = wf
        .step("test-ready", &format!("the pods of {namespace} Running and Ready"), UnhealthyPods { connection: kube.clone(), namespace: Some(namespace.clone()), fail_if_any: true })
        .after(&apply)
        .retry(converging(Duration::from_secs(180)))
        .timeout_ms(MINUTE_MS)
        .tolerate_failure()
        .add();
    let other_ready = wf
        .step("other-worker-ready", &format!("{other} Ready to take {node}'s pods"), NodeWaitReady { connection: kube.clone(), node: other.clone(), ready: true })
        .after_settled(&ready)
        .retry(a_few_times())
        .timeout_ms(MINUTE_MS)
        .add();
    let capacity = wf
        .step(
            "drain-check",
            &format!("{node}'s pods fit on the other nodes (requests vs allocatable) and no PodDisruptionBudget would block its drain"),
            DrainCheck { connection: kube.clone(), node: node.clone() },
        )
        .after(&other_ready)
        .retry(a_few_times())
        .timeout_ms(MINUTE_MS)
        .tolerate_failure()
        .add();
    let drain = wf
        .step(
            "drain",
            &format!("kubectl drain {node} --ignore-daemonsets (Eviction API, disruption budgets respected)"),
            Drain { connection: kube.clone(), node: node.clone(), force: false, delete_emptydir_data: true, backoff_ms: 500, max_backoff_ms: 5_000 },
        )
        .after_settled(&capacity)
        .when(Condition::succeeded(&capacity))
        .retry(a_few_times())
        .timeout_ms(10 * MINUTE_MS)
        .tolerate_failure()
        .add();
    let moved = wf
        .step("moved", &format!("every pod Running and Ready with {node} drained"), UnhealthyPods { connection: kube.clone(), namespace: None, fail_if_any: true })
        .after(&drain)
        .retry(converging(Duration::from_secs(300)))
        .timeout_ms(MINUTE_MS)
        .tolerate_failure()
        .add();
    let mut record = wf.step(
        "record",
        "the drill's result: which checks passed, which did not",
        Record {
            what: "monthly DR drill".into(),
            checks: vec![
                backups.id().clone(),
                trial.id().clone(),
                apply.id().clone(),
                ready.id().clone(),
                capacity.id().clone(),
                drain.id().clone(),
                moved.id().clone(),
            ],
        },
    );
    record = record.after_settled(&backups).after_settled(&trial).after_settled(&apply).after_settled(&ready).after_settled(&capacity).after_settled(&drain).after_settled(&moved);
    record.retry(a_few_times()).timeout_ms(MINUTE_MS).add();

    // Cleanup: however the drill ends.
    wf.step("uncordon", &format!("kubectl uncordon {node}"), Uncordon { connection: kube.clone(), node: node.clone() })
        .cleanup()
        .retry(a_few_times())
        .timeout_ms(2 * MINUTE_MS)
        .add();
    wf.step("remove-test-resources", &format!("the test resources and namespace {namespace} removed"), DeleteManifests { params: manifests })
        .cleanup()
        .retry(a_few_times())
        .timeout_ms(5 * MINUTE_MS)
        .add();
    Ok(wf.build())
}
