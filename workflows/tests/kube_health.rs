//! The read-only Kubernetes checks against the lab's simulated API server:
//! on the healthy cluster no endpoints are unready, DNS and the cluster
//! summary are healthy; the network fault empties the kube-dns endpoints,
//! fails the DNS check and shows kube-system pods unhealthy until coredns
//! and kube-proxy are rollout-restarted; a stopped kubelet shows in the
//! summary; a crash loop's warnings come out of the events sorted by time.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

mod support;

use std::time::Duration;

use dr_orchestrator::{ActionCtx, ActionError, TypedAction};
use dr_lab::kube::{ApiServer, KubeOptions};
use dr_workflows::actions::kube::health::{
    ClusterHealth, ClusterReport, DnsCheck, DnsReport, EndpointsReport, EndpointsUnready, EventInfo, RecentEvents,
};
use dr_workflows::actions::kube::pods::{RolloutReport, RolloutRestart, UnhealthyPods, UnhealthyPodsReport, WorkloadKind};
use dr_workflows::actions::kube::KubeConnection;
use serde_json::json;

/// The shared fixture, with this file's helpers.
struct Lab(support::KubeLab);

impl std::ops::Deref for Lab {
    type Target = support::KubeLab;
    fn deref(&self) -> &support::KubeLab {
        &self.0
    }
}

impl Lab {
    async fn start() -> Lab {
        Lab(support::KubeLab::start().await)
    }

    fn dns(&self) -> DnsCheck {
        DnsCheck {
            connection: self.connection(),
            namespace: "kube-system".into(),
            selector: "k8s-app=kube-dns".into(),
            service: "kube-dns".into(),
        }
    }

    fn endpoints(&self) -> EndpointsUnready {
        EndpointsUnready { connection: self.connection(), namespace: None, fail_if_any: false }
    }

    fn health(&self) -> ClusterHealth {
        ClusterHealth { connection: self.connection(), fail_if_unhealthy: false }
    }
}

fn ctx(timeout: Duration) -> ActionCtx {
    support::ctx(timeout, "kube")
}

async fn run<A: TypedAction>(action: &A) -> Result<A::Output, ActionError> {
    support::run_report(action, ctx(Duration::from_secs(20))).await
}

