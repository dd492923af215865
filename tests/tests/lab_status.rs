//! `healthy` of the lab's status report is true on a fresh lab and false
//! after each fault, with the checks that fail naming what broke and the
//! fault listed in `faults`; the report carries `etcd_marker`, the backup
//! etcd's data came from.

use std::time::Duration;

use dr_lab::lab::process::wait_until;
use dr_lab::lab::status::CHECKS;
use dr_lab::lab::testing::TestLab;
use dr_lab::lab::WORKERS;
use serde_json::Value;

fn failing(report: &Value) -> Vec<String> {
    CHECKS.iter().filter(|c| report["checks"][**c]["ok"] != true).map(|c| c.to_string()).collect()
}

/// A fresh lab is healthy; after the fault the report turns unhealthy with `expected` among
/// the failing checks, and lists the fault (with its node) as in effect.
fn check(fault: &str, node: Option<&str>, expected: &str) {
    let lab = TestLab::simulated().expect("lab starts");
    let fresh = lab.status();
    assert_eq!(fresh["healthy"], true, "a fresh lab is healthy: {fresh:#}");
    assert_eq!(fresh["faults"], serde_json::json!([]), "no fault in effect: {fresh:#}");
    lab.fault(fault, node).expect("fault");
    let mut last = Value::Null;
    let turned = wait_until(Duration::from_secs(20), || {
        last = lab.status();
        last["healthy"] == false && failing(&last).iter().any(|c| c == expected)
    });
    assert!(turned, "{fault}: expected {expected} to fail, report: {last:#}");
    for c in CHECKS {
        assert!(last["checks"][*c]["detail"].is_string(), "{c} has a detail");
    }
    let listed = last["faults"].as_array().expect("faults").iter().any(|f| f["name"] == fault && (node.is_none() || f["target"].as_str() == node));
    assert!(listed, "{fault} is listed as in effect: {last:#}");
}

#[test]
fn a_fresh_lab_is_healthy_and_its_data_comes_from_the_newest_backup() {
    let lab = TestLab::simulated().expect("lab starts");
    let report = lab.status();
    assert_eq!(report["healthy"], true, "{report:#}");
    assert!(failing(&report).is_empty());
    assert_eq!(report["etcd_marker"], lab.backups().last().expect("backup").marker.as_str());
    let text = dr_lab::lab::status::render_text(&report);
    assert!(text.contains("platform healthy"), "{text}");
    assert!(text.contains("etcd marker  backup-"), "{text}");
}

#[test]
fn pod_crash_makes_the_platform_unhealthy() {
    check("pod-crash", None, "argocd");
}

#[test]
fn network_makes_the_platform_unhealthy() {
    check("network", None, "kube_system");
}

#[test]
fn worker_down_makes_the_platform_unhealthy() {
    check("worker-down", Some(WORKERS[0]), "nodes");
}

#[test]
fn worker_down_leaves_the_api_answering_and_the_node_not_ready_with_its_vm_up() {
    let lab = TestLab::simulated().expect("lab starts");
    lab.fault("worker-down", Some(WORKERS[0])).expect("fault");
    let mut last = Value::Null;
    let turned = wait_until(Duration::from_secs(20), || {
        last = lab.status();
        last["nodes"][1]["kubernetes"] == "NotReady"
    });
    assert!(turned, "{} NotReady: {last:#}", WORKERS[0]);
    assert_eq!(last["nodes"][1]["name"], WORKERS[0]);
    assert_eq!(last["nodes"][1]["sshd_up"], true, "the VM runs: {last:#}");
    assert_eq!(last["nodes"][2]["kubernetes"], "Ready", "{last:#}");
    assert_eq!(last["api"]["answers"], true, "the API answers: {last:#}");
    assert_eq!(last["checks"]["api"]["ok"], true, "{last:#}");
    let text = dr_lab::lab::status::render_text(&last);
    assert!(text.contains(&format!("  faults       worker-down {} (since ", WORKERS[0])), "{text}");
}

#[test]
fn a_repaired_fault_is_no_longer_listed() {
    let lab = TestLab::simulated().expect("lab starts");
    lab.fault("worker-down", Some(WORKERS[0])).expect("fault");
    assert_eq!(lab.status()["faults"][0]["name"], "worker-down", "{:#}", lab.status());
    let out = lab.ssh(WORKERS[0], "sudo systemctl restart kubelet").expect("ssh");
    assert!(out.status.success(), "kubelet restarts: {}", String::from_utf8_lossy(&out.stderr));
    let healthy = wait_until(Duration::from_secs(20), || lab.status()["healthy"] == true);
    assert!(healthy, "healthy again: {:#}", lab.status());
    assert_eq!(lab.status()["faults"], serde_json::json!([]), "{:#}", lab.status());
}

#[test]
fn argocd_down_makes_the_platform_unhealthy() {
    check("argocd-down", None, "argocd");
}

#[test]
fn etcd_corrupt_makes_the_platform_unhealthy() {
    check("etcd-corrupt", None, "etcd");
}

#[test]
fn control_plane_lost_makes_the_platform_unhealthy() {
    check("control-plane-lost", None, "api");
}

#[test]
fn host_lost_makes_the_platform_unhealthy() {
    check("host-lost", None, "sshd");
}
