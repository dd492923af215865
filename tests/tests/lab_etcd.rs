//! The lab's real etcd: TLS with client certificates, stop/start over ssh
//! with data intact, snapshot restore into the node's mapped data dir.

use std::process::Command;

use dr_lab::lab::testing::TestLab;
use dr_lab::lab::CONTROL_PLANE;

fn stub_lab() -> TestLab {
    TestLab::stub().expect("lab starts")
}

#[test]
fn etcd_answers_over_tls_with_a_client_certificate_and_refuses_a_client_without_one() {
    let lab = stub_lab();
    let etcd = lab.etcd();
    assert!(etcd.endpoint.starts_with("https://127.0.0.1:"), "{}", etcd.endpoint);
    etcd.put("/test/key", "value-1").expect("put");
    assert_eq!(etcd.get("/test/key").expect("get").as_deref(), Some("value-1"));
    assert_eq!(etcd.get("/test/absent").expect("get"), None);

    let without_cert = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", etcd.endpoint))
        .arg(format!("--cacert={}", etcd.cacert.display()))
        .args(["--dial-timeout=2s", "--command-timeout=3s", "get", "/test/key"])
        .output()
        .expect("etcdctl runs");
    assert!(!without_cert.status.success(), "etcd must refuse a client without a certificate");
    assert!(!String::from_utf8_lossy(&without_cert.stdout).contains("value-1"));

    let plain_http = Command::new("curl")
        .args(["-sS", "--max-time", "3", "--cacert"])
        .arg(&etcd.cacert)
        .arg(format!("{}/version", etcd.endpoint))
        .output()
        .expect("curl runs");
    assert!(!plain_http.status.success(), "TLS without a client certificate must fail");
    let with_cert = Command::new("curl")
        .args(["-sS", "--max-time", "3", "--cacert"])
        .arg(&etcd.cacert)
        .arg("--cert")
        .arg(&etcd.cert)
        .arg("--key")
        .arg(&etcd.key)
        .arg(format!("{}/version", etcd.endpoint))
        .output()
        .expect("curl runs");
    assert!(with_cert.status.success(), "{}", String::from_utf8_lossy(&with_cert.stderr));
    assert!(String::from_utf8_lossy(&with_cert.stdout).contains("etcdserver"));
}

#[test]
fn systemctl_stop_etcd_over_ssh_stops_the_real_etcd_and_start_brings_it_back_with_data() {
    let lab = stub_lab();
    lab.etcd().put("/test/durable", "kept").expect("put");
    let pid = lab.etcd_pid().expect("etcd runs");

    let stop = lab.ssh(CONTROL_PLANE, "sudo systemctl stop etcd").expect("ssh");
    assert!(stop.status.success(), "{}", String::from_utf8_lossy(&stop.stderr));
    assert!(lab.etcd_pid().is_none());
    assert!(!dr_lab::lab::process::pid_alive(pid), "the etcd process is gone");
    assert!(!lab.etcd().healthy());
    let inactive = lab.ssh(CONTROL_PLANE, "systemctl is-active etcd").expect("ssh");
    assert_eq!(String::from_utf8_lossy(&inactive.stdout).trim(), "inactive");

    let start = lab.ssh(CONTROL_PLANE, "sudo systemctl start etcd").expect("ssh");
    assert!(start.status.success(), "{}", String::from_utf8_lossy(&start.stderr));
    assert!(lab.etcd_pid().is_some());
    assert_eq!(lab.etcd().get("/test/durable").expect("get").as_deref(), Some("kept"));
    let journal = lab.journal(CONTROL_PLANE).join("\n");
    assert!(journal.contains("systemctl stop etcd") && journal.contains("systemctl start etcd"), "{journal}");
}

#[test]
fn the_guides_etcd_restore_over_ssh_restores_the_snapshot_into_the_mapped_data_dir() {
    let lab = stub_lab();
    let etcd = lab.etcd();
    etcd.put("/test/before-snapshot", "1").expect("put");
    let emergency = lab.etcd_data_dir().parent().expect("parent").join("../../tmp/emergency-backup.db");
    etcd.snapshot_save(&emergency).expect("snapshot");
    etcd.put("/test/after-snapshot", "2").expect("put");

    let script = format!(
        "set -e\n\
         sudo systemctl stop etcd\n\
         sudo rm -rf /var/lib/etcd/member\n\
         sudo ETCDCTL_API=3 etcdctl snapshot restore /tmp/emergency-backup.db \\\n\
           --name {CONTROL_PLANE} \\\n\
           --initial-cluster {CONTROL_PLANE}={peer} \\\n\
           --initial-advertise-peer-urls {peer} \\\n\
           --data-dir /var/lib/etcd\n\
         sudo chown -R etcd:etcd /var/lib/etcd\n\
         sudo systemctl start etcd\n",
        peer = lab.etcd_peer_url()
    );
    let output = lab.ssh(CONTROL_PLANE, &script).expect("ssh");
    assert!(output.status.success(), "{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert_eq!(etcd.get("/test/before-snapshot").expect("get").as_deref(), Some("1"));
    assert_eq!(etcd.get("/test/after-snapshot").expect("get"), None, "data after the snapshot is lost");
    assert!(lab.etcd_data_dir().join("member/wal").is_dir());
    let journal = lab.journal(CONTROL_PLANE);
    assert!(journal.iter().any(|l| l.ends_with("chown -R etcd:etcd /var/lib/etcd")), "{journal:?}");
    assert!(journal.iter().any(|l| l.contains("etcdctl snapshot restore /tmp/emergency-backup.db")), "{journal:?}");
}
