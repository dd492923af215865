//! `dr.toml`: a corpus of broken files (`config/broken/*.toml`, each naming
//! the line, key and message it must be refused with, run through one
//! `check`), the valid file with its defaults and resolved paths, the digest,
//! and the lab's own dr.toml loading and answering every `--connect` probe.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::path::{Path, PathBuf};

use dr_lab::lab::testing::TestLab;
use dr_workflows::config::{probe::probe, Config, ConfigError, Role, RouteKind, SmtpTls};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config")
}

/// What a broken file must be refused with, from its header comments:
/// `# expect: line=N key=KEY message=FRAGMENT` and optionally
/// `# absent: TEXT` (a secret that must not appear in the error).
#[derive(Debug)]
struct Expect {
    line: usize,
    key: String,
    message: String,
    absent: Option<String>,
}

fn expectation(text: &str, file: &Path) -> Expect {
    let header = text.lines().find_map(|l| l.strip_prefix("# expect: ")).unwrap_or_else(|| panic!("{}: no `# expect:` line", file.display()));
    let (line, rest) = header.strip_prefix("line=").and_then(|r| r.split_once(' ')).expect("line=N first");
    let (key, message) = rest.strip_prefix("key=").and_then(|r| r.split_once(" message=")).expect("key=K message=M");
    let absent = text.lines().find_map(|l| l.strip_prefix("# absent: ")).map(str::to_owned);
    Expect { line: line.parse().expect("line number"), key: key.to_owned(), message: message.to_owned(), absent }
}

/// `file` is refused, and one of its problems is at the expected line and
/// key with the expected message; the error's text says `FILE:LINE:COL: KEY:`.
fn check(file: &Path, expect: &Expect) {
    let error = match Config::load(file) {
        Ok(_) => panic!("{}: accepted, expected a problem at line {} key {}", file.display(), expect.line, expect.key),
        Err(error) => error,
    };
    let shown = error.to_string();
    assert!(matches!(error, ConfigError::Invalid(_)), "{}: {shown}", file.display());
    let found = error.problems().iter().find(|p| p.line == expect.line && p.key == expect.key);
    let Some(problem) = found else {
        panic!("{}: expected a problem at line {} key {}, got:\n{shown}", file.display(), expect.line, expect.key)
    };
    assert!(problem.message.contains(&expect.message), "{}: expected {:?} in:\n{shown}", file.display(), expect.message);
    assert!(problem.column >= 1, "{problem:?}");
    let prefix = format!("{}:{}:{}: {}: ", file.display(), problem.line, problem.column, problem.key);
    assert!(shown.lines().any(|l| l.starts_with(&prefix)), "{}: no line starting {prefix:?} in:\n{shown}", file.display());
    if let Some(secret) = &expect.absent {
        assert!(!shown.contains(secret.as_str()) && !format!("{error:?}").contains(secret.as_str()), "the secret leaks: {shown}");
    }
}

#[test]
fn every_broken_file_is_refused_at_its_line_and_key() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus().join("broken"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 25, "the corpus has {} files", files.len());
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        check(file, &expectation(&text, file));
    }
}

#[test]
fn the_valid_file_loads_with_defaults_and_paths_resolved_against_its_directory() {
    let path = corpus().join("valid.toml");
    let config = Config::load(&path).unwrap();
    assert_eq!(config.path(), path);
    assert_eq!(config.cluster.kubeconfig, corpus().join("kubeconfig"));
    assert_eq!(config.ssh.key.as_deref(), Some(corpus().join("ssh/id_ed25519").as_path()));
    assert_eq!(config.ssh.known_hosts, Path::new("/etc/dr/known_hosts"));
    assert_eq!(config.etcd.cacert, corpus().join("pki/etcd/ca.crt"));
    assert_eq!(config.terraform.binary, Path::new("terraform"), "a bare program name stays for PATH");
    assert_eq!(config.nodes.len(), 3);
    assert_eq!(config.nodes[0].ssh_port.get(), 22, "ssh_port defaults to 22");
    assert_eq!(config.nodes[1].ssh_port.get(), 2222);
    assert_eq!(config.control_plane().map(|n| n.role), Some(Role::ControlPlane));
    assert_eq!(config.etcd.data_dir, "/var/lib/etcd");
    assert_eq!(config.etcd.initial_cluster_token, "etcd-cluster");
    assert_eq!((config.targets.minutes(1), config.targets.minutes(2), config.targets.minutes(4)), (Some(10), Some(60), Some(240)));
    assert_eq!(config.backup_check().rpo_secs, 24 * 3600);
    let worker = config.node("k8s-worker-2").unwrap();
    assert_eq!(config.terraform_target(worker), Some("libvirt_domain.k8s-worker-2"));
    assert_eq!(config.terraform_target(&config.nodes[0]), Some("libvirt_domain.k8s-control-plane"));
    let target = config.ssh_target(&config.nodes[1]);
    assert_eq!((target.host.as_str(), target.port, target.user.as_str()), ("10.0.0.11", 2222, "ops"));
    let serve = config.serve.as_ref().unwrap();
    assert_eq!(serve.token_file.as_deref(), Some(corpus().join("secrets/serve-token").as_path()), "secret paths resolve too");
    assert_eq!(serve.max_body_bytes, 262_144);
    assert_eq!(config.alerts.len(), 2);
    assert_eq!(config.alerts[0].params["namespace"], "$labels.namespace");
    assert_eq!(config.alerts[0].automatic, Some(true));
    assert_eq!(config.alerts[1].labels["severity"], "critical");
    assert_eq!(config.alerts[1].automatic, None);
    let routes = &config.escalation.as_ref().unwrap().routes;
    let kinds: Vec<RouteKind> = routes.iter().map(|r| r.kind).collect();
    assert_eq!(kinds, [RouteKind::Slack, RouteKind::Email, RouteKind::Pagerduty]);
    assert_eq!(routes[0].url_file.as_deref(), Some(Path::new("/etc/dr/secrets/slack-webhook-url")));
    assert_eq!(routes[1].password_file.as_deref(), Some(corpus().join("secrets/smtp-password").as_path()));
    assert_eq!(routes[1].tls, Some(SmtpTls::Starttls));
    assert_eq!(routes[2].levels, [3, 4]);
}

