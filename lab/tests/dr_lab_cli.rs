//! `dr-lab up` starts a detached lab that answers, `status` and `fault` act
//! on it, and `dr-lab down` leaves no process behind. `status` says what is
//! true (the API answering, each node's Kubernetes status apart from its
//! sshd, the faults in effect) and exits 1 when the platform is unhealthy;
//! `fault` exits 2 on a usage error, naming the valid choices.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const DR_LAB: &str = env!("CARGO_BIN_EXE_dr-lab");

/// Runs `dr-lab down` when dropped, so a failed assertion leaves nothing running.
struct Down(PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new(DR_LAB).arg("down").arg("--dir").arg(&self.0).output();
    }
}

/// `dr-lab status --json --dir DIR`: its exit code and the report.
fn status_json(dir: &Path) -> (Option<i32>, serde_json::Value) {
    let out = Command::new(DR_LAB).args(["status", "--json", "--dir"]).arg(dir).output().expect("status");
    (out.status.code(), serde_json::from_slice(&out.stdout).expect("status JSON"))
}

fn status_text(dir: &Path) -> (Option<i32>, String) {
    let out = Command::new(DR_LAB).args(["status", "--dir"]).arg(dir).output().expect("status");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn fault(dir: &Path, args: &[&str]) -> Output {
    Command::new(DR_LAB).args(["fault", "--dir"]).arg(dir).args(args).output().expect("fault")
}

fn lab_processes(dir: &Path) -> Vec<String> {
    let output = Command::new("pgrep").arg("-af").arg(dir).output().expect("pgrep");
    String::from_utf8_lossy(&output.stdout).lines().map(str::to_string).collect()
}

#[test]
fn dr_lab_up_starts_a_healthy_lab_and_down_leaves_no_process() {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().join("lab");
    let _down = Down(dir.clone());
    // The default lab: the simulated Kubernetes API server runs in the supervisor.
    let up = Command::new(DR_LAB).args(["up", "--dir"]).arg(&dir).output().expect("dr-lab up");
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&up.stdout).expect("JSON summary");
    let dir = std::fs::canonicalize(&dir).expect("dir");
    assert_eq!(summary["config"], serde_json::json!(dir.join("dr.toml")));
    assert!(dir.join("dr.toml").is_file() && dir.join("kubeconfig").is_file());
    assert_eq!(summary["nodes"].as_array().expect("nodes").len(), 3);
    for key in ["user", "key", "known_hosts"] {
        assert!(summary["ssh"][key].is_string(), "ssh.{key}");
    }
    for key in ["endpoints", "cacert", "cert", "key"] {
        assert!(!summary["etcd"][key].is_null(), "etcd.{key}");
    }
    assert!(summary["ingress_url"].as_str().expect("ingress").starts_with("http://127.0.0.100:"));
    assert!(summary["backup_dir"].is_string());

    let second = Command::new(DR_LAB).args(["up", "--dir"]).arg(&dir).output().expect("dr-lab up");
    assert!(!second.status.success(), "a second lab in the same dir is refused");

    let (code, status) = status_json(&dir);
    assert_eq!(code, Some(0), "a healthy lab: exit 0 {status}");
    assert_eq!(status["running"], true);
    assert_eq!(status["api"]["answers"], true, "{status}");
    assert_eq!(status["etcd"]["healthy"], true);
    assert_eq!(status["ingress"]["status"], 200);
    assert!(status["nodes"].as_array().expect("nodes").iter().all(|n| n["sshd_up"] == true && n["kubernetes"] == "Ready"), "{status}");
    assert_eq!(status["healthy"], true, "{status}");
    assert_eq!(status["faults"], serde_json::json!([]), "{status}");
    assert!(status["etcd_marker"].as_str().is_some_and(|m| m.starts_with("backup-")), "{status}");
    let (code, text) = status_text(&dir);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("platform healthy") && text.contains("etcd marker  backup-"), "{text}");
    assert!(text.contains("\n  faults       none\n"), "{text}");

    // Usage errors: exit 2, the valid names, not the lab script's path.
    for (args, says) in [
        (&["worker-down"][..], "dr-lab fault: worker-down needs a NODE (k8s-worker-1, k8s-worker-2)"),
        (&["worker-down", "k8s-worker-9"][..], "dr-lab fault: unknown node k8s-worker-9 (k8s-control-plane-1, k8s-worker-1, k8s-worker-2)"),
        (&["bogus"][..], "dr-lab fault: unknown fault \"bogus\" (pod-crash [NAMESPACE/WORKLOAD], network, argocd-down, worker-down NODE,"),
    ] {
        let out = fault(&dir, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with(says), "{args:?}: {stderr}");
        assert!(!stderr.contains("lab-fault"), "{args:?}: {stderr}");
    }
    assert_eq!(std::fs::read_to_string(dir.join("faults.log")).unwrap_or_default(), "", "a refused fault is not logged");

    // worker-down: the API still answers, the node is NotReady while its sshd (the VM) is up.
    let out = fault(&dir, &["worker-down", "k8s-worker-1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut last = (None, serde_json::Value::Null);
    let turned = dr_lab::lab::process::wait_until(Duration::from_secs(20), || {
        last = status_json(&dir);
        last.1["nodes"][1]["kubernetes"] == "NotReady"
    });
    let (code, status) = last;
    assert!(turned, "k8s-worker-1 NotReady: {status}");
    assert_eq!(code, Some(1), "an unhealthy lab: exit 1 {status}");
    assert_eq!(status["healthy"], false);
    assert_eq!(status["api"]["answers"], true, "{status}");
    assert_eq!(status["checks"]["api"]["ok"], true, "{status}");
    assert_eq!(status["nodes"][1]["name"], "k8s-worker-1");
    assert_eq!(status["nodes"][1]["sshd_up"], true, "{status}");
    assert_eq!(status["nodes"][1]["kubelet"], "stopped", "{status}");
    let faults = status["faults"].as_array().expect("faults");
    assert_eq!(faults.len(), 1, "{status}");
    assert_eq!((&faults[0]["name"], &faults[0]["target"]), (&serde_json::json!("worker-down"), &serde_json::json!("k8s-worker-1")));
    assert!(faults[0]["since"].is_string(), "{status}");
    let (code, text) = status_text(&dir);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("\n  faults       worker-down k8s-worker-1 (since "), "{text}");
    assert!(text.contains("\n  api          ok   GET /api/v1/nodes answered 200\n"), "{text}");
    let worker = text.lines().find(|l| l.trim_start().starts_with("k8s-worker-1 ")).expect("a line for k8s-worker-1");
    assert!(worker.contains("sshd up") && worker.contains("kubernetes NotReady"), "{text}");

    let out = fault(&dir, &["control-plane-lost"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (code, status) = status_json(&dir);
    assert_eq!(code, Some(1), "{status}");
    assert_eq!(status["etcd"]["healthy"], false);
    assert_eq!(status["healthy"], false, "{status}");
    assert_eq!(status["checks"]["api"]["ok"], false, "{status}");
    assert_eq!(status["api"]["answers"], false);
    assert_eq!(status["ingress"]["status"], 503);
    assert_eq!(status["nodes"][0]["sshd_up"], false);
    assert_eq!(status["nodes"][1]["sshd_up"], true);
    let names: Vec<&str> = status["faults"].as_array().expect("faults").iter().filter_map(|f| f["name"].as_str()).collect();
    assert!(names.contains(&"control-plane-lost"), "{status}");

    let mut pids: Vec<i32> = vec![std::fs::read_to_string(dir.join("supervisor.pid")).expect("pid").trim().parse().expect("pid")];
    for node in ["k8s-worker-1", "k8s-worker-2"] {
        pids.push(std::fs::read_to_string(dir.join("sshd").join(node).join("sshd.pid")).expect("pid").trim().parse().expect("pid"));
    }
    assert!(!lab_processes(&dir).is_empty());

    let down = Command::new(DR_LAB).args(["down", "--dir"]).arg(&dir).output().expect("dr-lab down");
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    assert_eq!(lab_processes(&dir), Vec::<String>::new());
    for pid in pids {
        assert!(!dr_lab::lab::process::pid_alive(pid), "pid {pid} still runs");
    }
    let (code, status) = status_json(&dir);
    assert_eq!(code, Some(1), "a stopped lab is not healthy");
    assert_eq!(status["running"], false);
}

#[test]
fn dr_lab_reports_usage_errors_and_handles_a_dir_without_a_lab() {
    let usage = Command::new(DR_LAB).arg("up").output().expect("dr-lab");
    assert_eq!(usage.status.code(), Some(2), "--dir is required");
    let temp = tempfile::tempdir().expect("tempdir");
    let (code, status) = status_json(temp.path());
    assert_eq!(code, Some(1), "no lab, not healthy; the report is printed all the same");
    assert_eq!(status["running"], false, "no lab in an empty dir");
    assert_eq!(status["healthy"], false);
    let usage = Command::new(DR_LAB).args(["status", "--bogus"]).output().expect("dr-lab");
    assert_eq!(usage.status.code(), Some(2), "status usage error");
    let down = Command::new(DR_LAB).args(["down", "--dir"]).arg(temp.path()).output().expect("down");
    assert!(down.status.success(), "down of a stopped lab is a no-op");
    let out = fault(temp.path(), &["pod-crash"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "no lab, no fault: {stderr}");
    assert!(stderr.starts_with("dr-lab fault: pod-crash could not be injected: no lab in "), "{stderr}");
    let out = fault(temp.path(), &["worker-down", "k8s-worker-9"]);
    assert_eq!(out.status.code(), Some(2), "a usage error is one with or without a lab");
}
