//! `dr config check` as an operator runs it against the lab: the lab's own
//! dr.toml is valid and every endpoint it names answers (`--connect --json`);
//! a broken file exits 2 naming FILE:LINE:COL and the key; a node that does
//! not answer exits 1 with that one check failed.

use serde_json::Value;

use crate::support::{code, stderr, Bastion};
use dr_lab::lab::testing::TestLab;

#[test]
fn config_check_connect_passes_against_the_lab_and_fails_on_a_dead_node() {
    let lab = TestLab::simulated().unwrap();
    let b = Bastion::new();
    let path = lab.config_path();
    let path_arg = path.to_str().unwrap();
    let out = b.run(&["config", "check", "--config", path_arg, "--connect", "--json"]);
    assert_eq!(code(&out), Some(0), "{}\n{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(report["valid"], true);
    assert_eq!(report["path"], path_arg);
    assert_eq!(report["digest"].as_str().map(str::len), Some(64));
    assert_eq!(report["errors"], serde_json::json!([]));
    let checks = report["checks"].as_array().expect("checks");
    let names: Vec<&str> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["api", "etcd", "ssh k8s-control-plane-1", "ssh k8s-worker-1", "ssh k8s-worker-2", "backup", "terraform", "scripts"]);
    for check in checks {
        assert_eq!(check["ok"], true, "{check}");
        assert!(check["target"].as_str().is_some_and(|t| !t.is_empty()), "{check}");
        assert!(check["latency_ms"].is_u64(), "{check}");
    }
    assert!(checks[0]["target"].as_str().unwrap().starts_with("http"), "the API server's URL: {}", checks[0]);

    // The same digest without --connect, and the text form says valid.
    let out = b.run(&["config", "check", "--config", path_arg]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("valid") && text.contains(report["digest"].as_str().unwrap()), "{text}");

    // DR_CONFIG names the file too; a node whose sshd is gone fails its check (exit 1), the rest pass.
    let pid: i32 = std::fs::read_to_string(lab.dir().join("sshd/k8s-worker-2/sshd.pid")).unwrap().trim().parse().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    let out = b.dr().args(["config", "check", "--connect", "--json"]).env("DR_CONFIG", &path).output().unwrap();
    assert_eq!(code(&out), Some(1), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed: Vec<&str> =
        report["checks"].as_array().unwrap().iter().filter(|c| c["ok"] != true).map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(failed, ["ssh k8s-worker-2"], "{report}");
}

#[test]
fn config_check_refuses_a_broken_file_with_its_line_and_key_and_a_missing_one_with_its_path() {
    let b = Bastion::new();
    let file = b.work.path().join("dr.toml");
    std::fs::write(&file, "[cluster]\nkubeconfig = \"kubeconfig\"\ncontrol_plane = \"cp\"\nkubconfig = \"x\"\n").unwrap();
    let out = b.run(&["config", "check", "--config", file.to_str().unwrap()]);
    assert_eq!(code(&out), Some(2));
    let expected = format!("{}:4:1: cluster.kubconfig: unknown key in [cluster] (did you mean `kubeconfig`?)", file.display());
    assert!(stderr(&out).contains(&expected), "{}", stderr(&out));

    let out = b.run(&["config", "check", "--json", "--config", file.to_str().unwrap()]);
    assert_eq!(code(&out), Some(2));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["valid"], false);
    assert_eq!(report["errors"][0]["line"], 4);
    assert_eq!(report["errors"][0]["key"], "cluster.kubconfig");

    let missing = b.work.path().join("nowhere.toml");
    let out = b.run(&["config", "check", "--config", missing.to_str().unwrap()]);
    assert_eq!(code(&out), Some(2));
    assert!(stderr(&out).contains(&missing.display().to_string()) && stderr(&out).contains("--config"), "{}", stderr(&out));
}
