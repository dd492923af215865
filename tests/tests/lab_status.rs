//! `healthy` of the lab's status report is true on a fresh lab and false
//! after each fault, with the checks that fail naming what broke; the report
//! carries `etcd_marker`, the backup etcd's data came from.

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
/// the failing checks.
fn check(fault: &str, node: Option<&str>, expected: &str) {
    let lab = TestLab::simulated().expect("lab starts");
    let fresh = lab.status();
    assert_eq!(fresh["healthy"], true, "a fresh lab is healthy: {fresh:#}");
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
