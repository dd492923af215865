//! The ssh actions against the lab's real sshd nodes: commands with strict
//! host-key checking, a changed host key failing closed until the explicit
//! trust action, wrong key, host down, timeouts, checksummed transfers.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use dr_orchestrator::{ActionCtx, ActionError, RunId, TypedAction};
use dr_lab::lab::testing::TestLab;
use dr_workflows::actions::ssh::{self, SshCommand, SshDownload, SshTarget, SshTrustHostKey, SshUpload};
use sha2::{Digest, Sha256};

fn ctx() -> ActionCtx {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    ActionCtx {
        run_id: RunId::new_v7(1_700_000_000_000, u128::from(n) << 20 | u128::from(std::process::id())),
        workflow: "test".into(),
        step: format!("step-{n}").into(),
        attempt: 1,
        cancel: Default::default(),
        deadline: None,
        inputs: Default::default(),
        clock: std::sync::Arc::new(dr_orchestrator::SystemClock),
    }
}

fn target(lab: &TestLab, node: &str) -> SshTarget {
    let info = lab.node(node).unwrap();
    SshTarget::new(info.ssh_host.clone(), info.ssh_port, lab.user(), lab.known_hosts()).with_key(lab.ssh_key())
}

fn command(target: SshTarget, line: &str, sudo: bool) -> SshCommand {
    SshCommand { target, command: line.to_owned(), sudo, timeout_ms: None, probe: None }
}

/// One attempt, to its summary line.
async fn run<A: TypedAction>(action: &A, ctx: ActionCtx) -> Result<String, ActionError> {
    action.run(&ctx).await.map(|output| action.summary(&output))
}

