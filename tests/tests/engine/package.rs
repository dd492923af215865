//! The Debian package: `scripts/package` builds a `.deb` around the `dr`
//! binary; it is extracted into a scratch root (`dpkg -x`) and what it
//! installed is run: the binary, its man pages, completions, the example
//! configuration, the systemd units.

use std::path::Path;
use std::process::Command;

use crate::support::{dr_bin, stderr};

#[test]
fn the_deb_installs_a_working_dr_with_man_pages_completions_units_and_an_example_config() {
    let root_dir = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let out = tempfile::tempdir().unwrap();
    let built = Command::new(root_dir.join("scripts/package"))
        .args(["--binary", &dr_bin().display().to_string(), "--out", &out.path().display().to_string()])
        .current_dir(&root_dir)
        .output()
        .unwrap();
    assert!(built.status.success(), "scripts/package failed: {}", stderr(&built));
    let deb = String::from_utf8(built.stdout).unwrap().trim().to_owned();
    assert!(deb.ends_with(".deb") && Path::new(&deb).exists(), "{deb}");

    let info = Command::new("dpkg-deb").args(["--field", &deb, "Package", "Version", "Depends"]).output().unwrap();
    let info = String::from_utf8_lossy(&info.stdout).into_owned();
    assert!(info.contains("Package: dr") && info.contains("libc6"), "{info}");

    let root = tempfile::tempdir().unwrap();
    let x = Command::new("dpkg").args(["-x", &deb, &root.path().display().to_string()]).output().unwrap();
    assert!(x.status.success(), "dpkg -x: {}", stderr(&x));
    let dr = root.path().join("usr/bin/dr");

    let help = Command::new(&dr).arg("--help").output().unwrap();
    assert!(help.status.success(), "{}", stderr(&help));
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    assert!(help.contains("serve") && help.contains("Exit codes"), "{help}");

    // man dr: the page renders.
    let page = root.path().join("usr/share/man/man1/dr.1.gz");
    let man = Command::new("man").args(["-l", &page.display().to_string()]).env("MANPAGER", "cat").env("MANWIDTH", "80").output().unwrap();
    assert!(man.status.success(), "man -l: {}", stderr(&man));
    assert!(String::from_utf8_lossy(&man.stdout).contains("dr serve") || String::from_utf8_lossy(&man.stdout).contains("serve"));
    for name in ["dr-start.1.gz", "dr-serve.1.gz", "dr-status.1.gz"] {
        assert!(root.path().join("usr/share/man/man1").join(name).exists(), "{name} missing");
    }

    // The completions are valid scripts of their shells.
    let bash = root.path().join("usr/share/bash-completion/completions/dr");
    let syntax = Command::new("bash").arg("-n").arg(&bash).output().unwrap();
    assert!(syntax.status.success(), "bash -n: {}", stderr(&syntax));
    assert!(std::fs::read_to_string(&bash).unwrap().contains("serve"));
    assert!(root.path().join("usr/share/zsh/vendor-completions/_dr").exists());
    assert!(root.path().join("usr/share/fish/vendor_completions.d/dr.fish").exists());

    // The example configuration is valid as shipped, and private.
    let config = root.path().join("etc/dr/dr.toml");
    let check = Command::new(&dr).args(["config", "check", "--config", &config.display().to_string()]).output().unwrap();
    assert!(check.status.success(), "the shipped dr.toml: {}", stderr(&check));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&config).unwrap().permissions().mode() & 0o777, 0o600);
    for unit in ["dr.service", "dr-drill.service", "dr-drill.timer"] {
        assert!(root.path().join("lib/systemd/system").join(unit).exists(), "{unit} missing");
    }
    assert!(root.path().join("var/lib/dr").is_dir());
}
