//! Shared helpers: the `dr` binary with failpoints, and a bastion (a state
//! directory and a work directory) to run it in.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;
/// The `dr` binary built with the `failpoints` feature. It is built into the
/// test's own target directory: only the dr crates recompile with the feature
/// (their dependencies are shared), and a later ordinary build puts the
/// ordinary binary back.
pub fn dr_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| built_bin("DR_FAILPOINTS_BIN", &["--package", "dr-cli", "--features", "failpoints", "--bin", "dr"], "dr"))
}

/// `dr-lazyfs`, the power-cut test bed (a FUSE file system), built like [`dr_bin`].
pub fn lazyfs_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| built_bin("DR_LAZYFS_BIN", &["--package", "dr-lazyfs", "--bin", "dr-lazyfs"], "dr-lazyfs"))
}

/// Builds a binary of the workspace into the test's own target directory
/// (or takes the one `env_override` names) and returns its path.
fn built_bin(env_override: &str, build_args: &[&str], name: &str) -> PathBuf {
    if let Some(bin) = std::env::var_os(env_override) {
        return PathBuf::from(bin);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf();
    // This test runs as PROFILE_DIR/deps/engine-HASH: the binary lands in PROFILE_DIR.
    let exe = std::env::current_exe().expect("own path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("profile directory").to_path_buf();
    let target_dir = profile_dir.parent().expect("target directory").to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet"])
        .args(build_args)
        .env("CARGO_TARGET_DIR", &target_dir)
        .current_dir(&root)
        .status()
        .unwrap_or_else(|e| panic!("run cargo to build {name}: {e}"));
    assert!(status.success(), "building {name} failed");
    profile_dir.join(name)
}

pub struct Bastion {
    pub state: tempfile::TempDir,
    pub work: tempfile::TempDir,
}

impl Bastion {
    pub fn new() -> Self {
        Bastion { state: tempfile::tempdir().unwrap(), work: tempfile::tempdir().unwrap() }
    }

    pub fn trace(&self) -> PathBuf {
        self.work.path().join("trace")
    }

    pub fn dr(&self) -> Command {
        let mut c = Command::new(dr_bin());
        c.env("DR_STATE_DIR", self.state.path()).env_remove("DR_CRASH_AT").env_remove("DR_FAULT_SYNC").stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.dr().args(args).output().expect("run dr")
    }

    pub fn run_crashing(&self, args: &[&str], crash_at: &str) -> Output {
        self.dr().args(args).env("DR_CRASH_AT", crash_at).output().expect("run dr")
    }

    pub fn trace_counts(&self) -> BTreeMap<String, usize> {
        let text = std::fs::read_to_string(self.trace()).unwrap_or_default();
        let mut counts = BTreeMap::new();
        for line in text.lines() {
            let step = line.split_whitespace().next().unwrap_or_default().to_owned();
            *counts.entry(step).or_insert(0) += 1;
        }
        counts
    }

    pub fn status(&self) -> Value {
        let out = self.run(&["status", "@latest", "--json"]);
        assert!(out.status.success(), "status failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("status --json is JSON")
    }

    pub fn assert_history_contiguous(&self) -> Vec<Value> {
        let out = self.run(&["history", "@latest", "--json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let events: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e["seq"].as_u64(), Some(i as u64), "history has a gap at {i}: {e}");
        }
        assert_eq!(events[0]["kind"], "run-created");
        events
    }
}

pub fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

pub fn killed(out: &Output) -> bool {
    out.status.signal() == Some(libc::SIGKILL)
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
