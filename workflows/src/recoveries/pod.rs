//! `pod-recovery` (level 1): pods that are not Running and Ready.
//!
//! The guide's "Pod異常終了" made safe:
//! 1. `find`: every pod that is not Running/Succeeded or not Ready, with its
//!    owner chain (pod → ReplicaSet → Deployment) — Ready-based, not
//!    `grep -v Running` (a crash-looping pod can be Running).
//! 2. `restart-owners`: `kubectl rollout restart` of the owners `find`
//!    recorded (Deployments, DaemonSets, StatefulSets), each waited on. A pod
//!    without an owner is named, never deleted: nothing would bring it back.
//!    Never `delete pods --all`.
//! 3. `verify`: no unhealthy pod left, retried while the rollouts settle.
//! 4. `events`: the recent warnings of the namespace (`kubectl get events
//!    --sort-by=.lastTimestamp`), when a namespace is given; evidence.

use std::collections::BTreeMap;
use std::time::Duration;

use dr_orchestrator::{CatalogError, ParamSpec, WorkflowBuilder, WorkflowDef, WorkflowInfo};

use super::{a_few_times, converging, NeededBy, MINUTE_MS};
use crate::actions::kube::health::RecentEvents;
use crate::actions::kube::pods::{RestartWorkloads, UnhealthyPods};
use crate::config::Config;
use crate::params::Params;
use crate::Recovery;

pub const NAME: &str = "pod-recovery";

pub(crate) const RECOVERY: Recovery = Recovery { info, build };

fn info() -> WorkflowInfo {
    WorkflowInfo {
        name: NAME,
        level: 1,
        description: "pods not Running/Ready: restart their owners (found at run time), verify; never delete pods --all",
        params: vec![ParamSpec { name: "namespace", description: "only this namespace (default: every namespace)", default: None }],
    }
}

fn build(config: &Config, values: &BTreeMap<String, String>) -> Result<WorkflowDef, CatalogError> {
    let info = info();
    let p = Params::new(&info, values)?;
    let namespace = p.string("namespace").map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned);
    let kube = config.kube_connection().needed_by(NAME)?;
    let mut wf = WorkflowBuilder::new(NAME, info.level, info.description);
    let find = wf
        .step(
            "find",
            "pods not Running/Ready, with the workloads that own them",
            UnhealthyPods { connection: kube.clone(), namespace: namespace.clone(), fail_if_any: false },
        )
        .retry(a_few_times())
        .timeout_ms(MINUTE_MS)
        .add();
    let restart = wf
        .step("restart-owners", "kubectl rollout restart of each owner found, waited on", RestartWorkloads::owners_found_by(kube.clone(), &find))
        .after(&find)
        .retry(a_few_times())
        .timeout_ms(10 * MINUTE_MS)
        .expected_ms(20_000)
        .add();
    let verify = wf
        .step("verify", "no pod left that is not Running and Ready", UnhealthyPods { connection: kube.clone(), namespace: namespace.clone(), fail_if_any: true })
        .after(&restart)
        .retry(converging(Duration::from_secs(180)))
        .timeout_ms(MINUTE_MS)
        .expected_ms(2_000)
        .add();
    if let Some(namespace) = namespace {
        wf.step(
            "events",
            &format!("recent warnings in {namespace} (kubectl get events --sort-by=.lastTimestamp)"),
            RecentEvents { connection: kube, namespace, limit: 20, warnings_only: true },
        )
        .after(&verify)
        .retry(a_few_times())
        .timeout_ms(MINUTE_MS)
        .tolerate_failure()
        .add();
    }
    Ok(wf.build())
}
