//! The whole lab with the simulated Kubernetes API server: everything comes up
//! healthy, kubectl sees it, node-side commands change what the cluster shows,
//! and the guide's control-plane rebuild brings the platform back.

use std::process::Command;
use std::time::Duration;

use dr_lab::lab::process::wait_until;
use dr_lab::lab::testing::TestLab;
use dr_lab::lab::{Lab, CONTROL_PLANE, WORKERS};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn kubectl(lab: &Lab, args: &[&str]) -> String {
    let output = Command::new("kubectl").arg("--kubeconfig").arg(lab.kubeconfig_path()).args(args).output().expect("kubectl runs");
    assert!(output.status.success(), "kubectl {args:?}: {}", text(&output.stderr));
    text(&output.stdout)
}

fn ingress_status(lab: &Lab) -> u16 {
    dr_lab::lab::http::request("GET", &lab.ingress_url(), None).map(|(code, _)| code).unwrap_or(0)
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
    for node in lab.nodes() {
        assert!(node_ready(&lab, &node.name), "{} is Ready", node.name);
    }
    // The real kubectl sees the same through dr.toml's kubeconfig (a missing kubectl fails the test:
    // it is what proves the simulation speaks the real protocol).
    assert!(
        Command::new("kubectl").args(["version", "--client"]).output().is_ok_and(|o| o.status.success()),
        "kubectl is missing: run scripts/setup (it installs it)"
    );
    let nodes = kubectl(&lab, &["get", "nodes", "--no-headers"]);
    assert_eq!(nodes.lines().count(), 3, "{nodes}");
    assert!(nodes.lines().all(|l| l.split_whitespace().nth(1) == Some("Ready")), "{nodes}");
    check_dr_toml(&lab);
}

/// dr.toml is valid TOML with the documented tables, and what it names exists and works.
fn check_dr_toml(lab: &Lab) {
    let text = std::fs::read_to_string(lab.config_path()).expect("dr.toml");
    let config: toml::Value = toml::from_str(&text).expect("dr.toml is TOML");
    let s = |table: &str, key: &str| config[table][key].as_str().unwrap_or_else(|| panic!("{table}.{key} in {text}")).to_string();
    assert_eq!(s("cluster", "kubeconfig"), lab.kubeconfig_path().display().to_string());
    let nodes = config["nodes"].as_array().expect("[[nodes]]");
    assert_eq!(nodes.len(), 3);
    assert_eq!(nodes[0]["role"].as_str(), Some("control-plane"));
    for (node, expected) in nodes.iter().zip(lab.nodes()) {
        assert_eq!(node["name"].as_str(), Some(expected.name.as_str()));
        assert_eq!(node["ssh_host"].as_str(), Some(expected.ssh_host.as_str()));
        assert_eq!(node["ssh_port"].as_integer(), Some(i64::from(expected.ssh_port)));
    }
    assert_eq!(s("ssh", "user"), lab.user());
    for (table, key) in [("ssh", "key"), ("ssh", "known_hosts"), ("etcd", "cacert"), ("etcd", "cert"), ("etcd", "key"), ("backup", "dir"), ("terraform", "dir"), ("terraform", "binary"), ("scripts", "host_setup_dir"), ("scripts", "platform_dir"), ("scripts", "restore")] {
        assert!(std::path::Path::new(&s(table, key)).exists(), "{table}.{key}");
    }
    assert_eq!(config["etcd"]["endpoints"][0].as_str(), Some(lab.etcd().endpoint.as_str()));
    for key in ["name", "initial_cluster", "initial_advertise_peer_urls", "data_dir", "node"] {
        s("etcd", key);
    }
    assert_eq!(config["backup"]["rpo_hours"].as_integer(), Some(24));
    assert_eq!(s("verify", "ingress_url"), lab.ingress_url());
}

#[test]
fn the_guides_etcdctl_command_works_on_the_control_plane() {
    let lab = TestLab::simulated().expect("lab starts");
    let member_list = lab
        .ssh(
            CONTROL_PLANE,
            "etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/kubernetes/pki/etcd/ca.crt --cert=/etc/kubernetes/pki/etcd/server.crt --key=/etc/kubernetes/pki/etcd/server.key member list",
        )
        .expect("ssh");
    assert!(member_list.status.success(), "{}", text(&member_list.stderr));
    assert!(text(&member_list.stdout).contains(&format!(", started, {CONTROL_PLANE}, ")), "{}", text(&member_list.stdout));
    let save = lab
        .ssh(
            CONTROL_PLANE,
            "sudo ETCDCTL_API=3 etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/kubernetes/pki/etcd/ca.crt --cert=/etc/kubernetes/pki/etcd/server.crt --key=/etc/kubernetes/pki/etcd/server.key snapshot save /tmp/emergency-backup.db",
        )
        .expect("ssh");
    assert!(save.status.success(), "{}", text(&save.stderr));
    let saved = lab.node(CONTROL_PLANE).expect("node").root.join("tmp/emergency-backup.db");
    let (_, revision, _) = dr_lab::lab::etcd::snapshot_status(&saved).expect("a valid snapshot");
    assert!(revision > 0);
}