/// The SHA256 fingerprint of a node's current host key, from its .pub file.
fn host_fingerprint(lab: &TestLab, node: &str) -> String {
    let text = std::fs::read_to_string(lab.dir().join("sshd").join(node).join("ssh_host_ed25519_key.pub")).unwrap();
    let blob = base64::engine::general_purpose::STANDARD.decode(text.split_whitespace().nth(1).unwrap()).unwrap();
    format!("SHA256:{}", base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(blob)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_commands_on_every_node_with_strict_host_keys_and_one_connection_per_host() {
    let lab = TestLab::stub().unwrap();
    let ctx = ctx();
    let names: Vec<String> = lab.nodes().iter().map(|n| n.name.clone()).collect();
    assert_eq!(names.len(), 3);
    for name in &names {
        let marker = format!("dr-ssh-test-{name}");
        let action = command(target(&lab, name), &format!("systemctl status containerd; echo {marker}"), true);
        let result = action.run(&ctx).await.unwrap();
        let summary = action.summary(&result);
        assert!(summary.contains("exited 0") && result.stdout.text.contains(&marker), "{summary}: {result:?}");
        let journal = lab.journal(name);
        assert!(journal.iter().any(|l| l.contains("sudo") && l.contains("systemctl status containerd")), "{journal:?}");
        // Reused: a second command on the same host opens no new connection.
        run(&command(target(&lab, name), "true", false), ctx.clone()).await.unwrap();
    }
    assert_eq!(ssh::pool::open_for_run(ctx.run_id), 3);

    // A failing command: its status and the tail of its stderr in the error.
    let err = run(&command(target(&lab, &names[1]), "echo fine; echo broken-thing >&2; exit 3", false), ctx.clone())
        .await
        .unwrap_err();
    assert!(err.message.contains("exited with status 3") && err.message.contains("broken-thing"), "{}", err.message);
    assert!(err.message.contains(&target(&lab, &names[1]).address()), "{}", err.message);

    // A command that outlives its timeout is stopped with a retryable error.
    let mut slow = command(target(&lab, &names[0]), "sleep 30", false);
    slow.timeout_ms = Some(500);
    let started = Instant::now();
    let err = run(&slow, ctx.clone()).await.unwrap_err();
    assert!(err.retryable && err.message.contains("did not finish"), "{}", err.message);
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    // ... and the connection is replaced for the next command.
    run(&command(target(&lab, &names[0]), "true", false), ctx.clone()).await.unwrap();

    // Cancelled mid-command.
    let cancelled = ctx.clone();
    let token = cancelled.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        token.cancel();
    });
    let err = run(&command(target(&lab, &names[2]), "sleep 30", false), cancelled).await.unwrap_err();
    assert!(err.retryable && err.message.contains("cancelled"), "{}", err.message);
    ssh::pool::close_run(ctx.run_id);
    assert_eq!(ssh::pool::open_for_run(ctx.run_id), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_host_key_fails_closed_until_the_explicit_trust_action() {
    let lab = TestLab::stub().unwrap();
    let node = "k8s-worker-1";
    let old_print = host_fingerprint(&lab, node);
    run(&command(target(&lab, node), "true", false), ctx()).await.unwrap();

    // Re-create the node: it gets a new host key.
    for args in [
        &["init"][..],
        &["destroy", "-auto-approve", "-target=libvirt_domain.k8s-worker-1"],
        &["apply", "-auto-approve", "-target=libvirt_domain.k8s-worker-1"],
    ] {
        let out = lab.terraform(args).unwrap();
        assert!(out.status.success(), "terraform {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let new_print = host_fingerprint(&lab, node);
    assert_ne!(old_print, new_print);

    let err = run(&command(target(&lab, node), "true", false), ctx()).await.unwrap_err();
    assert!(!err.retryable, "{}", err.message);
    assert!(err.message.contains("CHANGED") && err.message.contains(&new_print), "{}", err.message);
    assert!(err.message.contains(&target(&lab, node).address()), "{}", err.message);
    // Still failing: nothing trusted the key behind our back.
    assert!(run(&command(target(&lab, node), "true", false), ctx()).await.is_err());

    let trust = SshTrustHostKey { target: target(&lab, node) };
    assert_eq!(SshTrustHostKey::KIND, "ssh.trust-host-key");
    let summary = run(&trust, ctx()).await.unwrap();
    assert!(summary.contains(&new_print) && summary.contains(&old_print), "{summary}");
    let known = std::fs::read_to_string(lab.known_hosts()).unwrap();
    let name = target(&lab, node).known_hosts_name();
    assert_eq!(known.lines().filter(|l| l.starts_with(&format!("{name} "))).count(), 1, "{known}");

    run(&command(target(&lab, node), "true", false), ctx()).await.unwrap();
    // OpenSSH with strict checking accepts the file we wrote, for every node.
    for n in lab.nodes() {
        let out = lab.ssh(&n.name, "true").unwrap();
        assert!(out.status.success(), "{}: {}", n.name, String::from_utf8_lossy(&out.stderr));
    }

    // A host absent from known_hosts is refused too, naming its fingerprint.
    let empty = lab.temp_dir().join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let mut unknown = target(&lab, "k8s-worker-2");
    unknown.known_hosts = empty;
    let err = run(&command(unknown, "true", false), ctx()).await.unwrap_err();
    assert!(err.message.contains("unknown") && err.message.contains(&host_fingerprint(&lab, "k8s-worker-2")), "{}", err.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_and_host_down_are_clear_errors() {
    let lab = TestLab::stub().unwrap();
    let node = "k8s-worker-2";

    let other = lab.temp_dir().join("other_key");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(status.success());
    let err = run(&command(target(&lab, node).with_key(&other), "true", false), ctx()).await.unwrap_err();
    assert!(!err.retryable && err.message.contains("authentication") && err.message.contains("other_key"), "{}", err.message);

    let missing = lab.temp_dir().join("no_such_key");
    let err = run(&command(target(&lab, node).with_key(&missing), "true", false), ctx()).await.unwrap_err();
    assert!(err.message.contains("cannot read ssh key file") && err.message.contains("no_such_key"), "{}", err.message);

    let pid = lab.sshd_pid(node).unwrap();
    assert!(std::process::Command::new("kill").arg(pid.to_string()).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while lab.sshd_pid(node).is_some() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let err = run(&command(target(&lab, node), "true", false), ctx()).await.unwrap_err();
    assert!(err.retryable, "{}", err.message);
    assert!(err.message.contains(&target(&lab, node).address()) && err.message.contains("sshd"), "{}", err.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_and_download_are_checked_by_sha256() {
    let lab = TestLab::stub().unwrap();
    let node = "k8s-control-plane-1";
    let ctx = ctx();
    let local = lab.temp_dir().join("payload.bin");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&local, &data).unwrap();
    let expected = ssh::sha256_file(&local).unwrap();

    let upload = SshUpload { target: target(&lab, node), local: local.clone(), remote: "/tmp/dr-payload.bin".into(), mode: 0o600 };
    assert!(upload.probe(&ctx).await.unwrap().is_none());
    let summary = run(&upload, ctx.clone()).await.unwrap();
    assert!(summary.contains(&expected) && summary.contains("300000 bytes"), "{summary}");
    let on_node = lab.node(node).unwrap().root.join("tmp/dr-payload.bin");
    assert_eq!(std::fs::read(&on_node).unwrap(), data);
    let found = upload.probe(&ctx).await.unwrap().expect("the probe finds the uploaded file");
    assert_eq!((found.sha256.as_str(), found.bytes), (expected.as_str(), 300_000));

    let back = lab.temp_dir().join("back.bin");
    let download = SshDownload { target: target(&lab, node), remote: "/tmp/dr-payload.bin".into(), local: back.clone() };
    let summary = run(&download, ctx.clone()).await.unwrap();
    assert!(summary.contains(&expected), "{summary}");
    assert_eq!(std::fs::read(&back).unwrap(), data);

    let missing = SshDownload { target: target(&lab, node), remote: "/tmp/no-such-file".into(), local: back.clone() };
    let err = run(&missing, ctx.clone()).await.unwrap_err();
    assert!(err.message.contains("/tmp/no-such-file"), "{}", err.message);
    assert!(Path::new(&back).exists());
}

/// libssh2 blocks; the actions keep it off the runtime's threads, so even a
/// single-threaded runtime keeps running other tasks during a command.
#[tokio::test(flavor = "current_thread")]
async fn a_running_command_does_not_block_the_runtime() {
    let lab = TestLab::stub().unwrap();
    let ticks = std::sync::Arc::new(AtomicU64::new(0));
    let counter = ticks.clone();
    let ticker = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    run(&command(target(&lab, "k8s-worker-1"), "sleep 1", false), ctx()).await.unwrap();
    ticker.abort();
    assert!(ticks.load(Ordering::Relaxed) >= 10, "the runtime ticked only {} times", ticks.load(Ordering::Relaxed));
}
