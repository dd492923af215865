//! A client of the lab's real etcd through the real `etcdctl` (API v3) with
//! the lab's CA and a client certificate: put/get for tests, health, snapshot
//! save and status. Owns no process: the etcd process belongs to
//! `<lab>/etcd/run.sh` (see `Lab::etcd_start`/`etcd_stop`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use super::process::run;

/// Where and how to reach the lab's etcd.
#[derive(Debug, Clone)]
pub struct EtcdClient {
    pub endpoint: String,
    pub cacert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl EtcdClient {
    /// An `etcdctl` command with endpoint and certificates set.
    pub fn etcdctl(&self) -> Command {
        self.etcdctl_with_timeouts("2s", "5s")
    }

    /// An `etcdctl` command with the given dial and command timeouts.
    pub fn etcdctl_with_timeouts(&self, dial: &str, command_timeout: &str) -> Command {
        let mut command = Command::new("etcdctl");
        command
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint))
            .arg(format!("--cacert={}", self.cacert.display()))
            .arg(format!("--cert={}", self.cert.display()))
            .arg(format!("--key={}", self.key.display()))
            .arg(format!("--dial-timeout={dial}"))
            .arg(format!("--command-timeout={command_timeout}"));
        command
    }

    pub fn put(&self, key: &str, value: &str) -> Result<()> {
        run(self.etcdctl().args(["put", key, value])).with_context(|| format!("etcd put {key}"))?;
        Ok(())
    }

    /// The value of `key`, `None` when absent.
    pub fn get(&self, key: &str) -> Result<Option<String>> {
        let output = run(self.etcdctl().args(["get", key, "--print-value-only"]))
            .with_context(|| format!("etcd get {key}"))?;
        let text = String::from_utf8_lossy(&output.stdout);
        let value = text.strip_suffix('\n').unwrap_or(&text);
        Ok(if text.is_empty() { None } else { Some(value.to_string()) })
    }

    pub fn healthy(&self) -> bool {
        run(self.etcdctl_with_timeouts("500ms", "1s").args(["endpoint", "health"])).is_ok()
    }

    pub fn snapshot_save(&self, path: &Path) -> Result<()> {
        run(self.etcdctl().arg("snapshot").arg("save").arg(path))
            .with_context(|| format!("etcd snapshot save {}", path.display()))?;
        Ok(())
    }
}

/// `etcdctl snapshot status` of a snapshot file: (hash, revision, total keys).
pub fn snapshot_status(path: &Path) -> Result<(u64, u64, u64)> {
    let output = run(Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "status", "-w", "json"])
        .arg(path))?;
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).context("snapshot status json")?;
    let field = |name: &str| value.get(name).and_then(serde_json::Value::as_u64).unwrap_or(0);
    Ok((field("hash"), field("revision"), field("totalKey")))
}
