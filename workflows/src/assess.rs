//! `dr assess`: the guide's initial response (alert → assess → classify the
//! level) as read-only checks — the API, every node over ssh, etcd, the nodes'
//! readiness, kube-system, DNS and endpoints, ArgoCD, unhealthy pods, the
//! backups against the RPO, the ingress — and a verdict: the failure level
//! and the workflow to run (with its parameters), with the evidence.
//!
//! Owns: the checks' order and the classification rules ([`classify`], pure,
//! tested on its own). Refuses: changing anything — every check only reads.

use std::collections::BTreeMap;
use std::sync::Arc;

use dr_orchestrator::{ActionCtx, ActionError, RunId, SystemClock, TypedAction};
use serde::Serialize;

use crate::actions::http::{HttpCheckAction, HttpCheckParams};
use crate::actions::kube::argocd::ArgoApps;
use crate::actions::kube::health::{ClusterHealth, ClusterReport, DnsCheck, EndpointsUnready};
use crate::actions::kube::pods::UnhealthyPods;
use crate::actions::ssh::pool;
use crate::config::{probe, Config, Role};

/// One check and what it found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Evidence {
    pub check: String,
    pub ok: bool,
    pub detail: String,
}

/// What the checks add up to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Assessment {
    /// The failure level (1–4); `None` when nothing is wrong, or nothing the guide names.
    pub level: Option<u8>,
    pub workflow: Option<String>,
    pub params: BTreeMap<String, String>,
    /// Why, in one sentence.
    pub reason: String,
    pub evidence: Vec<Evidence>,
}

impl Assessment {
    /// The command to run, when there is a workflow.
    pub fn command(&self) -> Option<String> {
        let workflow = self.workflow.as_ref()?;
        let params: String = self.params.iter().map(|(k, v)| format!(" -p {k}={v}")).collect();
        Some(format!("dr start {workflow}{params}"))
    }
}

/// The facts the classification reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub api_ok: bool,
    pub etcd_ok: bool,
    pub control_plane_reachable: bool,
    pub nodes_reachable: usize,
    pub nodes_total: usize,
    /// Workers the API shows NotReady.
    pub workers_not_ready: Vec<String>,
    /// ArgoCD's own pods Ready.
    pub argocd_ok: bool,
    /// Every Application Synced and Healthy.
    pub apps_ok: bool,
    pub dns_ok: bool,
    pub unhealthy_pods: usize,
}

/// The guide's classification, most severe first.
pub fn classify(f: &Facts) -> (Option<u8>, Option<&'static str>, BTreeMap<String, String>, String) {
    let none = BTreeMap::new();
    if f.nodes_total > 0 && f.nodes_reachable == 0 && !f.api_ok {
        return (Some(4), Some("complete-recovery"), none, "no node answers over ssh and the API is down: the host is lost".into());
    }
    if !f.control_plane_reachable && !f.api_ok {
        return (Some(3), Some("control-plane-recovery"), none, "the control plane does not answer (ssh, API): it is lost".into());
    }
    if !f.etcd_ok {
        return (Some(3), Some("etcd-recovery"), none, "the control plane answers but etcd does not: its data is damaged or it is down".into());
    }
    if !f.api_ok {
        return (Some(3), Some("control-plane-recovery"), none, "etcd answers but the API server does not".into());
    }
    if let Some(worker) = f.workers_not_ready.first() {
        let params = BTreeMap::from([("node".to_owned(), worker.clone())]);
        return (Some(2), Some("worker-node-recovery"), params, format!("worker {worker} is NotReady"));
    }
    if !f.argocd_ok {
        return (Some(2), Some("argocd-recovery"), none, "ArgoCD's own pods are not Ready".into());
    }
    if !f.dns_ok {
        return (Some(1), Some("network-recovery"), none, "cluster DNS or Service endpoints are broken".into());
    }
    // Crashing pods also make their Applications Degraded: the pods come first.
    if f.unhealthy_pods > 0 {
        return (Some(1), Some("pod-recovery"), none, format!("{} pods are not Running and Ready", f.unhealthy_pods));
    }
    if !f.apps_ok {
        return (Some(2), Some("argocd-recovery"), none, "ArgoCD Applications are not Synced and Healthy".into());
    }
    (None, None, none, "every check passed: no incident".into())
}

