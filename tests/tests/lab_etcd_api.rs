//! The simulated API server keeps its objects in the lab's real etcd: while
//! etcd is stopped the API fails as a kube-apiserver does (kubectl included)
//! and comes back when etcd does; a snapshot restore brings back exactly the
//! objects of snapshot time; backups hold the cluster's objects.

use std::process::{Command, Output};
use std::time::Duration;

use dr_lab::lab::http::request;
use dr_lab::lab::process::wait_until;
use dr_lab::lab::testing::TestLab;
use dr_lab::lab::Lab;
use serde_json::{json, Value};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn kubectl(lab: &Lab, args: &[&str]) -> Output {
    Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(lab.kubeconfig_path())
        .args(["--request-timeout=10s"])
        .args(args)
        .output()
        .expect("kubectl runs")
}

fn create_config_map(lab: &Lab, name: &str) {
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}, "data": {"k": name}});
    let (code, answer) =
        request("POST", &format!("{}/api/v1/namespaces/default/configmaps", lab.api_url()), Some(&body.to_string())).expect("api answers");
    assert_eq!(code, 201, "{answer}");
}

fn config_map_code(lab: &Lab, name: &str) -> u16 {
    request("GET", &format!("{}/api/v1/namespaces/default/configmaps/{name}", lab.api_url()), None).expect("api answers").0
}

#[test]
fn a_created_object_is_in_etcd_before_the_api_answers() {
    let lab = TestLab::simulated().expect("lab starts");
    create_config_map(&lab, "written-through");
    let stored = lab.etcd().get("/registry/configmaps/default/written-through").expect("etcd get").expect("the object is in etcd");
    let stored: Value = serde_json::from_str(&stored).expect("JSON");
    assert_eq!(stored["data"]["k"], "written-through");
    // The standard cluster is there too.
    assert!(lab.etcd().get("/registry/nodes/k8s-worker-1").expect("etcd get").is_some());
    assert!(lab.etcd().get("/registry/apps/deployments/kube-system/coredns").expect("etcd get").is_some());
}

#[test]
fn with_etcd_stopped_the_api_and_kubectl_fail_and_answer_again_once_it_runs() {
    let lab = TestLab::simulated().expect("lab starts");
    let get = kubectl(&lab, &["get", "nodes"]);
    assert!(get.status.success(), "{}", text(&get.stderr));
    lab.etcd_stop().expect("etcd stops");

    let get = kubectl(&lab, &["get", "nodes"]);
    assert!(!get.status.success(), "kubectl get nodes must fail without etcd: {}", text(&get.stdout));
    assert!(text(&get.stderr).contains("etcd"), "{}", text(&get.stderr));
    let (code, body) = request("GET", &format!("{}/api/v1/nodes", lab.api_url()), None).expect("api answers");
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("etcd cluster is unavailable"), "{body}");
    let write = json!({"metadata": {"name": "lost", "namespace": "default"}});
    let (code, _) = request("POST", &format!("{}/api/v1/namespaces/default/configmaps", lab.api_url()), Some(&write.to_string())).expect("api answers");
    assert_eq!(code, 500, "a write without etcd fails");
    let (code, readyz) = request("GET", &format!("{}/readyz", lab.api_url()), None).expect("api answers");
    assert_eq!(code, 500, "{readyz}");
    assert!(readyz.contains("[-]etcd failed"), "{readyz}");
    assert_eq!(lab.health().expect("health")["healthy"], false);

    lab.etcd_start().expect("etcd starts");
    let get = kubectl(&lab, &["get", "nodes", "-o", "name"]);
    assert!(get.status.success(), "{}", text(&get.stderr));
    assert_eq!(text(&get.stdout).lines().count(), 3, "{}", text(&get.stdout));
    assert_eq!(config_map_code(&lab, "lost"), 404, "the write that failed never happened");
    assert!(wait_until(Duration::from_secs(20), || lab.health().is_ok_and(|h| h["healthy"] == true)), "healthy again");
}

