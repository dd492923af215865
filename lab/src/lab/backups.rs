//! The lab's backup directory: real `backup-YYYYmmdd-HHMMSS.tar.gz` archives
//! holding `etcd-snapshot.db` (a snapshot of the lab's etcd, so of the
//! cluster's objects the API server keeps there) and
//! `test-resources.yaml`, `.sha256` sidecars, modification times set to chosen
//! ages, plus `latest/` (the newest, unpacked) and `test-resources.yaml`, as
//! the guide's `/backup` holds them. Owns only files under the backup dir.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};

use super::etcd::EtcdClient;
use super::process::run;

/// What the dr-drill applies into the `dr-test` namespace.
pub const TEST_RESOURCES_YAML: &str = "\
apiVersion: v1
kind: ConfigMap
metadata:
  name: dr-test-config
  labels:
    app: dr-test
data:
  purpose: monthly DR drill
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: dr-test-app
  labels:
    app: dr-test
spec:
  replicas: 1
  selector:
    matchLabels:
      app: dr-test
  template:
    metadata:
      labels:
        app: dr-test
    spec:
      containers:
      - name: app
        image: nginx:1.25
";

/// One backup written by [`write_backups`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct Backup {
    pub path: PathBuf,
    pub age_secs: u64,
    /// The value of etcd key `/lab/backup/marker` inside this backup's snapshot.
    pub marker: String,
}

/// Writes one backup per age (oldest first). Before each snapshot the etcd
/// key `/lab/backup/marker` is set to the backup's file name, so a restore
/// shows which backup it came from.
pub fn write_backups(dir: &Path, etcd: &EtcdClient, ages: &[Duration]) -> Result<Vec<Backup>> {
    std::fs::create_dir_all(dir)?;
    let mut ages = ages.to_vec();
    ages.sort_by(|a, b| b.cmp(a));
    let now = SystemTime::now();
    let staging = dir.join(".staging");
    let mut backups = Vec::new();
    for age in ages {
        let when = now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH);
        let stamp = chrono::DateTime::<chrono::Utc>::from(when).format("%Y%m%d-%H%M%S").to_string();
        let name = format!("backup-{stamp}.tar.gz");
        etcd.put("/lab/backup/marker", &name)?;
        std::fs::create_dir_all(&staging)?;
        etcd.snapshot_save(&staging.join("etcd-snapshot.db"))?;
        std::fs::write(staging.join("test-resources.yaml"), TEST_RESOURCES_YAML)?;
        let archive = dir.join(&name);
        run(Command::new("tar")
            .arg("-czf")
            .arg(&archive)
            .arg("-C")
            .arg(&staging)
            .args(["etcd-snapshot.db", "test-resources.yaml"]))?;
        let sum = run(Command::new("sha256sum").arg(&name).current_dir(dir))?;
        let sidecar = dir.join(format!("{name}.sha256"));
        std::fs::write(&sidecar, &sum.stdout)?;
        set_mtime(&archive, when)?;
        set_mtime(&sidecar, when)?;
        // latest/ ends up holding the newest backup, unpacked.
        let latest = dir.join("latest");
        let _ = std::fs::remove_dir_all(&latest);
        std::fs::rename(&staging, &latest)?;
        backups.push(Backup { path: archive, age_secs: age.as_secs(), marker: name });
    }
    std::fs::write(dir.join("test-resources.yaml"), TEST_RESOURCES_YAML)?;
    Ok(backups)
}

fn set_mtime(path: &Path, when: SystemTime) -> Result<()> {
    File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(when))
        .with_context(|| format!("setting mtime of {}", path.display()))
}
