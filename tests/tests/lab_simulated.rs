//! The whole lab with the simulated Kubernetes API server: everything comes up
//! healthy, kubectl sees it, node-side commands change what the cluster shows,
//! and the guide's control-plane rebuild brings the platform back.

use std::process::Command;
use std::time::Duration;

use dr_tests::lab::process::wait_until;
use dr_tests::lab::testing::TestLab;
use dr_tests::lab::{Lab, CONTROL_PLANE, WORKERS};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn kubectl(lab: &Lab, args: &[&str]) -> String {
    let output = Command::new("kubectl").arg("--kubeconfig").arg(lab.kubeconfig_path()).args(args).output().expect("kubectl runs");
    assert!(output.status.success(), "kubectl {args:?}: {}", text(&output.stderr));
    text(&output.stdout)
}

fn ingress_status(lab: &Lab) -> u16 {
    dr_tests::lab::http::request("GET", &lab.ingress_url(), None).map(|(code, _)| code).unwrap_or(0)
}

fn node_ready(lab: &Lab, node: &str) -> bool {
    lab.health().ok().and_then(|h| {
        h["nodes"].as_array()?.iter().find(|n| n["name"] == node).map(|n| n["ready"] == true)
    }) == Some(true)
}

#[test]
fn lab_start_brings_up_every_part_healthy() {
    let lab = TestLab::simulated().expect("lab starts");
    assert_eq!(lab.health().expect("health")["healthy"], true);
    assert_eq!(ingress_status(&lab), 200);
    assert!(lab.etcd().healthy());
    for node in lab.nodes() {
        assert!(lab.ssh(&node.name, "true").expect("ssh").status.success(), "{}", node.name);
    }
    let nodes = kubectl(&lab, &["get", "nodes", "--no-headers"]);
    assert_eq!(nodes.lines().count(), 3, "{nodes}");
    assert!(nodes.lines().all(|l| l.split_whitespace().nth(1) == Some("Ready")), "{nodes}");
    let config = std::fs::read_to_string(lab.config_path()).expect("dr.toml");
    assert!(config.contains(&format!("kubeconfig = \"{}\"", lab.kubeconfig_path().display())), "{config}");
}

#[test]
fn a_stopped_kubelet_makes_the_node_not_ready_until_systemctl_restarts_it() {
    let lab = TestLab::simulated().expect("lab starts");
    let worker = WORKERS[0];
    lab.fault("worker-down", Some(worker)).expect("fault");
    assert!(wait_until(Duration::from_secs(5), || !node_ready(&lab, worker)), "the node goes NotReady");
    let restart = lab.ssh(worker, "sudo systemctl restart kubelet\nsudo systemctl restart containerd").expect("ssh");
    assert!(restart.status.success(), "{}", text(&restart.stderr));
    assert!(wait_until(Duration::from_secs(5), || node_ready(&lab, worker)), "the node is Ready again");
}

#[test]
fn the_guides_control_plane_rebuild_brings_the_platform_back() {
    let lab = TestLab::simulated().expect("lab starts");
    lab.fault("control-plane-lost", None).expect("fault");
    assert!(wait_until(Duration::from_secs(5), || ingress_status(&lab) == 503));
    assert_eq!(lab.health().expect("health")["api_up"], false);

    for args in [&["destroy", "-auto-approve", "-target=libvirt_domain.k8s-control-plane"][..], &["apply", "-auto-approve", "-target=libvirt_domain.k8s-control-plane"][..]] {
        let out = lab.terraform(args).expect("terraform");
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    lab.trust_host_key(CONTROL_PLANE).expect("trust");
    let init = lab.ssh(CONTROL_PLANE, "sudo kubeadm init --pod-network-cidr=10.244.0.0/16 --upload-certs").expect("ssh");
    assert!(init.status.success(), "{}", text(&init.stderr));
    let snapshot = lab.backup_dir().join("latest/etcd-snapshot.db");
    std::fs::copy(&snapshot, lab.node(CONTROL_PLANE).expect("node").root.join("tmp/etcd-snapshot.db")).expect("copy");
    let restore = lab
        .ssh(CONTROL_PLANE, "set -e\nsudo systemctl stop etcd\nsudo rm -rf /var/lib/etcd/member\nsudo ETCDCTL_API=3 etcdctl snapshot restore /tmp/etcd-snapshot.db --data-dir /var/lib/etcd\nsudo chown -R etcd:etcd /var/lib/etcd\nsudo systemctl start etcd")
        .expect("ssh");
    assert!(restore.status.success(), "{}", text(&restore.stderr));
    for worker in WORKERS {
        let join_command = text(&lab.ssh(CONTROL_PLANE, "sudo kubeadm token create --print-join-command").expect("ssh").stdout);
        let rejoin = lab.ssh(worker, &format!("sudo kubeadm reset -f && sudo {}", join_command.trim())).expect("ssh");
        assert!(rejoin.status.success(), "{worker}: {}", text(&rejoin.stderr));
    }
    let deploy = Command::new(lab.dir().join("platform/platform-deploy.sh")).output().expect("deploy");
    assert!(deploy.status.success(), "{}", text(&deploy.stderr));
    assert!(
        wait_until(Duration::from_secs(8), || ingress_status(&lab) == 200),
        "healthy again: {}",
        lab.health().map(|h| h.to_string()).unwrap_or_default()
    );
    assert_eq!(lab.etcd().get("/lab/backup/marker").expect("get"), Some(lab.backups().last().expect("backup").marker.clone()));
}
