//! `argocd-recovery` (level 2): ArgoCD down.
//!
//! The guide's "ArgoCD障害" made safe:
//! 1. `pods`: the argocd pods that are not Ready (`kubectl get pods -n argocd`); evidence.
//! 2. `restart-argocd`: `kubectl rollout restart` of every workload of the
//!    namespace, found at run time — Deployments and the application
//!    controller, a StatefulSet upstream — each waited on (instead of
//!    `delete pods --all` and `kubectl wait`).
//! 3. `apps`: the Applications with their sync and health; evidence.
//! 4. `sync`: a sync of every Application, never patched over an operation
//!    already in progress (dr's own is taken up), waited on.
//! 5. `verify`: every Application Synced and Healthy.

use std::collections::BTreeMap;
use std::time::Duration;

use dr_orchestrator::{CatalogError, ParamSpec, WorkflowBuilder, WorkflowDef, WorkflowInfo};

use super::{a_few_times, converging, NeededBy, MINUTE_MS};
use crate::actions::kube::argocd::{ArgoApps, ArgoSync};
use crate::actions::kube::pods::{RestartWorkloads, UnhealthyPods};
use crate::config::Config;
use crate::params::Params;
use crate::Recovery;

pub const NAME: &str = "argocd-recovery";

pub(crate) const RECOVERY: Recovery = Recovery { info, build };

fn info() -> WorkflowInfo {
    WorkflowInfo {
        name: NAME,
        level: 2,
        description: "ArgoCD down: restart its workloads, sync every application, wait Synced/Healthy",
        params: vec![ParamSpec { name: "namespace", description: "ArgoCD's namespace", default: Some("argocd") }],
    }
}

fn build(config: &Config, values: &BTreeMap<String, String>) -> Result<WorkflowDef, CatalogError> {
    let info = info();
    let p = Params::new(&info, values)?;
    let namespace = p.string("namespace").unwrap_or("argocd").to_owned();
    let kube = config.kube_connection().needed_by(NAME)?;
    let mut wf = WorkflowBuilder::new(NAME, info.level, info.description);
    let pods = wf
        .step(
            "pods",
            &format!("pods of {namespace} that are not Ready (evidence)"),
            UnhealthyPods { connection: kube.clone(), namespace: Some(namespace.clone()), fail_if_any: false },
        )
        .retry(a_few_times())
        .timeout_ms(MINUTE_MS)
        .add();
    let restart = wf
        .step(
            "restart-argocd",
            &format!("kubectl rollout restart of every Deployment and StatefulSet in {namespace}, waited on"),
            RestartWorkloads::in_namespace(kube.clone(), &namespace),
        )
        .after(&pods)
        .retry(a_few_times())
        .timeout_ms(10 * MINUTE_MS)
        .expected_ms(60_000)
        .add();
    let apps = wf
        .step(
            "apps",
            "the Applications with their sync and health (evidence)",
            ArgoApps { connection: kube.clone(), namespace: namespace.clone(), require_healthy: false },
        )
        .after(&restart)
        .retry(converging(Duration::from_secs(120)))
        .timeout_ms(MINUTE_MS)
        .add();
    let sync = wf
        .step(
            "sync",
            "sync every Application (none patched over an operation in progress), waited on",
            ArgoSync { connection: kube.clone(), namespace: namespace.clone(), apps: Vec::new(), prune: false, wait: true },
        )
        .after(&apps)
        .retry(a_few_times())
        .timeout_ms(15 * MINUTE_MS)
        .expected_ms(60_000)
        .add();
    wf.step(
        "verify",
        "every Application Synced and Healthy",
        ArgoApps { connection: kube, namespace, require_healthy: true },
    )
    .after(&sync)
    .retry(converging(Duration::from_secs(300)))
    .timeout_ms(MINUTE_MS)
    .add();
    Ok(wf.build())
}