#[test]
fn a_stopped_kubelet_makes_the_node_not_ready_until_systemctl_restarts_it() {
    let lab = TestLab::simulated().expect("lab starts");
    let worker = WORKERS[0];
    lab.fault("worker-down", Some(worker)).expect("fault");
    assert!(wait_until(Duration::from_secs(20), || !node_ready(&lab, worker)), "the node goes NotReady");
    let restart = lab.ssh(worker, "sudo systemctl restart kubelet\nsudo systemctl restart containerd").expect("ssh");
    assert!(restart.status.success(), "{}", text(&restart.stderr));
    assert!(wait_until(Duration::from_secs(20), || node_ready(&lab, worker)), "the node is Ready again");
}

#[test]
fn the_guides_control_plane_rebuild_brings_the_platform_back() {
    let lab = TestLab::simulated().expect("lab starts");
    lab.fault("control-plane-lost", None).expect("fault");
    assert!(wait_until(Duration::from_secs(20), || ingress_status(&lab) == 503));
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
        wait_until(Duration::from_secs(20), || ingress_status(&lab) == 200),
        "healthy again: {}",
        lab.health().map(|h| h.to_string()).unwrap_or_default()
    );
    assert_eq!(lab.etcd().get("/lab/backup/marker").expect("get"), Some(lab.backups().last().expect("backup").marker.clone()));
}

#[test]
fn the_guides_complete_recovery_after_host_lost_brings_everything_back_from_the_backup() {
    let lab = TestLab::simulated().expect("lab starts");
    lab.fault("host-lost", None).expect("fault");
    assert!(wait_until(Duration::from_secs(20), || ingress_status(&lab) == 503));
    let run = |path: std::path::PathBuf, args: &[&str], cwd: &std::path::Path| {
        let out = Command::new(&path).args(args).current_dir(cwd).output().expect("runs");
        assert!(out.status.success(), "{} {args:?}: {}{}", path.display(), text(&out.stdout), text(&out.stderr));
    };
    let host_setup = lab.dir().join("host-setup");
    for script in ["setup-host.sh", "setup-libvirt-sudo.sh", "setup-storage.sh", "verify-setup.sh"] {
        run(host_setup.join(script), &[], &host_setup);
    }
    let terraform_dir = lab.dir().join("terraform");
    run(lab.dir().join("bin/terraform"), &["init"], &terraform_dir);
    run(lab.dir().join("bin/terraform"), &["apply", "-auto-approve"], &terraform_dir);
    // The VMs' cloud-init ran kubeadm on them.
    assert!(lab.journal(CONTROL_PLANE).iter().any(|l| l.contains("kubeadm init")));
    assert!(lab.journal(WORKERS[1]).iter().any(|l| l.contains("kubeadm join 127.0.0.10:6443")));
    for node in lab.nodes() {
        assert!(wait_until(Duration::from_secs(20), || node_ready(&lab, &node.name)), "{} Ready", node.name);
    }
    // LATEST_BACKUP=$(ls -t /backup/*.tar.gz | head -1)
    let latest = Command::new("sh").arg("-c").arg("ls -t *.tar.gz | head -1").current_dir(lab.backup_dir()).output().expect("ls");
    let latest = lab.backup_dir().join(text(&latest.stdout).trim());
    run(lab.dir().join("bin/k8s-restore.sh"), &[latest.to_str().expect("utf-8")], lab.dir());
    assert_eq!(lab.etcd().get("/lab/backup/marker").expect("get"), Some(lab.backups().last().expect("backup").marker.clone()));
    assert_eq!(lab.etcd().get("/lab/seed/after-backups").expect("get"), None);
    let platform = lab.dir().join("platform");
    run(platform.join("platform-deploy.sh"), &[], &platform);
    assert!(
        wait_until(Duration::from_secs(20), || ingress_status(&lab) == 200),
        "healthy again: {}",
        lab.health().map(|h| h.to_string()).unwrap_or_default()
    );
    let ssh_known_hosts_still_old = lab.ssh(WORKERS[0], "true").expect("ssh");
    assert!(!ssh_known_hosts_still_old.status.success(), "rebuilt VMs have new host keys");
}
