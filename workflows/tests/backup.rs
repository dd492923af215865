//! The backup actions against the lab's real backups (tar.gz archives of a
//! real etcd snapshot, `.sha256` sidecars, ages 2 h and 30 h): the newest is
//! found and within the RPO, a directory holding only the 30-hour-old one is
//! reported as RPO exceeded, a wrong sidecar fails naming the file,
//! extraction yields a snapshot etcdctl accepts, and archives with unsafe
//! member paths are refused.

use std::path::{Path, PathBuf};

use std::sync::Arc;

use dr_orchestrator::{ActionCtx, ActionError, SystemClock, TypedAction};
use dr_lab::lab::testing::TestLab;
use dr_workflows::actions::backup::{
    BackupCheckAction, BackupCheckOutput, BackupCheckParams, BackupExtractAction, BackupExtractOutput,
    BackupExtractParams, Checksum,
};

fn ctx() -> ActionCtx {
    ActionCtx::detached("backup", Arc::new(SystemClock))
}

async fn check(params: BackupCheckParams) -> Result<BackupCheckOutput, ActionError> {
    BackupCheckAction::new(params).run(&ctx()).await
}

async fn extract(params: BackupExtractParams) -> Result<BackupExtractOutput, ActionError> {
    BackupExtractAction::new(params).run(&ctx()).await
}

/// Copies a backup (and its sidecar) keeping the modification time.
fn copy_backup(from: &Path, to_dir: &Path) -> PathBuf {
    let to = to_dir.join(from.file_name().expect("a file name"));
    std::fs::copy(from, &to).expect("copy backup");
    let mtime = std::fs::metadata(from).and_then(|m| m.modified()).expect("mtime");
    std::fs::File::options().write(true).open(&to).and_then(|f| f.set_modified(mtime)).expect("set mtime");
    let sidecar = PathBuf::from(format!("{}.sha256", from.display()));
    std::fs::copy(&sidecar, format!("{}.sha256", to.display())).expect("copy sidecar");
    to
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_labs_backups_are_found_checked_against_the_rpo_and_extracted() {
    let lab = TestLab::stub().unwrap();
    let backups = lab.backups().to_vec();
    let newest = backups.iter().min_by_key(|b| b.age_secs).unwrap().clone();
    let oldest = backups.iter().max_by_key(|b| b.age_secs).unwrap().clone();
    assert_eq!((newest.age_secs, oldest.age_secs), (2 * 3600, 30 * 3600), "the lab's default ages");

    // The newest is found, within the 24 h RPO, its sidecar verified.
    let found = check(BackupCheckParams::new(lab.backup_dir())).await.unwrap();
    assert_eq!(found.newest, newest.path);
    assert_eq!(found.count, 2);
    assert_eq!(found.rpo_secs, 24 * 3600);
    assert!(found.within_rpo);
    assert!(found.age_secs.abs_diff(2 * 3600) < 300, "{}", found.age_secs);
    assert!(matches!(found.checksum, Checksum::Verified { .. }), "{:?}", found.checksum);
    assert_eq!(found.backups[1].path, oldest.path, "newest first");

    // Only the 30-hour-old backup: RPO exceeded, as an error or as a report.
    let old_only = tempfile::tempdir().unwrap();
    copy_backup(&oldest.path, old_only.path());
    let err = check(BackupCheckParams::new(old_only.path())).await.unwrap_err();
    assert!(err.message.contains("RPO exceeded") && err.message.contains("30.0 h") && err.message.contains("24.0 h"), "{err}");
    let report = check(BackupCheckParams { fail_if_exceeded: false, ..BackupCheckParams::new(old_only.path()) }).await.unwrap();
    assert!(!report.within_rpo);
    assert!(report.age_secs >= 30 * 3600 && report.count == 1, "{report:?}");
    // With a 48 h RPO the same backup is fine.
    let relaxed = check(BackupCheckParams { rpo_secs: 48 * 3600, ..BackupCheckParams::new(old_only.path()) }).await.unwrap();
    assert!(relaxed.within_rpo);

    // A wrong sidecar fails, naming the file.
    let tampered = tempfile::tempdir().unwrap();
    let copy = copy_backup(&newest.path, tampered.path());
    let name = copy.file_name().unwrap().to_str().unwrap().to_owned();
    std::fs::write(format!("{}.sha256", copy.display()), format!("{}  {name}\n", "0".repeat(64))).unwrap();
    let err = check(BackupCheckParams::new(tampered.path())).await.unwrap_err();
    assert!(!err.retryable && err.message.contains("fails its checksum") && err.message.contains(&name), "{err}");
    let work = tempfile::tempdir().unwrap();
    let err = extract(BackupExtractParams::new(tampered.path(), work.path())).await.unwrap_err();
    assert!(err.message.contains("fails its checksum"), "extraction verifies too: {err}");
    assert!(!work.path().join("etcd-snapshot.db").exists(), "nothing was extracted");

    // Extraction of the newest: a snapshot etcdctl accepts, holding this backup's marker.
    let work = tempfile::tempdir().unwrap();
    let out = extract(BackupExtractParams::new(lab.backup_dir(), work.path().join("restore"))).await.unwrap();
    assert_eq!(out.backup, newest.path);
    let snapshot = out.etcd_snapshot.clone().expect("the archive has the etcd snapshot");
    assert_eq!(snapshot, work.path().join("restore/etcd-snapshot.db"));
    assert!(out.members.contains(&"test-resources.yaml".to_owned()), "{:?}", out.members);
    let status = std::process::Command::new("etcdctl")
        .args(["--write-out=json", "snapshot", "status"])
        .arg(&snapshot)
        .env("ETCDCTL_API", "3")
        .output()
        .unwrap();
    assert!(status.status.success(), "etcdctl snapshot status: {}", String::from_utf8_lossy(&status.stderr));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(status["totalKey"].as_u64().unwrap_or(0) > 0, "{status}");
    let bytes = std::fs::read(&snapshot).unwrap();
    assert!(bytes.windows(newest.marker.len()).any(|w| w == newest.marker.as_bytes()), "the snapshot holds this backup's marker");
    assert_eq!(
        std::fs::read_to_string(work.path().join("restore/test-resources.yaml")).unwrap(),
        std::fs::read_to_string(lab.backup_dir().join("test-resources.yaml")).unwrap()
    );

    // A named (older) backup can be chosen.
    let older = extract(BackupExtractParams { backup: Some(oldest.path.clone()), ..BackupExtractParams::new(lab.backup_dir(), work.path().join("older")) })
        .await
        .unwrap();
    assert_eq!(older.backup, oldest.path);
}

/// A .tar.gz whose single member has the raw name `name` (bypassing the tar
/// crate's own path checks, as a hostile archive would).
fn hostile_archive(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join("backup-hostile.tar.gz");
    let file = std::fs::File::create(&path).expect("create archive");
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(file, flate2::Compression::default()));
    let data = b"owned\n";
    let mut header = tar::Header::new_old();
    header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    builder.append(&header, &data[..]).expect("append member");
    builder.into_inner().and_then(|gz| gz.finish()).expect("finish archive");
    path
}

