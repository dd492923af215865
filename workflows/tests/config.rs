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
    assert_eq!(config.cluster().unwrap().kubeconfig, corpus().join("kubeconfig"));
    assert_eq!(config.ssh().unwrap().key.as_deref(), Some(corpus().join("ssh/id_ed25519").as_path()));
    assert_eq!(config.ssh().unwrap().known_hosts, Path::new("/etc/dr/known_hosts"));
    assert_eq!(config.etcd().unwrap().cacert, corpus().join("pki/etcd/ca.crt"));
    assert_eq!(config.terraform().unwrap().binary, Path::new("terraform"), "a bare program name stays for PATH");
    assert_eq!(config.nodes.len(), 3);
    assert_eq!(config.nodes[0].ssh_port.get(), 22, "ssh_port defaults to 22");
    assert_eq!(config.nodes[1].ssh_port.get(), 2222);
    assert_eq!(config.control_plane().map(|n| n.role), Some(Role::ControlPlane));
    assert_eq!(config.etcd().unwrap().data_dir, "/var/lib/etcd");
    assert_eq!(config.etcd().unwrap().initial_cluster_token, "etcd-cluster");
    assert_eq!((config.targets.minutes(1), config.targets.minutes(2), config.targets.minutes(4)), (Some(10), Some(60), Some(240)));
    assert_eq!(config.backup_check().unwrap().rpo_secs, 24 * 3600);
    let worker = config.node("k8s-worker-2").unwrap();
    assert_eq!(config.terraform_target(worker), Some("libvirt_domain.k8s-worker-2"));
    assert_eq!(config.terraform_target(&config.nodes[0]), Some("libvirt_domain.k8s-control-plane"));
    let target = config.ssh_target(&config.nodes[1]).unwrap();
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

    // dr serve's own sections do not count: a route or alert rule added must not strand the open runs.
    let routed = format!(
        "{text}\n[[escalation.routes]]\nname = \"another\"\nkind = \"slack\"\nlevels = [2]\nurl_file = \"/etc/dr/another-url\"\n\n\
         [[alerts]]\nalertname = \"Another\"\nworkflow = \"synthetic\"\n"
    );
    assert_eq!(Config::parse(&routed, &path).unwrap().digest(), digest, "[escalation] and [[alerts]] are dr serve's, not the runs'");
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
    assert_eq!(config.etcd().unwrap().initial_cluster_token, "lab-etcd");
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
    let example = doc
        .split("## Example")
        .nth(1)
        .and_then(|section| section.split("```toml\n").nth(1))
        .and_then(|rest| rest.split("```").next())
        .expect("a ```toml block under ## Example");
    let config = Config::parse(example, "/etc/dr/dr.toml").unwrap_or_else(|e| panic!("docs/CONFIG.md's example: {e}"));
    assert_eq!(config.ssh().unwrap().key.as_deref(), Some(Path::new("/etc/dr/ssh/id_ed25519")));
    assert_eq!(config.targets.minutes(3), Some(120));
    assert_eq!((config.alerts.len(), config.escalation.as_ref().map(|e| e.routes.len())), (2, Some(2)));
    // Every other block is a file of its own too (sections are optional).
    let blocks: Vec<&str> = doc.split("```toml\n").skip(1).filter_map(|rest| rest.split("```").next()).collect();
    assert!(blocks.len() >= 3, "{} blocks", blocks.len());
    for block in blocks {
        Config::parse(block, "/etc/dr/dr.toml").unwrap_or_else(|e| panic!("docs/CONFIG.md's block:\n{block}\n{e}"));
    }
    // The alert rule the serve contract relies on, as written there.
    let contract = "[[alerts]]\nalertname = \"KubePodCrashLooping\"\nworkflow = \"pod-recovery\"\nparams = { namespace = \"$labels.namespace\" }\nautomatic = true\n";
    assert!(doc.contains(contract), "docs/CONFIG.md holds the contract's [[alerts]] example");
}

/// valid.toml with each `(old, new)` replaced once (`old` must be there).
fn valid_with(changes: &[(&str, &str)]) -> String {
    let mut text = std::fs::read_to_string(corpus().join("valid.toml")).unwrap();
    for (old, new) in changes {
        assert!(text.contains(old), "valid.toml has no {old:?}");
        text = text.replacen(old, new, 1);
    }
    text
}

