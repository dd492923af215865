//! The etcd actions against the lab's real etcd (TLS, client certificates):
//! member list, health and alarms, etcd down, a snapshot that passes its
//! hash check (and a truncated one that fails it), and a restore over SSH
//! that brings back exactly the keys written before the snapshot.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::sync::atomic::{AtomicU64, Ordering};

use dr_orchestrator::{Action, ActionCtx, ActionError, RunId};
use dr_tests::lab::testing::TestLab;
use dr_workflows::actions::etcd::{
    self, EtcdAlarmList, EtcdConnection, EtcdEndpointHealth, EtcdMemberList, EtcdSnapshotRestore, EtcdSnapshotSave,
};
use dr_workflows::actions::ssh::SshTarget;

fn ctx() -> ActionCtx {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    ActionCtx {
        run_id: RunId::new_v7(1_700_000_000_000, u128::from(n) << 20 | u128::from(std::process::id()) | 1 << 100),
        workflow: "test".into(),
        step: format!("step-{n}").into(),
        attempt: 1,
        cancel: Default::default(),
        deadline: None,
        inputs: Default::default(),
        clock: std::sync::Arc::new(dr_orchestrator::SystemClock),
    }
}

fn connection(lab: &TestLab) -> EtcdConnection {
    let summary = lab.summary();
    EtcdConnection {
        endpoints: summary.etcd.endpoints,
        cacert: summary.etcd.cacert,
        cert: summary.etcd.cert,
        key: summary.etcd.key,
        timeout_ms: 3_000,
    }
}