fn evidence<T>(check: &str, result: &Result<T, ActionError>, ok_detail: impl FnOnce(&T) -> String) -> Evidence {
    match result {
        Ok(value) => Evidence { check: check.to_owned(), ok: true, detail: ok_detail(value) },
        Err(e) => Evidence { check: check.to_owned(), ok: false, detail: e.message.clone() },
    }
}

/// Runs every check (read-only) and classifies.
pub async fn assess(config: &Config) -> Assessment {
    let mut facts = Facts { nodes_total: config.nodes.len(), ..Facts::default() };
    let mut found = Vec::new();
    // Reachability: API, etcd, every node over ssh, backups (the `dr config check --connect` probes).
    for p in probe::probe(config).await {
        let ok = p.ok;
        match p.name.as_str() {
            "api" => facts.api_ok = ok,
            "etcd" => facts.etcd_ok = ok,
            "terraform" | "scripts" => continue,
            name if name.starts_with("ssh ") => {
                facts.nodes_reachable += usize::from(ok);
                let node = &name[4..];
                if config.control_plane().is_some_and(|cp| cp.name == node) {
                    facts.control_plane_reachable = ok;
                }
            }
            _ => {}
        }
        found.push(Evidence { check: p.name, ok, detail: p.detail.or(p.error).unwrap_or_default() });
    }
    // The API answered only if `[cluster]` is there (no probe without it).
    if let (true, Ok(kube)) = (facts.api_ok, config.kube_connection()) {
        let run = RunId::new_v7(0, u128::from(std::process::id()) << 32 | 0xa55e);
        let ctx = ActionCtx { run_id: run, ..ActionCtx::detached("assess", Arc::new(SystemClock)) };
        let cluster = ClusterHealth { connection: kube.clone(), fail_if_unhealthy: false }.run(&ctx).await;
        if let Ok(report) = &cluster {
            facts.workers_not_ready = not_ready_workers(config, report);
        }
        let mut nodes = evidence("nodes", &cluster, |r: &ClusterReport| {
            let ready = r.nodes.iter().filter(|n| n.ready).count();
            format!("{ready} of {} nodes Ready; {} of {} kube-system pods unhealthy", r.nodes.len(), r.kube_system_unhealthy.len(), r.kube_system_pods)
        });
        nodes.ok &= cluster.as_ref().is_ok_and(|r| r.healthy);
        found.push(nodes);
        let dns = DnsCheck { connection: kube.clone(), namespace: "kube-system".into(), selector: "k8s-app=kube-dns".into(), service: "kube-dns".into() }
            .run(&ctx)
            .await;
        let endpoints = EndpointsUnready { connection: kube.clone(), namespace: None, fail_if_any: true }.run(&ctx).await;
        // Services without endpoints are evidence; DNS decides the network scenario (crashing pods empty their Services too).
        facts.dns_ok = dns.is_ok();
        found.push(evidence("dns", &dns, |r| format!("{} CoreDNS pods Ready", r.ready_pods)));
        found.push(evidence("endpoints", &endpoints, |r| format!("{} Services, all with ready endpoints", r.checked)));
        let apps = ArgoApps { connection: kube.clone(), namespace: "argocd".into(), require_healthy: true }.run(&ctx).await;
        let argocd_pods = UnhealthyPods { connection: kube.clone(), namespace: Some("argocd".into()), fail_if_any: true }.run(&ctx).await;
        facts.argocd_ok = argocd_pods.is_ok();
        facts.apps_ok = apps.is_ok();
        found.push(evidence("argocd", &apps, |a| format!("{} Applications Synced and Healthy", a.len())));
        found.push(evidence("argocd pods", &argocd_pods, |r| format!("{} pods Ready", r.checked)));
        let pods = UnhealthyPods { connection: kube, namespace: None, fail_if_any: false }.run(&ctx).await;
        facts.unhealthy_pods = pods.as_ref().map_or(0, |r| r.unhealthy.len());
        found.push(match &pods {
            Ok(r) if r.unhealthy.is_empty() => Evidence { check: "pods".into(), ok: true, detail: format!("{} pods, all Running and Ready", r.checked) },
            Ok(r) => Evidence { check: "pods".into(), ok: false, detail: format!("not Running/Ready: {}", r.names().join(", ")) },
            Err(e) => Evidence { check: "pods".into(), ok: false, detail: e.message.clone() },
        });
        if let Ok(verify) = config.verify() {
            let ingress = HttpCheckAction::new(HttpCheckParams::new(&verify.ingress_url)).run(&ctx).await;
            found.push(evidence("ingress", &ingress, |r| format!("{} answered {}", verify.ingress_url, r.status)));
        }
        pool::close_run(run);
    }
    let (level, workflow, params, reason) = classify(&facts);
    Assessment { level, workflow: workflow.map(str::to_owned), params, reason, evidence: found }
}

