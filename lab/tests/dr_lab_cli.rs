//! `dr-lab up` starts a detached lab that answers, `status` and `fault` act
//! on it, and `dr-lab down` leaves no process behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const DR_LAB: &str = env!("CARGO_BIN_EXE_dr-lab");

/// Runs `dr-lab down` when dropped, so a failed assertion leaves nothing running.
struct Down(PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new(DR_LAB).arg("down").arg("--dir").arg(&self.0).output();
    }
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

    let status = Command::new(DR_LAB).args(["status", "--json", "--dir"]).arg(&dir).output().expect("status");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    assert_eq!(status["running"], true);
    assert_eq!(status["api"]["healthy"], true, "{status}");
    assert_eq!(status["etcd"]["healthy"], true);
    assert_eq!(status["ingress"]["status"], 200);
    assert!(status["nodes"].as_array().expect("nodes").iter().all(|n| n["up"] == true), "{status}");
    assert_eq!(status["healthy"], true, "{status}");
    assert!(status["etcd_marker"].as_str().is_some_and(|m| m.starts_with("backup-")), "{status}");
    let text = Command::new(DR_LAB).args(["status", "--dir"]).arg(&dir).output().expect("status");
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.contains("platform healthy") && text.contains("etcd marker  backup-"), "{text}");

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

    let fault = fault(&dir, &["control-plane-lost"]);
    assert!(fault.status.success(), "{}", String::from_utf8_lossy(&fault.stderr));
    let status = Command::new(DR_LAB).args(["status", "--json", "--dir"]).arg(&dir).output().expect("status");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    assert_eq!(status["etcd"]["healthy"], false);
    assert_eq!(status["healthy"], false, "{status}");
    assert_eq!(status["checks"]["api"]["ok"], false, "{status}");
    assert_eq!(status["api"]["healthy"], false);
    assert_eq!(status["ingress"]["status"], 503);
    assert_eq!(status["nodes"][0]["up"], false);
    assert_eq!(status["nodes"][1]["up"], true);

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
    let status = Command::new(DR_LAB).args(["status", "--json", "--dir"]).arg(&dir).output().expect("status");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    assert_eq!(status["running"], false);
}

#[test]
fn dr_lab_reports_usage_errors_and_handles_a_dir_without_a_lab() {
    let usage = Command::new(DR_LAB).arg("up").output().expect("dr-lab");
    assert_eq!(usage.status.code(), Some(2), "--dir is required");
    let temp = tempfile::tempdir().expect("tempdir");
    let status = Command::new(DR_LAB).args(["status", "--json", "--dir"]).arg(temp.path()).output().expect("status");
    assert!(status.status.success());
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    assert_eq!(status["running"], false, "no lab in an empty dir");
    let down = Command::new(DR_LAB).args(["down", "--dir"]).arg(temp.path()).output().expect("down");
    assert!(down.status.success(), "down of a stopped lab is a no-op");
    let out = fault(temp.path(), &["pod-crash"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "no lab, no fault: {stderr}");
    assert!(stderr.starts_with("dr-lab fault: pod-crash could not be injected: no lab in "), "{stderr}");
    let out = fault(temp.path(), &["worker-down", "k8s-worker-9"]);
    assert_eq!(out.status.code(), Some(2), "a usage error is one with or without a lab");
}