async fn run(action: &dyn Action, ctx: ActionCtx) -> Result<String, ActionError> {
    action.run(ctx).await.map(|o| o.summary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_list_health_and_alarms_over_tls_and_a_clear_error_when_etcd_is_down() {
    let lab = TestLab::stub().unwrap();
    let etcd = connection(&lab);
    let endpoint = etcd.endpoints[0].clone();
    assert!(endpoint.starts_with("https://"), "{endpoint}");

    let summary = run(&EtcdMemberList { etcd: etcd.clone() }, ctx()).await.unwrap();
    assert!(summary.starts_with("1 etcd members") && summary.contains("k8s-control-plane-1"), "{summary}");
    assert!(summary.contains(lab.etcd_peer_url()), "{summary}");

    let summary = run(&EtcdEndpointHealth { etcd: etcd.clone() }, ctx()).await.unwrap();
    assert!(summary.starts_with("1 etcd endpoints healthy"), "{summary}");
    let statuses = etcd::endpoint_health(&etcd).await;
    assert!(statuses[0].healthy && statuses[0].is_leader, "{statuses:?}");
    assert!(statuses[0].version.as_deref().unwrap_or("").starts_with("3."), "{statuses:?}");
    assert!(statuses[0].revision.unwrap_or(0) > 0, "{statuses:?}");

    let summary = run(&EtcdAlarmList { etcd: etcd.clone() }, ctx()).await.unwrap();
    assert!(summary.starts_with("no etcd alarms"), "{summary}");

    // Wrong CA path: a permanent error naming the setting.
    let mut broken = etcd.clone();
    broken.cacert = lab.temp_dir().join("no-ca.crt");
    let err = run(&EtcdMemberList { etcd: broken }, ctx()).await.unwrap_err();
    assert!(!err.retryable && err.message.contains("etcd.cacert"), "{}", err.message);

    lab.etcd_stop().unwrap();
    for action in [&EtcdMemberList { etcd: etcd.clone() } as &dyn Action, &EtcdEndpointHealth { etcd: etcd.clone() }] {
        let started = std::time::Instant::now();
        let err = run(action, ctx()).await.unwrap_err();
        assert!(err.retryable, "{}", err.message);
        assert!(err.message.contains(&endpoint), "{}", err.message);
        assert!(started.elapsed() < std::time::Duration::from_secs(15), "{:?}", started.elapsed());
    }
    let path = lab.temp_dir().join("down.db");
    let err = run(&EtcdSnapshotSave { etcd: etcd.clone(), path: path.clone() }, ctx()).await.unwrap_err();
    assert!(err.retryable && err.message.contains("no healthy etcd member"), "{}", err.message);
    assert!(!path.exists());
    lab.etcd_start().unwrap();
    run(&EtcdMemberList { etcd }, ctx()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_snapshot_passes_its_hash_check_and_a_truncated_copy_fails_it() {
    let lab = TestLab::stub().unwrap();
    let etcd = connection(&lab);
    lab.etcd().put("/dr-test/snapshot", "present").unwrap();
    let path = lab.temp_dir().join("snap.db");
    let save = EtcdSnapshotSave { etcd, path: path.clone() };
    assert!(save.probe(ctx()).await.unwrap().is_none());
    let summary = run(&save, ctx()).await.unwrap();
    assert!(summary.contains("hash check passed"), "{summary}");
    let info = etcd::verify_snapshot(&path).unwrap();
    assert!(summary.contains(&info.sha256) && summary.contains(&format!("{} bytes", info.size)), "{summary}");
    assert!(!path.with_extension("partial").exists());
    // The real etcdctl agrees it is a snapshot with our key's revision in it.
    let (_, revision, keys) = dr_tests::lab::etcd::snapshot_status(&path).unwrap();
    assert!(revision > 0 && keys > 0);
    assert!(summary.contains(&format!("revision {revision}")), "{summary} (etcdctl: {revision})");
    assert!(save.probe(ctx()).await.unwrap().is_some());

    let data = std::fs::read(&path).unwrap();
    let truncated = lab.temp_dir().join("truncated.db");
    std::fs::write(&truncated, &data[..data.len() - 4096]).unwrap();
    let err = etcd::verify_snapshot(&truncated).unwrap_err();
    assert!(err.message.contains("fails its check") && err.message.contains("truncated.db"), "{}", err.message);
    let mut flipped = data.clone();
    flipped[100] ^= 0xff;
    std::fs::write(&truncated, &flipped).unwrap();
    assert!(etcd::verify_snapshot(&truncated).is_err());
    let probe = EtcdSnapshotSave { etcd: connection(&lab), path: truncated };
    assert!(probe.probe(ctx()).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_over_ssh_brings_back_the_keys_written_before_the_snapshot() {
    let lab = TestLab::stub().unwrap();
    let etcd = connection(&lab);
    for i in 0..20 {
        lab.etcd().put(&format!("/dr-test/before/{i}"), &format!("b{i}")).unwrap();
    }
    let path = lab.temp_dir().join("restore.db");
    run(&EtcdSnapshotSave { etcd: etcd.clone(), path: path.clone() }, ctx()).await.unwrap();
    for i in 0..5 {
        lab.etcd().put(&format!("/dr-test/after/{i}"), "late").unwrap();
    }
    lab.etcd().put("/dr-test/before/0", "changed-later").unwrap();

    let node = lab.node("k8s-control-plane-1").unwrap();
    let ssh = SshTarget::new(node.ssh_host.clone(), node.ssh_port, lab.user(), lab.known_hosts()).with_key(lab.ssh_key());
    let peer = lab.etcd_peer_url().to_owned();
    let mut restore = EtcdSnapshotRestore::new(
        ssh,
        &path,
        "k8s-control-plane-1",
        format!("k8s-control-plane-1={peer}"),
        "lab-etcd",
        peer,
    );
    // The lab maps /var/lib/etcd and /tmp into the node, not /var/lib's other entries.
    restore.staging_dir = "/tmp".into();
    let ctx = ctx();

    // A snapshot failing its hash check never reaches the node.
    let truncated = lab.temp_dir().join("truncated.db");
    let data = std::fs::read(&path).unwrap();
    std::fs::write(&truncated, &data[..data.len() / 2]).unwrap();
    let bad = EtcdSnapshotRestore { snapshot: truncated, ..restore.clone() };
    let err = run(&bad, ctx.clone()).await.unwrap_err();
    assert!(!err.retryable && err.message.contains("fails its check"), "{}", err.message);
    // One that passes the hash check but is no database fails the trial
    // restore, and etcd is left alone (never stopped).
    let garbage = lab.temp_dir().join("garbage.db");
    let mut bytes = vec![0x5au8; 8192];
    let digest = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&bytes));
    bytes.extend_from_slice(&digest);
    std::fs::write(&garbage, &bytes).unwrap();
    let bad = EtcdSnapshotRestore { snapshot: garbage, ..restore.clone() };
    let err = run(&bad, ctx.clone()).await.unwrap_err();
    assert!(!err.retryable && err.message.contains("trial restore") && err.message.contains("left untouched"), "{}", err.message);
    assert!(!lab.journal("k8s-control-plane-1").iter().any(|l| l.contains("systemctl stop etcd")));
    assert_eq!(lab.etcd().get("/dr-test/after/0").unwrap().as_deref(), Some("late"));
    assert!(restore.probe(ctx.clone()).await.unwrap().is_none());
    let summary = run(&restore, ctx.clone()).await.unwrap();
    assert!(summary.contains("restored from snapshot") && summary.contains("etcdctl"), "{summary}");

    for i in 0..20 {
        let expected = format!("b{i}");
        assert_eq!(lab.etcd().get(&format!("/dr-test/before/{i}")).unwrap().as_deref(), Some(expected.as_str()));
    }
    for i in 0..5 {
        assert_eq!(lab.etcd().get(&format!("/dr-test/after/{i}")).unwrap(), None, "after/{i} survived the restore");
    }
    assert!(restore.probe(ctx.clone()).await.unwrap().is_some());

    // The procedure, from the node's journal: trial restore before anything destructive.
    let journal = lab.journal("k8s-control-plane-1");
    let position = |needle: &str| {
        journal.iter().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("no `{needle}` in {journal:#?}"))
    };
    let trial = position("snapshot restore /tmp/dr-etcd-snapshot-");
    assert!(journal[trial].contains("--data-dir /tmp/dr-etcd-trial-"), "{}", journal[trial]);
    assert!(journal[trial].contains("--initial-cluster-token lab-etcd"), "{}", journal[trial]);
    let stop = position("systemctl stop etcd");
    assert!(trial < stop);
    let swap = position("mv /var/lib/etcd /tmp/etcd-before-restore-");
    assert!(stop < swap && swap < position("chmod 700 /var/lib/etcd") && swap < position("systemctl start etcd"));
    assert!(swap < position("chown -R etcd:etcd /var/lib/etcd"));
    let data_dir = lab.etcd_data_dir();
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&data_dir).unwrap().permissions().mode() & 0o777, 0o700);
}