#[test]
fn the_digest_ignores_comments_and_layout_and_changes_with_any_value() {
    let path = corpus().join("valid.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let digest = Config::parse(&text, &path).unwrap().digest();
    assert_eq!(digest.len(), 64);
    assert!(digest.chars().all(|c| c.is_ascii_hexdigit()));

    let commented = format!("# another comment\n\n{}", text.replace("rpo_hours = 24", "rpo_hours   =   24   # a day"));
    assert_eq!(Config::parse(&commented, &path).unwrap().digest(), digest, "comments and spacing do not count");
    let inline = text.replace("params = { namespace = \"$labels.namespace\" }", "params.namespace = \"$labels.namespace\"");
    assert_ne!(inline, text);
    assert_eq!(Config::parse(&inline, &path).unwrap().digest(), digest, "the same value written another way");

    let changed = text.replace("rpo_hours = 24", "rpo_hours = 12");
    assert_ne!(Config::parse(&changed, &path).unwrap().digest(), digest, "a value counts");
    let moved = Path::new("/elsewhere/dr.toml");
    assert_ne!(Config::parse(&text, moved).unwrap().digest(), digest, "relative paths resolve to other files");
}

#[test]
fn a_missing_file_names_the_path_and_the_flag() {
    let path = corpus().join("no-such-dr.toml");
    let error = Config::load(&path).unwrap_err();
    assert!(matches!(error, ConfigError::Missing { .. }));
    let shown = error.to_string();
    assert!(shown.contains(&path.display().to_string()) && shown.contains("--config"), "{shown}");
}

#[test]
fn every_semantic_problem_is_reported_in_file_order() {
    let path = corpus().join("valid.toml");
    let text = std::fs::read_to_string(&path).unwrap()
        .replace("rpo_hours = 24", "rpo_hours = 0")
        .replace("node = \"k8s-control-plane-1\"", "node = \"nowhere\"");
    let error = Config::parse(&text, &path).unwrap_err();
    let keys: Vec<&str> = error.problems().iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["etcd.node", "backup.rpo_hours"], "{error}");
    assert!(error.problems().windows(2).all(|w| w[0].line < w[1].line));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_labs_dr_toml_loads_and_every_probe_answers() {
    let lab = TestLab::simulated().unwrap();
    let config = Config::load(lab.config_path()).unwrap_or_else(|e| panic!("the lab's dr.toml: {e}"));
    assert_eq!(config.nodes.len(), 3);
    assert_eq!(config.etcd.initial_cluster_token, "lab-etcd");
    for node in config.nodes.iter() {
        assert!(config.terraform_target(node).is_some(), "{} has a terraform target", node.name);
    }
    let probes = probe(&config).await;
    let names: Vec<&str> = probes.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["api", "etcd", "ssh k8s-control-plane-1", "ssh k8s-worker-1", "ssh k8s-worker-2", "backup", "terraform", "scripts"]);
    for probe in &probes {
        assert!(probe.ok, "{probe:?}");
    }

    // A node that does not answer fails its own check, and only that one.
    let mut broken = config.clone();
    broken.nodes[2].ssh_port = dr_workflows::config::Port::try_from(1).unwrap();
    let probes = probe(&broken).await;
    let failed: Vec<&str> = probes.iter().filter(|p| !p.ok).map(|p| p.name.as_str()).collect();
    assert_eq!(failed, ["ssh k8s-worker-2"], "{probes:?}");
    let error = probes.iter().find(|p| !p.ok).and_then(|p| p.error.clone()).unwrap();
    assert!(error.contains(":1"), "the error names the address: {error}");
}

#[test]
fn the_example_in_docs_config_md_is_valid() {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/CONFIG.md")).unwrap();
    let example = doc.split("```toml\n").nth(1).and_then(|rest| rest.split("```").next()).expect("a ```toml block");
    let config = Config::parse(example, "/etc/dr/dr.toml").unwrap_or_else(|e| panic!("docs/CONFIG.md's example: {e}"));
    assert_eq!(config.ssh.key.as_deref(), Some(Path::new("/etc/dr/ssh/id_ed25519")));
    assert_eq!(config.targets.minutes(3), Some(120));
}
