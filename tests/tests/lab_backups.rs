//! The lab's backups are real tar.gz archives with a valid etcd snapshot, aged
//! as asked; the ingress stand-in answers only while the platform is healthy;
//! the host-setup and platform scripts record their calls.

#![allow(clippy::disallowed_methods)] // ages of backups are measured against the real clock

use std::process::Command;
use std::time::{Duration, SystemTime};

use dr_lab::lab::etcd::snapshot_status;
use dr_lab::lab::testing::TestLab;

#[test]
fn backups_exist_with_the_chosen_ages_and_hold_a_valid_snapshot() {
    let lab = TestLab::start(|options| {
        options.api = dr_lab::lab::ApiChoice::Stub;
        options.backup_ages = vec![Duration::from_secs(30 * 3600), Duration::from_secs(2 * 3600)];
    })
    .expect("lab starts");
    let mut archives: Vec<_> = std::fs::read_dir(lab.backup_dir())
        .expect("backup dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .collect();
    archives.sort();
    assert_eq!(archives.len(), 2, "{archives:?}");
    let now = SystemTime::now();
    let mut ages = Vec::new();
    for archive in &archives {
        let name = archive.file_name().expect("name").to_string_lossy().into_owned();
        assert!(name.starts_with("backup-") && name.len() == "backup-20261128-101500.tar.gz".len(), "{name}");
        let modified = std::fs::metadata(archive).expect("meta").modified().expect("mtime");
        ages.push(now.duration_since(modified).expect("in the past").as_secs());
        let sum = Command::new("sha256sum").arg("-c").arg(format!("{name}.sha256")).current_dir(lab.backup_dir()).output().expect("sha256sum");
        assert!(sum.status.success(), "{}", String::from_utf8_lossy(&sum.stdout));

        let unpacked = lab.temp_dir().join(name.trim_end_matches(".tar.gz"));
        std::fs::create_dir_all(&unpacked).expect("mkdir");
        let tar = Command::new("tar").arg("-xzf").arg(archive).arg("-C").arg(&unpacked).status().expect("tar");
        assert!(tar.success());
        assert!(std::fs::read_to_string(unpacked.join("test-resources.yaml")).expect("yaml").contains("kind: Deployment"));
        let (_hash, revision, keys) = snapshot_status(&unpacked.join("etcd-snapshot.db")).expect("valid snapshot");
        assert!(revision > 0 && keys > 0, "revision {revision}, keys {keys}");
    }
    // Sorted by name = oldest first.
    assert!((30 * 3600 - 5..30 * 3600 + 60).contains(&ages[0]), "{ages:?}");
    assert!((2 * 3600 - 5..2 * 3600 + 60).contains(&ages[1]), "{ages:?}");
    // `ls -t | head -1` (the guide's "latest") picks the 2 h old one.
    let latest = Command::new("sh").arg("-c").arg("ls -t *.tar.gz | head -1").current_dir(lab.backup_dir()).output().expect("ls");
    assert_eq!(String::from_utf8_lossy(&latest.stdout).trim(), archives[1].file_name().expect("name").to_string_lossy());
    assert!(lab.backup_dir().join("latest/etcd-snapshot.db").is_file());
    assert!(lab.backup_dir().join("test-resources.yaml").is_file());
}

#[test]
fn the_ingress_answers_only_while_the_platform_is_healthy_and_scripts_record_their_calls() {
    let lab = TestLab::stub().expect("lab starts");
    let url = lab.ingress_url();
    assert!(url.starts_with("http://127.0.0.100:"), "{url}");
    let status = |url: &str| dr_lab::lab::http::request("GET", url, None).expect("ingress answers").0;
    assert_eq!(status(&url), 200);
    lab.fault("control-plane-lost", None).expect("fault");
    assert_eq!(status(&url), 503);

    let verify = Command::new(lab.dir().join("host-setup/verify-setup.sh")).output().expect("verify");
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    let deploy = Command::new(lab.dir().join("platform/platform-deploy.sh")).output().expect("deploy");
    assert!(deploy.status.success(), "{}", String::from_utf8_lossy(&deploy.stderr));
    assert_eq!(status(&url), 200, "the stub API is healthy again after a platform deploy");
    let journal = lab.bastion_journal();
    assert_eq!(journal.len(), 2, "{journal:?}");
    assert!(journal[0].ends_with(" verify-setup.sh") && journal[1].ends_with(" platform-deploy.sh"), "{journal:?}");
}
