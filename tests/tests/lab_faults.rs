//! Each fault the lab injects itself produces its symptom (the ones forwarded
//! to the simulated cluster are checked against the control API they reach).

use std::process::Command;

use dr_lab::lab::testing::TestLab;
use dr_lab::lab::{CONTROL_PLANE, WORKERS};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn worker_faults_stop_the_kubelet_and_a_dead_one_stays_dead_until_the_vm_is_recreated() {
    let lab = TestLab::stub().expect("lab starts");
    lab.fault("worker-down", Some(WORKERS[0])).expect("fault");
    lab.fault("worker-dead", Some(WORKERS[1])).expect("fault");
    let down = lab.ssh(WORKERS[0], "systemctl is-active kubelet; sudo systemctl restart kubelet && systemctl is-active kubelet").expect("ssh");
    assert_eq!(text(&down.stdout), "inactive\nactive\n");
    let dead = lab.ssh(WORKERS[1], "sudo systemctl restart kubelet").expect("ssh");
    assert!(!dead.status.success());
    assert!(text(&dead.stderr).contains("Job for kubelet.service failed"), "{}", text(&dead.stderr));

    let bodies: Vec<(String, String)> = lab.stub_requests().expect("stub").into_iter().map(|r| (r.path, r.body)).collect();
    assert!(bodies.contains(&(format!("/lab/v1/nodes/{}/kubelet", WORKERS[0]), "{\"state\":\"stopped\"}".into())));
    assert!(bodies.contains(&(format!("/lab/v1/nodes/{}/kubelet", WORKERS[1]), "{\"state\":\"dead\"}".into())));
    assert_eq!(bodies.iter().filter(|(p, _)| p.contains(WORKERS[1])).count(), 1, "the dead kubelet never reports running: {bodies:?}");

    for args in [["destroy", "-auto-approve", "-target=libvirt_domain.k8s-worker-2"], ["apply", "-auto-approve", "-target=libvirt_domain.k8s-worker-2"]] {
        let out = lab.terraform(&args).expect("terraform");
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    lab.trust_host_key(WORKERS[1]).expect("trust");
    let revived = lab.ssh(WORKERS[1], "sudo systemctl restart kubelet").expect("ssh");
    assert!(revived.status.success(), "{}", text(&revived.stderr));
}

#[test]
fn etcd_corrupt_stops_etcd_and_it_cannot_start_on_the_damaged_data() {
    let lab = TestLab::stub().expect("lab starts");
    lab.fault("etcd-corrupt", None).expect("fault");
    assert!(lab.etcd_pid().is_none());
    assert!(!lab.etcd().healthy());
    let start = lab.ssh(CONTROL_PLANE, "sudo systemctl start etcd").expect("ssh");
    assert!(!start.status.success(), "etcd must not start on a garbled WAL");
    assert!(text(&start.stderr).contains("Job for etcd.service failed"), "{}", text(&start.stderr));
    assert!(lab.etcd_pid().is_none());

    // The guide's etcd recovery from a backup snapshot brings it back.
    let root = lab.node(CONTROL_PLANE).expect("node").root.clone();
    std::fs::copy(lab.backup_dir().join("latest/etcd-snapshot.db"), root.join("tmp/etcd-snapshot.db")).expect("copy");
    let restore = lab
        .ssh(
            CONTROL_PLANE,
            &format!(
                "set -e\nsudo systemctl stop etcd\nsudo rm -rf /var/lib/etcd/member\nsudo ETCDCTL_API=3 etcdctl snapshot restore /tmp/etcd-snapshot.db --name {CONTROL_PLANE} --initial-cluster {CONTROL_PLANE}={peer} --initial-advertise-peer-urls {peer} --data-dir /var/lib/etcd\nsudo chown -R etcd:etcd /var/lib/etcd\nsudo systemctl start etcd",
                peer = lab.etcd_peer_url()
            ),
        )
        .expect("ssh");
    assert!(restore.status.success(), "{}", text(&restore.stderr));
    assert_eq!(lab.etcd().get("/lab/backup/marker").expect("get"), Some(lab.backups().last().expect("backup").marker.clone()));
}

#[test]
fn control_plane_lost_and_the_guides_rebuild_restores_etcd_from_the_latest_backup() {
    let lab = TestLab::stub().expect("lab starts");
    lab.etcd().put("/test/after-backup", "lost in the disaster").expect("put");
    lab.fault("control-plane-lost", None).expect("fault");
    assert!(lab.sshd_pid(CONTROL_PLANE).is_none());
    assert!(lab.etcd_pid().is_none());
    assert!(!lab.dir().join("nodes").join(CONTROL_PLANE).join("etc").exists(), "the node's disk is gone");
    assert!(lab.sshd_pid(WORKERS[0]).is_some());
    let paths: Vec<String> = lab.stub_requests().expect("stub").into_iter().map(|r| r.path).collect();
    assert_eq!(paths, vec!["/lab/v1/cluster/wipe".to_string()]);

    // The guide's control-plane-rebuild.sh, step by step.
    for args in [&["destroy", "-auto-approve", "-target=libvirt_domain.k8s-control-plane"][..], &["apply", "-auto-approve", "-target=libvirt_domain.k8s-control-plane"][..]] {
        let out = lab.terraform(args).expect("terraform");
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    lab.trust_host_key(CONTROL_PLANE).expect("trust");
    let init = lab
        .ssh(CONTROL_PLANE, "sudo kubeadm init --apiserver-advertise-address=192.168.122.10 --pod-network-cidr=10.244.0.0/16 --service-cidr=10.96.0.0/12 --upload-certs")
        .expect("ssh");
    assert!(init.status.success(), "{}", text(&init.stderr));
    assert!(text(&init.stdout).contains("initialized successfully"));
    assert_eq!(lab.etcd().get("/lab/backup/marker").expect("get"), None, "kubeadm init starts an empty etcd");

    let node = lab.node(CONTROL_PLANE).expect("node");
    let scp = Command::new("scp")
        .args(["-O", "-q", "-i"])
        .arg(lab.ssh_key())
        .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", lab.known_hosts().display()))
        .args(["-P", &node.ssh_port.to_string()])
        .arg(lab.backup_dir().join("latest/etcd-snapshot.db"))
        .arg(format!("{}@{}:/tmp/", lab.user(), node.ssh_host))
        .output()
        .expect("scp");
    assert!(scp.status.success(), "{}", text(&scp.stderr));
    assert!(node.root.join("tmp/etcd-snapshot.db").is_file(), "scp -O lands in the node's /tmp");

    let restore = lab
        .ssh(
            CONTROL_PLANE,
            "set -e\nsudo systemctl stop etcd\nsudo rm -rf /var/lib/etcd/member\nsudo ETCDCTL_API=3 etcdctl snapshot restore /tmp/etcd-snapshot.db --data-dir /var/lib/etcd\nsudo chown -R etcd:etcd /var/lib/etcd\nsudo systemctl start etcd\n",
        )
        .expect("ssh");
    assert!(restore.status.success(), "{}", text(&restore.stderr));
    let newest = lab.backups().last().expect("a backup").marker.clone();
    assert_eq!(lab.etcd().get("/lab/backup/marker").expect("get"), Some(newest));
    assert_eq!(lab.etcd().get("/test/after-backup").expect("get"), None);
    assert_eq!(lab.etcd().get("/lab/seed/created-by").expect("get").as_deref(), Some("dr-lab"));
}

#[test]
fn host_lost_leaves_only_the_backups_and_the_host_must_be_set_up_again() {
    let lab = TestLab::stub().expect("lab starts");
    lab.fault("host-lost", None).expect("fault");
    for node in lab.nodes() {
        assert!(lab.sshd_pid(&node.name).is_none(), "{} still runs", node.name);
    }
    assert!(lab.etcd_pid().is_none());
    assert_eq!(lab.backups().len(), 2);
    for backup in lab.backups() {
        assert!(backup.path.is_file());
    }
    let verify = Command::new(lab.dir().join("host-setup/verify-setup.sh")).output().expect("verify");
    assert!(!verify.status.success());
    let apply = lab.terraform(&["apply", "-auto-approve"]).expect("terraform");
    assert!(!apply.status.success(), "terraform needs init after a host loss");
    let init = lab.terraform(&["init"]).expect("terraform");
    assert!(init.status.success());
    let apply = lab.terraform(&["apply", "-auto-approve"]).expect("terraform");
    assert!(!apply.status.success(), "terraform needs libvirt");
    assert!(text(&apply.stderr).contains("libvirt"), "{}", text(&apply.stderr));
    for script in ["setup-host.sh", "setup-libvirt-sudo.sh", "setup-storage.sh", "verify-setup.sh"] {
        let out = Command::new(lab.dir().join("host-setup").join(script)).output().expect("script");
        assert!(out.status.success(), "{script}: {}", text(&out.stderr));
    }
    let apply = lab.terraform(&["apply", "-auto-approve"]).expect("terraform");
    assert!(apply.status.success(), "{}", text(&apply.stderr));
    assert!(text(&apply.stdout).contains("Resources: 3 added"));
    for node in lab.nodes() {
        assert!(lab.sshd_pid(&node.name).is_some(), "{} is back", node.name);
    }
}

#[test]
fn cluster_faults_are_forwarded_to_the_control_api() {
    let lab = TestLab::stub().expect("lab starts");
    for name in ["pod-crash", "network", "argocd-down"] {
        lab.fault(name, None).expect("fault");
    }
    let paths: Vec<String> = lab.stub_requests().expect("stub").into_iter().map(|r| r.path).collect();
    assert_eq!(paths, vec!["/lab/v1/faults/pod-crash", "/lab/v1/faults/network", "/lab/v1/faults/argocd-down"]);
    assert!(lab.fault("no-such-fault", None).is_err());
    assert!(lab.fault("worker-down", None).is_err(), "worker-down needs a node");
}
