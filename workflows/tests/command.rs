//! The local command action against real processes and the lab's terraform
//! stand-in: timeouts, cancellation and a dropped attempt leave no process
//! of the group behind; failures show the exit code and the output's tail;
//! output is bounded to its last 64 KiB; secrets never show.

use std::path::Path;
use std::time::Duration;

use std::sync::Arc;

use dr_orchestrator::{Action, ActionCtx, SystemClock, Typed, TypedAction};
use dr_lab::lab::testing::TestLab;
use dr_workflows::actions::command::{group_alive, CommandAction, CommandParams, EnvVar};
use dr_workflows::actions::output::DEFAULT_LIMIT;
use tokio_util::sync::CancellationToken;

fn ctx(cancel: CancellationToken) -> ActionCtx {
    ActionCtx { cancel, ..ActionCtx::detached("command", Arc::new(SystemClock)) }
}

fn sh(script: &str) -> CommandParams {
    CommandParams::new("sh").args(["-c", script])
}

/// The shell's pid, written by the script as `echo $$ > FILE`: the group id.
async fn read_pgid(file: &Path) -> i32 {
    for _ in 0..1000 {
        if let Ok(text) = std::fs::read_to_string(file) {
            if let Ok(pid) = text.trim().parse() {
                return pid;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the script never wrote its pid to {}", file.display());
}

/// Live (not zombie) processes of group `pgid`, as `ps` sees them.
fn ps_group(pgid: i32) -> Vec<String> {
    let out = std::process::Command::new("ps").args(["-eo", "pid=,pgid=,stat=,args="]).output().expect("running ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 3 && f[1] == pgid.to_string() && !f[2].starts_with('Z')
        })
        .map(str::to_owned)
        .collect()
}

/// Waits until the group has at least `count` live processes (the shell forks after writing its pid).
async fn wait_for_members(pgid: i32, count: usize) {
    for _ in 0..500 {
        if ps_group(pgid).len() >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("group {pgid} never had {count} processes: {:?}", ps_group(pgid));
}

async fn assert_group_gone(pgid: i32) {
    for _ in 0..100 {
        if ps_group(pgid).is_empty() && !group_alive(pgid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("processes of group {pgid} are still alive: {:?}", ps_group(pgid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_outlives_its_timeout_leaves_no_process_behind() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let script = format!("echo $$ > {}; echo started; sleep 300 & sleep 300", pidfile.display());
    let action = CommandAction::new(sh(&script).timeout(Duration::from_secs(2)).kill_grace(Duration::from_secs(5)));
    let run = tokio::spawn(async move { action.run(&ctx(CancellationToken::new())).await });
    let pgid = read_pgid(&pidfile).await;
    wait_for_members(pgid, 2).await;
    let err = run.await.unwrap().unwrap_err();
    assert!(err.retryable, "{err}");
    assert!(err.message.contains("did not finish within 2.0 s"), "{err}");
    assert!(err.message.contains(&format!("process group {pgid} was killed (SIGTERM);")), "{err}");
    assert!(err.message.contains("started"), "the error shows the output's tail: {err}");
    assert_group_gone(pgid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_ignores_sigterm_gets_sigkill_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let script = format!("trap '' TERM; echo $$ > {}; sleep 300 & sleep 300", pidfile.display());
    let action = CommandAction::new(sh(&script).timeout(Duration::from_millis(1500)).kill_grace(Duration::from_millis(500)));
    let started = std::time::Instant::now();
    let run = tokio::spawn(async move { action.run(&ctx(CancellationToken::new())).await });
    let pgid = read_pgid(&pidfile).await;
    wait_for_members(pgid, 2).await;
    let err = run.await.unwrap().unwrap_err();
    assert!(err.message.contains("SIGTERM, then SIGKILL after 0.5 s"), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(2000), "waited the grace period");
    assert_group_gone(pgid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_kills_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let script = format!("echo $$ > {}; sleep 300 & sleep 300", pidfile.display());
    let action = CommandAction::new(sh(&script));
    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let cancel = cancel.clone();
        async move { action.run(&ctx(cancel)).await }
    });
    let pgid = read_pgid(&pidfile).await;
    wait_for_members(pgid, 2).await;
    cancel.cancel();
    let err = tokio::time::timeout(Duration::from_secs(20), run).await.expect("cancel ends the attempt").unwrap().unwrap_err();
    assert!(err.message.contains("was cancelled") && err.message.contains(&format!("process group {pgid}")), "{err}");
    assert_group_gone(pgid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_attempt_kills_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let script = format!("echo $$ > {}; sleep 300 & sleep 300", pidfile.display());
    let action = CommandAction::new(sh(&script));
    let attempt = tokio::spawn(async move { action.run(&ctx(CancellationToken::new())).await });
    let pgid = read_pgid(&pidfile).await;
    wait_for_members(pgid, 2).await;
    // What the runner does when a step times out: drop the attempt's future.
    attempt.abort();
    assert!(attempt.await.unwrap_err().is_cancelled(), "the attempt was still running");
    assert_group_gone(pgid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_step_deadline_stops_the_command_too() {
    #[allow(clippy::disallowed_methods)] // the deadline is wall-clock ms, as the runner sets it
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let action = CommandAction::new(sh("sleep 300").timeout(Duration::from_secs(600)));
    let mut ctx = ctx(CancellationToken::new());
    ctx.deadline = Some(now + 800);
    let started = std::time::Instant::now();
    let err = action.run(&ctx).await.unwrap_err();
    assert!(err.message.contains("did not finish within"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "the 600 s timeout did not apply");
}

#[tokio::test]
async fn a_non_zero_exit_shows_the_code_and_the_output_tail() {
    let action = CommandAction::new(sh("echo first line; for i in $(seq 1 400); do echo line $i; done; echo boom >&2; exit 3"));
    let err = action.run(&ctx(CancellationToken::new())).await.unwrap_err();
    assert!(err.message.contains("exited with code 3"), "{err}");
    assert!(err.message.contains("line 400") && err.message.contains("boom"), "{err}");
    assert!(!err.message.contains("\nline 1\n"), "only the tail is quoted: {err}");
    assert!(err.message.len() < 4096, "{}", err.message.len());
}

#[tokio::test]
async fn output_over_64_kib_is_cut_to_its_last_64_kib() {
    let action = CommandAction::new(sh("echo BEGIN; head -c 200000 /dev/zero | tr '\\0' a; echo; echo END"));
    let output = action.run(&ctx(CancellationToken::new())).await.unwrap();
    assert_eq!(output.exit_code, 0);
    assert!(output.output.truncated);
    assert_eq!(output.output.total_bytes, 6 + 200_000 + 1 + 4);
    assert_eq!(output.output.text.len(), DEFAULT_LIMIT);
    assert!(output.output.text.ends_with("aaa\nEND\n"), "the end is kept");
    assert!(!output.output.text.contains("BEGIN"), "the beginning is cut");
}

#[tokio::test]
async fn secrets_in_env_and_output_are_redacted() {
    let params = sh("echo token is $DR_TOKEN; echo password=hunter2; echo 'Authorization: Bearer abc.def'; echo ok")
        .env(EnvVar::secret("DR_TOKEN", "s3cr3t-value-xyz"))
        .env(EnvVar::plain("DR_MODE", "test"));
    let action = Typed(CommandAction::new(params.clone()));
    let shown = action.params().to_string();
    assert!(!shown.contains("s3cr3t-value-xyz") && shown.contains("DR_TOKEN"), "{shown}");
    // What the engine records: the summary line and the output value.
    let output = action.run(ctx(CancellationToken::new())).await.unwrap();
    let recorded = format!("{}\n{}", output.summary, output.value);
    for secret in ["s3cr3t-value-xyz", "hunter2", "abc.def"] {
        assert!(!recorded.contains(secret), "{secret} in {recorded}");
    }
    assert!(recorded.contains("token is [REDACTED]") && recorded.contains("password=[REDACTED]"), "{recorded}");
    // A failing command's error does not show it either.
    let failing = CommandAction::new(
        CommandParams::new("sh")
            .args(["-c", "echo using $DR_TOKEN; exit 1"])
            .env(EnvVar::secret("DR_TOKEN", "s3cr3t-value-xyz")),
    );
    let err = failing.run(&ctx(CancellationToken::new())).await.unwrap_err();
    assert!(err.message.contains("using [REDACTED]") && !err.message.contains("s3cr3t"), "{err}");
}

#[tokio::test]
async fn a_missing_program_is_a_permanent_error_naming_it_and_path() {
    let action = CommandAction::new(CommandParams::new("tofu-not-installed-here").args(["apply"]));
    let err = action.run(&ctx(CancellationToken::new())).await.unwrap_err();
    assert!(!err.retryable, "{err}");
    assert!(err.message.contains("tofu-not-installed-here not found") && err.message.contains("PATH"), "{err}");
    let missing_dir = CommandAction::new(CommandParams::new("true").cwd("/nonexistent/terraform"));
    let err = missing_dir.run(&ctx(CancellationToken::new())).await.unwrap_err();
    assert!(!err.retryable && err.message.contains("/nonexistent/terraform does not exist"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_labs_terraform_applies_through_the_action_and_refuses_without_approval() {
    let lab = TestLab::stub().unwrap();
    let terraform = |args: &[&str]| {
        CommandParams::new(lab.dir().join("bin/terraform")).args(args.iter().copied()).cwd(lab.dir().join("terraform")).target("terraform")
    };
    let target = "-target=libvirt_domain.k8s-worker-1";
    let destroyed = lab.terraform(&["destroy", "-auto-approve", target]).unwrap();
    assert!(destroyed.status.success(), "{destroyed:?}");
    assert!(lab.sshd_pid("k8s-worker-1").is_none(), "the worker's VM is gone");

    // Without -auto-approve terraform waits for "yes"; standard input is empty.
    let err = CommandAction::new(terraform(&["apply", target])).run(&ctx(CancellationToken::new())).await.unwrap_err();
    assert!(err.message.contains("exited with code 1") && err.message.contains("cancelled"), "{err}");
    assert!(err.message.contains("Only 'yes' will be accepted"), "the tail shows the prompt: {err}");
    assert!(lab.sshd_pid("k8s-worker-1").is_none(), "nothing was created");

    let output = CommandAction::new(terraform(&["apply", "-auto-approve", target]))
        .run(&ctx(CancellationToken::new()))
        .await
        .unwrap();
    assert_eq!(output.exit_code, 0);
    assert!(output.output.text.contains("libvirt_domain.k8s-worker-1: Creation complete"), "{}", output.output.text);
    assert!(output.command.ends_with("terraform apply -auto-approve -target=libvirt_domain.k8s-worker-1"), "{}", output.command);
    assert!(lab.sshd_pid("k8s-worker-1").is_some(), "the worker's VM (its sshd) runs again");
    assert!(lab.bastion_journal().iter().any(|l| l.contains("apply -auto-approve")), "{:?}", lab.bastion_journal());

    // Approval on standard input works too.
    lab.terraform(&["destroy", "-auto-approve", target]).unwrap();
    let approved = terraform(&["apply", target]).stdin("yes\n");
    CommandAction::new(approved).run(&ctx(CancellationToken::new())).await.unwrap();
    assert!(lab.sshd_pid("k8s-worker-1").is_some());
}