fn not_ready_workers(config: &Config, report: &ClusterReport) -> Vec<String> {
    let workers: Vec<&str> = config.nodes.iter().filter(|n| n.role == Role::Worker).map(|n| n.name.as_str()).collect();
    let mut out: Vec<String> = report.nodes.iter().filter(|n| !n.ready && workers.contains(&n.name.as_str())).map(|n| n.name.clone()).collect();
    // A worker the API does not list at all is not Ready either.
    out.extend(workers.iter().filter(|w| !report.nodes.iter().any(|n| n.name == **w)).map(|w| (*w).to_owned()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> Facts {
        Facts {
            api_ok: true,
            etcd_ok: true,
            control_plane_reachable: true,
            nodes_reachable: 3,
            nodes_total: 3,
            workers_not_ready: vec![],
            argocd_ok: true,
            apps_ok: true,
            dns_ok: true,
            unhealthy_pods: 0,
        }
    }

    fn check(change: impl FnOnce(&mut Facts), level: Option<u8>, workflow: Option<&str>) {
        let mut facts = healthy();
        change(&mut facts);
        let (l, w, _, reason) = classify(&facts);
        assert_eq!((l, w), (level, workflow), "{facts:?}: {reason}");
    }

    #[test]
    fn the_most_severe_symptom_decides_the_level_and_the_workflow() {
        check(|_| {}, None, None);
        check(|f| f.unhealthy_pods = 2, Some(1), Some("pod-recovery"));
        check(|f| f.dns_ok = false, Some(1), Some("network-recovery"));
        check(|f| f.argocd_ok = false, Some(2), Some("argocd-recovery"));
        check(|f| f.apps_ok = false, Some(2), Some("argocd-recovery"));
        check(|f| { f.apps_ok = false; f.unhealthy_pods = 2 }, Some(1), Some("pod-recovery"));
        check(|f| f.workers_not_ready = vec!["k8s-worker-1".into()], Some(2), Some("worker-node-recovery"));
        check(|f| f.etcd_ok = false, Some(3), Some("etcd-recovery"));
        check(|f| { f.etcd_ok = false; f.api_ok = false; f.control_plane_reachable = false }, Some(3), Some("control-plane-recovery"));
        check(|f| { f.etcd_ok = false; f.api_ok = false; f.control_plane_reachable = false; f.nodes_reachable = 0 }, Some(4), Some("complete-recovery"));
        let mut f = healthy();
        f.workers_not_ready = vec!["k8s-worker-2".into()];
        let (_, _, params, _) = classify(&f);
        assert_eq!(params.get("node").map(String::as_str), Some("k8s-worker-2"));
    }
}