/// valid.toml changed as given is refused with a problem at `key` whose
/// message holds `message`, on the line where `at` starts (the first
/// changed text when `at` is empty).
fn refused(changes: &[(&str, &str)], at: &str, key: &str, message: &str) {
    let text = valid_with(changes);
    let path = corpus().join("valid.toml");
    let error = match Config::parse(&text, &path) {
        Ok(_) => panic!("accepted {changes:?}; expected {key}: {message}"),
        Err(error) => error,
    };
    let Some(problem) = error.problems().iter().find(|p| p.key == key) else { panic!("{changes:?}: no problem at {key}:\n{error}") };
    assert!(problem.message.contains(message), "{changes:?}: expected {message:?} in:\n{error}");
    let marker = if at.is_empty() { changes[0].1.lines().next().unwrap_or_default() } else { at };
    let line = text[..text.find(marker).unwrap()].matches('\n').count() + 1;
    assert_eq!(problem.line, line, "{changes:?}: {problem}");
}

fn accepted(changes: &[(&str, &str)]) {
    let text = valid_with(changes);
    if let Err(error) = Config::parse(&text, corpus().join("valid.toml")) {
        panic!("{changes:?} refused:\n{error}");
    }
}

#[test]
fn serve_listens_on_a_socket_address_with_a_token_off_loopback_and_a_bounded_body() {
    let listen = r#"listen = "10.0.0.5:9464""#;
    refused(&[(listen, r#"listen = "localhost:9464""#)], "", "serve.listen", "expected ADDR:PORT with an IP address");
    refused(&[(listen, r#"listen = "10.0.0.5""#)], "", "serve.listen", "expected ADDR:PORT");
    refused(&[(listen, r#"listen = "127.0.0.1:0""#)], "", "serve.listen", "port 0");
    let token = "token_file = \"secrets/serve-token\"\n";
    refused(&[(token, "")], listen, "serve.listen", "10.0.0.5 is not a loopback address, so the webhook needs a bearer token: set serve.token_file");
    refused(&[(token, ""), (listen, r#"listen = "0.0.0.0:9464""#)], "listen", "serve.listen", "not a loopback address");
    accepted(&[(token, ""), (listen, r#"listen = "127.0.0.1:9464""#)]);
    accepted(&[(token, ""), (listen, r#"listen = "[::1]:9464""#)]);
    let body = "max_body_bytes = 262144";
    refused(&[(body, "max_body_bytes = 0")], "", "serve.max_body_bytes", "must be 1 to 67108864 bytes (64 MiB)");
    refused(&[(body, "max_body_bytes = 67108865")], "", "serve.max_body_bytes", "must be 1 to 67108864 bytes");
    accepted(&[(body, "max_body_bytes = 67108864")]);
    accepted(&[(body, "max_body_bytes = 1")]);
}

#[test]
fn alert_rules_start_a_known_workflow_with_its_own_parameters_and_label_references() {
    refused(&[(r#"alertname = "KubePodCrashLooping""#, r#"alertname = " ""#)], "", "alerts[0].alertname", "must not be empty");
    refused(&[(r#"workflow = "pod-recovery""#, r#"workflow = """#)], "", "alerts[0].workflow", "must not be empty; expected one of: synthetic, pod-recovery");
    refused(
        &[(r#"workflow = "pod-recovery""#, r#"workflow = "pod-recover""#)],
        "",
        "alerts[0].workflow",
        "names no workflow (did you mean `pod-recovery`?); expected one of: synthetic, pod-recovery",
    );
    let params = r#"params = { namespace = "$labels.namespace" }"#;
    refused(
        &[(params, r#"params = { nmespace = "$labels.namespace" }"#)],
        "",
        "alerts[0].params.nmespace",
        "pod-recovery has no parameter `nmespace` (did you mean `namespace`?); it takes: namespace",
    );
    refused(
        &[(r#"ready_timeout_s = "600""#, r#"timeout = "600""#)],
        "params = { node",
        "alerts[1].params.timeout",
        "worker-node-recovery has no parameter `timeout`",
    );
    for wrong in ["$label.namespace", "$labels.", "$labels.1ns", "ns-$", "$namespace", "$labels.ok-$labels"] {
        let changed = format!(r#"params = {{ namespace = "{wrong}" }}"#);
        refused(&[(params, &changed)], "", "alerts[0].params.namespace", "a `$` starts a reference to the alert's labels, written `$labels.NAME`");
    }
    for right in ["$labels.namespace", "team-$labels.team_name-x", "$labels.a$labels._b", "plain"] {
        let changed = format!(r#"params = {{ namespace = "{right}" }}"#);
        accepted(&[(params, &changed)]);
    }
    // A workflow that takes no parameter of that name, even a synthetic one.
    refused(
        &[(r#"workflow = "pod-recovery""#, r#"workflow = "synthetic""#)],
        params,
        "alerts[0].params.namespace",
        "synthetic has no parameter `namespace`",
    );
}

#[test]
fn escalation_routes_have_unique_names_real_levels_and_exactly_their_kinds_fields() {
    let slack_header = "[[escalation.routes]]\nname = \"ops-slack\"";
    let mail_header = "[[escalation.routes]]\nname = \"ops-mail\"";
    let pager_header = "[[escalation.routes]]\nname = \"pager\"";
    refused(&[(r#"name = "pager""#, r#"name = "ops-slack""#)], "name = \"ops-slack\"\nkind = \"pagerduty\"", "escalation.routes[2].name", "duplicate route name `ops-slack`; escalation.routes[0].name has it already");
    refused(&[(r#"name = "pager""#, r#"name = """#)], "", "escalation.routes[2].name", "must not be empty");
    refused(&[("levels = [3, 4]", "levels = []")], "", "escalation.routes[2].levels", "no levels");
    refused(&[("levels = [3, 4]", "levels = [0, 4]")], "", "escalation.routes[2].levels", "0 is not a failure level; levels are 1 to 4");
    refused(&[("levels = [3, 4]", "levels = [3, 5]")], "", "escalation.routes[2].levels", "5 is not a failure level");
    refused(&[("levels = [3, 4]", "levels = [3, 4, 3]")], "", "escalation.routes[2].levels", "level 3 is listed twice");

    // slack
    let url_file = "url_file = \"/etc/dr/secrets/slack-webhook-url\"\n";
    refused(&[(url_file, "")], slack_header, "escalation.routes[0].url_file", "missing: kind slack needs url_file, a file holding the webhook URL");
    refused(&[(url_file, "url_file = \"\"\n")], "url_file", "escalation.routes[0].url_file", "must not be empty");
    refused(&[(url_file, &format!("{url_file}smtp = \"smtp.home.example:25\"\n"))], "smtp = \"smtp.home.example:25\"", "escalation.routes[0].smtp", "smtp is for kind email; this route is kind slack");

    // pagerduty
    let key_file = "routing_key_file = \"/etc/dr/secrets/pagerduty-routing-key\"\n";
    refused(&[(key_file, "")], pager_header, "escalation.routes[2].routing_key_file", "missing: kind pagerduty needs routing_key_file");
    refused(&[(key_file, &format!("{key_file}url_file = \"x\"\n"))], "url_file = \"x\"", "escalation.routes[2].url_file", "url_file is for kind slack; this route is kind pagerduty");
    let events = r#"events_url = "https://events.pagerduty.com/v2/enqueue""#;
    refused(&[(events, r#"events_url = "ftp://events.example/""#)], "", "escalation.routes[2].events_url", "scheme `ftp` is not allowed here");
    refused(&[(events, r#"events_url = "https://u:s3cr3t@events.example/""#)], "", "escalation.routes[2].events_url", "carries credentials");
    let error = Config::parse(&valid_with(&[(events, r#"events_url = "https://u:s3cr3t@events.example/""#)]), "/etc/dr/dr.toml").unwrap_err();
    assert!(!error.to_string().contains("s3cr3t"), "the URL's password is not echoed: {error}");
    accepted(&[(events, r#"events_url = "http://127.0.0.1:8080/v2/enqueue""#)]);
    accepted(&[(events, "")]);

    // email
    let smtp = r#"smtp = "smtp.home.example:587""#;
    refused(&[(smtp, r#"smtp = "smtp.home.example""#)], "", "escalation.routes[1].smtp", "no port; expected HOST:PORT");
    refused(&[(smtp, r#"smtp = "smtp.home.example:0""#)], "", "escalation.routes[1].smtp", "port `0` is not 1-65535");
    refused(&[(smtp, r#"smtp = "smtp://home.example:25""#)], "", "escalation.routes[1].smtp", "is not a host name or address; expected HOST:PORT");
    refused(&[(smtp, "")], mail_header, "escalation.routes[1].smtp", "missing: kind email needs smtp, the SMTP server as HOST:PORT");
    accepted(&[(smtp, r#"smtp = "[::1]:25""#)]);
    let from = r#"from = "dr@home.example""#;
    refused(&[(from, "")], mail_header, "escalation.routes[1].from", "missing: kind email needs from");
    refused(&[(from, r#"from = "DR <dr@home.example>""#)], "", "escalation.routes[1].from", "does not look like an e-mail address; expected NAME@DOMAIN");
    let to = r#"to = ["ops@home.example", "oncall@home.example"]"#;
    refused(&[(to, "to = []")], "", "escalation.routes[1].to", "missing: kind email needs to, the recipients' addresses");
    refused(&[(to, r#"to = ["ops@home.example", "oncall"]"#)], "", "escalation.routes[1].to[1]", "`oncall` does not look like an e-mail address");
    refused(&[("username = \"dr\"\n", "")], "password_file = \"secrets/smtp-password\"", "escalation.routes[1].password_file", "a password without a user: set username too");
    accepted(&[("username = \"dr\"\n", ""), ("password_file = \"secrets/smtp-password\"\n", "")]);
    refused(&[(to, &format!("{to}\nrouting_key_file = \"k\""))], "routing_key_file = \"k\"", "escalation.routes[1].routing_key_file", "routing_key_file is for kind pagerduty; this route is kind email");
    refused(&[(r#"tls = "starttls""#, r#"tls = "ssl""#)], "", "escalation.routes[1].tls", "unknown variant `ssl`, expected one of `none`, `starttls`, `tls`");
}

#[tokio::test]
async fn a_file_with_only_what_dr_serve_reads_is_valid_and_names_what_it_lacks() {
    let path = corpus().join("partial/serve_only.toml");
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.cluster.is_none() && config.nodes.is_empty() && config.etcd.is_none());
    assert_eq!(config.alerts.len(), 1);
    assert_eq!(config.escalation.as_ref().unwrap().routes[0].url_file.as_deref(), Some(corpus().join("partial/secrets/slack-webhook-url").as_path()));
    let missing = config.etcd().unwrap_err();
    assert_eq!((missing.section, missing.path.as_path()), ("[etcd]", path.as_path()));
    assert!(missing.to_string().contains("[etcd] in ") && missing.to_string().contains("docs/CONFIG.md"), "{missing}");
    assert_eq!(config.nodes().unwrap_err().section, "[[nodes]]");
    assert_eq!(config.kube_connection().unwrap_err().section, "[cluster]");
    assert!(config.control_plane().is_none());
    assert!(probe(&config).await.is_empty(), "nothing to reach: no check runs");
    // Nothing at all is a valid file too (a command that needs a section says so).
    assert!(Config::parse("", "/etc/dr/dr.toml").is_ok());
}

#[tokio::test]
async fn rules_across_sections_apply_when_both_sections_are_there_and_probes_only_what_is() {
    // [etcd] and [terraform] naming nodes, without [[nodes]]: nothing to check them against.
    let text = valid_with(&[]);
    let without_nodes: String = text
        .split("\n\n")
        .filter(|block| !block.trim_start().starts_with("[[nodes]]"))
        .collect::<Vec<_>>()
        .join("\n\n");
    let without_nodes = without_nodes.replace("node = \"k8s-control-plane-1\"", "node = \"elsewhere\"");
    let config = Config::parse(&without_nodes, corpus().join("valid.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.nodes.is_empty());
    // With them, the same name is refused (broken/etcd_node_unknown.toml proves the message).
    let with_nodes = text.replace("node = \"k8s-control-plane-1\"", "node = \"elsewhere\"");
    let keys: Vec<String> = Config::parse(&with_nodes, corpus().join("valid.toml")).unwrap_err().problems().iter().map(|p| p.key.clone()).collect();
    assert_eq!(keys, ["etcd.node"]);
    // No ssh probe without [[nodes]]; the others still run (and fail here: nothing answers).
    let names: Vec<String> = probe(&config).await.into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["api", "etcd", "backup", "terraform", "scripts"]);
    // Without [ssh], nodes are not probed either.
    let no_ssh = text.replace("[ssh]\nuser = \"ops\"\nkey = \"ssh/id_ed25519\"\nknown_hosts = \"/etc/dr/known_hosts\"\n", "");
    let config = Config::parse(&no_ssh, corpus().join("valid.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.ssh.is_none());
    assert!(!probe(&config).await.iter().any(|p| p.name.starts_with("ssh ")));
}
