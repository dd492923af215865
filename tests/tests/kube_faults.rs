//! Kubernetes-side faults and the lab control routes, driven over plain HTTP
//! as the node-side commands do: each fault shows its symptom and nothing
//! else, and the documented repair clears it.
#![allow(clippy::disallowed_methods)] // real-time waits against a live server

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use dr_lab::kube::resources::{APPLICATIONS, ENDPOINTS, NODES, PODS};
use dr_lab::kube::{ApiServer, KubeOptions};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

fn start() -> ApiServer {
    let server = ApiServer::start_background(KubeOptions::default()).expect("api server starts");
    server.wait_healthy_blocking(WAIT).expect("healthy at start");
    server
}

/// One HTTP/1.1 request with `Connection: close`; returns (status, JSON body or Null).
fn http(addr: SocketAddr, method: &str, path: &str, content_type: &str, body: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let (head, payload) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, serde_json::from_str(payload).unwrap_or(Value::Null))
}

fn lab(server: &ApiServer, route: &str, body: Value) -> Value {
    let (code, v) = http(server.addr(), "POST", &format!("/lab/v1/{route}"), "application/json", &body.to_string());
    assert_eq!(code, 200, "lab route {route}: {v}");
    v
}

fn restart(server: &ApiServer, kind_path: &str) {
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": format!("{:?}", Instant::now())}}}}});
    let (code, v) = http(server.addr(), "PATCH", kind_path, "application/strategic-merge-patch+json", &patch.to_string());
    assert_eq!(code, 200, "restart {kind_path}: {v}");
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

fn ready(p: &Value) -> bool {
    p.pointer("/status/conditions").and_then(Value::as_array).is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

fn crashlooping(p: &Value) -> bool {
    s(p, "/status/containerStatuses/0/state/waiting/reason") == "CrashLoopBackOff"
}

fn restarts(p: &Value) -> i64 {
    p.pointer("/status/containerStatuses/0/restartCount").and_then(Value::as_i64).unwrap_or(0)
}

fn pods(server: &ApiServer) -> Vec<Value> {
    server.shared().lock().store.list(&PODS, None)
}

fn pods_where(server: &ApiServer, f: impl Fn(&Value) -> bool) -> Vec<Value> {
    pods(server).into_iter().filter(|p| f(p)).collect()
}

fn is_web(p: &Value) -> bool {
    s(p, "/metadata/namespace") == "demo" && s(p, "/metadata/labels/app") == "web"
}

fn is_dns(p: &Value) -> bool {
    s(p, "/metadata/labels/k8s-app") == "kube-dns"
}

fn is_proxy(p: &Value) -> bool {
    s(p, "/metadata/labels/k8s-app") == "kube-proxy"
}

fn dns_endpoint_addresses(server: &ApiServer) -> usize {
    let ep = server.shared().lock().store.get(&ENDPOINTS, "kube-system", "kube-dns").cloned().unwrap_or(Value::Null);
    ep.pointer("/subsets").and_then(Value::as_array).map_or(0, |subsets| {
        subsets.iter().map(|s| s.get("addresses").and_then(Value::as_array).map_or(0, Vec::len)).sum()
    })
}

fn nodes_ready(server: &ApiServer) -> bool {
    let nodes = server.shared().lock().store.list(&NODES, None);
    nodes.len() == 3 && nodes.iter().all(ready_node)
}

fn ready_node(n: &Value) -> bool {
    ready(n)
}

#[test]
fn pod_crash_fault_crashloops_one_deployment_until_a_rollout_restart() {
    let server = start();
    let v = lab(&server, "faults/pod-crash", json!({"namespace": "demo", "deployment": "web"}));
    assert_eq!(v["workload"], "deployment/web");
    wait_until("web pods crash-looping with climbing restarts", || {
        let web = pods_where(&server, is_web);
        web.len() == 2 && web.iter().all(|p| crashlooping(p) && !ready(p) && restarts(p) >= 2)
    });
    let web = pods_where(&server, is_web);
    assert!(web.iter().all(|p| s(p, "/status/phase") == "Running"), "phase stays Running, as a real kubelet reports");
    // Nothing else is affected.
    assert!(pods_where(&server, |p| !is_web(p)).iter().all(ready));
    assert!(nodes_ready(&server));
    assert_eq!(dns_endpoint_addresses(&server), 2);
    let health = server.health();
    assert_eq!(health["healthy"], false);
    assert_eq!(health["argocd_ready"], true);
    let unhealthy: Vec<&Value> = health["apps"].as_array().expect("apps").iter().filter(|a| a["health"] != "Healthy").collect();
    assert_eq!(unhealthy.len(), 1, "{unhealthy:?}");
    assert_eq!(unhealthy[0]["name"], "web");
    assert_eq!(unhealthy[0]["health"], "Degraded");
    let events = server.shared().lock().store.list(&dr_lab::kube::resources::EVENTS, Some("demo"));
    assert!(events.iter().any(|e| e["reason"] == "BackOff" && e["type"] == "Warning"));

    // Deleting a pod is not the repair: its replacement crashes too.
    let victim = s(&web[0], "/metadata/name").to_string();
    let (code, _) = http(server.addr(), "DELETE", &format!("/api/v1/namespaces/demo/pods/{victim}"), "application/json", "");
    assert_eq!(code, 200);
    wait_until("a replacement web pod that crashes too", || {
        let web = pods_where(&server, is_web);
        web.len() == 2 && web.iter().all(|p| s(p, "/metadata/name") != victim && crashlooping(p))
    });

    restart(&server, "/apis/apps/v1/namespaces/demo/deployments/web");
    server.wait_healthy_blocking(WAIT).expect("healthy after the rollout restart");
    let web = pods_where(&server, is_web);
    assert_eq!(web.len(), 2);
    assert!(web.iter().all(|p| ready(p) && !crashlooping(p) && restarts(p) == 0));
    assert_eq!(server.health()["faults"]["pod-crash"], Value::Null);
}

fn is_cache(p: &Value) -> bool {
    s(p, "/metadata/namespace") == "demo" && s(p, "/metadata/labels/app") == "api-cache"
}

#[test]
fn pod_crash_on_a_statefulset_holds_its_rollout_until_the_stuck_pod_is_deleted() {
    let server = start();
    let sts = |server: &ApiServer| {
        server.shared().lock().store.get(&dr_lab::kube::resources::STATEFULSETS, "demo", "api-cache").cloned().expect("the api-cache statefulset")
    };
    let before = pods_where(&server, is_cache);
    assert_eq!(before.len(), 1);
    assert_eq!(s(&before[0], "/metadata/name"), "api-cache-0", "stable ordinal names");
    let v = lab(&server, "faults/pod-crash", json!({"namespace": "demo", "workload": "api-cache"}));
    assert_eq!(v["workload"], "statefulset/api-cache");
    wait_until("api-cache-0 crash-looping", || pods_where(&server, is_cache).iter().all(|p| crashlooping(p) && !ready(p)));
    let broken_uid = s(&pods_where(&server, is_cache)[0], "/metadata/uid").to_string();

    // A rollout restart alone does not pass a pod that is not Ready (OrderedReady), as in a
    // real cluster: the update revision moves, the broken pod stays.
    restart(&server, "/apis/apps/v1/namespaces/demo/statefulsets/api-cache");
    wait_until("the restart observed", || {
        let st = sts(&server);
        st["status"]["observedGeneration"] == st["metadata"]["generation"] && s(&st, "/status/updateRevision") != s(&st, "/status/currentRevision")
    });
    std::thread::sleep(Duration::from_millis(300));
    let stuck = pods_where(&server, is_cache);
    assert_eq!(stuck.len(), 1);
    assert_eq!(s(&stuck[0], "/metadata/uid"), broken_uid, "the stuck pod is not replaced by the rollout");
    let st = sts(&server);
    assert_ne!(s(&st, "/status/updateRevision"), s(&st, "/status/currentRevision"));
    assert_eq!(st["status"]["updatedReplicas"], 0);

    // Deleting it is the repair: it comes back under the same name at the update revision.
    let (code, _) = http(server.addr(), "DELETE", "/api/v1/namespaces/demo/pods/api-cache-0", "application/json", "");
    assert_eq!(code, 200);
    server.wait_healthy_blocking(WAIT).expect("healthy once the stuck pod is replaced");
    let after = pods_where(&server, is_cache);
    assert_eq!(after.len(), 1);
    assert_eq!(s(&after[0], "/metadata/name"), "api-cache-0");
    assert_ne!(s(&after[0], "/metadata/uid"), broken_uid);
    assert!(ready(&after[0]) && !crashlooping(&after[0]));
    let st = sts(&server);
    assert_eq!(s(&st, "/status/updateRevision"), s(&st, "/status/currentRevision"), "{st}");
    assert_eq!(s(&after[0], "/metadata/labels/controller-revision-hash"), s(&st, "/status/updateRevision"));
    assert_eq!(server.health()["faults"]["pod-crash"], Value::Null);
}

#[test]
fn network_fault_breaks_kube_proxy_coredns_and_dns_endpoints_until_both_restart() {
    let server = start();
    lab(&server, "faults/network", json!({}));
    wait_until("kube-proxy crash-looping, coredns unready, kube-dns endpoints empty", || {
        pods_where(&server, is_proxy).iter().all(crashlooping)
            && pods_where(&server, is_dns).iter().all(|p| !ready(p) && !crashlooping(p))
            && dns_endpoint_addresses(&server) == 0
    });
    assert!(pods_where(&server, |p| !is_dns(p) && !is_proxy(p)).iter().all(ready), "only kube-system networking is hit");
    assert!(nodes_ready(&server));
    assert_eq!(server.health()["kube_system_ready"], false);

    restart(&server, "/apis/apps/v1/namespaces/kube-system/daemonsets/kube-proxy");
    wait_until("new kube-proxy pods ready", || {
        let p = pods_where(&server, is_proxy);
        p.len() == 3 && p.iter().all(ready)
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(pods_where(&server, is_dns).iter().all(|p| !ready(p)), "coredns stays broken until it is restarted too");
    assert_eq!(dns_endpoint_addresses(&server), 0);

    restart(&server, "/apis/apps/v1/namespaces/kube-system/deployments/coredns");
    server.wait_healthy_blocking(WAIT).expect("healthy after both restarts");
    wait_until("kube-dns endpoints filled", || dns_endpoint_addresses(&server) == 2);
}

#[test]
fn argocd_down_fails_argocd_pods_and_holds_syncs_until_the_pods_are_deleted() {
    let server = start();
    let v = lab(&server, "faults/argocd-down", json!({}));
    assert_eq!(v["pods"], 3);
    wait_until("argocd pods crash-looping", || {
        let a = pods_where(&server, |p| s(p, "/metadata/namespace") == "argocd");
        a.len() == 3 && a.iter().all(crashlooping)
    });
    assert!(pods_where(&server, |p| s(p, "/metadata/namespace") != "argocd").iter().all(ready));
    assert_eq!(server.health()["argocd_ready"], false);

    let (code, v) = http(
        server.addr(),
        "PATCH",
        "/apis/argoproj.io/v1alpha1/namespaces/argocd/applications/web",
        "application/merge-patch+json",
        r#"{"operation":{"initiatedBy":{"username":"dr"},"sync":{"revision":"HEAD"}}}"#,
    );
    assert_eq!(code, 200, "{v}");
    std::thread::sleep(Duration::from_millis(300));
    let app = server.shared().lock().store.get(&APPLICATIONS, "argocd", "web").cloned().expect("app");
    assert!(app.get("operation").is_some(), "no sync while argocd is down");

    let (code, v) = http(server.addr(), "DELETE", "/api/v1/namespaces/argocd/pods", "application/json", "");
    assert_eq!(code, 200);
    assert_eq!(v["items"].as_array().map(Vec::len), Some(3));
    server.wait_healthy_blocking(WAIT).expect("healthy once the pods are re-created");
    wait_until("the pending sync to finish", || {
        let app = server.shared().lock().store.get(&APPLICATIONS, "argocd", "web").cloned().expect("app");
        app.get("operation").is_none() && s(&app, "/status/operationState/phase") == "Succeeded"
    });
    let app = server.shared().lock().store.get(&APPLICATIONS, "argocd", "web").cloned().expect("app");
    assert_eq!(app["status"]["operationState"]["operation"]["initiatedBy"]["username"], "dr");
    assert_eq!(app["status"]["sync"]["status"], "Synced");
    assert_eq!(app["status"]["health"]["status"], "Healthy");
}

#[test]
fn stopped_kubelet_makes_the_node_and_its_pods_unready_until_it_runs_again() {
    let server = start();
    lab(&server, "nodes/k8s-worker-1/kubelet", json!({"state": "stopped"}));
    let node = |server: &ApiServer| server.shared().lock().store.get(&NODES, "", "k8s-worker-1").cloned().expect("node");
    wait_until("worker-1 NotReady and its pods unready", || {
        !ready(&node(&server)) && pods_where(&server, |p| s(p, "/spec/nodeName") == "k8s-worker-1").iter().all(|p| !ready(p))
    });
    let n = node(&server);
    let cond = n["status"]["conditions"].as_array().expect("conds").iter().find(|c| c["type"] == "Ready").cloned().expect("Ready");
    assert_eq!(cond["status"], "Unknown");
    assert!(n["spec"]["taints"].as_array().expect("taints").iter().any(|t| t["key"] == "node.kubernetes.io/unreachable"));
    assert!(pods_where(&server, |p| s(p, "/spec/nodeName") != "k8s-worker-1").iter().all(ready), "other nodes unaffected");
    let health = server.health();
    assert_eq!(health["nodes_ready"], false);

    lab(&server, "nodes/k8s-worker-1/kubelet", json!({"state": "running"}));
    server.wait_healthy_blocking(WAIT).expect("healthy once the kubelet runs");
    assert!(!node(&server)["spec"]["taints"].as_array().expect("taints").iter().any(|t| t["key"] == "node.kubernetes.io/unreachable"));
}

#[test]
fn dead_worker_needs_recreation_and_a_join() {
    let server = start();
    lab(&server, "faults/worker-dead", json!({"node": "k8s-worker-2"}));
    let v = lab(&server, "nodes/k8s-worker-2/kubelet", json!({"state": "running"}));
    assert_eq!(v["ignored"], true);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(server.health()["nodes_ready"], false, "a dead node does not come back by itself");
    let (code, _) = http(server.addr(), "POST", "/lab/v1/nodes/k8s-worker-2/join", "application/json", "{}");
    assert_eq!(code, 409, "a dead VM cannot join");

    lab(&server, "nodes/k8s-worker-2/recreate", json!({}));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(server.health()["nodes_ready"], false, "a fresh VM is not joined yet");
    lab(&server, "nodes/k8s-worker-2/join", json!({}));
    server.wait_healthy_blocking(WAIT).expect("healthy after the join");
}

#[test]
fn reset_removes_the_node_and_its_pods_and_join_brings_it_back() {
    let server = start();
    lab(&server, "nodes/k8s-worker-1/reset", json!({}));
    assert!(server.shared().lock().store.get(&NODES, "", "k8s-worker-1").is_none());
    assert!(pods_where(&server, |p| s(p, "/spec/nodeName") == "k8s-worker-1").is_empty());
    wait_until("workloads rescheduled onto the remaining nodes", || {
        let web = pods_where(&server, is_web);
        web.len() == 2 && web.iter().all(|p| ready(p) && s(p, "/spec/nodeName") == "k8s-worker-2")
    });
    lab(&server, "nodes/k8s-worker-1/join", json!({}));
    server.wait_healthy_blocking(WAIT).expect("healthy after the join");
    assert_eq!(pods_where(&server, is_proxy).len(), 3, "daemonset pod back on the joined node");
}

#[test]
fn wipe_takes_the_api_down_and_init_join_deploy_rebuild_a_healthy_cluster() {
    let server = start();
    lab(&server, "cluster/wipe", json!({}));
    let (code, v) = http(server.addr(), "GET", "/api/v1/nodes", "application/json", "");
    assert_eq!(code, 503, "{v}");
    let (code, health) = http(server.addr(), "GET", "/lab/v1/health", "application/json", "");
    assert_eq!(code, 200);
    assert_eq!(health["api_up"], false);
    assert_eq!(health["healthy"], false);
    let (code, _) = http(server.addr(), "POST", "/lab/v1/platform/deploy", "application/json", "{}");
    assert_eq!(code, 503, "nothing to deploy onto");

    lab(&server, "cluster/init", json!({}));
    let (code, nodes) = http(server.addr(), "GET", "/api/v1/nodes", "application/json", "");
    assert_eq!(code, 200);
    let names: Vec<&str> = nodes["items"].as_array().expect("items").iter().map(|n| s(n, "/metadata/name")).collect();
    assert_eq!(names, vec!["k8s-control-plane-1"]);
    wait_until("coredns ready on the control plane", || {
        let dns = pods_where(&server, is_dns);
        dns.len() == 2 && dns.iter().all(ready)
    });
    for w in ["k8s-worker-1", "k8s-worker-2"] {
        lab(&server, &format!("nodes/{w}/join"), json!({}));
    }
    assert!(server.shared().lock().store.list(&APPLICATIONS, None).is_empty());
    lab(&server, "platform/deploy", json!({}));
    server.wait_healthy_blocking(WAIT).expect("healthy after init, join and platform deploy");
    assert_eq!(pods_where(&server, is_web).len(), 2, "argocd synced the apps' workloads");
}

#[test]
fn cluster_state_saved_with_a_backup_restores_the_objects_of_that_moment() {
    let server = start();
    let (code, state) = http(server.addr(), "GET", "/lab/v1/cluster/state", "application/json", "");
    assert_eq!(code, 200);
    assert!(state["objects"].as_array().is_some_and(|o| o.iter().any(|e| e["type"] == "argoproj.io/applications")));
    // After the backup: a new object appears and a deployment is lost.
    let (code, _) = http(server.addr(), "POST", "/api/v1/namespaces/default/configmaps", "application/json", r#"{"metadata":{"name":"after-backup"}}"#);
    assert_eq!(code, 201);
    let (code, _) = http(server.addr(), "DELETE", "/apis/apps/v1/namespaces/demo/deployments/api", "application/json", "");
    assert_eq!(code, 200);

    lab(&server, "cluster/wipe", json!({}));
    lab(&server, "cluster/init", json!({}));
    lab(&server, "cluster/state", state);
    for w in ["k8s-worker-1", "k8s-worker-2"] {
        lab(&server, &format!("nodes/{w}/reset"), json!({}));
        lab(&server, &format!("nodes/{w}/join"), json!({}));
    }
    server.wait_healthy_blocking(WAIT).expect("healthy after the restore and the re-joins");
    let (code, _) = http(server.addr(), "GET", "/api/v1/namespaces/default/configmaps/after-backup", "application/json", "");
    assert_eq!(code, 404, "objects newer than the backup are gone");
    let (code, api) = http(server.addr(), "GET", "/apis/apps/v1/namespaces/demo/deployments/api", "application/json", "");
    assert_eq!(code, 200, "the deployment lost after the backup is back");
    assert_eq!(api["status"]["availableReplicas"], 2);
}
