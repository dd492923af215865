//! `network-recovery` (level 1): kube-proxy and CoreDNS — the guide's
//! "transient network failure".
//!
//! 1. `endpoints`: which Services have no ready endpoints (`kubectl get endpoints -A`); evidence only.
//! 2. `restart-kube-proxy`: `kubectl rollout restart daemonset/kube-proxy -n kube-system`, waited on.
//! 3. `restart-coredns`: `kubectl rollout restart deployment/coredns -n kube-system`, waited on.
//! 4. `verify-dns`: CoreDNS pods Ready and `kube-dns` endpoints populated (the
//!    guide's `nslookup kubernetes.default` from every pod, checked from the API).
//! 5. `verify-endpoints`: no Service left without ready endpoints.
//!
//! Every step is idempotent: a restart run twice only restarts twice.

use std::collections::BTreeMap;
use std::time::Duration;

use dr_orchestrator::{CatalogError, ParamSpec, WorkflowBuilder, WorkflowDef, WorkflowInfo};

use super::{a_few_times, converging, NeededBy, MINUTE_MS};
use crate::actions::kube::health::{DnsCheck, EndpointsUnready};
use crate::actions::kube::pods::{RolloutRestart, WorkloadKind};
use crate::config::Config;
use crate::params::Params;
use crate::Recovery;

pub const NAME: &str = "network-recovery";

pub(crate) const RECOVERY: Recovery = Recovery { info, build };

fn info() -> WorkflowInfo {
    WorkflowInfo {
        name: NAME,
        level: 1,
        description: "kube-proxy / CoreDNS: restart both, verify DNS and endpoints",
        params: Vec::<ParamSpec>::new(),
    }
}

fn build(config: &Config, values: &BTreeMap<String, String>) -> Result<WorkflowDef, CatalogError> {
    let info = info();
    Params::new(&info, values)?;
    let kube = config.kube_connection().needed_by(NAME)?;
    let mut wf = WorkflowBuilder::new(NAME, info.level, info.description);
    let endpoints = wf
        .step(
            "endpoints",
            "Services without ready endpoints (evidence)",
            EndpointsUnready { connection: kube.clone(), namespace: None, fail_if_any: false },
        )
        .retry(a_few_times())
        .timeout_ms(MINUTE_MS)
        .add();
    let restart = |name: &str, workload: WorkloadKind| RolloutRestart {
        connection: kube.clone(),
        namespace: "kube-system".into(),
        workload,
        name: name.into(),
        wait: true,
    };
    let kube_proxy = wf
        .step(
            "restart-kube-proxy",
            "kubectl rollout restart daemonset/kube-proxy -n kube-system, waited on",
            restart("kube-proxy", WorkloadKind::DaemonSet),
        )
        .after(&endpoints)
        .retry(a_few_times())
        .timeout_ms(5 * MINUTE_MS)
        .expected_ms(20_000)
        .add();
    let coredns = wf
        .step(
            "restart-coredns",
            "kubectl rollout restart deployment/coredns -n kube-system, waited on",
            restart("coredns", WorkloadKind::Deployment),
        )
        .after(&kube_proxy)
        .retry(a_few_times())
        .timeout_ms(5 * MINUTE_MS)
        .expected_ms(20_000)
        .add();
    let dns = wf
        .step(
            "verify-dns",
            "CoreDNS Ready and kube-dns endpoints populated",
            DnsCheck {
                connection: kube.clone(),
                namespace: "kube-system".into(),
                selector: "k8s-app=kube-dns".into(),
                service: "kube-dns".into(),
            },
        )
        .after(&coredns)
        .retry(converging(Duration::from_secs(120)))
        .timeout_ms(MINUTE_MS)
        .expected_ms(2_000)
        .add();
    wf.step(
        "verify-endpoints",
        "no Service left without ready endpoints",
        EndpointsUnready { connection: kube, namespace: None, fail_if_any: true },
    )
    .after(&dns)
    .retry(converging(Duration::from_secs(120)))
    .timeout_ms(MINUTE_MS)
    .expected_ms(2_000)
    .add();
    Ok(wf.build())
}