#[test]
fn a_snapshot_restore_brings_back_exactly_the_objects_of_snapshot_time() {
    let mut lab = TestLab::simulated().expect("lab starts");
    create_config_map(&lab, "before-snapshot");
    let backup = lab.backup_now().expect("backup");
    create_config_map(&lab, "after-snapshot");
    assert_eq!(config_map_code(&lab, "after-snapshot"), 200);

    // The backup holds the cluster's objects in its etcd snapshot.
    let snapshot = std::fs::read(lab.backup_dir().join("latest/etcd-snapshot.db")).expect("snapshot");
    for key in ["/registry/configmaps/default/before-snapshot", "/registry/nodes/k8s-control-plane-1", "/registry/argoproj.io/applications/"] {
        assert!(snapshot.windows(key.len()).any(|w| w == key.as_bytes()), "the snapshot holds {key}");
    }

    let restore = Command::new(lab.dir().join("bin/k8s-restore.sh")).arg(&backup.path).output().expect("k8s-restore.sh runs");
    assert!(restore.status.success(), "{}", text(&restore.stderr));
    assert_eq!(config_map_code(&lab, "before-snapshot"), 200, "the object of snapshot time is back");
    assert_eq!(config_map_code(&lab, "after-snapshot"), 404, "the object made after the snapshot is gone");
    let listed = kubectl(&lab, &["get", "configmaps", "-n", "default", "-o", "name"]);
    assert!(!text(&listed.stdout).contains("after-snapshot"), "{}", text(&listed.stdout));
    assert_eq!(lab.status()["etcd_marker"], json!(backup.marker), "the data came from this backup");
    assert!(wait_until(Duration::from_secs(20), || lab.health().is_ok_and(|h| h["healthy"] == true)), "healthy after the restore");
}

#[test]
fn restoring_an_older_backup_over_ssh_goes_back_further() {
    let lab = TestLab::simulated().expect("lab starts");
    create_config_map(&lab, "made-after-the-backups");
    let oldest = lab.backups().first().expect("a backup").clone();
    let snapshot_on_node = lab.node(dr_lab::lab::CONTROL_PLANE).expect("node").root.join("tmp/old.db");
    let unpacked = lab.dir().join("unpacked");
    std::fs::create_dir_all(&unpacked).expect("dir");
    let tar = Command::new("tar").arg("-xzf").arg(&oldest.path).arg("-C").arg(&unpacked).output().expect("tar");
    assert!(tar.status.success());
    std::fs::copy(unpacked.join("etcd-snapshot.db"), &snapshot_on_node).expect("copy");
    let restore = lab
        .ssh(dr_lab::lab::CONTROL_PLANE, "set -e\nsudo systemctl stop etcd\nsudo rm -rf /var/lib/etcd/member\nsudo ETCDCTL_API=3 etcdctl snapshot restore /tmp/old.db --data-dir /var/lib/etcd\nsudo systemctl start etcd")
        .expect("ssh");
    assert!(restore.status.success(), "{}", text(&restore.stderr));
    assert_eq!(config_map_code(&lab, "made-after-the-backups"), 404);
    assert_eq!(lab.status()["etcd_marker"], json!(oldest.marker));
}

#[test]
fn after_etcd_corrupt_the_api_fails_until_a_backup_is_restored() {
    let lab = TestLab::simulated().expect("lab starts");
    create_config_map(&lab, "made-after-the-backups");
    lab.fault("etcd-corrupt", None).expect("fault");
    let get = kubectl(&lab, &["get", "nodes"]);
    assert!(!get.status.success(), "{}", text(&get.stdout));
    assert_eq!(lab.status()["healthy"], false);
    assert_eq!(lab.status()["etcd_marker"], Value::Null, "no etcd, no marker");

    let newest = lab.backups().last().expect("a backup").clone();
    let restore = Command::new(lab.dir().join("bin/k8s-restore.sh")).arg(&newest.path).output().expect("k8s-restore.sh runs");
    assert!(restore.status.success(), "{}", text(&restore.stderr));
    let get = kubectl(&lab, &["get", "nodes", "-o", "name"]);
    assert!(get.status.success(), "{}", text(&get.stderr));
    assert_eq!(config_map_code(&lab, "made-after-the-backups"), 404);
    assert_eq!(lab.status()["etcd_marker"], json!(newest.marker));
    assert!(wait_until(Duration::from_secs(20), || lab.status()["healthy"] == true), "healthy again: {:#}", lab.status());
}
