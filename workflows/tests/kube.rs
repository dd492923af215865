//! The Kubernetes actions against the lab's simulated API server: unhealthy
//! pods found with their Deployment owner, rollout restart replacing the pods
//! and clearing a crash loop, node wait (Ready as soon as it is, a clean
//! timeout when it never is), cordon / uncordon, drain (DaemonSet pods
//! stay, PDB-blocked evictions retried until allowed or the deadline), pod
//! deletion waited on, ArgoCD sync, health checks, and the API server down
//! or answering 500.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use dr_orchestrator::{Action, ActionCtx, ActionError, Typed, TypedAction};
use dr_lab::kube::{resources, ResourceType};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use dr_workflows::actions::kube::nodes::{Cordon, Drain, DrainReport, NodeWaitReady, NodeWaitReport, Uncordon};
use dr_workflows::actions::kube::pods::{
    DeletePods, DeletePodsReport, RolloutReport, RolloutRestart, UnhealthyPods, UnhealthyPodsReport, WorkloadKind,
};
use dr_workflows::actions::kube::KubeConnection;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

/// The shared fixture, with this file's helpers.
struct Lab(support::KubeLab);

impl std::ops::Deref for Lab {
    type Target = support::KubeLab;
    fn deref(&self) -> &support::KubeLab {
        &self.0
    }
}

impl std::ops::DerefMut for Lab {
    fn deref_mut(&mut self) -> &mut support::KubeLab {
        &mut self.0
    }
}

impl Lab {
    async fn start() -> Lab {
        Lab(support::KubeLab::start().await)
    }

    /// The pods of a namespace with a label, as the store holds them.
    fn pods(&self, namespace: &str, label: (&str, &str)) -> Vec<Value> {
        let world = self.server.shared().lock();
        world.store.list(&resources::PODS, Some(namespace)).into_iter().filter(|p| p["metadata"]["labels"][label.0] == label.1).collect()
    }

    fn uids(&self, namespace: &str, label: (&str, &str)) -> BTreeSet<String> {
        self.pods(namespace, label).iter().map(|p| p["metadata"]["uid"].as_str().unwrap_or_default().to_owned()).collect()
    }

    fn object(&self, rt: &ResourceType, namespace: &str, name: &str) -> Value {
        let world = self.server.shared().lock();
        world.store.get(rt, namespace, name).cloned().unwrap_or(Value::Null)
    }

    /// A merge patch through the API (wakes the controllers as kubectl would).
    async fn patch<K>(&self, namespace: Option<&str>, name: &str, patch: Value)
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let client = self.connection().connect().await.unwrap().client;
        let api: kube::Api<K> = kube::Api::namespaced(client, namespace.unwrap_or("default"));
        api.patch(name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await.unwrap();
    }
}

fn ctx(timeout: Duration) -> ActionCtx {
    support::ctx(timeout, "kube")
}

async fn run<A: TypedAction>(action: &A, timeout: Duration) -> Result<A::Output, ActionError> {
    support::run_report(action, ctx(timeout)).await
}