#[tokio::test]
async fn members_with_absolute_paths_or_dot_dot_are_refused() {
    for name in ["../escaped", "/tmp/dr-absolute-member", "a/../../escaped"] {
        let dir = tempfile::tempdir().unwrap();
        let archive = hostile_archive(dir.path(), name);
        let work = dir.path().join("work/inner");
        let params = BackupExtractParams { require: vec![], ..BackupExtractParams::new(dir.path(), &work) };
        let err = extract(params).await.unwrap_err();
        assert!(!err.retryable, "{err}");
        assert!(err.message.contains(name) && err.message.contains("refusing"), "{err}");
        assert!(err.message.contains(&archive.display().to_string()), "{err}");
        assert!(!dir.path().join("work/escaped").exists() && !dir.path().join("escaped").exists());
    }
    assert!(!Path::new("/tmp/dr-absolute-member").exists());
}

#[tokio::test]
async fn a_backup_without_an_etcd_snapshot_or_an_empty_dir_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = check(BackupCheckParams::new(dir.path())).await.unwrap_err();
    assert!(err.message.contains("no backup matching *.tar.gz") && err.message.contains(&dir.path().display().to_string()), "{err}");
    hostile_archive(dir.path(), "notes.txt");
    let err = extract(BackupExtractParams::new(dir.path(), dir.path().join("work"))).await.unwrap_err();
    assert!(err.message.contains("has no etcd-snapshot.db"), "{err}");
}