/// Runs `action` until `done` accepts its result (as a workflow's retries would), at most 10 s.
async fn until<A: TypedAction>(action: &A, done: impl Fn(&Result<A::Output, ActionError>) -> bool) -> Result<A::Output, ActionError> {
    for _ in 0..200 {
        let result = run(action).await;
        if done(&result) {
            return result;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the condition never held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_cluster_passes_every_check() {
    let lab = Lab::start().await;
    let endpoints: EndpointsReport = run(&lab.endpoints()).await.unwrap();
    assert!(endpoints.checked >= 5 && endpoints.unready.is_empty(), "{endpoints:?}");
    let dns: DnsReport = run(&lab.dns()).await.unwrap();
    assert!(dns.healthy && dns.pods == 2 && dns.ready_pods == 2 && dns.ready_addresses == 2, "{dns:?}");
    let health: ClusterReport = run(&lab.health()).await.unwrap();
    assert!(health.healthy, "{health:?}");
    assert_eq!(health.nodes.len(), 3);
    assert!(health.nodes.iter().all(|n| n.ready && n.problems.is_empty()), "{health:?}");
    assert!(health.nodes.iter().any(|n| n.roles == ["control-plane"]), "{health:?}");
    assert!(health.kube_system_pods >= 5 && health.kube_system_unhealthy.is_empty(), "{health:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_network_fault_fails_dns_until_coredns_and_kube_proxy_are_restarted() {
    let lab = Lab::start().await;
    lab.server.control("faults/network", json!({})).unwrap();

    let error = until(&lab.dns(), Result::is_err).await.unwrap_err();
    assert!(error.retryable && error.message.contains("cluster DNS unhealthy") && error.message.contains("coredns"), "{error:?}");
    let endpoints: EndpointsReport =
        until(&lab.endpoints(), |r: &Result<EndpointsReport, _>| r.as_ref().is_ok_and(|e| !e.unready.is_empty())).await.unwrap();
    assert!(endpoints.unready.iter().any(|e| e.namespace == "kube-system" && e.name == "kube-dns" && e.not_ready == 2), "{endpoints:?}");
    let strict = EndpointsUnready { fail_if_any: true, ..lab.endpoints() };
    let error = strict.run(&ctx(Duration::from_secs(5))).await.unwrap_err();
    assert!(error.message.contains("kube-system/kube-dns"), "{error:?}");

    let health: ClusterReport = until(&lab.health(), |r: &Result<ClusterReport, _>| {
        r.as_ref().is_ok_and(|h| h.kube_system_unhealthy.iter().any(|p| p.name.starts_with("kube-proxy")))
    })
    .await
    .unwrap();
    assert!(!health.healthy);
    // What to restart: the DaemonSet and the Deployment, not their pods.
    let pods = UnhealthyPods { connection: lab.connection(), namespace: Some("kube-system".into()), fail_if_any: false };
    let report: UnhealthyPodsReport = until(&pods, |r: &Result<UnhealthyPodsReport, _>| r.as_ref().is_ok_and(|p| p.restart.len() == 2)).await.unwrap();
    let restart: Vec<String> = report.restart.iter().map(ToString::to_string).collect();
    assert_eq!(restart, ["daemonset/kube-proxy -n kube-system", "deployment/coredns -n kube-system"], "{report:?}");
    let strict = ClusterHealth { fail_if_unhealthy: true, ..lab.health() };
    let error = strict.run(&ctx(Duration::from_secs(5))).await.unwrap_err();
    assert!(error.retryable && error.message.contains("unhealthy"), "{error:?}");

    for (workload, name) in [(WorkloadKind::DaemonSet, "kube-proxy"), (WorkloadKind::Deployment, "coredns")] {
        let restart = RolloutRestart { connection: lab.connection(), namespace: "kube-system".into(), workload, name: name.into(), wait: true };
        let report: RolloutReport = run(&restart).await.unwrap();
        assert!(report.complete, "{report:?}");
    }
    let dns: DnsReport = until(&lab.dns(), Result::is_ok).await.unwrap();
    assert!(dns.healthy && dns.ready_addresses == 2, "{dns:?}");
    let health: ClusterReport = until(&lab.health(), |r: &Result<ClusterReport, _>| r.as_ref().is_ok_and(|h| h.healthy)).await.unwrap();
    assert!(health.kube_system_unhealthy.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_kubelet_shows_in_the_cluster_summary() {
    let lab = Lab::start().await;
    lab.server.control("nodes/k8s-worker-2/kubelet", json!({"state": "stopped"})).unwrap();
    let health: ClusterReport = until(&lab.health(), |r: &Result<ClusterReport, _>| r.as_ref().is_ok_and(|h| !h.healthy)).await.unwrap();
    let node = health.nodes.iter().find(|n| n.name == "k8s-worker-2").unwrap();
    assert!(!node.ready && node.problems.iter().any(|p| p.starts_with("Ready=")), "{node:?}");
    assert!(health.nodes.iter().filter(|n| n.name != "k8s-worker-2").all(|n| n.ready), "{health:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_shows_in_the_recent_events_sorted_by_time() {
    let lab = Lab::start().await;
    lab.server.control("faults/pod-crash", json!({"namespace": "demo", "deployment": "web"})).unwrap();
    let warnings = RecentEvents { connection: lab.connection(), namespace: "demo".into(), limit: 50, warnings_only: true };
    let events: Vec<EventInfo> =
        until(&warnings, |r: &Result<Vec<EventInfo>, _>| r.as_ref().is_ok_and(|e| e.iter().any(|e| e.reason == "BackOff"))).await.unwrap();
    assert!(events.iter().all(|e| e.type_ == "Warning"), "{events:?}");
    assert!(events.iter().any(|e| e.object.starts_with("pod/web-")), "{events:?}");

    let all = RecentEvents { connection: lab.connection(), namespace: "demo".into(), limit: 3, warnings_only: false };
    let events: Vec<EventInfo> = run(&all).await.unwrap();
    assert_eq!(events.len(), 3, "limited to the most recent: {events:?}");
    let times: Vec<&str> = events.iter().map(|e| e.time.as_deref().unwrap()).collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "oldest first, as --sort-by=.lastTimestamp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checks_speak_https_with_the_kubeconfig_ca() {
    let server = ApiServer::start(KubeOptions { tls: true, ..KubeOptions::default() }).await.expect("api server starts");
    server.wait_healthy(Duration::from_secs(20)).await.expect("cluster healthy");
    assert!(server.url().starts_with("https://"));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let health = ClusterHealth { connection: KubeConnection { kubeconfig: Some(kubeconfig), context: None }, fail_if_unhealthy: true };
    let report: ClusterReport = run(&health).await.unwrap();
    assert!(report.healthy && report.nodes.len() == 3, "{report:?}");
}