fn unhealthy(lab: &Lab) -> UnhealthyPods {
    UnhealthyPods { connection: lab.connection(), namespace: None, fail_if_any: false }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_restart_replaces_the_pods_and_waits_for_them() {
    let lab = Lab::start().await;
    let before = lab.uids("demo", ("app", "web"));
    assert_eq!(before.len(), 2, "web has 2 pods");
    let action = RolloutRestart {
        connection: lab.connection(),
        namespace: "demo".into(),
        workload: WorkloadKind::Deployment,
        name: "web".into(),
        wait: true,
    };
    let report: RolloutReport = run(&action, Duration::from_secs(20)).await.unwrap();
    assert!(report.complete, "{report:?}");
    assert_eq!((report.desired, report.updated, report.available), (2, 2, 2));
    let after = lab.uids("demo", ("app", "web"));
    assert_eq!(after.len(), 2, "two pods after the rollout: {after:?}");
    assert!(before.is_disjoint(&after), "every pod replaced: {before:?} -> {after:?}");
    for pod in lab.pods("demo", ("app", "web")) {
        let ready = pod["status"]["conditions"].as_array().unwrap().iter().any(|c| c["type"] == "Ready" && c["status"] == "True");
        assert!(ready, "new pod ready when the action returns: {pod}");
    }
    let annotations = &lab.object(&resources::DEPLOYMENTS, "demo", "web")["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["kubectl.kubernetes.io/restartedAt"], json!(report.restarted_at));

    // A DaemonSet too.
    let before = lab.uids("kube-system", ("k8s-app", "kube-proxy"));
    let action = RolloutRestart {
        connection: lab.connection(),
        namespace: "kube-system".into(),
        workload: WorkloadKind::DaemonSet,
        name: "kube-proxy".into(),
        wait: true,
    };
    let report: RolloutReport = run(&action, Duration::from_secs(20)).await.unwrap();
    assert!(report.complete && report.desired == 3 && report.available == 3, "{report:?}");
    let after = lab.uids("kube-system", ("k8s-app", "kube-proxy"));
    assert!(before.is_disjoint(&after), "kube-proxy pods replaced: {before:?} -> {after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_is_found_with_its_deployment_and_a_rollout_restart_clears_it() {
    let lab = Lab::start().await;
    let report: UnhealthyPodsReport = run(&unhealthy(&lab), Duration::from_secs(10)).await.unwrap();
    assert!(report.unhealthy.is_empty() && report.checked > 5, "healthy at first: {report:?}");

    lab.server.control("faults/pod-crash", json!({"namespace": "demo", "deployment": "api"})).unwrap();
    // The crash shows (the phase stays Running): poll the action as a workflow's retries would.
    let mut found = None;
    for _ in 0..100 {
        let report: UnhealthyPodsReport = run(&unhealthy(&lab), Duration::from_secs(10)).await.unwrap();
        if report.unhealthy.len() >= 2 {
            found = Some(report);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = found.expect("the crash-looping pods are found");
    let deployment = json!({"kind": "Deployment", "namespace": "demo", "name": "api"});
    assert_eq!(serde_json::to_value(&report.restart).unwrap(), json!([deployment]), "{report:?}");
    for pod in &report.unhealthy {
        assert_eq!(pod.namespace, "demo");
        assert_eq!(pod.phase, "Running", "a crash-looping pod stays Running: {pod:?}");
        assert!(!pod.ready);
        assert_eq!(pod.owner_chain.len(), 2, "{pod:?}");
        assert_eq!(pod.owner_chain[0].kind, "ReplicaSet");
        assert_eq!(serde_json::to_value(&pod.owner_chain[1]).unwrap(), deployment);
    }
    assert!(
        report.unhealthy.iter().any(|p| p.reasons.iter().any(|r| r.contains("CrashLoopBackOff"))),
        "the waiting reason is reported: {report:?}"
    );

    // As a verification step it fails, naming the pods and what to restart.
    let strict = UnhealthyPods { fail_if_any: true, ..unhealthy(&lab) };
    let error = strict.run(&ctx(Duration::from_secs(10))).await.unwrap_err();
    assert!(error.retryable && error.message.contains("deployment/api -n demo"), "{error:?}");

    let restart = RolloutRestart {
        connection: lab.connection(),
        namespace: "demo".into(),
        workload: WorkloadKind::Deployment,
        name: "api".into(),
        wait: true,
    };
    let rollout: RolloutReport = run(&restart, Duration::from_secs(20)).await.unwrap();
    assert!(rollout.complete, "{rollout:?}");
    let report: UnhealthyPodsReport = run(&unhealthy(&lab), Duration::from_secs(10)).await.unwrap();
    assert!(report.unhealthy.is_empty(), "the restart cleared the crash loop: {report:?}");
    strict.run(&ctx(Duration::from_secs(10))).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_wait_returns_when_the_node_turns_ready_and_times_out_cleanly_when_it_never_does() {
    let lab = Lab::start().await;
    let node = "k8s-worker-1";
    let wait = NodeWaitReady { connection: lab.connection(), node: node.into(), ready: true };

    lab.server.control(&format!("nodes/{node}/kubelet"), json!({"state": "stopped"})).unwrap();
    let not_ready = NodeWaitReady { ready: false, ..wait.clone() };
    let _ = run(&not_ready, Duration::from_secs(20)).await.unwrap();

    // Never Ready while the kubelet is stopped: a clean, retryable timeout naming the node.
    let started = std::time::Instant::now();
    let error = run(&wait, Duration::from_millis(800)).await.unwrap_err();
    let took = started.elapsed();
    assert!(error.retryable, "{error:?}");
    assert!(error.message.contains(node) && error.message.contains("deadline"), "{error:?}");
    assert!(took >= Duration::from_millis(700) && took < Duration::from_secs(5), "bounded by the deadline: {took:?}");

    // Started in the background: the wait returns soon after the node turns Ready.
    let control = {
        let url = lab.server.http_url();
        let node = node.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            post(&format!("{url}/lab/v1/nodes/{node}/kubelet"), json!({"state": "running"})).await;
        })
    };
    let started = std::time::Instant::now();
    assert!(wait.probe(&ctx(Duration::from_secs(5))).await.unwrap().is_none(), "not Ready yet");
    let report: NodeWaitReport = run(&wait, Duration::from_secs(60)).await.unwrap();
    let took = started.elapsed();
    control.await.unwrap();
    assert!(wait.probe(&ctx(Duration::from_secs(5))).await.unwrap().is_some());
    assert!(report.ready && report.condition.contains("Ready=True"), "{report:?}");
    assert!(took >= Duration::from_millis(450) && took < Duration::from_secs(5), "returned as the node turned Ready: {took:?}");
}

/// POST a JSON body over plain HTTP/1.1 (the lab's control routes).
async fn post(url: &str, body: Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let body = body.to_string();
    let request = format!(
        "POST /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordon_and_uncordon_set_the_node_unschedulable_and_probe_tells() {
    let lab = Lab::start().await;
    let cordon = Cordon { connection: lab.connection(), node: "k8s-worker-2".into() };
    let uncordon = Uncordon { connection: lab.connection(), node: "k8s-worker-2".into() };
    assert!(cordon.probe(&ctx(Duration::from_secs(5))).await.unwrap().is_none());
    // Through the engine's side: the kind, the summary line and the JSON value.
    let typed = Typed(cordon.clone());
    assert_eq!((typed.kind(), Typed(uncordon.clone()).kind()), ("kube.cordon", "kube.uncordon"));
    let output = typed.run(ctx(Duration::from_secs(5))).await.unwrap();
    assert_eq!(output.summary, "node k8s-worker-2 cordoned");
    assert_eq!(output.value, json!({"node": "k8s-worker-2", "unschedulable": true}));
    assert_eq!(lab.object(&resources::NODES, "", "k8s-worker-2")["spec"]["unschedulable"], json!(true));
    assert!(cordon.probe(&ctx(Duration::from_secs(5))).await.unwrap().is_some_and(|found| found.unschedulable));
    assert!(!run(&uncordon, Duration::from_secs(5)).await.unwrap().unschedulable);
    assert_ne!(lab.object(&resources::NODES, "", "k8s-worker-2")["spec"]["unschedulable"], json!(true));
    assert!(uncordon.probe(&ctx(Duration::from_secs(5))).await.unwrap().is_some());
}

fn pods_on(lab: &Lab, node: &str) -> Vec<Value> {
    let world = lab.server.shared().lock();
    world.store.list(&resources::PODS, None).into_iter().filter(|o| o["spec"]["nodeName"] == node).collect()
}

fn drain(lab: &Lab, node: &str) -> Drain {
    Drain {
        connection: lab.connection(),
        node: node.into(),
        force: false,
        delete_emptydir_data: true,
        backoff_ms: 50,
        max_backoff_ms: 200,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_evicts_all_but_daemonset_pods() {
    let lab = Lab::start().await;
    let node = "k8s-worker-1";
    let before = pods_on(&lab, node);
    let daemon = before.iter().filter(|p| p["metadata"]["ownerReferences"][0]["kind"] == "DaemonSet").count();
    assert!(daemon >= 1 && before.len() > daemon, "worker-1 runs daemonset and other pods: {}", before.len());

    assert!(drain(&lab, node).probe(&ctx(Duration::from_secs(5))).await.unwrap().is_none(), "not drained yet");
    let report: DrainReport = run(&drain(&lab, node), Duration::from_secs(30)).await.unwrap();
    assert!(drain(&lab, node).probe(&ctx(Duration::from_secs(5))).await.unwrap().is_some(), "the probe sees the drained node");
    assert_eq!(report.daemonset_pods.len(), daemon, "{report:?}");
    assert_eq!(report.evicted.len(), before.len() - daemon, "{report:?}");
    assert!(report.blocked.is_empty());
    let after = pods_on(&lab, node);
    assert!(
        after.iter().all(|p| p["metadata"]["ownerReferences"][0]["kind"] == "DaemonSet"),
        "only DaemonSet pods stay on the drained node: {after:?}"
    );
    assert_eq!(lab.object(&resources::NODES, "", node)["spec"]["unschedulable"], json!(true), "drain cordons");
}

/// A PDB on web that allows no disruption while web has 2 replicas.
async fn strict_pdb(lab: &Lab) {
    lab.patch::<PodDisruptionBudget>(Some("demo"), "web", json!({"spec": {"minAvailable": 2}})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pdb_blocked_eviction_is_retried_until_the_budget_allows_it_or_the_deadline_passes() {
    let lab = Lab::start().await;
    strict_pdb(&lab).await;
    let web_nodes: BTreeSet<String> =
        lab.pods("demo", ("app", "web")).iter().map(|p| p["spec"]["nodeName"].as_str().unwrap().to_owned()).collect();
    let node = web_nodes.iter().next().unwrap().clone();

    // The deadline passes: a retryable error naming the blocked pods and the budget.
    let error = run(&drain(&lab, &node), Duration::from_millis(1500)).await.unwrap_err();
    assert!(error.retryable, "{error:?}");
    assert!(error.message.contains("blocked") && error.message.contains("demo/web-"), "{error:?}");
    assert!(error.message.contains("disruption budget web"), "names the PDB: {error:?}");
    assert!(lab.pods("demo", ("app", "web")).iter().any(|p| p["spec"]["nodeName"] == node.as_str()), "web pod not evicted");

    // Scaled up in the background, the budget allows it and the drain finishes.
    let client = lab.connection().connect().await.unwrap().client;
    let scale = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let api: kube::Api<Deployment> = kube::Api::namespaced(client, "demo");
        let patch = json!({"spec": {"replicas": 3}});
        api.patch("web", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await.unwrap();
    });
    let report: DrainReport = run(&drain(&lab, &node), Duration::from_secs(30)).await.unwrap();
    scale.await.unwrap();
    assert!(report.rounds >= 2, "retried: {report:?}");
    assert!(report.evicted.iter().any(|p| p.starts_with("demo/web-")), "{report:?}");
    assert!(report.blocked.is_empty(), "{report:?}");
    assert!(pods_on(&lab, &node).iter().all(|p| p["metadata"]["ownerReferences"][0]["kind"] == "DaemonSet"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_refuses_pods_without_a_controller_unless_forced() {
    let lab = Lab::start().await;
    let node = "k8s-worker-2";
    {
        let client = lab.connection().connect().await.unwrap().client;
        let api: kube::Api<Pod> = kube::Api::namespaced(client, "default");
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "bare", "namespace": "default"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}})).unwrap();
        api.create(&kube::api::PostParams::default(), &pod).await.unwrap();
    }
    let error = run(&drain(&lab, node), Duration::from_secs(10)).await.unwrap_err();
    assert!(!error.retryable && error.message.contains("default/bare") && error.message.contains("force"), "{error:?}");
    assert!(pods_on(&lab, node).iter().any(|p| p["metadata"]["name"] == "bare"), "nothing evicted");

    let forced = Drain { force: true, ..drain(&lab, node) };
    let report: DrainReport = run(&forced, Duration::from_secs(30)).await.unwrap();
    assert!(report.evicted.contains(&"default/bare".to_owned()), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_pods_of_a_namespace_waits_until_they_are_ready_again() {
    let lab = Lab::start().await;
    let before = lab.uids("demo", ("app", "api"));
    let action = DeletePods { connection: lab.connection(), namespace: "demo".into(), selector: Some("app=api".into()), wait: true };
    let report: DeletePodsReport = run(&action, Duration::from_secs(20)).await.unwrap();
    assert_eq!(report.deleted.len(), 2, "{report:?}");
    assert_eq!(report.ready.len(), 2, "{report:?}");
    let after = lab.uids("demo", ("app", "api"));
    assert!(before.is_disjoint(&after) && after.len() == 2, "{before:?} -> {after:?}");
    // web untouched
    assert_eq!(lab.uids("demo", ("app", "web")).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_down_is_a_retryable_error_naming_it() {
    let mut lab = Lab::start().await;
    let url = lab.server.url();
    lab.server.shutdown();
    let error = run(&unhealthy(&lab), Duration::from_secs(10)).await.unwrap_err();
    assert!(error.retryable, "{error:?}");
    assert!(error.message.contains(&url) || error.message.contains(url.trim_start_matches("http://")), "names the server {url}: {error:?}");
    assert!(error.message.contains("cannot reach"), "{error:?}");

    // A wait on a down server ends at the deadline, naming the watch error.
    let wait = NodeWaitReady { connection: lab.connection(), node: "k8s-worker-1".into(), ready: true };
    let error = run(&wait, Duration::from_millis(700)).await.unwrap_err();
    assert!(error.retryable && error.message.contains("deadline"), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_answering_500_is_a_retryable_error_naming_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let body = "internal error";
                let answer = format!(
                    "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://{addr}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user:\n    token: t\n"
        ),
    )
    .unwrap();
    let connection = KubeConnection { kubeconfig: Some(kubeconfig), context: None };
    let action = UnhealthyPods { connection: connection.clone(), namespace: None, fail_if_any: false };
    let error = run(&action, Duration::from_secs(10)).await.unwrap_err();
    assert!(error.retryable, "{error:?}");
    assert!(error.message.contains(&addr.to_string()) && error.message.contains("500"), "{error:?}");

    let restart = RolloutRestart { connection, namespace: "demo".into(), workload: WorkloadKind::Deployment, name: "web".into(), wait: true };
    let error = run(&restart, Duration::from_secs(10)).await.unwrap_err();
    assert!(error.retryable && error.message.contains("500") && error.message.contains("deployment/web"), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_wait_or_drain_stops_promptly() {
    let lab = Lab::start().await;
    lab.server.control("nodes/k8s-worker-1/kubelet", json!({"state": "stopped"})).unwrap();
    let wait = NodeWaitReady { connection: lab.connection(), node: "k8s-worker-1".into(), ready: true };
    let context = ctx(Duration::from_secs(60));
    let cancel = context.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cancel.cancel();
    });
    let started = std::time::Instant::now();
    let error = wait.run(&context).await.unwrap_err();
    assert!(error.retryable && error.message.contains("cancelled"), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());

    // A PDB-blocked drain stops retrying when cancelled, naming the blocked pods (with the
    // kubelet back: an unready pod's eviction would not be held by the budget).
    lab.server.control("nodes/k8s-worker-1/kubelet", json!({"state": "running"})).unwrap();
    lab.server.wait_healthy(Duration::from_secs(20)).await.expect("healthy again");
    strict_pdb(&lab).await;
    let node = lab.pods("demo", ("app", "web"))[0]["spec"]["nodeName"].as_str().unwrap().to_owned();
    let context = ctx(Duration::from_secs(60));
    let cancel = context.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        cancel.cancel();
    });
    let started = std::time::Instant::now();
    let error = drain(&lab, &node).run(&context).await.unwrap_err();
    assert!(error.retryable && error.message.contains("cancelled") && error.message.contains("demo/web-"), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_node_or_workload_is_a_permanent_error() {
    let lab = Lab::start().await;
    let restart = RolloutRestart {
        connection: lab.connection(),
        namespace: "demo".into(),
        workload: WorkloadKind::Deployment,
        name: "nope".into(),
        wait: true,
    };
    let error = run(&restart, Duration::from_secs(5)).await.unwrap_err();
    assert!(!error.retryable && error.message.contains("404") && error.message.contains("deployment/nope -n demo"), "{error:?}");
    let cordon = Cordon { connection: lab.connection(), node: "k8s-worker-9".into() };
    let error = run(&cordon, Duration::from_secs(5)).await.unwrap_err();
    assert!(!error.retryable && error.message.contains("k8s-worker-9"), "{error:?}");
    let missing = KubeConnection { kubeconfig: Some(PathBuf::from("/nonexistent/kubeconfig")), context: None };
    let error = run(&Cordon { connection: missing, ..cordon }, Duration::from_secs(5)).await.unwrap_err();
    assert!(!error.retryable && error.message.contains("/nonexistent/kubeconfig"), "{error:?}");
}
