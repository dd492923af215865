//! The etcd actions against the lab's real etcd (TLS, client certificates):
//! member list, health and alarms, etcd down, a snapshot that passes its
//! hash check (and a truncated one that fails it), a restore over SSH that
//! brings back exactly the keys written before the snapshot, a second restore
//! of the same snapshot that keeps the data dir it replaces, and restores
//! interrupted inside the swap and run again.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use dr_orchestrator::{Action, ActionCtx, ActionError, RunId, Typed, TypedAction};
use dr_lab::lab::testing::TestLab;
use dr_workflows::actions::etcd::{
    self, EtcdAlarmList, EtcdConnection, EtcdEndpointHealth, EtcdMemberList, EtcdSnapshotRestore, EtcdSnapshotSave,
    RestoreReport, SwapPhase,
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

/// One attempt, to its summary line.
async fn run<A: TypedAction>(action: &A, ctx: ActionCtx) -> Result<String, ActionError> {
    action.run(&ctx).await.map(|output| action.summary(&output))
}

const CONTROL_PLANE: &str = "k8s-control-plane-1";

/// The restore of `snapshot` onto the lab's control plane (staging in the
/// node's /tmp: the lab maps /var/lib/etcd and /tmp into the node, not
/// /var/lib's other entries).
fn restore_action(lab: &TestLab, snapshot: &Path) -> EtcdSnapshotRestore {
    let node = lab.node(CONTROL_PLANE).unwrap();
    let ssh =
        SshTarget::new(node.ssh_host.clone(), node.ssh_port, lab.user(), lab.known_hosts()).with_key(lab.ssh_key());
    let peer = lab.etcd_peer_url().to_owned();
    let mut restore =
        EtcdSnapshotRestore::new(ssh, snapshot, CONTROL_PLANE, format!("{CONTROL_PLANE}={peer}"), "lab-etcd", peer);
    restore.staging_dir = "/tmp".into();
    restore
}

/// A restore's report.
async fn restore(action: &EtcdSnapshotRestore) -> RestoreReport {
    action.run(&ctx()).await.unwrap()
}

/// Where a node path lies on this machine.
fn on_node(lab: &TestLab, path: &str) -> PathBuf {
    lab.dir().join("nodes").join(CONTROL_PLANE).join(path.trim_start_matches('/'))
}

/// Serves etcd from the node directory `kept` and leaves the data dir it
/// served before under that name (so calling it twice swaps back).
fn serve_from(lab: &TestLab, kept: &str) {
    let (live, kept) = (lab.etcd_data_dir(), on_node(lab, kept));
    let between = live.with_file_name("etcd.test-swap");
    lab.etcd_stop().unwrap();
    std::fs::rename(&live, &between).unwrap();
    std::fs::rename(&kept, &live).unwrap();
    std::fs::rename(&between, &kept).unwrap();
    lab.etcd_start().unwrap();
}

fn put_all(lab: &TestLab, prefix: &str, n: usize) {
    for i in 0..n {
        lab.etcd().put(&format!("{prefix}/{i}"), &format!("{prefix}-{i}")).unwrap();
    }
}

/// Whether all (`true`) or none (`false`) of `put_all(prefix, n)`'s keys are live.
fn assert_keys(lab: &TestLab, prefix: &str, n: usize, present: bool) {
    for i in 0..n {
        let value = lab.etcd().get(&format!("{prefix}/{i}")).unwrap();
        let expected = present.then(|| format!("{prefix}-{i}"));
        assert_eq!(value, expected, "{prefix}/{i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_list_health_and_alarms_over_tls_and_a_clear_error_when_etcd_is_down() {
    let lab = TestLab::stub().unwrap();
    let etcd = connection(&lab);
    let endpoint = etcd.endpoints[0].clone();
    assert!(endpoint.starts_with("https://"), "{endpoint}");

    let members = EtcdMemberList { etcd: etcd.clone() };
    let list = members.run(&ctx()).await.unwrap();
    let summary = members.summary(&list);
    assert!(summary.starts_with("1 etcd members") && summary.contains("k8s-control-plane-1"), "{summary}");
    assert_eq!(list.members[0].peer_urls, [lab.etcd_peer_url()], "{list:?}");

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
    // Through the engine's side (`Typed`), as a workflow runs them.
    for action in [&Typed(EtcdMemberList { etcd: etcd.clone() }) as &dyn Action, &Typed(EtcdEndpointHealth { etcd: etcd.clone() })] {
        let started = std::time::Instant::now();
        let err = action.run(ctx()).await.unwrap_err();
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
    assert!(save.probe(&ctx()).await.unwrap().is_none());
    let summary = run(&save, ctx()).await.unwrap();
    assert!(summary.contains("hash check passed"), "{summary}");
    let info = etcd::verify_snapshot(&path).unwrap();
    assert!(summary.contains(&info.sha256) && summary.contains(&format!("{} bytes", info.size)), "{summary}");
    assert!(!path.with_extension("partial").exists());
    // The real etcdctl agrees it is a snapshot with our key's revision in it.
    let (_, revision, keys) = dr_lab::lab::etcd::snapshot_status(&path).unwrap();
    assert!(revision > 0 && keys > 0);
    assert!(summary.contains(&format!("revision {revision}")), "{summary} (etcdctl: {revision})");
    let found = save.probe(&ctx()).await.unwrap().expect("the probe finds the saved snapshot");
    assert_eq!((found.sha256, found.size), (info.sha256.clone(), info.size));

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
    assert!(probe.probe(&ctx()).await.unwrap().is_none());
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

    let restore = restore_action(&lab, &path);
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
    assert!(restore.probe(&ctx).await.unwrap().is_none());
    let report = restore.run(&ctx).await.unwrap();
    let summary = restore.summary(&report);
    assert!(summary.contains("restored from snapshot") && summary.contains("etcdctl"), "{summary}");

    for i in 0..20 {
        let expected = format!("b{i}");
        assert_eq!(lab.etcd().get(&format!("/dr-test/before/{i}")).unwrap().as_deref(), Some(expected.as_str()));
    }
    for i in 0..5 {
        assert_eq!(lab.etcd().get(&format!("/dr-test/after/{i}")).unwrap(), None, "after/{i} survived the restore");
    }
    let found = restore.probe(&ctx).await.unwrap().expect("the probe sees the restore done");
    assert_eq!((&found.host, &found.tool, &found.snapshot_sha256), (&report.host, &report.tool, &report.snapshot_sha256));
    assert_eq!(found.previous_data_dir, report.previous_data_dir, "the probe finds the data dir the restore kept");

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
    let swap = position("mv -T /var/lib/etcd /tmp/etcd.before-");
    assert!(stop < swap && swap < position("chmod 700 /var/lib/etcd") && swap < position("systemctl start etcd"));
    assert!(swap < position("chown -R etcd:etcd /var/lib/etcd"));
    let data_dir = lab.etcd_data_dir();
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&data_dir).unwrap().permissions().mode() & 0o777, 0o700);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restoring_the_same_snapshot_twice_keeps_the_data_dir_it_replaces() {
    let lab = TestLab::stub().unwrap();
    put_all(&lab, "/dr-test/s", 10);
    let path = lab.temp_dir().join("s.db");
    run(&EtcdSnapshotSave { etcd: connection(&lab), path: path.clone() }, ctx()).await.unwrap();
    let id = etcd::verify_snapshot(&path).unwrap().sha256[..16].to_owned();
    put_all(&lab, "/dr-test/first", 3);
    let action = restore_action(&lab, &path);

    let first = restore(&action).await;
    let kept = format!("/tmp/etcd.before-{id}");
    assert_eq!(first.previous_data_dir.as_deref(), Some(kept.as_str()));
    assert_keys(&lab, "/dr-test/s", 10, true);
    assert_keys(&lab, "/dr-test/first", 3, false);

    // Work done on the restored cluster, then the same snapshot again (an
    // operator's second try, or a rerun): the data dir it replaces is kept
    // beside the first one, which is untouched.
    put_all(&lab, "/dr-test/between", 3);
    let second = restore(&action).await;
    let kept_again = format!("{kept}.1");
    assert_eq!(second.previous_data_dir.as_deref(), Some(kept_again.as_str()));
    assert_keys(&lab, "/dr-test/s", 10, true);
    assert_keys(&lab, "/dr-test/between", 3, false);
    assert!(!lab.journal(CONTROL_PLANE).iter().any(|l| l.contains(" rm ") && l.contains("/var/lib/etcd")));

    // Each kept dir is a working data dir with what was live when it was replaced.
    serve_from(&lab, &kept_again);
    assert_keys(&lab, "/dr-test/between", 3, true);
    assert_keys(&lab, "/dr-test/s", 10, true);
    serve_from(&lab, &kept_again);
    serve_from(&lab, &kept);
    assert_keys(&lab, "/dr-test/first", 3, true);
    assert_keys(&lab, "/dr-test/between", 3, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_interrupted_inside_the_swap_ends_correct_when_run_again() {
    let lab = TestLab::stub().unwrap();
    put_all(&lab, "/dr-test/s", 10);
    let path = lab.temp_dir().join("s.db");
    run(&EtcdSnapshotSave { etcd: connection(&lab), path: path.clone() }, ctx()).await.unwrap();
    let sha256 = etcd::verify_snapshot(&path).unwrap().sha256;
    let kept = format!("/tmp/etcd.before-{}", &sha256[..16]);
    let action = restore_action(&lab, &path);

    check(&lab, &action, &[SwapPhase::Stop, SwapPhase::Keep], &kept).await;
    check(&lab, &action, &[SwapPhase::Stop], &format!("{kept}.1")).await;
    check(&lab, &action, &[SwapPhase::Stop, SwapPhase::Keep], &format!("{kept}.2")).await;
}

/// An attempt dies after the swap's first `phases`, leaving the node as those
/// commands left it; the rerun restores the snapshot and keeps the data dir
/// that was live before the attempt as `expect_kept`.
async fn check(lab: &TestLab, action: &EtcdSnapshotRestore, phases: &[SwapPhase], expect_kept: &str) {
    let sha256 = etcd::verify_snapshot(&action.snapshot).unwrap().sha256;
    let live_only = format!("/dr-test/live-{expect_kept}");
    put_all(lab, &live_only, 3);
    for (step, phase) in action.swap_steps(&sha256).unwrap().iter().zip(phases) {
        assert_eq!(step.phase, *phase);
        let output = lab.ssh(CONTROL_PLANE, &step.command).unwrap();
        assert!(output.status.success(), "{}: {}", step.command, String::from_utf8_lossy(&output.stderr));
    }
    assert!(!lab.etcd().healthy());
    assert_eq!(lab.etcd_data_dir().exists(), !phases.contains(&SwapPhase::Keep));

    let report = restore(action).await;
    assert_eq!(report.previous_data_dir.as_deref(), Some(expect_kept), "{phases:?}");
    assert_keys(lab, "/dr-test/s", 10, true);
    assert_keys(lab, &live_only, 3, false);
    serve_from(lab, expect_kept);
    assert_keys(lab, &live_only, 3, true);
    serve_from(lab, expect_kept);
    assert_keys(lab, &live_only, 3, false);
}
